package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"herald/cluster"
	"herald/internal/testkit"
)

// TestHostileWrongClusterKey is the hostile suite's "a node with a wrong
// cluster key" (SECURITY.md): a closed 3-node cluster (cluster.secret_key,
// cluster.route_auth) with a bystander on node 3 receiving a numbered
// stream published through node 3 into the app's replicated stream, and
// strangers on the cluster's ports: memberlist agents with another key and
// with none, and NATS servers dialing every route with the wrong password
// and with none. None is admitted (members and NATS peers stay 3, the
// strangers see nobody), the refusals are counted in status and metrics,
// events still cross the nodes, the bystander is whole, and neither status
// nor metrics carry a secret.
func TestHostileWrongClusterKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := closedCluster(t)
	deliversAcross(t, nodes[0], nodes[2], "closed-1")
	by := startBystander(t, nodes[2], clusterCfgs[2].Apps[0])
	before := rssKiB()

	seeds := []string{nodes[0].Cluster().Addr(), nodes[1].Cluster().Addr()}
	for _, s := range []struct {
		name string
		keys [][]byte
	}{
		{"wrong-key", [][]byte{bytes.Repeat([]byte{2}, 32)}},
		{"no-key", nil},
	} {
		stranger, err := cluster.Start(cluster.Config{Name: "test", NodeName: s.name, Bind: "127.0.0.1:0",
			Preset: "local", Seeds: seeds, SecretKeys: s.keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stranger.Shutdown() })
		defer func() {
			if m := len(stranger.Members()); m != 1 {
				t.Errorf("stranger %s sees %d members", s.name, m)
			}
		}()
	}
	routes := make([]string, len(clusterCfgs))
	for i, c := range clusterCfgs {
		routes[i] = c.Cluster.RouteListen
	}
	strangers := []*server.Server{strangerRoute(t, routes, "not-the-route-password"), strangerRoute(t, routes, "")}

	testkit.WaitFor(t, 10*time.Second, func() error {
		for i, nd := range nodes {
			st := nd.Status(ctxT(t)).Cluster
			if (i < 2 && st.GossipRefused == 0) || st.RoutesRefused == 0 { // the gossip strangers' seeds are nodes 1 and 2
				return fmt.Errorf("node %d: gossip_refused %d, routes_refused %d", i+1, st.GossipRefused, st.RoutesRefused)
			}
		}
		return nil
	})
	time.Sleep(nodes[0].Cluster().FailureDetection()) // the strangers keep trying
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
	// No stranger keeps a route. It holds one for the moment between a
	// node's INFO and its refusal at every retry, so a busy box can catch
	// the count at 1; an admitted route would stay.
	testkit.WaitFor(t, 5*time.Second, func() error {
		for i, sr := range strangers {
			if n := sr.NumRoutes(); n != 0 {
				return fmt.Errorf("stranger NATS server %d has %d routes", i, n)
			}
		}
		return nil
	})
	// And none of the cluster's messages reaches one.
	var leaked atomic.Int64
	for i, sr := range strangers {
		nc, err := nats.Connect(sr.ClientURL())
		if err != nil {
			t.Fatalf("stranger %d: %v", i, err)
		}
		t.Cleanup(nc.Close)
		if _, err := nc.Subscribe(">", func(*nats.Msg) { leaked.Add(1) }); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	deliversAcross(t, nodes[1], nodes[0], "closed-2")
	if n := leaked.Load(); n != 0 {
		t.Errorf("the strangers received %d of the cluster's messages", n)
	}
	by.check(t)

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
	fams := scrape(t, nodes[0])
	for _, name := range []string{"herald_cluster_routes_refused_total", "herald_cluster_gossip_refused_total"} {
		if v, ok := sample(fams, name); !ok || v == 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	by.finish(t)
	t.Logf("RSS before the strangers %d KiB, after %d KiB", before, rssKiB())
}
