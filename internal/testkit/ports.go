package testkit

import (
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
)

// Ports come from [portMin, portMax): below Linux's ephemeral range
// (32768-60999), so that no outgoing connection takes one between the probe
// and the bind of the server it is meant for. The range is cut into blocks
// of portBlock ports; a process reserves a block (a lock on a file in the
// temporary directory, held until the process exits) before it hands out
// its ports, so two test binaries running at once never get the same port,
// and it hands out each port once. Each port is also proved free with a
// listen probe on TCP and UDP (memberlist binds both), which skips ports
// held by anything else.
const (
	portMin   = 17000
	portMax   = 32768 // exclusive
	portBlock = 64
	numBlocks = (portMax - portMin) / portBlock
)

var ports struct {
	sync.Mutex
	next, end int // the rest of the current block: [next, end)
	block     int // the next block to try; -1 before the first
	tried     int // blocks tried since the last reserved one
}

func init() { ports.block = -1 }

// FreePorts returns n distinct ports that were free on 127.0.0.1 for TCP
// and for UDP when probed, reserved for this process and not returned
// before by this process (see the range's comment). They suit a server
// that must come back on the same port after a restart. It fails the test
// if the range is used up.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	out := make([]int, 0, n)
	for len(out) < n {
		if ports.next == ports.end && !nextBlock() {
			t.Fatalf("testkit: no free block of %d ports left in %d-%d", portBlock, portMin, portMax-1)
		}
		p := ports.next
		ports.next++
		if probe(p) {
			out = append(out, p)
		}
	}
	return out
}

// FreePort is FreePorts(t, 1)[0].
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreeAddr is "127.0.0.1:" and a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return LoopbackAddr(FreePort(t))
}

// LoopbackAddr is "127.0.0.1:port".
func LoopbackAddr(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// nextBlock reserves the next block no other process holds, starting at
// one spread by pid; it reports false when every block was tried. ports
// must be locked.
func nextBlock() bool {
	if ports.block < 0 {
		ports.block = os.Getpid() % numBlocks
	}
	for ports.tried < numBlocks {
		b := ports.block
		ports.block = (ports.block + 1) % numBlocks
		ports.tried++
		if reserveBlock(b) {
			ports.tried = 0
			ports.next = portMin + b*portBlock
			ports.end = ports.next + portBlock
			return true
		}
	}
	return false
}

// probe reports whether port p can be bound on 127.0.0.1 for TCP and UDP.
func probe(p int) bool {
	addr := LoopbackAddr(p)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
