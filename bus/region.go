package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Regions (docs/regions.md).
//
// With ClusterConfig.Region set, this node's cluster is one region of a
// NATS supercluster: the embedded server's cluster name and gateway name
// are the region, it listens for gateways on GatewayListen and dials the
// other regions' gateways (Gateways). All regions share one JetStream
// domain, so there is one JetStream meta group across the supercluster
// (every node of every region is a peer: nats-server counts the
// configured routes plus every gateway URL as the expected peer set, which
// is why Gateways lists every node of the other regions) and the JetStream
// API answers from any region.
//
// Where things are stored: every stream and bucket the bus creates (the
// apps' streams and cache streams, the webhook outbox and dead letters, the
// webhook state bucket) is placed in the home region (HomeRegion) with the
// replica count of that region's nodes. Only home-region nodes create or
// update them; a node of another region only looks them up (it does not
// know the home region's size), waiting for them like a clustered node
// waits for its meta leader. So every channel has one stream, one
// sequence, and the serials a client holds mean the same in every region.
//
// Publishing: a publication in any region goes to the stream's subject; the
// gateway carries it to the home region (the stream's subscription there is
// the interest), the ack comes back the same way. A 200 therefore means
// stored in the home stream, like in one cluster. The stream leader
// republishes each stored event on its live subject once, and the
// gateways carry it to every region whose nodes subscribe that channel
// (gateway interest for JetStream accounts is interest-only: a region gets
// only channels it has subscribers for).
//
// A region cut off from home (this node has no outbound gateway connection
// to it: gatewayConnected) answers every publish at once with
// ErrHomeUnreachable, which the REST API turns into a 503: the publisher
// must retry (against another region, or later). It
// does not queue: a queued event has no serial yet, so it could not be
// delivered in the one order of the channel, and a 200 could no longer mean
// stored. The cut region keeps delivering what reaches it (nothing from
// other regions while cut) and resumes read through the gateway too, so a
// resume there fails as "unavailable" while cut; clients that move to a
// region still joined to home lose nothing.

// GatewayRemote is another region's gateway: its region name and the
// gateway addresses (host:port) of its nodes.
type GatewayRemote struct {
	Name string
	URLs []string
}

// ErrHomeUnreachable: this node has no gateway connection to the home
// region, so a publication cannot be stored; retry it.
var ErrHomeUnreachable = errors.New("bus: home region unreachable")

// regional reports whether the node's cluster is one region of several.
func (c ClusterConfig) regional() bool { return c.Region != "" }

// Regions returns every region's name, this one's included, sorted.
func (c ClusterConfig) Regions() []string {
	if !c.regional() {
		return nil
	}
	names := []string{c.Region}
	for _, g := range c.Gateways {
		names = append(names, g.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Home is the home region: HomeRegion, or the first region by name.
// "" without regions.
func (c ClusterConfig) Home() string {
	if !c.regional() {
		return ""
	}
	if c.HomeRegion != "" {
		return c.HomeRegion
	}
	return c.Regions()[0]
}

// checkRegion validates the region fields of c (called by checkCluster)
// and proves the gateway port free.
func checkRegion(c ClusterConfig) error {
	if !c.regional() {
		if c.GatewayListen != "" || c.GatewayAdvertise != "" || len(c.Gateways) > 0 || c.HomeRegion != "" {
			return fmt.Errorf("%w: GatewayListen, GatewayAdvertise, Gateways or HomeRegion set without Region", ErrClusterConfig)
		}
		return nil
	}
	if !c.Enabled() {
		return fmt.Errorf("%w: Region needs the cluster block (Listen): a region is a NATS cluster", ErrClusterConfig)
	}
	host, port, err := clusterHostPort("GatewayListen", c.GatewayListen)
	if err != nil {
		return err
	}
	if c.GatewayAdvertise != "" {
		if _, _, err := clusterHostPort("GatewayAdvertise", c.GatewayAdvertise); err != nil {
			return err
		}
	}
	if len(c.Gateways) == 0 {
		return fmt.Errorf("%w: Region %q has no Gateways: list the other regions' gateways", ErrClusterConfig, c.Region)
	}
	seen := map[string]bool{c.Region: true}
	for i, g := range c.Gateways {
		if g.Name == "" || seen[g.Name] {
			return fmt.Errorf("%w: Gateways[%d]: name %q is empty, this region's or listed twice", ErrClusterConfig, i, g.Name)
		}
		seen[g.Name] = true
		if len(g.URLs) == 0 {
			return fmt.Errorf("%w: Gateways[%d] (%s): no URLs", ErrClusterConfig, i, g.Name)
		}
		for _, u := range g.URLs {
			if _, _, err := clusterHostPort(fmt.Sprintf("Gateways[%d].URLs", i), u); err != nil {
				return err
			}
		}
	}
	if c.HomeRegion != "" && !seen[c.HomeRegion] {
		return fmt.Errorf("%w: HomeRegion %q is neither Region nor a gateway's name", ErrClusterConfig, c.HomeRegion)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("bus: gateway listen %s: %w", c.GatewayListen, err)
	}
	return ln.Close()
}

// applyGateway adds the gateway block to opts (called by applyCluster).
// The cluster name is the region: nats-server requires a gateway's name to
// be its cluster's.
func applyGateway(opts *server.Options, c ClusterConfig) {
	host, port, _ := clusterHostPort("GatewayListen", c.GatewayListen)
	opts.Cluster.Name = c.Region
	gw := server.GatewayOpts{Name: c.Region, Host: host, Port: port, Advertise: c.GatewayAdvertise}
	for _, g := range c.Gateways {
		r := &server.RemoteGatewayOpts{Name: g.Name}
		for _, a := range g.URLs {
			r.URLs = append(r.URLs, &url.URL{Scheme: "nats", Host: a})
		}
		gw.Gateways = append(gw.Gateways, r)
	}
	// A closed cluster closes its gateways too (docs/regions.md): every
	// region's nodes share the route password and the route TLS files, and
	// a gateway presents and requires them as a route does. Only the
	// password sent is accepted here: the server checks gateways against
	// one user, so previous_route_auth covers routes, not gateways.
	if len(c.Passwords) > 0 {
		gw.Username, gw.Password = RouteUser, c.Passwords[0]
	}
	if c.TLS.Enabled() {
		gw.TLSConfig, _ = routeTLSConfig(c.TLS) // checkCluster built it once already
		gw.TLSTimeout = routeTLSTimeout.Seconds()
	}
	opts.Gateway = gw
}

// remoteRegion reports whether this node is in a region other than home:
// it then looks streams up instead of creating them.
func (b *Bus) remoteRegion() bool {
	c := b.cfg.Cluster
	return c.regional() && c.Region != c.Home()
}

// placement is where the bus's streams go: the home region, or nil
// (JetStream's choice) without regions.
func (b *Bus) placement() *jetstream.Placement {
	if !b.cfg.Cluster.regional() {
		return nil
	}
	return &jetstream.Placement{Cluster: b.cfg.Cluster.Home()}
}

// homeReachable reports whether a publication can reach the home region:
// always at home or without regions, else whether the gateway to home is
// connected. It is cheap enough for every publish (one look at the
// server's gateway table).
func (b *Bus) homeReachable() bool {
	if !b.remoteRegion() || b.srv == nil {
		return true
	}
	return b.gatewayConnected(b.cfg.Cluster.Home())
}

// gatewayConnected reports whether this server has an outbound gateway
// connection to region name: what a publication from this node travels on.
// Gateway connections are one-way: the answer comes back on a connection
// from a server of that region to some server of this one (not
// necessarily this one, so this server's inbound connections prove
// nothing in a region of several nodes). Right after a cut heals, the
// outbound connection may be up before any connection back is: a publish
// then waits for its resend (its first attempt was stored but not
// acknowledged; the stream's dedupe makes the resend its acknowledgement)
// and a resume may be answered unavailable once.
func (b *Bus) gatewayConnected(name string) bool {
	gz, err := b.srv.Gatewayz(&server.GatewayzOptions{Name: name})
	if err != nil || gz == nil {
		return false
	}
	og, ok := gz.OutboundGateways[name]
	return ok && og != nil && og.Connection != nil && og.Connection.Cid != 0
}

// homeUnreachable is the error of a publication this region cannot store.
func (b *Bus) homeUnreachable() error {
	return fmt.Errorf("%w: region %q has no gateway connection to home region %q; the event was not stored, retry",
		ErrHomeUnreachable, b.cfg.Cluster.Region, b.cfg.Cluster.Home())
}

// RegionInfo is this node's view of the regions, for herald status.
type RegionInfo struct {
	Region   string        `json:"region"`      // this node's
	Home     string        `json:"home_region"` // where the streams are
	Gateways []GatewayInfo `json:"gateways"`    // one per other region, by name
}

// GatewayInfo is one other region as this node's gateway sees it.
type GatewayInfo struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"` // this node's outbound gateway connection to that region is up
	RTT       string `json:"rtt"`       // its last round trip time ("" while not connected)
	Inbound   int    `json:"inbound"`   // gateway connections from that region's nodes to this one (in a region of several nodes, 0 is normal: each remote node dials one node here)
}

// Regions returns this node's view of the regions; ok false without
// regions (or in external mode).
func (b *Bus) Regions() (ri RegionInfo, ok bool) {
	c := b.cfg.Cluster
	if !c.regional() || b.srv == nil {
		return RegionInfo{}, false
	}
	ri = RegionInfo{Region: c.Region, Home: c.Home(), Gateways: []GatewayInfo{}}
	gz, err := b.srv.Gatewayz(&server.GatewayzOptions{})
	for _, g := range c.Gateways {
		gi := GatewayInfo{Name: g.Name}
		if err == nil && gz != nil {
			gi.Inbound = len(gz.InboundGateways[g.Name])
			if og := gz.OutboundGateways[g.Name]; og != nil && og.Connection != nil && og.Connection.Cid != 0 {
				gi.Connected, gi.RTT = true, og.Connection.RTT
			}
		}
		ri.Gateways = append(ri.Gateways, gi)
	}
	return ri, true
}

// errNotYet: a node outside the home region looked a stream or bucket up
// before the home region created it; ensure retries it.
var errNotYet = errors.New("bus: not created by the home region yet")

// lookupStream is ensureStream's create outside the home region.
func (b *Bus) lookupStream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := b.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w (home region %q): %w", errNotYet, b.cfg.Cluster.Home(), err)
	}
	return s, err
}

// lookupKV is ensureKV's create outside the home region.
func (b *Bus) lookupKV(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w (home region %q): %w", errNotYet, b.cfg.Cluster.Home(), err)
	}
	return kv, err
}
