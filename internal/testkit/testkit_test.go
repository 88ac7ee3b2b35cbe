package testkit

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestFreePortsDistinctAndFree(t *testing.T) {
	seen := map[int]bool{}
	for range 3 {
		for _, p := range FreePorts(t, 50) { // more than one block
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			if p < portMin || p >= portMax {
				t.Fatalf("port %d outside %d-%d", p, portMin, portMax-1)
			}
		}
	}
	ln, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A port something listens on is skipped.
	port := ln.Addr().(*net.TCPAddr).Port
	if probe(port) {
		t.Fatalf("probe(%d) true while it is listened on", port)
	}
}

func TestPoll(t *testing.T) {
	var calls atomic.Int32
	if err := Poll(time.Second, func() error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls.Load() != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls.Load())
	}
	began := time.Now()
	err := Poll(50*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Fatalf("Poll = %v, want the last error", err)
	}
	if d := time.Since(began); d < 50*time.Millisecond || d > time.Second {
		t.Fatalf("Poll gave up after %v", d)
	}
}

func TestLeaked(t *testing.T) {
	base := Goroutines()
	stop := make(chan struct{})
	go func() { <-stop }()
	err := base.Leaked(30 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "TestLeaked") {
		t.Fatalf("Leaked = %v, want the leaked goroutine's stack", err)
	}
	close(stop)
	if err := base.Leaked(time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReady(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := WaitReady(addr, 100*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("WaitReady = %v, want the last status", err)
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitReady(addr, time.Second, exited); !errors.Is(err, ErrExited) {
		t.Fatalf("WaitReady = %v, want ErrExited", err)
	}
	time.AfterFunc(100*time.Millisecond, func() { ready.Store(true) })
	if err := WaitReady(addr, 5*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLayout(t *testing.T) {
	l := NewLayout(t, 3, "n")
	c := l.Cluster(1, "c", "local")
	if c.NodeName != "n2" || c.Bind != l.Gossip[1] || c.RouteListen != l.Routes[1] || len(c.Seeds) != 3 || len(c.Routes) != 3 {
		t.Fatalf("Cluster(1) = %+v", c)
	}
	addrs := map[string]bool{}
	for _, a := range append(append(append([]string(nil), l.Client...), l.Gossip...), l.Routes...) {
		addrs[a] = true
	}
	if len(addrs) != 9 {
		t.Fatalf("%d distinct addresses in %+v, want 9", len(addrs), l)
	}
	var n atomic.Int32
	err := StartAll(3, func(i int) error {
		n.Add(1)
		if i == 2 {
			return errors.New("two")
		}
		return nil
	})
	if n.Load() != 3 || err == nil || err.Error() != "two" {
		t.Fatalf("StartAll: %d calls, %v", n.Load(), err)
	}
}
