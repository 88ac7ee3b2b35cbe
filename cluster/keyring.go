package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// A closed cluster (docs/deploy.md, "A closed cluster").
//
// With Config.SecretKeys set, every gossip packet and every TCP push/pull
// is encrypted and authenticated with AES-GCM under the first key (the
// primary); a message is accepted when any of the keys opens it, and a
// message that none opens, or one sent in clear, is refused
// (GossipVerifyIncoming and GossipVerifyOutgoing on). A node without the
// key can therefore neither join nor read nor forge membership, presence
// or ownership: it stays outside, and both sides log why (refusals below).
//
// Rotation without dropping the cluster (SetKeys): give every node the new
// key as a secondary, then make it the primary on every node, then remove
// the old one. At each step every pair of nodes shares a key the sender
// uses and the receiver accepts.
//
// Turning encryption on or off needs a restart: memberlist decides at
// Create whether messages are encrypted at all.

// Errors of the keyring.
var (
	// ErrBadKey: a key is not 16, 24 or 32 bytes (AES-128, -192, -256).
	ErrBadKey = errors.New("cluster: a secret key must be 16, 24 or 32 bytes")
	// ErrNoKeyring: SetKeys on a node started without SecretKeys, or with
	// no keys (encryption cannot be switched on or off while running).
	ErrNoKeyring = errors.New("cluster: encryption is on or off for the node's life: restart to change it")
)

// refuseLogEvery is how often, at most, one remote address's refused
// messages are logged at warning level (the rest are counted): a stranger
// retrying its join every 250 ms must not flood the log.
const refuseLogEvery = time.Minute

// maxRefuseAddrs bounds the addresses remembered for refuseLogEvery; past
// it the memory is cleared (a flood from many addresses logs a little more).
const maxRefuseAddrs = 1024

// checkKeys validates a key list: not empty, each 16/24/32 bytes, no
// duplicate. The errors never carry a key's bytes.
func checkKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no key given", ErrBadKey)
	}
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("%w: key %d is %d bytes", ErrBadKey, i, len(k))
		}
		for j := range i {
			if bytes.Equal(keys[j], k) {
				return fmt.Errorf("cluster: secret key %d repeats key %d", i, j)
			}
		}
	}
	return nil
}

// newKeyring returns memberlist's keyring for keys (checked), nil for none.
func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	kr, err := memberlist.NewKeyring(cloneKeys(keys), bytes.Clone(keys[0]))
	if err != nil {
		return nil, fmt.Errorf("cluster: keyring: %w", err)
	}
	return kr, nil
}

func cloneKeys(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = bytes.Clone(k)
	}
	return out
}

// Encrypted reports whether the node's gossip is encrypted (started with
// SecretKeys).
func (c *Cluster) Encrypted() bool { return c.keyring != nil }

// SetKeys replaces the keyring's keys with keys: keys[0] becomes the key
// this node encrypts with, every key of keys is accepted, and the keys not
// in keys are removed. The order of the steps (install, switch primary,
// remove) never leaves the node without its primary. A node started
// without keys gets ErrNoKeyring. See the top of this file for rotating a
// whole cluster.
func (c *Cluster) SetKeys(keys [][]byte) error {
	if c.keyring == nil {
		return ErrNoKeyring
	}
	if err := checkKeys(keys); err != nil {
		return err
	}
	for _, k := range keys {
		if err := c.keyring.AddKey(bytes.Clone(k)); err != nil {
			return fmt.Errorf("cluster: install key: %w", err)
		}
	}
	if err := c.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("cluster: use key: %w", err)
	}
	for _, old := range c.keyring.GetKeys() {
		keep := false
		for _, k := range keys {
			keep = keep || bytes.Equal(k, old)
		}
		if !keep {
			if err := c.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("cluster: remove key: %w", err)
			}
		}
	}
	c.log.Info("cluster: gossip keys replaced", "keys", len(keys))
	return nil
}

// refusals counts and logs messages refused for their key. It is fed by
// the memberlist log bridge (the receiving side) and by failed joins (the
// joining side).
type refusals struct {
	mu    sync.Mutex
	count uint64
	last  map[string]time.Time // remote host and reason → when last logged
}

// keyProblem returns why a memberlist error or log line is a key refusal,
// or "" when it is not one.
func keyProblem(s string) string {
	s = strings.ToLower(s)
	switch {
	case strings.Contains(s, "no installed keys could decrypt"), strings.Contains(s, "decrypt packet failed"):
		return "its messages do not open with this node's cluster.secret_key (a different key)"
	case strings.Contains(s, "encryption is configured but remote state is not encrypted"):
		return "it sends gossip in clear (no cluster.secret_key) and this node requires the key"
	case strings.Contains(s, "remote state is encrypted and encryption is not configured"):
		return "it encrypts its gossip (cluster.secret_key) and this node has no key"
	}
	return ""
}

// note counts one refusal and reports whether to log it: the first for a
// key (the remote host and the reason), then at most once per
// refuseLogEvery.
func (r *refusals) note(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if r.last == nil || len(r.last) >= maxRefuseAddrs {
		r.last = make(map[string]time.Time)
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < refuseLogEvery {
		return false
	}
	r.last[key] = now
	return true
}

func (r *refusals) total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// remoteOf extracts the host of memberlist's "from=host:port" from a log
// line: a stream comes from a new port each time, so refusals are counted
// per host.
func remoteOf(line string) string {
	_, after, ok := strings.Cut(line, "from=")
	if !ok {
		return "unknown"
	}
	if i := strings.IndexAny(after, " \t"); i >= 0 {
		after = after[:i]
	}
	if host, _, err := net.SplitHostPort(after); err == nil {
		return host
	}
	return after
}
