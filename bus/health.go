package bus

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Observer takes one sample (a prometheus.Histogram is one); the bus does
// not import a metrics library.
type Observer interface{ Observe(float64) }

// storedAt is the stored time (the republish header Nats-Time-Stamp, also
// read by cache.go and gapfill.go), in Unix nanoseconds, of the message that
// starts a delivery batch when DeliveryLatency samples it, else 0. One
// parse and, after the Flush, one clock read per batch: never per message
// or per delivery. The batch's first message waited longest, so the sample
// is the batch's worst case. In a cluster the time is the stream leader's
// clock, so the skew between nodes adds to it.
func (b *Bus) storedAt(msg *nats.Msg) int64 {
	if b.cfg.DeliveryLatency == nil || msg.Header == nil {
		return 0
	}
	v := msg.Header[headerTimeStamp]
	if len(v) == 0 {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, v[0])
	if err != nil {
		return 0
	}
	return t.UnixNano()
}

// Health is the node's view of NATS and JetStream for metrics and status.
type Health struct {
	Connected bool // the node's NATS connection is up
	Embedded  bool // the node runs the NATS server (false in external mode: the fields below are empty)
	Routes    int  // NATS route connections of the embedded server
	Streams   []StreamStats
}

// StreamStats is one stream as this node's server sees it (the streams it
// holds a replica of).
type StreamStats struct {
	Name            string
	Leader          string // the stream leader's server name; "" while none is elected
	Replicas        int    // configured replicas
	CurrentReplicas int    // replicas caught up, the leader included
	Messages        uint64
	ConsumerPending uint64 // messages not yet delivered to the stream's consumers, summed
	AckPending      uint64 // messages delivered and not yet acknowledged, summed
}

// Health walks the embedded server's JetStream state (cost grows with the
// number of streams: one call per scrape, not a hot path).
func (b *Bus) Health() Health {
	h := Health{Connected: b.nc != nil && b.nc.IsConnected(), Embedded: b.srv != nil}
	if b.srv == nil {
		return h
	}
	h.Routes = b.srv.NumRoutes()
	jsz, err := b.jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true, Config: true})
	if err != nil || jsz == nil {
		return h
	}
	for _, acc := range jsz.AccountDetails {
		for _, sd := range acc.Streams {
			st := StreamStats{Name: sd.Name, Messages: sd.State.Msgs, Replicas: 1, CurrentReplicas: 1}
			if sd.Config != nil && sd.Config.Replicas > 0 {
				st.Replicas = sd.Config.Replicas
			}
			if ci := sd.Cluster; ci != nil {
				st.Leader, st.CurrentReplicas = ci.Leader, 0
				if ci.Leader != "" {
					st.CurrentReplicas = 1
				}
				for _, p := range ci.Replicas {
					if p != nil && p.Current {
						st.CurrentReplicas++
					}
				}
			} else {
				st.Leader = b.cfg.ServerName // standalone: this server
			}
			for _, c := range sd.Consumer {
				if c != nil {
					st.ConsumerPending += c.NumPending
					st.AckPending += uint64(c.NumAckPending)
				}
			}
			h.Streams = append(h.Streams, st)
		}
	}
	return h
}
