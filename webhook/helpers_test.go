package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"herald/app"
	"herald/bus"
	"herald/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const (
	testApp    = "app1"
	testKey    = "key1"
	testSecret = "secret1"
)

// testApps is a registry with app1 and the given webhooks.
func testApps(t testing.TB, hooks ...app.Webhook) *app.Registry {
	t.Helper()
	a := app.New(testApp, testKey, testSecret)
	a.Webhooks = hooks
	if err := a.Validate(); err != nil {
		t.Fatalf("app: %v", err)
	}
	return app.NewRegistry([]app.App{a})
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startBus starts a single-node bus with streams, closed at cleanup.
func startBus(t testing.TB, apps *app.Registry) *bus.Bus {
	t.Helper()
	cfg := bus.DefaultConfig(t.TempDir())
	cfg.AppRegistry = apps
	cfg.Logger = testLogger(t)
	b, err := bus.Start(cfg)
	if err != nil {
		t.Fatalf("bus: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// startSender starts a sender with test-sized back-off, closed at cleanup
// (before the bus).
func startSender(t testing.TB, b *bus.Bus, apps *app.Registry, mutate func(*Config)) (*Sender, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Bus:        b,
		Apps:       apps,
		Timeout:    time.Second,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 400 * time.Millisecond,
		Registerer: reg,
		Logger:     testLogger(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("webhook.Start: %v", err)
	}
	t.Cleanup(s.Close)
	return s, reg
}

// request is one request a receiver got.
type request struct {
	header http.Header
	body   []byte
	status int
	at     time.Time
}

// body is a webhook request body, decoded.
type body struct {
	TimeMs int64             `json:"time_ms"`
	Events []json.RawMessage `json:"events"`
}

// receiver is a real HTTP server on loopback that records every request
// and answers as answer says (nil: 200 at once).
type receiver struct {
	t    testing.TB
	addr string

	mu     sync.Mutex
	reqs   []request
	answer func(n int) (status int, delay time.Duration) // n counts requests from 0
	srv    *http.Server
	done   chan struct{}
}

func newReceiver(t testing.TB) *receiver {
	t.Helper()
	r := &receiver{t: t, addr: testkit.FreeAddr(t)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) url(path string) string { return "http://" + r.addr + path }

func (r *receiver) setAnswer(f func(n int) (int, time.Duration)) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

// start listens on r.addr (again, after stop).
func (r *receiver) start() {
	r.t.Helper()
	var ln net.Listener
	testkit.WaitFor(r.t, 5*time.Second, func() error {
		var err error
		ln, err = net.Listen("tcp", r.addr)
		return err
	})
	srv := &http.Server{Handler: http.HandlerFunc(r.serve)}
	done := make(chan struct{})
	r.mu.Lock()
	r.srv, r.done = srv, done
	r.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// stop closes the listener and every connection: the receiver is down.
func (r *receiver) stop() {
	r.mu.Lock()
	srv, done := r.srv, r.done
	r.srv = nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.reqs)
	answer := r.answer
	r.mu.Unlock()
	status, delay := http.StatusOK, time.Duration(0)
	if answer != nil {
		status, delay = answer(n)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			status = -1 // the sender gave up
		}
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, request{header: req.Header.Clone(), body: b, status: status, at: time.Now()})
	r.mu.Unlock()
	if status > 0 {
		w.WriteHeader(status)
	}
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// accepted returns the events of every request answered 2xx, in the order
// the requests came.
func (r *receiver) accepted(t testing.TB) []Event {
	t.Helper()
	var out []Event
	for _, q := range r.requests() {
		if q.status/100 != 2 {
			continue
		}
		var b body
		if err := json.Unmarshal(q.body, &b); err != nil {
			t.Fatalf("body %s: %v", q.body, err)
		}
		for _, raw := range b.Events {
			var ev Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("event %s: %v", raw, err)
			}
			out = append(out, ev)
		}
	}
	return out
}

// waitEvents waits until n events were accepted and returns them.
func (r *receiver) waitEvents(t testing.TB, n int, within time.Duration) []Event {
	t.Helper()
	var evs []Event
	testkit.WaitFor(t, within, func() error {
		evs = r.accepted(t)
		if len(evs) < n {
			return fmt.Errorf("%d of %d events accepted (%d requests)", len(evs), n, len(r.requests()))
		}
		return nil
	})
	return evs
}

// uniqueIDs fails on an id accepted twice and returns the set.
func uniqueIDs(t testing.TB, evs []Event) map[string]Event {
	t.Helper()
	seen := make(map[string]Event, len(evs))
	for _, ev := range evs {
		if _, ok := seen[ev.ID]; ok {
			t.Fatalf("event id %s accepted twice", ev.ID)
		}
		seen[ev.ID] = ev
	}
	return seen
}

// everyEvent is a webhook of every event type to url.
func everyEvent(url string) app.Webhook {
	return app.Webhook{URL: url, EventTypes: append([]string(nil), app.WebhookEventTypes...)}
}

func occupied(id, channel string) Event {
	return Event{ID: id, Name: app.WebhookChannelOccupied, Channel: channel}
}

func enqueue(t testing.TB, s *Sender, evs ...Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Enqueue(ctx, testApp, evs); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

// counter reads a metric's value summed over its labels.
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

var errNotYet = errors.New("not yet")

func mustJSON(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
}
