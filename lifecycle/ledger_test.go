package lifecycle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"herald/app"
	"herald/bus"
	"herald/hook"
	"herald/internal/outboxtest"
	"herald/internal/testkit"
	"herald/lifecycle"
	"herald/presence"
)

// These tests run the ledger on a real embedded JetStream: its records in
// the bus's webhook state bucket, its events in a real stream through
// outboxtest (JetStream drops an event id it already has).

const testStream = "TEST_WEBHOOKS"

type rig struct {
	t       *testing.T
	bus     *bus.Bus
	records *bus.WebhookState
	apps    *app.Registry
	reg     *presence.Local
	dec     *lifecycle.Decider
}

func newRig(t *testing.T) *rig {
	t.Helper()
	cfg := bus.DefaultConfig(t.TempDir())
	cfg.Apps = []string{"a"}
	cfg.Logger = quietLog(t)
	b, err := bus.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := b.WebhookState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, bus: b, records: recs, dec: lifecycle.New(nil)}
	r.apps = app.NewRegistry([]app.App{{ID: "a", Key: "k", Secret: "s", Webhooks: []app.Webhook{{
		URL:        "http://127.0.0.1:1/",
		EventTypes: []string{"channel_occupied", "channel_vacated", "member_added", "member_removed", "subscription_count"},
	}}}})
	r.reg = presence.NewLocal(r.dec.Observe)
	return r
}

func quietLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
}

func (r *rig) outbox() *outboxtest.Outbox { return outboxtest.New(r.bus.JetStream(), testStream, 1) }

func (r *rig) ledger(ob hook.Outbox, grace time.Duration) *lifecycle.Ledger {
	r.t.Helper()
	l, err := lifecycle.NewLedger(lifecycle.LedgerConfig{
		Records: r.records, State: r.reg, Outbox: ob, Apps: r.apps, Grace: grace, Logger: quietLog(r.t),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(l.Close)
	return l
}

// stored returns the stream's events as "name channel user count",
// grouped by channel (the order within one channel is the order they were
// stored in; channels are independent), and fails the test on an id stored
// twice.
func (r *rig) stored() []string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := outboxtest.Events(ctx, r.bus.JetStream(), testStream)
	if err != nil {
		r.t.Fatal(err)
	}
	return describe(r.t, evs)
}

func describe(t *testing.T, evs []outboxtest.Stored) []string {
	t.Helper()
	ids := map[string]bool{}
	var out []string
	for _, ev := range evs {
		if ids[ev.ID] {
			t.Fatalf("event id %s stored twice: %+v", ev.ID, ev)
		}
		ids[ev.ID] = true
		s := ev.Name + " " + ev.Channel
		if ev.UserID != "" {
			s += " " + ev.UserID
		}
		if ev.SubscriptionCount != nil {
			s += fmt.Sprintf(" %d", *ev.SubscriptionCount)
		}
		out = append(out, s)
	}
	channel := func(s string) string { return strings.Fields(s)[1] }
	sort.SliceStable(out, func(i, j int) bool { return channel(out[i]) < channel(out[j]) })
	return out
}

func (r *rig) waitStored(want ...string) {
	r.t.Helper()
	testkit.WaitFor(r.t, 10*time.Second, func() error {
		if got := r.stored(); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("stored\n%q\nwant\n%q", got, want)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // nothing late, nothing doubled
	if got := r.stored(); strings.Join(got, "|") != strings.Join(want, "|") {
		r.t.Fatalf("later stored\n%q\nwant\n%q", got, want)
	}
}

func member(id string) presence.Member {
	return presence.Member{ID: id, IDJSON: json.RawMessage(`"` + id + `"`)}
}

// TestLedgerTwoDecidersOneHistory: two ledgers that both believe they own
// every channel (membership not converged) reconcile the same transitions
// at the same time: each event is stored once, in order.
func TestLedgerTwoDecidersOneHistory(t *testing.T) {
	r := newRig(t)
	l1 := r.ledger(r.outbox(), 200*time.Millisecond)
	l2 := r.ledger(r.outbox(), 200*time.Millisecond)
	r.dec.Subscribe(l1.Observe)
	r.dec.Subscribe(l2.Observe)

	r.reg.SetSubscribers("a", "presence-room", 1)
	if err := r.reg.Join("a", "presence-room", "c1", member("zoe"), 0, nil); err != nil {
		t.Fatal(err)
	}
	r.reg.SetSubscribers("a", "orders", 2)
	r.waitStored(
		"channel_occupied orders", "subscription_count orders 2",
		"channel_occupied presence-room", "member_added presence-room zoe",
	)
	r.reg.Leave("a", "presence-room", "c1")
	r.reg.SetSubscribers("a", "presence-room", 0)
	r.reg.SetSubscribers("a", "orders", 0)
	r.waitStored(
		"channel_occupied orders", "subscription_count orders 2", "channel_vacated orders",
		"channel_occupied presence-room", "member_added presence-room zoe",
		"member_removed presence-room zoe", "channel_vacated presence-room",
	)
	t.Logf("ledger 1 %+v, ledger 2 %+v", l1.Stats(), l2.Stats())
}

// TestLedgerCrashBeforeTheEnqueue: the deciding node writes its decision
// and dies before the outbox stores it; the next owner finds it pending
// and enqueues it, once.
func TestLedgerCrashBeforeTheEnqueue(t *testing.T) {
	r := newRig(t)
	dying := r.outbox()
	var tried atomic.Int32
	dying.Before = func(string, []hook.Event) error { tried.Add(1); return outboxtest.ErrInjected }
	l1 := r.ledger(dying, 0)
	r.dec.Subscribe(l1.Observe)
	r.reg.SetSubscribers("a", "orders", 1)
	testkit.WaitFor(t, 10*time.Second, func() error {
		raw, _, err := r.records.Get(context.Background(), "a", "orders")
		if err != nil || !strings.Contains(string(raw), `"pending"`) || tried.Load() == 0 {
			return fmt.Errorf("record %s, %d enqueues tried, %v", raw, tried.Load(), err)
		}
		return nil
	})
	l1.Close()
	if got := r.stored(); len(got) != 0 {
		t.Fatalf("stored before the takeover: %q", got)
	}
	r.ledger(r.outbox(), 0) // the new owner's start scans the records
	r.waitStored("channel_occupied orders", "subscription_count orders 1")
	raw, _, _ := r.records.Get(context.Background(), "a", "orders")
	if strings.Contains(string(raw), "pending") {
		t.Fatalf("pending events not cleared: %s", raw)
	}
}

// TestLedgerCrashAfterTheEnqueue: the outbox stored the events but the
// decider never heard (it died, or the acknowledgement was lost), so the
// events are still pending in the record and are enqueued again under the
// same ids: the outbox keeps one copy.
func TestLedgerCrashAfterTheEnqueue(t *testing.T) {
	r := newRig(t)
	ob := r.outbox()
	var calls atomic.Int32
	var ids [2]atomic.Value
	ob.After = func(_ string, evs []hook.Event) error {
		n := calls.Add(1)
		if n <= 2 {
			ids[n-1].Store(evs[0].ID + " " + evs[1].ID)
		}
		if n == 1 {
			return outboxtest.ErrInjected
		}
		return nil
	}
	l := r.ledger(ob, 0)
	r.dec.Subscribe(l.Observe)
	r.reg.SetSubscribers("a", "orders", 1)
	r.waitStored("channel_occupied orders", "subscription_count orders 1")
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n, s := calls.Load(), l.Stats(); n != 2 || s.Errors != 1 {
			return fmt.Errorf("%d enqueues, stats %+v; want 2 enqueues and 1 error", n, s)
		}
		return nil
	})
	if a, b := ids[0].Load(), ids[1].Load(); a != b {
		t.Fatalf("the retry enqueued ids %v, the first try %v", b, a)
	}
}

// TestLedgerStartVacatesWhatARestartLeft: a single node restarted with
// records saying occupied and no subscriber any more: after the grace it
// sends what happened while it was down, once.
func TestLedgerStartVacatesWhatARestartLeft(t *testing.T) {
	r := newRig(t)
	l1 := r.ledger(r.outbox(), 0)
	r.dec.Subscribe(l1.Observe)
	r.reg.SetSubscribers("a", "presence-x", 1)
	if err := r.reg.Join("a", "presence-x", "c1", member("al"), 0, nil); err != nil {
		t.Fatal(err)
	}
	r.waitStored("channel_occupied presence-x", "member_added presence-x al")
	l1.Close()
	r.reg = presence.NewLocal(nil) // the restarted node's registry: empty
	start := time.Now()
	r.ledger(r.outbox(), 500*time.Millisecond)
	r.waitStored("channel_occupied presence-x", "member_added presence-x al",
		"member_removed presence-x al", "channel_vacated presence-x")
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("removals sent %v after the start, before the grace", took)
	}
}

// failingList is the real records whose listing fails the first times, as
// it does while JetStream elects the leaders a dead node held.
type failingList struct {
	lifecycle.Records
	fails atomic.Int32 // listings left to fail
}

func (f *failingList) Channels(ctx context.Context, fn func(app, channel string)) error {
	if f.fails.Add(-1) >= 0 {
		return errors.New("injected: no answer while a leader is elected")
	}
	return f.Records.Channels(ctx, fn)
}

// TestLedgerScanRetriedSoon: a new owner's scan cannot list the records
// at first; a channel only the records know of (occupied, nobody left
// anywhere) is still vacated after the grace and a retry, not at the next
// sweep.
func TestLedgerScanRetriedSoon(t *testing.T) {
	r := newRig(t)
	l1 := r.ledger(r.outbox(), 0)
	r.dec.Subscribe(l1.Observe)
	r.reg.SetSubscribers("a", "orders", 1)
	r.waitStored("channel_occupied orders", "subscription_count orders 1")
	l1.Close()
	r.reg = presence.NewLocal(nil) // the new owner's view: nobody there

	recs := &failingList{Records: r.records}
	recs.fails.Store(2)
	start := time.Now()
	l2, err := lifecycle.NewLedger(lifecycle.LedgerConfig{
		Records: recs, State: r.reg, Outbox: r.outbox(), Apps: r.apps, Grace: 200 * time.Millisecond,
		Logger: quietLog(t), // the sweep stays at its 30 s default
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l2.Close)
	r.waitStored("channel_occupied orders", "subscription_count orders 1", "channel_vacated orders")
	t.Logf("vacated %v after the takeover, the first two listings failing", time.Since(start).Round(time.Millisecond))
	if n := recs.fails.Load(); n > -1 {
		t.Fatalf("the records were listed %d times, want 3", 2-n)
	}
}

// TestLedgerAppsWithoutWebhooksPayNothing: channels of an app whose
// webhooks want none of the ledger's kinds get no record.
func TestLedgerAppsWithoutWebhooksPayNothing(t *testing.T) {
	r := newRig(t)
	r.apps.Replace([]app.App{{ID: "a", Key: "k", Secret: "s", Webhooks: []app.Webhook{{
		URL: "http://127.0.0.1:1/", EventTypes: []string{"client_event"},
	}}}})
	l := r.ledger(r.outbox(), 0)
	r.dec.Subscribe(l.Observe)
	r.reg.SetSubscribers("a", "orders", 1)
	r.reg.SetSubscribers("a", "orders", 0)
	time.Sleep(300 * time.Millisecond)
	n := 0
	if err := r.records.Channels(context.Background(), func(string, string) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n != 0 || l.Stats().Reconciles != 0 {
		t.Fatalf("%d records, stats %+v", n, l.Stats())
	}
}

// BenchmarkLedgerOccupied: channels becoming occupied on one node, each
// decided (one KV read, two compare-and-set writes) and its two events
// (channel_occupied, subscription_count) stored in the test outbox.
func BenchmarkLedgerOccupied(b *testing.B) {
	cfg := bus.DefaultConfig(b.TempDir())
	cfg.Apps = []string{"a"}
	cfg.Logger = slog.New(slog.DiscardHandler)
	bs, err := bus.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	ctx := context.Background()
	recs, err := bs.WebhookState(ctx)
	if err != nil {
		b.Fatal(err)
	}
	apps := app.NewRegistry([]app.App{{ID: "a", Key: "k", Secret: "s", Webhooks: []app.Webhook{{
		URL: "http://127.0.0.1:1/", EventTypes: []string{"channel_occupied", "subscription_count"},
	}}}})
	dec := lifecycle.New(nil)
	reg := presence.NewLocal(dec.Observe)
	ob := outboxtest.New(bs.JetStream(), testStream, 1)
	l, err := lifecycle.NewLedger(lifecycle.LedgerConfig{Records: recs, State: reg, Outbox: ob, Apps: apps, Logger: cfg.Logger})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	dec.Subscribe(l.Observe)
	b.ResetTimer()
	for i := range b.N {
		reg.SetSubscribers("a", fmt.Sprintf("bench-%d", i), 1)
	}
	for l.Stats().Events < uint64(2*b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
