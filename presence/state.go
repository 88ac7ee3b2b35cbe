package presence

import (
	"slices"
	"time"
)

// This file is the cluster presence state as a pure data structure (no I/O,
// no goroutines, no clock of its own): an owner-partitioned CRDT. gossip.go
// binds it to a Transport. See docs/presence.md for the invariants.
//
// Every node owns one slice of every presence channel: the users its own
// connections joined, with their connection count. Only the owner changes
// its slice; each change takes the owner's next sequence number (seq) and
// travels as a Delta. Other nodes apply deltas per key (owner, app,
// channel, user) last-writer-wins on seq, which is commutative and
// idempotent, so duplicated and reordered gossip converges. A Snapshot (an
// owner's whole slice at its current seq) repairs whatever gossip lost.
//
// The union view is what the Registry shows: a user is in a channel when
// any live owner's slice holds it with a count above zero. Channel
// occupancy (subscriber counts) lives in the same structure under reserved
// channel names; occupancy.go says how.

// OwnerID names one slice: a node during one boot. A restarted node has a
// new Boot, and its old slice is superseded: at most one boot per node name
// is held at a time.
type OwnerID struct {
	Node string
	Boot int64
}

// less orders owners by node name, then boot: the owner whose user_info a
// user shows when several owners hold the user.
func (o OwnerID) less(p OwnerID) bool {
	if o.Node != p.Node {
		return o.Node < p.Node
	}
	return o.Boot < p.Boot
}

// Entry is one user in one owner's slice of a channel.
type Entry struct {
	Member Member
	// Count is the owner's connections of the user; 0 marks a delete (a
	// tombstone while it is kept).
	Count int
	// Seq is the owner seq of the entry's last change.
	Seq uint64
	// Since is the owner seq at which the user entered the slice; with the
	// owner it orders user_info precedence.
	Since uint64
}

// Delta is one change of one entry, as its owner broadcasts it.
type Delta struct {
	Owner        OwnerID
	App, Channel string
	Entry        Entry
}

// Version is what a node knows of one owner: every change up to Seq.
type Version struct {
	Owner OwnerID
	Seq   uint64
}

// SnapshotChannel is an owner's entries in one channel.
type SnapshotChannel struct {
	App, Channel string
	Entries      []Entry
}

// Snapshot is an owner's whole slice at Seq (live entries only: a user not
// in it was deleted at or before Seq), plus the sender's version vector.
type Snapshot struct {
	Owner    OwnerID
	Seq      uint64
	Channels []SnapshotChannel
	Known    []Version
}

// Bounds of the state.
const (
	// maxPending bounds the out-of-order seqs remembered per owner; past
	// it they are forgotten and the owner's snapshot repairs the rest.
	maxPending = 4096
	// maxTombstones bounds the tombstones kept per owner; past it the
	// oldest half is pruned early.
	maxTombstones = 1 << 16
)

// chanState is one presence channel as this node sees it.
type chanState struct {
	slices map[OwnerID]map[string]*Entry // owner → user id → entry
	union  map[string]Member             // user id → member shown
	order  []string                      // union user ids, first seen first
	conns  map[ConnID]string             // this node's connections → user id
	subs   int                           // occupancy channels: the sum reported
}

// ownerState is what this node knows of a remote owner.
type ownerState struct {
	id OwnerID
	// applied is the contiguous watermark: every change up to it has been
	// applied (or superseded by a snapshot), so a delta at or below it is
	// old news.
	applied uint64
	// max is the highest seq seen or heard of; applied < max is a gap.
	max       uint64
	pending   map[uint64]struct{} // seqs above applied already applied
	gapSince  time.Time           // when the current gap was first seen
	requested time.Time           // last time its snapshot was asked for
	chans     map[key]struct{}    // channels where it has a slice
	tombs     []tomb
	orphaned  time.Time // first sweep that found its node not live
}

// tomb locates a tombstone of an owner.
type tomb struct {
	k   key
	uid string
	seq uint64
	at  time.Time
}

// floor rejects data of a node's boots at or below boot: boots superseded
// by a newer one, or declared dead.
type floor struct {
	boot int64
	at   time.Time
}

// State is one node's view of cluster presence. It is not safe for
// concurrent use: Gossip serializes every call under its lock, and the
// Listener is called synchronously from the calls that change the union.
type State struct {
	self     OwnerID
	seq      uint64
	emit     Listener
	channels map[key]*chanState
	ownChans map[key]struct{} // channels where this node has a slice
	owners   map[string]*ownerState
	floors   map[string]floor
	out      []Delta // this node's changes not yet taken by TakeDeltas
}

// NewState returns the empty state of owner self, reporting union changes
// to emit (nil: none).
func NewState(self OwnerID, emit Listener) *State {
	if emit == nil {
		emit = func(Change) {}
	}
	return &State{
		self:     self,
		emit:     emit,
		channels: make(map[key]*chanState),
		ownChans: make(map[key]struct{}),
		owners:   make(map[string]*ownerState),
		floors:   make(map[string]floor),
	}
}

// Self returns the owner this state writes as.
func (s *State) Self() OwnerID { return s.self }

// Seq returns this node's current seq.
func (s *State) Seq() uint64 { return s.seq }

// TakeDeltas returns this node's changes since the last call, in seq order.
func (s *State) TakeDeltas() []Delta {
	d := s.out
	s.out = nil
	return d
}

func (s *State) channel(k key) *chanState {
	c := s.channels[k]
	if c == nil {
		c = &chanState{
			slices: make(map[OwnerID]map[string]*Entry),
			union:  make(map[string]Member),
			conns:  make(map[ConnID]string),
		}
		s.channels[k] = c
	}
	return c
}

// gc drops channel k when nothing is left in it.
func (s *State) gc(k key, c *chanState) {
	if len(c.slices) == 0 && len(c.union) == 0 && len(c.conns) == 0 && c.subs == 0 {
		delete(s.channels, k)
	}
}

// Join adds a local connection (see Registry.Join for the contract of
// maxMembers and joined). The change is queued for TakeDeltas. It fails
// with ErrReservedChannel for a name occupancy uses.
func (s *State) Join(app, ch string, conn ConnID, m Member, maxMembers int, joined func([]Member)) error {
	k := key{app, ch}
	if isOccupancy(k) {
		return ErrReservedChannel
	}
	c := s.channels[k]
	if c != nil {
		if prev, ok := c.conns[conn]; ok {
			if prev == m.ID {
				if joined != nil {
					joined(c.members())
				}
				return nil
			}
			s.Leave(app, ch, conn) // the connection rejoins as another user
			c = s.channels[k]
		}
	}
	if maxMembers > 0 && (c == nil || !c.has(m.ID)) && s.Count(app, ch) >= maxMembers {
		return ErrFull
	}
	c = s.channel(k)
	own := c.slices[s.self]
	if own == nil {
		own = make(map[string]*Entry)
		c.slices[s.self] = own
		s.ownChans[k] = struct{}{}
	}
	s.seq++
	e := own[m.ID]
	if e == nil {
		e = &Entry{Member: m, Since: s.seq}
		own[m.ID] = e
	}
	e.Count++
	e.Seq = s.seq
	c.conns[conn] = m.ID
	s.out = append(s.out, Delta{Owner: s.self, App: app, Channel: ch, Entry: *e})
	change, ok := s.settle(k, c, m.ID, conn)
	if joined != nil {
		joined(c.members())
	}
	if ok {
		s.emit(change)
	}
	return nil
}

func (c *chanState) has(uid string) bool {
	_, ok := c.union[uid]
	return ok
}

// Leave removes a local connection, if it has joined. The change is queued
// for TakeDeltas.
func (s *State) Leave(app, ch string, conn ConnID) {
	k := key{app, ch}
	c := s.channels[k]
	if c == nil {
		return
	}
	uid, ok := c.conns[conn]
	if !ok {
		return
	}
	delete(c.conns, conn)
	own := c.slices[s.self]
	e := own[uid]
	s.seq++
	e.Count--
	e.Seq = s.seq
	s.out = append(s.out, Delta{Owner: s.self, App: app, Channel: ch, Entry: *e})
	if e.Count == 0 {
		delete(own, uid)
		if len(own) == 0 {
			delete(c.slices, s.self)
			delete(s.ownChans, k)
		}
	}
	if change, ok := s.settle(k, c, uid, conn); ok {
		s.emit(change)
	}
	s.gc(k, c)
}

// settle recomputes user uid's place in the union of channel k and returns
// the Change to report, if the user entered or left it. The member shown is
// that of the least owner holding the user (node name, then boot). In an
// occupancy channel it recomputes the subscriber count instead.
func (s *State) settle(k key, c *chanState, uid string, origin ConnID) (Change, bool) {
	if isOccupancy(k) {
		return s.settleOccupancy(k, c)
	}
	var best *Entry
	var bestOwner OwnerID
	for o, sl := range c.slices {
		e := sl[uid]
		if e == nil || e.Count <= 0 {
			continue
		}
		if best == nil || o.less(bestOwner) {
			best, bestOwner = e, o
		}
	}
	was, present := c.union[uid]
	switch {
	case best != nil && !present:
		c.union[uid] = best.Member
		c.order = append(c.order, uid)
		return Change{App: k.app, Channel: k.channel, Member: best.Member, Added: true, Origin: origin}, true
	case best != nil:
		c.union[uid] = best.Member
	case present:
		delete(c.union, uid)
		c.order = removeString(c.order, uid)
		return Change{App: k.app, Channel: k.channel, Member: was, Origin: origin}, true
	}
	return Change{}, false
}

func (c *chanState) members() []Member {
	out := make([]Member, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.union[id])
	}
	return out
}

// Members returns the union of channel (app, ch), first seen first (none
// for a name occupancy uses).
func (s *State) Members(app, ch string) []Member {
	if c := s.channels[key{app, ch}]; c != nil && !isOccupancy(key{app, ch}) {
		return c.members()
	}
	return nil
}

// Count returns the number of distinct users in the union of (app, ch).
func (s *State) Count(app, ch string) int {
	if c := s.channels[key{app, ch}]; c != nil && !isOccupancy(key{app, ch}) {
		return len(c.union)
	}
	return 0
}

// admit returns the state of remote owner o, creating it, or nil when data
// of o must be ignored: this node's own name, or a boot that is superseded
// or declared dead. A newer boot of a known node supersedes the older one:
// its slice is dropped (ghosts of a crashed and restarted node go).
func (s *State) admit(o OwnerID, now time.Time) *ownerState {
	if o.Node == s.self.Node {
		return nil
	}
	if f, ok := s.floors[o.Node]; ok && o.Boot <= f.boot {
		return nil
	}
	cur := s.owners[o.Node]
	if cur != nil && cur.id == o {
		return cur
	}
	if cur != nil {
		s.dropOwner(cur) // cur.id.Boot < o.Boot: the floor rejected older ones
	}
	s.floors[o.Node] = floor{boot: o.Boot - 1, at: now}
	st := &ownerState{id: o, pending: make(map[uint64]struct{}), chans: make(map[key]struct{})}
	s.owners[o.Node] = st
	return st
}

// dropOwner removes o's slices and reports the users it took out of the
// union.
func (s *State) dropOwner(o *ownerState) {
	delete(s.owners, o.id.Node)
	for k := range o.chans {
		c := s.channels[k]
		if c == nil {
			continue
		}
		sl := c.slices[o.id]
		delete(c.slices, o.id)
		for _, uid := range sortedKeys(sl) {
			if change, ok := s.settle(k, c, uid, ""); ok {
				s.emit(change)
			}
		}
		s.gc(k, c)
	}
}

// ApplyDelta applies a remote owner's change: last writer wins per entry on
// seq; duplicates and changes older than what is held do nothing.
func (s *State) ApplyDelta(d Delta, now time.Time) {
	o := s.admit(d.Owner, now)
	if o == nil {
		return
	}
	seq := d.Entry.Seq
	if seq <= o.applied {
		return
	}
	if _, dup := o.pending[seq]; dup {
		return
	}
	k := key{d.App, d.Channel}
	c := s.channel(k)
	sl := c.slices[o.id]
	uid := d.Entry.Member.ID
	if e := sl[uid]; e == nil || e.Seq < seq {
		if sl == nil {
			sl = make(map[string]*Entry)
			c.slices[o.id] = sl
			o.chans[k] = struct{}{}
		}
		e := d.Entry
		sl[uid] = &e
		if e.Count <= 0 {
			e.Count = 0
			o.tombs = append(o.tombs, tomb{k: k, uid: uid, seq: seq, at: now})
		}
		if change, ok := s.settle(k, c, uid, ""); ok {
			s.emit(change)
		}
	}
	s.see(o, seq, now)
	s.gc(k, c)
}

// see records that o's change seq was applied and moves the watermark.
func (s *State) see(o *ownerState, seq uint64, now time.Time) {
	if seq == o.applied+1 {
		o.applied = seq
		for {
			if _, ok := o.pending[o.applied+1]; !ok {
				break
			}
			delete(o.pending, o.applied+1)
			o.applied++
		}
	} else if len(o.pending) < maxPending {
		o.pending[seq] = struct{}{}
	} else {
		clear(o.pending) // the snapshot repairs what this forgets
	}
	s.heard(o, seq, now)
	if len(o.tombs) > 0 {
		s.pruneTombs(o, now, 0)
	}
}

// heard records that o reached seq, and whether that leaves a gap.
func (s *State) heard(o *ownerState, seq uint64, now time.Time) {
	o.max = max(o.max, seq)
	switch {
	case o.applied >= o.max:
		o.gapSince = time.Time{}
	case o.gapSince.IsZero():
		o.gapSince = now
	}
}

// ApplyHigh records that owner o has reached seq (its high-water mark, or a
// peer's version vector). Being behind it is a gap, repaired by asking o.
func (s *State) ApplyHigh(o OwnerID, seq uint64, now time.Time) {
	if st := s.admit(o, now); st != nil && seq > st.applied {
		s.heard(st, seq, now)
	}
}

// Snapshot returns this node's own slice at its current seq and its version
// vector.
func (s *State) Snapshot() Snapshot {
	sn := Snapshot{Owner: s.self, Seq: s.seq}
	for _, k := range sortedChans(s.ownChans) {
		own := s.channels[k].slices[s.self]
		sc := SnapshotChannel{App: k.app, Channel: k.channel, Entries: make([]Entry, 0, len(own))}
		for _, uid := range sortedKeys(own) {
			sc.Entries = append(sc.Entries, *own[uid])
		}
		sn.Channels = append(sn.Channels, sc)
	}
	sn.Known = append(sn.Known, Version{Owner: s.self, Seq: s.seq})
	for _, name := range sortedKeys(s.owners) {
		o := s.owners[name]
		sn.Known = append(sn.Known, Version{Owner: o.id, Seq: o.applied})
	}
	return sn
}

// MergeSnapshot merges a remote owner's snapshot: when it is newer than
// what is held of that owner, it replaces every entry at or below its seq;
// entries changed after it are kept. The sender's version vector then
// marks the owners this node is behind on (see Gaps).
func (s *State) MergeSnapshot(sn Snapshot, now time.Time) {
	if o := s.admit(sn.Owner, now); o != nil && sn.Seq > o.applied {
		s.replace(o, sn, now)
	}
	for _, v := range sn.Known {
		if v.Owner.Node != sn.Owner.Node {
			s.ApplyHigh(v.Owner, v.Seq, now)
		}
	}
}

// replace installs snapshot sn of owner o (sn.Seq > o.applied).
func (s *State) replace(o *ownerState, sn Snapshot, now time.Time) {
	type ref struct {
		k   key
		uid string
	}
	in := make(map[ref]*Entry)
	for i := range sn.Channels {
		sc := &sn.Channels[i]
		for j := range sc.Entries {
			e := &sc.Entries[j]
			if e.Count > 0 && e.Seq <= sn.Seq {
				in[ref{key{sc.App, sc.Channel}, e.Member.ID}] = e
			}
		}
	}
	var touched []ref
	for _, k := range sortedChans(o.chans) {
		sl := s.channels[k].slices[o.id]
		for _, uid := range sortedKeys(sl) {
			if e := sl[uid]; e.Seq <= sn.Seq && in[ref{k, uid}] == nil {
				delete(sl, uid) // deleted at or before sn.Seq
				touched = append(touched, ref{k, uid})
			}
		}
	}
	for i := range sn.Channels {
		sc := &sn.Channels[i]
		k := key{sc.App, sc.Channel}
		for j := range sc.Entries {
			e := in[ref{k, sc.Entries[j].Member.ID}]
			if e == nil || e != &sc.Entries[j] {
				continue // invalid, or repeated in the snapshot
			}
			c := s.channel(k)
			sl := c.slices[o.id]
			if sl == nil {
				sl = make(map[string]*Entry)
				c.slices[o.id] = sl
				o.chans[k] = struct{}{}
			}
			if cur := sl[e.Member.ID]; cur == nil || cur.Seq < e.Seq {
				cp := *e
				sl[e.Member.ID] = &cp
				touched = append(touched, ref{k, e.Member.ID})
			}
		}
	}
	for p := range o.pending {
		if p <= sn.Seq {
			delete(o.pending, p)
		}
	}
	o.applied = max(o.applied, sn.Seq-1)
	s.see(o, sn.Seq, now)
	for _, r := range touched {
		c := s.channels[r.k]
		if change, ok := s.settle(r.k, c, r.uid, ""); ok {
			s.emit(change)
		}
	}
	for k := range o.chans {
		c := s.channels[k]
		if len(c.slices[o.id]) == 0 {
			delete(c.slices, o.id)
			delete(o.chans, k)
		}
		s.gc(k, c)
	}
}

// NodeLeft drops every slice of node name (it left or was declared dead)
// and rejects its data up to boot, or up to the boot held if newer.
func (s *State) NodeLeft(name string, boot int64, now time.Time) {
	if name == s.self.Node {
		return
	}
	if o := s.owners[name]; o != nil {
		boot = max(boot, o.id.Boot)
		s.dropOwner(o)
	}
	if f, ok := s.floors[name]; !ok || f.boot < boot {
		s.floors[name] = floor{boot: boot, at: now}
	}
}

// NodeAlive records that node name is live with boot (a membership event):
// older boots are superseded, and a boot declared dead before is accepted
// again (the node came back).
func (s *State) NodeAlive(name string, boot int64, now time.Time) {
	if name == s.self.Node || boot == 0 {
		return
	}
	f, ok := s.floors[name]
	switch {
	case ok && f.boot > boot:
		return // a newer boot was seen: the event is stale
	case ok && f.boot == boot:
		s.floors[name] = floor{boot: boot - 1, at: now}
	}
	s.admit(OwnerID{Node: name, Boot: boot}, now)
}

// Gaps returns the nodes whose snapshot should be asked for now: their
// owner has had a gap (a seq heard of but not applied) for at least grace,
// and was last asked at least retry ago. It marks them asked.
func (s *State) Gaps(now time.Time, grace, retry time.Duration) []string {
	var out []string
	for _, name := range sortedKeys(s.owners) {
		o := s.owners[name]
		if o.applied >= o.max || now.Sub(o.gapSince) < grace || now.Sub(o.requested) < retry {
			continue
		}
		o.requested = now
		out = append(out, name)
	}
	return out
}

// Sweep drops the slices of owners whose node has not been in live for
// orphanAfter (a missed or raced Left), prunes tombstones older than
// tombTTL, and forgets floors older than floorTTL of nodes it holds nothing
// of.
func (s *State) Sweep(now time.Time, live map[string]bool, orphanAfter, tombTTL, floorTTL time.Duration) {
	for _, name := range sortedKeys(s.owners) {
		o := s.owners[name]
		switch {
		case live[name]:
			o.orphaned = time.Time{}
		case o.orphaned.IsZero():
			o.orphaned = now
		case now.Sub(o.orphaned) >= orphanAfter:
			s.NodeLeft(name, o.id.Boot, now)
			continue
		}
		s.pruneTombs(o, now, tombTTL)
	}
	for name, f := range s.floors {
		if s.owners[name] == nil && now.Sub(f.at) >= floorTTL {
			delete(s.floors, name)
		}
	}
}

// pruneTombs removes o's tombstones at or below its watermark, and, when
// ttl > 0, those older than ttl. Past maxTombstones the oldest half goes.
func (s *State) pruneTombs(o *ownerState, now time.Time, ttl time.Duration) {
	force := 0
	if len(o.tombs) > maxTombstones {
		force = len(o.tombs) / 2
	}
	kept := o.tombs[:0]
	for i, t := range o.tombs {
		c := s.channels[t.k]
		var e *Entry
		if c != nil {
			e = c.slices[o.id][t.uid]
		}
		if e == nil || e.Count > 0 || e.Seq != t.seq {
			continue // replaced since
		}
		if i < force || t.seq <= o.applied || ttl > 0 && now.Sub(t.at) >= ttl {
			sl := c.slices[o.id]
			delete(sl, t.uid)
			if len(sl) == 0 {
				delete(c.slices, o.id)
				delete(o.chans, t.k)
			}
			s.gc(t.k, c)
			continue
		}
		kept = append(kept, t)
	}
	clear(o.tombs[len(kept):])
	o.tombs = kept
}

// StateStats are sizes of a State, for metrics and tests.
type StateStats struct {
	Channels   int // channels held (union, slices or local connections), occupancy included
	Occupied   int // channels with subscribers cluster-wide
	Owners     int // remote owners held
	Entries    int // entries of remote owners, tombstones included
	Tombstones int
	Gaps       int // owners with a gap
}

// Stats counts the state's sizes.
func (s *State) Stats() StateStats {
	st := StateStats{Channels: len(s.channels), Owners: len(s.owners)}
	for _, c := range s.channels {
		if c.subs > 0 {
			st.Occupied++
		}
	}
	for _, o := range s.owners {
		st.Tombstones += len(o.tombs)
		if o.applied < o.max {
			st.Gaps++
		}
		for k := range o.chans {
			st.Entries += len(s.channels[k].slices[o.id])
		}
	}
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedChans(m map[key]struct{}) []key {
	out := make([]key, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b key) int {
		if a.app != b.app {
			if a.app < b.app {
				return -1
			}
			return 1
		}
		if a.channel < b.channel {
			return -1
		}
		if a.channel > b.channel {
			return 1
		}
		return 0
	})
	return out
}
