package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"herald/client"
	"herald/cluster"
	"herald/configs"
	"herald/internal/testkit"
	"herald/internal/webhooktest"
)

// TestClusterWebhooks runs three real herald processes, each configured
// with the same app and a webhook (occupancy and member events) to a
// receiver run by the test (webhooktest: signature, exact body, no id
// twice), with the default grace:
//
//   - a channel occupied through node 2 and left through node 3 gives
//     exactly one channel_occupied and one channel_vacated cluster-wide,
//     none while a subscriber remains on another node;
//   - the owner of some channels is killed with kill -9 while their events
//     are pending (a member and a subscriber that left within the grace):
//     every event arrives within failure detection, the grace and a few
//     seconds, none twice, the dead node's member is removed
//     once, channels left empty by the dead node are vacated once, the
//     presence channel with a member elsewhere is not;
//   - the node restarts: no ghost (its dead member is not added again),
//     nothing repeated; the last member leaving then removes it and
//     vacates the channel once.
func TestClusterWebhooks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	rcv := webhooktest.NewReceiver("app-key", "app-secret")
	t.Cleanup(rcv.Close) // after the nodes stopped (cleanups run last-in first-out)
	nodes := startCluster(t, clusterSpec{
		name: "herald-e2e-wh", nodePrefix: "w", preset: configs.PresetLAN, outputTail: 20000,
		configure: func(_ int, cfg map[string]any) {
			cfg["log"] = map[string]any{"level": "info"}
			cfg["apps"].([]map[string]any)[0]["webhooks"] = []map[string]any{{
				"url":         rcv.URL(),
				"event_types": []string{"channel_occupied", "channel_vacated", "member_added", "member_removed"},
			}}
		},
	})
	names := []string{nodes[0].Name, nodes[1].Name, nodes[2].Name}
	const grace = configs.DefaultWebhookGrace

	dial := func(nd *clusterNode) *client.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, "ws://"+nd.Addr+"/app/app-key?protocol=7&client=go-e2e&version=1", client.Options{})
		if err != nil {
			t.Fatalf("dial %s: %v", nd.Name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	sub := func(c *client.Conn, ch string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := c.Subscribe(ctx, ch); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
	}
	join := func(c *client.Conn, ch, user string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		data := `{"user_id":"` + user + `"}`
		if _, err := c.SubscribeAuth(ctx, ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, data), data); err != nil {
			t.Fatalf("%s joins %s: %v", user, ch, err)
		}
	}
	// want waits until channel's lines are exactly lines (members'
	// lines compared as a set within each run of one kind).
	want := func(timeout time.Duration, ch string, lines ...string) {
		t.Helper()
		testkit.WaitFor(t, timeout, func() error {
			if got := rcv.Lines(ch); !slices.Equal(normalize(got), normalize(lines)) {
				return fmt.Errorf("%s: received %q, want %q", ch, got, lines)
			}
			return nil
		})
	}
	noProblems := func() {
		t.Helper()
		for _, p := range rcv.Problems() {
			t.Errorf("receiver: %s", p)
		}
	}

	// 1. Occupied through node 2, left through node 3.
	const moving = "wh-moving"
	c2, c3 := dial(nodes[1]), dial(nodes[2])
	sub(c2, moving)
	want(10*time.Second, moving, "channel_occupied")
	sub(c3, moving)
	_ = c2.Close()
	time.Sleep(grace + 2*time.Second) // c3 on node 3 still holds it
	want(time.Second, moving, "channel_occupied")
	_ = c3.Close()
	left := time.Now()
	want(12*time.Second, moving, "channel_occupied", "channel_vacated")
	t.Logf("%s: occupied through %s, left through %s; vacated received %v after the last subscriber left (owner %s)",
		moving, nodes[1].Name, nodes[2].Name, rcv.Of(moving)[1].At.Sub(left).Round(time.Millisecond), cluster.OwnerOf(names, "app-id", moving))

	// 2. The owner dies with events pending. victim owns room, held and
	// leaving; visiting is owned by a survivor, its only subscriber is on
	// the victim.
	victim, s1, s2 := nodes[2], nodes[0], nodes[1]
	owned := func(owner, prefix string, not bool) string {
		for i := 0; ; i++ {
			ch := fmt.Sprintf("%s-%d", prefix, i)
			if (cluster.OwnerOf(names, "app-id", ch) == owner) != not {
				return ch
			}
		}
	}
	room := owned(victim.Name, "presence-wh-room", false)
	held := owned(victim.Name, "wh-held", false)
	leaving := owned(victim.Name, "wh-leaving", false)
	visiting := owned(victim.Name, "wh-visiting", true)
	t.Logf("victim %s owns %s, %s, %s; %s is owned by %s", victim.Name, room, held, leaving, visiting, cluster.OwnerOf(names, "app-id", visiting))

	carol, dave, erin := dial(victim), dial(s1), dial(s2)
	join(carol, room, "carol")
	join(dave, room, "dave")
	join(erin, room, "erin")
	h, l, v := dial(victim), dial(s1), dial(victim)
	sub(h, held)
	sub(l, leaving)
	sub(v, visiting)
	want(10*time.Second, room, "channel_occupied", "member_added carol", "member_added dave", "member_added erin")
	want(10*time.Second, held, "channel_occupied")
	want(10*time.Second, leaving, "channel_occupied")
	want(10*time.Second, visiting, "channel_occupied")

	// Pending on the owner: erin's member_removed and leaving's vacated,
	// both waiting out the grace when it dies.
	_ = erin.Close()
	_ = l.Close()
	time.Sleep(time.Second)
	killedAt, pid, err := victim.kill9()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 %d (%s), %v before the pending events' grace ended", pid, victim.Name, grace-time.Second)

	// Every pending event within failure detection (lanFailureDetection,
	// measured up to 4.8 s here on a loaded box), the grace the new owner
	// starts at the takeover, and a few seconds: the outbox's and the
	// delivery consumers' elections, when the victim led them, run
	// meanwhile (4 to 9 s after the kill), and a lane pulls again a second
	// or two after its consumer's new leader says so. Nothing waits for
	// the ledger's 30 s sweep or a batch's AckWait.
	// The waits below go on past bound, to the sweep and AckWait, so
	// that an event arriving late is told apart from one never sent: the
	// loop after them fails either way, naming how late it was.
	bound := lanFailureDetection + grace + 5*time.Second
	const rescued = 40 * time.Second // the ledger's 30 s sweep, AckWait 35 s
	want(bound+rescued, room, "channel_occupied", "member_added carol", "member_added dave", "member_added erin", "member_removed erin", "member_removed carol")
	want(bound+rescued, held, "channel_occupied", "channel_vacated")
	want(bound+rescued, leaving, "channel_occupied", "channel_vacated")
	want(bound+rescued, visiting, "channel_occupied", "channel_vacated")
	for _, ch := range []string{room, held, leaving, visiting} {
		evs := rcv.Of(ch)
		last := evs[len(evs)-1]
		took := last.At.Sub(killedAt)
		t.Logf("%s: last event (%s) received %v after the kill", ch, last.Name, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("%s: %s received %v after the kill, want within %v", ch, last.Name, took.Round(time.Millisecond), bound)
		}
	}
	time.Sleep(grace + time.Second) // nothing more: dave stays, nothing doubled
	want(time.Second, room, "channel_occupied", "member_added carol", "member_added dave", "member_added erin", "member_removed erin", "member_removed carol")
	noProblems()

	// 3. The victim restarts: no ghost, no repeat.
	before := len(rcv.Events())
	if err := victim.start(heraldBinary(t)); err != nil {
		t.Fatal(err)
	}
	if err := victim.waitReady(clusterReadyTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted", victim.Name)
	time.Sleep(grace + 3*time.Second) // the rescans at its join, and their graces, are over
	if got := rcv.Events()[before:]; len(got) != 0 {
		var lines []string
		for _, e := range got {
			lines = append(lines, e.Channel+": "+e.Line())
		}
		t.Errorf("after the restart, with nothing changed, the receiver got %q", lines)
	}
	_ = dave.Close()
	want(15*time.Second, room, "channel_occupied", "member_added carol", "member_added dave", "member_added erin",
		"member_removed erin", "member_removed carol", "member_removed dave", "channel_vacated")
	time.Sleep(time.Second)
	if got := len(rcv.Events()); got != before+2 {
		t.Errorf("after the restart: %d events, want the 2 of dave leaving", got-before)
	}
	noProblems()
	t.Logf("%d events in %d requests, none twice", len(rcv.Events()), rcv.Requests())
}

// lanFailureDetection is how long the lan preset takes at most to declare
// a crashed node of three dead (cluster.Cluster.FailureDetection).
const lanFailureDetection = 4200 * time.Millisecond

// normalize sorts each run of member lines of one kind, whose order among
// themselves is not specified (they are decided together, ordered by user
// id); everything else keeps its place.
func normalize(lines []string) []string {
	out := slices.Clone(lines)
	kind := func(s string) string { k, _, _ := strings.Cut(s, " "); return k }
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && strings.HasPrefix(out[i], "member_") && kind(out[j]) == kind(out[i]) {
			j++
		}
		slices.Sort(out[i:j])
		i = j
	}
	return out
}
