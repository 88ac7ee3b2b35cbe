//go:build linux

package node

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// The node on a full disk (docs/operations.md "Disk full"): each test
// stores on a small tmpfs it fills, and is skipped where mounting is not
// permitted (testkit.Tmpfs says so).

// readyz is GET /readyz's status and body.
func readyz(t *testing.T, n *Node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReadyz waits until /readyz answers want and returns its body.
func waitReadyz(t *testing.T, n *Node, want int) string {
	t.Helper()
	var body string
	testkit.WaitFor(t, 15*time.Second, func() error {
		var status int
		status, body = readyz(t, n)
		if status != want {
			return fmt.Errorf("/readyz %d %s, want %d", status, body, want)
		}
		return nil
	})
	return body
}

// wantStoreFull checks a REST publish and a NATS API publish are refused
// with the same 507 JSON error naming reason.
func wantStoreFull(t *testing.T, n *Node, reason string) {
	t.Helper()
	status, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "while full", Channels: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"error":"Insufficient storage: the node's store is full (` + reason + `); the event was not stored, retry later","status":507}`
	if status != 507 || string(body) != want {
		t.Fatalf("REST publish while full: %d %s, want 507 %s", status, body, want)
	}
	nc, _ := natsConn(t, n, "app-id", "app-secret", "app-id")
	if got := request(t, nc, "herald.app-id.api.events", []byte(`{"name":"e","channels":["orders"],"data":"while full"}`)); string(got) != want {
		t.Fatalf("NATS API publish while full: %s, want %s", got, want)
	}
}

// replayAll subscribes a new socket to channel with a resume from serial 0
// and returns the events the stream replays (docs/protocol-extensions.md).
func replayAll(t *testing.T, n *Node, channel string, events int) []client.Event {
	t.Helper()
	c := dialWS(t, n)
	if err := c.Send("pusher:subscribe", "", map[string]any{"channel": channel, "herald_resume": 0}); err != nil {
		t.Fatal(err)
	}
	var got []client.Event
	for len(got) < events {
		ev, err := c.Next(ctxT(t))
		if err != nil {
			t.Fatalf("replay of %s: %v after %d events", channel, err, len(got))
		}
		if ev.Channel == channel && !strings.HasPrefix(ev.Event, "pusher") {
			got = append(got, ev)
		}
	}
	return got
}

func mustTrigger(t *testing.T, n *Node, name, channel string) {
	t.Helper()
	status, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: name, Data: name, Channels: []string{channel}})
	if err != nil || status != 200 {
		t.Fatalf("trigger %s: %d %s %v", name, status, body, err)
	}
}

// TestDiskFilledByAnotherProcess: while another process has filled the
// data dir's filesystem, publishes are refused at once with 507 JSON (REST
// and NATS API alike) and counted, /readyz is 503 with the reason, a
// connected subscriber stays connected and a new one still gets what is
// stored replayed; once the file is gone the node takes publishes again by
// itself, and the subscriber gets them.
func TestDiskFilledByAnotherProcess(t *testing.T) {
	dir := testkit.Tmpfs(t, 64<<20)
	n := startNode(t, func(c *configs.Config) { c.DataDir = dir })
	sub := dialWS(t, n, "orders")
	mustTrigger(t, n, "before", "orders")
	if _, err := sub.WaitFor(ctxT(t), "before", "orders"); err != nil {
		t.Fatal(err)
	}

	// Publish while the disk fills, as the issue found it: each publish is
	// stored (200) or refused (507), never left to wait out the publish
	// timeout (503) on a store that broke under it.
	stop, published := make(chan struct{}), make(chan map[int]int, 1)
	go func() {
		statuses := map[int]int{}
		defer func() { published <- statuses }()
		data := strings.Repeat("x", 8000)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			status, _, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: "filling", Data: data, Channels: []string{fmt.Sprint("fill", i%20)}})
			if err != nil {
				status = -1
			}
			statuses[status]++
		}
	}()
	fill := filepath.Join(dir, "other-process")
	testkit.FillDisk(t, fill)
	body := waitReadyz(t, n, 503)
	close(stop)
	statuses := <-published
	t.Logf("publishes while the disk filled, by status: %v", statuses)
	for status := range statuses {
		if status != 200 && status != 507 {
			t.Fatalf("publishes while the disk filled, by status: %v; want only 200 and 507", statuses)
		}
	}
	// The watcher sees the free space under its reserve, or the store's
	// write error first when a publish was being written as space ran out.
	reason := n.bus.StoreState().Reason
	if reason != bus.StoreDiskFull && reason != bus.StoreWriteError {
		t.Fatalf("full for %q, want %s or %s", reason, bus.StoreDiskFull, bus.StoreWriteError)
	}
	if want := `{"error":"not ready: store full (` + reason + `)","status":503}`; body != want {
		t.Fatalf("/readyz while full: %s, want %s", body, want)
	}
	if code, body := getHealthz(t, n); code != 200 {
		t.Fatalf("/healthz while full: %d %s (the process is alive)", code, body)
	}
	wantStoreFull(t, n, reason)
	if evs := replayAll(t, n, "orders", 1); evs[0].Event != "before" {
		t.Fatalf("replay while full: %+v", evs)
	}
	fams := scrape(t, n)
	if v, _ := sample(fams, "herald_store_full"); v != 1 {
		t.Fatalf("herald_store_full = %v while full", v)
	}
	if v, _ := sample(fams, "herald_publish_refusals_total", "reason", "disk_full"); v < 2 {
		t.Fatalf("herald_publish_refusals_total{reason=disk_full} = %v, want at least 2", v)
	}
	st := n.Status(ctxT(t))
	if st.Ready || st.Store == nil || !st.Store.Full || st.Store.Reason != reason {
		t.Fatalf("status while full: ready %v store %+v", st.Ready, st.Store)
	}

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if body := waitReadyz(t, n, 200); body != `{"status":"ready"}` {
		t.Fatalf("/readyz after space came back: %s", body)
	}
	mustTrigger(t, n, "after", "orders")
	if _, err := sub.WaitFor(ctxT(t), "after", "orders"); err != nil {
		t.Fatalf("the subscriber connected while the disk was full: %v", err)
	}
	fams = scrape(t, n)
	if v, _ := sample(fams, "herald_store_full"); v != 0 {
		t.Fatalf("herald_store_full = %v after recovery", v)
	}
	if v, _ := sample(fams, "herald_store_recoveries_total"); reason == bus.StoreWriteError && v != 1 {
		t.Fatalf("herald_store_recoveries_total = %v after a write error, want 1 (a JetStream restart)", v)
	}
	if evs := replayAll(t, n, "orders", 2); evs[0].Event != "before" || evs[1].Event != "after" {
		t.Fatalf("replay after recovery: %+v", evs)
	}
}

// TestDiskFilledByHerald: Herald's own publishes fill the store up to
// JetStream's storage limit (fixed at start from the free space); then
// publishes are 507 and /readyz 503, and once the filesystem is grown the
// node raises the limit by itself (a JetStream restart) and takes
// publishes again, the subscriber still connected.
func TestDiskFilledByHerald(t *testing.T) {
	dir := testkit.Tmpfs(t, 16<<20)
	n := startNode(t, func(c *configs.Config) {
		c.DataDir = dir
		c.Bus.Stream.MaxAge = configs.Duration(time.Hour) // nothing expires during the test
		c.Bus.Stream.MaxMsgsPerChannel = 0
	})
	sub := dialWS(t, n, "orders")
	data := strings.Repeat("a", 9000)
	var items []client.BatchItem
	for i := range 10 {
		items = append(items, client.BatchItem{Name: "big", Channel: fmt.Sprint("c", i), Data: data})
	}
	refused := false
	for i := 0; i < 400 && !refused; i++ {
		status, body, err := rest(n).TriggerBatch(ctxT(t), items)
		switch {
		case err != nil:
			t.Fatal(err)
		case status == 507:
			refused = true
			if !strings.Contains(string(body), "(store_limit)") {
				t.Fatalf("507 for the wrong reason: %s", body)
			}
		case status != 200:
			t.Fatalf("batch %d: %d %s", i, status, body)
		}
	}
	if !refused {
		t.Fatal("400 batches of 90 KB were all stored on a 16 MiB filesystem")
	}
	if body := waitReadyz(t, n, 503); body != `{"error":"not ready: store full (store_limit)","status":503}` {
		t.Fatalf("/readyz at the store limit: %s", body)
	}
	wantStoreFull(t, n, bus.StoreLimit)

	testkit.ResizeTmpfs(t, dir, 64<<20)
	waitReadyz(t, n, 200)
	mustTrigger(t, n, "after", "orders")
	if _, err := sub.WaitFor(ctxT(t), "after", "orders"); err != nil {
		t.Fatalf("the subscriber after the store limit was raised: %v", err)
	}
	if v, _ := sample(scrape(t, n), "herald_store_recoveries_total"); v != 1 {
		t.Fatalf("herald_store_recoveries_total = %v, want 1", v)
	}
}

// getHealthz is GET /healthz's status and body.
func getHealthz(t *testing.T, n *Node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
