package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// natsErrors collects a connection's asynchronous errors (permission
// violations arrive there).
type natsErrors struct {
	mu   sync.Mutex
	errs []error
}

func (e *natsErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
}

// waitFor polls until an error containing want arrived.
func (e *natsErrors) waitFor(t *testing.T, want string) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, err := range e.errs {
			if strings.Contains(err.Error(), want) {
				return nil
			}
		}
		return fmt.Errorf("no async error containing %q; got %v", want, e.errs)
	})
}

// natsConn connects to n's client port as user with the app's inbox prefix
// (appID) and closes the connection when the test ends.
func natsConn(t *testing.T, n *Node, user, password, appID string, opts ...nats.Option) (*nats.Conn, *natsErrors) {
	t.Helper()
	errs := &natsErrors{}
	opts = append([]nats.Option{
		nats.UserInfo(user, password),
		nats.CustomInboxPrefix(bus.InboxPrefix(appID)),
		nats.ErrorHandler(errs.handler),
		nats.NoReconnect(),
	}, opts...)
	nc, err := nats.Connect(n.NATSURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func dialWS(t *testing.T, n *Node, channels ...string) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, ch := range channels {
		if err := c.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func request(t *testing.T, nc *nats.Conn, subject string, body []byte) []byte {
	t.Helper()
	m, err := nc.RequestWithContext(ctxT(t), subject, body)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return m.Data
}

// TestNATSPublishReachesSubscribers is the end-to-end proof: a plain nats.go
// publisher reaches a Pusher WebSocket subscriber through both API subjects,
// as a request and fire-and-forget, with serials and socket_id exclusion.
func TestNATSPublishReachesSubscribers(t *testing.T) {
	n := startNode(t, nil)
	if !strings.HasPrefix(n.NATSURL(), "nats://127.0.0.1:") {
		t.Fatalf("NATSURL %q", n.NATSURL())
	}
	ws := dialWS(t, n, "orders.42", "b")
	other := dialWS(t, n, "orders.42")
	nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")

	// Request: answered once stored, delivered with a serial.
	got := request(t, nc, "herald.app-id.api.events",
		[]byte(`{"name":"App\\Events\\OrderShipped","channels":["orders.42"],"data":"{\"id\":42}"}`))
	if string(got) != "{}" {
		t.Fatalf("answer %s", got)
	}
	ev, err := ws.WaitFor(ctxT(t), `App\Events\OrderShipped`, "orders.42")
	if err != nil || ev.Data != `{"id":42}` || ev.Serial == 0 {
		t.Fatalf("event %+v %v", ev, err)
	}
	first := ev.Serial

	// Batch: stored in order, serials increasing.
	got = request(t, nc, "herald.app-id.api.batch_events",
		[]byte(`{"batch":[{"name":"one","channel":"orders.42","data":"1"},{"name":"two","channel":"b","data":"2"}]}`))
	if string(got) != "{}" {
		t.Fatalf("batch answer %s", got)
	}
	one, err := ws.WaitFor(ctxT(t), "one", "orders.42")
	if err != nil || one.Serial <= first {
		t.Fatalf("batch one %+v %v (first serial %d)", one, err, first)
	}
	if two, err := ws.WaitFor(ctxT(t), "two", "b"); err != nil || two.Data != "2" || two.Serial <= one.Serial {
		t.Fatalf("batch two %+v %v", two, err)
	}

	// socket_id exclusion: the excluded socket skips the event.
	body := fmt.Sprintf(`{"name":"excl","channels":["orders.42"],"data":"x","socket_id":%q}`, ws.SocketID())
	if got := request(t, nc, "herald.app-id.api.events", []byte(body)); string(got) != "{}" {
		t.Fatalf("exclusion answer %s", got)
	}
	if ev, err := other.WaitFor(ctxT(t), "excl", "orders.42"); err != nil {
		t.Fatalf("other socket: %+v %v", ev, err)
	}

	// Fire-and-forget: no reply subject, still delivered.
	if err := nc.Publish("herald.app-id.api.events", []byte(`{"name":"ff","channels":["orders.42"],"data":"fire"}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ev, err = ws.Next(ctxT(t)) // "excl" must not come before it
	if err != nil || ev.Event != "ff" || ev.Data != "fire" || ev.Serial == 0 {
		t.Fatalf("after the excluded event, got %+v %v; want the fire-and-forget event", ev, err)
	}

	// A message is counted after its publish returns, which may be after
	// the event reached the socket: poll.
	testkit.WaitFor(t, 5*time.Second, func() error {
		resp, err := http.Get("http://" + n.Addr().String() + "/metrics")
		if err != nil {
			return err
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`herald_nats_api_requests_total{endpoint="events",status="200"} 3`,
			`herald_nats_api_requests_total{endpoint="batch_events",status="200"} 1`,
			"herald_nats_api_queued 0",
			"herald_nats_api_dropped_total 0",
		} {
			if !strings.Contains(string(metrics), want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
}

// TestNATSAnswersMatchREST sends the same bodies through REST and NATS and
// wants byte-identical answers.
func TestNATSAnswersMatchREST(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		off := app.New("off", "off-key", "off-secret")
		f := false
		off.Enabled = &f
		c.Apps = append(c.Apps, off)
	})
	dialWS(t, n, "a")
	nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")
	offNC, _ := natsConn(t, n, "off", "off-secret", "off")

	big := strings.Repeat("x", 10241)
	chans := make([]string, 101)
	for i := range chans {
		chans[i] = fmt.Sprintf("%q", fmt.Sprintf("c%d", i))
	}
	items := make([]string, 11)
	for i := range items {
		items[i] = `{"name":"e","channel":"a","data":"d"}`
	}
	cases := []struct {
		name     string
		endpoint string
		app      string
		body     string
		status   int
	}{
		{"ok", "events", "app-id", `{"name":"e","channels":["a"],"data":"d"}`, 200},
		{"info", "events", "app-id", `{"name":"e","channels":["a","b"],"data":"d","info":"subscription_count"}`, 200},
		{"info user_count", "events", "app-id", `{"name":"e","channels":["presence-room"],"data":"d","info":"subscription_count,user_count"}`, 200},
		{"data too large", "events", "app-id", `{"name":"e","channels":["a"],"data":"` + big + `"}`, 413},
		{"data at the limit", "events", "app-id", `{"name":"e","channels":["a"],"data":"` + big[:10240] + `"}`, 200},
		{"101 channels", "events", "app-id", `{"name":"e","channels":[` + strings.Join(chans, ",") + `],"data":"d"}`, 400},
		{"bad channel", "events", "app-id", `{"name":"e","channels":["a b"],"data":"d"}`, 400},
		{"long name", "events", "app-id", `{"name":"` + strings.Repeat("n", 201) + `","channels":["a"],"data":"d"}`, 400},
		{"bad socket id", "events", "app-id", `{"name":"e","channels":["a"],"data":"d","socket_id":"1.2.3"}`, 400},
		{"not json", "events", "app-id", `{"name":`, 400},
		{"empty body", "events", "app-id", ``, 400},
		{"disabled app", "events", "off", `{"name":"e","channels":["a"],"data":"d"}`, 403},
		{"batch ok", "batch_events", "app-id", `{"batch":[{"name":"e","channel":"a","data":"1"},{"name":"e","channel":"b","data":"2"}]}`, 200},
		{"batch info", "batch_events", "app-id", `{"batch":[{"name":"e","channel":"a","data":"1","info":"subscription_count"},{"name":"e","channel":"b","data":"2"}]}`, 200},
		{"batch 11 items", "batch_events", "app-id", `{"batch":[` + strings.Join(items, ",") + `]}`, 400},
		{"batch bad channel", "batch_events", "app-id", `{"batch":[{"name":"e","channel":"a b","data":"1"}]}`, 400},
		{"batch data too large", "batch_events", "app-id", `{"batch":[{"name":"e","channel":"a","data":"` + big + `"}]}`, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, conn := rest(n), nc
			if tc.app == "off" {
				r = &client.REST{BaseURL: r.BaseURL, AppID: "off", Key: "off-key", Secret: "off-secret"}
				conn = offNC
			}
			status, want, err := r.Do(ctxT(t), "POST", "/apps/"+tc.app+"/"+tc.endpoint, nil, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status {
				t.Fatalf("REST status %d, want %d: %s", status, tc.status, want)
			}
			got := request(t, conn, "herald."+tc.app+".api."+tc.endpoint, []byte(tc.body))
			if !bytes.Equal(got, want) {
				t.Fatalf("NATS answer differs from REST:\nnats %s\nrest %s", got, want)
			}
		})
	}
}

// TestNATSUnknownApp: only a user allowed everywhere (the node's own
// connection) can reach an app that does not exist; the answer is REST's.
func TestNATSUnknownApp(t *testing.T) {
	n := startNode(t, nil)
	status, want, err := rest(n).Do(ctxT(t), "POST", "/apps/nope/events", nil, []byte(`{"name":"e","channels":["a"],"data":"d"}`))
	if err != nil || status != 404 {
		t.Fatalf("REST: %d %s %v", status, want, err)
	}
	got := request(t, n.Bus().Conn(), "herald.nope.api.events", []byte(`{"name":"e","channels":["a"],"data":"d"}`))
	if !bytes.Equal(got, want) {
		t.Fatalf("nats %s, rest %s", got, want)
	}
}

// TestNATSCredentials: passwords, the default credentials, a configured
// user, and nkeys.
func TestNATSCredentials(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	n := startNode(t, func(c *configs.Config) {
		shop := app.New("shop", "shop-key", "shop-secret")
		shop.NATS = app.NATS{User: "shop-backend", Password: "s3cret", Nkey: pub}
		c.Apps = append(c.Apps, shop)
	})
	body := []byte(`{"name":"e","channels":["a"],"data":"d"}`)

	t.Run("wrong password", func(t *testing.T) {
		_, err := nats.Connect(n.NATSURL(), nats.UserInfo("app-id", "wrong"), nats.NoReconnect())
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect with a wrong password: %v", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := nats.Connect(n.NATSURL(), nats.NoReconnect())
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect without credentials: %v", err)
		}
	})
	t.Run("default user is not kept when a user is configured", func(t *testing.T) {
		_, err := nats.Connect(n.NATSURL(), nats.UserInfo("shop", "shop-secret"), nats.NoReconnect())
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect as the app id: %v", err)
		}
	})
	t.Run("configured user", func(t *testing.T) {
		nc, _ := natsConn(t, n, "shop-backend", "s3cret", "shop")
		if got := request(t, nc, "herald.shop.api.events", body); string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
	})
	t.Run("nkey", func(t *testing.T) {
		nc, err := nats.Connect(n.NATSURL(), nats.Nkey(pub, kp.Sign),
			nats.CustomInboxPrefix(bus.InboxPrefix("shop")), nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if got := request(t, nc, "herald.shop.api.events", body); string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
	})
	t.Run("unknown nkey", func(t *testing.T) {
		other, _ := nkeys.CreateUser()
		opub, _ := other.PublicKey()
		_, err := nats.Connect(n.NATSURL(), nats.Nkey(opub, other.Sign), nats.NoReconnect())
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect with an unknown nkey: %v", err)
		}
	})
}

// TestNATSPermissions: an app's user is fenced to its own subjects.
func TestNATSPermissions(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		c.Apps = append(c.Apps, app.New("other", "other-key", "other-secret"))
	})
	otherWS, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/other-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer otherWS.Close()
	if err := otherWS.Subscribe(ctxT(t), "a"); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"name":"e","channels":["a"],"data":"d"}`)

	t.Run("publish to another app's API", func(t *testing.T) {
		nc, errs := natsConn(t, n, "app-id", "app-secret", "app-id")
		if _, err := nc.Request("herald.other.api.events", body, 300*time.Millisecond); err == nil {
			t.Fatal("request to another app's subject was answered")
		}
		errs.waitFor(t, `Permissions Violation for Publish to "herald.other.api.events"`)
		// Nothing was published for the other app.
		rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if ev, err := otherWS.Next(rctx); err == nil {
			t.Fatalf("the other app got %+v", ev)
		}
	})
	t.Run("publish to stored or live subjects", func(t *testing.T) {
		nc, errs := natsConn(t, n, "app-id", "app-secret", "app-id")
		_ = nc.Publish(bus.StoredSubject("app-id", "a"), body)
		_ = nc.Publish(bus.LiveSubject("app-id", "a"), body)
		_ = nc.Flush()
		errs.waitFor(t, `Permissions Violation for Publish to "herald.app-id.msg.a"`)
		errs.waitFor(t, `Permissions Violation for Publish to "herald.app-id.live.a"`)
	})
	external := n.Bus().Mode() == bus.ModeExternal // one account there: the operator's permissions fence apps
	if external {
		t.Run("subscribe to another app's events", func(t *testing.T) {
			nc, errs := natsConn(t, n, "app-id", "app-secret", "app-id")
			if _, err := nc.SubscribeSync("herald.other.live.>"); err != nil {
				t.Fatal(err)
			}
			errs.waitFor(t, `Permissions Violation for Subscription to "herald.other.live.>"`)
		})
		t.Run("subscribe to another app's inbox", func(t *testing.T) {
			nc, errs := natsConn(t, n, "app-id", "app-secret", "app-id")
			if _, err := nc.SubscribeSync("_INBOX.other.>"); err != nil {
				t.Fatal(err)
			}
			errs.waitFor(t, `Permissions Violation for Subscription to "_INBOX.other.>"`)
		})
	}
	t.Run("read another app's stream", func(t *testing.T) {
		nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if _, err := js.Stream(ctx, bus.StreamName("other")); err == nil {
			t.Fatal("stream info of another app's stream answered")
		}
	})
	t.Run("default inbox prefix", func(t *testing.T) {
		errs := &natsErrors{}
		nc, err := nats.Connect(n.NATSURL(), nats.UserInfo("app-id", "app-secret"), nats.ErrorHandler(errs.handler), nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_, err = nc.Request("herald.app-id.api.events", body, 2*time.Second)
		if external {
			// One account: the operator's grants keep _INBOX.> from app users.
			if err == nil {
				t.Fatal("a reply reached the shared _INBOX")
			}
			errs.waitFor(t, `Permissions Violation for Subscription to "_INBOX.`)
			return
		}
		if err != nil { // the app's own account: its default inboxes are its own (TestNATSAccounts)
			t.Fatalf("request with the default inbox prefix: %v", err)
		}
	})
}

// TestNATSSharedInbox: with bus.client_shared_inbox, the default inbox
// prefix works (the nats CLI case). Embedded, the key is obsolete (every
// app has its own account) and still loads.
func TestNATSSharedInbox(t *testing.T) {
	n := startNode(t, func(c *configs.Config) { c.Bus.ClientSharedInbox = true })
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo("app-id", "app-secret"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := request(t, nc, "herald.app-id.api.events", []byte(`{"name":"e","channels":["a"],"data":"d"}`)); string(got) != "{}" {
		t.Fatalf("answer %s", got)
	}
}

// TestNATSReadEvents: an app's credentials read its events live (with the
// serial in Nats-Sequence and the exclusion header) and from its stream,
// through an ordered consumer and direct gets.
func TestNATSReadEvents(t *testing.T) {
	n := startNode(t, nil)
	const channel = "App.Models.User.1" // '.' is escaped in subject tokens
	ws := dialWS(t, n, channel)
	nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")
	live, err := nc.SubscribeSync("herald.app-id.live.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		body := fmt.Sprintf(`{"name":"e%d","channels":[%q],"data":"d%d","socket_id":"1.%d"}`, i, channel, i, i)
		if got := request(t, nc, "herald.app-id.api.events", []byte(body)); string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
	}
	// The WebSocket subscriber's serials are what NATS consumers see.
	var serials []uint64
	for i := range 3 {
		ev, err := ws.WaitFor(ctxT(t), fmt.Sprintf("e%d", i), channel)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, ev.Serial)
	}

	// Live: the token encodes '.', headers carry the serial and exclusion.
	for i := range 3 {
		m, err := live.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "herald.app-id.live.App%2EModels%2EUser%2E1" {
			t.Fatalf("live subject %q", m.Subject)
		}
		if seq := m.Header.Get("Nats-Sequence"); seq != fmt.Sprint(serials[i]) {
			t.Fatalf("live %d: Nats-Sequence %q, want %d", i, seq, serials[i])
		}
		if ex := m.Header.Get(bus.HeaderExclude); ex != fmt.Sprintf("1.%d", i) {
			t.Fatalf("live %d: %s %q", i, bus.HeaderExclude, ex)
		}
		if !strings.Contains(string(m.Data), fmt.Sprintf(`"event":"e%d"`, i)) {
			t.Fatalf("live %d payload %s", i, m.Data)
		}
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctxT(t), bus.StreamName("app-id"))
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	stored := bus.StoredSubject("app-id", channel)

	// Ordered consumer from the second event on.
	cons, err := stream.OrderedConsumer(ctxT(t), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stored},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    serials[1],
	})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, md.Sequence.Stream)
	}
	if batch.Error() != nil || fmt.Sprint(got) != fmt.Sprint(serials[1:]) {
		t.Fatalf("ordered consumer got %v (%v), want %v", got, batch.Error(), serials[1:])
	}

	// Direct gets: by sequence and last by subject.
	m, err := stream.GetMsg(ctxT(t), serials[0])
	if err != nil || m.Subject != stored || !strings.Contains(string(m.Data), `"event":"e0"`) {
		t.Fatalf("get %d: %+v %v", serials[0], m, err)
	}
	last, err := stream.GetLastMsgForSubject(ctxT(t), stored)
	if err != nil || last.Sequence != serials[2] {
		t.Fatalf("last for subject: %+v %v", last, err)
	}
}

// TestNATSClientPortOff: bus.client_listen "" leaves the node in-process only.
func TestNATSClientPortOff(t *testing.T) {
	n := startNode(t, func(c *configs.Config) { c.Bus.ClientListen = "" })
	if n.NATSURL() != "" {
		t.Fatalf("NATSURL %q with the client port off", n.NATSURL())
	}
	if status, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}); err != nil || status != 200 {
		t.Fatalf("REST with the client port off: %d %s %v", status, body, err)
	}
}

// TestNATSClientPortTaken fails the start at once, naming the address.
func TestNATSClientPortTaken(t *testing.T) {
	first := startNode(t, nil)
	cfg := configs.Loopback(t.TempDir())
	cfg.Bus.ClientListen = strings.TrimPrefix(first.NATSURL(), "nats://")
	start := time.Now()
	if _, err := Start(cfg, quiet); err == nil || !strings.Contains(err.Error(), "client listen") ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("client port taken: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failing took %v", d)
	}
}
