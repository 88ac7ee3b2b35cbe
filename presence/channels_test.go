package presence

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func refs(rs []ChannelRef) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.App+"/"+r.Channel)
	}
	slices.Sort(out)
	return out
}

func onlyApp(id string) func(string) bool { return func(app string) bool { return app == id } }

// TestChannelsListsWhatHasState: subscribers or members, of the wanted
// apps, each channel once, on the single-node registry and the CRDT.
func TestChannelsListsWhatHasState(t *testing.T) {
	local := NewLocal(nil)
	st := NewState(OwnerID{"o", 1}, nil)
	remote := NewState(OwnerID{"r", 1}, nil)
	for _, r := range []interface {
		SetSubscribers(app, ch string, n int)
		Join(app, ch string, conn ConnID, m Member, maxMembers int, joined func([]Member)) error
	}{local, st} {
		r.SetSubscribers("a", "orders", 2)
		r.SetSubscribers("a", "presence-room", 1)
		if err := r.Join("a", "presence-room", "c1", Member{ID: "u"}, 0, nil); err != nil {
			t.Fatal(err)
		}
		r.SetSubscribers("b", "other-app", 1)
		r.SetSubscribers("a", "gone", 1)
		r.SetSubscribers("a", "gone", 0)
	}
	want := []string{"a/orders", "a/presence-room"}
	if got := refs(local.Channels(onlyApp("a"))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Local: %q, want %q", got, want)
	}
	if got := refs(st.Channels(onlyApp("a"))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("State: %q, want %q", got, want)
	}
	// Another node's slice counts too.
	remote.SetSubscribers("a", "theirs", 1)
	for _, d := range remote.TakeDeltas() {
		st.ApplyDelta(d, time.Now())
	}
	if got := refs(st.Channels(onlyApp("a"))); !slices.Contains(got, "a/theirs") {
		t.Fatalf("State without the remote channel: %q", got)
	}
}
