package probe

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"herald/api"
	"herald/configs"
	"herald/internal/testkit"
	"herald/node"
)

func TestMain(m *testing.M) { testkit.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startNode runs a real node (embedded NATS and JetStream, the epoll
// gateway, the REST API) on loopback with the dev app.
func startNode(t *testing.T) *node.Node {
	t.Helper()
	n, err := node.Start(configs.Loopback(t.TempDir()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopNode(t, n)
		}
	})
	return n
}

func stopNode(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func devApp(addr string) Config {
	return Config{URL: "ws://" + addr, AppID: "app-id", Key: "app-key", Secret: "app-secret", Timeout: 5 * time.Second}
}

func stepNames(r Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

func step(t *testing.T, r Result, name string) Step {
	t.Helper()
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %s in %+v", name, r.Steps)
	return Step{}
}

func TestProbePassesAgainstARunningNode(t *testing.T) {
	n := startNode(t)
	first := Run(context.Background(), devApp(n.Addr().String()))
	if !first.OK || first.Error != "" {
		t.Fatalf("probe failed: %s (%+v)", first.Error, first.Steps)
	}
	if got := strings.Join(stepNames(first), ","); got != strings.Join(Steps, ",") {
		t.Fatalf("steps %s", got)
	}
	for _, s := range first.Steps {
		if !s.OK || s.MS <= 0 || s.Error != "" {
			t.Fatalf("step %+v", s)
		}
	}
	if first.Skew == nil || first.Skew.Source != "server_time" || first.Skew.LimitMS != 600_000 {
		t.Fatalf("skew %+v", first.Skew)
	}
	// Same clock on both sides: the server read it during the round trip,
	// so the figure is within its stated resolution of zero.
	if s := first.Skew; s.MS < -s.ResolutionMS-1 || s.MS > s.ResolutionMS+1 {
		t.Fatalf("skew against the local node %+v", s)
	}
	second := Run(context.Background(), devApp(n.Addr().String()))
	if !second.OK {
		t.Fatalf("second run: %s", second.Error)
	}
	if second.Public == first.Public || second.Private == first.Private || !strings.HasPrefix(second.Private, "private-") {
		t.Fatalf("channels not unique per run: %s %s / %s %s", first.Public, first.Private, second.Public, second.Private)
	}
}

func TestProbeFailsAgainstAStoppedNode(t *testing.T) {
	n := startNode(t)
	addr := n.Addr().String()
	stopNode(t, n)
	res := Run(context.Background(), devApp(addr))
	if res.OK || !strings.HasPrefix(res.Error, "connect: ") || !strings.Contains(res.Error, "refused") {
		t.Fatalf("want a connect failure, got %q", res.Error)
	}
	if strings.Contains(res.Error, "\n") {
		t.Fatalf("reason is not one line: %q", res.Error)
	}
	for _, s := range res.Steps[1:] {
		if s.OK || s.Error != "skipped: connect failed" {
			t.Fatalf("step after a failed connect: %+v", s)
		}
	}
}

func TestProbeFailsWithAWrongSecret(t *testing.T) {
	n := startNode(t)
	cfg := devApp(n.Addr().String())
	cfg.Secret = "not-the-secret"
	res := Run(context.Background(), cfg)
	if res.OK || !strings.HasPrefix(res.Error, "subscribe_private: refused") {
		t.Fatalf("want the private subscribe refused first, got %q", res.Error)
	}
	if s := step(t, res, StepSubscribePublic); !s.OK {
		t.Fatalf("public subscribe needs no secret: %+v", s)
	}
	if s := step(t, res, StepPublish); s.OK || !strings.Contains(s.Error, "HTTP 401") {
		t.Fatalf("publish with a wrong secret: %+v", s)
	}
	if s := step(t, res, StepReceivePublic); s.OK || s.Error != "skipped: publish failed" {
		t.Fatalf("receive after a failed publish: %+v", s)
	}
}

// TestProbeFailsWhenRESTWorksButDeliveryDoesNot builds the failure from
// real parts: two healthy, independent nodes that share the app's
// credentials but no bus, with the probe's WebSocket on one and its REST
// API on the other. That is the deployment where a load balancer sends
// REST to one cluster and sockets to another (or the nodes lost their NATS
// routes): every REST call is accepted and stored, and no socket ever gets
// the event. The probe must pass connect, both subscribes and the publish,
// and fail on delivery.
func TestProbeFailsWhenRESTWorksButDeliveryDoesNot(t *testing.T) {
	sockets := startNode(t)
	api := startNode(t)
	cfg := devApp(sockets.Addr().String())
	cfg.API = "http://" + api.Addr().String()
	cfg.Timeout = 2 * time.Second
	res := Run(context.Background(), cfg)
	if res.OK || !strings.HasPrefix(res.Error, "receive_public: ") || !strings.Contains(res.Error, "did not arrive") {
		t.Fatalf("want a delivery failure, got %q (%+v)", res.Error, res.Steps)
	}
	for _, name := range []string{StepConnect, StepSubscribePublic, StepSubscribePrivate, StepPublish} {
		if s := step(t, res, name); !s.OK {
			t.Fatalf("%s should pass: %+v", name, s)
		}
	}
	if s := step(t, res, StepReceivePrivate); s.OK || !strings.Contains(s.Error, "did not arrive") {
		t.Fatalf("private receive: %+v", s)
	}
	// The same pair probed consistently passes: the failure is the split.
	cfg.API = ""
	if res := Run(context.Background(), cfg); !res.OK {
		t.Fatalf("probe of the socket node alone: %s", res.Error)
	}
}

func TestProbeConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{AppID: "a", Key: "k", Secret: "s"}, "--url is required"},
		{Config{URL: "ws://h:1", Key: "k", Secret: "s"}, "--app-id, --key and --secret"},
		{Config{URL: "ftp://h:1", AppID: "a", Key: "k", Secret: "s"}, "scheme must be ws or wss"},
		{Config{URL: "ws://h:1", API: "h:2", AppID: "a", Key: "k", Secret: "s"}, "--api"},
	} {
		res := Run(context.Background(), c.cfg)
		if res.OK || !strings.Contains(res.Error, c.want) {
			t.Errorf("%+v: %q, want %q", c.cfg, res.Error, c.want)
		}
	}
	cfg := Config{URL: "wss://push.example.com", AppID: "a", Key: "k", Secret: "s"}
	if u, _ := cfg.socketURL(); u != "wss://push.example.com/app/k?protocol=7&client=herald-probe" {
		t.Errorf("socket url %s", u)
	}
	if u, _ := cfg.apiBase(); u != "https://push.example.com" {
		t.Errorf("api %s", u)
	}
}

func TestMetricsAndMonitor(t *testing.T) {
	n := startNode(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	var runs []Result
	Monitor(ctx, devApp(n.Addr().String()), 50*time.Millisecond, func(r Result) {
		m.Observe(r)
		if runs = append(runs, r); len(runs) == 2 {
			cancel()
		}
	})
	cancel()
	if len(runs) != 2 || !runs[0].OK || !runs[1].OK {
		t.Fatalf("monitor runs: %+v", runs)
	}
	m.Observe(Run(context.Background(), Config{URL: "ws://127.0.0.1:1", AppID: "a", Key: "k", Secret: "s", Timeout: time.Second}))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	value := func(name, label, lv string) float64 {
		f := got[name]
		if f == nil {
			t.Fatalf("no %s", name)
		}
		for _, mt := range f.GetMetric() {
			match := label == ""
			for _, l := range mt.GetLabel() {
				if l.GetName() == label && l.GetValue() == lv {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case mt.Gauge != nil:
				return mt.Gauge.GetValue()
			case mt.Counter != nil:
				return mt.Counter.GetValue()
			case mt.Histogram != nil:
				return float64(mt.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s{%s=%q}", name, label, lv)
		return 0
	}
	if v := value("herald_probe_success", "", ""); v != 0 {
		t.Errorf("success after a failed run = %v", v)
	}
	if v := value("herald_probe_runs_total", "result", "ok"); v != 2 {
		t.Errorf("ok runs %v", v)
	}
	if v := value("herald_probe_runs_total", "result", "failed"); v != 1 {
		t.Errorf("failed runs %v", v)
	}
	if v := value("herald_probe_step_failures_total", "step", "connect"); v != 1 {
		t.Errorf("connect failures %v", v)
	}
	if v := value("herald_probe_step_failures_total", "step", "publish"); v != 0 {
		t.Errorf("skipped steps counted as failures: %v", v)
	}
	if v := value("herald_probe_step_duration_seconds", "step", "receive_private"); v != 2 {
		t.Errorf("receive_private samples %v", v)
	}
	if v := value("herald_probe_last_run_timestamp_seconds", "", ""); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last run %v", v)
	}
}

// TestSkewFromTheDateHeader is the fallback for a REST answer without
// Herald-Time (a proxy that answers itself, another server): a server whose
// clock is three minutes behind shows as -180 s within the stated
// resolution.
func TestSkewFromTheDateHeader(t *testing.T) {
	if headerTime != api.HeaderTime {
		t.Fatalf("probe reads %q, the API sends %q", headerTime, api.HeaderTime)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(-3*time.Minute).UTC().Format(http.TimeFormat))
	}))
	defer srv.Close()
	dt := &dateTransport{next: http.DefaultTransport}
	resp, err := (&http.Client{Transport: dt}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := dt.skew()
	if s == nil || s.Source != "http_date" || s.ResolutionMS < 1000 {
		t.Fatalf("skew %+v", s)
	}
	if d := s.MS + 180_000; d < -s.ResolutionMS || d > s.ResolutionMS {
		t.Fatalf("skew %d ms, want -180000 ± %d", s.MS, s.ResolutionMS)
	}
}
