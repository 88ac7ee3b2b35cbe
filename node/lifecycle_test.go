package node

import (
	"testing"

	"herald/client"
)

// TestLifecycleOneNode: on a single node every transition is this node's
// to emit: occupied with the first subscriber, counts while it is occupied,
// member events for presence, vacated with the last subscriber gone.
func TestLifecycleOneNode(t *testing.T) {
	n := startNode(t, nil)
	lc := &lifecycleLog{}
	n.Lifecycle().Subscribe(lc.recorder(0))

	a, b := dialNode(t, n), dialNode(t, n)
	for _, c := range []*client.Conn{a, b} {
		if err := c.Subscribe(ctxT(t), "lc-one"); err != nil {
			t.Fatal(err)
		}
	}
	lc.waitKinds(t, "lc-one", "channel_occupied", "subscription_count")
	if evs := lc.of("lc-one"); evs[1].Subscriptions != 2 || evs[1].App != "app-id" {
		t.Fatalf("count event %+v", evs[1])
	}
	a.Close()
	b.Close()
	lc.waitKinds(t, "lc-one", "channel_occupied", "subscription_count", "subscription_count", "channel_vacated")

	p := dialNode(t, n)
	joinRoom(t, p, "presence-lc-one", "zoe")
	lc.waitKinds(t, "presence-lc-one", sorted, "channel_occupied", "member_added")
	if evs := lc.of("presence-lc-one"); evs[0].UserID != "zoe" && evs[1].UserID != "zoe" {
		t.Fatalf("member event without the user: %+v", evs)
	}
	p.Close()
	lc.waitKinds(t, "presence-lc-one", sorted, "channel_occupied", "channel_vacated", "member_added", "member_removed")
}
