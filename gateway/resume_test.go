package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/bus"
	"herald/client"
	"herald/protocol"
)

func startResumeEdge(t *testing.T, mutate func(*Config)) *edge {
	return startEdge(t, func(c *Config) {
		c.Replayer = c.Bus.(*bus.Bus)
		if mutate != nil {
			mutate(c)
		}
	})
}

// subscribeResume subscribes with herald_resume and returns the events up
// to and including the resume report.
func subscribeResume(t *testing.T, c *client.Conn, ch string, from uint64) (events []client.Event, report client.Event) {
	t.Helper()
	msg, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": ch, "herald_resume": from}})
	if err := c.SendRaw(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitFor(ctx5(t), "pusher_internal:subscription_succeeded", ch); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := c.Next(ctx5(t))
		if err != nil {
			t.Fatalf("waiting for the resume report: %v (after %d events)", err, len(events))
		}
		if ev.Channel != ch {
			continue
		}
		if strings.HasPrefix(ev.Event, "pusher_internal:resume_") {
			return events, ev
		}
		events = append(events, ev)
	}
}

func TestResumeReplaysWhatWasMissed(t *testing.T) {
	e := startResumeEdge(t, nil)
	a := dial(t, e.url("app-key"))
	if err := a.Subscribe(ctx5(t), "r"); err != nil {
		t.Fatal(err)
	}
	s1 := publish(t, e, "r", "e", "1", "")
	s2 := publish(t, e, "r", "e", "2", "")
	for _, want := range []uint64{s1, s2} {
		if ev, err := a.WaitFor(ctx5(t), "e", "r"); err != nil || ev.Serial != want {
			t.Fatalf("live: %+v %v", ev, err)
		}
	}
	a.CloseNow()
	s3 := publish(t, e, "r", "e", "3", "")
	s4 := publish(t, e, "r", "e", "4", "")

	b := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, b, "r", s2)
	if len(events) != 2 || events[0].Serial != s3 || events[1].Serial != s4 || events[0].Data != "3" {
		t.Fatalf("replayed %+v", events)
	}
	want := fmt.Sprintf(`{"from":%d,"replayed":2,"to":%d}`, s2, s4)
	if report.Event != "pusher_internal:resume_ok" || report.Data != want {
		t.Fatalf("report %+v, want data %s", report, want)
	}
	s5 := publish(t, e, "r", "e", "5", "")
	if ev, err := b.WaitFor(ctx5(t), "e", "r"); err != nil || ev.Serial != s5 {
		t.Fatalf("live after resume: %+v %v", ev, err)
	}
}

// TestResumeUnderLoad resumes while events are published continuously: the
// client must end with every event exactly once, in order.
func TestResumeUnderLoad(t *testing.T) {
	e := startResumeEdge(t, nil)
	const total = 400
	var mu sync.Mutex
	var published []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			seq, err := e.bus.Publish(context.Background(), bus.Publication{App: "app-id", Channel: "load",
				Payload: protocol.AppendEvent(nil, "n", "load", fmt.Sprint(i), "")})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			published = append(published, seq)
			mu.Unlock()
			if i%50 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	var got []uint64
	var last uint64
	for round := 0; round < 4; round++ {
		c := dial(t, e.url("app-key"))
		// Round 0 resumes from 0: everything the window holds, since the
		// publisher may already have started.
		evs, rep := subscribeResume(t, c, "load", last)
		if rep.Event != "pusher_internal:resume_ok" {
			t.Fatalf("round %d: %+v", round, rep)
		}
		nrep := len(evs)
		for i := 0; i < 40; i++ {
			ev, err := c.WaitFor(ctx5(t), "n", "load")
			if err != nil {
				break
			}
			evs = append(evs, ev)
		}
		for i, ev := range evs {
			if ev.Serial <= last {
				var ss []uint64
				for _, e := range evs {
					ss = append(ss, e.Serial)
				}
				t.Fatalf("round %d: serial %d after %d (duplicate or out of order) at %d of %v (replayed %d, report %s)", round, ev.Serial, last, i, ss, nrep, rep.Data)
			}
			last = ev.Serial
			got = append(got, ev.Serial)
		}
		c.CloseNow()
	}
	<-done
	c := dial(t, e.url("app-key"))
	evs, rep := subscribeResume(t, c, "load", last)
	if rep.Event != "pusher_internal:resume_ok" {
		t.Fatalf("final: %+v", rep)
	}
	for _, ev := range evs {
		if ev.Serial <= last {
			t.Fatalf("final: serial %d after %d", ev.Serial, last)
		}
		last = ev.Serial
		got = append(got, ev.Serial)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(published) {
		t.Fatalf("got %d events, published %d; first difference near %v / %v", len(got), len(published), head(got), head(published))
	}
}

func head(s []uint64) []uint64 { return s[:min(5, len(s))] }

func TestResumeWindowPassed(t *testing.T) {
	e := startEdgeWith(t, func(c *Config) { c.Replayer = c.Bus.(*bus.Bus) }, func(b *bus.Config) { b.MaxMsgsPerChannel = 5 })
	var serials []uint64
	for i := range 20 {
		serials = append(serials, publish(t, e, "w", "e", fmt.Sprint(i), ""))
	}
	c := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, c, "w", serials[2])
	if report.Event != "pusher_internal:resume_failed" || !strings.Contains(report.Data, `"reason":"window_passed"`) {
		t.Fatalf("report %+v", report)
	}
	if len(events) != 5 || events[4].Serial != serials[19] {
		t.Fatalf("replayed what is left: %d events", len(events))
	}
}

func TestResumeWithoutStream(t *testing.T) {
	e := startEdge(t, nil) // no replayer attached
	c := dial(t, e.url("app-key"))
	_, report := subscribeResume(t, c, "x", 7)
	if report.Event != "pusher_internal:resume_failed" || !strings.Contains(report.Data, `"reason":"disabled"`) {
		t.Fatalf("report %+v", report)
	}
}

// laggingReplayer is the node's bus read through a stream replica that has
// not applied the newest events yet (any replica answers the direct gets of
// a replay; a follower applies an event a moment after the leader
// acknowledged and republished it: node TestClusterResumeRightAfterLiveCopy
// shows it on a real cluster). Its next `short` reads stop before serial
// upTo, as that replica's would; before returns, the hook runs (once).
type laggingReplayer struct {
	b      *bus.Bus
	mu     sync.Mutex
	upTo   uint64
	short  int
	reads  int
	before func()
}

var errLagging = fmt.Errorf("lagging replica: stop")

func (l *laggingReplayer) History(ctx context.Context, app, channel string, after uint64, fn func(serial uint64, payload []byte, exclude string) error) (bus.HistoryResult, error) {
	l.mu.Lock()
	l.reads++
	upTo := uint64(0)
	if l.short > 0 {
		l.short--
		upTo = l.upTo
	}
	before := l.before
	l.before = nil
	l.mu.Unlock()
	if before != nil {
		before()
	}
	if upTo == 0 {
		return l.b.History(ctx, app, channel, after, fn)
	}
	res := bus.HistoryResult{Last: after}
	_, err := l.b.History(ctx, app, channel, after, func(serial uint64, payload []byte, exclude string) error {
		if serial >= upTo {
			return errLagging
		}
		res.Last = serial
		res.Count++
		return fn(serial, payload, exclude)
	})
	if err != nil && err != errLagging {
		return res, err
	}
	return res, nil
}

func (l *laggingReplayer) readCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads
}

func startLaggingEdge(t *testing.T, lag *laggingReplayer) *edge {
	return startEdge(t, func(c *Config) {
		lag.b = c.Bus.(*bus.Bus)
		c.Replayer = lag
	})
}

func serialsOf(evs []client.Event) []uint64 {
	var s []uint64
	for _, ev := range evs {
		s = append(s, ev.Serial)
	}
	return s
}

// The event delivered on this node just before the resume's subscription
// entered the index went by before the hold, so only the replay can bring
// it. A read that stops short of it is made again.
func TestResumeShortReadOfWhatWentBy(t *testing.T) {
	lag := &laggingReplayer{}
	e := startLaggingEdge(t, lag)
	w := dial(t, e.url("app-key"))
	if err := w.Subscribe(ctx5(t), "r"); err != nil {
		t.Fatal(err)
	}
	s1 := publish(t, e, "r", "e", "1", "")
	s2 := publish(t, e, "r", "e", "2", "")
	if ev, err := w.WaitFor(ctx5(t), "e", "r"); err != nil || ev.Serial != s1 {
		t.Fatalf("live: %+v %v", ev, err)
	}
	if ev, err := w.WaitFor(ctx5(t), "e", "r"); err != nil || ev.Serial != s2 {
		t.Fatalf("live: %+v %v", ev, err)
	}
	// A client that saw s1 on a node that went away resumes here, and the
	// replica that answers has not applied s2 yet.
	lag.mu.Lock()
	lag.upTo, lag.short = s2, 1
	lag.mu.Unlock()
	b := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, b, "r", s1)
	if got := serialsOf(events); fmt.Sprint(got) != fmt.Sprint([]uint64{s2}) {
		t.Fatalf("replayed %v, want [%d] (report %s)", got, s2, report.Data)
	}
	want := fmt.Sprintf(`{"from":%d,"replayed":1,"to":%d}`, s1, s2)
	if report.Event != "pusher_internal:resume_ok" || report.Data != want {
		t.Fatalf("report %+v, want data %s", report, want)
	}
	if n := lag.readCount(); n != 2 {
		t.Fatalf("%d reads, want the short one and one more", n)
	}
	if n := e.g.Metrics().ReplayRereads; n != 1 {
		t.Fatalf("ReplayRereads %d, want 1", n)
	}
}

// A live event held during the replay whose predecessor on the channel is
// above what the read returned shows the read was short: the events in
// between are read before it is queued.
func TestResumeShortReadBeforeHeldEvent(t *testing.T) {
	lag := &laggingReplayer{}
	e := startLaggingEdge(t, lag)
	s1 := publish(t, e, "h", "e", "1", "")
	s2 := publish(t, e, "h", "e", "2", "")
	w := dial(t, e.url("app-key"))
	published := make(chan uint64, 1) // s3, from the replay worker's goroutine
	lag.mu.Lock()
	lag.upTo, lag.short = s2, 1
	lag.before = func() {
		// The resuming socket is in the index (seen nothing: no one was
		// subscribed here) and its hold is on: s3 arrives and is held.
		defer close(published)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.Subscribe(ctx, "h"); err != nil {
			t.Error(err)
			return
		}
		s3, err := e.bus.Publish(ctx, bus.Publication{App: "app-id", Channel: "h", Payload: protocol.AppendEvent(nil, "e", "h", "3", "")})
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := w.WaitFor(ctx, "e", "h"); err != nil {
			t.Error(err)
		}
		published <- s3
	}
	lag.mu.Unlock()
	b := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, b, "h", s1)
	s3, ok := <-published
	if !ok {
		t.Fatal("s3 was not published")
	}
	if got := serialsOf(events); fmt.Sprint(got) != fmt.Sprint([]uint64{s2, s3}) {
		t.Fatalf("replayed %v, want [%d %d] (report %s)", got, s2, s3, report.Data)
	}
	if report.Event != "pusher_internal:resume_ok" || !strings.Contains(report.Data, fmt.Sprintf(`"to":%d`, s3)) {
		t.Fatalf("report %+v", report)
	}
}

// When nothing showed the read was short while the replay ran, the first
// live event after it does: its predecessor is above the floor. The hold
// comes back, the events in between are read, and the client gets them
// before it, in order, with no second report.
func TestResumeRepairAfterReport(t *testing.T) {
	lag := &laggingReplayer{}
	e := startLaggingEdge(t, lag)
	s1 := publish(t, e, "a", "e", "1", "")
	s2 := publish(t, e, "a", "e", "2", "")
	lag.mu.Lock()
	lag.upTo, lag.short = s2, 1
	lag.mu.Unlock()
	b := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, b, "a", s1)
	if len(events) != 0 || report.Event != "pusher_internal:resume_ok" {
		t.Fatalf("first replay %v, report %+v", serialsOf(events), report)
	}
	s3 := publish(t, e, "a", "e", "3", "")
	s4 := publish(t, e, "a", "e", "4", "")
	var got []uint64
	for len(got) < 3 {
		ev, err := b.Next(ctx5(t))
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		if ev.Channel != "a" {
			continue
		}
		if ev.Event != "e" {
			t.Fatalf("after %v: %s %s", got, ev.Event, ev.Data)
		}
		got = append(got, ev.Serial)
	}
	if fmt.Sprint(got) != fmt.Sprint([]uint64{s2, s3, s4}) {
		t.Fatalf("got %v, want [%d %d %d]", got, s2, s3, s4)
	}
	if n := e.g.Metrics().ReplayRereads; n != 1 {
		t.Fatalf("ReplayRereads %d, want 1", n)
	}
}

// A read that stays short is not reported as a complete replay: the client
// is told resume_failed "unavailable" and gets what the read had, then live.
func TestResumeStaysShort(t *testing.T) {
	lag := &laggingReplayer{}
	e := startLaggingEdge(t, lag)
	w := dial(t, e.url("app-key"))
	if err := w.Subscribe(ctx5(t), "s"); err != nil {
		t.Fatal(err)
	}
	s1 := publish(t, e, "s", "e", "1", "")
	s2 := publish(t, e, "s", "e", "2", "")
	for range 2 {
		if _, err := w.WaitFor(ctx5(t), "e", "s"); err != nil {
			t.Fatal(err)
		}
	}
	lag.mu.Lock()
	lag.upTo, lag.short = s2, 1000
	lag.mu.Unlock()
	b := dial(t, e.url("app-key"))
	events, report := subscribeResume(t, b, "s", s1-1)
	if got := serialsOf(events); fmt.Sprint(got) != fmt.Sprint([]uint64{s1}) {
		t.Fatalf("replayed %v, want [%d]", got, s1)
	}
	want := fmt.Sprintf(`{"from":%d,"reason":"unavailable"}`, s1-1)
	if report.Event != "pusher_internal:resume_failed" || report.Data != want {
		t.Fatalf("report %+v, want resume_failed %s", report, want)
	}
	if n := lag.readCount(); n != 1+len(replayShortPauses) {
		t.Fatalf("%d reads, want %d", n, 1+len(replayShortPauses))
	}
}
