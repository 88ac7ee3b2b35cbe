package bus

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/internal/testkit"
)

// setDropLive installs a test hook that sees each live message (with a
// serial) before the gap check and loses it when drop returns true, as a
// republish lost in a leader change would be; nil removes it.
func (b *Bus) setDropLive(drop func(*Message) bool) {
	if drop == nil {
		b.hist.dropLive.Store(nil)
		return
	}
	b.hist.dropLive.Store(&drop)
}

// checkSeq fails unless got is exactly the events want (serials and
// payloads) in order, each PrevSerial the serial before it.
func checkSeq(t testing.TB, got []Message, want []histEvent, prev0 uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	prev := prev0
	for i, m := range got {
		w := want[i]
		if m.Serial != w.serial || string(m.Payload) != w.payload || m.Exclude != w.exclude || m.PrevSerial != prev {
			t.Fatalf("message %d = serial %d prev %d %q excl %q; want serial %d prev %d %q excl %q",
				i, m.Serial, m.PrevSerial, m.Payload, m.Exclude, w.serial, prev, w.payload, w.exclude)
		}
		prev = m.Serial
	}
}

func TestGapRepairLostMessage(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	const ch = "private-App.Models.User.7"
	b.Subscribe("app1", ch)
	b.Subscribe("app1", "other")
	flush(t, b)

	a := publish(t, b, "app1", ch, `{"event":"A"}`, "")
	sink.waitCount(t, ch, 1)
	var dropped atomic.Int32
	b.setDropLive(func(m *Message) bool {
		if string(m.Payload) == `{"event":"B"}` {
			dropped.Add(1)
			return true
		}
		return false
	})
	bs := publish(t, b, "app1", ch, `{"event":"B"}`, "1.2")
	o := publish(t, b, "app1", "other", `{"event":"O"}`, "")
	sink.waitCount(t, "other", 1)
	// "other" may be on another delivery shard, so it is no barrier for B:
	// wait for B to reach the hook.
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := dropped.Load(); n != 1 {
			return fmt.Errorf("B dropped %d times", n)
		}
		return nil
	})
	c := publish(t, b, "app1", ch, `{"event":"C"}`, "")

	got := sink.waitCount(t, ch, 3)
	checkSeq(t, got, []histEvent{{a, `{"event":"A"}`, ""}, {bs, `{"event":"B"}`, "1.2"}, {c, `{"event":"C"}`, ""}}, 0)
	time.Sleep(50 * time.Millisecond)
	if n := len(sink.forChannel(ch)); n != 3 {
		t.Fatalf("%d messages on %s, want 3", n, ch)
	}
	if n := len(sink.forChannel("other")); n != 1 {
		t.Fatalf("%d messages on other, want 1 (serial %d)", n, o)
	}
	st := b.Stats()
	if st.GapRepairs != 1 || st.GapMessages != 1 || st.GapRepairFailures != 0 || st.LiveDuplicates != 0 || st.Delivered != 4 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A long gap, among another channel's messages: more than one batch is
// read, up to the live message and no further.
func TestGapRepairManyLost(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app1", "ch")
	b.Subscribe("app1", "other")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	sink.waitCount(t, "ch", 1)

	var dropped atomic.Int32
	b.setDropLive(func(m *Message) bool {
		if m.Channel == "ch" && strings.HasPrefix(string(m.Payload), `{"lost":`) {
			dropped.Add(1)
			return true
		}
		return false
	})
	want := []histEvent{{a, `{"n":"A"}`, ""}}
	want = append(want, publishMixed(t, b, "ch", "other", 600, func(i int) string { return fmt.Sprintf(`{"lost":%d}`, i) })...)
	sink.waitCount(t, "other", 600)
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := dropped.Load(); n != 600 {
			return fmt.Errorf("%d of 600 dropped", n)
		}
		return nil
	})
	b.setDropLive(nil)
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	d := publish(t, b, "app1", "ch", `{"n":"D"}`, "")
	want = append(want, histEvent{c, `{"n":"C"}`, ""}, histEvent{d, `{"n":"D"}`, ""})

	checkSeq(t, sink.waitCount(t, "ch", len(want)), want, 0)
	st := b.Stats()
	if st.GapRepairs != 1 || st.GapMessages != 600 || st.GapRepairFailures != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// Sink calls during a repair keep the contract: at most MaxDrain Deliver
// calls between two Flush calls.
type drainSink struct {
	recSink
	since, most atomic.Int64
}

func (s *drainSink) Deliver(shard int, m *Message) {
	if n := s.since.Add(1); n > s.most.Load() {
		s.most.Store(n)
	}
	s.recSink.Deliver(shard, m)
}

func (s *drainSink) Flush(shard int) {
	s.since.Store(0)
	s.recSink.Flush(shard)
}

func TestGapRepairFlushesEveryMaxDrain(t *testing.T) {
	sink := &drainSink{}
	cfg := testConfig(t)
	cfg.Shards = 1
	cfg.MaxMsgsPerChannel = 0 // keep every lost message
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	publish(t, b, "app1", "ch", `{}`, "")
	sink.waitCount(t, "ch", 1)
	var dropped atomic.Int32
	b.setDropLive(func(m *Message) bool {
		if string(m.Payload) == `{"lost":1}` {
			dropped.Add(1)
			return true
		}
		return false
	})
	ps := make([]Publication, 3*MaxDrain)
	for i := range ps {
		ps[i] = Publication{App: "app1", Channel: "ch", Payload: []byte(`{"lost":1}`)}
	}
	if _, err := b.PublishBatch(ctxT(t), ps); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := dropped.Load(); int(n) != len(ps) {
			return fmt.Errorf("%d of %d dropped", n, len(ps))
		}
		return nil
	})
	b.setDropLive(nil)
	publish(t, b, "app1", "ch", `{}`, "")
	sink.waitCount(t, "ch", 2+len(ps))
	if most := sink.most.Load(); most > MaxDrain {
		t.Fatalf("%d Deliver calls between two Flush calls, want at most %d", most, MaxDrain)
	}
	if st := b.Stats(); st.GapRepairs != 1 || st.GapMessages != uint64(len(ps)) || st.GapRepairFailures != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// livePublish puts a message straight on a live subject, as the stream's
// republish would, with the given serials.
func livePublish(t testing.TB, b *Bus, ch string, serial, prev uint64, payload string) {
	t.Helper()
	m := &nats.Msg{Subject: LiveSubject("app1", ch), Data: []byte(payload), Header: nats.Header{
		headerSequence:     []string{strconv.FormatUint(serial, 10)},
		headerLastSequence: []string{strconv.FormatUint(prev, 10)},
	}}
	if err := b.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

func TestGapDuplicatesDropped(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	sink.waitCount(t, "ch", 2)
	livePublish(t, b, "ch", a, 0, `{"n":"A again"}`)
	livePublish(t, b, "ch", c, a, `{"n":"C again"}`)
	d := publish(t, b, "app1", "ch", `{"n":"D"}`, "")
	checkSeq(t, sink.waitCount(t, "ch", 3), []histEvent{{a, `{"n":"A"}`, ""}, {c, `{"n":"C"}`, ""}, {d, `{"n":"D"}`, ""}}, 0)
	if st := b.Stats(); st.LiveDuplicates != 2 || st.GapRepairs != 0 || st.Delivered != 3 {
		t.Fatalf("Stats = %+v", st)
	}
}

// The first message after subscribing is not checked: what came before was
// not this node's to deliver.
func TestGapFirstMessageNotChecked(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	x := publish(t, b, "app1", "ch", `{"n":"X"}`, "")
	// X is older than the catch-up margin of a new subscription (catchup.go),
	// so it is history, not a missed live event.
	time.Sleep(2 * catchupMargin)
	b.Subscribe("app1", "ch")
	flush(t, b)
	y := publish(t, b, "app1", "ch", `{"n":"Y"}`, "")
	checkSeq(t, sink.waitCount(t, "ch", 1), []histEvent{{y, `{"n":"Y"}`, ""}}, x)
	if st := b.Stats(); st.GapRepairs != 0 || st.Delivered != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A gap the stream cannot fill (here: a PrevSerial nothing was stored at)
// is counted and logged, and the message delivered anyway.
func TestGapRepairFails(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	sink.waitCount(t, "ch", 1)
	livePublish(t, b, "ch", a+100, a+50, `{"n":"ghost"}`)
	got := sink.waitCount(t, "ch", 2)
	if got[1].Serial != a+100 {
		t.Fatalf("got %+v", got[1])
	}
	if st := b.Stats(); st.GapRepairs != 1 || st.GapRepairFailures != 1 || st.GapMessages != 0 || st.Delivered != 2 {
		t.Fatalf("Stats = %+v", st)
	}
	// The next real message is behind the ghost's serial: a duplicate by
	// the rule, so the ghost's serial is where the channel stands.
	publish(t, b, "app1", "ch", `{"n":"B"}`, "")
	testkit.WaitFor(t, 5*time.Second, func() error {
		if st := b.Stats(); st.LiveDuplicates != 1 {
			return fmt.Errorf("Stats = %+v", st)
		}
		return nil
	})
}

// A subscription dropped after its grace period is forgotten; the next one
// starts fresh (its first message is not checked).
func TestGapForgetsDroppedSubscription(t *testing.T) {
	sink := &recSink{}
	cfg := testConfig(t)
	cfg.UnsubscribeGrace = 20 * time.Millisecond
	cfg.Shards = 1
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	sink.waitCount(t, "ch", 1)
	b.Unsubscribe("app1", "ch")
	testkit.WaitFor(t, 5*time.Second, func() error {
		if st := b.Stats(); st.LiveSubscriptions != 0 {
			return fmt.Errorf("Stats = %+v", st)
		}
		return nil
	})
	publish(t, b, "app1", "ch", `{"n":"B"}`, "") // nobody listens
	// B is older than the new subscription's catch-up margin (catchup.go).
	time.Sleep(2 * catchupMargin)
	b.Subscribe("app1", "ch")
	flush(t, b)
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	got := sink.waitCount(t, "ch", 2)
	if got[0].Serial != a || got[1].Serial != c {
		t.Fatalf("got %+v", got)
	}
	if st := b.Stats(); st.GapRepairs != 0 {
		t.Fatalf("Stats = %+v", st)
	}

	// The shard's map: the dropped subscription's entry goes at a prune.
	// (The shard goroutine wrote it before delivering C, which waitCount
	// saw under the sink's lock, and has nothing more to do.)
	g := b.gapShardOf(0)
	if len(g.subs) != 2 {
		t.Fatalf("%d entries before prune, want 2", len(g.subs))
	}
	g.prune()
	if len(g.subs) != 1 {
		t.Fatalf("%d entries after prune, want 1 (the live subscription)", len(g.subs))
	}
}

func TestGapShardPrune(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	var g gapShard
	var subs []*nats.Subscription
	for i := range gapPruneMin {
		sub, err := b.nc.SubscribeSync(fmt.Sprintf("x.%d", i))
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		g.insert(sub, &gapEntry{last: 1})
	}
	for _, sub := range subs[:gapPruneMin/2] {
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
	// A dropped subscription is not inserted.
	g.insert(subs[0], &gapEntry{last: 2})
	if len(g.subs) != gapPruneMin/2 {
		t.Fatalf("%d entries after the prune an insert at %d did, want %d", len(g.subs), gapPruneMin, gapPruneMin/2)
	}
	if g.pruneLen != gapPruneMin {
		t.Fatalf("pruneLen = %d", g.pruneLen)
	}
	for _, sub := range subs[gapPruneMin/2:] {
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
}

// The gap check adds no allocation to delivering a live message.
func TestDeliverOneGapCheckAllocs(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	sub, err := b.nc.SubscribeSync("x.y")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	msgs := make([]*nats.Msg, 300)
	for i := range msgs {
		msgs[i] = liveMsgForBench("app1", "presence-room-42")
		msgs[i].Header[headerSequence] = []string{strconv.Itoa(i + 1)}
		msgs[i].Header[headerLastSequence] = []string{strconv.Itoa(i)}
		msgs[i].Sub = sub
	}
	m := new(Message)
	b.deliverOne(0, m, msgs[0])
	i := 1
	if n := testing.AllocsPerRun(100, func() {
		if b.deliverOne(0, m, msgs[i]) != 1 {
			t.Fatal("not delivered")
		}
		i++
	}); n != 0 {
		t.Fatalf("deliverOne with a gap check allocates %v times", n)
	}
	if st := b.Stats(); st.GapRepairs != 0 || st.LiveDuplicates != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A stream deleted and made again restarts its serials: live delivery goes
// on from the new ones rather than dropping them as duplicates.
func TestGapStreamRecreated(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	for i := range 3 {
		publish(t, b, "app1", "ch", fmt.Sprintf(`{"old":%d}`, i), "")
	}
	sink.waitCount(t, "ch", 3)
	if err := b.js.DeleteStream(ctxT(t), StreamName("app1")); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureApp(ctxT(t), "app1"); err != nil {
		t.Fatal(err)
	}
	x := publish(t, b, "app1", "ch", `{"new":"X"}`, "")
	y := publish(t, b, "app1", "ch", `{"new":"Y"}`, "")
	if x != 1 || y != 2 {
		t.Fatalf("serials %d, %d after recreating the stream", x, y)
	}
	got := sink.waitCount(t, "ch", 5)
	checkSeq(t, got[3:], []histEvent{{x, `{"new":"X"}`, ""}, {y, `{"new":"Y"}`, ""}}, 0)
	if st := b.Stats(); st.LiveDuplicates != 0 || st.GapRepairs != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// TestClusterLiveGapFree: nodes subscribed to a channel see every stored
// event of it exactly once and in order across a stream leader stop (when
// a republish is lost in the change, the next event exposes the gap and the
// node repairs it), and History through a survivor reads the same events.
func TestClusterLiveGapFree(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, clusterConfigs(t, 3))
	testkit.WaitFor(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if ci := n.bus.ClusterInfo(); ci.Peers != 3 || !ci.Ready() {
				return fmt.Errorf("%s: %+v", n.cfg.ServerName, ci)
			}
		}
		return nil
	})
	checkClusterStreams(t, nodes[0].bus)
	li := nodeByName(t, nodes, streamLeader(t, nodes[0].bus, StreamName("app1")))
	var via []*Bus
	var subs []*clusterNode
	for i, n := range nodes {
		if i != li {
			via = append(via, n.bus)
			subs = append(subs, n)
			n.bus.Subscribe("app1", "numbers")
		}
	}
	waitInterest(t, via, LiveSubject("app1", "numbers"), 2)

	run := publishAcross(t, via, 100, 100, func() { nodes[li].close(t) })
	marker := publish(t, via[0], "app1", "numbers", `{"n":-1}`, "")

	// What is stored, read through a survivor (a lagging replica may
	// answer short for a moment).
	var stored []histEvent
	testkit.WaitFor(t, 10*time.Second, func() error {
		stored = stored[:0]
		res, err := via[0].History(ctxT(t), "app1", "numbers", 0, func(serial uint64, payload []byte, exclude string) error {
			stored = append(stored, histEvent{serial, string(payload), exclude})
			return nil
		})
		if err == nil && res.Last != marker {
			err = fmt.Errorf("history up to %d, want %d", res.Last, marker)
		}
		return err
	})
	if len(stored) < len(run.recs) {
		t.Fatalf("%d events stored, %d published", len(stored), len(run.recs))
	}
	for _, n := range subs {
		checkSeq(t, n.sink.waitCount(t, "numbers", len(stored)), stored, 0)
		st := n.bus.Stats()
		t.Logf("%s: %d events; gap repairs %d (%d events), failures %d, duplicates %d",
			n.cfg.ServerName, len(stored), st.GapRepairs, st.GapMessages, st.GapRepairFailures, st.LiveDuplicates)
	}
	time.Sleep(100 * time.Millisecond)
	for _, n := range subs {
		if got := len(n.sink.forChannel("numbers")); got != len(stored) {
			t.Fatalf("%s: %d events delivered, %d stored", n.cfg.ServerName, got, len(stored))
		}
	}
}

// BenchmarkDeliverOneGapCheck: deliverOne for messages in sequence, with
// and without the gap check (a message from a live subscription, or one
// with no subscription, which is not checked).
func BenchmarkDeliverOneGapCheck(b *testing.B) {
	for _, check := range []bool{false, true} {
		b.Run(fmt.Sprintf("check=%v", check), func(b *testing.B) {
			bus := startBus(b, testConfig(b), nopSink{})
			msgs := make([]*nats.Msg, 1<<14)
			for i := range msgs {
				msgs[i] = liveMsgForBench("app1", "presence-room-42")
				msgs[i].Header[headerSequence] = []string{strconv.Itoa(i + 1)}
				msgs[i].Header[headerLastSequence] = []string{strconv.Itoa(i)}
				msgs[i].Header[headerTimeStamp] = []string{"2026-11-23T16:42:32.281123456Z"}
			}
			var sub *nats.Subscription
			newSub := func() { // a new subscription starts the serials over
				if !check {
					return
				}
				if sub != nil {
					sub.Unsubscribe()
				}
				var err error
				if sub, err = bus.nc.SubscribeSync("x.y"); err != nil {
					b.Fatal(err)
				}
				for _, msg := range msgs {
					msg.Sub = sub
				}
			}
			newSub()
			m := new(Message)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i == len(msgs) {
					b.StopTimer()
					newSub()
					i = 0
					b.StartTimer()
				}
				if bus.deliverOne(0, m, msgs[i]) != 1 {
					b.Fatal("not delivered")
				}
				i++
			}
			if st := bus.Stats(); st.GapRepairs != 0 || st.LiveDuplicates != 0 {
				b.Fatalf("Stats = %+v", st)
			}
		})
	}
}
