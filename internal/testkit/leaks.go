package testkit

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LeakGrace is how long Main and Run give goroutines that outlive the tests
// to end (stragglers of a shutdown that returned before its last goroutine
// did).
const LeakGrace = 10 * time.Second

// Main is a TestMain that fails the package when goroutines outlive its
// tests:
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
//
// It exits the process with Run's code.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run runs the tests and, if they passed, waits up to LeakGrace for every
// goroutine started since Run was called to end. If some are still running
// it writes their stacks to stderr and returns 1; otherwise it returns
// m.Run's code. A TestMain with its own set-up calls it last:
//
//	func TestMain(m *testing.M) {
//		... set-up ...
//		code := testkit.Run(m)
//		... tear-down ...
//		os.Exit(code)
//	}
//
// The check is skipped while fuzzing (-test.fuzz): the fuzzing engine keeps
// goroutines of its own.
func Run(m *testing.M) int {
	base := Goroutines()
	code := m.Run()
	if code != 0 || fuzzing() {
		return code
	}
	if err := base.Leaked(LeakGrace); err != nil {
		fmt.Fprintf(os.Stderr, "testkit: goroutines outlived the tests: %v\n", err)
		return 1
	}
	return code
}

// fuzzing reports whether the test binary runs as the fuzzing engine's
// coordinator or one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// Baseline is the set of goroutines running at one moment; see Goroutines.
type Baseline struct {
	ids map[uint64]bool
}

// Goroutines returns the goroutines running now, for a later Leaked or
// Check. Goroutines of os/signal (started once, when a signal is first
// watched, and never ended) and those listed in notLeaks do not count, then
// or later.
func Goroutines() Baseline {
	b := Baseline{ids: map[uint64]bool{}}
	for _, g := range goroutines(false) {
		b.ids[g.id] = true
	}
	return b
}

// Leaked waits up to d until no goroutine started since b is running and
// returns nil, or returns an error with the stacks of those still running.
// It may be called from any goroutine; it counts the goroutines of tests
// running in parallel too.
func (b Baseline) Leaked(d time.Duration) error {
	var left []goroutine
	err := poll(d, 10*time.Millisecond, nil, func() error {
		left = left[:0]
		for _, g := range goroutines(true) {
			if !b.ids[g.id] {
				left = append(left, g)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d goroutines", len(left))
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%d goroutines started since the baseline still run after %v:", len(left), d)
	for _, g := range left {
		s.WriteString("\n\n")
		s.Write(g.stack)
	}
	return fmt.Errorf("%s", s.String())
}

// Check fails the test (t.Errorf, so it may run in a t.Cleanup) if goroutines
// started since b are still running after d; see Leaked.
func (b Baseline) Check(t testing.TB, d time.Duration) {
	t.Helper()
	if err := b.Leaked(d); err != nil {
		t.Error(err)
	}
}

// notLeaks are goroutines of Herald's dependencies that are not leaks,
// found by a function in their stack:
//
//   - fasthttp's Date header refresher: started once per process, on the
//     first response, and never stopped;
//   - the idle-worker cleaner of a fasthttp server's worker pool: it looks at
//     its stop channel only between sleeps of MaxIdleWorkerDuration (10 s by
//     default), so it outlives Server.Shutdown by up to that long. A server
//     that is never shut down still shows, by its Serve goroutine.
var notLeaks = [][]byte{
	[]byte("github.com/valyala/fasthttp.updateServerDate.func"),
	[]byte("github.com/valyala/fasthttp.(*workerPool).Start.func"),
}

// goroutine is one goroutine of a stack dump.
type goroutine struct {
	id    uint64
	stack []byte
}

// goroutines parses runtime.Stack of every goroutine, leaving out those of
// os/signal and notLeaks and, with skipSelf, the caller's own (the one that checks is not
// a leak).
func goroutines(skipSelf bool) []goroutine {
	var out []goroutine
	for i, block := range bytes.Split(allStacks(), []byte("\n\n")) {
		if i == 0 && skipSelf { // runtime.Stack lists the caller first
			continue
		}
		if bytes.Contains(block, []byte("os/signal.")) || notLeak(block) {
			continue
		}
		head, _, _ := bytes.Cut(block, []byte(" ["))
		id, err := strconv.ParseUint(string(bytes.TrimPrefix(head, []byte("goroutine "))), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, goroutine{id: id, stack: block})
	}
	return out
}

func notLeak(stack []byte) bool {
	for _, fn := range notLeaks {
		if bytes.Contains(stack, fn) {
			return true
		}
	}
	return false
}
