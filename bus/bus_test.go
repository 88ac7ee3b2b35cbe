package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/internal/testkit"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t testing.TB, b *Bus, app, ch, payload, exclude string) uint64 {
	t.Helper()
	seq, err := b.Publish(ctxT(t), Publication{App: app, Channel: ch, Payload: []byte(payload), Exclude: exclude})
	if err != nil {
		t.Fatalf("Publish(%q): %v", ch, err)
	}
	return seq
}

func flush(t testing.TB, b *Bus) {
	t.Helper()
	if err := b.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestPublishDeliversSerials(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	const a, c = "private-App.Models.User.1", "news"
	b.Subscribe("app1", a)
	b.Subscribe("app1", c)
	flush(t, b)

	steps := []struct {
		ch      string
		payload string
		exclude string
		serial  uint64
	}{
		{ch: a, payload: `{"event":"e1"}`, serial: 1},
		{ch: c, payload: `{"event":"e2"}`, exclude: "123.456", serial: 2},
		{ch: a, payload: `{"event":"e3"}`, exclude: "9.9", serial: 3},
	}
	for _, s := range steps {
		if got := publish(t, b, "app1", s.ch, s.payload, s.exclude); got != s.serial {
			t.Fatalf("Publish(%q) serial = %d, want %d", s.ch, got, s.serial)
		}
	}
	gotA := sink.waitCount(t, a, 2)
	gotC := sink.waitCount(t, c, 1)
	want := []Message{
		{App: "app1", Channel: a, Serial: 1, PrevSerial: 0, Payload: []byte(`{"event":"e1"}`)},
		{App: "app1", Channel: a, Serial: 3, PrevSerial: 1, Exclude: "9.9", Payload: []byte(`{"event":"e3"}`)},
		{App: "app1", Channel: c, Serial: 2, PrevSerial: 0, Exclude: "123.456", Payload: []byte(`{"event":"e2"}`)},
	}
	for i, got := range append(gotA, gotC...) {
		if w := want[i]; got.App != w.App || got.Channel != w.Channel || got.Serial != w.Serial ||
			got.PrevSerial != w.PrevSerial || got.Exclude != w.Exclude || string(got.Payload) != string(w.Payload) {
			t.Fatalf("message %d = %+v, want %+v", i, got, w)
		}
	}
	if st := b.Stats(); st.Delivered != 3 || st.LiveSubscriptions != 2 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestChannelsInterleaveInOrder(t *testing.T) {
	sink := &recSink{}
	cfg := testConfig(t)
	cfg.Shards = 4
	b := startBus(t, cfg, sink)
	chans := []string{"a.1", "b.2"}
	for _, ch := range chans {
		b.Subscribe("app1", ch)
	}
	flush(t, b)
	const n = 300
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Go(func() {
			for i := range n {
				if _, err := b.Publish(context.Background(), Publication{App: "app1", Channel: ch, Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, ch := range chans {
		got := sink.waitCount(t, ch, n)
		var prev uint64
		for i, m := range got {
			if string(m.Payload) != fmt.Sprint(i) || m.PrevSerial != prev || m.Serial <= prev {
				t.Fatalf("%s[%d] = serial %d prev %d payload %s; want payload %d prev %d", ch, i, m.Serial, m.PrevSerial, m.Payload, i, prev)
			}
			prev = m.Serial
		}
	}
	// Both publishers ran at once: serials must interleave across channels.
	if a := sink.forChannel("a.1"); a[n-1].Serial == n {
		t.Logf("channels did not interleave (serial of last a.1 = %d)", a[n-1].Serial)
	}
}

func TestSubscribeRefcountAndGrace(t *testing.T) {
	sink := &recSink{}
	cfg := testConfig(t)
	cfg.Shards = 1 // one queue: a later sentinel proves an earlier message was not delivered
	cfg.UnsubscribeGrace = 100 * time.Millisecond
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "x")
	b.Subscribe("app1", "x")
	b.Subscribe("app1", "sentinel")
	flush(t, b)
	b.Unsubscribe("app1", "x")
	publish(t, b, "app1", "x", "1", "")
	sink.waitCount(t, "x", 1)

	b.Unsubscribe("app1", "x")
	if st := b.Stats(); st.LiveSubscriptions != 2 || st.IdleSubscriptions != 1 {
		t.Fatalf("in grace: Stats = %+v", st)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if st := b.Stats(); st.LiveSubscriptions != 1 || st.IdleSubscriptions != 0 {
			return fmt.Errorf("Stats = %+v", st)
		}
		return nil
	})
	flush(t, b)
	publish(t, b, "app1", "x", "2", "")
	publish(t, b, "app1", "sentinel", "s", "")
	sink.waitCount(t, "sentinel", 1)
	if got := sink.forChannel("x"); len(got) != 1 {
		t.Fatalf("after grace got %d messages on x, want 1", len(got))
	}
	b.Unsubscribe("app1", "x") // not subscribed: ignored
	b.Unsubscribe("app1", "never")
}

func TestResubscribeWithinGraceKeepsSubscription(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink) // grace 5 s
	k := subKey{"app1", "room.1"}
	b.Subscribe(k.app, k.channel)
	flush(t, b)
	b.mu.Lock()
	before := b.subs[k].sub
	b.mu.Unlock()
	nsubs := b.Server().NumSubscriptions()

	b.Unsubscribe(k.app, k.channel)
	b.Subscribe(k.app, k.channel)
	flush(t, b)
	b.mu.Lock()
	after := b.subs[k].sub
	b.mu.Unlock()
	if after != before {
		t.Fatal("re-Subscribe within grace made a new NATS subscription")
	}
	if got := b.Server().NumSubscriptions(); got != nsubs {
		t.Fatalf("server subscriptions %d, want %d", got, nsubs)
	}
	if st := b.Stats(); st.LiveSubscriptions != 1 || st.IdleSubscriptions != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	// The stale idle entry must not drop the revived subscription.
	b.sweep(time.Since(b.epoch) + time.Hour)
	publish(t, b, "app1", k.channel, "x", "")
	sink.waitCount(t, k.channel, 1)
}

func TestStreamDisabled(t *testing.T) {
	sink := &recSink{}
	cfg := testConfig(t)
	cfg.StreamEnabled = false
	b := startBus(t, cfg, sink)
	if b.StreamEnabled() {
		t.Fatal("StreamEnabled() = true")
	}
	b.Subscribe("app1", "c.1")
	flush(t, b)
	if got := publish(t, b, "app1", "c.1", "p1", "sock.1"); got != 0 {
		t.Fatalf("serial = %d, want 0", got)
	}
	serials, err := b.PublishBatch(ctxT(t), []Publication{{App: "app1", Channel: "c.1", Payload: []byte("p2")}, {App: "app1", Channel: "c.1", Payload: []byte("p3")}})
	if err != nil || len(serials) != 2 || serials[0] != 0 || serials[1] != 0 {
		t.Fatalf("PublishBatch = %v, %v", serials, err)
	}
	got := sink.waitCount(t, "c.1", 3)
	for i, m := range got {
		if m.Serial != 0 || m.PrevSerial != 0 || string(m.Payload) != fmt.Sprintf("p%d", i+1) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	if got[0].Exclude != "sock.1" || got[1].Exclude != "" {
		t.Fatalf("Exclude = %q, %q", got[0].Exclude, got[1].Exclude)
	}
	js, err := jetstream.New(b.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctxT(t), StreamName("app1")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Stream: %v, want ErrStreamNotFound", err)
	}
}

func TestRestartKeepsStream(t *testing.T) {
	cfg := testConfig(t)
	b1, err := startWithSink(cfg, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if got := publish(t, b1, "app1", "c", "x", ""); got != uint64(i) {
			t.Fatalf("serial %d, want %d", got, i)
		}
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	sink := &recSink{}
	b2 := startBus(t, cfg, sink)
	time.Sleep(2 * catchupMargin) // 1-3 are history, not missed live events (catchup.go)
	b2.Subscribe("app1", "c")
	flush(t, b2)
	if got := publish(t, b2, "app1", "c", "y", ""); got != 4 {
		t.Fatalf("serial after restart = %d, want 4", got)
	}
	if m := sink.waitCount(t, "c", 1)[0]; m.Serial != 4 || m.PrevSerial != 3 {
		t.Fatalf("after restart got serial %d prev %d, want 4 prev 3", m.Serial, m.PrevSerial)
	}
	st, err := b2.JetStream().Stream(ctxT(t), StreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	if sc.MaxAge != cfg.MaxAge || sc.MaxMsgsPerSubject != cfg.MaxMsgsPerChannel || !sc.AllowDirect ||
		sc.Storage != jetstream.FileStorage || sc.Replicas != 1 || sc.Discard != jetstream.DiscardOld ||
		sc.RePublish == nil || sc.RePublish.Destination != "herald.app1.live.>" {
		t.Fatalf("stream config = %+v", sc)
	}
}

func TestPublishBatchOrder(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	chans := []string{"a", "b.b", "c"}
	for _, ch := range chans {
		b.Subscribe("app1", ch)
	}
	flush(t, b)
	var ps []Publication
	for i := range 60 {
		ps = append(ps, Publication{App: "app1", Channel: chans[i%3], Payload: fmt.Appendf(nil, "%d", i)})
	}
	serials, err := b.PublishBatch(ctxT(t), ps)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range serials {
		if s != uint64(i+1) {
			t.Fatalf("serials[%d] = %d, want %d (all: %v)", i, s, i+1, serials)
		}
	}
	for j, ch := range chans {
		for k, m := range sink.waitCount(t, ch, 20) {
			i := j + 3*k
			if m.Serial != serials[i] || string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("%s[%d] = serial %d payload %s, want %d %d", ch, k, m.Serial, m.Payload, serials[i], i)
			}
		}
	}
	if _, err := b.PublishBatch(ctxT(t), []Publication{{App: "app1", Channel: "a"}, {App: "bad.app", Channel: "a"}}); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("PublishBatch with a bad app: %v", err)
	}
}

func TestPublishEnsuresNewApp(t *testing.T) {
	sink := &recSink{}
	b := startBus(t, testConfig(t), sink)
	b.Subscribe("app2", "c")
	flush(t, b)
	if got := publish(t, b, "app2", "c", "x", ""); got != 1 {
		t.Fatalf("serial = %d", got)
	}
	sink.waitCount(t, "c", 1)
}

func TestInvalidInput(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []string{"bad app"}
	if _, err := startWithSink(cfg, &recSink{}); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("Start with a bad app: %v", err)
	}
	b := startBus(t, testConfig(t), &recSink{})
	if _, err := b.Publish(ctxT(t), Publication{App: "a.b", Channel: "c"}); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("Publish bad app: %v", err)
	}
	if _, err := b.Publish(ctxT(t), Publication{App: "app1"}); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("Publish empty channel: %v", err)
	}
	b.Subscribe("a.b", "c") // logged, ignored
	if st := b.Stats(); st.LiveSubscriptions != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	b.Close()
	if _, err := b.Publish(ctxT(t), Publication{App: "app1", Channel: "c"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	b.Subscribe("app1", "c") // no-op after Close
}

func TestManySubscriptionsNoGoroutines(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	flush(t, b)
	base := runtime.NumGoroutine()
	for i := range 1000 {
		b.Subscribe("app1", fmt.Sprintf("private-App.Models.User.%d", i))
	}
	flush(t, b)
	if got := runtime.NumGoroutine(); got > base+10 {
		t.Fatalf("1000 subscriptions: %d goroutines, was %d", got, base)
	}
	if st := b.Stats(); st.LiveSubscriptions != 1000 {
		t.Fatalf("Stats = %+v", st)
	}
	if n := b.Server().NumSubscriptions(); n < 1000 {
		t.Fatalf("server has %d subscriptions", n)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	base := testkit.Goroutines()
	cfg := testConfig(t)
	b, err := startWithSink(cfg, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	b.Subscribe("app1", "c")
	flush(t, b)
	publish(t, b, "app1", "c", "x", "")
	if _, err := b.PublishBatch(ctxT(t), []Publication{{App: "app1", Channel: "c"}, {App: "app1", Channel: "d"}}); err != nil {
		t.Fatal(err)
	}
	b.Unsubscribe("app1", "c")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b.Close() // idempotent
	if err := base.Leaked(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSinkBatchesAndSlowConsumer(t *testing.T) {
	gate := make(chan struct{})
	sink := &recSink{gate: gate, entered: make(chan struct{})}
	cfg := testConfig(t)
	cfg.StreamEnabled = false
	cfg.Shards = 1
	b := startBus(t, cfg, sink)
	b.Subscribe("app1", "c")
	flush(t, b)
	publish(t, b, "app1", "c", "first", "")
	<-sink.entered // the shard goroutine is now stuck in Deliver
	const n = ShardQueueLen + 1000
	for range n {
		publish(t, b, "app1", "c", "x", "")
	}
	flush(t, b)
	testkit.WaitFor(t, 5*time.Second, func() error {
		if st := b.Stats(); st.SlowConsumerDrops != 1000 || st.SlowConsumerEvents == 0 {
			return fmt.Errorf("Stats = %+v", st)
		}
		return nil
	})
	close(gate)
	testkit.WaitFor(t, 10*time.Second, func() error {
		if st := b.Stats(); st.Delivered != ShardQueueLen+1 {
			return fmt.Errorf("Stats = %+v", st)
		}
		return nil
	})
	sink.mu.Lock()
	flushes, msgs := sink.flushes, len(sink.msgs)
	sink.mu.Unlock()
	if want := (msgs + MaxDrain - 1) / MaxDrain; flushes > want+1 {
		t.Fatalf("%d flushes for %d messages, want about %d (batches of %d)", flushes, msgs, want, MaxDrain)
	}
}
