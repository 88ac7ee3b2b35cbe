package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/admin"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// dialN opens n sockets to the node and returns them.
func dialN(t *testing.T, n *Node, k int) []*client.Conn {
	t.Helper()
	url := "ws://" + n.Addr().String() + "/app/app-key?protocol=7"
	conns := make([]*client.Conn, k)
	for i := range conns {
		c, err := client.Dial(ctxT(t), url, client.Options{QueueSize: 16})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		t.Cleanup(func() { c.CloseNow() })
	}
	return conns
}

// closeCode reads c until it ends and returns the close code (0: not a
// close frame).
func closeCode(ctx context.Context, c *client.Conn) (int, error) {
	for {
		if _, err := c.Next(ctx); err != nil {
			var ce *client.CloseError
			if errors.As(err, &ce) {
				return ce.Code, nil
			}
			return 0, err
		}
	}
}

// POST /drain on the admin API: it answers at once with the status, readiness
// goes off before any socket closes, every socket gets 4200 over the window,
// new upgrades are refused with 4200, GET /drain follows it, and the node
// stops by itself (Done).
func TestAdminDrain(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		c.Shutdown.DrainWindow = configs.Duration(time.Second)
		c.Shutdown.Deadline = configs.Duration(10 * time.Second)
	})
	conns := dialN(t, n, 20)
	ac := admin.Client{URL: n.AdminURL()}
	var before DrainStatus
	if err := ac.Get(ctxT(t), "/drain", &before); err != nil || before.Phase != "serving" || before.Connections != 20 {
		t.Fatalf("GET /drain before: %+v, %v", before, err)
	}

	var wg sync.WaitGroup
	codes := make([]int, len(conns))
	closedAt := make([]time.Time, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			codes[i], _ = closeCode(ctxT(t), c)
			closedAt[i] = time.Now()
		})
	}
	began := time.Now()
	var st DrainStatus
	if err := ac.Post(ctxT(t), "/drain", nil, &st); err != nil {
		t.Fatalf("POST /drain: %v", err)
	}
	if st.Phase != "draining" || st.Window != "1s" || st.Deadline != "10s" {
		t.Fatalf("POST /drain answered %+v", st)
	}
	resp, err := http.Get("http://" + n.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the drain: %d", resp.StatusCode)
	}
	// A new socket is upgraded and told to go elsewhere.
	_, err = client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 4200 {
		t.Fatalf("dial while draining: %v, want close 4200", err)
	}
	if err := ac.Post(ctxT(t), "/drain", nil, &st); err != nil || st.Phase == "serving" { // again: the same drain
		t.Fatalf("second POST /drain: %+v, %v", st, err)
	}
	wg.Wait()
	var first, last time.Time
	for i, code := range codes {
		if code != 4200 {
			t.Errorf("socket %d closed with %d, want 4200", i, code)
		}
		if first.IsZero() || closedAt[i].Before(first) {
			first = closedAt[i]
		}
		if closedAt[i].After(last) {
			last = closedAt[i]
		}
	}
	// Spread: 20 sockets over 1 s are not closed all at once.
	if spread := last.Sub(first); spread < 500*time.Millisecond {
		t.Errorf("20 closes spread over %v, want most of the 1 s window", spread)
	}
	select {
	case <-n.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node not stopped 10 s after POST /drain")
	}
	t.Logf("drain: closes from %v to %v after POST, stopped %v after", first.Sub(began).Round(time.Millisecond),
		last.Sub(began).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// gateway.accept_rate: sockets over the budget are upgraded and closed with
// 4100, counted in herald_admission_closes_total; the ones within it work.
func TestAdmissionControl(t *testing.T) {
	n := startNode(t, func(c *configs.Config) { c.Gateway.AcceptRate = 5 })
	url := "ws://" + n.Addr().String() + "/app/app-key?protocol=7"
	ok, refused := 0, 0
	for i := range 12 {
		c, err := client.Dial(ctxT(t), url, client.Options{QueueSize: 16})
		var ce *client.CloseError
		switch {
		case err == nil:
			ok++
			defer c.CloseNow()
		case errors.As(err, &ce) && ce.Code == 4100:
			refused++
		default:
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	// The burst is one second's worth (5); the 12 dials take far less than
	// the 1.4 s that would refill 7 more, so at most a few get in late.
	if ok < 5 || ok > 7 || ok+refused != 12 {
		t.Fatalf("accept_rate 5: %d admitted, %d refused with 4100", ok, refused)
	}
	if got := n.Gateway().Stats().AdmissionCloses; got != uint64(refused) {
		t.Fatalf("AdmissionCloses %d, want %d", got, refused)
	}
	resp, err := http.Get("http://" + n.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("herald_admission_closes_total %d", refused); !strings.Contains(string(b), want) {
		t.Fatalf("/metrics lacks %q", want)
	}
	// The budget refills: a second later one more gets in.
	testkit.WaitFor(t, 3*time.Second, func() error {
		c, err := client.Dial(ctxT(t), url, client.Options{QueueSize: 16})
		if err != nil {
			return err
		}
		c.CloseNow()
		return nil
	})
}

// TestReloadAcceptRate: gateway.accept_rate applies at a reload, without a
// restart, and is lifted again by the next one.
func TestReloadAcceptRate(t *testing.T) {
	n := startNode(t, nil)
	url := "ws://" + n.Addr().String() + "/app/app-key?protocol=7"
	refusedOf := func(dials int) int {
		refused := 0
		for i := range dials {
			c, err := client.Dial(ctxT(t), url, client.Options{QueueSize: 16})
			var ce *client.CloseError
			switch {
			case err == nil:
				c.CloseNow()
			case errors.As(err, &ce) && ce.Code == 4100:
				refused++
			default:
				t.Fatalf("dial %d: %v", i, err)
			}
		}
		return refused
	}
	if r := refusedOf(12); r != 0 {
		t.Fatalf("no accept_rate: %d refused", r)
	}
	limited := *n.cfg
	limited.Gateway.AcceptRate = 3
	ch, err := n.Reload(&limited)
	if err != nil || ch.AcceptRate == nil || *ch.AcceptRate != 3 || slices.Contains(ch.NeedsRestart, "gateway.accept_rate") {
		t.Fatalf("reload to accept_rate 3: %+v %v", ch, err)
	}
	if r := refusedOf(12); r < 5 {
		t.Fatalf("accept_rate 3 after reload: only %d of 12 quick dials refused", r)
	}
	ch, err = n.Reload(n.cfg) // back to 0: unlimited
	if err != nil || ch.AcceptRate == nil || *ch.AcceptRate != 0 {
		t.Fatalf("reload back to unlimited: %+v %v", ch, err)
	}
	if r := refusedOf(12); r != 0 {
		t.Fatalf("accept_rate lifted by reload: %d refused", r)
	}
}
