package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"herald/admin"
	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
	"herald/webhook"
)

// TestWebhooksFromSockets: client events and a cache miss from real
// WebSocket clients reach a real HTTP receiver as signed client_event and
// cache_miss webhooks, with the sender's socket id, the presence user id
// and the data as the client sent it; the admin API reports the receiver.
func TestWebhooksFromSockets(t *testing.T) {
	var mu sync.Mutex
	var got []webhook.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Pusher-Signature") != webhook.Sign(configs.DevAppSecret, body) || r.Header.Get("X-Pusher-Key") != configs.DevAppKey {
			t.Errorf("bad signature or key: %v", r.Header)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var b struct{ Events []webhook.Event }
		if err := json.Unmarshal(body, &b); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		mu.Lock()
		got = append(got, b.Events...)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	n := startNode(t, func(c *configs.Config) {
		c.Apps[0].Webhooks = []app.Webhook{{URL: srv.URL + "/pusher", EventTypes: []string{app.WebhookClientEvent, app.WebhookCacheMiss}}}
	})

	a, b := dialNode(t, n), dialNode(t, n)
	joinRoom(t, a, "presence-wh", "ann")
	joinRoom(t, b, "presence-wh", "bob")
	priv := "private-wh"
	if _, err := a.SubscribeAuth(ctxT(t), priv, client.SignChannel(configs.DevAppKey, configs.DevAppSecret, a.SocketID(), priv, ""), ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Send("client-typing", "presence-wh", map[string]any{"user": "ann"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send("client-note", priv, "just text"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitFor(ctxT(t), "client-typing", "presence-wh"); err != nil { // relayed as well
		t.Fatal(err)
	}
	if err := b.Subscribe(ctxT(t), "cache-wh"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitFor(ctxT(t), "pusher:cache_miss", "cache-wh"); err != nil {
		t.Fatal(err)
	}

	byName := map[string]webhook.Event{}
	testkit.WaitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range got {
			byName[ev.Name+" "+ev.Channel] = ev
		}
		if len(byName) < 3 {
			return fmt.Errorf("webhooks so far: %+v", got)
		}
		return nil
	})
	typing := byName["client_event presence-wh"]
	if typing.Event != "client-typing" || typing.Data != `{"user":"ann"}` || typing.SocketID != a.SocketID() || typing.UserID != "ann" || typing.ID == "" {
		t.Fatalf("presence client_event %+v", typing)
	}
	note := byName["client_event "+priv]
	if note.Event != "client-note" || note.Data != "just text" || note.SocketID != a.SocketID() || note.UserID != "" {
		t.Fatalf("private client_event %+v", note)
	}
	if miss := byName["cache_miss cache-wh"]; miss.ID == "" {
		t.Fatalf("cache_miss %+v", miss)
	}

	var st webhook.Status
	cl := &admin.Client{URL: n.AdminURL()}
	testkit.WaitFor(t, 5*time.Second, func() error {
		st = webhook.Status{}
		if err := cl.Get(ctxT(t), "/webhooks/status", &st); err != nil {
			return err
		}
		if len(st.Webhooks) != 1 || st.Webhooks[0].Sent != 3 || st.Backlog != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// keyHook receives the webhooks of the apps[].webhooks key case.
var keyHook struct {
	once sync.Once
	srv  *httptest.Server
	mu   sync.Mutex
	keys map[string]bool // X-Pusher-Key + " " + channel of every cache_miss
}

func keyHookURL() string {
	keyHook.once.Do(func() {
		keyHook.keys = map[string]bool{}
		keyHook.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			var b struct{ Events []webhook.Event }
			_ = json.Unmarshal(body, &b)
			keyHook.mu.Lock()
			for _, ev := range b.Events {
				keyHook.keys[r.Header.Get("X-Pusher-Key")+" "+ev.Channel] = true
			}
			keyHook.mu.Unlock()
		}))
	})
	return keyHook.srv.URL
}

// The apps[].webhooks case of TestAppKeysAreEnforced: the app's webhook
// gets a cache_miss of its own channel, signed with its own key.
func init() {
	keyCases = append(keyCases, keyCase{"webhooks", func(a *app.App) {
		a.Webhooks = []app.Webhook{{URL: keyHookURL(), EventTypes: []string{app.WebhookCacheMiss}}}
	}, func(t *testing.T, k keyApp) {
		t.Cleanup(keyHook.srv.Close)
		c := k.dial(t)
		if err := c.Subscribe(ctxT(t), "cache-key-hook"); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 10*time.Second, func() error {
			keyHook.mu.Lock()
			defer keyHook.mu.Unlock()
			if !keyHook.keys[k.a.Key+" cache-key-hook"] {
				return fmt.Errorf("no cache_miss webhook for %s yet: %v", k.a.Key, keyHook.keys)
			}
			return nil
		})
	}})
}
