package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herald/client"
	"herald/internal/procfs"
	"herald/internal/testkit"
)

// TestDescriptorExhaustion runs a real node whose open-files limit is cut
// (prlimit) to what it holds plus 40, fills it with 30 WebSocket clients,
// then dials 30 more: the node accepts what fits and pauses accepting
// (gateway/accept.go pauseAccept) with the rest waiting in the kernel's
// backlog. Meanwhile it does not spin (a level-triggered listening socket
// polled without a descriptor to accept into would burn a core), its
// established sockets keep answering, and once the first 30 clients close,
// every waiting socket is upgraded, the node serves HTTP again and
// herald_accept_pauses_total counts the pauses. Nothing is lost: the node
// stays up throughout.
func TestDescriptorExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a herald process")
	}
	h := startHerald(t)
	pid := h.proc.Pid

	const established, waiting = 30, 30
	held := openFDs(t, pid)
	limit := uint64(held + established + 10)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Skipf("prlimit on the node: %v", err)
	}
	t.Logf("node %d holds %d descriptors; its limit is now %d", pid, held, limit)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var clients []*client.Conn
	for i := range established {
		c, err := client.Dial(ctx, "ws://"+h.Addr+"/app/app-key?protocol=7&client=go-e2e&version=1", client.Options{})
		if err != nil {
			t.Fatalf("client %d of %d: %v", i+1, established, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}

	// 30 more: about 10 fit, the rest wait in the backlog.
	var socks []*upgradeSock
	for range waiting {
		socks = append(socks, dialUpgrade(t, h.Addr))
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(h.Output(), "accept paused") {
			return fmt.Errorf("no \"accept paused\" warning in the node's log")
		}
		return nil
	})
	answered := 0
	for _, s := range socks {
		if s.established(200 * time.Millisecond) {
			answered++
		}
	}
	if answered == waiting {
		t.Fatalf("all %d extra sockets were upgraded within a limit that leaves room for about 10", waiting)
	}
	t.Logf("out of descriptors: %d of %d extra sockets upgraded, %d waiting", answered, waiting, waiting-answered)

	// Paused, not spinning: the node's CPU while the backlog waits.
	cpu0 := processCPU(t, pid)
	time.Sleep(2 * time.Second)
	if used := processCPU(t, pid) - cpu0; used > 700*time.Millisecond {
		t.Errorf("the node used %v of CPU in 2 s with nothing to do but wait for a descriptor (a spinning accept?)", used)
	}
	// Established sockets keep working.
	for i, c := range clients[:5] {
		if err := c.Send("pusher:ping", "", map[string]any{}); err != nil {
			t.Fatalf("ping on client %d: %v", i, err)
		}
		if _, err := c.WaitFor(ctx, "pusher:pong", ""); err != nil {
			t.Fatalf("client %d got no pong while the node was out of descriptors: %v", i, err)
		}
	}

	// Descriptors free up: every waiting socket gets its connection.
	for _, c := range clients {
		_ = c.Close()
	}
	for i, s := range socks {
		if !s.established(15 * time.Second) {
			t.Fatalf("extra socket %d: no connection_established within 15 s of descriptors freeing up (read %q)", i, s.read)
		}
	}
	for _, s := range socks[:20] {
		_ = s.conn.Close()
	}
	if err := testkit.WaitReady(h.Addr, 10*time.Second, nil); err != nil {
		t.Fatalf("the node after the exhaustion: %v", err)
	}
	pauses := metricValue(t, "http://"+h.Addr, "herald_accept_pauses_total")
	if pauses < 1 {
		t.Errorf("herald_accept_pauses_total = %v, want at least 1", pauses)
	}
	t.Logf("all %d extra sockets upgraded once descriptors freed up; herald_accept_pauses_total %v", waiting, pauses)
}

// upgradeSock is a raw TCP connection that sent a WebSocket upgrade to
// /app/app-key and reads what comes back.
type upgradeSock struct {
	conn net.Conn
	read []byte
	done bool
}

func dialUpgrade(t *testing.T, addr string) *upgradeSock {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	req := "GET /app/app-key?protocol=7&client=raw&version=1 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write the upgrade: %v", err)
	}
	return &upgradeSock{conn: c}
}

// established reads for up to d and reports whether the socket has had its
// 101 and pusher:connection_established.
func (s *upgradeSock) established(d time.Duration) bool {
	if s.done {
		return true
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for !s.done {
		n, err := s.conn.Read(buf)
		s.read = append(s.read, buf[:n]...)
		s.done = strings.HasPrefix(string(s.read), "HTTP/1.1 101") && strings.Contains(string(s.read), "pusher:connection_established")
		if err != nil {
			break
		}
	}
	return s.done
}

// openFDs is how many descriptors process pid has open.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("descriptors of %d: %v", pid, err)
	}
	return len(ents)
}

// processCPU is the user and system CPU process pid has used.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	d, err := procfs.CPU(pid)
	if err != nil {
		t.Fatalf("CPU of %d: %v", pid, err)
	}
	return d
}

// metricValue reads one unlabelled metric from base's /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, sc.Text())
			}
			return f
		}
	}
	t.Fatalf("no %s in %s/metrics", name, base)
	return 0
}
