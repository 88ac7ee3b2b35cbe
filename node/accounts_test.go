package node

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
)

// stockConn connects with nats.go's default options and the given
// credentials only: no inbox prefix, nothing Herald-specific.
func stockConn(t *testing.T, url, user, password string) (*nats.Conn, *natsErrors) {
	t.Helper()
	errs := &natsErrors{}
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.ErrorHandler(errs.handler), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// TestNATSAccounts is the isolation proof of per-app accounts: a stock
// client with the app's credentials makes requests with the default inbox
// and reads its stream; another app's user subscribed to ">" and
// "_INBOX.>" sees nothing of it, and reading its stream is refused.
func TestNATSAccounts(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		c.Apps = []app.App{app.New("shop", "shop-key", "shop-secret"), app.New("spy", "spy-key", "spy-secret")}
	})
	spy, spyErrs := stockConn(t, n.NATSURL(), "spy", "spy-secret")
	all, err := spy.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	inboxes, err := spy.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	shop, shopErrs := stockConn(t, n.NATSURL(), "shop", "shop-secret")
	live, err := shop.SubscribeSync("herald.shop.live.>")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/shop-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.Subscribe(ctxT(t), "orders"); err != nil {
		t.Fatal(err)
	}

	// The contract: nc.Request on herald.<app>.api.events with the default
	// inbox gets the REST answer.
	m, err := shop.Request("herald.shop.api.events", []byte(`{"name":"shipped","channels":["orders"],"data":"{}"}`), 5*time.Second)
	if err != nil || string(m.Data) != "{}" {
		t.Fatalf("request with the default inbox: %v %v (async errors %v)", m, err, shopErrs.errs)
	}
	if !strings.HasPrefix(m.Subject, "_INBOX.") {
		t.Fatalf("reply on %q", m.Subject)
	}
	m, err = shop.Request("herald.shop.api.events", []byte(`{"name":"x","channels":["orders"],"data":"{}","info":"subscription_count"}`), 5*time.Second)
	if err != nil || string(m.Data) != `{"channels":{"orders":{"subscription_count":1}}}` {
		t.Fatalf("info answer %s %v", m.Data, err)
	}
	ev, err := ws.WaitFor(ctxT(t), "shipped", "orders")
	if err != nil {
		t.Fatal(err)
	}
	lm, err := live.NextMsg(5 * time.Second)
	if err != nil || lm.Header.Get("Nats-Sequence") == "" || lm.Subject != "herald.shop.live.orders" {
		t.Fatalf("live %v %v", lm, err)
	}

	t.Run("its stream, with the default inbox", func(t *testing.T) {
		js, err := jetstream.New(shop)
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t)
		st, err := js.Stream(ctx, bus.StreamName("shop"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.GetLastMsgForSubject(ctx, bus.StoredSubject("shop", "orders"))
		if err != nil || got.Sequence != ev.Serial+1 { // the info request stored one more
			t.Fatalf("direct get: %+v %v (serial %d)", got, err, ev.Serial)
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.StoredSubject("shop", "orders")}})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(2, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for msg := range batch.Messages() {
			var e struct{ Event string }
			_ = json.Unmarshal(msg.Data(), &e)
			if k == 0 && e.Event != "shipped" {
				t.Fatalf("first stored event %s", msg.Data())
			}
			k++
		}
		if k != 2 {
			t.Fatalf("ordered consumer read %d events (%v)", k, batch.Error())
		}
	})

	t.Run("another app's user sees nothing of it", func(t *testing.T) {
		for _, sub := range []*nats.Subscription{all, inboxes} {
			for {
				m, err := sub.NextMsg(300 * time.Millisecond)
				if err != nil {
					break
				}
				if strings.Contains(m.Subject, "shop") || strings.Contains(string(m.Data), "shipped") || strings.HasPrefix(m.Subject, "_INBOX.") {
					t.Fatalf("the spy's %q got %s %s", sub.Subject, m.Subject, m.Data)
				}
			}
		}
	})

	t.Run("another app's stream is refused", func(t *testing.T) {
		js, err := jetstream.New(spy)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := js.Stream(ctx, bus.StreamName("shop")); err == nil {
			t.Fatal("the spy read the shop's stream info")
		}
		spyErrs.waitFor(t, `Permissions Violation for Publish to "$JS.API.STREAM.INFO.HERALD_shop"`)
		if _, err := spy.Request("$JS.API.DIRECT.GET."+bus.StreamName("shop")+"."+bus.StoredSubject("shop", "orders"), nil, 300*time.Millisecond); err == nil {
			t.Fatal("the spy's direct get was answered")
		}
		if _, err := spy.Request("herald.shop.api.events", []byte(`{"name":"e","channels":["orders"],"data":"{}"}`), 300*time.Millisecond); err == nil {
			t.Fatal("the spy's request to the shop's API was answered")
		}
	})

	t.Run("the spy's own app works", func(t *testing.T) {
		m, err := spy.Request("herald.spy.api.events", []byte(`{"name":"e","channels":["c"],"data":"{}"}`), 5*time.Second)
		if err != nil || string(m.Data) != "{}" {
			t.Fatalf("%v %v", m, err)
		}
	})
}
