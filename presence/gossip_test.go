package presence

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"herald/cluster"
	"herald/internal/testkit"
)

// ---- wire format ----

func bigInfo(n int) json.RawMessage {
	return json.RawMessage(`{"bio":"` + strings.Repeat("x", n-10) + `"}`)
}

func TestWireRoundTrip(t *testing.T) {
	o := OwnerID{Node: "node-1", Boot: 1763912345678901234}
	e := Entry{Member: Member{ID: "42", IDJSON: json.RawMessage("42"), Info: bigInfo(1024)}, Count: 3, Seq: 99, Since: 7}
	sn := Snapshot{
		Owner: o, Seq: 120,
		Known:    []Version{{Owner: o, Seq: 120}, {Owner: OwnerID{Node: "node-2", Boot: -5}, Seq: 3}},
		Channels: []SnapshotChannel{{App: "app", Channel: "presence-a", Entries: []Entry{e, {Member: member("u")}}}},
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want message
	}{
		{name: "delta", msg: appendDelta(nil, Delta{Owner: o, App: "app", Channel: "presence-a", Entry: e}),
			want: message{kind: msgDelta, delta: Delta{Owner: o, App: "app", Channel: "presence-a", Entry: e}}},
		{name: "high", msg: appendHigh(nil, o, 77), want: message{kind: msgHigh, owner: o, seq: 77}},
		{name: "ask", msg: appendAsk(nil, o), want: message{kind: msgAsk, owner: o}},
		{name: "snapshot", msg: appendSnapshot(nil, sn), want: message{kind: msgSnapshot, snap: sn}},
		{name: "empty snapshot", msg: appendSnapshot(nil, Snapshot{Owner: o}), want: message{kind: msgSnapshot, snap: Snapshot{Owner: o}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeMessage(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestDeltaSizes pins what goes by gossip: a delta with a typical
// user_info fits the cluster's gossip budget; one with a 1 KB user_info
// does not, and cluster.Broadcast sends it reliably instead.
func TestDeltaSizes(t *testing.T) {
	name := strings.Repeat("n", 32)
	budget := cluster.GossipBudget - 2 - len(name)
	d := Delta{Owner: OwnerID{Node: name, Boot: time.Now().UnixNano()}, App: "app-id", Channel: "presence-" + strings.Repeat("c", 100),
		Entry: Entry{Member: Member{ID: strings.Repeat("u", 36), IDJSON: json.RawMessage(`"` + strings.Repeat("u", 36) + `"`),
			Info: json.RawMessage(`{"name":"Ada Lovelace","avatar":"https://example.com/a/0123456789abcdef.png"}`)}, Count: 1, Seq: 1 << 40, Since: 1 << 40}}
	if n := len(appendDelta(nil, d)); n > budget {
		t.Fatalf("typical delta is %d bytes, gossip budget %d", n, budget)
	}
	d.Entry.Member.Info = bigInfo(1024)
	if n := len(appendDelta(nil, d)); n <= budget || n > cluster.MaxMessageSize {
		t.Fatalf("1 KB delta is %d bytes: want over the gossip budget %d (reliable send)", n, budget)
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	o := OwnerID{Node: "n", Boot: 1}
	good := appendSnapshot(nil, Snapshot{Owner: o, Seq: 1, Channels: []SnapshotChannel{{App: "a", Channel: "c", Entries: []Entry{{Member: member("u"), Count: 1, Seq: 1}}}}})
	huge := append([]byte{msgSnapshot}, appendOwner(nil, o)...)
	huge = append(huge, 1, 0xff, 0xff, 0xff, 0xff, 0x0f) // seq 1, then 4G known versions
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{name: "empty", msg: nil},
		{name: "unknown type", msg: []byte{'z', 0}},
		{name: "truncated", msg: good[:len(good)-3]},
		{name: "trailing bytes", msg: append(slices.Clone(good), 0)},
		{name: "count past the end", msg: huge},
		{name: "string past the end", msg: []byte{msgAsk, 0x7f, 'a'}},
		{name: "name over the limit", msg: append([]byte{msgAsk, 0x81, 0x08}, make([]byte, 1025)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeMessage(tc.msg); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	o := OwnerID{Node: "n", Boot: 1}
	f.Add(appendDelta(nil, Delta{Owner: o, App: "a", Channel: "c", Entry: Entry{Member: member("u"), Count: 1, Seq: 1}}))
	f.Add(appendSnapshot(nil, Snapshot{Owner: o, Seq: 2, Known: []Version{{o, 2}}, Channels: []SnapshotChannel{{App: "a", Channel: "c", Entries: []Entry{{Member: member("u"), Count: 1, Seq: 1}}}}}))
	f.Add(appendDelta(nil, Delta{Owner: o, App: "a", Channel: occupancyPrefix + "c", Entry: Entry{Count: 3, Seq: 2, Since: 2}}))
	f.Add(appendHigh(nil, o, 3))
	f.Add(appendAsk(nil, o))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		var again []byte
		switch m.kind {
		case msgDelta:
			again = appendDelta(nil, m.delta)
		case msgHigh:
			again = appendHigh(nil, m.owner, m.seq)
		case msgAsk:
			again = appendAsk(nil, m.owner)
		case msgSnapshot:
			again = appendSnapshot(nil, m.snap)
		}
		m2, err := decodeMessage(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded %x: %v\n%+v\n%+v", again, err, m, m2)
		}
		// Any decoded message is safe to apply.
		s := NewState(OwnerID{Node: "r", Boot: 1}, nil)
		now := time.Now()
		switch m.kind {
		case msgDelta:
			s.ApplyDelta(m.delta, now)
		case msgHigh:
			s.ApplyHigh(m.owner, m.seq, now)
		case msgSnapshot:
			s.MergeSnapshot(m.snap, now)
		}
	})
}

// ---- real clusters on loopback ----

type realNode struct {
	name string
	c    *cluster.Cluster
	g    *Gossip
	rec  *recorder
}

// startReal starts a cluster node (local preset, loopback, joining through
// seeds) with a Gossip on it; both stop at cleanup.
func startReal(t *testing.T, name string, seeds ...string) *realNode {
	t.Helper()
	c, err := cluster.Start(cluster.Config{
		Name:     "presence-test",
		NodeName: name,
		Bind:     "127.0.0.1:0",
		Preset:   "local",
		Seeds:    seeds,
		Meta:     cluster.Meta{Boot: time.Now().UnixNano()},
		// Not t.Output(): memberlist's probe goroutines may log after
		// Shutdown, when the test has ended.
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	n := &realNode{name: name, c: c, rec: newRecorder()}
	n.g = NewGossip(c, n.rec.listen)
	t.Cleanup(func() {
		n.g.Close()
		_ = c.Shutdown()
	})
	return n
}

func startRealCluster(t *testing.T) []*realNode {
	t.Helper()
	a := startReal(t, "node-a")
	nodes := []*realNode{a, startReal(t, "node-b", a.c.Addr()), startReal(t, "node-c", a.c.Addr())}
	testkit.WaitFor(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if got := len(n.c.Members()); got != 3 {
				return fmt.Errorf("%s sees %d members", n.name, got)
			}
		}
		return nil
	})
	return nodes
}

// waitRealMembers waits until every node in nodes shows want in (app, ch)
// and returns how long that took.
func waitRealMembers(t *testing.T, d time.Duration, nodes []*realNode, ch string, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	want = slices.Clone(want)
	slices.Sort(want)
	testkit.WaitFor(t, d, func() error {
		for _, n := range nodes {
			if got := ids(n.g.Members("app", ch)); !slices.Equal(got, want) {
				return fmt.Errorf("%s shows %v, want %v", n.name, got, want)
			}
			if ev := n.rec.presentIn("app", ch); !slices.Equal(ev, want) && !(len(ev) == 0 && len(want) == 0) {
				return fmt.Errorf("%s change stream says %v, want %v", n.name, ev, want)
			}
		}
		return nil
	})
	return time.Since(start)
}

// waitRealSettled waits until every node has applied every other node's
// changes up to its current seq.
func waitRealSettled(t *testing.T, nodes []*realNode) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, func() error {
		for _, x := range nodes {
			x.g.mu.Lock()
			self, seq := x.g.st.self, x.g.st.seq
			x.g.mu.Unlock()
			for _, y := range nodes {
				if x == y {
					continue
				}
				y.g.mu.Lock()
				o := y.g.st.owners[self.Node]
				ok := o != nil && o.id == self && o.applied == seq
				y.g.mu.Unlock()
				if !ok {
					return fmt.Errorf("%s has not applied all of %s (seq %d)", y.name, x.name, seq)
				}
			}
		}
		return nil
	})
}

func TestRealClusterJoinLeave(t *testing.T) {
	nodes := startRealCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	var joinTimes []time.Duration
	for i, n := range nodes {
		if err := n.g.Join("app", "presence-x", ConnID(fmt.Sprint(n.name, ".1")), member(fmt.Sprint("u", i)), 100, nil); err != nil {
			t.Fatal(err)
		}
		want := make([]string, 0, i+1)
		for j := 0; j <= i; j++ {
			want = append(want, fmt.Sprint("u", j))
		}
		joinTimes = append(joinTimes, waitRealMembers(t, 5*time.Second, nodes, "presence-x", want...))
	}
	// A second connection of u0 on c, with a 1 KB user_info (reliable
	// send), adds nothing anywhere.
	big := member("u0")
	big.Info = bigInfo(1024)
	if err := c.g.Join("app", "presence-x", "node-c.2", big, 100, nil); err != nil {
		t.Fatal(err)
	}
	// u9 with a 1 KB user_info goes by reliable send.
	big = member("u9")
	big.Info = bigInfo(1024)
	if err := b.g.Join("app", "presence-x", "node-b.9", big, 100, nil); err != nil {
		t.Fatal(err)
	}
	joinTimes = append(joinTimes, waitRealMembers(t, 5*time.Second, nodes, "presence-x", "u0", "u1", "u2", "u9"))
	// u0 was already shown everywhere: wait until c's entry for it has
	// reached a too, or a's leave would (rightly) remove u0 there for a
	// moment.
	waitRealSettled(t, nodes)
	a.g.Leave("app", "presence-x", "node-a.1") // u0 stays through c
	b.g.Leave("app", "presence-x", "node-b.1")
	leave := waitRealMembers(t, 5*time.Second, nodes, "presence-x", "u0", "u2", "u9")
	for _, n := range nodes {
		n.rec.check(t, n.name)
		if added, removed := n.rec.counts("app", "presence-x", "u0"); added != 1 || removed != 0 {
			t.Fatalf("%s: u0 added %d removed %d times", n.name, added, removed)
		}
		if added, removed := n.rec.counts("app", "presence-x", "u1"); added != 1 || removed != 1 {
			t.Fatalf("%s: u1 added %d removed %d times", n.name, added, removed)
		}
	}
	if got := b.rec.origins["app/presence-x/u1"]; len(got) != 2 || got[0] != "node-b.1" || got[1] != "node-b.1" {
		t.Fatalf("origins of u1 on its own node: %q", got)
	}
	if got := a.rec.origins["app/presence-x/u1"]; len(got) != 2 || got[0] != "" || got[1] != "" {
		t.Fatalf("origins of u1 elsewhere: %q", got)
	}
	t.Logf("join visible everywhere after %v (the last with a 1 KB user_info by reliable send); leave after %v", joinTimes, leave)
}

func TestRealClusterCrashRemovesMembers(t *testing.T) {
	nodes := startRealCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.g.Join("app", "presence-x", "node-a.1", member("u1"), 0, nil))
	must(c.g.Join("app", "presence-x", "node-c.2", member("u2"), 0, nil))
	must(c.g.Join("app", "presence-x", "node-c.3", member("u3"), 0, nil))
	must(a.g.Join("app", "presence-x", "node-a.3", member("u3"), 0, nil))
	must(c.g.Join("app", "presence-y", "node-c.4", member("u4"), 0, nil))
	waitRealMembers(t, 5*time.Second, nodes, "presence-x", "u1", "u2", "u3")
	waitRealMembers(t, 5*time.Second, nodes, "presence-y", "u4")
	waitRealSettled(t, nodes) // b holds a's entry of u3, not only c's

	detect := c.c.FailureDetection()
	c.g.Close()
	start := time.Now()
	must(c.c.Shutdown()) // a crash: no Leave
	survivors := []*realNode{a, b}
	slack := 2 * time.Second
	x := waitRealMembers(t, detect+slack, survivors, "presence-x", "u1", "u3")
	y := waitRealMembers(t, detect+slack, survivors, "presence-y")
	removed := time.Since(start)
	time.Sleep(200 * time.Millisecond) // late gossip must change nothing
	waitRealMembers(t, time.Second, survivors, "presence-x", "u1", "u3")
	for _, n := range survivors {
		n.rec.check(t, n.name)
		for _, tc := range []struct {
			ch, uid string
			removed int
		}{
			{ch: "presence-x", uid: "u2", removed: 1},
			{ch: "presence-x", uid: "u3", removed: 0}, // still on a
			{ch: "presence-x", uid: "u1", removed: 0},
			{ch: "presence-y", uid: "u4", removed: 1},
		} {
			if _, r := n.rec.counts("app", tc.ch, tc.uid); r != tc.removed {
				t.Fatalf("%s: %s removed %d times from %s, want %d", n.name, tc.uid, r, tc.ch, tc.removed)
			}
		}
	}
	t.Logf("crash: members removed on both survivors after %v (presence-x %v, then presence-y %v); FailureDetection %v", removed, x, y, detect)
}

func TestRealClusterLeaveRemovesMembersAtOnce(t *testing.T) {
	nodes := startRealCluster(t)
	a, c := nodes[0], nodes[2]
	if err := a.g.Join("app", "presence-x", "node-a.1", member("u1"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.g.Join("app", "presence-x", "node-c.2", member("u2"), 0, nil); err != nil {
		t.Fatal(err)
	}
	waitRealMembers(t, 5*time.Second, nodes, "presence-x", "u1", "u2")
	c.g.Close()
	start := time.Now()
	if err := c.c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	d := waitRealMembers(t, c.c.FailureDetection(), nodes[:2], "presence-x", "u1")
	t.Logf("graceful leave: members removed after %v (Leave returned after %v)", time.Since(start), time.Since(start)-d)
}
