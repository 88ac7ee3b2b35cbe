package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"herald/client"
	"herald/configs"
)

// The cost of wss:// served by the node (docs/benchmarks.md, "wss://
// against ws://"): the same load as BenchmarkLimits (limits_bench_test.go)
// on a node without TLS over ws:// and on a node with tls.cert_file over
// wss://, in one run:
//
//	go test ./node/ -run '^$' -bench 'TLS' -benchtime 2000x -count 3
//
// The clients run in the same process, so their own TLS work (handshakes,
// encryption) is in the figures too: the wss:// numbers are a lower bound
// for what a node serves to remote clients.

func BenchmarkTLS(b *testing.B) {
	dir := b.TempDir()
	cert := testCert(b, dir, 1)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tc := &tls.Config{RootCAs: pool} // no session cache: every connect is a full handshake
	start := func(b *testing.B, wss bool) (*Node, string, *tls.Config) {
		cfg := configs.Loopback(b.TempDir())
		scheme, c := "ws://", (*tls.Config)(nil)
		if wss {
			cfg.TLS = configs.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
			scheme, c = "wss://", tc
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
		return n, scheme + n.Addr().String() + "/app/app-key?protocol=7", c
	}
	for _, mode := range []struct {
		name string
		wss  bool
	}{{"ws", false}, {"wss", true}} {
		b.Run("Connect/"+mode.name, func(b *testing.B) {
			_, url, c := start(b, mode.wss)
			benchConnectTo(b, url, c)
		})
		b.Run("FanOut/"+mode.name, func(b *testing.B) {
			n, url, c := start(b, mode.wss)
			benchFanOutTo(b, n, url, c)
		})
	}
}

// BenchmarkTLSIdle reports what an idle subscribed socket adds to the
// process (heap in use and goroutine stacks, after a GC), over ws:// and
// over wss://. Client and node share the process, so each figure holds
// both ends: the client's Conn and, over wss://, its TLS state too. The
// difference between the two is an upper bound for what the node's TLS
// path costs per socket.
//
//	go test ./node/ -run '^$' -bench 'TLSIdle' -benchtime 1x
func BenchmarkTLSIdle(b *testing.B) {
	const socks = 1000
	dir := b.TempDir()
	pool := x509.NewCertPool()
	pool.AddCert(testCert(b, dir, 1))
	for _, wss := range []bool{false, true} {
		name := map[bool]string{false: "ws", true: "wss"}[wss]
		b.Run(name, func(b *testing.B) {
			cfg := configs.Loopback(b.TempDir())
			scheme, tc := "ws://", (*tls.Config)(nil)
			if wss {
				cfg.TLS = configs.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
				scheme, tc = "wss://", &tls.Config{RootCAs: pool}
			}
			n, err := Start(cfg, quiet)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = n.Stop(ctx)
			}()
			url := scheme + n.Addr().String() + "/app/app-key?protocol=7"
			inUse := func() uint64 {
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				return m.HeapInuse + m.StackInuse
			}
			for range b.N {
				before := inUse()
				conns := make([]*client.Conn, 0, socks)
				for i := range socks {
					c, err := client.Dial(context.Background(), url, client.Options{LocalAddr: fmt.Sprintf("127.0.2.%d", i%200+1), QueueSize: 4, TLSConfig: tc})
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
					if err := c.Subscribe(context.Background(), "idle"); err != nil {
						b.Fatal(err)
					}
				}
				after := inUse()
				b.ReportMetric(float64(after-before)/socks, "B/socket")
				for _, c := range conns {
					c.CloseNow()
				}
			}
		})
	}
}
