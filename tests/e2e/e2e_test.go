// Package e2e starts real Herald processes and drives them with real
// clients: the pusher-js client and the `pusher` node server SDK (tests/js).
//
// Run with `go test ./tests/e2e/` from the module root after `npm ci` in
// tests/js (`make test` does both).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"herald/internal/testkit"
)

var (
	// moduleRoot is the directory holding go.mod (two levels up from here).
	moduleRoot string
	// heraldPath is the binary TestMain built, valid when buildErr is nil.
	heraldPath string
	// buildErr is why TestMain could not build herald; every test that needs
	// the binary fails with it.
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root

	dir, err := os.MkdirTemp("", "herald-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	heraldPath = filepath.Join(dir, "herald")
	buildErr = build(heraldPath)

	// ^C or a SIGTERM to the test binary skips t.Cleanup: kill what we started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		killAll()
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "e2e: %v: killed the Herald and node processes started by the tests\n", s)
		os.Exit(2)
	}()

	return testkit.Run(m)
}

// running holds the processes the tests started and have not reaped yet.
var running = struct {
	sync.Mutex
	cmds map[*exec.Cmd]bool
}{cmds: map[*exec.Cmd]bool{}}

func track(cmd *exec.Cmd) {
	running.Lock()
	defer running.Unlock()
	running.cmds[cmd] = true
}

func untrack(cmd *exec.Cmd) {
	running.Lock()
	defer running.Unlock()
	delete(running.cmds, cmd)
}

func killAll() {
	running.Lock()
	defer running.Unlock()
	for cmd := range running.cmds {
		killGroup(cmd)
	}
}

// findModuleRoot returns ../.. (the test runs in tests/e2e) after checking it
// is the herald module.
func findModuleRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("module root not found from the test directory: %w", err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(mod)), "\n")
	if strings.TrimSpace(first) != "module herald" {
		return "", fmt.Errorf("%s/go.mod is not module herald (starts with %q)", root, first)
	}
	return root, nil
}

// build compiles herald/cmd/herald to out with the go command from PATH.
func build(out string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go command not found in PATH: %w", err)
	}
	cmd := exec.Command(gobin, "build", "-o", out, "herald/cmd/herald")
	cmd.Dir = moduleRoot
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("`go build -o %s herald/cmd/herald` in %s failed: %v\n%s", out, moduleRoot, err, output)
	}
	return nil
}

// heraldBinary returns the path of the built binary, or fails the test with
// the build output.
func heraldBinary(t *testing.T) string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("cannot run Herald: %v", buildErr)
	}
	return heraldPath
}

// lockedBuffer collects a process's output; exec copies into it from its own
// goroutines while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Herald is one running `herald serve` process.
type Herald struct {
	Host string // 127.0.0.1
	Port int
	Addr string // host:port, for ws://Addr/app/app-key and http://Addr/apps/app-id/...

	output *lockedBuffer
	proc   *os.Process // for signals other than the SIGTERM at cleanup (ops_test.go)
}

// Output returns everything the process wrote so far (its logs are on stderr).
func (h *Herald) Output() string { return h.output.String() }

const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// startHerald runs `herald serve --listen 127.0.0.1:PORT --data TMPDIR
// extraArgs...` and waits until GET /readyz answers 200. The process gets
// SIGTERM when the test ends (SIGKILL after 10 s), and its output is logged
// if the test failed.
func startHerald(t *testing.T, extraArgs ...string) *Herald {
	t.Helper()
	return startHeraldWith(t, heraldOpts{}, extraArgs...)
}

// heraldOpts is what startHeraldWith adds to startHerald's process.
type heraldOpts struct {
	env []string        // more environment (HERALD_TLS_CERT_FILE=...)
	tls *http.Transport // the client port serves TLS: readiness over https:// with this transport
}

func startHeraldWith(t *testing.T, o heraldOpts, extraArgs ...string) *Herald {
	t.Helper()
	bin := heraldBinary(t)
	// TempDir first: cleanups run last-in first-out, so the process is gone
	// before its data directory is removed.
	dataDir := t.TempDir()

	port := testkit.FreePort(t)
	h := &Herald{Host: "127.0.0.1", Port: port, output: &lockedBuffer{}}
	h.Addr = net.JoinHostPort(h.Host, strconv.Itoa(port))

	args := append([]string{"serve", "--listen", h.Addr, "--data", dataDir}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dataDir
	// Several nodes run at once across test packages: the NATS client port
	// (127.0.0.1:4222 by default) goes to a random free port instead.
	// No drain window: SIGTERM at the end of a test closes at once
	// (drain_test.go sets its own).
	cmd.Env = append(os.Environ(), "HERALD_BUS_CLIENT_LISTEN=127.0.0.1:0", "HERALD_ADMIN_LISTEN=127.0.0.1:0",
		"HERALD_SHUTDOWN_DRAIN_WINDOW=0s")
	cmd.Env = append(cmd.Env, o.env...)
	cmd.Stdout = h.output
	cmd.Stderr = h.output
	// Own process group (and, on Linux, SIGKILL if the test binary dies), so
	// nothing Herald starts outlives the test.
	setProcAttrs(cmd)
	// Bound the wait for the output copiers if a child kept the pipe open.
	cmd.WaitDelay = 5 * time.Second

	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s %s: %v", bin, strings.Join(args, " "), err)
	}
	track(cmd)
	h.proc = cmd.Process
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()

	t.Cleanup(func() {
		defer untrack(cmd)
		if !stop(cmd, exited) {
			// Logged, not failed: a configured drain window may legitimately
			// be longer than stopTimeout.
			t.Logf("herald on %s did not exit within %v of SIGTERM; killed", h.Addr, stopTimeout)
		}
		if t.Failed() {
			t.Logf("herald %s output:\n%s", strings.Join(args, " "), h.Output())
		}
	})

	ready := func() error { return testkit.WaitReady(h.Addr, readyTimeout, exited) }
	if o.tls != nil {
		ready = func() error { return testkit.WaitReadyURL("https://"+h.Addr+"/readyz", o.tls, readyTimeout, exited) }
	}
	if err := ready(); err != nil {
		select {
		case <-exited:
			// The cleanup above logs the output.
			t.Fatalf("herald %s exited before it was ready: %v", strings.Join(args, " "), waitErr)
		default:
		}
		t.Fatalf("herald on %s: %v", h.Addr, err)
	}
	return h
}

// stop sends SIGTERM, waits up to stopTimeout, then kills the process group.
// It reports whether the process exited by itself.
func stop(cmd *exec.Cmd, exited <-chan struct{}) bool {
	select {
	case <-exited:
		killGroup(cmd) // anything it left behind
		return true
	default:
	}
	_ = terminate(cmd)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-exited:
		killGroup(cmd)
		return true
	case <-timer.C:
		killGroup(cmd)
		<-exited
		return false
	}
}

// TestPusherJS runs the node tests in tests/js (real pusher-js and the real
// `pusher` server SDK) against one Herald node.
func TestPusherJS(t *testing.T) {
	skipUnderRace(t)
	h := startHerald(t)
	runJS(t, h, "tests/js/")
}

// runJS runs `node --test` on target (a tests/js file or the directory)
// against h, with env added to the environment.
func runJS(t *testing.T, h *Herald, target string, env ...string) {
	t.Helper()
	jsDir := filepath.Join(moduleRoot, "tests", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules")); err != nil {
		t.Fatalf("%s is missing: run `make test` (npm ci in tests/js) first", filepath.Join(jsDir, "node_modules"))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH (Node.js 20 or later is needed): %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// node runs each test file in a child process; the whole group is killed
	// if the deadline passes.
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", target)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(),
		"HERALD_HOST="+h.Host,
		"HERALD_PORT="+strconv.Itoa(h.Port),
		"NO_COLOR=1",
	)
	cmd.Env = append(cmd.Env, env...)
	setProcAttrs(cmd)
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	cmd.WaitDelay = 10 * time.Second
	var output lockedBuffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	track(cmd)
	err = cmd.Wait()
	killGroup(cmd) // no test-file process outlives the run
	untrack(cmd)
	out := []byte(output.String())
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("node --test %s did not finish within 5 minutes; output:\n%s", target, out)
	}
	if err != nil {
		t.Fatalf("node --test %s failed (%v); output:\n%s", target, err, out)
	}
	t.Logf("node --test %s passed:\n%s", target, summary(out))
}

// summary keeps the spec reporter's "ℹ" lines (totals and diagnostics) and
// TAP "#" lines, in case another reporter is configured.
func summary(out []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "ℹ ") || strings.HasPrefix(line, "# ") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		return string(out)
	}
	return b.String()
}

// skipUnderRace skips a test whose every client is a node or browser process:
// the Herald processes are built without -race, so the race run of `make
// test` (Makefile RACE_PKGS) would only repeat the plain run's minutes. Tests
// that run Go clients (client.Session, the SDK, webhook receivers) in the test
// binary keep running under the race detector.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("no Go client in the test binary: the plain run covers it, the race run adds nothing")
	}
}
