package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
	"herald/internal/webhooktest"
)

// regionCfgs is two regions of one node each on loopback: a1 in region a
// (the home region, the first by name) and b1 in region b, one memberlist
// cluster across both (each seeds the other), joined by NATS gateways.
func regionCfgs(t *testing.T) []*configs.Config {
	ports := testkit.FreePorts(t, 6) // gossip, routes, gateways
	addr := func(i int) string { return testkit.LoopbackAddr(ports[i]) }
	regions := []string{"a", "b"}
	cfgs := make([]*configs.Config, 2)
	for i := range cfgs {
		other := 1 - i
		c := configs.Loopback(t.TempDir())
		c.Bus.ClientListen = ""
		c.Cluster = configs.Cluster{
			Name: "test", NodeName: regions[i] + "1",
			Bind: addr(i), Seeds: []string{addr(0), addr(1)},
			Routes: []string{addr(2 + i)}, RouteListen: addr(2 + i),
			Preset:        configs.PresetLocal,
			Region:        regions[i],
			GatewayListen: addr(4 + i),
			Gateways:      []configs.RegionGateway{{Name: regions[other], URLs: []string{addr(4 + other)}}},
		}
		cfgs[i] = c
	}
	return cfgs
}

// startRegionNodes starts both nodes at once (JetStream's meta group spans
// both) and stops them at cleanup; nodes[i] may be replaced by a restart.
func startRegionNodes(t *testing.T, cfgs []*configs.Config) []*Node {
	t.Helper()
	nodes := make([]*Node, len(cfgs))
	err := testkit.StartAll(len(cfgs), func(i int) error {
		nd, err := Start(cfgs[i], quiet)
		if err != nil {
			return fmt.Errorf("node %s: %w", cfgs[i].Cluster.NodeName, err)
		}
		nodes[i] = nd
		return nil
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, nd := range nodes {
			if nd != nil {
				_ = nd.Stop(ctx)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 15*time.Second, func() error {
		for _, nd := range nodes {
			if m := len(nd.Cluster().Members()); m != len(nodes) {
				return fmt.Errorf("%s sees %d members", nd.Cluster().LocalName(), m)
			}
		}
		return nil
	})
	return nodes
}

// warmUp publishes on via until sub receives: the subscriber's interest
// has crossed the gateway (a region gets only the channels it subscribes).
func warmUp(t *testing.T, via *Node, sub *client.Conn, ch string) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, func() error {
		if status, body, err := rest(via).Trigger(ctxT(t), client.TriggerParams{Name: "warm", Data: "{}", Channels: []string{ch}}); err != nil || status != 200 {
			return fmt.Errorf("trigger: %d %s %v", status, body, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := sub.WaitFor(ctx, "warm", ch)
		return err
	})
}

// trigger publishes one event "e" with data on ch through n's REST API.
func trigger(t *testing.T, n *Node, ch, data string) {
	t.Helper()
	if status, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: data, Channels: []string{ch}}); err != nil || status != 200 {
		t.Fatalf("trigger %s on %s: %d %s %v", data, n.Cluster().LocalName(), status, body, err)
	}
}

// collect reads events named "e" on ch from c until it has n of them.
func collect(t *testing.T, c *client.Conn, ch string, n int) []client.Event {
	t.Helper()
	var got []client.Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(got) < n {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events on %s: %v", len(got), n, ch, err)
		}
		if ev.Channel == ch && ev.Event == "e" {
			got = append(got, ev)
		}
	}
	return got
}

// TestRegions runs two one-node regions through the promises:
// publish in either region reaches both, once, in one order; a client
// resuming in the other region gets exactly what it missed; presence is
// one roster; the home region stopped makes the other answer publishes
// with a retryable 503, and once it is back resuming clients lose nothing.
func TestRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two regions")
	}
	rcv := webhooktest.NewReceiver(configs.DevAppKey, configs.DevAppSecret)
	t.Cleanup(rcv.Close) // registered first: closed after the nodes stopped
	cfgs := regionCfgs(t)
	for _, c := range cfgs {
		c.Apps[0].Webhooks = []app.Webhook{{URL: rcv.URL(), EventTypes: []string{
			app.WebhookChannelOccupied, app.WebhookChannelVacated, app.WebhookMemberAdded, app.WebhookMemberRemoved}}}
		c.Webhooks.Grace = configs.Duration(100 * time.Millisecond)
	}
	nodes := startRegionNodes(t, cfgs)
	a, b := nodes[0], nodes[1]

	const ch = "news"
	subA, subB := dialNode(t, a), dialNode(t, b)
	for _, c := range []*client.Conn{subA, subB} {
		if err := c.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	warmUp(t, a, subB, ch)
	warmUp(t, b, subA, ch)
	// Drain the warm-ups each side may still get.
	time.Sleep(200 * time.Millisecond)
	for _, c := range []*client.Conn{subA, subB} {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			_, err := c.Next(ctx)
			cancel()
			if err != nil {
				break
			}
		}
	}

	t.Run("status shows the regions", func(t *testing.T) {
		for i, nd := range nodes {
			r := nd.Status(ctxT(t)).Regions
			other := []string{"b", "a"}[i]
			if r == nil || r.Region != []string{"a", "b"}[i] || r.Home != "a" || len(r.Gateways) != 1 ||
				r.Gateways[0].Name != other || !r.Gateways[0].Connected || r.Gateways[0].Inbound != 1 {
				t.Fatalf("%s: status regions = %+v", nd.Cluster().LocalName(), r)
			}
		}
	})

	t.Run("metrics show the gateways", func(t *testing.T) {
		if v, ok := sample(scrape(t, a), "herald_region_gateway_connected", "region", "b"); !ok || v != 1 {
			t.Fatalf("a's herald_region_gateway_connected{region=b} = %v (present %v), want 1", v, ok)
		}
	})

	t.Run("publish once, anywhere", func(t *testing.T) {
		for i := range 6 {
			trigger(t, nodes[i%2], ch, fmt.Sprint(i))
		}
		gotA, gotB := collect(t, subA, ch, 6), collect(t, subB, ch, 6)
		for i := range gotA {
			if gotA[i].Data != gotB[i].Data || gotA[i].Serial != gotB[i].Serial || gotA[i].Data != fmt.Sprint(i) {
				t.Fatalf("event %d: a got %s/%d, b got %s/%d, want data %d in both", i, gotA[i].Data, gotA[i].Serial, gotB[i].Data, gotB[i].Serial, i)
			}
			if i > 0 && gotA[i].Serial <= gotA[i-1].Serial {
				t.Fatalf("serials not increasing: %d after %d", gotA[i].Serial, gotA[i-1].Serial)
			}
		}
		// Nothing doubled.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if ev, err := subB.WaitFor(ctx, "e", ch); err == nil {
			t.Fatalf("b got an extra event %+v", ev)
		}
	})

	t.Run("a client moves from a to b mid-stream", func(t *testing.T) {
		const feed = "feed"
		c := dialNode(t, a)
		if err := c.Subscribe(ctxT(t), feed); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			trigger(t, a, feed, fmt.Sprint(i))
		}
		last := collect(t, c, feed, 3)[2].Serial
		c.CloseNow()
		var want []uint64
		for i := 3; i < 6; i++ { // missed, published in both regions
			trigger(t, nodes[i%2], feed, fmt.Sprint(i))
		}
		moved := dialNode(t, b)
		began := time.Now()
		got, report, err := resumeOnce(ctxT(t), moved, feed, last)
		took := time.Since(began)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			want = append(want, last+uint64(i)+1)
		}
		if !slices.Equal(got, want) || !strings.HasPrefix(report, "pusher_internal:resume_ok") {
			t.Fatalf("resumed in b from %d: got %v (%s), want %v and resume_ok", last, got, report, want)
		}
		t.Logf("cross-region resume of 3 events took %s", took)
		trigger(t, a, feed, "6") // live after the resume, once
		if ev := collect(t, moved, feed, 1)[0]; ev.Data != "6" || ev.Serial != want[2]+1 {
			t.Fatalf("live after resume: %+v", ev)
		}
	})

	t.Run("presence is one roster", func(t *testing.T) {
		const room = "presence-room"
		watcher := dialNode(t, b)
		joinRoom(t, watcher, room, "watcher")
		member := dialNode(t, a)
		joinRoom(t, member, room, "u-a")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ev, err := watcher.WaitFor(ctx, "pusher_internal:member_added", room)
		if err != nil || !strings.Contains(ev.Data, `"u-a"`) {
			t.Fatalf("member_added in b for a's member: %+v %v", ev, err)
		}
		testkit.WaitFor(t, 5*time.Second, func() error {
			var users struct {
				Users []struct {
					ID string `json:"id"`
				} `json:"users"`
			}
			getJSON(t, b, "/apps/app-id/channels/"+room+"/users", &users)
			if len(users.Users) != 2 {
				return fmt.Errorf("b's roster: %+v", users.Users)
			}
			return nil
		})
		// member_added for u-a is decided once for both regions.
		testkit.WaitFor(t, 10*time.Second, func() error {
			if n := slices.Index(rcv.Lines(room), app.WebhookMemberAdded+" u-a"); n < 0 {
				return fmt.Errorf("no member_added webhook for u-a yet: %q", rcv.Lines(room))
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond)
		added := 0
		for _, l := range rcv.Lines(room) {
			if l == app.WebhookMemberAdded+" u-a" {
				added++
			}
		}
		if added != 1 {
			t.Fatalf("member_added webhooks for u-a: %d (%q), want 1", added, rcv.Lines(room))
		}
	})

	t.Run("queries and webhooks once across regions", func(t *testing.T) {
		const wh = "wh"
		inA, inB := dialNode(t, a), dialNode(t, b)
		for _, c := range []*client.Conn{inA, inB} {
			if err := c.Subscribe(ctxT(t), wh); err != nil {
				t.Fatal(err)
			}
		}
		for _, nd := range nodes {
			testkit.WaitFor(t, 5*time.Second, func() error {
				var info struct {
					Occupied bool `json:"occupied"`
					Count    int  `json:"subscription_count"`
				}
				getJSON(t, nd, "/apps/app-id/channels/"+wh+"?info=subscription_count", &info)
				if !info.Occupied || info.Count != 2 {
					return fmt.Errorf("%s answers %+v, want occupied with 2 subscriptions", nd.Cluster().LocalName(), info)
				}
				return nil
			})
		}
		inA.CloseNow()
		inB.CloseNow()
		waitLines(t, rcv, wh, app.WebhookChannelOccupied, app.WebhookChannelVacated)
		time.Sleep(500 * time.Millisecond) // a second decider would have sent by now
		if got := rcv.Lines(wh); len(got) != 2 {
			t.Fatalf("webhooks for %s: %q, want one occupied and one vacated", wh, got)
		}
		if p := rcv.Problems(); len(p) > 0 {
			t.Fatalf("receiver problems: %v", p)
		}
	})

	t.Run("home region stopped, then back", func(t *testing.T) {
		const feed = "cut"
		c := dialNode(t, b)
		if err := c.Subscribe(ctxT(t), feed); err != nil {
			t.Fatal(err)
		}
		trigger(t, b, feed, "0")
		last := collect(t, c, feed, 1)[0].Serial
		c.CloseNow()
		watch := dialNode(t, b)
		joinRoom(t, watch, "presence-cut", "watcher")
		joinRoom(t, dialNode(t, a), "presence-cut", "u-cut")
		if _, err := watch.WaitFor(ctxT(t), "pusher_internal:member_added", "presence-cut"); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Fatalf("stop a: %v", err)
		}
		nodes[0] = nil
		// a's presence members leave b's roster.
		ev, err := watch.WaitFor(ctx, "pusher_internal:member_removed", "presence-cut")
		if err != nil || !strings.Contains(ev.Data, `"u-cut"`) {
			t.Fatalf("member_removed in b for a's member: %+v %v", ev, err)
		}
		var status int
		var body []byte
		testkit.WaitFor(t, 10*time.Second, func() error {
			began := time.Now()
			status, body, _ = rest(b).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "cut", Channels: []string{feed}})
			if status != 503 {
				return fmt.Errorf("publish in b while a is down: %d %s", status, body)
			}
			if d := time.Since(began); d > 2*time.Second {
				return fmt.Errorf("503 after %s, want it at once", d)
			}
			return nil
		})
		if r := b.Status(ctxT(t)).Regions; r == nil || r.Gateways[0].Connected {
			t.Errorf("b's status while a is down: %+v", r)
		}
		if v, ok := sample(scrape(t, b), "herald_region_gateway_connected", "region", "a"); !ok || v != 0 {
			t.Errorf("b's herald_region_gateway_connected{region=a} while a is down = %v (present %v), want 0", v, ok)
		}
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, "home region") {
			t.Fatalf("503 body %s: want a JSON error naming the home region (%v)", body, err)
		}

		// A resume in b cannot read the home stream meanwhile: the client
		// is told, never left with a gap.
		cutoff := dialNode(t, b)
		began := time.Now()
		_, report, err := resumeOnce(ctxT(t), cutoff, feed, last)
		if err != nil || !strings.HasPrefix(report, "pusher_internal:resume_failed") || !strings.Contains(report, "unavailable") {
			t.Fatalf("resume in b while a is down: %q %v, want resume_failed unavailable", report, err)
		}
		t.Logf("resume_failed in b while the home region is down after %s", time.Since(began))

		restarted, err := Start(cfgs[0], quiet)
		if err != nil {
			t.Fatalf("restart a: %v", err)
		}
		nodes[0] = restarted
		testkit.WaitFor(t, 15*time.Second, func() error {
			status, body, err := rest(b).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "1", Channels: []string{feed}})
			if err != nil || status != 200 {
				return fmt.Errorf("publish in b after a is back: %d %s %v", status, body, err)
			}
			return nil
		})
		trigger(t, restarted, feed, "2")
		back := dialNode(t, b)
		got, report, err := resumeOnce(ctxT(t), back, feed, last)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []uint64{last + 1, last + 2}) || !strings.HasPrefix(report, "pusher_internal:resume_ok") {
			t.Fatalf("resume in b from %d after the cut: %v (%s), want [%d %d] and resume_ok", last, got, report, last+1, last+2)
		}
	})

	t.Run("the home region goes on without b", func(t *testing.T) {
		home := nodes[0]
		if home == nil {
			t.Skip("a did not come back")
		}
		const solo = "solo"
		c := dialNode(t, home)
		if err := c.Subscribe(ctxT(t), solo); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Fatalf("stop b: %v", err)
		}
		nodes[1] = nil
		// No JetStream meta leader without b (the meta group spans both
		// regions), but the home stream's own group is in a alone.
		trigger(t, home, solo, "alone")
		if ev := collect(t, c, solo, 1)[0]; ev.Data != "alone" {
			t.Fatalf("got %+v", ev)
		}
		if !home.http.Ready() {
			t.Fatal("a is not ready without b")
		}
	})
}
