package client

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"herald/internal/testkit"
)

// dial connects to the test server with key and closes the Conn at cleanup.
func dial(t *testing.T, s *testServer, key string, opt Options) *Conn {
	t.Helper()
	c, err := Dial(testCtx(t), s.appURL(key), opt)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func next(t *testing.T, c *Conn) Event {
	t.Helper()
	ev, err := c.Next(testCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func TestDialEstablished(t *testing.T) {
	s := newTestServer(t)
	h := http.Header{}
	h.Set("X-Herald-Test", "yes")
	c := dial(t, s, keyOK, Options{Header: h})
	if got := c.SocketID(); got != testSocketID {
		t.Fatalf("SocketID = %q, want %q", got, testSocketID)
	}
	if got := c.ActivityTimeout(); got != 120*time.Second {
		t.Fatalf("ActivityTimeout = %v, want 2m", got)
	}
	sc := s.accept(t)
	if got := sc.header.Get("X-Herald-Test"); got != "yes" {
		t.Fatalf("upgrade header X-Herald-Test = %q, want yes", got)
	}
	if !strings.HasPrefix(sc.path, "/app/"+keyOK+"?protocol=7") {
		t.Fatalf("path = %q", sc.path)
	}
}

func TestDialRefused(t *testing.T) {
	s := newTestServer(t)
	cases := []struct {
		name   string
		key    string
		code   int
		reason string
	}{
		{
			name:   "pusher error then close",
			key:    keyBad,
			code:   4001,
			reason: "App key bad-key not in this cluster",
		},
		{
			name:   "close frame only",
			key:    keyClose,
			code:   4200,
			reason: "reconnect",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(testCtx(t), s.appURL(tc.key), Options{})
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded")
			}
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Dial error %v (%T), want *CloseError", err, err)
			}
			if ce.Code != tc.code || ce.Reason != tc.reason {
				t.Fatalf("CloseError = %d %q, want %d %q",
					ce.Code, ce.Reason, tc.code, tc.reason)
			}
		})
	}
}

func TestDialFailures(t *testing.T) {
	s := newTestServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "ws://" + ln.Addr().String() + "/app/x"
	ln.Close()

	cases := []struct {
		name string
		url  string
		opt  Options
		want string
	}{
		{
			name: "connection refused",
			url:  refused,
			want: "refused",
		},
		{
			name: "no first frame",
			url:  s.appURL(keySilent),
			opt:  Options{DialTimeout: 200 * time.Millisecond},
			want: "deadline exceeded",
		},
		{
			name: "first frame not a handshake",
			url:  s.appURL(keyOddable),
			want: "invalid handshake",
		},
		{
			name: "bad scheme",
			url:  "http://127.0.0.1:1/app/x",
			want: "scheme",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(testCtx(t), tc.url, tc.opt)
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded")
			}
			var ce *CloseError
			if errors.As(err, &ce) {
				t.Fatalf("Dial error is a CloseError: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// The server sends the 101 response and its first frames in one write: they
// end up in the dialer's buffer and must be read from it in order.
func TestDialBufferedFrames(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyBurst, Options{})
	if c.SocketID() != testSocketID {
		t.Fatalf("SocketID = %q", c.SocketID())
	}
	for i := 1; i <= 3; i++ {
		ev := next(t, c)
		if ev.Event != "burst" || ev.Data != string(rune('0'+i)) {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}
	// The connection keeps working after the buffer is drained.
	if err := c.Subscribe(testCtx(t), "after-burst"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
}

func TestDialLocalAddr(t *testing.T) {
	s := newTestServer(t)
	c, err := Dial(testCtx(t), s.appURL(keyOK), Options{LocalAddr: "127.0.0.2"})
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2 here: %v", err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("local address = %s, want 127.0.0.2", got)
	}
	sc := s.accept(t)
	if got := sc.conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("server sees %s, want 127.0.0.2", got)
	}
}

func TestSubscribe(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	ctx := testCtx(t)

	if err := c.Subscribe(ctx, "my-channel"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	want := `{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}`
	if got := sc.nextText(t); got != want {
		t.Fatalf("server got %s, want %s", got, want)
	}

	auth := SignChannel("k", "s", c.SocketID(), "presence-x", `{"user_id":"1"}`)
	ev, err := c.SubscribeAuth(ctx, "presence-x", auth, `{"user_id":"1"}`)
	if err != nil {
		t.Fatalf("SubscribeAuth: %v", err)
	}
	if ev.Event != EventSubscriptionSucceeded || ev.Channel != "presence-x" || ev.Data != "{}" {
		t.Fatalf("SubscribeAuth event = %+v", ev)
	}
	want = `{"event":"pusher:subscribe","data":{"auth":"` + auth +
		`","channel":"presence-x","channel_data":"{\"user_id\":\"1\"}"}}`
	if got := sc.nextText(t); got != want {
		t.Fatalf("server got %s, want %s", got, want)
	}

	if err := c.Unsubscribe("my-channel"); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	want = `{"event":"pusher:unsubscribe","data":{"channel":"my-channel"}}`
	if got := sc.nextText(t); got != want {
		t.Fatalf("server got %s, want %s", got, want)
	}
}

func TestSubscribeRefused(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	cases := []struct {
		name    string
		channel string
		event   string
		code    int
		typ     string
		message string
	}{
		{
			name:    "pusher error",
			channel: chanErr + "a",
			event:   EventError,
			code:    0,
			message: "Existing subscription to channel " + chanErr + "a",
		},
		{
			name:    "subscription error",
			channel: chanSubErr + "a",
			event:   EventSubscriptionError,
			code:    401,
			typ:     "AuthError",
			message: "The connection is unauthorized.",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Subscribe(testCtx(t), tc.channel)
			var se *SubscriptionError
			if !errors.As(err, &se) {
				t.Fatalf("Subscribe error %v, want *SubscriptionError", err)
			}
			if se.Channel != tc.channel || se.Event.Event != tc.event || se.Code != tc.code ||
				se.Type != tc.typ || se.Message != tc.message {
				t.Fatalf("SubscriptionError = %+v", se)
			}
		})
	}
}

// Events read while Subscribe waits are kept, in order, for Next.
func TestSubscribeKeepsEvents(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	if err := c.Subscribe(testCtx(t), chanNoisy+"a"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if ev := next(t, c); ev.Event != "other" || ev.Data != "1" {
		t.Fatalf("first kept event = %+v", ev)
	}
	if ev := next(t, c); ev.Event != EventError || ev.Channel != "x" {
		t.Fatalf("second kept event = %+v", ev)
	}
}

func TestWaitForKeepsOrder(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	for _, f := range []string{
		`{"event":"e1","channel":"a","data":"1"}`,
		`{"event":"e2","channel":"b","data":"2"}`,
		`{"event":"e3","channel":"a","data":"3"}`,
		`{"event":"e3","channel":"b","data":"4"}`,
		`{"event":"e5","channel":"a","data":"5"}`,
	} {
		sc.sendText(f)
	}
	ctx := testCtx(t)
	ev, err := c.WaitFor(ctx, "e3", "b")
	if err != nil || ev.Data != "4" {
		t.Fatalf("WaitFor(e3, b) = %+v, %v", ev, err)
	}
	ev, err = c.WaitFor(ctx, "e3", "")
	if err != nil || ev.Data != "3" {
		t.Fatalf("WaitFor(e3) = %+v, %v", ev, err)
	}
	for _, want := range []string{"1", "2", "5"} {
		if ev := next(t, c); ev.Data != want {
			t.Fatalf("Next = %+v, want data %s", ev, want)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty queue = %v, want deadline exceeded", err)
	}
}

func TestWaitForTooManyPending(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{MaxPending: 2})
	sc := s.accept(t)
	for i := 0; i < 3; i++ {
		sc.sendText(`{"event":"x"}`)
	}
	if _, err := c.WaitFor(testCtx(t), "never", ""); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("WaitFor = %v, want ErrTooManyPending", err)
	}
	for i := 0; i < 3; i++ {
		if ev := next(t, c); ev.Event != "x" {
			t.Fatalf("Next = %+v", ev)
		}
	}
}

func TestAutoPong(t *testing.T) {
	s := newTestServer(t)
	var wsPongs atomic.Int32
	c := dial(t, s, keyOK, Options{OnControl: func(op ws.OpCode, p []byte) {
		if op == ws.OpPong {
			wsPongs.Add(1)
		}
	}})
	sc := s.accept(t)

	sc.sendText(`{"event":"pusher:ping","data":"{}"}`)
	if got, want := sc.nextText(t), `{"event":"pusher:pong","data":{}}`; got != want {
		t.Fatalf("server got %s, want %s", got, want)
	}
	if ev := next(t, c); ev.Event != EventPing {
		t.Fatalf("Next = %+v, want the ping", ev)
	}
	sc.sendFrame(ws.NewPingFrame([]byte("abc")))
	if f := sc.next(t); f.op != ws.OpPong || string(f.payload) != "abc" {
		t.Fatalf("server got %v %q, want pong abc", f.op, f.payload)
	}

	// The client's own pings: a WebSocket ping and a pusher:ping.
	if err := c.SendFrame(ws.OpPing, true, []byte("p")); err != nil {
		t.Fatal(err)
	}
	if err := testkit.Poll(5*time.Second, func() error {
		if wsPongs.Load() == 0 {
			return errors.New("no WebSocket pong seen")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(EventPing, "", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitFor(testCtx(t), EventPong, ""); err != nil {
		t.Fatalf("WaitFor pong: %v", err)
	}

	// Off: no answer. The ping is read by Next before the marker is sent,
	// and a pong would have been written before the ping was queued.
	c.SetAutoPong(false)
	sc.sendText(`{"event":"pusher:ping","data":"{}"}`)
	sc.sendFrame(ws.NewPingFrame([]byte("x")))
	sc.sendText(`{"event":"after"}`)
	if _, err := c.WaitFor(testCtx(t), "after", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Send("marker", "", nil); err != nil {
		t.Fatal(err)
	}
	for {
		f := sc.next(t)
		if f.op == ws.OpPong || strings.Contains(string(f.payload), "pong") {
			t.Fatalf("server got a pong with AutoPong off: %q", f.payload)
		}
		if string(f.payload) == `{"event":"marker"}` {
			break
		}
	}
}

func TestSendFrames(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)

	if err := c.Send("client-x", "private-a", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := sc.nextText(t), `{"event":"client-x","channel":"private-a","data":{"n":1}}`; got != want {
		t.Fatalf("Send wrote %s, want %s", got, want)
	}
	if err := c.SendRaw([]byte(`{not json`)); err != nil {
		t.Fatal(err)
	}
	if got := sc.nextText(t); got != `{not json` {
		t.Fatalf("SendRaw wrote %s", got)
	}
	// A fragmented text message with a ping in between.
	payload := []byte(`{"event":"frag"}`)
	steps := []struct {
		op  ws.OpCode
		fin bool
		p   []byte
	}{
		{
			op: ws.OpText,
			p:  payload[:5],
		},
		{
			op:  ws.OpPing,
			fin: true,
			p:   []byte("mid"),
		},
		{
			op:  ws.OpContinuation,
			fin: true,
			p:   payload[5:],
		},
	}
	for _, st := range steps {
		if err := c.SendFrame(st.op, st.fin, st.p); err != nil {
			t.Fatal(err)
		}
	}
	if f := sc.next(t); f.op != ws.OpPing || string(f.payload) != "mid" {
		t.Fatalf("server got %v %q, want the ping first", f.op, f.payload)
	}
	if got := sc.nextText(t); got != string(payload) {
		t.Fatalf("server reassembled %q", got)
	}
	if string(payload) != `{"event":"frag"}` {
		t.Fatalf("SendFrame modified the caller's payload: %q", payload)
	}
	// SendBytes: an unmasked frame, which the server must refuse.
	if err := c.SendBytes([]byte{0x81, 0x00}); err != nil {
		t.Fatal(err)
	}
	sc.waitDone(t)
}

func TestServerClose(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	sc.sendText(`{"event":"last"}`)
	sc.sendClose(4201, "Pong reply not received")

	if ev := next(t, c); ev.Event != "last" {
		t.Fatalf("Next = %+v, want the event sent before the close", ev)
	}
	for i := 0; i < 2; i++ { // the terminal error sticks
		_, err := c.Next(testCtx(t))
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != 4201 || ce.Reason != "Pong reply not received" {
			t.Fatalf("Next = %v, want CloseError 4201", err)
		}
	}
	f := sc.next(t)
	if f.op != ws.OpClose || len(f.payload) < 2 || binary.BigEndian.Uint16(f.payload) != 4201 {
		t.Fatalf("server got %v %q, want a close echoing 4201", f.op, f.payload)
	}
	if err := c.Send("x", "", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after close = %v, want ErrClosed", err)
	}
}

func TestServerDrop(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	sc.conn.Close()
	_, err := c.Next(testCtx(t))
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1006 {
		t.Fatalf("Next = %v, want CloseError 1006", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.CloseNow(); err != nil {
		t.Fatalf("CloseNow after Close: %v", err)
	}
	f := sc.next(t)
	if f.op != ws.OpClose || binary.BigEndian.Uint16(f.payload) != 1000 {
		t.Fatalf("server got %v %q, want close 1000", f.op, f.payload)
	}
	if _, err := c.Next(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if err := c.SendRaw([]byte("{}")); !errors.Is(err, ErrClosed) {
		t.Fatalf("SendRaw after Close = %v, want ErrClosed", err)
	}
}

func TestCloseNow(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	if err := c.CloseNow(); err != nil {
		t.Fatalf("CloseNow: %v", err)
	}
	sc.waitDone(t)
	select {
	case f := <-sc.frames:
		t.Fatalf("server got %v %q, want nothing", f.op, f.payload)
	default:
	}
	if err := c.CloseNow(); err != nil {
		t.Fatalf("second CloseNow: %v", err)
	}
	if _, err := c.Next(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after CloseNow = %v, want ErrClosed", err)
	}
}

// Close must not wait on a reader blocked by a full queue.
func TestCloseWithFullQueue(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{QueueSize: 1})
	sc := s.accept(t)
	for i := 0; i < 10; i++ {
		sc.sendText(`{"event":"x"}`)
	}
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > closeHandshakeTimeout/2 {
		t.Fatalf("Close took %v", d)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	s := newTestServer(t)
	base := testkit.Goroutines()
	var (
		conns []*Conn
		scs   []*serverConn
	)
	for i := 0; i < 30; i++ {
		c, err := Dial(testCtx(t), s.appURL(keyOK), Options{})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		conns = append(conns, c)
		scs = append(scs, s.accept(t)) // dials are sequential: same order
	}
	for i := 0; i < 10; i++ { // refused dials leave nothing behind either
		if _, err := Dial(testCtx(t), s.appURL(keyBad), Options{}); err == nil {
			t.Fatalf("Dial %s succeeded", keyBad)
		}
		s.accept(t)
	}
	for i, c := range conns {
		switch i % 3 {
		case 0:
			c.Close()
		case 1:
			c.CloseNow()
		case 2:
			scs[i].sendClose(4200, "bye")
			var ce *CloseError
			if _, err := c.WaitFor(testCtx(t), "never", ""); !errors.As(err, &ce) {
				t.Fatalf("WaitFor after the server's close = %v", err)
			}
		}
	}
	if err := base.Leaked(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestServerBreaksProtocol(t *testing.T) {
	cases := []struct {
		name     string
		send     func(sc *serverConn)
		wantCode int    // close code Next reports, 0 if none
		wantErr  string // else a substring of Next's error
		echo     uint16 // close code the server then receives
	}{
		{
			name: "close between fragments",
			send: func(sc *serverConn) {
				sc.sendFrame(ws.NewFrame(ws.OpText, false, []byte(`{"ev`)))
				sc.sendClose(4000, "bye")
			},
			wantCode: 4000,
			echo:     4000,
		},
		{
			name: "masked frame",
			send: func(sc *serverConn) {
				sc.sendFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{}`))))
			},
			wantErr: "RFC 6455",
			echo:    1002,
		},
		{
			name: "message too large",
			send: func(sc *serverConn) {
				sc.sendText(`{"event":"` + strings.Repeat("x", 300) + `"}`)
			},
			wantErr: "too large",
			echo:    1009,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			c := dial(t, s, keyOK, Options{MaxMessageSize: 200})
			sc := s.accept(t)
			tc.send(sc)
			_, err := c.Next(testCtx(t))
			var ce *CloseError
			switch {
			case tc.wantCode != 0:
				if !errors.As(err, &ce) || ce.Code != tc.wantCode {
					t.Fatalf("Next = %v, want CloseError %d", err, tc.wantCode)
				}
			case err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Next = %v, want an error with %q", err, tc.wantErr)
			}
			f := sc.next(t)
			if f.op != ws.OpClose || len(f.payload) < 2 || binary.BigEndian.Uint16(f.payload) != tc.echo {
				t.Fatalf("server got %v %q, want close %d", f.op, f.payload, tc.echo)
			}
		})
	}
}
