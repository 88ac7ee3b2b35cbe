package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// The debug console's plumbing (docs/console.md): core NATS only, nothing
// stored. Debug events go on DebugSubject(app, node); the console's
// node-to-node questions (who watches, per-node figures, where a socket
// is) are scatter-gathers on the herald.sys.debug.* subjects, answered by
// every node the way channel queries are (query.go).

// maxDebugAnswer bounds one node's answer to a console question.
const maxDebugAnswer = 1 << 20

// PublishDebug sends one encoded debug event of app, produced by node. It
// queues the bytes on the connection and returns (no acknowledgement).
func (b *Bus) PublishDebug(app, node string, data []byte) error {
	if !ValidApp(app) {
		return fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	if err := b.nc.Publish(DebugSubject(app, node), data); err != nil {
		return fmt.Errorf("bus: publish debug event: %w", err)
	}
	return nil
}

// DebugSubscription is a live feed of one app's debug events.
type DebugSubscription struct{ sub *nats.Subscription }

// Stop ends the feed. A nil *DebugSubscription is fine.
func (s *DebugSubscription) Stop() {
	if s != nil && s.sub != nil {
		_ = s.sub.Unsubscribe()
	}
}

// SubscribeDebug calls fn with every debug event of app from every node,
// in order per node, on one goroutine of its own. When it returns the
// server has the subscription.
func (b *Bus) SubscribeDebug(app string, fn func(data []byte)) (*DebugSubscription, error) {
	if !ValidApp(app) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	sub, err := b.nc.Subscribe(debugWildcard(app), func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe debug events of %s: %w", app, err)
	}
	// Generous: a console on a loaded node should drop, not stall NATS.
	_ = sub.SetPendingLimits(65536, 64<<20)
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe debug events of %s: %w", app, err)
	}
	return &DebugSubscription{sub: sub}, nil
}

// ServeDebug answers the console questions on subject (one of the
// SysDebug*Subject constants) with fn: its answer goes back to the asker,
// nil sends none. fn runs on the subscription's one goroutine. When it
// returns the server has the subscription; Stop the result to end it.
func (b *Bus) ServeDebug(subject string, fn func(req []byte) []byte) (*DebugSubscription, error) {
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) {
		a := fn(m.Data)
		if a != nil && m.Reply != "" {
			_ = b.nc.Publish(m.Reply, a)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	return &DebugSubscription{sub: sub}, nil
}

// AskDebug sends req on subject to every node and returns the answers
// that came within wait, stopping early once want have come or done
// reports true for one (a socket found). Without a reply wanted (want 0)
// it only publishes.
func (b *Bus) AskDebug(ctx context.Context, subject string, req []byte, want int, wait time.Duration, done func([]byte) bool) ([][]byte, error) {
	if want <= 0 {
		if err := b.nc.Publish(subject, req); err != nil {
			return nil, fmt.Errorf("bus: publish %s: %w", subject, err)
		}
		return nil, nil
	}
	inbox := b.nc.NewRespInbox()
	ch := make(chan *nats.Msg, want+8)
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("bus: ask %s: %w", subject, err)
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(subject, inbox, req); err != nil {
		return nil, fmt.Errorf("bus: ask %s: %w", subject, err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out [][]byte
	for len(out) < want {
		select {
		case m := <-ch:
			if len(m.Data) > maxDebugAnswer {
				continue
			}
			out = append(out, m.Data)
			if done != nil && done(m.Data) {
				return out, nil
			}
		case <-timer.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}
