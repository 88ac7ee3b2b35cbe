package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"herald/internal/testkit"
)

// The server binary for the integration tests, built on first use into
// binDir (so unit tests and benchmarks do not need it).
var (
	binDir    string
	buildOnce sync.Once
	heraldBin string
	buildErr  error
)

func buildHerald(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		bin := filepath.Join(binDir, "herald")
		out, err := exec.Command("go", "build", "-o", bin, "herald/cmd/herald").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build herald: %v\n%s", err, out)
			return
		}
		heraldBin = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return heraldBin
}

func TestMain(m *testing.M) {
	if IsWorker() {
		// The bench parent re-executes this test binary as its worker.
		if err := RunWorker(os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	var err error
	if binDir, err = os.MkdirTemp("", "herald-bench-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := testkit.Run(m)
	os.RemoveAll(binDir)
	os.Exit(code)
}

// server is a herald process started for one test.
type server struct {
	url string
	pid int
}

// startServer runs the herald binary on a free loopback port with its own
// data directory and no NATS client port (its default, 4222, is one per
// machine), waits for GET /readyz, and kills it when the test ends.
func startServer(t *testing.T) server {
	t.Helper()
	return runServer(t, "")
}

// runServer is startServer with the NATS client port on natsAddr ("": none).
func runServer(t *testing.T, natsAddr string) server {
	t.Helper()
	return runServerYAML(t, natsAddr, "")
}

// runServerYAML is runServer with more top-level config (YAML) appended.
func runServerYAML(t *testing.T, natsAddr, extra string) server {
	t.Helper()
	addr := testkit.FreeAddr(t)
	conf := filepath.Join(t.TempDir(), "herald.yaml")
	// A SIGTERM closes every socket at once (drain_window 0), as the tests
	// that stop the server while sockets are held expect.
	if !strings.Contains(extra, "shutdown:") {
		extra += "shutdown:\n  drain_window: 0s\n"
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, "bus:\n  client_listen: %q\nadmin:\n  listen: \"127.0.0.1:0\"\n%s", natsAddr, extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(buildHerald(t), "serve", "--listen", addr, "--data", t.TempDir(), "--config", conf)
	log, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("server log:\n%s", lastLines(string(b), 30))
		}
	})
	if err := testkit.WaitReady(addr, 15*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	return server{url: "ws://" + addr, pid: pid}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// testConfig is a small run against s.
func testConfig(s server, scenario string) Config {
	return Config{
		Scenario: scenario, URL: s.url, AppID: "app-id", Key: "app-key", Secret: "app-secret",
		Conns: 200, Channels: 4, Messages: 50, Hold: 500 * time.Millisecond,
		Drain: 3 * time.Second, Timeout: 40 * time.Second, Workers: 2,
	}
}

func runBench(t *testing.T, cfg Config) *Results {
	t.Helper()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	noChildren(t)
	return rep.Results
}

// noChildren fails when a worker process outlived Run: the only children
// left may be the test's servers.
func noChildren(t *testing.T) {
	t.Helper()
	for _, pid := range childPIDs() {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		exited := strings.Contains(string(stat), ") Z ") // a server the test stopped, not reaped yet
		if !strings.Contains(string(b), "serve") && !exited {
			t.Errorf("process %d (%q) outlived the run", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func childPIDs() []int {
	var out []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

func TestConnect(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Connect)
	cfg.Channels = 0
	cfg.Inflight = 50
	res := runBench(t, cfg)
	if res.Established != 200 || res.Failed != 0 || res.Attempted != 200 {
		t.Fatalf("established %d failed %d attempted %d, want 200/0/200 (failures %v)", res.Established, res.Failed, res.Attempted, res.Failures)
	}
	if res.TimeToEstablishedMs.P50 <= 0 || res.ConnectsPerS <= 0 || res.ClientCPU.TotalS <= 0 {
		t.Fatalf("missing measurements: %+v", res)
	}
	if want := max(1, (cfg.Inflight+cfg.Workers-1)/cfg.Workers) * cfg.Workers; cfg.Inflight > 0 && res.ConnectInflight != want {
		t.Fatalf("connect_inflight %d, want %d (--inflight %d over %d workers)", res.ConnectInflight, want, cfg.Inflight, cfg.Workers)
	}
}

func TestConnectRate(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Connect)
	cfg.Conns, cfg.Rate, cfg.Workers = 100, 200, 1
	res := runBench(t, cfg)
	if res.Established != 100 {
		t.Fatalf("established %d, want 100", res.Established)
	}
	// 100 dials at 200/s take about half a second.
	if res.ConnectS < 0.4 || res.ConnectS > 5 {
		t.Fatalf("connect took %.3f s, want about 0.5 s at 200/s", res.ConnectS)
	}
}

func TestFanout(t *testing.T) {
	for _, tc := range []struct {
		name      string
		batch     int
		rate      float64
		dropEvery int
	}{
		{name: "events"},
		{name: "batch", batch: 5},
		{name: "rate", rate: 500},
		{name: "drop", dropEvery: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t)
			cfg := testConfig(s, Fanout)
			cfg.Batch, cfg.Rate, cfg.DropEvery, cfg.ServerPID = tc.batch, tc.rate, tc.dropEvery, s.pid
			res := runBench(t, cfg)
			f := res.FanoutResults
			if f == nil || res.Subscribed != 200 {
				t.Fatalf("subscribed %d, fanout %+v", res.Subscribed, f)
			}
			want := int64(200 / 4 * 50)
			if f.Published != 50 || f.Expected != want || f.Duplicates != 0 || f.Unexpected != 0 {
				t.Fatalf("published %d expected %d dups %d unexpected %d", f.Published, f.Expected, f.Duplicates, f.Unexpected)
			}
			if tc.dropEvery == 0 {
				if f.Delivered != want || f.Lost != 0 {
					t.Fatalf("delivered %d lost %d, want %d and 0", f.Delivered, f.Lost, want)
				}
			} else {
				if f.TestDropped == 0 || f.Lost != f.TestDropped || f.Delivered != want-f.TestDropped {
					t.Fatalf("dropped %d lost %d delivered %d, want lost == dropped > 0", f.TestDropped, f.Lost, f.Delivered)
				}
			}
			if f.LatencyMs.P50 <= 0 || f.LatencyMs.P50 > 5000 || f.DeliveriesPerS <= 0 {
				t.Fatalf("latency %+v deliveries/s %v", f.LatencyMs, f.DeliveriesPerS)
			}
			if res.Server == nil || res.Server.CPUS <= 0 {
				t.Fatalf("server stats %+v", res.Server)
			}
		})
	}
}

// TestPublish: the publish scenario reports events_per_s (the 200s per
// second) and deliveries_per_s, from several publishers over many channels.
func TestPublish(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, PublishBound)
	cfg.Conns, cfg.Channels, cfg.Publishers, cfg.Messages, cfg.ServerPID = 200, 50, 8, 400, s.pid
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	noChildren(t)
	f := rep.Results.FanoutResults
	if rep.Scenario != PublishBound || rep.Params.Publishers != 8 || f == nil {
		t.Fatalf("scenario %q publishers %d fanout %+v", rep.Scenario, rep.Params.Publishers, f)
	}
	if f.Published != 400 || f.PublishErrors != 0 || f.Expected != 400*200/50 || f.Delivered != f.Expected || f.Lost != 0 {
		t.Fatalf("published %d (errors %d), delivered %d of %d, lost %d", f.Published, f.PublishErrors, f.Delivered, f.Expected, f.Lost)
	}
	if f.EventsPerS <= 0 || f.EventsPerS != f.PublishPerS || f.DeliveriesPerS <= 0 {
		t.Fatalf("events_per_s %v (publish_per_s %v), deliveries_per_s %v", f.EventsPerS, f.PublishPerS, f.DeliveriesPerS)
	}
	var out bytes.Buffer
	if err := json.NewEncoder(&out).Encode(rep); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"events_per_s":`, `"deliveries_per_s":`, `"scenario":"publish"`} {
		if !strings.Contains(out.String(), field) {
			t.Fatalf("report lacks %s: %s", field, out.String())
		}
	}
}

// TestPublishDefaults: the publish scenario's unset sizes are 10,000
// subscribers over 1,000 channels, 8 publishers, 20,000 events.
func TestPublishDefaults(t *testing.T) {
	c := DefaultConfig(Config{Scenario: PublishBound, Channels: -1})
	if c.Conns != 10000 || c.Channels != 1000 || c.Publishers != 8 || c.Messages != 20000 || c.Batch != 1 {
		t.Fatalf("defaults %+v", c)
	}
	c.URL, c.AppID, c.Key, c.Secret = "ws://127.0.0.1:1", "id", "key", "secret"
	c.RESTURL = " http://127.0.0.1:1/, http://127.0.0.1:2 ,"
	if got := c.restURLs(); len(got) != 2 || got[0] != "http://127.0.0.1:1" || got[1] != "http://127.0.0.1:2" {
		t.Fatalf("rest urls %q", got)
	}
	if err := c.validate(); err != nil {
		t.Fatalf("two REST URLs for publish: %v", err)
	}
	c.Scenario = Idle
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "several URLs") {
		t.Fatalf("two REST URLs for idle: %v", err)
	}
	c = DefaultConfig(Config{Scenario: PublishBound, Conns: 300, Channels: 30, Publishers: 2, Messages: 7})
	if c.Conns != 300 || c.Channels != 30 || c.Publishers != 2 || c.Messages != 7 {
		t.Fatalf("explicit sizes changed: %+v", c)
	}
}

func TestIdle(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Idle)
	cfg.Conns, cfg.ServerPID = 500, s.pid
	res := runBench(t, cfg)
	ir := res.IdleResults
	if res.Established != 500 || res.Subscribed != 500 || res.Drops != 0 {
		t.Fatalf("established %d subscribed %d drops %d", res.Established, res.Subscribed, res.Drops)
	}
	if ir == nil || ir.RSSBeforeKiB <= 0 || ir.RSSAfterKiB <= 0 || ir.RSSPerConnBytes <= 0 {
		t.Fatalf("idle results %+v", ir)
	}
	if ir.Sockets != 1000 {
		t.Fatalf("sockets %d, want 1000 (both ends on loopback)", ir.Sockets)
	}
}

func TestStorm(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Storm)
	res := runBench(t, cfg)
	sr := res.StormResults
	if sr == nil || sr.StormConns != 200 || sr.Reconnected != 200 || sr.ReconnectFailed != 0 {
		t.Fatalf("storm %+v", sr)
	}
	if sr.TimeToAllBackMs <= 0 || sr.BackMs.Max != sr.TimeToAllBackMs {
		t.Fatalf("storm times %+v", sr)
	}
}

// A storm against admission control (gateway.accept_rate): the sockets over
// the budget are refused with 4100 and come back after their back-off, all
// of them; the bystander's pings are measured before and during.
func TestStormAdmission(t *testing.T) {
	s := runServerYAML(t, "", "gateway:\n  accept_rate: 100\n")
	cfg := testConfig(s, Storm)
	cfg.Rate = 80 // the connect phase stays within the budget
	res := runBench(t, cfg)
	sr := res.StormResults
	if res.Established != 200 || sr == nil || sr.StormConns != 200 || sr.Reconnected != 200 || sr.ReconnectFailed != 0 {
		t.Fatalf("established %d, storm %+v", res.Established, sr)
	}
	if sr.Refused4100 == 0 || sr.Refused4100 != sr.ReconnectFailures[refused4100] {
		t.Fatalf("200 redials at once against accept_rate 100: %d refused with 4100 (failures %v)", sr.Refused4100, sr.ReconnectFailures)
	}
	// The refused ones waited their second: all back takes at least that.
	if sr.TimeToAllBackMs < 1000 {
		t.Fatalf("all back in %.0f ms though %d were refused with 4100", sr.TimeToAllBackMs, sr.Refused4100)
	}
	by := sr.Bystander
	if by == nil || by.Dropped || by.PingsB == 0 || by.PingsD == 0 {
		t.Fatalf("bystander %+v", by)
	}
}

func TestPlot(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Fanout)
	cfg.Workers, cfg.Plot = 1, filepath.Join(t.TempDir(), "out.png")
	runBench(t, cfg)
	b, err := os.ReadFile(cfg.Plot)
	if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatalf("plot: %v (%d bytes)", err, len(b))
	}
}

func TestTimeoutStopsRun(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Idle)
	cfg.Hold, cfg.Timeout = time.Minute, 1500*time.Millisecond
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if err == nil || rep == nil || rep.Error == "" {
		t.Fatalf("want a timeout error with a report, got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("run took %v after a 1.5 s timeout", d)
	}
	// What was measured before the timeout is still reported.
	if rep.Results.Established != 200 {
		t.Fatalf("partial report: established %d, want 200", rep.Results.Established)
	}
	noChildren(t)
}

func TestRefusesServerDown(t *testing.T) {
	addr := testkit.FreeAddr(t) // nothing listens there
	cfg := testConfig(server{url: "ws://" + addr}, Connect)
	cfg.Conns, cfg.Workers = 20, 1
	res := runBench(t, cfg)
	if res.Established != 0 || res.Failed != 20 || res.Failures["econnrefused"] != 20 {
		t.Fatalf("established %d failed %d failures %v", res.Established, res.Failed, res.Failures)
	}
}

func TestConfigErrors(t *testing.T) {
	base := Config{Scenario: Connect, URL: "ws://127.0.0.1:1", AppID: "a", Key: "k", Secret: "s", Conns: 10}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "remote", mod: func(c *Config) { c.URL = "ws://192.0.2.1:80" }, want: "allow-remote"},
		{name: "remote rest", mod: func(c *Config) { c.RESTURL = "http://192.0.2.1:80" }, want: "allow-remote"},
		{name: "wss", mod: func(c *Config) { c.URL = "wss://127.0.0.1:443" }, want: "only ws://"},
		{name: "scenario", mod: func(c *Config) { c.Scenario = "nope" }, want: "unknown scenario"},
		{name: "per worker", mod: func(c *Config) { c.Conns, c.Workers = 40000, 2 }, want: "per worker"},
		{name: "batch", mod: func(c *Config) { c.Scenario, c.Batch = Fanout, 11 }, want: "batch"},
		{name: "conns", mod: func(c *Config) { c.Conns = 0 }, want: "conns"},
		{name: "failover one url", mod: func(c *Config) { c.Scenario, c.KillPID = Failover, 1 }, want: "at least two nodes"},
		{name: "failover kill-pid", mod: func(c *Config) { c.Scenario, c.URL = Failover, "ws://127.0.0.1:1,ws://127.0.0.1:2" }, want: "kill-pid"},
		{name: "kill-pid fanout", mod: func(c *Config) { c.Scenario, c.KillPID = Fanout, 1 }, want: "presence and failover"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			_, err := Run(context.Background(), c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
	c := base
	c.AllowRemote, c.URL = true, "ws://192.0.2.1:80"
	c = DefaultConfig(c)
	if err := c.validate(); err != nil {
		t.Fatalf("--allow-remote: %v", err)
	}
}

func TestSourcesFor(t *testing.T) {
	c := DefaultConfig(Config{Scenario: Connect, URL: "ws://127.0.0.1:6001", PerSource: 10})
	next := 0
	a, _ := c.sourcesFor(&next, 25)
	b, _ := c.sourcesFor(&next, 5)
	if strings.Join(a, ",") != "127.0.0.2,127.0.0.3,127.0.0.4" || strings.Join(b, ",") != "127.0.0.5" {
		t.Fatalf("sources %v %v", a, b)
	}
	c.URL = "ws://localhost:6001"
	if s, _ := c.sourcesFor(&next, 5); s != nil {
		t.Fatalf("named host got source addresses %v", s)
	}
}

// signalWriter calls f once when a progress line contains word.
type signalWriter struct {
	word string
	once sync.Once
	f    func()
}

func (w *signalWriter) Write(b []byte) (int, error) {
	if strings.Contains(string(b), w.word) {
		w.once.Do(w.f)
	}
	return len(b), nil
}

func TestIdleCountsDrops(t *testing.T) {
	s := startServer(t)
	cfg := testConfig(s, Idle)
	cfg.Hold = 4 * time.Second
	// Stop the server (gracefully: it closes every socket with 4200) while
	// the sockets are held.
	cfg.Progress = &signalWriter{word: "holding", f: func() { _ = syscall.Kill(s.pid, syscall.SIGTERM) }}
	res := runBench(t, cfg)
	if res.Established != 200 || res.Drops != 200 {
		t.Fatalf("established %d drops %d (%v), want 200 and 200", res.Established, res.Drops, res.DropReasons)
	}
	if n := res.DropReasons["close_4200"] + res.DropReasons["eof"]; n != 200 {
		t.Fatalf("drop reasons %v", res.DropReasons)
	}
}
