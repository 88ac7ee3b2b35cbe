package node

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// Leaf mode end to end: a hub nats-server (child process, JetStream in
// domain "hub", a leaf node port) and a Herald node whose embedded server
// is its leaf. "Delivers between a leaf node and its hub" means, and is
// checked as:
//
//	(a) a backend connected to the hub requests herald.<app>.api.events;
//	    the leaf node answers it and delivers to its WebSocket subscriber;
//	(b) a subscriber on the hub to herald.<app>.live.> sees the events
//	    published through the leaf's REST API, with their serials;
//	(c) the streams stay in the leaf's JetStream: the hub's own JetStream
//	    has none, the hub reaches the leaf's as domain "region-1".

const (
	hubBackend  = "backend"
	hubPassword = "backend-secret"
	hubLeafUser = "region-1"
	hubLeafPass = "region-1-secret"
)

// hubConf is the hub's config: JetStream in domain "hub", an unrestricted
// backend user, and leaf connections as hubLeafUser.
func hubConf(t *testing.T) string {
	return fmt.Sprintf(`listen: "127.0.0.1:-1"
server_name: hub
jetstream {
  store_dir: %q
  domain: hub
}
authorization {
  users: [
    {user: %q, password: %q}
  ]
}
leafnodes {
  listen: "127.0.0.1:-1"
  authorization {
    user: %q
    password: %q
  }
}
`, t.TempDir(), hubBackend, hubPassword, hubLeafUser, hubLeafPass)
}

func TestLeafNodeAndHub(t *testing.T) {
	hub := startNATSChild(t, hubConf(t))
	n := startNode(t, func(c *configs.Config) {
		c.Bus.Mode = configs.BusLeaf
		c.Bus.LeafRemotes = []string{hub.leafURL}
		c.Bus.User, c.Bus.Password = hubLeafUser, hubLeafPass
		c.Bus.JetStreamDomain = "region-1"
	})
	if n.Bus().Mode() != bus.ModeLeaf || n.Bus().Server() == nil || n.nats == nil {
		t.Fatalf("mode %q, server %v, nats api %v", n.Bus().Mode(), n.Bus().Server(), n.nats)
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if c := n.Bus().LeafConnections(); c != 1 {
			return fmt.Errorf("%d leaf connections", c)
		}
		return nil
	})
	backend, err := nats.Connect(hub.url, nats.UserInfo(hubBackend, hubPassword), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backend.Close)
	ws := dialWS(t, n, "orders.42")

	t.Run("(a) hub backend request answered by the leaf", func(t *testing.T) {
		body := []byte(`{"name":"shipped","channels":["orders.42"],"data":"{\"id\":42}"}`)
		var answer *nats.Msg
		// Until the leaf's queue subscription is known on the hub, a
		// request finds no responders (and is not handled anywhere).
		testkit.WaitFor(t, 10*time.Second, func() error {
			var err error
			answer, err = backend.RequestWithContext(ctxT(t), "herald.app-id.api.events", body)
			if errors.Is(err, nats.ErrNoResponders) {
				return err
			}
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			return nil
		})
		if string(answer.Data) != "{}" {
			t.Fatalf("answer %s", answer.Data)
		}
		ev, err := ws.WaitFor(ctxT(t), "shipped", "orders.42")
		if err != nil || ev.Serial == 0 || ev.Data != `{"id":42}` {
			t.Fatalf("event %+v %v", ev, err)
		}
	})

	t.Run("(b) hub subscriber sees the leaf's REST events", func(t *testing.T) {
		live := make(chan *nats.Msg, 256)
		if _, err := backend.ChanSubscribe("herald.app-id.live.>", live); err != nil {
			t.Fatal(err)
		}
		if err := backend.Flush(); err != nil {
			t.Fatal(err)
		}
		r := rest(n)
		trigger := func(name, ch string) {
			t.Helper()
			if status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: name, Data: "x", Channels: []string{ch}}); err != nil || status != 200 {
				t.Fatalf("trigger: %d %s %v", status, body, err)
			}
		}
		// The hub's interest reaches the leaf a moment after the
		// subscription: probe until one arrives.
		testkit.WaitFor(t, 10*time.Second, func() error {
			trigger("probe", "probe")
			select {
			case <-live:
				return nil
			case <-time.After(50 * time.Millisecond):
				return errors.New("no probe seen on the hub")
			}
		})
		trigger("rest-event", "orders.42")
		ev, err := ws.WaitFor(ctxT(t), "rest-event", "orders.42")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-live:
				if m.Subject != "herald.app-id.live.orders%2E42" {
					continue // a late probe
				}
				if m.Header.Get("Nats-Sequence") != strconv.FormatUint(ev.Serial, 10) {
					t.Fatalf("hub got %s %s %v, want serial %d", m.Subject, m.Data, m.Header, ev.Serial)
				}
				return
			case <-deadline:
				t.Fatal("the REST event never reached the hub")
			}
		}
	})

	t.Run("(c) streams stay on the leaf", func(t *testing.T) {
		hubJS, err := jetstream.New(backend)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hubJS.Stream(ctxT(t), bus.StreamName("app-id")); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("hub's own JetStream: %v, want stream not found", err)
		}
		leafJS, err := jetstream.NewWithDomain(backend, "region-1")
		if err != nil {
			t.Fatal(err)
		}
		st, err := leafJS.Stream(ctxT(t), bus.StreamName("app-id"))
		if err != nil || st.CachedInfo().State.Msgs == 0 {
			t.Fatalf("leaf stream through domain region-1: %v", err)
		}
	})
}
