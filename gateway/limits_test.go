package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/internal/testkit"
	"herald/protocol"
)

// closeCodeOf dials with opt and returns the close code the server ends
// the connection with, or 0 when it stays open for a second.
func closeCodeOf(t *testing.T, url string, opt client.Options) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opt)
	if err == nil {
		defer c.Close()
		for err == nil {
			_, err = c.Next(ctx)
		}
	}
	var ce *client.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func TestConnectionsPerIP(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.MaxConnectionsPerIP = 3 })
	var open []*client.Conn
	for range 3 {
		open = append(open, dial(t, e.url("app-key")))
	}
	if code := closeCodeOf(t, e.url("app-key"), client.Options{}); code != protocol.CodeOverCapacity {
		t.Fatalf("fourth socket from 127.0.0.1: close %d, want 4100", code)
	}
	// Another address is not affected.
	if code := closeCodeOf(t, e.url("app-key"), client.Options{LocalAddr: "127.0.0.2"}); code != 0 {
		t.Fatalf("socket from 127.0.0.2: close %d, want open", code)
	}
	// A closed socket frees its place.
	open[0].Close()
	testkit.WaitFor(t, 5*time.Second, func() error {
		if code := closeCodeOf(t, e.url("app-key"), client.Options{}); code != 0 {
			return fmt.Errorf("close %d after one left", code)
		}
		return nil
	})
	if n := e.g.LimitRefusals()["connections_per_ip"]; n < 1 {
		t.Fatalf("refusals not counted: %d", n)
	}
}

func TestAcceptRatePerIP(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.AcceptRatePerIP = 2 })
	refused := 0
	for range 6 {
		c, err := client.Dial(ctx5(t), e.url("app-key"), client.Options{LocalAddr: "127.0.0.3"})
		var ce *client.CloseError
		switch {
		case err == nil:
			defer c.Close()
		case errors.As(err, &ce) && ce.Code == protocol.CodeOverCapacity:
			refused++
		default:
			t.Fatal(err)
		}
	}
	// Six dials in well under a second: at most one token came back.
	if refused < 3 {
		t.Fatalf("%d of 6 sockets at 2 per second refused", refused)
	}
	if n := e.g.LimitRefusals()["accept_rate_per_ip"]; n != uint64(refused) {
		t.Fatalf("counted %d refusals, saw %d", n, refused)
	}
}

// X-Forwarded-For names the client only when the peer is a trusted proxy.
func TestTrustedProxies(t *testing.T) {
	e := startEdge(t, func(c *Config) {
		c.MaxConnectionsPerIP = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	from := func(xff, local string) client.Options {
		return client.Options{Header: http.Header{"X-Forwarded-For": {xff}}, LocalAddr: local}
	}
	a := dial(t, e.url("app-key")) // no header: the proxy itself, 127.0.0.1
	defer a.Close()
	if code := closeCodeOf(t, e.url("app-key"), from("203.0.113.7", "127.0.0.1")); code != 0 {
		t.Fatalf("first socket of 203.0.113.7 through the proxy: close %d", code)
	}
	// The last untrusted entry counts; what a client wrote before it does not.
	if code := closeCodeOf(t, e.url("app-key"), from("198.51.100.1, 203.0.113.8, 127.0.0.1", "127.0.0.1")); code != 0 {
		t.Fatalf("203.0.113.8 through two proxies: close %d", code)
	}
	hold, err := client.Dial(ctx5(t), e.url("app-key"), from("203.0.113.9", "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if code := closeCodeOf(t, e.url("app-key"), from("203.0.113.9", "127.0.0.1")); code != protocol.CodeOverCapacity {
		t.Fatalf("second socket of 203.0.113.9: close %d, want 4100", code)
	}
	// From an untrusted peer the header is ignored: 127.0.0.4 is counted.
	b, err := client.Dial(ctx5(t), e.url("app-key"), from("203.0.113.10", "127.0.0.4"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if code := closeCodeOf(t, e.url("app-key"), from("203.0.113.11", "127.0.0.4")); code != protocol.CodeOverCapacity {
		t.Fatalf("forged header from an untrusted peer: close %d, want 4100", code)
	}
}

func TestIPLimitsForgetIdleAddresses(t *testing.T) {
	l := ipLimits{maxOpen: 2, rate: 10, burst: 10, m: map[ipKey]*ipEntry{}}
	now := time.Now().UnixNano()
	for i := range 3000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if _, ok := l.acquire(a, now); !ok {
			t.Fatal("refused")
		}
		l.release(a)
	}
	kept := netip.MustParseAddr("10.9.9.9")
	l.acquire(kept, now)
	if kind, ok := l.acquire(kept, now); !ok || l.size() != 3001 {
		t.Fatalf("second of two: %v %v, %d tracked", kind, ok, l.size())
	}
	if kind, _ := l.acquire(kept, now); kind != limitConnectionsPerIP {
		t.Fatalf("third of two: %v", kind)
	}
	l.acquire(netip.MustParseAddr("10.9.9.10"), now+int64(ipSweepEvery)) // sweeps
	if n := l.size(); n != 2 {
		t.Fatalf("%d addresses tracked after the sweep, want the two with open sockets", n)
	}
	if got := keyOf(netip.MustParseAddr("2001:db8::1")); got != keyOf(netip.MustParseAddr("2001:db8::ffff")) {
		t.Fatalf("one /64 counted as two: %s", got)
	}
}

// subscribeBurst sends n subscribes on c at once, then a ping, and counts
// the acknowledgements and 4303 errors that come before the pong.
func subscribeBurst(t *testing.T, c *client.Conn, prefix string, n int) (ok, limited int) {
	t.Helper()
	for i := range n {
		if err := c.SendRaw(fmt.Appendf(nil, `{"event":"pusher:subscribe","data":{"channel":"%s%d"}}`, prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := c.Next(ctx5(t))
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Event {
		case "pusher_internal:subscription_succeeded":
			ok++
		case "pusher:error":
			if !strings.Contains(ev.Data, "4303") {
				t.Fatalf("error %s", ev.Data)
			}
			limited++
		case "pusher:pong":
			return ok, limited
		}
	}
}

func TestSubscribeRate(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) {
		a.SubscribeRate = 5
		a.MaxChannelsPerConnection = 8
	}))
	c := dial(t, e.url("app-key"))
	// A new socket may subscribe to as many channels as it may hold at
	// once (what pusher-js sends on connecting); past that, 5 a second.
	ok, errs := subscribeBurst(t, c, "r", 20)
	if ok != 8 || errs != 1 {
		t.Fatalf("%d subscribed, %d errors; want the burst of 8 and one 4303", ok, errs)
	}
	if n := e.g.LimitRefusals()["subscribe_rate"]; n != 12 {
		t.Fatalf("counted %d", n)
	}
	// A second later there is room for 5 messages: an unsubscribe and a
	// subscribe go through.
	time.Sleep(1100 * time.Millisecond)
	if err := c.Unsubscribe("r0"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx5(t), "later"); err != nil {
		t.Fatal(err)
	}
	// Churn is held to the rate: of 20 more messages at once, at most the
	// 5 refilled in that second (less the two just spent) pass.
	// Counted from before the churn is sent: the edge may refuse some of
	// it before this goroutine reads the counter.
	before := e.g.LimitRefusals()["subscribe_rate"]
	for i := range 10 {
		_ = c.SendRaw(fmt.Appendf(nil, `{"event":"pusher:unsubscribe","data":{"channel":"r%d"}}`, i+1))
		_ = c.SendRaw(fmt.Appendf(nil, `{"event":"pusher:subscribe","data":{"channel":"r%d"}}`, i+1))
	}
	if _, errs := subscribeBurst(t, c, "x", 0); errs != 1 {
		t.Fatalf("%d 4303 errors for a churn of 20 messages; want one", errs)
	}
	if n := e.g.LimitRefusals()["subscribe_rate"] - before; n < 14 {
		t.Fatalf("%d of 20 churn messages refused, want at least 14", n)
	}
}

// TestSubscribeBurstOfAReconnect: what pusher-js does after a reconnect,
// every channel of the connection subscribed at once, is never cut by the
// rate. The default rate (50 a second) once dropped all but the first 50
// of them, and pusher-js never resends a subscribe that got no answer.
func TestSubscribeBurstOfAReconnect(t *testing.T) {
	e := startEdge(t, nil) // defaults: subscribe_rate 50, max_channels_per_connection 1000
	for range 2 {          // a connection, then the reconnect
		c := dial(t, e.url("app-key"))
		if ok, errs := subscribeBurst(t, c, "page-", 300); ok != 300 || errs != 0 {
			t.Fatalf("%d of 300 subscribed at once, %d 4303 errors", ok, errs)
		}
		c.Close()
	}
}

func TestChannelsPerConnection(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.MaxChannelsPerConnection = 3 }))
	c := dial(t, e.url("app-key"))
	for i := range 3 {
		if err := c.Subscribe(ctx5(t), fmt.Sprint("c", i)); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Subscribe(ctx5(t), "c3")
	if err == nil || !strings.Contains(err.Error(), "at most 3 channels") {
		t.Fatalf("fourth channel: %v", err)
	}
}

func TestClientEventFloodAndNames(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.ClientEvents, a.ClientEventRate = true, 10 }))
	sign := func(c *client.Conn, ch string) {
		t.Helper()
		if _, err := c.SubscribeAuth(ctx5(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, ""), ""); err != nil {
			t.Fatal(err)
		}
	}
	a, b := dial(t, e.url("app-key")), dial(t, e.url("app-key"))
	sign(a, "private-flood")
	sign(b, "private-flood")

	// A 300-character name is refused (max_event_name_length 200), not relayed.
	long := "client-" + strings.Repeat("n", 293)
	if err := a.Send(long, "private-flood", map[string]int{}); err != nil {
		t.Fatal(err)
	}
	ev, err := a.WaitFor(ctx5(t), "pusher:error", "")
	if err != nil || !strings.Contains(ev.Data, "4301") || !strings.Contains(ev.Data, "longer than 200") {
		t.Fatalf("long name: %+v %v", ev, err)
	}

	// 2,000 events at once: ten relayed, one 4301 for the window.
	frame := []byte(`{"event":"client-f","channel":"private-flood","data":{}}`)
	for range 2000 {
		if err := a.SendRaw(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	errs := 0
	for {
		ev, err := a.Next(ctx5(t))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Event == "pusher:error" {
			errs++
		}
		if ev.Event == "pusher:pong" {
			break
		}
	}
	// The flood may straddle two windows.
	if errs < 1 || errs > 2 {
		t.Fatalf("%d pusher:error frames for 2,000 events, want one per window", errs)
	}
	got := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for {
		ev, err := b.Next(ctx)
		if err != nil {
			break
		}
		if ev.Event == long {
			t.Fatal("the long-named event was relayed")
		}
		if ev.Event == "client-f" {
			got++
		}
	}
	// The refused long name counted against the rate too.
	if got < 9 || got > 20 {
		t.Fatalf("peer got %d client events, want the rate's 9 (or 19 across two windows)", got)
	}
}

// A slow consumer leaves its channels at once, and its stream ends with
// whole frames: the 4100 pusher:error and close, which a client that reads
// late still gets.
func TestSlowConsumerEndsOnFrameBoundary(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.WriteQueueBytes = 64 << 10 })
	fast := dial(t, e.url("app-key"))
	if err := fast.Subscribe(ctx5(t), "hose"); err != nil {
		t.Fatal(err)
	}
	slow, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The default receive buffer: a tiny one (SetReadBuffer) below the
	// loopback MSS leaves the window shut between the sender's zero-window
	// probes, which back off for seconds, and the late read would stall.
	defer slow.Close()
	req := "GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	sub := clientFrame(true, ws.OpText, []byte(`{"event":"pusher:subscribe","data":{"channel":"hose"}}`))
	if _, err := slow.Write(append([]byte(req), sub...)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "hose"); n != 2 {
			return fmt.Errorf("%d subscribers", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The publisher stays at most keepUp events ahead of the reader that
	// keeps up, so that it does keep up however fast the node delivers
	// (its pollers write in parallel) and however slowly this process
	// reads; the socket that never reads falls behind all the same.
	var read atomic.Int64
	go func() {
		for ctx.Err() == nil {
			if _, err := fast.Next(ctx); err != nil {
				return
			}
			read.Add(1)
		}
	}()
	data := strings.Repeat("y", 3001) // odd sizes: the kernel's cut falls inside a frame
	const keepUp = 200
	for i := 0; e.g.Stats().SlowConsumers == 0; i++ {
		if ctx.Err() != nil || i > 20000 {
			t.Fatalf("no slow-consumer close after %d events", i)
		}
		for int64(i*10)-read.Load() > keepUp && ctx.Err() == nil && e.g.Stats().SlowConsumers == 0 {
			time.Sleep(time.Millisecond)
		}
		ps := make([]bus.Publication, 10)
		for j := range ps {
			ps[j] = bus.Publication{App: "app-id", Channel: "hose", Payload: protocol.AppendEvent(nil, "e", "hose", data, "")}
		}
		if _, err := e.bus.PublishBatch(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	// Counted out before its release, which waits closeTimeout (5 s) for
	// a close it will not send.
	began := time.Now()
	testkit.WaitFor(t, closeTimeout/2, func() error {
		if n := e.g.SubscriptionCount(e.app.ID, "hose"); n != 1 {
			return fmt.Errorf("%d subscribers", n)
		}
		return nil
	})
	t.Logf("slow consumer counted out after %v", time.Since(began).Round(time.Millisecond))

	// Read only once the node has let the socket go (closeTimeout): what
	// the kernel holds then is all the client will get. The room for the
	// tail is forced (SO_SNDBUFFORCE) only with CAP_NET_ADMIN; without it
	// the client reads while the node still waits for its close.
	if os.Geteuid() == 0 {
		testkit.WaitFor(t, 2*closeTimeout, func() error {
			if n := e.g.Stats().Connections; n != 1 {
				return fmt.Errorf("%d connections", n)
			}
			return nil
		})
	}
	// Now read it all: whole frames up to the 4100s.
	_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(slow)
	if _, err := http.ReadResponse(r, nil); err != nil {
		t.Fatal(err)
	}
	var lastText []byte
	frames := 0
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("after %d whole frames: %v (the stream ended inside a frame)", frames, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatalf("frame %d of %d bytes cut short: %v", frames, h.Length, err)
		}
		frames++
		if h.OpCode == ws.OpText {
			lastText = p
			continue
		}
		if h.OpCode == ws.OpClose {
			if code := binary.BigEndian.Uint16(p); code != 4100 || !strings.Contains(string(lastText), "4100") {
				t.Fatalf("close %d after %s", code, lastText)
			}
			break
		}
	}
	t.Logf("slow consumer read %d whole frames ending with its 4100", frames)
	if n := e.g.LimitRefusals()["write_queue"]; n != 1 {
		t.Fatalf("write_queue refusals %d", n)
	}
}

// The per-connection cost of the per-IP limits: one acquire and one
// release, over 10,000 addresses (docs/benchmarks.md, "Limits on and off").
func BenchmarkIPLimits(b *testing.B) {
	l := ipLimits{maxOpen: 1 << 20, rate: 1e6, burst: 1e6, m: map[ipKey]*ipEntry{}}
	addrs := make([]ipKey, 10000)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	now := time.Now().UnixNano()
	b.ResetTimer()
	for i := range b.N {
		a := addrs[i%len(addrs)]
		l.acquire(a, now+int64(i))
		l.release(a)
	}
}
