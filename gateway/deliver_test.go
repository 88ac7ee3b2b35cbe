package gateway

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/bus"
	"herald/internal/testkit"
)

// writesAtSample is a DeliveryLatency observer that notes how many socket
// writes the gateway had made when each sample was taken.
type writesAtSample struct {
	g      atomic.Pointer[Gateway]
	mu     sync.Mutex
	writes []uint64
}

func (o *writesAtSample) Observe(float64) {
	var w uint64
	if g := o.g.Load(); g != nil {
		w = g.Stats().Writes
	}
	o.mu.Lock()
	o.writes = append(o.writes, w)
	o.mu.Unlock()
}

func (o *writesAtSample) taken() []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]uint64(nil), o.writes...)
}

// A channel with more local subscribers than the shard writes itself goes
// to the pollers; its delivery-latency sample must still end when every
// socket is written, not when the batches are handed over.
func TestDeliveryLatencyEndsAtTheWrite(t *testing.T) {
	obs := new(writesAtSample)
	e := startEdgeWith(t, nil, func(c *bus.Config) { c.DeliveryLatency = obs })
	obs.g.Store(e.g)
	const subscribers = 4 * directMax
	for range subscribers {
		c := dial(t, e.url("app-key"))
		if err := c.Subscribe(ctx5(t), "wide"); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "wide"); n != subscribers {
			return fmt.Errorf("%d subscribed", n)
		}
		return nil
	})
	for round := range 5 {
		before, samples := e.g.Stats().Writes, len(obs.taken())
		publish(t, e, "wide", "ev", fmt.Sprint(round), "")
		testkit.WaitFor(t, 5*time.Second, func() error {
			if len(obs.taken()) == samples {
				return fmt.Errorf("no sample yet")
			}
			return nil
		})
		got := obs.taken()
		if len(got) != samples+1 {
			t.Fatalf("round %d: %d samples for one event, want 1", round, len(got)-samples)
		}
		if w := got[samples] - before; w < subscribers {
			t.Fatalf("round %d: sampled after %d of %d socket writes", round, w, subscribers)
		}
	}
}
