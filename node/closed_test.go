package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"herald/bus"
	"herald/client"
	"herald/cluster"
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
// with the right user and the wrong password, until the test ends.
func strangerRoute(t *testing.T, routes []string) *server.Server {
	t.Helper()
	var urls []*url.URL
	for _, r := range routes {
		urls = append(urls, &url.URL{Scheme: "nats-route", Host: r, User: url.UserPassword(bus.RouteUser, "not-the-route-password")})
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "stranger", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
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

// TestClosedCluster: nodes sharing cluster.secret_key and
// cluster.route_auth form a cluster and deliver across nodes; a memberlist
// agent with another key is never admitted and a NATS server with the
// wrong route password gets no route, while the cluster goes on working;
// status and metrics count the refusals and say nothing of the secrets.
func TestClosedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := closedCluster(t)
	deliversAcross(t, nodes[0], nodes[2], "closed-1")

	stranger, err := cluster.Start(cluster.Config{
		Name: "test", NodeName: "stranger", Bind: "127.0.0.1:0", Preset: "local",
		Seeds:      []string{nodes[0].Cluster().Addr(), nodes[1].Cluster().Addr()},
		SecretKeys: [][]byte{bytes.Repeat([]byte{2}, 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Shutdown() })
	routes := make([]string, len(clusterCfgs))
	for i, c := range clusterCfgs {
		routes[i] = c.Cluster.RouteListen
	}
	sr := strangerRoute(t, routes)

	testkit.WaitFor(t, 10*time.Second, func() error {
		for i, nd := range nodes {
			st := nd.Status(ctxT(t)).Cluster
			if (i < 2 && st.GossipRefused == 0) || st.RoutesRefused == 0 { // the stranger's seeds are nodes 1 and 2
				return fmt.Errorf("node %d: gossip_refused %d, routes_refused %d", i+1, st.GossipRefused, st.RoutesRefused)
			}
		}
		return nil
	})
	time.Sleep(nodes[0].Cluster().FailureDetection()) // the stranger keeps trying
	for i, nd := range nodes {
		if m := len(nd.Cluster().Members()); m != 3 {
			t.Errorf("node %d sees %d members, want 3", i+1, m)
		}
		if p := nd.Bus().Peers(); p != 3 {
			t.Errorf("node %d: %d NATS peers, want 3", i+1, p)
		}
		st := nd.Status(ctxT(t)).Cluster
		if !st.GossipEncrypted || !st.RouteAuth {
			t.Errorf("node %d status: gossip_encrypted %v route_auth %v", i+1, st.GossipEncrypted, st.RouteAuth)
		}
	}
	if m := len(stranger.Members()); m != 1 {
		t.Errorf("the stranger sees %d members", m)
	}
	if n := sr.NumRoutes(); n != 0 {
		t.Errorf("the stranger NATS server has %d routes", n)
	}
	deliversAcross(t, nodes[1], nodes[0], "closed-2")

	// Nothing the node reports carries a secret.
	st, _ := json.Marshal(nodes[0].Status(ctxT(t)))
	resp, err := http.Get("http://" + nodes[0].Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{testKey(1), testRouteAuth} {
		if bytes.Contains(st, []byte(secret)) || bytes.Contains(metrics, []byte(secret)) {
			t.Fatalf("status or metrics carry a cluster secret")
		}
	}
	if v, ok := sample(scrape(t, nodes[0]), "herald_cluster_routes_refused_total"); !ok || v == 0 {
		t.Errorf("herald_cluster_routes_refused_total = %v (present %v), want > 0", v, ok)
	}
}

// TestClosedClusterReloadRotates rotates the gossip key of a running
// closed cluster with three reloads per node (add the new key, switch to
// it, drop the old) and adds a route password, without a member leaving
// and without a key listed as needing a restart.
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
