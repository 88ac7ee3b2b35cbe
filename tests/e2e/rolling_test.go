package e2e

// A rolling restart that loses nothing (docs/drain.md): a 3-node cluster of
// real processes under REST publish load (100 events/s), with resuming Go
// clients (client.Session) and pusher-js clients (clients/js withResume) on
// every node. Each node in turn gets SIGTERM (drain window 1 s), exits, and
// is started again; the next one goes once it is ready. Every client must
// end with every acknowledged event exactly once, in order per channel. The
// publisher sends to a node /readyz calls ready, as a load balancer would;
// a publish whose connection is refused (the node went between the check
// and the dial) is sent again elsewhere, and every REST error is counted
// and must be a retryable one.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

const (
	rrWindow      = time.Second
	rrRate        = 100 // events/s
	rrChannels    = 8
	rrBetween     = time.Second // publishing between one node's return and the next one's SIGTERM
	rrDeliverWait = 20 * time.Second
)

var rrCluster = clusterSpec{name: "herald-rr", nodePrefix: "rr", preset: configs.PresetLocal, outputTail: 30000,
	extra: map[string]any{"shutdown": map[string]any{"drain_window": rrWindow.String(), "deadline": "15s"}}}

// rrReady tracks which nodes answer /readyz 200, polled every 20 ms.
type rrReady struct {
	nodes []*clusterNode
	ok    []atomic.Bool
}

func (r *rrReady) run(stop <-chan struct{}) {
	hc := &http.Client{Timeout: 200 * time.Millisecond}
	for {
		for i, n := range r.nodes {
			resp, err := hc.Get("http://" + n.Addr + "/readyz")
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				resp.Body.Close()
			}
			r.ok[i].Store(ok)
		}
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rrPublisher publishes numbered events, one channel after the other, to a
// ready node, and records which were acknowledged and every error.
type rrPublisher struct {
	ready    *rrReady
	rest     []*client.REST
	channels []string

	mu      sync.Mutex
	next    map[string]int
	acked   map[string][]int
	sent    int
	errors  map[string]int // by kind
	samples []string
	resent  int               // publishes sent again after a refused connection
	ackedAt map[string]string // "channel/i" -> when and through which node it was acknowledged
}

// errKind classifies a failed publish: "refused" (the connection was
// refused, nothing was sent: sent again elsewhere), "unavailable" (5xx or a
// timeout: retryable by a client, not resent here since it may have been
// stored), or "other" (not retryable: the test fails).
func errKind(status int, err error) string {
	var op *net.OpError
	switch {
	case err != nil && errors.As(err, &op) && op.Op == "dial":
		return "refused"
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "EOF")):
		return "unavailable"
	case err != nil:
		return "other"
	case status >= 500:
		return "unavailable"
	default:
		return "other"
	}
}

func (p *rrPublisher) pick(k int) int {
	for j := range p.rest {
		i := (k + j) % len(p.rest)
		if p.ready.ok[i].Load() {
			return i
		}
	}
	return k % len(p.rest)
}

func (p *rrPublisher) run(stop <-chan struct{}) {
	tick := time.NewTicker(time.Second / rrRate)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ch := p.channels[k%len(p.channels)]
		p.mu.Lock()
		p.next[ch]++
		i := p.next[ch]
		p.sent++
		p.mu.Unlock()
		data := fmt.Sprintf(`{"ch":%q,"i":%d}`, ch, i)
		for attempt := 0; ; attempt++ {
			node := p.pick(k + attempt)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			status, body, err := p.rest[node].Trigger(ctx, client.TriggerParams{Name: "fo", Data: data, Channels: []string{ch}})
			cancel()
			if err == nil && status == http.StatusOK {
				p.mu.Lock()
				p.ackedAt[fmt.Sprintf("%s/%d", ch, i)] = fmt.Sprintf("%s through node %d", time.Now().Format(trailTime), node+1)
				p.acked[ch] = append(p.acked[ch], i)
				p.mu.Unlock()
				break
			}
			kind := errKind(status, err)
			p.mu.Lock()
			p.errors[kind]++
			if len(p.samples) < 20 {
				p.samples = append(p.samples, fmt.Sprintf("%s i=%d via node %d: %s: %d %.100s %v", ch, i, node+1, kind, status, body, err))
			}
			again := kind == "refused" && attempt < 5
			if again {
				p.resent++
			}
			p.mu.Unlock()
			if !again {
				break
			}
		}
	}
}

func TestRollingRestart(t *testing.T) {
	requireClientJSDeps(t)
	if _, err := os.Stat(filepath.Join(moduleRoot, "tests", "js", "node_modules", "pusher-js")); err != nil {
		t.Fatalf("tests/js/node_modules/pusher-js is missing: run `make test` (npm ci in tests/js) first")
	}
	bin := heraldBinary(t)
	nodes := startCluster(t, rrCluster)
	channels := make([]string, rrChannels)
	for c := range channels {
		channels[c] = fmt.Sprintf("rr-%d", c)
	}
	goLogs, goStats := foStartGoSessions(t, nodes, channels)
	jsLogs, jsStats := foStartJSClients(t, nodes, channels)
	logs := append(slices.Clone(goLogs), jsLogs...)
	testkit.WaitFor(t, 15*time.Second, func() error {
		for _, l := range logs {
			l.mu.Lock()
			n := len(l.subsOK)
			l.mu.Unlock()
			if n != rrChannels {
				return fmt.Errorf("%s subscribed to %d of %d channels", l.name, n, rrChannels)
			}
		}
		return nil
	})

	ready := &rrReady{nodes: nodes, ok: make([]atomic.Bool, len(nodes))}
	stopReady := make(chan struct{})
	readyDone := make(chan struct{})
	go func() { defer close(readyDone); ready.run(stopReady) }()
	defer func() { close(stopReady); <-readyDone }()
	testkit.WaitFor(t, 5*time.Second, func() error {
		for i := range nodes {
			if !ready.ok[i].Load() {
				return fmt.Errorf("%s not ready", nodes[i].Name)
			}
		}
		return nil
	})
	pub := &rrPublisher{ready: ready, channels: channels, next: map[string]int{}, acked: map[string][]int{}, errors: map[string]int{},
		ackedAt: map[string]string{}}
	for _, n := range nodes {
		pub.rest = append(pub.rest, &client.REST{BaseURL: "http://" + n.Addr, AppID: "app-id", Key: "app-key", Secret: "app-secret",
			HTTP: &http.Client{Timeout: 5 * time.Second}})
	}
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.run(stopPub) }()
	began := time.Now()
	time.Sleep(rrBetween)

	type roll struct {
		name               string
		drain, restart     time.Duration
		readyOff, clientsN int
	}
	var rolls []roll
	for _, nd := range nodes {
		cmd, exited := nd.current()
		sigAt := time.Now()
		if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not exit within 20 s of SIGTERM", nd.Name)
		}
		drained := time.Since(sigAt)
		nd.mu.Lock()
		werr := nd.waitErr
		nd.mu.Unlock()
		if werr != nil {
			t.Errorf("%s exited with %v after SIGTERM, want status 0", nd.Name, werr)
		}
		t.Logf("%s: SIGTERM at %s, exited at %s", nd.Name, sigAt.Format(trailTime), time.Now().Format(trailTime))
		killGroup(cmd)
		untrack(cmd)
		start := time.Now()
		if err := nd.start(bin); err != nil {
			t.Fatal(err)
		}
		if err := nd.waitReady(clusterReadyTimeout); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: ready again at %s", nd.Name, time.Now().Format(trailTime))
		rolls = append(rolls, roll{name: nd.Name, drain: drained, restart: time.Since(start)})
		time.Sleep(rrBetween)
	}
	close(stopPub)
	<-pubDone
	stoppedAt := time.Now()

	pub.mu.Lock()
	acked := pub.acked
	nAcked := 0
	for _, is := range acked {
		nAcked += len(is)
	}
	sent, errs, samples, resent := pub.sent, pub.errors, pub.samples, pub.resent
	pub.mu.Unlock()
	if nAcked == 0 {
		t.Fatalf("nothing acknowledged of %d sent: %v %v", sent, errs, samples)
	}
	if err := testkit.Poll(rrDeliverWait, func() error {
		missing := 0
		for _, l := range logs {
			missing += l.missing(acked)
		}
		if missing > 0 {
			return fmt.Errorf("%d acknowledged deliveries still missing %v after publishing stopped", missing, rrDeliverWait)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	var problems []string
	var jsMoves []time.Duration
	// What a client that misses an event did around it: when the event was
	// acknowledged, and the client's connections, resume reports and
	// events on that channel.
	for _, l := range logs {
		l.mu.Lock()
		for ch, is := range acked {
			missed := false
			for _, i := range is {
				if !l.byCh[ch][i] {
					missed = true
					t.Logf("%s missed %s i=%d, acknowledged at %s (i=%d at %s, i=%d at %s)", l.name, ch, i,
						pub.ackedAt[fmt.Sprintf("%s/%d", ch, i)], i-1, pub.ackedAt[fmt.Sprintf("%s/%d", ch, i-1)],
						i+1, pub.ackedAt[fmt.Sprintf("%s/%d", ch, i+1)])
				}
			}
			if missed {
				for _, n := range l.trailFor(ch) {
					t.Logf("  %s: %s", l.name, n)
				}
			}
		}
		l.mu.Unlock()
	}
	for k, l := range logs {
		problems = append(problems, l.check(acked)...)
		l.mu.Lock()
		if len(l.failed) > 0 {
			problems = append(problems, fmt.Sprintf("%s: resume_failed %v", l.name, l.failed))
		}
		jsMoves = append(jsMoves, l.moves...)
		l.mu.Unlock()
		var connects uint64
		if k < len(goLogs) {
			connects, _ = goStats(k)
		} else {
			connects, _ = jsStats(k - len(goLogs))
		}
		// Each client was on a node that drained at least once.
		if connects < 2 {
			problems = append(problems, fmt.Sprintf("%s: %d connects over three restarts", l.name, connects))
		}
	}
	if errs["other"] > 0 {
		problems = append(problems, fmt.Sprintf("%d REST errors that are not retryable: %v", errs["other"], samples))
	}

	t.Logf("published %d events at %d/s over %v (%d acknowledged); REST errors: %v (%d sent again elsewhere); clients: %d Go sessions, %d pusher-js",
		sent, rrRate, stoppedAt.Sub(began).Round(time.Millisecond), nAcked, errs, resent, len(goLogs), len(jsLogs))
	for _, s := range samples {
		t.Logf("  REST error: %s", s)
	}
	for _, r := range rolls {
		t.Logf("  %s: SIGTERM -> exited %v (drain window %v); start -> /readyz 200 %v", r.name,
			r.drain.Round(time.Millisecond), rrWindow, r.restart.Round(time.Millisecond))
	}
	if len(jsMoves) > 0 {
		slices.Sort(jsMoves)
		t.Logf("  pusher-js: 4200 -> connected to the next node: %d moves, p50 %v, max %v", len(jsMoves),
			jsMoves[len(jsMoves)/2].Round(time.Millisecond), jsMoves[len(jsMoves)-1].Round(time.Millisecond))
		if worst := jsMoves[len(jsMoves)-1]; worst > 2*time.Second {
			problems = append(problems, fmt.Sprintf("a pusher-js client took %v from 4200 to connected elsewhere, want at once", worst))
		}
	} else {
		problems = append(problems, "no pusher-js client saw a 4200 then connected again")
	}
	slices.Sort(problems)
	if len(problems) > 0 {
		if len(problems) > 50 {
			problems = append(problems[:50], fmt.Sprintf("... and %d more", len(problems)-50))
		}
		t.Fatalf("the rolling restart broke the invariant:\n%s", strings.Join(problems, "\n"))
	}
}
