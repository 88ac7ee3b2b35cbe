package bus

import (
	"context"
	"encoding/json"
	"fmt"
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
//
// prev is the serial before upTo on the channel (the first live message's
// PrevSerial; 0 for the tick, which has no live message to go by). The read
// can be short, like every history read (history.go): the replica that
// answers may not have applied prev yet, although its live copy went by
// before the subscription existed. The read is complete when it reached
// prev, or when prev was stored before the subscription started (then none
// of the channel's events is owed); otherwise it is made again, from where
// it got to, up to gapRepairAttempts times.
func (b *Bus) catchup(shard int, sub *nats.Subscription, app, channel string, upTo, prev uint64) (last uint64, n int) {
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
	subj := StoredSubject(app, channel)
	for attempt := 1; ; attempt++ {
		from := since
		if last > 0 {
			from = time.Time{} // go on after what was read
		}
		_, _, err := b.readSubjectFrom(ctx, app, subj, last, from, upTo, deliver)
		if err == nil && b.caughtUp(ctx, app, since, last, prev) {
			break
		}
		if attempt == gapRepairAttempts || ctx.Err() != nil || b.closed.Load() || !pause(ctx, gapRepairPause*time.Duration(attempt)) {
			b.hist.gapFailures.Add(1)
			if !b.closed.Load() {
				b.log.Warn("bus: catch-up of a new subscription fell short",
					"app", app, "channel", channel, "got", last, "want", prev, "err", err)
			}
			break
		}
	}
	if n > 0 {
		b.hist.gapRepairs.Add(1)
		b.hist.gapMessages.Add(uint64(n))
	}
	return last, n
}

// caughtUp reports whether a catch-up that delivered up to last has all the
// events owed to a subscription that started at since, given that prev
// (0: unknown) is the channel's last event before the first live one. An
// event read at or after since means prev, stored no earlier than it, is
// owed too; with nothing read, prev's own store time decides.
func (b *Bus) caughtUp(ctx context.Context, app string, since time.Time, last, prev uint64) bool {
	if prev == 0 || last >= prev {
		return true
	}
	if last > 0 {
		return false
	}
	stored, found, err := b.storeTimeOf(ctx, app, prev)
	return err == nil && found && stored.Before(since)
}

// storeTimeOf is the store time of the message with sequence seq in app's
// stream, with one direct get; found is false when this replica has none.
func (b *Bus) storeTimeOf(ctx context.Context, app string, seq uint64) (t time.Time, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	req, err := json.Marshal(directGetRequest{Seq: seq})
	if err != nil {
		return t, false, err
	}
	reply, err := b.nc.RequestWithContext(ctx, apiPrefix(b.js.Options())+"DIRECT.GET."+StreamName(app), req)
	if err != nil {
		return t, false, fmt.Errorf("bus: stored time of %s #%d: %w", app, seq, err)
	}
	h := reply.Header
	switch st := h.Get(headerStatus); st {
	case "":
	case statusNotFound:
		return t, false, nil
	default:
		return t, false, fmt.Errorf("bus: stored time of %s #%d: status %s %s", app, seq, st, h.Get(headerDesc))
	}
	t, err = time.Parse(time.RFC3339Nano, h.Get(headerTimeStamp))
	if err != nil {
		return t, false, fmt.Errorf("bus: stored time of %s #%d: %w", app, seq, err)
	}
	return t, true, nil
}
