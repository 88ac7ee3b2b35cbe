package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"time"

	"herald/client"
)

// The presence scenario measures how fast presence changes reach every
// node of a cluster. It needs few sockets, so it does not use the epoll
// workers: the parent holds them as client.Conns (conns.go), whose reader
// goroutines stamp every member_added and member_removed as it arrives
// (client.Event.Received: one clock for sender and receivers).
//
//  1. Conns subscribers ("observers"), conn i on URL i % len, join one
//     presence channel, each as its own user; the run waits until every
//     observer's member list holds all of them.
//  2. Joins times, after a random pause (0-300 ms, so as not to run in
//     step with the nodes' gossip ticks): a new socket on the first URL
//     subscribes as a new user; the time from sending its pusher:subscribe
//     until member_added reaches each observer on the other URLs is
//     recorded (with one URL, every observer). After another random pause
//     the socket closes and member_removed is timed the same way.
//  3. With KillPID: the process is sent SIGKILL. The observers whose
//     sockets it closed are its members; the time until member_removed for
//     each of them reaches every surviving observer is one sample.

// presencePause bounds the random pause before each join and each leave.
const presencePause = 300 * time.Millisecond

// PresenceResults are the presence scenario's measurements. "Remote"
// observers are those not on the joiner's URL (the first); with one URL,
// all observers count.
type PresenceResults struct {
	Channel         string        `json:"channel"`
	Subscribers     int           `json:"subscribers"`
	PerURL          []int         `json:"subscribers_per_url"`
	Remote          int           `json:"remote_subscribers"`
	Joins           int           `json:"joins"`
	JoinsConverged  int           `json:"joins_converged"`
	JoinMs          Percentiles   `json:"join_ms"`      // per join: subscribe sent → member_added at the last remote observer
	JoinEachMs      Percentiles   `json:"join_each_ms"` // per join and remote observer
	LeavesConverged int           `json:"leaves_converged"`
	LeaveMs         Percentiles   `json:"leave_ms"` // per join: joiner's socket closed → member_removed at the last remote observer
	LeaveEachMs     Percentiles   `json:"leave_each_ms"`
	DuplicateEvents int64         `json:"duplicate_events"`  // member_added for a member already listed, or member_removed for one not listed
	SpuriousRemoved int64         `json:"spurious_removals"` // member_removed for an observer whose socket never closed
	Kill            *PresenceKill `json:"kill,omitempty"`
}

// PresenceKill is the one sample of a node's death (KillPID).
type PresenceKill struct {
	PID             int         `json:"pid"`
	DeadMembers     int         `json:"dead_members"` // observers whose sockets the kill closed
	Survivors       int         `json:"survivors"`
	SocketsClosedMs float64     `json:"sockets_closed_ms"` // kill → the last of those sockets closed
	Converged       bool        `json:"converged"`
	RemovedMs       float64     `json:"removed_ms"` // kill → every survivor had member_removed for every dead member (0 if not converged)
	RemovedEachMs   Percentiles `json:"removed_each_ms"`
	Missing         int         `json:"missing"` // (survivor, dead member) pairs without member_removed within --converge-timeout
}

// presState is what the observers' readers saw. Guarded by mu.
type presState struct {
	mu         sync.Mutex
	view       []map[string]bool  // per observer: the members it knows of
	subscribed []bool             // per observer
	added      map[string][]int64 // user → per observer: unix ns of the first member_added (0: none yet)
	removed    map[string][]int64 // user → per observer: unix ns of the first member_removed
	dropped    []int64            // per observer: unix ns its socket ended unasked (0: open)
	errs       []string
	dups       int64
	wake       chan struct{}
}

func (s *presState) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// stamp records now for observer i in m[user].
func (s *presState) stamp(m map[string][]int64, user string, i int, now int64) {
	v := m[user]
	if v == nil {
		v = make([]int64, len(s.view))
		m[user] = v
	}
	if v[i] == 0 {
		v[i] = now
	}
}

// wait returns true once ok (called with mu held) is true, false at until
// or when ctx ends.
func (s *presState) wait(ctx context.Context, until time.Time, ok func() bool) bool {
	for {
		s.mu.Lock()
		done := ok()
		s.mu.Unlock()
		if done {
			return true
		}
		d := time.Until(until)
		if d <= 0 || ctx.Err() != nil {
			return false
		}
		t := time.NewTimer(min(d, 10*time.Millisecond))
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// report records a Pusher error one of the run's sockets received.
func (s *presState) report(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

// drop records that observer i's socket ended unasked at now.
func (s *presState) drop(i int, now int64) {
	s.mu.Lock()
	s.dropped[i] = now
	s.mu.Unlock()
	s.notify()
}

// observe handles one event to observer i.
func (s *presState) observe(i int, ev client.Event) {
	now := ev.Received.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notify()
	switch ev.Event {
	case client.EventSubscriptionSucceeded:
		var d struct {
			Presence struct {
				IDs []json.RawMessage `json:"ids"`
			} `json:"presence"`
		}
		_ = json.Unmarshal([]byte(ev.Data), &d)
		for _, id := range d.Presence.IDs {
			s.view[i][userID(id)] = true
		}
		s.subscribed[i] = true
	case "pusher_internal:member_added":
		u := memberOf(ev)
		if s.view[i][u] {
			s.dups++
		}
		s.view[i][u] = true
		s.stamp(s.added, u, i, now)
	case "pusher_internal:member_removed":
		u := memberOf(ev)
		if !s.view[i][u] {
			s.dups++
		}
		delete(s.view[i], u)
		s.stamp(s.removed, u, i, now)
	case client.EventError, client.EventSubscriptionError:
		s.errs = append(s.errs, fmt.Sprintf("observer %d: %s %s", i, ev.Event, ev.Data))
	}
}

// memberOf is the user_id in a member_added or member_removed event's data.
func memberOf(ev client.Event) string {
	var d struct {
		UserID json.RawMessage `json:"user_id"`
	}
	_ = json.Unmarshal([]byte(ev.Data), &d)
	return userID(d.UserID)
}

// userID is the text of a user_id, a JSON string or number.
func userID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// observerUser is observer i's user_id.
func observerUser(i int) string { return "bench-observer-" + strconv.Itoa(i) }

// presRun is one run of the presence scenario: its connections and the
// state their readers share.
type presRun struct {
	r       *run
	st      *presState
	res     *PresenceResults
	urls    []string
	dests   []dest
	channel string

	mu      sync.Mutex     // guards conns and r.pc
	conns   []*client.Conn // every connection of the run, closed at its end
	readers sync.WaitGroup // the goroutines reading them
}

// presTimes are the join and leave samples: per join at the last remote
// observer, and per join and remote observer.
type presTimes struct {
	joinAll, joinEach, leaveAll, leaveEach Histogram
}

// presence runs the presence scenario (see the comment at the top).
func (r *run) presence(ctx context.Context) error {
	p := r.newPresRun()
	defer p.closeAll()
	if err := p.observers(ctx); err != nil {
		return err
	}
	r.connEnd = time.Now()
	r.markPhase()
	r.progressf("presence: %d observers on %d URLs converged; %d joins", r.cfg.Conns, len(p.urls), r.cfg.Joins)
	if err := p.joins(ctx); err != nil {
		return err
	}
	if r.cfg.KillPID > 0 {
		if err := r.presenceKill(ctx, p.st, r.cfg.Conns); err != nil {
			return err
		}
	}
	r.phaseEnd = time.Now()
	r.serversAtEnd()
	return p.tally()
}

func (r *run) newPresRun() *presRun {
	c := r.cfg
	n := c.Conns
	p := &presRun{r: r, urls: c.clientURLs(), dests: c.dests(),
		channel: "presence-bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	p.st = &presState{
		view: make([]map[string]bool, n), subscribed: make([]bool, n), dropped: make([]int64, n),
		added: map[string][]int64{}, removed: map[string][]int64{}, wake: make(chan struct{}, 1),
	}
	for i := range p.st.view {
		p.st.view[i] = map[string]bool{}
	}
	p.res = &PresenceResults{Channel: p.channel, Subscribers: n, PerURL: make([]int, len(p.urls)), Joins: c.Joins}
	for i := range n {
		p.res.PerURL[i%len(p.urls)]++
		if p.remote(i) {
			p.res.Remote++
		}
	}
	r.pres = p.res
	r.pc = &presConnStats{failures: map[string]int64{}}
	return p
}

// remote reports whether observer i is not on the joiners' URL (the first);
// with one URL every observer is.
func (p *presRun) remote(i int) bool { return len(p.urls) == 1 || i%len(p.urls) != 0 }

// dial connects to URL u and accounts the dial in the connect figures.
func (p *presRun) dial(ctx context.Context, u int) (*client.Conn, error) {
	start := time.Now().UnixNano()
	conn, err := client.Dial(ctx, p.urls[u], p.r.cfg.clientOptions())
	now := time.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r.pc.record(start, now, err)
	if err != nil {
		return nil, err
	}
	p.conns = append(p.conns, conn)
	return conn, nil
}

// subscribe joins the run's presence channel as user, with the auth an app's
// endpoint would sign, and returns subscription_succeeded; a refusal is a
// *client.SubscriptionError that holds the refusing event.
func (p *presRun) subscribe(ctx context.Context, conn *client.Conn, user string, timeout time.Duration) (client.Event, error) {
	c := p.r.cfg
	data := `{"user_id":` + strconv.Quote(user) + `}`
	auth := client.SignChannel(c.Key, c.Secret, conn.SocketID(), p.channel, data)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return conn.SubscribeAuth(ctx, p.channel, auth, data)
}

// read hands conn's events to onEvent on a goroutine of its own until the
// connection ends; then, unless it was closed here or the run ended, it
// calls onDrop (when set) with the time.
func (p *presRun) read(ctx context.Context, conn *client.Conn, onEvent func(client.Event), onDrop func(int64)) {
	p.readers.Go(func() {
		for {
			ev, err := conn.Next(ctx)
			if err != nil {
				if onDrop != nil && ctx.Err() == nil && !errors.Is(err, client.ErrClosed) {
					onDrop(time.Now().UnixNano())
				}
				return
			}
			onEvent(ev)
		}
	})
}

// closeAll closes every connection of the run, all at once, and waits for
// their readers.
func (p *presRun) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Go(func() { conn.Close() })
	}
	wg.Wait()
	p.readers.Wait()
}

// observers is step 1: it connects and subscribes the observers, at most 64
// at a time, and waits until every observer's member list holds all of them.
func (p *presRun) observers(ctx context.Context) error {
	c, st, n := p.r.cfg, p.st, p.r.cfg.Conns
	p.r.connStart = time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var errMu sync.Mutex
	var dialErr error
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := p.observer(ctx, i); err != nil {
				errMu.Lock()
				dialErr = err
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	if dialErr != nil {
		return dialErr
	}
	subscribedAll := func() bool {
		for i := range n {
			if !st.subscribed[i] {
				return false
			}
		}
		return true
	}
	st.mu.Lock()
	subscribed := subscribedAll() // each observer's subscribe was answered, or failed
	st.mu.Unlock()
	if !subscribed {
		return p.r.presErr(st, "not every observer was subscribed within --dial-timeout")
	}
	p.r.pc.subscribed = int64(n)
	p.r.pc.last = time.Now().UnixNano()
	// Every observer lists every observer: the cluster has converged.
	full := func() bool {
		for i := range n {
			for j := range n {
				if !st.view[i][observerUser(j)] {
					return false
				}
			}
		}
		return true
	}
	if !st.wait(ctx, time.Now().Add(c.Converge), full) {
		return p.r.presErr(st, "the observers' member lists did not converge within --converge-timeout")
	}
	return nil
}

// observer connects observer i to URL i % len, subscribes it as its own
// user within --dial-timeout and starts its reader. A refused or unanswered
// subscribe leaves it unsubscribed, for observers to report.
func (p *presRun) observer(ctx context.Context, i int) error {
	u := i % len(p.urls)
	conn, err := p.dial(ctx, u)
	if err != nil {
		return fmt.Errorf("bench: presence: observer %d (%s): %w", i, p.dests[u].Addr, err)
	}
	ev, err := p.subscribe(ctx, conn, observerUser(i), p.r.cfg.DialTimeout)
	var refused *client.SubscriptionError
	switch {
	case errors.As(err, &refused): // observe records the refusing event
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil
	case err != nil:
		return fmt.Errorf("bench: presence: observer %d: subscribe: %w", i, err)
	}
	p.st.observe(i, ev)
	p.read(ctx, conn, func(ev client.Event) { p.st.observe(i, ev) }, func(now int64) { p.st.drop(i, now) })
	return nil
}

// joins is step 2: Joins joins and leaves, one at a time, from the first URL.
func (p *presRun) joins(ctx context.Context) error {
	c, res := p.r.cfg, p.res
	var t presTimes
	for k := range c.Joins {
		// A random pause, so that joins and leaves do not fall in step with
		// the nodes' gossip ticks (each convergence ends on a tick).
		sleepCtx(ctx, rand.N(presencePause))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := p.join(ctx, k, &t); err != nil {
			return err
		}
	}
	res.JoinMs, res.JoinEachMs = t.joinAll.percentilesMs(), t.joinEach.percentilesMs()
	res.LeaveMs, res.LeaveEachMs = t.leaveAll.percentilesMs(), t.leaveEach.percentilesMs()
	p.r.presLatency = t.joinEach
	p.r.progressf("presence: joins converged %d/%d, p50 %.1f ms, p99 %.1f ms", res.JoinsConverged, c.Joins, res.JoinMs.P50, res.JoinMs.P99)
	return nil
}

// join times joiner k: a new socket on the first URL subscribes as a new
// user (member_added timed from sending its subscribe), then, after a
// random pause, closes (member_removed timed from the close).
func (p *presRun) join(ctx context.Context, k int, t *presTimes) error {
	user := "bench-joiner-" + strconv.Itoa(k)
	conn, err := p.dial(ctx, 0)
	if err != nil {
		return fmt.Errorf("bench: presence: joiner %d: %w", k, err)
	}
	report := func(ev client.Event) {
		if ev.Event == client.EventError || ev.Event == client.EventSubscriptionError {
			p.st.report(fmt.Sprintf("joiner %d: %s %s", k, ev.Event, ev.Data))
		}
	}
	t0 := time.Now().UnixNano()
	_, err = p.subscribe(ctx, conn, user, p.r.cfg.Converge)
	var refused *client.SubscriptionError
	switch {
	case errors.As(err, &refused):
		report(refused.Event) // the member_added wait below then fails
	case err != nil:
		return fmt.Errorf("bench: presence: joiner %d: subscribe: %w", k, err)
	}
	p.read(ctx, conn, report, nil)
	if p.timeTo(ctx, p.st.added, user, t0, &t.joinEach, &t.joinAll) {
		p.res.JoinsConverged++
	}
	sleepCtx(ctx, rand.N(presencePause))
	t1 := time.Now().UnixNano()
	conn.Close()
	if p.timeTo(ctx, p.st.removed, user, t1, &t.leaveEach, &t.leaveAll) {
		p.res.LeavesConverged++
	}
	return nil
}

// timeTo waits until every live observer has a stamp in m[user] and
// records, for the remote ones, stamp - t0 in each and the max in last.
func (p *presRun) timeTo(ctx context.Context, m map[string][]int64, user string, t0 int64, each, last *Histogram) bool {
	st, n := p.st, p.r.cfg.Conns
	ok := st.wait(ctx, time.Now().Add(p.r.cfg.Converge), func() bool {
		v := m[user]
		for i := range n {
			if st.dropped[i] == 0 && (v == nil || v[i] == 0) {
				return false
			}
		}
		return true
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	var worst int64
	for i, at := range m[user] {
		if at != 0 && p.remote(i) {
			each.Record(at - t0)
			worst = max(worst, at-t0)
		}
	}
	if ok {
		last.Record(worst)
	}
	return ok
}

// tally fills in the counts and fails the run when a join, a leave or the
// kill did not reach every observer.
func (p *presRun) tally() error {
	st, res, c := p.st, p.res, p.r.cfg
	st.mu.Lock()
	defer st.mu.Unlock()
	res.DuplicateEvents = st.dups
	for i := range c.Conns {
		if st.dropped[i] == 0 {
			for _, at := range st.removed[observerUser(i)] {
				if at != 0 {
					res.SpuriousRemoved++
				}
			}
		}
	}
	if res.JoinsConverged < c.Joins || res.LeavesConverged < c.Joins {
		return p.r.presErrLocked(st, fmt.Sprintf("%d of %d joins and %d of %d leaves reached every observer within --converge-timeout",
			res.JoinsConverged, c.Joins, res.LeavesConverged, c.Joins))
	}
	if k := res.Kill; k != nil && !k.Converged {
		return fmt.Errorf("bench: presence: member_removed for the killed node's members missing at %d (survivor, member) pairs after --converge-timeout", k.Missing)
	}
	return nil
}

// presenceKill sends SIGKILL to KillPID and times member_removed for the
// members whose sockets it closed.
func (r *run) presenceKill(ctx context.Context, st *presState, n int) error {
	c := r.cfg
	k := &PresenceKill{PID: c.KillPID}
	r.pres.Kill = k
	r.progressf("presence: SIGKILL %d", c.KillPID)
	if r.srv != nil {
		_, _ = r.readServers() // the killed node's CPU until now
	}
	t0 := time.Now().UnixNano()
	if err := syscall.Kill(c.KillPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("bench: presence: kill %d: %w", c.KillPID, err)
	}
	anyDropped := func() bool {
		for i := range n {
			if st.dropped[i] >= t0 {
				return true
			}
		}
		return false
	}
	if !st.wait(ctx, time.Now().Add(5*time.Second), anyDropped) {
		return fmt.Errorf("bench: presence: no observer's socket closed within 5 s of killing %d: it held no member of this run", c.KillPID)
	}
	// The kernel closes all of a dead process's sockets at once; allow for
	// the readers to notice.
	sleepCtx(ctx, 500*time.Millisecond)
	st.mu.Lock()
	var dead, alive []int
	for i := range n {
		if st.dropped[i] != 0 {
			dead = append(dead, i)
			k.SocketsClosedMs = max(k.SocketsClosedMs, round3(float64(st.dropped[i]-t0)/1e6))
		} else {
			alive = append(alive, i)
		}
	}
	st.mu.Unlock()
	k.DeadMembers, k.Survivors = len(dead), len(alive)
	if len(alive) == 0 {
		return errors.New("bench: presence: every observer's socket closed: no survivor to measure")
	}
	removedAll := func() bool {
		for _, d := range dead {
			v := st.removed[observerUser(d)]
			for _, a := range alive {
				if v == nil || v[a] == 0 {
					return false
				}
			}
		}
		return true
	}
	k.Converged = st.wait(ctx, time.Unix(0, t0).Add(c.Converge), removedAll)
	st.mu.Lock()
	defer st.mu.Unlock()
	var each Histogram
	var worst int64
	for _, d := range dead {
		v := st.removed[observerUser(d)]
		for _, a := range alive {
			if v == nil || v[a] == 0 {
				k.Missing++
				continue
			}
			each.Record(v[a] - t0)
			worst = max(worst, v[a]-t0)
		}
	}
	k.RemovedEachMs = each.percentilesMs()
	if k.Converged {
		k.RemovedMs = round3(float64(worst) / 1e6)
	}
	r.progressf("presence: kill: %d members gone, removed everywhere after %.1f ms (converged %v)", len(dead), k.RemovedMs, k.Converged)
	return nil
}

func (r *run) presErr(st *presState, msg string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return r.presErrLocked(st, msg)
}

func (r *run) presErrLocked(st *presState, msg string) error {
	if len(st.errs) > 0 {
		msg += fmt.Sprintf(" (%d errors; first: %s)", len(st.errs), st.errs[0])
	}
	return errors.New("bench: presence: " + msg)
}
