package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// storedAt reads app's stream at seq and returns the stored payload.
func storedAt(t *testing.T, b *Bus, app string, seq uint64) (subject string, payload []byte) {
	t.Helper()
	st, err := b.JetStream().Stream(ctxT(t), StreamName(app))
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctxT(t), seq)
	if err != nil {
		t.Fatalf("get %s seq %d: %v", app, seq, err)
	}
	return m.Subject, m.Data
}

// TestConcurrentPublishesOwnSerials: many goroutines publish at once, so
// their publications share the connection's writes and are acknowledged
// together; each call gets the serial at which its own payload is stored,
// and no two calls get the same serial.
func TestConcurrentPublishesOwnSerials(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	const publishers, each = 16, 40
	type rec struct {
		ch, payload string
		serials     []uint64
		err         error
	}
	recs := make([]rec, publishers*each)
	var wg sync.WaitGroup
	for g := range publishers {
		wg.Go(func() {
			for i := range each {
				r := &recs[g*each+i]
				r.ch = fmt.Sprintf("ch.%d", g%4)
				r.payload = fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)
				ps := []Publication{{App: "app1", Channel: r.ch, Payload: []byte(r.payload)}}
				if i%5 == 4 { // some calls carry two publications
					ps = append(ps, Publication{App: "app1", Channel: r.ch, Payload: []byte(r.payload + " ")})
				}
				r.serials, r.err = b.PublishBatch(ctxT(t), ps)
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]string)
	for _, r := range recs {
		if r.err != nil {
			t.Fatalf("publish %s: %v", r.payload, r.err)
		}
		for k, seq := range r.serials {
			want := r.payload + [...]string{"", " "}[k]
			if prev, dup := seen[seq]; dup {
				t.Fatalf("serial %d given to %q and %q", seq, prev, want)
			}
			seen[seq] = want
			subj, got := storedAt(t, b, "app1", seq)
			if string(got) != want || subj != StoredSubject("app1", r.ch) {
				t.Fatalf("serial %d of %q holds %q on %s", seq, want, got, subj)
			}
		}
	}
}

// TestFailedAckFailsOnlyItsPublish: publications of two apps are submitted
// interleaved on the one connection, after app2's stream was deleted behind
// the bus's back; app2's publishes fail (their acks say no stream responded)
// and every app1 publish in between is stored with its own serial. The same
// holds with the publishers running concurrently.
func TestFailedAckFailsOnlyItsPublish(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []string{"app1", "app2"}
	b := startBus(t, cfg, nopSink{})
	if err := b.JetStream().DeleteStream(ctxT(t), StreamName("app2")); err != nil {
		t.Fatal(err)
	}

	var ok, bad []*Pending
	var want []string
	for i := range 20 {
		payload := fmt.Sprintf(`{"i":%d}`, i)
		ok = append(ok, b.Submit(ctxT(t), []Publication{{App: "app1", Channel: "a", Payload: []byte(payload)}}))
		want = append(want, payload)
		bad = append(bad, b.Submit(ctxT(t), []Publication{{App: "app2", Channel: "a", Payload: []byte(payload)}}))
	}
	for i, p := range bad {
		if _, err := p.Wait(); !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Fatalf("app2 publish %d: err %v, want no stream response", i, err)
		}
	}
	for i, p := range ok {
		serials, err := p.Wait()
		if err != nil {
			t.Fatalf("app1 publish %d failed beside app2's: %v", i, err)
		}
		if _, got := storedAt(t, b, "app1", serials[0]); string(got) != want[i] {
			t.Fatalf("app1 publish %d: serial %d holds %q, want %q", i, serials[0], got, want[i])
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for g := range errs {
		wg.Go(func() {
			for i := range 30 {
				app := [...]string{"app1", "app2"}[g%2]
				_, err := b.PublishBatch(ctxT(t), []Publication{{App: app, Channel: "a", Payload: []byte(fmt.Sprint(i))}})
				if app == "app1" && err != nil {
					errs[g] = fmt.Errorf("app1: %w", err)
					return
				}
				if app == "app2" && !errors.Is(err, jetstream.ErrNoStreamResponse) {
					errs[g] = fmt.Errorf("app2: err %v, want no stream response", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestSubmitInvalidSendsNothing: a Submit that fails validation sends
// nothing and its Wait returns the error.
func TestSubmitInvalidSendsNothing(t *testing.T) {
	b := startBus(t, testConfig(t), nopSink{})
	p := b.Submit(context.Background(), []Publication{{App: "app1", Channel: "a", Payload: []byte("x")}, {App: "app1"}})
	if _, err := p.Wait(); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("err %v, want ErrInvalidChannel", err)
	}
	st, err := b.JetStream().Stream(ctxT(t), StreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}
