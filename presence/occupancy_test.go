package presence

import (
	"herald/internal/testkit"

	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Tests of channel occupancy (occupancy.go): the State alone, then Gossip
// over the in-memory transport (memnet_test.go) and over real clusters.

// ---- the state alone ----

// occChans are the channels occupancyOps counts subscribers of; "p" also
// has members (ownerOps), so it is a presence channel with subscribers.
var occChans = []string{"p", "private-a"}

// occupancyOps sets random subscriber counts on owner, with member joins
// and leaves in between, and returns its deltas.
func occupancyOps(rng *rand.Rand, owner *State, n int) []Delta {
	var ds []Delta
	for range n {
		owner.SetSubscribers("app", occChans[rng.IntN(len(occChans))], rng.IntN(4))
		if rng.IntN(3) == 0 {
			ds = append(ds, ownerOps(rng, owner, 2)...)
		}
	}
	return append(ds, owner.TakeDeltas()...)
}

// checkOccupancyConverged fails unless r (reporting to rec) shows what
// the owners hold: the sum of their subscriber counts, and the union of
// their members of "p", in both its view and its Change stream.
func checkOccupancyConverged(t *testing.T, what string, r *State, rec *recorder, owners []*State) {
	t.Helper()
	rec.check(t, what)
	for _, ch := range occChans {
		want := 0
		for _, o := range owners {
			want += o.Subscribers("app", ch) // an owner alone sees its own count
		}
		_, _, _, stream := rec.occupancy("app", ch)
		if got := r.Subscribers("app", ch); got != want || stream != want {
			t.Fatalf("%s: %s has %d subscribers, its stream says %d, the owners hold %d", what, ch, got, stream, want)
		}
	}
	var want []string
	for _, o := range owners {
		for _, id := range ids(o.Members("app", "p")) {
			if !slices.Contains(want, id) {
				want = append(want, id)
			}
		}
	}
	slices.Sort(want)
	if got := ids(r.Members("app", "p")); !slices.Equal(got, want) || r.Count("app", "p") != len(want) {
		t.Fatalf("%s: members of p %v (count %d), owners %v", what, got, r.Count("app", "p"), want)
	}
	if got := rec.presentIn("app", "p"); !slices.Equal(got, want) && len(want) > 0 {
		t.Fatalf("%s: member stream %v, owners %v", what, got, want)
	}
	if st := r.Stats(); st.Gaps != 0 || st.Tombstones != 0 {
		t.Fatalf("%s: converged but %+v", what, st)
	}
}

func TestStateOccupancyConvergesUnderDuplicatesReordersAndLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		loss float64 // chance each delta is lost
		mid  bool    // each owner's snapshot halfway through arrives among the deltas
		last bool    // each owner's final snapshot arrives last
	}{
		{
			name: "every delta, duplicated and shuffled",
		},
		{
			name: "an old snapshot among every delta",
			mid:  true,
		},
		{
			name: "lost deltas, repaired by the final snapshot",
			loss: 0.4,
			mid:  true,
			last: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(30) {
				rng := rand.New(rand.NewPCG(seed, 2))
				var owners []*State
				var ops []func(r *State, now time.Time)
				for _, name := range []string{"o1", "o2", "o3"} {
					o := NewState(OwnerID{name, 1}, nil)
					owners = append(owners, o)
					ds := occupancyOps(rng, o, 20)
					if tc.mid {
						sn := o.Snapshot()
						ops = append(ops, func(r *State, now time.Time) { r.MergeSnapshot(sn, now) })
					}
					ds = append(ds, occupancyOps(rng, o, 20)...)
					ds = append(ds, ds[:len(ds)/3]...) // duplicates
					for _, d := range ds {
						if rng.Float64() >= tc.loss {
							ops = append(ops, func(r *State, now time.Time) { r.ApplyDelta(d, now) })
						}
					}
				}
				rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
				if tc.last {
					for _, o := range owners {
						sn := o.Snapshot()
						ops = append(ops, func(r *State, now time.Time) { r.MergeSnapshot(sn, now) })
					}
				}
				rec := newRecorder()
				r := NewState(OwnerID{"r", 1}, rec.listen)
				now := time.Now()
				for _, op := range ops {
					op(r, now)
				}
				checkOccupancyConverged(t, fmt.Sprint("seed ", seed), r, rec, owners)
			}
		})
	}
}

func TestStateOccupancyOfAGoneNodeVacatesOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone func(r, y *State, now time.Time)
	}{
		{
			name: "left",
			gone: func(r, y *State, now time.Time) { r.NodeLeft("x", 1, now) },
		},
		{
			name: "missing from Members",
			gone: func(r, y *State, now time.Time) {
				live := map[string]bool{"r": true, "y": true}
				r.Sweep(now, live, time.Second, time.Minute, time.Hour)
				r.Sweep(now.Add(time.Second), live, time.Second, time.Minute, time.Hour)
			},
		},
		{
			name: "restarted: a delta of the new boot",
			gone: func(r, y *State, now time.Time) {
				x2 := NewState(OwnerID{"x", 2}, nil)
				x2.SetSubscribers("app", "private-c", 1)
				for _, d := range x2.TakeDeltas() {
					r.ApplyDelta(d, now)
				}
			},
		},
		{
			name: "restarted: a membership event",
			gone: func(r, y *State, now time.Time) { r.NodeAlive("x", 2, now) },
		},
		{
			name: "restarted: a peer's version vector",
			gone: func(r, y *State, now time.Time) {
				sn := y.Snapshot()
				sn.Known = append(sn.Known, Version{Owner: OwnerID{"x", 2}, Seq: 1})
				r.MergeSnapshot(sn, now)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			x, y := NewState(OwnerID{"x", 1}, nil), NewState(OwnerID{"y", 1}, nil)
			x.SetSubscribers("app", "private-a", 3) // x holds every subscriber of a
			x.SetSubscribers("app", "private-b", 2) // and two of b's three
			y.SetSubscribers("app", "private-b", 1)
			rec := newRecorder()
			r := NewState(OwnerID{"r", 1}, rec.listen)
			for _, d := range append(x.TakeDeltas(), y.TakeDeltas()...) {
				r.ApplyDelta(d, now)
			}
			tc.gone(r, y, now)
			x.SetSubscribers("app", "private-a", 5) // late gossip of the gone boot
			for _, d := range x.TakeDeltas() {
				r.ApplyDelta(d, now)
			}
			r.NodeLeft("x", 1, now) // a repeated Left
			rec.check(t, "r")
			if occupied, _, vacated, subs := rec.occupancy("app", "private-a"); occupied != 1 || vacated != 1 || subs != 0 || r.Subscribers("app", "private-a") != 0 {
				t.Fatalf("private-a: occupied %d, vacated %d, %d subscribers; want one each and 0", occupied, vacated, subs)
			}
			// b: occupied with 2, 3 once y's count came, 1 once x went.
			if occupied, counts, vacated, subs := rec.occupancy("app", "private-b"); occupied != 1 || counts != 2 || vacated != 0 || subs != 1 || r.Subscribers("app", "private-b") != 1 {
				t.Fatalf("private-b: occupied %d, count changes %d, vacated %d, %d subscribers; want 1, 2, 0, 1", occupied, counts, vacated, subs)
			}
		})
	}
}

func TestStateOccupancyApartFromMembers(t *testing.T) {
	now := time.Now()
	x := NewState(OwnerID{"x", 1}, nil)
	if err := x.Join("app", "presence-p", "x.1", member("u1"), 0, nil); err != nil {
		t.Fatal(err)
	}
	x.SetSubscribers("app", "presence-p", 4)
	if err := x.Join("app", occupancyPrefix+"presence-p", "x.2", member("u2"), 0, nil); !errors.Is(err, ErrReservedChannel) {
		t.Fatalf("join of a reserved name: %v", err)
	}
	if ms, n := x.Members("app", occupancyPrefix+"presence-p"), x.Count("app", occupancyPrefix+"presence-p"); ms != nil || n != 0 {
		t.Fatalf("a reserved name shows members %v, count %d", ids(ms), n)
	}
	// A receiver fed the wire encoding of x's deltas, and another of x's
	// snapshot, both keep the member and the subscribers apart.
	viaDeltas, viaSnapshot := NewState(OwnerID{"r", 1}, nil), NewState(OwnerID{"s", 1}, nil)
	for _, d := range x.TakeDeltas() {
		m, err := decodeMessage(appendDelta(nil, d))
		if err != nil {
			t.Fatal(err)
		}
		viaDeltas.ApplyDelta(m.delta, now)
	}
	m, err := decodeMessage(appendSnapshot(nil, x.Snapshot()))
	if err != nil {
		t.Fatal(err)
	}
	viaSnapshot.MergeSnapshot(m.snap, now)
	for _, s := range []*State{x, viaDeltas, viaSnapshot} {
		if got := ids(s.Members("app", "presence-p")); !slices.Equal(got, []string{"u1"}) || s.Count("app", "presence-p") != 1 {
			t.Fatalf("%s: members %v, count %d; want [u1], 1", s.self.Node, got, s.Count("app", "presence-p"))
		}
		if got := s.Subscribers("app", "presence-p"); got != 4 {
			t.Fatalf("%s: %d subscribers, want 4", s.self.Node, got)
		}
		if st := s.Stats(); st.Occupied != 1 {
			t.Fatalf("%s: %+v, want one occupied channel", s.self.Node, st)
		}
	}
	// The member leaving changes no count; the count going changes no member.
	x.Leave("app", "presence-p", "x.1")
	x.SetSubscribers("app", "presence-p", 0)
	if x.Subscribers("app", "presence-p") != 0 || x.Count("app", "presence-p") != 0 {
		t.Fatal("not empty")
	}
	for _, d := range x.TakeDeltas() {
		viaDeltas.ApplyDelta(d, now)
	}
	if st := viaDeltas.Stats(); st.Channels != 0 || st.Entries != 0 || st.Occupied != 0 {
		t.Fatalf("kept after everything went: %+v", st)
	}
	if st := x.Stats(); st.Channels != 0 {
		t.Fatalf("the owner keeps %+v", st)
	}
}

// ---- Gossip over the in-memory transport ----

// subscribersShown returns nil when node name's Gossip g and its Change
// stream rec both say (app, ch) has want subscribers.
func subscribersShown(name string, g *Gossip, rec *recorder, ch string, want int) error {
	_, _, _, stream := rec.occupancy("app", ch)
	if got := g.Subscribers("app", ch); got != want || stream != want {
		return fmt.Errorf("node %s: %s has %d subscribers, its stream says %d, want %d", name, ch, got, stream, want)
	}
	return nil
}

// waitSubscribers waits until every live node shows want subscribers of
// (app, ch), in its view and its Change stream.
func (h *harness) waitSubscribers(ch string, want int) {
	h.t.Helper()
	testkit.WaitFor(h.t, 10*time.Second, func() error {
		for _, n := range h.nodes {
			if err := subscribersShown(n.name, n.g, n.rec, ch, want); err != nil {
				return err
			}
		}
		return nil
	})
	for _, n := range h.nodes {
		n.rec.check(h.t, n.name)
	}
}

// wantOccupancy fails unless rec saw exactly these occupancy changes of
// (app, ch).
func wantOccupancy(t testing.TB, node string, rec *recorder, ch string, occupied, counts, vacated int) {
	t.Helper()
	o, c, v, _ := rec.occupancy("app", ch)
	if o != occupied || c != counts || v != vacated {
		t.Fatalf("node %s: %s occupied %d, count changes %d, vacated %d times; want %d, %d, %d", node, ch, o, c, v, occupied, counts, vacated)
	}
}

func TestGossipOccupancyMovesBetweenNodes(t *testing.T) {
	h := newHarness(t, 21, 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
	a, b := h.node("a"), h.node("b")
	a.g.SetSubscribers("app", "private-x", 1)
	h.waitSubscribers("private-x", 1)
	b.g.SetSubscribers("app", "private-x", 2)
	h.waitSubscribers("private-x", 3)
	a.g.SetSubscribers("app", "private-x", 0) // vacated on a, not in the cluster
	h.waitSubscribers("private-x", 2)
	b.g.SetSubscribers("app", "private-x", 0)
	h.waitSubscribers("private-x", 0)
	h.waitSettled()
	time.Sleep(50 * time.Millisecond) // late duplicates must change nothing
	for _, n := range h.nodes {
		n.rec.check(t, n.name)
		wantOccupancy(t, n.name, n.rec, "private-x", 1, 2, 1) // 1 → 3 → 2 → 0
		testkit.WaitFor(t, 5*time.Second, func() error {
			if st := n.g.Stats(); st.Channels != 0 || st.Occupied != 0 || st.PendingCounts != 0 {
				return fmt.Errorf("node %s keeps %+v after the channel was vacated", n.name, st)
			}
			return nil
		})
	}
}

func TestGossipGoneNodeVacatesOnce(t *testing.T) {
	for i, tc := range []struct {
		name    string
		restart bool // c comes back under a new boot, with no membership event
	}{
		{
			name: "crashed and declared dead",
		},
		{
			name:    "restarted under a new boot",
			restart: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 22+uint64(i), 0.2, 0.2, 100*time.Millisecond, "a", "b", "c")
			a, c := h.node("a"), h.node("c")
			a.g.SetSubscribers("app", "private-x", 1)
			c.g.SetSubscribers("app", "private-x", 2)
			c.g.SetSubscribers("app", "private-y", 3) // c holds every subscriber of y
			h.waitSubscribers("private-x", 3)
			h.waitSubscribers("private-y", 3)
			survivors := []*testNode{a, h.node("b")}
			h.crash(c)
			if tc.restart {
				h.startTiming("c", 100, fastTiming(), false)
			} else {
				h.net.declareDead(c.tr)
			}
			h.waitSubscribers("private-x", 1)
			h.waitSubscribers("private-y", 0)
			time.Sleep(50 * time.Millisecond) // in-flight messages of the old c land now
			h.waitSubscribers("private-x", 1)
			h.waitSubscribers("private-y", 0)
			for _, n := range survivors {
				wantOccupancy(t, n.name, n.rec, "private-y", 1, 0, 1)
				if _, _, vacated, _ := n.rec.occupancy("app", "private-x"); vacated != 0 {
					t.Fatalf("node %s: private-x, still on a, vacated %d times", n.name, vacated)
				}
			}
			if tc.restart { // the new c learns the cluster's counts from snapshots
				c2 := h.node("c")
				wantOccupancy(t, "c", c2.rec, "private-x", 1, 0, 0)
				wantOccupancy(t, "c", c2.rec, "private-y", 0, 0, 0)
			}
		})
	}
}

// ---- real clusters on loopback ----

// waitRealSubscribers waits until every node in nodes shows want
// subscribers of (app, ch), in its view and its Change stream.
func waitRealSubscribers(t *testing.T, d time.Duration, nodes []*realNode, ch string, want int) {
	t.Helper()
	testkit.WaitFor(t, d, func() error {
		for _, n := range nodes {
			if err := subscribersShown(n.name, n.g, n.rec, ch, want); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestRealClusterOccupancy(t *testing.T) {
	nodes := startRealCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	// Occupied through a, vacated through b: one transition of each on
	// every node, whichever node caused it.
	a.g.SetSubscribers("app", "private-x", 1)
	waitRealSubscribers(t, 5*time.Second, nodes, "private-x", 1)
	b.g.SetSubscribers("app", "private-x", 2)
	waitRealSubscribers(t, 5*time.Second, nodes, "private-x", 3)
	a.g.SetSubscribers("app", "private-x", 0)
	waitRealSubscribers(t, 5*time.Second, nodes, "private-x", 2)
	b.g.SetSubscribers("app", "private-x", 0)
	waitRealSubscribers(t, 5*time.Second, nodes, "private-x", 0)
	for _, n := range nodes {
		n.rec.check(t, n.name)
		wantOccupancy(t, n.name, n.rec, "private-x", 1, 2, 1)
	}
	// c crashes holding every subscriber of private-y and one of
	// presence-z's two.
	a.g.SetSubscribers("app", "presence-z", 1)
	c.g.SetSubscribers("app", "presence-z", 1)
	c.g.SetSubscribers("app", "private-y", 2)
	waitRealSubscribers(t, 5*time.Second, nodes, "presence-z", 2)
	waitRealSubscribers(t, 5*time.Second, nodes, "private-y", 2)
	detect := c.c.FailureDetection()
	c.g.Close()
	start := time.Now()
	if err := c.c.Shutdown(); err != nil { // a crash: no Leave
		t.Fatal(err)
	}
	survivors := []*realNode{a, b}
	waitRealSubscribers(t, detect+2*time.Second, survivors, "private-y", 0)
	waitRealSubscribers(t, time.Second, survivors, "presence-z", 1)
	gone := time.Since(start)
	time.Sleep(200 * time.Millisecond) // late gossip must change nothing
	waitRealSubscribers(t, time.Second, survivors, "private-y", 0)
	for _, n := range survivors {
		n.rec.check(t, n.name)
		wantOccupancy(t, n.name, n.rec, "private-y", 1, 0, 1)
		// presence-z went 1 → 2 → 1, or 2 → 1 where both counts came at
		// once: either way occupied once and never vacated.
		if occupied, _, vacated, _ := n.rec.occupancy("app", "presence-z"); occupied != 1 || vacated != 0 {
			t.Fatalf("node %s: presence-z, still on a, occupied %d and vacated %d times", n.name, occupied, vacated)
		}
	}
	t.Logf("crash: private-y vacated on both survivors after %v; FailureDetection %v", gone, detect)
}
