package webhook

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"herald/admin"
	"herald/app"
	"herald/internal/testkit"
)

// TestReceiverDownThenBack: the receiver is down (connections refused) for
// 30 s while events are written; once it is back every event arrives, none
// twice, each channel's in order.
func TestReceiverDownThenBack(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	rcv := newReceiver(t)
	apps := testApps(t, everyEvent(rcv.url("/")))
	b := startBus(t, apps)
	s, reg := startSender(t, b, apps, func(c *Config) { c.MaxBackoff = 2 * time.Second })
	rcv.stop()
	const n = 60
	stopAt := time.Now()
	for i := range n {
		enqueue(t, s, countEvent(i, "down-"+strconv.Itoa(i%3)))
		time.Sleep(300 * time.Millisecond) // spread over the outage
	}
	time.Sleep(30*time.Second - time.Since(stopAt))
	if got := rcv.accepted(t); len(got) != 0 {
		t.Fatalf("%d events accepted while down", len(got))
	}
	rcv.start()
	evs := rcv.waitEvents(t, n, 10*time.Second)
	uniqueIDs(t, evs)
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	checkChannelOrder(t, evs)
	if counter(t, reg, "herald_webhook_events_retried_total") == 0 {
		t.Fatal("no retry counted")
	}
}

// Test500Then200: a receiver answering 500 gets the same events again
// until it answers 200; the ids are the same on every attempt.
func Test500Then200(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, time.Duration) {
		if n < 3 {
			return http.StatusInternalServerError, 0
		}
		return http.StatusOK, 0
	})
	apps := testApps(t, everyEvent(rcv.url("/")))
	b := startBus(t, apps)
	s, reg := startSender(t, b, apps, nil)
	enqueue(t, s, occupied("x1", "c500"))
	evs := rcv.waitEvents(t, 1, 10*time.Second)
	if evs[0].ID != "x1" {
		t.Fatalf("got %+v", evs[0])
	}
	reqs := rcv.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 3 refused and 1 accepted", len(reqs))
	}
	for _, q := range reqs[:3] {
		if string(q.body[len(q.body)-len(`"c500"}]}`):]) != `"c500"}]}` {
			t.Fatalf("retry body %s", q.body)
		}
	}
	if got := counter(t, reg, "herald_webhook_events_retried_total"); got != 3 {
		t.Fatalf("retried_total %v, want 3", got)
	}
	// The receiver records a request before it answers, so the sender
	// counts the success a moment after the test sees the event.
	testkit.WaitFor(t, 5*time.Second, func() error {
		if got := counter(t, reg, "herald_webhook_events_sent_total"); got != 1 {
			return fmt.Errorf("sent_total %v, want 1", got)
		}
		st, err := s.Status(context.Background())
		if err != nil {
			return err
		}
		if u := st.Webhooks[0]; u.Failures != 3 || u.Sent != 1 || u.LastError == "" || u.LastSuccess == nil {
			return fmt.Errorf("status %+v", u)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // nothing sent again once acknowledged
	if n := len(rcv.requests()); n != 4 {
		t.Fatalf("%d requests after the 200, want 4", n)
	}
}

// TestSlowReceiverRetried: a receiver slower than webhooks.timeout counts
// as failed; the event is sent again and accepted once it answers in time.
func TestSlowReceiverRetried(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, time.Duration) {
		if n < 2 {
			return http.StatusOK, 800 * time.Millisecond
		}
		return http.StatusOK, 0
	})
	apps := testApps(t, everyEvent(rcv.url("/")))
	b := startBus(t, apps)
	s, _ := startSender(t, b, apps, func(c *Config) { c.Timeout = 200 * time.Millisecond })
	enqueue(t, s, occupied("slow1", "c-slow"))
	testkit.WaitFor(t, 10*time.Second, func() error {
		reqs := rcv.requests()
		if len(reqs) < 3 || reqs[2].status != http.StatusOK {
			return fmt.Errorf("%d requests", len(reqs))
		}
		return nil
	})
	reqs := rcv.requests()
	if reqs[0].status != -1 || reqs[1].status != -1 {
		t.Fatalf("the slow answers were not abandoned by the sender: %d %d", reqs[0].status, reqs[1].status)
	}
	st, _ := s.Status(context.Background())
	if st.Webhooks[0].Failures != 2 {
		t.Fatalf("failures %d, want 2", st.Webhooks[0].Failures)
	}
}

// TestBatchingUnderBurst: events that queue up behind a slow receiver go
// out several per request, at most batch_size each, each channel's in
// order.
func TestBatchingUnderBurst(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(int) (int, time.Duration) { return http.StatusOK, 20 * time.Millisecond })
	apps := testApps(t, everyEvent(rcv.url("/")))
	b := startBus(t, apps)
	s, _ := startSender(t, b, apps, func(c *Config) { c.BatchSize = 25 })
	const n = 400
	var evs []Event
	for i := range n {
		evs = append(evs, countEvent(i, "burst-"+strconv.Itoa(i%8)))
	}
	enqueue(t, s, evs...)
	got := rcv.waitEvents(t, n, 20*time.Second)
	uniqueIDs(t, got)
	checkChannelOrder(t, got)
	reqs := rcv.requests()
	if len(reqs) >= n/4 {
		t.Fatalf("%d requests for %d events: not batched", len(reqs), n)
	}
	for _, q := range reqs {
		var bd body
		mustJSON(t, q.body, &bd)
		if len(bd.Events) > 25 {
			t.Fatalf("a request of %d events, batch_size 25", len(bd.Events))
		}
	}
	t.Logf("%d events in %d requests", n, len(reqs))
}

// TestDeadLetterThenReplay: events failing past retry_for move to the
// dead letters (status counts them, the outbox is empty); a replay over
// the admin API sends them again with the same ids.
func TestDeadLetterThenReplay(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(int) (int, time.Duration) { return http.StatusBadGateway, 0 })
	apps := testApps(t, everyEvent(rcv.url("/")))
	b := startBus(t, apps)
	s, reg := startSender(t, b, apps, func(c *Config) { c.RetryFor = time.Second })
	srv, err := admin.Listen(admin.Config{Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.Routes(srv)
	srv.Serve()
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	cl := &admin.Client{URL: srv.URL()}

	enqueue(t, s, occupied("d1", "dead-a"), occupied("d2", "dead-a"), occupied("d3", "dead-b"))
	var st Status
	testkit.WaitFor(t, 15*time.Second, func() error {
		st = Status{}
		if err := cl.Get(context.Background(), "/webhooks/status", &st); err != nil {
			return err
		}
		if st.DeadLetters[testApp] != 3 || st.Backlog != 0 {
			return fmt.Errorf("dead %v backlog %d", st.DeadLetters, st.Backlog)
		}
		return nil
	})
	testkit.WaitFor(t, 5*time.Second, func() error { // counted just after the acknowledgement
		if got := counter(t, reg, "herald_webhook_events_dead_lettered_total"); got != 3 {
			return fmt.Errorf("dead_lettered_total %v, want 3", got)
		}
		return nil
	})
	if len(rcv.accepted(t)) != 0 {
		t.Fatal("accepted while failing")
	}

	rcv.setAnswer(nil)
	var bad admin.ErrorBody
	if err := cl.Post(context.Background(), "/webhooks/replay", ReplayRequest{App: testApp, Since: "soon"}, &bad); err == nil {
		t.Fatal("replay with a bad since accepted")
	}
	var res ReplayResult
	if err := cl.Post(context.Background(), "/webhooks/replay", ReplayRequest{App: testApp, Since: "1h"}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 3 || res.Skipped != 0 {
		t.Fatalf("replay %+v", res)
	}
	got := uniqueIDs(t, rcv.waitEvents(t, 3, 10*time.Second))
	for _, id := range []string{"d1", "d2", "d3"} {
		if _, ok := got[id]; !ok {
			t.Fatalf("replayed %v, missing %s", got, id)
		}
	}
	var after Status
	if err := cl.Get(context.Background(), "/webhooks/status", &after); err != nil || after.DeadLetters[testApp] != 0 {
		t.Fatalf("after replay: %+v %v", after, err)
	}
}

// TestFilterAndHeaders: each webhook gets only the event types and channels
// it asks for, with its own headers.
func TestFilterAndHeaders(t *testing.T) {
	rcvA, rcvB := newReceiver(t), newReceiver(t)
	a := app.Webhook{
		URL:        rcvA.url("/a"),
		EventTypes: []string{app.WebhookChannelOccupied},
		Filter:     app.WebhookFilter{ChannelNameStartsWith: "private-", ChannelNameEndsWith: "-x"},
		Headers:    map[string]string{"X-Backend-Token": "tok-a"},
	}
	bh := app.Webhook{URL: rcvB.url("/b"), EventTypes: []string{app.WebhookMemberAdded}}
	apps := testApps(t, a, bh)
	b := startBus(t, apps)
	s, _ := startSender(t, b, apps, nil)
	enqueue(t, s,
		occupied("f1", "private-one-x"), // A
		occupied("f2", "private-one"),   // nobody: suffix
		occupied("f3", "public-x"),      // nobody: prefix
		Event{ID: "f4", Name: app.WebhookMemberAdded, Channel: "presence-p-x", UserID: "1"}, // B
		occupied("f5", "private-two-x"), // A
	)
	gotA := rcvA.waitEvents(t, 2, 10*time.Second)
	gotB := rcvB.waitEvents(t, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	gotA, gotB = rcvA.accepted(t), rcvB.accepted(t)
	idsA := uniqueIDs(t, gotA)
	if len(gotA) != 2 || idsA["f1"].ID == "" || idsA["f5"].ID == "" {
		t.Fatalf("A got %+v", gotA)
	}
	if len(gotB) != 1 || gotB[0].ID != "f4" {
		t.Fatalf("B got %+v", gotB)
	}
	for _, q := range rcvA.requests() {
		if q.header.Get("X-Backend-Token") != "tok-a" {
			t.Fatalf("A's header missing: %v", q.header)
		}
	}
	for _, q := range rcvB.requests() {
		if q.header.Get("X-Backend-Token") != "" {
			t.Fatal("B got A's header")
		}
	}
}

// TestReloadAddsAndRemovesWebhook: a webhook added by a reload
// (Registry.Replace) gets the events written after it; one removed gets
// nothing more, and its pending events are dropped and counted.
func TestReloadAddsAndRemovesWebhook(t *testing.T) {
	rcv := newReceiver(t)
	apps := testApps(t)
	b := startBus(t, apps)
	s, reg := startSender(t, b, apps, nil)
	enqueue(t, s, occupied("r0", "reload")) // no webhook yet: not stored

	a, _ := apps.ByID(testApp)
	with := *a
	with.Webhooks = []app.Webhook{everyEvent(rcv.url("/"))}
	apps.Replace([]app.App{with})
	testkit.WaitFor(t, 5*time.Second, func() error {
		st, err := s.Status(context.Background())
		if err != nil || len(st.Webhooks) != 1 {
			return fmt.Errorf("status %+v %v", st, err)
		}
		return nil
	})
	enqueue(t, s, occupied("r1", "reload"))
	if got := rcv.waitEvents(t, 1, 10*time.Second); got[0].ID != "r1" {
		t.Fatalf("got %+v", got)
	}

	rcv.setAnswer(func(int) (int, time.Duration) { return http.StatusServiceUnavailable, 0 })
	enqueue(t, s, occupied("r2", "reload"))
	testkit.WaitFor(t, 5*time.Second, func() error {
		if len(rcv.requests()) < 2 {
			return errNotYet
		}
		return nil
	})
	apps.Replace([]app.App{*a})
	testkit.WaitFor(t, 5*time.Second, func() error {
		if got := counter(t, reg, "herald_webhook_events_dropped_total"); got != 1 {
			return fmt.Errorf("dropped_total %v, want 1", got)
		}
		return nil
	})
	st, err := s.Status(context.Background())
	if err != nil || len(st.Webhooks) != 0 || st.Backlog != 0 {
		t.Fatalf("after removal: %+v %v", st, err)
	}
}

// countEvent is a subscription_count event whose count is i, so that the
// receiver can check each channel's order.
func countEvent(i int, channel string) Event {
	c := i
	return Event{ID: "n" + strconv.Itoa(i), Name: app.WebhookSubscriptionCount, Channel: channel, SubscriptionCount: &c}
}

// checkChannelOrder fails when a channel's counts arrive out of order.
func checkChannelOrder(t testing.TB, evs []Event) {
	t.Helper()
	last := map[string]int{}
	for _, ev := range evs {
		if ev.SubscriptionCount == nil {
			continue
		}
		if prev, ok := last[ev.Channel]; ok && *ev.SubscriptionCount <= prev {
			t.Fatalf("channel %s: %d after %d", ev.Channel, *ev.SubscriptionCount, prev)
		}
		last[ev.Channel] = *ev.SubscriptionCount
	}
}
