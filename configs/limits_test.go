package configs

import (
	"strings"
	"testing"
	"time"
)

// The limit keys of docs/limits.md: parsed, validated with the key named.
func TestLimitKeys(t *testing.T) {
	c, msg := loadString(t, `
gateway:
  handshake_timeout: 2s
  max_connections_per_ip: 100
  accept_rate_per_ip: 20
  trusted_proxies: [10.0.0.0/8, 192.168.1.7, "fd00::/8"]
apps: [{id: a1, key: k1, secret: s, max_channels_per_connection: 5, subscribe_rate: 7, max_concurrent_rest_requests: 3}]
`)
	if msg != "" {
		t.Fatal(msg)
	}
	g := c.Gateway
	if g.HandshakeTimeout.D() != 2*time.Second || g.MaxConnectionsPerIP != 100 || g.AcceptRatePerIP != 20 || len(g.TrustedProxies) != 3 {
		t.Fatalf("gateway %+v", g)
	}
	a := c.Apps[0]
	if a.MaxChannelsPerConnection != 5 || a.SubscribeRate != 7 || a.MaxConcurrentRESTRequests != 3 {
		t.Fatalf("app %+v", a)
	}
	for _, s := range []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"} {
		if _, err := ParsePrefix(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if p, _ := ParsePrefix("192.168.1.7"); p.Bits() != 32 {
		t.Errorf("a single address is a /32, got %s", p)
	}

	app := "apps: [{id: a1, key: k1, secret: s, %s}]"
	cases := []struct{ content, want string }{
		{"gateway: {handshake_timeout: 10ms}", "gateway.handshake_timeout: must be from 100ms to 5m"},
		{"gateway: {max_connections_per_ip: -1}", "gateway.max_connections_per_ip: "},
		{"gateway: {accept_rate_per_ip: -1}", "gateway.accept_rate_per_ip: "},
		{"gateway: {trusted_proxies: [10.0.0.0/8, nonsense]}", `gateway.trusted_proxies[1]: "nonsense" is not a CIDR`},
		{"gateway: {trusted_proxies: [10.0.0.0/33]}", `gateway.trusted_proxies[0]: "10.0.0.0/33" is not a CIDR`},
		{strings.Replace(app, "%s", "max_channels_per_connection: 0", 1), "apps[0].max_channels_per_connection: must be from 1 to 100000, got 0"},
		{strings.Replace(app, "%s", "subscribe_rate: 0", 1), "apps[0].subscribe_rate: must be from 1 to 100000"},
		{strings.Replace(app, "%s", "max_concurrent_rest_requests: 0", 1), "apps[0].max_concurrent_rest_requests: must be from 1 to 100000"},
	}
	for _, tc := range cases {
		_, msg := loadString(t, tc.content)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.content, msg, tc.want)
		}
	}
}
