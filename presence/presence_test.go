package presence

import (
	"encoding/json"
	"fmt"
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

func TestConcurrentJoinLeave(t *testing.T) {
	var c changes
	r := NewLocal(c.listen)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				id := ConnID(fmt.Sprintf("%d.%d", i, j))
				_ = r.Join("a", "p", id, member(fmt.Sprint("u", j%5)), 0, nil)
				r.Leave("a", "p", id)
			}
		}()
	}
	wg.Wait()
	if r.Count("a", "p") != 0 {
		t.Fatalf("count %d after all left", r.Count("a", "p"))
	}
	added, removed := 0, 0
	for _, s := range c.got {
		if s[0] == 'a' {
			added++
		} else {
			removed++
		}
	}
	if added != removed {
		t.Fatalf("%d added, %d removed", added, removed)
	}
}
