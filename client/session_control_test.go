package client

import (
	"herald/internal/testkit"

	"context"
	"sync"
	"testing"
	"time"
)

// The Session controls a load generator needs (herald bench's failover
// scenario, bench/failover.go): a Dial hook and Reconnect (ResumeUnseen is
// in TestSessionReplayFromStart), and the receive time of events.

func TestSessionReconnect(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Reconnect() // not connected yet: nothing to drop
	s.Subscribe("c", nil)
	sc := subscribedWithOne(t, srv, s, 4)
	s.Reconnect()
	sc.waitDone(t)
	sc = srv.accept(t)
	if r := resumeOf(t, subscribeFrame(t, sc)); r != 4 {
		t.Fatalf("herald_resume after Reconnect = %d, want 4", r)
	}
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	if st := s.Stats(); st.Connects != 2 {
		t.Fatalf("stats %+v, want 2 connects", st)
	}
}

// The Dial hook is called for every attempt with the URL the session chose,
// and may dial another one.
func TestSessionDialHook(t *testing.T) {
	srv := newTestServer(t)
	dead := "ws://" + testkit.FreeAddr(t) + "/app/k"
	var mu sync.Mutex
	var asked []string
	opt := fastRetry
	opt.Dial = func(ctx context.Context, url string, o Options) (*Conn, error) {
		mu.Lock()
		asked = append(asked, url)
		mu.Unlock()
		return Dial(ctx, srv.appURL(keyOK), o)
	}
	s := newSession(t, opt, dead)
	s.Subscribe("c", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	sc.conn.Close()
	subscribeFrame(t, srv.accept(t))
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != dead || asked[1] != dead {
		t.Fatalf("Dial asked for %q, want %q twice", asked, dead)
	}
	if st := s.Stats(); st.Connects != 2 || st.DialFailures != 0 {
		t.Fatalf("stats %+v, want 2 connects and no dial failure", st)
	}
}

// Received is stamped by the reader goroutine, not by Next: an event that
// waited in the queue keeps the time it arrived.
func TestEventReceived(t *testing.T) {
	s := newTestServer(t)
	before := time.Now()
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	sc.sendText(`{"event":"e","channel":"c","data":"{}"}`)
	time.Sleep(50 * time.Millisecond) // the event waits in the queue
	ev := next(t, c)
	if ev.Received.Before(before) || time.Since(ev.Received) < 50*time.Millisecond {
		t.Fatalf("Received %v: not between the dial (%v) and 50ms before Next", ev.Received, before)
	}
}
