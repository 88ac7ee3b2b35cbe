package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Cluster is one node's membership agent. Its methods may be called from
// any goroutine unless their doc says otherwise.
//
// Goroutines it owns: one event dispatcher (Watch callbacks), one join
// and state-sync loop, and reliableWorkers senders of large broadcasts,
// plus memberlist's own; Shutdown stops them all and waits for ours.
//
// Lock order (docs/locks.md): lifeMu, then memberlist's node lock, then
// evMu or claimMu. memberlist holds its node lock when it calls events and
// conflicts (which take evMu and claimMu), so nothing holding evMu or
// claimMu calls into memberlist.
type Cluster struct {
	name string
	log  *slog.Logger
	ml   *memberlist.Memberlist
	addr string   // advertised host:port
	seed []string // Config.Seeds less this node's own address

	// Timing from the preset.
	probeInterval time.Duration
	suspicionMult int
	tcpTimeout    time.Duration
	joinRetry     time.Duration

	meta     atomic.Pointer[[]byte] // JSON of Meta, for NodeMeta
	handlers [256]atomic.Pointer[handlerSlot]
	queue    *memberlist.TransmitLimitedQueue
	reliable chan reliableJob
	syncReq  chan struct{} // Register asks for a state exchange

	// Membership cache and watch queue, guarded by evMu; view is also
	// readable without it.
	evMu     sync.Mutex
	byName   map[string]entry
	view     atomic.Pointer[view]
	watchers []func(Event) // copy on write
	evQueue  []pendingEvent
	evClosed bool
	evSignal chan struct{}

	claimMu sync.Mutex
	claims  map[string]claim // see conflicts

	// Counters for Stats.
	gossipPruned    atomic.Uint64
	reliableDropped atomic.Uint64
	refused         refusals // messages refused for their key (keyring.go)

	keyring   *memberlist.Keyring // nil: gossip in clear (no Config.SecretKeys)
	rejoining atomic.Bool         // a push/pull with missing seeds is running (join.go)

	lifeMu  sync.Mutex // serializes Leave and Shutdown
	stopped atomic.Bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// Start creates this node's memberlist agent on cfg.Bind and joins the
// cluster through cfg.Seeds. It returns an error only for a bad Config or
// an address it cannot bind: when no seed answers, the node starts as a
// one-node cluster and keeps retrying its seeds every few seconds (2 s
// lan, 250 ms local) for as long as it knows no other member. A node with
// no seeds is a one-node cluster until others join it. The first join
// attempt runs before Start returns (seeds in parallel, each bounded by
// the preset's TCP timeout).
func Start(cfg Config) (*Cluster, error) {
	mc, tm, err := buildConfig(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	keyring, err := newKeyring(cfg.SecretKeys)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger
	}
	c := &Cluster{
		name:          cfg.NodeName,
		log:           logger.With("node", cfg.NodeName),
		probeInterval: mc.ProbeInterval,
		suspicionMult: mc.SuspicionMult,
		tcpTimeout:    mc.TCPTimeout,
		joinRetry:     tm.joinRetry,
		reliable:      make(chan reliableJob, reliableQueue),
		syncReq:       make(chan struct{}, 1),
		byName:        make(map[string]entry),
		claims:        make(map[string]claim),
		evSignal:      make(chan struct{}, 1),
		done:          make(chan struct{}),
		keyring:       keyring,
	}
	c.meta.Store(&meta)
	c.view.Store(&view{})
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return len(c.view.Load().members) },
		RetransmitMult: mc.RetransmitMult,
	}
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Conflict = conflicts{c}
	mc.Logger = newStdLogger(c.log, &c.refused)
	if keyring != nil {
		// Refuse anything not sealed with a key of the ring, and never
		// send in clear (keyring.go).
		mc.Keyring = keyring
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start memberlist on %q: %w", cfg.Bind, err)
	}
	c.ml = ml
	c.addr = ml.LocalNode().Address()
	c.seed = withoutSelf(cfg.Seeds, c.addr, mc.BindAddr, mc.BindPort)

	c.wg.Add(2 + reliableWorkers)
	go c.dispatch()
	go c.maintain()
	for range reliableWorkers {
		go c.sendReliable()
	}
	if len(c.seed) > 0 {
		if n := c.joinSeeds(); n == 0 {
			c.log.Warn("cluster: no seed answered; retrying in the background", "seeds", c.seed)
		}
	}
	c.log.Info("cluster: started", "addr", c.addr, "cluster", cfg.Name, "preset", cfg.Preset,
		"members", len(c.view.Load().members), "failure_detection", c.FailureDetection(), "encrypted", keyring != nil)
	return c, nil
}

// LocalName returns this node's name (Config.NodeName).
func (c *Cluster) LocalName() string { return c.name }

// Addr returns the memberlist address other nodes reach this node at
// (host:port; with port 0 in Bind, the port that was picked).
func (c *Cluster) Addr() string { return c.addr }

// Members returns the live members, this node included, sorted by name.
// "Live" is memberlist's alive or suspect: a member leaves the list when
// it leaves or is declared dead (the Left event). The slice is a copy.
// After Leave or Shutdown it is the last membership the node knew.
func (c *Cluster) Members() []Member {
	return slices.Clone(c.view.Load().members)
}

// FailureDetection returns how long it takes, at most, for a crashed node
// to be declared dead (the others' Left event) at the current cluster
// size: up to two probe intervals until a member probes it, one for that
// probe to fail, then memberlist's suspicion timeout, SuspicionMult ×
// max(1, log10 N) × ProbeInterval. That is the suspicion timeout plus
// three probe intervals: 4.2 s lan, 2.1 s local, up to 10 nodes.
// Measured on loopback with 3 nodes (crash of one, until both others saw
// Left): local 1.75-2.06 s; lan 4.6-5.4 s with the earlier 800 ms probes
// (bound 5.6 s), and 3.5-4.1 s with 600 ms across processes (kill -9 until
// member_removed, docs/benchmarks.md). A larger cluster may wait
// longer than this for suspicion confirmations (up to 3× the suspicion
// timeout when none come).
func (c *Cluster) FailureDetection() time.Duration {
	n := len(c.view.Load().members)
	return suspicionTimeout(c.suspicionMult, n, c.probeInterval) + 3*c.probeInterval
}

// SetMeta replaces what this node publishes about itself and gossips it;
// the others see an Updated event. It waits up to the TCP timeout for the
// update to be sent.
func (c *Cluster) SetMeta(m Meta) error {
	b, err := encodeMeta(m)
	if err != nil {
		return err
	}
	if c.stopped.Load() {
		return ErrStopped
	}
	c.meta.Store(&b)
	if err := c.ml.UpdateNode(c.tcpTimeout); err != nil {
		return fmt.Errorf("cluster: update meta: %w", err)
	}
	return nil
}

// Stats are counters for metrics.
type Stats struct {
	Members         int    // live members, this node included
	GossipQueued    int    // messages waiting in the gossip queue
	GossipPruned    uint64 // messages dropped because the queue was full
	ReliableQueued  int    // large-broadcast sends waiting
	ReliableDropped uint64 // large-broadcast sends dropped (queue full)
	KeyRefused      uint64 // messages refused, or joins that failed, for a key mismatch (keyring.go)
}

// Stats returns the node's counters.
func (c *Cluster) Stats() Stats {
	return Stats{
		Members:         len(c.view.Load().members),
		GossipQueued:    c.queue.NumQueued(),
		GossipPruned:    c.gossipPruned.Load(),
		ReliableQueued:  len(c.reliable),
		ReliableDropped: c.reliableDropped.Load(),
		KeyRefused:      c.refused.total(),
	}
}

// Leave tells the other members this node is going (they see Left at
// once instead of after FailureDetection), waits up to timeout for that
// to be sent, then shuts down. Calling it again, or after Shutdown, does
// nothing.
//
// Lock order: docs/locks.md (lifeMu, then memberlist's lock and evMu).
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopped.Load() {
		return nil
	}
	c.stopLoops()
	var lerr error
	if err := c.ml.Leave(timeout); err != nil {
		lerr = fmt.Errorf("cluster: leave: %w", err)
	}
	return errors.Join(lerr, c.shutdownLocked())
}

// Shutdown stops the node without telling anyone: to the others this is a
// crash, detected within FailureDetection. It waits for the node's
// goroutines to end. Calling it again, or after Leave, does nothing.
//
// Lock order: docs/locks.md (lifeMu, then memberlist's lock and evMu).
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopped.Load() {
		return nil
	}
	c.stopLoops()
	return c.shutdownLocked()
}

// stopLoops stops the join loop and the senders. c.lifeMu must be held.
func (c *Cluster) stopLoops() {
	c.stopped.Store(true)
	close(c.done)
}

// shutdownLocked stops memberlist and waits for our goroutines.
// c.lifeMu must be held. Lock order: docs/locks.md.
func (c *Cluster) shutdownLocked() error {
	err := c.ml.Shutdown()
	c.closeEvents()
	c.wg.Wait()
	c.queue.Reset()
	if err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	c.log.Info("cluster: stopped")
	return nil
}
