package gateway

import (
	"bytes"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"herald/internal/testkit"
)

// The edge's connection costs, so that a regression shows in one command
// (docs/benchmarks.md, "Connects" and "Idle memory"):
//
//	go test ./gateway -run '^$' -bench 'Handshake|Footprint' -benchmem
//
// The client side is raw system calls on blocking sockets, so that it
// allocates nothing on the Go heap the server shares with it: allocs/op
// and the heap figures are the server's.

// rawClient is a blocking loopback socket driven with system calls.
type rawClient struct {
	fd int
}

// rawBuf is every rawClient's read buffer (the benchmarks read from one
// socket at a time), so that an open client holds 8 bytes of the heap.
var rawBuf [4096]byte

func rawConnect(b *testing.B, addr netip.AddrPort) *rawClient {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		b.Fatal(err)
	}
	return &rawClient{fd: fd}
}

func (r *rawClient) write(b *testing.B, p []byte) {
	for len(p) > 0 {
		n, err := unix.Write(r.fd, p)
		if err != nil {
			b.Fatal(err)
		}
		p = p[n:]
	}
}

// readUntil reads until the bytes read end with a frame containing want,
// and returns how many were read.
func (r *rawClient) readUntil(b *testing.B, want []byte) {
	got := 0
	for {
		n, err := unix.Read(r.fd, rawBuf[got:])
		if err != nil || n == 0 {
			b.Fatalf("read: %v after %q", err, rawBuf[:got])
		}
		got += n
		if bytes.Contains(rawBuf[:got], want) {
			return
		}
		if got == len(rawBuf) {
			b.Fatalf("no %q in %q", want, rawBuf[:got])
		}
	}
}

func edgeAddr(b *testing.B, e *edge) netip.AddrPort {
	ap, err := netip.ParseAddrPort(e.addr)
	if err != nil {
		b.Fatal(err)
	}
	return ap
}

var benchUpgrade = []byte("GET /app/app-key?protocol=7&client=js&version=8.4.0&flash=false HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n")

// BenchmarkHandshake is one connect to pusher:connection_established and
// its close: the pollers' own accept and upgrade (poller), and fasthttp's
// hijack path that the pollers hand unusual requests to (fasthttp).
func BenchmarkHandshake(b *testing.B) {
	for _, path := range []string{"poller", "fasthttp"} {
		b.Run(path, func(b *testing.B) {
			viaFasthttp = path == "fasthttp"
			defer func() { viaFasthttp = false }()
			e := startEdge(b, nil)
			addr := edgeAddr(b, e)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c := rawConnect(b, addr)
				c.write(b, benchUpgrade)
				c.readUntil(b, []byte("connection_established"))
				unix.Close(c.fd)
			}
		})
	}
}

// BenchmarkFootprint opens b.N idle sockets, each subscribed to one of 100
// channels, and reports what the server's heap holds per socket after a
// collection (B/idle-conn) beside the allocations per connect and
// subscribe (allocs/op, B/op). Sockets are closed and the count starts
// again every 5,000 (descriptors); the heap figure is of the first round.
// Run it with -benchtime 4000x or so.
func BenchmarkFootprint(b *testing.B) {
	const round = 5000
	e := startEdge(b, nil)
	addr := edgeAddr(b, e)
	subs := make([][]byte, 100)
	for i := range subs {
		subs[i] = clientFrame(true, ws.OpText, []byte(`{"event":"pusher:subscribe","data":{"channel":"idle-`+strconv.Itoa(i)+`"}}`))
	}
	open := make([]*rawClient, 0, round)
	// Warm up: the bus, the channels' first subscribers and the pools are
	// made once, not per socket.
	for i := range 200 {
		c := rawConnect(b, addr)
		c.write(b, benchUpgrade)
		c.readUntil(b, []byte("connection_established"))
		c.write(b, subs[i%len(subs)])
		c.readUntil(b, []byte("subscription_succeeded"))
		unix.Close(c.fd)
	}
	waitConns(b, e, 0)
	// The heap is read at two counts of open sockets, half and all of the
	// first round, and the difference divided: what the node holds apart
	// from its sockets (subscriptions in their grace period, pools) cancels.
	target := min(b.N, round)
	var mid uint64
	heap := func() uint64 {
		var m runtime.MemStats
		gc2()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// The embedded NATS server frees its start-up buffers over the first
	// seconds (JetStream's caches expire): wait until the heap holds still.
	for prev, i := heap(), 0; i < 40; i++ {
		time.Sleep(250 * time.Millisecond)
		h := heap()
		if d := int64(h) - int64(prev); d > -16<<10 && d < 16<<10 {
			break
		}
		prev = h
	}
	closeAll := func() {
		for _, c := range open {
			unix.Close(c.fd)
		}
		open = open[:0]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := rawConnect(b, addr)
		c.write(b, benchUpgrade)
		c.readUntil(b, []byte("connection_established"))
		c.write(b, subs[i%len(subs)])
		c.readUntil(b, []byte("subscription_succeeded"))
		open = append(open, c)
		if i+1 == target/2 && target >= 2 {
			b.StopTimer()
			waitConns(b, e, int64(len(open)))
			mid = heap()
			b.StartTimer()
		}
		if i+1 == target && target >= 2 {
			b.StopTimer()
			waitConns(b, e, int64(len(open)))
			b.ReportMetric(float64(int64(heap())-int64(mid))/float64(target-target/2), "B/idle-conn")
			b.StartTimer()
		}
		if len(open) == round {
			b.StopTimer()
			closeAll()
			waitConns(b, e, 0)
			b.StartTimer()
		}
	}
	b.StopTimer()
	closeAll()
}

func waitConns(b *testing.B, e *edge, n int64) {
	for range 1000 {
		if e.g.Stats().Connections == n {
			return
		}
		runtime.Gosched()
		unix.Nanosleep(&unix.Timespec{Nsec: 5e6}, nil)
	}
	b.Fatalf("%d connections, want %d", e.g.Stats().Connections, n)
}

// gc2 collects twice: what sync.Pools hold survives one collection.
func gc2() {
	runtime.GC()
	runtime.GC()
}

// TestConnSize keeps Conn in the 224-byte size class: every socket pays for
// each field (docs/design.md, "Idle memory"). Grow it only with the table.
// (It was 208 until the subscribe budget became a bucket with its own 4303
// clock, gateway/limits.go allowSubscribe.)
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 224 {
		t.Fatalf("Conn is %d bytes, over the 224-byte size class", n)
	}
}
