package configs

import (
	"reflect"
	"strings"
	"testing"
)

func TestBusModeDefaults(t *testing.T) {
	b := Default().Bus
	if b.Mode != BusEmbedded || b.Replicas != 1 || len(b.URLs) != 0 || len(b.LeafRemotes) != 0 ||
		b.Credentials != "" || b.User != "" || b.Password != "" || b.JetStreamDomain != "" {
		t.Fatalf("bus defaults %+v", b)
	}
}

func TestBusModeLoad(t *testing.T) {
	c, w := mustLoad(t, writeConfig(t, `
bus:
  mode: external
  urls: ["nats://nats-1:4222", "tls://nats-2:4222"]
  credentials: /etc/herald/herald.creds
  replicas: 3
  jetstream_domain: core
`), LoadOptions{})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	b := c.Bus
	if b.Mode != BusExternal || b.Credentials != "/etc/herald/herald.creds" || b.Replicas != 3 || b.JetStreamDomain != "core" ||
		!reflect.DeepEqual(b.URLs, []string{"nats://nats-1:4222", "tls://nats-2:4222"}) {
		t.Fatalf("bus %+v", b)
	}

	c, _ = mustLoad(t, writeConfig(t, `
bus:
  mode: leaf
  leaf_remotes: ["nats-leaf://hub-1:7422", "nats-leaf://hub-2:7422"]
  jetstream_domain: eu-west
`), LoadOptions{Env: []string{"HERALD_BUS_USER=leaf", "HERALD_BUS_PASSWORD=pw"}})
	b = c.Bus
	if b.Mode != BusLeaf || b.JetStreamDomain != "eu-west" || b.User != "leaf" || b.Password != "pw" || len(b.LeafRemotes) != 2 {
		t.Fatalf("bus %+v", b)
	}

	// The scalars have variables; the lists have none (the example says so).
	vars := map[string]string{}
	for _, v := range EnvVars() {
		vars[v.Name] = v.Key
	}
	for name, key := range map[string]string{
		"HERALD_BUS_MODE":             "bus.mode",
		"HERALD_BUS_CREDENTIALS":      "bus.credentials",
		"HERALD_BUS_USER":             "bus.user",
		"HERALD_BUS_PASSWORD":         "bus.password",
		"HERALD_BUS_REPLICAS":         "bus.replicas",
		"HERALD_BUS_JETSTREAM_DOMAIN": "bus.jetstream_domain",
	} {
		if vars[name] != key {
			t.Errorf("%s sets %q, want %s", name, vars[name], key)
		}
	}
	for _, name := range []string{"HERALD_BUS_URLS", "HERALD_BUS_LEAF_REMOTES"} {
		if _, ok := vars[name]; ok {
			t.Errorf("EnvVars has %s: document it in herald.example.yaml", name)
		}
	}
}

func TestBusModeValidate(t *testing.T) {
	external := func(c *Config) {
		c.Bus.Mode = BusExternal
		c.Bus.URLs = []string{"nats://nats-1:4222"}
	}
	leaf := func(c *Config) {
		c.Bus.Mode = BusLeaf
		c.Bus.LeafRemotes = []string{"nats-leaf://hub:7422"}
		c.Bus.JetStreamDomain = "eu-west"
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string // prefix of the error; "" = valid
	}{
		{
			name:   "external",
			mutate: external,
		},
		{
			name:   "leaf",
			mutate: leaf,
		},
		{
			name:   "unknown mode",
			mutate: func(c *Config) { c.Bus.Mode = "remote" },
			want:   `bus.mode: "remote" is not one of embedded, external, leaf`,
		},
		{
			name:   "urls without mode",
			mutate: func(c *Config) { c.Bus.URLs = []string{"nats://nats-1:4222"} },
			want:   `bus.urls: is only used with mode external, and mode is "embedded"`,
		},
		{
			name:   "leaf_remotes in external mode",
			mutate: func(c *Config) { external(c); c.Bus.LeafRemotes = []string{"nats-leaf://hub:7422"} },
			want:   `bus.leaf_remotes: is only used with mode leaf, and mode is "external"`,
		},
		{
			name:   "replicas in leaf mode",
			mutate: func(c *Config) { leaf(c); c.Bus.Replicas = 3 },
			want:   `bus.replicas: is only used with mode external`,
		},
		{
			name:   "replicas out of range",
			mutate: func(c *Config) { external(c); c.Bus.Replicas = 7 },
			want:   "bus.replicas: must be from 1 to 5, got 7",
		},
		{
			name:   "credentials when embedded",
			mutate: func(c *Config) { c.Bus.Credentials = "/x.creds" },
			want:   "bus.credentials: is only used with mode external or leaf",
		},
		{
			name:   "external without urls",
			mutate: func(c *Config) { external(c); c.Bus.URLs = nil },
			want:   `bus.urls: at least one URL is required, e.g. ["nats://nats-1:4222"]`,
		},
		{
			name:   "bad url",
			mutate: func(c *Config) { external(c); c.Bus.URLs = []string{"nats://a:4222", "nats-1:4222"} },
			want:   `bus.urls[1]: "nats-1:4222"`,
		},
		{
			name:   "bad scheme",
			mutate: func(c *Config) { external(c); c.Bus.URLs = []string{"http://a:4222"} },
			want:   `bus.urls[0]: "http://a:4222": the scheme must be one of nats, tls, ws, wss`,
		},
		{
			name:   "credentials and user",
			mutate: func(c *Config) { external(c); c.Bus.Credentials = "/x.creds"; c.Bus.User = "u"; c.Bus.Password = "p" },
			want:   "bus.user: set credentials or user and password, not both",
		},
		{
			name:   "user without password",
			mutate: func(c *Config) { external(c); c.Bus.User = "u" },
			want:   "bus.password: must be set with user",
		},
		{
			name:   "sync always in external mode",
			mutate: func(c *Config) { external(c); c.Bus.Stream.Sync = SyncAlways },
			want:   `bus.stream.sync: "always" is the external NATS servers' setting`,
		},
		{
			name:   "leaf without domain",
			mutate: func(c *Config) { leaf(c); c.Bus.JetStreamDomain = "" },
			want:   "bus.jetstream_domain: is required with mode leaf",
		},
		{
			name:   "bad domain",
			mutate: func(c *Config) { leaf(c); c.Bus.JetStreamDomain = "eu.west" },
			want:   `bus.jetstream_domain: "eu.west" must match`,
		},
		{
			name:   "leaf without remotes",
			mutate: func(c *Config) { leaf(c); c.Bus.LeafRemotes = nil },
			want:   `bus.leaf_remotes: at least one URL is required, e.g. ["nats-leaf://hub:7422"]`,
		},
		{
			name: "cluster in external mode needs no routes",
			mutate: func(c *Config) {
				external(c)
				c.Cluster.Name, c.Cluster.NodeName = "prod", "n1"
			},
		},
		{
			name: "cluster in leaf mode needs routes",
			mutate: func(c *Config) {
				leaf(c)
				c.Cluster.Name, c.Cluster.NodeName = "prod", "n1"
			},
			want: "cluster.routes: at least 3",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("err = %v, want prefix %q", err, tc.want)
			}
		})
	}
}
