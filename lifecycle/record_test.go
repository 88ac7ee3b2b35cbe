package lifecycle

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"herald/app"
)

var everything = wants{occupied: true, vacated: true, added: true, removed: true, count: true}

func kinds(ps []pending) string {
	var s []string
	for _, p := range ps {
		switch {
		case p.User != "":
			s = append(s, string(p.Kind)+":"+p.User)
		case p.Kind == SubscriptionCount:
			s = append(s, fmt.Sprintf("%s:%d", p.Kind, p.Count))
		default:
			s = append(s, string(p.Kind))
		}
	}
	return strings.Join(s, " ")
}

func TestDecideAdditionsAtOnceInOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	var ab absence
	w := everything
	w.count = false // a presence channel
	d := decide(record{}, 2, []string{"zoe", "al"}, w, 3*time.Second, &ab, time.Time{}, time.Time{}, now)
	if got, want := kinds(d.events), "channel_occupied member_added:zoe member_added:al"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if !d.next.Occupied || fmt.Sprint(d.next.Members) != "[al zoe]" || !d.due.IsZero() {
		t.Fatalf("next %+v due %v", d.next, d.due)
	}

	// A public channel: occupied, then its count; a later count change.
	d = decide(record{}, 1, nil, everything, 0, &ab, time.Time{}, time.Time{}, now)
	if got, want := kinds(d.events), "channel_occupied subscription_count:1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	d = decide(d.next, 3, nil, everything, 0, &ab, time.Time{}, time.Time{}, now)
	if got := kinds(d.events); got != "subscription_count:3" || d.next.Count != 3 || !d.counted {
		t.Fatalf("events %q next %+v", got, d.next)
	}
}

func TestDecideRemovalsWaitTheGrace(t *testing.T) {
	grace := 3 * time.Second
	t0 := time.Unix(1000, 0)
	var ab absence
	rec := record{Occupied: true, Members: []string{"al", "zoe"}}
	w := everything
	w.count = false

	// zoe and the channel's last subscriber go: nothing yet, look again at t0+grace.
	d := decide(rec, 0, nil, w, grace, &ab, time.Time{}, time.Time{}, t0)
	if len(d.events) != 0 || !d.due.Equal(t0.Add(grace)) || !d.next.sameState(&rec) {
		t.Fatalf("before the grace: events %q due %v next %+v", kinds(d.events), d.due, d.next)
	}
	// Still gone when it ends: members removed, then vacated.
	d = decide(rec, 0, nil, w, grace, &ab, time.Time{}, time.Time{}, t0.Add(grace))
	if got, want := kinds(d.events), "member_removed:al member_removed:zoe channel_vacated"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if !d.next.empty() || len(d.gone) != 3 {
		t.Fatalf("next %+v gone %q", d.next, d.gone)
	}
}

func TestDecideRejoinWithinTheGraceSendsNothing(t *testing.T) {
	grace := 3 * time.Second
	t0 := time.Unix(1000, 0)
	var ab absence
	rec := record{Occupied: true, Members: []string{"zoe"}}
	w := everything
	w.count = false
	if d := decide(rec, 0, nil, w, grace, &ab, time.Time{}, time.Time{}, t0); len(d.events) != 0 {
		t.Fatalf("events %q", kinds(d.events))
	}
	// zoe reloads the page: back after a second.
	d := decide(rec, 1, []string{"zoe"}, w, grace, &ab, time.Time{}, time.Time{}, t0.Add(time.Second))
	if len(d.events) != 0 || !d.due.IsZero() || !d.next.sameState(&rec) {
		t.Fatalf("re-join: events %q due %v", kinds(d.events), d.due)
	}
	// Gone again at t0+2.5 s: its grace starts over (not at t0).
	t1 := t0.Add(2500 * time.Millisecond)
	if d := decide(rec, 0, nil, w, grace, &ab, time.Time{}, time.Time{}, t1); len(d.events) != 0 || !d.due.Equal(t1.Add(grace)) {
		t.Fatalf("left again: events %q due %v", kinds(d.events), d.due)
	}
	if d := decide(rec, 0, nil, w, grace, &ab, time.Time{}, time.Time{}, t0.Add(grace)); len(d.events) != 0 {
		t.Fatalf("removed before its second absence lasted the grace: %q", kinds(d.events))
	}
}

func TestDecideTakeoverFloorsTheGrace(t *testing.T) {
	grace := 3 * time.Second
	t0 := time.Unix(1000, 0)
	var ab absence
	rec := record{Occupied: true}
	decide(rec, 0, nil, everything, grace, &ab, time.Time{}, time.Time{}, t0)
	takeover := t0.Add(2 * time.Second)
	d := decide(rec, 0, nil, everything, grace, &ab, takeover, time.Time{}, t0.Add(grace))
	if len(d.events) != 0 || !d.due.Equal(takeover.Add(grace)) {
		t.Fatalf("events %q due %v, want none before %v", kinds(d.events), d.due, takeover.Add(grace))
	}
}

func TestDecideOnlyWantedKindsButTheRecordFollows(t *testing.T) {
	var ab absence
	now := time.Unix(1000, 0)
	w := wants{vacated: true}
	d := decide(record{}, 1, nil, w, 0, &ab, time.Time{}, time.Time{}, now)
	if len(d.events) != 0 || !d.next.Occupied {
		t.Fatalf("occupied not wanted: events %q next %+v", kinds(d.events), d.next)
	}
	d = decide(d.next, 0, nil, w, 0, &ab, time.Time{}, time.Time{}, now)
	if kinds(d.events) != "channel_vacated" || !d.next.empty() {
		t.Fatalf("events %q next %+v", kinds(d.events), d.next)
	}
}

func TestDecideMemberBeforeItsCount(t *testing.T) {
	// The member's entry arrived, the count that occupies the channel not
	// yet: member_added waits for occupied.
	var ab absence
	now := time.Unix(1000, 0)
	d := decide(record{}, 0, []string{"zoe"}, everything, time.Second, &ab, time.Time{}, time.Time{}, now)
	if len(d.events) != 0 || d.due.IsZero() {
		t.Fatalf("events %q due %v", kinds(d.events), d.due)
	}
}

func TestDecideThrottlesLargeCounts(t *testing.T) {
	var ab absence
	now := time.Unix(1000, 0)
	rec := record{Occupied: true, Count: 150}
	d := decide(rec, 151, nil, everything, 0, &ab, time.Time{}, now.Add(-time.Second), now)
	if len(d.events) != 0 || !d.due.Equal(now.Add(4*time.Second)) {
		t.Fatalf("throttled: events %q due %v", kinds(d.events), d.due)
	}
	d = decide(rec, 151, nil, everything, 0, &ab, time.Time{}, now.Add(-countThrottle), now)
	if kinds(d.events) != "subscription_count:151" {
		t.Fatalf("after the throttle: %q", kinds(d.events))
	}
	rec.Count = 5
	if d := decide(rec, 6, nil, everything, 0, &ab, time.Time{}, now, now); kinds(d.events) != "subscription_count:6" {
		t.Fatalf("small counts are not throttled: %q", kinds(d.events))
	}
}

func TestWantsOf(t *testing.T) {
	a := &app.App{ID: "a", Webhooks: []app.Webhook{
		{URL: "http://x/", EventTypes: []string{"channel_vacated", "subscription_count", "member_added"}},
		{URL: "http://y/", EventTypes: []string{"client_event"}},
	}}
	if w := wantsOf(a, "orders"); w != (wants{vacated: true, count: true}) {
		t.Fatalf("public: %+v", w)
	}
	if w := wantsOf(a, "presence-room"); w != (wants{vacated: true, added: true}) {
		t.Fatalf("presence (no subscription_count there): %+v", w)
	}
	if w := wantsOf(a, "#server-to-user-1"); w.any() {
		t.Fatalf("server-to-user: %+v", w)
	}
	if w := wantsOf(&app.App{ID: "b"}, "orders"); w.any() || appWantsAny(&app.App{}) {
		t.Fatal("an app without webhooks wants something")
	}
	if appWantsAny(&app.App{Webhooks: a.Webhooks[1:]}) {
		t.Fatal("client_event only counts as a ledger kind")
	}
}

func TestEventIDs(t *testing.T) {
	a := eventID("app", "c", 7, MemberAdded, "u")
	if a != eventID("app", "c", 7, MemberAdded, "u") || len(a) != 32 {
		t.Fatalf("not deterministic: %s", a)
	}
	for _, b := range []string{
		eventID("app", "c", 8, MemberAdded, "u"),
		eventID("app", "c", 7, MemberRemoved, "u"),
		eventID("app", "c", 7, MemberAdded, "v"),
		eventID("app", "d", 7, MemberAdded, "u"),
		eventID("ap", "pc", 7, MemberAdded, "u"),
	} {
		if a == b {
			t.Fatalf("two events share id %s", a)
		}
	}
	evs := webhookEvents("app", "c", 7, []pending{{Kind: SubscriptionCount, Count: 4}, {Kind: MemberAdded, User: "u"}})
	if *evs[0].SubscriptionCount != 4 || evs[0].Name != "subscription_count" || evs[1].UserID != "u" || evs[1].SubscriptionCount != nil {
		t.Fatalf("events %+v", evs)
	}
}

func TestRecordJSON(t *testing.T) {
	r := record{Occupied: true, Members: []string{"b", "a", "b"}, Pending: []pending{{Kind: ChannelOccupied}}}
	raw, err := jsonRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeRecord(raw)
	if err != nil || fmt.Sprint(back.Members) != "[a b]" || len(back.Pending) != 1 {
		t.Fatalf("%s -> %+v %v", raw, back, err)
	}
	if _, err := decodeRecord([]byte("{")); err == nil {
		t.Fatal("bad JSON decoded")
	}
}
