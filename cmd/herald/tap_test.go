package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/client"
	"herald/internal/testkit"
	"herald/node"
)

// syncBuffer is an io.Writer the test reads while runTap writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runTapBackground runs `herald tap args...` until the test ends and
// waits until the node has its watch.
func runTapBackground(t *testing.T, n *node.Node, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runTap(ctx, append([]string{"--admin", n.AdminURL()}, args...), out, errOut) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("herald tap %v: %v (stderr %q)", args, err, errOut.String())
		}
	})
	testkit.WaitFor(t, 5*time.Second, func() error {
		if !n.Tap().Watched("app-id") {
			return fmt.Errorf("the node does not see the tap's watch (stderr %q)", errOut.String())
		}
		return nil
	})
	return out
}

// TestTapCommand runs `herald tap` as main runs it against a running
// node: --json prints one object per event with the contract's fields,
// the text form one line per event, --channel only that prefix.
func TestTapCommand(t *testing.T) {
	n := startNode(t)
	jsonOut := runTapBackground(t, n, "--app", "app-id", "--json")
	textOut := runTapBackground(t, n, "--app", "app-id", "--channel", "orders-")

	ctx := context.Background()
	c, err := client.Dial(ctx, "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "orders-7"); err != nil {
		t.Fatal(err)
	}
	rest := &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: "app-id", Key: "app-key", Secret: "app-secret"}
	for _, ch := range []string{"news", "orders-7"} {
		if st, body, err := rest.Trigger(ctx, client.TriggerParams{Name: "shipped", Data: `{"id":7}`, Channels: []string{ch}}); err != nil || st != 200 {
			t.Fatalf("trigger: %d %s %v", st, body, err)
		}
	}

	var lines []map[string]any
	testkit.WaitFor(t, 5*time.Second, func() error {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(jsonOut.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				return fmt.Errorf("line %q: %v", l, err)
			}
			lines = append(lines, m)
		}
		// The tap's events are not ordered across kinds (a subscribe's may
		// come after a later publish's): wait for every kind asked for.
		var news, subscribed bool
		for _, m := range lines {
			news = news || (m["kind"] == "rest_publish" && m["channel"] == "news")
			subscribed = subscribed || m["kind"] == "subscribed"
		}
		if !news || !subscribed {
			return fmt.Errorf("rest_publish on news %v, subscribed %v in %d lines", news, subscribed, len(lines))
		}
		return nil
	})
	kinds := map[any]bool{}
	for _, m := range lines {
		for _, f := range []string{"time", "node", "kind", "channel", "socket_id"} {
			if _, ok := m[f]; !ok {
				t.Fatalf("line without %q: %v", f, m)
			}
		}
		kinds[m["kind"]] = true
	}
	for _, k := range []string{"connection_opened", "subscribed", "rest_publish"} {
		if !kinds[k] {
			t.Errorf("no %s line in --json output: %v", k, kinds)
		}
	}

	testkit.WaitFor(t, 5*time.Second, func() error {
		if !strings.Contains(textOut.String(), " rest_publish orders-7 - event=shipped size=8 payload={\"id\":7}") {
			return fmt.Errorf("text output %q", textOut.String())
		}
		return nil
	})
	if s := textOut.String(); strings.Contains(s, " news ") || strings.Contains(s, "connection_opened") {
		t.Fatalf("--channel orders- printed other events:\n%s", s)
	}
}

// TestTapCommandErrors: a missing --app and an unreachable node are
// clear errors.
func TestTapCommandErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runTap(context.Background(), nil, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--app") {
		t.Fatalf("no --app: %v", err)
	}
	err := runTap(context.Background(), []string{"--admin", "http://" + testkit.FreeAddr(t), "--app", "app-id"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is the node running") {
		t.Fatalf("unreachable: %v", err)
	}
	n := startNode(t)
	err = runTap(context.Background(), []string{"--admin", n.AdminURL(), "--app", "nope"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `unknown app "nope"`) {
		t.Fatalf("unknown app: %v", err)
	}
}
