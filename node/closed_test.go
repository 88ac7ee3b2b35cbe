package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// testKey is a base64 32-byte key filled with b.
func testKey(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

const testRouteAuth = "the-cluster-route-password"

// closedCluster starts a 3-node cluster with gossip key testKey(1) and
// route password testRouteAuth.
func closedCluster(t *testing.T) []*Node {
	t.Helper()
	clusterCfgs = nil
	return startClusterNodesWith(t, 3, func(c *configs.Config) {
		c.Cluster.SecretKey = testKey(1)
		c.Cluster.RouteAuth = testRouteAuth
	})
}

// deliversAcross subscribes a socket on to and checks that an event
// triggered on from reaches it.
func deliversAcross(t *testing.T, from, to *Node, channel string) {
	t.Helper()
	c := dialNode(t, to)
	if err := c.Subscribe(ctxT(t), channel); err != nil {
		t.Fatal(err)
	}
	// The subscription's interest crosses the routes before the event.
	testkit.WaitFor(t, 10*time.Second, func() error {
		status, body, err := rest(from).Trigger(ctxT(t), client.TriggerParams{Name: "probe", Data: "{}", Channels: []string{channel}})
		if err != nil || status != 200 {
			return fmt.Errorf("trigger: %d %s %v", status, body, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		for {
			ev, err := c.Next(ctx)
			if err != nil {
				return fmt.Errorf("no event on %s: %v", channel, err)
			}
			if ev.Channel == channel && ev.Event == "probe" {
				return nil
			}
		}
	})
}

// strangerRoute runs a bare NATS server that dials every route of routes
// as bus.RouteUser with password (none at all when password is ""), until
// the test ends.
func strangerRoute(t *testing.T, routes []string, password string) *server.Server {
	t.Helper()
	var urls []*url.URL
	for _, r := range routes {
		u := &url.URL{Scheme: "nats-route", Host: r}
		if password != "" {
			u.User = url.UserPassword(bus.RouteUser, password)
		}
		urls = append(urls, u)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "stranger-" + password, Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: server.RANDOM_PORT},
		Routes:  urls,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("stranger NATS server not ready")
	}
	return s
}

// TestClosedClusterReloadRotates rotates the gossip key of a running
// closed cluster with three reloads per node (add the new key, switch to
// it, drop the old) and adds a route password, without a member leaving
// and without a key listed as needing a restart; events and presence
// cross the nodes after each step.
func TestClosedClusterReloadRotates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := closedCluster(t)
	steps := []struct {
		key      string
		previous []string
	}{
		{testKey(1), []string{testKey(2)}},
		{testKey(2), []string{testKey(1)}},
		{testKey(2), nil},
	}
	for s, step := range steps {
		if step.previous == nil {
			// As the runbook says (docs/deploy.md): a gossip message a node
			// sent with the old key just before its switch, still in a busy
			// box's socket buffer, would be refused once the old key is gone.
			time.Sleep(2 * time.Second)
		}
		for i, nd := range nodes {
			c := *clusterCfgs[i]
			c.Cluster.SecretKey, c.Cluster.PreviousSecretKeys = step.key, step.previous
			c.Cluster.PreviousRouteAuth = []string{"the-next-route-password"}
			ch, err := nd.Reload(&c)
			if err != nil {
				t.Fatalf("step %d node %d: %v", s, i+1, err)
			}
			if !ch.GossipKeys || len(ch.NeedsRestart) != 0 {
				t.Fatalf("step %d node %d: gossip_keys %v, needs_restart %v", s, i+1, ch.GossipKeys, ch.NeedsRestart)
			}
			if s == 0 && !ch.RoutePasswords {
				t.Fatalf("node %d: route passwords not replaced", i+1)
			}
		}
		deliversAcross(t, nodes[s], nodes[(s+1)%3], fmt.Sprintf("rotate-%d", s))
	}
	// Presence gossip crosses under the new key.
	joinRoom(t, dialNode(t, nodes[0]), "presence-closed", "alice")
	testkit.WaitFor(t, 5*time.Second, func() error {
		for i, nd := range nodes[1:] {
			if n := nd.Gateway().UserCount("app-id", "presence-closed"); n != 1 {
				return fmt.Errorf("node %d sees %d users", i+2, n)
			}
		}
		return nil
	})
	time.Sleep(nodes[0].Cluster().FailureDetection())
	for i, nd := range nodes {
		if m := len(nd.Cluster().Members()); m != 3 {
			t.Errorf("node %d sees %d members after the rotation", i+1, m)
		}
		if r := nd.Cluster().Stats().KeyRefused; r != 0 {
			t.Errorf("node %d refused %d gossip messages during the rotation", i+1, r)
		}
	}

	// Turning route auth off is not live: listed as needing a restart.
	c := *clusterCfgs[0]
	c.Cluster.SecretKey, c.Cluster.RouteAuth = testKey(2), ""
	ch, err := nodes[0].Reload(&c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ch.NeedsRestart) != "[cluster.route_auth]" {
		t.Fatalf("needs_restart %v, want [cluster.route_auth]", ch.NeedsRestart)
	}
}
