package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// freeLowPort returns a port below the ephemeral range (32768-60999) that
// nothing listens on, TCP or UDP (memberlist uses both), starting at *next.
func freeLowPort(t *testing.T, next *int) int {
	t.Helper()
	for ; *next < 32768; *next++ {
		p := *next
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		*next++
		return p
	}
	t.Fatal("no free port below 32768")
	return 0
}

// startCluster starts three clustered herald nodes at once (JetStream needs
// a majority before any is ready) and waits for /readyz on all three. A
// cluster that does not become ready is stopped and started again once, on
// other ports.
func startCluster(t *testing.T) []server {
	t.Helper()
	next := 26000 + os.Getpid()%4000
	var err error
	for range 2 {
		var nodes []server
		if nodes, err = startClusterOnce(t, &next); err == nil {
			return nodes
		}
		t.Logf("cluster not ready, retrying: %v", err)
	}
	t.Fatal(err)
	return nil
}

func startClusterOnce(t *testing.T, next *int) ([]server, error) {
	bin := buildHerald(t)
	var client, ml, routes [3]int
	for i := range 3 {
		client[i], ml[i], routes[i] = freeLowPort(t, next), freeLowPort(t, next), freeLowPort(t, next)
	}
	q := func(ps [3]int) string {
		return fmt.Sprintf(`"127.0.0.1:%d", "127.0.0.1:%d", "127.0.0.1:%d"`, ps[0], ps[1], ps[2])
	}
	dir := t.TempDir()
	nodes := make([]server, 3)
	var cmds []*exec.Cmd
	var logs []string
	stop := func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	for i := range 3 {
		name := fmt.Sprintf("node%d", i+1)
		conf := fmt.Sprintf(`listen: "127.0.0.1:%d"
data_dir: %q
bus:
  client_listen: ""
cluster:
  name: herald-bench-test
  node_name: %s
  bind: "127.0.0.1:%d"
  seeds: [%s]
  routes: [%s]
  route_listen: "127.0.0.1:%d"
  preset: local
apps:
  - id: app-id
    key: app-key
    secret: app-secret
`, client[i], filepath.Join(dir, "data-"+name), name, ml[i], q(ml), q(routes), routes[i])
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			stop()
			return nil, err
		}
		cmd := exec.Command(bin, "serve", "--config", path)
		logPath := filepath.Join(dir, name+".log")
		log, err := os.Create(logPath)
		if err != nil {
			stop()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		log.Close()
		if err != nil {
			stop()
			return nil, err
		}
		cmds, logs = append(cmds, cmd), append(logs, logPath)
		nodes[i] = server{url: fmt.Sprintf("ws://127.0.0.1:%d", client[i]), pid: cmd.Process.Pid}
	}
	ready := make([]bool, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := fmt.Sprintf("http://127.0.0.1:%d/readyz", client[i])
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if resp, err := http.Get(u); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ready[i] = true
						return
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for i, ok := range ready {
		if !ok {
			stop()
			b, _ := os.ReadFile(logs[i])
			lines := strings.Split(string(b), "\n")
			return nil, fmt.Errorf("node%d (%s) not ready after 30 s; its log starts:\n%s", i+1, nodes[i].url,
				strings.Join(lines[:min(len(lines), 25)], "\n"))
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			for i, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("node%d log:\n%s", i+1, lastLines(string(b), 20))
			}
		}
	})
	return nodes, nil
}

// TestFailoverCluster kills node 3 of a real cluster while publishing: no
// event may be lost or reach the app twice, and node 3's subscribers resume.
func TestFailoverCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	nodes := startCluster(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	var table strings.Builder
	cfg := Config{
		Scenario: Failover, URL: strings.Join(urls, ","), AppID: "app-id", Key: "app-key", Secret: "app-secret",
		Conns: 60, Channels: 3, Messages: 300, Rate: 100, KillPID: nodes[2].pid, KillAfter: time.Second,
		Converge: 20 * time.Second, Timeout: 60 * time.Second, Table: &table,
	}
	rep, err := Run(context.Background(), cfg)
	t.Logf("%s", table.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	noChildren(t)
	fr := rep.Results.Failover
	if fr == nil {
		t.Fatal("no failover results")
	}
	b, _ := json.Marshal(fr)
	t.Logf("failover: %s", b)
	if fr.Lost != 0 || fr.Duplicates != 0 {
		t.Errorf("lost %d, duplicates %d; want 0 and 0", fr.Lost, fr.Duplicates)
	}
	if fr.Dropped != 20 || fr.ResumedClients != 20 {
		t.Errorf("dropped %d, resumed %d; want 20 and 20", fr.Dropped, fr.ResumedClients)
	}
	if fr.Acknowledged == 0 || fr.Expected != fr.Acknowledged*20 {
		t.Errorf("acknowledged %d, expected %d; want expected = 20 × acknowledged > 0", fr.Acknowledged, fr.Expected)
	}
	if fr.TimeToAllResumedMs <= 0 {
		t.Errorf("time_to_all_resumed_ms %v", fr.TimeToAllResumedMs)
	}
}
