package e2e

// client.Session (the Go client that resumes by itself) against a real
// Herald: a proxy cuts the connection the way a network does, events are
// published with the Go server SDK while the session is away, and the session
// delivers every event exactly once, in order, on public and private
// channels; a channel that missed more than the replay window reports
// herald:resume_failed. Guarantee: docs/protocol-extensions.md, "Resume".

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/client"
)

// resumeWait bounds a wait that includes a reconnect (the session's backoff
// is at most 2 s).
const resumeWait = 15 * time.Second

// cutProxy forwards TCP connections to Herald until cut: then it closes
// every open connection (both sides) and refuses new ones until restore.
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	refusing bool
	accepted int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// url is the session URL through the proxy.
func (p *cutProxy) url() string {
	return "ws://" + p.ln.Addr().String() + "/app/app-key?protocol=7&client=go-session&version=1"
}

func (p *cutProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refusing := p.refusing
		p.mu.Unlock()
		if refusing {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.accepted++
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

// pipe copies src to dst; when either side ends it closes both.
func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = false
}

// sessionLog is what a session delivered, read by one test goroutine.
type sessionLog struct {
	s   *client.Session
	got []client.Event
}

// until reads events until done(got) is true, or fails after d.
func (l *sessionLog) until(t *testing.T, what string, d time.Duration, done func([]client.Event) bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for !done(l.got) {
		select {
		case ev, ok := <-l.s.Events():
			if !ok {
				t.Fatalf("session ended (%v) waiting for %s; got %s", l.s.Err(), what, l.describe())
			}
			l.got = append(l.got, ev)
		case <-timer.C:
			t.Fatalf("no %s within %v; got %s (stats %+v)", what, d, l.describe(), l.s.Stats())
		}
	}
}

func (l *sessionLog) describe() string {
	var b strings.Builder
	for _, ev := range l.got {
		fmt.Fprintf(&b, "\n  %s %s serial=%d %s", ev.Event, ev.Channel, ev.Serial, ev.Data)
	}
	return b.String()
}

// ticks returns the n of every "tick" event on channel, in order, and checks
// that their serials increase strictly.
func (l *sessionLog) ticks(t *testing.T, channel string) []int {
	t.Helper()
	var (
		out  []int
		last uint64
	)
	for _, ev := range l.got {
		if ev.Channel != channel || ev.Event != "tick" {
			continue
		}
		if ev.Serial <= last {
			t.Fatalf("serial %d after %d on %s:%s", ev.Serial, last, channel, l.describe())
		}
		last = ev.Serial
		var d struct{ N int }
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("tick data %q: %v", ev.Data, err)
		}
		out = append(out, d.N)
	}
	return out
}

// find returns the events named event on channel.
func (l *sessionLog) find(event, channel string) []client.Event {
	var out []client.Event
	for _, ev := range l.got {
		if ev.Event == event && ev.Channel == channel {
			out = append(out, ev)
		}
	}
	return out
}

func (l *sessionLog) counted(event, channel string, n int) func([]client.Event) bool {
	return func([]client.Event) bool { return len(l.find(event, channel)) >= n }
}

func (l *sessionLog) hasTicks(n int, channels ...string) func([]client.Event) bool {
	return func([]client.Event) bool {
		for _, ch := range channels {
			if len(l.find("tick", ch)) < n {
				return false
			}
		}
		return true
	}
}

// newResumeSession starts a session through p and closes it at cleanup.
func newResumeSession(t *testing.T, p *cutProxy) *sessionLog {
	t.Helper()
	s := client.NewSession([]string{p.url()}, client.SessionOptions{})
	t.Cleanup(s.Close)
	return &sessionLog{s: s}
}

func publishTicks(t *testing.T, h *Herald, channel string, from, to int) {
	t.Helper()
	sdk := goSDK(h)
	for n := from; n <= to; n++ {
		if err := sdk.Trigger(channel, "tick", map[string]int{"n": n}); err != nil {
			t.Fatalf("trigger tick %d on %s: %v", n, channel, err)
		}
	}
}

// signer is the AuthFunc of a private channel of the dev app.
func signer(socketID, channel string) (string, string, error) {
	return client.SignChannel("app-key", "app-secret", socketID, channel, ""), "", nil
}

// resumeData is the data of herald:resume_ok and herald:resume_failed.
type resumeData struct {
	From     uint64 `json:"from"`
	To       uint64 `json:"to"`
	Replayed int    `json:"replayed"`
	Reason   string `json:"reason"`
	First    uint64 `json:"first"`
}

func decodeResume(t *testing.T, ev client.Event) resumeData {
	t.Helper()
	var d resumeData
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("%s data %q: %v", ev.Event, ev.Data, err)
	}
	return d
}

func TestSessionResume(t *testing.T) {
	h := startResumeHerald(t)
	p := newCutProxy(t, h.Addr)
	l := newResumeSession(t, p)
	pub, priv := uniqName("resume-go"), "private-"+uniqName("resume-go")
	l.s.Subscribe(pub, nil)
	l.s.Subscribe(priv, signer)
	l.until(t, "both subscriptions", waitTimeout, func([]client.Event) bool {
		return len(l.find(client.EventSubscriptionSucceeded, pub)) == 1 &&
			len(l.find(client.EventSubscriptionSucceeded, priv)) == 1
	})

	for _, ch := range []string{pub, priv} {
		publishTicks(t, h, ch, 1, 2)
	}
	l.until(t, "ticks 1-2", waitTimeout, l.hasTicks(2, pub, priv))
	before := map[string]uint64{}
	for _, ch := range []string{pub, priv} {
		before[ch] = l.find("tick", ch)[1].Serial
	}

	p.cut()
	for _, ch := range []string{pub, priv} {
		publishTicks(t, h, ch, 3, 4)
	}
	p.restore()
	l.until(t, "ticks 3-4 replayed", resumeWait, l.hasTicks(4, pub, priv))
	for _, ch := range []string{pub, priv} {
		publishTicks(t, h, ch, 5, 5)
	}
	l.until(t, "tick 5 live", waitTimeout, l.hasTicks(5, pub, priv))

	for _, ch := range []string{pub, priv} {
		if got := l.ticks(t, ch); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
			t.Fatalf("ticks on %s = %v, want 1-5 once each:%s", ch, got, l.describe())
		}
		oks := l.find(client.EventResumeOK, ch)
		if len(oks) != 1 {
			t.Fatalf("%d %s on %s, want 1:%s", len(oks), client.EventResumeOK, ch, l.describe())
		}
		d := decodeResume(t, oks[0])
		if d.From != before[ch] || d.Replayed != 2 || d.To != l.find("tick", ch)[3].Serial {
			t.Fatalf("resume_ok on %s = %+v, want from %d, 2 replayed, to the serial of tick 4", ch, d, before[ch])
		}
	}
	if st := l.s.Stats(); st.Connects != 2 || st.ResumeFailed != 0 {
		t.Fatalf("stats %+v, want 2 connects and no failed resume", st)
	}
}

func TestSessionResumeWindowPassed(t *testing.T) {
	h := startResumeHerald(t)
	p := newCutProxy(t, h.Addr)
	l := newResumeSession(t, p)
	ch := uniqName("resume-window")
	l.s.Subscribe(ch, nil)
	l.until(t, "subscription", waitTimeout, l.counted(client.EventSubscriptionSucceeded, ch, 1))
	publishTicks(t, h, ch, 1, 1)
	l.until(t, "tick 1", waitTimeout, l.hasTicks(1, ch))
	before := l.find("tick", ch)[0].Serial

	p.cut()
	last := 1 + resumeWindow + 3
	publishTicks(t, h, ch, 2, last)
	p.restore()
	l.until(t, client.EventResumeFailed, resumeWait, l.counted(client.EventResumeFailed, ch, 1))

	d := decodeResume(t, l.find(client.EventResumeFailed, ch)[0])
	if d.Reason != "window_passed" || d.From != before || d.First <= before {
		t.Fatalf("resume_failed = %+v, want window_passed from %d with first after it", d, before)
	}
	// What the window still held came, without gaps or duplicates, and
	// ends with the last event published.
	got := l.ticks(t, ch)
	if len(got) < 2 || got[0] != 1 || got[len(got)-1] != last || len(got)-1 > resumeWindow {
		t.Fatalf("ticks %v: want 1, then a suffix of 2..%d at most %d long", got, last, resumeWindow)
	}
	for i := 2; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("ticks %v: gap in the replayed suffix", got)
		}
	}
}
