package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/internal/testkit"
)

// startRegions starts the two one-node regions of regionConfigs (a is
// home) and closes them at cleanup.
func startRegions(tb testing.TB) (a, b *Bus) {
	cfgs := regionConfigs(tb)
	buses := make([]*Bus, 2)
	err := testkit.StartAll(2, func(i int) error {
		bus, err := startWithSink(cfgs[i], nopSink{})
		buses[i] = bus
		return err
	})
	tb.Cleanup(func() {
		for _, bus := range buses {
			if bus != nil {
				bus.Close()
			}
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return buses[0], buses[1]
}

// The two ways region b could read what a resuming client missed
// (docs/regions.md): read through the gateway from the home stream, or keep
// a JetStream mirror of it in b and read that.

// BenchmarkRegionResumeReadThrough: one History read of the 10 events after
// a serial, from region b, of the stream in region a.
func BenchmarkRegionResumeReadThrough(b *testing.B) {
	home, away := startRegions(b)
	ctx := context.Background()
	var first uint64
	for i := range 10 {
		s, err := home.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: benchPayload})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = s
		}
	}
	for b.Loop() {
		res, err := away.History(ctx, "app1", "c", first-1, func(uint64, []byte, string) error { return nil })
		if err != nil || res.Count != 10 {
			b.Fatalf("history: %+v %v", res, err)
		}
	}
}

// BenchmarkRegionMirrorLag: how long after a publish's acknowledgement in
// region a a mirror of the stream in region b holds the event (ns/op is
// that lag; the publish itself is not timed). A resume from the mirror
// would have to wait this long for an event acknowledged elsewhere.
func BenchmarkRegionMirrorLag(b *testing.B) {
	home, away := startRegions(b)
	ctx := context.Background()
	mirror, err := away.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        "MIRROR_app1",
		Storage:     jetstream.FileStorage,
		Mirror:      &jetstream.StreamSource{Name: StreamName("app1")},
		Placement:   &jetstream.Placement{Cluster: "b"},
		AllowDirect: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		s, err := home.Publish(ctx, Publication{App: "app1", Channel: "c", Payload: benchPayload})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := mirror.GetMsg(ctx, s); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal(fmt.Errorf("serial %d not in the mirror after 10 s", s))
			}
		}
	}
}
