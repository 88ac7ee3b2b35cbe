package node

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
)

// External mode end to end: a nats-server started by the test (the server
// Go module, in a child process running this test binary, configured from a
// nats-server config file as an operator would), and Herald nodes that
// connect to it instead of embedding one. The child process keeps the
// server's goroutines out of startNode's leak check.

// startNodeHook, when set, is called by startNode with every config before
// the node starts (TestExternalModeEndToEnd sets it).
var startNodeHook func(t *testing.T, cfg *configs.Config)

const (
	natsChildEnv   = "HERALD_TEST_NATS_SERVER_CONF" // the child's nats-server config file
	heraldUser     = "herald"
	heraldPassword = "herald-secret"
)

// natsChild is a nats-server running in a child process.
type natsChild struct {
	url     string // client URL
	leafURL string // nats-leaf://host:port of its leaf node port; "" without one
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *syncBuffer
	done    chan struct{}
}

// syncBuffer is the child's output, written by one goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) add(line string) {
	s.mu.Lock()
	s.b.WriteString(line + "\n")
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNATSServerChild is not a test of its own: it is the body of the child
// process startNATSChild starts (this binary, with natsChildEnv set). It runs
// nats-server with the config file named there, prints "READY <client URL>
// <leaf node port>", and runs until its stdin closes.
func TestNATSServerChild(t *testing.T) {
	conf := os.Getenv(natsChildEnv)
	if conf == "" {
		t.Skip("runs only as the child process of startNATSChild")
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	fmt.Printf("READY %s %d\n", s.ClientURL(), opts.LeafNode.Port) // the server writes bound ports back into opts
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.Shutdown()
	s.WaitForShutdown()
}

// startNATSChild runs a nats-server configured by conf (nats-server config
// syntax) in a child process, stopped at cleanup.
func startNATSChild(t *testing.T, conf string) *natsChild {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &natsChild{out: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestNATSServerChild$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), natsChildEnv+"="+path)
	c.cmd.Stderr = os.Stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.out.add(sc.Text())
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
				ready <- f[1:]
			}
		}
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
			t.Errorf("nats-server child did not stop; output:\n%s", c.out)
		}
	})
	select {
	case f := <-ready:
		c.url = f[0]
		if port, _ := strconv.Atoi(f[1]); port > 0 {
			c.leafURL = fmt.Sprintf("nats-leaf://127.0.0.1:%d", port)
		}
	case <-c.done:
		t.Fatalf("nats-server child exited; output:\n%s", c.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("nats-server child not ready; output:\n%s", c.out)
	}
	return c
}

// confList writes subjects as a nats-server config list.
func confList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// confUser is one entry of a users list with allow-only permissions.
func confUser(user, password string, perms *server.Permissions) string {
	return fmt.Sprintf("    {user: %q, password: %q, permissions: {publish: %s, subscribe: %s}}\n",
		user, password, confList(perms.Publish.Allow), confList(perms.Subscribe.Allow))
}

// externalConf is the config of the company's NATS in these tests:
// JetStream on, Herald's own user with exactly bus.NodePermissions, and for
// every app its backend user with exactly bus.ClientPermissions (with
// _INBOX.> when sharedInbox), the grants docs/nats.md asks an operator for.
func externalConf(t *testing.T, apps []app.App, sharedInbox bool) string {
	var users strings.Builder
	users.WriteString(confUser(heraldUser, heraldPassword, bus.NodePermissions("")))
	for i := range apps {
		a := &apps[i]
		users.WriteString(confUser(a.NATSUser(), a.NATSPassword(), bus.ClientPermissions(a.ID, sharedInbox)))
	}
	return fmt.Sprintf(`listen: "127.0.0.1:-1"
jetstream {
  store_dir: %q
}
authorization {
  users: [
%s  ]
}
`, t.TempDir(), users.String())
}

// externalMode starts a fresh external nats-server for cfg's apps and points
// cfg at it in external mode.
func externalMode(t *testing.T, cfg *configs.Config) {
	t.Helper()
	ext := startNATSChild(t, externalConf(t, cfg.Apps, cfg.Bus.ClientSharedInbox))
	cfg.Bus.Mode = configs.BusExternal
	cfg.Bus.URLs = []string{ext.url}
	cfg.Bus.User, cfg.Bus.Password = heraldUser, heraldPassword
	// cfg.Bus.ClientListen stays as Loopback set it: unused in external mode.
}

// TestExternalModeEndToEnd runs the node's end-to-end tests again, each
// against its own external nats-server in external mode. The permission
// tests pass there because the server grants app users what docs/nats.md
// lists. Left out: the tests of what only Herald's own client port has
// (nkeys and bcrypt passwords from apps[].nats, the port off or taken) and
// of start-up failures.
func TestExternalModeEndToEnd(t *testing.T) {
	startNodeHook = externalMode
	t.Cleanup(func() { startNodeHook = nil })
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"TriggerReachesSubscribers", TestTriggerReachesSubscribers},
		{"RESTErrors", TestRESTErrors},
		{"BatchEvents", TestBatchEvents},
		{"HealthAndMetrics", TestHealthAndMetrics},
		{"StopClosesSocketsWith4200", TestStopClosesSocketsWith4200},
		{"ChannelQueries", TestChannelQueries},
		{"QueriesAuthentication", TestQueriesAuthentication},
		{"QueriesWithPresence", TestQueriesWithPresence},
		{"QueriesWithCache", TestQueriesWithCache},
		{"NATSPublishReachesSubscribers", TestNATSPublishReachesSubscribers},
		{"NATSAnswersMatchREST", TestNATSAnswersMatchREST},
		{"NATSUnknownApp", TestNATSUnknownApp},
		{"NATSPermissions", TestNATSPermissions},
		{"NATSSharedInbox", TestNATSSharedInbox},
		{"NATSReadEvents", TestNATSReadEvents},
	} {
		t.Run(tc.name, tc.run)
	}
}

// TestExternalNode walks through what rides the bus, on a node in external
// mode: REST triggers to WebSocket subscribers with serials, unsubscribe,
// presence, cache channels, client events, and the NATS API answered by the
// node's own connection to the external server.
func TestExternalNode(t *testing.T) {
	n := startNode(t, func(c *configs.Config) { externalMode(t, c) })
	b := n.Bus()
	if b.Mode() != bus.ModeExternal || b.Server() != nil || !b.Connected() || n.nats == nil {
		t.Fatalf("mode %q, server %v, connected %v, nats api %v", b.Mode(), b.Server(), b.Connected(), n.nats)
	}
	url := n.NATSURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || url == "nats://"+n.cfg.Bus.ClientListen {
		t.Fatalf("NATSURL %q is not the external server", url)
	}
	r := rest(n)
	trigger := func(name, data string, channels ...string) {
		t.Helper()
		if status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: name, Data: data, Channels: channels}); err != nil || status != 200 {
			t.Fatalf("trigger %s: %d %s %v", name, status, body, err)
		}
	}

	t.Run("REST to WebSocket with serials", func(t *testing.T) {
		a, c := dialWS(t, n, "orders"), dialWS(t, n, "orders")
		trigger("one", "1", "orders")
		trigger("two", "2", "orders")
		for _, ws := range []*client.Conn{a, c} {
			one, err := ws.WaitFor(ctxT(t), "one", "orders")
			if err != nil || one.Serial == 0 {
				t.Fatalf("one: %+v %v", one, err)
			}
			two, err := ws.WaitFor(ctxT(t), "two", "orders")
			if err != nil || two.Serial != one.Serial+1 {
				t.Fatalf("two: %+v %v (one had serial %d)", two, err, one.Serial)
			}
		}
	})

	t.Run("unsubscribe", func(t *testing.T) {
		ws := dialWS(t, n, "news", "sentinel")
		if err := ws.Unsubscribe("news"); err != nil {
			t.Fatal(err)
		}
		// The trigger goes by REST, another path: a ping answered on the
		// same socket proves the node has handled the unsubscribe first.
		if err := ws.Send("pusher:ping", "", map[string]string{}); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.WaitFor(ctxT(t), "pusher:pong", ""); err != nil {
			t.Fatal(err)
		}
		trigger("dropped", "x", "news")
		trigger("mark", "x", "sentinel")
		if ev, err := ws.Next(ctxT(t)); err != nil || ev.Event != "mark" {
			t.Fatalf("after unsubscribing got %+v %v, want the sentinel", ev, err)
		}
		if err := ws.Subscribe(ctxT(t), "news"); err != nil {
			t.Fatal(err)
		}
		trigger("again", "x", "news")
		if _, err := ws.WaitFor(ctxT(t), "again", "news"); err != nil {
			t.Fatalf("resubscribed: %v", err)
		}
	})

	t.Run("presence", func(t *testing.T) {
		const room = "presence-room"
		join := func(user string) (*client.Conn, client.Event) {
			t.Helper()
			c := dialWS(t, n)
			data := `{"user_id":"` + user + `"}`
			ev, err := c.SubscribeAuth(ctxT(t), room, client.SignChannel("app-key", "app-secret", c.SocketID(), room, data), data)
			if err != nil {
				t.Fatalf("join as %s: %v", user, err)
			}
			return c, ev
		}
		first, _ := join("u1")
		_, ok := join("u2")
		if !strings.Contains(ok.Data, `"u1"`) || !strings.Contains(ok.Data, `"u2"`) {
			t.Fatalf("subscription_succeeded %s lacks a member", ok.Data)
		}
		ev, err := first.WaitFor(ctxT(t), "pusher_internal:member_added", room)
		if err != nil || !strings.Contains(ev.Data, `"u2"`) {
			t.Fatalf("member_added: %+v %v", ev, err)
		}
		trigger("hello", "1", room)
		if _, err := first.WaitFor(ctxT(t), "hello", room); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cache channel", func(t *testing.T) {
		trigger("price", `{"eur":1}`, "cache-prices")
		ws := dialWS(t, n, "cache-prices") // subscribes after the event
		ev, err := ws.WaitFor(ctxT(t), "price", "cache-prices")
		if err != nil || ev.Data != `{"eur":1}` {
			t.Fatalf("cached event: %+v %v", ev, err)
		}
		miss := dialWS(t, n, "cache-empty")
		if _, err := miss.WaitFor(ctxT(t), "pusher:cache_miss", "cache-empty"); err != nil {
			t.Fatalf("cache miss: %v", err)
		}
	})

	t.Run("client events", func(t *testing.T) {
		const ch = "private-chat"
		sub := func() *client.Conn {
			c := dialWS(t, n)
			if _, err := c.SubscribeAuth(ctxT(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, ""), ""); err != nil {
				t.Fatal(err)
			}
			return c
		}
		from, to := sub(), sub()
		if err := from.Send("client-typing", ch, map[string]string{"who": "a"}); err != nil {
			t.Fatal(err)
		}
		ev, err := to.WaitFor(ctxT(t), "client-typing", ch)
		if err != nil || !strings.Contains(ev.Data, `"who":"a"`) {
			t.Fatalf("client event: %+v %v", ev, err)
		}
	})

	t.Run("NATS API on the external server", func(t *testing.T) {
		ws := dialWS(t, n, "orders.42")
		nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id") // a backend of the company's NATS
		live := make(chan *nats.Msg, 8)
		if _, err := nc.ChanSubscribe("herald.app-id.live.>", live); err != nil {
			t.Fatal(err)
		}
		got := request(t, nc, "herald.app-id.api.events", []byte(`{"name":"shipped","channels":["orders.42"],"data":"{\"id\":42}"}`))
		if string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
		ev, err := ws.WaitFor(ctxT(t), "shipped", "orders.42")
		if err != nil || ev.Serial == 0 {
			t.Fatalf("event %+v %v", ev, err)
		}
		select {
		case m := <-live:
			if m.Header.Get("Nats-Sequence") != strconv.FormatUint(ev.Serial, 10) {
				t.Fatalf("live copy %s %v, want serial %d", m.Subject, m.Header, ev.Serial)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the backend saw no live copy")
		}
		if err := nc.Publish("herald.app-id.api.events", []byte(`{"name":"ff","channels":["orders.42"],"data":"fire"}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.WaitFor(ctxT(t), "ff", "orders.42"); err != nil {
			t.Fatalf("fire-and-forget: %v", err)
		}
	})
}
