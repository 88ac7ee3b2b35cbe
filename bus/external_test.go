package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"herald/internal/testkit"
)

// External mode tests run plain nats-servers (the server Go module, as an
// operator would run nats-server) in this process, with JetStream on, and a
// Bus that connects to them instead of embedding one.

const (
	extUser     = "herald"
	extPassword = "herald-secret"
)

// startNATSServer starts a plain nats-server on a random loopback port (or
// opts.Port) with JetStream storing in a temp dir and one user, extUser,
// holding exactly NodePermissions. mutate may change the options first. It
// is shut down at cleanup (shutting it down earlier is fine).
func startNATSServer(t testing.TB, mutate func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "external",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoSigs:     true,
		NoLog:      true,
		Users:      []*server.User{{Username: extUser, Password: extPassword, Permissions: NodePermissions("")}},
	}
	if mutate != nil {
		mutate(opts)
	}
	return runNATSServer(t, opts)
}

// runNATSServer starts a server with opts and shuts it down at cleanup.
func runNATSServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("server %s not ready", opts.ServerName)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// externalConfig is a Bus config in external mode against urls, as extUser.
func externalConfig(t testing.TB, urls ...string) Config {
	cfg := testConfig(t)
	cfg.DataDir = ""
	cfg.Mode = ModeExternal
	cfg.URLs = urls
	cfg.User, cfg.Password = extUser, extPassword
	cfg.ReadyTimeout = 20 * time.Second
	return cfg
}

// logRecorder is a slog handler that keeps every record's level and message.
type logRecorder struct {
	mu   sync.Mutex
	recs []string // "LEVEL message"
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Level.String()+" "+rec.Message)
	r.mu.Unlock()
	return nil
}

// waitLogged waits until a record starting with prefix was logged.
func (r *logRecorder) waitLogged(t testing.TB, prefix string) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.recs {
			if strings.HasPrefix(s, prefix) {
				return nil
			}
		}
		return fmt.Errorf("no log record %q in %q", prefix, r.recs)
	})
}

func TestModeConfigErrors(t *testing.T) {
	ext := func(mut func(*Config)) Config {
		cfg := externalConfig(t, "nats://127.0.0.1:1")
		mut(&cfg)
		return cfg
	}
	leaf := func(mut func(*Config)) Config {
		cfg := testConfig(t)
		cfg.Mode, cfg.LeafRemotes, cfg.JetStreamDomain = ModeLeaf, []string{"nats-leaf://127.0.0.1:1"}, "region"
		mut(&cfg)
		return cfg
	}
	emb := func(mut func(*Config)) Config {
		cfg := testConfig(t)
		mut(&cfg)
		return cfg
	}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown mode", emb(func(c *Config) { c.Mode = "remote" }), `unknown mode "remote"`},
		{"embedded with URLs", emb(func(c *Config) { c.URLs = []string{"nats://a:4222"} }), "for external or leaf mode"},
		{"embedded with replicas", emb(func(c *Config) { c.Replicas = 3 }), "for external or leaf mode"},
		{"external without URLs", ext(func(c *Config) { c.URLs = nil }), "at least one URL"},
		{"external bad scheme", ext(func(c *Config) { c.URLs = []string{"http://a:4222"} }), "scheme must be one of"},
		{"external no host", ext(func(c *Config) { c.URLs = []string{"nats://:4222"} }), "is not a URL"},
		{"credentials and user", ext(func(c *Config) { c.Credentials = "/x.creds" }), "not both"},
		{"password without user", ext(func(c *Config) { c.User = "" }), "Password without User"},
		{"replicas over 5", ext(func(c *Config) { c.Replicas = 6 }), "Replicas 6"},
		{"external client port", ext(func(c *Config) { c.ClientListen = "127.0.0.1:0" }), "no client port"},
		{"external cluster", ext(func(c *Config) { c.Cluster.Listen = "127.0.0.1:6222" }), "no NATS routes"},
		{"external sync always", ext(func(c *Config) { c.SyncAlways = true }), "SyncAlways"},
		{"external leaf remotes", ext(func(c *Config) { c.LeafRemotes = []string{"nats://a:7422"} }), "LeafRemotes are for leaf mode"},
		{"bad domain", ext(func(c *Config) { c.JetStreamDomain = "a.b" }), "JetStreamDomain"},
		{"leaf without domain", leaf(func(c *Config) { c.JetStreamDomain = "" }), "needs a JetStreamDomain"},
		{"leaf without remotes", leaf(func(c *Config) { c.LeafRemotes = nil }), "LeafRemotes: at least one URL"},
		{"leaf with URLs", leaf(func(c *Config) { c.URLs = []string{"nats://a:4222"} }), "URLs are for external mode"},
		{"leaf with replicas", leaf(func(c *Config) { c.Replicas = 3 }), "Replicas is for external mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := startWithSink(tc.cfg, &recSink{})
			if err == nil {
				b.Close()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, ErrModeConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrModeConfig containing %q", err, tc.want)
			}
		})
	}
}

// TestExternalPublishAndDeliver: streams are created on the external server
// with the configured replicas, publishes get serials, live subscriptions and
// cache channels work, all through the node's one connection.
func TestExternalPublishAndDeliver(t *testing.T) {
	srv := startNATSServer(t, nil)
	sink := &recSink{}
	b := startBus(t, externalConfig(t, srv.ClientURL()), sink)
	if b.Server() != nil || b.Mode() != ModeExternal || !b.Connected() {
		t.Fatalf("Server %v, Mode %q, Connected %v", b.Server(), b.Mode(), b.Connected())
	}
	if got := b.ClientURL(); got != srv.ClientURL() {
		t.Fatalf("ClientURL %q, want %q", got, srv.ClientURL())
	}
	if ci := b.ClusterInfo(); !ci.Ready() {
		t.Fatalf("ClusterInfo %+v not ready", ci)
	}

	// The streams exist on the external server, R1 (the default).
	for _, name := range []string{StreamName("app1"), CacheStreamName("app1")} {
		st, err := b.JetStream().Stream(ctxT(t), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 1 {
			t.Fatalf("stream %s: %d replicas", name, r)
		}
	}
	if jsz, err := srv.Jsz(nil); err != nil || jsz.Streams != 2 {
		t.Fatalf("external server has %d streams (%v), want 2", jsz.Streams, err)
	}

	b.Subscribe("app1", "orders.42")
	flush(t, b)
	s1 := publish(t, b, "app1", "orders.42", "one", "")
	s2 := publish(t, b, "app1", "orders.42", "two", "sock.1")
	got := sink.waitCount(t, "orders.42", 2)
	if got[0].Serial != s1 || got[1].Serial != s2 || got[1].PrevSerial != s1 || got[1].Exclude != "sock.1" {
		t.Fatalf("delivered %+v, serials %d %d", got, s1, s2)
	}

	// Cache channels: the last event comes back from the external stream.
	s3 := publish(t, b, "app1", "cache-prices", `{"p":1}`, "")
	e, ok, err := b.LastEvent(ctxT(t), "app1", "cache-prices")
	if err != nil || !ok || e.Serial != s3 || string(e.Payload) != `{"p":1}` {
		t.Fatalf("LastEvent = %s %d %v %v", e.Payload, e.Serial, ok, err)
	}

	// A second app, not in cfg.Apps, is created on first use.
	if _, err := b.Publish(ctxT(t), Publication{App: "app2", Channel: "c", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().Stream(ctxT(t), StreamName("app2")); err != nil {
		t.Fatal(err)
	}
}

func TestExternalStartFailures(t *testing.T) {
	srv := startNATSServer(t, nil)
	noJS := startNATSServer(t, func(o *server.Options) { o.JetStream = false })
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong password", func() Config {
			c := externalConfig(t, srv.ClientURL())
			c.Password = "wrong"
			return c
		}(), "Authorization Violation"},
		{"nobody listening", externalConfig(t, "nats://127.0.0.1:1"), "connect to external NATS"},
		{"no JetStream", externalConfig(t, noJS.ClientURL()), "turn JetStream on"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := startWithSink(tc.cfg, &recSink{})
			if err == nil {
				b.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}

	// With streams off no JetStream is needed: live delivery is core NATS.
	cfg := externalConfig(t, noJS.ClientURL())
	cfg.StreamEnabled = false
	sink := &recSink{}
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "c")
	flush(t, b)
	if s := publish(t, b, "app1", "c", "core", ""); s != 0 {
		t.Fatalf("serial %d with streams off", s)
	}
	sink.waitCount(t, "c", 1)
}

// TestExternalReconnect: the external server goes away and comes back. The
// bus alarms, reports itself disconnected, fails publishes at once, and
// reconnects on its own; afterwards live subscriptions made before the loss
// deliver again. Then the server comes back with an empty store, as if its
// JetStream state were lost: the next publish recreates the streams.
func TestExternalReconnect(t *testing.T) {
	port := testkit.FreePort(t)
	store := t.TempDir()
	srv := startNATSServer(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	logs := &logRecorder{}
	cfg := externalConfig(t, srv.ClientURL())
	cfg.Logger = slog.New(logs)
	sink := &recSink{}
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "x")
	flush(t, b)
	s1 := publish(t, b, "app1", "x", "before", "")
	sink.waitCount(t, "x", 1)

	stop := func(s *server.Server) {
		s.Shutdown()
		s.WaitForShutdown()
		testkit.WaitFor(t, 5*time.Second, func() error {
			if b.Connected() {
				return errors.New("still connected")
			}
			return nil
		})
	}
	reconnected := func(n uint64) {
		testkit.WaitFor(t, 10*time.Second, func() error {
			if b.Reconnects() != n || !b.Connected() {
				return fmt.Errorf("reconnects %d, connected %v", b.Reconnects(), b.Connected())
			}
			return nil
		})
	}

	stop(srv)
	logs.waitLogged(t, "ERROR bus: lost the connection to NATS")
	if ci := b.ClusterInfo(); ci.Ready() {
		t.Fatalf("ClusterInfo %+v ready while disconnected", ci)
	}
	began := time.Now()
	if _, err := b.Publish(ctxT(t), Publication{App: "app1", Channel: "x", Payload: []byte("refused")}); err == nil {
		t.Fatal("publish succeeded while disconnected")
	} else if time.Since(began) > time.Second {
		t.Fatalf("publish took %s to fail while disconnected: %v", time.Since(began), err)
	}

	srv = startNATSServer(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	reconnected(1)
	logs.waitLogged(t, "WARN bus: reconnected to NATS")
	s2 := publish(t, b, "app1", "x", "after", "")
	got := sink.waitCount(t, "x", 2)
	if string(got[1].Payload) != "after" || got[1].Serial != s2 || s2 != s1+1 {
		t.Fatalf("after reconnect delivered %+v (serials %d, %d): the refused publish must not have been stored", got[1], s1, s2)
	}

	stop(srv)
	startNATSServer(t, func(o *server.Options) { o.Port = port }) // an empty store
	reconnected(2)
	var s3 uint64
	testkit.WaitFor(t, 10*time.Second, func() error {
		var err error
		s3, err = b.Publish(ctxT(t), Publication{App: "app1", Channel: "x", Payload: []byte("recreated")})
		return err
	})
	if s3 != 1 {
		t.Fatalf("first serial in the recreated stream: %d", s3)
	}
	// The cache stream comes back at the app's next cache channel
	// (publish.go ensureCacheKnown).
	publish(t, b, "app1", "cache-x", "cached", "")
	for _, name := range []string{StreamName("app1"), CacheStreamName("app1")} {
		if _, err := b.JetStream().Stream(ctxT(t), name); err != nil {
			t.Fatalf("stream %s not recreated: %v", name, err)
		}
	}
	// Whether the recreated stream's serial 1 reaches the Sink is the
	// duplicate check's business (gapfill.go): it drops serials at or below
	// the last one delivered on the subscription.
}

// TestExternalReplicas: against a 3-server JetStream cluster the streams get
// the configured 3 replicas, and losing the server the node is connected to
// costs a reconnect, not the node: publishing and delivery go on.
func TestExternalReplicas(t *testing.T) {
	ports := testkit.FreePorts(t, 3)
	routes := make([]string, 3)
	for i, p := range ports {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(p)
	}
	srvs := make([]*server.Server, 3)
	var wg sync.WaitGroup
	for i := range srvs {
		opts := &server.Options{
			ServerName: fmt.Sprintf("ext-%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "company", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
			Users:      []*server.User{{Username: extUser, Password: extPassword, Permissions: NodePermissions("")}},
		}
		wg.Go(func() { srvs[i] = runNATSServer(t, opts) })
	}
	wg.Wait()
	urls := make([]string, 3)
	for i, s := range srvs {
		urls[i] = s.ClientURL()
	}
	cfg := externalConfig(t, urls...)
	cfg.Replicas = 3
	sink := &recSink{}
	b := startBus(t, cfg, sink)
	for _, name := range []string{StreamName("app1"), CacheStreamName("app1")} {
		st, err := b.JetStream().Stream(ctxT(t), name)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Config.Duplicates == 0 && name == StreamName("app1") {
			t.Fatalf("stream %s: replicas %d, duplicates %s", name, info.Config.Replicas, info.Config.Duplicates)
		}
	}
	b.Subscribe("app1", "c")
	flush(t, b)
	publish(t, b, "app1", "c", "1", "")
	sink.waitCount(t, "c", 1)

	connected := b.Conn().ConnectedServerName()
	for _, s := range srvs {
		if s.Name() == connected {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	testkit.WaitFor(t, 15*time.Second, func() error {
		if b.Reconnects() != 1 || !b.Connected() {
			return fmt.Errorf("reconnects %d, connected %v", b.Reconnects(), b.Connected())
		}
		return nil
	})
	if b.Conn().ConnectedServerName() == connected {
		t.Fatalf("still on %s", connected)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: []byte("2")}); err != nil {
		t.Fatalf("publish after losing %s: %v", connected, err)
	}
	if got := sink.waitCount(t, "c", 2); string(got[1].Payload) != "2" {
		t.Fatalf("delivered %+v", got)
	}
}
