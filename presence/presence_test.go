package presence

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

type changes struct {
	mu  sync.Mutex
	got []string
}

func (c *changes) listen(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	verb := "removed"
	if ch.Added {
		verb = "added"
	}
	c.got = append(c.got, fmt.Sprintf("%s %s by %s", verb, ch.Member.ID, ch.Origin))
}

func member(id string) Member {
	return Member{ID: id, IDJSON: json.RawMessage(`"` + id + `"`), Info: json.RawMessage(`{"name":"` + id + `"}`)}
}

func TestMemberEventsPerUserNotPerConnection(t *testing.T) {
	var c changes
	r := NewLocal(c.listen)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Join("a", "presence-x", "1.1", member("u1"), 100, nil))
	must(r.Join("a", "presence-x", "1.2", member("u1"), 100, nil)) // second tab: no event
	must(r.Join("a", "presence-x", "1.3", member("u2"), 100, nil))
	if r.Count("a", "presence-x") != 2 {
		t.Fatalf("count %d", r.Count("a", "presence-x"))
	}
	r.Leave("a", "presence-x", "1.1") // u1 still has 1.2
	r.Leave("a", "presence-x", "1.2")
	r.Leave("a", "presence-x", "9.9") // unknown: nothing
	want := []string{"added u1 by 1.1", "added u2 by 1.3", "removed u1 by 1.2"}
	if fmt.Sprint(c.got) != fmt.Sprint(want) {
		t.Fatalf("changes %q, want %q", c.got, want)
	}
	if m := r.Members("a", "presence-x"); len(m) != 1 || m[0].ID != "u2" {
		t.Fatalf("members %+v", m)
	}
	r.Leave("a", "presence-x", "1.3")
	if r.Count("a", "presence-x") != 0 || len(r.channels) != 0 {
		t.Fatal("empty channel kept")
	}
}

func TestLimitCountsDistinctUsers(t *testing.T) {
	r := NewLocal(nil)
	for i := range 3 {
		if err := r.Join("a", "p", ConnID(fmt.Sprint(i)), member(fmt.Sprint("u", i)), 3, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Join("a", "p", "x", member("u9"), 3, nil); err != ErrFull {
		t.Fatalf("4th user: %v", err)
	}
	if err := r.Join("a", "p", "y", member("u1"), 3, nil); err != nil {
		t.Fatalf("second connection of a member refused: %v", err)
	}
}

func TestJoinedSeesJoinerBeforeItsChange(t *testing.T) {
	var order []string
	r := NewLocal(func(ch Change) { order = append(order, "change "+ch.Member.ID) })
	_ = r.Join("a", "p", "1", member("u1"), 0, nil)
	err := r.Join("a", "p", "2", member("u2"), 0, func(ms []Member) {
		order = append(order, fmt.Sprintf("joined %d", len(ms)))
	})
	if err != nil || fmt.Sprint(order) != "[change u1 joined 2 change u2]" {
		t.Fatalf("%v %v", order, err)
	}
}

func TestRoster(t *testing.T) {
	got := string(Roster([]Member{member("1"), {ID: "2", IDJSON: json.RawMessage("2")}}))
	want := `{"presence":{"ids":["1","2"],"hash":{"1":{"name":"1"},"2":null},"count":2}}`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("invalid JSON")
	}
}

func TestConcurrentJoinLeaveAndSubscribers(t *testing.T) {
	rec := newRecorder()
	r := NewLocal(rec.listen)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				id := ConnID(fmt.Sprintf("%d.%d", i, j))
				_ = r.Join("a", "p", id, member(fmt.Sprint("u", j%5)), 0, nil)
				r.SetSubscribers("a", fmt.Sprint("c", j%3), (i+j)%4)
				r.Leave("a", "p", id)
			}
			for j := range 3 {
				r.SetSubscribers("a", fmt.Sprint("c", j), 0) // every writer's last count is 0
			}
		}()
	}
	wg.Wait()
	rec.check(t, "local") // member and occupancy changes alternate as they should
	if r.Count("a", "p") != 0 {
		t.Fatalf("count %d after all left", r.Count("a", "p"))
	}
	for j := range 5 {
		if added, removed := rec.counts("a", "p", fmt.Sprint("u", j)); added != removed {
			t.Fatalf("u%d: %d added, %d removed", j, added, removed)
		}
	}
	for j := range 3 {
		ch := fmt.Sprint("c", j)
		if occupied, _, vacated, s := rec.occupancy("a", ch); occupied != vacated || s != 0 || r.Subscribers("a", ch) != 0 {
			t.Fatalf("%s: occupied %d vacated %d, stream says %d subscribers, registry %d", ch, occupied, vacated, s, r.Subscribers("a", ch))
		}
	}
}

func TestLocalOccupancyTransitions(t *testing.T) {
	var got []string
	r := NewLocal(func(c Change) { got = append(got, fmt.Sprint(c.Kind, " ", c.Subscribers)) })
	for _, step := range []struct {
		name string
		n    int
		want string // the Change reported, "" for none
	}{
		{name: "first subscriber", n: 1, want: "occupied 1"},
		{name: "more subscribers", n: 3, want: "subscription_count 3"},
		{name: "the same count", n: 3, want: ""},
		{name: "negative counts as none", n: -2, want: "vacated 0"},
		{name: "still none", n: 0, want: ""},
		{name: "occupied again", n: 2, want: "occupied 2"},
		{name: "the last one leaves", n: 0, want: "vacated 0"},
	} {
		got = nil
		r.SetSubscribers("a", "private-x", step.n)
		if strings.Join(got, ", ") != step.want {
			t.Fatalf("%s: changes %q, want %q", step.name, got, step.want)
		}
		if s := r.Subscribers("a", "private-x"); s != max(step.n, 0) {
			t.Fatalf("%s: Subscribers %d, want %d", step.name, s, max(step.n, 0))
		}
	}
	if len(r.subs) != 0 {
		t.Fatalf("vacated channel kept: %v", r.subs)
	}
}

func TestLocalPresenceChannelHasMembersAndSubscribers(t *testing.T) {
	rec := newRecorder()
	r := NewLocal(rec.listen)
	if err := r.Join("a", "presence-x", "1.1", member("u1"), 0, nil); err != nil {
		t.Fatal(err)
	}
	r.SetSubscribers("a", "presence-x", 2)
	if ms, n, s := r.Members("a", "presence-x"), r.Count("a", "presence-x"), r.Subscribers("a", "presence-x"); len(ms) != 1 || n != 1 || s != 2 {
		t.Fatalf("members %v, count %d, subscribers %d; want [u1], 1, 2", ids(ms), n, s)
	}
	r.Leave("a", "presence-x", "1.1") // the member goes; the subscribers stay
	if occupied, _, vacated, s := rec.occupancy("a", "presence-x"); occupied != 1 || vacated != 0 || s != 2 {
		t.Fatalf("after the last member left: occupied %d vacated %d subscribers %d", occupied, vacated, s)
	}
	r.SetSubscribers("a", "presence-x", 0)
	rec.check(t, "local")
	if added, removed := rec.counts("a", "presence-x", "u1"); added != 1 || removed != 1 {
		t.Fatalf("u1 added %d removed %d times", added, removed)
	}
	if occupied, counts, vacated, _ := rec.occupancy("a", "presence-x"); occupied != 1 || counts != 0 || vacated != 1 {
		t.Fatalf("occupied %d, count changes %d, vacated %d", occupied, counts, vacated)
	}
	if len(r.channels) != 0 || len(r.subs) != 0 {
		t.Fatal("empty channel kept")
	}
}
