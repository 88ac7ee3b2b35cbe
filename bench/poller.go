package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// connState is where a client socket is in its life.
type connState uint8

const (
	stIdle        connState = iota // not dialed yet, or waiting to redial
	stConnecting                   // TCP connect in progress
	stUpgrading                    // upgrade request sent, waiting for 101
	stWelcome                      // upgraded, waiting for pusher:connection_established
	stSubscribing                  // pusher:subscribe sent
	stReady                        // established (and subscribed when it has a channel)
	stFailed                       // gave up connecting
	stDropped                      // was ready, then closed by the server or an error
)

// conn is one client socket. Only its poller's goroutine touches it.
type conn struct {
	fd       int
	state    connState
	wasReady bool
	queued   bool
	attempts uint8
	refusals uint16 // storm: attempts refused with 4100 (over capacity)
	channel  int32  // -1: no subscription
	src      int32  // index into target.sources, -1 for none
	tgt      int32  // index into worker.targets
	start    int64  // unix ns when the current attempt began
	deadline int64  // unix ns: attempt timeout, or redial time in stIdle
	rbuf     []byte
	wbuf     []byte
	frag     []byte
	seen     []uint64 // bit j: message channel+j*channels received
}

// pollerStats are the counters a worker reads while its pollers run; only
// the poller writes them.
type pollerStats struct {
	established, failed, ready, drops   atomic.Int64
	received, unique, dups, unexpected  atomic.Int64
	testDropped, expected               atomic.Int64
	firstRecv, lastRecv                 atomic.Int64
	everReady                           atomic.Int64
	firstDial, lastReady                atomic.Int64 // unix ns, connect phase
	stormTarget, stormBack, stormFailed atomic.Int64
	stormArmed, finishing               atomic.Bool
}

// pollerCmd is an instruction from the worker's control goroutine.
type pollerCmd struct {
	kind   string // "storm", "finish", "stop"
	at     int64  // storm: start time (unix ns)
	failed *failedSet
}

// poller runs one epoll loop over a share of a worker's sockets: it dials,
// upgrades, subscribes and reads them, without a goroutine per socket.
type poller struct {
	w     *worker
	epfd  int
	evfd  int
	conns []*conn
	queue []int32 // slots waiting to be dialed, in order

	inflight, inflightCap int
	rate                  float64 // dials/s; 0 = no pacing
	rateStart             int64
	rateDialed            int
	retries               int // redials allowed per socket (storm only)
	lastTick              int64
	dropSeq               int

	buf, out, fbuf []byte
	mask           uint64

	stats       pollerStats
	connHist    Histogram        // dial start → connection_established
	latHist     Histogram        // publish → receive
	stormHist   Histogram        // storm start → back (ready again)
	delivered   []int64          // deliveries per time bucket
	connected   []int64          // connection_established per time bucket
	failures    map[string]int64 // failed attempts by reason, current phase
	connFails   map[string]int64 // … while connecting at the start
	stormFails  map[string]int64 // … while reconnecting after the storm
	dropReasons map[string]int64
	stormStart  int64
	storming    bool

	cmdMu sync.Mutex
	cmds  []pollerCmd
	done  chan struct{}
}

// epoll user data for the wakeup eventfd; sockets use their slot index.
const wakeSlot = -1

func newPoller(w *worker, rate float64, inflight int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	p := &poller{
		w: w, epfd: epfd, evfd: evfd,
		rate: rate, inflightCap: inflight,
		buf: make([]byte, 64<<10), mask: uint64(time.Now().UnixNano()) | 1,
		delivered:   make([]int64, w.cfg.Buckets),
		connected:   make([]int64, w.cfg.Buckets),
		connFails:   map[string]int64{},
		stormFails:  map[string]int64{},
		dropReasons: map[string]int64{},
		done:        make(chan struct{}),
	}
	p.failures = p.connFails
	return p, nil
}

// add gives the poller a socket to dial, to target tgt.
func (p *poller) add(channel, src, tgt int) {
	p.queue = append(p.queue, int32(len(p.conns)))
	p.conns = append(p.conns, &conn{fd: -1, channel: int32(channel), src: int32(src), tgt: int32(tgt), queued: true})
}

// send queues a command and wakes the poller. Safe for concurrent use.
func (p *poller) send(c pollerCmd) {
	p.cmdMu.Lock()
	p.cmds = append(p.cmds, c)
	p.cmdMu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
}

// run is the poller's loop; it returns after a "stop" command, with every
// socket closed.
func (p *poller) run() {
	defer close(p.done)
	defer unix.Close(p.evfd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 512)
	p.rateStart = time.Now().UnixNano()
	for {
		n, err := unix.EpollWait(p.epfd, events, p.waitMs())
		if err != nil && err != unix.EINTR {
			p.w.logf("epoll_wait: %v", err)
			return
		}
		now := time.Now().UnixNano()
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == wakeSlot {
				var b [8]byte
				_, _ = unix.Read(p.evfd, b[:])
				continue
			}
			p.handle(p.conns[ev.Fd], ev.Events)
		}
		if !p.runCmds(now) {
			p.closeAll()
			return
		}
		if now-p.lastTick >= int64(100*time.Millisecond) {
			p.lastTick = now
			p.tick(now)
		}
		p.dialMore(now)
	}
}

// waitMs is the epoll_wait timeout: short while dials are due.
func (p *poller) waitMs() int {
	if len(p.queue) == 0 || (p.inflightCap > 0 && p.inflight >= p.inflightCap) {
		return 100
	}
	if p.rate <= 0 {
		return 0
	}
	due := p.rateStart + int64(float64(p.rateDialed)/p.rate*1e9)
	ms := (due - time.Now().UnixNano()) / 1e6
	return int(min(max(ms, 0), 100))
}

func (p *poller) runCmds(now int64) bool {
	p.cmdMu.Lock()
	cmds := p.cmds
	p.cmds = nil
	p.cmdMu.Unlock()
	for _, c := range cmds {
		switch c.kind {
		case "stop":
			return false
		case "storm":
			p.storm(c.at)
		case "finish":
			p.finish(c.failed)
		}
	}
	return true
}

// dialMore starts queued dials, within the in-flight cap, the rate and a
// per-iteration budget that keeps the loop reading.
func (p *poller) dialMore(now int64) {
	for budget := 128; budget > 0 && len(p.queue) > 0; budget-- {
		if p.inflightCap > 0 && p.inflight >= p.inflightCap {
			return
		}
		if p.rate > 0 && float64(p.rateDialed) > float64(now-p.rateStart)/1e9*p.rate {
			return
		}
		slot := p.queue[0]
		p.queue = p.queue[1:]
		p.rateDialed++
		p.dial(slot, now)
	}
}

func (p *poller) dial(slot int32, now int64) {
	c := p.conns[slot]
	c.queued = false
	c.attempts++
	c.start = now
	if p.stats.firstDial.Load() == 0 {
		p.stats.firstDial.Store(now)
	}
	c.deadline = now + p.w.cfg.DialTimeoutNs
	p.inflight++
	fd, err := p.w.targets[c.tgt].openSocket(int(c.src))
	if err != nil {
		p.fail(c, errReason(err), now)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: slot}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		p.fail(c, "epoll_ctl_"+errReason(err), now)
		return
	}
	c.fd = fd
	c.state = stConnecting
}

// handle processes one epoll event for c.
func (p *poller) handle(c *conn, events uint32) {
	if c.fd < 0 {
		return // closed earlier in this batch
	}
	now := time.Now().UnixNano()
	if c.state == stConnecting {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if err := socketError(c.fd); err != nil {
			p.fail(c, errReason(err), now)
			return
		}
		c.state = stUpgrading
		if !p.write(c, p.w.targets[c.tgt].request, now) {
			return
		}
	}
	if events&unix.EPOLLOUT != 0 && len(c.wbuf) > 0 {
		if !p.flush(c, now) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		p.readAll(c, events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
}

// readAll drains c's socket. Edge-triggered epoll signals every arrival of
// data, so a short read means the socket is empty for now; but when the
// peer has closed (hup) it reads on until EOF, which brings no new edge.
func (p *poller) readAll(c *conn, hup bool) {
	for c.fd >= 0 {
		n, err := unix.Read(c.fd, p.buf)
		now := time.Now().UnixNano()
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case err != nil:
			p.lose(c, errReason(err), now)
			return
		case n == 0:
			p.lose(c, "eof", now)
			return
		}
		p.consume(c, p.buf[:n], now)
		if n < len(p.buf) && !hup {
			return
		}
	}
}

// consume handles bytes read from c: the upgrade response, then frames.
// A partial frame is kept in c.rbuf until the rest arrives.
func (p *poller) consume(c *conn, data []byte, now int64) {
	if len(c.rbuf) > 0 {
		c.rbuf = append(c.rbuf, data...)
		data = c.rbuf
	}
	if c.state == stUpgrading {
		res, n, reason := p.w.targets[c.tgt].parseUpgrade(data)
		switch res {
		case upgradeMore:
			c.rbuf = append(c.rbuf[:0], data...)
			return
		case upgradeBad:
			p.fail(c, reason, now)
			return
		}
		data = data[n:]
		c.state = stWelcome
	}
	for len(data) > 0 && c.fd >= 0 {
		f, n, err := parseFrame(data)
		if err != nil {
			p.lose(c, "protocol_"+err.Error(), now)
			return
		}
		if n == 0 {
			break
		}
		data = data[n:]
		p.onFrame(c, f, now)
	}
	if c.fd < 0 {
		return
	}
	switch {
	case len(data) > 0:
		c.rbuf = append(c.rbuf[:0], data...)
	case cap(c.rbuf) > 4<<10:
		c.rbuf = nil
	default:
		c.rbuf = c.rbuf[:0]
	}
}

// refused4100 is the failure reason of an attempt refused with 4100, and
// maxRefusals how many of those one socket takes before it gives up.
const (
	refused4100 = "pusher_error_4100"
	maxRefusals = 1000
)

// rand steps the poller's xorshift state (also the frames' mask).
func (p *poller) rand() uint64 {
	p.mask ^= p.mask << 13
	p.mask ^= p.mask >> 7
	p.mask ^= p.mask << 17
	return p.mask
}

// sendFrame writes one masked client frame.
func (p *poller) sendFrame(c *conn, op byte, payload []byte, now int64) {
	p.rand()
	p.fbuf = appendClientFrame(p.fbuf[:0], op, payload, uint32(p.mask))
	p.write(c, p.fbuf, now)
}

// write sends b, or queues what the socket does not take; false when c was
// closed.
func (p *poller) write(c *conn, b []byte, now int64) bool {
	if len(c.wbuf) > 0 {
		c.wbuf = append(c.wbuf, b...)
		return true
	}
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		switch {
		case err == unix.EAGAIN:
			c.wbuf = append(c.wbuf[:0], b...)
			return true
		case err == unix.EINTR:
			continue
		case err != nil:
			p.lose(c, errReason(err), now)
			return false
		}
		b = b[n:]
	}
	return true
}

func (p *poller) flush(c *conn, now int64) bool {
	b := c.wbuf
	c.wbuf = nil
	return p.write(c, b, now)
}

// tick fails attempts past their deadline and queues due redials.
func (p *poller) tick(now int64) {
	for slot, c := range p.conns {
		switch c.state {
		case stConnecting, stUpgrading, stWelcome, stSubscribing:
			if now > c.deadline {
				p.fail(c, "timeout", now)
			}
		case stIdle:
			if !c.queued && now >= c.deadline {
				c.queued = true
				p.queue = append(p.queue, int32(slot))
			}
		}
	}
}

// fail ends a connection attempt. During a storm the socket is redialed
// after a short backoff, up to the retry limit.
func (p *poller) fail(c *conn, reason string, now int64) {
	p.failures[reason]++
	p.closeConn(c)
	p.inflight--
	if p.storming && reason == refused4100 && c.refusals < maxRefusals {
		// Over capacity (admission control): back off about a second, as
		// pusher-js and client.Session do, jittered so the refused do not
		// come back in one wave; not counted against the retries.
		c.refusals++
		c.attempts--
		c.state = stIdle
		c.deadline = now + int64(time.Second) + int64(p.rand()%uint64(500*time.Millisecond))
		return
	}
	if p.storming && int(c.attempts) <= p.retries {
		c.state = stIdle
		c.deadline = now + int64(c.attempts)*int64(200*time.Millisecond)
		return
	}
	c.state = stFailed
	p.stats.failed.Add(1)
	if p.storming {
		p.stats.stormFailed.Add(1)
	}
}

// lose handles a socket that closed or broke: a failed attempt before it was
// ready, a drop after.
func (p *poller) lose(c *conn, reason string, now int64) {
	if c.state != stReady {
		p.fail(c, reason, now)
		return
	}
	p.closeConn(c)
	c.state = stDropped
	p.stats.ready.Add(-1)
	p.stats.drops.Add(1)
	p.dropReasons[reason]++
}

func (p *poller) closeConn(c *conn) {
	if c.fd >= 0 {
		closeSocket(c.fd)
		c.fd = -1
	}
	c.rbuf, c.wbuf, c.frag = nil, nil, nil
}

func (p *poller) closeAll() {
	for _, c := range p.conns {
		p.closeConn(c)
	}
}
