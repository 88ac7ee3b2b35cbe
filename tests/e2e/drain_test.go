package e2e

// The drain proof (docs/drain.md): 2,000 sockets on one node of a 3-node
// cluster of real processes, SIGTERM, a 5 s drain window. Measured from
// outside: /readyz turns 503 within 100 ms of the signal and before the
// first socket is closed, every socket is closed with 4200, the closes are
// spread over the window (no second carries much more than a fifth), the
// process exits once they are gone, and every client reconnects at once to
// the other nodes.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
)

const (
	drSockets = 2000
	drWindow  = 5 * time.Second
)

var drCluster = clusterSpec{name: "herald-dr", nodePrefix: "dr", preset: configs.PresetLocal, outputTail: 20000,
	extra: map[string]any{"shutdown": map[string]any{"drain_window": drWindow.String(), "deadline": "20s"}}}

// drSocket is what one client saw.
type drSocket struct {
	code        int       // close code from the drained node
	closedAt    time.Time // when the close was read
	reconnected time.Time // connection_established on another node
	node        int       // which one
	err         error
}

func TestDrainSpreadsClosesAndExits(t *testing.T) {
	nodes := startCluster(t, drCluster)
	victim := nodes[0]
	url := func(i int) string {
		return "ws://" + nodes[i].Addr + "/app/app-key?protocol=7&client=drain-test&version=1"
	}

	// 2,000 sockets on node 1, dialed 50 at a time.
	conns := make([]*client.Conn, drSockets)
	sem := make(chan struct{}, 50)
	var dialWG sync.WaitGroup
	var dialErr atomic.Value
	for i := range conns {
		sem <- struct{}{}
		dialWG.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, url(0), client.Options{QueueSize: 16})
			if err != nil {
				dialErr.Store(fmt.Errorf("dial %d: %w", i, err))
				return
			}
			conns[i] = c
		})
	}
	dialWG.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	})
	if err, _ := dialErr.Load().(error); err != nil {
		t.Fatal(err)
	}

	// Each client: read until the close, then dial node 2 or 3 at once.
	res := make([]drSocket, drSockets)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, c := range conns {
		wg.Go(func() {
			r := &res[i]
			for {
				_, err := c.Next(ctx)
				if err == nil {
					continue
				}
				r.closedAt = time.Now()
				var ce *client.CloseError
				if !errors.As(err, &ce) {
					r.err = err
					return
				}
				r.code = ce.Code
				break
			}
			c.CloseNow()
			r.node = 1 + i%2
			nc, err := client.Dial(ctx, url(r.node), client.Options{QueueSize: 16})
			if err != nil {
				r.err = fmt.Errorf("reconnect to %s: %w", nodes[r.node].Name, err)
				return
			}
			r.reconnected = time.Now()
			conns[i] = nc
		})
	}

	// /readyz from outside, every 2 ms until the node stops answering.
	var first503 atomic.Int64
	pollDone := make(chan struct{})
	stopPoll := make(chan struct{})
	go func() {
		defer close(pollDone)
		hc := &http.Client{Timeout: time.Second}
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			resp, err := hc.Get("http://" + victim.Addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable && first503.Load() == 0 {
					first503.Store(time.Now().UnixNano())
				}
			} else if first503.Load() != 0 {
				return // the node is gone
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the poller is polling

	cmd, exited := victim.current()
	sigAt := time.Now()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitAt time.Time
	select {
	case <-exited:
		exitAt = time.Now()
	case <-time.After(25 * time.Second):
		t.Fatalf("%s did not exit within 25 s of SIGTERM (deadline 20 s)", victim.Name)
	}
	victim.mu.Lock()
	waitErr := victim.waitErr
	victim.mu.Unlock()
	if waitErr != nil {
		t.Errorf("%s exited with %v, want status 0", victim.Name, waitErr)
	}
	wg.Wait()
	close(stopPoll)
	<-pollDone

	// Readiness first.
	f503 := time.Unix(0, first503.Load())
	if first503.Load() == 0 {
		t.Fatal("/readyz never answered 503")
	}
	readyAfter := f503.Sub(sigAt)
	if readyAfter > 100*time.Millisecond {
		t.Errorf("/readyz 503 only %v after SIGTERM, want within 100 ms", readyAfter)
	}

	// Every socket closed with 4200, and reconnected elsewhere.
	var firstClose, lastClose time.Time
	buckets := map[int]int{}
	var reconnect []time.Duration
	perNode := map[int]int{}
	var problems []string
	for i, r := range res {
		if r.err != nil {
			problems = append(problems, fmt.Sprintf("socket %d: %v", i, r.err))
			continue
		}
		if r.code != 4200 {
			problems = append(problems, fmt.Sprintf("socket %d closed with %d, want 4200", i, r.code))
		}
		if firstClose.IsZero() || r.closedAt.Before(firstClose) {
			firstClose = r.closedAt
		}
		if r.closedAt.After(lastClose) {
			lastClose = r.closedAt
		}
		buckets[int(r.closedAt.Sub(sigAt)/time.Second)]++
		reconnect = append(reconnect, r.reconnected.Sub(r.closedAt))
		perNode[r.node]++
	}
	if len(problems) > 0 {
		t.Fatalf("%d sockets went wrong, first: %v", len(problems), problems[:min(10, len(problems))])
	}
	if !f503.Before(firstClose) {
		t.Errorf("the first close (%v after SIGTERM) came before /readyz said 503 (%v)", firstClose.Sub(sigAt), readyAfter)
	}

	// Spread: with a 5 s window each second carries about 400 of 2,000
	// (the schedule gives 400±1 per second of the window; the window
	// starts a little after the signal, so a second here straddles two of
	// the window's). 440 allows the clients' own scheduling; closing all at
	// once, or over half the window, would put 2,000 or 800 in one.
	limit := drSockets / int(drWindow/time.Second) * 11 / 10
	var secs []int
	for s := range buckets {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	var line string
	for _, s := range secs {
		line += fmt.Sprintf(" %d-%ds: %d", s, s+1, buckets[s])
		if buckets[s] > limit {
			t.Errorf("second %d after SIGTERM carried %d closes, more than %d (a fifth of %d, +10%%)", s, buckets[s], limit, drSockets)
		}
	}
	if n := len(secs); n < int(drWindow/time.Second) {
		t.Errorf("closes fell in %d seconds, want the %v window's %d", n, drWindow, int(drWindow/time.Second))
	}
	if exitAt.Before(lastClose) {
		t.Errorf("process exited %v before the last close was read", lastClose.Sub(exitAt))
	}
	if took := exitAt.Sub(sigAt); took > drWindow+5*time.Second {
		t.Errorf("process exited %v after SIGTERM, want soon after the %v window", took, drWindow)
	}
	slices.Sort(reconnect)
	p50, p99 := reconnect[len(reconnect)/2], reconnect[len(reconnect)*99/100]
	if p99 > 2*time.Second {
		t.Errorf("reconnect after 4200: p99 %v, want at once", p99)
	}
	if perNode[1]+perNode[2] != drSockets {
		t.Errorf("reconnected: %v", perNode)
	}
	t.Logf("SIGTERM -> /readyz 503: %v; first close %v, last close %v, exit %v after the signal",
		readyAfter.Round(time.Millisecond), firstClose.Sub(sigAt).Round(time.Millisecond),
		lastClose.Sub(sigAt).Round(time.Millisecond), exitAt.Sub(sigAt).Round(time.Millisecond))
	t.Logf("closes per second after SIGTERM (%d sockets, %v window):%s", drSockets, drWindow, line)
	t.Logf("close -> established on %s/%s: p50 %v, p99 %v, max %v; %d on %s, %d on %s",
		nodes[1].Name, nodes[2].Name, p50.Round(time.Microsecond), p99.Round(time.Microsecond),
		reconnect[len(reconnect)-1].Round(time.Microsecond), perNode[1], nodes[1].Name, perNode[2], nodes[2].Name)
}
