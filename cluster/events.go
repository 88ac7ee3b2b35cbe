package cluster

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// maxPendingEvents bounds the watch queue. Membership events come at the
// rate of cluster churn, so the queue stays tiny unless a Watch callback
// blocks; past the bound events are dropped and logged.
const maxPendingEvents = 1 << 16

// view is an immutable snapshot of the live members, sorted by name.
// Owner, Members and the gossip queue read it without locks.
type view struct {
	members []Member
	names   []string          // names[i] = members[i].Name
	nodes   []memberlist.Node // nodes[i] is members[i]'s address for sends
	hashes  []uint64          // hashes[i] = nameHash(members[i].Name)

	// The members that own channels: those not draining (all of them
	// when every member is draining, so Owner always has an answer).
	owners      []string
	ownerHashes []uint64
}

// find returns the index of the member named name, or -1.
func (v *view) find(name string) int {
	i := sort.Search(len(v.members), func(i int) bool { return v.members[i].Name >= name })
	if i < len(v.members) && v.members[i].Name == name {
		return i
	}
	return -1
}

// pendingEvent is one queued delivery: ev to the watchers registered when
// it was queued (or, for a Watch replay, to the new watcher only).
type pendingEvent struct {
	ev Event
	to []func(Event)
}

// entry is one live member in the cache.
type entry struct {
	member Member
	node   memberlist.Node
}

// events is the memberlist.EventDelegate. memberlist calls it with its
// node lock held ("never concurrently"): it must not block or call back
// into memberlist, so it updates the cache and queues the event for the
// dispatch goroutine.
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node)   { e.c.memberChanged(Joined, n) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.c.memberChanged(Left, n) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.c.memberChanged(Updated, n) }

// memberChanged updates the member cache and queues the event.
// memberlist's suspicion timers may still fire after Shutdown: ignored.
// It runs under memberlist's node lock and takes evMu. Lock order:
// docs/locks.md.
func (c *Cluster) memberChanged(kind EventKind, n *memberlist.Node) {
	if c.stopped.Load() {
		return
	}
	node := *n
	node.Meta = slices.Clone(n.Meta)
	m := Member{Name: n.Name, Addr: n.Address()}
	if len(node.Meta) > 0 {
		if err := json.Unmarshal(node.Meta, &m.Meta); err != nil {
			c.log.Warn("cluster: undecodable node meta", "node", n.Name, "err", err)
		}
	}

	c.evMu.Lock()
	if kind == Left {
		delete(c.byName, m.Name)
	} else {
		c.byName[m.Name] = entry{member: m, node: node}
	}
	c.view.Store(buildView(c.byName))
	c.enqueueLocked(pendingEvent{ev: Event{Kind: kind, Member: m}, to: c.watchers})
	c.evMu.Unlock()

	switch kind {
	case Joined:
		c.log.Info("cluster: member joined", "node", m.Name, "addr", m.Addr, "boot", m.Meta.Boot)
	case Left:
		c.log.Info("cluster: member left", "node", m.Name, "addr", m.Addr)
	case Updated:
		c.log.Info("cluster: member updated", "node", m.Name, "addr", m.Addr, "boot", m.Meta.Boot)
	}
}

// buildView returns the sorted snapshot of byName.
func buildView(byName map[string]entry) *view {
	v := &view{
		members: make([]Member, 0, len(byName)),
		nodes:   make([]memberlist.Node, 0, len(byName)),
		hashes:  make([]uint64, 0, len(byName)),
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	slices.Sort(names)
	v.names = names
	for _, name := range names {
		e := byName[name]
		v.members = append(v.members, e.member)
		v.nodes = append(v.nodes, e.node)
		v.hashes = append(v.hashes, nameHash(name))
	}
	for i, m := range v.members {
		if !m.Meta.Draining {
			v.owners = append(v.owners, v.names[i])
			v.ownerHashes = append(v.ownerHashes, v.hashes[i])
		}
	}
	if len(v.owners) == 0 {
		v.owners, v.ownerHashes = v.names, v.hashes
	}
	return v
}

// enqueueLocked queues p for the dispatcher. c.evMu must be held.
func (c *Cluster) enqueueLocked(p pendingEvent) {
	if c.evClosed || len(p.to) == 0 {
		return
	}
	if len(c.evQueue) >= maxPendingEvents {
		c.log.Error("cluster: watch queue full, dropping membership event (a Watch callback is blocking)",
			"node", p.ev.Member.Name, "kind", p.ev.Kind.String())
		return
	}
	c.evQueue = append(c.evQueue, p)
	select {
	case c.evSignal <- struct{}{}:
	default:
	}
}

// Watch registers fn for membership events. fn is first called with a
// Joined event for every current member (this node included, in name
// order), then with every later change, in the order memberlist reported
// them. All callbacks of all watchers run on one goroutine, never
// concurrently; fn must not block for long and must not call Leave or
// Shutdown (they wait for that goroutine). Events are not delivered after
// Shutdown.
//
// A member that restarts shows as Left then Joined when it was declared
// dead first or comes back on another address, but as Updated with a new
// Meta.Boot when it comes back on its old address before anyone noticed
// the crash: compare Boot, not just the kind.
func (c *Cluster) Watch(fn func(Event)) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	// Copy on write: queued events keep the list they were queued with.
	w := make([]func(Event), len(c.watchers), len(c.watchers)+1)
	copy(w, c.watchers)
	c.watchers = append(w, fn)
	for _, m := range c.view.Load().members {
		c.enqueueLocked(pendingEvent{ev: Event{Kind: Joined, Member: m}, to: []func(Event){fn}})
	}
}

// dispatch delivers queued events until the queue is closed and empty.
func (c *Cluster) dispatch() {
	defer c.wg.Done()
	for {
		c.evMu.Lock()
		batch := c.evQueue
		c.evQueue = nil
		closed := c.evClosed
		c.evMu.Unlock()
		for _, p := range batch {
			for _, fn := range p.to {
				fn(p.ev)
			}
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return
		}
		<-c.evSignal
	}
}

// closeEvents stops the dispatcher once what is queued is delivered.
func (c *Cluster) closeEvents() {
	c.evMu.Lock()
	c.evClosed = true
	c.evMu.Unlock()
	select {
	case c.evSignal <- struct{}{}:
	default:
	}
}

// String returns "joined", "left" or "updated".
func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Left:
		return "left"
	case Updated:
		return "updated"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}
