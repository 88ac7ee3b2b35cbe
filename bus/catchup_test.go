package bus

import (
	"testing"
	"time"
)

// A new subscription whose first live events never arrive (in a cluster:
// the interest had not reached the stream leader's server yet) gets them
// from the stream when its first live message shows a predecessor.
func TestCatchupOnFirstLiveMessage(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.setDropLive(func(m *Message) bool { return string(m.Payload) == `{"n":"A"}` })
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	b.setDropLive(nil)
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	checkSeq(t, sink.waitCount(t, "ch", 2), []histEvent{{a, `{"n":"A"}`, ""}, {c, `{"n":"C"}`, ""}}, 0)
	time.Sleep(2 * catchupDelay) // the catch-up tick must not deliver A again
	if n := len(sink.forChannel("ch")); n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
}

// When nothing more is published, the catch-up tick delivers what the new
// subscription missed.
func TestCatchupTick(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.setDropLive(func(m *Message) bool { return true })
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	b.setDropLive(nil)
	checkSeq(t, sink.waitCount(t, "ch", 1), []histEvent{{a, `{"n":"A"}`, ""}}, 0)
	// Later live messages follow on, once each.
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	got := sink.waitCount(t, "ch", 2)
	if got[1].Serial != c {
		t.Fatalf("got %+v", got)
	}
}

// Without loss, the catch-up changes nothing.
func TestCatchupNoLoss(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app1", "ch")
	flush(t, b)
	a := publish(t, b, "app1", "ch", `{"n":"A"}`, "")
	c := publish(t, b, "app1", "ch", `{"n":"C"}`, "")
	checkSeq(t, sink.waitCount(t, "ch", 2), []histEvent{{a, `{"n":"A"}`, ""}, {c, `{"n":"C"}`, ""}}, 0)
	time.Sleep(2 * catchupDelay)
	if n := len(sink.forChannel("ch")); n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
}
