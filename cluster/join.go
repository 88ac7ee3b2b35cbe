package cluster

import (
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxClaims bounds the remembered name claims (see conflicts).
const maxClaims = 64

// claim is a node memberlist turned away because its name was still
// held at another address.
type claim struct {
	addr  string
	until time.Time
}

// conflicts is the memberlist.ConflictDelegate. A node restarted on a new
// address (a rescheduled pod) is turned away while its old address is
// alive, suspect, or dead for less than the preset's reclaim time, and
// memberlist would only accept it at its next push/pull (10 s lan). So
// the claim is remembered, and once the old address has left the member
// list the join loop pushes state to the new one, which makes it known at
// once. memberlist calls this with its node lock held: record and return.
// NotifyConflict takes claimMu under that lock. Lock order: docs/locks.md.
type conflicts struct{ c *Cluster }

func (d conflicts) NotifyConflict(existing, other *memberlist.Node) {
	c := d.c
	if other.Name == c.name {
		c.log.Warn("cluster: another address claims this node's name (a previous run not yet declared dead?)",
			"other", other.Address())
		return
	}
	c.log.Info("cluster: name held at another address; will retry the newcomer",
		"name", other.Name, "held_by", existing.Address(), "newcomer", other.Address())
	c.claimMu.Lock()
	if _, ok := c.claims[other.Name]; ok || len(c.claims) < maxClaims {
		c.claims[other.Name] = claim{addr: other.Address(), until: time.Now().Add(3 * c.FailureDetection())}
	}
	c.claimMu.Unlock()
}

// retryClaims pushes state to remembered claimants whose name is no
// longer held, and forgets claims that are settled or expired.
func (c *Cluster) retryClaims() {
	v := c.view.Load()
	now := time.Now()
	var addrs []string
	c.claimMu.Lock()
	for name, cl := range c.claims {
		i := v.find(name)
		switch {
		case now.After(cl.until), i >= 0 && v.members[i].Addr == cl.addr:
			delete(c.claims, name)
		case i < 0:
			addrs = append(addrs, cl.addr)
		}
	}
	c.claimMu.Unlock()
	if len(addrs) > 0 {
		c.pushPull(addrs)
	}
}

// maintain runs until Shutdown: while this node knows no other member it
// retries its seeds every joinRetry (a node started before its seeds, or
// cut off from everyone, finds them when they come back); when Register
// asks, it exchanges state with every live member.
func (c *Cluster) maintain() {
	defer c.wg.Done()
	t := time.NewTicker(c.joinRetry)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.syncReq:
			c.syncState()
		case <-t.C:
			c.retryClaims()
			if len(c.seed) > 0 && len(c.view.Load().members) <= 1 {
				if n := c.joinSeeds(); n > 0 {
					c.log.Info("cluster: joined through seeds", "answered", n,
						"members", len(c.view.Load().members))
				}
			} else if missing := c.missingSeeds(); len(missing) > 0 && c.rejoining.CompareAndSwap(false, true) {
				// Off this loop: a seed that is down may take the preset's
				// TCP timeout to fail, and state syncs must not wait.
				c.wg.Add(1)
				go func() {
					defer c.wg.Done()
					defer c.rejoining.Store(false)
					if n := c.pushPull(missing); n > 0 {
						c.log.Info("cluster: rejoined seeds", "answered", n,
							"members", len(c.view.Load().members))
					}
				}()
			}
		}
	}
}

// missingSeeds is the seeds that are no live member's address, while this
// node knows fewer other members than it has seeds: the nodes of a group
// that was cut off together (another region, docs/regions.md) declared
// each other's nodes dead and would not meet again by themselves once
// memberlist stops gossiping to the dead. A seed given as a host name
// never matches a member's address, so it is retried only while some
// member is missing.
func (c *Cluster) missingSeeds() []string {
	members := c.view.Load().members
	if len(members)-1 >= len(c.seed) {
		return nil
	}
	var out []string
	for _, s := range c.seed {
		if !slices.ContainsFunc(members, func(m Member) bool { return m.Addr == s }) {
			out = append(out, s)
		}
	}
	return out
}

// joinSeeds tries every seed at once and returns how many answered.
func (c *Cluster) joinSeeds() int { return c.pushPull(c.seed) }

// syncState runs a join push/pull with every other live member, so
// handlers registered after Start get the others' state (and give them
// theirs) without waiting for the periodic push/pull.
func (c *Cluster) syncState() {
	v := c.view.Load()
	addrs := make([]string, 0, len(v.members))
	for _, m := range v.members {
		if m.Name != c.name {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) > 0 {
		c.pushPull(addrs)
	}
}

// pushPull joins through each of addrs in parallel (memberlist's Join is
// a push/pull with join = true) and returns how many answered. Each
// attempt is bounded by the preset's TCP timeout.
func (c *Cluster) pushPull(addrs []string) int {
	var wg sync.WaitGroup
	var ok atomic.Int32
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := c.ml.Join([]string{a}); n > 0 {
				ok.Add(1)
			} else if why := keyProblem(errString(err)); why != "" {
				if c.refused.note(a+" "+why, time.Now()) {
					c.log.Warn("cluster: could not join a node: "+why,
						"addr", a, "refused_total", c.refused.total())
				}
			} else {
				c.log.Debug("cluster: push/pull failed", "addr", a, "err", err)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

// withoutSelf drops empty seeds and the ones that are this node (a seed
// list shared by every node names each of them): the advertised address,
// or the bound IP and port (any loopback IP when bound to all
// interfaces). Host names are kept: memberlist resolves them at each
// attempt, and joining oneself is harmless (a node still counts as alone
// until it knows another member).
func withoutSelf(seeds []string, advertise, bindHost string, bindPort int) []string {
	out := make([]string, 0, len(seeds))
	for _, s := range seeds {
		if s != "" && s != advertise && !isBoundAddr(s, bindHost, bindPort) {
			out = append(out, s)
		}
	}
	return out
}

func isBoundAddr(seed, bindHost string, bindPort int) bool {
	host, portStr, err := net.SplitHostPort(seed)
	if err != nil {
		host, portStr = seed, strconv.Itoa(bindPort) // memberlist's default for seeds
	}
	port, err := strconv.Atoi(portStr)
	ip := net.ParseIP(host)
	if err != nil || port != bindPort || ip == nil {
		return false
	}
	bind := net.ParseIP(bindHost)
	return ip.Equal(bind) || (bind != nil && bind.IsUnspecified() && ip.IsLoopback())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
