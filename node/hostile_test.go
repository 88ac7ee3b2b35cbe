package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/cluster"
	"herald/configs"
	"herald/internal/testkit"
	"herald/protocol"
)

// The hostile-input suite (docs/limits.md, SECURITY.md): one node, a
// bystander socket from another address receiving a numbered REST stream
// every 20 ms, and one case per kind of bad client. Each case checks the
// documented answer; after each, the node must still answer /healthz and
// the bystander must have every event so far, in order, with no gap over
// a second. RSS before and after each case goes to the test log.

const hostileHandshake = time.Second

type bystander struct {
	mu       sync.Mutex
	got      int // last number received
	sent     atomic.Int64
	err      error
	last     time.Time
	maxGap   time.Duration
	stop     chan struct{}
	done     sync.WaitGroup
	conn     *client.Conn
	seenMark int
}

func startBystander(t *testing.T, n *Node, a app.App) *bystander {
	t.Helper()
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/"+a.Key+"?protocol=7", client.Options{LocalAddr: "127.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctxT(t), "bystander"); err != nil {
		t.Fatal(err)
	}
	b := &bystander{stop: make(chan struct{}), conn: c, last: time.Now()}
	rest := &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: a.ID, Key: a.Key, Secret: a.Secret}
	b.done.Add(2)
	go func() { // the publisher
		defer b.done.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-b.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, body, err := rest.Trigger(ctx, client.TriggerParams{Name: "n", Data: strconv.Itoa(i), Channels: []string{"bystander"}})
			cancel()
			if err != nil || s != 200 {
				b.fail(fmt.Errorf("publish %d: %d %s %v", i, s, body, err))
				return
			}
			b.sent.Store(int64(i))
		}
	}()
	go func() { // the reader
		defer b.done.Done()
		for {
			ev, err := c.Next(context.Background())
			if err != nil {
				select {
				case <-b.stop:
				default:
					b.fail(fmt.Errorf("bystander socket: %w", err))
				}
				return
			}
			if ev.Event != "n" {
				continue
			}
			n, _ := strconv.Atoi(ev.Data)
			b.mu.Lock()
			now := time.Now()
			if gap := now.Sub(b.last); gap > b.maxGap {
				b.maxGap = gap
			}
			b.last = now
			if n != b.got+1 && b.err == nil {
				b.err = fmt.Errorf("bystander got event %d after %d", n, b.got)
			}
			b.got = n
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *bystander) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

// check fails the test if the bystander lost, reordered or stalled, or
// received nothing since the last check.
func (b *bystander) check(t *testing.T) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // a few more events
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
		t.Fatalf("bystander: %v", b.err)
	case b.maxGap > time.Second:
		t.Fatalf("bystander stalled %v between events", b.maxGap)
	case b.got <= b.seenMark:
		t.Fatalf("bystander received nothing during the case (at %d)", b.got)
	case time.Since(b.last) > time.Second:
		t.Fatalf("bystander has had nothing for %v", time.Since(b.last))
	}
	b.seenMark = b.got
}

// finish stops the publisher and waits for the last event.
func (b *bystander) finish(t *testing.T) {
	t.Helper()
	close(b.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		got, err := b.got, b.err
		b.mu.Unlock()
		if err != nil {
			t.Fatalf("bystander: %v", err)
		}
		if int64(got) >= b.sent.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bystander got %d of %d", got, b.sent.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.conn.Close()
	b.done.Wait()
	t.Logf("bystander: %d events in order, longest gap %v", b.got, b.maxGap.Round(time.Millisecond))
}

// rssKiB is this process's resident set (node and test clients together).
func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// wsFrame builds a client frame: rsv are the bits 0x70 of the first byte,
// mask false sends it unmasked.
func wsFrame(fin bool, rsv, op byte, payload []byte, mask bool) []byte {
	b0 := rsv | op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !mask {
		return append(out, payload...)
	}
	key := [4]byte{1, 2, 3, 4}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// closeCodeAfter reads c until the server closes it and returns the code.
func closeCodeAfter(c *client.Conn) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, err := c.Next(ctx)
		var ce *client.CloseError
		if errors.As(err, &ce) {
			return ce.Code, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// alive proves a socket still answers: pusher:ping gets pusher:pong.
func alive(t *testing.T, c *client.Conn) {
	t.Helper()
	if err := c.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitFor(ctxT(t), "pusher:pong", ""); err != nil {
		t.Fatalf("socket no longer answers: %v", err)
	}
}

// rawHTTP sends req on a new TCP connection and reads the answer; a write
// error after the server has answered is ignored.
func rawHTTP(t *testing.T, addr string, req []byte) (int, string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = c.Write(req) }()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to %.60q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// jsonError checks an answer is the REST API's JSON error with status want.
func jsonError(t *testing.T, what string, status int, ctype, body string, want int) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if status != want || ctype != "application/json" || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
		t.Errorf("%s: %d %s %q, want %d with a JSON error", what, status, ctype, body, want)
	}
}

func TestHostileInput(t *testing.T) {
	h := app.New("h", "h-key", "h-secret")
	h.ClientEvents = true
	// A new socket may send max_channels_per_connection subscribes at once
	// (docs/limits.md, "Why a burst"); 100 keeps the subscribe flood's burst
	// small. A socket holding 1000 channels is the wide app's case.
	h.MaxChannelsPerConnection = 100
	wide := app.New("wide", "wide-key", "wide-secret")
	wide.SubscribeRate = 100000
	n := startNode(t, func(c *configs.Config) {
		c.Apps = []app.App{h, wide}
		c.Gateway.HandshakeTimeout = configs.Duration(hostileHandshake)
		c.Gateway.MaxConnectionsPerIP = 1000
		c.Gateway.WriteQueueBytes = 256 << 10
	})
	addr := n.Addr().String()
	url := func(a app.App) string { return "ws://" + addr + "/app/" + a.Key + "?protocol=7" }
	dialH := func(t *testing.T, opt client.Options) *client.Conn {
		t.Helper()
		c, err := client.Dial(ctxT(t), url(h), opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	by := startBystander(t, n, h)
	start := rssKiB()
	t.Logf("RSS at start: %d KiB", start)

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"malformed upgrade requests", func(t *testing.T) {
			for _, tc := range []struct {
				what string
				req  string
				want int
			}{
				{"POST upgrade", "POST /app/h-key HTTP/1.1\r\n" + testkit.UpgradeHeaders + "Content-Length: 0\r\n\r\n", 405},
				{"no Upgrade header", "GET /app/h-key HTTP/1.1\r\nHost: x\r\n\r\n", 400},
				{"bad key", "GET /app/h-key HTTP/1.1\r\n" + strings.Replace(testkit.UpgradeHeaders, "dGhlIHNhbXBsZSBub25jZQ==", "short", 1) + "\r\n", 400},
				{"version 8", "GET /app/h-key HTTP/1.1\r\n" + strings.Replace(testkit.UpgradeHeaders, "Version: 13", "Version: 8", 1) + "\r\n", 426},
				{"100 KB query string", "GET /app/h-key?x=" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n", 431},
				{"huge header", "GET /app/h-key HTTP/1.1\r\n" + testkit.UpgradeHeaders + "Cookie: " + strings.Repeat("c", 64<<10) + "\r\n\r\n", 431},
				{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n", 400},
				{"bad request line", "GET\r\n\r\n", 400},
			} {
				status, ctype, body := rawHTTP(t, addr, []byte(tc.req))
				jsonError(t, tc.what, status, ctype, body, tc.want)
			}
			// An upgrade to an unknown key is accepted and closed with 4001.
			c, err := client.Dial(ctxT(t), "ws://"+addr+"/app/nope?protocol=7", client.Options{})
			var ce *client.CloseError
			if err == nil {
				c.Close()
				t.Fatal("unknown key accepted")
			} else if !errors.As(err, &ce) || ce.Code != 4001 {
				t.Fatalf("unknown key: %v", err)
			}
		}},
		{"bad WebSocket frames", func(t *testing.T) {
			for _, tc := range []struct {
				what  string
				frame []byte
				want  int
			}{
				{"unmasked", wsFrame(true, 0, 1, []byte(`{}`), false), 1002},
				{"reserved bits", wsFrame(true, 0x40, 1, []byte(`{}`), true), 1002},
				{"unknown opcode", wsFrame(true, 0, 0x3, []byte(`{}`), true), 1002},
				{"oversize length", append(append([]byte{0x81, 0xff}, binary.BigEndian.AppendUint64(nil, 1<<40)...), 1, 2, 3, 4), 1009},
				{"message over max_message_bytes", wsFrame(true, 0, 1, bytes.Repeat([]byte("a"), 40<<10), true), 1009},
				{"fragmented ping", wsFrame(false, 0, 0x9, []byte("p"), true), 1002},
				{"continuation without a message", wsFrame(true, 0, 0x0, []byte("x"), true), 1002},
				{"invalid UTF-8 text", wsFrame(true, 0, 1, []byte{'"', 0xff, 0xfe, '"'}, true), 1007},
				{"close code 999", wsFrame(true, 0, 0x8, []byte{0x03, 0xe7}, true), 1002},
				{"close code 1005", wsFrame(true, 0, 0x8, []byte{0x03, 0xed}, true), 1002},
				{"one-byte close", wsFrame(true, 0, 0x8, []byte{0x03}, true), 1002},
			} {
				c := dialH(t, client.Options{})
				if err := c.SendBytes(tc.frame); err != nil {
					t.Fatal(err)
				}
				if code, err := closeCodeAfter(c); code != tc.want {
					t.Errorf("%s: close %d (%v), want %d", tc.what, code, err, tc.want)
				}
			}
		}},
		{"malformed, nested and oversized JSON, unknown events", func(t *testing.T) {
			c := dialH(t, client.Options{})
			for _, msg := range []string{
				`{"event":`,
				`[1,2,3]`,
				`"just a string"`,
				`{"event":"pusher:subscribe","data":` + strings.Repeat("[", 15000) + strings.Repeat("]", 15000) + `}`,
				`{"event":"pusher:subscribe","data":{"channel":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat("}", 5000) + `}}`,
				`{"event":"pusher:subscribe","data":{"channel":"` + strings.Repeat("x", 20000) + `"}}`,
			} {
				if err := c.SendRaw([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.WaitFor(ctxT(t), "pusher:error", ""); err != nil {
					t.Fatalf("%.40s...: no pusher:error: %v", msg, err)
				}
			}
			for _, msg := range []string{`{"event":"pusher:nonsense","data":{}}`, `{"event":"whatever"}`, `{"event":"pusher_internal:subscription_succeeded","channel":"x"}`} {
				if err := c.SendRaw([]byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			alive(t, c)
			big := dialH(t, client.Options{})
			if err := big.SendRaw([]byte(`{"event":"x","data":"` + strings.Repeat("a", 40<<10) + `"}`)); err != nil {
				t.Fatal(err)
			}
			if code, err := closeCodeAfter(big); code != 1009 {
				t.Fatalf("40 KB message: close %d (%v), want 1009", code, err)
			}
		}},
		{"subscribe flood", func(t *testing.T) {
			c := dialH(t, client.Options{QueueSize: 1 << 15})
			var flood []byte
			for i := range 10000 {
				flood = append(flood, wsFrame(true, 0, 1, fmt.Appendf(nil, `{"event":"pusher:subscribe","data":{"channel":"f%d"}}`, i), true)...)
			}
			flood = append(flood, wsFrame(true, 0, 1, []byte(`{"event":"pusher:ping","data":{}}`), true)...)
			go func() { _ = c.SendBytes(flood) }()
			ok, limited := countUntilPong(t, c, "4303")
			// The burst a new socket has (max_channels_per_connection, 100
			// here) fills the socket's channels; past it 50 a second, which
			// the channel cap refuses anyway, and one 4303 a second.
			if ok != 100 || limited < 1 || limited > 3 {
				t.Fatalf("%d subscribed, %d 4303 errors; want 100 (the burst and channel cap) and one a second", ok, limited)
			}
		}},
		{"10,000 channels on one socket", func(t *testing.T) {
			c, err := client.Dial(ctxT(t), url(wide), client.Options{QueueSize: 1 << 15})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var flood []byte
			for i := range 10000 {
				flood = append(flood, wsFrame(true, 0, 1, fmt.Appendf(nil, `{"event":"pusher:subscribe","data":{"channel":"w%d"}}`, i), true)...)
			}
			flood = append(flood, wsFrame(true, 0, 1, []byte(`{"event":"pusher:ping","data":{}}`), true)...)
			go func() { _ = c.SendBytes(flood) }()
			ok, refused := countUntilPong(t, c, "at most 1000 channels")
			if ok != 1000 || refused != 9000 {
				t.Fatalf("%d subscribed and %d refused of 10,000; want 1000 (max_channels_per_connection) and 9000", ok, refused)
			}
			alive(t, c)
		}},
		{"client-event flood", func(t *testing.T) {
			a, b := dialH(t, client.Options{}), dialH(t, client.Options{})
			for _, c := range []*client.Conn{a, b} {
				if _, err := c.SubscribeAuth(ctxT(t), "private-ce", client.SignChannel(h.Key, h.Secret, c.SocketID(), "private-ce", ""), ""); err != nil {
					t.Fatal(err)
				}
			}
			var flood []byte
			for range 2000 {
				flood = append(flood, wsFrame(true, 0, 1, []byte(`{"event":"client-f","channel":"private-ce","data":{}}`), true)...)
			}
			long := `{"event":"client-` + strings.Repeat("n", 293) + `","channel":"private-ce","data":{}}`
			flood = append(flood, wsFrame(true, 0, 1, []byte(long), true)...)
			flood = append(flood, wsFrame(true, 0, 1, []byte(`{"event":"pusher:ping","data":{}}`), true)...)
			if err := a.SendBytes(flood); err != nil {
				t.Fatal(err)
			}
			_, errs := countUntilPong(t, a, "4301")
			// One per window for the flood (two if it straddles), one for the long name.
			if errs < 1 || errs > 3 {
				t.Fatalf("%d 4301 errors for 2,000 events and a long name", errs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			relayed := 0
			for {
				ev, err := b.Next(ctx)
				if err != nil {
					break
				}
				if strings.HasPrefix(ev.Event, "client-n") {
					t.Fatal("a 300-character client event name was relayed")
				}
				if ev.Event == "client-f" {
					relayed++
				}
			}
			if relayed > 20 {
				t.Fatalf("%d client events relayed at 10 per second", relayed)
			}
		}},
		{"5,000 sockets from one address", func(t *testing.T) {
			results := make(chan string, 5000)
			var held sync.Map
			var wg sync.WaitGroup
			jobs := make(chan int)
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range jobs {
						r, c := rawUpgrade(addr, "/app/h-key?protocol=7")
						if r == "accepted" {
							held.Store(c, true)
						} else if c != nil {
							c.Close()
						}
						results <- r
					}
				}()
			}
			for i := range 5000 {
				jobs <- i
			}
			close(jobs)
			wg.Wait()
			close(results)
			counts := map[string]int{}
			for r := range results {
				counts[r]++
			}
			held.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
			t.Logf("5,000 sockets from 127.0.0.1: %v", counts)
			if counts["accepted"] > 1000 || counts["accepted"] < 900 || counts["4100"] != 5000-counts["accepted"] {
				t.Fatalf("%v: want at most 1000 accepted (max_connections_per_ip) and the rest closed with 4100", counts)
			}
		}},
		{"idle and slowloris handshakes", func(t *testing.T) {
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range 500 { // never send a byte
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			stop := make(chan struct{})
			defer close(stop)
			req := "GET /app/h-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "X-Pad: " + strings.Repeat("p", 200) + "\r\n\r\n"
			for range 50 { // a byte every 100 ms
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				go func() {
					for i := 0; i < len(req); i++ {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
						}
						if _, err := c.Write([]byte{req[i]}); err != nil {
							return
						}
					}
				}()
			}
			began := time.Now()
			var wg sync.WaitGroup
			var late atomic.Int32
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Cut at the deadline: 30 s (the REST read timeout) before it was built.
					_ = c.SetReadDeadline(began.Add(5 * hostileHandshake))
					b, err := io.ReadAll(c)
					// Only the read deadline means the node left it open: a
					// reset after the 408 is the node's close meeting the
					// slowloris writer's next byte.
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						late.Add(1)
						t.Logf("socket %d: %q %v", i, b, err)
						return
					}
					if i == 0 && !bytes.Contains(b, []byte("408")) {
						t.Errorf("idle socket closed with %q, want a 408", b)
					}
				}()
			}
			wg.Wait()
			if n := late.Load(); n > 0 {
				t.Fatalf("%d of %d sockets still open at 5x handshake_timeout", n, len(conns))
			}
			t.Logf("%d idle and slowloris sockets cut by %v", len(conns), time.Since(began).Round(10*time.Millisecond))
		}},
		{"slow consumers", func(t *testing.T) {
			var slow []net.Conn
			defer func() {
				for _, c := range slow {
					c.Close()
				}
			}()
			for range 10 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				slow = append(slow, c)
				req := "GET /app/h-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
				sub := wsFrame(true, 0, 1, []byte(`{"event":"pusher:subscribe","data":{"channel":"hose"}}`), true)
				if _, err := c.Write(append([]byte(req), sub...)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() bool { return n.Gateway().SubscriptionCount("h", "hose") == 10 })
			before := n.Gateway().Stats().SlowConsumers
			data := strings.Repeat("z", 8000)
			for i := 0; n.Gateway().Stats().SlowConsumers < before+10; i++ {
				if i > 5000 {
					t.Fatal("no slow-consumer closes")
				}
				ps := make([]bus.Publication, 8)
				for j := range ps {
					ps[j] = bus.Publication{App: "h", Channel: "hose", Payload: protocol.AppendEvent(nil, "e", "hose", data, "")}
				}
				if _, err := n.Bus().PublishBatch(ctxT(t), ps); err != nil {
					t.Fatal(err)
				}
			}
			// Counted out at once, not at their release.
			waitFor(t, func() bool { return n.Gateway().SubscriptionCount("h", "hose") == 0 })
		}},
		{"REST: bad signatures and oversized bodies", func(t *testing.T) {
			path := "/apps/h/events"
			body := []byte(`{"name":"e","channels":["x"],"data":"d"}`)
			signed := func(body []byte, key, secret string, now time.Time) string {
				return protocol.SignREST("POST", path, nil, body, key, secret, now)
			}
			good := signed(body, h.Key, h.Secret, time.Now())
			post := func(query string, body []byte) (int, string, string) {
				return rawHTTP(t, addr, fmt.Appendf(nil, "POST %s?%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, query, len(body), body))
			}
			for _, tc := range []struct {
				what  string
				query string
				body  []byte
				want  int
			}{
				{"no signature", "", body, 401},
				{"wrong key", signed(body, "other", h.Secret, time.Now()), body, 401},
				{"wrong secret", signed(body, h.Key, "wrong", time.Now()), body, 401},
				{"expired timestamp", signed(body, h.Key, h.Secret, time.Now().Add(-time.Hour)), body, 401},
				{"future timestamp", signed(body, h.Key, h.Secret, time.Now().Add(time.Hour)), body, 401},
				{"another body", good, []byte(`{"name":"f","channels":["x"],"data":"d"}`), 401},
				{"no body_md5", strings.Replace(good, "body_md5=", "body_mdX=", 1), body, 401},
				{"wrong body_md5 on an empty body", good, nil, 401},
				{"auth_version 2", strings.Replace(good, "auth_version=1.0", "auth_version=2.0", 1), body, 401},
				{"upper-case signature", good[:strings.Index(good, "auth_signature=")] + strings.ToUpper(good[strings.Index(good, "auth_signature="):]), body, 401},
				{"malformed escape", good + "&x=%zz", body, 400},
			} {
				status, ctype, resp := post(tc.query, tc.body)
				jsonError(t, tc.what, status, ctype, resp, tc.want)
			}
			if s, _, resp := post(good, body); s != 200 {
				t.Fatalf("the good request: %d %s", s, resp)
			}
			huge := bytes.Repeat([]byte("a"), 2<<20)
			status, ctype, resp := post(signed(huge, h.Key, h.Secret, time.Now()), huge)
			jsonError(t, "2 MiB body by Content-Length", status, ctype, resp, 413)
			// Streamed (chunked, no length): without the lingering close the reset
			// reached net/http before the answer in most runs.
			req, _ := http.NewRequest("POST", "http://"+addr+path+"?"+good, io.LimitReader(infinite{}, 32<<20))
			req.ContentLength = -1
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("streamed 32 MiB body: %v (the connection must not be reset before the answer)", err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			jsonError(t, "streamed 32 MiB body", res.StatusCode, res.Header.Get("Content-Type"), string(got), 413)
		}},
		{"NATS: wrong credentials and foreign subjects", func(t *testing.T) {
			for _, creds := range [][2]string{{"h", "wrong"}, {"nobody", "h-secret"}, {"", ""}} {
				nc, err := nats.Connect(n.NATSURL(), nats.UserInfo(creds[0], creds[1]), nats.NoReconnect())
				if err == nil {
					nc.Close()
					t.Fatalf("NATS login as %q with %q accepted", creds[0], creds[1])
				}
			}
			nc, errs := natsConn(t, n, "h", "h-secret", "h")
			if err := nc.Publish(bus.APISubject("wide", bus.APIEvents), publishBody); err != nil {
				t.Fatal(err)
			}
			errs.waitFor(t, "Permissions Violation")
			// Subscribing is open inside the app's own NATS account
			// (bus/accounts.go), where no other app's subjects exist: a
			// subscriber to everything sees nothing of app wide's events.
			var foreign atomic.Int64
			for _, subj := range []string{">", "herald.wide.live.>", "$JS.API.>"} {
				if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
					if strings.Contains(m.Subject, "wide") {
						foreign.Add(1)
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			wnc, _ := natsConn(t, n, "wide", "wide-secret", "wide")
			if got := request(t, wnc, bus.APISubject("wide", bus.APIEvents), publishBody); string(got) != "{}" {
				t.Fatalf("wide's own publish: %s", got)
			}
			time.Sleep(200 * time.Millisecond) // long enough for a leaked copy to arrive
			if n := foreign.Load(); n != 0 {
				t.Fatalf("app h's subscriber saw %d messages of app wide", n)
			}
			// Its own subjects still work.
			if got := request(t, nc, bus.APISubject("h", bus.APIEvents), publishBody); string(got) != "{}" {
				t.Fatalf("own subject: %s", got)
			}
		}},
	}
	for _, tc := range cases {
		before := rssKiB()
		began := time.Now()
		if !t.Run(tc.name, tc.run) {
			continue
		}
		if s, _, body := rawHTTP(t, addr, []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); s != 200 {
			t.Fatalf("after %s: /healthz %d %s", tc.name, s, body)
		}
		by.check(t)
		t.Logf("%s: %v, RSS %d -> %d KiB", tc.name, time.Since(began).Round(time.Millisecond), before, rssKiB())
	}
	by.finish(t)
	// Give the edge's trim (every 5 s, after a flood has gone) its turn.
	time.Sleep(6 * time.Second)
	t.Logf("RSS at start %d KiB, at the end %d KiB; limit refusals %v", start, rssKiB(), n.limitRefusals())
}

// countUntilPong reads until pusher:pong and counts subscriptions that
// succeeded and pusher:error frames whose data contains errText.
func countUntilPong(t *testing.T, c *client.Conn, errText string) (ok, errs int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("after %d subscribed, %d errors: %v", ok, errs, err)
		}
		switch ev.Event {
		case "pusher_internal:subscription_succeeded":
			ok++
		case "pusher:error":
			if strings.Contains(ev.Data, errText) {
				errs++
			}
		case "pusher:pong":
			return ok, errs
		}
	}
}

// rawUpgrade upgrades a raw socket and classifies the first frame:
// "accepted" (connection_established; the socket is returned open), the
// pusher:error code it was refused with, or what went wrong.
func rawUpgrade(addr, path string) (string, net.Conn) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error(), nil
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n")); err != nil {
		return "write", c
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 {
		return "no 101", c
	}
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "no frame", c
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		_, _ = io.ReadFull(r, ext[:])
		n = int(binary.BigEndian.Uint16(ext[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return "short frame", c
	}
	_ = c.SetDeadline(time.Time{})
	switch {
	case bytes.Contains(p, []byte("connection_established")):
		return "accepted", c
	case bytes.Contains(p, []byte(`"code":`)):
		i := bytes.Index(p, []byte(`"code":`)) + len(`"code":`)
		return string(p[i : i+4]), c
	}
	return "unknown frame " + string(p), c
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type infinite struct{}

func (infinite) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// TestHostileWrongClusterKey is the hostile suite's "a node with a wrong
// cluster key" (SECURITY.md): a closed 3-node cluster (cluster.secret_key,
// cluster.route_auth) with a bystander on node 3 receiving a numbered
// stream published through node 3 into the app's replicated stream, and
// strangers on the cluster's ports: memberlist agents with another key and
// with none, and NATS servers dialing every route with the wrong password
// and with none. None is admitted (members and NATS peers stay 3, the
// strangers see nobody), the refusals are counted in status and metrics,
// events still cross the nodes, the bystander is whole, and neither status
// nor metrics carry a secret.
func TestHostileWrongClusterKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := closedCluster(t)
	deliversAcross(t, nodes[0], nodes[2], "closed-1")
	by := startBystander(t, nodes[2], clusterCfgs[2].Apps[0])
	before := rssKiB()

	seeds := []string{nodes[0].Cluster().Addr(), nodes[1].Cluster().Addr()}
	for _, s := range []struct {
		name string
		keys [][]byte
	}{
		{"wrong-key", [][]byte{bytes.Repeat([]byte{2}, 32)}},
		{"no-key", nil},
	} {
		stranger, err := cluster.Start(cluster.Config{Name: "test", NodeName: s.name, Bind: "127.0.0.1:0",
			Preset: "local", Seeds: seeds, SecretKeys: s.keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stranger.Shutdown() })
		defer func() {
			if m := len(stranger.Members()); m != 1 {
				t.Errorf("stranger %s sees %d members", s.name, m)
			}
		}()
	}
	routes := make([]string, len(clusterCfgs))
	for i, c := range clusterCfgs {
		routes[i] = c.Cluster.RouteListen
	}
	strangers := []*server.Server{strangerRoute(t, routes, "not-the-route-password"), strangerRoute(t, routes, "")}

	testkit.WaitFor(t, 10*time.Second, func() error {
		for i, nd := range nodes {
			st := nd.Status(ctxT(t)).Cluster
			if (i < 2 && st.GossipRefused == 0) || st.RoutesRefused == 0 { // the gossip strangers' seeds are nodes 1 and 2
				return fmt.Errorf("node %d: gossip_refused %d, routes_refused %d", i+1, st.GossipRefused, st.RoutesRefused)
			}
		}
		return nil
	})
	time.Sleep(nodes[0].Cluster().FailureDetection()) // the strangers keep trying
	for i, nd := range nodes {
		if m := len(nd.Cluster().Members()); m != 3 {
			t.Errorf("node %d sees %d members, want 3", i+1, m)
		}
		if p := nd.Bus().Peers(); p != 3 {
			t.Errorf("node %d: %d NATS peers, want 3", i+1, p)
		}
		st := nd.Status(ctxT(t)).Cluster
		if !st.GossipEncrypted || !st.RouteAuth {
			t.Errorf("node %d status: gossip_encrypted %v route_auth %v", i+1, st.GossipEncrypted, st.RouteAuth)
		}
	}
	for i, sr := range strangers {
		if n := sr.NumRoutes(); n != 0 {
			t.Errorf("stranger NATS server %d has %d routes", i, n)
		}
	}
	deliversAcross(t, nodes[1], nodes[0], "closed-2")
	by.check(t)

	// Nothing the node reports carries a secret.
	st, _ := json.Marshal(nodes[0].Status(ctxT(t)))
	resp, err := http.Get("http://" + nodes[0].Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{testKey(1), testRouteAuth} {
		if bytes.Contains(st, []byte(secret)) || bytes.Contains(metrics, []byte(secret)) {
			t.Fatalf("status or metrics carry a cluster secret")
		}
	}
	fams := scrape(t, nodes[0])
	for _, name := range []string{"herald_cluster_routes_refused_total", "herald_cluster_gossip_refused_total"} {
		if v, ok := sample(fams, name); !ok || v == 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	by.finish(t)
	t.Logf("RSS before the strangers %d KiB, after %d KiB", before, rssKiB())
}
