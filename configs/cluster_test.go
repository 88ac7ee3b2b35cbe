package configs

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestClusterDefault(t *testing.T) {
	c := Default()
	cl := c.Cluster
	if cl.Enabled() || cl.Name != "" {
		t.Fatalf("Default() is clustered: %+v", cl)
	}
	if cl.Preset != PresetLAN || cl.Bind != "127.0.0.1:7946" || cl.RouteListen != "127.0.0.1:6222" {
		t.Fatalf("cluster defaults = %+v", cl)
	}
	if cl.Seeds == nil || len(cl.Seeds) != 0 || cl.Routes == nil || len(cl.Routes) != 0 {
		t.Fatalf("seeds %#v routes %#v, want empty non-nil lists", cl.Seeds, cl.Routes)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// A fresh list per call.
	a, b := Default(), Default()
	a.Cluster.Seeds = append(a.Cluster.Seeds, "x:1")
	if len(b.Cluster.Seeds) != 0 {
		t.Fatal("Default() shares cluster.seeds between calls")
	}
}

// clusterNode is what one node's file must say, apart from what all three
// share.
type clusterNode struct {
	listen, clientListen, bind, advertise, routeListen, routeAdvertise, dataDir string
}

// TestClusterLoopbackFiles checks configs/cluster/node{1,2,3}.yaml: each
// loads strictly and validates, each has its own ports and data directory,
// and the three agree on the cluster name, seeds, routes and apps.
func TestClusterLoopbackFiles(t *testing.T) {
	want := map[string]clusterNode{}
	for i := 1; i <= 3; i++ {
		want[fmt.Sprintf("node%d", i)] = clusterNode{
			listen:       fmt.Sprintf("127.0.0.1:%d", 6000+i),
			clientListen: fmt.Sprintf("127.0.0.1:%d", 4221+i),
			bind:         fmt.Sprintf("127.0.0.1:%d", 7945+i),
			routeListen:  fmt.Sprintf("127.0.0.1:%d", 6221+i),
			dataDir:      fmt.Sprintf("./data/node%d", i),
		}
	}
	checkClusterFiles(t, "cluster/node%d.yaml", want, true)
}

// TestClusterDockerFiles checks configs/cluster/docker/node{1,2,3}.yaml,
// which docker-compose.yaml mounts: the same ports in every container,
// reached through the service names.
func TestClusterDockerFiles(t *testing.T) {
	want := map[string]clusterNode{}
	for i := 1; i <= 3; i++ {
		n := fmt.Sprintf("node%d", i)
		want[n] = clusterNode{
			listen:         "0.0.0.0:6001",
			clientListen:   "0.0.0.0:4222",
			bind:           "0.0.0.0:7946",
			advertise:      n + ":7946",
			routeListen:    "0.0.0.0:6222",
			routeAdvertise: n + ":6222",
			dataDir:        "/var/lib/herald",
		}
	}
	checkClusterFiles(t, "cluster/docker/node%d.yaml", want, false)
}

func checkClusterFiles(t *testing.T, pattern string, want map[string]clusterNode, distinctPorts bool) {
	t.Helper()
	var first *Config
	ports := map[string]string{} // address -> "file key"
	for i := 1; i <= 3; i++ {
		path := fmt.Sprintf(pattern, i)
		name := fmt.Sprintf("node%d", i)
		c, w, err := Load(path, LoadOptions{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(w) != 0 {
			t.Fatalf("%s: warnings %v", path, w)
		}
		cl := &c.Cluster
		if !cl.Enabled() || cl.Name != "herald" || cl.NodeName != name || cl.LocalName() != name {
			t.Errorf("%s: cluster name %q node_name %q", path, cl.Name, cl.NodeName)
		}
		if cl.Preset != PresetLAN {
			t.Errorf("%s: preset %q", path, cl.Preset)
		}
		w0 := want[name]
		got := clusterNode{
			listen: c.Listen, clientListen: c.Bus.ClientListen, bind: cl.Bind, advertise: cl.Advertise,
			routeListen: cl.RouteListen, routeAdvertise: cl.RouteAdvertise, dataDir: c.DataDir,
		}
		if got != w0 {
			t.Errorf("%s:\n got  %+v\n want %+v", path, got, w0)
		}
		// Its own addresses are among the shared lists.
		if !slices.Contains(cl.Seeds, cl.AdvertiseAddr()) {
			t.Errorf("%s: own memberlist address %s not in seeds %v", path, cl.AdvertiseAddr(), cl.Seeds)
		}
		ownRoute := cl.RouteAdvertise
		if ownRoute == "" {
			ownRoute = cl.RouteListen
		}
		if !slices.Contains(cl.Routes, ownRoute) {
			t.Errorf("%s: own route %s not in routes %v", path, ownRoute, cl.Routes)
		}
		// The dev app, with client events.
		if !reflect.DeepEqual(c.Apps, Default().Apps) {
			t.Errorf("%s: apps = %+v, want the dev app", path, c.Apps)
		}
		if distinctPorts {
			for key, addr := range map[string]string{
				"listen": c.Listen, "bus.client_listen": c.Bus.ClientListen,
				"cluster.bind": cl.Bind, "cluster.route_listen": cl.RouteListen,
			} {
				if prev, dup := ports[addr]; dup {
					t.Errorf("%s %s: %s is also %s", path, key, addr, prev)
				}
				ports[addr] = path + " " + key
			}
		}
		if first == nil {
			first = c
			continue
		}
		if cl.Name != first.Cluster.Name || !slices.Equal(cl.Seeds, first.Cluster.Seeds) ||
			!slices.Equal(cl.Routes, first.Cluster.Routes) || !reflect.DeepEqual(c.Apps, first.Apps) {
			t.Errorf("%s disagrees with node1 on name, seeds, routes or apps:\n%+v\n%+v", path, cl, first.Cluster)
		}
	}
	if len(first.Cluster.Routes) != 3 || len(first.Cluster.Seeds) != 3 {
		t.Errorf("routes %v seeds %v, want 3 each", first.Cluster.Routes, first.Cluster.Seeds)
	}
}

// clusterYAML is a valid clustered node; tests replace parts of it.
const clusterYAML = `
cluster:
  name: herald
  node_name: node1
  bind: 127.0.0.1:7946
  seeds: [127.0.0.1:7946, 127.0.0.1:7947, 127.0.0.1:7948]
  routes: [127.0.0.1:6222, 127.0.0.1:6223, 127.0.0.1:6224]
  route_listen: 127.0.0.1:6222
`

func TestClusterValid(t *testing.T) {
	c, _ := mustLoad(t, writeConfig(t, clusterYAML), LoadOptions{Strict: true})
	want := Default()
	want.Cluster = Cluster{
		Name:        "herald",
		NodeName:    "node1",
		Bind:        "127.0.0.1:7946",
		Seeds:       []string{"127.0.0.1:7946", "127.0.0.1:7947", "127.0.0.1:7948"},
		Routes:      []string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224"},
		RouteListen: "127.0.0.1:6222",
		Preset:      PresetLAN,
		// Empty lists, as Default's.
		PreviousSecretKeys: []string{}, PreviousRouteAuth: []string{},
		// Region keys: their defaults.
		GatewayListen: DefaultClusterGatewayListen,
		Gateways:      []RegionGateway{},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c.Cluster, want.Cluster)
	}
	if c.Cluster.AdvertiseAddr() != "127.0.0.1:7946" {
		t.Fatalf("AdvertiseAddr = %q, want bind", c.Cluster.AdvertiseAddr())
	}
	c.Cluster.Advertise = "10.0.0.1:7946"
	if c.Cluster.AdvertiseAddr() != "10.0.0.1:7946" {
		t.Fatalf("AdvertiseAddr = %q", c.Cluster.AdvertiseAddr())
	}
}

func TestClusterValidation(t *testing.T) {
	// with replaces the line of clusterYAML that starts with "  <key>:".
	with := func(key, line string) string {
		var out []string
		found := false
		for l := range strings.SplitSeq(clusterYAML, "\n") {
			if strings.HasPrefix(l, "  "+key+":") {
				l, found = line, true
			}
			out = append(out, l)
		}
		if !found {
			out = append(out, line)
		}
		return strings.Join(out, "\n")
	}
	cases := []struct {
		name    string
		content string
		want    string
	}{
		{name: "bad name", content: with("name", "  name: 'my cluster'"), want: `cluster.name: "my cluster" must match`},
		{name: "bad node name", content: with("node_name", "  node_name: 'node/1'"), want: `cluster.node_name: "node/1" must match`},
		{name: "long node name", content: with("node_name", "  node_name: "+strings.Repeat("n", 65)), want: "cluster.node_name: "},
		{name: "bind without port", content: with("bind", "  bind: 127.0.0.1"), want: `cluster.bind: "127.0.0.1" must be host:port`},
		{name: "bind bad port", content: with("bind", "  bind: 127.0.0.1:70000"), want: "cluster.bind: port"},
		{name: "advertise unspecified", content: with("advertise", "  advertise: 0.0.0.0:7946"), want: "cluster.advertise: "},
		{name: "advertise no port", content: with("advertise", "  advertise: node1"), want: `cluster.advertise: "node1" must be host:port`},
		{name: "seed without port", content: with("seeds", "  seeds: [127.0.0.1:7946, node2]"), want: `cluster.seeds[1]: "node2" must be host:port`},
		{name: "seed port 0", content: with("seeds", "  seeds: ['node2:0']"), want: "cluster.seeds[0]: port"},
		{name: "seed empty host", content: with("seeds", "  seeds: [':7946']"), want: "cluster.seeds[0]: "},
		{name: "seeds not a list", content: with("seeds", "  seeds: 127.0.0.1:7946"), want: "cluster.seeds: must be a list"},
		{name: "no routes", content: with("routes", "  routes: []"), want: "cluster.routes: at least 3 are required, got 0: JetStream clustering needs 3"},
		{name: "two routes", content: with("routes", "  routes: [127.0.0.1:6222, 127.0.0.1:6223]"), want: "cluster.routes: at least 3 are required, got 2"},
		{name: "duplicate route", content: with("routes", "  routes: [127.0.0.1:6222, 127.0.0.1:6223, 127.0.0.1:6222]"), want: `cluster.routes[2]: "127.0.0.1:6222" is already cluster.routes[0]`},
		{name: "bad route", content: with("routes", "  routes: [127.0.0.1:6222, 127.0.0.1:6223, nohost]"), want: `cluster.routes[2]: "nohost" must be host:port`},
		{name: "route_listen not in routes", content: with("route_listen", "  route_listen: 127.0.0.1:6225"), want: "cluster.route_listen: port 6225 is not the port of any of cluster.routes"},
		{name: "route_listen bad", content: with("route_listen", "  route_listen: six"), want: `cluster.route_listen: "six" must be host:port`},
		{name: "route_advertise unspecified", content: with("route_advertise", "  route_advertise: '[::]:6222'"), want: "cluster.route_advertise: "},
		{name: "bad preset", content: with("preset", "  preset: moon"), want: `cluster.preset: "moon" is not one of lan, local, wan`},
		{name: "bind on listen", content: with("bind", "  bind: 127.0.0.1:6001"), want: `cluster.bind: "127.0.0.1:6001" is also the address of listen`},
		{name: "route_listen on bind", content: with("bind", "  bind: 0.0.0.0:6222"), want: `cluster.route_listen: "127.0.0.1:6222" is also the address of cluster.bind`},
		{name: "bind on nats client port", content: with("bind", "  bind: :4222"), want: `cluster.bind: ":4222" is also the address of bus.client_listen`},
		{name: "bad preset on a single node", content: "cluster: {preset: moon}", want: "cluster.preset: "},
		{name: "node name unknown key", content: with("nodename", "  nodename: x"), want: `cluster.nodename: unknown key`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, _, err := Load(path, LoadOptions{Strict: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("err = %v, does not name the file", err)
			}
		})
	}
}

// TestClusterSingleNodeIgnoresOtherKeys: with no name, only preset is
// checked (a node taken out of a cluster by emptying name still starts).
func TestClusterSingleNodeIgnoresOtherKeys(t *testing.T) {
	c, _ := mustLoad(t, writeConfig(t, `
cluster:
  name: ""
  bind: nonsense
  routes: [127.0.0.1:6222]
  route_listen: 127.0.0.1:9999
`), LoadOptions{Strict: true})
	if c.Cluster.Enabled() {
		t.Fatal("enabled without a name")
	}
}

func TestClusterLocalNameDefaultsToHostname(t *testing.T) {
	stubHostname(t, "web-3.example.com", nil)
	noNodeName := strings.Replace(clusterYAML, "  node_name: node1\n", "", 1)
	c, _ := mustLoad(t, writeConfig(t, noNodeName), LoadOptions{})
	if c.Cluster.NodeName != "" || c.Cluster.LocalName() != "web-3.example.com" {
		t.Fatalf("node_name %q LocalName %q", c.Cluster.NodeName, c.Cluster.LocalName())
	}

	stubHostname(t, "", errors.New("no hostname"))
	_, _, err := Load(writeConfig(t, noNodeName), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "cluster.node_name: must be set: the default, the hostname, is unavailable") {
		t.Fatalf("err = %v", err)
	}

	stubHostname(t, "bad host", nil)
	_, _, err = Load(writeConfig(t, noNodeName), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `cluster.node_name: must be set: the default, the hostname "bad host", does not match`) {
		t.Fatalf("err = %v", err)
	}

	// A single node never needs one.
	if _, _, err := Load("", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func stubHostname(t *testing.T, name string, err error) {
	t.Helper()
	prev := hostname
	hostname = func() (string, error) { return name, err }
	t.Cleanup(func() { hostname = prev })
}

func TestClusterEnv(t *testing.T) {
	noName := strings.Replace(clusterYAML, "  name: herald\n", "", 1)
	path := writeConfig(t, noName)
	c, w := mustLoad(t, path, LoadOptions{Env: []string{
		"HERALD_CLUSTER_NAME=prod",
		"HERALD_CLUSTER_NODE_NAME=edge-2",
		"HERALD_CLUSTER_BIND=0.0.0.0:7946",
		"HERALD_CLUSTER_ADVERTISE=10.0.0.2:7946",
		"HERALD_CLUSTER_ROUTE_LISTEN=0.0.0.0:6223",
		"HERALD_CLUSTER_ROUTE_ADVERTISE=10.0.0.2:6223",
		"HERALD_CLUSTER_PRESET=local",
	}})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	want := Cluster{
		Name: "prod", NodeName: "edge-2", Bind: "0.0.0.0:7946", Advertise: "10.0.0.2:7946",
		Seeds:       []string{"127.0.0.1:7946", "127.0.0.1:7947", "127.0.0.1:7948"},
		Routes:      []string{"127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224"},
		RouteListen: "0.0.0.0:6223", RouteAdvertise: "10.0.0.2:6223", Preset: PresetLocal,
		PreviousSecretKeys: []string{}, PreviousRouteAuth: []string{},
		GatewayListen: DefaultClusterGatewayListen, Gateways: []RegionGateway{},
	}
	if !reflect.DeepEqual(c.Cluster, want) {
		t.Fatalf("got  %+v\nwant %+v", c.Cluster, want)
	}

	// An error in a value from a variable names the variable.
	_, _, err := Load(path, LoadOptions{Env: []string{"HERALD_CLUSTER_NAME=prod", "HERALD_CLUSTER_NODE_NAME=a b"}})
	if err == nil || !strings.HasPrefix(err.Error(), `env HERALD_CLUSTER_NODE_NAME: cluster.node_name: "a b" must match`) {
		t.Fatalf("err = %v", err)
	}
	// Turning the cluster on from the environment with a file that lacks
	// routes names the file's key.
	_, _, err = Load("", LoadOptions{Env: []string{"HERALD_CLUSTER_NAME=prod", "HERALD_CLUSTER_NODE_NAME=n1"}})
	if err == nil || !strings.HasPrefix(err.Error(), "config: cluster.routes: at least 3") {
		t.Fatalf("err = %v", err)
	}

	// The lists have no variable (herald.example.yaml says so): if they get
	// one, update the example's cluster comment and this test.
	vars := map[string]string{}
	for _, v := range EnvVars() {
		vars[v.Name] = v.Key
	}
	for _, name := range []string{"HERALD_CLUSTER_NAME", "HERALD_CLUSTER_NODE_NAME", "HERALD_CLUSTER_BIND", "HERALD_CLUSTER_ADVERTISE",
		"HERALD_CLUSTER_ROUTE_LISTEN", "HERALD_CLUSTER_ROUTE_ADVERTISE", "HERALD_CLUSTER_PRESET"} {
		if _, ok := vars[name]; !ok {
			t.Errorf("EnvVars lacks %s", name)
		}
	}
	for _, name := range []string{"HERALD_CLUSTER_SEEDS", "HERALD_CLUSTER_ROUTES"} {
		if _, ok := vars[name]; ok {
			t.Errorf("EnvVars has %s: document it in herald.example.yaml", name)
		}
	}
}
