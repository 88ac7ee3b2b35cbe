package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/protocol"
)

// The cost of the limits (docs/benchmarks.md, "Limits on and off"): the
// same node with every limit off (per-IP caps off, no trusted proxies) and
// on (per-IP caps and rate at values the load never reaches, so each
// socket is counted and checked but none refused, and a trusted proxy
// list to scan), in one run:
//
//	go test ./node/ -run '^$' -bench 'Limits' -benchtime 2000x -count 3
//
// Connect is one WebSocket upgrade to connection_established and its close,
// from 16 dialers spread over 127.0.0.1-16; FanOut is one event published
// to a channel of 500 local subscribers and read by all of them.

func limitsNode(b *testing.B, on bool) *Node {
	b.Helper()
	cfg := configs.Loopback(b.TempDir())
	if on {
		cfg.Gateway.MaxConnectionsPerIP = 1_000_000
		cfg.Gateway.AcceptRatePerIP = 1_000_000
		cfg.Gateway.TrustedProxies = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"}
	}
	n, err := Start(cfg, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	return n
}

func BenchmarkLimits(b *testing.B) {
	for _, mode := range []struct {
		name string
		on   bool
	}{{"off", false}, {"on", true}} {
		b.Run("Connect/"+mode.name, func(b *testing.B) { benchConnect(b, limitsNode(b, mode.on)) })
		b.Run("FanOut/"+mode.name, func(b *testing.B) { benchFanOut(b, limitsNode(b, mode.on)) })
	}
}

func benchConnect(b *testing.B, n *Node) {
	benchConnectTo(b, "ws://"+n.Addr().String()+"/app/app-key?protocol=7", nil)
}

// benchConnectTo is benchConnect to a URL, with a TLS config for wss://.
func benchConnectTo(b *testing.B, url string, tc *tls.Config) {
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opt := client.Options{LocalAddr: fmt.Sprintf("127.0.0.%d", w+1), QueueSize: 16, TLSConfig: tc}
			for range jobs {
				c, err := client.Dial(context.Background(), url, opt)
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					continue
				}
				c.CloseNow()
			}
		}()
	}
	b.ResetTimer()
	for range b.N {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}

func benchFanOut(b *testing.B, n *Node) {
	benchFanOutTo(b, n, "ws://"+n.Addr().String()+"/app/app-key?protocol=7", nil)
}

// benchFanOutTo is benchFanOut to a URL, with a TLS config for wss://.
func benchFanOutTo(b *testing.B, n *Node, url string, tc *tls.Config) {
	const subs = 500
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := make([]*client.Conn, subs)
	for i := range conns {
		c, err := client.Dial(context.Background(), url, client.Options{LocalAddr: fmt.Sprintf("127.0.1.%d", i%200+1), QueueSize: 256, TLSConfig: tc})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe(ctx, "fan"); err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, subs)
	start := make(chan struct{})
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for got := 0; got < b.N; {
				ev, err := c.Next(context.Background())
				if err != nil {
					errs <- err
					return
				}
				if ev.Event == "e" {
					got++
				}
			}
		}()
	}
	payload := protocol.AppendEvent(nil, "e", "fan", strings.Repeat("x", 100), "")
	b.ResetTimer()
	close(start)
	for i := 0; i < b.N; i += 50 {
		ps := make([]bus.Publication, min(50, b.N-i))
		for j := range ps {
			ps[j] = bus.Publication{App: "app-id", Channel: "fan", Payload: payload}
		}
		if _, err := n.Bus().PublishBatch(ctx, ps); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
}
