package bus

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Live delivery.
//
// One NATS subscription per (app, channel) with at least one local
// subscriber, made with ChanSubscribe (no goroutine per subscription) into
// one of Shards buffered channels picked by ShardOf. One goroutine per shard
// drains its channel and calls the Sink. A subscription whose refcount drops
// to zero stays for UnsubscribeGrace and is reused if subscribed again
// meanwhile; the sweeper drops it after that.

// Republish headers set by the stream (nats-server JSSequence, JSLastSequence).
const (
	headerSequence     = "Nats-Sequence"
	headerLastSequence = "Nats-Last-Sequence"
)

// sweepBatch is the most expired subscriptions dropped per hold of b.mu, so
// a mass expiry does not stall Subscribe callers.
const sweepBatch = 256

type subKey struct{ app, channel string }

// liveSub is one NATS subscription on a live subject.
type liveSub struct {
	sub    *nats.Subscription
	refs   int
	idleAt time.Duration // since b.epoch, when refs last dropped to 0
}

// idleRef queues a refs==0 transition for the sweeper. It is stale when the
// entry is gone, has refs again, or went idle again later (idleAt differs).
type idleRef struct {
	key subKey
	at  time.Duration
}

// ShardOf is the delivery shard of (app, channel): an FNV-1a hash of both,
// so one channel's messages always go through the same shard, in order.
// It does not allocate.
func (b *Bus) ShardOf(app, channel string) int {
	return int(hashKey(app, channel) % uint32(len(b.shards)))
}

func hashKey(app, channel string) uint32 {
	const prime = 16777619
	h := uint32(2166136261)
	for i := 0; i < len(app); i++ {
		h = (h ^ uint32(app[i])) * prime
	}
	h = (h ^ '.') * prime
	for i := 0; i < len(channel); i++ {
		h = (h ^ uint32(channel[i])) * prime
	}
	return h
}

// Subscribe adds one local subscriber to (app, channel). The first one makes
// the NATS subscription on the live subject (or revives the one still in
// its grace period). It does not wait for the server: call Flush to know the
// server has it. An invalid app or empty channel is logged and ignored.
func (b *Bus) Subscribe(app, channel string) {
	if !ValidApp(app) || channel == "" {
		b.log.Warn("bus: subscribe: invalid app or channel", "app", app, "channel", channel)
		return
	}
	k := subKey{app, channel}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return
	}
	if e := b.subs[k]; e != nil {
		e.refs++
		if e.refs == 1 {
			b.idleN--
		}
		return
	}
	subj := LiveSubject(app, channel)
	shard := b.ShardOf(app, channel)
	sub, err := b.nc.ChanSubscribe(subj, b.shards[shard])
	if err != nil {
		b.log.Error("bus: subscribe", "subject", subj, "err", err)
		return
	}
	b.subs[k] = &liveSub{sub: sub, refs: 1}
	b.scheduleCatchup(sub, subj, shard)
}

// Unsubscribe removes one local subscriber from (app, channel). The last one
// leaves the NATS subscription in place for UnsubscribeGrace; the sweeper
// drops it then unless Subscribe was called again. Unsubscribing what is not
// subscribed is ignored.
func (b *Bus) Unsubscribe(app, channel string) {
	k := subKey{app, channel}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.subs[k]
	if e == nil || e.refs == 0 {
		return
	}
	e.refs--
	if e.refs == 0 {
		e.idleAt = time.Since(b.epoch)
		b.idleN++
		b.idleQ = append(b.idleQ, idleRef{key: k, at: e.idleAt})
	}
}

// sweepLoop drops expired idle subscriptions until Close.
func (b *Bus) sweepLoop() {
	defer b.wg.Done()
	every := min(max(b.cfg.UnsubscribeGrace/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			for b.sweep(time.Since(b.epoch)) {
			}
		}
	}
}

// sweep drops up to sweepBatch subscriptions idle since before now-grace and
// reports whether more may be due. Lock order: docs/locks.md (b.mu, then
// b.slowMu in retireSlow).
func (b *Bus) sweep(now time.Duration) (more bool) {
	cutoff := now - b.cfg.UnsubscribeGrace
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false
	}
	n := 0
	for len(b.idleQ) > 0 && b.idleQ[0].at <= cutoff {
		if n == sweepBatch {
			return true
		}
		r := b.idleQ[0]
		b.idleQ[0] = idleRef{}
		b.idleQ = b.idleQ[1:]
		e := b.subs[r.key]
		if e == nil || e.refs > 0 || e.idleAt != r.at {
			continue // stale
		}
		delete(b.subs, r.key)
		b.idleN--
		b.retireSlow(e.sub)
		if err := e.sub.Unsubscribe(); err != nil {
			b.log.Debug("bus: unsubscribe", "subject", e.sub.Subject, "err", err)
		}
		n++
	}
	if len(b.idleQ) == 0 {
		b.idleQ = nil // let the backing array go after a burst
	}
	return false
}

// shardLoop is shard i's goroutine: it waits for a message, takes every one
// already queued (up to MaxDrain), delivers each, then flushes the Sink once.
func (b *Bus) shardLoop(i int) {
	defer b.wg.Done()
	ch := b.shards[i]
	m := new(Message) // reused: valid only during Deliver
	for {
		var msg *nats.Msg
		select {
		case msg = <-ch:
		case <-b.done:
			return
		}
		stored := b.storedAt(msg)
		n := b.deliverOne(i, m, msg)
	drain:
		for k := 1; k < MaxDrain; k++ {
			select {
			case msg = <-ch:
				n += b.deliverOne(i, m, msg)
			default:
				break drain
			}
		}
		b.delivered.Add(uint64(n))
		switch {
		case stored == 0:
			b.sink.Flush(i)
		case b.osink != nil:
			b.osink.FlushObserved(i, stored, b.cfg.DeliveryLatency)
		default:
			b.sink.Flush(i)
			b.cfg.DeliveryLatency.Observe(float64(time.Now().UnixNano()-stored) / 1e9)
		}
	}
}

// deliverOne parses msg into m and hands it to the Sink; it returns how many
// messages it delivered: 1, 0 for a message that is not a well-formed live
// message or a duplicate, more when a gap was repaired first (gapfill.go).
// It allocates only to decode a channel name that holds escapes.
func (b *Bus) deliverOne(shard int, m *Message, msg *nats.Msg) int {
	app, tok, ok := parseLiveSubject(msg.Subject)
	if !ok {
		return 0
	}
	channel, err := DecodeChannel(tok)
	if err != nil {
		b.log.Debug("bus: dropping live message", "subject", msg.Subject, "err", err)
		return 0
	}
	if msg.Header != nil && msg.Header[headerCatchup] != nil {
		return b.catchupTick(shard, msg, app, channel)
	}
	*m = Message{App: app, Channel: channel, Payload: msg.Data}
	if h := msg.Header; h != nil {
		m.Serial = headerUint(h, headerSequence)
		m.PrevSerial = headerUint(h, headerLastSequence)
		if v := h[HeaderExclude]; len(v) > 0 {
			m.Exclude = v[0]
		}
	}
	n := 1
	if m.Serial != 0 && msg.Sub != nil { // gap check (gapfill.go)
		repaired, deliver := b.checkGap(shard, msg, m)
		if !deliver {
			*m = Message{}
			return repaired
		}
		n += repaired
	}
	b.sink.Deliver(shard, m)
	*m = Message{}
	return n
}

// headerUint is the first value of header key as a uint64, 0 if absent or malformed.
func headerUint(h nats.Header, key string) uint64 {
	v := h[key]
	if len(v) == 0 {
		return 0
	}
	n, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
