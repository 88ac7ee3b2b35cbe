package presence

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// Tests of Gossip over the in-memory transport (memnet_test.go), then of
// the State alone.

// ---- tests over the in-memory transport ----

func TestGossipJoinsOnDifferentNodesConverge(t *testing.T) {
	h := newHarness(t, 1, 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
	a, b, c := h.node("a"), h.node("b"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(b, "presence-x", "b.1", "u2")
	h.join(c, "presence-x", "c.1", "u3")
	h.waitMembers("app", "presence-x", "u1", "u2", "u3")
	h.waitSettled()
	for _, n := range h.nodes {
		for _, u := range []string{"u1", "u2", "u3"} {
			if added, removed := n.rec.counts("app", "presence-x", u); added != 1 || removed != 0 {
				t.Fatalf("node %s: %s added %d removed %d times", n.name, u, added, removed)
			}
		}
	}
	// Origin: the connection on the node that joined it, "" elsewhere.
	if o := a.rec.origins["app/presence-x/u1"]; len(o) != 1 || o[0] != "a.1" {
		t.Fatalf("origin of u1 on a: %q", o)
	}
	if o := b.rec.origins["app/presence-x/u1"]; len(o) != 1 || o[0] != "" {
		t.Fatalf("origin of u1 on b: %q", o)
	}
	// Members keeps a stable order: first seen first.
	first := a.g.Members("app", "presence-x")
	if first[0].ID != "u1" || !slices.EqualFunc(first, a.g.Members("app", "presence-x"), func(x, y Member) bool { return x.ID == y.ID }) {
		t.Fatalf("order %v", ids(first))
	}
}

func TestGossipSecondConnectionElsewhereEmitsNothing(t *testing.T) {
	h := newHarness(t, 2, 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
	a, b, c := h.node("a"), h.node("b"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.waitMembers("app", "presence-x", "u1")
	h.join(b, "presence-x", "b.1", "u1")
	h.join(c, "presence-x", "c.1", "u1")
	h.join(c, "presence-x", "c.2", "u1")
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1")
	for _, n := range h.nodes {
		if added, removed := n.rec.counts("app", "presence-x", "u1"); added != 1 || removed != 0 {
			t.Fatalf("node %s: u1 added %d removed %d times", n.name, added, removed)
		}
	}
}

func TestGossipLastConnectionAnywhereRemovesOnce(t *testing.T) {
	h := newHarness(t, 3, 0.2, 0.3, 100*time.Millisecond, "a", "b", "c")
	a, c := h.node("a"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(c, "presence-x", "c.1", "u1")
	h.join(c, "presence-x", "c.2", "u2")
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1", "u2")
	a.g.Leave("app", "presence-x", "a.1") // u1 still on c
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1", "u2")
	c.g.Leave("app", "presence-x", "c.1") // u1's last connection
	h.waitMembers("app", "presence-x", "u2")
	h.waitSettled()
	time.Sleep(50 * time.Millisecond) // late duplicates must change nothing
	for _, n := range h.nodes {
		if added, removed := n.rec.counts("app", "presence-x", "u1"); added != 1 || removed != 1 {
			t.Fatalf("node %s: u1 added %d removed %d times", n.name, added, removed)
		}
	}
	if o := c.rec.origins["app/presence-x/u1"]; o[len(o)-1] != "c.1" {
		t.Fatalf("origin of u1's removal on c: %q", o)
	}
}

func TestGossipNodeLeftRemovesOnlyItsUsers(t *testing.T) {
	h := newHarness(t, 4, 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
	a, c := h.node("a"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(c, "presence-x", "c.2", "u2")
	h.join(a, "presence-x", "a.3", "u3")
	h.join(c, "presence-x", "c.3", "u3")
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1", "u2", "u3")
	// c crashes with a join still in flight; its late gossip must not
	// bring a ghost back once it is declared dead.
	h.join(c, "presence-x", "c.4", "u4")
	dead := h.net.crash("c")
	c.g.Close()
	h.nodes = slices.DeleteFunc(h.nodes, func(x *testNode) bool { return x == c })
	h.net.declareDead(dead)
	h.waitMembers("app", "presence-x", "u1", "u3")
	time.Sleep(50 * time.Millisecond) // in-flight messages of c land now
	h.waitMembers("app", "presence-x", "u1", "u3")
	for _, n := range h.nodes {
		if _, removed := n.rec.counts("app", "presence-x", "u2"); removed != 1 {
			t.Fatalf("node %s: u2 removed %d times", n.name, removed)
		}
		if _, removed := n.rec.counts("app", "presence-x", "u3"); removed != 0 {
			t.Fatalf("node %s: u3 (still on a) removed %d times", n.name, removed)
		}
	}
}

func TestGossipRestartedNodeLeavesNoGhosts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event bool // the others see a Joined event with the new boot
	}{
		{name: "no event", event: false},
		{name: "joined event", event: true},
	} {
		t.Run(tc.name, func(t *testing.T) { testRestartedNode(t, tc.event) })
	}
}

func testRestartedNode(t *testing.T, event bool) {
	h := newHarness(t, 5, 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
	a, c := h.node("a"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(c, "presence-x", "c.2", "u2")
	h.join(c, "presence-x", "c.3", "u3")
	h.join(a, "presence-x", "a.3", "u3")
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1", "u2", "u3")
	// c crashes and comes back under the same name before anyone declares
	// it dead: no Left event at all, only its new boot.
	h.crash(c)
	c2 := h.startTiming("c", 100, fastTiming(), event)
	h.waitMembers("app", "presence-x", "u1", "u3")
	h.join(c2, "presence-x", "c.9", "u9")
	h.waitSettled()
	h.waitMembers("app", "presence-x", "u1", "u3", "u9")
	for _, n := range h.nodes {
		if n == c2 {
			continue
		}
		if _, removed := n.rec.counts("app", "presence-x", "u2"); removed != 1 {
			t.Fatalf("node %s: ghost u2 removed %d times", n.name, removed)
		}
		if _, removed := n.rec.counts("app", "presence-x", "u3"); removed != 0 {
			t.Fatalf("node %s: u3 (still on a) removed %d times", n.name, removed)
		}
		if st := n.g.Stats(); st.Owners != 2 {
			t.Fatalf("node %s holds %d owners, want 2", n.name, st.Owners)
		}
	}
}

func TestGossipJoinedHookSubscriberMissesNothing(t *testing.T) {
	h := newHarness(t, 6, 0.1, 0.1, 50*time.Millisecond, "a", "b", "c")
	b := h.node("b")
	// The subscriber's model lives under b's Gossip lock: joined fills
	// it, the Listener keeps it up to date.
	var model map[string]bool
	var errs []string
	seen := 0
	b.rec.hook = func(c Change) {
		if model == nil || c.Channel != "presence-x" || c.Origin == "b.sub" {
			return // the gateway leaves the joiner out of its own member_added
		}
		seen++
		switch {
		case c.Added && model[c.Member.ID]:
			errs = append(errs, "duplicate added "+c.Member.ID)
		case !c.Added && !model[c.Member.ID]:
			errs = append(errs, "removed unknown "+c.Member.ID)
		}
		model[c.Member.ID] = c.Added
		if !c.Added {
			delete(model, c.Member.ID)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range []*testNode{h.node("a"), h.node("c")} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(len(n.name)), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				conn := ConnID(fmt.Sprintf("%s.%d", n.name, i%6))
				if rng.IntN(2) == 0 {
					_ = n.g.Join("app", "presence-x", conn, member(fmt.Sprint("u", rng.IntN(8))), 0, nil)
				} else {
					n.g.Leave("app", "presence-x", conn)
				}
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	var sawSelf bool
	err := b.g.Join("app", "presence-x", "b.sub", member("watcher"), 0, func(ms []Member) {
		model = make(map[string]bool)
		for _, m := range ms {
			model[m.ID] = true
			sawSelf = sawSelf || m.ID == "watcher"
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	h.waitSettled()
	b.g.mu.Lock()
	defer b.g.mu.Unlock()
	if !sawSelf {
		t.Fatal("joined did not see the joiner")
	}
	if len(errs) > 0 {
		t.Fatalf("subscriber saw %v", errs)
	}
	if seen == 0 {
		t.Fatal("no change reached the subscriber: the test proves nothing")
	}
	var got []string
	for id := range model {
		got = append(got, id)
	}
	sort.Strings(got)
	if want := ids(b.g.st.Members("app", "presence-x")); !slices.Equal(got, want) {
		t.Fatalf("subscriber model %v, registry %v", got, want)
	}
}

func TestGossipConcurrentJoinsLeavesConverge(t *testing.T) {
	h := newHarness(t, 7, 0.3, 0.2, 50*time.Millisecond, "a", "b", "c")
	type open struct {
		node *testNode
		ch   string
		conn ConnID
		uid  string
	}
	var mu sync.Mutex
	var remaining []open
	var wg sync.WaitGroup
	for _, n := range h.nodes {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(len(n.name))))
				var mine []open
				for i := range 300 {
					if len(mine) > 0 && rng.IntN(2) == 0 {
						j := rng.IntN(len(mine))
						n.g.Leave("app", mine[j].ch, mine[j].conn)
						mine = slices.Delete(mine, j, j+1)
						continue
					}
					o := open{n, fmt.Sprint("presence-", rng.IntN(2)), ConnID(fmt.Sprintf("%s.%d.%d", n.name, w, i)), fmt.Sprint("u", rng.IntN(8))}
					if err := n.g.Join("app", o.ch, o.conn, member(o.uid), 0, nil); err != nil {
						t.Error(err)
						return
					}
					mine = append(mine, o)
				}
				mu.Lock()
				remaining = append(remaining, mine...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	want := map[string]map[string]bool{"presence-0": {}, "presence-1": {}}
	for _, o := range remaining {
		want[o.ch][o.uid] = true
	}
	for ch, users := range want {
		var us []string
		for u := range users {
			us = append(us, u)
		}
		h.waitMembers("app", ch, us...)
	}
	h.waitSettled()
	for _, o := range remaining {
		o.node.g.Leave("app", o.ch, o.conn)
	}
	h.waitMembers("app", "presence-0")
	h.waitMembers("app", "presence-1")
	h.waitSettled()
	for _, n := range h.nodes {
		testkit.WaitFor(t, 5*time.Second, func() error {
			if st := n.g.Stats(); st.Channels != 0 || st.Entries != 0 {
				return fmt.Errorf("node %s keeps %+v after everyone left", n.name, st)
			}
			return nil
		})
	}
}

func TestGossipRepairsLostGossipWithoutPushPull(t *testing.T) {
	// Half of all gossip is lost and there is no push/pull: gaps (and the
	// high-water mark for a lost tail) are repaired by asking the owner.
	h := newHarness(t, 8, 0.5, 0, 0, "a", "b", "c")
	a := h.node("a")
	var want []string
	for i := range 30 {
		u := fmt.Sprint("u", i)
		h.join(a, "presence-x", ConnID(fmt.Sprint("a.", i)), u)
		want = append(want, u)
	}
	h.waitMembers("app", "presence-x", want...)
	for i := range 30 {
		a.g.Leave("app", "presence-x", ConnID(fmt.Sprint("a.", i)))
	}
	h.waitMembers("app", "presence-x")
	h.waitSettled()
	var asked uint64
	for _, n := range h.nodes {
		asked += n.g.Stats().Asked
	}
	if asked == 0 {
		t.Fatal("no snapshot was asked for")
	}
}

func TestGossipHighWaterRepairsLostTail(t *testing.T) {
	// Every delta is lost and there is no push/pull: only the high-water
	// mark an owner gossips once quiet tells the others what they missed.
	h := &harness{t: t, net: newMemNet(t, 12, 0, 0, time.Millisecond, 0)}
	h.net.filter = func(msg []byte) bool { return msg[0] == msgDelta }
	for i, name := range []string{"a", "b", "c"} {
		h.start(name, int64(i+1))
	}
	h.waitSettled() // startup exchanges done before anything is lost
	a := h.node("a")
	h.join(a, "presence-x", "a.1", "u1")
	h.waitMembers("app", "presence-x", "u1")
	a.g.Leave("app", "presence-x", "a.1")
	h.waitMembers("app", "presence-x")
}

func TestGossipPushPullAloneRepairs(t *testing.T) {
	// Every gossip copy is lost and gap repair is off: push/pull alone
	// brings joins and leaves everywhere.
	h := &harness{t: t, net: newMemNet(t, 9, 1, 0, time.Millisecond, 20*time.Millisecond)}
	tm := fastTiming()
	tm.gapGrace = time.Hour
	for i, name := range []string{"a", "b", "c"} {
		h.startTiming(name, int64(i+1), tm, true)
	}
	a, b := h.node("a"), h.node("b")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(b, "presence-x", "b.1", "u2")
	h.waitMembers("app", "presence-x", "u1", "u2")
	a.g.Leave("app", "presence-x", "a.1")
	h.waitMembers("app", "presence-x", "u2")
	h.waitSettled()
}

func TestGossipMemberLimitCountsClusterUsers(t *testing.T) {
	h := newHarness(t, 10, 0, 0, 100*time.Millisecond, "a", "b", "c")
	a, b, c := h.node("a"), h.node("b"), h.node("c")
	h.join(a, "presence-x", "a.1", "u1")
	h.join(b, "presence-x", "b.1", "u2")
	h.waitMembers("app", "presence-x", "u1", "u2")
	if err := c.g.Join("app", "presence-x", "c.1", member("u3"), 2, nil); err != ErrFull {
		t.Fatalf("third user on c: %v, want ErrFull", err)
	}
	if err := c.g.Join("app", "presence-x", "c.2", member("u1"), 2, nil); err != nil {
		t.Fatalf("second connection of u1 on c refused: %v", err)
	}
}

func TestGossipUserInfoOfLeastOwner(t *testing.T) {
	h := newHarness(t, 11, 0.1, 0.1, 50*time.Millisecond, "a", "b", "c")
	a, c := h.node("a"), h.node("c")
	info := func(s string) Member {
		m := member("u1")
		m.Info = []byte(`{"from":"` + s + `"}`)
		return m
	}
	shown := func(want string) {
		t.Helper()
		testkit.WaitFor(t, 5*time.Second, func() error {
			for _, n := range h.nodes {
				ms := n.g.Members("app", "presence-x")
				if len(ms) != 1 || string(ms[0].Info) != `{"from":"`+want+`"}` {
					return fmt.Errorf("node %s shows %+v, want info from %s", n.name, ms, want)
				}
			}
			return nil
		})
	}
	if err := c.g.Join("app", "presence-x", "c.1", info("c1"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.g.Join("app", "presence-x", "c.2", info("c2"), 0, nil); err != nil {
		t.Fatal(err)
	}
	shown("c1") // within a node, the first connection's
	if err := a.g.Join("app", "presence-x", "a.1", info("a1"), 0, nil); err != nil {
		t.Fatal(err)
	}
	shown("a1") // across nodes, the least owner's
	a.g.Leave("app", "presence-x", "a.1")
	shown("c1")
}

// ---- the state alone ----

// ownerOps runs random joins and leaves on an owner and returns its deltas.
func ownerOps(rng *rand.Rand, owner *State, n int) []Delta {
	var conns []ConnID
	for i := range n {
		if len(conns) > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(len(conns))
			owner.Leave("app", "p", conns[j])
			conns = slices.Delete(conns, j, j+1)
			continue
		}
		c := ConnID(fmt.Sprint("o.", i))
		if err := owner.Join("app", "p", c, member(fmt.Sprint("u", rng.IntN(5))), 0, nil); err != nil {
			panic(err)
		}
		conns = append(conns, c)
	}
	return owner.TakeDeltas()
}

func TestStateDeltasCommuteAndAreIdempotent(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		owner := NewState(OwnerID{"o", 1}, nil)
		ds := ownerOps(rng, owner, 40)
		want := ids(owner.Members("app", "p"))
		// Shuffled, with duplicates, to a receiver that checks its own
		// change stream.
		rec := newRecorder()
		r := NewState(OwnerID{"r", 1}, rec.listen)
		order := append(slices.Clone(ds), ds[:len(ds)/2]...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		now := time.Now()
		for _, d := range order {
			r.ApplyDelta(d, now)
		}
		if got := ids(r.Members("app", "p")); !slices.Equal(got, want) {
			t.Fatalf("seed %d: receiver %v, owner %v", seed, got, want)
		}
		rec.check(t, "r")
		if got := rec.presentIn("app", "p"); !slices.Equal(got, want) && len(want) > 0 {
			t.Fatalf("seed %d: change stream %v, owner %v", seed, got, want)
		}
		st := r.Stats()
		if st.Gaps != 0 || st.Tombstones != 0 {
			t.Fatalf("seed %d: all deltas applied but %+v", seed, st)
		}
	}
}

func TestStateSnapshotReplacesOnlyOlderEntries(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	owner := NewState(OwnerID{"o", 1}, nil)
	early := ownerOps(rng, owner, 30)
	sn := owner.Snapshot()
	late := ownerOps(rng, owner, 30)
	want := ids(owner.Members("app", "p"))
	rec := newRecorder()
	r := NewState(OwnerID{"r", 1}, rec.listen)
	now := time.Now()
	// Some early deltas, every late one, then the (older) snapshot.
	for i, d := range early {
		if i%3 == 0 {
			r.ApplyDelta(d, now)
		}
	}
	for _, d := range late {
		r.ApplyDelta(d, now)
	}
	r.MergeSnapshot(sn, now)
	if got := ids(r.Members("app", "p")); !slices.Equal(got, want) {
		t.Fatalf("receiver %v, owner %v", got, want)
	}
	rec.check(t, "r")
	if st := r.Stats(); st.Gaps != 0 || st.Tombstones != 0 {
		t.Fatalf("after the snapshot: %+v", st)
	}
	// A stale snapshot changes nothing.
	r.MergeSnapshot(sn, now)
	if got := ids(r.Members("app", "p")); !slices.Equal(got, want) {
		t.Fatalf("stale snapshot: receiver %v, owner %v", got, want)
	}
}

func TestStateSupersededAndDeadBootsAreRejected(t *testing.T) {
	rec := newRecorder()
	r := NewState(OwnerID{"r", 1}, rec.listen)
	now := time.Now()
	d := func(boot int64, seq uint64, uid string, count int) Delta {
		return Delta{Owner: OwnerID{"x", boot}, App: "app", Channel: "p", Entry: Entry{Member: member(uid), Count: count, Seq: seq, Since: seq}}
	}
	r.ApplyDelta(d(1, 1, "u1", 1), now)
	r.ApplyDelta(d(2, 1, "u2", 1), now) // x restarted: u1 is a ghost
	if got := ids(r.Members("app", "p")); !slices.Equal(got, []string{"u2"}) {
		t.Fatalf("after restart %v", got)
	}
	r.ApplyDelta(d(1, 2, "u3", 1), now) // late gossip of the old boot
	r.NodeLeft("x", 2, now)
	r.ApplyDelta(d(2, 2, "u4", 1), now) // late gossip of the dead node
	if got := r.Members("app", "p"); len(got) != 0 {
		t.Fatalf("after Left %v", ids(got))
	}
	r.NodeAlive("x", 2, now) // it came back (a healed partition)
	r.ApplyDelta(d(2, 3, "u5", 1), now)
	if got := ids(r.Members("app", "p")); !slices.Equal(got, []string{"u5"}) {
		t.Fatalf("after rejoin %v", got)
	}
	rec.check(t, "r")
}

func TestStateBounded(t *testing.T) {
	r := NewState(OwnerID{"r", 1}, nil)
	now := time.Now()
	// Deletes ahead of a gap stay as tombstones until the gap closes or
	// their time passes.
	for i := range 100 {
		seq := uint64(2 + 2*i)
		r.ApplyDelta(Delta{Owner: OwnerID{"x", 1}, App: "app", Channel: fmt.Sprint("p", i),
			Entry: Entry{Member: member("u"), Count: 0, Seq: seq}}, now)
	}
	if st := r.Stats(); st.Tombstones != 100 || st.Gaps != 1 {
		t.Fatalf("before sweep %+v", st)
	}
	live := map[string]bool{"x": true, "r": true}
	r.Sweep(now.Add(time.Second), live, time.Minute, time.Minute, time.Hour)
	if st := r.Stats(); st.Tombstones != 100 {
		t.Fatalf("young tombstones pruned: %+v", st)
	}
	r.Sweep(now.Add(2*time.Minute), live, time.Minute, time.Minute, time.Hour)
	if st := r.Stats(); st.Tombstones != 0 || st.Channels != 0 || st.Entries != 0 {
		t.Fatalf("after TTL %+v", st)
	}
	// A node that is not live for orphanAfter goes, and its floor after
	// floorTTL.
	r.Sweep(now.Add(3*time.Minute), map[string]bool{"r": true}, time.Minute, time.Minute, time.Hour)
	r.Sweep(now.Add(5*time.Minute), map[string]bool{"r": true}, time.Minute, time.Minute, time.Hour)
	if st := r.Stats(); st.Owners != 0 {
		t.Fatalf("orphan kept: %+v", st)
	}
	r.Sweep(now.Add(2*time.Hour), map[string]bool{"r": true}, time.Minute, time.Minute, time.Hour)
	if len(r.floors) != 0 {
		t.Fatalf("floors kept: %v", r.floors)
	}
	// Out-of-order seqs are remembered up to maxPending.
	for i := range maxPending + 10 {
		r.ApplyHigh(OwnerID{"y", 1}, 1, now)
		r.ApplyDelta(Delta{Owner: OwnerID{"y", 1}, App: "app", Channel: "q",
			Entry: Entry{Member: member(fmt.Sprint("u", i)), Count: 1, Seq: uint64(3 + i)}}, now)
	}
	if n := len(r.owners["y"].pending); n > maxPending {
		t.Fatalf("%d pending seqs", n)
	}
}
