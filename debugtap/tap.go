// Package debugtap owns the node's debug event stream: the per-app
// "watched" state, the hooks the gateway, the API, the lifecycle and the
// webhook sender call when something happens, and the bounded pipeline that
// turns those calls into JSON debug events published on NATS
// (bus.DebugSubject: herald.<app>.debug.<node>) for the live console and
// `herald tap` (docs/console.md).
//
// Zero cost when nobody watches: every hook is a method on *Tap that first
// loads one atomic pointer (the set of watched apps) and returns when it is
// nil; no allocation, no lock. A watched app's hooks build a small Event and
// hand it to a bounded queue without blocking (dropped and counted when the
// queue is full, sampled when the node produces more than MaxRate events a
// second); one goroutine encodes and publishes them, off the hot path.
//
// Watching is announced cluster-wide by whoever streams the events (the
// console package): a Watch with an expiry, renewed while the stream is
// open, reaches every node's Tap over NATS (bus.SysDebugWatchSubject), so a
// node nobody watches produces nothing. A watch may name a channel prefix;
// then only events of matching channels are produced.
package debugtap

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultQueueLen   = 4096
	DefaultMaxRate    = 2000 // events a second one node produces before it samples
	DefaultMaxPayload = 2048 // bytes of an event's payload kept (Event.Truncated past it)
	// MaxWatchTTL bounds how long one announcement keeps an app watched; a
	// watcher renews well before (console.watchEvery).
	MaxWatchTTL = time.Minute
	// maxWatchers bounds the watch table (it is fed from NATS).
	maxWatchers = 1024
)

// Config sets up a Tap.
type Config struct {
	Node string // this node's name, in every event
	// Publish sends one encoded event of app on NATS (bus.Bus.PublishDebug);
	// required. Called from the Tap's one goroutine.
	Publish    func(app string, data []byte) error
	QueueLen   int // events waiting to be published; 0: DefaultQueueLen
	MaxRate    int // events/s before sampling; 0: DefaultMaxRate
	MaxPayload int // payload bytes kept per event; 0: DefaultMaxPayload
	Logger     *slog.Logger
}

// Tap is one node's debug event producer. A nil *Tap is valid: every hook
// is then a no-op, so parts built without one (tests) need no checks.
type Tap struct {
	cfg   Config
	log   *slog.Logger
	watch atomic.Pointer[watchSet] // nil: no app is watched on this node

	mu       sync.Mutex // guards watchers
	watchers map[string]watcher

	q          chan *Event
	offered    atomic.Uint64 // hook calls of watched apps (before sampling)
	every      atomic.Uint32 // keep 1 in every events; 0 or 1: all
	dropped    atomic.Uint64 // events lost because the queue was full
	sampledOut atomic.Uint64 // events skipped by sampling
	published  atomic.Uint64
	failed     atomic.Uint64 // events the bus refused

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// watcher is one announced interest: an app, optionally one channel prefix.
type watcher struct {
	app, prefix string
	expires     time.Time
}

// watchSet is the immutable view the hooks read: app id -> what is watched.
type watchSet struct {
	apps map[string]*appWatch
}

type appWatch struct {
	all      bool     // some watcher wants every channel (and events without one)
	prefixes []string // otherwise, the channel prefixes watched
}

// New starts a Tap's publishing goroutine; Close stops it.
func New(cfg Config) *Tap {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.MaxRate <= 0 {
		cfg.MaxRate = DefaultMaxRate
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Tap{
		cfg:      cfg,
		log:      cfg.Logger,
		watchers: map[string]watcher{},
		q:        make(chan *Event, cfg.QueueLen),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go t.run()
	return t
}

// Close stops publishing; events still queued are dropped. Safe to call
// more than once, and on a nil Tap.
func (t *Tap) Close() {
	if t == nil {
		return
	}
	t.once.Do(func() {
		close(t.stop)
		<-t.done
		t.watch.Store(nil)
	})
}

// Node is the name the Tap puts in its events.
func (t *Tap) Node() string { return t.cfg.Node }

// Watch is one announcement of interest, as it travels on NATS
// (bus.SysDebugWatchSubject).
type Watch struct {
	App     string `json:"app"`
	Channel string `json:"channel,omitempty"` // a channel prefix; "": every event of the app
	ID      string `json:"id"`                // the watcher (one console stream or tap)
	TTLms   int64  `json:"ttl_ms"`            // how long it stays watched without a renewal; 0: stop now
}

// Status is a node's answer to a Watch: what the page shows about it.
type Status struct {
	Node        string `json:"node"`
	SampleEvery int    `json:"sample_every"` // 1: every event; N: one in N kept
	Dropped     uint64 `json:"dropped"`      // events lost to a full queue, since start
	Sampled     uint64 `json:"sampled_out"`  // events skipped by sampling, since start
	Published   uint64 `json:"published"`
	Watchers    int    `json:"watchers"`
}

// Apply records (or, with TTLms 0, removes) a watcher and returns this
// node's status. It is what the node answers on bus.SysDebugWatchSubject.
func (t *Tap) Apply(w Watch) Status {
	now := time.Now()
	t.mu.Lock()
	switch {
	case w.ID == "" || w.App == "":
	case w.TTLms <= 0:
		delete(t.watchers, w.ID)
	default:
		ttl := min(time.Duration(w.TTLms)*time.Millisecond, MaxWatchTTL)
		if _, known := t.watchers[w.ID]; known || len(t.watchers) < maxWatchers {
			t.watchers[w.ID] = watcher{app: w.App, prefix: w.Channel, expires: now.Add(ttl)}
		} else {
			t.log.Warn("debugtap: watch table full; watch ignored", "app", w.App, "max", maxWatchers)
		}
	}
	t.rebuildLocked(now)
	t.mu.Unlock()
	return t.Status()
}

// ApplyJSON decodes a Watch and applies it; the answer is this node's
// Status as JSON, or nil when the request was not a Watch.
func (t *Tap) ApplyJSON(req []byte) []byte {
	var w Watch
	if json.Unmarshal(req, &w) != nil {
		return nil
	}
	b, _ := json.Marshal(t.Apply(w))
	return b
}

// Status reports the sampling and loss figures.
func (t *Tap) Status() Status {
	every := int(t.every.Load())
	if every < 1 {
		every = 1
	}
	t.mu.Lock()
	n := len(t.watchers)
	t.mu.Unlock()
	return Status{
		Watchers:    n,
		Node:        t.cfg.Node,
		SampleEvery: every,
		Dropped:     t.dropped.Load(),
		Sampled:     t.sampledOut.Load(),
		Published:   t.published.Load(),
	}
}

// Watched reports whether any event of app is produced now.
func (t *Tap) Watched(app string) bool {
	if t == nil {
		return false
	}
	ws := t.watch.Load()
	return ws != nil && ws.apps[app] != nil
}

// rebuildLocked drops expired watchers and publishes the new view.
// t.mu must be held.
func (t *Tap) rebuildLocked(now time.Time) {
	apps := map[string]*appWatch{}
	for id, w := range t.watchers {
		if !now.Before(w.expires) {
			delete(t.watchers, id)
			continue
		}
		a := apps[w.app]
		if a == nil {
			a = &appWatch{}
			apps[w.app] = a
		}
		if w.prefix == "" {
			a.all = true
		} else {
			a.prefixes = append(a.prefixes, w.prefix)
		}
	}
	if len(apps) == 0 {
		t.watch.Store(nil)
		return
	}
	t.watch.Store(&watchSet{apps: apps})
}

// wants reports whether an event of app on channel ("": none) is watched.
func (ws *watchSet) wants(app, channel string) bool {
	a := ws.apps[app]
	if a == nil {
		return false
	}
	if a.all {
		return true
	}
	if channel == "" {
		return false
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(channel, p) {
			return true
		}
	}
	return false
}

// admit counts an event that is watched and decides, by the current
// sampling rate, whether it is kept; it returns the rate to record.
func (t *Tap) admit() (every int, ok bool) {
	n := t.offered.Add(1)
	e := t.every.Load()
	if e > 1 && n%uint64(e) != 0 {
		t.sampledOut.Add(1)
		return 0, false
	}
	return int(e), true
}

// enqueue hands an event to the publishing goroutine without blocking.
func (t *Tap) enqueue(e *Event) {
	select {
	case t.q <- e:
	default:
		t.dropped.Add(1)
	}
}

// run publishes queued events; once a second it drops expired watchers and
// sets the sampling rate from the last second's offered events.
func (t *Tap) run() {
	defer close(t.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := uint64(0)
	for {
		select {
		case <-t.stop:
			return
		case e := <-t.q:
			t.publish(e)
		case now := <-tick.C:
			t.mu.Lock()
			if len(t.watchers) > 0 {
				t.rebuildLocked(now)
			}
			t.mu.Unlock()
			n := t.offered.Load()
			t.every.Store(sampleEvery(n-last, t.cfg.MaxRate))
			last = n
		}
	}
}

// sampleEvery is the 1-in-N rate that brings offered events a second down
// to maxRate.
func sampleEvery(offered uint64, maxRate int) uint32 {
	if offered <= uint64(maxRate) {
		return 1
	}
	return uint32((offered + uint64(maxRate) - 1) / uint64(maxRate))
}

func (t *Tap) publish(e *Event) {
	e.Node = t.cfg.Node
	b, err := json.Marshal(e)
	if err == nil {
		err = t.cfg.Publish(e.App, b)
	}
	if err != nil {
		t.failed.Add(1)
		t.log.Debug("debugtap: publish", "app", e.App, "err", err)
		return
	}
	t.published.Add(1)
}
