package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WriteSummary reads report files (the JSON documents of earlier runs) and
// writes a markdown table of their key numbers, for docs/benchmarks.md.
func WriteSummary(w io.Writer, files []string) error {
	var reps []*Report
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		rep := &Report{}
		if err := json.Unmarshal(b, rep); err != nil {
			return fmt.Errorf("bench: %s: %w", f, err)
		}
		if rep.Results == nil {
			rep.Results = &Results{}
		}
		reps = append(reps, rep)
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	if len(reps) == 0 {
		return fmt.Errorf("bench: no reports")
	}
	m := reps[0].Machine
	fmt.Fprintf(w, "Machine: %s, %d cores (%s), %s MiB RAM, kernel %s, %s, open-files limit %d. Date: %s.\n",
		m.Hostname, m.Cores, m.CPUModel, group(m.MemoryKiB/1024), m.Kernel, m.GoVersion, m.NofileLimit, m.Date)
	fmt.Fprintf(w, "Client and server share the machine over loopback. CPU: seconds (average cores) in the measured phase: "+
		"connect = the connect phase, idle = the hold, fanout = publish until the last delivery, storm = drop until all back, presence = the joins, leaves and kill.\n\n")
	fmt.Fprintln(w, "| Scenario | Command | Result | Client CPU | Server CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for i, rep := range reps {
		res := rep.Results
		srv := "n/a"
		if s := res.Server; s != nil {
			srv = fmt.Sprintf("%.2f s (%.2f cores)<br>RSS %s KiB, peak %s KiB", s.PhaseCPUS, s.PhaseCPUCores, group(s.RSSKiB), group(s.RSSPeakKiB))
			if len(s.Nodes) > 1 {
				var per []string
				for _, n := range s.Nodes {
					per = append(per, fmt.Sprintf("%.2f", n.PhaseCPUS))
				}
				srv = fmt.Sprintf("%.2f s (%.2f cores), %d nodes summed<br>per node %s s<br>RSS %s KiB (sum)",
					s.PhaseCPUS, s.PhaseCPUCores, len(s.Nodes), strings.Join(per, " / "), group(s.RSSKiB))
			}
		}
		cc := res.ClientCPU
		cpu := fmt.Sprintf("%.2f s (%.2f cores)<br>whole run %.2f s", cc.PhaseCPUS, cc.PhaseCores, cc.TotalS)
		fmt.Fprintf(w, "| %s | `%s` | %s | %s | %s |\n", names[i], shortCommand(rep.Command), summaryResult(rep), cpu, srv)
	}
	if nodes := len(reps[0].Params.URLs); nodes > 1 {
		fmt.Fprintf(w, "\nEvery command also had `--url ws://127.0.0.1:P1,ws://127.0.0.1:P2,...` (the %d nodes; conn i went to node i %% %d), "+
			"`--rest-url` (node 1), `--app-id app-id --key app-key --secret app-secret --server-pid PID1,PID2,...` (every node; server CPU is their sum) "+
			"and `--timeout`; the kill run also `--kill-pid` (the last node's PID).\n", nodes, nodes)
		return nil
	}
	fmt.Fprintf(w, "\nEvery command also had `--url ws://127.0.0.1:PORT --app-id app-id --key app-key --secret app-secret --server-pid PID --plot out/bench/NAME.png --timeout 3m`, against a fresh `herald serve` process (the dev app; NATS client port off).\n")
	return nil
}

// shortCommand drops the flags every scripted run shares from a command line.
func shortCommand(cmd string) string {
	skip := map[string]bool{"--url": true, "--app-id": true, "--key": true, "--secret": true,
		"--server-pid": true, "--plot": true, "--timeout": true, "--rest-url": true, "--kill-pid": true}
	f := strings.Fields(cmd)
	var out []string
	for i := 0; i < len(f); i++ {
		name, _, hasValue := strings.Cut(f[i], "=")
		if skip[name] {
			if !hasValue {
				i++
			}
			continue
		}
		out = append(out, f[i])
	}
	return strings.Join(out, " ")
}

// summaryResult is the key numbers of one report, one table cell.
func summaryResult(rep *Report) string {
	res := rep.Results
	var parts []string
	if rep.Error != "" {
		parts = append(parts, "**FAILED: "+strings.ReplaceAll(rep.Error, "|", "/")+"**")
	}
	ttl := res.TimeToEstablishedMs
	parts = append(parts, fmt.Sprintf("%s/%d established, %s conns/s (%s in flight), time to established p50 %.1f / p99 %.1f ms, failed %d%s",
		group(res.Established), res.Attempted, group(int64(res.ConnectsPerS)), inflightText(res.ConnectInflight), ttl.P50, ttl.P99, res.Failed, fmtCounts(res.Failures)))
	if ir := res.IdleResults; ir != nil {
		s := fmt.Sprintf("held %.0f s over %s, %d drops", ir.HoldS, plural(rep.Params.Channels, "channel"), res.Drops)
		if ir.RSSAfterKiB > 0 {
			s += fmt.Sprintf("; **server RSS %s B/conn** (%s → %s KiB)", group(ir.RSSPerConnBytes), group(ir.RSSBeforeKiB), group(ir.RSSAfterKiB))
		}
		s += fmt.Sprintf("; kernel slab %s B/socket (%s unreclaimable) over %s sockets", group(ir.SlabPerSocket), group(ir.SUnreclaimPerSock), group(ir.Sockets))
		parts = append(parts, s)
	}
	if fr := res.FanoutResults; fr != nil && rep.Scenario == PublishBound {
		l := fr.LatencyMs
		parts = append(parts, fmt.Sprintf("**%s events/s** accepted (%s/%d, %d publishers, %d errors), **%s deliveries/s** (%s of %s), lost %d, dup %d; publish round trip p50 %.1f / p99 %.1f ms; publish → receive p50 %.1f / p99 %.1f ms",
			group(int64(fr.EventsPerS)), group(fr.Published), fr.Messages, rep.Params.Publishers, fr.PublishErrors,
			group(int64(fr.DeliveriesPerS)), group(fr.Delivered), group(fr.Expected), fr.Lost, fr.Duplicates,
			fr.PublishRTTMs.P50, fr.PublishRTTMs.P99, l.P50, l.P99))
	} else if fr != nil {
		l := fr.LatencyMs
		parts = append(parts, fmt.Sprintf("**%s deliveries/s** (%s of %s), lost %d, dup %d; %s/%d published at %s/s; publish → receive p50 %.1f / p90 %.1f / p99 %.1f / p99.9 %.1f / max %.1f ms",
			group(int64(fr.DeliveriesPerS)), group(fr.Delivered), group(fr.Expected), fr.Lost, fr.Duplicates,
			group(fr.Published), fr.Messages, group(int64(fr.PublishPerS)), l.P50, l.P90, l.P99, l.P999, l.Max))
	}
	if pr := res.PresenceResults; pr != nil {
		parts = append(parts, fmt.Sprintf("%d presence subscribers over %d URLs (%d remote); join → member_added at the last remote one: "+
			"**p50 %.1f / p99 %.1f ms** (%d/%d joins converged; each remote p50 %.1f / p99 %.1f ms); leave → member_removed p50 %.1f / p99 %.1f ms; "+
			"duplicate events %d, spurious removals %d",
			pr.Subscribers, len(rep.Params.URLs), pr.Remote, pr.JoinMs.P50, pr.JoinMs.P99, pr.JoinsConverged, pr.Joins,
			pr.JoinEachMs.P50, pr.JoinEachMs.P99, pr.LeaveMs.P50, pr.LeaveMs.P99, pr.DuplicateEvents, pr.SpuriousRemoved))
		if k := pr.Kill; k != nil {
			s := fmt.Sprintf("kill -9 of a node holding %d member(s): member_removed at all %d survivors after **%s ms** (one sample; its sockets closed after %.1f ms)",
				k.DeadMembers, k.Survivors, group(int64(k.RemovedMs)), k.SocketsClosedMs)
			if !k.Converged {
				s = fmt.Sprintf("kill -9 of a node holding %d member(s): **member_removed missing at %d survivor/member pairs** after the converge timeout", k.DeadMembers, k.Missing)
			}
			parts = append(parts, s)
		}
	}
	if sr := res.StormResults; sr != nil {
		parts = append(parts, fmt.Sprintf("%s dropped at once, %s back, %d gave up; **all back in %s ms** (p50 %.0f / p99 %.0f ms)%s",
			group(sr.StormConns), group(sr.Reconnected), sr.ReconnectFailed, group(int64(sr.TimeToAllBackMs)), sr.BackMs.P50, sr.BackMs.P99, fmtCounts(sr.ReconnectFailures)))
		if sr.Refused4100 > 0 {
			parts = append(parts, fmt.Sprintf("%s attempts refused with 4100", group(sr.Refused4100)))
		}
		if by := sr.Bystander; by != nil {
			parts = append(parts, fmt.Sprintf("bystander ping p50/p99/max %.2f/%.2f/%.2f ms before, %.2f/%.2f/%.2f ms during",
				by.Before.P50, by.Before.P99, by.Before.Max, by.During.P50, by.During.P99, by.During.Max))
		}
	}
	return strings.Join(parts, "<br>")
}

// group formats n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return group(int64(n)) + " " + word + "s"
}
