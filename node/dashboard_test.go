package node

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"herald/client"
	"herald/probe"
)

// siblingMetrics are queried by the dashboard but defined by parts this
// node test does not run: the webhook sender and the admission limiter.
var siblingMetrics = map[string]bool{
	"herald_webhook_backlog":                    true,
	"herald_webhook_events_dead_lettered_total": true,
	"herald_admission_closes_total":             true,
}

var metricName = regexp.MustCompile(`\b(?:herald|go|process)_[a-z0-9_]+\b`)

// TestGrafanaDashboardQueriesExistingMetrics parses
// configs/grafana/herald-dashboard.json and checks that every metric its
// queries and variables name is in a real scrape of a node that saw some
// traffic (or in the probe's own metrics), except the sibling-defined ones
// listed above.
func TestGrafanaDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("../configs/grafana/herald-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels")
	}
	var exprs []string
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}

	n := startNode(t, nil)
	ctx := ctxT(t)
	c, err := client.Dial(ctx, "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if st, _, err := rest(n).Trigger(ctx, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"orders"}}); err != nil || st != 200 {
		t.Fatalf("trigger: %d %v", st, err)
	}
	if _, err := c.WaitFor(ctx, "e", "orders"); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for name := range scrape(t, n) {
		known[name] = true
	}
	reg := prometheus.NewRegistry()
	probe.NewMetrics(reg).Observe(probe.Result{OK: true, Steps: []probe.Step{{Name: probe.StepConnect, OK: true, MS: 1}}})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		known[f.GetName()] = true
	}

	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			used[m] = true
		}
	}
	var names []string
	for m := range used {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suf); ok && known[b] {
				base = b
			}
		}
		if !known[base] && !siblingMetrics[base] {
			t.Errorf("the dashboard queries %s, which no scrape has", m)
		}
	}
	for m := range siblingMetrics {
		if !used[m] {
			t.Errorf("sibling metric %s is listed but not queried", m)
		}
	}
}

type dashPanel struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}
