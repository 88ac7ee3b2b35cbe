package webhook

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sender's Prometheus metrics. Labels are bounded by the
// config: app, and for drops a fixed reason; never a channel or a URL.
type metrics struct {
	queued  *prometheus.CounterVec
	sent    *prometheus.CounterVec
	retried *prometheus.CounterVec
	dead    *prometheus.CounterVec
	dropped *prometheus.CounterVec
	latency *prometheus.HistogramVec
	backlog prometheus.GaugeFunc
}

func newMetrics(s *Sender) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	bl := &backlogCache{s: s}
	return &metrics{
		queued:  counter("herald_webhook_events_queued_total", "Webhook events stored in the outbox, one per receiving webhook.", "app"),
		sent:    counter("herald_webhook_events_sent_total", "Webhook events a receiver acknowledged with 2xx.", "app"),
		retried: counter("herald_webhook_events_retried_total", "Webhook events scheduled for another attempt after a failed request.", "app"),
		dead:    counter("herald_webhook_events_dead_lettered_total", "Webhook events moved to the dead-letter stream after webhooks.retry_for.", "app"),
		dropped: counter("herald_webhook_events_dropped_total",
			"Webhook events dropped: queue_full (client_event/cache_miss queue), store_failed, target_removed (webhook no longer configured), app_removed, closed.",
			"app", "reason"),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_webhook_delivery_seconds",
			Help:    "Time from an event's storing in the outbox to its acknowledgement by the receiver.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"app"}),
		backlog: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_webhook_backlog",
			Help: "Webhook events waiting in the outbox (cluster-wide), read at most once a second.",
		}, bl.get),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.queued, m.sent, m.retried, m.dead, m.dropped, m.latency, m.backlog} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

// backlogCache reads the outbox's message count at most once a second.
type backlogCache struct {
	s    *Sender
	mu   sync.Mutex
	at   time.Time
	last float64
}

func (b *backlogCache) get() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.at) < time.Second {
		return b.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if info, err := b.s.streams.Outbox.Info(ctx); err == nil {
		b.last = float64(info.State.Msgs)
	}
	b.at = time.Now()
	return b.last
}
