package probe

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the probe's own Prometheus metrics in monitoring mode
// (`herald probe --every`), for alerting on a deployment from outside it:
// herald_probe_success is the one to alert on.
type Metrics struct {
	success  prometheus.Gauge
	runs     *prometheus.CounterVec
	failures *prometheus.CounterVec
	steps    *prometheus.HistogramVec
	stepOK   *prometheus.GaugeVec
	skew     prometheus.Gauge
	last     prometheus.Gauge
}

// StepBuckets are the step latency buckets in seconds: fine below 100 ms,
// where Pusher's guidance puts connect (50 ms) and delivery (100 ms).
var StepBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics registers the probe's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_probe_success",
			Help: "1 when the last probe run passed every step, 0 when one failed.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_probe_runs_total",
			Help: "Probe runs by result (ok, failed).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_probe_step_failures_total",
			Help: "Probe steps that failed (skipped steps are not counted), by step.",
		}, []string{"step"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_probe_step_duration_seconds",
			Help:    "Latency of each passed probe step; receive steps from the publish request's start to the event's arrival.",
			Buckets: StepBuckets,
		}, []string{"step"}),
		stepOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_probe_step_success",
			Help: "1 when the step passed in the last run, 0 when it failed or was skipped.",
		}, []string{"step"}),
		skew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_probe_clock_skew_seconds",
			Help: "Server clock minus local clock from the REST answer's Date header (about ±0.5 s); REST signatures allow ±600 s.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_probe_last_run_timestamp_seconds",
			Help: "Unix time the last probe run started.",
		}),
	}
	reg.MustRegister(m.success, m.runs, m.failures, m.steps, m.stepOK, m.skew, m.last)
	for _, s := range Steps { // every series exists from the start
		m.failures.WithLabelValues(s)
		m.stepOK.WithLabelValues(s)
	}
	m.runs.WithLabelValues("ok")
	m.runs.WithLabelValues("failed")
	return m
}

// Observe records one run.
func (m *Metrics) Observe(r Result) {
	m.last.Set(float64(r.Started.UnixNano()) / 1e9)
	if r.OK {
		m.success.Set(1)
		m.runs.WithLabelValues("ok").Inc()
	} else {
		m.success.Set(0)
		m.runs.WithLabelValues("failed").Inc()
	}
	for _, s := range r.Steps {
		if s.OK {
			m.stepOK.WithLabelValues(s.Name).Set(1)
			m.steps.WithLabelValues(s.Name).Observe(s.MS / 1000)
			continue
		}
		m.stepOK.WithLabelValues(s.Name).Set(0)
		if !isSkip(s) {
			m.failures.WithLabelValues(s.Name).Inc()
		}
	}
	if r.Skew != nil {
		m.skew.Set(float64(r.Skew.MS) / 1000)
	}
}

func isSkip(s Step) bool { return len(s.Error) >= 8 && s.Error[:8] == "skipped:" }

// Monitor runs the probe at once and then every interval until ctx ends,
// handing each result to observe (not the run ctx's end interrupted). A run that takes longer than the interval
// delays the next one rather than overlapping it.
func Monitor(ctx context.Context, cfg Config, every time.Duration, observe func(Result)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res := Run(ctx, cfg)
		if ctx.Err() != nil {
			return // interrupted, not a failure of the deployment
		}
		observe(res)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
