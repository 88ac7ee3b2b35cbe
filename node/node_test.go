package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// startNode runs a node on a free loopback port with its data in a temp dir.
func startNode(t *testing.T, mutate func(*configs.Config)) *Node {
	t.Helper()
	cfg := configs.Loopback(t.TempDir())
	if mutate != nil {
		mutate(cfg)
	}
	if startNodeHook != nil { // external_test.go runs these tests again in external mode
		startNodeHook(t, cfg)
	}
	base := testkit.Goroutines()
	n, err := Start(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
		base.Check(t, 10*time.Second)
	})
	return n
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rest(n *Node) *client.REST {
	return &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: "app-id", Key: "app-key", Secret: "app-secret"}
}

func TestTriggerReachesSubscribers(t *testing.T) {
	n := startNode(t, nil)
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctxT(t), "private-App.Models.User.1"); err == nil {
		t.Fatal("private channel without auth accepted")
	}
	if err := c.Subscribe(ctxT(t), "orders.42"); err != nil {
		t.Fatal(err)
	}
	status, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: `App\Events\OrderShipped`, Data: `{"id":42}`,
		Channels: []string{"orders.42"}, Info: "subscription_count"})
	if err != nil || status != 200 {
		t.Fatalf("trigger: %d %s %v", status, body, err)
	}
	if string(body) != `{"channels":{"orders.42":{"subscription_count":1}}}` {
		t.Fatalf("info answer %s", body)
	}
	ev, err := c.WaitFor(ctxT(t), `App\Events\OrderShipped`, "orders.42")
	if err != nil || ev.Data != `{"id":42}` || ev.Serial == 0 {
		t.Fatalf("event %+v %v", ev, err)
	}
}

func TestRESTErrors(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		off := app.New("off", "off-key", "off-secret")
		f := false
		off.Enabled = &f
		c.Apps = append(c.Apps, off)
	})
	r := rest(n)
	big := strings.Repeat("x", 10241)
	chans := make([]string, 101)
	for i := range chans {
		chans[i] = fmt.Sprintf("c%d", i)
	}
	cases := []struct {
		name   string
		r      *client.REST
		p      client.TriggerParams
		status int
	}{
		{"ok", r, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}, 200},
		{"unknown app", &client.REST{BaseURL: r.BaseURL, AppID: "nope", Key: "app-key", Secret: "app-secret"},
			client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}, 404},
		{"wrong secret", &client.REST{BaseURL: r.BaseURL, AppID: "app-id", Key: "app-key", Secret: "wrong"},
			client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}, 401},
		{"wrong key", &client.REST{BaseURL: r.BaseURL, AppID: "app-id", Key: "other", Secret: "app-secret"},
			client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}, 401},
		{"disabled app", &client.REST{BaseURL: r.BaseURL, AppID: "off", Key: "off-key", Secret: "off-secret"},
			client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}, 403},
		{"data too large", r, client.TriggerParams{Name: "e", Data: big, Channels: []string{"a"}}, 413},
		{"data at the limit", r, client.TriggerParams{Name: "e", Data: big[:10240], Channels: []string{"a"}}, 200},
		{"101 channels", r, client.TriggerParams{Name: "e", Data: "d", Channels: chans}, 400},
		{"bad channel", r, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a b"}}, 400},
		{"long name", r, client.TriggerParams{Name: strings.Repeat("n", 201), Data: "d", Channels: []string{"a"}}, 400},
		{"bad socket id", r, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}, SocketID: "1.2.3"}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := tc.r.Trigger(ctxT(t), tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if status != 200 {
				var e struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if json.Unmarshal(body, &e) != nil || e.Error == "" || e.Status != status {
					t.Fatalf("error body %s", body)
				}
			} else if string(body) != "{}" {
				t.Fatalf("success body %s", body)
			}
		})
	}
	// An expired timestamp, signed correctly otherwise.
	old := client.SignQuery("app-key", "app-secret", "POST", "/apps/app-id/events",
		map[string]string{"auth_timestamp": fmt.Sprint(time.Now().Add(-11 * time.Minute).Unix())},
		[]byte(`{"name":"e","data":"d","channels":["a"]}`), time.Now())
	resp, err := http.Post(r.BaseURL+"/apps/app-id/events?"+old, "application/json",
		strings.NewReader(`{"name":"e","data":"d","channels":["a"]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b), "Timestamp expired") {
		t.Fatalf("expired timestamp: %d %s", resp.StatusCode, b)
	}
}

func TestBatchEvents(t *testing.T) {
	n := startNode(t, nil)
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, ch := range []string{"a", "b"} {
		if err := c.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	status, body, err := rest(n).TriggerBatch(ctxT(t), []client.BatchItem{
		{Name: "one", Data: "1", Channel: "a"},
		{Name: "two", Data: "2", Channel: "b", Info: "subscription_count"},
		{Name: "three", Data: "3", Channel: "a"},
	})
	if err != nil || status != 200 || string(body) != `{"batch":[{},{"subscription_count":1},{}]}` {
		t.Fatalf("batch: %d %s %v", status, body, err)
	}
	// Order is kept per channel (channels are delivered by different shards).
	got := map[string][]string{}
	var serials []uint64
	for range 3 {
		ev, err := c.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		got[ev.Channel] = append(got[ev.Channel], ev.Event)
		serials = append(serials, ev.Serial)
	}
	if fmt.Sprint(got["a"]) != "[one three]" || fmt.Sprint(got["b"]) != "[two]" {
		t.Fatalf("per-channel order: %v (serials %v)", got, serials)
	}
	items := make([]client.BatchItem, 11)
	for i := range items {
		items[i] = client.BatchItem{Name: "e", Data: "d", Channel: "a"}
	}
	if status, body, _ := rest(n).TriggerBatch(ctxT(t), items); status != 400 {
		t.Fatalf("11 items: %d %s", status, body)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.Addr().String()
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "herald_connections"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %.200s", path, resp.StatusCode, b)
		}
	}
	resp, err := http.Get(base + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

func TestStopClosesSocketsWith4200(t *testing.T) {
	n := startNode(t, nil)
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	}()
	for {
		_, err := c.Next(ctxT(t))
		if err != nil {
			ce, ok := err.(*client.CloseError)
			if !ok || ce.Code != 4200 {
				t.Fatalf("closed with %v, want 4200", err)
			}
			return
		}
	}
}

func TestStartFailsClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := configs.Loopback(t.TempDir())
	cfg.Listen = ln.Addr().String()
	if _, err := Start(cfg, quiet); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("port taken: %v", err)
	}
	if os.Geteuid() != 0 { // root writes anywhere
		dir := filepath.Join(t.TempDir(), "ro")
		_ = os.Mkdir(dir, 0o500)
		cfg = configs.Loopback(dir)
		if _, err := Start(cfg, quiet); err == nil || !strings.Contains(err.Error(), "data dir") {
			t.Fatalf("read-only data dir: %v", err)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(f, nil, 0o644)
	cfg = configs.Loopback(filepath.Join(f, "sub"))
	if _, err := Start(cfg, quiet); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("data dir under a file: %v", err)
	}
}
