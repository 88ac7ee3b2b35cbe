package bus

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// skipUnderRace skips a test the race detector cannot run (why says what
// races). It must be the test's first statement: `make test` runs such
// tests in its plain run (scripts/race-skipped.sh finds them there).
func skipUnderRace(t *testing.T, why string) {
	t.Helper()
	if raceEnabled {
		t.Skip("skipped under -race: " + why)
	}
}

// testConfig is a single-node config in a fresh temp dir, app "app1".
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig(t.TempDir())
	cfg.Apps = []string{"app1"}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

// startBus starts a Bus closed at test cleanup.
func startBus(t testing.TB, cfg Config, sink Sink) *Bus {
	t.Helper()
	b, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.StartDelivery(sink); err != nil {
		t.Fatalf("StartDelivery: %v", err)
	}
	return b
}

// recSink records copies of delivered messages.
type recSink struct {
	mu      sync.Mutex
	msgs    []Message
	flushes int
	gate    chan struct{} // if set, Deliver waits on it once
	entered chan struct{} // closed when Deliver first waits on gate
}

func (s *recSink) Deliver(shard int, m *Message) {
	if s.gate != nil {
		s.mu.Lock()
		g := s.gate
		s.gate = nil
		s.mu.Unlock()
		if g != nil {
			close(s.entered)
			<-g
		}
	}
	c := *m
	c.Payload = append([]byte(nil), m.Payload...)
	s.mu.Lock()
	s.msgs = append(s.msgs, c)
	s.mu.Unlock()
}

func (s *recSink) Flush(shard int) {
	s.mu.Lock()
	s.flushes++
	s.mu.Unlock()
}

func (s *recSink) snapshot() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

func (s *recSink) forChannel(ch string) []Message {
	var out []Message
	for _, m := range s.snapshot() {
		if m.Channel == ch {
			out = append(out, m)
		}
	}
	return out
}

// waitCount waits until the sink holds n messages for channel ch.
func (s *recSink) waitCount(t testing.TB, ch string, n int) []Message {
	t.Helper()
	var got []Message
	testkit.WaitFor(t, 10*time.Second, func() error {
		got = s.forChannel(ch)
		if len(got) < n {
			return fmt.Errorf("%d of %d messages on %q", len(got), n, ch)
		}
		return nil
	})
	return got
}

// nopSink discards; for benchmarks (count with Stats().Delivered).
type nopSink struct{}

func (nopSink) Deliver(int, *Message) {}

func (nopSink) Flush(int) {}

// startWithSink is Start followed by StartDelivery(sink); on a delivery
// error the bus is closed.
func startWithSink(cfg Config, sink Sink) (*Bus, error) {
	b, err := Start(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.StartDelivery(sink); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}
