package bench

import (
	"bytes"
	"strconv"
)

// The Pusher side of a client socket: what a poller does with each frame and
// message, by connection state, and the scenario commands that act on all
// of a poller's sockets.

var (
	evEstablished = []byte("pusher:connection_established")
	evSubscribed  = []byte("pusher_internal:subscription_succeeded")
	evError       = []byte("pusher:error")
	evPing        = []byte("pusher:ping")
	pongMsg       = []byte(`{"event":"pusher:pong","data":{}}`)
)

func (p *poller) onFrame(c *conn, f frame, now int64) {
	switch f.op {
	case opText, opBin, opCont:
		if f.op != opCont && f.fin && len(c.frag) == 0 {
			p.onMessage(c, f.payload, now)
			return
		}
		if len(c.frag)+len(f.payload) > maxFrame {
			p.lose(c, "protocol_message_too_large", now)
			return
		}
		c.frag = append(c.frag, f.payload...)
		if f.fin {
			msg := c.frag
			c.frag = nil
			p.onMessage(c, msg, now)
		}
	case opPing:
		p.sendFrame(c, opPong, f.payload, now)
	case opClose:
		reason := "close"
		if len(f.payload) >= 2 {
			reason = "close_" + strconv.Itoa(int(f.payload[0])<<8|int(f.payload[1]))
		}
		p.lose(c, reason, now)
	}
}

// onMessage handles one Pusher message according to c's state.
func (p *poller) onMessage(c *conn, msg []byte, now int64) {
	switch c.state {
	case stReady:
		name := eventName(msg)
		if !bytes.HasPrefix(name, prefPusher) {
			p.onEvent(c, msg, now)
		} else if bytes.Equal(name, evPing) {
			p.sendFrame(c, opText, pongMsg, now)
		}
	case stWelcome:
		switch name := eventName(msg); {
		case bytes.Equal(name, evEstablished):
			p.onEstablished(c, now)
		case bytes.Equal(name, evError):
			p.fail(c, pusherErrReason(msg), now)
		default:
			p.fail(c, "bad_first_message", now)
		}
	case stSubscribing:
		switch name := eventName(msg); {
		case bytes.Equal(name, evSubscribed):
			p.onReady(c, now)
		case bytes.Equal(name, evPing):
			p.sendFrame(c, opText, pongMsg, now)
		case bytes.HasPrefix(name, []byte("pusher:")) && bytes.Contains(name, []byte("error")):
			p.fail(c, "subscribe_"+pusherErrReason(msg), now)
		}
	}
}

func pusherErrReason(msg []byte) string {
	if code, ok := intAfter(msg, keyCode); ok {
		return "pusher_error_" + strconv.FormatInt(code, 10)
	}
	return "pusher_error"
}

func (p *poller) onEstablished(c *conn, now int64) {
	p.bucket(p.connected, now)
	if !p.storming {
		p.stats.established.Add(1)
		p.connHist.Record(now - c.start)
	}
	if c.channel < 0 {
		p.onReady(c, now)
		return
	}
	c.state = stSubscribing
	msg := p.out[:0]
	msg = append(msg, `{"event":"pusher:subscribe","data":{"auth":"","channel":"`+channelPrefix...)
	msg = strconv.AppendInt(msg, int64(c.channel), 10)
	msg = append(msg, `"}}`...)
	p.out = msg
	p.sendFrame(c, opText, msg, now)
}

func (p *poller) onReady(c *conn, now int64) {
	c.state = stReady
	p.inflight--
	p.stats.ready.Add(1)
	if !c.wasReady {
		c.wasReady = true
		p.stats.everReady.Add(1)
		p.stats.lastReady.Store(now)
		if c.channel >= 0 && p.w.cfg.Messages > 0 {
			c.seen = make([]uint64, (p.w.msgsFor(int(c.channel))+63)/64)
		}
	}
	if p.storming {
		p.stats.stormBack.Add(1)
		p.stormHist.Record(now - p.stormStart)
	}
}

// onEvent accounts one channel event for c.
func (p *poller) onEvent(c *conn, msg []byte, now int64) {
	ev, ok := parseBenchEvent(msg)
	if !ok {
		p.stats.unexpected.Add(1)
		return
	}
	p.stats.received.Add(1)
	if d := p.w.cfg.DropEvery; d > 0 {
		if p.dropSeq++; p.dropSeq%d == 0 {
			p.stats.testDropped.Add(1)
			return
		}
	}
	ch, chans := int64(c.channel), int64(p.w.cfg.Channels)
	if ev.channel != int(ch) || ev.seq >= int64(p.w.cfg.Messages) || ev.seq%chans != ch || c.seen == nil {
		p.stats.unexpected.Add(1)
		return
	}
	j := ev.seq / chans
	word, bit := j>>6, uint64(1)<<(j&63)
	if c.seen[word]&bit != 0 {
		p.stats.dups.Add(1)
		return
	}
	c.seen[word] |= bit
	p.stats.unique.Add(1)
	p.latHist.Record(now - ev.sent)
	p.bucket(p.delivered, now)
	if p.stats.firstRecv.Load() == 0 {
		p.stats.firstRecv.Store(now)
	}
	p.stats.lastRecv.Store(now)
}

func (p *poller) bucket(b []int64, now int64) {
	i := (now - p.w.cfg.Epoch) / bucketNs
	if i >= 0 && i < int64(len(b)) {
		b[i]++
	}
}

// storm drops every ready socket at once and redials them all.
func (p *poller) storm(at int64) {
	p.storming, p.stormStart = true, at
	p.failures = p.stormFails
	p.inflightCap = p.w.cfg.StormInflight
	p.retries = p.w.cfg.Retries
	p.rate = 0
	for slot, c := range p.conns {
		if c.state != stReady {
			continue
		}
		p.closeConn(c)
		p.stats.ready.Add(-1)
		p.stats.stormTarget.Add(1)
		c.state, c.attempts, c.queued = stIdle, 0, true
		p.queue = append(p.queue, int32(slot))
	}
	p.stats.stormArmed.Store(true)
}

// finish computes how many deliveries this poller expects, given the
// publishes that failed, so the worker can tell when it has them all.
func (p *poller) finish(failed *failedSet) {
	var exp int64
	for _, c := range p.conns {
		if c.wasReady && c.channel >= 0 {
			ch := int(c.channel)
			exp += int64(p.w.msgsFor(ch) - failed.count(ch))
		}
	}
	p.stats.expected.Store(exp)
	p.stats.finishing.Store(true)
}
