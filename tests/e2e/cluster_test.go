package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"herald/configs"
	"herald/internal/testkit"
)

const (
	// clusterReadyTimeout bounds a node's wait for GET /readyz: JetStream's
	// meta leader needs two of the three nodes, and elects itself after a
	// few seconds.
	clusterReadyTimeout = 30 * time.Second
	// clusterNodeTestTimeout bounds the whole `node --test` run.
	clusterNodeTestTimeout = 3 * time.Minute
)

// clusterSpec is what differs between the clusters the tests start.
type clusterSpec struct {
	name       string         // cluster.name
	nodePrefix string         // the nodes are nodePrefix1..3 (cluster.node_name)
	preset     string         // cluster.preset: configs.PresetLAN or configs.PresetLocal
	outputTail int            // on failure, log the last outputTail bytes of each node's output (0: all)
	extra      map[string]any // more top-level config keys (shutdown: ...), merged into each node's
	// configure, when set, changes node i's config before it is written
	// (after extra; apps is a []map[string]any with the one app).
	configure func(i int, cfg map[string]any)
}

// clusterNode is one `herald serve` process of a cluster test, which can be
// killed and started again with the same config and data directory.
type clusterNode struct {
	Name    string // spec.nodePrefix1..3 (cluster.node_name)
	Addr    string // client host:port (WebSocket and REST)
	config  string // the YAML file
	dataDir string
	output  *lockedBuffer // every run's output, in order

	mu      sync.Mutex
	cmd     *exec.Cmd     // the current process; nil before the first start
	exited  chan struct{} // closed when cmd has been reaped
	waitErr error         // cmd.Wait's result, valid once exited is closed
	runs    int
}

// heraldEnv is the environment of the cluster's herald processes: the test's
// own, minus HERALD_* variables, which would override the config files.
func heraldEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// start runs `herald serve --config` for the node; it does not wait for
// readiness. The node must not be running.
func (n *clusterNode) start(bin string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.exited:
		default:
			return fmt.Errorf("%s is still running (pid %d)", n.Name, n.cmd.Process.Pid)
		}
	}
	n.runs++
	if n.runs > 1 {
		fmt.Fprintf(n.output, "----- %s: run %d (restart) -----\n", n.Name, n.runs)
	}
	cmd := exec.Command(bin, "serve", "--config", n.config)
	cmd.Dir = n.dataDir
	cmd.Env = heraldEnv()
	cmd.Stdout = n.output
	cmd.Stderr = n.output
	// Own process group (and SIGKILL if the test binary dies, on Linux).
	setProcAttrs(cmd)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s serve --config %s: %w", bin, n.config, err)
	}
	track(cmd)
	exited := make(chan struct{})
	n.cmd, n.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// current returns the current process and its exit channel.
func (n *clusterNode) current() (*exec.Cmd, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd, n.exited
}

// waitReady waits until GET /readyz answers 200, the process exits, or
// timeout passes.
func (n *clusterNode) waitReady(timeout time.Duration) error {
	_, exited := n.current()
	err := testkit.WaitReady(n.Addr, timeout, exited)
	if errors.Is(err, testkit.ErrExited) {
		n.mu.Lock()
		err = fmt.Errorf("%w: %v", err, n.waitErr)
		n.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// kill9 sends SIGKILL to the node's process, by its pid only (as `kill -9
// PID` would), waits until it is reaped, then clears its process group of
// anything it left behind. It returns the time the signal was sent.
func (n *clusterNode) kill9() (time.Time, int, error) {
	cmd, exited := n.current()
	if cmd == nil {
		return time.Time{}, 0, fmt.Errorf("%s was never started", n.Name)
	}
	select {
	case <-exited:
		return time.Time{}, 0, fmt.Errorf("%s (pid %d) is not running", n.Name, cmd.Process.Pid)
	default:
	}
	pid := cmd.Process.Pid
	at := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return at, pid, fmt.Errorf("kill -9 %d (%s): %w", pid, n.Name, err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return at, pid, fmt.Errorf("%s (pid %d) not reaped within 10 s of SIGKILL", n.Name, pid)
	}
	killGroup(cmd)
	untrack(cmd)
	return at, pid, nil
}

// stop ends the current process: SIGTERM, then SIGKILL to its group after
// stopTimeout.
func (n *clusterNode) stop() bool {
	cmd, exited := n.current()
	if cmd == nil {
		return true
	}
	defer untrack(cmd)
	return stop(cmd, exited)
}

// writeClusterConfig writes node i's YAML config into dir, with the dev app
// and client events on, and returns its path.
func writeClusterConfig(t *testing.T, dir string, l *testkit.Layout, i int, spec clusterSpec, dataDir string) string {
	t.Helper()
	name := l.Names[i]
	cfg := map[string]any{
		"listen":   l.Client[i],
		"data_dir": dataDir,
		// Debug: the embedded NATS server then logs JetStream leader
		// elections, which the tests read to find the stream leader.
		"log": map[string]any{"level": "debug"},
		// No NATS client port: nothing here uses it, and three nodes would
		// need three free ports.
		"bus":   map[string]any{"client_listen": ""},
		"admin": map[string]any{"listen": "127.0.0.1:0"},
		// No drain window unless the spec sets one: the SIGTERM at the
		// end of a test closes at once.
		"shutdown": map[string]any{"drain_window": "0s"},
		"cluster":  l.Cluster(i, spec.name, spec.preset),
		"apps": []map[string]any{{
			"id": "app-id", "key": "app-key", "secret": "app-secret",
			"client_events": true,
		}},
	}
	for k, v := range spec.extra {
		cfg[k] = v
	}
	if spec.configure != nil {
		spec.configure(i, cfg)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("encoding %s's config: %v", name, err)
	}
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return path
}

// startCluster writes three configs laid out by testkit.NewLayout, starts
// the three nodes at once and waits until every one answers GET /readyz
// with 200. The nodes are stopped when the test ends, and their output is
// logged if it failed.
func startCluster(t *testing.T, spec clusterSpec) []*clusterNode {
	t.Helper()
	bin := heraldBinary(t)
	dir := t.TempDir()
	const n = 3
	l := testkit.NewLayout(t, n, spec.nodePrefix)
	nodes := make([]*clusterNode, n)
	for i, name := range l.Names {
		data := filepath.Join(dir, name, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &clusterNode{
			Name:    name,
			Addr:    l.Client[i],
			dataDir: filepath.Join(dir, name),
			config:  writeClusterConfig(t, dir, l, i, spec, data),
			output:  &lockedBuffer{},
		}
	}
	t.Logf("cluster %s: memberlist %v, routes %v", spec.name, l.Gossip, l.Routes)

	// Registered before the starts: it runs before t.TempDir's removal.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() {
				if !nd.stop() {
					t.Logf("%s on %s did not exit within %v of SIGTERM; killed", nd.Name, nd.Addr, stopTimeout)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			for _, nd := range nodes {
				out := withoutRouteRetries(nd.output.String())
				if spec.outputTail > 0 && len(out) > spec.outputTail {
					out = "...\n" + out[len(out)-spec.outputTail:]
				}
				t.Logf("herald %s (%s) output:\n%s", nd.Name, nd.config, out)
			}
		}
	})

	// All three at once: none is ready before JetStream has a majority.
	for _, nd := range nodes {
		if err := nd.start(bin); err != nil {
			t.Fatal(err)
		}
	}
	begin := time.Now()
	if err := testkit.StartAll(n, func(i int) error { return nodes[i].waitReady(clusterReadyTimeout) }); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	t.Logf("cluster: all three nodes ready %v after start (%s, %s, %s)",
		time.Since(begin).Round(time.Millisecond), nodes[0].Addr, nodes[1].Addr, nodes[2].Addr)
	return nodes
}

// The embedded NATS server's debug lines for JetStream elections: the new
// stream leader logs the first, every node the second.
const (
	streamLeaderLine = "JetStream cluster new stream leader for '$G > HERALD_app-id'"
	metaLeaderLine   = "JetStream cluster new metadata leader: "
)

// leaderEvent is one election seen in a node's log.
type leaderEvent struct {
	At     time.Time
	What   string // "stream HERALD_app-id" or "meta"
	Leader string // node name
	Logger string // the node whose log has the line
}

// leaderEvents returns the JetStream elections in the nodes' logs, oldest
// first. It depends on the wording of nats-server's debug lines; if that
// changes it finds none, and the test only loses the leader annotations.
func leaderEvents(nodes []*clusterNode) []leaderEvent {
	var out []leaderEvent
	for _, nd := range nodes {
		for _, line := range strings.Split(nd.output.String(), "\n") {
			var ev leaderEvent
			switch {
			case strings.Contains(line, streamLeaderLine):
				ev = leaderEvent{What: "stream HERALD_app-id", Leader: nd.Name}
			case strings.Contains(line, metaLeaderLine):
				_, rest, _ := strings.Cut(line, metaLeaderLine)
				name, _, _ := strings.Cut(rest, "/")
				ev = leaderEvent{What: "meta", Leader: name}
			default:
				continue
			}
			ev.Logger = nd.Name
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			ev.At = at
			out = append(out, ev)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// currentLeaders returns the latest stream and meta leader in the logs
// ("" if none was seen).
func currentLeaders(nodes []*clusterNode) (stream, meta string) {
	for _, ev := range leaderEvents(nodes) {
		if ev.What == "meta" {
			meta = ev.Leader
		} else {
			stream = ev.Leader
		}
	}
	return stream, meta
}

// clusterControl is the HTTP endpoint through which cluster.test.mjs kills
// and restarts nodes at the moments it chooses:
//
//	POST /kill/NAME     kill -9 the node's process; answers once it is reaped
//	                    with {"name","pid","killed_at_ms","stream_leader",
//	                    "meta_leader"} (Unix ms when the signal was sent; the
//	                    JetStream leaders just before it, "" if unknown)
//	POST /restart/NAME  start it again with the same config and data
//	                    directory; answers once GET /readyz is 200 with
//	                    {"name","pid","ready_at_ms","took_ms"}
//	POST /report        a JSON object of measurements, logged by the test
//
// Errors answer 500 with the reason as text.
type clusterControl struct {
	t     *testing.T
	bin   string
	nodes map[string]*clusterNode
	all   []*clusterNode

	mu       sync.Mutex
	reports  []map[string]any
	killedAt time.Time
}

func (c *clusterControl) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(err error) {
		c.t.Logf("control: %s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	op, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if op == "report" {
		var m map[string]any
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &m); err != nil {
			fail(fmt.Errorf("report: %v: %s", err, body))
			return
		}
		c.mu.Lock()
		c.reports = append(c.reports, m)
		c.mu.Unlock()
		reply(http.StatusOK, map[string]any{})
		return
	}
	nd := c.nodes[name]
	if nd == nil {
		http.Error(w, "no node "+strconv.Quote(name), http.StatusNotFound)
		return
	}
	switch op {
	case "kill":
		stream, meta := currentLeaders(c.all)
		c.t.Logf("control: KILL %s (kill -9); JetStream leaders: stream HERALD_app-id %q, meta %q", name, stream, meta)
		at, pid, err := nd.kill9()
		if err != nil {
			fail(err)
			return
		}
		c.t.Logf("control: %s (pid %d) killed with SIGKILL and reaped", name, pid)
		c.mu.Lock()
		c.killedAt = at
		c.mu.Unlock()
		reply(http.StatusOK, map[string]any{
			"name": name, "pid": pid, "killed_at_ms": at.UnixMilli(),
			"stream_leader": stream, "meta_leader": meta,
		})
	case "restart":
		c.t.Logf("control: RESTART %s", name)
		begin := time.Now()
		if err := nd.start(c.bin); err != nil {
			fail(err)
			return
		}
		if err := nd.waitReady(clusterReadyTimeout); err != nil {
			fail(err)
			return
		}
		cmd, _ := nd.current()
		took := time.Since(begin)
		c.t.Logf("control: %s (pid %d) ready %v after its restart", name, cmd.Process.Pid, took.Round(time.Millisecond))
		reply(http.StatusOK, map[string]any{
			"name": name, "pid": cmd.Process.Pid,
			"ready_at_ms": time.Now().UnixMilli(), "took_ms": took.Milliseconds(),
		})
	default:
		http.Error(w, "unknown operation "+strconv.Quote(op), http.StatusNotFound)
	}
}

// startControl serves c on a free loopback port until the test ends and
// returns its base URL.
func startControl(t *testing.T, c *clusterControl) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("control endpoint: %v", err)
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestClusterPusherJS runs tests/js/cluster.test.mjs (the real pusher-js
// and the real `pusher` server SDK) against three `herald` processes
// clustered on loopback with the LAN preset: subscribers on every node,
// publishes through node 1, presence across nodes, node 3 killed with
// SIGKILL mid-publish and then restarted. The JS test drives the kill and
// the restart through the control endpoint (HERALD_CONTROL) and reports its
// measurements there; they are logged at the end ("measured:"), with the
// JetStream elections the kill caused.
//
// Which process plays node 3 is chosen once the cluster is ready: the
// leader of the app's stream (HERALD_E2E_CLUSTER_VICTIM=follower: a node
// leading neither that stream nor the JetStream meta group).
func TestClusterPusherJS(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	jsDir := filepath.Join(moduleRoot, "tests", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules")); err != nil {
		t.Fatalf("%s is missing: run `make test` (npm ci in tests/js) first", filepath.Join(jsDir, "node_modules"))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH (Node.js 20 or later is needed): %v", err)
	}

	// The LAN preset is what users get: its failure-detection time is under test.
	nodes := startCluster(t, clusterSpec{name: "herald-e2e", nodePrefix: "n", preset: configs.PresetLAN})
	ctl := &clusterControl{t: t, bin: heraldBinary(t), nodes: map[string]*clusterNode{}, all: nodes}
	for _, nd := range nodes {
		ctl.nodes[nd.Name] = nd
	}
	// The JS test kills the third node it is given. By default that is the
	// leader of the app's stream, so the kill costs a stream leader election
	// (the harder case: with another victim publishing does not stall).
	// HERALD_E2E_CLUSTER_VICTIM=follower makes it a node that leads nothing.
	roles := append([]*clusterNode(nil), nodes...)
	stream, meta := currentLeaders(nodes)
	victim := os.Getenv("HERALD_E2E_CLUSTER_VICTIM")
	switch victim {
	case "", "leader":
		victim = "leader"
		for i, nd := range roles {
			if nd.Name == stream {
				roles[i], roles[2] = roles[2], roles[i]
				break
			}
		}
	case "follower":
		for i, nd := range roles {
			if nd.Name != stream && nd.Name != meta {
				roles[i], roles[2] = roles[2], roles[i]
				break
			}
		}
	default:
		t.Fatalf("HERALD_E2E_CLUSTER_VICTIM=%q: want leader or follower", victim)
	}
	if stream == "" {
		t.Logf("cluster: the stream leader is not in the logs; node 3 is %s", roles[2].Name)
	}
	var spec []string
	for _, nd := range roles {
		spec = append(spec, nd.Name+"="+nd.Addr)
	}
	t.Logf("cluster: JetStream leaders at start: stream HERALD_app-id %q, meta %q; victim %s: node 3 = %s; HERALD_NODES=%s",
		stream, meta, victim, roles[2].Name, strings.Join(spec, ","))
	controlURL := startControl(t, ctl)

	ctx, cancel := context.WithTimeout(t.Context(), clusterNodeTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "tests/js/cluster.test.mjs")
	cmd.Dir = moduleRoot
	host, port, _ := net.SplitHostPort(roles[0].Addr)
	cmd.Env = append(os.Environ(),
		"HERALD_NODES="+strings.Join(spec, ","),
		"HERALD_CONTROL="+controlURL,
		// helpers.mjs needs a node: node 1.
		"HERALD_HOST="+host,
		"HERALD_PORT="+port,
		"NO_COLOR=1",
	)
	setProcAttrs(cmd)
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	cmd.WaitDelay = 10 * time.Second
	var output lockedBuffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	track(cmd)
	err = cmd.Wait()
	killGroup(cmd)
	untrack(cmd)
	out := output.String()

	ctl.mu.Lock()
	reports, killedAt := ctl.reports, ctl.killedAt
	ctl.mu.Unlock()
	if !killedAt.IsZero() {
		// Leader changes after the kill, as first logged (every node logs
		// the meta leader it learns of, a restarted one too).
		leader := map[string]string{}
		for _, ev := range leaderEvents(nodes) {
			if ev.At.After(killedAt) && leader[ev.What] != ev.Leader {
				t.Logf("election: %s leader %s, %v after the kill (%s's log)", ev.What, ev.Leader, ev.At.Sub(killedAt).Round(time.Millisecond), ev.Logger)
			}
			leader[ev.What] = ev.Leader
		}
	}
	for _, r := range reports {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  %s: %v", k, r[k])
		}
		t.Logf("measured:%s", b.String())
	}

	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("node --test tests/js/cluster.test.mjs did not finish within %v; output:\n%s", clusterNodeTestTimeout, out)
	}
	if err != nil {
		t.Fatalf("node --test tests/js/cluster.test.mjs failed (%v); output:\n%s", err, out)
	}
	if strings.Contains(out, "# skipped 1") || strings.Contains(out, "ℹ skipped 1") {
		t.Fatalf("cluster.test.mjs skipped its test; output:\n%s", out)
	}
	t.Logf("node --test tests/js/cluster.test.mjs passed in %v:\n%s", time.Since(begin).Round(time.Millisecond), out)
}

// withoutRouteRetries drops nats-server's once-a-second "Error trying to
// connect to route" lines for a dead node from a node's output, and says
// how many: after a kill they would fill the tail a failed test logs.
func withoutRouteRetries(out string) string {
	var b strings.Builder
	dropped := 0
	for line := range strings.Lines(out) {
		if strings.Contains(line, "Error trying to connect to route") {
			dropped++
			continue
		}
		b.WriteString(line)
	}
	if dropped > 0 {
		fmt.Fprintf(&b, "(%d route reconnect errors left out)\n", dropped)
	}
	return b.String()
}
