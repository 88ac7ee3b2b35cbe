package bench

import (
	"bufio"
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// connections reads the herald_connections gauge of the server at ws URL u.
func connections(u string) (int, error) {
	resp, err := http.Get("http://" + strings.TrimPrefix(u, "ws://") + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "herald_connections "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, sc.Err()
}

// Three standalone nodes: the sockets go round-robin over the URLs (conn i
// to URL i % 3), counted by each server; the workers' results and the three
// servers' CPU and memory are summed.
func TestMultiURLSpreadsSockets(t *testing.T) {
	s := []server{startServer(t), startServer(t), startServer(t)}
	cfg := testConfig(s[0], Idle)
	cfg.URL = s[0].url + "," + s[1].url + " , " + s[2].url
	cfg.Conns, cfg.Workers, cfg.Hold = 301, 2, 2*time.Second
	cfg.ServerPID, cfg.ServerPIDs = s[0].pid, []int{s[1].pid, s[2].pid}
	var mu sync.Mutex
	var counts []int
	var probeErr error
	cfg.Progress = &signalWriter{word: "holding", f: func() {
		mu.Lock()
		defer mu.Unlock()
		for _, srv := range s {
			n, err := connections(srv.url)
			if err != nil {
				probeErr = err
			}
			counts = append(counts, n)
		}
	}}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	noChildren(t)
	mu.Lock()
	defer mu.Unlock()
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	// 301 sockets: 101, 100, 100.
	if len(counts) != 3 || counts[0] != 101 || counts[1] != 100 || counts[2] != 100 {
		t.Fatalf("connections per server %v, want [101 100 100]", counts)
	}
	res := rep.Results
	if res.Established != 301 || res.Subscribed != 301 || res.Drops != 0 {
		t.Fatalf("established %d subscribed %d drops %d", res.Established, res.Subscribed, res.Drops)
	}
	if got := strings.Join(rep.Params.URLs, " "); got != s[0].url+" "+s[1].url+" "+s[2].url {
		t.Fatalf("params urls %q", got)
	}
	srv := res.Server
	if srv == nil || len(srv.Nodes) != 3 || len(rep.Params.ServerPIDs) != 3 {
		t.Fatalf("server stats %+v, pids %v", srv, rep.Params.ServerPIDs)
	}
	var rss int64
	for i, n := range srv.Nodes {
		if n.PID != s[i].pid || n.RSSKiB <= 0 {
			t.Fatalf("node %d: %+v", i, n)
		}
		rss += n.RSSKiB
	}
	if ir := res.IdleResults; srv.RSSKiB != rss || ir.RSSBeforeKiB <= 0 || ir.RSSAfterKiB < rss/2 || ir.RSSPerConnBytes == 0 {
		t.Fatalf("rss %d, want the sum %d; idle %+v", srv.RSSKiB, rss, ir)
	}
}

// Fan-out over three standalone nodes publishes to one of them (the first,
// or --rest-url): exactly the subscribers on that node get the events, which
// proves where each socket went and that REST follows --rest-url.
func TestMultiURLFanoutPublishesToOneNode(t *testing.T) {
	s := []server{startServer(t), startServer(t), startServer(t)}
	for _, pub := range []int{0, 1} {
		t.Run("rest-node-"+strconv.Itoa(pub+1), func(t *testing.T) {
			cfg := testConfig(s[0], Fanout)
			cfg.URL = s[0].url + "," + s[1].url + "," + s[2].url
			if pub != 0 {
				cfg.RESTURL = "http://" + strings.TrimPrefix(s[pub].url, "ws://")
			}
			cfg.Conns, cfg.Channels, cfg.Messages, cfg.Drain = 300, 4, 20, time.Second
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			noChildren(t)
			f := rep.Results.FanoutResults
			// Each socket expects 20/4 = 5 events; 100 sockets are on each node.
			if f.Published != 20 || f.Expected != 1500 || f.Delivered != 500 || f.Lost != 1000 || f.Duplicates != 0 || f.Unexpected != 0 {
				t.Fatalf("published %d expected %d delivered %d lost %d dups %d unexpected %d, want 20/1500/500/1000/0/0",
					f.Published, f.Expected, f.Delivered, f.Lost, f.Duplicates, f.Unexpected)
			}
			want := "http://" + strings.TrimPrefix(s[pub].url, "ws://")
			if rep.Params.RESTURL != want {
				t.Fatalf("rest url %q, want %q", rep.Params.RESTURL, want)
			}
		})
	}
}

// The presence scenario against one node: every observer is "remote", and
// each join and leave is timed.
func TestPresenceOneNode(t *testing.T) {
	s := startServer(t)
	cfg := Config{Scenario: Presence, URL: s.url, AppID: "app-id", Key: "app-key", Secret: "app-secret",
		Conns: 3, Joins: 5, Converge: 5 * time.Second, Timeout: 30 * time.Second, ServerPID: s.pid}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	noChildren(t)
	res := rep.Results
	p := res.PresenceResults
	if p == nil || p.Subscribers != 3 || p.Remote != 3 || p.Joins != 5 || p.JoinsConverged != 5 || p.LeavesConverged != 5 {
		t.Fatalf("presence %+v", p)
	}
	if p.JoinMs.P50 <= 0 || p.JoinMs.Max < p.JoinMs.P50 || p.JoinEachMs.P50 <= 0 || p.LeaveMs.P50 <= 0 || p.JoinMs.Max > 5000 {
		t.Fatalf("join %+v each %+v leave %+v", p.JoinMs, p.JoinEachMs, p.LeaveMs)
	}
	if p.DuplicateEvents != 0 || p.SpuriousRemoved != 0 || p.Kill != nil {
		t.Fatalf("dups %d spurious %d kill %+v", p.DuplicateEvents, p.SpuriousRemoved, p.Kill)
	}
	// 3 observers and 5 joiners.
	if res.Established != 8 || res.Attempted != 8 || res.Subscribed != 3 || res.Server == nil {
		t.Fatalf("established %d attempted %d subscribed %d server %+v", res.Established, res.Attempted, res.Subscribed, res.Server)
	}
	var sb strings.Builder
	rep.WriteTable(&sb)
	if !strings.Contains(sb.String(), "join → member_added") || !strings.Contains(summaryResult(rep), "join → member_added") {
		t.Fatalf("table or summary lacks presence:\n%s\n%s", sb.String(), summaryResult(rep))
	}
}

// Killing a process that holds none of the observers is an error, not a
// wait for removals that never come.
func TestPresenceKillWithoutMember(t *testing.T) {
	s := startServer(t)
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(done) }()
	defer func() { _ = sleeper.Process.Kill(); <-done }()
	cfg := Config{Scenario: Presence, URL: s.url, AppID: "app-id", Key: "app-key", Secret: "app-secret",
		Conns: 2, Joins: 1, Converge: 5 * time.Second, Timeout: 30 * time.Second, KillPID: sleeper.Process.Pid}
	rep, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "held no member") {
		t.Fatalf("err %v, want held no member", err)
	}
	if rep == nil || rep.Results.PresenceResults == nil || rep.Results.PresenceResults.JoinsConverged != 1 {
		t.Fatalf("partial report %+v", rep)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the kill did not reach the process")
	}
}

func TestMultiURLConfig(t *testing.T) {
	c := DefaultConfig(Config{Scenario: Fanout, URL: "ws://127.0.0.1:1/p/, ws://127.0.0.1:2", AppID: "a", Key: "k", Secret: "s", Conns: 10})
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.RESTURL != "http://127.0.0.1:1" {
		t.Fatalf("rest url %q", c.RESTURL)
	}
	d := c.dests()
	if len(d) != 2 || d[0].Addr != "127.0.0.1:1" || !strings.HasPrefix(d[0].Path, "/p/app/k?") || d[1].Addr != "127.0.0.1:2" || !strings.HasPrefix(d[1].Path, "/app/k?") {
		t.Fatalf("dests %+v", d)
	}
	next := 0
	if src, _ := c.sourcesFor(&next, 10); len(src) != 1 {
		t.Fatalf("sources %v", src)
	}
	for _, bad := range []string{"ws://127.0.0.1:1,wss://127.0.0.1:2", "ws://127.0.0.1:1,ws://192.0.2.1:2", ","} {
		c := DefaultConfig(Config{Scenario: Fanout, URL: bad, AppID: "a", Key: "k", Secret: "s", Conns: 10})
		if err := c.validate(); err == nil {
			t.Fatalf("%q: no error", bad)
		}
	}
	p := DefaultConfig(Config{Scenario: Presence, URL: "ws://127.0.0.1:1,ws://127.0.0.1:2,ws://127.0.0.1:3", AppID: "a", Key: "k", Secret: "s"})
	if err := p.validate(); err != nil || p.Conns != 3 || p.Joins != 20 || p.Converge != 30*time.Second {
		t.Fatalf("presence defaults: %v %+v", err, p)
	}
	k := DefaultConfig(Config{Scenario: Fanout, URL: "ws://127.0.0.1:1", AppID: "a", Key: "k", Secret: "s", Conns: 1, KillPID: 5})
	if err := k.validate(); err == nil {
		t.Fatal("--kill-pid outside presence accepted")
	}
}
