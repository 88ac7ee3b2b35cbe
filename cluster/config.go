package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is memberlist's port when Bind has none (docs/design.md,
// "Names": 7946).
const DefaultPort = 7946

// Limits checked by Start.
const (
	// MaxNodeNameLen bounds Config.NodeName: the name travels in every
	// message this node sends, so it eats into the gossip budget.
	MaxNodeNameLen = 128
	// MaxClusterNameLen is memberlist's label limit (Config.Name).
	MaxClusterNameLen = memberlist.LabelMaxSize
)

// Errors returned by Start for a bad Config.
var (
	ErrNoNodeName = errors.New("cluster: NodeName is required")
	ErrBadPreset  = errors.New("cluster: unknown preset")
)

// timing is what a preset decides beyond memberlist's own config.
type timing struct {
	// joinRetry is how often a node that knows no other member retries
	// its seeds.
	joinRetry time.Duration
}

// newMemberlistConfig returns memberlist's config for a preset.
//
// "lan" (the default): memberlist's LAN preset with failure detection
// tuned so a crashed node of a small cluster is declared dead within 4.2 s:
// probe every 600 ms (300 ms timeout), suspicion 4 × max(1, log10 N)
// probe intervals (2.4 s up to 10 nodes), an unconfirmed suspicion
// stretched to at most 3 times that, gossip every 200 ms, full-state
// push/pull every 10 s (memberlist's default is 30 s) so a lost gossip
// packet is repaired quickly. Measured with 3 processes (kill -9 until
// member_removed on both survivors, docs/benchmarks.md): 3.5-4.1 s.
//
// "local": loopback clusters (tests, one-box development): probe every
// 300 ms (150 ms timeout), suspicion 4 probe intervals (1.2 s), gossip
// every 50 ms, push/pull every 2 s. Measured: 1.75-2.06 s with 3 nodes.
//
// "wan": regions joined over long links (docs/regions.md): memberlist's
// WAN preset with probes every 1.5 s (1 s timeout), suspicion 4 probe
// intervals (6 s up to 10 nodes), gossip every 300 ms, push/pull every 20
// s: a crashed node is declared dead within 10.5 s.
//
// Both send each gossip message RetransmitMult (4) × ceil(log10(N+1))
// times: with DefaultLocalConfig's 2, a 3-node cluster sends a message
// once per peer, and a peer that one gossip round happens to skip (or one
// lost packet) never gets it.
//
// Both presets keep SuspicionMult at 4: with 3 nodes memberlist then
// expects no confirmations (k = SuspicionMult-2 > N-2), so the suspicion
// timeout is exactly its minimum rather than up to SuspicionMaxTimeoutMult
// times it. See FailureDetection.
func newMemberlistConfig(preset string) (*memberlist.Config, timing, error) {
	switch preset {
	case "", "lan":
		c := memberlist.DefaultLANConfig()
		// A crashed node must be declared dead within 5 s: 800 ms probes
		// measured 4.1-5.7 s in the multi-process test; 600 ms gives a
		// bound of 4.2 s (FailureDetection).
		c.ProbeInterval = 600 * time.Millisecond
		c.ProbeTimeout = 300 * time.Millisecond
		c.SuspicionMult = 4
		c.SuspicionMaxTimeoutMult = 3
		c.GossipInterval = 200 * time.Millisecond
		c.PushPullInterval = 10 * time.Second
		c.GossipToTheDeadTime = 10 * time.Second
		// A node restarted on a new address (a rescheduled pod) may take
		// its name back 2 s after the old address was declared dead.
		c.DeadNodeReclaimTime = 2 * time.Second
		return c, timing{joinRetry: 2 * time.Second}, nil
	case "local":
		c := memberlist.DefaultLocalConfig()
		c.ProbeInterval = 300 * time.Millisecond
		c.ProbeTimeout = 150 * time.Millisecond
		c.SuspicionMult = 4
		c.SuspicionMaxTimeoutMult = 3
		c.RetransmitMult = 4 // DefaultLocalConfig's 2 sends a message once per peer in a 3-node cluster
		c.GossipInterval = 50 * time.Millisecond
		c.PushPullInterval = 2 * time.Second
		c.GossipToTheDeadTime = 5 * time.Second
		c.DeadNodeReclaimTime = 100 * time.Millisecond
		c.TCPTimeout = time.Second
		return c, timing{joinRetry: 250 * time.Millisecond}, nil
	case "wan":
		c := memberlist.DefaultWANConfig()
		// Regions (docs/regions.md): one memberlist across links with
		// round trips up to a few hundred milliseconds. A probe may take
		// 1 s before the indirect probes; a crashed node is declared dead
		// within 10.5 s (FailureDetection, up to 10 nodes).
		c.ProbeInterval = 1500 * time.Millisecond
		c.ProbeTimeout = time.Second
		c.SuspicionMult = 4
		c.SuspicionMaxTimeoutMult = 3
		c.GossipInterval = 300 * time.Millisecond
		c.PushPullInterval = 20 * time.Second
		c.GossipToTheDeadTime = 30 * time.Second
		c.DeadNodeReclaimTime = 2 * time.Second
		c.TCPTimeout = 10 * time.Second
		return c, timing{joinRetry: 2 * time.Second}, nil
	}
	return nil, timing{}, fmt.Errorf("%w %q (want \"lan\", \"local\" or \"wan\")", ErrBadPreset, preset)
}

// suspicionTimeout is memberlist's formula (util.go): SuspicionMult ×
// max(1, log10 N) × ProbeInterval, with the same fixed-point rounding.
func suspicionTimeout(mult, n int, interval time.Duration) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	return time.Duration(mult) * time.Duration(scale*1000) * interval / 1000
}

// hostPort splits a host:port. An empty host is "0.0.0.0"; a missing
// port is def; a host name is resolved to its first IPv4 address, or its
// first address when it has no IPv4 one (memberlist wants IPs).
func hostPort(s string, def int) (string, int, error) {
	if s == "" {
		return "0.0.0.0", def, nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host.
		host, portStr = s, strconv.Itoa(def)
		if ip := net.ParseIP(s); ip == nil && !isHostName(s) {
			return "", 0, fmt.Errorf("cluster: address %q: %w", s, err)
		}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("cluster: address %q: bad port %q", s, portStr)
	}
	if host == "" {
		return "0.0.0.0", port, nil
	}
	if net.ParseIP(host) != nil {
		return host, port, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", 0, fmt.Errorf("cluster: address %q: resolve %q: %v", s, host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), port, nil
		}
	}
	return ips[0].String(), port, nil
}

// isHostName reports whether s looks like a bare host name (no colon).
func isHostName(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' || s[i] == '/' || s[i] == ' ' {
			return false
		}
	}
	return true
}

// encodeMeta returns Meta as JSON, checked against memberlist's limit.
func encodeMeta(m Meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: meta is %d bytes encoded, limit %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// buildConfig validates cfg and returns memberlist's config for it (no
// delegates set yet).
func buildConfig(cfg Config) (*memberlist.Config, timing, error) {
	if cfg.NodeName == "" {
		return nil, timing{}, ErrNoNodeName
	}
	if len(cfg.NodeName) > MaxNodeNameLen {
		return nil, timing{}, fmt.Errorf("cluster: NodeName is %d bytes, limit %d", len(cfg.NodeName), MaxNodeNameLen)
	}
	if len(cfg.Name) > MaxClusterNameLen {
		return nil, timing{}, fmt.Errorf("cluster: Name is %d bytes, limit %d", len(cfg.Name), MaxClusterNameLen)
	}
	mc, tm, err := newMemberlistConfig(cfg.Preset)
	if err != nil {
		return nil, timing{}, err
	}
	mc.Name = cfg.NodeName
	mc.Label = cfg.Name
	host, port, err := hostPort(cfg.Bind, DefaultPort)
	if err != nil {
		return nil, timing{}, fmt.Errorf("cluster: Bind: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if cfg.Advertise != "" {
		ahost, aport, err := hostPort(cfg.Advertise, port)
		if err != nil {
			return nil, timing{}, fmt.Errorf("cluster: Advertise: %w", err)
		}
		if aport == 0 {
			aport = port // memberlist replaces it with the bound port when port is 0
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	return mc, tm, nil
}
