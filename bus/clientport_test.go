package bus

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestParseAPISubject(t *testing.T) {
	cases := []struct {
		subj     string
		app      string
		endpoint string
		ok       bool
	}{
		{subj: "herald.app-id.api.events", app: "app-id", endpoint: "events", ok: true},
		{subj: "herald.a_1.api.batch_events", app: "a_1", endpoint: "batch_events", ok: true},
		{subj: APISubject("x", APIEvents), app: "x", endpoint: "events", ok: true},
		{subj: "herald.app.api.", ok: false},
		{subj: "herald.app.api.events.more", ok: false},
		{subj: "herald.app.live.events", ok: false},
		{subj: "herald..api.events", ok: false},
		{subj: "other.app.api.events", ok: false},
		{subj: "herald", ok: false},
	}
	for _, tc := range cases {
		app, ep, ok := ParseAPISubject(tc.subj)
		if app != tc.app || ep != tc.endpoint || ok != tc.ok {
			t.Errorf("ParseAPISubject(%q) = %q, %q, %v; want %q, %q, %v", tc.subj, app, ep, ok, tc.app, tc.endpoint, tc.ok)
		}
	}
	if got := APIWildcard(APIBatchEvents); got != "herald.*.api.batch_events" {
		t.Errorf("APIWildcard = %q", got)
	}
	if got := InboxPrefix("app-id"); got != "_INBOX.app-id" {
		t.Errorf("InboxPrefix = %q", got)
	}
}

func TestClientPermissions(t *testing.T) {
	p := ClientPermissions("a1", false)
	for _, s := range []string{"herald.a1.api.events", "herald.a1.api.batch_events", "$JS.API.STREAM.INFO.HERALD_a1", "$JS.API.DIRECT.GET.HERALD_a1"} {
		if !slices.Contains(p.Publish.Allow, s) {
			t.Errorf("publish allow lacks %s: %v", s, p.Publish.Allow)
		}
	}
	for _, s := range p.Publish.Allow {
		if !strings.Contains(s, ".a1.") && !strings.Contains(s, "HERALD_a1") {
			t.Errorf("publish allow %s is not fenced to the app", s)
		}
	}
	if want := []string{"herald.a1.live.>", "herald.a1.presence.>", "_INBOX.a1.>"}; !slices.Equal(p.Subscribe.Allow, want) {
		t.Errorf("subscribe allow %v, want %v", p.Subscribe.Allow, want)
	}
	if p := ClientPermissions("a1", true); !slices.Contains(p.Subscribe.Allow, "_INBOX.>") {
		t.Errorf("shared inbox: subscribe allow %v", p.Subscribe.Allow)
	}
}

func TestClientListenOptions(t *testing.T) {
	cfg := testConfig(t)
	if o := serverOptions(cfg); !o.DontListen || o.Users != nil {
		t.Fatalf("no client port: DontListen %v, users %v", o.DontListen, o.Users)
	}
	cfg.ClientListen = "127.0.0.1:0"
	cfg.ClientUsers = []ClientUser{{App: "app1", User: "u", Password: "p", Nkey: "UNKEY"}}
	cfg.internalPassword = "secret"
	o := serverOptions(cfg)
	if o.DontListen || o.Host != "127.0.0.1" || o.Port != server.RANDOM_PORT {
		t.Fatalf("client port: DontListen %v host %q port %d", o.DontListen, o.Host, o.Port)
	}
	auth, ok := o.CustomClientAuthentication.(*clientAuth)
	if !ok || o.Users != nil || o.Nkeys != nil || !o.AlwaysEnableNonce {
		t.Fatalf("auth %T, users %+v, nkeys %+v", o.CustomClientAuthentication, o.Users, o.Nkeys)
	}
	if perms, app, ok := auth.authorize(internalUser, "secret", "", nil); !ok || perms != nil || app != "" {
		t.Fatalf("internal user: %v %q %v", perms, app, ok)
	}
	if perms, app, ok := auth.authorize("u", "p", "", nil); !ok || perms == nil || app != "app1" {
		t.Fatalf("app user: %v %q %v", perms, app, ok)
	}
	if perms, app, ok := auth.authorize("", "", "UNKEY", nil); !ok || perms == nil || app != "app1" {
		t.Fatalf("app nkey: %v %q %v", perms, app, ok)
	}
	for _, bad := range [][3]string{{internalUser, "p", ""}, {"u", "secret", ""}, {"u", "", ""}, {"", "", "UOTHER"}, {"", "p", ""}} {
		if _, _, ok := auth.authorize(bad[0], bad[1], bad[2], nil); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestCheckClientPort(t *testing.T) {
	cases := []struct {
		name   string
		listen string
		users  []ClientUser
		want   string
	}{
		{name: "no port", listen: "127.0.0.1", want: "invalid client listen address"},
		{name: "port range", listen: "127.0.0.1:70000", want: "port must be"},
		{name: "bad app", listen: "127.0.0.1:0", users: []ClientUser{{App: "a.b", User: "u"}}, want: "invalid app id"},
		{name: "no credentials", listen: "127.0.0.1:0", users: []ClientUser{{App: "a"}}, want: "neither user nor nkey"},
		{name: "reserved user", listen: "127.0.0.1:0", users: []ClientUser{{App: "a", User: internalUser}}, want: "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ClientListen, cfg.ClientUsers = tc.listen, tc.users
			if _, err := startWithSink(cfg, &recSink{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestClientPort runs a bus with a client port: the node's own connection
// still does everything, an app user reads its live events.
func TestClientPort(t *testing.T) {
	cfg := testConfig(t)
	cfg.ClientListen = "127.0.0.1:0"
	cfg.ClientUsers = []ClientUser{{App: "app1", User: "u1", Password: "p1"}}
	sink := &recSink{}
	b := startBus(t, cfg, sink)
	url := b.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL %q", url)
	}

	if _, err := nats.Connect(url, nats.UserInfo("u1", "nope"), nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v", err)
	}
	nc, err := nats.Connect(url, nats.UserInfo("u1", "p1"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	live, err := nc.SubscribeSync(LiveSubject("app1", "c.1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	b.Subscribe("app1", "c.1")
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	serial, err := b.Publish(context.Background(), Publication{App: "app1", Channel: "c.1", Payload: []byte(`{"event":"e"}`), Exclude: "1.2"})
	if err != nil || serial == 0 {
		t.Fatalf("publish: %d %v", serial, err)
	}
	if got := sink.waitCount(t, "c.1", 1); got[0].Serial != serial {
		t.Fatalf("sink got %+v", got)
	}
	m, err := live.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Sequence") == "" || m.Header.Get(HeaderExclude) != "1.2" || string(m.Data) != `{"event":"e"}` {
		t.Fatalf("live message %q %v", m.Data, m.Header)
	}
}

func TestClientURLWithoutPort(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	if u := b.ClientURL(); u != "" {
		t.Fatalf("ClientURL %q without a client port", u)
	}
}
