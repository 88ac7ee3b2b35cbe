package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"herald/internal/testkit"
)

func TestMembersAndMeta(t *testing.T) {
	nodes := startN(t, 3, nil)
	for _, c := range nodes {
		ms := c.Members()
		if len(ms) != 3 {
			t.Fatalf("%s: %d members", c.LocalName(), len(ms))
		}
		for i, m := range ms {
			want := nodes[i]
			if m.Name != want.LocalName() || m.Addr != want.Addr() {
				t.Errorf("%s: member %d = %s@%s, want %s@%s", c.LocalName(), i, m.Name, m.Addr, want.LocalName(), want.Addr())
			}
			if m.Meta.Boot == 0 || m.Meta.HTTP != m.Name+".http:6001" || m.Meta.Route != m.Name+".route:6222" {
				t.Errorf("%s: member %s meta %+v", c.LocalName(), m.Name, m.Meta)
			}
		}
	}
}

func TestOwnerAgreesAndMovesOnlyDepartedChannels(t *testing.T) {
	nodes := startN(t, 3, nil)
	const n = 1000
	channel := func(i int) string { return fmt.Sprintf("presence-room-%d", i) }
	before := make([]string, n)
	count := map[string]int{}
	for i := range n {
		before[i] = nodes[0].Owner("app1", channel(i))
		count[before[i]]++
		for _, c := range nodes[1:] {
			if got := c.Owner("app1", channel(i)); got != before[i] {
				t.Fatalf("%s: Owner(%s) = %s, n0 says %s", c.LocalName(), channel(i), got, before[i])
			}
		}
	}
	for _, c := range nodes {
		if count[c.LocalName()] < n/6 {
			t.Errorf("uneven ownership: %v", count)
		}
	}

	if err := nodes[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, 5*time.Second, nodes[:2], "n0", "n1")
	moved := map[string]int{}
	for i := range n {
		after := nodes[0].Owner("app1", channel(i))
		if got := nodes[1].Owner("app1", channel(i)); got != after {
			t.Fatalf("after leave: n1 says %s, n0 says %s", got, after)
		}
		if before[i] != "n2" && after != before[i] {
			t.Fatalf("%s moved from %s to %s though its owner is alive", channel(i), before[i], after)
		}
		if before[i] == "n2" {
			moved[after]++
		}
	}
	if moved["n0"]+moved["n1"] != count["n2"] || moved["n0"] < count["n2"]/4 || moved["n1"] < count["n2"]/4 {
		t.Errorf("n2's %d channels moved unevenly: %v", count["n2"], moved)
	}
	if got := nodes[2].Owner("app1", "x"); got == "" {
		t.Error("Owner after Leave returned empty")
	}
}

func TestBroadcastReachesOthers(t *testing.T) {
	nodes := startN(t, 3, nil)
	recs := make([]*recorder, 3)
	for i, c := range nodes {
		recs[i] = &recorder{}
		c.Register(7, recs[i])
	}
	const n = 50
	for i := range n {
		nodes[0].Broadcast(7, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("msg-%d", i)))
	}
	for _, r := range recs[1:] {
		testkit.WaitFor(t, 5*time.Second, func() error {
			seen := map[string]int{}
			for _, m := range r.messages() {
				if m.from != "n0" {
					return fmt.Errorf("message from %q", m.from)
				}
				seen[m.data]++
			}
			for i := range n {
				if seen[fmt.Sprintf("msg-%d", i)] == 0 {
					return fmt.Errorf("msg-%d not received (%d distinct so far)", i, len(seen))
				}
			}
			return nil
		})
	}
	time.Sleep(300 * time.Millisecond) // let retransmissions land
	for i, r := range recs[1:] {
		got := len(r.messages())
		if got > 4*n { // 4 × ceil(log10 4) transmissions per message in all
			t.Errorf("n%d received %d copies of %d messages", i+1, got, n)
		}
		t.Logf("n%d received %d deliveries for %d messages", i+1, got, n)
	}
	if len(recs[0].messages()) != 0 {
		t.Error("the sender received its own broadcast")
	}
}

func TestBroadcastSameKeyReplacesQueued(t *testing.T) {
	nodes := startN(t, 3, nil)
	recs := []*recorder{{}, {}, {}}
	for i, c := range nodes {
		c.Register(3, recs[i])
	}
	const n = 200
	for i := range n {
		nodes[0].Broadcast(3, "same", []byte(fmt.Sprintf("v%d", i)))
	}
	last := fmt.Sprintf("v%d", n-1)
	for _, r := range recs[1:] {
		testkit.WaitFor(t, 5*time.Second, func() error {
			for _, m := range r.messages() {
				if m.data == last {
					return nil
				}
			}
			return errors.New("last version not received")
		})
		if got := len(r.messages()); got >= n {
			t.Errorf("%d deliveries for %d queued versions: older ones were not replaced", got, n)
		}
	}
}

func TestBroadcastLargeGoesReliable(t *testing.T) {
	nodes := startN(t, 3, nil)
	recs := []*recorder{{}, {}, {}}
	for i, c := range nodes {
		c.Register(9, recs[i])
	}
	big := bytes.Repeat([]byte("0123456789"), 1024) // 10 KB
	if len(big) <= nodes[1].MaxGossipPayload() {
		t.Fatal("test message fits a gossip packet")
	}
	nodes[1].Broadcast(9, "big", big)
	for _, i := range []int{0, 2} {
		testkit.WaitFor(t, 5*time.Second, func() error {
			if len(recs[i].messages()) == 0 {
				return fmt.Errorf("n%d got nothing", i)
			}
			return nil
		})
	}
	time.Sleep(200 * time.Millisecond)
	for _, i := range []int{0, 2} {
		ms := recs[i].messages()
		if len(ms) != 1 || ms[0].from != "n1" || ms[0].data != string(big) {
			t.Fatalf("n%d: %d messages, first from %q with %d bytes", i, len(ms), ms[0].from, len(ms[0].data))
		}
	}
	if st := nodes[1].Stats(); st.ReliableDropped != 0 || st.GossipQueued != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSendTo(t *testing.T) {
	nodes := startN(t, 2, nil)
	recs := []*recorder{{}, {}}
	for i, c := range nodes {
		c.Register(4, recs[i])
	}
	if err := nodes[0].SendTo("n1", 4, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].SendTo("n0", 4, []byte("self")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].SendTo("nobody", 4, []byte("x")); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("SendTo(nobody) = %v", err)
	}
	testkit.WaitFor(t, 2*time.Second, func() error {
		if ms := recs[1].messages(); len(ms) != 1 || ms[0] != (received{from: "n0", data: "hi"}) {
			return fmt.Errorf("n1 got %v", ms)
		}
		return nil
	})
	if ms := recs[0].messages(); len(ms) != 1 || ms[0].data != "self" {
		t.Fatalf("n0 got %v", ms)
	}
}

func TestStateExchangedOnJoin(t *testing.T) {
	nodes := startN(t, 2, nil)
	recs := []*recorder{{state: []byte("state-n0")}, {state: []byte("state-n1")}, {state: []byte("state-n2")}}
	for i, c := range nodes {
		c.Register(5, recs[i])
	}
	late := start(t, nodeConfig(t, "n2", nodes[0].Addr()))
	late.Register(5, recs[2])
	all := append(nodes, late)
	waitMembers(t, 5*time.Second, all, "n0", "n1", "n2")
	want := func(r *recorder, from ...string) func() error {
		return func() error {
			for _, f := range from {
				found := false
				for _, m := range r.merged() {
					if m.from == f && m.data == "state-"+f && m.join {
						found = true
					}
				}
				if !found {
					return fmt.Errorf("no join state from %s in %v", f, r.merged())
				}
			}
			return nil
		}
	}
	testkit.WaitFor(t, 5*time.Second, want(recs[2], "n0", "n1"))
	testkit.WaitFor(t, 5*time.Second, want(recs[0], "n2"))
	testkit.WaitFor(t, 5*time.Second, want(recs[1], "n2"))
}
