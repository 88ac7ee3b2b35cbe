package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/app"
	"herald/bus"
	"herald/internal/testkit"
	"herald/protocol"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// natsTestPublisher blocks each PublishBatch until release is closed (when
// set) and fails with err (when set).
type natsTestPublisher struct {
	entered chan struct{} // one value per call, if not nil
	release chan struct{}
	err     error
	calls   atomic.Int64
}

func (p *natsTestPublisher) PublishBatch(ctx context.Context, ps []bus.Publication) ([]uint64, error) {
	p.calls.Add(1)
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	return make([]uint64, len(ps)), nil
}

type natsTestChannels struct{ Counts }

func (natsTestChannels) SubscriptionCount(string, string) int { return 7 }

// natsTestAPI runs a real bus (an in-process NATS server, streams off) and a
// NATS API over pub with three apps, "app" and "other" (enabled) and "off"
// (disabled), and returns it with an unrestricted client connection (the
// bus's own). With pub nil the bus itself publishes, streams on: the API
// is pipelined (bus.Bus is a Submitter). Everything is stopped when the
// test ends, and no goroutine may be left behind.
func natsTestAPI(t *testing.T, pub Publisher, workers, queue int) (*NATSAPI, *nats.Conn) {
	t.Helper()
	base := testkit.Goroutines()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := bus.Config{DataDir: t.TempDir(), Apps: []string{"app"}, Logger: quiet}
	if pub == nil {
		cfg = bus.DefaultConfig(t.TempDir())
		cfg.Apps, cfg.Logger = []string{"app", "other"}, quiet
	}
	b, err := bus.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if pub == nil {
		pub = b
	}
	off := app.New("off", "k2", "s2")
	off.Enabled = new(bool)
	apps := app.NewRegistry([]app.App{app.New("app", "k", "s"), app.New("other", "k3", "s3"), off})
	s := New(Config{Apps: apps, Publisher: pub, Counts: natsTestChannels{}, Logger: quiet, PublishTimeout: 5 * time.Second})
	a, err := StartNATSAPI(NATSAPIConfig{
		Bus:      b,
		Server:   s,
		Apps:     apps,
		Workers:  workers,
		QueueLen: queue,
		Logger:   quiet,
	})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		b.Close()
		base.Check(t, 5*time.Second)
	})
	return a, b.Conn()
}

func natsTestRequest(t *testing.T, nc *nats.Conn, subj, body string) string {
	t.Helper()
	m, err := nc.Request(subj, []byte(body), 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subj, err)
	}
	return string(m.Data)
}

func TestNATSAPIAnswers(t *testing.T) {
	const ev = `{"name":"e","channels":["a"],"data":"d"}`
	cases := []struct {
		name    string
		pubErr  error
		subject string
		body    string
		want    string
	}{
		{"events", nil, "herald.app.api.events", ev, `{}`},
		{"events info", nil, "herald.app.api.events", `{"name":"e","channels":["a"],"data":"d","info":"subscription_count"}`,
			`{"channels":{"a":{"subscription_count":7}}}`},
		{"batch", nil, "herald.app.api.batch_events", `{"batch":[{"name":"e","channel":"a","data":"d"}]}`, `{}`},
		{"batch info", nil, "herald.app.api.batch_events", `{"batch":[{"name":"e","channel":"a","data":"d","info":"subscription_count"}]}`,
			`{"batch":[{"subscription_count":7}]}`},
		{"bad body", nil, "herald.app.api.events", `{`, ""},
		{"unknown app", nil, "herald.nope.api.events", ev, `{"error":"Unknown app \"nope\"","status":404}`},
		{"disabled app", nil, "herald.off.api.events", ev, `{"error":"App is disabled","status":403}`},
		{"store failed", errors.New("boom"), "herald.app.api.events", ev, `{"error":"Could not store the event: boom","status":503}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub := &natsTestPublisher{err: tc.pubErr}
			a, nc := natsTestAPI(t, pub, 0, 0)
			got := natsTestRequest(t, nc, tc.subject, tc.body)
			want := tc.want
			if want == "" { // whatever the decoder says, as JSON with status 400
				_, err := protocol.DecodeTrigger([]byte(tc.body), protocol.Limits{MaxDataBytes: 10240, MaxChannels: 100, MaxBatch: 10, MaxEventName: 200, MaxChannelName: 200})
				var he *protocol.HTTPError
				if !errors.As(err, &he) || he.Status != 400 {
					t.Fatalf("decoder error %v", err)
				}
				want = string(he.Body())
			}
			if got != want {
				t.Fatalf("answer %s, want %s", got, want)
			}
			if st := a.Stats(); st.Handled != 1 || st.Busy != 0 || st.Dropped != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestNATSAPIFireAndForget(t *testing.T) {
	pub := &natsTestPublisher{}
	a, nc := natsTestAPI(t, pub, 0, 0)
	for range 3 {
		if err := nc.Publish("herald.app.api.events", []byte(`{"name":"e","channels":["a"],"data":"d"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish("herald.app.api.events", []byte(`{`)); err != nil { // fails, silently
		t.Fatal(err)
	}
	_ = nc.Flush()
	testkit.WaitFor(t, 5*time.Second, func() error {
		if h := a.Stats().Handled; h < 4 {
			return fmt.Errorf("handled %d of 4", h)
		}
		return nil
	})
	if pub.calls.Load() != 3 {
		t.Fatalf("published %d, want 3", pub.calls.Load())
	}
}

// TestNATSAPIBusy fills the one worker and the one queue slot: the next
// request is answered 503 at once, and a fire-and-forget message is dropped.
func TestNATSAPIBusy(t *testing.T) {
	pub := &natsTestPublisher{entered: make(chan struct{}, 4), release: make(chan struct{})}
	a, nc := natsTestAPI(t, pub, 1, 1)
	const ev = `{"name":"e","channels":["a"],"data":"d"}`
	answers := make(chan string, 2)
	ask := func() {
		m, err := nc.Request("herald.app.api.events", []byte(ev), 5*time.Second)
		if err != nil {
			answers <- err.Error()
			return
		}
		answers <- string(m.Data)
	}
	go ask()
	<-pub.entered // the worker is busy
	go ask()
	testkit.WaitFor(t, 5*time.Second, func() error {
		if q := a.Stats().Queued; q != 1 {
			return fmt.Errorf("queued %d, want 1", q)
		}
		return nil
	})
	if got := natsTestRequest(t, nc, "herald.app.api.events", ev); got != `{"error":"Server busy","status":503}` {
		t.Fatalf("full queue answered %s", got)
	}
	if err := nc.Publish("herald.app.api.events", []byte(ev)); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	testkit.WaitFor(t, 5*time.Second, func() error {
		if st := a.Stats(); st.Dropped != 1 {
			return fmt.Errorf("stats %+v, want 1 dropped", st)
		}
		return nil
	})
	close(pub.release)
	for range 2 {
		if got := <-answers; got != "{}" {
			t.Fatalf("queued request answered %s", got)
		}
	}
	if st := a.Stats(); st.Busy != 1 || st.Dropped != 1 || st.Handled != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNATSAPIStop: Stop finishes what is queued, then nothing answers.
func TestNATSAPIStop(t *testing.T) {
	pub := &natsTestPublisher{entered: make(chan struct{}, 4), release: make(chan struct{})}
	a, nc := natsTestAPI(t, pub, 1, 4)
	answer := make(chan string, 1)
	go func() {
		m, err := nc.Request("herald.app.api.events", []byte(`{"name":"e","channels":["a"],"data":"d"}`), 5*time.Second)
		if err != nil {
			answer <- err.Error()
			return
		}
		answer <- string(m.Data)
	}()
	<-pub.entered
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a request was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(pub.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if got := <-answer; got != "{}" {
		t.Fatalf("in-flight request answered %s", got)
	}
	if _, err := nc.Request("herald.app.api.events", []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after Stop: %v", err)
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestNATSAPIPipelined: with the bus as publisher one worker submits and
// the committers wait for the acks: many concurrent requests, valid and
// not, each get their own answer, and every valid one is stored exactly
// once. A store that fails (the other app's stream deleted behind the
// bus's back) fails only its own requests.
func TestNATSAPIPipelined(t *testing.T) {
	a, nc := natsTestAPI(t, nil, 1, 256)
	if a.acks == nil {
		t.Fatal("not pipelined over a bus")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got := natsTestRequest(t, nc, "herald.other.api.events", `{"name":"e","channels":["a"],"data":"first"}`); got != "{}" {
		t.Fatalf("first publish to other: %s", got)
	}
	if err := js.DeleteStream(ctx, bus.StreamName("other")); err != nil {
		t.Fatal(err)
	}

	const n = 120
	type ask struct{ subj, body, want string }
	asks := make([]ask, n)
	for i := range asks {
		ev := fmt.Sprintf(`{"name":"e","channels":["c%d"],"data":"n%d"}`, i%7, i)
		switch i % 6 {
		case 1:
			asks[i] = ask{"herald.app.api.events", `{`, ""}
		case 2:
			asks[i] = ask{"herald.off.api.events", ev, `{"error":"App is disabled","status":403}`}
		case 3:
			asks[i] = ask{"herald.other.api.events", ev, "503"}
		default:
			asks[i] = ask{"herald.app.api.events", ev, "{}"}
		}
	}
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range asks {
		wg.Go(func() {
			m, err := nc.Request(asks[i].subj, []byte(asks[i].body), 10*time.Second)
			if err != nil {
				got[i] = err.Error()
				return
			}
			got[i] = string(m.Data)
		})
	}
	wg.Wait()
	stored := 0
	for i, as := range asks {
		switch as.want {
		case "":
			if !strings.Contains(got[i], `"status":400`) {
				t.Errorf("request %d (bad body) answered %s", i, got[i])
			}
		case "503":
			if !strings.Contains(got[i], `"status":503`) || !strings.Contains(got[i], "Could not store the event") {
				t.Errorf("request %d (stream gone) answered %s", i, got[i])
			}
		default:
			if got[i] != as.want {
				t.Errorf("request %d answered %s, want %s", i, got[i], as.want)
			}
			if as.want == "{}" {
				stored++
			}
		}
	}
	st, err := js.Stream(ctx, bus.StreamName("app"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != stored {
		t.Fatalf("%d events stored, %d answered {}", info.State.Msgs, stored)
	}
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct{ Data string }
		if err := json.Unmarshal(m.Data, &ev); err != nil || seen[ev.Data] {
			t.Fatalf("seq %d: %s (err %v, seen before %v)", seq, m.Data, err, seen[ev.Data])
		}
		seen[ev.Data] = true
	}
	if st := a.Stats(); st.Handled != n+1 || st.Busy != 0 {
		t.Fatalf("stats %+v", st)
	}
}
