package bench

import (
	"context"
	"sync"
	"time"

	"herald/client"
)

// The storm's bystander: one established socket on the first URL, held by
// the parent through the whole storm, that sends pusher:ping every
// bystanderEvery and times the pusher:pong. Its round trips before the
// storm are the usual range; those during it show whether the reconnecting
// crowd (and the node's admission control, gateway.accept_rate) leaves an
// established socket its latency.

const (
	bystanderEvery    = 20 * time.Millisecond
	bystanderBaseline = time.Second // pings before the storm starts
)

// BystanderResults are the bystander's ping → pong round trips.
type BystanderResults struct {
	Before  Percentiles `json:"before_ms"`
	During  Percentiles `json:"during_ms"`
	PingsB  uint64      `json:"pings_before"`
	PingsD  uint64      `json:"pings_during"`
	Dropped bool        `json:"dropped,omitempty"` // the socket closed during the storm
	Error   string      `json:"error,omitempty"`
}

type bystander struct {
	conn   *client.Conn
	mu     sync.Mutex
	during bool
	before Histogram
	storm  Histogram
	err    error
	stop   chan struct{}
	done   chan struct{}
}

// startBystander connects and pings until stop; it returns once the
// baseline has been measured.
func startBystander(ctx context.Context, c *Config) (*bystander, error) {
	urls := c.clientURLs()
	conn, err := client.Dial(ctx, urls[0], c.clientOptions())
	if err != nil {
		return nil, err
	}
	b := &bystander{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go b.run(ctx)
	select {
	case <-time.After(bystanderBaseline):
	case <-ctx.Done():
	}
	b.mu.Lock()
	b.during = true
	b.mu.Unlock()
	return b, nil
}

func (b *bystander) run(ctx context.Context) {
	defer close(b.done)
	t := time.NewTicker(bystanderEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		if err := b.conn.Send(client.EventPing, "", map[string]any{}); err != nil {
			b.fail(err)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := b.conn.WaitFor(wctx, client.EventPong, "")
		cancel()
		if err != nil {
			b.fail(err)
			return
		}
		rtt := time.Since(sent).Nanoseconds()
		b.mu.Lock()
		if b.during {
			b.storm.Record(rtt)
		} else {
			b.before.Record(rtt)
		}
		b.mu.Unlock()
	}
}

func (b *bystander) fail(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
}

// finish stops the pings, closes the socket and returns the results.
func (b *bystander) finish() *BystanderResults {
	close(b.stop)
	<-b.done
	b.conn.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := &BystanderResults{Before: b.before.percentilesMs(), During: b.storm.percentilesMs(),
		PingsB: b.before.Count(), PingsD: b.storm.Count()}
	if b.err != nil {
		r.Dropped, r.Error = true, b.err.Error()
	}
	return r
}
