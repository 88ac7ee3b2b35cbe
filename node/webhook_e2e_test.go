package node

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/hook"
	"herald/internal/testkit"
	"herald/internal/webhooktest"
)

// The whole of issue 12 on one node, with every real part: the ledger
// deciding into the real outbox (package webhook's Sender, not a test
// outbox), its lanes posting to a real local HTTP receiver that checks
// each request as a Pusher backend's verifier does (webhooktest), and
// real WebSocket clients.

// waitLines waits until the receiver's lines of channel are exactly want,
// in arrival order.
func waitLines(t *testing.T, r *webhooktest.Receiver, channel string, want ...string) {
	t.Helper()
	testkit.WaitFor(t, 15*time.Second, func() error {
		if got := r.Lines(channel); !slices.Equal(got, want) {
			return fmt.Errorf("%s: received %q, want %q", channel, got, want)
		}
		return nil
	})
}

// ledgerLines are channel's lines without client_event and cache_miss,
// which the node the socket is on writes, not the channel's owner, so they
// are not ordered against the owner's events.
func ledgerLines(r *webhooktest.Receiver, channel string) []string {
	var out []string
	for _, l := range r.Lines(channel) {
		if l != app.WebhookClientEvent && l != app.WebhookCacheMiss && !strings.HasPrefix(l, app.WebhookClientEvent+" ") {
			out = append(out, l)
		}
	}
	return out
}

// lastAt is when the receiver got channel's last event named name.
func lastAt(r *webhooktest.Receiver, channel, name string) time.Time {
	var at time.Time
	for _, e := range r.Of(channel) {
		if e.Name == name {
			at = e.At
		}
	}
	return at
}

// TestWebhooksEndToEnd: an app with a webhook of every event type;
// real clients subscribe and leave public and presence channels, send
// client events and miss a cache channel. The receiver gets every type,
// each request exactly as Pusher sends it and validly signed, no id twice,
// each channel's events in order; channel_vacated comes within 10 s of the
// last subscriber leaving with the default grace, and a reconnect within
// the grace sends neither vacated nor a second occupied, nor member events.
func TestWebhooksEndToEnd(t *testing.T) {
	rcv := webhooktest.NewReceiver(configs.DevAppKey, configs.DevAppSecret)
	t.Cleanup(rcv.Close) // registered first: closed after the node stopped
	n := startNode(t, func(c *configs.Config) {
		c.Apps[0].Webhooks = []app.Webhook{{URL: rcv.URL(), EventTypes: slices.Clone(app.WebhookEventTypes)}}
	})
	grace := n.cfg.Webhooks.Grace.D()
	if grace != configs.DefaultWebhookGrace || n.webhooks == nil || n.outbox != n.webhooks {
		t.Fatalf("grace %v, sender %v, outbox %T: want the default grace and the real sender as the ledger's outbox", grace, n.webhooks, n.outbox)
	}
	const (
		pub  = "e2e-pub"
		flap = "e2e-flap"
		room = "presence-e2e"
		priv = "private-e2e"
		cash = "cache-e2e"
	)
	// A numeric user_id in channel_data: webhooks carry it as a string.
	join := func(c *client.Conn, user string) {
		t.Helper()
		data := `{"user_id":` + user + `,"user_info":{"name":"someone"}}`
		if _, err := c.SubscribeAuth(ctxT(t), room, client.SignChannel(configs.DevAppKey, configs.DevAppSecret, c.SocketID(), room, data), data); err != nil {
			t.Fatal(err)
		}
	}
	sub := func(c *client.Conn, ch string) {
		t.Helper()
		if err := c.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
	}

	a, f, ann := dialNode(t, n), dialNode(t, n), dialNode(t, n)
	sub(a, pub)
	sub(f, flap)
	join(ann, "42")
	waitLines(t, rcv, pub, "channel_occupied", "subscription_count 1")
	waitLines(t, rcv, flap, "channel_occupied", "subscription_count 1")
	waitLines(t, rcv, room, "channel_occupied", "member_added 42")

	b, bob := dialNode(t, n), dialNode(t, n)
	sub(b, pub)
	join(bob, `"bob"`)
	waitLines(t, rcv, pub, "channel_occupied", "subscription_count 1", "subscription_count 2")
	waitLines(t, rcv, room, "channel_occupied", "member_added 42", "member_added bob")

	// Client events (presence: with the sender's user id; private: without)
	// and a cache miss.
	if err := ann.Send("client-typing", room, map[string]any{"user": "ann"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ann.SubscribeAuth(ctxT(t), priv, client.SignChannel(configs.DevAppKey, configs.DevAppSecret, ann.SocketID(), priv, ""), ""); err != nil {
		t.Fatal(err)
	}
	if err := ann.Send("client-note", priv, "just text"); err != nil {
		t.Fatal(err)
	}
	c := dialNode(t, n)
	sub(c, cash)
	if _, err := c.WaitFor(ctxT(t), "pusher:cache_miss", cash); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if len(rcv.Of(priv)) < 3 || len(rcv.Of(cash)) < 3 || len(rcv.Of(room)) < 4 {
			return fmt.Errorf("client_event and cache_miss not all received: %q %q %q", rcv.Lines(room), rcv.Lines(priv), rcv.Lines(cash))
		}
		return nil
	})
	byName := map[string]webhooktest.Event{}
	for _, e := range rcv.Events() {
		byName[e.Name+" "+e.Channel] = e
	}
	if e := byName["client_event "+room]; e.Event != "client-typing" || e.Data != `{"user":"ann"}` || e.SocketID != ann.SocketID() || e.UserID != "42" {
		t.Errorf("presence client_event %s", e.Raw)
	}
	if e := byName["client_event "+priv]; e.Event != "client-note" || e.Data != "just text" || e.SocketID != ann.SocketID() || e.UserID != "" {
		t.Errorf("private client_event %s", e.Raw)
	}
	if e := byName["cache_miss "+cash]; e.ID == "" {
		t.Errorf("no cache_miss: %q", rcv.Lines(cash))
	}

	// Reconnects within the grace: the only subscriber of flap, and ann
	// (one of two members of room), each drop their connection and are back
	// 1 s later.
	f.Close()
	ann.Close()
	time.Sleep(time.Second)
	f2, ann2 := dialNode(t, n), dialNode(t, n)
	sub(f2, flap)
	join(ann2, "42")
	flapBack := time.Now()

	// Leaving for good: pub by unsubscribe then close, bob by unsubscribe.
	if err := a.Unsubscribe(pub); err != nil {
		t.Fatal(err)
	}
	waitLines(t, rcv, pub, "channel_occupied", "subscription_count 1", "subscription_count 2", "subscription_count 1")
	b.Close()
	pubLeft := time.Now()
	if err := bob.Unsubscribe(room); err != nil {
		t.Fatal(err)
	}
	waitLines(t, rcv, pub, "channel_occupied", "subscription_count 1", "subscription_count 2", "subscription_count 1", "channel_vacated")
	vacatedAfter := lastAt(rcv, pub, "channel_vacated").Sub(pubLeft)
	t.Logf("channel_vacated received %v after the last subscriber left (grace %v)", vacatedAfter.Round(time.Millisecond), grace)
	if vacatedAfter < grace || vacatedAfter > 10*time.Second {
		t.Errorf("channel_vacated %v after the last subscriber left: want between the grace (%v) and 10 s", vacatedAfter, grace)
	}
	waitLines(t, rcv, room, "channel_occupied", "member_added 42", "member_added bob", "client_event 42", "member_removed bob")

	// The reconnects' grace is long over: nothing was sent for them.
	if wait := time.Until(flapBack.Add(grace + time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	if got := ledgerLines(rcv, flap); !slices.Equal(got, []string{"channel_occupied", "subscription_count 1"}) {
		t.Errorf("flap after a reconnect within the grace: %q", got)
	}
	if got := ledgerLines(rcv, room); !slices.Equal(got, []string{"channel_occupied", "member_added 42", "member_added bob", "member_removed bob"}) {
		t.Errorf("room after ann's reconnect within the grace: %q", got)
	}

	// Everyone leaves: each channel is vacated once, after its members.
	for _, cl := range []*client.Conn{f2, ann2, c} {
		cl.Close()
	}
	left := time.Now()
	waitLines(t, rcv, flap, "channel_occupied", "subscription_count 1", "channel_vacated")
	testkit.WaitFor(t, 15*time.Second, func() error {
		want := map[string][]string{
			room: {"channel_occupied", "member_added 42", "member_added bob", "member_removed bob", "member_removed 42", "channel_vacated"},
			priv: {"channel_occupied", "subscription_count 1", "channel_vacated"},
			cash: {"channel_occupied", "subscription_count 1", "channel_vacated"},
		}
		for ch, w := range want {
			if got := ledgerLines(rcv, ch); !slices.Equal(got, w) {
				return fmt.Errorf("%s: %q, want %q", ch, got, w)
			}
		}
		return nil
	})
	t.Logf("presence channel vacated %v after its last member left", lastAt(rcv, room, "channel_vacated").Sub(left).Round(time.Millisecond))

	// Every type arrived; no id twice; nothing malformed or badly signed.
	time.Sleep(time.Second) // nothing late
	types := map[string]bool{}
	for _, e := range rcv.Events() {
		types[e.Name] = true
	}
	for _, ty := range app.WebhookEventTypes {
		if !types[ty] {
			t.Errorf("no %s webhook received", ty)
		}
	}
	for _, p := range rcv.Problems() {
		t.Errorf("receiver: %s", p)
	}
	t.Logf("%d events in %d requests", len(rcv.Events()), rcv.Requests())
}

// TestWebhookPinsOfADeadNode: the node holding a delivery lane's pin
// crashes; an event stored afterwards in that lane's partition reaches the
// receiver within seconds (a survivor releases the pin once the node is
// declared dead), not after the pin's TTL of about two minutes.
func TestWebhookPinsOfADeadNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	rcv := webhooktest.NewReceiver(configs.DevAppKey, configs.DevAppSecret)
	t.Cleanup(rcv.Close)
	nodes := startClusterNodesWith(t, 3, func(c *configs.Config) {
		c.Apps[0].Webhooks = []app.Webhook{{URL: rcv.URL(), EventTypes: []string{app.WebhookChannelOccupied}}}
	})
	const parts = 4 // webhook.DefaultPartitions
	part := func(ch string) int {
		h := fnv.New32a()
		h.Write([]byte(ch))
		return int(h.Sum32() % parts)
	}
	chanOf := func(prefix string, p int) string {
		for i := 0; ; i++ {
			if ch := fmt.Sprintf("%s-%d", prefix, i); part(ch) == p {
				return ch
			}
		}
	}
	enqueue := func(n *Node, ch string) {
		t.Helper()
		if err := n.outbox.Enqueue(ctxT(t), "app-id", []hook.Event{{ID: "id-" + ch, Name: app.WebhookChannelOccupied, Channel: ch}}); err != nil {
			t.Fatal(err)
		}
	}
	// An event in every partition: each consumer pins a lane.
	for p := range parts {
		enqueue(nodes[0], chanOf("warm", p))
	}
	testkit.WaitFor(t, 15*time.Second, func() error {
		if got := len(rcv.Events()); got != parts {
			return fmt.Errorf("%d warm-up events received", got)
		}
		return nil
	})

	// Find a partition whose pin one node's lanes hold: that node dies.
	stream, err := nodes[0].bus.JetStream().Stream(ctxT(t), bus.WebhookOutboxStream)
	if err != nil {
		t.Fatal(err)
	}
	victim, pinned := -1, -1
	for cons := range stream.ListConsumers(ctxT(t)).Info() {
		for _, g := range cons.PriorityGroups {
			for i, n := range nodes {
				if g.PinnedClientID != "" && slices.Contains(n.webhooks.Pins(), g.PinnedClientID) && victim < 0 {
					p, _ := strconv.Atoi(cons.Config.FilterSubject[strings.LastIndexByte(cons.Config.FilterSubject, '.')+1:])
					victim, pinned = i, p
				}
			}
		}
	}
	if victim < 0 {
		t.Fatal("no consumer is pinned to a lane any node claims")
	}
	survivor := nodes[(victim+1)%3]
	t.Logf("partition %d is pinned to n%d's lane; n%d crashes", pinned, victim+1, victim+1)
	nodes[victim].crashForTest()
	crashed := time.Now()

	ch := chanOf("after", pinned)
	enqueue(survivor, ch)
	testkit.WaitFor(t, 20*time.Second, func() error {
		if len(rcv.Of(ch)) != 1 {
			return fmt.Errorf("%s (partition %d) not received yet", ch, pinned)
		}
		return nil
	})
	t.Logf("an event of the dead node's partition received %v after the crash", rcv.Of(ch)[0].At.Sub(crashed).Round(time.Millisecond))
	for _, p := range rcv.Problems() {
		t.Errorf("receiver: %s", p)
	}
}
