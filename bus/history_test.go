package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/internal/testkit"
)

// histEvent is one call of a History fn, copied.
type histEvent struct {
	serial  uint64
	payload string
	exclude string
}

// history runs b.History and collects what fn saw.
func history(t testing.TB, b *Bus, app, ch string, after uint64) ([]histEvent, HistoryResult) {
	t.Helper()
	var got []histEvent
	res, err := b.History(ctxT(t), app, ch, after, func(serial uint64, payload []byte, exclude string) error {
		got = append(got, histEvent{serial, string(payload), exclude})
		return nil
	})
	if err != nil {
		t.Fatalf("History(%q, after %d): %v", ch, after, err)
	}
	if res.Count != len(got) {
		t.Fatalf("History(%q, after %d): Count %d, fn called %d times", ch, after, res.Count, len(got))
	}
	wantLast := after
	if len(got) > 0 {
		wantLast = got[len(got)-1].serial
	}
	if res.Last != wantLast {
		t.Fatalf("History(%q, after %d): Last %d, want %d", ch, after, res.Last, wantLast)
	}
	return got, res
}

// checkEvents compares what History returned with want.
func checkEvents(t testing.TB, got, want []histEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// publishMixed stores n events on ch interleaved with n on other (every
// 7th of ch's with an exclude), in batches; it returns ch's events.
func publishMixed(t testing.TB, b *Bus, ch, other string, n int, payload func(i int) string) []histEvent {
	t.Helper()
	var want []histEvent
	const per = 200
	for start := 0; start < n; start += per {
		var ps []Publication
		for i := start; i < min(n, start+per); i++ {
			p := Publication{App: "app1", Channel: ch, Payload: []byte(payload(i))}
			if i%7 == 0 {
				p.Exclude = fmt.Sprintf("%d.%d", i, i)
			}
			ps = append(ps, p, Publication{App: "app1", Channel: other, Payload: []byte(`{"event":"other"}`)})
		}
		serials, err := b.PublishBatch(ctxT(t), ps)
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < len(ps); k += 2 {
			want = append(want, histEvent{serials[k], string(ps[k].Payload), ps[k].Exclude})
		}
	}
	return want
}

func TestHistoryInterleavedChannels(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	const ch, other = "private-App.Models.User.1", "news"
	want := publishMixed(t, b, ch, other, 1000, func(i int) string { return fmt.Sprintf(`{"event":"e","data":"%d"}`, i) })

	got, res := history(t, b, "app1", ch, 0)
	checkEvents(t, got, want)
	if res.WindowPassed || res.First != 0 {
		t.Fatalf("after 0: %+v, want the window not passed", res)
	}

	// From the middle: exactly what came after, several batches of 256.
	after := want[299].serial
	got, res = history(t, b, "app1", ch, after)
	checkEvents(t, got, want[300:])
	if res.WindowPassed {
		t.Fatalf("after %d: %+v, want not passed", after, res)
	}

	// A serial of the other channel works as well.
	got, _ = history(t, b, "app1", ch, want[499].serial+1)
	checkEvents(t, got, want[500:])

	// Up to date: nothing, not passed.
	last := want[len(want)-1].serial
	got, res = history(t, b, "app1", ch, last)
	if len(got) != 0 || res.Last != last || res.WindowPassed {
		t.Fatalf("after last: %d events, %+v", len(got), res)
	}
	// A channel with nothing stored: not passed while the stream holds
	// everything after the serial...
	got, res = history(t, b, "app1", "empty", want[10].serial)
	if len(got) != 0 || res.WindowPassed {
		t.Fatalf("empty channel: %d events, %+v", len(got), res)
	}
	// ...but passed for a serial the stream never assigned (it was made
	// again since the client saw it).
	got, res = history(t, b, "app1", "empty", last+10_000)
	if len(got) != 0 || !res.WindowPassed || res.First != 1 {
		t.Fatalf("empty channel after an unassigned serial: %d events, %+v, want passed with first 1", len(got), res)
	}
}

// Large events: batches end on max_bytes (1 MiB) before 256 messages.
func TestHistoryLargeEvents(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	big := bytes.Repeat([]byte("x"), 10_000)
	want := publishMixed(t, b, "big", "other", 300, func(i int) string { return fmt.Sprintf(`{"n":%d,"d":"%s"}`, i, big) })
	got, _ := history(t, b, "app1", "big", 0)
	checkEvents(t, got, want)
	got, _ = history(t, b, "app1", "big", want[0].serial)
	checkEvents(t, got, want[1:])
}

func TestHistoryWindowMaxMsgs(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgsPerChannel = 5
	b := startBus(t, cfg, nopSink{})
	var serials []uint64
	for i := range 20 {
		serials = append(serials, publish(t, b, "app1", "ch", fmt.Sprintf(`{"i":%d}`, i), ""))
		publish(t, b, "app1", "other", `{}`, "")
	}
	first, err := b.StreamFirst(ctxT(t), "app1")
	if err != nil {
		t.Fatal(err)
	}
	if first == 0 || first > serials[15] {
		t.Fatalf("StreamFirst = %d", first)
	}
	want := func(from int) []histEvent {
		var w []histEvent
		for i := from; i < 20; i++ {
			w = append(w, histEvent{serials[i], fmt.Sprintf(`{"i":%d}`, i), ""})
		}
		return w
	}

	// The client saw the 3rd: the 4th..15th are gone.
	got, res := history(t, b, "app1", "ch", serials[2])
	checkEvents(t, got, want(15))
	if !res.WindowPassed || res.First != first {
		t.Fatalf("after the 3rd: %+v, want passed, first %d", res, first)
	}
	// It saw the 16th, still stored: nothing lost.
	got, res = history(t, b, "app1", "ch", serials[15])
	checkEvents(t, got, want(16))
	if res.WindowPassed || res.First != 0 {
		t.Fatalf("after the 16th: %+v, want not passed", res)
	}
	// It saw the 15th, just removed: pessimistically passed (the rule
	// cannot tell that nothing came between the 15th and the 16th).
	got, res = history(t, b, "app1", "ch", serials[14])
	checkEvents(t, got, want(15))
	if !res.WindowPassed {
		t.Fatalf("after the 15th: %+v, want passed", res)
	}
	// From 0: what is stored, never passed.
	got, res = history(t, b, "app1", "ch", 0)
	checkEvents(t, got, want(15))
	if res.WindowPassed {
		t.Fatalf("after 0: %+v, want not passed", res)
	}
}

func TestHistoryWindowMaxAge(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxAge = time.Second
	b := startBus(t, cfg, nopSink{})
	a1 := publish(t, b, "app1", "gone", `{"n":1}`, "")
	a2 := publish(t, b, "app1", "gone", `{"n":2}`, "")
	k1 := publish(t, b, "app1", "kept", `{"n":1}`, "")

	// Before expiry everything is there.
	got, res := history(t, b, "app1", "gone", a1)
	checkEvents(t, got, []histEvent{{a2, `{"n":2}`, ""}})
	if res.WindowPassed {
		t.Fatalf("before expiry: %+v", res)
	}

	testkit.WaitFor(t, 10*time.Second, func() error {
		first, err := b.StreamFirst(ctxT(t), "app1")
		if err != nil {
			return err
		}
		if first <= k1 {
			return fmt.Errorf("stream first %d, not yet past %d", first, k1)
		}
		return nil
	})
	k2 := publish(t, b, "app1", "kept", `{"n":2}`, "")

	// A channel left with nothing: passed, with the stream's first serial.
	got, res = history(t, b, "app1", "gone", a1)
	if len(got) != 0 || !res.WindowPassed || res.First != k2 {
		t.Fatalf("expired channel after the 1st: %d events, %+v, want passed, first %d", len(got), res, k2)
	}
	// Even after its last event: serial a2+1 (another channel's) expired
	// too, and the rule cannot tell whose it was.
	got, res = history(t, b, "app1", "gone", a2)
	if len(got) != 0 || !res.WindowPassed {
		t.Fatalf("expired channel after the last: %d events, %+v", len(got), res)
	}
	// A channel with a newer event: what is kept, passed.
	got, res = history(t, b, "app1", "kept", k1)
	checkEvents(t, got, []histEvent{{k2, `{"n":2}`, ""}})
	if !res.WindowPassed || res.First != k2 {
		t.Fatalf("kept after the expired one: %+v, want passed, first %d", res, k2)
	}
	// A serial still at the stream's edge: not passed.
	got, res = history(t, b, "app1", "gone", k2-1)
	if len(got) != 0 || res.WindowPassed {
		t.Fatalf("expired channel after first-1: %d events, %+v, want not passed", len(got), res)
	}
}

func TestHistoryStreamsOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.StreamEnabled = false
	b := startBus(t, cfg, nopSink{})
	res, err := b.History(ctxT(t), "app1", "ch", 5, func(uint64, []byte, string) error { return nil })
	if !errors.Is(err, ErrNoStream) || res.Last != 5 || res.Count != 0 {
		t.Fatalf("History with streams off = %+v, %v; want ErrNoStream", res, err)
	}
	if _, err := b.StreamFirst(ctxT(t), "app1"); !errors.Is(err, ErrNoStream) {
		t.Fatalf("StreamFirst with streams off: %v", err)
	}
}

func TestHistoryErrors(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	fn := func(uint64, []byte, string) error { return nil }
	if _, err := b.History(ctxT(t), "bad app", "ch", 0, fn); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("invalid app: %v", err)
	}
	if _, err := b.History(ctxT(t), "app1", "", 0, fn); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("empty channel: %v", err)
	}

	// fn's error stops History and comes back with what was read.
	want := publishMixed(t, b, "ch", "other", 600, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) })
	stop := errors.New("stop")
	n := 0
	res, err := b.History(ctxT(t), "app1", "ch", 0, func(serial uint64, _ []byte, _ string) error {
		if n == 300 {
			return stop
		}
		n++
		return nil
	})
	if !errors.Is(err, stop) || res.Count != 300 || res.Last != want[299].serial {
		t.Fatalf("fn error: %+v, %v", res, err)
	}

	// A done ctx.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.History(ctx, "app1", "ch", 0, fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ctx: %v", err)
	}

	// An app whose stream does not exist yet is created.
	got, res := history(t, b, "app2", "ch", 0)
	if len(got) != 0 || res.WindowPassed {
		t.Fatalf("new app: %d events, %+v", len(got), res)
	}

	b.Close()
	if _, err := b.History(ctxT(t), "app1", "ch", 0, fn); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// Many concurrent readers (a reconnect storm): each gets its own complete,
// ordered answer; the stream info behind the window rule is shared.
func TestHistoryConcurrent(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	const nch = 8
	want := make([][]histEvent, nch)
	for c := range nch {
		want[c] = publishMixed(t, b, fmt.Sprintf("ch.%d", c), "other", 300, func(i int) string { return fmt.Sprintf(`{"c":%d,"i":%d}`, c, i) })
	}
	var wg sync.WaitGroup
	errs := make(chan error, 128) // one per reader: a full channel would hang the test instead of failing it
	for g := range 64 {
		wg.Go(func() {
			c := g % nch
			from := g % 300
			var after uint64
			if from > 0 {
				after = want[c][from-1].serial
			}
			ch := fmt.Sprintf("ch.%d", c)
			i := from
			res, err := b.History(context.Background(), "app1", ch, after, func(serial uint64, payload []byte, exclude string) error {
				if w := want[c][i]; w != (histEvent{serial, string(payload), exclude}) {
					return fmt.Errorf("%s event %d = %d %s, want %+v", ch, i, serial, payload, w)
				}
				i++
				return nil
			})
			if err == nil && (i != 300 || res.WindowPassed) {
				err = fmt.Errorf("%s after %d: %d events, %+v", ch, after, i-from, res)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	// And the empty-channel path, which asks for stream info each time.
	for range 64 {
		wg.Go(func() {
			res, err := b.History(context.Background(), "app1", "quiet", 5, func(uint64, []byte, string) error { return nil })
			if err == nil && (res.Count != 0 || res.WindowPassed) {
				err = fmt.Errorf("quiet: %+v", res)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A server without batched direct gets (before 2.11) answers each request
// with one message and no terminator; the read goes on one at a time.
func TestHistoryUnbatchedServer(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	subj := StoredSubject("old", "ch")
	stored := []uint64{3, 7, 8, 20}
	var asked atomic.Int32
	sub, err := b.nc.Subscribe("$JS.API.DIRECT.GET."+StreamName("old"), func(req *nats.Msg) {
		asked.Add(1)
		var r directGetRequest
		if err := json.Unmarshal(req.Data, &r); err != nil || r.NextBySubj != subj {
			t.Errorf("request %s: %v", req.Data, err)
			return
		}
		reply := nats.NewMsg(req.Reply)
		for _, seq := range stored {
			if seq >= r.Seq {
				reply.Header.Set(headerSequence, strconv.FormatUint(seq, 10))
				reply.Header.Set(headerSubject, subj)
				reply.Data = fmt.Appendf(nil, `{"seq":%d}`, seq)
				req.RespondMsg(reply)
				return
			}
		}
		reply.Header.Set(headerStatus, statusNotFound)
		req.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var got []uint64
	last, n, err := b.readSubject(ctxT(t), "old", subj, 3, 0, func(serial uint64, payload []byte, _ string) error {
		if string(payload) != fmt.Sprintf(`{"seq":%d}`, serial) {
			t.Errorf("serial %d: payload %s", serial, payload)
		}
		got = append(got, serial)
		return nil
	})
	if err != nil || last != 20 || n != 3 || fmt.Sprint(got) != "[7 8 20]" || asked.Load() != 4 {
		t.Fatalf("readSubject = %d, %d, %v: %v after %d requests", last, n, err, got, asked.Load())
	}
}

// BenchmarkHistory replays 10,000 stored events of one channel (interleaved
// with another's) from the start.
func BenchmarkHistory(b *testing.B) {
	cfg := testConfig(b)
	cfg.MaxMsgsPerChannel = 0
	bus := startBus(b, cfg, nopSink{})
	ctx := context.Background()
	const n = 10_000
	ps := make([]Publication, 0, 200)
	for i := 0; i < n; i += 100 {
		ps = ps[:0]
		for range 100 {
			ps = append(ps,
				Publication{App: "app1", Channel: "private-chat.42", Payload: benchPayload},
				Publication{App: "app1", Channel: "other", Payload: benchPayload})
		}
		if _, err := bus.PublishBatch(ctx, ps); err != nil {
			b.Fatal(err)
		}
	}
	var nb int
	b.ReportAllocs()
	for b.Loop() {
		res, err := bus.History(ctx, "app1", "private-chat.42", 0, func(_ uint64, p []byte, _ string) error {
			nb += len(p)
			return nil
		})
		if err != nil || res.Count != n {
			b.Fatalf("History: %+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
}
