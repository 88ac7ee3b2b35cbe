package node

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
)

// The cost of many apps (docs/benchmarks.md "Apps at scale"): a node whose
// registry holds HERALD_SCALE_APPS apps, all idle but one. Not a unit test
// (it takes minutes and measures): it runs only with the variable set,
//
//	HERALD_SCALE_APPS=10000 HERALD_SCALE_STREAMS=1000 go test ./node/ -run TestScaleApps -v -timeout 30m
//
// or scripts/scale-apps.sh. It prints what it measured; it asserts only
// that everything works at that size.

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// settled is the RSS and Go heap after a GC.
func settled() (rss int64, heap uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(rssKiB()), ms.HeapInuse
}

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func scaleID(i int) string { return fmt.Sprintf("a%05d", i) }

func TestScaleApps(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("HERALD_SCALE_APPS"))
	if total <= 0 {
		t.Skip("set HERALD_SCALE_APPS (and HERALD_SCALE_STREAMS) to run: see the top of scale_test.go")
	}
	streams, _ := strconv.Atoi(os.Getenv("HERALD_SCALE_STREAMS"))
	dir := t.TempDir()
	cfg := configs.Loopback(dir)
	registryCfg(cfg)
	rss0, heap0 := settled()
	n, err := Start(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	rss1, heap1 := settled()
	t.Logf("empty registry node: RSS +%s, heap +%.0f MiB", mib(rss1-rss0), float64(heap1-heap0)/(1<<20))

	// Seed: every app written straight into the bucket by 16 writers.
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 16 {
				id := scaleID(i)
				now := time.Now()
				_, err := n.registry.store.Put(context.Background(), app.Record{App: app.New(id, id+"-key", id+"-secret"), Created: now, Updated: now}, 0)
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(began)
	for n.apps.Table().Len() != total+1 {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("seed: %d apps written in %v (%.0f/s), in force on the node after %v", total, wrote.Round(time.Millisecond),
		float64(total)/wrote.Seconds(), time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()

	// Restart with every app in the registry.
	rss0, heap0 = settled()
	began = time.Now()
	n, err = Start(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	startDur := time.Since(began)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	if got := n.apps.Table().Len(); got != total+1 {
		t.Fatalf("restarted with %d apps", got)
	}
	rss1, heap1 = settled()
	t.Logf("restart with %d apps: ready in %v; heap +%.0f MiB over the process without the node; process RSS %s (RSS +%s); %d open files",
		total, startDur.Round(time.Millisecond), float64(heap1-heap0)/(1<<20), mib(rss1), mib(rss1-rss0), openFDs())

	// One app's publish-to-delivery latency while the others idle.
	one := app.New(scaleID(42), scaleID(42)+"-key", scaleID(42)+"-secret")
	k := keyApp{n: n, a: one}
	ws := k.dial(t)
	if err := ws.Subscribe(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	r := k.rest()
	var lat []time.Duration
	for i := range 300 {
		began := time.Now()
		if st := k.trigger(t, client.TriggerParams{Name: "e", Data: strconv.Itoa(i), Channels: []string{"c"}}); st != 200 {
			t.Fatalf("REST %d", st)
		}
		if _, err := ws.WaitFor(ctxT(t), "e", "c"); err != nil {
			t.Fatal(err)
		}
		if i >= 50 { // the first ones make the stream
			lat = append(lat, time.Since(began))
		}
	}
	_ = r
	t.Logf("one app among %d, REST publish to WebSocket delivery: p50 %v, p99 %v (%d events)", total, pct(lat, .5).Round(10*time.Microsecond),
		pct(lat, .99).Round(10*time.Microsecond), len(lat))

	// A new app: created through the admin API, then usable.
	var creates []time.Duration
	for i := range 20 {
		began := time.Now()
		createApp(t, n, fmt.Sprintf("more%d", i), "")
		creates = append(creates, time.Since(began))
	}
	t.Logf("create through the admin API among %d apps, answered once in force on the node: p50 %v, max %v (20 creates)",
		total, pct(creates, .5).Round(time.Millisecond), pct(creates, 1).Round(time.Millisecond))
	began = time.Now()
	fresh := createApp(t, n, "fresh", "")
	created := time.Since(began)
	fk := keyApp{n: n, a: app.New(fresh.ID, fresh.Key, fresh.Secret)}
	fws := fk.dial(t)
	if err := fws.Subscribe(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	if st := fk.trigger(t, client.TriggerParams{Name: "e", Data: "d", Channels: []string{"c"}}); st != 200 {
		t.Fatal(st)
	}
	if _, err := fws.WaitFor(ctxT(t), "e", "c"); err != nil {
		t.Fatal(err)
	}
	t.Logf("new app among %d: create answered (in force on the node) in %v; first event delivered %v after the create began",
		total, created.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

	// NATS: the first login of an app makes its account.
	began = time.Now()
	nc, _ := stockConn(t, n.NATSURL(), one.ID, one.Secret)
	if m, err := nc.Request(bus.APISubject(one.ID, bus.APIEvents), publishBody, 5*time.Second); err != nil || string(m.Data) != "{}" {
		t.Fatalf("NATS request: %v %v", m, err)
	}
	t.Logf("first NATS login and request of one app: %v", time.Since(began).Round(100*time.Microsecond))

	// Every app's account, as each node of a cluster makes them.
	ids := n.apps.Table().IDs()
	rss0, heap0 = settled()
	began = time.Now()
	if err := n.bus.EnsureAccounts(ids); err != nil {
		t.Fatal(err)
	}
	accDur := time.Since(began)
	rss1, heap1 = settled()
	t.Logf("%d NATS accounts (as on a cluster node): %v, RSS +%s, heap +%.0f MiB", len(ids), accDur.Round(time.Millisecond),
		mib(rss1-rss0), float64(heap1-heap0)/(1<<20))

	// Streams: as many apps as asked become active (two streams each).
	if streams > 0 {
		rss0, heap0 = settled()
		fd0 := openFDs()
		began = time.Now()
		for i := range min(streams, total) {
			if err := n.bus.EnsureApp(context.Background(), scaleID(i)); err != nil {
				t.Fatal(err)
			}
		}
		sDur := time.Since(began)
		rss1, heap1 = settled()
		t.Logf("%d apps' streams (%d streams): made in %v (%.1f ms per app), RSS +%s, heap +%.0f MiB, +%d open files",
			streams, 2*streams, sDur.Round(time.Millisecond), float64(sDur.Microseconds())/1000/float64(streams),
			mib(rss1-rss0), float64(heap1-heap0)/(1<<20), openFDs()-fd0)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		began = time.Now()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("stop with %d streams: %v", 2*streams, time.Since(began).Round(time.Millisecond))
		began = time.Now()
		n, err = Start(cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("restart with %d apps and %d streams on disk: ready in %v", total, 2*streams, time.Since(began).Round(time.Millisecond))
	}
}

// TestScaleAppsCluster is TestScaleApps on a 3-node cluster in this
// process (so memory is the three nodes' together): the registry and the
// streams are R3.
func TestScaleAppsCluster(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("HERALD_SCALE_APPS"))
	if total <= 0 {
		t.Skip("set HERALD_SCALE_APPS (and HERALD_SCALE_STREAMS) to run: see the top of scale_test.go")
	}
	streams, _ := strconv.Atoi(os.Getenv("HERALD_SCALE_STREAMS"))
	_, heap0 := settled()
	began := time.Now()
	nodes := startClusterNodesWith(t, 3, registryCfg)
	t.Logf("3-node cluster, empty registry: up in %v", time.Since(began).Round(time.Millisecond))
	n1, n3 := nodes[0], nodes[2]

	began = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 16 {
				id := scaleID(i)
				now := time.Now()
				if _, err := n1.registry.store.Put(context.Background(), app.Record{App: app.New(id, id+"-key", id+"-secret"), Created: now, Updated: now}, 0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(began)
	for n3.apps.Table().Len() != total+1 {
		time.Sleep(10 * time.Millisecond)
	}
	_, heap1 := settled()
	t.Logf("seed through node 1: %d apps written in %v (%.0f/s), all in force on node 3 after %v; heap of the 3 nodes +%.0f MiB",
		total, wrote.Round(time.Millisecond), float64(total)/wrote.Seconds(), time.Since(began).Round(time.Millisecond),
		float64(heap1-heap0)/(1<<20))

	// A new app made through node 1, usable on node 3.
	var usable []time.Duration
	for i := range 10 {
		began := time.Now()
		v := createApp(t, n1, fmt.Sprintf("fresh%d", i), "")
		waitStatus(t, viewREST(n3, v, v.Secret), 200)
		usable = append(usable, time.Since(began))
	}
	t.Logf("new app among %d, created through node 1, first REST 200 on node 3: p50 %v, max %v (10 apps)", total,
		pct(usable, .5).Round(time.Millisecond), pct(usable, 1).Round(time.Millisecond))

	// One app: REST on node 1 to a WebSocket on node 3.
	one := app.New(scaleID(7), scaleID(7)+"-key", scaleID(7)+"-secret")
	ws := keyApp{n: n3, a: one}.dial(t)
	if err := ws.Subscribe(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	k1 := keyApp{n: n1, a: one}
	var lat []time.Duration
	for i := range 250 {
		began := time.Now()
		if st := k1.trigger(t, client.TriggerParams{Name: "e", Data: strconv.Itoa(i), Channels: []string{"c"}}); st != 200 {
			t.Fatalf("REST %d", st)
		}
		if _, err := ws.WaitFor(ctxT(t), "e", "c"); err != nil {
			t.Fatal(err)
		}
		if i >= 50 {
			lat = append(lat, time.Since(began))
		}
	}
	t.Logf("one app among %d, REST on node 1 to a WebSocket on node 3 (R3 stream): p50 %v, p99 %v", total,
		pct(lat, .5).Round(10*time.Microsecond), pct(lat, .99).Round(10*time.Microsecond))

	if streams > 0 {
		_, heap0 := settled()
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for i := range min(streams, total) {
			if err := n1.bus.EnsureApp(ctx, scaleID(i)); err != nil {
				t.Fatalf("app %d: %v", i, err)
			}
		}
		d := time.Since(began)
		_, heap1 := settled()
		t.Logf("%d apps' R3 streams (%d streams, %d Raft groups on each node): made in %v (%.1f ms per app); heap of the 3 nodes +%.0f MiB",
			streams, 2*streams, 2*streams, d.Round(time.Millisecond), float64(d.Microseconds())/1000/float64(streams), float64(heap1-heap0)/(1<<20))
	}
}
