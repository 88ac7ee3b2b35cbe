package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Every metric of a node is read from its parts' atomics when scraped, so
// the hot paths only bump counters; the histograms are observed once per
// delivery batch (bus) and once per REST request (api). Labels are bounded:
// app ids, the close reason and channel kind lists of gateway/metrics.go,
// HTTP statuses, endpoints and stream names (two per app); never a channel
// name. docs/metrics.md says what each one answers.

// deliveryBuckets are the publish-to-socket-write latency buckets in
// seconds, fine around Pusher's 100 ms delivery guidance.
var deliveryBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newDeliveryLatency is the histogram the bus samples (bus.Config.DeliveryLatency).
func newDeliveryLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "herald_delivery_latency_seconds",
		Help:    "From an event being stored in its stream to its delivery batch written to this node's sockets; one sample per batch (its oldest event).",
		Buckets: deliveryBuckets,
	})
}

// registerMetrics exposes the node's parts' figures on reg.
func (n *Node) registerMetrics(reg *prometheus.Registry) {
	gw, b := n.gw, n.bus
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("herald_connections", "Open WebSocket connections, refused ones still closing included.", func() float64 { return float64(gw.Stats().Connections) })
	counter("herald_socket_writes_total", "writev system calls to sockets.", func() float64 { return float64(gw.Stats().Writes) })
	counter("herald_slow_consumer_closes_total", "Sockets closed because their write queue overflowed.", func() float64 { return float64(gw.Stats().SlowConsumers) })
	counter("herald_accept_pauses_total", "Times accepting on the client port paused because the process was out of descriptors or the kernel out of socket memory; waiting connections stay in the backlog.", func() float64 {
		v := n.fhAccept.exhausts.Load()
		if n.pollAccept != nil {
			v += n.pollAccept.AcceptPauses()
		}
		return float64(v)
	})
	counter("herald_admission_closes_total", "Sockets closed with 4100 at the upgrade: over gateway.accept_rate.", func() float64 { return float64(gw.Stats().AdmissionCloses) })
	gauge("herald_bus_live_subscriptions", "Channels this node receives live messages for.", func() float64 { return float64(b.Stats().LiveSubscriptions) })
	counter("herald_bus_delivered_total", "Live messages the bus handed to the gateway.", func() float64 { return float64(b.Stats().Delivered) })
	counter("herald_bus_slow_consumer_drops_total", "Live messages dropped because a delivery shard was full.", func() float64 { return float64(b.Stats().SlowConsumerDrops) })
	gauge("herald_bus_pending", "Live messages waiting in the delivery shards.", func() float64 { return float64(b.Stats().Pending) })
	counter("herald_bus_publish_retries_total", "Publications resent after an unanswered attempt (stream leader changes).", func() float64 { return float64(b.Stats().PublishRetries) })
	counter("herald_bus_gap_repairs_total", "Live gaps found and repaired from the stream.", func() float64 { return float64(b.Stats().GapRepairs) })
	if cl := n.cl; cl != nil { // a closed cluster (closed.go)
		counter("herald_cluster_gossip_refused_total", "Gossip messages and joins refused for a key mismatch (cluster.secret_key).", func() float64 { return float64(cl.Stats().KeyRefused) })
		counter("herald_cluster_routes_refused_total", "NATS routes refused for their credentials (cluster.route_auth).", func() float64 { return float64(b.RoutesRefused()) })
	}
	reg.MustRegister(n.latency, &collector{n: n})
	n.registerStoreMetrics(reg) // node/disk.go
}

// collector emits the labelled families from one snapshot per scrape.
type collector struct{ n *Node }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dAppConnections = desc("herald_app_connections", "Open connections per app on this node (counted against max_connections).", "app")
	dConnects       = desc("herald_connects_total", "WebSocket upgrades: reason accepted, or the class of the close code they were refused with.", "reason")
	dDisconnects    = desc("herald_disconnects_total", "Sockets released, by the class of the close code (client_gone: no closing handshake).", "reason")
	dSubscriptions  = desc("herald_subscriptions", "Open subscriptions by channel kind (cache: any cache channel).", "kind")
	dSubscribes     = desc("herald_subscribes_total", "Subscriptions made, by channel kind.", "kind")
	dMessagesIn     = desc("herald_messages_in_total", "Pusher messages received from sockets, per app.", "app")
	dDeliveries     = desc("herald_deliveries_total", "Events queued to local sockets, per app.", "app")
	dAuthFailures   = desc("herald_auth_failures_total", "Refused signatures: channel (private, presence, encrypted subscriptions), user (pusher:signin), rest (request signatures).", "kind")
	dResumes        = desc("herald_resumes_total", "Resume requests by outcome: ok, window_passed, disabled, unavailable.", "outcome")
	dReplayed       = desc("herald_replayed_events_total", "Events sent by resume replays.")
	dRereads        = desc("herald_replay_rereads_total", "Resume replays that read the stream again: a read fell short of what the node had delivered (a lagging replica answered), or the first live event after a replay did not follow on.")
	dMembers        = desc("herald_presence_members", "Distinct presence channel members cluster-wide, as this node's registry sees them, per app.", "app")
	dNATSConnected  = desc("herald_nats_connected", "1 while the node's NATS connection is up.")
	dNATSRoutes     = desc("herald_nats_routes", "NATS route connections of the embedded server.")
	dMetaLeader     = desc("herald_jetstream_meta_leader_known", "1 while a JetStream meta leader is elected (streams can be created and changed).")
	dPeers          = desc("herald_jetstream_peers", "NATS servers this node is routed to, itself included; JetStream needs a majority of the configured nodes.")
	dStreamLeader   = desc("herald_jetstream_stream_leader_known", "1 while the stream has a leader (it takes writes).", "stream")
	dStreamReplicas = desc("herald_jetstream_stream_replicas", "Replicas configured for the stream.", "stream")
	dStreamCurrent  = desc("herald_jetstream_stream_current_replicas", "Replicas caught up with the stream's leader, the leader included.", "stream")
	dStreamMessages = desc("herald_jetstream_stream_messages", "Messages stored in the stream (the replay window).", "stream")
	dConsPending    = desc("herald_jetstream_consumer_pending", "Messages of the stream not yet delivered to its consumers, summed.", "stream")
	dAckPending     = desc("herald_jetstream_consumer_ack_pending", "Messages delivered to the stream's consumers and not yet acknowledged, summed.", "stream")
	dGateway        = desc("herald_region_gateway_connected", "With cluster.region: 1 while this node's gateway to the region is connected (docs/regions.md).", "region")
	dLimits         = desc("herald_limit_refusals_total", "Requests, messages and sockets refused by a limit (docs/limits.md), by limit.", "limit")
)

var allDescs = []*prometheus.Desc{dAppConnections, dConnects, dDisconnects, dSubscriptions, dSubscribes, dMessagesIn,
	dDeliveries, dAuthFailures, dResumes, dReplayed, dRereads, dMembers, dNATSConnected, dNATSRoutes, dMetaLeader, dPeers,
	dStreamLeader, dStreamReplicas, dStreamCurrent, dStreamMessages, dConsPending, dAckPending, dLimits, dGateway}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	m := n.gw.Metrics()
	for id, a := range m.Apps {
		emit(dAppConnections, prometheus.GaugeValue, float64(a.Connections), id)
		emit(dMessagesIn, prometheus.CounterValue, float64(a.MessagesIn), id)
		emit(dDeliveries, prometheus.CounterValue, float64(a.Deliveries), id)
		emit(dMembers, prometheus.GaugeValue, float64(a.PresenceMembers), id)
	}
	for r, v := range m.Connects {
		emit(dConnects, prometheus.CounterValue, float64(v), r)
	}
	for r, v := range m.Disconnects {
		emit(dDisconnects, prometheus.CounterValue, float64(v), r)
	}
	for k, v := range m.Subscriptions {
		emit(dSubscriptions, prometheus.GaugeValue, float64(v), k)
	}
	for k, v := range m.Subscribes {
		emit(dSubscribes, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range m.AuthFailures {
		emit(dAuthFailures, prometheus.CounterValue, float64(v), k)
	}
	var rest uint64
	if n.http != nil {
		rest = n.http.AuthFailures()
	}
	emit(dAuthFailures, prometheus.CounterValue, float64(rest), "rest")
	for o, v := range m.Resumes {
		emit(dResumes, prometheus.CounterValue, float64(v), o)
	}
	emit(dReplayed, prometheus.CounterValue, float64(m.Replayed))
	emit(dRereads, prometheus.CounterValue, float64(m.ReplayRereads))
	for k, v := range n.limitRefusals() {
		emit(dLimits, prometheus.CounterValue, float64(v), k)
	}

	h := n.bus.Health()
	emit(dNATSConnected, prometheus.GaugeValue, b2f(h.Connected))
	emit(dNATSRoutes, prometheus.GaugeValue, float64(h.Routes))
	ci := n.bus.ClusterInfo()
	emit(dMetaLeader, prometheus.GaugeValue, b2f(ci.MetaLeader != ""))
	emit(dPeers, prometheus.GaugeValue, float64(ci.Peers))
	if ri, ok := n.bus.Regions(); ok {
		for _, g := range ri.Gateways {
			emit(dGateway, prometheus.GaugeValue, b2f(g.Connected), g.Name)
		}
	}
	for _, s := range h.Streams {
		emit(dStreamLeader, prometheus.GaugeValue, b2f(s.Leader != ""), s.Name)
		emit(dStreamReplicas, prometheus.GaugeValue, float64(s.Replicas), s.Name)
		emit(dStreamCurrent, prometheus.GaugeValue, float64(s.CurrentReplicas), s.Name)
		emit(dStreamMessages, prometheus.GaugeValue, float64(s.Messages), s.Name)
		emit(dConsPending, prometheus.GaugeValue, float64(s.ConsumerPending), s.Name)
		emit(dAckPending, prometheus.GaugeValue, float64(s.AckPending), s.Name)
	}
}

// limitRefusals merges the edge's and the HTTP server's refusal counters;
// their label values do not overlap.
func (n *Node) limitRefusals() map[string]uint64 {
	out := n.gw.LimitRefusals()
	if n.http != nil {
		for k, v := range n.http.LimitRefusals() {
			out[k] = v
		}
	}
	// The pollers answer late request heads too (gateway/accept.go).
	out["handshake_timeout"] += n.gw.HandshakeTimeouts()
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
