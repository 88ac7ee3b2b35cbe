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

	"herald/app"
	"herald/client"
	"herald/internal/testkit"
)

// Helpers of the hostile-input suite (hostile_test.go, hostile_cluster_test.go):
// the bystander every case is checked against and raw HTTP and WebSocket.

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
