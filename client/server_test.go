package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"herald/internal/testkit"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// testCtx returns a context that ends after 5s or with the test.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const (
	testSocketID = "123.456"

	// App keys that select the test server's handshake behaviour.
	keyOK      = "app-key"   // connection_established
	keyBad     = "bad-key"   // pusher:error 4001 + close 4001
	keyClose   = "close-key" // close 4200 with no pusher:error
	keySilent  = "quiet-key" // sends nothing
	keyBurst   = "burst-key" // 101, connection_established and 3 events in one write
	keyOddable = "odd-key"   // a channel event first

	// Channel prefixes that select the answer to pusher:subscribe.
	chanErr    = "err-"    // pusher:error with code null
	chanSubErr = "suberr-" // pusher:subscription_error (soketi style)
	chanNoisy  = "noisy-"  // two unrelated events, then subscription_succeeded
)

// testServer is a tiny Pusher-like WebSocket server on loopback with a
// goroutine per connection. It records what each connection receives.
type testServer struct {
	t     *testing.T
	ln    net.Listener
	url   string // ws://127.0.0.1:port
	conns chan *serverConn
	stop  chan struct{}
	wg    sync.WaitGroup

	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// serverConn is the server side of one connection.
type serverConn struct {
	conn   net.Conn
	path   string
	header http.Header
	wmu    sync.Mutex
	frames chan serverFrame // every frame received, in order
	done   chan struct{}    // closed when the handler returns
}

type serverFrame struct {
	op      ws.OpCode
	payload []byte
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &testServer{
		t:     t,
		ln:    ln,
		url:   "ws://" + ln.Addr().String(),
		conns: make(chan *serverConn, 64),
		stop:  make(chan struct{}),
		open:  make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.close)
	return s
}

// appURL is the client URL for an app key.
func (s *testServer) appURL(key string) string {
	return s.url + "/app/" + key + "?protocol=7&client=go&version=test"
}

func (s *testServer) close() {
	s.ln.Close()
	close(s.stop)
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		}()
	}
}

// accept returns the next connection that completed the upgrade.
func (s *testServer) accept(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection accepted")
		return nil
	}
}

func (s *testServer) serve(c net.Conn) {
	sc := &serverConn{
		conn:   c,
		header: make(http.Header),
		frames: make(chan serverFrame, 1024),
		done:   make(chan struct{}),
	}
	defer close(sc.done)
	// Buffer the 101 response so that a scenario can send it together with
	// its first frames in one TCP write.
	bw := bufio.NewWriter(c)
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			sc.path = string(uri)
			return nil
		},
		OnHeader: func(k, v []byte) error {
			sc.header.Add(string(k), string(v))
			return nil
		},
	}
	if _, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{c, bw}); err != nil {
		return
	}
	select {
	case s.conns <- sc:
	default:
	}
	key := strings.TrimPrefix(strings.SplitN(sc.path, "?", 2)[0], "/app/")
	switch key {
	case keyBad:
		bw.Flush()
		sc.sendText(`{"event":"pusher:error","data":{"code":4001,"message":"App key bad-key not in this cluster"}}`)
		sc.sendClose(4001, "App key bad-key not in this cluster")
	case keyClose:
		bw.Flush()
		sc.sendClose(4200, "reconnect")
	case keySilent:
		bw.Flush()
	case keyBurst:
		ws.WriteFrame(bw, ws.NewTextFrame([]byte(establishedFrame())))
		for i := 1; i <= 3; i++ {
			ws.WriteFrame(bw, ws.NewTextFrame([]byte(fmt.Sprintf(
				`{"event":"burst","channel":"c","data":"%d"}`, i))))
		}
		bw.Flush()
	case keyOddable:
		bw.Flush()
		sc.sendText(`{"event":"hello","channel":"c","data":"{}"}`)
	default:
		bw.Flush()
		sc.sendText(establishedFrame())
	}
	s.readLoop(sc)
}

func establishedFrame() string {
	return `{"event":"pusher:connection_established","data":"{\"socket_id\":\"` +
		testSocketID + `\",\"activity_timeout\":120}"}`
}

// readLoop reads frames, records them and answers like a Pusher server.
func (s *testServer) readLoop(sc *serverConn) {
	rd := &wsutil.Reader{Source: sc.conn, State: ws.StateServerSide}
	rd.OnIntermediate = func(h ws.Header, r io.Reader) error {
		p, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return s.handle(sc, h.OpCode, p)
	}
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return
		}
		p, err := io.ReadAll(rd)
		if err != nil {
			return
		}
		if err := s.handle(sc, h.OpCode, p); err != nil {
			return
		}
	}
}

var errServerDone = errors.New("done")

func (s *testServer) handle(sc *serverConn, op ws.OpCode, p []byte) error {
	select {
	case sc.frames <- serverFrame{op: op, payload: p}:
	case <-s.stop:
		return errServerDone
	}
	switch op {
	case ws.OpPing:
		sc.sendFrame(ws.NewPongFrame(p))
	case ws.OpClose:
		sc.sendFrame(ws.NewCloseFrame(p)) // echo (a second close is harmless here)
		return errServerDone
	case ws.OpText:
		s.handleText(sc, p)
	}
	return nil
}

func (s *testServer) handleText(sc *serverConn, p []byte) {
	var msg struct {
		Event string `json:"event"`
		Data  struct {
			Channel string `json:"channel"`
		} `json:"data"`
	}
	if json.Unmarshal(p, &msg) != nil {
		return
	}
	switch msg.Event {
	case EventPing:
		sc.sendText(`{"event":"pusher:pong","data":"{}"}`)
	case EventSubscribe:
		ch := msg.Data.Channel
		switch {
		case strings.HasPrefix(ch, chanErr):
			sc.sendText(`{"event":"pusher:error","data":{"code":null,"message":"Existing subscription to channel ` + ch + `"}}`)
			return
		case strings.HasPrefix(ch, chanSubErr):
			sc.sendText(`{"event":"pusher:subscription_error","channel":"` + ch +
				`","data":{"type":"AuthError","error":"The connection is unauthorized.","status":401}}`)
			return
		case strings.HasPrefix(ch, chanNoisy):
			sc.sendText(`{"event":"other","channel":"x","data":"1"}`)
			sc.sendText(`{"event":"pusher:error","channel":"x","data":{"code":null,"message":"not yours"}}`)
		}
		sc.sendText(`{"event":"pusher_internal:subscription_succeeded","channel":"` + ch + `","data":"{}"}`)
	}
}

func (sc *serverConn) sendFrame(f ws.Frame) {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	ws.WriteFrame(sc.conn, f)
}

func (sc *serverConn) sendText(s string) { sc.sendFrame(ws.NewTextFrame([]byte(s))) }

func (sc *serverConn) sendClose(code int, reason string) {
	sc.sendFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))
}

// next returns the next frame the server received.
func (sc *serverConn) next(t *testing.T) serverFrame {
	t.Helper()
	select {
	case f := <-sc.frames:
		return f
	case <-sc.done:
		select {
		case f := <-sc.frames:
			return f
		default:
		}
		t.Fatalf("server connection ended")
	case <-time.After(5 * time.Second):
		t.Fatalf("server received nothing")
	}
	return serverFrame{}
}

// nextText returns the next text frame, skipping control frames.
func (sc *serverConn) nextText(t *testing.T) string {
	t.Helper()
	for {
		f := sc.next(t)
		if f.op == ws.OpText {
			return string(f.payload)
		}
	}
}

// waitDone waits until the server side of the connection is over.
func (sc *serverConn) waitDone(t *testing.T) {
	t.Helper()
	select {
	case <-sc.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("server connection still open")
	}
}
