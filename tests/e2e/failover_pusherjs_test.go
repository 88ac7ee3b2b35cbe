package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFailoverJS: the same scenario with stock pusher-js clients wrapped with
// withResume (clients/js), run by tests/js/failover-client.mjs in one node
// process; see that file for how a client moves to the next node.
func TestFailoverJS(t *testing.T) {
	skipUnderRace(t)
	requireClientJSDeps(t)
	if _, err := os.Stat(filepath.Join(moduleRoot, "tests", "js", "node_modules", "pusher-js")); err != nil {
		t.Fatalf("tests/js/node_modules/pusher-js is missing: run `make test` (npm ci in tests/js) first")
	}
	t.Run("kill-stream-leader", func(t *testing.T) { foRun(t, true, foStartJSClients) })
	t.Run("kill-follower", func(t *testing.T) { foRun(t, false, foStartJSClients) })
}

// foJSLine is one line of failover-client.mjs's output.
type foJSLine struct {
	K          string          `json:"k"`
	C          int             `json:"c"`
	Ch         string          `json:"ch"`
	Serial     uint64          `json:"serial"`
	Data       json.RawMessage `json:"data"`
	Node       int             `json:"node"`
	Connects   uint64          `json:"connects"`
	Duplicates uint64          `json:"duplicates"`
	Code       *int            `json:"code"`
}

func foStartJSClients(t *testing.T, nodes []*clusterNode, channels []string) ([]*foClientLog, func(k int) (uint64, uint64)) {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH: %v", err)
	}
	var addrs, starts []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr)
	}
	logs := make([]*foClientLog, foJSClients)
	for k := range foJSClients {
		start := k % 3
		starts = append(starts, strconv.Itoa(start))
		logs[k] = newFoClientLog(fmt.Sprintf("pusher-js client %d (started on %s)", k, nodes[start].Name), start)
	}
	cmd := exec.Command(nodeBin, "tests/js/failover-client.mjs")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(),
		"FO_NODES="+strings.Join(addrs, ","),
		"FO_STARTS="+strings.Join(starts, ","),
		"FO_CHANNELS="+strings.Join(channels, ","),
		"NO_COLOR=1",
	)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	setProcAttrs(cmd)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node failover-client.mjs: %v", err)
	}
	track(cmd)

	var (
		mu       sync.Mutex
		connects = make([]uint64, foJSClients)
		dups     = make([]uint64, foJSClients)
		bad      []string
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			now := time.Now()
			var ln foJSLine
			if err := json.Unmarshal(sc.Bytes(), &ln); err != nil || ln.C < 0 || ln.C >= foJSClients {
				mu.Lock()
				bad = append(bad, sc.Text())
				mu.Unlock()
				continue
			}
			l := logs[ln.C]
			switch ln.K {
			case "ev":
				l.addEvent(ln.Ch, ln.Serial, string(ln.Data), now)
			case "sub":
				l.mu.Lock()
				l.subsOK[ln.Ch] = true
				l.mu.Unlock()
			case "ok":
				var d resumeData
				_ = json.Unmarshal(ln.Data, &d)
				l.mu.Lock()
				l.resumed = append(l.resumed, d)
				l.resumeAt = append(l.resumeAt, now)
				l.mu.Unlock()
			case "failed":
				l.mu.Lock()
				l.failed = append(l.failed, ln.Ch+" "+string(ln.Data))
				l.mu.Unlock()
			case "connected":
				mu.Lock()
				connects[ln.C]++
				mu.Unlock()
				l.mu.Lock()
				if !l.told4200.IsZero() {
					l.moves = append(l.moves, now.Sub(l.told4200))
					l.told4200 = time.Time{}
				}
				l.mu.Unlock()
			case "error":
				if ln.Code != nil && *ln.Code == 4200 {
					l.mu.Lock()
					l.told4200 = now
					l.mu.Unlock()
				}
			case "stats":
				mu.Lock()
				dups[ln.C] = ln.Duplicates
				mu.Unlock()
			}
		}
	}()
	exited := make(chan struct{})
	go func() { <-readDone; _ = cmd.Wait(); close(exited) }()

	var once sync.Once
	finish := func() {
		once.Do(func() {
			stdin.Close() // the script prints its stats and exits
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				killGroup(cmd)
				<-exited
			}
		})
	}
	t.Cleanup(func() {
		finish()
		killGroup(cmd)
		untrack(cmd)
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("failover-client.mjs printed %d lines that are not events, first: %q", len(bad), bad[0])
		}
		if t.Failed() {
			t.Logf("failover-client.mjs stderr:\n%s", stderr.String())
		}
	})
	return logs, func(k int) (uint64, uint64) {
		finish() // the stats lines come when the clients stop
		mu.Lock()
		defer mu.Unlock()
		return connects[k], dups[k]
	}
}
