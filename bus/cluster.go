package bus

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Clustering.
//
// With Config.Cluster.Listen set, the embedded server opens a route listener
// there and routes to every address of Cluster.Routes; the servers form one
// NATS cluster and run JetStream clustered, so every stream is a Raft group
// with min(3, nodes) replicas. Without it the node runs standalone, exactly
// as before clustering existed. A standalone store is not adopted by a
// cluster (docs/stack.md §7): switching modes starts with empty streams.
//
// Rules the server imposes (docs/stack.md §5, §7):
//   - JetStream clustering needs at least 3 configured nodes; a lone
//     clustered node never elects a meta leader. Start refuses fewer routes.
//   - Every node lists every route address, its own included (the server
//     skips the route to itself), and has a unique ServerName.
//   - A clustered server must have a client listener (DontListen would keep
//     the route listener shut and make Shutdown hang). Without a client port
//     the node listens on 127.0.0.1 on a random port, where only the node's
//     own user may log in.
//
// Readiness: Start waits, up to Config.ReadyTimeout, until JetStream answers
// (a meta leader is elected) and the configured apps' streams exist. While
// a leader is elected JetStream requests may go unanswered, so every request
// is a short attempt, retried.
//
// Publishing through a stream leader change: Publish and PublishBatch send
// each publication with a random Nats-Msg-Id and resend it when an attempt
// gets no answer (about 1 s) or no responder, within the caller's ctx. The
// stream's dedupe window (Duplicates) turns a resend of a publication that
// was in fact stored into an acknowledgement of the stored copy, so a retry
// never stores an event twice. A publication answered with an error other
// than "temporarily unavailable" or "same id in process" is not resent.
//
// Live delivery needs nothing more: the stream leader republishes each
// stored message once, and routes carry it to every node with interest.

// Defaults and limits of clustering.
const (
	DefaultClusterName  = "herald"
	DefaultReadyTimeout = 30 * time.Second // Config.ReadyTimeout

	// MinClusterNodes is the fewest route addresses Cluster.Routes may list.
	MinClusterNodes = 3
	maxReplicas     = 3

	readyAttemptWait    = 2 * time.Second        // per AccountInfo attempt while waiting for a meta leader
	readyRetryPause     = 100 * time.Millisecond // between those attempts
	publishAttemptWait  = time.Second            // per clustered publish attempt; a batch resends after this long without an ack
	publishRetryPause   = 50 * time.Millisecond  // before a resend
	clusterPublishWait  = 15 * time.Second       // a clustered publish whose ctx has no deadline
	dedupeWindowDefault = 2 * time.Minute        // stream Duplicates in cluster mode (capped at MaxAge)
)

// ErrClusterConfig: Config.Cluster is not usable.
var ErrClusterConfig = errors.New("bus: invalid cluster config")

// ClusterConfig makes the embedded server one node of a NATS cluster with
// clustered JetStream. The zero value is standalone. In cluster mode
// Config.ServerName names the node and must differ on every node.
type ClusterConfig struct {
	Name      string   // NATS cluster name, the same on every node; "" = "herald"
	Listen    string   // host:port of this node's route listener; "" = standalone (the other fields unused)
	Advertise string   // host:port other nodes should dial for this node's routes (gossiped); "" = what the server derives from Listen
	Routes    []string // host:port of every node's route listener, this node's included; at least MinClusterNodes distinct (1 in a region: region.go)
	// Passwords, when set, close the routes (routeauth.go): Passwords[0]
	// is sent on every route this node dials, every one is accepted from
	// routes that dial in; a route without one is refused.
	Passwords []string
	// TLS, when its files are set, puts every route in mutual TLS
	// (routeauth.go): the node presents TLS.CertFile and requires a peer
	// certificate signed by TLS.CAFile, both ways.
	TLS RouteTLS

	// Regions (region.go). Region "" is one cluster, no gateways.
	Region           string          // this cluster's region: the NATS cluster and gateway name (replaces Name); "" = no regions
	GatewayListen    string          // host:port of this node's NATS gateway listener; required with Region
	GatewayAdvertise string          // host:port the other regions should dial for this node's gateway (gossiped); "" = what the server derives from GatewayListen
	Gateways         []GatewayRemote // the other regions' gateways; at least one with Region
	HomeRegion       string          // the region that holds every stream; "" = the first of Region and the Gateways' names, sorted
}

// RouteTLS names the PEM files of route TLS; all three or none.
type RouteTLS struct {
	CertFile, KeyFile, CAFile string
}

// Enabled reports whether route TLS is configured.
func (r RouteTLS) Enabled() bool { return r.CertFile != "" || r.KeyFile != "" || r.CAFile != "" }

// Enabled reports whether the node runs clustered.
func (c ClusterConfig) Enabled() bool { return c.Listen != "" }

// nodes is the number of distinct route addresses.
func (c ClusterConfig) nodes() int {
	seen := make(map[string]struct{}, len(c.Routes))
	for _, r := range c.Routes {
		seen[r] = struct{}{}
	}
	return len(seen)
}

// clusterHostPort splits a host:port of the cluster config; the port must
// be given (1 to 65535): other nodes have to know it.
func clusterHostPort(field, addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: %v", ErrClusterConfig, field, addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%w: %s %q: port must be 1 to 65535", ErrClusterConfig, field, addr)
	}
	return host, port, nil
}

// checkCluster validates cfg.Cluster. In cluster mode it also proves the
// route port free, so a taken port fails at once with a clear error.
func checkCluster(cfg Config) error {
	c := cfg.Cluster
	if !c.Enabled() {
		if err := checkRegion(c); err != nil {
			return err
		}
		if len(c.Routes) > 0 || c.Advertise != "" {
			return fmt.Errorf("%w: Routes or Advertise set without Listen (set Listen to cluster, or clear them to run standalone)", ErrClusterConfig)
		}
		return nil
	}
	host, port, err := clusterHostPort("Listen", c.Listen)
	if err != nil {
		return err
	}
	if c.Advertise != "" {
		if _, _, err := clusterHostPort("Advertise", c.Advertise); err != nil {
			return err
		}
	}
	for _, r := range c.Routes {
		if _, _, err := clusterHostPort("Routes", r); err != nil {
			return err
		}
	}
	for i, p := range c.Passwords {
		if p == "" {
			return fmt.Errorf("%w: Passwords[%d] is empty", ErrClusterConfig, i)
		}
	}
	if c.TLS.Enabled() {
		if _, err := routeTLSConfig(c.TLS); err != nil {
			return err
		}
	}
	if err := checkRegion(c); err != nil {
		return err
	}
	if n := c.nodes(); n < MinClusterNodes && !c.regional() {
		return fmt.Errorf("%w: Routes lists %d node(s): JetStream clustering needs at least %d nodes, "+
			"each listing every node's route address including its own; run a single node standalone (no Cluster.Listen)",
			ErrClusterConfig, n, MinClusterNodes)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("bus: cluster listen %s: %w", c.Listen, err)
	}
	return ln.Close()
}

// applyCluster adds the cluster block to opts (built by serverOptions, with
// the client port applied). cfg must have passed checkCluster.
func applyCluster(opts *server.Options, cfg Config) {
	c := cfg.Cluster
	host, port, _ := clusterHostPort("Listen", c.Listen)
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port, Advertise: c.Advertise}
	urls := make([]string, len(c.Routes))
	for i, r := range c.Routes {
		urls[i] = "nats-route://" + r
	}
	opts.Routes = server.RoutesFromStr(strings.Join(urls, ","))
	applyRouteAuth(opts, cfg, cfg.routeAuth)
	if c.TLS.Enabled() {
		opts.Cluster.TLSConfig, _ = routeTLSConfig(c.TLS) // checkCluster built it once already
		opts.Cluster.TLSTimeout = routeTLSTimeout.Seconds()
	}
	if c.regional() {
		applyGateway(opts, c)
	}
	opts.LameDuckDuration, opts.LameDuckGracePeriod = lameDuckDuration, lameDuckGrace // drain.go
	if cfg.ClientListen == "" {
		// A client listener is required (see the top of this file); only
		// the node's own user may use it.
		opts.DontListen = false
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
		applyAuth(opts, cfg) // no client port: clientAuth has no app users
	}
}

// replicas is the replica count of every stream: min(3, nodes) clustered,
// Config.Replicas in external mode, 1 standalone.
func (b *Bus) replicas() int {
	if b.cfg.Mode == ModeExternal {
		return b.cfg.Replicas
	}
	if !b.cfg.Cluster.Enabled() {
		return 1
	}
	return min(maxReplicas, b.cfg.Cluster.nodes())
}

// replicated reports whether streams are Raft groups whose leader can
// change: in cluster mode, and in external mode with more than one replica.
// Publishes are then sent with a Nats-Msg-Id and resent through a leader
// change (see the top of this file), and stream creation is retried until
// Start's deadline.
func (b *Bus) replicated() bool { return b.cfg.Cluster.Enabled() || b.replicas() > 1 }

// dedupeWindow is the main stream's Duplicates in cluster mode: how long
// the stream remembers each Nats-Msg-Id. It must cover a publication's
// first attempt to its last resend. The cost is memory on every replica:
// one entry (the 16-byte id plus about 100 bytes of map and index
// overhead) per message stored in the window, e.g. about 1.4 GB at 100k
// events/s for 2 minutes. The server caps it at MaxAge.
func (b *Bus) dedupeWindow() time.Duration {
	d := dedupeWindowDefault
	if b.cfg.MaxAge > 0 && b.cfg.MaxAge < d {
		d = b.cfg.MaxAge
	}
	for _, id := range b.cfg.Apps { // a stream's dedupe window may not exceed its age
		if w := b.cfg.window(id); w.MaxAge > 0 && w.MaxAge < d {
			d = w.MaxAge
		}
	}
	return d
}

// retryHorizon is how long after its first attempt a publication may still
// be resent: well inside the dedupe window, so a resend is always deduped.
func (b *Bus) retryHorizon() time.Duration { return b.dedupeWindow() / 2 }

// setMsgID gives m a random 96-bit Nats-Msg-Id (16 base64 characters), as
// jetstream.WithMsgID would. Ids from math/rand/v2 (seeded by the runtime
// from the OS) collide with odds of about n²/2⁹⁷ among n ids in a window.
func setMsgID(m *nats.Msg) {
	var raw [12]byte
	a, c := rand.Uint64(), rand.Uint32()
	for i := range 8 {
		raw[i] = byte(a >> (8 * i))
	}
	for i := range 4 {
		raw[8+i] = byte(c >> (8 * i))
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header[jetstream.MsgIDHeader] = []string{base64.RawURLEncoding.EncodeToString(raw[:])}
}

// publishRetryable reports whether a publish attempt may be resent: it got
// no answer, nobody answered, the stream was temporarily unavailable (503),
// or the same id is still being stored (409, "duplicate message id is in
// process"). The caller's own ctx ending is checked separately.
func publishRetryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeMsgIDInProcess
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout)
}

// errCodeMsgIDInProcess is JetStream's JSStreamDuplicateMessageConflict:
// a publication with this Nats-Msg-Id is being stored right now.
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// publishStored sends m to its stream and waits for the acknowledgement.
// Standalone it is one js.PublishMsg. Clustered it gives m a Nats-Msg-Id and
// makes attempts of at most publishAttemptWait until one is answered, ctx
// ends (15 s without a deadline) or the retry horizon passes. opts apply to
// every attempt; an expected-last-sequence check stays safe to resend (the
// stream's dedupe answers a resend of a stored attempt with its ack).
func (b *Bus) publishStored(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if !b.replicated() {
		return b.js.PublishMsg(ctx, m, opts...)
	}
	ctx, cancel := withDefaultDeadline(ctx, clusterPublishWait)
	defer cancel()
	setMsgID(m)
	horizon := time.Now().Add(b.retryHorizon())
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, publishAttemptWait)
		ack, err := b.js.PublishMsg(actx, m, opts...)
		acancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil || !publishRetryable(err) || time.Now().After(horizon) || b.closed.Load() {
			return nil, err
		}
		if !b.homeReachable() { // the gateway to home went down meanwhile (region.go)
			return nil, fmt.Errorf("%w (last attempt: %w)", b.homeUnreachable(), err)
		}
		b.pubRetries.Add(1)
		b.log.Debug("bus: publish: retrying", "subject", m.Subject, "attempt", attempt, "err", err)
		if !pause(ctx, publishRetryPause) {
			return nil, err
		}
	}
}

// collectAcks waits, in order, for the futures of pending and fills serials.
// It returns the indexes left unacknowledged and why: the first
// non-retryable error (at once), a retryable one, or a stall of
// publishAttemptWait without any ack, after which what has arrived is taken
// without waiting.
func (b *Bus) collectAcks(ctx context.Context, futs []jetstream.PubAckFuture, pending []int, serials []uint64) (left []int, err error) {
	stall := time.NewTimer(publishAttemptWait)
	defer stall.Stop()
	stalled := false
	for k, i := range pending {
		f := futs[i]
		if stalled {
			select {
			case ack := <-f.Ok():
				serials[i] = ack.Sequence
			case e := <-f.Err():
				if !publishRetryable(e) {
					return pending[k:], e
				}
				left = append(left, i)
			default:
				left = append(left, i)
			}
			continue
		}
		select {
		case ack := <-f.Ok():
			serials[i] = ack.Sequence
			stall.Reset(publishAttemptWait)
		case e := <-f.Err():
			if !publishRetryable(e) {
				return pending[k:], e
			}
			err = e
			left = append(left, i)
		case <-stall.C:
			stalled = true
			err = context.DeadlineExceeded
			left = append(left, i)
		case <-ctx.Done():
			return pending[k:], ctx.Err()
		}
	}
	return left, err
}

// waitJetStream polls AccountInfo with short attempts until JetStream
// answers it (in cluster mode: a meta leader is elected) or ctx ends.
func (b *Bus) waitJetStream(ctx context.Context) error {
	began := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, readyAttemptWait)
		_, err := b.js.AccountInfo(actx)
		cancel()
		if err == nil {
			b.log.Debug("bus: jetstream ready", "after", time.Since(began), "peers", b.Peers())
			return nil
		}
		if ctx.Err() != nil || !pause(ctx, readyRetryPause) {
			return fmt.Errorf("bus: cluster: JetStream not ready after %s (%d of %d nodes reachable; "+
				"a meta leader needs a majority of the nodes in Cluster.Routes up): %w",
				time.Since(began).Round(time.Millisecond), b.Peers(), b.cfg.Cluster.nodes(), err)
		}
	}
}

// withDefaultDeadline bounds ctx by d unless it has a deadline already.
func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// pause waits d; false if ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Peers is the number of NATS servers this node is routed to, itself
// included: 1 standalone (or while alone), up to the number of nodes in
// Cluster.Routes. JetStream needs a majority of those to elect leaders.
// It is cheap (one look at the server's routes).
func (b *Bus) Peers() int {
	if !b.cfg.Cluster.Enabled() {
		return 1
	}
	rz, err := b.srv.Routez(nil)
	if err != nil {
		return 1
	}
	seen := make(map[string]struct{}, len(rz.Routes))
	for _, r := range rz.Routes {
		seen[r.RemoteID] = struct{}{}
	}
	return 1 + len(seen)
}

// ClusterInfo is a node's view of its cluster, for readiness checks.
type ClusterInfo struct {
	Clustered  bool   // false: standalone (the fields below describe the lone node)
	Name       string // NATS cluster name; "" standalone
	Node       string // this node's server name
	Nodes      int    // nodes configured (distinct Cluster.Routes); 1 standalone
	Peers      int    // nodes routed to, this one included (Peers)
	MetaLeader string // server name of the JetStream meta leader; "" while none is elected (streams cannot be created or changed then)
}

// Ready reports whether JetStream can take writes as far as this node sees:
// a meta leader is elected and a majority of the configured nodes is routed.
func (ci ClusterInfo) Ready() bool {
	return ci.MetaLeader != "" && ci.Peers*2 > ci.Nodes
}

// ClusterInfo returns the node's view of the cluster. It walks the node's
// JetStream state (cost grows with the number of streams: fine for a
// readiness probe, not for a hot path). In external mode the deployment's
// JetStream is not the node's to inspect: the node reports itself alone,
// with no meta leader (so not Ready) while it is disconnected (Connected).
func (b *Bus) ClusterInfo() ClusterInfo {
	ci := ClusterInfo{Node: b.cfg.ServerName, Nodes: 1, Peers: 1, MetaLeader: b.cfg.ServerName}
	if b.srv == nil && !b.Connected() {
		ci.MetaLeader = ""
	}
	if !b.cfg.Cluster.Enabled() {
		return ci
	}
	ci.Clustered, ci.Name, ci.Nodes, ci.Peers, ci.MetaLeader = true, b.cfg.Cluster.Name, b.cfg.Cluster.nodes(), b.Peers(), ""
	if jsz, err := b.jsz(nil); err == nil && jsz.Meta != nil {
		ci.MetaLeader = jsz.Meta.Leader
	}
	return ci
}
