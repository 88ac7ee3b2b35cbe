package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"herald/client"
	"herald/internal/testkit"
)

// rawDial opens a TCP connection to the edge with a read deadline.
func rawDial(t *testing.T, e *edge) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readEstablished reads the 101 head and the first frame and returns the
// frame's payload.
func readEstablished(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		t.Fatalf("status line %q: %v", status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	return readFrame(t, br)
}

// readFrame reads one unmasked server frame of under 126 bytes... or more.
func readFrame(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	h, err := ws.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, h.Length)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPollerUpgrade: a plain upgrade is accepted and upgraded on a poller
// (nothing handed to the HTTP server), frames sent with the head are read,
// and the socket works as any other.
func TestPollerUpgrade(t *testing.T) {
	e := startEdge(t, nil)
	c := rawDial(t, e)
	ping := clientFrame(true, ws.OpText, []byte(`{"event":"pusher:ping","data":{}}`))
	req := "GET /app/app-key?protocol=7&client=js&version=8.4.0&flash=false HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	if _, err := c.Write(append([]byte(req), ping...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if est := readEstablished(t, br); !strings.Contains(est, "pusher:connection_established") {
		t.Fatalf("first frame %q", est)
	}
	if pong := readFrame(t, br); !strings.Contains(pong, "pusher:pong") {
		t.Fatalf("answer to the ping sent with the head: %q", pong)
	}
	if n := e.g.stats.handoffs.Load(); n != 0 {
		t.Fatalf("%d sockets handed to the HTTP server, want 0", n)
	}
	// And through the Go client, subscribed, with an event.
	cl := dial(t, e.url("app-key"))
	if err := cl.Subscribe(ctx5(t), "ch"); err != nil {
		t.Fatal(err)
	}
	publish(t, e, "ch", "ev", `{"x":1}`, "")
	ev, err := cl.WaitFor(ctx5(t), "ev", "ch")
	if err != nil || ev.Event != "ev" {
		t.Fatalf("event %+v: %v", ev, err)
	}
}

// TestPollerUpgradeHeadInPieces: a head that arrives in pieces, each one
// still the start of a GET of /app/, is gathered and upgraded on the poller.
func TestPollerUpgradeHeadInPieces(t *testing.T) {
	e := startEdge(t, nil)
	c := rawDial(t, e)
	req := "GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	for _, part := range []string{req[:3], req[3:20], req[20:]} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if est := readEstablished(t, bufio.NewReader(c)); !strings.Contains(est, "pusher:connection_established") {
		t.Fatalf("first frame %q", est)
	}
	if n := e.g.stats.handoffs.Load(); n != 0 {
		t.Fatalf("%d sockets handed to the HTTP server, want 0", n)
	}
}

// TestHandOffToHTTP: what is not a plain upgrade of /app/ is served by the
// HTTP server on the same port, with the bytes the poller read: a REST-like
// request (whole, and in pieces), a keep-alive connection that upgrades on
// its second request (fasthttp's hijack, ServeUpgrade), an upgrade with an
// escaped path, and a non-upgrade GET of /app/ (ServeUpgrade's 400).
func TestHandOffToHTTP(t *testing.T) {
	e := startEdge(t, nil)

	c := rawDial(t, e)
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, br, "200", "ok")
	// The same connection upgrades: fasthttp's hijack path.
	if _, err := io.WriteString(c, "GET /app/app-key?protocol=7 HTTP/1.1\r\n"+testkit.UpgradeHeaders+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if est := readEstablished(t, br); !strings.Contains(est, "pusher:connection_established") {
		t.Fatalf("first frame after a keep-alive request %q", est)
	}
	if _, err := c.Write(clientFrame(true, ws.OpText, []byte(`{"event":"pusher:ping","data":{}}`))); err != nil {
		t.Fatal(err)
	}
	if pong := readFrame(t, br); !strings.Contains(pong, "pusher:pong") {
		t.Fatalf("answer to a ping on a hijacked socket: %q", pong)
	}

	// In pieces: the first one already is not an upgrade of /app/.
	c2 := rawDial(t, e)
	req := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, part := range []string{req[:6], req[6:]} {
		if _, err := io.WriteString(c2, part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	expectStatus(t, bufio.NewReader(c2), "200", "ok")

	// An escaped path is fasthttp's to decode; it upgrades there.
	c3 := rawDial(t, e)
	if _, err := io.WriteString(c3, "GET /app/app%2Dkey?protocol=7 HTTP/1.1\r\n"+testkit.UpgradeHeaders+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if est := readEstablished(t, bufio.NewReader(c3)); !strings.Contains(est, "pusher:connection_established") {
		t.Fatalf("first frame of an escaped path %q", est)
	}

	// Not an upgrade: ServeUpgrade's 400.
	c4 := rawDial(t, e)
	if _, err := io.WriteString(c4, "GET /app/app-key HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, bufio.NewReader(c4), "400", "Expected a WebSocket upgrade request")

	if n := e.g.stats.handoffs.Load(); n != 4 {
		t.Fatalf("%d sockets handed to the HTTP server, want 4", n)
	}
}

func expectStatus(t *testing.T, br *bufio.Reader, code, body string) {
	t.Helper()
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 "+code+" ") {
		t.Fatalf("status line %q: %v, want %s", status, err, code)
	}
	n := -1
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(l), "content-length: "); ok {
			n = 0
			for _, ch := range strings.TrimSpace(v) {
				n = n*10 + int(ch-'0')
			}
		}
	}
	if n < 0 {
		t.Fatal("no Content-Length")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), body) {
		t.Fatalf("body %q, want %q in it", b, body)
	}
}

// TestPollerHandshakeDeadline: a socket that sends nothing, or only part of
// an upgrade head, within gateway.handshake_timeout gets a 408 and is
// closed by the poller.
func TestPollerHandshakeDeadline(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	silent := rawDial(t, e)
	partial := rawDial(t, e)
	if _, err := io.WriteString(partial, "GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{silent, partial} {
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 408 ")) || !bytes.Contains(b, []byte(`"status":408`)) {
			t.Fatalf("answer %q, want a 408", b)
		}
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := e.g.HandshakeTimeouts(); n != 2 {
			return fmt.Errorf("%d handshake timeouts counted, want 2", n)
		}
		return nil
	})
}

// TestHijackPath: the fasthttp path (ServeUpgrade, hijack, adopt) still
// serves subscribes and events, for upgrades the pollers hand over.
func TestHijackPath(t *testing.T) {
	viaFasthttp = true
	defer func() { viaFasthttp = false }()
	e := startEdge(t, nil)
	cl := dial(t, e.url("app-key"))
	if err := cl.Subscribe(ctx5(t), "ch"); err != nil {
		t.Fatal(err)
	}
	publish(t, e, "ch", "ev", `{"x":1}`, "")
	ev, err := cl.WaitFor(ctx5(t), "ev", "ch")
	if err != nil || ev.Event != "ev" {
		t.Fatalf("event %+v: %v", ev, err)
	}
	if code := closeCodeOf(t, e.url("no-such-key"), client.Options{}); code != 4001 {
		t.Fatalf("unknown key closed with %d, want 4001", code)
	}
}

// TestParseHead: what the pollers upgrade themselves and what they leave to
// the HTTP server.
func TestParseHead(t *testing.T) {
	h := func(line, extra string) []byte {
		return []byte(line + "\r\n" + testkit.UpgradeHeaders + extra + "\r\n")
	}
	r, ok := parseHead(h("GET /app/k?protocol=7&version=8.4.0&protocol=5&flag HTTP/1.1", "X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n"))
	if !ok || string(r.path) != "/app/k" || string(r.protocol) != "7" || string(r.clientVersion) != "8.4.0" ||
		string(r.xff) != "1.2.3.4" || string(r.key) != "dGhlIHNhbXBsZSBub25jZQ==" || string(r.upgrade) != "websocket" {
		t.Fatalf("parsed %+v %v", r, ok)
	}
	if r, ok := parseHead(h("GET /app/k HTTP/1.1", "")); !ok || r.protocol != nil || r.clientVersion != nil {
		t.Fatalf("no query: %+v %v", r, ok)
	}
	if r, ok := parseHead(h("GET /app/k?protocol HTTP/1.1", "")); !ok || r.protocol == nil || len(r.protocol) != 0 {
		t.Fatalf("empty protocol: %+v %v", r, ok)
	}
	for _, bad := range [][]byte{
		h("GET /app/k HTTP/1.0", ""),
		h("POST /app/k HTTP/1.1", ""),
		h("GET /app/%6b HTTP/1.1", ""),
		h("GET /app//k HTTP/1.1", ""),
		h("GET /app/../apps/x HTTP/1.1", ""),
		h("GET /app/k?version=1+2 HTTP/1.1", ""),
		h("GET /app/k?version=1%2e2 HTTP/1.1", ""),
		h("GET /app/k HTTP/1.1", "Content-Length: 5\r\n"),
		h("GET /app/k HTTP/1.1", "Transfer-Encoding: chunked\r\n"),
		h("GET /app/k HTTP/1.1", "X-Folded: a\r\n b\r\n"),
		h("GET /app/k HTTP/1.1", "No colon here\r\n"),
		h("GET http://x/app/k HTTP/1.1", ""),
	} {
		if _, ok := parseHead(bad); ok {
			t.Errorf("%q parsed; want it left to the HTTP server", bad)
		}
	}
}
