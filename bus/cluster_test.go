package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"herald/internal/testkit"
)

// Cluster tests run real 3-node clusters on loopback: embedded servers in
// this process, and for the crash test one node in a child process (this
// test binary re-executed) that is killed with SIGKILL.

const (
	clusterCloseLimit = 5 * time.Second  // Close of a clustered node must return within this
	clusterPubWait    = 20 * time.Second // per publish call across a leader loss
	childEnv          = "HERALD_BUS_CLUSTER_CHILD"
)

// clusterConfigs is n node configs forming one cluster: node-1..node-n,
// each with its own store, route port and the full route list, app "app1".
func clusterConfigs(t testing.TB, n int) []Config {
	l := testkit.NewLayout(t, n, "node-")
	cfgs := make([]Config, n)
	for i := range cfgs {
		cfg := DefaultConfig(t.TempDir())
		cfg.ServerName = l.Names[i]
		cfg.Apps = []string{"app1"}
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
		cfg.Cluster = ClusterConfig{Name: "herald-test", Listen: l.Routes[i], Routes: l.Routes}
		cfg.ReadyTimeout = 20 * time.Second
		cfgs[i] = cfg
	}
	return cfgs
}

// clusterNode is one in-process node; bus is nil once closed.
type clusterNode struct {
	cfg  Config
	sink *recSink
	bus  *Bus
}

// startNodes starts one node per config, all at once (Start waits for a
// meta leader, which needs a majority of the cluster), and closes them at
// cleanup, each within clusterCloseLimit.
func startNodes(t *testing.T, cfgs []Config) []*clusterNode {
	t.Helper()
	nodes := make([]*clusterNode, len(cfgs))
	for i := range cfgs {
		nodes[i] = &clusterNode{cfg: cfgs[i], sink: &recSink{}}
	}
	err := testkit.StartAll(len(nodes), func(i int) error {
		b, err := startWithSink(cfgs[i], nodes[i].sink)
		if err != nil {
			return fmt.Errorf("Start %s: %w", cfgs[i].ServerName, err)
		}
		nodes[i].bus = b
		return nil
	})
	t.Cleanup(func() {
		for _, n := range nodes {
			n.close(t)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

// restart starts a closed node again with the same config (store, ports).
func (n *clusterNode) restart(t *testing.T) {
	t.Helper()
	n.sink = &recSink{}
	b, err := startWithSink(n.cfg, n.sink)
	if err != nil {
		t.Fatalf("restart %s: %v", n.cfg.ServerName, err)
	}
	n.bus = b
}

// close closes the node, failing the test if Close takes longer than
// clusterCloseLimit, and returns how long it took.
func (n *clusterNode) close(t testing.TB) time.Duration {
	if n.bus == nil {
		return 0
	}
	b := n.bus
	n.bus = nil
	began := time.Now()
	done := make(chan struct{})
	go func() {
		b.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(clusterCloseLimit):
		t.Errorf("%s: Close did not return within %s", n.cfg.ServerName, clusterCloseLimit)
	}
	return time.Since(began)
}

func nodeByName(t testing.TB, nodes []*clusterNode, name string) int {
	t.Helper()
	for i, n := range nodes {
		if n.cfg.ServerName == name {
			return i
		}
	}
	t.Fatalf("no node %q", name)
	return -1
}

// streamInfo fetches stream info through b (one 2 s attempt).
func streamInfo(b *Bus, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// streamLeader waits until stream has a leader, as b sees it.
func streamLeader(t testing.TB, b *Bus, stream string) string {
	t.Helper()
	var leader string
	testkit.WaitFor(t, 15*time.Second, func() error {
		info, err := streamInfo(b, stream)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("%s: no leader", stream)
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}

// waitReplicaCurrent waits until every stream of app1 reports node as a
// current, online replica with no lag (or as its leader), as b sees it.
func waitReplicaCurrent(t testing.TB, b *Bus, node string) {
	t.Helper()
	for _, stream := range []string{StreamName("app1"), CacheStreamName("app1")} {
		waitStreamReplicaCurrent(t, b, stream, node)
	}
}

// waitStreamReplicaCurrent waits until stream reports node as a current,
// online replica with no lag (or as its leader), as b sees it.
func waitStreamReplicaCurrent(t testing.TB, b *Bus, stream, node string) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, func() error {
		info, err := streamInfo(b, stream)
		if err != nil {
			return err
		}
		if info.Cluster == nil {
			return fmt.Errorf("%s: no cluster info", stream)
		}
		if info.Cluster.Leader == node {
			return nil
		}
		for _, r := range info.Cluster.Replicas {
			if r.Name == node {
				if !r.Current || r.Offline || r.Lag != 0 {
					return fmt.Errorf("%s: replica %s current=%v offline=%v lag=%d", stream, node, r.Current, r.Offline, r.Lag)
				}
				return nil
			}
		}
		return fmt.Errorf("%s: %s not among replicas (leader %q)", stream, node, info.Cluster.Leader)
	})
}

// waitInterest waits until every running node sees want subscriptions
// (its own and its routes') on subj.
func waitInterest(t testing.TB, buses []*Bus, subj string, want int) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, func() error {
		for _, b := range buses {
			acc, err := b.Server().LookupAccount(server.DEFAULT_GLOBAL_ACCOUNT)
			if err != nil {
				return err
			}
			if got := acc.Interest(subj); got < want {
				return fmt.Errorf("%s: interest in %s = %d, want %d", b.cfg.ServerName, subj, got, want)
			}
		}
		return nil
	})
}

// checkClusterStreams checks that both streams of app1 have 3 replicas and
// the dedupe window.
func checkClusterStreams(t testing.TB, b *Bus) {
	t.Helper()
	for _, stream := range []string{StreamName("app1"), CacheStreamName("app1")} {
		info, err := streamInfo(b, stream)
		if err != nil {
			t.Fatalf("stream info %s: %v", stream, err)
		}
		if info.Config.Replicas != 3 {
			t.Fatalf("%s: Replicas = %d, want 3", stream, info.Config.Replicas)
		}
		if stream == StreamName("app1") && info.Config.Duplicates != 2*time.Minute {
			t.Fatalf("%s: Duplicates = %s, want 2m", stream, info.Config.Duplicates)
		}
	}
}

// pubRecord is one numbered event published across a node stop.
type pubRecord struct {
	n      int
	serial uint64 // 0: not acknowledged
	err    error
}

// pubRun is what publishAcross measured.
type pubRun struct {
	recs       []pubRecord
	maxLatency time.Duration // slowest publish call (the leader-election gap)
	afterStop  int           // events published after stop was called
}

// publishAcross publishes numbered events {"n":N} on channel "numbers" of
// app1 through the buses of via in turn: alternately one Publish and a
// PublishBatch of three. When stopAt events have been published it calls
// stop in a goroutine and goes on until stop has returned and at least
// minAfter more events were acknowledged.
func publishAcross(t *testing.T, via []*Bus, stopAt, minAfter int, stop func()) pubRun {
	t.Helper()
	var (
		run      pubRun
		stopped  = make(chan struct{})
		stopSent bool
		round    int
		acked    int // acknowledged after stop
	)
	defer func() {
		if stopSent {
			<-stopped
		}
	}()
	for {
		if !stopSent && len(run.recs) >= stopAt {
			stopSent = true
			go func() {
				defer close(stopped)
				stop()
			}()
		}
		if stopSent && acked >= minAfter {
			select {
			case <-stopped:
				return run
			default:
			}
		}
		if len(run.recs) > stopAt+2000 {
			t.Fatalf("published %d events; stop did not return", len(run.recs))
		}
		b := via[round%len(via)]
		size := 1 + 2*(round%2) // 1, 3, 1, 3, ...
		round++
		ps := make([]Publication, size)
		first := len(run.recs)
		for i := range ps {
			ps[i] = Publication{App: "app1", Channel: "numbers", Payload: fmt.Appendf(nil, `{"n":%d}`, first+i)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), clusterPubWait)
		began := time.Now()
		var serials []uint64
		var err error
		if size == 1 {
			var s uint64
			s, err = b.Publish(ctx, ps[0])
			serials = []uint64{s}
		} else {
			serials, err = b.PublishBatch(ctx, ps)
		}
		took := time.Since(began)
		cancel()
		run.maxLatency = max(run.maxLatency, took)
		for i := range ps {
			r := pubRecord{n: first + i, err: err}
			if i < len(serials) {
				r.serial = serials[i]
			}
			run.recs = append(run.recs, r)
			if stopSent {
				run.afterStop++
				if r.serial != 0 {
					acked++
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkStored reads app1's stream back through b with direct gets and
// checks that every acknowledged event of run is stored exactly once, at its
// serial, and that no event is stored twice.
func checkStored(t *testing.T, b *Bus, run pubRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := b.JetStream().Stream(ctx, StreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	at := make(map[int][]uint64) // n -> serials stored
	subj := StoredSubject("app1", "numbers")
	for seq := uint64(1); seq <= last; seq++ {
		var m *jetstream.RawStreamMsg
		testkit.WaitFor(t, 5*time.Second, func() error { // a lagging replica may answer 404 for a while
			m, err = st.GetMsg(ctx, seq)
			return err
		})
		if m.Subject != subj {
			continue
		}
		var ev struct{ N int }
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("seq %d: %q: %v", seq, m.Data, err)
		}
		at[ev.N] = append(at[ev.N], seq)
	}
	var unacked []string
	for _, r := range run.recs {
		got := at[r.n]
		if len(got) > 1 {
			t.Errorf("event %d stored %d times, at %v", r.n, len(got), got)
		}
		if r.serial == 0 {
			unacked = append(unacked, fmt.Sprintf("%d (%v, stored at %v)", r.n, r.err, got))
			continue
		}
		if len(got) == 0 || got[0] != r.serial {
			t.Errorf("event %d acknowledged with serial %d, stored at %v", r.n, r.serial, got)
		}
	}
	if len(unacked) > 0 {
		t.Errorf("%d publications failed across the stop: %s", len(unacked), strings.Join(unacked, "; "))
	}
}

func TestClusterNeedsThreeNodes(t *testing.T) {
	tcs := []struct {
		name    string
		cluster ClusterConfig
		want    string
	}{
		{
			name:    "two routes",
			cluster: ClusterConfig{Listen: "127.0.0.1:17999", Routes: []string{"127.0.0.1:17999", "127.0.0.1:17998"}},
			want:    "needs at least 3 nodes",
		},
		{
			name:    "three routes, two distinct",
			cluster: ClusterConfig{Listen: "127.0.0.1:17999", Routes: []string{"127.0.0.1:17999", "127.0.0.1:17998", "127.0.0.1:17998"}},
			want:    "needs at least 3 nodes",
		},
		{
			name:    "routes without listen",
			cluster: ClusterConfig{Routes: []string{"a:1", "b:1", "c:1"}},
			want:    "without Listen",
		},
		{
			name:    "listen without port",
			cluster: ClusterConfig{Listen: "127.0.0.1:0", Routes: []string{"a:1", "b:1", "c:1"}},
			want:    "port must be 1 to 65535",
		},
		{
			name:    "bad route",
			cluster: ClusterConfig{Listen: "127.0.0.1:17999", Routes: []string{"a:1", "b", "c:1"}},
			want:    `Routes "b"`,
		},
	}
	for _, tc := range tcs {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Cluster = tc.cluster
			b, err := startWithSink(cfg, &recSink{})
			if err == nil {
				b.Close()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, ErrClusterConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start error = %v, want ErrClusterConfig containing %q", err, tc.want)
			}
		})
	}
}

func TestClusterServerOptions(t *testing.T) {
	cfg := DefaultConfig(t.TempDir()).withDefaults()
	cfg.ServerName = "node-1"
	cfg.Cluster = ClusterConfig{Name: "c", Listen: "10.0.0.1:6222", Advertise: "public:16222",
		Routes: []string{"10.0.0.1:6222", "10.0.0.2:6222", "10.0.0.3:6222"}}
	cfg.internalPassword = "pw"
	opts := serverOptions(cfg)
	if opts.DontListen || opts.Host != "127.0.0.1" || opts.Port != server.RANDOM_PORT {
		t.Fatalf("client listener: DontListen=%v Host=%q Port=%d", opts.DontListen, opts.Host, opts.Port)
	}
	auth, ok := opts.CustomClientAuthentication.(*clientAuth)
	if !ok {
		t.Fatalf("authentication %T", opts.CustomClientAuthentication)
	}
	if _, _, ok := auth.authorize(internalUser, "pw", "", nil); !ok || len(auth.index().byUser)+len(auth.index().byNkey) != 0 {
		t.Fatalf("logins: the internal user %v, app users %d, want only the internal user", ok, len(auth.index().byUser))
	}
	if c := opts.Cluster; c.Name != "c" || c.Host != "10.0.0.1" || c.Port != 6222 || c.Advertise != "public:16222" {
		t.Fatalf("Cluster = %+v", c)
	}
	if len(opts.Routes) != 3 || opts.Routes[1].String() != "nats-route://10.0.0.2:6222" {
		t.Fatalf("Routes = %v", opts.Routes)
	}
	if opts.ServerName != "node-1" || !opts.JetStream || opts.StoreDir != cfg.storeDir() {
		t.Fatalf("ServerName %q JetStream %v StoreDir %q", opts.ServerName, opts.JetStream, opts.StoreDir)
	}
}

// TestClusterDeliversAndSurvivesLeaderStop: three buses form a cluster with
// R3 streams; a publish on one node is delivered live on the others; the
// stream leader's node is closed while events are published through the
// others, which lose none; the node restarts, catches up and delivers again.
func TestClusterDeliversAndSurvivesLeaderStop(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, clusterConfigs(t, 3))
	b1, b2, b3 := nodes[0].bus, nodes[1].bus, nodes[2].bus
	testkit.WaitFor(t, 10*time.Second, func() error {
		for _, n := range nodes {
			ci := n.bus.ClusterInfo()
			if ci.Peers != 3 || ci.MetaLeader == "" || !ci.Ready() || !ci.Clustered {
				return fmt.Errorf("%s: %+v", n.cfg.ServerName, ci)
			}
		}
		return nil
	})
	checkClusterStreams(t, b1)

	// Live: subscribed on nodes 2 and 3, published on node 1.
	const ch = "private-App.Models.User.1"
	b2.Subscribe("app1", ch)
	b3.Subscribe("app1", ch)
	waitInterest(t, []*Bus{b1, b2, b3}, LiveSubject("app1", ch), 2)
	s1 := publish(t, b1, "app1", ch, `{"event":"e1"}`, "")
	s2 := publish(t, b1, "app1", ch, `{"event":"e2"}`, "123.456")
	s3 := publish(t, b2, "app1", ch, `{"event":"marker"}`, "")
	for _, n := range nodes[1:] {
		got := n.sink.waitCount(t, ch, 3)
		want := []Message{
			{Serial: s1, PrevSerial: 0, Payload: []byte(`{"event":"e1"}`)},
			{Serial: s2, PrevSerial: s1, Exclude: "123.456", Payload: []byte(`{"event":"e2"}`)},
			{Serial: s3, PrevSerial: s2, Payload: []byte(`{"event":"marker"}`)},
		}
		if len(got) != len(want) {
			t.Fatalf("%s got %d messages, want %d (once each): %+v", n.cfg.ServerName, len(got), len(want), got)
		}
		for i, w := range want {
			if g := got[i]; g.App != "app1" || g.Channel != ch || g.Serial != w.Serial || g.PrevSerial != w.PrevSerial ||
				g.Exclude != w.Exclude || string(g.Payload) != string(w.Payload) {
				t.Fatalf("%s message %d = %+v, want %+v", n.cfg.ServerName, i, g, w)
			}
		}
	}
	if got := nodes[0].sink.forChannel(ch); len(got) != 0 {
		t.Fatalf("node-1 (not subscribed) got %d messages", len(got))
	}

	// A resend with the same Nats-Msg-Id is acknowledged with the first serial.
	m := b1.newMsg(&Publication{App: "app1", Channel: "dedupe", Payload: []byte(`{}`)})
	setMsgID(m)
	a1, err := b1.JetStream().PublishMsg(ctxT(t), m)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := b2.JetStream().PublishMsg(ctxT(t), m)
	if err != nil || !a2.Duplicate || a2.Sequence != a1.Sequence {
		t.Fatalf("resend: ack %+v, %v; want a duplicate of %d", a2, err, a1.Sequence)
	}

	// Stop the stream leader's node with Close while publishing through the others.
	li := nodeByName(t, nodes, streamLeader(t, b1, StreamName("app1")))
	var via []*Bus
	for i, n := range nodes {
		if i != li {
			via = append(via, n.bus)
		}
	}
	var closeTook time.Duration
	run := publishAcross(t, via, 30, 30, func() { closeTook = nodes[li].close(t) })
	t.Logf("closed leader %s in %s; %d events (%d after the stop); slowest publish %s; resent %d",
		nodes[li].cfg.ServerName, closeTook, len(run.recs), run.afterStop, run.maxLatency,
		via[0].Stats().PublishRetries+via[1].Stats().PublishRetries)
	if nl := streamLeader(t, via[0], StreamName("app1")); nl == nodes[li].cfg.ServerName {
		t.Fatalf("leader still %s", nl)
	}
	checkStored(t, via[0], run)

	// Restart with the same store: it rejoins, catches up and delivers.
	nodes[li].restart(t)
	rb := nodes[li].bus
	waitReplicaCurrent(t, via[0], nodes[li].cfg.ServerName)
	testkit.WaitFor(t, 10*time.Second, func() error {
		if !rb.Server().JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, StreamName("app1")) {
			return errors.New("restarted node's stream not current")
		}
		mine, err := rb.Server().Jsz(nil)
		if err != nil {
			return err
		}
		theirs, err := via[0].Server().Jsz(nil)
		if err != nil {
			return err
		}
		if mine.Messages != theirs.Messages {
			return fmt.Errorf("restarted node stores %d messages, %s %d", mine.Messages, via[0].cfg.ServerName, theirs.Messages)
		}
		return nil
	})
	all := []*Bus{rb, via[0], via[1]}
	for _, b := range all {
		b.Subscribe("app1", ch) // a second local subscriber where there was one
	}
	waitInterest(t, all, LiveSubject("app1", ch), 3)
	s4 := publish(t, via[0], "app1", ch, `{"event":"after"}`, "")
	if got := nodes[li].sink.waitCount(t, ch, 1); got[0].Serial != s4 || got[0].PrevSerial != s3 {
		t.Fatalf("restarted node got %+v, want serial %d prev %d", got[0], s4, s3)
	}
	for _, n := range nodes {
		if d := n.close(t); d > clusterCloseLimit {
			t.Errorf("%s: Close took %s", n.cfg.ServerName, d)
		}
	}
}

// childSpec is what a child node needs, passed in childEnv as JSON.
type childSpec struct {
	DataDir, ServerName, Listen string
	Routes                      []string
}

// TestClusterChildNode is not a test of its own: it is the body of the
// child process TestClusterSurvivesLeaderCrash starts (this binary, run
// with childEnv set). It starts a node, prints READY, and runs until its
// stdin closes (then closes the node) or it is killed.
func TestClusterChildNode(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("runs only as the child process of TestClusterSurvivesLeaderCrash")
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(spec.DataDir)
	cfg.ServerName = spec.ServerName
	cfg.Apps = []string{"app1"}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cfg.Cluster = ClusterConfig{Name: "herald-test", Listen: spec.Listen, Routes: spec.Routes}
	cfg.ReadyTimeout = 20 * time.Second
	b, err := startWithSink(cfg, nopSink{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	b.Close()
}

// childNode is a node running in a child process.
type childNode struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *readyWriter
	done  chan struct{} // closed when the process has exited
}

// readyWriter collects a child's output and signals its READY line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.seen && bytes.Contains(w.buf.Bytes(), []byte("READY\n")) {
		w.seen = true
		close(w.ready)
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startChild runs cfg's node in a child process; waitReady waits for it.
func startChild(t *testing.T, cfg Config) *childNode {
	t.Helper()
	spec, err := json.Marshal(childSpec{DataDir: cfg.DataDir, ServerName: cfg.ServerName, Listen: cfg.Cluster.Listen, Routes: cfg.Cluster.Routes})
	if err != nil {
		t.Fatal(err)
	}
	c := &childNode{name: cfg.ServerName, out: &readyWriter{ready: make(chan struct{})}, done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestClusterChildNode$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", c.name, c.out)
		}
	})
	return c
}

func (c *childNode) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-c.out.ready:
	case <-c.done:
		t.Fatalf("%s exited before READY:\n%s", c.name, c.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not READY after 30s:\n%s", c.name, c.out)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *childNode) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop closes the child's stdin (it then closes its node and exits), and
// kills it if it has not exited within clusterCloseLimit.
func (c *childNode) stop(t testing.TB) {
	select {
	case <-c.done:
		return
	default:
	}
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(clusterCloseLimit):
		t.Errorf("%s: did not close within %s", c.name, clusterCloseLimit)
		c.kill()
	}
}

// stepDownTo asks the leader of stream to hand leadership to node, until it has.
func stepDownTo(t testing.TB, b *Bus, stream, node string) {
	t.Helper()
	req := []byte(`{"placement":{"preferred":"` + node + `"}}`)
	testkit.WaitFor(t, 15*time.Second, func() error {
		if l := streamLeader(t, b, stream); l == node {
			return nil
		}
		if _, err := b.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		return fmt.Errorf("%s leader is not %s yet", stream, node)
	})
}

// TestClusterSurvivesLeaderCrash: the stream leader runs in a child process
// and is killed with SIGKILL (a real crash: no shutdown, no flush, no
// leadership handoff) while events are published through the other two
// nodes; no acknowledged event is lost or stored twice. The node restarts
// from its store and catches up; after killing it again, the survivors
// still close promptly.
func TestClusterSurvivesLeaderCrash(t *testing.T) {
	t.Parallel()
	cfgs := clusterConfigs(t, 3)
	child := startChild(t, cfgs[2])
	nodes := startNodes(t, cfgs[:2])
	child.waitReady(t)
	b1, b2 := nodes[0].bus, nodes[1].bus
	testkit.WaitFor(t, 10*time.Second, func() error {
		if p := b1.Peers(); p != 3 {
			return fmt.Errorf("node-1 peers = %d", p)
		}
		return nil
	})
	checkClusterStreams(t, b1)
	waitReplicaCurrent(t, b1, "node-3")
	stepDownTo(t, b1, StreamName("app1"), "node-3")

	run := publishAcross(t, []*Bus{b1, b2}, 30, 30, child.kill)
	t.Logf("killed leader node-3 (SIGKILL); %d events (%d after the kill); slowest publish %s; resent %d",
		len(run.recs), run.afterStop, run.maxLatency, b1.Stats().PublishRetries+b2.Stats().PublishRetries)
	if nl := streamLeader(t, b1, StreamName("app1")); nl == "node-3" {
		t.Fatalf("leader still node-3")
	}
	checkStored(t, b1, run)

	// Restart from the same store: it rejoins and catches up.
	child = startChild(t, cfgs[2])
	child.waitReady(t)
	waitReplicaCurrent(t, b1, "node-3")
	if p := b1.Peers(); p != 3 {
		t.Fatalf("node-1 peers after restart = %d", p)
	}

	// With a peer killed, the others still close promptly (the last one alone).
	child.kill()
	for _, n := range nodes {
		if d := n.close(t); d > clusterCloseLimit {
			t.Errorf("%s: Close took %s", n.cfg.ServerName, d)
		} else {
			t.Logf("%s closed in %s", n.cfg.ServerName, d)
		}
	}
}
