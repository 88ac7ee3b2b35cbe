package bus

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRouteAuthRefusesWrongPassword runs a 3-node cluster on loopback
// whose routes need the cluster's password, then starts one node again
// with another password: it gets no route to either of the others, so it
// never sees a meta leader and its Start fails, while the two others keep
// their cluster (events cross between them), log the refusal and count
// it. No password appears in any log line, at debug level included.
//
// The stranger takes the place of a member because a fresh JetStream
// cluster elects its first meta leader only once every configured node has
// been seen; after that a majority is enough.
func TestRouteAuthRefusesWrongPassword(t *testing.T) {
	const good, bad = "route-password-of-the-cluster", "route-password-of-a-stranger"
	cfgs := clusterConfigs(t, 3)
	logs := make([]*logBuffer, 3)
	for i := range cfgs {
		logs[i] = &logBuffer{}
		cfgs[i].Logger = slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfgs[i].Cluster.Passwords = []string{good}
	}
	members := startNodes(t, cfgs)
	members[2].close(t)
	stranger := cfgs[2]
	stranger.Cluster.Passwords = []string{bad}
	stranger.ReadyTimeout = 4 * time.Second
	if b, err := Start(stranger); err == nil {
		b.Close()
		t.Fatal("the node with the wrong route password started: it reached a meta leader")
	} else if !strings.Contains(err.Error(), "JetStream not ready") {
		t.Fatalf("the node with the wrong route password: Start = %v, want JetStream not ready", err)
	}
	nodes := members[:2]
	for _, n := range nodes {
		if p := n.bus.Peers(); p != 2 {
			t.Errorf("%s: Peers = %d, want 2 (the other good node and itself)", n.cfg.ServerName, p)
		}
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if r := nodes[0].bus.RoutesRefused() + nodes[1].bus.RoutesRefused(); r == 0 {
			return fmt.Errorf("no route refused yet")
		}
		return nil
	})

	// Events cross between the good nodes.
	nodes[1].bus.Subscribe("app1", "across")
	waitInterest(t, []*Bus{nodes[0].bus}, "herald.app1.live.across", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[0].bus.Publish(ctx, Publication{App: "app1", Channel: "across", Payload: []byte(`{"n":1}`)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nodes[1].sink.waitCount(t, "across", 1)

	all := logs[0].String() + logs[1].String()
	if !strings.Contains(all, "bus: refused a NATS route: wrong cluster.route_auth password") {
		t.Errorf("no refusal logged by the good nodes; their log:\n%s", all)
	}
	all += logs[2].String()
	for _, pw := range []string{good, bad} {
		if strings.Contains(all, pw) {
			t.Errorf("a log line carries a route password %q", pw)
		}
	}
}

// TestRouteAuthRotation rotates the route password of a running 3-node
// cluster without ever refusing a node: first every node accepts the new
// password besides the old (live, SetRoutePasswords), then each node in
// turn restarts sending the new one, then the old one is dropped.
func TestRouteAuthRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts three clustered nodes")
	}
	const old, next = "the-old-route-password", "the-new-route-password"
	cfgs := clusterConfigs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.Passwords = []string{old}
	}
	nodes := startNodes(t, cfgs)
	for _, n := range nodes {
		if !n.bus.SetRoutePasswords([]string{old, next}) {
			t.Fatalf("%s: SetRoutePasswords did not apply", n.cfg.ServerName)
		}
	}
	for _, n := range nodes {
		n.close(t)
		n.cfg.Cluster.Passwords = []string{next, old}
		n.restart(t)
		testkit.WaitFor(t, 15*time.Second, func() error {
			for _, m := range nodes {
				if p := m.bus.Peers(); p != 3 {
					return fmt.Errorf("%s: Peers = %d after restarting %s", m.cfg.ServerName, p, n.cfg.ServerName)
				}
			}
			return nil
		})
	}
	for _, n := range nodes {
		n.bus.SetRoutePasswords([]string{next})
		if r := n.bus.RoutesRefused(); r != 0 {
			t.Errorf("%s: %d routes refused during the rotation, want 0", n.cfg.ServerName, r)
		}
	}
}

// grepLines returns the lines of s holding any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
