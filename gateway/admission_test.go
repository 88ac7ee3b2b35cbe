package gateway

import (
	"testing"
	"time"
)

// The bucket on a made-up clock: a full second's burst, then the rate, no
// more; it refills to the burst and never past it; a clock going back
// takes nothing.
func TestTokenBucket(t *testing.T) {
	if newTokenBucket(0) != nil || newTokenBucket(-1) != nil {
		t.Fatal("rate <= 0 must mean no bucket (unlimited)")
	}
	b := newTokenBucket(100)
	t0 := int64(1_000_000_000_000)
	take := func(now int64, n int) (ok int) {
		for range n {
			if b.allow(now) {
				ok++
			}
		}
		return ok
	}
	if got := take(t0, 150); got != 100 {
		t.Fatalf("burst: %d of 150 admitted at once, want 100", got)
	}
	// 10 ms later: one more token.
	if got := take(t0+int64(10*time.Millisecond), 5); got != 1 {
		t.Fatalf("after 10 ms: %d admitted, want 1", got)
	}
	// Steady arrivals at twice the rate for 2 s: half get in.
	ok, now := 0, t0+int64(10*time.Millisecond)
	for range 400 {
		now += int64(5 * time.Millisecond)
		ok += take(now, 1)
	}
	if ok != 200 {
		t.Fatalf("2 s at 200/s against 100/s: %d admitted, want 200", ok)
	}
	// An hour idle refills to the burst, not more.
	now += int64(time.Hour)
	if got := take(now, 300); got != 100 {
		t.Fatalf("after an idle hour: %d admitted, want the burst of 100", got)
	}
	// The clock going back neither refills nor breaks the bucket.
	if got := take(now-int64(time.Minute), 10); got != 0 {
		t.Fatalf("clock went back: %d admitted from an empty bucket", got)
	}
	if got := take(now+int64(50*time.Millisecond), 10); got != 5 {
		t.Fatalf("50 ms after the latest time: %d admitted, want 5", got)
	}
}
