package gateway

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The drain's schedule: every connection gets a time inside the window,
// in order, and each second of the window carries its share, whatever the
// jitter (the extremes included).
func TestDrainSchedule(t *testing.T) {
	if due := drainSchedule(5, 0, rand.Float64); len(due) != 5 || due[4] != 0 {
		t.Fatalf("window 0: %v, want all at once", due)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, jitter := range []func() float64{
		func() float64 { return 0 },
		func() float64 { return 0.999999 },
		r.Float64,
	} {
		const n, window = 2000, 5 * time.Second
		due := drainSchedule(n, window, jitter)
		var perSecond [5]int
		for i, d := range due {
			if d < 0 || d >= window {
				t.Fatalf("connection %d due at %v, outside the %v window", i, d, window)
			}
			if i > 0 && d < due[i-1] {
				t.Fatalf("connection %d due at %v before %d's %v", i, d, i-1, due[i-1])
			}
			perSecond[d/time.Second]++
		}
		for s, k := range perSecond {
			// n/window = 400 a second; a slot may straddle a second's edge.
			if k < 399 || k > 401 {
				t.Errorf("second %d carries %d closes, want 400±1 (%v)", s, k, perSecond)
			}
		}
	}
}
