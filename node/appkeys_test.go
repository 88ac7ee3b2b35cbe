package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
)

// Every per-app key must reach the part that enforces it. Each case below
// gives one app a non-default value of one key, and proves from outside
// (real WebSocket clients, signed REST, NATS, the app's stream) that the
// value is enforced; TestAppKeysHaveCases fails when app.App gains a key
// without a case here, so a key that node forgets to pass on cannot go
// unnoticed.

// keyApp is one app of the key test: its config, and the node it runs on.
type keyApp struct {
	n *Node
	a app.App
}

func (k keyApp) url() string {
	return "ws://" + k.n.Addr().String() + "/app/" + k.a.Key + "?protocol=7"
}

func (k keyApp) dial(t *testing.T) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctxT(t), k.url(), client.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", k.a.ID, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (k keyApp) rest() *client.REST {
	return &client.REST{BaseURL: "http://" + k.n.Addr().String(), AppID: k.a.ID, Key: k.a.Key, Secret: k.a.Secret}
}

// trigger publishes and returns the REST status.
func (k keyApp) trigger(t *testing.T, p client.TriggerParams) int {
	t.Helper()
	status, _, err := k.rest().Trigger(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// subscribePrivate subscribes c to a private or presence channel with a
// valid signature.
func (k keyApp) subscribePrivate(t *testing.T, c *client.Conn, ch, channelData string) (client.Event, error) {
	t.Helper()
	return c.SubscribeAuth(ctxT(t), ch, client.SignChannel(k.a.Key, k.a.Secret, c.SocketID(), ch, channelData), channelData)
}

// closeCode dials and returns the close code the server ends the
// connection with (0 if it stays open for 3 s).
func (k keyApp) closeCode(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, k.url(), client.Options{})
	if err == nil {
		defer c.Close()
		for err == nil {
			_, err = c.Next(ctx)
		}
	}
	var ce *client.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// publishBody is a valid REST events body.
var publishBody = []byte(`{"name":"e","channels":["a"],"data":"d"}`)

type keyCase struct {
	key   string // the key under apps[], as in configs/herald.example.yaml
	set   func(*app.App)
	check func(*testing.T, keyApp)
}

var keyCases = []keyCase{
	{"id", nil, func(t *testing.T, k keyApp) {
		if s := k.trigger(t, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}); s != 200 {
			t.Fatalf("publish as %s: %d", k.a.ID, s)
		}
	}},
	{"key", nil, func(t *testing.T, k keyApp) { k.dial(t) }},
	{"secret", nil, func(t *testing.T, k keyApp) {
		r := k.rest()
		r.Secret = "not-the-secret"
		if s, _, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}); err != nil || s != 401 {
			t.Fatalf("wrong secret: %d %v", s, err)
		}
	}},
	// The rotation with reloads is node/reload_test.go's.
	{"previous_secrets", func(a *app.App) { a.PreviousSecrets = []string{"retired"} }, func(t *testing.T, k keyApp) {
		r := k.rest()
		r.Secret = "retired"
		if s, _, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}}); err != nil || s != 200 {
			t.Fatalf("REST with a previous secret: %d %v", s, err)
		}
		c := k.dial(t)
		if _, err := c.SubscribeAuth(ctxT(t), "private-p", client.SignChannel(k.a.Key, "retired", c.SocketID(), "private-p", ""), ""); err != nil {
			t.Fatalf("channel auth with a previous secret: %v", err)
		}
		natsPublishAs("", "retired")(t, k)
	}},
	{"enabled", func(a *app.App) { a.Enabled = new(bool) }, func(t *testing.T, k keyApp) {
		if code := k.closeCode(t); code != 4003 {
			t.Fatalf("disabled app: close %d, want 4003", code)
		}
	}},
	{"client_events", func(a *app.App) { a.ClientEvents = true }, func(t *testing.T, k keyApp) {
		c1, c2 := k.dial(t), k.dial(t)
		for _, c := range []*client.Conn{c1, c2} {
			if _, err := k.subscribePrivate(t, c, "private-ce", ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := c1.Send("client-typing", "private-ce", map[string]bool{"on": true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.WaitFor(ctxT(t), "client-typing", "private-ce"); err != nil {
			t.Fatalf("client event not relayed: %v", err)
		}
	}},
	{"max_connections", func(a *app.App) { a.MaxConnections = 1 }, func(t *testing.T, k keyApp) {
		k.dial(t)
		if code := k.closeCode(t); code != 4004 {
			t.Fatalf("second connection: close %d, want 4004", code)
		}
	}},
	{"max_event_data_bytes", func(a *app.App) { a.MaxEventDataBytes = 16 }, func(t *testing.T, k keyApp) {
		if s := k.trigger(t, client.TriggerParams{Name: "e", Data: strings.Repeat("x", 17), Channels: []string{"a"}}); s != 413 {
			t.Fatalf("17 bytes of data: %d, want 413", s)
		}
	}},
	{"max_channels_per_event", func(a *app.App) { a.MaxChannelsPerEvent = 2 }, func(t *testing.T, k keyApp) {
		if s := k.trigger(t, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a", "b", "c"}}); s < 400 {
			t.Fatalf("3 channels: %d", s)
		}
	}},
	{"max_batch_size", func(a *app.App) { a.MaxBatchSize = 1 }, func(t *testing.T, k keyApp) {
		items := []client.BatchItem{{Name: "e", Data: "d", Channel: "a"}, {Name: "e", Data: "d", Channel: "b"}}
		if s, _, err := k.rest().TriggerBatch(ctxT(t), items); err != nil || s < 400 {
			t.Fatalf("batch of 2: %d %v", s, err)
		}
	}},
	{"max_event_name_length", func(a *app.App) { a.MaxEventNameLength = 5 }, func(t *testing.T, k keyApp) {
		if s := k.trigger(t, client.TriggerParams{Name: "abcdef", Data: "d", Channels: []string{"a"}}); s < 400 {
			t.Fatalf("6-character name: %d", s)
		}
	}},
	{"max_channel_name_length", func(a *app.App) { a.MaxChannelNameLength = 8 }, func(t *testing.T, k keyApp) {
		if err := k.dial(t).Subscribe(ctxT(t), "abcdefghi"); err == nil {
			t.Fatal("9-character channel accepted")
		}
		if s := k.trigger(t, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"abcdefghi"}}); s < 400 {
			t.Fatalf("REST to a 9-character channel: %d", s)
		}
	}},
	{"subscription_error_mode", func(a *app.App) { a.SubscriptionErrorMode = app.SubscriptionErrorsSoketi }, func(t *testing.T, k keyApp) {
		ev, err := k.dial(t).SubscribeAuth(ctxT(t), "private-x", k.a.Key+":bad", "")
		if err == nil || ev.Event != client.EventSubscriptionError {
			t.Fatalf("bad auth answered %q (%v), want pusher:subscription_error", ev.Event, err)
		}
	}},
	{"subscription_count", func(a *app.App) { a.SubscriptionCount = true }, func(t *testing.T, k keyApp) {
		c := k.dial(t)
		if err := c.Subscribe(ctxT(t), "counted"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitFor(ctxT(t), "pusher_internal:subscription_count", "counted"); err != nil {
			t.Fatalf("no subscription_count: %v", err)
		}
	}},
	{"max_presence_members", func(a *app.App) { a.MaxPresenceMembers = 1 }, func(t *testing.T, k keyApp) {
		if _, err := k.subscribePrivate(t, k.dial(t), "presence-room", `{"user_id":"a"}`); err != nil {
			t.Fatal(err)
		}
		if _, err := k.subscribePrivate(t, k.dial(t), "presence-room", `{"user_id":"b"}`); err == nil {
			t.Fatal("second member accepted")
		}
	}},
	{"max_presence_user_info_bytes", func(a *app.App) { a.MaxPresenceUserInfoBytes = 10 }, func(t *testing.T, k keyApp) {
		if _, err := k.subscribePrivate(t, k.dial(t), "presence-info", `{"user_id":"a","user_info":{"name":"abcdefghijk"}}`); err == nil {
			t.Fatal("user_info over the limit accepted")
		}
	}},
	{"client_event_rate", func(a *app.App) { a.ClientEvents, a.ClientEventRate = true, 1 }, func(t *testing.T, k keyApp) {
		c := k.dial(t)
		if _, err := k.subscribePrivate(t, c, "private-rate", ""); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := c.Send("client-e", "private-rate", map[string]int{}); err != nil {
				t.Fatal(err)
			}
		}
		ev, err := c.WaitFor(ctxT(t), client.EventError, "")
		if err != nil || !strings.Contains(ev.Data, "4301") {
			t.Fatalf("no 4301 after 3 client events at rate 1: %+v %v", ev, err)
		}
	}},
	{"user_authentication", func(a *app.App) { a.UserAuthentication = true }, func(t *testing.T, k keyApp) {
		if code := k.closeCode(t); code != 4009 {
			t.Fatalf("connection that never signs in: close %d, want 4009", code)
		}
	}},
	{"allowed_origins", func(a *app.App) { a.AllowedOrigins = []string{"https://*.example.com"} }, func(t *testing.T, k keyApp) {
		k.dial(t) // no Origin header: a server client
		withOrigin := func(o string) (*client.Conn, error) {
			return client.Dial(ctxT(t), k.url(), client.Options{Header: http.Header{"Origin": {o}}})
		}
		c, err := withOrigin("https://app.example.com")
		if err != nil {
			t.Fatalf("listed origin: %v", err)
		}
		c.Close()
		before := k.n.limitRefusals()["origin"]
		var ce *client.CloseError
		if _, err := withOrigin("https://evil.test"); !errors.As(err, &ce) || ce.Code != 4009 {
			t.Fatalf("origin not listed: %v, want 4009", err)
		}
		if got := k.n.limitRefusals()["origin"]; got != before+1 {
			t.Fatalf("herald_limit_refusals_total{limit=origin} %d, want %d", got, before+1)
		}
	}},
	{"max_channels_per_connection", func(a *app.App) { a.MaxChannelsPerConnection = 2 }, func(t *testing.T, k keyApp) {
		c := k.dial(t)
		for _, ch := range []string{"m1", "m2"} {
			if err := c.Subscribe(ctxT(t), ch); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Subscribe(ctxT(t), "m3"); err == nil || !strings.Contains(err.Error(), "at most 2 channels") {
			t.Fatalf("third channel: %v", err)
		}
	}},
	{"subscribe_rate", func(a *app.App) { a.SubscribeRate = 2 }, func(t *testing.T, k keyApp) {
		// A new socket's burst is max_channels_per_connection (1000)
		// messages; the churn after it is held to the rate.
		c := k.dial(t)
		for range 505 {
			for _, ev := range []string{"subscribe", "unsubscribe"} {
				if err := c.SendRaw(fmt.Appendf(nil, `{"event":"pusher:%s","data":{"channel":"s"}}`, ev)); err != nil {
					t.Fatal(err)
				}
			}
		}
		ev, err := c.WaitFor(ctxT(t), client.EventError, "")
		if err != nil || !strings.Contains(ev.Data, "4303") {
			t.Fatalf("no 4303 after 1010 subscribe and unsubscribe messages at rate 2: %+v %v", ev, err)
		}
	}},
	{"max_concurrent_rest_requests", func(a *app.App) { a.MaxConcurrentRESTRequests = 1 }, func(t *testing.T, k keyApp) {
		// 32 publishes at once against a limit of one: some overlap and
		// are answered 429, the rest 200.
		for round := 0; ; round++ {
			statuses := make(chan int, 32)
			for range 32 {
				go func() {
					s, _, _ := k.rest().Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"a"}})
					statuses <- s
				}()
			}
			refused := 0
			for range 32 {
				switch s := <-statuses; s {
				case 429:
					refused++
				case 200:
				default:
					t.Fatalf("status %d", s)
				}
			}
			if refused > 0 {
				return
			}
			if round == 20 {
				t.Fatal("no 429 from 20 rounds of 32 concurrent publishes at a limit of one")
			}
		}
	}},
	{"replay_max_age", func(a *app.App) { a.ReplayMaxAge = app.Duration(7 * time.Second) }, func(t *testing.T, k keyApp) {
		if c := streamConfig(t, k); c.MaxAge != 7*time.Second {
			t.Fatalf("stream max age %v, want 7s", c.MaxAge)
		}
	}},
	{"replay_max_msgs_per_channel", func(a *app.App) { a.ReplayMaxMsgsPerChannel = 3 }, func(t *testing.T, k keyApp) {
		if c := streamConfig(t, k); c.MaxMsgsPerSubject != 3 {
			t.Fatalf("stream max msgs per channel %d, want 3", c.MaxMsgsPerSubject)
		}
	}},
	{"nats.user", func(a *app.App) { a.NATS.User = "k-backend" }, natsPublishAs("k-backend", "")},
	{"nats.password", func(a *app.App) { a.NATS.Password = "p4ss" }, natsPublishAs("", "p4ss")},
	{"nats.nkey", func(a *app.App) { a.NATS.Nkey = keyNkeyPub }, func(t *testing.T, k keyApp) {
		nc, err := nats.Connect(k.n.NATSURL(), nats.Nkey(keyNkeyPub, keyNkey.Sign),
			nats.CustomInboxPrefix(bus.InboxPrefix(k.a.ID)), nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if got := request(t, nc, bus.APISubject(k.a.ID, bus.APIEvents), publishBody); string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
	}},
}

var keyNkey, keyNkeyPub = func() (nkeys.KeyPair, string) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		panic(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}()

// natsPublishAs checks that the app's NATS user (user, or the app id) with
// its password (password, or the app secret) may publish.
func natsPublishAs(user, password string) func(*testing.T, keyApp) {
	return func(t *testing.T, k keyApp) {
		if user == "" {
			user = k.a.ID
		}
		if password == "" {
			password = k.a.Secret
		}
		nc, _ := natsConn(t, k.n, user, password, k.a.ID)
		if got := request(t, nc, bus.APISubject(k.a.ID, bus.APIEvents), publishBody); string(got) != "{}" {
			t.Fatalf("answer %s", got)
		}
	}
}

type streamLimits struct {
	MaxAge            time.Duration
	MaxMsgsPerSubject int64
}

func streamConfig(t *testing.T, k keyApp) streamLimits {
	t.Helper()
	s, err := k.n.Bus().JetStream().Stream(ctxT(t), bus.StreamName(k.a.ID))
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	return streamLimits{c.MaxAge, c.MaxMsgsPerSubject}
}

// TestAppKeysAreEnforced runs every case against one node that has one app
// per case, each differing from the defaults in its case's key only.
func TestAppKeysAreEnforced(t *testing.T) {
	defer func(d time.Duration) { userAuthTimeout = d }(userAuthTimeout)
	userAuthTimeout = 300 * time.Millisecond
	apps := make([]app.App, len(keyCases))
	for i, kc := range keyCases {
		id := fmt.Sprintf("k%d", i)
		apps[i] = app.New(id, id+"-key", id+"-secret")
		if kc.set != nil {
			kc.set(&apps[i])
		}
	}
	n := startNode(t, func(c *configs.Config) { c.Apps = apps })
	for i, kc := range keyCases {
		t.Run(kc.key, func(t *testing.T) { kc.check(t, keyApp{n: n, a: apps[i]}) })
	}
}

// TestAppKeysHaveCases: every key of app.App has a case above.
func TestAppKeysHaveCases(t *testing.T) {
	var have []string
	for _, kc := range keyCases {
		have = append(have, kc.key)
	}
	for _, key := range yamlKeys(reflect.TypeFor[app.App](), "") {
		if !slices.Contains(have, key) {
			t.Errorf("apps[].%s has no case in keyCases: add one that proves it is enforced", key)
		}
	}
}

// yamlKeys lists the leaf keys of a struct's yaml tags, nested with ".".
func yamlKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, yamlKeys(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}
