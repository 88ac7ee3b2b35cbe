package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// regionConfigs is two regions of one node each, "a" (the home region: the
// first by name) and "b", joined by gateways; app "app1".
func regionConfigs(t testing.TB) []Config {
	ports := testkit.FreePorts(t, 4) // route a, route b, gateway a, gateway b
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	names := []string{"a", "b"}
	cfgs := make([]Config, 2)
	for i := range cfgs {
		cfg := DefaultConfig(t.TempDir())
		cfg.ServerName = "node-" + names[i]
		cfg.Apps = []string{"app1"}
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
		other := 1 - i
		cfg.Cluster = ClusterConfig{
			Listen: addr(i), Routes: []string{addr(i)},
			Region: names[i], GatewayListen: addr(2 + i),
			Gateways: []GatewayRemote{{Name: names[other], URLs: []string{addr(2 + other)}}},
		}
		cfg.ReadyTimeout = 20 * time.Second
		cfgs[i] = cfg
	}
	return cfgs
}

func TestRegionConfigChecks(t *testing.T) {
	good := regionConfigs(t)[1]
	cases := map[string]func(*ClusterConfig){
		"no gateways":        func(c *ClusterConfig) { c.Gateways = nil },
		"gateway to itself":  func(c *ClusterConfig) { c.Gateways[0].Name = c.Region },
		"no gateway urls":    func(c *ClusterConfig) { c.Gateways[0].URLs = nil },
		"bad gateway url":    func(c *ClusterConfig) { c.Gateways[0].URLs = []string{"nowhere"} },
		"no gateway listen":  func(c *ClusterConfig) { c.GatewayListen = "" },
		"unknown home":       func(c *ClusterConfig) { c.HomeRegion = "c" },
		"region unclustered": func(c *ClusterConfig) { c.Listen, c.Routes = "", nil },
		"gateways no region": func(c *ClusterConfig) { c.Region = "" },
	}
	for name, change := range cases {
		cfg := good
		cfg.Cluster.Gateways = []GatewayRemote{{Name: good.Cluster.Gateways[0].Name, URLs: append([]string(nil), good.Cluster.Gateways[0].URLs...)}}
		change(&cfg.Cluster)
		if err := checkCluster(cfg); !errors.Is(err, ErrClusterConfig) {
			t.Errorf("%s: checkCluster = %v, want ErrClusterConfig", name, err)
		}
	}
	if err := checkCluster(good); err != nil {
		t.Errorf("good config: %v", err)
	}
	if h := good.Cluster.Home(); h != "a" {
		t.Errorf("Home = %q, want the first region by name, a", h)
	}
}

// TestRegionsPublishOnceEverywhere: two one-node regions; events published
// in either region are stored once in the home stream (region a) and reach
// the subscribers of both regions, in one serial order; history reads in b
// go through the gateway; b cut off from home answers publishes with
// ErrHomeUnreachable.
func TestRegionsPublishOnceEverywhere(t *testing.T) {
	cfgs := regionConfigs(t)
	nodes := startNodes(t, cfgs)
	a, b := nodes[0], nodes[1]

	info, err := streamInfo(b.bus, StreamName("app1"))
	if err != nil {
		t.Fatalf("stream info from b: %v", err)
	}
	if info.Cluster == nil || info.Cluster.Name != "a" {
		t.Fatalf("app stream placed in %+v, want cluster a", info.Cluster)
	}

	const ch = "news"
	a.bus.Subscribe("app1", ch)
	b.bus.Subscribe("app1", ch)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// b's interest reaches a through the gateway shortly after Subscribe:
	// publish in a until b receives.
	testkit.WaitFor(t, 10*time.Second, func() error {
		if _, err := a.bus.Publish(ctx, Publication{App: "app1", Channel: ch, Payload: []byte(`{"event":"warm"}`)}); err != nil {
			return err
		}
		if len(b.sink.forChannel(ch)) == 0 {
			return errors.New("b has not received yet")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // the last warm-ups land
	warm := map[*clusterNode]int{a: len(a.sink.forChannel(ch)), b: len(b.sink.forChannel(ch))}
	var serials []uint64
	for i := range 6 {
		via := a.bus
		if i%2 == 1 {
			via = b.bus
		}
		s, err := via.Publish(ctx, Publication{App: "app1", Channel: ch, Payload: fmt.Appendf(nil, `{"event":"e","data":"%d"}`, i)})
		if err != nil {
			t.Fatalf("publish %d via %s: %v", i, via.cfg.ServerName, err)
		}
		serials = append(serials, s)
	}
	for _, n := range nodes {
		got := n.sink.waitCount(t, ch, warm[n]+len(serials))[warm[n]:]
		if len(got) != len(serials) {
			t.Fatalf("%s: %d messages, want %d", n.cfg.ServerName, len(got), len(serials))
		}
		for i, m := range got {
			if m.Serial != serials[i] {
				t.Fatalf("%s: message %d has serial %d, want %d (all: %v)", n.cfg.ServerName, i, m.Serial, serials[i], serials)
			}
		}
	}

	var read []uint64
	res, err := b.bus.History(ctx, "app1", ch, serials[1], func(serial uint64, _ []byte, _ string) error {
		read = append(read, serial)
		return nil
	})
	if err != nil || res.Count != len(serials)-2 {
		t.Fatalf("history from b after %d: %v, %+v, read %v", serials[1], err, res, read)
	}

	// Cut b off from home: stop a. b answers at once.
	a.close(t)
	testkit.WaitFor(t, 10*time.Second, func() error {
		if b.bus.homeReachable() {
			return errors.New("b still sees a gateway to a")
		}
		return nil
	})
	began := time.Now()
	_, err = b.bus.Publish(ctx, Publication{App: "app1", Channel: ch, Payload: []byte(`{"event":"e","data":"cut"}`)})
	if !errors.Is(err, ErrHomeUnreachable) {
		t.Fatalf("publish in b while cut: %v, want ErrHomeUnreachable", err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("publish in b while cut took %s, want an answer at once", d)
	}
	if ri, ok := b.bus.Regions(); !ok || ri.Home != "a" || len(ri.Gateways) != 1 || ri.Gateways[0].Connected {
		t.Errorf("Regions while cut = %+v, %v", ri, ok)
	}
}

// TestRegionsHomeMoves is step 3 of the runbook (docs/regions.md): region
// b restarted as the home region updates the streams' placement, and
// JetStream moves them to b with their messages and sequences. A backend
// publishes through a all along: every publish acknowledged before, during
// or after the move is in the moved stream with its serial and payload,
// serials only grow, and a publish that fails says so (nothing is
// acknowledged and lost).
func TestRegionsHomeMoves(t *testing.T) {
	cfgs := regionConfigs(t)
	nodes := startNodes(t, cfgs)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last uint64
	for i := range 5 {
		s, err := b.bus.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: fmt.Appendf(nil, `{"event":"e","data":"%d"}`, i)})
		if err != nil {
			t.Fatal(err)
		}
		last = s
	}

	// The backend on a, publishing one event after another through the
	// move.
	type result struct {
		serial  uint64
		payload string
		err     error
		at      time.Time
	}
	var results []result
	stop, stopped := make(chan struct{}), make(chan struct{})
	pubBus := a.bus
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			payload := fmt.Sprintf(`{"event":"e","data":"move-%d"}`, i)
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			s, err := pubBus.Publish(pctx, Publication{App: "app1", Channel: "c", Payload: []byte(payload)})
			pcancel()
			results = append(results, result{s, payload, err, time.Now()})
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)

	b.close(t)
	b.cfg.Cluster.HomeRegion = "b"
	began := time.Now()
	b.restart(t)
	testkit.WaitFor(t, 20*time.Second, func() error {
		info, err := streamInfo(b.bus, StreamName("app1"))
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Name != "b" || info.Cluster.Leader == "" || info.State.LastSeq < last {
			return fmt.Errorf("stream in %+v, last seq %d, want in b with last seq %d or more", info.Cluster, info.State.LastSeq, last)
		}
		return nil
	})
	moved := time.Now()
	t.Logf("home moved to b %s after b's restart began (streams and bucket created or moved)", moved.Sub(began).Round(time.Millisecond))
	time.Sleep(time.Second) // publishes after the move, still through a
	close(stop)
	<-stopped

	var acked, failed, during int
	var prev uint64 = last
	want := map[uint64]string{}
	var firstFail, lastFail time.Time
	var firstErr error
	for _, r := range results {
		if r.err != nil {
			failed++
			if firstErr == nil {
				firstFail, firstErr = r.at, r.err
			}
			lastFail = r.at
			continue
		}
		acked++
		if r.at.After(began) && r.at.Before(moved) {
			during++
		}
		if r.serial <= prev {
			t.Errorf("publish %q acknowledged with serial %d after serial %d", r.payload, r.serial, prev)
		}
		prev = r.serial
		want[r.serial] = r.payload
	}
	if failed > 0 {
		t.Logf("%d of %d publishes through a failed, from %v to %v after b's restart began (the first: %v)",
			failed, len(results), firstFail.Sub(began).Round(time.Millisecond), lastFail.Sub(began).Round(time.Millisecond), firstErr)
	}
	if acked == 0 || results[len(results)-1].err != nil {
		t.Fatalf("%d of %d publishes through a acknowledged, the last one %v: want publishing to work again after the move", acked, len(results), results[len(results)-1].err)
	}
	t.Logf("%d publishes through a acknowledged (%d while the stream moved), %d failed", acked, during, failed)
	got := map[uint64]string{}
	if _, err := b.bus.History(ctx, "app1", "c", last, func(serial uint64, payload []byte, _ string) error {
		got[serial] = string(payload)
		return nil
	}); err != nil {
		t.Fatalf("history in b after the move: %v", err)
	}
	for serial, payload := range want {
		if got[serial] != payload {
			t.Errorf("serial %d acknowledged as %s, stream has %q", serial, payload, got[serial])
		}
	}
	info, err := streamInfo(b.bus, StreamName("app1"))
	if err != nil {
		t.Fatal(err)
	}
	last = info.State.LastSeq

	// a restarted with the new home, as the runbook's rolling restart has
	// it: it only looks streams up now, through its gateway to b.
	a.close(t)
	a.cfg.Cluster.HomeRegion = "b"
	a.restart(t)
	testkit.WaitFor(t, 20*time.Second, func() error {
		if !a.bus.homeReachable() {
			return errors.New("a has no gateway to b yet")
		}
		return nil
	})
	s, err := a.bus.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: []byte(`{"event":"e","data":"after"}`)})
	if err != nil || s != last+1 {
		t.Fatalf("publish in a after the move: serial %d, %v; want %d", s, err, last+1)
	}
}

// cutProxy forwards TCP connections from its address to target until cut:
// a cut closes every connection and refuses new ones (the listener is
// closed); restore listens on the same address again.
type cutProxy struct {
	t      testing.TB
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	p := &cutProxy{t: t, addr: testkit.LoopbackAddr(testkit.FreePorts(t, 1)[0]), target: target}
	p.restore()
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *cutProxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestRegionsGatewayCut: both regions stay up and the gateway link between
// them is cut, then restored. While cut, b answers publishes with
// ErrHomeUnreachable and a keeps storing; once restored, b publishes again,
// live events reach b again, and a read from b's last serial (what a
// resuming client does) gets every event stored during the cut.
func TestRegionsGatewayCut(t *testing.T) {
	cfgs := regionConfigs(t)
	// Each region dials, and is told of, the other's gateway through a
	// proxy, so cutting both proxies cuts the link.
	var proxies []*cutProxy
	for i := range cfgs {
		p := newCutProxy(t, cfgs[i].Cluster.GatewayListen)
		cfgs[i].Cluster.GatewayAdvertise = p.addr
		proxies = append(proxies, p)
	}
	for i := range cfgs {
		cfgs[i].Cluster.Gateways[0].URLs = []string{proxies[1-i].addr}
	}
	nodes := startNodes(t, cfgs)
	a, b := nodes[0], nodes[1]
	const ch = "cut"
	b.bus.Subscribe("app1", ch)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(via *clusterNode, data string) (uint64, error) {
		return via.bus.Publish(ctx, Publication{App: "app1", Channel: ch, Payload: fmt.Appendf(nil, `{"event":"e","data":%q}`, data)})
	}
	var last uint64
	testkit.WaitFor(t, 10*time.Second, func() error { // b's interest reaches a
		s, err := publish(a, "warm")
		if err != nil {
			return err
		}
		if got := b.sink.forChannel(ch); len(got) == 0 || got[len(got)-1].Serial != s {
			return errors.New("b has not received the last warm-up")
		}
		last = s
		return nil
	})

	for _, p := range proxies {
		p.cut()
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if b.bus.homeReachable() {
			return errors.New("b still sees its gateway to a")
		}
		return nil
	})
	if _, err := publish(b, "in b while cut"); !errors.Is(err, ErrHomeUnreachable) {
		t.Fatalf("publish in b while cut: %v, want ErrHomeUnreachable", err)
	}
	var during []uint64
	for i := range 3 {
		s, err := publish(a, fmt.Sprint("in a while cut ", i))
		if err != nil {
			t.Fatalf("publish in a while cut: %v", err)
		}
		during = append(during, s)
	}

	for _, p := range proxies {
		p.restore()
	}
	testkit.WaitFor(t, 30*time.Second, func() error {
		if !b.bus.homeReachable() {
			return errors.New("b's gateway to a is not back")
		}
		return nil
	})
	// A read may time out while a's connection back to b is not up yet
	// (a resuming client is answered unavailable and resubscribes).
	testkit.WaitFor(t, 10*time.Second, func() error {
		var read []uint64
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		if _, err := b.bus.History(rctx, "app1", ch, last, func(serial uint64, _ []byte, _ string) error {
			read = append(read, serial)
			return nil
		}); err != nil {
			return err
		}
		if !slices.Equal(read, during) {
			t.Fatalf("history in b after the cut from %d: %v, want %v", last, read, during)
		}
		return nil
	})
	testkit.WaitFor(t, 10*time.Second, func() error { // live again: b's interest is sent again on reconnect
		s, err := publish(b, "after")
		if err != nil {
			return err
		}
		if got := b.sink.forChannel(ch); got[len(got)-1].Serial != s {
			return errors.New("b has not received its own publication live")
		}
		return nil
	})
}

// TestRegionsGatewayAuth: with a route password the gateways between the
// regions are closed as the routes are. Regions that share it join (an
// event published in b is stored in a's stream); a region with another
// password gets no gateway, so the supercluster never forms and neither
// region's JetStream becomes ready.
func TestRegionsGatewayAuth(t *testing.T) {
	const pw = "a-shared-route-password"
	t.Run("same password", func(t *testing.T) {
		cfgs := regionConfigs(t)
		for i := range cfgs {
			cfgs[i].Cluster.Passwords = []string{pw}
		}
		nodes := startNodes(t, cfgs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := nodes[1].bus.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: []byte(`{"event":"e","channel":"c","data":"{}"}`)}); err != nil {
			t.Fatalf("publish in b: %v", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		cfgs := regionConfigs(t)
		cfgs[0].Cluster.Passwords = []string{pw}
		cfgs[1].Cluster.Passwords = []string{"another-route-password"}
		for i := range cfgs {
			cfgs[i].ReadyTimeout = 12 * time.Second // as long as the same-password case may need
		}
		errs := make([]error, len(cfgs))
		var wg sync.WaitGroup
		for i := range cfgs {
			wg.Go(func() {
				b, err := startWithSink(cfgs[i], &recSink{})
				if err == nil {
					b.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err == nil {
				t.Errorf("region %s started although the gateway password differs", cfgs[i].Cluster.Region)
			}
		}
	})
}
