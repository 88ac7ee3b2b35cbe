package configs

import (
	"reflect"
	"strings"
	"testing"
)

// regionYAML is node a1 of region a, with one node in region b.
const regionYAML = `
cluster:
  name: herald
  node_name: a1
  bind: 127.0.0.1:7946
  seeds: [127.0.0.1:7946, 127.0.0.1:7956]
  routes: [127.0.0.1:6222]
  route_listen: 127.0.0.1:6222
  region: a
  gateway_listen: 127.0.0.1:7222
  gateways:
    - name: b
      urls: [127.0.0.1:7232]
`

func TestRegionValid(t *testing.T) {
	c, w := mustLoad(t, writeConfig(t, regionYAML), LoadOptions{Strict: true})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	want := []RegionGateway{{Name: "b", URLs: []string{"127.0.0.1:7232"}}}
	if c.Cluster.Region != "a" || c.Cluster.GatewayListen != "127.0.0.1:7222" || !reflect.DeepEqual(c.Cluster.Gateways, want) {
		t.Fatalf("cluster = %+v", c.Cluster)
	}
}

func TestRegionValidation(t *testing.T) {
	cases := []struct {
		name, replace, with, want string
	}{
		{"bad region", "  region: a\n", "  region: 'a b'\n", `cluster.region: "a b" must match`},
		{"no gateways", "  gateways:\n    - name: b\n      urls: [127.0.0.1:7232]\n", "  gateways: []\n", "cluster.gateways: at least 1 is required"},
		{"gateway to itself", "    - name: b\n", "    - name: a\n", `cluster.gateways[0].name: "a" is this node's own region`},
		{"gateway without urls", "      urls: [127.0.0.1:7232]\n", "      urls: []\n", "cluster.gateways[0].urls: at least 1 is required"},
		{"bad gateway url", "      urls: [127.0.0.1:7232]\n", "      urls: [nohost]\n", `cluster.gateways[0].urls[0]: "nohost" must be host:port`},
		{"unspecified gateway_advertise", "  gateway_listen: 127.0.0.1:7222\n", "  gateway_listen: 127.0.0.1:7222\n  gateway_advertise: 0.0.0.0:7222\n", "cluster.gateway_advertise: "},
		{"bad gateway_listen", "  gateway_listen: 127.0.0.1:7222\n", "  gateway_listen: seven\n", `cluster.gateway_listen: "seven" must be host:port`},
		{"gateway_listen on route_listen", "  gateway_listen: 127.0.0.1:7222\n", "  gateway_listen: 127.0.0.1:6222\n", `cluster.gateway_listen: "127.0.0.1:6222" is also the address of cluster.route_listen`},
		{"unknown home", "  region: a\n", "  region: a\n  home_region: c\n", `cluster.home_region: "c" is neither cluster.region nor a name`},
		{"no routes", "  routes: [127.0.0.1:6222]\n", "  routes: []\n", "cluster.routes: at least 1 is required in a region"},
		{"external bus", "cluster:\n", "bus: {mode: external, urls: ['nats://127.0.0.1:4222']}\ncluster:\n", "cluster.region: needs bus.mode embedded"},
		{"gateway unknown key", "      urls: [127.0.0.1:7232]\n", "      urls: [127.0.0.1:7232]\n      url: x\n", "cluster.gateways[0].url: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(regionYAML, tc.replace) {
				t.Fatalf("regionYAML has no %q", tc.replace)
			}
			path := writeConfig(t, strings.Replace(regionYAML, tc.replace, tc.with, 1))
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

// TestRegionsLoopbackFiles checks configs/regions/a.yaml and b.yaml (make
// regions): each loads strictly, has its own ports and data directory, and
// each names the other as its gateway at the other's gateway_listen; both
// share the memberlist cluster, seeds and apps.
func TestRegionsLoopbackFiles(t *testing.T) {
	a, _ := mustLoad(t, "regions/a.yaml", LoadOptions{Strict: true})
	b, _ := mustLoad(t, "regions/b.yaml", LoadOptions{Strict: true})
	for _, pair := range [][2]*Config{{a, b}, {b, a}} {
		c, o := pair[0], pair[1]
		if len(c.Cluster.Gateways) != 1 || c.Cluster.Gateways[0].Name != o.Cluster.Region ||
			!reflect.DeepEqual(c.Cluster.Gateways[0].URLs, []string{o.Cluster.GatewayListen}) {
			t.Errorf("region %s: gateways %+v, want region %s at %s", c.Cluster.Region, c.Cluster.Gateways, o.Cluster.Region, o.Cluster.GatewayListen)
		}
	}
	if a.Cluster.Region != "a" || b.Cluster.Region != "b" {
		t.Errorf("regions %q, %q", a.Cluster.Region, b.Cluster.Region)
	}
	if a.Cluster.Name != b.Cluster.Name || !reflect.DeepEqual(a.Cluster.Seeds, b.Cluster.Seeds) || !reflect.DeepEqual(a.Apps, b.Apps) {
		t.Errorf("a and b disagree on the cluster name, seeds or apps")
	}
	seen := map[string]string{}
	for _, c := range []*Config{a, b} {
		for key, addr := range map[string]string{
			"listen": c.Listen, "bus.client_listen": c.Bus.ClientListen, "cluster.bind": c.Cluster.Bind,
			"cluster.route_listen": c.Cluster.RouteListen, "cluster.gateway_listen": c.Cluster.GatewayListen,
			"admin.listen": c.Admin.Listen, "data_dir": c.DataDir,
		} {
			if prev, dup := seen[addr]; dup {
				t.Errorf("region %s %s: %s is also %s", c.Cluster.Region, key, addr, prev)
			}
			seen[addr] = c.Cluster.Region + " " + key
		}
	}
}
