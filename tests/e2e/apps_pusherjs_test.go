package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"herald/client"
)

// TestAppsRegistryPusherJS is the registry's proof with the real binary
// and a real pusher-js client: `herald apps create`, `rotate`, `disable`
// and `delete` run while a pusher-js subscriber of another app stays
// connected, and the new app's NATS user requests with nats.go's default
// options. The subscriber's socket must never have been closed or replaced
// (the node's connection counters), and it still gets an event.
func TestAppsRegistryPusherJS(t *testing.T) {
	cfg := map[string]any{
		"apps_source": "registry",
		// The subscriber script connects with the key "app-key" (tests/js/helpers.mjs).
		"apps": []map[string]any{{"id": "steady", "key": "app-key", "secret": "steady-secret"}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHerald(t, "--config", path)
	admin := adminURL(t, h.Output)
	natsURL := npNATSAddr(t, h)

	sub := npStartSubscriber(t, h, []string{"bystander"}, 1)
	if line := sub.next(t, 20*time.Second, "READY"); line != "READY" {
		t.Fatalf("subscriber printed %q before READY", line)
	}

	apps := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(heraldBinary(t), append([]string{"apps", args[0], "--admin", admin}, args[1:]...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("herald apps %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	field := func(out, name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in %q", name, out)
		}
		return m[1]
	}

	out := apps("create", "--id", "shop", "--name", "Shop")
	key, secret := field(out, "key"), field(out, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	trigger := func(id, key, secret, channel string) int {
		t.Helper()
		r := &client.REST{BaseURL: "http://" + h.Addr, AppID: id, Key: key, Secret: secret}
		st, _, err := r.Trigger(ctx, client.TriggerParams{Name: "e", Data: `{"n":1}`, Channels: []string{channel}})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := trigger("shop", key, secret, "c"); st != 200 {
		t.Fatalf("REST of the created app: %d", st)
	}

	// The contract: the app's user and password, default options.
	nc, err := nats.Connect(natsURL, nats.UserInfo("shop", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request("herald.shop.api.events", []byte(`{"name":"e","channels":["c"],"data":"{}"}`), 5*time.Second)
	if err != nil || string(m.Data) != "{}" {
		t.Fatalf("NATS request with the default inbox: %v %v", m, err)
	}

	next := field(apps("rotate", "shop", "--overlap", "1h"), "secret")
	if trigger("shop", key, secret, "c") != 200 || trigger("shop", key, next, "c") != 200 {
		t.Fatal("both secrets must work during the overlap")
	}
	apps("disable", "shop")
	if st := trigger("shop", key, next, "c"); st != 403 {
		t.Fatalf("REST of the disabled app: %d", st)
	}
	if out := apps("delete", "shop"); !strings.Contains(out, "deleted shop") {
		t.Fatalf("delete printed %q", out)
	}
	if st := trigger("shop", key, next, "c"); st != 404 {
		t.Fatalf("REST of the deleted app: %d", st)
	}
	var list struct {
		Apps []struct{ ID string } `json:"apps"`
	}
	if err := json.Unmarshal([]byte(apps("list", "--json")), &list); err != nil || len(list.Apps) != 1 || list.Apps[0].ID != "steady" {
		t.Fatalf("list after delete: %+v %v", list, err)
	}

	// The bystander's socket was never closed and never replaced: the only
	// WebSocket this node ever accepted is the subscriber's, and none was
	// released.
	metrics := func() string {
		t.Helper()
		resp, err := http.Get("http://" + h.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m1 := metrics()
	released := regexp.MustCompile(`(?m)^herald_disconnects_total\{[^}]*\} [1-9]`)
	if !strings.Contains(m1, `herald_connects_total{reason="accepted"} 1`+"\n") || released.MatchString(m1) {
		t.Fatalf("connection metrics:\n%s", grepLines(m1, "herald_connects_total", "herald_disconnects_total"))
	}
	// And it still has its subscription: the next event arrives.
	if st := trigger("steady", "app-key", "steady-secret", "bystander"); st != 200 {
		t.Fatalf("REST of the bystander's app: %d", st)
	}
	var ev npEvent
	if err := json.Unmarshal([]byte(sub.next(t, 10*time.Second, "the bystander's event")), &ev); err != nil || ev.Channel != "bystander" {
		t.Fatalf("bystander event %+v %v", ev, err)
	}
}

// grepLines returns the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
