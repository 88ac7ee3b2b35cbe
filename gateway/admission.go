package gateway

import "sync"

// tokenBucket is admission control (gateway.accept_rate): at most rate new
// sockets a second, with a burst of one second's worth. A socket over the
// budget is upgraded and closed with 4100 before any per-connection state
// is built (ServeUpgrade), so a reconnect storm is served at the budget
// and costs the node a handshake per refused socket, not a session.
//
// Time is passed in (unix nanos) so the bucket can be tested without a
// clock. One mutex: upgrades arrive on fasthttp's goroutines, far below the
// rate at which a mutex would contend.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   int64 // unix nanos of the last refill; 0 before the first call
}

// newTokenBucket returns a full bucket of rate tokens a second, or nil
// (no limit) for rate <= 0.
func newTokenBucket(rate int) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	r := float64(rate)
	return &tokenBucket{rate: r, burst: r, tokens: r}
}

// allow takes one token at time now and reports whether there was one.
func (b *tokenBucket) allow(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last != 0 && now > b.last {
		b.tokens = min(b.burst, b.tokens+float64(now-b.last)*b.rate/1e9)
	}
	if now > b.last {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// SetAcceptRate changes gateway.accept_rate while the gateway runs (a
// config reload): a new, full bucket of rate tokens a second; 0 lifts the
// limit.
func (g *Gateway) SetAcceptRate(rate int) { g.accept.Store(newTokenBucket(rate)) }
