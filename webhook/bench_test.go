package webhook

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDeliveryEndToEnd: events written with Enqueue (500 per call,
// over 64 channels) until a local receiver answering 200 at once has
// acknowledged every one: outbox write, lanes, batching, signing, HTTP and
// acks. Reports delivered events per second and requests per event.
//
//	go test -run '^$' -bench DeliveryEndToEnd -benchtime 20000x ./webhook
func BenchmarkDeliveryEndToEnd(b *testing.B) {
	var events, requests atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		events.Add(int64(bytes.Count(body, []byte(`"id":`))))
		requests.Add(1)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	apps := testApps(b, everyEvent("http://"+ln.Addr().String()+"/"))
	bs := startBus(b, apps)
	s, _ := startSender(b, bs, apps, nil)

	const chunk = 500
	b.ResetTimer()
	began := time.Now()
	for i := 0; i < b.N; i += chunk {
		n := min(chunk, b.N-i)
		evs := make([]Event, n)
		for j := range evs {
			k := i + j
			evs[j] = countEvent(k, "bench-"+strconv.Itoa(k%64))
		}
		enqueue(b, s, evs...)
	}
	for events.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	b.ReportMetric(float64(requests.Load())/float64(b.N), "requests/event")
}
