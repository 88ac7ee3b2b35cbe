package testkit

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// PollInterval is how long Poll and WaitFor sleep between two calls of the
// condition.
const PollInterval = 5 * time.Millisecond

// errStopped ends a poll early (see poll).
var errStopped = errors.New("testkit: poll stopped")

// Poll calls cond until it returns nil or d has passed, sleeping
// PollInterval in between, and returns cond's last error (nil once it
// succeeded). cond is called at least once. Poll may be called from any
// goroutine; use it where the test must not fail at once (off the test's
// goroutine, or to report with t.Errorf).
func Poll(d time.Duration, cond func() error) error {
	return poll(d, PollInterval, nil, cond)
}

// WaitFor polls cond like Poll and fails the test (t.Fatalf, so only from
// the test's goroutine) with cond's last error if it has not returned nil
// within d. With HERALD_TEST_STACKS set, a timeout also writes every
// goroutine's stack to stderr.
func WaitFor(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(d, cond); err != nil {
		if os.Getenv("HERALD_TEST_STACKS") != "" {
			os.Stderr.Write(allStacks())
		}
		t.Fatalf("condition not met after %v: %v", d, err)
	}
}

// poll is Poll with its interval, and a stop channel: once stop is closed
// (nil: never) it returns errStopped after the next call of cond that
// fails.
func poll(d, interval time.Duration, stop <-chan struct{}, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-stop:
			return fmt.Errorf("%w (last: %w)", errStopped, err)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// allStacks is runtime.Stack of every goroutine, however long.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}
