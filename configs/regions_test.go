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
