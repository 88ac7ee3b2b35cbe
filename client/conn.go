package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Defaults for Options; a zero field means the default.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultQueueSize      = 4096
	DefaultMaxPending     = 1 << 16
	DefaultMaxMessageSize = 16 << 20

	// closeHandshakeTimeout bounds how long Close waits for the server to
	// answer its close frame before dropping the TCP connection.
	closeHandshakeTimeout = time.Second
)

// Options configure Dial. The zero value is usable.
type Options struct {
	// Header holds extra headers for the HTTP upgrade request.
	Header http.Header
	// DialTimeout bounds the whole of Dial: TCP connect, upgrade and the
	// wait for the first frame. Default 5s.
	DialTimeout time.Duration
	// LocalAddr is an optional source IP (e.g. "127.0.0.2") or "ip:port" to
	// bind before dialing, so load tests can exceed one IP's port range.
	LocalAddr string

	// TLSConfig is the TLS configuration for wss:// URLs (a CA pool for a
	// self-signed certificate, say); nil: the system roots.
	TLSConfig *tls.Config

	// WriteTimeout bounds every write on the connection. Default 10s.
	WriteTimeout time.Duration
	// QueueSize is the capacity of the queue between the reader goroutine and
	// Next (in events). When it is full the reader stops reading, which pushes
	// back on the server through TCP. The queue holds pointers, so each Conn
	// costs 8 bytes per slot up front. Default 4096.
	QueueSize int
	// MaxPending bounds how many skipped events WaitFor and Subscribe keep
	// for later Next calls (beyond the queue). Default 65536.
	MaxPending int
	// MaxMessageSize bounds one received WebSocket message (all fragments
	// together), in bytes. A bigger message fails the connection. Default
	// 16 MiB.
	MaxMessageSize int64
	// NoHandshakeWait makes Dial return right after the WebSocket upgrade,
	// without waiting for pusher:connection_established: the first frame is
	// then left for Next, and SocketID and ActivityTimeout stay empty. For
	// conformance tests of the handshake itself.
	NoHandshakeWait bool
	// OnControl, when set, is called on the reader goroutine for every
	// WebSocket control frame received (ping, pong, close), before the
	// automatic reply. It must not block and must not keep payload.
	OnControl func(op ws.OpCode, payload []byte)
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	return o
}

// Conn is one Pusher WebSocket connection.
//
// Concurrency: the writers (Send, SendRaw, SendFrame, SendBytes, Unsubscribe)
// may be called from any goroutine; writes are serialized. The readers (Next,
// WaitFor, Subscribe, SubscribeAuth) may also be called concurrently, but they
// take turns: one of them reads at a time, and concurrent readers compete for
// events. Close, CloseNow and the getters are safe at any time.
type Conn struct {
	conn net.Conn
	opt  Options

	socketID        string
	activityTimeout time.Duration

	autoPong atomic.Bool

	// Write side. wmu guards everything below it.
	wmu       sync.Mutex
	wbuf      bytes.Buffer
	closeSent bool // a close frame was written
	wclosed   bool // no more writes: closed locally or the reader ended

	// Reader goroutine -> readers. events is closed by the reader goroutine
	// when it exits, after it has set termErr.
	events     chan *Event
	termErr    error
	readerDone chan struct{}

	// Readers. rsem is a one-slot semaphore held by the one reading method
	// running; pending and pendingHead are owned by its holder.
	rsem        chan struct{}
	pending     []Event
	pendingHead int

	// Shutdown. closing is closed when Close or CloseNow starts: the reader
	// then drops events instead of blocking on a full queue, and ends with
	// ErrClosed.
	closeOnce sync.Once
	closing   chan struct{}
}

// Dial connects to a ws:// URL (e.g. ws://127.0.0.1:6001/app/app-key?protocol=7)
// and waits for the first frame. If it is pusher:connection_established it
// returns the Conn with SocketID and ActivityTimeout set. If it is a
// pusher:error, or the server closes the connection, it returns a *CloseError
// with the pusher error code or the WebSocket close code. Any other first
// frame is an error too. Transport and upgrade failures are returned wrapped
// (an HTTP status other than 101 wraps a ws.StatusError).
func Dial(ctx context.Context, url string, opt Options) (*Conn, error) {
	opt = opt.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, opt.DialTimeout)
	defer cancel()

	d := ws.Dialer{Timeout: opt.DialTimeout, TLSConfig: opt.TLSConfig}
	if opt.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(opt.Header)
	}
	if opt.LocalAddr != "" {
		laddr, err := resolveLocalAddr(opt.LocalAddr)
		if err != nil {
			return nil, err
		}
		nd := net.Dialer{LocalAddr: laddr}
		d.NetDial = nd.DialContext
	}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}

	c := &Conn{
		conn:       nc,
		opt:        opt,
		events:     make(chan *Event, opt.QueueSize),
		readerDone: make(chan struct{}),
		rsem:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
	}
	c.autoPong.Store(true)
	go c.readLoop(newSource(br, nc))

	if opt.NoHandshakeWait {
		return c, nil
	}
	if err := c.handshake(ctx); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	return c, nil
}

func resolveLocalAddr(s string) (*net.TCPAddr, error) {
	if ip := net.ParseIP(s); ip != nil {
		return &net.TCPAddr{IP: ip}, nil
	}
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return nil, fmt.Errorf("client: local address %q: %w", s, err)
	}
	return a, nil
}

// handshake waits for the first frame and interprets it.
func (c *Conn) handshake(ctx context.Context) error {
	var ev *Event
	select {
	case e, ok := <-c.events:
		if !ok {
			return c.termErr
		}
		ev = e
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", EventConnectionEstablished, ctx.Err())
	}
	switch ev.Event {
	case EventConnectionEstablished:
		var est established
		if err := json.Unmarshal([]byte(ev.Data), &est); err != nil {
			return fmt.Errorf("decode %s data %q: %w", ev.Event, ev.Data, err)
		}
		c.socketID = est.SocketID
		c.activityTimeout = time.Duration(est.ActivityTimeout) * time.Second
		return nil
	case EventError:
		code, msg := parsePusherError(ev.Data)
		return &CloseError{Code: code, Reason: msg}
	default:
		return fmt.Errorf("invalid handshake: first frame %q", ev.Raw)
	}
}

// SocketID returns the socket_id from pusher:connection_established.
func (c *Conn) SocketID() string { return c.socketID }

// ActivityTimeout returns the server's activity_timeout.
func (c *Conn) ActivityTimeout() time.Duration { return c.activityTimeout }

// LocalAddr returns the local network address of the TCP connection.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// SetAutoPong turns automatic replies on or off. When on (the default) the
// reader goroutine answers pusher:ping with {"event":"pusher:pong","data":{}}
// and WebSocket pings with pongs carrying the same payload, as pusher-js does.
// The pings are still delivered to Next.
func (c *Conn) SetAutoPong(on bool) { c.autoPong.Store(on) }

// message is the envelope the client sends.
type message struct {
	Event   string `json:"event"`
	Channel string `json:"channel,omitempty"`
	Data    any    `json:"data,omitempty"`
}

// Send sends {"event":event,"channel":channel,"data":data} as one text frame.
// data is marshalled with encoding/json as a value (an object for a map or
// struct, a JSON string for a string); channel is omitted when empty and data
// when nil. Use json.RawMessage to send exact JSON.
func (c *Conn) Send(event, channel string, data any) error {
	b, err := json.Marshal(message{Event: event, Channel: channel, Data: data})
	if err != nil {
		return fmt.Errorf("client: send %s: %w", event, err)
	}
	return c.SendRaw(b)
}

// SendRaw sends frame as one text frame, unchecked (tests send malformed
// input with it).
func (c *Conn) SendRaw(frame []byte) error {
	return c.SendFrame(ws.OpText, true, frame)
}

// SendFrame sends one WebSocket frame with the given opcode and FIN bit,
// masked as a client must. Nothing is checked: control frames longer than
// 125 bytes, fragments and reserved opcodes go out as asked (for RFC 6455
// tests). The payload is not modified. Writing a close frame makes the reader
// goroutine end after the server's close frame without answering it again.
func (c *Conn) SendFrame(op ws.OpCode, fin bool, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendFrameLocked(op, fin, payload)
}

// sendFrameLocked masks and writes one frame. c.wmu must be held.
func (c *Conn) sendFrameLocked(op ws.OpCode, fin bool, payload []byte) error {
	h := ws.Header{
		Fin:    fin,
		OpCode: op,
		Length: int64(len(payload)),
		Masked: true,
		Mask:   ws.NewMask(),
	}
	c.wbuf.Reset()
	if err := ws.WriteHeader(&c.wbuf, h); err != nil {
		return fmt.Errorf("client: write frame: %w", err)
	}
	start := c.wbuf.Len()
	c.wbuf.Write(payload)
	ws.Cipher(c.wbuf.Bytes()[start:], h.Mask, 0)
	err := c.writeLocked(c.wbuf.Bytes())
	if c.wbuf.Cap() > 64<<10 {
		c.wbuf = bytes.Buffer{} // do not keep a big buffer per Conn
	}
	if err == nil && op == ws.OpClose {
		c.closeSent = true
	}
	return err
}

// SendBytes writes p to the TCP connection as is, with no framing (for tests
// of partial, unmasked or otherwise invalid frames).
func (c *Conn) SendBytes(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(p)
}

// writeLocked writes p with the write timeout. c.wmu must be held.
func (c *Conn) writeLocked(p []byte) error {
	if c.wclosed {
		return ErrClosed
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.opt.WriteTimeout)); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	if _, err := c.conn.Write(p); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

// writeClose writes a close frame with the given body unless one was already
// written or writes are over.
func (c *Conn) writeClose(body []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.closeSent && !c.wclosed {
		_ = c.sendFrameLocked(ws.OpClose, true, body)
	}
}

// stopWrites makes every later write return ErrClosed.
func (c *Conn) stopWrites() {
	c.wmu.Lock()
	c.wclosed = true
	c.wmu.Unlock()
}

// Close sends a close frame with code 1000, waits briefly (at most 1s) for
// the server's close frame, then closes the TCP connection and waits for the
// reader goroutine to exit. It is idempotent and always returns nil. Events
// received before the close stay readable with Next, which then returns
// ErrClosed.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.writeClose(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		t := time.NewTimer(closeHandshakeTimeout)
		select {
		case <-c.readerDone:
		case <-t.C:
		}
		t.Stop()
		c.drop()
	})
	<-c.readerDone
	return nil
}

// CloseNow drops the TCP connection without a close frame (simulates a
// network cut as far as the server can tell: it sees the connection end with
// no closing handshake), and waits for the reader goroutine to exit. It is
// idempotent, may follow Close, and always returns nil.
func (c *Conn) CloseNow() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.drop()
	})
	<-c.readerDone
	return nil
}

// drop closes the TCP connection. Called once, from closeOnce. The
// connection is closed before taking c.wmu, so that a write stuck on a peer
// that does not read fails at once instead of holding the lock.
func (c *Conn) drop() {
	_ = c.conn.Close()
	c.stopWrites()
}
