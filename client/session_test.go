package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// Session mechanics against the in-test server (server_test.go): the test
// plays the server's part of resume by hand. The same guarantees against a
// real Herald are in tests/e2e/resume_go_test.go.

// fastRetry keeps reconnect waits short in tests.
var fastRetry = SessionOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

func newSession(t *testing.T, opt SessionOptions, urls ...string) *Session {
	t.Helper()
	s := NewSession(urls, opt)
	t.Cleanup(s.Close)
	return s
}

// nextEvent returns the next event the session delivers.
func nextEvent(t *testing.T, s *Session) Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("Events closed (Err %v)", s.Err())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no event delivered within 5s (stats %+v)", s.Stats())
	}
	return Event{}
}

// describe renders an event as "event channel serial" ("event channel" when
// it has no serial).
func describe(ev Event) string {
	if ev.Serial == 0 {
		return ev.Event + " " + ev.Channel
	}
	return fmt.Sprintf("%s %s %d", ev.Event, ev.Channel, ev.Serial)
}

// expectEvents reads len(want) events and compares them with describe.
func expectEvents(t *testing.T, s *Session, want ...string) {
	t.Helper()
	for i, w := range want {
		if got := describe(nextEvent(t, s)); got != w {
			t.Fatalf("event %d = %q, want %q", i, got, w)
		}
	}
}

// subscribeFrame reads the next text frame the server got, checks that it is
// a pusher:subscribe and returns its data.
func subscribeFrame(t *testing.T, sc *serverConn) map[string]any {
	t.Helper()
	raw := sc.nextText(t)
	var msg struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(raw), &msg); err != nil || msg.Event != EventSubscribe {
		t.Fatalf("server got %s, want a pusher:subscribe", raw)
	}
	return msg.Data
}

// resumeOf returns herald_resume of a subscribe's data, or -1 when absent.
func resumeOf(t *testing.T, data map[string]any) int64 {
	t.Helper()
	v, ok := data["herald_resume"]
	if !ok {
		return -1
	}
	n, ok := v.(float64)
	if !ok {
		t.Fatalf("herald_resume = %#v, want a number", v)
	}
	return int64(n)
}

func sendEvent(sc *serverConn, channel, name string, serial uint64) {
	sc.sendText(fmt.Sprintf(`{"event":%q,"channel":%q,"data":"{\"n\":%d}","serial":%d}`,
		name, channel, serial, serial))
}

func TestSessionResumesAfterDrop(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("orders", nil)

	sc := srv.accept(t)
	if r := resumeOf(t, subscribeFrame(t, sc)); r != -1 {
		t.Fatalf("first subscribe has herald_resume %d, want none", r)
	}
	expectEvents(t, s, "pusher_internal:subscription_succeeded orders")
	sendEvent(sc, "orders", "shipped", 5)
	sendEvent(sc, "orders", "shipped", 7)
	expectEvents(t, s, "shipped orders 5", "shipped orders 7")

	sc.conn.Close() // the network drops the connection

	sc = srv.accept(t)
	if r := resumeOf(t, subscribeFrame(t, sc)); r != 7 {
		t.Fatalf("subscribe after reconnect has herald_resume %d, want 7", r)
	}
	expectEvents(t, s, "pusher_internal:subscription_succeeded orders")
	// A server that replays from an older serial than asked: the session
	// drops what it already delivered.
	sendEvent(sc, "orders", "shipped", 5)
	sendEvent(sc, "orders", "shipped", 7)
	sendEvent(sc, "orders", "shipped", 9)
	sc.sendText(`{"event":"pusher_internal:resume_ok","channel":"orders","data":"{\"from\":7,\"to\":9,\"replayed\":1}"}`)
	sendEvent(sc, "orders", "shipped", 12)
	expectEvents(t, s, "shipped orders 9", EventResumeOK+" orders", "shipped orders 12")

	st := s.Stats()
	if st.Duplicates != 2 || st.Connects != 2 {
		t.Fatalf("stats %+v, want 2 duplicates and 2 connects", st)
	}
}

func TestSessionSerialsPerChannel(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("a", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded a")
	s.Subscribe("b", nil) // while connected
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded b")

	// Serials are shared by the app's channels: each channel has its own
	// last serial. Events without a serial are never dropped.
	sendEvent(sc, "a", "e", 10)
	sendEvent(sc, "b", "e", 11)
	sendEvent(sc, "b", "e", 3) // below b's last
	sc.sendText(`{"event":"plain","channel":"a","data":"{}"}`)
	sc.sendText(`{"event":"plain","channel":"a","data":"{}"}`)
	sendEvent(sc, "a", "e", 12)
	sendEvent(sc, "other", "e", 13) // not subscribed: not delivered
	sendEvent(sc, "a", "e", 14)
	expectEvents(t, s, "e a 10", "e b 11", "plain a", "plain a", "e a 12", "e a 14")

	sc.conn.Close()
	sc = srv.accept(t)
	got := map[string]int64{}
	for range 2 {
		d := subscribeFrame(t, sc)
		got[d["channel"].(string)] = resumeOf(t, d)
	}
	if got["a"] != 14 || got["b"] != 11 {
		t.Fatalf("herald_resume after reconnect = %v, want a:14 b:11", got)
	}
}

// What herald_resume a channel that delivered nothing subscribes with, on
// the first connection and after a reconnect (-1: none).
func TestSessionReplayFromStart(t *testing.T) {
	cases := []struct {
		name         string
		fromStart    bool
		unseen       bool
		first, again int64
	}{
		{
			name:  "plain",
			first: -1,
			again: -1,
		},
		{
			name:      "ReplayFromStart",
			fromStart: true,
			first:     0,
			again:     0,
		},
		{
			name:   "ResumeUnseen",
			unseen: true,
			first:  -1,
			again:  0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t)
			opt := fastRetry
			opt.ReplayFromStart, opt.ResumeUnseen = tc.fromStart, tc.unseen
			s := newSession(t, opt, srv.appURL(keyOK))
			s.Subscribe("c", nil)
			sc := srv.accept(t)
			if r := resumeOf(t, subscribeFrame(t, sc)); r != tc.first {
				t.Fatalf("herald_resume = %d, want %d", r, tc.first)
			}
			expectEvents(t, s, "pusher_internal:subscription_succeeded c")
			sc.conn.Close() // not one event delivered yet
			sc = srv.accept(t)
			if r := resumeOf(t, subscribeFrame(t, sc)); r != tc.again {
				t.Fatalf("herald_resume after reconnect = %d, want %d", r, tc.again)
			}
		})
	}
}

// subscribedWithOne accepts the session's next connection, which subscribes
// to channel c, and delivers one event with serial on it.
func subscribedWithOne(t *testing.T, srv *testServer, s *Session, serial uint64) *serverConn {
	t.Helper()
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	sendEvent(sc, "c", "e", serial)
	expectEvents(t, s, fmt.Sprintf("e c %d", serial))
	return sc
}

func TestSessionResumeFailed(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("c", nil)
	subscribedWithOne(t, srv, s, 3).conn.Close()

	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	sendEvent(sc, "c", "e", 2050)
	sc.sendText(`{"event":"pusher_internal:resume_failed","channel":"c","data":"{\"from\":3,\"reason\":\"window_passed\",\"first\":2050}"}`)
	expectEvents(t, s, "e c 2050")
	ev := nextEvent(t, s)
	if ev.Event != EventResumeFailed || ev.Channel != "c" {
		t.Fatalf("event %q on %q, want %s on c", ev.Event, ev.Channel, EventResumeFailed)
	}
	var d struct {
		From   uint64 `json:"from"`
		Reason string `json:"reason"`
		First  uint64 `json:"first"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.From != 3 || d.Reason != "window_passed" || d.First != 2050 {
		t.Fatalf("resume_failed data %q (%v)", ev.Data, err)
	}
	if st := s.Stats(); st.ResumeFailed != 1 {
		t.Fatalf("stats %+v, want ResumeFailed 1", st)
	}
}

func TestSessionRoundRobin(t *testing.T) {
	a, b := newTestServer(t), newTestServer(t)
	s := newSession(t, fastRetry, a.appURL(keyOK), b.appURL(keyOK))
	s.Subscribe("c", nil)
	for i, srv := range []*testServer{a, b, a, b} {
		sc := srv.accept(t)
		subscribeFrame(t, sc)
		expectEvents(t, s, "pusher_internal:subscription_succeeded c")
		sendEvent(sc, "c", "e", uint64(i+1))
		expectEvents(t, s, fmt.Sprintf("e c %d", i+1))
		sc.conn.Close()
	}
}

// A dead URL in the list is skipped after its dial fails.
func TestSessionSkipsDeadURL(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, "ws://"+testkit.FreeAddr(t)+"/app/k", srv.appURL(keyOK))
	s.Subscribe("c", nil)
	subscribeFrame(t, srv.accept(t))
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	if st := s.Stats(); st.DialFailures != 1 || st.Connects != 1 {
		t.Fatalf("stats %+v, want 1 dial failure then 1 connect", st)
	}
}

func TestSessionServerCodes(t *testing.T) {
	cases := []struct {
		name     string
		send     func(sc *serverConn)
		minDelay time.Duration // least wait before the redial
	}{
		{
			name:     "pusher:error 4200 then close",
			send:     func(sc *serverConn) { sc.sendText(pusherError(4200)); sc.sendClose(4200, "bye") },
			minDelay: 0,
		},
		{
			name:     "pusher:error 4200 alone",
			send:     func(sc *serverConn) { sc.sendText(pusherError(4200)) },
			minDelay: 0,
		},
		{
			name:     "close 4201",
			send:     func(sc *serverConn) { sc.sendClose(4201, "Pong reply not received") },
			minDelay: 0,
		},
		{
			name:     "pusher:error 4100 then close",
			send:     func(sc *serverConn) { sc.sendText(pusherError(4100)); sc.sendClose(4100, "over capacity") },
			minDelay: overCapacityDelay,
		},
		{
			name:     "close 1001",
			send:     func(sc *serverConn) { sc.sendClose(1001, "going away") },
			minDelay: 0,
		},
		{
			name:     "close 1011",
			send:     func(sc *serverConn) { sc.sendClose(1011, "internal error") },
			minDelay: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t)
			s := newSession(t, fastRetry, srv.appURL(keyOK))
			s.Subscribe("c", nil)
			sc := srv.accept(t)
			subscribeFrame(t, sc)
			expectEvents(t, s, "pusher_internal:subscription_succeeded c")
			start := time.Now()
			tc.send(sc)
			subscribeFrame(t, srv.accept(t))
			if d := time.Since(start); d < tc.minDelay {
				t.Fatalf("redialed after %v, want at least %v", d, tc.minDelay)
			}
			if s.Err() != nil {
				t.Fatalf("Err = %v while running", s.Err())
			}
		})
	}
}

// waitEnded reads Events until the session closes it.
func waitEnded(t *testing.T, s *Session) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-s.Events():
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("session still running after 5s (stats %+v)", s.Stats())
		}
	}
}

func pusherError(code int) string {
	return fmt.Sprintf(`{"event":"pusher:error","data":{"code":%d,"message":"m"}}`, code)
}

func TestSessionRefused(t *testing.T) {
	cases := []struct {
		name string
		key  string
		send func(sc *serverConn)
		code int
	}{
		{
			name: "handshake pusher:error 4001",
			key:  keyBad,
			code: 4001,
		},
		{
			name: "close 4009 on an open connection",
			key:  keyOK,
			send: func(sc *serverConn) { sc.sendText(pusherError(4009)); sc.sendClose(4009, "unauthorized") },
			code: 4009,
		},
		{
			name: "close 4301",
			key:  keyOK,
			send: func(sc *serverConn) { sc.sendClose(4301, "rate") },
			code: 4301,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t)
			s := newSession(t, fastRetry, srv.appURL(tc.key))
			sc := srv.accept(t)
			if tc.send != nil {
				s.Subscribe("c", nil)
				subscribeFrame(t, sc) // the handshake is over
				tc.send(sc)
			}
			waitEnded(t, s)
			var ce *CloseError
			if err := s.Err(); !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("Err = %v, want CloseError %d", err, tc.code)
			}
			select {
			case sc := <-srv.conns:
				t.Fatalf("redialed (%s) after a refusal", sc.path)
			case <-time.After(100 * time.Millisecond):
			}
		})
	}
}

// pusher:error 4301, and 4009 without a close (Herald's answer to a refused
// pusher:signin), on an open connection are reports, not closes.
func TestSessionKeepsConnectionOnReports(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("c", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	sc.sendText(pusherError(4301))
	sc.sendText(pusherError(4009))
	sc.sendText(`{"event":"pusher:error","data":{"code":null,"message":"m"}}`)
	sendEvent(sc, "c", "e", 1)
	expectEvents(t, s, "e c 1")
	if st := s.Stats(); st.Connects != 1 {
		t.Fatalf("stats %+v, want one connection", st)
	}
}

func TestSessionTLSOnly(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("c", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	sc.sendClose(4000, "TLS only")
	if err := testkit.Poll(5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !strings.HasPrefix(s.urls[0], "wss://") {
			return fmt.Errorf("url %s after a 4000 close, want wss://", s.urls[0])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestSessionAuth(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	type call struct{ socketID, channel string }
	calls := make(chan call, 4)
	s.Subscribe("presence-room", func(socketID, channel string) (string, string, error) {
		calls <- call{socketID, channel}
		return "k:sig", `{"user_id":"1"}`, nil
	})
	sc := srv.accept(t)
	d := subscribeFrame(t, sc)
	if d["auth"] != "k:sig" || d["channel_data"] != `{"user_id":"1"}` || d["channel"] != "presence-room" {
		t.Fatalf("subscribe data %v", d)
	}
	if c := <-calls; c.socketID != testSocketID || c.channel != "presence-room" {
		t.Fatalf("AuthFunc(%q, %q)", c.socketID, c.channel)
	}

	expectEvents(t, s, "pusher_internal:subscription_succeeded presence-room")
	s.Subscribe("private-no", func(string, string) (string, string, error) {
		return "", "", errors.New("403 from the auth endpoint")
	})
	ev := nextEvent(t, s)
	if ev.Event != EventSubscriptionError || ev.Channel != "private-no" ||
		!strings.Contains(ev.Data, "403 from the auth endpoint") {
		t.Fatalf("event %+v, want a pusher:subscription_error for private-no", ev)
	}
}

func TestSessionUnsubscribe(t *testing.T) {
	srv := newTestServer(t)
	s := newSession(t, fastRetry, srv.appURL(keyOK))
	s.Subscribe("a", nil)
	s.Subscribe("b", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded a", "pusher_internal:subscription_succeeded b")
	s.Unsubscribe("a")
	if got, want := sc.nextText(t), `{"event":"pusher:unsubscribe","data":{"channel":"a"}}`; got != want {
		t.Fatalf("server got %s, want %s", got, want)
	}
	sendEvent(sc, "a", "e", 1) // in flight when the unsubscribe arrived
	sendEvent(sc, "b", "e", 2)
	expectEvents(t, s, "e b 2")

	sc.conn.Close()
	sc = srv.accept(t)
	if d := subscribeFrame(t, sc); d["channel"] != "b" || resumeOf(t, d) != 2 {
		t.Fatalf("subscribe after reconnect %v, want only b from 2", d)
	}
}

// A silent network (no FIN, no data) is noticed by the keep-alive: the
// session pings, gets no answer and redials.
func TestSessionPongTimeout(t *testing.T) {
	srv := newTestServer(t)
	px := newCutProxy(t, srv.ln.Addr().String())
	opt := fastRetry
	opt.ActivityTimeout = 50 * time.Millisecond
	opt.PongTimeout = 100 * time.Millisecond
	s := newSession(t, opt, "ws://"+px.addr()+"/app/"+keyOK+"?protocol=7")
	s.Subscribe("c", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	// Idle: the session pings and the server answers.
	if got := sc.nextText(t); !strings.Contains(got, EventPing) {
		t.Fatalf("server got %s, want a pusher:ping", got)
	}
	sendEvent(sc, "c", "e", 4)
	expectEvents(t, s, "e c 4")

	px.cut()
	sc = srv.accept(t)
	if r := resumeOf(t, subscribeFrame(t, sc)); r != 4 {
		t.Fatalf("herald_resume %d after the pong timeout, want 4", r)
	}
	if st := s.Stats(); st.Connects != 2 {
		t.Fatalf("stats %+v, want 2 connects", st)
	}
}

// cutProxy forwards TCP connections to a server until cut, after which the
// connections open at that moment stay open but carry nothing (a network
// that silently drops packets); later connections are forwarded again.
type cutProxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	held  []net.Conn // cut connections, closed at cleanup
}

func newCutProxy(t *testing.T, upstream string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range append(p.conns, p.held...) {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
}

// cut stops forwarding on the open connections without closing them: the
// pipes end (their read deadline passes), the sockets stay.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	p.held = append(p.held, p.conns...)
	p.conns = nil
}

func TestSessionQueueBackpressure(t *testing.T) {
	srv := newTestServer(t)
	opt := fastRetry
	opt.QueueSize = 2
	s := newSession(t, opt, srv.appURL(keyOK))
	s.Subscribe("c", nil)
	sc := srv.accept(t)
	subscribeFrame(t, sc)
	expectEvents(t, s, "pusher_internal:subscription_succeeded c")
	for i := uint64(1); i <= 50; i++ {
		sendEvent(sc, "c", "e", i)
	}
	for i := 1; i <= 50; i++ {
		expectEvents(t, s, fmt.Sprintf("e c %d", i))
	}
	if q := s.Stats().Queued; q > 2 {
		t.Fatalf("Queued = %d, over the queue size", q)
	}
}

func TestSessionCloseEndsEverything(t *testing.T) {
	srv := newTestServer(t)
	base := testkit.Goroutines()
	var sessions []*Session
	// Connected and subscribed, with a full queue.
	for range 5 {
		s := NewSession([]string{srv.appURL(keyOK)}, SessionOptions{QueueSize: 1})
		s.Subscribe("c", nil)
		sc := srv.accept(t)
		subscribeFrame(t, sc)
		for i := uint64(1); i <= 5; i++ {
			sendEvent(sc, "c", "e", i)
		}
		sessions = append(sessions, s)
	}
	// Waiting between failed dials.
	for range 5 {
		sessions = append(sessions, NewSession([]string{"ws://" + testkit.FreeAddr(t) + "/app/k"},
			SessionOptions{MinBackoff: time.Hour, MaxBackoff: time.Hour}))
	}
	// Stuck in a dial that never completes its handshake.
	for range 5 {
		sessions = append(sessions, NewSession([]string{srv.appURL(keySilent)}, SessionOptions{}))
	}
	// Refused: ended by itself before Close.
	refused := NewSession([]string{srv.appURL(keyBad)}, SessionOptions{})
	waitEnded(t, refused)
	sessions = append(sessions, refused)

	start := time.Now()
	for _, s := range sessions {
		s.Close()
		if _, ok := <-s.Events(); ok {
			for range s.Events() { // what was queued stays readable
			}
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closing took %v", d)
	}
	for _, s := range sessions[:len(sessions)-1] {
		if !errors.Is(s.Err(), ErrSessionClosed) {
			t.Fatalf("Err after Close = %v, want ErrSessionClosed", s.Err())
		}
	}
	if err := base.Leaked(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSessionBackoff(t *testing.T) {
	s := &Session{opt: SessionOptions{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}}
	cases := []struct {
		n        int
		min, max time.Duration
	}{
		{n: 1, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		{n: 2, min: 100 * time.Millisecond, max: 200 * time.Millisecond},
		{n: 5, min: 800 * time.Millisecond, max: 1600 * time.Millisecond},
		{n: 6, min: time.Second, max: 2 * time.Second},
		{n: 1000, min: time.Second, max: 2 * time.Second},
	}
	for _, tc := range cases {
		for range 100 {
			if d := s.backoff(tc.n); d < tc.min || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want %v..%v", tc.n, d, tc.min, tc.max)
			}
		}
	}
}
