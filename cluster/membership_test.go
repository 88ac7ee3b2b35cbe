package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"herald/internal/testkit"
)

func TestLeaveIsSeenAtOnce(t *testing.T) {
	nodes := startN(t, 3, nil)
	logs := watchAll(nodes[:2])
	begin := time.Now()
	if err := nodes[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 2*time.Second, func() error { return allSaw(logs, Left, "n2") })
	took := time.Since(begin)
	t.Logf("Left seen %v after Leave (FailureDetection %v)", took, nodes[0].FailureDetection())
	if took >= nodes[0].FailureDetection() {
		t.Errorf("Leave took %v to be seen: as slow as failure detection", took)
	}
	if err := nodes[2].Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	if err := nodes[2].Shutdown(); err != nil {
		t.Errorf("Shutdown after Leave: %v", err)
	}
}

func TestCrashIsDetected(t *testing.T) {
	nodes := startN(t, 3, nil)
	took := crashAndWait(t, nodes, 2*time.Second)
	t.Logf("local: crash detected after %v (FailureDetection %v)", took, nodes[0].FailureDetection())
}

// crashAndWait shuts the last node down without leaving and returns how
// long it took until every other node saw it Left; it fails the test past
// FailureDetection + slack.
func crashAndWait(t *testing.T, nodes []*Cluster, slack time.Duration) time.Duration {
	t.Helper()
	last := nodes[len(nodes)-1]
	others := nodes[:len(nodes)-1]
	logs := watchAll(others)
	fd := others[0].FailureDetection()
	begin := time.Now()
	if err := last.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, fd+slack, func() error { return allSaw(logs, Left, last.LocalName()) })
	return time.Since(begin)
}

func TestRestartedNodeRejoinsWithNewMeta(t *testing.T) {
	cases := []struct {
		name     string
		detected bool // restart after the others saw the crash
		sameAddr bool // restart on the old address
	}{
		{
			name:     "after detection, new address",
			detected: true,
		},
		{
			name: "before detection, new address",
		},
		{
			name:     "before detection, same address",
			sameAddr: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startN(t, 3, nil)
			old := nodes[2]
			if tc.detected {
				crashAndWait(t, nodes, 2*time.Second)
			} else if err := old.Shutdown(); err != nil {
				t.Fatal(err)
			}
			logs := watchAll(nodes[:2])
			cfg := nodeConfig(t, "n2", nodes[0].Addr())
			cfg.Meta.HTTP = "restarted:6001"
			if tc.sameAddr {
				cfg.Bind = old.Addr()
			}
			back := start(t, cfg)
			begin := time.Now()
			all := []*Cluster{nodes[0], nodes[1], back}
			testkit.WaitFor(t, nodes[0].FailureDetection()+5*time.Second, func() error {
				for _, c := range all {
					ms := c.Members()
					if len(ms) != 3 {
						return fmt.Errorf("%s sees %d members", c.LocalName(), len(ms))
					}
					if m := ms[2]; m.Meta.Boot != cfg.Meta.Boot || m.Meta.HTTP != "restarted:6001" || m.Addr != back.Addr() {
						return fmt.Errorf("%s sees n2 as %+v", c.LocalName(), m)
					}
				}
				return nil
			})
			t.Logf("all see the restarted n2 after %v", time.Since(begin))
			want := Joined // seen as a new member
			if tc.sameAddr {
				want = Updated // memberlist's refute: the same member with new meta
			}
			testkit.WaitFor(t, time.Second, func() error { return allSaw(logs, want, "n2") })
		})
	}
}

func TestWatchOrder(t *testing.T) {
	first := start(t, nodeConfig(t, "n0"))
	var log eventLog
	first.Watch(log.add)
	second := start(t, nodeConfig(t, "n1", first.Addr()))
	waitMembers(t, 5*time.Second, []*Cluster{first, second}, "n0", "n1")
	third := start(t, nodeConfig(t, "n2", first.Addr()))
	waitMembers(t, 5*time.Second, []*Cluster{first, second, third}, "n0", "n1", "n2")
	if err := second.SetMeta(Meta{Boot: 42, HTTP: "moved:6001"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if !log.has(Updated, "n1") {
			return errors.New("no Updated for n1")
		}
		return nil
	})
	if err := third.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	want := "joined n0, joined n1, joined n2, updated n1, left n2"
	testkit.WaitFor(t, 5*time.Second, func() error {
		var got []string
		for _, e := range log.events() {
			got = append(got, e.Kind.String()+" "+e.Member.Name)
		}
		if s := strings.Join(got, ", "); s != want {
			return fmt.Errorf("events %q, want %q", s, want)
		}
		return nil
	})
	for _, e := range log.events() {
		if e.Kind == Updated && e.Member.Meta.Boot != 42 {
			t.Errorf("Updated carries %+v", e.Member.Meta)
		}
	}
	waitMembers(t, 5*time.Second, []*Cluster{second}, "n0", "n1")
	var late eventLog
	second.Watch(late.add) // a late watcher first gets the current members
	testkit.WaitFor(t, 2*time.Second, func() error {
		if len(late.events()) != 2 || !late.has(Joined, "n0") || !late.has(Joined, "n1") {
			return fmt.Errorf("late watcher got %v", late.events())
		}
		return nil
	})
}

func TestUnreachableSeedJoinsWhenItComesUp(t *testing.T) {
	seedAddr := testkit.FreeAddr(t)
	a := start(t, nodeConfig(t, "a", seedAddr))
	if got := memberNames(a); got != "a" {
		t.Fatalf("members %q before the seed is up", got)
	}
	cfg := nodeConfig(t, "seed")
	cfg.Bind = seedAddr
	seed := start(t, cfg)
	waitMembers(t, 5*time.Second, []*Cluster{a, seed}, "a", "seed")
}

func TestOtherClusterIsNotJoined(t *testing.T) {
	x := start(t, nodeConfig(t, "x0"))
	cfg := nodeConfig(t, "y0", x.Addr())
	cfg.Name = "other"
	y := start(t, cfg)
	time.Sleep(4 * y.joinRetry) // it keeps retrying the seed in vain
	for _, c := range []*Cluster{x, y} {
		if got := memberNames(c); got != c.LocalName() {
			t.Fatalf("%s sees %q", c.LocalName(), got)
		}
	}
	// The same seed with the right cluster name joins.
	z := start(t, nodeConfig(t, "x1", x.Addr()))
	waitMembers(t, 5*time.Second, []*Cluster{x, z}, "x0", "x1")
}

func TestNoGoroutinesLeftBehind(t *testing.T) {
	base := testkit.Goroutines()
	var nodes []*Cluster
	for i := range 3 {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].Addr()}
		}
		c, err := Start(nodeConfig(t, fmt.Sprintf("g%d", i), seeds...))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, c)
	}
	waitMembers(t, 5*time.Second, nodes, "g0", "g1", "g2")
	r := &recorder{}
	nodes[1].Register(1, r)
	nodes[0].Register(1, &recorder{})
	nodes[0].Broadcast(1, "", bytes.Repeat([]byte("x"), 5000))
	nodes[0].Broadcast(1, "", []byte("small"))
	nodes[0].Watch(func(Event) {})
	testkit.WaitFor(t, 5*time.Second, func() error {
		if len(r.messages()) < 2 {
			return errors.New("broadcasts not received")
		}
		return nil
	})
	if err := nodes[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for _, c := range nodes {
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if err := base.Leaked(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestFailureDetectionPresets(t *testing.T) {
	for _, preset := range []string{"local", "lan", "wan"} {
		t.Run(preset, func(t *testing.T) {
			if preset != "local" && testing.Short() {
				t.Skip(preset + " failure detection takes 5 to 11 s")
			}
			nodes := startN(t, 3, func(c *Config) { c.Preset = preset })
			fd := nodes[0].FailureDetection()
			took := crashAndWait(t, nodes, 3*time.Second)
			t.Logf("%s: crash of 1 of 3 nodes seen by both others after %v (FailureDetection %v)", preset, took, fd)
		})
	}
}

// watchAll registers an event log on each node.
func watchAll(nodes []*Cluster) []*eventLog {
	logs := make([]*eventLog, len(nodes))
	for i, c := range nodes {
		logs[i] = &eventLog{}
		c.Watch(logs[i].add)
	}
	return logs
}

// allSaw returns nil once every log has an event of kind for node.
func allSaw(logs []*eventLog, kind EventKind, node string) error {
	for i, l := range logs {
		if !l.has(kind, node) {
			return fmt.Errorf("watcher %d has not seen %s %s", i, kind, node)
		}
	}
	return nil
}
