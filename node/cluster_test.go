package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
	"herald/gateway"
	"herald/internal/testkit"
)

// clusterCfgs holds the configs of the last startClusterNodes, for restarts.
var clusterCfgs []*configs.Config

// startClusterNodes starts n clustered nodes at once (JetStream needs a
// majority before any of them is ready) and stops them at cleanup.
func startClusterNodes(t *testing.T, n int) []*Node {
	t.Helper()
	l := testkit.NewLayout(t, n, "n")
	nodes := make([]*Node, n)
	cfgs := make([]*configs.Config, n)
	for i := range n {
		cfgs[i] = configs.Loopback(t.TempDir())
		cfgs[i].Bus.ClientListen = ""
		cfgs[i].Cluster = l.Cluster(i, "test", configs.PresetLocal)
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
			if n := nodes[1].Gateway().UserCount(mustApp(t, nodes[1]), room); n != 1 {
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

func mustApp(t *testing.T, n *Node) *gateway.App {
	a, ok := n.Gateway().AppByID("app-id")
	if !ok {
		t.Fatal("no app")
	}
	return a
}

func ctxBackground() context.Context { return context.Background() }
