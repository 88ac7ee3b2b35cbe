// Package outboxtest is a hook.Outbox for tests, over a real JetStream
// stream: every event is one message whose Nats-Msg-Id is the event's id,
// so JetStream itself drops a second Enqueue of an event (within the
// stream's duplicate window, two minutes), as the real outbox does, and a
// test reads back exactly what was stored. It is imported only from
// _test.go files; the real outbox is package webhook's.
package outboxtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/hook"
)

// subjectPrefix is where the test outbox stores events: <prefix><app>.
const subjectPrefix = "herald-test.webhooks."

// Outbox stores events on one stream. Several Outboxes (one per node, each
// on its node's connection) may share a stream by name.
type Outbox struct {
	js       jetstream.JetStream
	stream   string
	replicas int

	// Before, when set, runs before an Enqueue stores anything; its error
	// fails the Enqueue with nothing stored (a node dying before its
	// write). After runs once the events are stored; its error fails the
	// Enqueue anyway (a node dying after the write, before it heard the
	// acknowledgement).
	Before, After func(app string, events []hook.Event) error

	mu      sync.Mutex
	ensured bool
}

// New returns an Outbox on stream name (created on first use with
// replicas replicas) through js.
func New(js jetstream.JetStream, name string, replicas int) *Outbox {
	return &Outbox{js: js, stream: name, replicas: max(replicas, 1)}
}

// ErrInjected is what a test's Before or After usually returns.
var ErrInjected = errors.New("outboxtest: injected failure")

func (o *Outbox) ensure(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ensured {
		return nil
	}
	_, err := o.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     o.stream,
		Subjects: []string{subjectPrefix + ">"},
		Storage:  jetstream.FileStorage,
		Replicas: o.replicas,
	})
	if err != nil {
		return fmt.Errorf("outboxtest: create stream %s: %w", o.stream, err)
	}
	o.ensured = true
	return nil
}

// Enqueue implements hook.Outbox: one acknowledged publish per event,
// in order, each with Nats-Msg-Id set to the event's id.
func (o *Outbox) Enqueue(ctx context.Context, app string, events []hook.Event) error {
	if o.Before != nil {
		if err := o.Before(app, events); err != nil {
			return err
		}
	}
	if err := o.ensure(ctx); err != nil {
		return err
	}
	for _, ev := range events {
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("outboxtest: %w", err)
		}
		m := nats.NewMsg(subjectPrefix + app)
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := o.js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("outboxtest: publish %s: %w", ev.ID, err)
		}
	}
	if o.After != nil {
		return o.After(app, events)
	}
	return nil
}

// Stored is one event as the stream holds it.
type Stored struct {
	App string
	hook.Event
}

// Events reads every event stored on stream name, in order (none if the
// stream does not exist yet).
func Events(ctx context.Context, js jetstream.JetStream, name string) ([]Stored, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outboxtest: stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("outboxtest: stream %s info: %w", name, err)
	}
	var out []Stored
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("outboxtest: get %d: %w", seq, err)
		}
		var st Stored
		if err := json.Unmarshal(m.Data, &st.Event); err != nil {
			return nil, fmt.Errorf("outboxtest: event %d: %w", seq, err)
		}
		st.App = m.Subject[len(subjectPrefix):]
		out = append(out, st)
	}
	return out, nil
}
