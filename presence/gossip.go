package presence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"herald/cluster"
)

// GossipKind is the cluster message kind presence registers.
const GossipKind byte = 'p'

// Transport is what Gossip uses of a cluster node; *cluster.Cluster
// satisfies it. Tests use an in-memory one.
type Transport interface {
	// LocalName is this node's name.
	LocalName() string
	// Members lists the live members, this node included.
	Members() []cluster.Member
	// Register installs the handler of a message kind.
	Register(kind byte, h cluster.Handler)
	// Watch reports membership changes, in order, never concurrently.
	Watch(fn func(cluster.Event))
	// Broadcast gossips msg to every other member; a newer message with
	// the same key replaces a queued older one. It must not block.
	Broadcast(kind byte, key string, msg []byte)
	// SendTo sends msg reliably to one member; it may block.
	SendTo(node string, kind byte, msg []byte) error
}

// gossipTiming is when Gossip repairs and prunes; defaultTiming documents
// the values.
type gossipTiming struct {
	tick        time.Duration // how often repairs and sweeps run
	gapGrace    time.Duration // how long a gap may wait for reordered gossip
	repairRetry time.Duration // least time between two asks of one owner
	highDelay   time.Duration // quiet time before the high-water mark goes out
	orphanAfter time.Duration // how long an owner not in Members is kept
	tombTTL     time.Duration // longest life of a tombstone
	floorTTL    time.Duration // how long a dead node's boot stays rejected
}

func defaultTiming() gossipTiming {
	return gossipTiming{
		tick:        100 * time.Millisecond,
		gapGrace:    250 * time.Millisecond,
		repairRetry: time.Second,
		highDelay:   250 * time.Millisecond,
		orphanAfter: 3 * time.Second,
		tombTTL:     time.Minute,
		floorTTL:    10 * time.Minute,
	}
}

// Bounds of the outbound queues.
const (
	// maxOutbox bounds the deltas waiting for Broadcast; past it the
	// oldest are dropped (counted), and receivers repair the gap.
	maxOutbox = 1 << 14
	// maxPeers bounds the nodes waiting to be asked or answered.
	maxPeers = 1024
)

// Gossip is the cluster-wide Registry: this node's joins and leaves go to
// every node through the Transport, and the members of every node are
// merged into one view (see State and docs/presence.md).
//
// Changes reach the Listener on every node for every union transition,
// whichever node caused it: Origin is the connection for this node's own
// joins and leaves, "" for the others'. The member limit of Join counts
// distinct users of this node's view: concurrent joins on two nodes may
// exceed it briefly. Occupancy works the same way: every node reports each
// transition of the sum of the live nodes' subscriber counts.
//
// All methods may be called concurrently. The Listener and the joined hook
// run with Gossip's lock held: they must not block or call back into it.
// Lock order: docs/locks.md (mu, then qmu; mu, then what the Listener takes).
type Gossip struct {
	t  Transport
	tm gossipTiming

	mu        sync.Mutex // guards st, closed, lastDelta, announced
	st        *State
	closed    bool
	lastDelta time.Time // when this node last queued a delta
	announced uint64    // seq of the last high-water mark queued

	smu  sync.Mutex  // guards subs; a leaf: no other lock is taken while it is held
	subs map[key]int // this node's subscriber counts not yet applied to st

	qmu     sync.Mutex // guards the queues below; taken after mu, never before
	out     []outMsg
	asks    map[string]struct{} // nodes to ask for their snapshot
	answers map[string]struct{} // nodes to send this node's snapshot

	wakeOut  chan struct{}
	wakeSync chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup

	dropped, asked, answered, sendErrors, badMessages atomic.Uint64
}

type outMsg struct {
	key string
	msg []byte
}

var (
	_ Registry  = (*Gossip)(nil)
	_ Transport = (*cluster.Cluster)(nil)
)

// NewGossip starts cluster presence on t, reporting changes to listener
// (nil: none). It registers GossipKind with t (once per Transport) and
// watches membership; Close stops it.
func NewGossip(t Transport, listener Listener) *Gossip {
	return newGossip(t, listener, defaultTiming())
}

func newGossip(t Transport, listener Listener, tm gossipTiming) *Gossip {
	self := OwnerID{Node: t.LocalName()}
	members := t.Members()
	for _, m := range members {
		if m.Name == self.Node {
			self.Boot = m.Meta.Boot
		}
	}
	if self.Boot == 0 {
		self.Boot = time.Now().UnixNano()
	}
	g := &Gossip{
		t:        t,
		tm:       tm,
		st:       NewState(self, listener),
		subs:     make(map[key]int),
		asks:     make(map[string]struct{}),
		answers:  make(map[string]struct{}),
		wakeOut:  make(chan struct{}, 1),
		wakeSync: make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	g.wg.Add(2)
	go g.sendLoop()
	go g.syncLoop()
	t.Register(GossipKind, gossipHandler{g})
	t.Watch(g.onEvent)
	for _, m := range members {
		if m.Name != self.Node {
			g.ask(m.Name) // their slices, and our boot to them
		}
	}
	return g
}

// Close stops gossiping and waits for Gossip's goroutines. The registry
// keeps answering locally; messages and membership events are ignored.
func (g *Gossip) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	close(g.stop)
	g.wg.Wait()
}

// Self returns the owner this node writes as.
func (g *Gossip) Self() OwnerID { return g.st.Self() }

// Join implements Registry; the joined hook sees every member of this
// node's cluster-wide view. joined and the Listener run under g.mu, and the
// deltas are queued under g.qmu. Lock order: docs/locks.md.
func (g *Gossip) Join(app, ch string, conn ConnID, m Member, maxMembers int, joined func([]Member)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.st.Join(app, ch, conn, m, maxMembers, joined)
	g.queueDeltasLocked()
	return err
}

// Leave implements Registry. The Listener runs under g.mu, and the deltas are
// queued under g.qmu. Lock order: docs/locks.md.
func (g *Gossip) Leave(app, ch string, conn ConnID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Leave(app, ch, conn)
	g.queueDeltasLocked()
}

// Members implements Registry: the union over live nodes, first seen first.
func (g *Gossip) Members(app, ch string) []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Members(app, ch)
}

// Count implements Registry: distinct users over live nodes.
func (g *Gossip) Count(app, ch string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Count(app, ch)
}

// SetSubscribers implements Registry. It only records the count, under a
// lock held for nothing else, so it never waits for the state or the
// network. Gossip's sender goroutine applies the latest count of each
// channel, reports the Change (with Gossip's lock held, as always) and
// gossips it: a count set and set back before then causes no Change
// anywhere. Counts set after Close are ignored.
func (g *Gossip) SetSubscribers(app, ch string, n int) {
	select {
	case <-g.stop:
		return
	default:
	}
	g.smu.Lock()
	g.subs[key{app, ch}] = n
	g.smu.Unlock()
	signal(g.wakeOut)
}

// Subscribers implements Registry: the sum over live nodes, this node's
// count included once the sender goroutine has applied it.
func (g *Gossip) Subscribers(app, ch string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Subscribers(app, ch)
}

// applySubscribers applies the counts SetSubscribers recorded to the
// state, which reports their Changes, and queues their deltas.
func (g *Gossip) applySubscribers() {
	g.smu.Lock()
	subs := g.subs
	if len(subs) == 0 {
		g.smu.Unlock()
		return
	}
	g.subs = make(map[key]int)
	g.smu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	for k, n := range subs {
		g.st.SetSubscribers(k.app, k.channel, n)
	}
	g.queueDeltasLocked()
}

// GossipStats are Gossip's sizes and counters, for metrics.
type GossipStats struct {
	StateStats
	PendingCounts int    // channels whose SetSubscribers count is not yet applied
	Queued        int    // deltas waiting for Broadcast
	Dropped       uint64 // deltas dropped from a full queue
	Asked         uint64 // snapshots asked for (gap repairs and joins)
	Answered      uint64 // snapshots sent on request
	SendErrors    uint64 // failed SendTo
	BadMessages   uint64 // undecodable messages and states
}

// Stats returns current sizes and counters.
func (g *Gossip) Stats() GossipStats {
	g.mu.Lock()
	s := GossipStats{StateStats: g.st.Stats()}
	g.mu.Unlock()
	g.smu.Lock()
	s.PendingCounts = len(g.subs)
	g.smu.Unlock()
	g.qmu.Lock()
	s.Queued = len(g.out)
	g.qmu.Unlock()
	s.Dropped = g.dropped.Load()
	s.Asked = g.asked.Load()
	s.Answered = g.answered.Load()
	s.SendErrors = g.sendErrors.Load()
	s.BadMessages = g.badMessages.Load()
	return s
}

// queueDeltasLocked encodes this node's new changes into the broadcast
// queue, in seq order (which is why it runs under mu). g.mu must be held;
// it takes g.qmu. Lock order: docs/locks.md.
func (g *Gossip) queueDeltasLocked() {
	ds := g.st.TakeDeltas()
	if len(ds) == 0 || g.closed {
		return
	}
	g.lastDelta = time.Now()
	g.qmu.Lock()
	for _, d := range ds {
		key := d.Owner.Node + "\x00" + d.App + "\x00" + d.Channel + "\x00" + d.Entry.Member.ID
		g.out = append(g.out, outMsg{key: key, msg: appendDelta(nil, d)})
	}
	g.trimOutboxLocked()
	g.qmu.Unlock()
	signal(g.wakeOut)
}

// trimOutboxLocked drops the oldest queued deltas past maxOutbox. g.qmu
// must be held.
func (g *Gossip) trimOutboxLocked() {
	if n := len(g.out) - maxOutbox; n > 0 {
		clear(g.out[:n])
		g.out = g.out[n:]
		g.dropped.Add(uint64(n))
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ask queues a request for node's snapshot.
func (g *Gossip) ask(node string) { g.queuePeer(false, node) }

// answer queues this node's snapshot for node.
func (g *Gossip) answer(node string) { g.queuePeer(true, node) }

func (g *Gossip) queuePeer(answer bool, node string) {
	g.qmu.Lock()
	set := g.asks
	if answer {
		set = g.answers
	}
	if len(set) < maxPeers {
		set[node] = struct{}{}
	}
	g.qmu.Unlock()
	signal(g.wakeSync)
}

// sendLoop applies the subscriber counts SetSubscribers recorded and hands
// queued deltas to Broadcast, oldest first, until Close.
func (g *Gossip) sendLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.wakeOut:
		}
		g.applySubscribers()
		g.qmu.Lock()
		batch := g.out
		g.out = nil
		g.qmu.Unlock()
		for _, m := range batch {
			g.t.Broadcast(GossipKind, m.key, m.msg)
		}
	}
}

// syncLoop runs repairs and sweeps, and the reliable sends (which may
// block), until Close.
func (g *Gossip) syncLoop() {
	defer g.wg.Done()
	tk := time.NewTicker(g.tm.tick)
	defer tk.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-g.wakeSync:
		case <-tk.C:
			g.tick()
		}
		g.exchange()
	}
}

// tick asks owners with a lasting gap for their snapshot, sweeps the
// state, and announces this node's high-water mark once it is quiet. The
// sweep may call the Listener under g.mu; the mark is queued under g.qmu.
// Lock order: docs/locks.md.
func (g *Gossip) tick() {
	live := make(map[string]bool)
	for _, m := range g.t.Members() {
		live[m.Name] = true
	}
	now := time.Now()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.st.Sweep(now, live, g.tm.orphanAfter, g.tm.tombTTL, g.tm.floorTTL)
	gaps := g.st.Gaps(now, g.tm.gapGrace, g.tm.repairRetry)
	if seq := g.st.Seq(); seq > g.announced && now.Sub(g.lastDelta) >= g.tm.highDelay {
		g.announced = seq
		g.qmu.Lock()
		g.out = append(g.out, outMsg{key: "\x00high", msg: appendHigh(nil, g.st.Self(), seq)})
		g.trimOutboxLocked()
		g.qmu.Unlock()
		signal(g.wakeOut)
	}
	g.mu.Unlock()
	for _, name := range gaps {
		if live[name] {
			g.ask(name)
		}
	}
}

// exchange sends the queued asks and answers.
func (g *Gossip) exchange() {
	g.qmu.Lock()
	asks, answers := g.asks, g.answers
	if len(asks) == 0 && len(answers) == 0 {
		g.qmu.Unlock()
		return
	}
	g.asks, g.answers = make(map[string]struct{}), make(map[string]struct{})
	g.qmu.Unlock()
	if len(asks) > 0 {
		msg := appendAsk(nil, g.st.Self())
		for node := range asks {
			g.asked.Add(1)
			g.send(node, msg)
		}
	}
	if len(answers) > 0 {
		g.mu.Lock()
		msg := appendSnapshot(nil, g.st.Snapshot())
		g.mu.Unlock()
		for node := range answers {
			g.answered.Add(1)
			g.send(node, msg)
		}
	}
}

func (g *Gossip) send(node string, msg []byte) {
	select {
	case <-g.stop:
		return
	default:
	}
	if err := g.t.SendTo(node, GossipKind, msg); err != nil {
		g.sendErrors.Add(1)
	}
}

// onEvent follows membership: a node that left or died loses its slices;
// a node that joined is asked for its slice (and so learns this node's
// boot); a newer boot supersedes an older one. It runs on the cluster's
// Watch goroutine; the Listener runs under g.mu. Lock order: docs/locks.md.
func (g *Gossip) onEvent(ev cluster.Event) {
	now := time.Now()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	name, boot := ev.Member.Name, ev.Member.Meta.Boot
	switch ev.Kind {
	case cluster.Left:
		g.st.NodeLeft(name, boot, now)
	case cluster.Joined, cluster.Updated:
		g.st.NodeAlive(name, boot, now)
	}
	g.mu.Unlock()
	if ev.Kind == cluster.Joined && name != g.st.Self().Node {
		g.ask(name)
	}
}

// gossipHandler is Gossip's cluster.Handler. memberlist calls it with no lock
// of its own held; NotifyMsg and MergeRemoteState may call the Listener under
// g.mu. Lock order: docs/locks.md.
type gossipHandler struct{ g *Gossip }

func (h gossipHandler) NotifyMsg(from string, msg []byte) {
	g := h.g
	m, err := decodeMessage(msg)
	if err != nil {
		g.badMessages.Add(1)
		return
	}
	now := time.Now()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	switch m.kind {
	case msgDelta:
		g.st.ApplyDelta(m.delta, now)
	case msgHigh:
		g.st.ApplyHigh(m.owner, m.seq, now)
	case msgSnapshot:
		g.st.MergeSnapshot(m.snap, now)
	case msgAsk:
		g.st.ApplyHigh(m.owner, 0, now) // a newer boot supersedes
	}
	g.mu.Unlock()
	if m.kind == msgAsk && m.owner.Node != g.st.Self().Node {
		g.answer(m.owner.Node)
	}
}

func (h gossipHandler) LocalState(join bool) []byte {
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	return appendSnapshot(nil, h.g.st.Snapshot())
}

func (h gossipHandler) MergeRemoteState(from string, state []byte, join bool) {
	m, err := decodeMessage(state)
	if err != nil || m.kind != msgSnapshot {
		h.g.badMessages.Add(1)
		return
	}
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	if !h.g.closed {
		h.g.st.MergeSnapshot(m.snap, time.Now())
	}
}

// Wire format. Every message starts with its type byte; integers are
// varints (binary.AppendUvarint, boots binary.AppendVarint); a string or
// blob is a uvarint length and its bytes.
//
//	owner    = node:string boot:varint
//	entry    = user_id:string id_json:blob user_info:blob count:uvarint seq:uvarint since:uvarint
//	'd' delta    = owner app:string channel:string entry
//	'h' high     = owner seq:uvarint
//	'a' ask      = owner (the asker)
//	's' snapshot = owner seq:uvarint n:uvarint (owner seq:uvarint)*n
//	               n:uvarint (app:string channel:string m:uvarint entry*m)*n
//
// A snapshot is also the push/pull state. New formats take new type bytes.
const (
	msgDelta    = 'd'
	msgHigh     = 'h'
	msgAsk      = 'a'
	msgSnapshot = 's'
)

// Decoding limits: no length a peer declares is trusted beyond these or
// beyond the bytes present.
const (
	maxNameLen  = 1024     // node names, apps, channels, user ids
	maxBlobLen  = 64 << 10 // user id JSON, user_info
	maxConnsPer = 1 << 31  // an entry's connection count
)

var errBadMessage = errors.New("presence: malformed gossip message")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendOwner(b []byte, o OwnerID) []byte {
	b = appendString(b, o.Node)
	return binary.AppendVarint(b, o.Boot)
}

func appendEntry(b []byte, e *Entry) []byte {
	b = appendString(b, e.Member.ID)
	b = appendString(b, string(e.Member.IDJSON))
	b = appendString(b, string(e.Member.Info))
	b = binary.AppendUvarint(b, uint64(e.Count))
	b = binary.AppendUvarint(b, e.Seq)
	return binary.AppendUvarint(b, e.Since)
}

func appendDelta(b []byte, d Delta) []byte {
	b = append(b, msgDelta)
	b = appendOwner(b, d.Owner)
	b = appendString(b, d.App)
	b = appendString(b, d.Channel)
	return appendEntry(b, &d.Entry)
}

func appendHigh(b []byte, o OwnerID, seq uint64) []byte {
	b = append(b, msgHigh)
	b = appendOwner(b, o)
	return binary.AppendUvarint(b, seq)
}

func appendAsk(b []byte, o OwnerID) []byte {
	return appendOwner(append(b, msgAsk), o)
}

func appendSnapshot(b []byte, sn Snapshot) []byte {
	b = append(b, msgSnapshot)
	b = appendOwner(b, sn.Owner)
	b = binary.AppendUvarint(b, sn.Seq)
	b = binary.AppendUvarint(b, uint64(len(sn.Known)))
	for _, v := range sn.Known {
		b = appendOwner(b, v.Owner)
		b = binary.AppendUvarint(b, v.Seq)
	}
	b = binary.AppendUvarint(b, uint64(len(sn.Channels)))
	for i := range sn.Channels {
		sc := &sn.Channels[i]
		b = appendString(b, sc.App)
		b = appendString(b, sc.Channel)
		b = binary.AppendUvarint(b, uint64(len(sc.Entries)))
		for j := range sc.Entries {
			b = appendEntry(b, &sc.Entries[j])
		}
	}
	return b
}

// message is one decoded message; kind says which fields are set.
type message struct {
	kind  byte
	owner OwnerID
	seq   uint64
	delta Delta
	snap  Snapshot
}

// decodeMessage decodes b, which it does not keep.
func decodeMessage(b []byte) (message, error) {
	if len(b) == 0 {
		return message{}, errBadMessage
	}
	r := reader{b: b[1:]}
	m := message{kind: b[0]}
	switch m.kind {
	case msgDelta:
		m.delta.Owner = r.owner()
		m.delta.App = r.str(maxNameLen)
		m.delta.Channel = r.str(maxNameLen)
		m.delta.Entry = r.entry()
	case msgHigh:
		m.owner = r.owner()
		m.seq = r.uvarint()
	case msgAsk:
		m.owner = r.owner()
	case msgSnapshot:
		m.snap = r.snapshot()
	default:
		return message{}, fmt.Errorf("%w: type %d", errBadMessage, m.kind)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d bytes past the end", errBadMessage, len(r.b))
	}
	if r.err != nil {
		return message{}, r.err
	}
	return m, nil
}

// reader decodes what the append functions encode; the first error sticks
// and every later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad %s", errBadMessage, what)
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// raw returns the next length-prefixed bytes (aliasing r.b), at most limit.
func (r *reader) raw(limit int) []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail("length")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str(limit int) string { return string(r.raw(limit)) }

// blob returns a copy of the next length-prefixed bytes, nil when empty.
func (r *reader) blob(limit int) []byte {
	v := r.raw(limit)
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

// count reads a number of items each at least size bytes long, checked
// against the bytes left so that no declared count allocates beyond them.
func (r *reader) count(size int) int {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)/size) {
		r.fail("count")
		return 0
	}
	return int(n)
}

func (r *reader) owner() OwnerID {
	return OwnerID{Node: r.str(maxNameLen), Boot: r.varint()}
}

func (r *reader) entry() Entry {
	var e Entry
	e.Member.ID = r.str(maxNameLen)
	e.Member.IDJSON = r.blob(maxBlobLen)
	e.Member.Info = r.blob(maxBlobLen)
	c := r.uvarint()
	if c > maxConnsPer {
		r.fail("count")
	}
	e.Count = int(c)
	e.Seq = r.uvarint()
	e.Since = r.uvarint()
	return e
}

func (r *reader) snapshot() Snapshot {
	var sn Snapshot
	sn.Owner = r.owner()
	sn.Seq = r.uvarint()
	n := r.count(3) // owner (2) + seq (1)
	if n > 0 {
		sn.Known = make([]Version, 0, n)
	}
	for range n {
		sn.Known = append(sn.Known, Version{Owner: r.owner(), Seq: r.uvarint()})
	}
	n = r.count(3) // app, channel, entry count
	if n > 0 {
		sn.Channels = make([]SnapshotChannel, 0, n)
	}
	for range n {
		sc := SnapshotChannel{App: r.str(maxNameLen), Channel: r.str(maxNameLen)}
		m := r.count(6) // the six fields of an entry
		if m > 0 {
			sc.Entries = make([]Entry, 0, m)
		}
		for range m {
			sc.Entries = append(sc.Entries, r.entry())
		}
		sn.Channels = append(sn.Channels, sc)
	}
	return sn
}
