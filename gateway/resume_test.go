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
