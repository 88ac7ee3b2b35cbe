package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/internal/testkit"
	"herald/protocol"
)

// edge is a gateway with a real embedded bus behind a real fasthttp server on
// a loopback port.
type edge struct {
	g    *Gateway
	bus  *bus.Bus
	addr string
	app  *app.App // app-id as the edge started; change it with setApp
}

// setApp changes app-id for connections made from now on, as a reload
// would: the registry gets a new table.
func (e *edge) setApp(fn func(*app.App)) {
	e.app = replaceApp(e.g.cfg.Apps, fn)
}

// withApp changes app-id before the edge starts.
func withApp(fn func(*app.App)) func(*Config) {
	return func(c *Config) { replaceApp(c.Apps, fn) }
}

// replaceApp swaps a copy of r's apps into r with fn applied to app-id and
// returns the new app-id.
func replaceApp(r *app.Registry, fn func(*app.App)) *app.App {
	all := r.Table().All()
	list := make([]app.App, len(all))
	for i, a := range all {
		list[i] = *a
		if a.ID == "app-id" {
			fn(&list[i])
		}
	}
	r.Replace(list)
	a, _ := r.ByID("app-id")
	return a
}

func (e *edge) url(key string) string {
	return "ws://" + e.addr + "/app/" + key + "?protocol=7&client=go&version=1.0.0"
}

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) {
	if floorReader() { // this process is BenchmarkLoopbackFloor's reader
		return
	}
	testkit.Main(m)
}

// viaFasthttp makes startEdge serve every socket the way fasthttp hands
// it over (ServeUpgrade and its hijack) instead of the pollers' own accept;
// tests that set it must not run in parallel.
var viaFasthttp bool

func startEdge(t testing.TB, mutate func(*Config)) *edge {
	t.Helper()
	return startEdgeWith(t, mutate, nil)
}

// startEdgeWith is startEdge with the bus config adjustable too. The bus
// starts first, so mutate sees (and may change) the gateway's dependencies.
func startEdgeWith(t testing.TB, mutate func(*Config), mutateBus func(*bus.Config)) *edge {
	t.Helper()
	base := testkit.Goroutines()
	off := app.New("off", "off-key", "s")
	off.Enabled = new(bool)
	apps := app.NewRegistry([]app.App{app.New("app-id", "app-key", "app-secret"), off})
	bcfg := bus.Config{DataDir: t.TempDir(), StreamEnabled: true, MaxAge: time.Minute,
		MaxMsgsPerChannel: 1000, Apps: []string{"app-id"}, Shards: 2}
	if mutateBus != nil {
		mutateBus(&bcfg)
	}
	b, err := bus.Start(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Apps:            apps,
		ActivityTimeout: 120 * time.Second,
		PongTimeout:     30 * time.Second,
		MaxMessageBytes: 32 << 10,
		WriteQueueBytes: 1 << 20,
		Pollers:         2,
		Bus:             b,
		Shards:          b.Shards(),
		Publisher:       b,
		Cache:           b,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		_ = b.Close()
		t.Fatal(err)
	}
	if err := b.StartDelivery(g); err != nil {
		g.Close()
		_ = b.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Idle fasthttp workers expire fast, so goroutine counts show what the
	// edge itself holds.
	handler := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/healthz" { // a stand-in for the REST API sharing the port
			ctx.SetBodyString("ok")
			return
		}
		g.ServeUpgrade(ctx)
	}
	srv := &fasthttp.Server{Handler: handler, KeepHijackedConns: true, MaxIdleWorkerDuration: 100 * time.Millisecond}
	if viaFasthttp {
		go srv.Serve(ln)
	} else {
		// The pollers accept and upgrade (accept.go); what they hand over
		// is served by fasthttp, as on a node.
		gl, err := g.Listen(ln)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(gl)
		ln = gl
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		g.Close()
		_ = b.Close()
		base.Check(t, 10*time.Second)
	})
	a, _ := cfg.Apps.ByID("app-id")
	return &edge{g: g, bus: b, addr: ln.Addr().String(), app: a}
}

func dial(t *testing.T, url string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, e *edge, channel, event, data, exclude string) uint64 {
	t.Helper()
	seq, err := e.bus.Publish(ctx5(t), bus.Publication{App: "app-id", Channel: channel,
		Payload: protocol.AppendEvent(nil, event, channel, data, ""), Exclude: exclude})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestConnectionEstablished(t *testing.T) {
	e := startEdge(t, nil)
	c := dial(t, e.url("app-key"))
	if !protocol.ValidSocketID(c.SocketID()) {
		t.Fatalf("socket id %q", c.SocketID())
	}
	if c.ActivityTimeout() != 120*time.Second {
		t.Fatalf("activity timeout %v", c.ActivityTimeout())
	}
	c2 := dial(t, e.url("app-key"))
	if c2.SocketID() == c.SocketID() {
		t.Fatal("socket ids repeat")
	}
}

func TestRefusedConnections(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.RequireProtocol = true })
	e.setApp(func(a *app.App) { a.MaxConnections = 1 })
	keep := dial(t, e.url("app-key"))
	_ = keep
	base := "ws://" + e.addr
	cases := []struct {
		name string
		url  string
		code int
	}{
		{"unknown key", base + "/app/nope?protocol=7", protocol.CodeAppNotFound},
		{"disabled app", base + "/app/off-key?protocol=7", protocol.CodeAppDisabled},
		{"protocol 3", base + "/app/app-key?protocol=3", protocol.CodeUnsupportedProtocol},
		{"protocol 8", base + "/app/app-key?protocol=8", protocol.CodeUnsupportedProtocol},
		{"no protocol in strict mode", base + "/app/app-key", protocol.CodeNoProtocol},
		{"bad version", base + "/app/app-key?protocol=7&version=<script>", protocol.CodeInvalidVersion},
		{"bad path", base + "/socket/app-key?protocol=7", protocol.CodePathNotFound},
		{"over quota", base + "/app/app-key?protocol=7", protocol.CodeOverQuota},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Dial(ctx5(t), tc.url, client.Options{})
			var ce *client.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("got %v, want close code %d", err, tc.code)
			}
		})
	}
}

func TestPingPong(t *testing.T) {
	e := startEdge(t, nil)
	c := dial(t, e.url("app-key"))
	if err := c.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	ev, err := c.WaitFor(ctx5(t), "pusher:pong", "")
	if err != nil || ev.Data != "{}" {
		t.Fatalf("pong %+v %v", ev, err)
	}
	// data as a string, as other client libraries send it
	_ = c.SendRaw([]byte(`{"event":"pusher:ping","data":"{}"}`))
	if _, err := c.WaitFor(ctx5(t), "pusher:pong", ""); err != nil {
		t.Fatal(err)
	}
}

func TestSilentClientIsProbedThenClosed(t *testing.T) {
	e := startEdge(t, func(c *Config) {
		c.ActivityTimeout = time.Second
		c.PongTimeout = time.Second
	})
	polite := dial(t, e.url("app-key"))
	silent := dial(t, e.url("app-key"))
	silent.SetAutoPong(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := silent.WaitFor(ctx, "pusher:ping", ""); err != nil {
		t.Fatalf("no probe: %v", err)
	}
	var ce *client.CloseError
	for {
		_, err := silent.Next(ctx)
		if err != nil {
			if !errors.As(err, &ce) || ce.Code != protocol.CodePongTimeout {
				t.Fatalf("silent client ended with %v, want close 4201", err)
			}
			break
		}
	}
	// The client that answers probes is still there.
	_ = polite.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`))
	if _, err := polite.WaitFor(ctx, "pusher:pong", ""); err != nil {
		t.Fatalf("polite client lost: %v", err)
	}
}

func TestSubscribeAndDeliver(t *testing.T) {
	e := startEdge(t, nil)
	a := dial(t, e.url("app-key"))
	b := dial(t, e.url("app-key"))
	channels := []string{"my-channel", "private-App.Models.User.1", "orders.42", "a_b-c=d@e,f.g;h"}
	for _, ch := range channels {
		for _, c := range []*client.Conn{a, b} {
			var err error
			if strings.HasPrefix(ch, "private-") {
				_, err = c.SubscribeAuth(ctx5(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, ""), "")
			} else {
				err = c.Subscribe(ctx5(t), ch)
			}
			if err != nil {
				t.Fatalf("subscribe %s: %v", ch, err)
			}
		}
	}
	for _, ch := range channels {
		seq := publish(t, e, ch, "my-event", `{"n":1}`, a.SocketID())
		publish(t, e, ch, "barrier", "x", "")
		ev, err := b.WaitFor(ctx5(t), "my-event", ch)
		if err != nil || ev.Data != `{"n":1}` || ev.Serial != seq {
			t.Fatalf("%s: b got %+v, %v (serial want %d)", ch, ev, err, seq)
		}
		// a was excluded: its next event is the barrier.
		ev, err = a.Next(ctx5(t))
		if err != nil || ev.Event != "barrier" || ev.Channel != ch {
			t.Fatalf("%s: excluded socket got %+v, %v", ch, ev, err)
		}
	}
	if n := e.g.SubscriptionCount(e.app.ID, "orders.42"); n != 2 {
		t.Fatalf("subscription count %d", n)
	}
	if err := a.Unsubscribe("orders.42"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "orders.42"); n != 1 {
			return fmt.Errorf("count %d", n)
		}
		return nil
	})
}

func TestSubscriptionErrors(t *testing.T) {
	e := startEdge(t, nil)
	e.setApp(func(a *app.App) { a.ClientEvents = true })
	c := dial(t, e.url("app-key"))
	if err := c.Subscribe(ctx5(t), "dup"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		frame string
		want  string
	}{
		{"duplicate", `{"event":"pusher:subscribe","data":{"channel":"dup"}}`, "Existing subscription to channel dup"},
		{"not subscribed", `{"event":"pusher:unsubscribe","data":{"channel":"nope"}}`, "No current subscription to channel nope"},
		{"bad name", `{"event":"pusher:subscribe","data":{"channel":"bad name"}}`, "Invalid channel name"},
		{"private without auth", `{"event":"pusher:subscribe","data":{"channel":"private-x"}}`, "Invalid signature"},
		{"private with another key", `{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"other:abc"}}`, "Invalid key in subscription auth data"},
		{"invalid JSON", `{"event":`, "Invalid message"},
		{"client event on a public channel", `{"event":"client-x","channel":"dup","data":{}}`, "only allowed on private and presence"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.SendRaw([]byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			ev, err := c.WaitFor(ctx5(t), "pusher:error", "")
			if err != nil || !strings.Contains(ev.Data, tc.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", ev, err, tc.want)
			}
		})
	}
	// The connection survived all of it.
	if err := c.Subscribe(ctx5(t), "still-alive"); err != nil {
		t.Fatal(err)
	}
}

func TestProtocolViolationsCloseOnlyThatSocket(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.MaxMessageBytes = 1024 })
	bystander := dial(t, e.url("app-key"))
	if err := bystander.Subscribe(ctx5(t), "room"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		send func(c *client.Conn) error
		code int
	}{
		{"too big", func(c *client.Conn) error { return c.SendFrame(0x1, true, make([]byte, 2000)) }, 1009},
		{"invalid UTF-8", func(c *client.Conn) error { return c.SendFrame(0x1, true, []byte{0xff}) }, 1007},
		{"reserved opcode", func(c *client.Conn) error { return c.SendFrame(0x3, true, []byte("x")) }, 1002},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.url("app-key"))
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			var ce *client.CloseError
			for {
				_, err := c.Next(ctx5(t))
				if err != nil {
					if !errors.As(err, &ce) || ce.Code != tc.code {
						t.Fatalf("closed with %v, want %d", err, tc.code)
					}
					break
				}
			}
		})
	}
	publish(t, e, "room", "still", "here", "")
	if _, err := bystander.WaitFor(ctx5(t), "still", "room"); err != nil {
		t.Fatalf("bystander lost: %v", err)
	}
}

func TestFragmentedMessage(t *testing.T) {
	e := startEdge(t, nil)
	c := dial(t, e.url("app-key"))
	msg := []byte(`{"event":"pusher:subscribe","data":{"channel":"frag"}}`)
	_ = c.SendFrame(0x1, false, msg[:10])
	_ = c.SendFrame(0x9, true, []byte("ping")) // control frame between fragments
	_ = c.SendFrame(0x0, false, msg[10:20])
	_ = c.SendFrame(0x0, true, msg[20:])
	if _, err := c.WaitFor(ctx5(t), "pusher_internal:subscription_succeeded", "frag"); err != nil {
		t.Fatal(err)
	}
}

func TestSlowConsumerIsClosed(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.WriteQueueBytes = 64 << 10 })
	fast := dial(t, e.url("app-key"))
	if err := fast.Subscribe(ctx5(t), "firehose"); err != nil {
		t.Fatal(err)
	}
	// A raw socket that subscribes and then never reads.
	slow, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	sub := clientFrame(true, 0x1, []byte(`{"event":"pusher:subscribe","data":{"channel":"firehose"}}`))
	if _, err := slow.Write(append([]byte(req), sub...)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "firehose"); n != 2 {
			return fmt.Errorf("%d subscribers", n)
		}
		return nil
	})
	data := strings.Repeat("x", 8000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The publisher stays at most keepUp events ahead of the reader that
	// keeps up, so that it does keep up however fast the node delivers
	// (its pollers write in parallel) and however slowly this process
	// reads; the socket that never reads falls behind all the same.
	var read atomic.Int64
	go func() {
		for ctx.Err() == nil {
			if _, err := fast.Next(ctx); err != nil {
				return
			}
			read.Add(1)
		}
	}()
	const keepUp = 200
	for i := 0; e.g.Stats().SlowConsumers == 0; i++ {
		if ctx.Err() != nil || i > 20000 {
			t.Fatalf("no slow-consumer close after %d events", i)
		}
		for int64(i*20)-read.Load() > keepUp && ctx.Err() == nil && e.g.Stats().SlowConsumers == 0 {
			time.Sleep(time.Millisecond)
		}
		ps := make([]bus.Publication, 20)
		for j := range ps {
			ps[j] = bus.Publication{App: "app-id", Channel: "firehose", Payload: protocol.AppendEvent(nil, "e", "firehose", data, "")}
		}
		if _, err := e.bus.PublishBatch(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "firehose"); n != 1 {
			return fmt.Errorf("%d subscribers (%+v)", n, e.g.Stats())
		}
		return nil
	})
}

// TestNoGoroutinePerConnection holds 2,000 connections, each subscribed to a
// channel, and checks the goroutine count did not grow with them.
func TestNoGoroutinePerConnection(t *testing.T) {
	e := startEdge(t, nil)
	const n = 2000
	// Raw sockets: the Go test client itself has a goroutine per connection.
	req := "GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		sub := clientFrame(true, 0x1, fmt.Appendf(nil, `{"event":"pusher:subscribe","data":{"channel":"c%d"}}`, i%50))
		if _, err := c.Write(append([]byte(req), sub...)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 20*time.Second, func() error {
		if s := e.g.Stats(); s.Connections != n {
			return fmt.Errorf("%d connections", s.Connections)
		}
		total := 0
		for i := range 50 {
			total += e.g.SubscriptionCount(e.app.ID, fmt.Sprintf("c%d", i))
		}
		if total != n {
			return fmt.Errorf("%d subscriptions", total)
		}
		return nil
	})
	// fasthttp's hijack goroutines and idle workers wind down; what is left
	// must not scale with the connections.
	testkit.WaitFor(t, 15*time.Second, func() error {
		if g := runtime.NumGoroutine(); g > before+60 {
			return fmt.Errorf("%d goroutines with %d connections, %d before", g, n, before)
		}
		return nil
	})
	t.Logf("goroutines: %d before, %d with %d subscribed connections", before, runtime.NumGoroutine(), n)
}
