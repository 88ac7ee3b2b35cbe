package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/admin"
	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/console"
	"herald/debugtap"
	"herald/internal/testkit"
	"herald/node"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const token = "console-test-token"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startNode runs a node with the dev app, a second app and an admin token.
func startNode(t *testing.T) *node.Node {
	t.Helper()
	cfg := configs.Loopback(t.TempDir())
	cfg.Admin.Token = token
	other := app.New("other-app", "other-key", "other-secret")
	cfg.Apps = append(cfg.Apps, other)
	n, err := node.Start(cfg, quiet)
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
	})
	return n
}

// browser is an HTTP client with a cookie jar, as the page is.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newBrowser(t *testing.T, n *node.Node) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, base: n.AdminURL(), hc: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
	t.Cleanup(b.hc.CloseIdleConnections)
	return b
}

func (b *browser) do(method, path string, body any, csrf bool) (int, []byte) {
	b.t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, b.base+path, r)
	if csrf {
		req.Header.Set("X-Herald-Console", "1")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestLogin: the page loads without a login; the API needs one; the admin
// token sees every app, an app's key and secret that app alone; bad
// credentials and cookies are refused; cookie POSTs need the CSRF header.
func TestLogin(t *testing.T) {
	n := startNode(t)
	b := newBrowser(t, n)
	if st, body := b.do("GET", "/console", nil, false); st != 200 || !bytes.Contains(body, []byte("Herald")) {
		t.Fatalf("page: %d %.100s", st, body)
	}
	if st, body := b.do("GET", "/console/static/console.js", nil, false); st != 200 || !bytes.Contains(body, []byte("EventSource")) {
		t.Fatalf("script: %d %.100s", st, body)
	}
	if st, _ := b.do("GET", "/console/api/session", nil, false); st != 401 {
		t.Fatalf("session before login: %d", st)
	}
	if st, _ := b.do("POST", "/console/api/login", map[string]string{"token": "wrong"}, false); st != 401 {
		t.Fatalf("wrong token: %d", st)
	}
	if st, _ := b.do("POST", "/console/api/login", map[string]string{"key": "app-key", "secret": "nope"}, false); st != 401 {
		t.Fatalf("wrong secret: %d", st)
	}
	// Other admin endpoints still need the bearer token.
	if st, _ := b.do("GET", "/status", nil, false); st != 401 {
		t.Fatalf("admin endpoint without token: %d", st)
	}

	st, body := b.do("POST", "/console/api/login", map[string]string{"key": "app-key", "secret": "app-secret"}, false)
	if st != 200 || !strings.Contains(string(body), `"scope": "app"`) || !strings.Contains(string(body), `"app-id"`) || strings.Contains(string(body), "other-app") {
		t.Fatalf("app login: %d %s", st, body)
	}
	if st, _ := b.do("GET", "/console/api/stats?app=app-id", nil, false); st != 200 {
		t.Fatalf("own app's stats: %d", st)
	}
	if st, _ := b.do("GET", "/console/api/stats?app=other-app", nil, false); st != 403 {
		t.Fatalf("other app's stats with an app login: %d", st)
	}
	pub := map[string]string{"app": "app-id", "channel": "c", "event": "e", "data": "d"}
	if st, _ := b.do("POST", "/console/api/publish", pub, false); st != 403 {
		t.Fatalf("publish without the CSRF header: %d", st)
	}
	if st, body := b.do("POST", "/console/api/publish", pub, true); st != 200 {
		t.Fatalf("publish: %d %s", st, body)
	}

	st, body = b.do("POST", "/console/api/login", map[string]string{"token": token}, false)
	if st != 200 || !strings.Contains(string(body), `"scope": "admin"`) || !strings.Contains(string(body), "other-app") {
		t.Fatalf("admin login: %d %s", st, body)
	}
	if st, _ := b.do("GET", "/console/api/stats?app=other-app", nil, false); st != 200 {
		t.Fatalf("admin: other app's stats: %d", st)
	}
	b.do("POST", "/console/api/logout", map[string]string{}, true)
	if st, _ := b.do("GET", "/console/api/session", nil, false); st != 401 {
		t.Fatalf("session after logout: %d", st)
	}

	// A forged cookie.
	req, _ := http.NewRequest("GET", n.AdminURL()+"/console/api/session", nil)
	req.AddCookie(&http.Cookie{Name: "herald_console", Value: "djF8OTk5OTk5OTk5OXwqfDAw.AAAA"})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("forged cookie: %d", resp.StatusCode)
	}
}

// tap collects a stream's events.
type tap struct {
	mu     sync.Mutex
	events []debugtap.Event
	status []console.StreamStatus
	done   chan error
	cancel context.CancelFunc
}

func startTap(t *testing.T, n *node.Node, app, channel string) *tap {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tp := &tap{done: make(chan error, 1), cancel: cancel}
	go func() {
		tp.done <- console.Stream(ctx, &admin.Client{URL: n.AdminURL(), Token: token}, app, channel,
			func(e debugtap.Event, _ []byte) { tp.mu.Lock(); tp.events = append(tp.events, e); tp.mu.Unlock() },
			func(s console.StreamStatus) { tp.mu.Lock(); tp.status = append(tp.status, s); tp.mu.Unlock() })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-tp.done; err != nil {
			t.Errorf("stream: %v", err)
		}
	})
	testkit.WaitFor(t, 5*time.Second, func() error {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		if len(tp.status) == 0 {
			return errors.New("no status yet")
		}
		return nil
	})
	return tp
}

func (tp *tap) waitFor(t *testing.T, what string, match func(debugtap.Event) bool) debugtap.Event {
	t.Helper()
	var got debugtap.Event
	testkit.WaitFor(t, 5*time.Second, func() error {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, e := range tp.events {
			if match(e) {
				got = e
				return nil
			}
		}
		return fmt.Errorf("no %s among %d events", what, len(tp.events))
	})
	return got
}

func (tp *tap) kinds(channel string) []debugtap.Kind {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []debugtap.Kind
	for _, e := range tp.events {
		if e.Channel == channel {
			out = append(out, e.Kind)
		}
	}
	return out
}

// TestStreamShowsTheLife: a stream sees a socket connect, subscribe, be
// refused, a REST publish with its payload, a client event, an
// unsubscribe and the close with its code; the inspector finds the socket
// with its subscriptions; a filtered stream sees only its channels.
func TestStreamShowsTheLife(t *testing.T) {
	n := startNode(t)
	all := startTap(t, n, "app-id", "")
	filtered := startTap(t, n, "app-id", "orders-")
	if st := all.status[0]; len(st.Nodes) != 1 || st.Nodes[0].SampleEvery != 1 {
		t.Fatalf("status %+v", st)
	}

	ctx := context.Background()
	ws := "ws://" + n.Addr().String() + "/app/app-key?protocol=7"
	c, err := client.Dial(ctx, ws, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sid := c.SocketID()
	all.waitFor(t, "connection_opened", func(e debugtap.Event) bool { return e.Kind == debugtap.KindConnected && e.SocketID == sid })
	if err := c.Subscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "orders-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeAuth(ctx, "private-x", "app-key:bad", ""); err == nil {
		t.Fatal("bad auth subscribed")
	}
	refused := all.waitFor(t, "subscribe_refused", func(e debugtap.Event) bool { return e.Kind == debugtap.KindSubscribeRefused })
	if refused.Channel != "private-x" || !strings.HasPrefix(refused.Reason, "AuthError: ") || refused.Code != 401 {
		t.Fatalf("refused %+v", refused)
	}

	rest := &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: "app-id", Key: "app-key", Secret: "app-secret"}
	if st, body, err := rest.Trigger(ctx, client.TriggerParams{Name: "greet", Data: `{"hello":"console"}`, Channels: []string{"news", "orders-1"}}); err != nil || st != 200 {
		t.Fatalf("trigger: %d %s %v", st, body, err)
	}
	pub := all.waitFor(t, "rest_publish", func(e debugtap.Event) bool { return e.Kind == debugtap.KindRESTPublish && e.Channel == "news" })
	if pub.Event != "greet" || pub.Payload != `{"hello":"console"}` || pub.Size != 19 || pub.Node == "" || pub.App != "app-id" {
		t.Fatalf("publish %+v", pub)
	}
	filtered.waitFor(t, "rest_publish on orders-1", func(e debugtap.Event) bool { return e.Kind == debugtap.KindRESTPublish && e.Channel == "orders-1" })

	// The inspector: the socket, its two channels, the last serial of each.
	b := newBrowser(t, n)
	b.do("POST", "/console/api/login", map[string]string{"token": token}, false)
	testkit.WaitFor(t, 5*time.Second, func() error {
		st, body := b.do("GET", "/console/api/socket?app=app-id&socket_id="+sid, nil, false)
		if st != 200 {
			return fmt.Errorf("inspect: %d %s", st, body)
		}
		var a struct {
			Node   string `json:"node"`
			Socket struct {
				SocketID      string `json:"socket_id"`
				Subscriptions []struct {
					Channel    string `json:"channel"`
					LastSerial uint64 `json:"last_serial"`
				} `json:"subscriptions"`
			} `json:"socket"`
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return err
		}
		if a.Socket.SocketID != sid || len(a.Socket.Subscriptions) != 2 {
			return fmt.Errorf("inspect: %s", body)
		}
		for _, s := range a.Socket.Subscriptions {
			if s.LastSerial == 0 {
				return fmt.Errorf("no last serial yet: %s", body)
			}
		}
		return nil
	})
	if st, _ := b.do("GET", "/console/api/socket?app=other-app&socket_id="+sid, nil, false); st != 404 {
		t.Fatalf("socket of another app: %d", st)
	}
	if st, _ := b.do("GET", "/console/api/socket?app=app-id&socket_id=1.2", nil, false); st != 404 {
		t.Fatalf("unknown socket: %d", st)
	}

	if err := c.Unsubscribe("news"); err != nil {
		t.Fatal(err)
	}
	all.waitFor(t, "unsubscribed", func(e debugtap.Event) bool { return e.Kind == debugtap.KindUnsubscribed && e.Channel == "news" })
	c.Close()
	closed := all.waitFor(t, "connection_closed", func(e debugtap.Event) bool { return e.Kind == debugtap.KindClosed && e.SocketID == sid })
	if closed.Code != 1000 {
		t.Fatalf("closed %+v", closed)
	}
	for _, k := range filtered.kinds("news") {
		t.Fatalf("the orders- stream got %s on news", k)
	}
	filtered.mu.Lock()
	for _, e := range filtered.events {
		if e.Channel == "" {
			t.Errorf("the orders- stream got %s without a channel", e.Kind)
		}
	}
	filtered.mu.Unlock()

	// Stats: the app's figures from this node.
	st, body := b.do("GET", "/console/api/stats?app=app-id", nil, false)
	var stats console.StatsAnswer
	if st != 200 || json.Unmarshal(body, &stats) != nil || len(stats.Nodes) != 1 || stats.Nodes[0].Deliveries < 2 {
		t.Fatalf("stats: %d %s", st, body)
	}
}

// TestUnwatchedNodeProducesNothing: once every stream has ended, the tap
// stops producing (its watch was withdrawn, not left to expire).
func TestUnwatchedNodeProducesNothing(t *testing.T) {
	n := startNode(t)
	tp := startTap(t, n, "app-id", "")
	if !n.Tap().Watched("app-id") {
		t.Fatal("not watched while a stream is open")
	}
	tp.cancel()
	if err := <-tp.done; err != nil {
		t.Fatal(err)
	}
	tp.done <- nil // for the cleanup
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n.Tap().Watched("app-id") {
			return errors.New("still watched")
		}
		return nil
	})
}
