package protocol

import (
	"sync"
	"testing"
)

func TestParseSocketID(t *testing.T) {
	tests := []struct {
		in    string
		want  SocketID
		canon string
		ok    bool
	}{
		{in: "1234.1234", want: SocketID{1234, 1234}, canon: "1234.1234", ok: true},
		{in: "218656.9503498", want: SocketID{218656, 9503498}, canon: "218656.9503498", ok: true},
		{in: "0.0", want: SocketID{}, canon: "0.0", ok: true},
		{in: "01.002", want: SocketID{1, 2}, canon: "1.2", ok: true},
		{in: "18446744073709551615.18446744073709551615", want: SocketID{1<<64 - 1, 1<<64 - 1},
			canon: "18446744073709551615.18446744073709551615", ok: true},
		{in: "18446744073709551616.1"},
		{in: "1.18446744073709551616"},
		{in: ""},
		{in: "."},
		{in: "1."},
		{in: ".1"},
		{in: "1"},
		{in: "1.2.3"},
		{in: "abc.1"},
		{in: "+1.2"},
		{in: "-1.2"},
		{in: " 1.2"},
		{in: "1.2 "},
		{in: "1.2\n"},
		{in: "１.2"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSocketID(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseSocketID(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if ValidSocketID(tc.in) != tc.ok {
				t.Fatalf("ValidSocketID(%q) != %v", tc.in, tc.ok)
			}
			if !tc.ok {
				return
			}
			if got != tc.want || got.String() != tc.canon {
				t.Fatalf("ParseSocketID(%q) = %v (%s), want %v (%s)", tc.in, got, got, tc.want, tc.canon)
			}
			if b := got.AppendTo([]byte("x")); string(b) != "x"+tc.canon {
				t.Fatalf("AppendTo = %q", b)
			}
		})
	}
}

func TestSocketIDAppendToNoAlloc(t *testing.T) {
	id := SocketID{Node: 123456, Seq: 7890123}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() { buf = id.AppendTo(buf[:0]) })
	if allocs != 0 {
		t.Fatalf("AppendTo allocates %v times", allocs)
	}
}

func TestSocketIDs(t *testing.T) {
	g := NewSocketIDs(7)
	a, b := g.Next(), g.Next()
	if a.Node != 7 || b.Node != 7 || b.Seq != a.Seq+1 {
		t.Fatalf("Next = %v, %v", a, b)
	}
	if a.Seq >= 1<<40+1 {
		t.Fatalf("start seq %d not below 2^40", a.Seq)
	}
	r := NewSocketIDs(0)
	if id := r.Next(); id.Node == 0 || id.Node >= 1<<31 || !ValidSocketID(id.String()) {
		t.Fatalf("random node id = %v", id)
	}
}

func TestSocketIDsConcurrentUnique(t *testing.T) {
	g := NewSocketIDs(1)
	const workers, per = 8, 10000
	ids := make([][]SocketID, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range per {
				ids[w] = append(ids[w], g.Next())
			}
		})
	}
	wg.Wait()
	seen := make(map[SocketID]bool, workers*per)
	for _, list := range ids {
		for _, id := range list {
			if seen[id] {
				t.Fatalf("duplicate id %v", id)
			}
			seen[id] = true
		}
	}
}
