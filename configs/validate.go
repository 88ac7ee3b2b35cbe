package configs

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"herald/app"
)

// clusterNamePattern is for cluster.name and cluster.node_name: usable as a
// NATS server and cluster name and as a memberlist node name.
var clusterNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks every value and returns the first problem as a *KeyError
// naming the key (without a file prefix), e.g. `apps[1].key: must not be
// empty`. Callers that change a loaded Config (command-line flags) should
// call it again.
func (c *Config) Validate() error {
	checks := []func() *KeyError{
		func() *KeyError { return checkListen("listen", c.Listen) },
		func() *KeyError { return notBlank("data_dir", c.DataDir) },
		func() *KeyError { return oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error") },
		func() *KeyError { return oneOf("log.format", c.Log.Format, "text", "json") },
		c.checkApps,
		func() *KeyError { return oneOf("apps_source", c.AppsSource, AppsFromConfig, AppsFromRegistry) },
		func() *KeyError { return c.Gateway.check("gateway") },
		func() *KeyError { return c.Bus.check("bus") },
		func() *KeyError { return c.HTTP.check("http") },
		c.checkCluster,
		func() *KeyError { return c.Admin.check("admin") },
		func() *KeyError { return c.Shutdown.check("shutdown") },
		func() *KeyError { return c.Webhooks.check("webhooks") },
		c.TLS.check,
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// checkApps checks apps[] with the app model's own rules (app/validate.go),
// naming the app's place in the file.
func (c *Config) checkApps() *KeyError {
	i, err := app.ValidateSet(c.Apps)
	switch {
	case err == nil:
		return nil
	case i < 0:
		return keyErr("apps", err.Problem)
	}
	return keyErr(fmt.Sprintf("apps[%d].%s", i, err.Key), err.Problem)
}

func (g *Gateway) check(p string) *KeyError {
	return firstErr(
		durRange(p+".activity_timeout", g.ActivityTimeout, time.Second, time.Hour),
		durRange(p+".pong_timeout", g.PongTimeout, 100*time.Millisecond, 10*time.Minute),
		intRange(p+".max_message_bytes", int64(g.MaxMessageBytes), 1024, 16<<20),
		intRange(p+".write_queue_bytes", int64(g.WriteQueueBytes), 4096, 1<<30),
		intRange(p+".pollers", int64(g.Pollers), 0, 256),
		intRange(p+".accept_rate", int64(g.AcceptRate), 0, 1_000_000),
		durRange(p+".handshake_timeout", g.HandshakeTimeout, 100*time.Millisecond, 5*time.Minute),
		intRange(p+".max_connections_per_ip", int64(g.MaxConnectionsPerIP), 0, 10_000_000),
		intRange(p+".accept_rate_per_ip", int64(g.AcceptRatePerIP), 0, 1_000_000),
		checkPrefixes(p+".trusted_proxies", g.TrustedProxies),
	)
}

// checkPrefixes checks a list of CIDRs or single addresses.
func checkPrefixes(k string, list []string) *KeyError {
	for i, s := range list {
		if _, err := ParsePrefix(s); err != nil {
			return keyErr(fmt.Sprintf("%s[%d]", k, i), fmt.Sprintf("%s is not a CIDR (10.0.0.0/8) or an address", quote(s)))
		}
	}
	return nil
}

// ParsePrefix reads a CIDR ("10.0.0.0/8", "fd00::/8") or a single address,
// which stands for itself alone.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("configs: %w", err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("configs: %w", err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (a *Admin) check(p string) *KeyError {
	if a.Listen == "" {
		return nil
	}
	if err := checkListen(p+".listen", a.Listen); err != nil {
		return err
	}
	if a.Token == "" && !IsLoopbackListen(a.Listen) {
		return keyErr(p+".token", fmt.Sprintf("is required when %s.listen (%s) is not a loopback address", p, quote(a.Listen)))
	}
	return nil
}

// IsLoopbackListen reports whether a host:port listens on loopback only
// (127.0.0.0/8, ::1 or "localhost"); "" and "0.0.0.0" as host listen on
// every interface.
func IsLoopbackListen(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Shutdown) check(p string) *KeyError {
	if err := firstErr(
		durRange(p+".drain_window", s.DrainWindow, 0, 10*time.Minute),
		durRange(p+".deadline", s.Deadline, time.Second, time.Hour),
	); err != nil {
		return err
	}
	if s.Deadline < s.DrainWindow {
		return keyErr(p+".deadline", fmt.Sprintf("%s must be at least %s.drain_window (%s)", s.Deadline, p, s.DrainWindow))
	}
	return nil
}

func (w *Webhooks) check(p string) *KeyError {
	return firstErr(
		durRange(p+".grace", w.Grace, 0, time.Minute),
		durRange(p+".retry_for", w.RetryFor, time.Second, 720*time.Hour),
		durRange(p+".timeout", w.Timeout, 100*time.Millisecond, 2*time.Minute),
		intRange(p+".batch_size", int64(w.BatchSize), 1, 1000),
		intRange(p+".workers", int64(w.Workers), 1, 1024),
		durRange(p+".dead_letter_max_age", w.DeadLetterMaxAge, time.Minute, 8760*time.Hour),
	)
}

func (b *Bus) check(p string) *KeyError {
	s := &b.Stream
	if b.ClientListen != "" {
		if err := checkListen(p+".client_listen", b.ClientListen); err != nil {
			return err
		}
	}
	return firstErr(
		durRange(p+".stream.max_age", s.MaxAge, time.Second, 720*time.Hour),
		intRange(p+".stream.max_msgs_per_channel", s.MaxMsgsPerChannel, 1, 10_000_000),
		oneOf(p+".stream.sync", s.Sync, SyncInterval, SyncAlways),
		intRange(p+".shards", int64(b.Shards), 0, 256),
		durRange(p+".cache_ttl", b.CacheTTL, time.Second, 24*time.Hour),
		b.checkMode(p),
	)
}

// jsDomainPattern is what bus.jetstream_domain may be: one NATS subject token.
var jsDomainPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkMode checks bus.mode and the keys that belong to it. A key of another
// mode is an error, not ignored: "urls" without "mode: external" would
// otherwise run an embedded server without a word.
func (b *Bus) checkMode(p string) *KeyError {
	if err := oneOf(p+".mode", b.Mode, BusEmbedded, BusExternal, BusLeaf); err != nil {
		return err
	}
	only := func(key string, set bool, modes ...string) *KeyError {
		if set && !slices.Contains(modes, b.Mode) {
			return keyErr(p+"."+key, fmt.Sprintf("is only used with mode %s, and mode is %s", strings.Join(modes, " or "), quote(b.Mode)))
		}
		return nil
	}
	if err := firstErr(
		intRange(p+".replicas", int64(b.Replicas), 1, 5),
		only("urls", len(b.URLs) > 0, BusExternal),
		only("replicas", b.Replicas != DefaultBusReplicas, BusExternal),
		only("leaf_remotes", len(b.LeafRemotes) > 0, BusLeaf),
		only("credentials", b.Credentials != "", BusExternal, BusLeaf),
		only("user", b.User != "", BusExternal, BusLeaf),
		only("password", b.Password != "", BusExternal, BusLeaf),
		only("jetstream_domain", b.JetStreamDomain != "", BusExternal, BusLeaf),
	); err != nil {
		return err
	}
	switch {
	case b.Credentials != "" && b.User != "":
		return keyErr(p+".user", "set credentials or user and password, not both")
	case b.User != "" && b.Password == "":
		return keyErr(p+".password", "must be set with user")
	case b.Password != "" && b.User == "":
		return keyErr(p+".user", "must be set with password")
	case b.Credentials != "" && strings.TrimSpace(b.Credentials) == "":
		return keyErr(p+".credentials", "must not be blank")
	case b.JetStreamDomain != "" && !jsDomainPattern.MatchString(b.JetStreamDomain):
		return keyErr(p+".jetstream_domain", fmt.Sprintf("%s must match %s", quote(b.JetStreamDomain), jsDomainPattern))
	}
	switch b.Mode {
	case BusExternal:
		if b.Stream.Sync == SyncAlways {
			return keyErr(p+".stream.sync", `"always" is the external NATS servers' setting in external mode (sync_interval: always in their config); leave "interval"`)
		}
		return checkNATSURLs(p+".urls", b.URLs, `"nats://nats-1:4222"`, "nats", "tls", "ws", "wss")
	case BusLeaf:
		if b.JetStreamDomain == "" {
			return keyErr(p+".jetstream_domain", "is required with mode leaf: the leaf's own JetStream domain, unique among the hub's leaf nodes (e.g. \"eu-west\")")
		}
		return checkNATSURLs(p+".leaf_remotes", b.LeafRemotes, `"nats-leaf://hub:7422"`, "nats-leaf", "nats", "tls", "ws", "wss")
	}
	return nil
}

// checkNATSURLs checks a list of server URLs: at least one, each with one of
// schemes and a host.
func checkNATSURLs(key string, urls []string, example string, schemes ...string) *KeyError {
	if len(urls) == 0 {
		return keyErr(key, fmt.Sprintf("at least one URL is required, e.g. [%s]", example))
	}
	for i, raw := range urls {
		k := fmt.Sprintf("%s[%d]", key, i)
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			return keyErr(k, fmt.Sprintf("%s is not a URL like %s", quote(raw), example))
		}
		if !slices.Contains(schemes, u.Scheme) {
			return keyErr(k, fmt.Sprintf("%s: the scheme must be one of %s", quote(raw), strings.Join(schemes, ", ")))
		}
	}
	return nil
}

func (h *HTTP) check(p string) *KeyError {
	return firstErr(
		intRange(p+".max_body_bytes", int64(h.MaxBodyBytes), 1024, 64<<20),
		intRange(p+".read_buffer_bytes", int64(h.ReadBufferBytes), 4096, 1<<20),
	)
}

// checkCluster checks the cluster block. Only preset is checked on a single
// node (name ""); the other keys are ignored there.
func (c *Config) checkCluster() *KeyError {
	cl := &c.Cluster
	const p = "cluster"
	if err := oneOf(p+".preset", cl.Preset, PresetLAN, PresetLocal, PresetWAN); err != nil {
		return err
	}
	if !cl.Enabled() {
		return nil
	}
	if err := matches(p+".name", cl.Name, clusterNamePattern); err != nil {
		return err
	}
	if err := checkNodeName(p+".node_name", cl); err != nil {
		return err
	}
	if err := checkClosed(p, cl); err != nil {
		return err
	}
	if err := checkListen(p+".bind", cl.Bind); err != nil {
		return err
	}
	if cl.Advertise != "" {
		if err := checkAddr(p+".advertise", cl.Advertise); err != nil {
			return err
		}
	}
	for i, s := range cl.Seeds {
		if err := checkAddr(fmt.Sprintf("%s.seeds[%d]", p, i), s); err != nil {
			return err
		}
	}
	if err := c.checkRegion(); err != nil {
		return err
	}
	if c.Bus.Mode == BusExternal {
		// No embedded server, so no NATS routes: the nodes reach each
		// other through the external deployment (routes, route_listen and
		// route_advertise are unused).
		return nil
	}
	if err := checkRoutes(p+".routes", cl.Routes, cl.Region != ""); err != nil {
		return err
	}
	if err := checkListen(p+".route_listen", cl.RouteListen); err != nil {
		return err
	}
	if err := routeListenInRoutes(p, cl.RouteListen, cl.Routes); err != nil {
		return err
	}
	if cl.RouteAdvertise != "" {
		if err := checkAddr(p+".route_advertise", cl.RouteAdvertise); err != nil {
			return err
		}
	}
	return c.checkClusterPorts()
}

// checkNodeName checks the node's name, the hostname when node_name is "".
func checkNodeName(key string, cl *Cluster) *KeyError {
	if cl.NodeName != "" {
		return matches(key, cl.NodeName, clusterNamePattern)
	}
	h, err := hostname()
	if err != nil || h == "" {
		return keyErr(key, "must be set: the default, the hostname, is unavailable")
	}
	if !clusterNamePattern.MatchString(h) {
		return keyErr(key, fmt.Sprintf("must be set: the default, the hostname %s, does not match %s", quote(h), clusterNamePattern))
	}
	return nil
}

// checkRoutes checks cluster.routes: at least MinClusterRoutes distinct
// host:port addresses.
func checkRoutes(key string, routes []string, region bool) *KeyError {
	if region && len(routes) == 0 {
		return keyErr(key, "at least 1 is required in a region: this node's own route address (JetStream's meta group "+
			"spans every region, so a region may be one node)")
	}
	if !region && len(routes) < MinClusterRoutes {
		return keyErr(key, fmt.Sprintf("at least %d are required, got %d: JetStream clustering needs %d or more nodes, "+
			"and every node lists the route address of every node, its own included", MinClusterRoutes, len(routes), MinClusterRoutes))
	}
	seen := make(map[string]int, len(routes))
	for i, r := range routes {
		k := fmt.Sprintf("%s[%d]", key, i)
		if err := checkAddr(k, r); err != nil {
			return err
		}
		if j, dup := seen[r]; dup {
			return keyErr(k, fmt.Sprintf("%s is already %s[%d]", quote(r), key, j))
		}
		seen[r] = i
	}
	return nil
}

// routeListenInRoutes checks that this node's own route address is in the
// list, as far as the port tells (route_listen's host may be 0.0.0.0 while
// routes name the host others use).
func routeListenInRoutes(p, listen string, routes []string) *KeyError {
	_, port, _ := net.SplitHostPort(listen)
	for _, r := range routes {
		if _, rp, err := net.SplitHostPort(r); err == nil && rp == port {
			return nil
		}
	}
	return keyErr(p+".route_listen", fmt.Sprintf("port %s is not the port of any of %s.routes: list this node's own route address there too", port, p))
}

// checkClusterPorts refuses a cluster listener on the same address as
// another listener of the node.
func (c *Config) checkClusterPorts() *KeyError {
	type listener struct{ key, addr string }
	ls := []listener{
		{"listen", c.Listen},
		{"bus.client_listen", c.Bus.ClientListen},
		{"cluster.bind", c.Cluster.Bind},
		{"cluster.route_listen", c.Cluster.RouteListen},
	}
	if c.Cluster.Region != "" {
		ls = append(ls, listener{"cluster.gateway_listen", c.Cluster.GatewayListen})
	}
	for i := 2; i < len(ls); i++ {
		for j := range i {
			if sameListener(ls[i].addr, ls[j].addr) {
				return keyErr(ls[i].key, fmt.Sprintf("%s is also the address of %s", quote(ls[i].addr), ls[j].key))
			}
		}
	}
	return nil
}

// sameListener reports whether two listen addresses would take the same
// port: same non-zero port, and the same host or one of them unspecified.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	return ha == hb || unspecifiedHost(ha) || unspecifiedHost(hb)
}

func unspecifiedHost(h string) bool {
	if h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

// checkAddr checks an address other nodes dial: host:port with a host that
// is not empty or unspecified (0.0.0.0) and a port from 1 to 65535.
func checkAddr(key, v string) *KeyError {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return keyErr(key, fmt.Sprintf(`%s must be host:port (e.g. "10.0.0.2:7946" or "node2:7946")`, quote(v)))
	}
	if host == "" || unspecifiedHost(host) {
		return keyErr(key, fmt.Sprintf("%s must name a host other nodes can reach, not %s", quote(v), quote(host)))
	}
	if strings.ContainsAny(host, " \t") {
		return keyErr(key, fmt.Sprintf("host %s must not contain spaces", quote(host)))
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return keyErr(key, fmt.Sprintf("port %s must be a number from 1 to 65535", quote(port)))
	}
	return nil
}

// firstErr returns the first non-nil error. The checks are cheap, so
// evaluating all of them eagerly costs nothing worth avoiding.
func firstErr(errs ...*KeyError) *KeyError {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func checkListen(key, v string) *KeyError {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return keyErr(key, fmt.Sprintf(`%s must be host:port (e.g. "127.0.0.1:6001" or ":6001")`, quote(v)))
	}
	if strings.ContainsAny(host, " \t") {
		return keyErr(key, fmt.Sprintf("host %s must not contain spaces", quote(host)))
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return keyErr(key, fmt.Sprintf("port %s must be a number from 0 to 65535", quote(port)))
	}
	return nil
}

func notBlank(key, v string) *KeyError {
	if strings.TrimSpace(v) == "" {
		return keyErr(key, "must not be empty")
	}
	return nil
}

func matches(key, v string, re *regexp.Regexp) *KeyError {
	if v == "" {
		return keyErr(key, "must not be empty")
	}
	if !re.MatchString(v) {
		return keyErr(key, fmt.Sprintf("%s must match %s", quote(v), re))
	}
	return nil
}

func oneOf(key, v string, allowed ...string) *KeyError {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return keyErr(key, fmt.Sprintf("%s is not one of %s", quote(v), strings.Join(allowed, ", ")))
}

func intRange(key string, v, lo, hi int64) *KeyError {
	if v < lo || v > hi {
		return keyErr(key, fmt.Sprintf("must be from %d to %d, got %d", lo, hi, v))
	}
	return nil
}

func durRange(key string, v Duration, lo, hi time.Duration) *KeyError {
	if v.D() < lo || v.D() > hi {
		return keyErr(key, fmt.Sprintf("must be from %s to %s, got %s", Duration(lo), Duration(hi), v))
	}
	return nil
}

// checkRegion checks the region keys of the cluster block (docs/regions.md);
// all are ignored with region "".
func (c *Config) checkRegion() *KeyError {
	cl := &c.Cluster
	const p = "cluster"
	if cl.Region == "" {
		return nil
	}
	if err := matches(p+".region", cl.Region, clusterNamePattern); err != nil {
		return err
	}
	if c.Bus.Mode != BusEmbedded {
		return keyErr(p+".region", fmt.Sprintf("needs bus.mode %s: regions are joined by the embedded NATS servers' gateways, bus.mode is %s", BusEmbedded, quote(c.Bus.Mode)))
	}
	if err := checkListen(p+".gateway_listen", cl.GatewayListen); err != nil {
		return err
	}
	if cl.GatewayAdvertise != "" {
		if err := checkAddr(p+".gateway_advertise", cl.GatewayAdvertise); err != nil {
			return err
		}
	}
	if len(cl.Gateways) == 0 {
		return keyErr(p+".gateways", "at least 1 is required with cluster.region set: list the other regions' names and gateway addresses")
	}
	names := map[string]int{}
	for i, g := range cl.Gateways {
		k := fmt.Sprintf("%s.gateways[%d]", p, i)
		if err := matches(k+".name", g.Name, clusterNamePattern); err != nil {
			return err
		}
		if g.Name == cl.Region {
			return keyErr(k+".name", fmt.Sprintf("%s is this node's own region (cluster.region): list only the other regions", quote(g.Name)))
		}
		if j, dup := names[g.Name]; dup {
			return keyErr(k+".name", fmt.Sprintf("%s is already %s.gateways[%d].name", quote(g.Name), p, j))
		}
		names[g.Name] = i
		if len(g.URLs) == 0 {
			return keyErr(k+".urls", "at least 1 is required: the gateway address (host:port) of every node of region "+quote(g.Name))
		}
		for j, u := range g.URLs {
			if err := checkAddr(fmt.Sprintf("%s.urls[%d]", k, j), u); err != nil {
				return err
			}
		}
	}
	if cl.HomeRegion != "" {
		if _, ok := names[cl.HomeRegion]; !ok && cl.HomeRegion != cl.Region {
			return keyErr(p+".home_region", fmt.Sprintf("%s is neither cluster.region nor a name in cluster.gateways", quote(cl.HomeRegion)))
		}
	}
	return nil
}
