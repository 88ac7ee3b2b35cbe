package lifecycle

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"herald/app"
	"herald/hook"
	"herald/presence"
)

// The webhook ledger: who decides occupancy and presence webhook events,
// exactly once cluster-wide (docs/webhooks.md "Who decides occupancy and
// presence events").
//
// The Decider's events are transitions as one node saw them; around
// membership changes two nodes can emit one, or none (docs/lifecycle.md).
// Webhooks need better, so the ledger does not forward transitions: it
// keeps a replicated record per channel of what was emitted (Records: the
// bus's KV bucket) and reconciles it with the cluster-wide state
// (State: the presence registry). A transition of a channel this node owns
// only queues the channel; a worker later reads the record, compares it
// with the state, writes the difference into the record as pending events
// (a compare-and-set on the record's revision), enqueues them into the
// outbox under ids derived from that revision, and clears them. Whoever
// reads a record with pending events enqueues them first, so:
//
//   - a crash between the write and the enqueue loses nothing: the next
//     owner finds them pending;
//   - a crash between the enqueue and the clear doubles nothing: the next
//     owner enqueues the same ids again, which the outbox drops;
//   - two nodes that both believe they own the channel cannot both decide:
//     one compare-and-set wins, the other re-reads (and at most re-enqueues
//     the winner's events, same ids).
//
// Additions are emitted at once; removals (vacated, member_removed) once
// they have lasted the grace, so a reconnect within it sends nothing.
// When membership changes every node rescans the channels it now owns
// (every record, and the state's channels), and a slow sweep does the same
// as a safety net; removals found that way start their grace at the
// takeover. Channels of apps whose webhooks want none of these kinds cost
// nothing: no record, no reconcile.

// ErrRevision is returned by Records when a compare-and-set finds another
// revision than the one given: another node wrote the record meanwhile.
var ErrRevision = errors.New("lifecycle: webhook record revision changed")

// Records is the replicated record of what was emitted, one per channel
// (bus.WebhookState: a JetStream KV bucket). Revisions are positive and
// never reused, also across a delete.
type Records interface {
	// Get returns the channel's record and its revision; nil and 0 when it
	// has none.
	Get(ctx context.Context, app, channel string) (value []byte, rev uint64, err error)
	// Put writes the record if its revision is still rev (0: it has none)
	// and returns the new revision; an error wrapping ErrRevision if not.
	Put(ctx context.Context, app, channel string, value []byte, rev uint64) (uint64, error)
	// Delete removes the record if its revision is still rev; an error
	// wrapping ErrRevision if not.
	Delete(ctx context.Context, app, channel string, rev uint64) error
	// Channels calls fn for every channel with a record.
	Channels(ctx context.Context, fn func(app, channel string)) error
}

// State is the cluster-wide state the ledger decides from:
// presence.Gossip in a cluster, presence.Local on one node.
type State interface {
	Subscribers(app, channel string) int
	Members(app, channel string) []presence.Member
	Channels(want func(app string) bool) []presence.ChannelRef
}

// Ledger defaults.
const (
	DefaultLedgerWorkers = 16 // reconciles wait on replicated KV writes, not on CPU
	DefaultLedgerSweep   = 30 * time.Second
	defaultOpTimeout     = 10 * time.Second
	maxRaces             = 16               // lost compare-and-sets in one reconcile before it backs off
	maxBackoff           = 30 * time.Second // between failed reconciles of one channel
	// A scan whose listing of the records failed is tried again after
	// scanRetryMin, doubled per failure up to scanRetryMax, not at the
	// next sweep: a takeover's scan is how a new owner finds the channels
	// only the records know of (their last subscriber left within the
	// grace before the owner died), and it meets the JetStream elections
	// of the dead node's groups.
	scanRetryMin = 500 * time.Millisecond
	scanRetryMax = 5 * time.Second
)

// LedgerConfig configures a Ledger. Records, State, Outbox and Apps are
// required.
type LedgerConfig struct {
	Records Records
	State   State
	Outbox  hook.Outbox
	Apps    *app.Registry // read on every decision: a reload applies at once
	// IsOwner reports whether this node decides the channel; nil: every
	// channel (a single node). It must not block.
	IsOwner func(app, channel string) bool
	// Grace is how long a removal must last before it is emitted
	// (webhooks.grace); 0: at once.
	Grace time.Duration
	// Workers reconcile channels, each channel always on the same one;
	// 0: DefaultLedgerWorkers.
	Workers int
	// Sweep is the period of the safety-net rescan; 0: DefaultLedgerSweep.
	Sweep time.Duration
	// OpTimeout bounds each record and outbox call; 0: 10 s.
	OpTimeout time.Duration
	Logger    *slog.Logger
}

// LedgerStats are the ledger's counters.
type LedgerStats struct {
	Reconciles uint64 // reconciles run
	Events     uint64 // events enqueued (re-enqueues of pending events included)
	Races      uint64 // compare-and-sets lost to another writer
	Errors     uint64 // reconciles that failed (retried with backoff)
}

// Ledger decides the occupancy and presence webhook events of the channels
// this node owns. Build it with NewLedger; Observe is a Decider consumer.
type Ledger struct {
	cfg     LedgerConfig
	log     *slog.Logger
	workers []*worker

	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	rescan chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	closed atomic.Bool

	takeover atomic.Int64 // unix nanos of the last ownership change (start included)

	reconciles, events, races, errs atomic.Uint64
}

// NewLedger starts a ledger: its workers, and the scan that runs at once
// (records left by a previous run or a previous owner) and after every
// Takeover and Sweep.
func NewLedger(cfg LedgerConfig) (*Ledger, error) {
	if cfg.Records == nil || cfg.State == nil || cfg.Outbox == nil || cfg.Apps == nil {
		return nil, errors.New("lifecycle: ledger needs Records, State, Outbox and Apps")
	}
	if cfg.Grace < 0 {
		return nil, fmt.Errorf("lifecycle: ledger grace %v is negative", cfg.Grace)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultLedgerWorkers
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = DefaultLedgerSweep
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = defaultOpTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Ledger{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), rescan: make(chan struct{}, 1)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.takeover.Store(time.Now().UnixNano())
	for range cfg.Workers {
		w := &worker{l: l, queued: map[chanKey]struct{}{}, wake: make(chan struct{}, 1),
			due: map[chanKey]time.Time{}, mem: map[chanKey]*chanMem{}}
		l.workers = append(l.workers, w)
		l.wg.Go(w.run)
	}
	l.rescan <- struct{}{}
	l.wg.Go(l.scanLoop)
	return l, nil
}

// Observe is the Decider consumer: a transition of a channel this node
// owns queues the channel for a reconcile. It runs under the presence
// registry's lock and takes only a worker's queue lock (docs/locks.md).
func (l *Ledger) Observe(ev Event) {
	if l == nil || l.closed.Load() {
		return
	}
	a, ok := l.cfg.Apps.ByID(ev.App)
	if !ok {
		return
	}
	w := wantsOf(a, ev.Channel)
	switch ev.Kind {
	case SubscriptionCount:
		ok = w.count // a busy channel's counts cost nothing unless wanted
	case MemberAdded, MemberRemoved:
		ok = w.members()
	default:
		ok = w.any()
	}
	if ok {
		l.queue(chanKey{ev.App, ev.Channel})
	}
}

// Takeover says that membership changed (a node joined, left or died):
// this node rescans the channels it may now own, and removals it finds
// start their grace now. It does not block.
func (l *Ledger) Takeover() {
	if l == nil || l.closed.Load() {
		return
	}
	l.takeover.Store(time.Now().UnixNano())
	select {
	case l.rescan <- struct{}{}:
	default:
	}
}

// Close stops the workers and the scan and waits for them. Events already
// decided stay pending in their records for the next owner; nothing is
// lost. Calling it again does nothing.
func (l *Ledger) Close() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		l.closed.Store(true)
		l.cancel()
		close(l.stop)
		l.wg.Wait()
	})
}

// Stats returns the ledger's counters.
func (l *Ledger) Stats() LedgerStats {
	return LedgerStats{Reconciles: l.reconciles.Load(), Events: l.events.Load(), Races: l.races.Load(), Errors: l.errs.Load()}
}

type chanKey struct{ app, channel string }

func (l *Ledger) owns(k chanKey) bool {
	return l.cfg.IsOwner == nil || l.cfg.IsOwner(k.app, k.channel)
}

// queue hands k to its worker: one per channel, by hash, so that one
// channel's reconciles never run concurrently on this node.
func (l *Ledger) queue(k chanKey) {
	h := fnv.New32a()
	h.Write([]byte(k.app))
	h.Write([]byte{0})
	h.Write([]byte(k.channel))
	l.workers[h.Sum32()%uint32(len(l.workers))].add(k)
}

// scanLoop rescans on start, on Takeover and every Sweep, and soon again
// after a scan that could not list the records.
func (l *Ledger) scanLoop() {
	t := time.NewTicker(l.cfg.Sweep)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	failed := 0
	for {
		select {
		case <-l.stop:
			return
		case <-l.rescan:
		case <-t.C:
		case <-retry.C:
		}
		err := l.scan()
		if err == nil || l.ctx.Err() != nil {
			failed = 0
			retry.Stop()
			continue
		}
		failed++
		wait := min(scanRetryMin<<min(failed-1, 8), scanRetryMax)
		l.log.Warn("webhook ledger: listing the records failed; scanning again", "in", wait, "err", err)
		retry.Reset(wait)
	}
}

// scan queues every channel this node owns that has a record or state,
// of apps whose webhooks want a kind the ledger decides, and returns the
// records' listing error. With no such app it touches neither the records
// nor the registry.
func (l *Ledger) scan() error {
	wanted := false
	for _, a := range l.cfg.Apps.Table().All() {
		wanted = wanted || appWantsAny(a)
	}
	if !wanted {
		return nil
	}
	wanting := map[string]bool{} // the registry's lock is held while it asks: once per app
	wantApp := func(id string) bool {
		w, seen := wanting[id]
		if !seen {
			a, ok := l.cfg.Apps.ByID(id)
			w = ok && appWantsAny(a)
			wanting[id] = w
		}
		return w
	}
	consider := func(appID, channel string) {
		k := chanKey{appID, channel}
		if a, ok := l.cfg.Apps.ByID(appID); ok && l.owns(k) && wantsOf(a, channel).any() {
			l.queue(k)
		}
	}
	ctx, cancel := context.WithTimeout(l.ctx, 3*l.cfg.OpTimeout)
	defer cancel()
	err := l.cfg.Records.Channels(ctx, consider)
	for _, ref := range l.cfg.State.Channels(wantApp) {
		consider(ref.App, ref.Channel)
	}
	return err
}

// chanMem is what a worker remembers of a channel between reconciles:
// timers, never decisions.
type chanMem struct {
	absence   absence
	lastCount time.Time // last subscription_count this node emitted
	failures  int
}

// idle reports whether m holds nothing worth keeping.
func (m *chanMem) idle(now time.Time) bool {
	return len(m.absence.at) == 0 && m.failures == 0 && now.Sub(m.lastCount) >= countThrottle
}

// worker reconciles the channels that hash to it, one at a time.
type worker struct {
	l *Ledger

	mu     sync.Mutex // guards queue and queued; a leaf (docs/locks.md)
	queue  []chanKey
	queued map[chanKey]struct{}
	wake   chan struct{}

	// The worker goroutine's own.
	due   map[chanKey]time.Time // a reconcile wanted then
	timer dueHeap               // due, ordered (entries whose time differs from due[k] are stale)
	mem   map[chanKey]*chanMem
}

// add queues k once, however often it is added before it runs.
func (w *worker) add(k chanKey) {
	w.mu.Lock()
	if _, ok := w.queued[k]; !ok {
		w.queued[k] = struct{}{}
		w.queue = append(w.queue, k)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) pop() (chanKey, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return chanKey{}, false
	}
	k := w.queue[0]
	w.queue[0] = chanKey{}
	w.queue = w.queue[1:]
	delete(w.queued, k)
	return k, true
}

// schedule asks for a reconcile of k at t, unless one is wanted earlier.
func (w *worker) schedule(k chanKey, t time.Time) {
	if cur, ok := w.due[k]; ok && !t.Before(cur) {
		return
	}
	w.due[k] = t
	heap.Push(&w.timer, dueEntry{k, t})
}

// fire queues every channel whose time has come and returns the next time
// one will (zero: none).
func (w *worker) fire(now time.Time) time.Time {
	for w.timer.Len() > 0 {
		e := w.timer[0]
		if t, ok := w.due[e.k]; !ok || !t.Equal(e.t) {
			heap.Pop(&w.timer) // stale
			continue
		}
		if e.t.After(now) {
			return e.t
		}
		heap.Pop(&w.timer)
		delete(w.due, e.k)
		w.add(e.k)
	}
	return time.Time{}
}

func (w *worker) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-w.l.stop:
			return
		default:
		}
		next := w.fire(time.Now())
		if k, ok := w.pop(); ok {
			w.handle(k)
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		t.Reset(wait)
		select {
		case <-w.l.stop:
			return
		case <-w.wake:
		case <-t.C:
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// handle reconciles k and schedules what follows: the end of a grace, or a
// retry with backoff after a failure.
func (w *worker) handle(k chanKey) {
	l := w.l
	m := w.mem[k]
	if m == nil {
		m = &chanMem{}
		w.mem[k] = m
	}
	delete(w.due, k)
	due, err := l.reconcile(k, m)
	now := time.Now()
	switch {
	case err != nil && l.ctx.Err() != nil:
		return // closing
	case err != nil:
		l.errs.Add(1)
		m.failures++
		backoff := min(time.Duration(1<<min(m.failures-1, 5))*time.Second, maxBackoff)
		l.log.Warn("webhook ledger: reconcile failed; retrying", "app", k.app, "channel", k.channel, "in", backoff, "err", err)
		w.schedule(k, now.Add(backoff))
		return
	}
	m.failures = 0
	if !due.IsZero() {
		w.schedule(k, due)
	} else if m.idle(now) {
		delete(w.mem, k)
	}
}

// reconcile brings k's record to the state, emitting the difference, and
// returns when to look again (zero: no need).
func (l *Ledger) reconcile(k chanKey, m *chanMem) (time.Time, error) {
	l.reconciles.Add(1)
	a, ok := l.cfg.Apps.ByID(k.app)
	if !ok {
		return time.Time{}, nil
	}
	w := wantsOf(a, k.channel)
	if !w.any() {
		return time.Time{}, nil
	}
	if !l.owns(k) {
		m.absence = absence{} // the new owner times its own grace
		return time.Time{}, nil
	}
	for range maxRaces {
		raw, rev, err := l.get(k)
		if err != nil {
			return time.Time{}, err
		}
		rec, err := decodeRecord(raw)
		if err != nil {
			l.log.Error("webhook ledger: replacing an undecodable record", "app", k.app, "channel", k.channel, "rev", rev, "err", err)
		}
		if len(rec.Pending) > 0 {
			// Decided at rev, maybe not enqueued (its writer crashed, or
			// lost the node before clearing): enqueue, same ids, then clear.
			if err := l.enqueue(k, rev, rec.Pending); err != nil {
				return time.Time{}, err
			}
			rec.Pending = nil
			if rev, err = l.write(k, &rec, rev); errors.Is(err, ErrRevision) {
				l.races.Add(1)
				continue
			} else if err != nil {
				return time.Time{}, err
			}
		}

		now := time.Now()
		subs := l.cfg.State.Subscribers(k.app, k.channel)
		var members []string
		if w.members() {
			for _, mb := range l.cfg.State.Members(k.app, k.channel) {
				members = append(members, mb.ID)
			}
		}
		d := decide(rec, subs, members, w, l.cfg.Grace, &m.absence, time.Unix(0, l.takeover.Load()), m.lastCount, now)
		if d.next.sameState(&rec) {
			return d.due, nil
		}
		d.next.Pending = d.events
		nrev, err := l.write(k, &d.next, rev)
		if errors.Is(err, ErrRevision) {
			l.races.Add(1)
			continue
		} else if err != nil {
			return time.Time{}, err
		}
		for _, item := range d.gone {
			m.absence.back(item)
		}
		if d.counted {
			m.lastCount = now
		}
		if len(d.events) > 0 {
			if err := l.enqueue(k, nrev, d.events); err != nil {
				return time.Time{}, err // pending in the record: the retry enqueues them
			}
			d.next.Pending = nil
			if _, err := l.write(k, &d.next, nrev); errors.Is(err, ErrRevision) {
				// Someone read our pending events (and enqueued them
				// first) and wrote since: look again.
				l.races.Add(1)
				continue
			} else if err != nil {
				return time.Time{}, err
			}
		}
		return d.due, nil
	}
	return time.Time{}, fmt.Errorf("lifecycle: webhook record of %s/%s: lost %d races in a row", k.app, k.channel, maxRaces)
}

func (l *Ledger) get(k chanKey) ([]byte, uint64, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.OpTimeout)
	defer cancel()
	return l.cfg.Records.Get(ctx, k.app, k.channel)
}

// write stores rec at rev (deleting an empty one) and returns the new
// revision (0 once deleted).
func (l *Ledger) write(k chanKey, rec *record, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.OpTimeout)
	defer cancel()
	if rec.empty() {
		if rev == 0 {
			return 0, nil
		}
		return 0, l.cfg.Records.Delete(ctx, k.app, k.channel, rev)
	}
	raw, err := jsonRecord(rec)
	if err != nil {
		return 0, err
	}
	return l.cfg.Records.Put(ctx, k.app, k.channel, raw, rev)
}

// enqueue writes the pending events of the record at rev into the outbox.
func (l *Ledger) enqueue(k chanKey, rev uint64, ps []pending) error {
	evs := webhookEvents(k.app, k.channel, rev, ps)
	if len(evs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.OpTimeout)
	defer cancel()
	if err := l.cfg.Outbox.Enqueue(ctx, k.app, evs); err != nil {
		return fmt.Errorf("lifecycle: webhook outbox: %w", err)
	}
	l.events.Add(uint64(len(evs)))
	return nil
}

// dueEntry is one wanted reconcile in a worker's timer heap.
type dueEntry struct {
	k chanKey
	t time.Time
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
