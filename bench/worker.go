package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// worker owns a share of the sockets of a run, spread over its pollers.
type worker struct {
	cfg     workerConfig
	targets []*target // one per --url; conn i uses targets[i % len]
	pollers []*poller
	enc     *json.Encoder
	logw    io.Writer
}

func (w *worker) logf(format string, args ...any) {
	fmt.Fprintf(w.logw, "bench worker %d: "+format+"\n", append([]any{w.cfg.Worker}, args...)...)
}

func (w *worker) msgsFor(ch int) int { return msgsFor(ch, w.cfg.Channels, w.cfg.Messages) }

// RunWorker runs one bench worker: it reads commands from in and writes
// reports to out, as JSON lines (see wire.go), and logs to logw. The parent
// starts it by re-executing its own binary with WorkerEnv=1 (the herald
// command runs it as `herald bench worker`). It returns when the run is over,
// when in closes, or at the hard deadline the parent gave it.
func RunWorker(in io.Reader, out, logw io.Writer) error {
	dec := json.NewDecoder(in)
	var first command
	if err := dec.Decode(&first); err != nil {
		return fmt.Errorf("bench worker: read config: %w", err)
	}
	if first.Cmd != "config" || first.Config == nil {
		return errors.New("bench worker: first command must be config")
	}
	w := &worker{cfg: *first.Config, enc: json.NewEncoder(out), logw: logw}
	if err := w.setup(); err != nil {
		_ = w.enc.Encode(report{Type: "error", Worker: w.cfg.Worker, Error: err.Error()})
		return err
	}
	cmds := make(chan command, 4)
	go func() {
		defer close(cmds)
		for {
			var c command
			if err := dec.Decode(&c); err != nil {
				return
			}
			cmds <- c
		}
	}()
	return w.loop(cmds)
}

// setup builds the target and the pollers and hands out the sockets.
func (w *worker) setup() error {
	c := &w.cfg
	if c.Pollers < 1 || c.Count < 0 || c.Buckets < 1 {
		return errors.New("bench worker: bad config")
	}
	if len(c.Targets) == 0 {
		return errors.New("bench worker: no target")
	}
	for _, d := range c.Targets {
		t, err := newTarget(d.Addr, d.Host, d.Path, c.Sources)
		if err != nil {
			return fmt.Errorf("bench worker: target %s: %w", d.Addr, err)
		}
		w.targets = append(w.targets, t)
	}
	nsrc := len(w.targets[0].sources)
	perPollerInflight := 0
	if c.Inflight > 0 {
		perPollerInflight = max(1, (c.Inflight+c.Pollers-1)/c.Pollers)
	}
	for range c.Pollers {
		p, err := newPoller(w, c.Rate/float64(c.Pollers), perPollerInflight)
		if err != nil {
			return fmt.Errorf("bench worker: poller: %w", err)
		}
		w.pollers = append(w.pollers, p)
	}
	for k := range c.Count {
		ch := -1
		if c.Channels > 0 {
			ch = (c.First + k) % c.Channels
		}
		src := -1
		if nsrc > 0 {
			src = min(k/max(c.PerSource, 1), nsrc-1)
		}
		w.pollers[k%len(w.pollers)].add(ch, src, (c.First+k)%len(w.targets))
	}
	return nil
}

func (w *worker) totals() progress {
	var pr progress
	for _, p := range w.pollers {
		s := &p.stats
		pr.Established += s.established.Load()
		pr.Failed += s.failed.Load()
		pr.Ready += s.ready.Load()
		pr.EverReady += s.everReady.Load()
		pr.Drops += s.drops.Load()
		pr.Unique += s.unique.Load()
		pr.StormBack += s.stormBack.Load()
	}
	return pr
}

func (w *worker) send(typ string) {
	pr := w.totals()
	cpu := selfCPU()
	pr.CPUS = cpu.user + cpu.sys
	_ = w.enc.Encode(report{Type: typ, Worker: w.cfg.Worker, Progress: pr})
}

// loop runs the pollers and follows the parent's commands.
func (w *worker) loop(cmds <-chan command) error {
	for _, p := range w.pollers {
		go p.run()
	}
	deadline := time.Until(time.Unix(0, w.cfg.Deadline))
	hard := time.NewTimer(max(deadline, time.Second))
	defer hard.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	lastProgress := time.Now()
	var ready, stormSent, storming, finishing bool
	var drainUntil time.Time
	var failed *failedSet
	for {
		select {
		case c, ok := <-cmds:
			if !ok {
				w.stop()
				return errors.New("bench worker: parent went away")
			}
			switch c.Cmd {
			case "storm":
				storming = true
				for _, p := range w.pollers {
					p.send(pollerCmd{kind: "storm", at: c.At})
				}
			case "finish":
				finishing = true
				drainUntil = time.Unix(0, c.Deadline)
				failed = newFailedSet(c.Failed, w.cfg.Channels, w.cfg.Messages)
				for _, p := range w.pollers {
					p.send(pollerCmd{kind: "finish", failed: failed})
				}
			}
		case <-hard.C:
			w.stop()
			return errors.New("bench worker: hard deadline passed")
		case now := <-tick.C:
			if now.Sub(lastProgress) >= time.Second {
				lastProgress = now
				w.send("progress")
			}
			pr := w.totals()
			if !ready && pr.EverReady+pr.Failed >= int64(w.cfg.Count) {
				ready = true
				w.send("ready")
			}
			if storming && !stormSent && w.stormDone() {
				stormSent = true
				w.send("storm_done")
			}
			if finishing && (w.delivered() || now.After(drainUntil)) {
				w.stop()
				res := w.result(failed)
				return w.enc.Encode(report{Type: "result", Worker: w.cfg.Worker, Progress: w.totals(), Result: res})
			}
		}
	}
}

// stormDone reports whether every socket dropped by the storm is back or
// has given up.
func (w *worker) stormDone() bool {
	for _, p := range w.pollers {
		s := &p.stats
		if !s.stormArmed.Load() || s.stormBack.Load()+s.stormFailed.Load() < s.stormTarget.Load() {
			return false
		}
	}
	return true
}

// delivered reports whether every poller has processed "finish" and holds
// every delivery it expects (counting the ones the test hook dropped).
func (w *worker) delivered() bool {
	for _, p := range w.pollers {
		s := &p.stats
		if !s.finishing.Load() || s.unique.Load()+s.testDropped.Load() < s.expected.Load() {
			return false
		}
	}
	return true
}

// stop ends every poller and waits for them; afterwards their state may be
// read from this goroutine.
func (w *worker) stop() {
	for _, p := range w.pollers {
		p.send(pollerCmd{kind: "stop"})
	}
	for _, p := range w.pollers {
		<-p.done
	}
}

// result merges the pollers' measurements. The pollers must be stopped.
func (w *worker) result(failed *failedSet) *workerResult {
	if failed == nil {
		failed = newFailedSet(nil, 0, 0)
	}
	r := &workerResult{
		Attempted: w.cfg.Count, Failures: map[string]int64{},
		StormFails: map[string]int64{}, DropReasons: map[string]int64{},
		Delivered: make([]int64, w.cfg.Buckets), Connected: make([]int64, w.cfg.Buckets),
	}
	var conn, lat, storm Histogram
	for _, p := range w.pollers {
		s := &p.stats
		r.Established += s.established.Load()
		r.Failed += s.failed.Load()
		r.EverReady += s.everReady.Load()
		r.Drops += s.drops.Load()
		r.Received += s.received.Load()
		r.Unique += s.unique.Load()
		r.Dups += s.dups.Load()
		r.Unexpected += s.unexpected.Load()
		r.TestDropped += s.testDropped.Load()
		r.StormTarget += s.stormTarget.Load()
		r.StormBack += s.stormBack.Load()
		r.StormFailed += s.stormFailed.Load()
		r.FirstRecv = minNonZero(r.FirstRecv, s.firstRecv.Load())
		r.FirstDial = minNonZero(r.FirstDial, s.firstDial.Load())
		r.LastRecv = max(r.LastRecv, s.lastRecv.Load())
		r.LastReady = max(r.LastReady, s.lastReady.Load())
		addCounts(r.Failures, p.connFails)
		addCounts(r.StormFails, p.stormFails)
		addCounts(r.DropReasons, p.dropReasons)
		conn.Merge(&p.connHist)
		lat.Merge(&p.latHist)
		storm.Merge(&p.stormHist)
		for i := range r.Delivered {
			r.Delivered[i] += p.delivered[i]
			r.Connected[i] += p.connected[i]
		}
		for _, c := range p.conns {
			if !c.wasReady || c.channel < 0 || w.cfg.Messages == 0 {
				continue
			}
			exp := int64(w.msgsFor(int(c.channel)) - failed.count(int(c.channel)))
			r.Expected += exp
			r.Lost += exp - int64(failed.received(int(c.channel), c.seen))
		}
	}
	r.ConnHist, r.LatHist, r.StormHist = conn.wire(), lat.wire(), storm.wire()
	r.Delivered, r.Connected = trimZeros(r.Delivered), trimZeros(r.Connected)
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		r.CPUUser = tvSeconds(ru.Utime)
		r.CPUSys = tvSeconds(ru.Stime)
		r.MaxRSSKiB = ru.Maxrss
	}
	return r
}

func minNonZero(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

func addCounts(dst, src map[string]int64) {
	for k, v := range src {
		dst[k] += v
	}
}

func trimZeros(s []int64) []int64 {
	n := len(s)
	for n > 0 && s[n-1] == 0 {
		n--
	}
	return s[:n]
}

func tvSeconds(tv unix.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// IsWorker reports whether this process was started as a bench worker.
func IsWorker() bool { return os.Getenv(WorkerEnv) == "1" }
