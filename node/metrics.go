package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"herald/bus"
	"herald/gateway"
)

// registerMetrics exposes the gateway's and bus's counters. They are read
// when scraped, so the hot paths only bump atomics.
func registerMetrics(reg *prometheus.Registry, gw *gateway.Gateway, b *bus.Bus) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("herald_connections", "Open WebSocket connections.", func() float64 { return float64(gw.Stats().Connections) })
	counter("herald_connects_total", "WebSocket upgrades accepted or refused.", func() float64 { return float64(gw.Stats().Connects) })
	counter("herald_messages_in_total", "Pusher messages received from clients.", func() float64 { return float64(gw.Stats().MessagesIn) })
	counter("herald_deliveries_total", "Events queued to local sockets.", func() float64 { return float64(gw.Stats().Deliveries) })
	counter("herald_socket_writes_total", "writev system calls to sockets.", func() float64 { return float64(gw.Stats().Writes) })
	counter("herald_slow_consumer_closes_total", "Sockets closed because their write queue overflowed.", func() float64 { return float64(gw.Stats().SlowConsumers) })
	counter("herald_admission_closes_total", "Sockets closed with 4100 at the upgrade: over gateway.accept_rate.", func() float64 { return float64(gw.Stats().AdmissionCloses) })
	gauge("herald_bus_live_subscriptions", "Channels this node receives live messages for.", func() float64 { return float64(b.Stats().LiveSubscriptions) })
	counter("herald_bus_delivered_total", "Live messages the bus handed to the gateway.", func() float64 { return float64(b.Stats().Delivered) })
	counter("herald_bus_slow_consumer_drops_total", "Live messages dropped because a delivery shard was full.", func() float64 { return float64(b.Stats().SlowConsumerDrops) })
}
