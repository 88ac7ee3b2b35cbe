package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/cluster"
	"herald/configs"
	"herald/internal/outboxtest"
	"herald/internal/testkit"
	"herald/webhook"
)

// The webhook ledger on real nodes: real WebSocket clients, the ledger's
// records in the node's JetStream, its events in a real stream through
// outboxtest (JetStream drops an event id it already has), read back here.

const webhookTestStream = "TEST_WEBHOOKS"

// useTestOutbox gives every node started until the test ends an outbox on
// the stream webhookTestStream of its own NATS, with replicas replicas.
func useTestOutbox(t *testing.T, replicas int) {
	outboxForTest = func(n *Node) webhook.Outbox {
		return outboxtest.New(n.bus.JetStream(), webhookTestStream, replicas)
	}
	t.Cleanup(func() { outboxForTest = nil })
}

// withWebhooks makes app-id's webhooks want kinds.
func withWebhooks(kinds ...string) func(*configs.Config) {
	return func(cfg *configs.Config) {
		cfg.Apps[0].Webhooks = []app.Webhook{{URL: "http://127.0.0.1:9/hook", EventTypes: kinds}}
	}
}

// storedWebhooks reads the test stream through n, failing the test on an
// event id stored twice or malformed.
func storedWebhooks(t *testing.T, n *Node) ([]outboxtest.Stored, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := outboxtest.Events(ctx, n.bus.JetStream(), webhookTestStream)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.ID] || len(ev.ID) != 32 || ev.App != "app-id" {
			t.Fatalf("bad or doubled event %+v in %+v", ev, evs)
		}
		ids[ev.ID] = true
	}
	return evs, nil
}

// webhookLine is an event as the tests compare it: "name user count".
func webhookLine(ev outboxtest.Stored) string {
	s := ev.Name
	if ev.UserID != "" {
		s += " " + ev.UserID
	}
	if ev.SubscriptionCount != nil {
		s += fmt.Sprintf(" %d", *ev.SubscriptionCount)
	}
	return s
}

// webhooksOf returns channel's events read through n, in order.
func webhooksOf(t *testing.T, n *Node, channel string) ([]string, error) {
	evs, err := storedWebhooks(t, n)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ev := range evs {
		if ev.Channel == channel {
			out = append(out, webhookLine(ev))
		}
	}
	return out, nil
}

// waitWebhooks waits until channel's events are exactly want (in order, or
// sorted when want starts with sorted), then makes sure nothing more comes
// for settle.
func waitWebhooks(t *testing.T, n *Node, channel string, settle time.Duration, want ...string) {
	t.Helper()
	sort := len(want) > 0 && want[0] == sorted
	if sort {
		want = slices.Sorted(slices.Values(want[1:]))
	}
	check := func() error {
		got, err := webhooksOf(t, n, channel)
		if err != nil {
			return err
		}
		if sort {
			slices.Sort(got)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: webhooks %q, want %q", channel, got, want)
		}
		return nil
	}
	testkit.WaitFor(t, 20*time.Second, check)
	time.Sleep(settle)
	testkit.WaitFor(t, 10*time.Second, check) // a stream read may fail while a leader is elected; a doubled event never goes away
}

// TestWebhookLedgerOneNode: every kind with its fields; a reconnect within
// the grace sends nothing; vacated within 10 s of the last subscriber
// leaving, with the default grace.
func TestWebhookLedgerOneNode(t *testing.T) {
	useTestOutbox(t, 1)
	n := startNode(t, withWebhooks("channel_occupied", "channel_vacated", "member_added", "member_removed", "subscription_count"))
	if g := n.cfg.Webhooks.Grace.D(); g != configs.DefaultWebhookGrace {
		t.Fatalf("grace %v, want the default", g)
	}

	a := dialNode(t, n)
	if err := a.Subscribe(ctxT(t), "wh-one"); err != nil {
		t.Fatal(err)
	}
	waitWebhooks(t, n, "wh-one", 0, "channel_occupied", "subscription_count 1")
	b := dialNode(t, n)
	if err := b.Subscribe(ctxT(t), "wh-one"); err != nil {
		t.Fatal(err)
	}
	waitWebhooks(t, n, "wh-one", 0, "channel_occupied", "subscription_count 1", "subscription_count 2")
	a.Close()
	waitWebhooks(t, n, "wh-one", 0, "channel_occupied", "subscription_count 1", "subscription_count 2", "subscription_count 1")
	b.Close()
	left := time.Now()
	waitWebhooks(t, n, "wh-one", 0, "channel_occupied", "subscription_count 1", "subscription_count 2", "subscription_count 1", "channel_vacated")
	took := time.Since(left)
	t.Logf("channel_vacated stored %v after the last subscriber left (grace %v)", took, configs.DefaultWebhookGrace)
	if took > 10*time.Second || took < configs.DefaultWebhookGrace {
		t.Fatalf("channel_vacated %v after the last subscriber left, want between the grace and 10 s", took)
	}

	// Presence: occupied and member_added at once; no subscription_count
	// there. A page reload within the grace sends nothing; leaving for good
	// sends member_removed, then vacated.
	const room = "presence-wh-one"
	p := dialNode(t, n)
	joinRoom(t, p, room, "zoe")
	waitWebhooks(t, n, room, 0, "channel_occupied", "member_added zoe")
	p.Close()
	time.Sleep(time.Second)
	p2 := dialNode(t, n)
	joinRoom(t, p2, room, "zoe")
	waitWebhooks(t, n, room, configs.DefaultWebhookGrace+time.Second, "channel_occupied", "member_added zoe")
	p2.Close()
	waitWebhooks(t, n, room, 0, "channel_occupied", "member_added zoe", "member_removed zoe", "channel_vacated")
}

// channelOwnedBy returns the first name prefix-0, prefix-1, ... whose owner
// among names is owner.
func channelOwnedBy(names []string, owner, prefix string) string {
	for i := 0; ; i++ {
		ch := fmt.Sprintf("%s-%d", prefix, i)
		if cluster.OwnerOf(names, "app-id", ch) == owner {
			return ch
		}
	}
}

// TestWebhookLedgerCluster: three real nodes. A channel occupied through
// n2 and left through n3 gives one channel_occupied and one
// channel_vacated cluster-wide, never a vacated while a subscriber remains.
// Then the owner of some channels crashes (no leave) while their events are
// pending: none is lost, none doubled by id, and a presence member of the
// crashed node gets its member_removed once.
func TestWebhookLedgerCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const grace = time.Second
	useTestOutbox(t, 3)
	nodes := startClusterNodesWith(t, 3, func(cfg *configs.Config) {
		withWebhooks("channel_occupied", "channel_vacated", "member_added", "member_removed")(cfg)
		cfg.Webhooks.Grace = configs.Duration(grace)
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	names := []string{"n1", "n2", "n3"}

	c2, c3 := dialNode(t, n2), dialNode(t, n3)
	for _, c := range []*client.Conn{c2, c3} {
		if err := c.Subscribe(ctxT(t), "wh-moving"); err != nil {
			t.Fatal(err)
		}
	}
	waitWebhooks(t, n1, "wh-moving", 0, "channel_occupied")
	c2.Close()
	waitWebhooks(t, n1, "wh-moving", grace+time.Second, "channel_occupied") // n3 still holds it
	c3.Close()
	waitWebhooks(t, n1, "wh-moving", 0, "channel_occupied", "channel_vacated")

	// Channels n3 owns, each with an event pending when it dies:
	//   held: a subscriber on n3 only (vacated once n3 is gone);
	//   leaving: its subscriber on n1 left just before the crash (vacated
	//     waiting out its grace on n3);
	//   room: carol on n3 and dave on n1 (carol removed once, dave stays).
	held := channelOwnedBy(names, "n3", "wh-held")
	leaving := channelOwnedBy(names, "n3", "wh-leaving")
	room := channelOwnedBy(names, "n3", "presence-wh-room")
	h := dialNode(t, n3)
	if err := h.Subscribe(ctxT(t), held); err != nil {
		t.Fatal(err)
	}
	l := dialNode(t, n1)
	if err := l.Subscribe(ctxT(t), leaving); err != nil {
		t.Fatal(err)
	}
	carol, dave := dialNode(t, n3), dialNode(t, n1)
	joinRoom(t, carol, room, "carol")
	joinRoom(t, dave, room, "dave")
	waitWebhooks(t, n1, held, 0, "channel_occupied")
	waitWebhooks(t, n1, leaving, 0, "channel_occupied")
	waitWebhooks(t, n1, room, 0, sorted, "channel_occupied", "member_added carol", "member_added dave")

	l.Close()
	time.Sleep(grace / 4) // n3 has seen it: the vacated waits out its grace there
	n3.crashForTest()
	crashed := time.Now()

	waitWebhooks(t, n1, held, 0, "channel_occupied", "channel_vacated")
	waitWebhooks(t, n1, leaving, 0, "channel_occupied", "channel_vacated")
	waitWebhooks(t, n1, room, 0, sorted, "channel_occupied", "member_added carol", "member_added dave", "member_removed carol")
	t.Logf("the dead owner's events all stored %v after the crash", time.Since(crashed))
	time.Sleep(grace) // then nothing more: no event doubled, none late
	waitWebhooks(t, n1, held, 0, "channel_occupied", "channel_vacated")
	waitWebhooks(t, n1, leaving, 0, "channel_occupied", "channel_vacated")
	for _, n := range []*Node{n1, n2} {
		t.Logf("%s ledger %+v", n.cl.LocalName(), n.ledger.Stats())
	}
	if got, err := webhooksOf(t, n2, room); err != nil || strings.Count(strings.Join(got, "|"), "member_removed") != 1 {
		t.Fatalf("read through n2: %q %v", got, err)
	}
}
