package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// A full disk (docs/operations.md "Disk full"): the bus watches its store
// (bus/disk.go) and refuses publishes while it is full; the node turns
// /readyz 503 with the reason meanwhile, and exposes the state as metrics.
// The REST and NATS APIs answer such a refusal with 507 (api/publish.go).

// storeNotReady is api.Config.NotReady: why the node cannot take events now.
func (n *Node) storeNotReady() string {
	if st := n.bus.StoreState(); st.Full {
		return "store full (" + st.Reason + ")"
	}
	return ""
}

// registerStoreMetrics exposes the disk watcher's state on reg.
func (n *Node) registerStoreMetrics(reg *prometheus.Registry) {
	b := n.bus
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_store_full",
			Help: "1 while the node's store is full (disk under the reserve, a failed store write, JetStream's storage limit): publishes are refused with 507."},
			func() float64 {
				if b.StoreState().Full {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_store_free_bytes",
			Help: "Free bytes on the filesystem of the node's store (data_dir), as last checked; 0 in external mode."},
			func() float64 { return float64(b.StoreState().FreeBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_publish_refusals_total",
			Help:        "Publishes refused without being stored, by reason (disk_full: the store was full).",
			ConstLabels: prometheus.Labels{"reason": "disk_full"}},
			func() float64 { return float64(b.StoreState().Refusals) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_store_recoveries_total",
			Help: "JetStream restarts that recovered the store once the disk had room again."},
			func() float64 { return float64(b.StoreState().Recoveries) }),
	)
}
