package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/node"
)

// TestAppsCommand runs herald apps create, list, show, update, rotate,
// disable and delete as main runs them, against a node with the registry
// as its app source, while a socket of another app stays connected.
func TestAppsCommand(t *testing.T) {
	cfg := configs.Loopback(t.TempDir())
	cfg.AppsSource = configs.AppsFromRegistry
	cfg.Apps = []app.App{app.New("steady", "steady-key", "steady-secret")}
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	steady, err := client.Dial(ctx, "ws://"+n.Addr().String()+"/app/steady-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer steady.Close()

	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		args = append(args[:1:1], append([]string{"--admin", n.AdminURL()}, args[1:]...)...)
		if err := appsRun(args, &out); err != nil {
			t.Fatalf("herald apps %v: %v", args, err)
		}
		return out.String()
	}
	field := func(out, name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in %q", name, out)
		}
		return m[1]
	}

	out := run("create", "--id", "shop", "--name", "Shop")
	id, key, secret := field(out, "id"), field(out, "key"), field(out, "secret")
	if id != "shop" || len(key) != 20 || len(secret) != 32 {
		t.Fatalf("create printed %q", out)
	}
	rest := func(secret string) int {
		r := &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: id, Key: key, Secret: secret}
		st, _, err := r.Trigger(ctx, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"c"}})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := rest(secret); st != 200 {
		t.Fatalf("REST of the created app: %d", st)
	}
	gen := field(run("create"), "id") // an id of its own
	if len(gen) != 12 {
		t.Fatalf("generated id %q", gen)
	}

	list := run("list")
	for _, want := range []string{"shop", key, "Shop", "steady", gen, "3 apps (apps_source: registry)"} {
		if !strings.Contains(list, want) {
			t.Fatalf("list %q lacks %q", list, want)
		}
	}
	if strings.Contains(list, secret) {
		t.Fatal("list shows the secret")
	}
	if show := run("show", "shop"); strings.Contains(show, secret) || !strings.Contains(show, `"max_connections": 0`) {
		t.Fatalf("show %q", show)
	}
	run("update", "shop", "--set", "max_connections=5", "--set", "client_events=true")
	if a, _ := n.Apps().ByID("shop"); a == nil || a.MaxConnections != 5 || !a.ClientEvents {
		t.Fatalf("after update: %+v", a)
	}

	rot := run("rotate", "shop", "--overlap", "1h")
	next := field(rot, "secret")
	if next == secret || !strings.Contains(rot, "previous secret valid until") {
		t.Fatalf("rotate printed %q", rot)
	}
	if rest(secret) != 200 || rest(next) != 200 {
		t.Fatal("both secrets must work during the overlap")
	}

	sock, err := client.Dial(ctx, "ws://"+n.Addr().String()+"/app/"+key+"?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	run("disable", "shop")
	for {
		if _, err := sock.Next(ctx); err != nil {
			if ce, ok := err.(*client.CloseError); !ok || ce.Code != 4003 {
				t.Fatalf("socket of the disabled app: %v", err)
			}
			break
		}
	}
	if out := run("delete", "shop"); out != "deleted shop\n" {
		t.Fatalf("delete printed %q", out)
	}
	if st := rest(next); st != 404 {
		t.Fatalf("REST of the deleted app: %d", st)
	}
	if err := appsRun([]string{"rotate", "--admin", n.AdminURL(), "shop"}, io.Discard); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("rotate of a deleted app: %v", err)
	}
	// The other app's socket saw nothing of it.
	if err := steady.Subscribe(ctx, "still-here"); err != nil {
		t.Fatalf("the other app's socket: %v", err)
	}
	if got := n.Gateway().AppConnections("steady"); got != 1 {
		t.Fatalf("steady has %d connections", got)
	}
}
