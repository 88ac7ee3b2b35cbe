package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/internal/testkit"
)

// startCluster starts three clustered herald nodes at once (JetStream needs
// a majority before any is ready) and waits for /readyz on all three. A
// cluster that does not become ready is stopped and started again once, on
// other ports.
func startCluster(t *testing.T) []server {
	t.Helper()
	var err error
	for range 2 {
		var nodes []server
		if nodes, err = startClusterOnce(t); err == nil {
			return nodes
		}
		t.Logf("cluster not ready, retrying: %v", err)
	}
	t.Fatal(err)
	return nil
}

func startClusterOnce(t *testing.T) ([]server, error) {
	bin := buildHerald(t)
	l := testkit.NewLayout(t, 3, "node")
	q := func(addrs []string) string { return `"` + strings.Join(addrs, `", "`) + `"` }
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
		name := l.Names[i]
		conf := fmt.Sprintf(`listen: %q
data_dir: %q
bus:
  client_listen: ""
admin:
  listen: "127.0.0.1:0"
cluster:
  name: herald-bench-test
  node_name: %s
  bind: %q
  seeds: [%s]
  routes: [%s]
  route_listen: %q
  preset: local
apps:
  - id: app-id
    key: app-key
    secret: app-secret
`, l.Client[i], filepath.Join(dir, "data-"+name), name, l.Gossip[i], q(l.Gossip), q(l.Routes), l.Routes[i])
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
		nodes[i] = server{url: "ws://" + l.Client[i], pid: cmd.Process.Pid}
	}
	ready := make([]error, 3)
	_ = testkit.StartAll(3, func(i int) error {
		ready[i] = testkit.WaitReady(l.Client[i], 30*time.Second, nil)
		return ready[i]
	})
	for i, err := range ready {
		if err != nil {
			stop()
			b, _ := os.ReadFile(logs[i])
			lines := strings.Split(string(b), "\n")
			return nil, fmt.Errorf("%s (%s): %v; its log starts:\n%s", l.Names[i], nodes[i].url, err,
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
