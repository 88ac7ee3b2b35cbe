package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

// workerProc is the parent's handle on one worker process.
type workerProc struct {
	id        int
	cfg       workerConfig
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	enc       *json.Encoder
	last      progress
	ready     bool
	stormDone bool
	eof       bool // its stdout ended
	result    *workerResult
	exited    chan struct{}
}

// workerMsg is a report from a worker, or err when its stdout ended.
type workerMsg struct {
	id  int
	rep report
	err error
}

// run is the state of one Run in the parent.
type run struct {
	cfg     *Config
	workers []*workerProc
	msgs    chan workerMsg
	quit    chan struct{} // closed when Run returns
	start   time.Time
	pub     *publisher

	// phase boundaries
	connStart, connEnd   time.Time
	phaseStart, phaseEnd time.Time
	stormAt              time.Time
	bystander            *BystanderResults // storm scenario

	srv                    *ServerStats
	cpuStart, cpuPhase0    float64          // server CPU seconds at run start and phase start (all server processes)
	srvStart, srvPhase0    []procStat       // per server process, at run start and phase start
	srvLast                []procStat       // per server process, the last reading
	pres                   *PresenceResults // presence scenario
	fo                     *FailoverResults // failover scenario
	pc                     *presConnStats
	presLatency            Histogram
	clientPhase0           float64 // client (workers + parent) CPU seconds at phase start
	rssBefore, rssAfter    int64
	slabBefore, slabAfter  meminfo
	lastUnique, lastPrintN int64
}

// Run executes one scenario and returns its report. The report is returned
// (with Error set) even when the run fails part way, so the caller can print
// what was measured. Run never leaves a worker process behind.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = DefaultConfig(cfg)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: &cfg, start: time.Now(), msgs: make(chan workerMsg, 64), quit: make(chan struct{})}
	// The scenario gets the timeout less a grace period in which a run that
	// failed part way still collects what the workers measured.
	grace := min(2*time.Second, cfg.Timeout/5)
	hardCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	execCtx, cancelExec := context.WithTimeout(hardCtx, cfg.Timeout-grace)
	defer cancelExec()
	defer close(r.quit)
	err := r.execute(execCtx)
	if err != nil {
		if execCtx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("bench: run stopped at --timeout %v: %w", cfg.Timeout, err)
		}
		r.collectPartial(hardCtx)
	}
	r.reap()
	rep := r.report()
	if err != nil {
		rep.Error = err.Error()
	}
	if cfg.Table != nil {
		rep.WriteTable(cfg.Table)
	}
	if cfg.Plot != "" {
		if perr := rep.writePlot(cfg.Plot); perr != nil && err == nil {
			err = perr
			rep.Error = err.Error()
		}
	}
	return rep, err
}

func (r *run) execute(ctx context.Context) error {
	c := r.cfg
	if pids := c.serverPIDs(); len(pids) > 0 {
		st, err := r.readServers()
		if err != nil {
			return err
		}
		r.srv = &ServerStats{PID: pids[0]}
		if len(pids) > 1 {
			r.srv.PIDs = pids
		}
		r.cpuStart = st.cpu
		r.rssBefore = st.rssKiB
		r.srvStart = slices.Clone(r.srvLast)
	}
	r.slabBefore = readMeminfo()
	if c.Scenario == Presence {
		return r.presence(ctx)
	}
	if c.Scenario == Failover {
		return r.failover(ctx)
	}
	if err := r.spawn(); err != nil {
		return err
	}
	r.connStart = time.Now()
	if err := r.wait(ctx, "connecting", func(w *workerProc) bool { return w.ready }); err != nil {
		return err
	}
	r.connEnd = time.Now()
	r.markPhase()
	drain := time.Duration(0)
	switch c.Scenario {
	case Idle:
		until := time.Now().Add(c.Hold)
		if err := r.wait(ctx, "holding", func(*workerProc) bool { return !time.Now().Before(until) }); err != nil {
			return err
		}
		if r.srv != nil {
			if st, err := r.readServers(); err == nil {
				r.rssAfter = st.rssKiB
			}
		}
		r.slabAfter = readMeminfo()
	case Fanout, PublishBound:
		r.pub = newPublisher(c)
		done := make(chan struct{})
		pctx, pcancel := context.WithCancel(ctx)
		go func() { r.pub.run(pctx); close(done) }()
		err := r.wait(ctx, "publishing", func(*workerProc) bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		})
		pcancel()
		<-done
		if err != nil {
			return err
		}
		drain = c.Drain
	case Storm:
		by, err := startBystander(ctx, c)
		if err != nil {
			return fmt.Errorf("bench: storm bystander: %w", err)
		}
		defer func() { r.bystander = by.finish() }()
		r.stormAt = time.Now()
		for _, w := range r.workers {
			_ = w.enc.Encode(command{Cmd: "storm", At: r.stormAt.UnixNano()})
		}
		if err := r.wait(ctx, "reconnecting", func(w *workerProc) bool { return w.stormDone }); err != nil {
			return err
		}
	}
	var failed []int64
	if r.pub != nil {
		failed = r.pub.failed
	}
	deadline := time.Now().Add(drain).UnixNano()
	for _, w := range r.workers {
		_ = w.enc.Encode(command{Cmd: "finish", Deadline: deadline, Failed: failed})
	}
	err := r.wait(ctx, "finishing", func(w *workerProc) bool { return w.result != nil })
	r.phaseEnd = time.Now()
	r.serversAtEnd()
	return err
}

// readServers reads every measured server process (--server-pid) and
// returns their sum. A process that cannot be read (it exited, or was
// killed on purpose) keeps its last reading, and the error names it.
func (r *run) readServers() (procStat, error) {
	pids := r.cfg.serverPIDs()
	if r.srvLast == nil {
		r.srvLast = make([]procStat, len(pids))
	}
	var sum procStat
	var firstErr error
	for i, pid := range pids {
		st, err := readProcStat(pid)
		if err == nil && st.rssKiB == 0 {
			err = errors.New("no memory (exited)") // a zombie
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("bench: --server-pid %d: %w", pid, err)
			}
		} else {
			r.srvLast[i] = st
		}
		sum.cpu += r.srvLast[i].cpu
		sum.rssKiB += r.srvLast[i].rssKiB
		sum.hwmKiB += r.srvLast[i].hwmKiB
	}
	return sum, firstErr
}

// serversAtEnd fills in the server CPU and memory at the end of the phase:
// the sum over the server processes, and each one's when there are several.
func (r *run) serversAtEnd() {
	if r.srv == nil {
		return
	}
	st, _ := r.readServers()
	r.srv.PhaseCPUS = round3(st.cpu - r.cpuPhase0)
	r.srv.CPUS = round3(st.cpu - r.cpuStart)
	r.srv.RSSKiB, r.srv.RSSPeakKiB = st.rssKiB, st.hwmKiB
	if len(r.srvLast) < 2 {
		return
	}
	r.srv.Nodes = nil
	for i, pid := range r.cfg.serverPIDs() {
		last, start, phase0 := r.srvLast[i], r.srvStart[i], r.srvStart[i]
		if i < len(r.srvPhase0) {
			phase0 = r.srvPhase0[i]
		}
		r.srv.Nodes = append(r.srv.Nodes, ServerStats{PID: pid,
			CPUS: round3(last.cpu - start.cpu), PhaseCPUS: round3(last.cpu - phase0.cpu),
			RSSKiB: last.rssKiB, RSSPeakKiB: last.hwmKiB})
	}
}

// markPhase records the start of the measured phase (after connecting, or
// the connect phase itself for the connect scenario).
func (r *run) markPhase() {
	r.phaseStart = r.connEnd
	if r.cfg.Scenario == Connect {
		r.phaseStart = r.connStart
	} else {
		self := selfCPU()
		r.clientPhase0 = self.user + self.sys
		for _, w := range r.workers {
			r.clientPhase0 += w.last.CPUS
		}
	}
	if r.srv == nil {
		return
	}
	r.cpuPhase0 = r.cpuStart
	r.srvPhase0 = r.srvStart
	if r.cfg.Scenario != Connect {
		if st, err := r.readServers(); err == nil {
			r.cpuPhase0 = st.cpu
			r.srvPhase0 = slices.Clone(r.srvLast)
		}
	}
}

// spawn starts the worker processes and sends each its config.
func (r *run) spawn() error {
	c := r.cfg
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find own executable: %w", err)
	}
	targets := c.dests()
	inflight := 0
	if c.Inflight > 0 {
		inflight = max(1, (c.Inflight+c.Workers-1)/c.Workers)
	}
	nextSource := 0
	for i := range c.Workers {
		first, last := i*c.Conns/c.Workers, (i+1)*c.Conns/c.Workers
		sources, err := c.sourcesFor(&nextSource, last-first)
		if err != nil {
			return err
		}
		wc := workerConfig{
			Worker: i, Scenario: c.Scenario, Targets: targets,
			First: first, Count: last - first, Channels: c.Channels, Messages: c.Messages,
			Sources: sources, PerSource: c.PerSource, Pollers: c.Pollers,
			Inflight: inflight, StormInflight: c.StormInflight,
			Rate:          c.Rate * float64(last-first) / float64(c.Conns) * boolF(!c.fanout()),
			DialTimeoutNs: int64(c.DialTimeout), Retries: c.Retries, DropEvery: c.DropEvery,
			Epoch: r.start.UnixNano(), Buckets: int(int64(c.Timeout)/bucketNs) + 2,
			Deadline: r.start.Add(c.Timeout + 5*time.Second).UnixNano(),
		}
		if err := r.startWorker(exe, wc); err != nil {
			return err
		}
	}
	return nil
}

func boolF(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (r *run) startWorker(exe string, wc workerConfig) error {
	cmd := exec.Command(exe, "bench", "worker")
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	cmd.Stderr = os.Stderr
	// The kernel kills the worker when the parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	// Our own pipe, not StdoutPipe: Wait must not close it under the reader
	// before the result has been read.
	stdout, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout = pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		stdout.Close()
		return fmt.Errorf("bench: start worker %d: %w", wc.Worker, err)
	}
	w := &workerProc{id: wc.Worker, cfg: wc, cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), exited: make(chan struct{})}
	r.workers = append(r.workers, w)
	go func() {
		defer stdout.Close()
		dec := json.NewDecoder(stdout)
		for {
			var m workerMsg
			m.id = w.id
			m.err = dec.Decode(&m.rep)
			select {
			case r.msgs <- m:
			case <-r.quit:
				return
			}
			if m.err != nil {
				return
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(w.exited) }()
	return w.enc.Encode(command{Cmd: "config", Config: &wc})
}

// wait handles worker reports until done is true for every worker, printing
// a progress line once a second.
func (r *run) wait(ctx context.Context, phase string, done func(*workerProc) bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastPrint := time.Now()
	for {
		all := true
		for _, w := range r.workers {
			if !done(w) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-r.msgs:
			if err := r.handle(m); err != nil {
				return err
			}
		case now := <-tick.C:
			if now.Sub(lastPrint) >= time.Second {
				lastPrint = now
				r.printProgress(phase, now)
			}
		}
	}
}

func (r *run) handle(m workerMsg) error {
	w := r.workers[m.id]
	if m.err != nil {
		w.eof = true
		if w.result != nil {
			return nil
		}
		return fmt.Errorf("bench: worker %d ended before its result (see its log above)", m.id)
	}
	w.last = m.rep.Progress
	switch m.rep.Type {
	case "ready":
		w.ready = true
	case "storm_done":
		w.stormDone = true
	case "result":
		w.result = m.rep.Result
	case "error":
		return fmt.Errorf("bench: worker %d: %s", m.id, m.rep.Error)
	}
	return nil
}

func (r *run) printProgress(phase string, now time.Time) {
	if r.cfg.Progress == nil {
		return
	}
	var t progress
	for _, w := range r.workers {
		t.Established += w.last.Established
		t.Failed += w.last.Failed
		t.Ready += w.last.Ready
		t.Drops += w.last.Drops
		t.Unique += w.last.Unique
		t.StormBack += w.last.StormBack
	}
	line := fmt.Sprintf("bench %s %5.1fs %-12s ready %d/%d failed %d drops %d",
		r.cfg.Scenario, now.Sub(r.start).Seconds(), phase, t.Ready, r.cfg.Conns, t.Failed, t.Drops)
	if r.cfg.Scenario == Storm && !r.stormAt.IsZero() {
		line += fmt.Sprintf(" | back %d", t.StormBack)
	}
	if r.pub != nil {
		line += fmt.Sprintf(" | published %d/%d | delivered %d (%d/s)",
			r.pub.published.Load(), r.cfg.Messages, t.Unique, t.Unique-r.lastUnique)
		r.lastUnique = t.Unique
	}
	fmt.Fprintln(r.cfg.Progress, line)
}

// collectPartial asks the workers that have not sent their result for it
// now, and waits for them until ctx ends.
func (r *run) collectPartial(ctx context.Context) {
	now := time.Now().UnixNano()
	for _, w := range r.workers {
		if w.result == nil {
			_ = w.enc.Encode(command{Cmd: "finish", Deadline: now})
		}
	}
	// A worker that dies makes wait return an error; go on with the others.
	for ctx.Err() == nil {
		if r.wait(ctx, "collecting", func(w *workerProc) bool { return w.result != nil || w.eof }) == nil {
			return
		}
	}
}

// reap closes the workers' stdin and waits for them to exit, killing any
// that do not within a few seconds.
func (r *run) reap() {
	for _, w := range r.workers {
		_ = w.stdin.Close()
	}
	timeout := time.After(5 * time.Second)
	for _, w := range r.workers {
		select {
		case <-w.exited:
		case <-timeout:
			_ = w.cmd.Process.Kill()
			<-w.exited
		}
	}
}
