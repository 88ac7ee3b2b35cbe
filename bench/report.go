package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is the JSON document a run prints on stdout.
type Report struct {
	Scenario string   `json:"scenario"`
	Command  string   `json:"command,omitempty"`
	Params   Params   `json:"params"`
	Results  *Results `json:"results"`
	Machine  Machine  `json:"machine"`
	Error    string   `json:"error,omitempty"`

	latency Histogram // fanout latency, storm back times, else time to established
	series  []float64 // deliveries/s (fanout) or connects/s, per bucket
}

// Params echo the run's settings (never the secret).
type Params struct {
	URL           string   `json:"url"`
	URLs          []string `json:"urls"` // every target; conn i went to urls[i % len]
	RESTURL       string   `json:"rest_url,omitempty"`
	AppID         string   `json:"app_id"`
	Key           string   `json:"key"`
	Conns         int      `json:"conns"`
	Channels      int      `json:"channels"`
	Messages      int      `json:"messages,omitempty"`
	Rate          float64  `json:"rate"`
	HoldS         float64  `json:"hold_s,omitempty"`
	Payload       int      `json:"payload_bytes,omitempty"`
	Publishers    int      `json:"publishers,omitempty"`
	Batch         int      `json:"batch,omitempty"`
	Publish       string   `json:"publish,omitempty"`     // fanout: rest, nats-request or nats-publish
	NATSURL       string   `json:"nats_url,omitempty"`    // fanout over NATS
	NATSWindow    int      `json:"nats_window,omitempty"` // nats-publish: events ahead of those seen stored
	DrainS        float64  `json:"drain_s,omitempty"`
	Workers       int      `json:"workers"`
	Pollers       int      `json:"pollers_per_worker"`
	Inflight      int      `json:"inflight"`
	StormInflight int      `json:"storm_inflight_per_poller,omitempty"`
	Retries       int      `json:"retries,omitempty"`
	DialTimeoutS  float64  `json:"dial_timeout_s"`
	TimeoutS      float64  `json:"timeout_s"`
	SourceBase    string   `json:"source_base"`
	ServerPID     int      `json:"server_pid,omitempty"`
	ServerPIDs    []int    `json:"server_pids,omitempty"` // every measured server process, when several
	Joins         int      `json:"joins,omitempty"`
	KillPID       int      `json:"kill_pid,omitempty"`
	ConvergeS     float64  `json:"converge_timeout_s,omitempty"`
	DropEvery     int      `json:"test_drop_every,omitempty"`
}

// Results are the measurements. The connect-phase fields are there for
// every scenario; the embedded scenario parts only for their scenario.
type Results struct {
	DurationS    float64          `json:"duration_s"`
	Attempted    int              `json:"attempted"`
	Established  int64            `json:"established"`
	Failed       int64            `json:"failed"`
	Failures     map[string]int64 `json:"failures"`
	ConnectS     float64          `json:"connect_s"`
	ConnectsPerS float64          `json:"connects_per_s"`
	// ConnectInflight is how many dial attempts were allowed in flight
	// at once over all workers while connecting (0: no limit): connects_per_s
	// means little without it.
	ConnectInflight     int              `json:"connect_inflight"`
	TimeToEstablishedMs Percentiles      `json:"time_to_established_ms"`
	Subscribed          int64            `json:"subscribed"`
	Drops               int64            `json:"drops"`
	DropReasons         map[string]int64 `json:"drop_reasons,omitempty"`
	*IdleResults
	*FanoutResults
	*StormResults
	*PresenceResults
	Failover  *FailoverResults `json:"failover,omitempty"` // named: its lost, duplicates, … would clash with fanout's
	ClientCPU CPUStats         `json:"client_cpu"`
	Server    *ServerStats     `json:"server,omitempty"`
}

// IdleResults: memory of held connections. RSS needs --server-pid; Slab is
// system-wide (both ends of a loopback connection are on this machine).
type IdleResults struct {
	HoldS             float64 `json:"hold_s"`
	RSSBeforeKiB      int64   `json:"rss_before_kib,omitempty"`
	RSSAfterKiB       int64   `json:"rss_after_kib,omitempty"`
	RSSPerConnBytes   int64   `json:"rss_per_conn_bytes,omitempty"`
	SlabBeforeKiB     int64   `json:"slab_before_kib"`
	SlabAfterKiB      int64   `json:"slab_after_kib"`
	SlabDeltaKiB      int64   `json:"slab_delta_kib"`
	Sockets           int64   `json:"sockets"` // sockets the slab delta is divided by
	SlabPerSocket     int64   `json:"slab_per_socket_bytes"`
	SUnreclaimPerSock int64   `json:"sunreclaim_per_socket_bytes"`
}

// FanoutResults: publish → receive.
type FanoutResults struct {
	Messages       int              `json:"messages"`
	Published      int64            `json:"published"`
	PublishErrors  int64            `json:"publish_errors"`
	PublishReasons map[string]int64 `json:"publish_error_reasons,omitempty"`
	PublishS       float64          `json:"publish_s"`
	PublishPerS    float64          `json:"publish_per_s"`
	EventsPerS     float64          `json:"events_per_s"` // events accepted (answered 200) per second: publish_per_s, under the publish scenario's name
	PublishRTTMs   Percentiles      `json:"publish_rtt_ms"`
	Expected       int64            `json:"expected"`
	Delivered      int64            `json:"delivered"`
	DeliverS       float64          `json:"deliver_s"`
	DeliveriesPerS float64          `json:"deliveries_per_s"`
	Lost           int64            `json:"lost"`
	Duplicates     int64            `json:"duplicates"`
	Unexpected     int64            `json:"unexpected"`
	TestDropped    int64            `json:"test_dropped,omitempty"`
	LatencyMs      Percentiles      `json:"latency_ms"`
}

// StormResults: everything dropped at once, then redialed.
type StormResults struct {
	StormConns        int64            `json:"storm_conns"`
	Reconnected       int64            `json:"reconnected"`
	ReconnectFailed   int64            `json:"reconnect_failed"`
	ReconnectFailures map[string]int64 `json:"reconnect_failures"`
	TimeToAllBackMs   float64          `json:"time_to_all_back_ms"`
	BackMs            Percentiles      `json:"back_ms"`
	// Refused4100 counts the attempts the server refused with 4100 (over
	// capacity: gateway.accept_rate), each redialed after about a second
	// as pusher-js does, without using up Retries.
	Refused4100 int64             `json:"refused_4100"`
	Bystander   *BystanderResults `json:"bystander,omitempty"`
}

// CPUStats is the client's CPU: all workers plus the parent (which
// publishes), over the run and over the measured phase (the same phase as
// ServerStats').
type CPUStats struct {
	UserS      float64 `json:"user_s"`
	SysS       float64 `json:"sys_s"`
	TotalS     float64 `json:"total_s"`
	WorkersS   float64 `json:"workers_s"`
	ParentS    float64 `json:"parent_s"`
	Cores      float64 `json:"cores"` // total_s / duration_s
	Phase      string  `json:"phase"`
	PhaseS     float64 `json:"phase_s"`
	PhaseCPUS  float64 `json:"phase_cpu_s"`
	PhaseCores float64 `json:"phase_cpu_cores"`
}

// ServerStats are read from /proc/PID of --server-pid. With several server
// processes (a cluster) the top-level figures are their sums (RSS peak: the
// sum of each one's peak) and Nodes has each one's.
type ServerStats struct {
	PID           int           `json:"pid"`
	PIDs          []int         `json:"pids,omitempty"`
	CPUS          float64       `json:"cpu_s"`
	CPUCores      float64       `json:"cpu_cores"`
	Phase         string        `json:"phase"`
	PhaseS        float64       `json:"phase_s"`
	PhaseCPUS     float64       `json:"phase_cpu_s"`
	PhaseCPUCores float64       `json:"phase_cpu_cores"`
	RSSKiB        int64         `json:"rss_kib"`
	RSSPeakKiB    int64         `json:"rss_peak_kib"`
	Nodes         []ServerStats `json:"nodes,omitempty"`
}

var phaseNames = map[string]string{Connect: "connect", Idle: "hold", Fanout: "publish+drain", PublishBound: "publish+drain", Storm: "storm", Presence: "joins+kill", Failover: "publish+kill+resume"}

// report assembles the Report from the worker results gathered so far.
func (r *run) report() *Report {
	c := r.cfg
	end := time.Now()
	rep := &Report{Scenario: c.Scenario, Command: c.Command, Machine: machineInfo(), Params: Params{
		URL: c.URL, URLs: c.urls(), AppID: c.AppID, Key: c.Key, Conns: c.Conns, Channels: c.Channels,
		Rate: c.Rate, Workers: c.Workers, Pollers: c.Pollers, Inflight: c.Inflight,
		DialTimeoutS: c.DialTimeout.Seconds(), TimeoutS: c.Timeout.Seconds(),
		SourceBase: c.SourceBase, ServerPID: c.ServerPID, DropEvery: c.DropEvery,
	}}
	switch c.Scenario {
	case Idle:
		rep.Params.HoldS = c.Hold.Seconds()
	case Fanout, PublishBound:
		p := &rep.Params
		p.RESTURL, p.Messages, p.Payload, p.Publishers, p.Batch, p.DrainS = c.RESTURL, c.Messages, c.Payload, c.Publishers, c.Batch, c.Drain.Seconds()
		p.Publish = c.Publish
		if c.Publish != PublishREST {
			p.NATSURL = c.NATSURL
		}
		if c.Publish == PublishNATSPublish {
			p.NATSWindow = c.NATSWindow
		}
	case Storm:
		rep.Params.StormInflight, rep.Params.Retries = c.StormInflight, c.Retries
	case Presence:
		p := &rep.Params
		p.Channels, p.Workers, p.Pollers, p.Inflight = 1, 0, 0, 0
		p.Joins, p.KillPID, p.ConvergeS = c.Joins, c.KillPID, c.Converge.Seconds()
	case Failover:
		p := &rep.Params
		p.Workers, p.Pollers, p.Inflight = 0, 0, 0
		p.RESTURL, p.Messages, p.Publishers, p.KillPID, p.ConvergeS = c.RESTURL, c.Messages, c.Publishers, c.KillPID, c.Converge.Seconds()
	}
	if pids := c.serverPIDs(); len(pids) > 1 {
		rep.Params.ServerPIDs = pids
	}
	res := &Results{DurationS: round3(end.Sub(r.start).Seconds()), Attempted: c.Conns,
		Failures: map[string]int64{}, DropReasons: map[string]int64{}}
	rep.Results = res
	var conn, lat, storm Histogram
	var agg workerResult
	agg.StormFails = map[string]int64{}
	var delivered, connected []int64
	var firstDial, lastReady int64
	for _, w := range r.workers {
		wr := w.result
		if wr == nil {
			continue
		}
		res.Established += wr.Established
		res.Failed += wr.Failed
		res.Subscribed += wr.EverReady
		res.Drops += wr.Drops
		addCounts(res.Failures, wr.Failures)
		addCounts(res.DropReasons, wr.DropReasons)
		addCounts(agg.StormFails, wr.StormFails)
		conn.mergeWire(wr.ConnHist)
		lat.mergeWire(wr.LatHist)
		storm.mergeWire(wr.StormHist)
		agg.Unique += wr.Unique
		agg.Dups += wr.Dups
		agg.Unexpected += wr.Unexpected
		agg.TestDropped += wr.TestDropped
		agg.Expected += wr.Expected
		agg.Lost += wr.Lost
		agg.StormTarget += wr.StormTarget
		agg.StormBack += wr.StormBack
		agg.StormFailed += wr.StormFailed
		agg.LastRecv = max(agg.LastRecv, wr.LastRecv)
		firstDial, lastReady = minNonZero(firstDial, wr.FirstDial), max(lastReady, wr.LastReady)
		agg.CPUUser += wr.CPUUser
		agg.CPUSys += wr.CPUSys
		delivered = addSeries(delivered, wr.Delivered)
		connected = addSeries(connected, wr.Connected)
	}
	if pc := r.pc; pc != nil {
		// Observers and joiners alike.
		res.Attempted = int(pc.established + pc.failed)
		res.Established, res.Failed, res.Subscribed = pc.established, pc.failed, pc.subscribed
		addCounts(res.Failures, pc.failures)
		conn = pc.hist
		firstDial, lastReady = pc.first, pc.last
	}
	if c.Channels == 0 {
		res.Subscribed = 0
	}
	if len(res.DropReasons) == 0 {
		res.DropReasons = nil
	}
	res.TimeToEstablishedMs = conn.percentilesMs()
	if firstDial > 0 && lastReady > firstDial {
		// From the first dial to the last socket ready, over all workers.
		d := time.Duration(lastReady - firstDial)
		res.ConnectS = round3(d.Seconds())
		res.ConnectsPerS = rate(res.Established, d)
	}
	if c.Inflight > 0 {
		res.ConnectInflight = max(1, (c.Inflight+c.Workers-1)/c.Workers) * c.Workers // what each worker was given (run.spawn)
	}
	rep.latency, rep.series = conn, perSecond(connected)
	switch c.Scenario {
	case Idle:
		res.IdleResults = r.idleResults(res.Established)
	case Fanout, PublishBound:
		res.FanoutResults = r.fanoutResults(&agg, &lat)
		rep.latency, rep.series = lat, perSecond(delivered)
	case Storm:
		res.StormResults = &StormResults{
			StormConns: agg.StormTarget, Reconnected: agg.StormBack, ReconnectFailed: agg.StormFailed,
			ReconnectFailures: agg.StormFails, TimeToAllBackMs: round3(float64(storm.Max()) / 1e6),
			Refused4100: agg.StormFails[refused4100], Bystander: r.bystander,
			BackMs: storm.percentilesMs(),
		}
		rep.latency = storm
	case Presence:
		res.PresenceResults = r.pres
		rep.latency, rep.series = r.presLatency, nil
	case Failover:
		res.Failover = r.fo
		rep.series = nil
	}
	parent := selfCPU()
	res.ClientCPU = CPUStats{
		UserS: round3(agg.CPUUser + parent.user), SysS: round3(agg.CPUSys + parent.sys),
		WorkersS: round3(agg.CPUUser + agg.CPUSys), ParentS: round3(parent.user + parent.sys),
	}
	res.ClientCPU.TotalS = round3(res.ClientCPU.UserS + res.ClientCPU.SysS)
	res.ClientCPU.Cores = round3(res.ClientCPU.TotalS / max(res.DurationS, 1e-9))
	phaseS := 0.0
	if !r.phaseEnd.IsZero() && !r.phaseStart.IsZero() {
		phaseS = round3(r.phaseEnd.Sub(r.phaseStart).Seconds())
		cc := &res.ClientCPU
		cc.Phase, cc.PhaseS = phaseNames[c.Scenario], phaseS
		cc.PhaseCPUS = round3(cc.TotalS - r.clientPhase0)
		cc.PhaseCores = round3(cc.PhaseCPUS / max(phaseS, 1e-9))
	}
	if r.srv != nil {
		s := r.srv
		s.Phase, s.PhaseS = phaseNames[c.Scenario], phaseS
		s.PhaseCPUCores = round3(s.PhaseCPUS / max(phaseS, 1e-9))
		s.CPUCores = round3(s.CPUS / max(res.DurationS, 1e-9))
		for i := range s.Nodes {
			n := &s.Nodes[i]
			n.Phase, n.PhaseS = s.Phase, phaseS
			n.PhaseCPUCores = round3(n.PhaseCPUS / max(phaseS, 1e-9))
			n.CPUCores = round3(n.CPUS / max(res.DurationS, 1e-9))
		}
		res.Server = s
	}
	return rep
}

func (r *run) idleResults(established int64) *IdleResults {
	c := r.cfg
	ir := &IdleResults{HoldS: c.Hold.Seconds()}
	if c.ServerPID > 0 && r.rssAfter > 0 {
		ir.RSSBeforeKiB, ir.RSSAfterKiB = r.rssBefore, r.rssAfter
		if established > 0 {
			ir.RSSPerConnBytes = (r.rssAfter - r.rssBefore) * 1024 / established
		}
	}
	if r.slabAfter.slab > 0 {
		ir.SlabBeforeKiB, ir.SlabAfterKiB = r.slabBefore.slab, r.slabAfter.slab
		ir.SlabDeltaKiB = r.slabAfter.slab - r.slabBefore.slab
		ir.Sockets = established
		if host, _ := hostPort(c.URL); isLoopback(host) {
			ir.Sockets *= 2 // client and server end
		}
		if ir.Sockets > 0 {
			ir.SlabPerSocket = ir.SlabDeltaKiB * 1024 / ir.Sockets
			ir.SUnreclaimPerSock = (r.slabAfter.sunreclaim - r.slabBefore.sunreclaim) * 1024 / ir.Sockets
		}
	}
	return ir
}

func (r *run) fanoutResults(agg *workerResult, lat *Histogram) *FanoutResults {
	fr := &FanoutResults{Messages: r.cfg.Messages, Expected: agg.Expected, Delivered: agg.Unique,
		Lost: agg.Lost, Duplicates: agg.Dups, Unexpected: agg.Unexpected, TestDropped: agg.TestDropped,
		LatencyMs: lat.percentilesMs()}
	if p := r.pub; p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		fr.Published = p.published.Load()
		for _, n := range p.errs {
			fr.PublishErrors += n
		}
		if len(p.errs) > 0 {
			fr.PublishReasons = maps.Clone(p.errs)
		}
		fr.PublishRTTMs = p.rtt.percentilesMs()
		if p.first > 0 {
			fr.PublishS = round3(float64(p.last-p.first) / 1e9)
			fr.PublishPerS = rate(fr.Published, time.Duration(p.last-p.first))
			fr.EventsPerS = fr.PublishPerS
			if agg.LastRecv > p.first {
				fr.DeliverS = round3(float64(agg.LastRecv-p.first) / 1e9)
				fr.DeliveriesPerS = rate(fr.Delivered, time.Duration(agg.LastRecv-p.first))
			}
		}
	}
	return fr
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()*10)) / 10
}

func addSeries(dst, src []int64) []int64 {
	for len(dst) < len(src) {
		dst = append(dst, 0)
	}
	for i, v := range src {
		dst[i] += v
	}
	return dst
}

func perSecond(s []int64) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		out[i] = float64(v) * float64(time.Second) / float64(bucketNs)
	}
	return out
}

// WriteTable writes the human summary.
func (rep *Report) WriteTable(w io.Writer) {
	res := rep.Results
	row := func(k, format string, args ...any) {
		fmt.Fprintf(w, "  %-26s "+format+"\n", append([]any{k}, args...)...)
	}
	pct := func(p Percentiles) string {
		return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms", p.P50, p.P90, p.P99, p.P999, p.Max)
	}
	fmt.Fprintf(w, "\nherald bench %s: %d conns, %d channels, %d workers (%s, %d cores, %s)\n",
		rep.Scenario, rep.Params.Conns, rep.Params.Channels, rep.Params.Workers, rep.Machine.Hostname, rep.Machine.Cores, rep.Machine.Date)
	if rep.Error != "" {
		row("ERROR", "%s", rep.Error)
	}
	if len(rep.Params.URLs) > 1 {
		row("targets", "%s (conn i → URL i %% %d)", strings.Join(rep.Params.URLs, " "), len(rep.Params.URLs))
		if rep.Params.RESTURL != "" {
			row("REST", "%s", rep.Params.RESTURL)
		}
	}
	row("established", "%d / %d  (failed %d%s)", res.Established, res.Attempted, res.Failed, fmtCounts(res.Failures))
	row("connect", "%.3f s, %.0f conns/s, %s in flight", res.ConnectS, res.ConnectsPerS, inflightText(res.ConnectInflight))
	row("time to established", "%s", pct(res.TimeToEstablishedMs))
	if rep.Params.Channels > 0 {
		row("subscribed", "%d", res.Subscribed)
	}
	row("drops", "%d%s", res.Drops, fmtCounts(res.DropReasons))
	if ir := res.IdleResults; ir != nil {
		row("hold", "%.0f s", ir.HoldS)
		if ir.RSSAfterKiB > 0 {
			row("server RSS", "%d → %d KiB = %d bytes/conn", ir.RSSBeforeKiB, ir.RSSAfterKiB, ir.RSSPerConnBytes)
		}
		row("kernel slab", "%+d KiB = %d bytes/socket (%d unreclaimable) over %d sockets",
			ir.SlabDeltaKiB, ir.SlabPerSocket, ir.SUnreclaimPerSock, ir.Sockets)
	}
	if fr := res.FanoutResults; fr != nil {
		row("published", "%d / %d in %.3f s (%.0f events/s, errors %d%s)", fr.Published, fr.Messages, fr.PublishS, fr.PublishPerS, fr.PublishErrors, fmtCounts(fr.PublishReasons))
		if fr.PublishRTTMs != (Percentiles{}) { // none for fire-and-forget NATS publishes
			row("publish round trip", "%s", pct(fr.PublishRTTMs))
		}
		row("delivered", "%d / %d in %.3f s = %.0f deliveries/s", fr.Delivered, fr.Expected, fr.DeliverS, fr.DeliveriesPerS)
		row("lost / dup / unexpected", "%d / %d / %d", fr.Lost, fr.Duplicates, fr.Unexpected)
		if fr.TestDropped > 0 {
			row("dropped by test hook", "%d", fr.TestDropped)
		}
		row("publish → receive", "%s", pct(fr.LatencyMs))
	}
	if sr := res.StormResults; sr != nil {
		row("storm", "%d dropped, %d back, %d gave up%s", sr.StormConns, sr.Reconnected, sr.ReconnectFailed, fmtCounts(sr.ReconnectFailures))
		row("time until all back", "%.1f ms", sr.TimeToAllBackMs)
		row("back after", "%s", pct(sr.BackMs))
		row("refused with 4100", "%d attempts (over gateway.accept_rate; redialed after ~1 s)", sr.Refused4100)
		if by := sr.Bystander; by != nil {
			dropped := ""
			if by.Dropped {
				dropped = " (dropped: " + by.Error + ")"
			}
			row("bystander ping → pong", "before %s; during %s%s", pct(by.Before), pct(by.During), dropped)
		}
	}
	if pr := res.PresenceResults; pr != nil {
		row("presence channel", "%s: %d subscribers (per URL %v), %d remote", pr.Channel, pr.Subscribers, pr.PerURL, pr.Remote)
		row("join → member_added", "%d/%d converged; last remote %s", pr.JoinsConverged, pr.Joins, pct(pr.JoinMs))
		row("  each remote subscriber", "%s", pct(pr.JoinEachMs))
		row("leave → member_removed", "%d/%d converged; last remote %s", pr.LeavesConverged, pr.Joins, pct(pr.LeaveMs))
		row("duplicates / spurious", "%d / %d", pr.DuplicateEvents, pr.SpuriousRemoved)
		if k := pr.Kill; k != nil {
			row("kill -9", "pid %d: %d members gone (sockets closed after %.1f ms), %d survivors", k.PID, k.DeadMembers, k.SocketsClosedMs, k.Survivors)
			row("kill → member_removed", "converged %v: %.1f ms (one sample; each pair %s; missing %d)", k.Converged, k.RemovedMs, pct(k.RemovedEachMs), k.Missing)
		}
	}
	if fr := res.Failover; fr != nil {
		fr.writeTable(row, pct)
	}
	cpu := res.ClientCPU
	row("client CPU", "%.2f s over the run (user %.2f sys %.2f; workers %.2f, parent %.2f), %.2f s in %s (%.2f s) = %.2f cores",
		cpu.TotalS, cpu.UserS, cpu.SysS, cpu.WorkersS, cpu.ParentS, cpu.PhaseCPUS, cpu.Phase, cpu.PhaseS, cpu.PhaseCores)
	if s := res.Server; s != nil {
		row("server CPU", "%.2f s over the run, %.2f s in %s (%.2f s) = %.2f cores", s.CPUS, s.PhaseCPUS, s.Phase, s.PhaseS, s.PhaseCPUCores)
		row("server RSS", "%d KiB (peak %d KiB)", s.RSSKiB, s.RSSPeakKiB)
		for _, n := range s.Nodes {
			row(fmt.Sprintf("  server pid %d", n.PID), "%.2f s CPU in %s (%.2f cores), RSS %d KiB (peak %d KiB)", n.PhaseCPUS, n.Phase, n.PhaseCPUCores, n.RSSKiB, n.RSSPeakKiB)
		}
	}
	row("duration", "%.1f s", res.DurationS)
}

func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return ": " + strings.Join(parts, ", ")
}

// inflightText is a dial concurrency for people: "unlimited" for 0.
func inflightText(n int) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}
