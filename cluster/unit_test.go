package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOwnerOfSpreadsAndMovesMinimally(t *testing.T) {
	five := []string{"a", "b", "c", "d", "e"}
	const n = 20000
	count := map[string]int{}
	for i := range n {
		count[OwnerOf(five, "app", fmt.Sprint("ch-", i))]++
	}
	for _, name := range five {
		if c := count[name]; c < n/5*8/10 || c > n/5*12/10 {
			t.Errorf("%s owns %d of %d: %v", name, c, n, count)
		}
	}
	without := []string{"a", "b", "d", "e"}
	for i := range n {
		ch := fmt.Sprint("ch-", i)
		before, after := OwnerOf(five, "app", ch), OwnerOf(without, "app", ch)
		if before != "c" && before != after {
			t.Fatalf("%s moved %s -> %s", ch, before, after)
		}
	}
	if OwnerOf(nil, "app", "x") != "" {
		t.Error("OwnerOf(nil) not empty")
	}
	// The separator matters: ("a", "bc") and ("ab", "c") are different keys.
	if keyHash("a", "bc") == keyHash("ab", "c") {
		t.Error("keyHash ignores the app/channel boundary")
	}
}

func BenchmarkOwner(b *testing.B) {
	c := &Cluster{name: "n0"}
	byName := map[string]entry{}
	for i := range 5 {
		name := fmt.Sprintf("node-%d", i)
		byName[name] = entry{member: Member{Name: name}}
	}
	c.view.Store(buildView(byName))
	b.ReportAllocs()
	for b.Loop() {
		c.Owner("app-1", "presence-room-1234")
	}
}

func TestParseState(t *testing.T) {
	d := delegate{&Cluster{name: "me"}}
	if got := d.LocalState(false); got != nil {
		t.Fatalf("LocalState with no handlers = %q", got)
	}
	d.c.Register(2, &recorder{state: []byte("two")})
	d.c.Register(9, &recorder{}) // empty state: no section
	d.c.Register(200, &recorder{state: bytes.Repeat([]byte("z"), 300)})
	st := d.LocalState(true)
	from, secs, err := parseState(st)
	if err != nil || from != "me" || len(secs) != 2 || secs[0].kind != 2 || string(secs[0].state) != "two" ||
		secs[1].kind != 200 || len(secs[1].state) != 300 {
		t.Fatalf("parseState = %q %+v %v", from, secs, err)
	}
	bad := []struct {
		name string
		in   []byte
	}{
		{name: "empty", in: nil},
		{name: "version", in: []byte{9, 0}},
		{name: "name past end", in: []byte{stateVersion, 5, 'a'}},
		{name: "section past end", in: append([]byte{stateVersion, 0, 1}, binary.AppendUvarint(nil, 10)...)},
		{name: "huge length", in: append([]byte{stateVersion, 0, 1}, binary.AppendUvarint(nil, 1<<62)...)},
		{name: "bad varint", in: []byte{stateVersion, 0, 1, 0xff}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := parseState(tc.in); !errors.Is(err, errBadState) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte{stateVersion, 1, 'n', 3, 2, 'h', 'i'})
	f.Add([]byte{stateVersion, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, secs, err := parseState(b)
		if err != nil {
			return
		}
		total := 0
		for _, s := range secs {
			total += len(s.state)
		}
		if total > len(b) {
			t.Fatalf("sections hold %d bytes of a %d-byte state", total, len(b))
		}
	})
}

func TestDeliverMalformed(t *testing.T) {
	c := &Cluster{name: "me", log: discardLogger}
	r := &recorder{}
	c.handlers[1].Store(&handlerSlot{r})
	for _, b := range [][]byte{nil, {1}, {1, 5, 'a'}, {2, 0, 'x'}} {
		c.deliver(b)
	}
	c.deliver([]byte{1, 2, 'n', '1', 'o', 'k'})
	if ms := r.messages(); len(ms) != 1 || ms[0] != (received{from: "n1", data: "ok"}) {
		t.Fatalf("got %v", ms)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{
			name: "no node name",
			cfg:  Config{Bind: "127.0.0.1:0"},
			want: "NodeName is required",
		},
		{
			name: "long node name",
			cfg:  Config{NodeName: strings.Repeat("n", 200), Bind: "127.0.0.1:0"},
			want: "NodeName is 200 bytes",
		},
		{
			name: "unknown preset",
			cfg:  Config{NodeName: "n", Bind: "127.0.0.1:0", Preset: "moon"},
			want: "unknown preset",
		},
		{
			name: "bad bind",
			cfg:  Config{NodeName: "n", Bind: "127.0.0.1:port"},
			want: "Bind",
		},
		{
			name: "meta too large",
			cfg:  Config{NodeName: "n", Bind: "127.0.0.1:0", Meta: Meta{HTTP: strings.Repeat("h", 600)}},
			want: "meta is",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Start(tc.cfg)
			if err == nil {
				c.Shutdown()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestHostPort(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port int
	}{
		{in: "", host: "0.0.0.0", port: DefaultPort},
		{in: ":7000", host: "0.0.0.0", port: 7000},
		{in: "10.0.0.1:0", host: "10.0.0.1", port: 0},
		{in: "10.0.0.1", host: "10.0.0.1", port: DefaultPort},
		{in: "[::1]:5", host: "::1", port: 5},
		{in: "localhost:9", host: "127.0.0.1", port: 9},
	}
	for _, tc := range cases {
		host, port, err := hostPort(tc.in, DefaultPort)
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("hostPort(%q) = %q %d %v, want %q %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestWithoutSelf(t *testing.T) {
	got := withoutSelf([]string{"", "10.0.0.1:7946", "127.0.0.1:7946", "10.0.0.2:7946", "10.0.0.9:8000", "seed.local:7946"},
		"10.0.0.9:8000", "0.0.0.0", 7946)
	want := "10.0.0.1:7946,10.0.0.2:7946,seed.local:7946"
	if s := strings.Join(got, ","); s != want {
		t.Fatalf("withoutSelf = %s, want %s", s, want)
	}
}

func TestSuspicionTimeout(t *testing.T) {
	cases := []struct {
		n    int
		want time.Duration
	}{
		{n: 0, want: 4 * time.Second},
		{n: 3, want: 4 * time.Second},
		{n: 10, want: 4 * time.Second},
		{n: 100, want: 8 * time.Second},
	}
	for _, tc := range cases {
		if got := suspicionTimeout(4, tc.n, time.Second); got != tc.want {
			t.Errorf("suspicionTimeout(4, %d, 1s) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	cases := []struct {
		in    string
		level slog.Level
		msg   string
	}{
		{in: "[DEBUG] memberlist: Stream connection from=x", level: slog.LevelDebug, msg: "Stream connection from=x"},
		{in: "[INFO] memberlist: Marking n as failed", level: slog.LevelInfo, msg: "Marking n as failed"},
		{in: "[WARN] memberlist: Refuting", level: slog.LevelWarn, msg: "Refuting"},
		{in: "[ERR] memberlist: Failed to send gossip", level: slog.LevelError, msg: "Failed to send gossip"},
		{in: "no prefix", level: slog.LevelDebug, msg: "no prefix"},
	}
	for _, tc := range cases {
		level, msg := parseLogLine(tc.in)
		if level != tc.level || msg != tc.msg {
			t.Errorf("parseLogLine(%q) = %v %q", tc.in, level, msg)
		}
	}
}

// TestMissingSeeds: while a member is missing, the seeds that are no live
// member's address are retried (a region cut off and back, docs/regions.md);
// with every seed a member, none is.
func TestMissingSeeds(t *testing.T) {
	c := &Cluster{name: "a1", seed: []string{"10.0.0.2:7946", "10.1.0.1:7946", "10.1.0.2:7946"}}
	members := func(addrs ...string) {
		byName := map[string]entry{"a1": {member: Member{Name: "a1", Addr: "10.0.0.1:7946"}}}
		for i, a := range addrs {
			n := fmt.Sprintf("m%d", i)
			byName[n] = entry{member: Member{Name: n, Addr: a}}
		}
		c.view.Store(buildView(byName))
	}
	members("10.0.0.2:7946") // region b's nodes declared dead
	if got := c.missingSeeds(); !slices.Equal(got, []string{"10.1.0.1:7946", "10.1.0.2:7946"}) {
		t.Fatalf("missingSeeds = %v, want region b's seeds", got)
	}
	members("10.0.0.2:7946", "10.1.0.1:7946", "10.1.0.2:7946")
	if got := c.missingSeeds(); got != nil {
		t.Fatalf("missingSeeds with every seed a member = %v", got)
	}
}
