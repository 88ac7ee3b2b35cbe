package bus

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Catch-up of a new live subscription. In a cluster a node's interest in a
// channel reaches the other NATS servers a moment after the node
// subscribes, so an event stored on another server's stream leader in that
// moment is not republished to this node. The Nats-Last-Sequence chain
// cannot show it (there is no earlier live message to compare with), so a
// new subscription remembers when it started, and the channel's events
// stored since then that did not arrive live are read from the stream:
//
//   - on the subscription's first live message, when it has a predecessor
//     on the subject (the ones stored since the start and before it are
//     delivered first, in order);
//   - if no live message came within catchupDelay, by a catch-up tick the
//     shard handles in turn with the live messages (so the order holds).
//
// The start is compared with the store time the stream leader's server
// gave each event. catchupMargin could take it earlier for clock
// differences between servers, at the cost of handing a new subscriber
// events published that much before it subscribed, which Pusher clients do
// not expect (a cache channel's subscriber must get only the cached event).
// It is 0: on one machine the clocks agree, and between servers NTP keeps
// them within a millisecond or so; an event missed live in that sliver is
// then left to resume.
const (
	catchupDelay  = 500 * time.Millisecond
	catchupMargin = 0
	headerCatchup = "Herald-Catchup"
)

// subStarts remembers when each live subscription was made.
type subStarts struct{ m sync.Map } // *nats.Subscription -> time.Time

func (s *subStarts) set(sub *nats.Subscription, t time.Time) { s.m.Store(sub, t) }

func (s *subStarts) get(sub *nats.Subscription) (time.Time, bool) {
	v, ok := s.m.Load(sub)
	if !ok {
		return time.Time{}, false
	}
	return v.(time.Time), true
}

func (s *subStarts) forget(sub *nats.Subscription) { s.m.Delete(sub) }

// scheduleCatchup records a new subscription's start and queues its
// catch-up tick on the subscription's shard.
func (b *Bus) scheduleCatchup(sub *nats.Subscription, subj string, shard int) {
	if !b.cfg.StreamEnabled {
		return
	}
	b.starts.set(sub, time.Now().Add(-catchupMargin))
	time.AfterFunc(catchupDelay, func() {
		if b.closed.Load() {
			return
		}
		tick := &nats.Msg{Subject: subj, Sub: sub, Header: nats.Header{headerCatchup: []string{"1"}}}
		select {
		case b.shards[shard] <- tick:
		default: // a full shard is busy with live messages: the first-message check covers it
		}
	})
}

// catchup reads the channel's events stored since the subscription started
// and below upTo (0: all), and delivers them; it returns the last serial
// delivered (0 if none) and how many. Runs on the shard's goroutine.
func (b *Bus) catchup(shard int, sub *nats.Subscription, app, channel string, upTo uint64) (last uint64, n int) {
	since, ok := b.starts.get(sub)
	if !ok {
		return 0, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), gapRepairWait)
	defer cancel()
	rm := &Message{App: app, Channel: channel}
	deliver := func(serial uint64, payload []byte, exclude string) error {
		*rm = Message{App: app, Channel: channel, Serial: serial, PrevSerial: last, Exclude: exclude, Payload: payload}
		b.sink.Deliver(shard, rm)
		*rm = Message{}
		last = serial
		n++
		return nil
	}
	if _, _, err := b.readSubjectSince(ctx, app, StoredSubject(app, channel), since, upTo, deliver); err != nil && !b.closed.Load() {
		b.log.Warn("bus: catch-up of a new subscription failed", "app", app, "channel", channel, "err", err)
	}
	if n > 0 {
		b.hist.gapRepairs.Add(1)
		b.hist.gapMessages.Add(uint64(n))
	}
	return last, n
}
