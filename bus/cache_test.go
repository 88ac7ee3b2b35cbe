package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/internal/testkit"
)

// cachedEvent is LastEvent's result in one value.
type cachedEvent struct {
	payload string
	serial  uint64
	stored  time.Time
	ok      bool
}

func lastEvent(t testing.TB, b *Bus, app, ch string) cachedEvent {
	t.Helper()
	e, ok, err := b.LastEvent(ctxT(t), app, ch)
	if err != nil {
		t.Fatalf("LastEvent(%q): %v", ch, err)
	}
	return cachedEvent{payload: string(e.Payload), serial: e.Serial, stored: e.Stored, ok: ok}
}

// wantCached fails unless ch's cached event is payload with serial.
func wantCached(t testing.TB, b *Bus, ch, payload string, serial uint64) cachedEvent {
	t.Helper()
	got := lastEvent(t, b, "app1", ch)
	if !got.ok || got.payload != payload || got.serial != serial {
		t.Fatalf("LastEvent(%q) = %+v, want payload %s serial %d", ch, got, payload, serial)
	}
	return got
}

// cacheState is the state of app1's cache stream.
func cacheState(t testing.TB, b *Bus) jetstream.StreamState {
	t.Helper()
	st, err := b.JetStream().Stream(ctxT(t), CacheStreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State
}

func TestCacheLastEvent(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	if got := lastEvent(t, b, "app1", "cache-x"); got.ok {
		t.Fatalf("before any publish: %+v", got)
	}
	before := time.Now()
	s1 := publish(t, b, "app1", "cache-x", `{"event":"e1"}`, "sock.1")
	after := time.Now()
	got := wantCached(t, b, "cache-x", `{"event":"e1"}`, s1)
	if got.stored.Before(before.Add(-time.Second)) || got.stored.After(after.Add(time.Second)) {
		t.Fatalf("stored = %v, want within [%v, %v]", got.stored, before, after)
	}
	s2 := publish(t, b, "app1", "cache-x", `{"event":"e2"}`, "")
	if s2 <= s1 {
		t.Fatalf("serials %d then %d", s1, s2)
	}
	wantCached(t, b, "cache-x", `{"event":"e2"}`, s2)
	if st := cacheState(t, b); st.Msgs != 1 || st.LastSeq != 2 {
		t.Fatalf("cache stream state = %+v, want 1 message, last seq 2", st)
	}
	if b.CacheTTL() != DefaultCacheTTL {
		t.Fatalf("CacheTTL() = %v", b.CacheTTL())
	}
}

func TestCacheOnlyCacheChannels(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	for _, ch := range []string{
		"x",
		"cachex",
		"Cache-x",
		"private-x",
		"private-App.Models.User.1",
		"private-encrypted-x",
		"presence-x",
		"#server-to-user-cache-1",
	} {
		publish(t, b, "app1", ch, "p", "")
		if got := lastEvent(t, b, "app1", ch); got.ok {
			t.Fatalf("LastEvent(%q) = %+v, want none", ch, got)
		}
	}
	if st := cacheState(t, b); st.Msgs != 0 || st.LastSeq != 0 {
		t.Fatalf("cache stream state = %+v, want empty", st)
	}
}

func TestCachePrefixes(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	cases := []struct {
		name    string
		channel string
	}{
		{
			name:    "public",
			channel: "cache-x",
		},
		{
			name:    "private",
			channel: "private-cache-App.Models.User.1",
		},
		{
			name:    "encrypted",
			channel: "private-encrypted-cache-a.b",
		},
		{
			name:    "presence",
			channel: "presence-cache-room.1",
		},
		{
			name:    "escaped dot is another channel",
			channel: "cache-x%2E",
		},
		{
			name:    "dots",
			channel: "cache-x.",
		},
	}
	serials := make([]uint64, len(cases))
	for i, tc := range cases {
		serials[i] = publish(t, b, "app1", tc.channel, tc.name, "")
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCached(t, b, tc.channel, tc.name, serials[i])
		})
	}
	if st := cacheState(t, b); st.Msgs != uint64(len(cases)) {
		t.Fatalf("cache stream holds %d messages, want %d", st.Msgs, len(cases))
	}
}

func TestCacheExpires(t *testing.T) {
	cfg := testConfig(t)
	cfg.CacheTTL = time.Second
	b := startBus(t, cfg, &recSink{})
	s := publish(t, b, "app1", "cache-x", "p", "")
	wantCached(t, b, "cache-x", "p", s)
	testkit.WaitFor(t, 10*time.Second, func() error {
		if got := lastEvent(t, b, "app1", "cache-x"); got.ok {
			return fmt.Errorf("still cached: %+v", got)
		}
		return nil
	})
	testkit.WaitFor(t, 10*time.Second, func() error {
		if st := cacheState(t, b); st.Msgs != 0 {
			return fmt.Errorf("cache stream holds %d messages", st.Msgs)
		}
		return nil
	})
	// An expired entry is replaced like any other.
	s = publish(t, b, "app1", "cache-x", "q", "")
	wantCached(t, b, "cache-x", "q", s)
}

func TestCacheSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	b1, err := startWithSink(cfg, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	const ch = "private-cache-App.Models.User.1"
	s := publish(t, b1, "app1", ch, "p", "")
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBus(t, cfg, &recSink{})
	wantCached(t, b2, ch, "p", s)

	st, err := b2.JetStream().Stream(ctxT(t), CacheStreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	if len(sc.Subjects) != 1 || sc.Subjects[0] != "herald.app1.cache.>" || sc.MaxAge != DefaultCacheTTL ||
		sc.MaxMsgsPerSubject != 1 || !sc.AllowDirect || sc.Storage != jetstream.FileStorage ||
		sc.Replicas != 1 || sc.Discard != jetstream.DiscardOld || sc.RePublish != nil {
		t.Fatalf("cache stream config = %+v", sc)
	}
}

func TestCacheStreamsDisabled(t *testing.T) {
	cfg := testConfig(t)
	cfg.StreamEnabled = false
	b := startBus(t, cfg, &recSink{})
	publish(t, b, "app1", "cache-x", "p", "")
	if _, err := b.PublishBatch(ctxT(t), []Publication{{App: "app1", Channel: "cache-y", Payload: []byte("p")}}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"cache-x", "cache-y"} {
		if got := lastEvent(t, b, "app1", ch); got.ok {
			t.Fatalf("LastEvent(%q) with streams off = %+v", ch, got)
		}
	}
	if _, err := b.JetStream().Stream(ctxT(t), CacheStreamName("app1")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("cache stream: %v, want ErrStreamNotFound", err)
	}
}

func TestCachePublishBatchMixed(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	chans := []string{"cache-a", "b", "private-cache-c.d", "e.f", "presence-cache-g"}
	var ps []Publication
	for i := range 20 {
		ps = append(ps, Publication{App: "app1", Channel: chans[i%len(chans)], Payload: fmt.Appendf(nil, "%d", i)})
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
		last := j + len(chans)*(20/len(chans)-1)
		if !IsCacheChannel(ch) {
			if got := lastEvent(t, b, "app1", ch); got.ok {
				t.Fatalf("LastEvent(%q) = %+v, want none", ch, got)
			}
			continue
		}
		wantCached(t, b, ch, fmt.Sprint(last), serials[last])
	}
	// One cache write per cache channel: the last publication of each.
	if st := cacheState(t, b); st.Msgs != 3 || st.LastSeq != 3 {
		t.Fatalf("cache stream state = %+v, want 3 messages, last seq 3", st)
	}
}

// Concurrent publishers to one cache channel: the cache ends with the
// event of the highest serial, whatever order the cache writes arrive in.
func TestCacheConcurrentPublishesKeepNewest(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	const workers, each = 8, 25
	var (
		mu        sync.Mutex
		maxSerial uint64
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ps := []Publication{{App: "app1", Channel: "cache-hot", Payload: fmt.Appendf(nil, "%d.%d", w, i)}}
				var s uint64
				var err error
				if i%2 == 0 {
					s, err = b.Publish(context.Background(), ps[0])
				} else {
					var ss []uint64
					ss, err = b.PublishBatch(context.Background(), ps)
					if len(ss) == 1 {
						s = ss[0]
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if s > maxSerial {
					maxSerial = s
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := lastEvent(t, b, "app1", "cache-hot"); !got.ok || got.serial != maxSerial || maxSerial != workers*each {
		t.Fatalf("LastEvent = %+v, want serial %d (= %d)", got, maxSerial, workers*each)
	}
}

// Cache writes arriving out of order: the older event's late write must not
// replace the newer one. A write whose expected last sequence is stale is a
// compare-and-set conflict.
func TestCacheWritesOutOfOrder(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	ctx := ctxT(t)
	if err := b.EnsureApp(ctx, "app1"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	ps := []Publication{
		{App: "app1", Channel: "cache-x", Payload: []byte("older")},
		{App: "app1", Channel: "cache-x", Payload: []byte("newer")},
	}
	var serials [2]uint64
	for i := range ps {
		ack, err := b.js.PublishMsg(ctx, b.newMsg(&ps[i])) // main stream only
		if err != nil {
			t.Fatal(err)
		}
		serials[i] = ack.Sequence
	}
	for _, i := range []int{1, 0} {
		if err := b.storeCache(ctx, &ps[i], b.newMsg(&ps[i]), serials[i], began); err != nil {
			t.Fatal(err)
		}
	}
	wantCached(t, b, "cache-x", "newer", serials[1])
	if st := cacheState(t, b); st.LastSeq != 1 {
		t.Fatalf("cache stream last seq = %d, want 1 (the late write skipped)", st.LastSeq)
	}

	cm := cacheMsg(CacheSubject("app1", "cache-x"), b.newMsg(&ps[0]), 99)
	_, err := b.js.PublishMsg(ctx, cm, jetstream.WithExpectLastSequencePerSubject(0))
	if !casConflict(err) {
		t.Fatalf("stale expected sequence: %v, want a CAS conflict", err)
	}
}

// An entry left by an earlier incarnation of the main stream (deleted and
// recreated, serials restarted) must not hide new events.
func TestCacheMainStreamRecreated(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	for range 3 {
		publish(t, b, "app1", "cache-x", "old", "")
	}
	if err := b.JetStream().DeleteStream(ctxT(t), StreamName("app1")); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureApp(ctxT(t), "app1"); err != nil {
		t.Fatal(err)
	}
	s := publish(t, b, "app1", "cache-x", "new", "")
	if s != 1 {
		t.Fatalf("serial after recreation = %d, want 1", s)
	}
	wantCached(t, b, "cache-x", "new", 1)
}

func TestCacheUnknownAppAndInvalidInput(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	if got := lastEvent(t, b, "app2", "cache-x"); got.ok {
		t.Fatalf("unknown app: %+v", got)
	}
	if _, err := b.JetStream().Stream(ctxT(t), CacheStreamName("app2")); err != nil {
		t.Fatalf("LastEvent did not ensure app2's cache stream: %v", err)
	}
	if _, _, err := b.LastEvent(ctxT(t), "a.b", "cache-x"); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("bad app: %v", err)
	}
	if _, _, err := b.LastEvent(ctxT(t), "app1", ""); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("empty channel: %v", err)
	}
	b.Close()
	if _, _, err := b.LastEvent(ctxT(t), "app1", "cache-x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCacheStreamNamesDisjoint(t *testing.T) {
	// App "CACHE_app1"'s main stream must not be app1's cache stream.
	if StreamName("CACHE_app1") == CacheStreamName("app1") {
		t.Fatalf("stream names collide: %q", CacheStreamName("app1"))
	}
	b := startBus(t, testConfig(t), &recSink{})
	if err := b.EnsureApp(ctxT(t), "CACHE_app1"); err != nil {
		t.Fatal(err)
	}
	s := publish(t, b, "app1", "cache-x", "p", "")
	wantCached(t, b, "cache-x", "p", s)
}

// BenchmarkPublishCache: Publish to a cache channel (main publish, direct
// get, cache publish); compare with BenchmarkPublish.
func BenchmarkPublishCache(b *testing.B) {
	bus := startBus(b, testConfig(b), nopSink{})
	ctx := context.Background()
	p := Publication{App: "app1", Channel: "private-cache-chat.42", Payload: benchPayload}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishBatchCache: 100 cache channels in one PublishBatch.
func BenchmarkPublishBatchCache(b *testing.B) {
	bus := startBus(b, testConfig(b), nopSink{})
	ctx := context.Background()
	ps := make([]Publication, 100)
	for i := range ps {
		ps[i] = Publication{App: "app1", Channel: fmt.Sprintf("cache-ch.%d", i), Payload: benchPayload}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.PublishBatch(ctx, ps); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLastEvent: one cached-event read (a direct get).
func BenchmarkLastEvent(b *testing.B) {
	bus := startBus(b, testConfig(b), nopSink{})
	ctx := context.Background()
	if _, err := bus.Publish(ctx, Publication{App: "app1", Channel: "cache-x", Payload: benchPayload}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := bus.LastEvent(ctx, "app1", "cache-x"); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
