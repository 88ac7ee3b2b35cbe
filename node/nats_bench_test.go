package node

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/bus"
	"herald/configs"
)

// Publishing throughput of one node, by transport. Every benchmark stores
// one event per operation in the app's stream (no WebSocket subscribers, so
// the figure is the accepting side alone) and reports events/s:
//
//	go test ./node/ -run '^$' -bench 'Publish' -benchtime 20000x -count 3
//
// NATSRequest waits for each answer; NATSRequest16, NATSRequest64 and
// REST16 run 16 (64) requesters at once (own NATS connection each; one keep-alive HTTP client
// with 16 connections, requests signed as a Pusher SDK signs them);
// NATSFireAndForget* publish without reply subjects and count until every
// message was handled or dropped.

const benchBody = `{"name":"bench","channels":["bench"],"data":"{\"id\":42,\"text\":\"hello from the benchmark\"}"}`

func startBenchNode(b *testing.B) *Node {
	b.Helper()
	cfg := configs.Loopback(b.TempDir())
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

func benchNATSConn(b *testing.B, n *Node) *nats.Conn {
	b.Helper()
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo("app-id", "app-secret"),
		nats.CustomInboxPrefix(bus.InboxPrefix("app-id")), nats.NoReconnect())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

func reportEvents(b *testing.B, events int) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkPublishNATSRequest(b *testing.B) {
	n := startBenchNode(b)
	nc := benchNATSConn(b, n)
	body := []byte(benchBody)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m, err := nc.Request("herald.app-id.api.events", body, 5*time.Second)
		if err != nil || string(m.Data) != "{}" {
			b.Fatalf("request: %v", err)
		}
	}
	reportEvents(b, b.N)
}

func BenchmarkPublishNATSRequest16(b *testing.B) { benchNATSRequests(b, 16) }

// BenchmarkPublishNATSRequest64: 64 requesters, 8 times the API's workers
// on 2 cores: what the pipelined NATS API (api/natsapi.go) keeps in flight.
func BenchmarkPublishNATSRequest64(b *testing.B) { benchNATSRequests(b, 64) }

// benchNATSRequests runs requesters NATS connections, each sending a
// request and waiting for its answer.
func benchNATSRequests(b *testing.B, requesters int) {
	n := startBenchNode(b)
	conns := make([]*nats.Conn, requesters)
	for i := range conns {
		conns[i] = benchNATSConn(b, n)
	}
	body := []byte(benchBody)
	b.ReportAllocs()
	b.ResetTimer()
	runConcurrently(b, len(conns), func(i int) error {
		m, err := conns[i].Request("herald.app-id.api.events", body, 5*time.Second)
		if err == nil && string(m.Data) != "{}" {
			b.Errorf("answer %s", m.Data)
		}
		return err
	})
	reportEvents(b, b.N)
}

// BenchmarkPublishNATSFireAndForget publishes without reply subjects, kept
// at most fireWindow messages ahead of the API's workers (a pace a backend
// gets by watching herald_nats_api_queued, or by using requests): the rate
// the node accepts without drops.
func BenchmarkPublishNATSFireAndForget(b *testing.B) {
	benchFireAndForget(b, fireWindow)
}

// BenchmarkPublishNATSFireAndForgetBurst publishes b.N messages as fast as
// one connection can: what the bounded queue cannot hold is dropped
// (reported as "dropped"; events/s counts the rest).
func BenchmarkPublishNATSFireAndForgetBurst(b *testing.B) {
	benchFireAndForget(b, 0)
}

// fireWindow is well under the API's queue (api.DefaultNATSAPIQueueLen).
const fireWindow = 1024

func benchFireAndForget(b *testing.B, window int) {
	n := startBenchNode(b)
	nc := benchNATSConn(b, n)
	body := []byte(benchBody)
	before := n.nats.Stats()
	done := func() int {
		st := n.nats.Stats()
		return int(st.Handled + st.Dropped - before.Handled - before.Dropped)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for window > 0 && i-done() >= window {
			time.Sleep(20 * time.Microsecond)
		}
		if err := nc.Publish("herald.app-id.api.events", body); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for done() < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("handled or dropped %d of %d", done(), b.N)
		}
		time.Sleep(20 * time.Microsecond)
	}
	b.StopTimer()
	dropped := int(n.nats.Stats().Dropped - before.Dropped)
	reportEvents(b, b.N-dropped)
	b.ReportMetric(float64(dropped), "dropped")
}

func BenchmarkPublishREST16(b *testing.B) {
	n := startBenchNode(b)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16}}
	b.Cleanup(hc.CloseIdleConnections)
	r := rest(n)
	r.HTTP = hc
	body := []byte(benchBody)
	b.ReportAllocs()
	b.ResetTimer()
	runConcurrently(b, 16, func(int) error {
		status, answer, err := r.Do(context.Background(), "POST", "/apps/app-id/events", nil, body)
		if err == nil && (status != 200 || string(answer) != "{}") {
			b.Errorf("REST %d %s", status, answer)
		}
		return err
	})
	reportEvents(b, b.N)
}

// runConcurrently runs b.N calls of op spread over workers goroutines (op
// gets the worker's index) and fails the benchmark on the first error.
func runConcurrently(b *testing.B, workers int, op func(worker int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(w); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}
