package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/internal/testkit"
)

// npNATSURL matches the NATS client URL in the `herald node started` log line.
var npNATSURL = regexp.MustCompile(`msg="herald node started".*\bnats=(nats://[^\s"]+)`)

// npNATSAddr waits (bounded) for Herald's `herald node started` line and
// returns the NATS client URL it names. startHerald runs Herald with
// HERALD_BUS_CLIENT_LISTEN=127.0.0.1:0, so the port is only known from there;
// the line is written just after /readyz turns 200.
func npNATSAddr(t *testing.T, h *Herald) string {
	t.Helper()
	var url string
	testkit.WaitFor(t, 5*time.Second, func() error {
		m := npNATSURL.FindStringSubmatch(h.Output())
		if m == nil {
			return errors.New("no `herald node started ... nats=nats://...` line in Herald's output")
		}
		url = m[1]
		return nil
	})
	return url
}

// npEvent is one line the subscriber script printed.
type npEvent struct {
	Channel string          `json:"channel"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

func (e npEvent) key() string {
	var b bytes.Buffer
	if err := json.Compact(&b, e.Data); err != nil {
		b.Reset()
		b.Write(e.Data)
	}
	return e.Channel + " " + e.Event + " " + b.String()
}

// npSubscriber is the running `node tests/js/nats-subscriber.mjs`.
type npSubscriber struct {
	cmd    *exec.Cmd
	lines  chan string   // stdout lines; closed at EOF
	all    []string      // every stdout line read so far (test goroutine only)
	stderr *lockedBuffer //
	exited chan struct{}
	err    error // cmd.Wait's result, valid once exited is closed
}

// npStartSubscriber starts the pusher-js subscriber script; it is killed (its
// process group, by PID) when the test ends.
func npStartSubscriber(t *testing.T, h *Herald, channels []string, expect int) *npSubscriber {
	t.Helper()
	jsDir := filepath.Join(moduleRoot, "tests", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules")); err != nil {
		t.Fatalf("%s is missing: run `make test` (npm ci in tests/js) first", filepath.Join(jsDir, "node_modules"))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH (Node.js 20 or later is needed): %v", err)
	}
	cmd := exec.Command(node, "tests/js/nats-subscriber.mjs")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(),
		"HERALD_HOST="+h.Host,
		"HERALD_PORT="+strconv.Itoa(h.Port),
		"CHANNELS="+strings.Join(channels, ","),
		"EXPECT="+strconv.Itoa(expect),
		"TIMEOUT_MS=20000",
		"NO_COLOR=1",
	)
	s := &npSubscriber{cmd: cmd, lines: make(chan string, 64), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = s.stderr
	// exec copies stdout into pw; Wait returns once that copy is done (or
	// WaitDelay passed), then pw is closed and the reader sees EOF.
	stdout, pw := io.Pipe()
	cmd.Stdout = pw
	setProcAttrs(cmd)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		pw.Close()
		t.Fatalf("starting node tests/js/nats-subscriber.mjs: %v", err)
	}
	track(cmd)
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	go func() {
		s.err = cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	t.Cleanup(func() {
		killGroup(cmd) // by PID (its process group); harmless if it exited
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			t.Logf("node subscriber (pid %d) not reaped 10s after SIGKILL", cmd.Process.Pid)
		}
		untrack(cmd)
		if t.Failed() {
			t.Logf("node subscriber stdout:\n%s\nstderr:\n%s", strings.Join(s.all, "\n"), s.stderr.String())
		}
	})
	return s
}

// next returns the next stdout line, failing the test after d or at EOF.
func (s *npSubscriber) next(t *testing.T, d time.Duration, what string) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case line, ok := <-s.lines:
		if !ok {
			<-s.exited // EOF comes after Wait returned
			t.Fatalf("subscriber exited (%v) while waiting for %s; stderr:\n%s", s.err, what, s.stderr.String())
		}
		s.all = append(s.all, line)
		return line
	case <-timer.C:
		t.Fatalf("no %s from the subscriber within %v", what, d)
	}
	return ""
}

// nextEvents reads n event lines (bounded wait each) and checks that they are
// exactly want, in any order.
func (s *npSubscriber) nextEvents(t *testing.T, what string, want ...npEvent) []npEvent {
	t.Helper()
	var got []npEvent
	for range want {
		line := s.next(t, 10*time.Second, what)
		var e npEvent
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("subscriber line %q is not an event: %v", line, err)
		}
		got = append(got, e)
	}
	npSameEvents(t, what, got, want)
	return got
}

func npSameEvents(t *testing.T, what string, got, want []npEvent) {
	t.Helper()
	count := map[string]int{}
	for _, e := range want {
		count[e.key()]++
	}
	for _, e := range got {
		count[e.key()]--
	}
	for k, n := range count {
		if n != 0 {
			t.Fatalf("%s: got %s, want %s (mismatch on %q: %+d)", what, npKeys(got), npKeys(want), k, -n)
		}
	}
}

func npKeys(es []npEvent) string {
	var ks []string
	for _, e := range es {
		ks = append(ks, e.key())
	}
	return "[" + strings.Join(ks, "; ") + "]"
}

func npEv(channel, event, data string) npEvent {
	return npEvent{Channel: channel, Event: event, Data: json.RawMessage(data)}
}

// TestNATSPublisherToPusherJS: a plain nats.go publisher (the dev app's NATS
// credentials) reaches pusher-js subscribers through both API subjects, by
// request and fire-and-forget, and an oversized event is answered 413 and
// never delivered.
//
// Barrier: the last publish goes to every subscribed channel, and the script
// stops after exactly the expected number of events. Events on one channel
// reach one connection in order, so a delivered 413 event or a duplicate
// would arrive before the barrier copy on its channel and be read in place of
// one: the per-step event check then fails.
func TestNATSPublisherToPusherJS(t *testing.T) {
	skipUnderRace(t)
	h := startHerald(t)
	url := npNATSAddr(t, h)

	channels := []string{"a", "b", "orders.42"}
	barrier := []npEvent{npEv("a", "end", `{"end":true}`), npEv("b", "end", `{"end":true}`), npEv("orders.42", "end", `{"end":true}`)}
	const expect = 2 + 2 + 1 + 3 // e1 ×2, batch ×2, fire-and-forget, barrier ×3

	sub := npStartSubscriber(t, h, channels, expect)
	if line := sub.next(t, 20*time.Second, "READY"); line != "READY" {
		t.Fatalf("subscriber printed %q before READY", line)
	}

	nc, err := nats.Connect(url,
		nats.UserInfo("app-id", "app-secret"),
		nats.CustomInboxPrefix("_INBOX.app-id"),
		nats.Timeout(5*time.Second),
	)
	if err != nil {
		t.Fatalf("nats.Connect(%s): %v", url, err)
	}
	defer nc.Close()

	request := func(subject, body string) string {
		t.Helper()
		msg, err := nc.Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("request %s %.80s: %v", subject, body, err)
		}
		return string(msg.Data)
	}
	var got []npEvent

	// (1) events by request, two channels.
	if r := request("herald.app-id.api.events", `{"name":"e1","channels":["a","orders.42"],"data":"{\"x\":1}"}`); r != "{}" {
		t.Fatalf("events reply = %q, want {}", r)
	}
	got = append(got, sub.nextEvents(t, "e1 on a and orders.42",
		npEv("a", "e1", `{"x":1}`), npEv("orders.42", "e1", `{"x":1}`))...)

	// (2) batch_events by request: two items on b (one JSON, one plain text
	// that pusher-js leaves a string).
	if r := request("herald.app-id.api.batch_events",
		`{"batch":[{"name":"b1","channel":"b","data":"{\"n\":1}"},{"name":"b2","channel":"b","data":"plain text"}]}`); r != "{}" {
		t.Fatalf("batch_events reply = %q, want {}", r)
	}
	got = append(got, sub.nextEvents(t, "b1 and b2 on b",
		npEv("b", "b1", `{"n":1}`), npEv("b", "b2", `"plain text"`))...)

	// (3) fire-and-forget on a (the single "channel" form).
	if err := nc.Publish("herald.app-id.api.events", []byte(`{"name":"f1","channel":"a","data":"{\"fire\":true}"}`)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got = append(got, sub.nextEvents(t, "f1 on a (fire-and-forget)", npEv("a", "f1", `{"fire":true}`))...)

	// (4) data over max_event_data_bytes (10240 by default): 413, not delivered.
	big := `{"name":"big","channels":["a","b","orders.42"],"data":"` + strings.Repeat("x", 10241) + `"}`
	r := request("herald.app-id.api.events", big)
	if !strings.HasPrefix(r, `{"error":`) || !strings.HasSuffix(r, `,"status":413}`) {
		t.Fatalf("oversized reply = %q, want {\"error\":...,\"status\":413}", r)
	}
	var errReply struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	dec := json.NewDecoder(strings.NewReader(r))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&errReply); err != nil || errReply.Status != 413 || errReply.Error == "" {
		t.Fatalf("oversized reply %q: parsed %+v, err %v; want a non-empty error and status 413", r, errReply, err)
	}

	// Barrier on every channel; then the script has its EXPECT events and exits.
	if r := request("herald.app-id.api.events", `{"name":"end","channels":["a","b","orders.42"],"data":"{\"end\":true}"}`); r != "{}" {
		t.Fatalf("barrier reply = %q, want {}", r)
	}
	got = append(got, sub.nextEvents(t, "the barrier on every channel", barrier...)...)

	// The script exits 0 on its own after exactly `expect` events, and
	// printed nothing else.
	select {
	case <-sub.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber did not exit within 10s of its %d events", expect)
	}
	for line := range sub.lines { // closed at EOF, before Wait returned
		sub.all = append(sub.all, line)
		t.Fatalf("subscriber printed more than %d events: %q", expect, line)
	}
	if sub.err != nil {
		t.Fatalf("subscriber exited with %v; stderr:\n%s", sub.err, sub.stderr.String())
	}
	if len(got) != expect {
		t.Fatalf("got %d events, want %d", len(got), expect)
	}
	for _, e := range got {
		if e.Event == "big" {
			t.Fatalf("the oversized event was delivered: %s", e.key())
		}
	}
}
