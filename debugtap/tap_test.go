package debugtap

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"herald/internal/testkit"
	"herald/lifecycle"
	"herald/protocol"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// collector is the Publish seam: the events a Tap published, decoded. (The
// NATS side is tested through a real node in console and node.)
type collector chan Event

func (c collector) publish(app string, data []byte) error {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	select { // never stalls the Tap: a test that floods it reads what fits
	case c <- e:
	default:
	}
	return nil
}

func newTap(t *testing.T, cfg Config) (*Tap, collector) {
	t.Helper()
	c := make(collector, 1024)
	if cfg.Publish == nil {
		cfg.Publish = c.publish
	}
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	tap := New(cfg)
	t.Cleanup(tap.Close)
	return tap, c
}

func next(t *testing.T, c collector) Event {
	t.Helper()
	select {
	case e := <-c:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no debug event published within 5 s")
	}
	return Event{}
}

func none(t *testing.T, c collector) {
	t.Helper()
	select {
	case e := <-c:
		t.Fatalf("unexpected event %+v", e)
	default:
	}
}

var sid = protocol.SocketID{Node: 12, Seq: 34}

// hooks calls every hook once for app on channel (the webhook's delivery
// built by the caller, as the sender has it).
func hooks(tap *Tap, app, channel string, payload []byte, data string, d Delivery) {
	tap.Connected(app, sid)
	tap.Closed(app, sid, 4201, "Pong reply not received")
	tap.Subscribed(app, channel, sid, "")
	tap.Refused(app, channel, sid, "AuthError", "Invalid signature", 401)
	tap.Unsubscribed(app, channel, sid)
	tap.Published(KindRESTPublish, app, channel, "ev", data, "")
	tap.ClientEvent(app, channel, "client-ev", sid, payload)
	tap.Resume(app, channel, sid, "ok", 3, 2)
	tap.Lifecycle(lifecycle.Event{Kind: lifecycle.MemberAdded, App: app, Channel: channel, UserID: "u1"})
	tap.Webhook(d)
}

// TestUnwatchedHooksDoNotAllocate: with nothing watched, and with another
// app or another channel watched, no hook allocates (or publishes).
func TestUnwatchedHooksDoNotAllocate(t *testing.T) {
	tap, c := newTap(t, Config{})
	payload := []byte(`{"a":1}`)
	var nilTap *Tap
	for _, tc := range []struct {
		name  string
		tap   *Tap
		watch *Watch
	}{
		{name: "nil tap", tap: nilTap},
		{name: "nothing watched", tap: tap},
		{name: "other app watched", tap: tap, watch: &Watch{App: "other", ID: "w1", TTLms: 60000}},
		{name: "other channel watched", tap: tap, watch: &Watch{App: "app", Channel: "idle-", ID: "w2", TTLms: 60000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.watch != nil {
				tap.Apply(*tc.watch)
				defer tap.Apply(Watch{App: tc.watch.App, ID: tc.watch.ID})
			}
			d := Delivery{App: "app", URL: "http://x", Channels: []string{"busy"}, Events: []string{"channel_occupied"}, Status: 200, Attempt: 1}
			allocs := testing.AllocsPerRun(100, func() { hooks(tc.tap, "app", "busy", payload, `{"a":1}`, d) })
			if allocs != 0 {
				t.Fatalf("%v allocations per round of hooks", allocs)
			}
		})
	}
	// Connection events have no channel: a channel-filtered watch skips
	// them too (asserted by the zero allocations above); nothing published.
	time.Sleep(10 * time.Millisecond)
	none(t, c)
}

// TestWatchedEvents: each hook's event carries its fields, and the
// payload is copied (the caller reuses its buffer).
func TestWatchedEvents(t *testing.T) {
	tap, c := newTap(t, Config{Node: "node-a"})
	st := tap.Apply(Watch{App: "app", ID: "w", TTLms: 60000})
	if st.Node != "node-a" || st.Watchers != 1 || st.SampleEvery != 1 {
		t.Fatalf("status %+v", st)
	}
	buf := []byte(`{"x":"hello"}`)
	tap.ClientEvent("app", "private-a", "client-hi", sid, buf)
	copy(buf, "XXXXXXXXXXXXX")
	e := next(t, c)
	if e.Kind != KindClientEvent || e.Node != "node-a" || e.App != "app" || e.Channel != "private-a" ||
		e.SocketID != "12.34" || e.Event != "client-hi" || e.Payload != `{"x":"hello"}` || e.Size != 13 || e.Time.IsZero() {
		t.Fatalf("client event %+v", e)
	}
	tap.Closed("app", sid, 4201, "Pong reply not received")
	if e := next(t, c); e.Kind != KindClosed || e.Code != 4201 || e.Reason != "Pong reply not received" || e.Channel != "" {
		t.Fatalf("closed %+v", e)
	}
	tap.Refused("app", "private-b", sid, "AuthError", "Invalid signature", 401)
	if e := next(t, c); e.Kind != KindSubscribeRefused || e.Reason != "AuthError: Invalid signature" || e.Code != 401 {
		t.Fatalf("refused %+v", e)
	}
	tap.Resume("app", "c", sid, "window_passed", 7, 0)
	if e := next(t, c); e.Kind != KindResume || e.Reason != "window_passed" || e.Serial != 7 {
		t.Fatalf("resume %+v", e)
	}
	tap.Webhook(Delivery{App: "app", URL: "http://hook", Channels: []string{"c"}, Events: []string{"member_added", "member_removed"},
		Status: 500, Err: errors.New("status 500"), Attempt: 2, Body: []byte(`{}`)})
	if e := next(t, c); e.Kind != KindWebhookFailed || e.Status != 500 || e.Count != 2 || e.Code != 2 ||
		e.Reason != "status 500" || e.Event != "member_added,member_removed" || e.Channel != "c" {
		t.Fatalf("webhook %+v", e)
	}
	tap.Lifecycle(lifecycle.Event{Kind: lifecycle.MemberAdded, App: "app", Channel: "presence-x", UserID: "u9", UserInfo: []byte(`{"n":1}`)})
	if e := next(t, c); e.Kind != KindMemberAdded || e.UserID != "u9" || e.Payload != `{"n":1}` {
		t.Fatalf("member %+v", e)
	}
	if !strings.Contains(e.Line(), "node-a client_event private-a 12.34 event=client-hi") {
		t.Fatalf("line %q", e.Line())
	}
}

// TestChannelFilter: a prefix watch gets its channels only; a watch of
// every channel added later gets the rest, and its removal stops them.
func TestChannelFilter(t *testing.T) {
	tap, c := newTap(t, Config{})
	tap.Apply(Watch{App: "app", Channel: "orders-", ID: "f", TTLms: 60000})
	tap.Published(KindRESTPublish, "app", "news", "e", "1", "")
	tap.Published(KindRESTPublish, "app", "orders-1", "e", "2", "")
	if e := next(t, c); e.Channel != "orders-1" || e.Payload != "2" {
		t.Fatalf("got %+v", e)
	}
	tap.Connected("app", sid) // no channel: not for a filtered watch
	tap.Apply(Watch{App: "app", ID: "all", TTLms: 60000})
	tap.Published(KindNATSPublish, "app", "news", "e", "3", "")
	if e := next(t, c); e.Channel != "news" || e.Kind != KindNATSPublish {
		t.Fatalf("got %+v", e)
	}
	tap.Apply(Watch{App: "app", ID: "all"})
	tap.Published(KindRESTPublish, "app", "news", "e", "4", "")
	tap.Apply(Watch{App: "app", ID: "f"})
	if tap.Watched("app") {
		t.Fatal("still watched after both watchers left")
	}
	time.Sleep(10 * time.Millisecond)
	none(t, c)
}

// TestWatchExpires: a watch not renewed within its TTL ends by itself.
func TestWatchExpires(t *testing.T) {
	tap, _ := newTap(t, Config{})
	tap.Apply(Watch{App: "app", ID: "w", TTLms: 50})
	if !tap.Watched("app") {
		t.Fatal("not watched")
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if tap.Watched("app") {
			return errors.New("still watched")
		}
		return nil
	})
}

// TestFullQueueDrops: when publishing stalls, events past the queue are
// dropped and counted; the hooks never block.
func TestFullQueueDrops(t *testing.T) {
	release := make(chan struct{})
	tap, _ := newTap(t, Config{QueueLen: 4, Publish: func(string, []byte) error { <-release; return nil }})
	defer close(release)
	tap.Apply(Watch{App: "app", ID: "w", TTLms: 60000})
	for range 50 {
		tap.Connected("app", sid)
	}
	if d := tap.Status().Dropped; d < 50-4-1 {
		t.Fatalf("dropped %d of 50 with a queue of 4", d)
	}
}

// TestPayloadBound: payloads past MaxPayload are cut and marked.
func TestPayloadBound(t *testing.T) {
	tap, c := newTap(t, Config{MaxPayload: 8})
	tap.Apply(Watch{App: "app", ID: "w", TTLms: 60000})
	tap.Published(KindRESTPublish, "app", "c", "e", "0123456789abcdef", "")
	if e := next(t, c); e.Payload != "01234567" || !e.Truncated || e.Size != 16 {
		t.Fatalf("got %+v", e)
	}
}

func TestSampleEvery(t *testing.T) {
	for _, tc := range []struct {
		offered uint64
		max     int
		want    uint32
	}{
		{offered: 0, max: 100, want: 1},
		{offered: 100, max: 100, want: 1},
		{offered: 101, max: 100, want: 2},
		{offered: 1000, max: 100, want: 10},
		{offered: 1001, max: 100, want: 11},
	} {
		if got := sampleEvery(tc.offered, tc.max); got != tc.want {
			t.Errorf("sampleEvery(%d, %d) = %d, want %d", tc.offered, tc.max, got, tc.want)
		}
	}
}

// TestSamplingUnderLoad: past MaxRate a second, the Tap keeps one event in
// N and says so in the events and its Status.
func TestSamplingUnderLoad(t *testing.T) {
	tap, c := newTap(t, Config{MaxRate: 10, QueueLen: 100000})
	tap.Apply(Watch{App: "app", ID: "w", TTLms: 60000})
	testkit.WaitFor(t, 5*time.Second, func() error {
		for range 1000 {
			tap.Connected("app", sid)
		}
		if tap.Status().SampleEvery <= 1 {
			return errors.New("not sampling yet")
		}
		return nil
	})
	for len(c) > 0 { // the events from before sampling began
		<-c
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		for range 1000 {
			tap.Connected("app", sid)
		}
		for len(c) > 0 {
			if e := <-c; e.Sample > 1 {
				return nil
			}
		}
		return errors.New("no event with its sampling rate")
	})
	if tap.Status().Sampled == 0 {
		t.Fatal("nothing counted as sampled out")
	}
}

// BenchmarkHookUnwatched is the cost every hook adds to the hot paths when
// no console or tap is attached.
func BenchmarkHookUnwatched(b *testing.B) {
	tap := New(Config{Node: "n", Publish: func(string, []byte) error { return nil }})
	defer tap.Close()
	data := []byte(`{"a":1}`)
	b.ReportAllocs()
	for b.Loop() {
		tap.ClientEvent("app", "private-c", "client-e", sid, data)
	}
}

// BenchmarkHookFilteredOut: a console watches the app, filtered to another
// channel.
func BenchmarkHookFilteredOut(b *testing.B) {
	tap := New(Config{Node: "n", Publish: func(string, []byte) error { return nil }})
	defer tap.Close()
	tap.Apply(Watch{App: "app", Channel: "idle", ID: "w", TTLms: 60000})
	data := []byte(`{"a":1}`)
	b.ReportAllocs()
	for b.Loop() {
		tap.ClientEvent("app", "private-c", "client-e", sid, data)
	}
}
