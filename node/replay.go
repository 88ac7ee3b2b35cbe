package node

import (
	"context"
	"errors"

	"herald/bus"
	"herald/gateway"
)

// replayer reads resumes from the bus's stream for the gateway.
type replayer struct{ b *bus.Bus }

func (r replayer) Replay(ctx context.Context, app, channel string, after uint64, fn func(uint64, []byte, string) error) (gateway.ReplayResult, error) {
	res, err := r.b.History(ctx, app, channel, after, fn)
	if errors.Is(err, bus.ErrNoStream) {
		return gateway.ReplayResult{}, err
	}
	return gateway.ReplayResult{Last: res.Last, Count: res.Count, WindowPassed: res.WindowPassed, First: res.First}, err
}
