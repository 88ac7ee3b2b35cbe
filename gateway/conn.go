package gateway

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"herald/app"
	"herald/protocol"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // close frame queued; waiting for the peer or the close timeout
	stateClosed            // fd closed; nothing may touch it
	// stateHandshake: accepted by a poller, its request head not read yet
	// (accept.go); it has no app and gets no frames.
	stateHandshake
)

// maxIovecs caps one writev call. Linux allows 1024; each call here carries at
// most this many frames, and the flush loops for more.
const maxIovecs = 64

// Conn is one WebSocket connection on the epoll edge. No goroutine belongs to
// it: its poller reads it, and any goroutine may queue frames to it.
//
// Fields in the first group are set before the connection is registered and
// never change. Fields under "poller only" are touched only by the goroutine
// of the poller that owns the connection. Everything under mu is shared.
type Conn struct {
	fd     int
	app    *app.App // the app as it was when the connection was accepted
	id     protocol.SocketID
	poller *poller

	// poller only
	in        *inbound // bytes of an incomplete frame or message; nil when none (most of the time)
	lastIn    int64    // unix nanos of the last complete inbound frame
	pingAt    int64    // unix nanos when a probe was sent; 0 when none is outstanding
	pidx      int32    // index in poller.conns
	seeded    bool     // rbuf holds bytes read before registration, not yet parsed
	dirty     bool     // on the poller's list of sockets to write after its deliveries (deliver.go)
	ceWarned  bool     // the client-event window's 4301 was sent (one per window)
	subs      []subscription
	user      *signedIn // set by pusher:signin; nil before (most sockets never sign in)
	born      int64     // unix nanos of registration
	ceWindow  int64     // start of the current client-event rate window
	subAt     int64     // unix nanos of the last subscribe or unsubscribe; 0 before the first (limits.go)
	subWarnAt int64     // unix nanos of the last 4303
	ceCount   int32     // client events in that window
	subTokens float32   // subscribe and unsubscribe messages the socket may still send now
	ipe       *ipEntry  // the source address's entry in the per-IP limits; nil when not counted

	mu        sync.Mutex
	st        atomic.Uint32      // connState; written under mu, read anywhere
	blocked   bool               // the kernel refused bytes; the poller flushes on EPOLLOUT
	reason    closeReason        // why it is closing, set once with the close (metrics.go)
	counted   bool               // counted in its app's connections (connCounter); set before registration, never changed
	queue     [][]byte           // frames waiting for the kernel; queue[0] may be partly written
	queued    int                // bytes in queue
	closingAt int64              // unix nanos when stateClosing began
	replays   map[string]*replay // channels whose live events are held for a replay; nil when none
}

// inbound is what a connection has read but not yet handled: the bytes
// of an incomplete frame (or, before the upgrade, of its request head,
// accept.go) and an incomplete fragmented message. Kept apart, since an
// idle socket has neither.
type inbound struct {
	buf  []byte     // nil when none
	frag *fragments // nil when none
}

// signedIn is a connection's pusher:signin (users.go): kept apart, since
// few sockets sign in and every one pays for a field (docs/design.md, "Idle
// memory").
type signedIn struct {
	id   string
	info json.RawMessage // the user's user_info, or nil
}

// userID is the signed-in user's id, "" before pusher:signin.
func (c *Conn) userID() string {
	if c.user == nil {
		return ""
	}
	return c.user.id
}

// userInfo is the signed-in user's user_info, or nil.
func (c *Conn) userInfo() json.RawMessage {
	if c.user == nil {
		return nil
	}
	return c.user.info
}

// errConnClosed reports a write to a connection that is closing or closed.
var errConnClosed = errors.New("gateway: connection closed")

func (c *Conn) state() connState { return connState(c.st.Load()) }

// setState changes the state. c.mu must be held.
func (c *Conn) setState(s connState) { c.st.Store(uint32(s)) }

// SocketID returns the connection's Pusher socket id.
func (c *Conn) SocketID() protocol.SocketID { return c.id }

// send queues one frame and writes what the kernel takes now.
// The frame must not be modified afterwards; it may be shared with other
// connections.
func (c *Conn) send(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state() != stateOpen {
		return errConnClosed
	}
	if !c.enqueueLocked(frame) {
		return errConnClosed
	}
	c.flushLocked()
	return nil
}

// enqueueLocked appends a frame to the queue without writing. A connection
// whose queue passes the gateway's bound is failed as a slow consumer and
// false is returned. c.mu must be held and the connection open.
func (c *Conn) enqueueLocked(frame []byte) bool {
	g := c.poller.g
	if c.queued+len(frame) > g.cfg.WriteQueueBytes {
		// A delivery batch queues before it writes (deliver.go); one
		// larger than the bound must not fail a reader that keeps up, so
		// the kernel is offered what waits before the socket is judged,
		// even when the last write was refused: the poller queuing this
		// batch is the one that would see the EPOLLOUT that clears
		// blocked, and it sees it only after the batch.
		c.blocked = false
		c.flushLocked()
	}
	if c.queued+len(frame) > g.cfg.WriteQueueBytes {
		g.stats.slowConsumers.Add(1)
		g.metrics.limits[limitSlowConsumer].Add(1)
		c.failSlowLocked()
		return false
	}
	c.appendLocked(frame)
	return true
}

// appendLocked queues a frame with no bound check. c.mu must be held.
func (c *Conn) appendLocked(frame []byte) {
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
}

// failSlowLocked closes a connection whose reader cannot keep up. The queued
// frames that have not started are dropped so the close frame can go out at
// once; a frame already partly written stays, or the stream would be corrupt.
// c.mu must be held.
func (c *Conn) failSlowLocked() {
	keep := 0
	if len(c.queue) > 0 && c.blocked {
		keep = 1 // may be partly written
	}
	for i := keep; i < len(c.queue); i++ {
		c.queue[i] = nil
	}
	c.queue = c.queue[:keep]
	c.queued = 0
	for _, f := range c.queue {
		c.queued += len(f)
	}
	c.reason = reasonSlowConsumer
	// The kernel's send buffer is full and may end inside a frame whose
	// rest is queue[0]. Room for that rest, the pusher:error and the close
	// frame lets the stream end on a frame boundary with the 4100, which a
	// client that reads late then still receives (growSendBuffer).
	if c.blocked && growSendBuffer(c.fd, c.queued+slowTailBytes) {
		c.blocked = false
	}
	c.beginCloseLocked(protocol.CodeOverCapacity, "Slow consumer: write queue full")
}

// beginCloseLocked starts the closing handshake: a pusher:error (for Pusher
// codes) and a close frame are queued and written, and the poller finishes the
// job when the peer answers or the close timeout passes. c.mu must be held.
func (c *Conn) beginCloseLocked(code int, reason string) {
	if c.state() != stateOpen {
		return
	}
	c.setState(stateClosing)
	c.closingAt = time.Now().UnixNano()
	c.poller.leaving(c)
	if c.reason == reasonNone {
		c.reason = reasonOf(code)
	}
	c.poller.g.tapClosed(c, code, reason)
	if code >= 4000 {
		msg := protocol.AppendError(nil, code, reason, "")
		c.appendLocked(textFrame(msg))
	}
	c.appendLocked(closeFrame(ws.StatusCode(code), reason))
	c.flushLocked()
}

// closeWith starts closing the connection with a close code and reason. Any
// goroutine may call it; it is a no-op on a connection already closing.
func (c *Conn) closeWith(code int, reason string) {
	c.mu.Lock()
	c.beginCloseLocked(code, reason)
	c.mu.Unlock()
}

// abortLocked shuts the socket down at once, without a closing handshake. The
// poller sees the hang-up and releases the connection. c.mu must be held.
func (c *Conn) abortLocked() {
	if c.state() == stateClosed {
		return
	}
	if c.state() == stateOpen {
		c.setState(stateClosing)
		c.closingAt = time.Now().UnixNano()
		c.poller.leaving(c)
	}
	c.dropQueueLocked()
	_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
}

func (c *Conn) dropQueueLocked() {
	clear(c.queue)
	c.queue = nil
	c.queued = 0
}

// flushLocked writes queued frames with writev until the queue is empty or
// the kernel takes no more. When the queue drains on a closing connection the
// write side is shut down, which sends the FIN after the close frame.
// c.mu must be held.
func (c *Conn) flushLocked() {
	if c.blocked || c.state() == stateClosed {
		return
	}
	for len(c.queue) > 0 {
		n, offered, err := writev(c.fd, c.queue)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			c.blocked = true
			return
		}
		if err != nil {
			c.abortLocked()
			return
		}
		c.poller.g.stats.writes.Add(1)
		c.consumeLocked(n)
		if n < offered {
			c.blocked = true // the kernel buffer is full; EPOLLOUT will follow
			return
		}
	}
	c.queue = nil // release the backing array while idle
	if c.state() == stateClosing {
		_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	}
}

// writeLocked queues one frame and writes it now: with nothing waiting, by
// one write(2) straight from the frame, so an idle socket gets an event
// without a queue being made for it; otherwise behind what waits. c.mu must
// be held and the connection open.
func (c *Conn) writeLocked(frame []byte) {
	if c.blocked || len(c.queue) > 0 {
		if c.enqueueLocked(frame) {
			c.flushLocked()
		}
		return
	}
	for {
		n, err := unix.Write(c.fd, frame)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			n = 0
		case err != nil:
			c.abortLocked()
			return
		default:
			c.poller.g.stats.writes.Add(1)
		}
		if n < len(frame) {
			c.appendLocked(frame[n:]) // the rest waits for EPOLLOUT
			c.blocked = true
		}
		return
	}
}

// consumeLocked drops n written bytes from the head of the queue.
// c.mu must be held.
func (c *Conn) consumeLocked(n int) {
	c.queued -= n
	i := 0
	for i < len(c.queue) && n >= len(c.queue[i]) {
		n -= len(c.queue[i])
		c.queue[i] = nil
		i++
	}
	if n > 0 {
		c.queue[i] = c.queue[i][n:]
	}
	c.queue = c.queue[i:]
}

// onWritable is called by the poller on EPOLLOUT.
func (c *Conn) onWritable() {
	c.mu.Lock()
	if c.blocked {
		c.blocked = false
		c.flushLocked()
	}
	c.mu.Unlock()
}

// writev writes the first maxIovecs frames (or fewer) with one system call
// and returns the bytes written and the bytes it offered. Frames are never
// empty.
func writev(fd int, frames [][]byte) (written, offered int, err error) {
	var iov [maxIovecs]unix.Iovec
	n := min(len(frames), maxIovecs)
	for i, f := range frames[:n] {
		iov[i].Base = &f[0]
		iov[i].SetLen(len(f))
		offered += len(f)
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, offered, e
	}
	return int(r), offered, nil
}
