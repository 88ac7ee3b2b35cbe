package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Group commit.
//
// A publish is two steps: Submit sends the publications as async JetStream
// publishes on the bus's one connection and returns at once; Wait collects
// their acknowledgements. Every concurrent caller (each REST connection's
// goroutine, each NATS API worker) submits onto the same connection, so
// publications from many callers travel to the server in the same writes
// (nats.go's flusher writes what accumulated since its last write) and are
// stored by the stream back to back, while their acks are awaited
// together: nobody waits for another's ack before sending its own. A
// caller that must not hold a goroutine per publish in flight (the NATS
// API, api/natsapi.go) submits and hands the Pending to a goroutine that
// waits for many in turn.
//
// Durability is the stream's, unchanged (docs/resume.md, "What a 200
// means"): Wait returns only when the stream has acknowledged every
// publication, on one node after the local store, in a cluster after a
// quorum of the replicas has it; with bus.stream.sync: interval (the
// default) the store reaches the disk within 2 minutes, with always before
// the ack. That is exactly what a synchronous publish waits for: grouping
// changes when acks are waited for, not what an ack means. Each
// publication has its own future, so a failed or missing ack fails only the
// Pending it belongs to; other callers' publications in the same writes
// are unaffected.

// Pending is a Submit in flight. Call Wait exactly once; until it returns,
// do not modify the publications.
type Pending struct {
	b       *Bus
	ctx     context.Context
	cancel  context.CancelFunc
	ps      []Publication
	serials []uint64
	futs    []jetstream.PubAckFuture
	began   time.Time       // for the cache writes (cache.go)
	err     error           // Submit failed: Wait returns it at once
	nowait  bool            // nothing to wait for (streams off)
	broken  <-chan struct{} // standalone: closed when the store fails a write (disk.go)

	// Replicated mode (cluster.go): the messages with their Nats-Msg-Ids,
	// resent as they are, and the indexes not yet acknowledged, in order.
	msgs    []*nats.Msg
	pend    []int
	horizon time.Time
}

// Submit validates ps, ensures their apps' streams and sends every
// publication without waiting for acknowledgements; Wait collects them.
// ctx bounds the whole publish (Wait included): in cluster mode 15 s
// without a deadline, as for PublishBatch. Nothing is sent if a
// publication fails validation (Wait then returns the error).
func (b *Bus) Submit(ctx context.Context, ps []Publication) *Pending {
	p := &Pending{b: b, ctx: ctx, cancel: func() {}, ps: ps}
	for i := range ps {
		if err := b.check(&ps[i]); err != nil {
			p.err = fmt.Errorf("bus: publish batch item %d: %w", i, err)
			return p
		}
	}
	p.serials = make([]uint64, len(ps))
	if !b.cfg.StreamEnabled {
		p.nowait = true
		for i := range ps {
			m := b.newMsg(&ps[i])
			if err := b.nc.PublishMsg(m); err != nil {
				p.err = fmt.Errorf("bus: publish %q: %w", m.Subject, err)
				return p
			}
		}
		return p
	}
	if err := b.refuseFull(); err != nil { // at once, not after a wait for an ack that cannot come (disk.go)
		p.err = err
		return p
	}
	if !b.homeReachable() { // a region cut off from home answers at once (region.go)
		p.err = b.homeUnreachable()
		return p
	}
	for i := range ps {
		if i > 0 && ps[i].App == ps[i-1].App {
			continue
		}
		if err := b.ensureKnown(ctx, ps[i].App); err != nil {
			p.err = err
			return p
		}
	}
	p.began = time.Now()
	p.futs = make([]jetstream.PubAckFuture, len(ps))
	if b.replicated() {
		p.ctx, p.cancel = withDefaultDeadline(ctx, clusterPublishWait)
		p.msgs = make([]*nats.Msg, len(ps))
		p.pend = make([]int, len(ps))
		for i := range ps {
			p.msgs[i] = b.newMsg(&ps[i])
			setMsgID(p.msgs[i])
			p.pend[i] = i
		}
		p.horizon = time.Now().Add(b.retryHorizon())
		p.err = p.sendPending()
		return p
	}
	p.broken = b.brokenCh() // closed when the store fails a write: no ack will come (disk.go)
	for i := range ps {
		m := b.newMsg(&ps[i])
		f, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(batchStallWait))
		if err != nil {
			p.err = fmt.Errorf("bus: publish %q: %w", m.Subject, err)
			return p
		}
		p.futs[i] = f
	}
	return p
}

// Wait waits until every publication of the Submit is acknowledged and
// returns their serials, with PublishBatch's results and errors.
func (p *Pending) Wait() (serials []uint64, err error) {
	defer p.cancel()
	if p.err != nil || p.nowait {
		return p.serials, p.err
	}
	if p.b.replicated() {
		err = p.waitReplicated()
	} else {
		err = p.waitStandalone()
	}
	if err != nil {
		return p.serials, p.b.publishErr(err) // a store refusing for space is ErrStoreFull (disk.go)
	}
	return p.serials, p.b.storeCacheBatch(p.ctx, p.ps, p.futs, p.serials, p.began)
}

// waitStandalone collects the acks in order; the first error ends the wait.
func (p *Pending) waitStandalone() error {
	for i, f := range p.futs {
		select {
		case ack := <-f.Ok():
			p.serials[i] = ack.Sequence
		case err := <-f.Err():
			return fmt.Errorf("bus: publish %q: %w", f.Msg().Subject, err)
		case <-p.broken:
			return p.b.waitBroken()
		case <-p.ctx.Done():
			return fmt.Errorf("bus: publish batch: %w", p.ctx.Err())
		}
	}
	return nil
}

// sendPending sends (or resends) every publication not yet acknowledged,
// in input order, with its Nats-Msg-Id.
func (p *Pending) sendPending() error {
	for _, i := range p.pend {
		f, err := p.b.js.PublishMsgAsync(p.msgs[i], jetstream.WithStallWait(batchStallWait))
		if err != nil {
			return fmt.Errorf("bus: publish %q: %w", p.msgs[i].Subject, err)
		}
		p.futs[i] = f
	}
	return nil
}

// waitReplicated collects the acknowledgements in order into serials. When
// no ack has arrived for publishAttemptWait, or an ack reports a retryable
// error, the publications still unacknowledged are resent, in input order,
// with their ids. futs[i] ends as the future that acknowledged ps[i] (its
// Msg is the stored message).
//
// Order: publications to one channel are stored in input order, except when
// a leader change drops one in flight while a later one reaches the new
// leader first; the resent one is then stored after it.
func (p *Pending) waitReplicated() error {
	b, ctx := p.b, p.ctx
	for round := 1; ; round++ {
		var lastErr error
		p.pend, lastErr = b.collectAcks(ctx, p.futs, p.pend, p.serials)
		if len(p.pend) == 0 {
			return nil
		}
		if ctx.Err() != nil || !publishRetryable(lastErr) || time.Now().After(p.horizon) || b.closed.Load() {
			if ctx.Err() != nil {
				lastErr = ctx.Err()
			}
			return fmt.Errorf("bus: publish %q: %w", p.msgs[p.pend[0]].Subject, lastErr)
		}
		if !b.homeReachable() { // the gateway to home went down meanwhile (region.go)
			return fmt.Errorf("bus: publish %q: %w (last attempt: %w)", p.msgs[p.pend[0]].Subject, b.homeUnreachable(), lastErr)
		}
		b.pubRetries.Add(uint64(len(p.pend)))
		b.log.Debug("bus: publish batch: resending", "round", round, "unacked", len(p.pend), "err", lastErr)
		if !pause(ctx, publishRetryPause) {
			return fmt.Errorf("bus: publish batch: %w", ctx.Err())
		}
		if err := p.sendPending(); err != nil {
			return err
		}
	}
}
