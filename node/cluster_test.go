package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
	"herald/lifecycle"
)

// clusterCfgs holds the configs of the last startClusterNodes, for restarts.
var clusterCfgs []*configs.Config

// startClusterNodes starts n clustered nodes at once (JetStream needs a
// majority before any of them is ready) and stops them at cleanup.
func startClusterNodes(t *testing.T, n int) []*Node {
	t.Helper()
	return startClusterNodesWith(t, n, nil)
}

// startClusterNodesWith is startClusterNodes with mutate (if not nil)
// applied to every node's config.
func startClusterNodesWith(t *testing.T, n int, mutate func(*configs.Config)) []*Node {
	t.Helper()
	l := testkit.NewLayout(t, n, "n")
	nodes := make([]*Node, n)
	cfgs := make([]*configs.Config, n)
	for i := range n {
		cfgs[i] = configs.Loopback(t.TempDir())
		cfgs[i].Bus.ClientListen = ""
		cfgs[i].Cluster = l.Cluster(i, "test", configs.PresetLocal)
		if mutate != nil {
			mutate(cfgs[i])
		}
	}
	clusterCfgs = append(clusterCfgs, cfgs...)
	err := testkit.StartAll(n, func(i int) error {
		nd, err := Start(cfgs[i], quiet)
		if err != nil {
			return fmt.Errorf("node %d: %w", i+1, err)
		}
		nodes[i] = nd
		return nil
	})
	if err != nil {
		for _, nd := range nodes {
			if nd != nil {
				_ = nd.Stop(context.Background())
			}
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, nd := range nodes {
			_ = nd.Stop(ctx)
		}
	})
	testkit.WaitFor(t, 15*time.Second, func() error {
		for i, nd := range nodes {
			if m := len(nd.Cluster().Members()); m != n {
				return fmt.Errorf("node %d sees %d members", i+1, m)
			}
		}
		return nil
	})
	return nodes
}

func joinRoom(t *testing.T, c *client.Conn, ch, user string) client.Event {
	t.Helper()
	data := `{"user_id":"` + user + `"}`
	ev, err := c.SubscribeAuth(ctxT(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, data), data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func getJSON(t *testing.T, n *Node, path string, out any) {
	t.Helper()
	params := map[string]string{}
	if p, q, ok := strings.Cut(path, "?"); ok {
		path = p
		for _, kv := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(kv, "=")
			params[k] = v
		}
	}
	status, body, err := rest(n).Do(ctxT(t), "GET", path, params, nil)
	if err != nil || status != 200 {
		t.Fatalf("GET %s: %d %s %v", path, status, body, err)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %s: %v", path, body, err)
	}
}

// TestCluster runs one three-node cluster through the promises:
// cross-node fan-out once per subscriber with socket_id exclusion,
// cluster-wide presence and queries, and a node failing without leaving.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	clusterCfgs = nil
	nodes := startClusterNodes(t, 3)
	outer := t // connections that must outlive a subtest
	lc := &lifecycleLog{}
	for i, nd := range nodes {
		nd.Lifecycle().Subscribe(lc.recorder(i))
	}
	subs := make([]*client.Conn, 3)
	for i, nd := range nodes {
		subs[i] = dialNode(t, nd)
		if err := subs[i].Subscribe(ctxT(t), "orders.42"); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("fan-out reaches every node once, minus the excluded socket", func(t *testing.T) {
		var status int
		var body []byte
		status, body, _ = rest(nodes[0]).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "1", Channels: []string{"orders.42"}, SocketID: subs[1].SocketID()})
		if status != 200 {
			t.Fatalf("trigger: %d %s", status, body)
		}
		if status, body, _ = rest(nodes[2]).Trigger(ctxT(t), client.TriggerParams{Name: "barrier", Data: "2", Channels: []string{"orders.42"}}); status != 200 {
			t.Fatalf("trigger: %d %s", status, body)
		}
		for i, c := range subs {
			want := []string{"e", "barrier"}
			if i == 1 {
				want = []string{"barrier"}
			}
			var got []string
			for len(got) < len(want) {
				ev, err := c.Next(ctxT(t))
				if err != nil {
					t.Fatalf("node %d: %v after %v", i+1, err, got)
				}
				if ev.Channel == "orders.42" && ev.Event != "warm" {
					got = append(got, ev.Event)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("node %d got %v, want %v", i+1, got, want)
			}
		}
	})

	t.Run("queries agree on every node", func(t *testing.T) {
		// The scatter-gather's cost, for docs/benchmarks.md.
		var took []time.Duration
		for range 20 {
			start := time.Now()
			var ch struct{}
			getJSON(t, nodes[0], "/apps/app-id/channels/orders.42?info=subscription_count", &ch)
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		t.Logf("GET channel with subscription_count across 3 nodes: p50 %v, max %v (20 signed REST calls)", took[10], took[19])
		for i, nd := range nodes {
			var ch struct {
				Occupied          bool `json:"occupied"`
				SubscriptionCount int  `json:"subscription_count"`
			}
			getJSON(t, nd, "/apps/app-id/channels/orders.42?info=subscription_count", &ch)
			if !ch.Occupied || ch.SubscriptionCount != 3 {
				t.Fatalf("node %d: %+v", i+1, ch)
			}
			var list struct {
				Channels map[string]json.RawMessage `json:"channels"`
			}
			getJSON(t, nd, "/apps/app-id/channels", &list)
			if _, ok := list.Channels["orders.42"]; !ok {
				t.Fatalf("node %d lists %v", i+1, list.Channels)
			}
		}
	})

	const room = "presence-room"
	a := dialNode(t, nodes[0])
	b := dialNode(t, nodes[1])
	c := dialNode(t, nodes[2])
	t.Run("presence is cluster-wide", func(t *testing.T) {
		joinRoom(t, a, room, "alice")
		testkit.WaitFor(t, 5*time.Second, func() error {
			if n := nodes[1].Gateway().UserCount("app-id", room); n != 1 {
				return fmt.Errorf("node 2 sees %d users", n)
			}
			return nil
		})
		ev := joinRoom(t, b, room, "bob")
		if !strings.Contains(ev.Data, `"alice"`) || !strings.Contains(ev.Data, `"bob"`) {
			t.Fatalf("bob's roster on node 2 lacks someone: %s", ev.Data)
		}
		if ev, err := a.WaitFor(ctxT(t), "pusher_internal:member_added", room); err != nil || !strings.Contains(ev.Data, "bob") {
			t.Fatalf("alice on node 1: %+v %v", ev, err)
		}
		joinRoom(t, c, room, "carol")
		for i, nd := range nodes {
			testkit.WaitFor(t, 5*time.Second, func() error {
				var users struct {
					Users []struct{ ID string } `json:"users"`
				}
				getJSON(t, nd, "/apps/app-id/channels/"+room+"/users", &users)
				if len(users.Users) != 3 {
					return fmt.Errorf("node %d lists %v", i+1, users.Users)
				}
				return nil
			})
		}
	})

	t.Run("lifecycle events are decided once cluster-wide", func(t *testing.T) {
		// Occupied through n1, then also n2; n1 leaves (not vacated: n2
		// still holds it), then n2 leaves: one occupied, one vacated, both
		// from the owner, whichever node that is.
		c1, c2 := dialNode(t, nodes[0]), dialNode(t, nodes[1])
		for _, c := range []*client.Conn{c1, c2} {
			if err := c.Subscribe(ctxT(t), "lc-moving"); err != nil {
				t.Fatal(err)
			}
		}
		lc.waitKinds(t, "lc-moving", "channel_occupied", "subscription_count")
		c1.Close()
		lc.waitKinds(t, "lc-moving", "channel_occupied", "subscription_count", "subscription_count")
		c2.Close()
		lc.waitKinds(t, "lc-moving", "channel_occupied", "subscription_count", "subscription_count", "channel_vacated")
		owner := nodes[0].Cluster().Owner("app-id", "lc-moving")
		for _, ev := range lc.of("lc-moving") {
			if nodes[ev.node].Cluster().LocalName() != owner {
				t.Fatalf("%s emitted by n%d, owner is %s", ev.Kind, ev.node+1, owner)
			}
		}
		// A presence member joined on n3 is added once and, when it
		// leaves, removed once. Member and occupancy events of one channel
		// are not ordered against each other (docs/lifecycle.md).
		c3 := dialNode(t, nodes[2])
		joinRoom(t, c3, "presence-lc", "erin")
		lc.waitKinds(t, "presence-lc", sorted, "channel_occupied", "member_added")
		c3.Close()
		lc.waitKinds(t, "presence-lc", sorted, "channel_occupied", "channel_vacated", "member_added", "member_removed")
		// For the crash below: a channel only n3 holds, until it dies.
		if err := dialNode(outer, nodes[2]).Subscribe(ctxT(t), "lc-on-n3"); err != nil {
			t.Fatal(err)
		}
		lc.waitKinds(t, "lc-on-n3", "channel_occupied")
	})

	t.Run("status lists every member", func(t *testing.T) { checkClusterStatus(t, nodes) }) // reload_test.go

	t.Run("a node that dies without leaving", func(t *testing.T) {
		// n3 stops abruptly: no memberlist leave, no goodbye to clients.
		start := time.Now()
		nodes[2].crashForTest()
		for _, w := range []*client.Conn{a, b} {
			ev, err := w.WaitFor(context.Background(), "pusher_internal:member_removed", room)
			if err != nil || !strings.Contains(ev.Data, "carol") {
				t.Fatalf("member_removed: %+v %v", ev, err)
			}
		}
		took := time.Since(start)
		limit := nodes[0].Cluster().FailureDetection() + 3*time.Second
		if took > limit {
			t.Fatalf("member_removed after %v, failure detection is %v", took, limit)
		}
		t.Logf("carol removed everywhere %v after the crash", took)
		// Publishing keeps working and queries do not wait on the dead.
		testkit.WaitFor(t, 20*time.Second, func() error {
			if status, body, _ := rest(nodes[0]).Trigger(ctxT(t), client.TriggerParams{Name: "after", Data: "x", Channels: []string{"orders.42"}}); status != 200 {
				return fmt.Errorf("trigger: %d %s", status, body)
			}
			return nil
		})
		if _, err := subs[1].WaitFor(ctxT(t), "after", "orders.42"); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 10*time.Second, func() error {
			var ch struct {
				SubscriptionCount int `json:"subscription_count"`
			}
			getJSON(t, nodes[0], "/apps/app-id/channels/orders.42?info=subscription_count", &ch)
			if ch.SubscriptionCount != 2 {
				return fmt.Errorf("count %d", ch.SubscriptionCount)
			}
			return nil
		})
	})

	t.Run("the dead node's channels are vacated once", func(t *testing.T) {
		defer func() {
			if t.Failed() {
				t.Logf("events:\n%s", lc)
			}
		}()
		lc.waitKinds(t, "lc-on-n3", "channel_occupied", "channel_vacated")
	})

	t.Run("the dead node comes back with no ghost members", func(t *testing.T) {
		n3, err := Start(clusterCfgs[2], quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n3.Stop(context.Background()) })
		testkit.WaitFor(t, 15*time.Second, func() error {
			if m := len(nodes[0].Cluster().Members()); m != 3 {
				return fmt.Errorf("node 1 sees %d members", m)
			}
			return nil
		})
		// The restarted node learns the others' members by push/pull with
		// each of them, not all at once: wait for the roster to converge.
		testkit.WaitFor(t, 15*time.Second, func() error {
			if u := n3.Gateway().Users("app-id", room); !slices.Contains(u, "alice") || !slices.Contains(u, "bob") {
				return fmt.Errorf("restarted node's roster: %v", u)
			}
			return nil
		})
		d := dialNode(t, n3)
		ev := joinRoom(t, d, room, "dave")
		if strings.Contains(ev.Data, "carol") || !strings.Contains(ev.Data, "alice") || !strings.Contains(ev.Data, "bob") {
			t.Fatalf("roster on the restarted node: %s", ev.Data)
		}
		if _, err := a.WaitFor(ctxT(t), "pusher_internal:member_added", room); err != nil {
			t.Fatal(err)
		}
	})
}

func ctxBackground() context.Context { return context.Background() }

// lifecycleLog records the lifecycle events of every node of a cluster.
type lifecycleLog struct {
	mu     sync.Mutex
	events []nodeEvent
}

type nodeEvent struct {
	lifecycle.Event
	node int
}

func (l *lifecycleLog) recorder(node int) lifecycle.Consumer {
	return func(ev lifecycle.Event) {
		l.mu.Lock()
		l.events = append(l.events, nodeEvent{ev, node})
		l.mu.Unlock()
	}
}

func (l *lifecycleLog) of(channel string) []nodeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []nodeEvent
	for _, ev := range l.events {
		if ev.Channel == channel {
			out = append(out, ev)
		}
	}
	return out
}

// sorted, as waitKinds' first kind, compares the kinds in sorted order.
const sorted = "(sorted)"

// waitKinds waits until the channel's events, from every node together,
// are exactly kinds, in order (or sorted, when the first kind is sorted),
// and stay so for a moment (nothing doubled arrives late).
func (l *lifecycleLog) waitKinds(t *testing.T, channel string, kinds ...string) {
	t.Helper()
	sort := len(kinds) > 0 && kinds[0] == sorted
	if sort {
		kinds = kinds[1:]
	}
	got := func() string {
		var ks []string
		for _, ev := range l.of(channel) {
			ks = append(ks, string(ev.Kind))
		}
		if sort {
			slices.Sort(ks)
		}
		return strings.Join(ks, " ")
	}
	want := strings.Join(kinds, " ")
	testkit.WaitFor(t, 15*time.Second, func() error {
		if g := got(); g != want {
			return fmt.Errorf("%s: events %q, want %q", channel, g, want)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	if g := got(); g != want {
		t.Fatalf("%s: events %q later, want %q", channel, g, want)
	}
}

func (l *lifecycleLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ev := range l.events {
		fmt.Fprintf(&b, "n%d %s %s %d %s\n", ev.node+1, ev.Kind, ev.Channel, ev.Subscriptions, ev.Time.Format("15:04:05.000"))
	}
	return b.String()
}
