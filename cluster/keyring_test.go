package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// key returns a 32-byte key filled with b.
func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// lockedLog is a goroutine-safe log sink.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lockedLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// broadcastArrives broadcasts one message from from and waits until every
// recorder of to has it.
func broadcastArrives(t *testing.T, from *Cluster, kind byte, msg string, to ...*recorder) {
	t.Helper()
	from.Broadcast(kind, msg, []byte(msg))
	for _, r := range to {
		testkit.WaitFor(t, 5*time.Second, func() error {
			for _, m := range r.messages() {
				if m.data == msg {
					return nil
				}
			}
			return fmt.Errorf("%q not received", msg)
		})
	}
}

// TestSecretKeyClosesTheCluster: nodes sharing a key form a cluster and
// gossip; a node with another key, and one with none, are never admitted
// (the members stay, a warning on each side says why), and the cluster
// keeps working beside them.
func TestSecretKeyClosesTheCluster(t *testing.T) {
	var goodLog lockedLog
	nodes := startN(t, 2, func(c *Config) {
		c.SecretKeys = [][]byte{key(1)}
		c.Logger = goodLog.logger()
	})
	if !nodes[0].Encrypted() {
		t.Fatal("Encrypted = false with SecretKeys set")
	}
	recs := []*recorder{{}, {}}
	for i, c := range nodes {
		c.Register(9, recs[i])
	}

	var wrongLog, clearLog lockedLog
	wrong := nodeConfig(t, "wrong", nodes[0].Addr(), nodes[1].Addr())
	wrong.SecretKeys = [][]byte{key(2)}
	wrong.Logger = wrongLog.logger()
	w := start(t, wrong)
	inClear := nodeConfig(t, "clear", nodes[0].Addr())
	inClear.Logger = clearLog.logger()
	c := start(t, inClear)

	time.Sleep(6 * w.joinRetry) // both keep retrying their seeds in vain
	for _, n := range nodes {
		if got := memberNames(n); got != "n0,n1" {
			t.Fatalf("%s sees [%s], want [n0,n1]", n.LocalName(), got)
		}
	}
	for _, n := range []*Cluster{w, c} {
		if got := memberNames(n); got != n.LocalName() {
			t.Fatalf("%s sees [%s], want itself alone", n.LocalName(), got)
		}
	}
	broadcastArrives(t, nodes[0], 9, "still-gossiping", recs[1])

	if s := nodes[0].Stats(); s.KeyRefused == 0 {
		t.Error("n0 counted no refusal")
	}
	for _, want := range []struct {
		log  *lockedLog
		line string
	}{
		{&goodLog, "cluster: refused a node's gossip: its messages do not open with this node's cluster.secret_key"},
		{&goodLog, "cluster: refused a node's gossip: it sends gossip in clear"},
		{&wrongLog, "could not join"},
		{&clearLog, "could not join"},
	} {
		if !strings.Contains(want.log.String(), want.line) {
			t.Errorf("no %q in the log:\n%s", want.line, want.log.String())
		}
	}
	// Once a minute per address: two nodes retrying for a while give a
	// handful of warnings, not one per attempt.
	if n := strings.Count(goodLog.String(), "refused a node's gossip"); n > 8 {
		t.Errorf("%d refusal warnings logged; want them rate-limited", n)
	}
}

// TestSecretKeyRotation rotates a running 3-node cluster's key without a
// member ever leaving: the new key is added on every node, made primary on
// every node, then the old one removed; gossip flows after each step.
func TestSecretKeyRotation(t *testing.T) {
	old, next := key(1), key(2)
	nodes := startN(t, 3, func(c *Config) { c.SecretKeys = [][]byte{old} })
	recs := make([]*recorder, 3)
	var left eventLog
	for i, c := range nodes {
		recs[i] = &recorder{}
		c.Register(9, recs[i])
	}
	nodes[0].Watch(func(e Event) {
		if e.Kind == Left {
			left.add(e)
		}
	})
	steps := [][][]byte{{old, next}, {next, old}, {next}}
	for i, keys := range steps {
		for _, c := range nodes {
			if err := c.SetKeys(keys); err != nil {
				t.Fatalf("step %d: %s: SetKeys: %v", i, c.LocalName(), err)
			}
		}
		broadcastArrives(t, nodes[i], 9, fmt.Sprintf("after-step-%d", i), recs[(i+1)%3], recs[(i+2)%3])
	}
	time.Sleep(2 * nodes[0].FailureDetection()) // a member that can no longer talk would be declared dead by now
	waitMembers(t, time.Second, nodes, "n0", "n1", "n2")
	if evs := left.events(); len(evs) != 0 {
		t.Fatalf("members left during the rotation: %v", evs)
	}

	// A node that still has only the old key is now a stranger.
	straggler := nodeConfig(t, "n3", nodes[0].Addr())
	straggler.SecretKeys = [][]byte{old}
	s := start(t, straggler)
	time.Sleep(4 * s.joinRetry)
	if got := memberNames(s); got != "n3" {
		t.Fatalf("a node with the removed key sees [%s]", got)
	}
}

func TestSetKeysRefusals(t *testing.T) {
	plain := start(t, nodeConfig(t, "plain"))
	if err := plain.SetKeys([][]byte{key(1)}); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("SetKeys on a node without encryption = %v, want ErrNoKeyring", err)
	}
	cfg := nodeConfig(t, "sealed")
	cfg.SecretKeys = [][]byte{key(1)}
	c := start(t, cfg)
	for name, keys := range map[string][][]byte{
		"none":      nil,
		"short":     {[]byte("0123456789")},
		"duplicate": {key(1), key(1)},
	} {
		if err := c.SetKeys(keys); err == nil {
			t.Errorf("%s: SetKeys accepted %d keys", name, len(keys))
		} else if strings.Contains(err.Error(), "0123456789") {
			t.Errorf("%s: the error carries the key: %v", name, err)
		}
	}
	bad := nodeConfig(t, "bad")
	bad.SecretKeys = [][]byte{[]byte("short")}
	if c, err := Start(bad); !errors.Is(err, ErrBadKey) {
		if c != nil {
			_ = c.Shutdown()
		}
		t.Fatalf("Start with a 5-byte key = %v, want ErrBadKey", err)
	}
}
