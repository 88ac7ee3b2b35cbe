package lifecycle

import (
	"encoding/json"
	"fmt"
	"testing"

	"herald/presence"
)

func TestDeciderEmitsOwnedTransitions(t *testing.T) {
	owned := func(app, ch string) bool { return ch != "theirs" }
	d := New(owned)
	var got []string
	d.Subscribe(func(ev Event) {
		if ev.Time.IsZero() {
			t.Errorf("%s without a time", ev.Kind)
		}
		got = append(got, fmt.Sprintf("%s %s/%s %s %s %d", ev.Kind, ev.App, ev.Channel, ev.UserID, ev.UserInfo, ev.Subscriptions))
	})
	member := presence.Member{ID: "u1", IDJSON: json.RawMessage(`"u1"`), Info: json.RawMessage(`{"n":1}`)}
	for _, ch := range []presence.Change{
		{App: "a", Channel: "presence-x", Member: member, Added: true},
		{App: "a", Channel: "presence-x", Member: member},
		{App: "a", Channel: "c", Kind: presence.KindOccupied, Subscribers: 1},
		{App: "a", Channel: "c", Kind: presence.KindSubscriptionCount, Subscribers: 3},
		{App: "a", Channel: "c", Kind: presence.KindVacated},
		{App: "a", Channel: "theirs", Kind: presence.KindOccupied, Subscribers: 1},
		{App: "a", Channel: "c", Kind: presence.ChangeKind(200)},
	} {
		d.Observe(ch)
	}
	want := []string{
		`member_added a/presence-x u1 {"n":1} 0`,
		`member_removed a/presence-x u1  0`,
		`channel_occupied a/c   1`,
		`subscription_count a/c   3`,
		`channel_vacated a/c   0`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}

	d.Close()
	d.Observe(presence.Change{App: "a", Channel: "c", Kind: presence.KindOccupied, Subscribers: 1})
	if len(got) != len(want) {
		t.Fatal("a closed Decider emitted")
	}
}

func TestNilDeciderIgnores(t *testing.T) {
	var d *Decider
	d.Observe(presence.Change{App: "a", Channel: "c"})
	d.Close()
}

func TestEveryConsumerGetsEveryEvent(t *testing.T) {
	d := New(nil)
	var a, b int
	d.Subscribe(func(Event) { a++ })
	d.Observe(presence.Change{App: "a", Channel: "c", Kind: presence.KindOccupied})
	d.Subscribe(func(Event) { b++ })
	d.Observe(presence.Change{App: "a", Channel: "c", Kind: presence.KindVacated})
	if a != 2 || b != 1 {
		t.Fatalf("consumers got %d and %d events, want 2 and 1", a, b)
	}
}
