package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
	"herald/node"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// TestExample runs the example against a real node and checks that a
// WebSocket subscriber receives the event.
func TestExample(t *testing.T) {
	n, err := node.Start(configs.Loopback(t.TempDir()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := client.Dial(ctx, "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.Subscribe(ctx, "orders.42"); err != nil {
		t.Fatal(err)
	}

	o := options{server: n.NATSURL(), app: "app-id", user: "app-id", password: "app-secret",
		channels: "orders.42", event: "shipped", data: `{"id":42}`, info: "subscription_count", timeout: 5 * time.Second}
	var out bytes.Buffer
	if err := run(o, &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != `{"channels":{"orders.42":{"subscription_count":1}}}` {
		t.Fatalf("answer %s", got)
	}
	if ev, err := ws.WaitFor(ctx, "shipped", "orders.42"); err != nil || ev.Data != `{"id":42}` {
		t.Fatalf("event %+v %v", ev, err)
	}

	o.fire, o.event = true, "fired"
	out.Reset()
	if err := run(o, &out); err != nil || out.Len() != 0 {
		t.Fatalf("fire-and-forget: %v %q", err, out.String())
	}
	if _, err := ws.WaitFor(ctx, "fired", "orders.42"); err != nil {
		t.Fatal(err)
	}

	o.fire, o.data = false, strings.Repeat("x", 10241)
	out.Reset()
	if err := run(o, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"status":413`) {
		t.Fatalf("too large: %s", out.String())
	}
}
