package presence

// The in-memory cluster transport and the harness of the Gossip tests in
// state_test.go.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/cluster"
	"herald/internal/testkit"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

// ---- in-memory transport ----

// memNet is an in-memory cluster for Gossip. Broadcasts queue per sender
// with newest-per-key replacement (as memberlist's queue does) and go out
// on a gossip tick to every live member a few times; each copy is lost,
// duplicated or delayed at random, so deltas arrive reordered, twice, or
// not at all. SendTo and push/pull are reliable but delayed. Membership
// events are emitted by the test (crash, declareDead, leave).
type memNet struct {
	mu       sync.Mutex
	rng      *rand.Rand
	nodes    map[string]*memNode // live nodes
	loss     float64             // chance a gossip copy is lost
	dup      float64             // chance a gossip copy is delivered twice
	maxDelay time.Duration
	pushPull time.Duration         // 0: no periodic push/pull
	filter   func(msg []byte) bool // gossip copies it returns true for are lost
	closed   bool
	wg       sync.WaitGroup // deliveries and loops
	stop     chan struct{}
}

type memNode struct {
	net      *memNet
	name     string
	boot     int64
	handler  cluster.Handler // under net.mu
	watchers []func(cluster.Event)
	queue    []*memBcast // under net.mu
	evMu     sync.Mutex  // serializes this node's events
}

type memBcast struct {
	key  string
	msg  []byte
	left int
}

// memGossipBudget is the cluster's GossipBudget less its header: larger
// broadcasts go reliably, as cluster.Broadcast sends them.
const memGossipBudget = cluster.GossipBudget - 10

func newMemNet(t *testing.T, seed uint64, loss, dup float64, maxDelay, pushPull time.Duration) *memNet {
	t.Logf("memNet seed %d loss %.2f dup %.2f delay <%s push/pull %s", seed, loss, dup, maxDelay, pushPull)
	n := &memNet{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes:    make(map[string]*memNode),
		loss:     loss,
		dup:      dup,
		maxDelay: maxDelay,
		pushPull: pushPull,
		stop:     make(chan struct{}),
	}
	n.wg.Add(1)
	go n.loop()
	t.Cleanup(n.close)
	return n
}

func (n *memNet) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	close(n.stop)
	n.wg.Wait()
}

// add makes node name (boot) live, replacing a node of the same name (a
// restart), and tells the other live nodes it joined when announce is set.
func (n *memNet) add(name string, boot int64, announce bool) *memNode {
	m := &memNode{net: n, name: name, boot: boot}
	n.mu.Lock()
	n.nodes[name] = m
	n.mu.Unlock()
	if announce {
		n.emit(name, cluster.Event{Kind: cluster.Joined, Member: m.member()})
	}
	return m
}

// crash stops node name silently: nothing more goes to or from it (what is
// already in flight still arrives).
func (n *memNet) crash(name string) *memNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.nodes[name]
	delete(n.nodes, name)
	return m
}

// declareDead tells every live node that m left.
func (n *memNet) declareDead(m *memNode) {
	n.emit(m.name, cluster.Event{Kind: cluster.Left, Member: m.member()})
}

// emit delivers ev to every live node but except.
func (n *memNet) emit(except string, ev cluster.Event) {
	n.mu.Lock()
	var to []*memNode
	for _, m := range n.nodes {
		if m.name != except {
			to = append(to, m)
		}
	}
	n.mu.Unlock()
	for _, m := range to {
		m.evMu.Lock()
		n.mu.Lock()
		ws := slices.Clone(m.watchers)
		n.mu.Unlock()
		for _, w := range ws {
			w(ev)
		}
		m.evMu.Unlock()
	}
}

func (n *memNet) delay() time.Duration {
	if n.maxDelay <= 0 {
		return 0
	}
	return time.Duration(n.rng.Int64N(int64(n.maxDelay)))
}

// deliverLocked schedules msg from from to to after d. n.mu must be held.
func (n *memNet) deliverLocked(to *memNode, from string, msg []byte, d time.Duration) {
	if n.closed {
		return
	}
	n.wg.Add(1)
	time.AfterFunc(d, func() {
		defer n.wg.Done()
		n.mu.Lock()
		live := !n.closed && n.nodes[to.name] == to
		h := to.handler
		n.mu.Unlock()
		if live && h != nil {
			h.NotifyMsg(from, slices.Clone(msg))
		}
	})
}

// loop sends queued broadcasts every 2 ms and runs push/pull.
func (n *memNet) loop() {
	defer n.wg.Done()
	gossip := time.NewTicker(2 * time.Millisecond)
	defer gossip.Stop()
	var pp <-chan time.Time
	if n.pushPull > 0 {
		tk := time.NewTicker(n.pushPull)
		defer tk.Stop()
		pp = tk.C
	}
	for {
		select {
		case <-n.stop:
			return
		case <-gossip.C:
			n.gossipRound()
		case <-pp:
			n.mu.Lock()
			var live []*memNode
			for _, m := range n.nodes {
				live = append(live, m)
			}
			if len(live) >= 2 {
				i := n.rng.IntN(len(live))
				j := (i + 1 + n.rng.IntN(len(live)-1)) % len(live)
				n.mu.Unlock()
				n.exchange(live[i], live[j])
			} else {
				n.mu.Unlock()
			}
		}
	}
}

func (n *memNet) gossipRound() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, from := range n.nodes {
		for _, b := range from.queue {
			for _, to := range n.nodes {
				if to == from || n.rng.Float64() < n.loss || n.filter != nil && n.filter(b.msg) {
					continue
				}
				n.deliverLocked(to, from.name, b.msg, n.delay())
				if n.rng.Float64() < n.dup {
					n.deliverLocked(to, from.name, b.msg, n.delay())
				}
			}
			b.left--
		}
		from.queue = slices.DeleteFunc(from.queue, func(b *memBcast) bool { return b.left <= 0 })
	}
}

// exchange is a push/pull between a and b.
func (n *memNet) exchange(a, b *memNode) {
	n.mu.Lock()
	ha, hb := a.handler, b.handler
	n.mu.Unlock()
	if ha == nil || hb == nil {
		return
	}
	sa, sb := ha.LocalState(false), hb.LocalState(false)
	hb.MergeRemoteState(a.name, sa, false)
	ha.MergeRemoteState(b.name, sb, false)
}

func (m *memNode) member() cluster.Member {
	return cluster.Member{Name: m.name, Addr: m.name, Meta: cluster.Meta{Boot: m.boot}}
}

func (m *memNode) LocalName() string { return m.name }

func (m *memNode) Members() []cluster.Member {
	m.net.mu.Lock()
	defer m.net.mu.Unlock()
	var out []cluster.Member
	for _, x := range m.net.nodes {
		out = append(out, x.member())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Register installs h and, as cluster.Register does, runs a push/pull
// with every live member.
func (m *memNode) Register(kind byte, h cluster.Handler) {
	n := m.net
	n.mu.Lock()
	m.handler = h
	var others []*memNode
	for _, x := range n.nodes {
		if x != m {
			others = append(others, x)
		}
	}
	closed := n.closed
	if !closed {
		n.wg.Add(1)
	}
	n.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer n.wg.Done()
		for _, x := range others {
			n.exchange(m, x)
		}
	}()
}

// Watch replays a Joined event per live member, as cluster.Watch does.
func (m *memNode) Watch(fn func(cluster.Event)) {
	m.evMu.Lock()
	defer m.evMu.Unlock()
	m.net.mu.Lock()
	m.watchers = append(m.watchers, fn)
	m.net.mu.Unlock()
	for _, x := range m.Members() {
		fn(cluster.Event{Kind: cluster.Joined, Member: x})
	}
}

func (m *memNode) Broadcast(kind byte, key string, msg []byte) {
	n := m.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[m.name] != m {
		return
	}
	msg = slices.Clone(msg)
	if len(msg) > memGossipBudget {
		for _, to := range n.nodes {
			if to != m {
				n.deliverLocked(to, m.name, msg, n.delay())
			}
		}
		return
	}
	for _, b := range m.queue {
		if b.key == key {
			b.msg, b.left = msg, 3
			return
		}
	}
	m.queue = append(m.queue, &memBcast{key: key, msg: msg, left: 3})
}

func (m *memNode) SendTo(node string, kind byte, msg []byte) error {
	n := m.net
	n.mu.Lock()
	defer n.mu.Unlock()
	to := n.nodes[node]
	if to == nil || n.nodes[m.name] != m {
		return errors.New("memnet: no such live member")
	}
	n.deliverLocked(to, m.name, slices.Clone(msg), n.delay())
	return nil
}

// ---- harness ----

// fastTiming is defaultTiming scaled for memNet's millisecond gossip.
func fastTiming() gossipTiming {
	return gossipTiming{
		tick:        5 * time.Millisecond,
		gapGrace:    20 * time.Millisecond,
		repairRetry: 50 * time.Millisecond,
		highDelay:   20 * time.Millisecond,
		orphanAfter: 300 * time.Millisecond,
		tombTTL:     2 * time.Second,
		floorTTL:    time.Minute,
	}
}

// recorder checks one node's Change stream: per user and channel, Added
// and Removed alternate starting with Added; per channel, occupancy
// changes follow occupied → count changes → vacated (see checkOccupancy).
type recorder struct {
	mu      sync.Mutex
	present map[string]bool
	added   map[string]int
	removed map[string]int
	origins map[string][]ConnID
	subs    map[string]int                // app/channel → count reported, while occupied
	occ     map[string]map[ChangeKind]int // app/channel → occupancy changes by kind
	errs    []string
	hook    func(Change) // called first, under Gossip's lock
}

func newRecorder() *recorder {
	return &recorder{present: map[string]bool{}, added: map[string]int{}, removed: map[string]int{}, origins: map[string][]ConnID{},
		subs: map[string]int{}, occ: map[string]map[ChangeKind]int{}}
}

func (r *recorder) listen(c Change) {
	if r.hook != nil {
		r.hook(c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.Kind != KindMember {
		r.checkOccupancy(c)
		return
	}
	k := c.App + "/" + c.Channel + "/" + c.Member.ID
	r.origins[k] = append(r.origins[k], c.Origin)
	if c.Added {
		if r.present[k] {
			r.errs = append(r.errs, "added twice: "+k)
		}
		r.present[k] = true
		r.added[k]++
		return
	}
	if !r.present[k] {
		r.errs = append(r.errs, "removed while absent: "+k)
	}
	delete(r.present, k)
	r.removed[k]++
}

// checkOccupancy records an occupancy change: occupied only when not
// occupied, a count change only to another count while occupied, vacated
// only when occupied; the member fields stay zero. r.mu must be held.
func (r *recorder) checkOccupancy(c Change) {
	k := c.App + "/" + c.Channel
	if r.occ[k] == nil {
		r.occ[k] = map[ChangeKind]int{}
	}
	r.occ[k][c.Kind]++
	was, occupied := r.subs[k]
	bad := c.Member.ID != "" || c.Added || c.Origin != ""
	switch c.Kind {
	case KindOccupied:
		bad = bad || occupied || c.Subscribers <= 0
	case KindSubscriptionCount:
		bad = bad || !occupied || c.Subscribers <= 0 || c.Subscribers == was
	case KindVacated:
		bad = bad || !occupied || c.Subscribers != 0
	default:
		bad = true
	}
	if bad {
		r.errs = append(r.errs, fmt.Sprintf("%s %d after %d (occupied %v): %s", c.Kind, c.Subscribers, was, occupied, k))
	}
	if c.Kind == KindVacated {
		delete(r.subs, k)
	} else {
		r.subs[k] = c.Subscribers
	}
}

// occupancy returns how many changes of each kind (app, ch) had, and the
// count the stream says it has (0: vacated).
func (r *recorder) occupancy(app, ch string) (occupied, counts, vacated, subs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := app + "/" + ch
	m := r.occ[k]
	return m[KindOccupied], m[KindSubscriptionCount], m[KindVacated], r.subs[k]
}

func (r *recorder) counts(app, ch, uid string) (added, removed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := app + "/" + ch + "/" + uid
	return r.added[k], r.removed[k]
}

// presentIn returns the users the Change stream says are in (app, ch).
func (r *recorder) presentIn(app, ch string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	prefix := app + "/" + ch + "/"
	for k := range r.present {
		if uid, ok := strings.CutPrefix(k, prefix); ok {
			out = append(out, uid)
		}
	}
	sort.Strings(out)
	return out
}

func (r *recorder) check(t testing.TB, name string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Fatalf("node %s: bad change stream: %v", name, r.errs)
	}
}

type testNode struct {
	name string
	tr   *memNode
	g    *Gossip
	rec  *recorder
}

type harness struct {
	t     *testing.T
	net   *memNet
	nodes []*testNode
}

func newHarness(t *testing.T, seed uint64, loss, dup float64, pushPull time.Duration, names ...string) *harness {
	h := &harness{t: t, net: newMemNet(t, seed, loss, dup, 3*time.Millisecond, pushPull)}
	for i, name := range names {
		h.start(name, int64(i+1))
	}
	return h
}

// start starts node name with boot, as a cluster member would: it joins
// (the others see Joined), then its Gossip registers.
func (h *harness) start(name string, boot int64) *testNode {
	return h.startTiming(name, boot, fastTiming(), true)
}

// startTiming starts node name; announce says whether the others get a
// Joined event for it.
func (h *harness) startTiming(name string, boot int64, tm gossipTiming, announce bool) *testNode {
	n := &testNode{name: name, rec: newRecorder()}
	n.tr = h.net.add(name, boot, announce)
	n.g = newGossip(n.tr, n.rec.listen, tm)
	h.t.Cleanup(n.g.Close)
	h.nodes = slices.DeleteFunc(h.nodes, func(x *testNode) bool { return x.name == name })
	h.nodes = append(h.nodes, n)
	return n
}

// crash stops node n silently; it is no longer among h.nodes.
func (h *harness) crash(n *testNode) {
	h.net.crash(n.name)
	n.g.Close()
	h.nodes = slices.DeleteFunc(h.nodes, func(x *testNode) bool { return x == n })
}

func (h *harness) node(name string) *testNode {
	for _, n := range h.nodes {
		if n.name == name {
			return n
		}
	}
	h.t.Fatalf("no node %s", name)
	return nil
}

func ids(ms []Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.ID)
	}
	sort.Strings(out)
	return out
}

// waitMembers waits until every live node's view of (app, ch), its Count
// and its Change stream all hold exactly want.
func (h *harness) waitMembers(app, ch string, want ...string) {
	h.t.Helper()
	want = slices.Clone(want)
	sort.Strings(want)
	testkit.WaitFor(h.t, 10*time.Second, func() error {
		for _, n := range h.nodes {
			got := ids(n.g.Members(app, ch))
			if !slices.Equal(got, want) {
				return fmt.Errorf("node %s members %v, want %v", n.name, got, want)
			}
			if c := n.g.Count(app, ch); c != len(want) {
				return fmt.Errorf("node %s count %d, want %d", n.name, c, len(want))
			}
			if ev := n.rec.presentIn(app, ch); !slices.Equal(ev, want) && !(len(ev) == 0 && len(want) == 0) {
				return fmt.Errorf("node %s change stream says %v, want %v", n.name, ev, want)
			}
		}
		return nil
	})
	for _, n := range h.nodes {
		n.rec.check(h.t, n.name)
	}
}

// settled reports whether gossip has settled: every live node has applied
// every other live node's changes up to its current seq.
func (h *harness) settled() error {
	for _, a := range h.nodes {
		a.g.mu.Lock()
		self, seq := a.g.st.self, a.g.st.seq
		a.g.mu.Unlock()
		for _, b := range h.nodes {
			if a == b {
				continue
			}
			b.g.mu.Lock()
			o := b.g.st.owners[self.Node]
			var applied uint64
			if o != nil && o.id == self {
				applied = o.applied
			}
			b.g.mu.Unlock()
			if applied != seq {
				return fmt.Errorf("node %s has applied %s up to %d of %d", b.name, a.name, applied, seq)
			}
		}
	}
	return nil
}

func (h *harness) waitSettled() {
	h.t.Helper()
	testkit.WaitFor(h.t, 10*time.Second, h.settled)
}

func (h *harness) join(n *testNode, ch string, conn ConnID, uid string) {
	h.t.Helper()
	if err := n.g.Join("app", ch, conn, member(uid), 0, nil); err != nil {
		h.t.Fatalf("join %s on %s: %v", uid, n.name, err)
	}
}
