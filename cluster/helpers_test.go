package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/internal/testkit"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// nextIP hands out distinct loopback addresses, as memberlist's own tests
// do: with port 0 the TCP and UDP port must match, and distinct IPs keep
// parallel binds from colliding.
var nextIP atomic.Uint32

func loopbackIP() string {
	return fmt.Sprintf("127.0.0.%d", 10+nextIP.Add(1)%240)
}

// clusterName is unique to the test and the process: a crashed node's
// port may be reused by another test's node, and clusters with the same
// name would then merge.
func clusterName(t testing.TB) string {
	return fmt.Sprintf("%s-%d", t.Name(), os.Getpid())
}

// nodeConfig is a loopback node of the test's cluster with the local
// preset. CLUSTER_TEST_LOG=1 logs at debug level to stderr.
func nodeConfig(t testing.TB, name string, seeds ...string) Config {
	var logger *slog.Logger
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).
			With("test", t.Name())
	}
	return Config{
		Name:     clusterName(t),
		Logger:   logger,
		NodeName: name,
		Bind:     loopbackIP() + ":0",
		Seeds:    seeds,
		Preset:   "local",
		Meta: Meta{
			Boot:  time.Now().UnixNano(),
			HTTP:  name + ".http:6001",
			Route: name + ".route:6222",
		},
	}
}

// start starts a node and shuts it down when the test ends.
func start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return c
}

// startN starts n nodes of one cluster ("n0".."n{n-1}", each seeded with
// n0) and waits until every node sees all of them.
func startN(t testing.TB, n int, mod func(*Config)) []*Cluster {
	t.Helper()
	var nodes []*Cluster
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].Addr()}
		}
		cfg := nodeConfig(t, fmt.Sprintf("n%d", i), seeds...)
		if mod != nil {
			mod(&cfg)
		}
		nodes = append(nodes, start(t, cfg))
	}
	waitMembers(t, 5*time.Second, nodes, names(nodes)...)
	return nodes
}

func names(nodes []*Cluster) []string {
	var out []string
	for _, c := range nodes {
		out = append(out, c.LocalName())
	}
	return out
}

// waitMembers waits until every node in nodes has exactly want as members.
func waitMembers(t testing.TB, d time.Duration, nodes []*Cluster, want ...string) {
	t.Helper()
	wantStr := strings.Join(want, ",")
	testkit.WaitFor(t, d, func() error {
		for _, c := range nodes {
			got := memberNames(c)
			if got != wantStr {
				return fmt.Errorf("%s sees [%s], want [%s]", c.LocalName(), got, wantStr)
			}
		}
		return nil
	})
}

func memberNames(c *Cluster) string {
	var s []string
	for _, m := range c.Members() {
		s = append(s, m.Name)
	}
	return strings.Join(s, ",")
}

// recorder is a Handler that records what it gets.
type recorder struct {
	state []byte // LocalState's answer

	mu     sync.Mutex
	msgs   []received
	merges []received
}

type received struct {
	from string
	data string
	join bool
}

func (r *recorder) NotifyMsg(from string, msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, received{from: from, data: string(msg)})
	r.mu.Unlock()
}

func (r *recorder) LocalState(join bool) []byte { return r.state }

func (r *recorder) MergeRemoteState(from string, state []byte, join bool) {
	r.mu.Lock()
	r.merges = append(r.merges, received{from: from, data: string(state), join: join})
	r.mu.Unlock()
}

func (r *recorder) messages() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.msgs...)
}

func (r *recorder) merged() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.merges...)
}

// eventLog is a Watch callback that records events.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

// has reports whether an event of kind for node was recorded.
func (l *eventLog) has(kind EventKind, node string) bool {
	for _, e := range l.events() {
		if e.Kind == kind && e.Member.Name == node {
			return true
		}
	}
	return false
}
