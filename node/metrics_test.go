package node

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"herald/client"
	"herald/internal/testkit"
	"herald/protocol"
)

// scrape GETs /metrics over HTTP and parses it with the Prometheus text
// parser, as a Prometheus server would.
func scrape(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample is the value of the family's series whose labels include want
// (name=value pairs), and whether there is one: a counter's or gauge's
// value, a histogram's sample count.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// metricCase is one family the scrape must hold: its type, and the series
// (labels) whose value must lie in [min, max].
type metricCase struct {
	name     string
	typ      dto.MetricType
	labels   []string
	min, max float64
}

// TestMetricsAfterRealTraffic drives a node through every path its metrics
// count (accepted and refused upgrades, subscriptions of each kind, refused
// channel auth, a refused sign-in, REST publishes and a refused REST
// signature, a resume with a replay, a normal close) and checks each
// family in a real scrape.
func TestMetricsAfterRealTraffic(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	ws := "ws://" + n.Addr().String() + "/app/"

	if _, err := client.Dial(ctx, ws+"no-such-key?protocol=7", client.Options{}); err == nil {
		t.Fatal("unknown key accepted")
	}
	c, err := client.Dial(ctx, ws+"app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sid := c.SocketID()
	if err := c.Subscribe(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "cache-prices"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeAuth(ctx, "private-a", protocol.ChannelAuth("app-key", "app-secret", sid, "private-a", ""), ""); err != nil {
		t.Fatal(err)
	}
	cd := `{"user_id":"u1","user_info":{}}`
	if _, err := c.SubscribeAuth(ctx, "presence-room", protocol.ChannelAuth("app-key", "app-secret", sid, "presence-room", cd), cd); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeAuth(ctx, "private-b", "app-key:0000", ""); err == nil {
		t.Fatal("bad channel auth accepted")
	}
	if err := c.Send("pusher:signin", "", map[string]string{"user_data": `{"id":"u1"}`, "auth": "app-key:0000"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitFor(ctx, "pusher:error", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if st, body, err := rest(n).Trigger(ctx, client.TriggerParams{Name: "e", Data: fmt.Sprint(i), Channels: []string{"orders"}}); err != nil || st != 200 {
			t.Fatalf("trigger: %d %s %v", st, body, err)
		}
		if _, err := c.WaitFor(ctx, "e", "orders"); err != nil {
			t.Fatal(err)
		}
	}
	bad := rest(n)
	bad.Secret = "wrong"
	if st, _, _ := bad.Trigger(ctx, client.TriggerParams{Name: "e", Data: "x", Channels: []string{"orders"}}); st != 401 {
		t.Fatalf("wrong secret: %d", st)
	}

	r, err := client.Dial(ctx, ws+"app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Send("pusher:subscribe", "", map[string]any{"channel": "orders", "auth": "", "herald_resume": 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WaitFor(ctx, "pusher_internal:resume_ok", "orders"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil && !errors.Is(err, client.ErrClosed) {
		t.Fatal(err)
	}

	var fams map[string]*dto.MetricFamily
	testkit.WaitFor(t, 5*time.Second, func() error {
		fams = scrape(t, n)
		if v, _ := sample(fams, "herald_disconnects_total", "reason", "normal"); v < 1 {
			return errors.New("the closed socket is not counted yet")
		}
		return nil
	})

	G, C, H := dto.MetricType_GAUGE, dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM
	cases := []metricCase{
		{"herald_connections", G, nil, 1, 1},
		{"herald_app_connections", G, []string{"app", "app-id"}, 1, 1},
		{"herald_connects_total", C, []string{"reason", "accepted"}, 2, 2},
		{"herald_connects_total", C, []string{"reason", "auth"}, 1, 1},
		{"herald_disconnects_total", C, []string{"reason", "normal"}, 1, 1},
		{"herald_disconnects_total", C, []string{"reason", "auth"}, 1, 1},
		{"herald_disconnects_total", C, []string{"reason", "slow_consumer"}, 0, 0},
		{"herald_subscriptions", G, []string{"kind", "public"}, 1, 1},
		{"herald_subscriptions", G, []string{"kind", "cache"}, 1, 1},
		{"herald_subscriptions", G, []string{"kind", "private"}, 1, 1},
		{"herald_subscriptions", G, []string{"kind", "presence"}, 1, 1},
		{"herald_subscribes_total", C, []string{"kind", "public"}, 2, 2},
		{"herald_messages_in_total", C, []string{"app", "app-id"}, 7, 7}, // c: 4 subscribes, a refused one, a sign-in; r: 1 subscribe
		{"herald_deliveries_total", C, []string{"app", "app-id"}, 2, 2},
		{"herald_auth_failures_total", C, []string{"kind", "channel"}, 1, 1},
		{"herald_auth_failures_total", C, []string{"kind", "user"}, 1, 1},
		{"herald_auth_failures_total", C, []string{"kind", "rest"}, 1, 1},
		{"herald_resumes_total", C, []string{"outcome", "ok"}, 1, 1},
		{"herald_resumes_total", C, []string{"outcome", "window_passed"}, 0, 0},
		{"herald_replayed_events_total", C, nil, 2, 2},
		{"herald_replay_rereads_total", C, nil, 0, 0},
		{"herald_presence_members", G, []string{"app", "app-id"}, 1, 1},
		{"herald_delivery_latency_seconds", H, nil, 1, 2},
		{"herald_rest_requests_total", C, []string{"endpoint", "events", "status", "200"}, 2, 2},
		{"herald_rest_requests_total", C, []string{"endpoint", "events", "status", "401"}, 1, 1},
		{"herald_rest_request_duration_seconds", H, []string{"endpoint", "events"}, 3, 3},
		{"herald_slow_consumer_closes_total", C, nil, 0, 0},
		{"herald_socket_writes_total", C, nil, 1, 1e9},
		{"herald_bus_live_subscriptions", G, nil, 4, 4},
		{"herald_bus_delivered_total", C, nil, 2, 2},
		{"herald_nats_connected", G, nil, 1, 1},
		{"herald_nats_routes", G, nil, 0, 0},
		{"herald_jetstream_meta_leader_known", G, nil, 1, 1},
		{"herald_jetstream_peers", G, nil, 1, 1},
		{"herald_jetstream_stream_leader_known", G, []string{"stream", "HERALD_app-id"}, 1, 1},
		{"herald_jetstream_stream_replicas", G, []string{"stream", "HERALD_app-id"}, 1, 1},
		{"herald_jetstream_stream_current_replicas", G, []string{"stream", "HERALD_app-id"}, 1, 1},
		{"herald_jetstream_stream_messages", G, []string{"stream", "HERALD_app-id"}, 2, 2},
		{"herald_jetstream_consumer_pending", G, []string{"stream", "HERALD_app-id"}, 0, 0},
		{"herald_jetstream_consumer_ack_pending", G, []string{"stream", "HERALD_app-id"}, 0, 0},
		{"herald_store_full", G, nil, 0, 0},
		{"herald_store_free_bytes", G, nil, 1, 1e18},
		{"herald_publish_refusals_total", C, []string{"reason", "disk_full"}, 0, 0},
		{"herald_store_recoveries_total", C, nil, 0, 0},
		{"go_goroutines", G, nil, 1, 1e6},
		{"process_open_fds", G, nil, 1, 1e6},
	}
	for _, mc := range cases {
		f := fams[mc.name]
		if f == nil {
			t.Errorf("%s: missing", mc.name)
			continue
		}
		if f.GetType() != mc.typ {
			t.Errorf("%s: type %v, want %v", mc.name, f.GetType(), mc.typ)
		}
		v, ok := sample(fams, mc.name, mc.labels...)
		if !ok || v < mc.min || v > mc.max {
			t.Errorf("%s%v = %v (present %v), want %v..%v", mc.name, mc.labels, v, ok, mc.min, mc.max)
		}
	}
	// No series may carry a channel name.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "orders") || strings.Contains(v, "presence-room") || strings.Contains(v, "private-a") {
					t.Errorf("%s carries a channel name: %s=%q", name, l.GetName(), v)
				}
			}
		}
	}
}

// TestCloseReasonClasses pins the close code classes behind the reason label.
func TestCloseReasonClasses(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	ws := "ws://" + n.Addr().String() + "/app/"
	for _, path := range []string{"app-key?protocol=3", "app-key/x?protocol=7"} { // 4007, 4005
		if _, err := client.Dial(ctx, ws+path, client.Options{}); err == nil {
			t.Fatalf("%s accepted", path)
		}
	}
	c, err := client.Dial(ctx, ws+"app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.CloseNow() // no closing handshake
	testkit.WaitFor(t, 5*time.Second, func() error {
		fams := scrape(t, n)
		for reason, want := range map[string]float64{"protocol_error": 2, "client_gone": 1} {
			if v, _ := sample(fams, "herald_disconnects_total", "reason", reason); v != want {
				return fmt.Errorf("disconnects{reason=%s} = %v, want %v", reason, v, want)
			}
		}
		if v, _ := sample(fams, "herald_connects_total", "reason", "protocol_error"); v != 2 {
			return fmt.Errorf("connects{reason=protocol_error} = %v", v)
		}
		return nil
	})
}
