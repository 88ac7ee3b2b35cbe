package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"herald/client"
	"herald/internal/testkit"
)

// regionsEnv turns TestRegions2x3 on: six processes are more than the
// always-on suite should start on a 2-core box (node/regions_test.go's
// TestRegions covers two one-node regions in one process).
const regionsEnv = "HERALD_E2E_REGIONS"

// TestRegions2x3 is the six-process proof: two regions of three
// `herald serve` processes each, joined by NATS gateways (docs/regions.md).
// Publish in a, receive in b and back; a client moves from a to b
// mid-stream and resumes with nothing lost or doubled; a presence member in
// a is in b's roster; region a (home) killed: b answers publishes 503 at
// once; a restarted: a client resuming in b gets every event since.
func TestRegions2x3(t *testing.T) {
	if os.Getenv(regionsEnv) == "" {
		t.Skip("set " + regionsEnv + "=1 to start two regions of three processes")
	}
	bin := heraldBinary(t)
	dir := t.TempDir()
	regions := []string{"a", "b"}
	ports := testkit.FreePorts(t, 4*6) // client, gossip, route, gateway per node
	addr := func(kind, i int) string { return testkit.LoopbackAddr(ports[kind*6+i]) }
	var gossip []string
	for i := range 6 {
		gossip = append(gossip, addr(1, i))
	}
	nodes := make([]*clusterNode, 6)
	for i := range 6 {
		r := i / 3
		other := 1 - r
		var routes, gws []string
		for j := range 3 {
			routes = append(routes, addr(2, r*3+j))
			gws = append(gws, addr(3, other*3+j))
		}
		name := fmt.Sprintf("%s%d", regions[r], i%3+1)
		data := filepath.Join(dir, name, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := map[string]any{
			"listen": addr(0, i), "data_dir": data,
			"bus":      map[string]any{"client_listen": ""},
			"admin":    map[string]any{"listen": "127.0.0.1:0"},
			"shutdown": map[string]any{"drain_window": "0s"},
			"cluster": map[string]any{
				"name": "regions", "node_name": name, "preset": "local",
				"bind": addr(1, i), "seeds": gossip,
				"routes": routes, "route_listen": addr(2, i),
				"region": regions[r], "gateway_listen": addr(3, i),
				"gateways": []map[string]any{{"name": regions[other], "urls": gws}},
			},
			"apps": []map[string]any{{"id": "app-id", "key": "app-key", "secret": "app-secret", "client_events": true}},
		}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &clusterNode{Name: name, Addr: addr(0, i), config: path, dataDir: filepath.Join(dir, name), output: &lockedBuffer{}}
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() { nd.stop() })
		}
		wg.Wait()
		if t.Failed() {
			for _, nd := range nodes {
				out := nd.output.String()
				if len(out) > 4000 {
					out = "...\n" + out[len(out)-4000:]
				}
				t.Logf("herald %s output:\n%s", nd.Name, out)
			}
		}
	})
	for _, nd := range nodes {
		if err := nd.start(bin); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	if err := testkit.StartAll(6, func(i int) error { return nodes[i].waitReady(2 * clusterReadyTimeout) }); err != nil {
		t.Fatalf("regions not ready: %v", err)
	}
	t.Logf("six nodes ready %s after start", time.Since(began).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restOf := func(nd *clusterNode) *client.REST {
		return &client.REST{BaseURL: "http://" + nd.Addr, AppID: "app-id", Key: "app-key", Secret: "app-secret"}
	}
	trigger := func(nd *clusterNode, ch, data string) int {
		status, _, err := restOf(nd).Trigger(ctx, client.TriggerParams{Name: "e", Data: data, Channels: []string{ch}})
		if err != nil {
			return 0
		}
		return status
	}
	dial := func(nd *clusterNode) *client.Conn {
		c, err := client.Dial(ctx, "ws://"+nd.Addr+"/app/app-key?protocol=7", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func(c *client.Conn, ch string) client.Event {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		ev, err := c.WaitFor(wctx, "e", ch)
		if err != nil {
			t.Fatalf("waiting for an event on %s: %v", ch, err)
		}
		return ev
	}

	// Publish in a, receive in b; and back.
	subA, subB := dial(nodes[0]), dial(nodes[4])
	for _, c := range []*client.Conn{subA, subB} {
		if err := c.Subscribe(ctx, "x"); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, func() error { // b's interest crosses the gateway
		if s := trigger(nodes[1], "x", "warm"); s != 200 {
			return fmt.Errorf("trigger: %d", s)
		}
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer wcancel()
		_, err := subB.WaitFor(wctx, "e", "x")
		return err
	})
	for _, via := range []int{2, 5} {
		data := fmt.Sprint("via-", nodes[via].Name)
		if s := trigger(nodes[via], "x", data); s != 200 {
			t.Fatalf("trigger via %s: %d", nodes[via].Name, s)
		}
		for _, c := range []*client.Conn{subA, subB} {
			for ev := next(c, "x"); ev.Data != data; ev = next(c, "x") {
			}
		}
	}
	for _, c := range []*client.Conn{subA, subB} { // each once
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		ev, err := c.WaitFor(wctx, "e", "x")
		wcancel()
		if err == nil {
			t.Fatalf("an extra event after the last: %+v", ev)
		}
	}

	// A client moves from a to b mid-stream.
	mover := dial(nodes[1])
	if err := mover.Subscribe(ctx, "feed"); err != nil {
		t.Fatal(err)
	}
	trigger(nodes[0], "feed", "0")
	last := next(mover, "feed").Serial
	mover.CloseNow()
	for i := 1; i <= 4; i++ {
		if s := trigger(nodes[i%6], "feed", fmt.Sprint(i)); s != 200 {
			t.Fatalf("trigger %d: %d", i, s)
		}
	}
	moved := dial(nodes[3])
	got, report := resumeRaw(t, ctx, moved, "feed", last)
	want := []uint64{last + 1, last + 2, last + 3, last + 4}
	if !slices.Equal(got, want) || !strings.HasPrefix(report, "pusher_internal:resume_ok") {
		t.Fatalf("resumed in b from %d: %v (%s), want %v", last, got, report, want)
	}

	// Presence: a member in a is in b's roster.
	member := dial(nodes[2])
	data := `{"user_id":"u-a"}`
	if _, err := member.SubscribeAuth(ctx, "presence-r", client.SignChannel("app-key", "app-secret", member.SocketID(), "presence-r", data), data); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		status, body, err := restOf(nodes[5]).Do(ctx, "GET", "/apps/app-id/channels/presence-r/users", nil, nil)
		if err != nil || status != 200 || !strings.Contains(string(body), `"u-a"`) {
			return fmt.Errorf("b's roster: %d %s %v", status, body, err)
		}
		return nil
	})

	// Region a killed: b answers at once with a 503.
	keep := dial(nodes[4])
	if err := keep.Subscribe(ctx, "cut"); err != nil {
		t.Fatal(err)
	}
	trigger(nodes[4], "cut", "before")
	cutFrom := next(keep, "cut").Serial
	keep.CloseNow()
	for _, nd := range nodes[:3] {
		if _, _, err := nd.kill9(); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		t0 := time.Now()
		status, body, _ := restOf(nodes[4]).Trigger(ctx, client.TriggerParams{Name: "e", Data: "cut", Channels: []string{"cut"}})
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if status != 503 || !strings.Contains(e.Error, "home region") || time.Since(t0) > 2*time.Second {
			return fmt.Errorf("publish in b with a down: %d %s after %s", status, body, time.Since(t0))
		}
		return nil
	})
	for _, nd := range nodes[:3] {
		if err := nd.start(bin); err != nil {
			t.Fatal(err)
		}
	}
	if err := testkit.StartAll(3, func(i int) error { return nodes[i].waitReady(2 * clusterReadyTimeout) }); err != nil {
		t.Fatalf("region a not ready again: %v", err)
	}
	testkit.WaitFor(t, 20*time.Second, func() error {
		if s := trigger(nodes[5], "cut", "after"); s != 200 {
			return fmt.Errorf("publish in b after a is back: %d", s)
		}
		return nil
	})
	back := dial(nodes[5])
	got, report = resumeRaw(t, ctx, back, "cut", cutFrom)
	if len(got) == 0 || got[0] != cutFrom+1 || !strings.HasPrefix(report, "pusher_internal:resume_ok") {
		t.Fatalf("resume in b after the cut from %d: %v (%s)", cutFrom, got, report)
	}
}

// resumeRaw subscribes c to ch with herald_resume from and returns the
// serials of the events before the resume report, and the report.
func resumeRaw(t *testing.T, ctx context.Context, c *client.Conn, ch string, from uint64) ([]uint64, string) {
	t.Helper()
	msg, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": ch, "herald_resume": from}})
	if err := c.SendRaw(msg); err != nil {
		t.Fatal(err)
	}
	var serials []uint64
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for the resume report on %s: %v", ch, err)
		}
		if ev.Channel != ch {
			continue
		}
		switch {
		case ev.Event == "e":
			serials = append(serials, ev.Serial)
		case strings.HasPrefix(ev.Event, "pusher_internal:resume_"):
			return serials, ev.Event + " " + ev.Data
		}
	}
}
