package gateway

import (
	"context"
	"math/rand/v2"
	"time"

	"herald/protocol"
)

// drainTick is how often the drain's pacer wakes to close the sockets
// whose turn has come. Far below a second, so each second of the window
// carries its share; far above a system call, so the pacer costs nothing.
const drainTick = 10 * time.Millisecond

// drainReason is the close reason of a drained socket.
const drainReason = "Server shutting down; reconnect"

// CloseConns tells every open connection to reconnect elsewhere (close
// 4200), spread evenly over window, and returns how many it told. It turns
// new upgrades away first (as Drain does), so nothing joins behind it.
//
// The schedule is stratified jitter: the connections, shuffled, get one
// slot each of window/N, and each closes at a random instant inside its
// slot. So every second of the window carries N/window of them (±1), in a
// random order with no two clients' reconnects in lock step, and
// pusher-js's immediate reconnect on 4200 reaches the other nodes at an
// even rate instead of as a storm. One goroutine, the caller's, paces them
// all (no goroutine or timer per connection); a window of 0 closes them
// all at once. When ctx ends, whatever is left is closed at once.
//
// A connection accepted while the drain began (past the draining check
// before it was set) is caught by a last pass at the end of the window.
// Each close is the closing handshake (Conn.beginCloseLocked); the poller
// releases the socket when the peer answers, or after closeTimeout.
func (g *Gateway) CloseConns(ctx context.Context, window time.Duration) int {
	g.draining.Store(true)
	conns := g.openConns()
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	due := drainSchedule(len(conns), window, rand.Float64)
	start := time.Now()
	t := time.NewTicker(drainTick)
	defer t.Stop()
	next := 0
	for next < len(conns) {
		elapsed := time.Since(start)
		for next < len(conns) && due[next] <= elapsed {
			conns[next].closeWith(protocol.CodeReconnect, drainReason)
			next++
		}
		if next == len(conns) {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			for _, c := range conns[next:] {
				c.closeWith(protocol.CodeReconnect, drainReason)
			}
			next = len(conns)
		}
	}
	late := g.openConns()
	for _, c := range late {
		c.closeWith(protocol.CodeReconnect, drainReason)
	}
	return len(conns) + len(late)
}

// drainSchedule returns when each of n connections closes, from the start
// of the drain: connection i at (i + jitter()) × window/n, jitter in
// [0, 1). Sorted, since slot i ends before slot i+1 begins.
func drainSchedule(n int, window time.Duration, jitter func() float64) []time.Duration {
	due := make([]time.Duration, n)
	if window <= 0 || n == 0 {
		return due
	}
	slot := float64(window) / float64(n)
	for i := range due {
		due[i] = time.Duration((float64(i) + jitter()) * slot)
	}
	return due
}

// openConns collects the registered connections that are still open. It
// reads the descriptor table the pollers publish (fds), so it needs no
// poller's cooperation; a connection released meanwhile is closed already
// and ignores the close.
func (g *Gateway) openConns() []*Conn {
	var out []*Conn
	for i := range g.fds {
		if c := g.fds[i].Load(); c != nil && c.state() == stateOpen {
			out = append(out, c)
		}
	}
	return out
}

// WaitIdle waits until the node holds no connection (every closing
// handshake finished or timed out), polling, or until ctx ends; it reports
// whether none was left.
func (g *Gateway) WaitIdle(ctx context.Context) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for g.stats.connections.Load() > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return g.stats.connections.Load() == 0
		}
	}
	return true
}
