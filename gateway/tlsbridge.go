package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The wss:// path (docs/deploy.md "TLS"). The pollers read and write raw
// descriptors, and a TLS socket's bytes are not the WebSocket's: the
// kernel could decrypt them (kTLS), but the kernels Herald runs on do not
// all offer the tls ULP, and a kTLS socket still needs crypto/tls for the
// handshake, key updates and alerts. So a TLS socket is bridged instead:
// the node's listener terminates TLS (crypto/tls, node/tls.go), and after
// the upgrade the plaintext is carried over a socketpair whose one end the
// poller owns exactly as it owns a TCP socket. Everything the edge does
// (frames, limits, close codes, slow consumers, drain) is the same code;
// what TLS costs is two goroutines, two buffers and three descriptors per
// socket, and one more copy each way. Plain ws:// never comes here.

const (
	// bridgeUpBuffer and bridgeDownBuffer are each bridge's buffers: client
	// to poller (the client sends little) and poller to client (a TLS
	// record holds at most 16 KiB of plaintext).
	bridgeUpBuffer   = 4 << 10
	bridgeDownBuffer = 16 << 10
	// bridgeWriteStall is how long one write to the TLS client may make no
	// progress before the bridge gives up on the client. A plain socket
	// that stops reading fills its kernel buffer and the poller's write
	// queue and is closed with 4100; a bridged one fills the socketpair the
	// same way, and this bounds the bridge goroutine left blocked behind it.
	bridgeWriteStall = 30 * time.Second
	// bridgeLinger is how long the other half of a bridge may still run
	// once one half ended: the poller closes a socket at the latest
	// closeTimeout after it began closing it.
	bridgeLinger = closeTimeout + time.Second
)

// tlsOf returns the TLS connection under a hijacked one, or nil for a
// plain socket.
func tlsOf(nc net.Conn) *tls.Conn {
	if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
		if tc, ok := u.UnsafeConn().(*tls.Conn); ok {
			return tc
		}
	}
	tc, _ := nc.(*tls.Conn)
	return tc
}

// bridges tracks the running TLS bridges, so that Close ends them all and
// waits for their goroutines.
type bridges struct {
	mu     sync.Mutex
	set    map[*bridge]struct{}
	closed bool
	wg     sync.WaitGroup
}

// bridge is one TLS socket's pair of copy loops.
type bridge struct {
	tc    *tls.Conn // the client's TLS connection
	pair  net.Conn  // the bridge's end of the socketpair
	raw   syscall.RawConn
	early []byte // what fasthttp read past the request, for up to send first
	mu    sync.Mutex
	left  int // halves still running
	bs    *bridges
}

// downBuffers are down's buffers, taken only while the poller has written
// something: an idle bridge holds none.
var downBuffers = sync.Pool{New: func() any { return new([bridgeDownBuffer]byte) }}

// bridgeTLS starts a bridge for a hijacked TLS connection and returns the
// socketpair descriptor the poller is to own, non-blocking like a detached
// TCP socket. The hijacked connection itself is dropped once its buffered
// bytes are out: it keeps fasthttp's read buffer (http.read_buffer_bytes)
// alive for as long as it is referenced.
func (g *Gateway) bridgeTLS(nc net.Conn, tc *tls.Conn) (int, error) {
	early := drainBuffered(nc)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		_ = tc.Close()
		return -1, fmt.Errorf("gateway: tls bridge: socketpair: %w", err)
	}
	f := os.NewFile(uintptr(fds[1]), "tls-bridge")
	pair, err := net.FileConn(f) // a duplicate the runtime's poller owns
	_ = f.Close()
	var raw syscall.RawConn
	if err == nil {
		raw, err = pair.(syscall.Conn).SyscallConn()
	}
	if err != nil {
		_ = unix.Close(fds[0])
		if pair != nil {
			_ = pair.Close()
		}
		_ = tc.Close()
		return -1, fmt.Errorf("gateway: tls bridge: %w", err)
	}
	// fasthttp's deadlines (the handshake deadline) served the request.
	_ = tc.SetDeadline(time.Time{})
	b := &bridge{tc: tc, pair: pair, raw: raw, early: early, left: 2, bs: &g.tls}
	if !g.tls.add(b) {
		_ = pair.Close()
		_ = tc.Close()
		return fds[0], nil // the poller refuses it (stopping) and closes its end
	}
	go b.up()
	go b.down()
	return fds[0], nil
}

func (bs *bridges) add(b *bridge) bool {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.closed {
		return false
	}
	if bs.set == nil {
		bs.set = make(map[*bridge]struct{})
	}
	bs.set[b] = struct{}{}
	bs.wg.Add(1)
	return true
}

// closeAll ends every bridge at once (the gateway is closing: its pollers
// have closed their ends already) and waits for their goroutines.
func (bs *bridges) closeAll() {
	bs.mu.Lock()
	bs.closed = true
	for b := range bs.set {
		_ = b.tc.NetConn().Close() // no close_notify: nobody reads any more
		_ = b.pair.Close()
	}
	bs.mu.Unlock()
	bs.wg.Wait()
}

// up copies the client's plaintext to the poller. When the client ends (or
// its TLS fails) the poller sees the end of the stream, as it would see a
// TCP FIN, and closes its end, which ends down.
func (b *bridge) up() {
	if len(b.early) > 0 {
		_, err := b.pair.Write(b.early)
		b.early = nil
		if err != nil {
			b.endUp()
			return
		}
	}
	buf := make([]byte, bridgeUpBuffer)
	for {
		n, err := b.tc.Read(buf)
		if n > 0 {
			if _, werr := b.pair.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	b.endUp()
}

func (b *bridge) endUp() {
	if cw, ok := b.pair.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = b.pair.SetReadDeadline(time.Now().Add(bridgeLinger))
	b.done()
}

// down copies the poller's frames to the client. When the poller shuts its
// write side (the closing handshake, docs/protocol.md §1.7) the client gets
// close_notify, as a plain client gets the FIN, and up may linger for the
// client's close frame.
func (b *bridge) down() {
	for {
		buf, n, err := b.readPair()
		if n > 0 {
			_ = b.tc.SetWriteDeadline(time.Now().Add(bridgeWriteStall))
			_, werr := b.tc.Write(buf[:n])
			downBuffers.Put(buf)
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = b.tc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = b.tc.CloseWrite()
	_ = b.tc.SetReadDeadline(time.Now().Add(bridgeLinger))
	b.done()
}

// readPair waits until the poller has written, then reads into a pooled
// buffer: the wait holds no buffer. n is 0 with err io.EOF when the poller
// shut its write side or closed its end.
func (b *bridge) readPair() (*[bridgeDownBuffer]byte, int, error) {
	var buf *[bridgeDownBuffer]byte
	var n int
	var rerr error
	err := b.raw.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = downBuffers.Get().(*[bridgeDownBuffer]byte)
		}
		for {
			n, rerr = unix.Read(int(fd), buf[:])
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			downBuffers.Put(buf)
			buf = nil
			return false // wait for the poller's next write
		}
		return true
	})
	switch {
	case err != nil: // closed or past the linger deadline
		rerr = err
	case rerr == nil && n == 0:
		rerr = io.EOF
	}
	if n < 0 {
		n = 0
	}
	if n == 0 && buf != nil {
		downBuffers.Put(buf)
		buf = nil
	}
	return buf, n, rerr
}

// done is each half's end; the last one closes both connections.
func (b *bridge) done() {
	b.mu.Lock()
	b.left--
	last := b.left == 0
	b.mu.Unlock()
	if !last {
		return
	}
	_ = b.tc.SetWriteDeadline(time.Now().Add(time.Second)) // bounds Close's close_notify
	_ = b.tc.Close()
	_ = b.pair.Close()
	b.bs.mu.Lock()
	delete(b.bs.set, b)
	b.bs.mu.Unlock()
	b.bs.wg.Done()
}
