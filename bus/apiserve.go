package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// APIRequest is one message a backend sent to an API subject
// (herald.<app>.api.<endpoint>, clientport.go). The api package answers it;
// the bus keeps the NATS side, so no other package holds the connection.
type APIRequest struct {
	Subject  string
	App      string // from the subject; "" when Valid is false
	Endpoint string // APIEvents or APIBatchEvents; "" when Valid is false
	Valid    bool   // the subject parsed as an API subject
	Data     []byte
	reply    string
	nc       *nats.Conn
}

// WantsReply reports whether the sender waits for an answer (a request);
// false for a fire-and-forget publish.
func (r *APIRequest) WantsReply() bool { return r.reply != "" }

// Respond sends body to the requester. It goes through the bus's connection
// rather than the message's subscription, which fails once drained.
func (r *APIRequest) Respond(body []byte) error {
	if r.reply == "" {
		return nil
	}
	if err := r.nc.Publish(r.reply, body); err != nil {
		return fmt.Errorf("bus: reply to %s: %w", r.Subject, err)
	}
	return nil
}

// APISubscription is the node's subscription to both API subjects.
type APISubscription struct {
	subs []*nats.Subscription
}

// apiStopPoll is how often Drain checks that a drained subscription closed.
const apiStopPoll = 10 * time.Millisecond

// SubscribeAPI subscribes to the API subjects of every app in the queue
// group APIQueue (each message handled by one node of a cluster) and calls
// handle for each message, on nats.go's delivery goroutine of the
// subscription: handle must not block (queue the work). When it returns,
// the server has registered the subscriptions.
func (b *Bus) SubscribeAPI(handle func(*APIRequest)) (*APISubscription, error) {
	s := &APISubscription{}
	cb := func(m *nats.Msg) {
		app, ep, ok := ParseAPISubject(m.Subject)
		handle(&APIRequest{Subject: m.Subject, App: app, Endpoint: ep, Valid: ok, Data: m.Data, reply: m.Reply, nc: b.nc})
	}
	for _, ep := range []string{APIEvents, APIBatchEvents} {
		sub, err := b.nc.QueueSubscribe(APIWildcard(ep), APIQueue, cb)
		if err != nil {
			_ = s.Drain(context.Background())
			return nil, fmt.Errorf("bus: subscribe %s: %w", APIWildcard(ep), err)
		}
		s.subs = append(s.subs, sub)
	}
	if err := b.nc.Flush(); err != nil {
		_ = s.Drain(context.Background())
		return nil, fmt.Errorf("bus: subscribe api: flush: %w", err)
	}
	return s, nil
}

// Drain stops the subscriptions after the messages the server already sent
// have been handed to handle, waiting for that; if ctx ends first it
// unsubscribes at once.
func (s *APISubscription) Drain(ctx context.Context) error {
	var err error
	for _, sub := range s.subs {
		if derr := sub.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			err = errors.Join(err, fmt.Errorf("bus: drain %s: %w", sub.Subject, derr))
		}
	}
	for _, sub := range s.subs {
		for sub.IsValid() && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(apiStopPoll):
			}
		}
		if sub.IsValid() {
			_ = sub.Unsubscribe()
			err = errors.Join(err, fmt.Errorf("bus: drain %s: %w", sub.Subject, ctx.Err()))
		}
	}
	return err
}
