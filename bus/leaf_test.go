package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/internal/testkit"
)

// Leaf mode tests run a hub (a plain nats-server with JetStream in its own
// domain and a leaf node port) and a Bus whose embedded server is its leaf.

const (
	hubUser       = "backend"
	hubPassword   = "backend-secret"
	leafUser      = "leaf"
	leafPassword  = "leaf-secret"
	testHubDomain = "hub"
)

// startHub starts the hub: client users hubUser (everything) on a random
// port, leaf connections as leafUser on another (its URL is returned),
// JetStream in domain "hub".
func startHub(t testing.TB) (hub *server.Server, leafURL string) {
	t.Helper()
	opts := &server.Options{
		ServerName:      "hub",
		Host:            "127.0.0.1",
		Port:            server.RANDOM_PORT,
		JetStream:       true,
		JetStreamDomain: testHubDomain,
		StoreDir:        t.TempDir(),
		NoSigs:          true,
		NoLog:           true,
		Users:           []*server.User{{Username: hubUser, Password: hubPassword}},
		LeafNode: server.LeafNodeOpts{
			Host:     "127.0.0.1",
			Port:     server.RANDOM_PORT,
			Username: leafUser,
			Password: leafPassword,
		},
	}
	hub = runNATSServer(t, opts)
	// The server writes the port it bound back into its options.
	return hub, fmt.Sprintf("nats-leaf://127.0.0.1:%d", opts.LeafNode.Port)
}

// leafConfig is a Bus config in leaf mode joined to hub, domain "region1".
func leafConfig(t testing.TB, leafURL string) Config {
	cfg := testConfig(t)
	cfg.Mode = ModeLeaf
	cfg.LeafRemotes = []string{leafURL}
	cfg.User, cfg.Password = leafUser, leafPassword
	cfg.JetStreamDomain = "region1"
	return cfg
}

// hubConn connects a backend to the hub.
func hubConn(t testing.TB, hub *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(hub.ClientURL(), nats.UserInfo(hubUser, hubPassword), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func waitLeafUp(t testing.TB, b *Bus) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := b.LeafConnections(); n != 1 {
			return fmt.Errorf("%d leaf connections", n)
		}
		return nil
	})
}

// TestLeafToHub: what the leaf stores reaches the hub live, with its serial
// headers; the stream subjects do not cross; the streams live in the leaf's
// JetStream, which the hub reaches through the leaf's domain.
func TestLeafToHub(t *testing.T) {
	hub, leafURL := startHub(t)
	b := startBus(t, leafConfig(t, leafURL), &recSink{})
	waitLeafUp(t, b)
	if b.Mode() != ModeLeaf || b.Server() == nil {
		t.Fatalf("Mode %q, Server %v", b.Mode(), b.Server())
	}

	nc := hubConn(t, hub)
	live := make(chan *nats.Msg, 64)
	stored := make(chan *nats.Msg, 64)
	for subj, ch := range map[string]chan *nats.Msg{"herald.app1.live.>": live, "herald.app1.msg.>": stored, "herald.app1.cache.>": stored} {
		if _, err := nc.ChanSubscribe(subj, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The hub's interest reaches the leaf a moment after the subscription:
	// publish probes until one arrives.
	testkit.WaitFor(t, 10*time.Second, func() error {
		publish(t, b, "app1", "probe", "p", "")
		select {
		case <-live:
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("no probe on the hub")
		}
	})
	for len(live) > 0 {
		<-live
	}

	serial := publish(t, b, "app1", "cache-orders.42", `{"id":42}`, "")
	var m *nats.Msg
	select {
	case m = <-live:
	case <-time.After(5 * time.Second):
		t.Fatal("event not seen on the hub")
	}
	if m.Subject != "herald.app1.live.cache-orders%2E42" || string(m.Data) != `{"id":42}` ||
		m.Header.Get("Nats-Sequence") != fmt.Sprint(serial) || m.Header.Get("Nats-Stream") != StreamName("app1") {
		t.Fatalf("hub got %s %q %v, want serial %d", m.Subject, m.Data, m.Header, serial)
	}
	// The stored and cache copies were sent before the live one (same
	// connection, in order): had they crossed, they would be here by now.
	if n := len(stored); n != 0 {
		t.Fatalf("%d stream-subject messages crossed to the hub, first %s", n, (<-stored).Subject)
	}

	// The stream is the leaf's: absent from the hub's JetStream, reachable
	// from the hub through the leaf's domain.
	hubJS, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubJS.Stream(ctxT(t), StreamName("app1")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("hub's own JetStream: %v, want stream not found", err)
	}
	leafJS, err := jetstream.NewWithDomain(nc, "region1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := leafJS.Stream(ctxT(t), StreamName("app1"))
	if err != nil {
		t.Fatalf("leaf stream through domain region1: %v", err)
	}
	if last, err := st.GetLastMsgForSubject(ctxT(t), StoredSubject("app1", "cache-orders.42")); err != nil || last.Sequence != serial {
		t.Fatalf("last stored message via the domain: %+v %v", last, err)
	}
}

// TestHubToLeaf: an event republished on the hub's live subjects (by a
// Herald elsewhere) reaches the leaf's live subscribers, a stored subject
// published on the hub does not reach the leaf's stream, and a hub that
// goes away does not stop the leaf's own traffic.
func TestHubToLeaf(t *testing.T) {
	hub, leafURL := startHub(t)
	sink := &recSink{}
	b := startBus(t, leafConfig(t, leafURL), sink)
	waitLeafUp(t, b)
	b.Subscribe("app1", "news")
	flush(t, b)
	nc := hubConn(t, hub)
	testkit.WaitFor(t, 10*time.Second, func() error { // until the leaf's interest reached the hub
		m := &nats.Msg{Subject: LiveSubject("app1", "news"), Data: []byte("from the hub"), Header: nats.Header{"Nats-Sequence": []string{"7"}}}
		if err := nc.PublishMsg(m); err != nil {
			return err
		}
		if err := nc.Flush(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		if len(sink.forChannel("news")) == 0 {
			return errors.New("nothing delivered on the leaf")
		}
		return nil
	})
	if got := sink.forChannel("news")[0]; string(got.Payload) != "from the hub" || got.Serial != 7 {
		t.Fatalf("delivered %+v", got)
	}

	// A stored subject published on the hub is not imported: the leaf's
	// stream never sees it, so the leaf's first own event has serial 1.
	if err := nc.Publish(StoredSubject("app1", "other"), []byte("must stay out")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Subscribe("app1", "other")
	flush(t, b)
	if s := publish(t, b, "app1", "other", "local", ""); s != 1 {
		t.Fatalf("the leaf's first own event has serial %d: the hub's stored-subject message was stored", s)
	}
	sink.waitCount(t, "other", 1)

	hub.Shutdown()
	hub.WaitForShutdown()
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := b.LeafConnections(); n != 0 {
			return fmt.Errorf("%d leaf connections after the hub stopped", n)
		}
		return nil
	})
	publish(t, b, "app1", "other", "hub down", "")
	if got := sink.waitCount(t, "other", 2); string(got[1].Payload) != "hub down" {
		t.Fatalf("delivered %+v", got)
	}
}
