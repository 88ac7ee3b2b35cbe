package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Presence joins and leaves reach NATS consumers with the app's credentials
// on herald.<app>.presence.<tok>, once each (docs/nats.md).
func TestPresenceChangesOverNATS(t *testing.T) {
	n := startNode(t, nil)
	nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")
	ch := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("herald.app-id.presence.>", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := dialNode(t, n)
	joinRoom(t, c, "presence-room", "42")
	c.Close()
	type change struct {
		Event   string `json:"event"`
		Channel string `json:"channel"`
		UserID  string `json:"user_id"`
	}
	for _, want := range []string{"member_added", "member_removed"} {
		select {
		case m := <-ch:
			var got change
			if err := json.Unmarshal(m.Data, &got); err != nil || got.Event != want || got.Channel != "presence-room" || got.UserID != "42" {
				t.Fatalf("%s: got %s on %s (%v)", want, m.Data, m.Subject, err)
			}
			if m.Subject != "herald.app-id.presence.presence-room" {
				t.Fatalf("subject %s", m.Subject)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", want)
		}
	}
}
