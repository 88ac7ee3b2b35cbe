package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

const (
	// readBufferSize is the poller's read buffer, shared by all its
	// connections; a connection holds bytes of its own only while a frame is
	// incomplete.
	readBufferSize = 64 << 10
	// readBudget bounds the bytes read from one connection per wake-up, so a
	// flooding client cannot starve the others on its poller.
	readBudget = 256 << 10
	// closeTimeout is how long a closing connection may wait for its peer to
	// finish the closing handshake before the socket is released anyway.
	closeTimeout = 5 * time.Second
	sweepEvery   = time.Second
	// pendingSweepEvery is how often sockets whose request head is not in
	// yet are checked against gateway.handshake_timeout (accept.go): the
	// deadline holds to within it.
	pendingSweepEvery = 100 * time.Millisecond
)

// poller owns an epoll instance and the connections registered with it. One
// goroutine runs it; it reads, decodes and handles every message of its
// connections, and is the only goroutine that closes their file descriptors.
type poller struct {
	g      *Gateway
	idx    int // in g.pollers; the part of a channel's subscribers that are this poller's (hub.go)
	epfd   int
	wakefd int
	dec    frameDecoder
	buf    []byte
	events []unix.EpollEvent

	conns       []*Conn  // every registered connection (poller only)
	again       []*Conn  // connections that hit the read budget with bytes left
	dirty       []*Conn  // connections queued to by runUnit, to write (deliver.go)
	work        []*batch // batches taken from batches, delivered a unit per loop (deliver.go)
	cur         *Conn    // the connection being decoded
	now         int64
	lastSweep   int64
	lastPending int64 // the last sweepPending

	mu       sync.Mutex
	incoming []*Conn  // registered but not yet in conns
	tasks    []func() // run on the poller's goroutine at its next wake-up (inspect.go)
	batches  []*batch // live events to queue to this poller's sockets (deliver.go)
	spare    []*batch // the other half of batches' double buffer
	// queued counts the socket slots and events in batches and work
	// (maxQueued); taken is signalled when the poller has delivered a batch
	// (deliver waits on it).
	queued   int
	taken    sync.Cond
	left     []*Conn // began closing since the last loop: their subscriptions end at once (leaving)
	stopping bool

	// accepting (accept.go); poller only
	lis         *Listener     // the client port, when this poller accepts on it
	acceptOff   bool          // lis is out of the epoll set for a pause (pauseAccept)
	acceptPause time.Duration // the current pause
	acceptAt    int64         // unix nanos when the pause ends
	pending     []pendingConn // accepted sockets whose request head is not read yet (stateHandshake)

	done chan struct{}
}

func newPoller(g *Gateway, idx int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("gateway: register eventfd: %w", err)
	}
	p := &poller{
		g:      g,
		idx:    idx,
		epfd:   epfd,
		wakefd: wakefd,
		buf:    make([]byte, readBufferSize),
		events: make([]unix.EpollEvent, 256),
		done:   make(chan struct{}),
	}
	p.taken.L = &p.mu
	return p, nil
}

// errPollerStopping: the poller takes no more connections; the caller still
// owns the connection.
var errPollerStopping = errors.New("gateway: poller stopping")

// register hands a connection to the poller. On errPollerStopping the caller
// keeps the connection; on any other error the poller owns it (and releases
// it). Edge-triggered: the poller is
// told when bytes arrive and when a full send buffer drains, and always reads
// until it has all there is.
func (p *poller) register(c *Conn) error {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return errPollerStopping
	}
	p.incoming = append(p.incoming, c)
	p.g.fds[c.fd].Store(c)
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		// The poller releases it: it is in incoming, and its state says
		// closing, so the sweep lets it go after the close timeout.
		c.mu.Lock()
		c.abortLocked()
		c.mu.Unlock()
		return fmt.Errorf("gateway: epoll add: %w", err)
	}
	return nil
}

func (p *poller) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakefd, one[:])
}

// stop asks the poller to close every connection and exit, and waits for it.
func (p *poller) stop() {
	p.mu.Lock()
	p.stopping = true
	p.taken.Broadcast()
	p.mu.Unlock()
	p.wake()
	<-p.done
}

func (p *poller) run() {
	defer close(p.done)
	for {
		timeout := int(sweepEvery / time.Millisecond)
		if p.acceptOff {
			timeout = min(timeout, max(1, int((p.acceptAt-time.Now().UnixNano())/int64(time.Millisecond))))
		}
		if len(p.pending) > 0 {
			timeout = min(timeout, int(pendingSweepEvery/time.Millisecond))
		}
		if len(p.again) > 0 || len(p.work) > 0 {
			timeout = 0
		}
		n, err := unix.EpollWait(p.epfd, p.events, timeout)
		if err != nil && err != unix.EINTR {
			p.g.log.Error("epoll_wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		p.now = time.Now().UnixNano()
		if p.absorb() {
			p.shutdown()
			return
		}
		p.unsubscribeLeft()
		for i := 0; i < n; i++ {
			ev := &p.events[i]
			if int(ev.Fd) == p.wakefd {
				var b [8]byte
				_, _ = unix.Read(p.wakefd, b[:])
				continue
			}
			if p.lis != nil && int(ev.Fd) == p.lis.fd {
				p.accept()
				continue
			}
			if c := p.g.fds[ev.Fd].Load(); c != nil && c.poller == p {
				p.handle(c, ev.Events)
			}
		}
		p.retry()
		p.deliverSome()
		p.resumeAccept()
		if len(p.pending) > 0 && p.now-p.lastPending >= int64(pendingSweepEvery) {
			p.lastPending = p.now
			p.sweepPending()
		}
		if p.now-p.lastSweep >= int64(sweepEvery) {
			p.lastSweep = p.now
			p.sweep()
		}
	}
}

// absorb moves newly registered connections into conns and reports whether
// the poller is stopping.
func (p *poller) absorb() bool {
	p.mu.Lock()
	in, stopping, tasks, batches := p.incoming, p.stopping, p.tasks, p.batches
	p.incoming, p.tasks, p.batches = nil, nil, p.spare[:0]
	p.spare = batches
	p.mu.Unlock()
	for _, c := range in {
		// A connection that is already closing (its app was refused, or
		// registration failed) is released by the sweep or on the peer's FIN.
		c.pidx = int32(len(p.conns))
		c.lastIn, c.born = p.now, p.now
		p.conns = append(p.conns, c)
	}
	for _, f := range tasks {
		f()
	}
	p.work = append(p.work, batches...)
	clear(batches)
	return stopping
}

// leaving queues a connection that began closing, so that the poller
// drops its subscriptions at once rather than at its release, which waits
// for the peer's close (up to closeTimeout): a closing socket gets no more
// events, so it must not be counted in subscription_count or occupancy.
// Any goroutine may call it, with c.mu held (p.mu is taken after it).
func (p *poller) leaving(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return // shutdown releases every connection, and may have closed wakefd
	}
	if len(p.left) == 0 {
		p.wake() // under p.mu: shutdown, which closes wakefd, follows a stopping seen under it
	}
	p.left = append(p.left, c)
}

// unsubscribeLeft ends the subscriptions of the connections queued by
// leaving (c.subs is the poller's).
func (p *poller) unsubscribeLeft() {
	p.mu.Lock()
	left := p.left
	p.left = nil
	p.mu.Unlock()
	for _, c := range left {
		if c.state() != stateClosed {
			p.g.leaveAll(c)
		}
	}
	clear(left)
}

func (p *poller) handle(c *Conn, events uint32) {
	if c.state() == stateHandshake {
		if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			p.handshake(c)
		}
		return
	}
	if c.seeded {
		c.seeded = false
		if !p.consume(c, nil) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if !p.read(c) {
			return
		}
	}
	if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.onWritable()
	}
}

// read drains the socket into the poller's buffer and decodes what arrived.
// It reports false when the connection was released.
func (p *poller) read(c *Conn) bool {
	total := 0
	for {
		n, err := unix.Read(c.fd, p.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		case err != nil || n == 0:
			p.release(c)
			return false
		}
		total += n
		if !p.consume(c, p.buf[:n]) {
			// closing: keep reading to see the peer's FIN, discarding bytes
			continue
		}
		if n < len(p.buf) {
			// The socket is drained; with edge triggering, more bytes
			// arriving later raise a new event.
			return true
		}
		if total >= readBudget {
			p.again = append(p.again, c)
			return true
		}
	}
}

// retry reads again from connections that hit the read budget.
func (p *poller) retry() {
	if len(p.again) == 0 {
		return
	}
	again := p.again
	p.again = nil
	for _, c := range again {
		if p.g.fds[c.fd].Load() == c {
			p.read(c)
		}
	}
	clear(again)
}

// consume appends data to the connection's pending bytes and decodes every
// complete frame. It reports false when the connection is not open (any bytes
// are then discarded).
func (p *poller) consume(c *Conn, data []byte) bool {
	if c.state() != stateOpen {
		c.in = nil
		return false
	}
	in := c.in
	buf := data
	var frag *fragments
	if in != nil {
		frag = in.frag
		if in.buf != nil {
			in.buf = append(in.buf, data...)
			buf = in.buf
		}
	}
	p.cur = c
	n, werr := p.dec.decode(buf, p.g.cfg.MaxMessageBytes, &frag, p)
	p.cur = nil
	if werr != nil {
		c.in = nil
		c.closeWith(int(werr.code), werr.reason)
		return false
	}
	rest := buf[n:]
	var keep []byte
	switch {
	case len(rest) == 0:
	case in != nil && in.buf != nil && cap(in.buf) <= 4*len(rest)+4096:
		keep = append(in.buf[:0], rest...)
	default:
		keep = append(make([]byte, 0, len(rest)+512), rest...)
	}
	switch {
	case keep == nil && frag == nil:
		c.in = nil
	case in == nil:
		c.in = &inbound{buf: keep, frag: frag}
	default:
		in.buf, in.frag = keep, frag
	}
	return c.state() == stateOpen
}

// onMessage implements frameHandler for the connection being decoded.
func (p *poller) onMessage(op ws.OpCode, payload []byte) bool {
	c := p.cur
	c.lastIn, c.pingAt = p.now, 0
	p.g.handleMessage(c, payload)
	return c.state() == stateOpen
}

// onControl implements frameHandler: pings are answered with pongs carrying
// the same payload, a close is echoed (RFC 6455 5.5.1).
func (p *poller) onControl(op ws.OpCode, payload []byte) bool {
	c := p.cur
	c.lastIn, c.pingAt = p.now, 0
	switch op {
	case ws.OpPing:
		_ = c.send(appendFrame(make([]byte, 0, len(payload)+2), ws.OpPong, payload))
	case ws.OpClose:
		code, werr := parseClose(payload)
		if werr != nil {
			c.closeWith(int(werr.code), werr.reason)
			return false
		}
		if code == ws.StatusNoStatusRcvd {
			code = ws.StatusNormalClosure
		}
		c.closeWith(int(code), "")
		return false
	}
	return true
}

// sweep runs once a second: it probes silent connections, closes those that
// did not answer the probe, and releases connections stuck in closing.
func (p *poller) sweep() {
	g := p.g
	activity, pong := int64(g.cfg.ActivityTimeout), int64(g.cfg.PongTimeout)
	for i := 0; i < len(p.conns); {
		c := p.conns[i]
		if c.state() != stateOpen {
			c.mu.Lock()
			expired := p.now-c.closingAt >= int64(closeTimeout)
			c.mu.Unlock()
			if expired {
				p.release(c) // moves the last connection to index i
				continue
			}
			i++
			continue
		}
		switch {
		case c.app != nil && c.app.UserAuthentication && c.userID() == "" && p.now-c.born >= int64(p.g.cfg.UserAuthTimeout):
			c.closeWith(4009, "Connection not signed in within 30 seconds")
		case c.pingAt == 0 && p.now-c.lastIn >= activity:
			c.pingAt = p.now
			_ = c.send(g.frames.ping)
		case c.pingAt != 0 && p.now-c.pingAt >= pong:
			c.closeWith(4201, "Pong reply not received")
		}
		i++
	}
}

// release closes the file descriptor and forgets the connection. Only the
// poller calls it, so no read can race with the close; writers see
// stateClosed under c.mu before the descriptor number can be reused.
func (p *poller) release(c *Conn) {
	c.mu.Lock()
	if c.state() == stateClosed {
		c.mu.Unlock()
		return
	}
	c.setState(stateClosed)
	c.dropQueueLocked()
	c.mu.Unlock()

	// No EPOLL_CTL_DEL: this is the socket's only descriptor (adopt closed
	// the net.Conn's, accept.go made no other), and closing the last one
	// takes it out of the epoll set.
	p.g.fds[c.fd].Store(nil)
	_ = unix.Close(c.fd)

	last := len(p.conns) - 1
	if i := int(c.pidx); i <= last && p.conns[i] == c {
		p.conns[i] = p.conns[last]
		p.conns[i].pidx = int32(i)
		p.conns[last] = nil
		p.conns = p.conns[:last]
		if cap(p.conns) > 1024 && len(p.conns) < cap(p.conns)/4 {
			// Return a flood's worth of slots (RSS after floods).
			p.conns = append(make([]*Conn, 0, 2*len(p.conns)), p.conns...)
		}
	}
	c.in = nil
	p.g.connClosed(c)
}

// shutdown closes every connection with 4200 so clients reconnect at once
// (to another node, or to this one when it is back), then releases them.
func (p *poller) shutdown() {
	for _, b := range p.work {
		p.g.recycle(b)
	}
	p.work = nil
	if p.lis != nil {
		p.dropListener(p.lis)
	}
	for len(p.pending) > 0 {
		c := p.pending[len(p.pending)-1].c
		p.endPending(c)
		_ = unix.Close(c.fd)
	}
	for _, c := range p.conns {
		c.closeWith(4200, "Server shutting down")
	}
	for len(p.conns) > 0 {
		p.release(p.conns[len(p.conns)-1])
	}
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wakefd)
}
