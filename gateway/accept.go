package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"herald/app"
)

// The pollers accept the client port's connections themselves and upgrade
// WebSocket requests for /app/ without fasthttp: the listening socket is in
// every poller's epoll set (EPOLLEXCLUSIVE, so one wake-up per connection),
// a wake-up drains accept4, the request head is read straight into the
// poller's buffer, and the 101 with pusher:connection_established goes out
// in one write. No goroutine, bufio buffer, RequestCtx or net.Conn is made
// for such a socket; that was most of a connect's cost (docs/benchmarks.md).
//
// Everything else is handed to fasthttp over a net.Listener (Listen), with
// the bytes already read in front, so REST and the edge share one port and
// fasthttp keeps every HTTP rule it had: a request that is not a plain
// upgrade of /app/ (REST, /healthz, a request head in pieces that does not
// start like one, a head over gateway.max_header_bytes, anything unusual in
// the path or query) is served by fasthttp exactly as before, including
// its 400/413/431 answers and, for an upgrade that reaches it, ServeUpgrade.
//
// What a handshake on a poller keeps from the fasthttp path: the same
// checks in the same order (checkHandshakeParts, then overBudget, admitParts,
// sourceAddrOf with trusted proxies and X-Forwarded-For, admitAddr, the
// app's quota; establish and opened are shared with adopt), and the
// handshake deadline: a socket that has not sent a complete head within
// gateway.handshake_timeout gets the 408 fasthttp would have sent and is
// closed (sweepPending, to within 100 ms), counted as a handshake_timeout
// refusal.

// acceptBudget bounds the connections one poller accepts per wake-up, so a
// connect storm cannot starve the sockets it already has; the listening
// socket is level-triggered, so what is left raises the next wake-up.
const acceptBudget = 64

// handshakeTimeoutBody is the 408 the API's fasthttp server answers a late
// request head with (api/limits.go requestError), byte for byte in its body.
var handshakeTimeoutResponse = func() []byte {
	body := `{"error":"Request not received in time","status":408}`
	return []byte(fmt.Sprintf("HTTP/1.1 408 Request Timeout\r\nServer: herald\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
}()

// Listener is the client port as the pollers serve it. Its Accept returns
// the connections that are not WebSocket upgrades of /app/ (or that the
// pollers did not recognise as such), for fasthttp to serve.
type Listener struct {
	g    *Gateway
	fd   int // the listening socket, owned here; closed when the last poller has dropped it
	addr net.Addr
	refs atomic.Int32 // pollers that still have fd in their epoll set

	mu     sync.Mutex
	queue  []handoff
	ready  chan struct{} // a token when queue may be non-empty
	closed chan struct{}
	once   sync.Once

	exhausts atomic.Uint64 // accept4 refused for want of descriptors or memory
	lastLog  atomic.Int64  // unix nanos of the last warning about it
}

// handoff is a socket for fasthttp with the bytes the poller read from it
// and when its head is due (Unix nanoseconds: accepted plus
// gateway.handshake_timeout).
type handoff struct {
	fd     int
	pre    []byte
	headBy int64
}

// Listen makes the pollers accept on ln, which must be a TCP listener; the
// gateway takes its socket (ln itself is closed). Serve the returned
// listener with the HTTP server: it yields every connection that is not a
// WebSocket upgrade of /app/. Closing it stops the pollers' accepting and
// closes the socket.
func (g *Gateway) Listen(ln net.Listener) (*Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("gateway: listen: %T is not a TCP listener", ln)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	if derr != nil {
		return nil, fmt.Errorf("gateway: listen: dup: %w", derr)
	}
	addr := tl.Addr()
	_ = tl.Close() // the duplicate keeps the socket listening
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("gateway: listen: nonblock: %w", err)
	}
	l := &Listener{g: g, fd: fd, addr: addr, ready: make(chan struct{}, 1), closed: make(chan struct{})}
	l.refs.Store(int32(len(g.pollers)))
	for _, p := range g.pollers {
		if !p.post(func() { p.takeListener(l) }) {
			l.drop() // the poller is stopping: it will never hold it
		}
	}
	return l, nil
}

// Accept returns the next connection for the HTTP server, with the bytes a
// poller already read from it in front.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			h := l.queue[0]
			l.queue[0] = handoff{}
			l.queue = l.queue[1:]
			if len(l.queue) == 0 {
				l.queue = nil
			}
			l.mu.Unlock()
			nc, err := fileConn(h.fd)
			if err != nil {
				l.g.log.Warn("hand a connection to the HTTP server", "err", err)
				continue
			}
			return &prefixConn{TCPConn: nc, pre: h.pre, headBy: time.Unix(0, h.headBy)}, nil
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-l.closed:
			return nil, fmt.Errorf("gateway: accept: %w", net.ErrClosed)
		case <-l.g.stop: // the gateway closed: its pollers accept no more
			return nil, fmt.Errorf("gateway: accept: gateway closed: %w", net.ErrClosed)
		}
	}
}

// fileConn turns a socket descriptor into a *net.TCPConn (which holds a
// duplicate) and closes the descriptor.
func fileConn(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "tcp")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		_ = nc.Close()
		return nil, errNotTCP
	}
	return tc, nil
}

// push queues a socket for Accept; after Close it is closed instead.
func (l *Listener) push(fd int, pre []byte, headBy int64) {
	l.mu.Lock()
	select {
	case <-l.closed:
		l.mu.Unlock()
		_ = unix.Close(fd)
		return
	default:
	}
	l.queue = append(l.queue, handoff{fd, pre, headBy})
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// Close stops accepting: the pollers drop the socket, the last one closes
// it, and connections not yet taken by Accept are closed.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		q := l.queue
		l.queue = nil
		l.mu.Unlock()
		for _, h := range q {
			_ = unix.Close(h.fd)
		}
		for _, p := range l.g.pollers {
			if !p.post(func() { p.dropListener(l) }) {
				// Stopping: its shutdown drops it (dropListener).
				continue
			}
		}
	})
	return nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// drop counts one poller off the socket; the last closes it.
func (l *Listener) drop() {
	if l.refs.Add(-1) == 0 {
		_ = unix.Close(l.fd)
	}
}

// prefixConn is a connection handed to fasthttp: the bytes the poller read
// come first. detachFD unwraps it when fasthttp hands an upgrade back.
type prefixConn struct {
	*net.TCPConn
	pre    []byte
	headBy time.Time // the head's deadline from the poller; zero once applied
}

// SetReadDeadline keeps the first deadline fasthttp sets, its ReadTimeout
// for the first request's head (api/api.go), no later than the deadline
// the head had on the poller: a head begun there gets
// gateway.handshake_timeout in all, not that again from the hand-over.
// Later deadlines (a REST body's, a keep-alive wait) are fasthttp's own.
func (c *prefixConn) SetReadDeadline(t time.Time) error {
	if !c.headBy.IsZero() {
		if t.IsZero() || t.After(c.headBy) {
			t = c.headBy
		}
		c.headBy = time.Time{}
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	return c.TCPConn.Read(b)
}

// post runs fn on the poller's goroutine at its next wake-up; false when the
// poller is stopping (fn will not run).
func (p *poller) post(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	if len(p.tasks) == 0 {
		p.wake()
	}
	p.tasks = append(p.tasks, fn)
	return true
}

// takeListener puts the listening socket in the poller's epoll set. Poller
// only.
func (p *poller) takeListener(l *Listener) {
	select {
	case <-l.closed:
		l.drop()
		return
	default:
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, l.fd, &ev); err != nil {
		p.g.log.Error("poller cannot accept", "err", err)
		l.drop()
		return
	}
	p.lis = l
}

// dropListener takes the listening socket out of the poller's epoll set.
// Poller only (or its shutdown).
func (p *poller) dropListener(l *Listener) {
	if p.lis != l {
		return
	}
	if !p.acceptOff {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	}
	p.lis, p.acceptOff = nil, false
	l.drop()
}

// accept drains the listening socket, up to acceptBudget connections.
func (p *poller) accept() {
	l := p.lis
	for range acceptBudget {
		fd, peer, err := accept4(l.fd)
		switch {
		case err == nil:
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM):
			p.pauseAccept(err)
			return
		default:
			p.g.log.Warn("accept failed", "err", err)
			return
		}
		p.acceptPause = 0
		p.begin(fd, peer)
	}
}

// pauseAccept stops this poller accepting for a while when the process is
// out of descriptors (or the kernel out of socket memory): the pending
// connections wait in the backlog until a descriptor frees up, and the
// level-triggered socket does not spin the poller meanwhile. The pause
// grows from 5 ms to 1 s while it lasts; the connections already open are
// untouched. (node/listener.go did this for fasthttp's accept loop.)
func (p *poller) pauseAccept(err error) {
	l := p.lis
	n := l.exhausts.Add(1)
	if now, last := p.now, l.lastLog.Load(); now-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
		p.g.log.Warn("accept paused: out of descriptors or socket memory (warned at most every 10 s)", "err", err, "times", n)
	}
	p.acceptPause = min(max(2*p.acceptPause, 5*time.Millisecond), time.Second)
	p.acceptAt = p.now + int64(p.acceptPause)
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	p.acceptOff = true
}

// resumeAccept puts the listening socket back after a pause.
func (p *poller) resumeAccept() {
	if p.lis == nil || !p.acceptOff || p.now < p.acceptAt {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(p.lis.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.lis.fd, &ev); err != nil {
		p.acceptAt = p.now + int64(time.Second)
		return
	}
	p.acceptOff = false
}

// AcceptPauses is how often accepting paused for want of descriptors.
func (l *Listener) AcceptPauses() uint64 { return l.exhausts.Load() }

// accept4 takes one connection off the listening socket, non-blocking and
// close-on-exec, with its peer's address. It is the system call alone:
// unix.Accept4 also asks the listening socket its protocol
// (getsockopt SO_PROTOCOL, for L2TP) and allocates the address, on every
// accept.
func accept4(lfd int) (int, netip.Addr, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.Addr{}, e
	}
	var peer netip.Addr
	switch rsa.Addr.Family {
	case unix.AF_INET:
		peer = netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa)).Addr)
	case unix.AF_INET6:
		peer = netip.AddrFrom16((*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa)).Addr)
	}
	return int(r), peer, nil
}

// pendingConn is a socket in the poller's pending list, with its peer's
// address (kept here, not in Conn: only the upgrade needs it).
type pendingConn struct {
	c    *Conn
	peer netip.Addr
}

// begin takes a new socket: it waits in the poller's pending list, in
// stateHandshake, until its request head is read.
func (p *poller) begin(fd int, peer netip.Addr) {
	g := p.g
	if fd >= len(g.fds) {
		_ = unix.Close(fd)
		return
	}
	// As Go's accept does for every TCP connection (and so for the sockets
	// fasthttp hands over): no Nagle delay behind a small frame.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &Conn{fd: fd, poller: p, born: p.now}
	c.st.Store(uint32(stateHandshake))
	g.fds[fd].Store(c)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		g.fds[fd].Store(nil)
		_ = unix.Close(fd)
		return
	}
	c.pidx = int32(len(p.pending))
	p.pending = append(p.pending, pendingConn{c, peer})
	// Registered before the first read: bytes that arrive after it raise an
	// edge.
	p.handshake(c)
}

// handshake reads a pending socket's request head and, once it is whole,
// upgrades it or hands it to the HTTP server.
func (p *poller) handshake(c *Conn) {
	limit := p.g.cfg.MaxHeaderBytes
	for {
		n, err := unix.Read(c.fd, p.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil || n == 0:
			p.endPending(c)
			_ = unix.Close(c.fd)
			return
		}
		full := n == len(p.buf)
		data := p.buf[:n]
		if c.in != nil {
			c.in.buf = append(c.in.buf, data...)
			data = c.in.buf
		}
		if !maybeUpgrade(data) {
			p.handOff(c, data)
			return
		}
		end := bytes.Index(data, []byte("\r\n\r\n"))
		switch {
		case end >= 0 && end+4 <= limit:
			p.upgrade(c, data[:end+4], data[end+4:], full)
			return
		case end >= 0 || len(data) >= limit:
			p.handOff(c, data) // too big a head: fasthttp answers 431
			return
		case c.in == nil:
			c.in = &inbound{buf: append(make([]byte, 0, max(len(data), 512)), data...)}
		}
	}
}

// maybeUpgrade reports whether data can be the start of a request the
// pollers upgrade themselves: a GET of /app/.
func maybeUpgrade(data []byte) bool {
	const prefix = "GET /app/"
	n := min(len(data), len(prefix))
	return string(data[:n]) == prefix[:n]
}

// endPending takes c out of the pending list and the epoll set.
func (p *poller) endPending(c *Conn) {
	p.unpend(c)
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	p.g.fds[c.fd].Store(nil)
	c.in = nil
}

// unpend takes c out of the pending list.
func (p *poller) unpend(c *Conn) {
	last := len(p.pending) - 1
	if i := int(c.pidx); i <= last && p.pending[i].c == c {
		p.pending[i] = p.pending[last]
		p.pending[i].c.pidx = int32(i)
		p.pending[last] = pendingConn{}
		p.pending = p.pending[:last]
	}
	if len(p.pending) == 0 && cap(p.pending) > 1024 {
		p.pending = nil
	}
}

// handOff gives a pending socket to the HTTP server with what was read.
func (p *poller) handOff(c *Conn, data []byte) {
	pre := data
	if c.in == nil { // data is the poller's buffer
		pre = bytes.Clone(data)
	}
	p.endPending(c)
	if p.lis == nil {
		_ = unix.Close(c.fd)
		return
	}
	p.g.stats.handoffs.Add(1)
	p.lis.push(c.fd, pre, c.born+int64(p.g.cfg.HandshakeTimeout))
}

// sweepPending answers the sockets that have not sent a whole request head
// within gateway.handshake_timeout with a 408 and closes them. Poller only,
// every pendingSweepEvery while any wait.
func (p *poller) sweepPending() {
	deadline := int64(p.g.cfg.HandshakeTimeout)
	for i := 0; i < len(p.pending); {
		c := p.pending[i].c
		if p.now-c.born < deadline {
			i++
			continue
		}
		p.endPending(c) // moves the last one to i
		_, _ = unix.Write(c.fd, handshakeTimeoutResponse)
		_ = unix.Close(c.fd)
		p.g.stats.handshakeTimeouts.Add(1)
	}
}

// HandshakeTimeouts is how many sockets the pollers closed with a 408 for
// not sending a request head within gateway.handshake_timeout (fasthttp's
// count of the same is the API's; the node adds the two).
func (g *Gateway) HandshakeTimeouts() uint64 { return g.stats.handshakeTimeouts.Load() }

// upgrade parses a whole request head read by the poller and upgrades the
// socket when it is a plain WebSocket request for /app/; anything it does
// not recognise goes to the HTTP server, which has every rule of HTTP.
func (p *poller) upgrade(c *Conn, head, early []byte, more bool) {
	g := p.g
	req, ok := parseHead(head)
	if !ok {
		p.handOff(c, p.rest(c, head, early))
		return
	}
	accept, status, _ := checkHandshakeParts(true, req.upgrade, req.connection, req.version, req.key)
	if status != 0 {
		p.handOff(c, p.rest(c, head, early)) // ServeUpgrade answers it
		return
	}
	var a *app.App
	var ref *refusal
	if g.overBudget() {
		ref = &overCapacity
	} else {
		a, ref = g.admitParts(req.path, req.protocol, req.clientVersion, req.origin)
	}
	ip := g.sourceAddrOf(p.pending[c.pidx].peer, req.xff)
	var seed []byte
	if len(early) > 0 {
		seed = bytes.Clone(early)
	}
	// It stays in the epoll set and the descriptor table; in
	// stateHandshake nothing else touches it until it is open.
	p.unpend(c)
	c.in = nil
	c.app = a
	ref = g.establish(c, accept, ref, ip, seed)
	c.pidx = int32(len(p.conns))
	c.lastIn, c.born = p.now, p.now
	p.conns = append(p.conns, c)
	c.mu.Lock()
	c.setState(stateOpen) // after the 101 is queued: a close (drain, CloseApp) can only follow it
	c.mu.Unlock()
	g.opened(c, ref)
	if c.state() != stateOpen {
		return
	}
	if seed != nil {
		// Frames that came with the head.
		c.seeded = false
		if !p.consume(c, nil) {
			return
		}
	}
	if more {
		p.read(c) // the head filled the buffer: more may wait, and no new edge comes for it
	}
}

// rest is the bytes read from a pending socket, for the HTTP server.
func (p *poller) rest(c *Conn, head, early []byte) []byte {
	if c.in != nil {
		return c.in.buf // head and early are in it, in order
	}
	return p.buf[:len(head)+len(early)]
}

// upgradeRequest is what a poller needs of a request head; every slice
// points into the head.
type upgradeRequest struct {
	path, protocol, clientVersion []byte // protocol and clientVersion: nil when absent
	upgrade, connection, version  []byte
	key, xff, origin              []byte
}

// parseHead parses a request head (request line to the blank line) for
// upgrade. It accepts only what it can read exactly as fasthttp would for
// a GET of /app/: HTTP/1.1, an origin-form path with no percent-escapes,
// dot segments or doubled slashes (fasthttp decodes and normalises those),
// a query with no escapes or '+', header lines of name: value without
// folding, and no body. Anything else is false: the HTTP server reads it.
// Of a header that occurs twice, the first counts, as fasthttp's Peek.
func parseHead(head []byte) (r upgradeRequest, ok bool) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	target, found := bytes.CutPrefix(line, []byte("GET "))
	if !found {
		return r, false
	}
	target, found = bytes.CutSuffix(target, []byte(" HTTP/1.1"))
	if !found || bytes.IndexByte(target, ' ') >= 0 {
		return r, false
	}
	path, query, hasQuery := bytes.Cut(target, []byte("?"))
	if !bytes.HasPrefix(path, []byte("/app/")) || bytes.IndexByte(path, '%') >= 0 || bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/.")) ||
		bytes.IndexByte(path, '#') >= 0 {
		return r, false
	}
	r.path = path
	if hasQuery {
		if bytes.IndexByte(query, '%') >= 0 || bytes.IndexByte(query, '+') >= 0 || bytes.IndexByte(query, '#') >= 0 {
			return r, false
		}
		for len(query) > 0 {
			var kv []byte
			kv, query, _ = bytes.Cut(query, []byte("&"))
			k, v, _ := bytes.Cut(kv, []byte("="))
			if v == nil {
				v = []byte{}
			}
			switch string(k) {
			case "protocol":
				if r.protocol == nil {
					r.protocol = v
				}
			case "version":
				if r.clientVersion == nil {
					r.clientVersion = v
				}
			}
		}
	}
	for {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(h) == 0 {
			break // the blank line that ends the head
		}
		if h[0] == ' ' || h[0] == '\t' {
			return r, false // obsolete line folding
		}
		name, value, found := bytes.Cut(h, []byte(":"))
		if !found || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return r, false
		}
		value = bytes.TrimSpace(value)
		var dst *[]byte
		switch {
		case foldEq(name, "upgrade"):
			dst = &r.upgrade
		case foldEq(name, "connection"):
			dst = &r.connection
		case foldEq(name, "sec-websocket-version"):
			dst = &r.version
		case foldEq(name, "sec-websocket-key"):
			dst = &r.key
		case foldEq(name, "x-forwarded-for"):
			dst = &r.xff
		case foldEq(name, "origin"):
			dst = &r.origin
		case foldEq(name, "content-length"):
			if string(value) != "0" {
				return r, false
			}
		case foldEq(name, "transfer-encoding"):
			return r, false
		}
		if dst != nil && *dst == nil {
			*dst = value
		}
	}
	return r, true
}

// foldEq reports whether b is the lower-case ASCII s, in any case.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
