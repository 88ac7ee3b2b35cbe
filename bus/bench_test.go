package bus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/internal/testkit"
)

var benchPayload = []byte(`{"event":"message","channel":"private-chat.42","data":"{\"text\":\"hello world, this is a benchmark\"}"}`)

// BenchmarkPublish: one synchronous JetStream publish (R1, file store,
// interval sync) per op, with no live subscriber.
func BenchmarkPublish(b *testing.B) {
	bus := startBus(b, testConfig(b), nopSink{})
	ctx := context.Background()
	p := Publication{App: "app1", Channel: "private-chat.42", Payload: benchPayload}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishBatch: 100 publications per PublishBatch (a multi-channel trigger).
func BenchmarkPublishBatch(b *testing.B) {
	bus := startBus(b, testConfig(b), nopSink{})
	ctx := context.Background()
	ps := make([]Publication, 100)
	for i := range ps {
		ps[i] = Publication{App: "app1", Channel: fmt.Sprintf("ch.%d", i), Payload: benchPayload}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.PublishBatch(ctx, ps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(ps))/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDelivery measures messages/s from publish through the Sink, over
// 64 subscribed channels: with streams (store + republish) and without (core).
func BenchmarkDelivery(b *testing.B) {
	for _, stream := range []bool{true, false} {
		b.Run(fmt.Sprintf("stream=%v", stream), func(b *testing.B) {
			cfg := testConfig(b)
			cfg.StreamEnabled = stream
			bus := startBus(b, cfg, nopSink{})
			const nch = 64
			ps := make([]Publication, 256)
			for i := range nch {
				bus.Subscribe("app1", fmt.Sprintf("ch.%d", i))
			}
			for i := range ps {
				ps[i] = Publication{App: "app1", Channel: fmt.Sprintf("ch.%d", i%nch), Payload: benchPayload}
			}
			if err := bus.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			start := bus.Stats().Delivered
			b.ReportAllocs()
			b.ResetTimer()
			sent := 0
			for sent < b.N {
				batch := ps[:min(len(ps), b.N-sent)]
				if _, err := bus.PublishBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
				sent += len(batch)
			}
			deadline := time.Now().Add(30 * time.Second)
			for bus.Stats().Delivered-start < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("delivered %d of %d (stats %+v)", bus.Stats().Delivered-start, b.N, bus.Stats())
				}
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDeliverOne: parsing one live message into the Sink (no NATS).
func BenchmarkDeliverOne(b *testing.B) {
	bus := &Bus{sink: nopSink{}}
	msg := liveMsgForBench("app1", "private-App.Models.User.1")
	m := new(Message)
	b.ReportAllocs()
	for b.Loop() {
		if bus.deliverOne(0, m, msg) != 1 {
			b.Fatal("not delivered")
		}
	}
}

func liveMsgForBench(app, channel string) *nats.Msg {
	return &nats.Msg{
		Subject: LiveSubject(app, channel),
		Header: nats.Header{
			headerSequence:     []string{"12"},
			headerLastSequence: []string{"7"},
			HeaderExclude:      []string{"123.456"},
		},
		Data: benchPayload,
	}
}

func TestDeliverOneAllocs(t *testing.T) {
	bus := &Bus{sink: nopSink{}}
	m := new(Message)
	msg := liveMsgForBench("app1", "presence-room-42")
	if n := testing.AllocsPerRun(100, func() { bus.deliverOne(0, m, msg) }); n != 0 {
		t.Fatalf("deliverOne allocates %v times for a channel without escapes", n)
	}
}

// BenchmarkPublishConcurrent: PublishBatch of one publication (one REST
// trigger) from P goroutines at once, each waiting for its ack before the
// next, as P concurrent REST publishers do; R1, file store, over 1,000
// channels.
func BenchmarkPublishConcurrent(b *testing.B) {
	for _, p := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("publishers=%d", p), func(b *testing.B) {
			bus := startBus(b, testConfig(b), nopSink{})
			benchConcurrent(b, bus, p)
		})
	}
}

// benchConcurrent runs b.N single-publication PublishBatch calls from p
// goroutines and reports msgs/s.
func benchConcurrent(b *testing.B, bus *Bus, p int) {
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				ps := []Publication{{App: "app1", Channel: "ch." + strconv.FormatInt(i%1000, 10), Payload: benchPayload}}
				if _, err := bus.PublishBatch(ctx, ps); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublishConcurrentCluster: as BenchmarkPublishConcurrent, into a
// 3-node in-process cluster (R3), publishing through one node.
func BenchmarkPublishConcurrentCluster(b *testing.B) {
	cfgs := clusterConfigs(b, 3)
	buses := make([]*Bus, len(cfgs))
	err := testkit.StartAll(len(cfgs), func(i int) error {
		bus, err := startWithSink(cfgs[i], nopSink{})
		buses[i] = bus
		return err
	})
	b.Cleanup(func() {
		for _, bus := range buses {
			if bus != nil {
				bus.Close()
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("publishers=%d", p), func(b *testing.B) { benchConcurrent(b, buses[0], p) })
	}
}
