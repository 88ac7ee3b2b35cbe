package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"herald/client"
)

// The failover scenario kills a cluster node under load and checks that
// resume (docs/protocol-extensions.md: serial, herald_resume) loses and
// duplicates nothing. Like presence it connects from the parent, not from
// the epoll workers (conns.go): each subscriber is a client.Session, which
// resubscribes with herald_resume and drops what it already delivered; the
// bench picks the URLs and paces the redials in the session's Dial hook
// (foDialer).
//
//  1. Conns subscribers, conn i on URL i % len, subscribe to channel
//     failover-<run>-<i % Channels> (names unique to the run, so a resume
//     from serial 0 replays only this run's events).
//  2. Messages events are published over signed REST to RESTURL (default:
//     the first URL's node, which therefore must not be the victim), Rate
//     per second, Publishers requests at a time; event seq goes to channel
//     seq % Channels with data {"i":seq}. Only the publishes answered 200
//     ("acknowledged") must be delivered; the others are publish_failures.
//  3. KillAfter into publishing, KillPID gets SIGKILL. A subscriber whose
//     socket drops reconnects to the next URL ((u+1) % len, then on, never
//     the one it lost), and its session subscribes with herald_resume = the
//     last serial it delivered on its channel (0 when none:
//     SessionOptions.ResumeUnseen). resume_failed "unavailable" makes it
//     reconnect (Session.Reconnect, to the same URL after 50 ms) and try
//     again.
//  4. Each subscriber's session drops an event whose serial is ≤ the last
//     it delivered (duplicates_suppressed: SessionStats.Duplicates); what
//     passes is the "app" layer, which counts an event seq it already had
//     as a duplicate (target 0) and at the end every acknowledged event of
//     its channel it never had as lost (target 0).
//
// time_to_all_resumed_ms is kill → the last dropped subscriber's
// resume_ok; replayed is the sum of resume_ok's "replayed"; the replay
// throughput divides it by the span from the first resuming subscribe sent
// (the first redial's handshake: the session subscribes right after it) to
// the last resume_ok.

// MaxFailoverConns bounds the failover scenario's subscribers (a
// client.Session, three goroutines, per subscriber in the parent).
const MaxFailoverConns = 10000

// FailoverResults are the failover scenario's measurements.
type FailoverResults struct {
	Channels            []string         `json:"channels_used"`
	Subscribers         int              `json:"subscribers"`
	PerURL              []int            `json:"subscribers_per_url"`
	Messages            int              `json:"messages"`
	Acknowledged        int64            `json:"acknowledged"`     // publishes answered 200
	PublishFailures     int64            `json:"publish_failures"` // publishes not answered 200 (the election)
	PublishReasons      map[string]int64 `json:"publish_failure_reasons,omitempty"`
	PublishS            float64          `json:"publish_s"`
	KillPID             int              `json:"kill_pid"`
	KillAfterS          float64          `json:"kill_after_s"`
	Dropped             int              `json:"dropped_clients"` // subscribers whose socket the kill closed
	Reconnects          int64            `json:"reconnects"`      // reconnect attempts (dials), all subscribers
	ResumedClients      int              `json:"resumed_clients"` // dropped subscribers that got resume_ok
	ResumeFailed        map[string]int64 `json:"resume_failed,omitempty"`
	TimeToAllResumedMs  float64          `json:"time_to_all_resumed_ms"` // kill → last dropped subscriber's resume_ok (0 if not all resumed)
	ResumedMs           Percentiles      `json:"resumed_ms"`             // kill → each dropped subscriber's resume_ok
	Replayed            int64            `json:"replayed"`
	ReplayEventsPerS    float64          `json:"replay_events_per_s"`
	Expected            int64            `json:"expected"` // acknowledged events × their channel's subscribers
	Delivered           int64            `json:"delivered"`
	Lost                int64            `json:"lost"`
	Duplicates          int64            `json:"duplicates"`            // reached the app twice (passed the serial check)
	DuplicatesSupressed int64            `json:"duplicates_suppressed"` // dropped by the client: serial ≤ last seen
	Unacknowledged      int64            `json:"unacknowledged_delivered"`
	NoSerial            int64            `json:"events_without_serial"`
}

// foClient is one subscriber's state. Guarded by foState.mu.
type foClient struct {
	url        int    // index of its first URL
	channel    int    // index in FailoverResults.Channels
	seen       []bool // per seq: reached the app
	dropped    int64  // unix ns its socket dropped after the kill (0: not)
	resumeSent int64  // unix ns of the first resuming subscribe
	resumed    int64  // unix ns of resume_ok
	subscribed bool
}

type foState struct {
	urls  []string // for package client (Config.clientURLs)
	dests []dest

	mu      sync.Mutex
	clients []foClient
	acked   []bool // per seq
	killAt  int64
	res     *FailoverResults
	errs    []string
	wake    chan struct{}
}

func (s *foState) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait polls ok (under mu) until it is true, until, or ctx ends.
func (s *foState) wait(ctx context.Context, until time.Time, ok func() bool) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		done := ok()
		s.mu.Unlock()
		if done {
			return true
		}
		if !time.Now().Before(until) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.wake:
		case <-t.C:
		}
	}
}

func (s *foState) report(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
	s.notify()
}

// complete reports whether every dropped subscriber resumed and every
// subscriber has every acknowledged event of its channel. s.mu must be held.
func (s *foState) complete() bool {
	for i := range s.clients {
		cl := &s.clients[i]
		if cl.dropped != 0 && cl.resumed == 0 {
			return false
		}
		for seq, ok := range s.acked {
			if ok && seq%len(s.res.Channels) == cl.channel && !cl.seen[seq] {
				return false
			}
		}
	}
	return true
}

func (r *run) failover(ctx context.Context) error {
	c := r.cfg
	st := r.newFoState()
	res := st.res
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	if err := r.foConnect(ctx, sctx, st, &wg); err != nil {
		return err
	}
	if err := r.foPublishKill(ctx, st); err != nil {
		return err
	}
	st.wait(ctx, time.Now().Add(c.Converge), st.complete) // or the converge timeout
	stop()
	wg.Wait()
	r.phaseEnd = time.Now()
	r.serversAtEnd()
	r.foTally(st)
	r.progressf("failover: lost %d, duplicates %d, resumed %d/%d in %.1f ms", res.Lost, res.Duplicates, res.ResumedClients, res.Dropped, res.TimeToAllResumedMs)
	if res.Dropped == 0 {
		return fmt.Errorf("bench: failover: no subscriber's socket closed after killing %d: it held none of this run's subscribers", c.KillPID)
	}
	return nil
}

func (r *run) newFoState() *foState {
	c := r.cfg
	dests := c.dests()
	prefix := "failover-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	res := &FailoverResults{Subscribers: c.Conns, PerURL: make([]int, len(dests)), Messages: c.Messages,
		KillPID: c.KillPID, KillAfterS: c.KillAfter.Seconds(), PublishReasons: map[string]int64{}, ResumeFailed: map[string]int64{}}
	for k := range c.Channels {
		res.Channels = append(res.Channels, prefix+strconv.Itoa(k))
	}
	st := &foState{urls: c.clientURLs(), dests: dests, clients: make([]foClient, c.Conns),
		acked: make([]bool, c.Messages), res: res, wake: make(chan struct{}, 1)}
	for i := range st.clients {
		st.clients[i] = foClient{url: i % len(dests), channel: i % c.Channels, seen: make([]bool, c.Messages)}
		res.PerURL[i%len(dests)]++
	}
	r.fo = res
	r.pc = &presConnStats{failures: map[string]int64{}}
	return st
}

// foConnect is step 1: it starts the subscribers, at most 64 first dials at
// a time, each on wg until sctx ends, and waits until all are subscribed.
func (r *run) foConnect(ctx, sctx context.Context, st *foState, wg *sync.WaitGroup) error {
	c := r.cfg
	r.connStart = time.Now()
	sem := make(chan struct{}, 64)
	for i := range c.Conns {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		var once sync.Once
		wg.Go(func() { r.foSubscriber(sctx, st, i, func() { once.Do(func() { <-sem }) }) })
	}
	failed := false
	subscribedAll := func() bool {
		if failed = len(st.errs) > 0; failed {
			return true
		}
		for i := range st.clients {
			if !st.clients[i].subscribed {
				return false
			}
		}
		return true
	}
	if !st.wait(ctx, time.Now().Add(c.DialTimeout+time.Duration(c.Conns/64+1)*c.DialTimeout/10), subscribedAll) || failed {
		return r.foErr(st, "not every subscriber was subscribed within --dial-timeout")
	}
	r.pc.subscribed = int64(c.Conns)
	r.pc.last = time.Now().UnixNano()
	r.connEnd = time.Now()
	r.markPhase()
	r.progressf("failover: %d subscribers on %d URLs, %d channels; publishing %d events to %s", c.Conns, len(st.urls), c.Channels, c.Messages, c.RESTURL)
	return nil
}

// foSubscriber runs subscriber i until sctx ends: a client.Session on its
// channel, whose events it hands to foEvent. release frees its slot among
// the first dials (foDialer calls it after the first one).
func (r *run) foSubscriber(sctx context.Context, st *foState, i int, release func()) {
	defer release()
	d := &foDialer{r: r, st: st, i: i, u: st.clients[i].url, release: release}
	s := client.NewSession(st.urls, client.SessionOptions{
		Conn:         r.cfg.clientOptions(),
		ResumeUnseen: true, // resume from 0 a channel that delivered nothing yet (step 3)
		Dial:         d.dial,
		// foDialer paces the redials itself.
		MinBackoff: time.Nanosecond,
		MaxBackoff: time.Nanosecond,
	})
	defer func() {
		s.Close()
		st.mu.Lock()
		st.res.DuplicatesSupressed += int64(s.Stats().Duplicates)
		st.mu.Unlock()
	}()
	s.Subscribe(st.res.Channels[st.clients[i].channel], nil)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok { // a server refused the connection for good
				st.report(fmt.Sprintf("subscriber %d: %v", i, s.Err()))
				return
			}
			st.foEvent(i, s, ev)
		case <-sctx.Done():
			return
		}
	}
}

// foEvent accounts one event that subscriber i's session delivered.
func (st *foState) foEvent(i int, s *client.Session, ev client.Event) {
	switch ev.Event {
	case client.EventSubscriptionSucceeded:
		st.mu.Lock()
		st.clients[i].subscribed = true
		st.mu.Unlock()
	case client.EventResumeOK, client.EventResumeFailed:
		st.foResume(i, s, ev)
	case "bench":
		var d struct {
			I int `json:"i"`
		}
		if json.Unmarshal([]byte(ev.Data), &d) != nil {
			return
		}
		st.mu.Lock()
		cl := &st.clients[i]
		if ev.Serial == 0 {
			st.res.NoSerial++
		}
		if d.I >= 0 && d.I < len(cl.seen) {
			if cl.seen[d.I] {
				st.res.Duplicates++
			}
			cl.seen[d.I] = true
		}
		st.mu.Unlock()
	default:
		return
	}
	st.notify()
}

// foResume accounts subscriber i's resume_ok or resume_failed; after
// resume_failed "unavailable" it makes the session reconnect and try again.
func (st *foState) foResume(i int, s *client.Session, ev client.Event) {
	var d struct {
		Replayed int64  `json:"replayed"` // resume_ok
		Reason   string `json:"reason"`   // resume_failed
	}
	_ = json.Unmarshal([]byte(ev.Data), &d)
	st.mu.Lock()
	failed := ev.Event == client.EventResumeFailed
	if failed {
		st.res.ResumeFailed[d.Reason]++
	} else {
		st.res.Replayed += d.Replayed
		if cl := &st.clients[i]; cl.resumed == 0 {
			cl.resumed = ev.Received.UnixNano()
		}
	}
	st.mu.Unlock()
	if failed && d.Reason == "unavailable" {
		s.Reconnect()
	}
}

// foDialer is subscriber i's client.SessionOptions.Dial. It dials the URL
// step 3 asks for (the session's choice is ignored), paces the redials,
// accounts the first dial in the connect figures and the others as
// reconnects, and notes when the subscriber's socket dropped and when it
// first resubscribed. Only its session's goroutine calls it.
type foDialer struct {
	r       *run
	st      *foState
	i       int
	u       int  // index in st.urls of the next dial
	dials   int  // dials so far
	failed  bool // the last dial failed
	release func()
}

func (d *foDialer) dial(ctx context.Context, _ string, opt client.Options) (*client.Conn, error) {
	if d.dials > 0 {
		d.beforeRedial(ctx)
	}
	st, first, u := d.st, d.dials == 0, d.u
	start := time.Now().UnixNano()
	conn, err := client.Dial(ctx, st.urls[u], opt)
	now := time.Now().UnixNano()
	d.dials++
	d.failed = err != nil
	st.mu.Lock()
	if first {
		d.r.pc.record(start, now, err)
	} else {
		st.res.Reconnects++
		if cl := &st.clients[d.i]; err == nil && cl.resumeSent == 0 {
			cl.resumeSent = now // the session subscribes with herald_resume right away
		}
	}
	st.mu.Unlock()
	if !first {
		return conn, err
	}
	d.release()
	if err != nil {
		// A subscriber that cannot connect at all gives up, and the run fails.
		st.report(fmt.Sprintf("subscriber %d (%s): %v", d.i, st.dests[u].Addr, err))
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return conn, nil
}

// beforeRedial runs between two dials. After a failed dial: the next URL,
// never the subscriber's first, after 50 ms more per dial so far (at most
// 500 ms). After a connection ended: the drop is noted; the first
// connection's end moves on to the URL after the first at once, a later
// one's (resume_failed "unavailable", a second drop) redials the same URL
// after 50 ms, so as not to spin.
func (d *foDialer) beforeRedial(ctx context.Context) {
	n, home := len(d.st.urls), d.st.clients[d.i].url // url is set before the sessions start
	if d.failed {
		d.u = (d.u + 1) % n
		if d.u == home && n > 1 {
			d.u = (d.u + 1) % n
		}
		sleepCtx(ctx, time.Duration(min(d.dials-1, 10))*50*time.Millisecond)
		return
	}
	d.st.connectionEnded(d.i)
	if d.dials > 1 {
		sleepCtx(ctx, 50*time.Millisecond)
	} else if n > 1 {
		d.u = (home + 1) % n
	}
}

// connectionEnded notes that subscriber i's connection ended: an error
// before the kill, its drop after it (the first, unless it had resumed).
func (s *foState) connectionEnded(i int) {
	s.mu.Lock()
	cl := &s.clients[i]
	if s.killAt == 0 {
		s.errs = append(s.errs, fmt.Sprintf("subscriber %d dropped before the kill", i))
	} else if cl.dropped == 0 && cl.resumed == 0 {
		cl.dropped = time.Now().UnixNano()
	}
	s.mu.Unlock()
	s.notify()
}

// foPublishKill is steps 2 and 3: it publishes, sends SIGKILL to KillPID
// KillAfter into it, and returns when publishing is over.
func (r *run) foPublishKill(ctx context.Context, st *foState) error {
	c, res := r.cfg, st.res
	pubStart := time.Now()
	pubDone := make(chan struct{})
	go func() { r.foPublish(ctx, st, res.Channels); close(pubDone) }()
	killTimer := time.NewTimer(c.KillAfter)
	defer killTimer.Stop()
	select {
	case <-killTimer.C:
	case <-ctx.Done():
		<-pubDone
		return ctx.Err()
	}
	if r.srv != nil {
		_, _ = r.readServers() // the victim's CPU until now
	}
	st.mu.Lock()
	st.killAt = time.Now().UnixNano()
	st.mu.Unlock()
	r.progressf("failover: SIGKILL %d", c.KillPID)
	var killErr error
	if err := syscall.Kill(c.KillPID, syscall.SIGKILL); err != nil {
		killErr = fmt.Errorf("bench: failover: kill %d: %w", c.KillPID, err)
	}
	<-pubDone
	res.PublishS = round3(time.Since(pubStart).Seconds())
	if killErr != nil {
		return killErr
	}
	r.progressf("failover: published %d, acknowledged %d, failed %d", c.Messages, res.Acknowledged, res.PublishFailures)
	return nil
}

// foPublish publishes the events, Publishers at a time, paced to Rate.
func (r *run) foPublish(ctx context.Context, st *foState, channels []string) {
	c := r.cfg
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, MaxIdleConnsPerHost: c.Publishers}}
	defer hc.CloseIdleConnections()
	base := strings.TrimRight(c.RESTURL, "/")
	path := "/apps/" + c.AppID + "/events"
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range c.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				if seq >= int64(c.Messages) {
					return
				}
				if c.Rate > 0 {
					sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(seq)/c.Rate*1e9))))
				}
				body, _ := json.Marshal(map[string]string{"name": "bench", "channel": channels[seq%int64(len(channels))],
					"data": `{"i":` + strconv.FormatInt(seq, 10) + `}`})
				reason := signedPost(ctx, hc, base, path, c.Key, c.Secret, body)
				st.mu.Lock()
				if reason == "" {
					st.acked[seq] = true
					st.res.Acknowledged++
				} else {
					st.res.PublishFailures++
					st.res.PublishReasons[reason]++
				}
				st.mu.Unlock()
				st.notify()
			}
		}()
	}
	wg.Wait()
}

// foTally computes loss, resume times and replay throughput.
func (r *run) foTally(st *foState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	res, c := st.res, r.cfg
	var each Histogram
	var firstSent, lastResumed, worst int64
	all := true
	for i := range st.clients {
		cl := &st.clients[i]
		for seq, ok := range st.acked {
			if seq%c.Channels != cl.channel {
				continue
			}
			switch {
			case ok:
				res.Expected++
				if cl.seen[seq] {
					res.Delivered++
				} else {
					res.Lost++
				}
			case cl.seen[seq]:
				res.Unacknowledged++
			}
		}
		if cl.dropped == 0 {
			continue
		}
		res.Dropped++
		if cl.resumed == 0 {
			all = false
			continue
		}
		res.ResumedClients++
		each.Record(cl.resumed - st.killAt)
		worst = max(worst, cl.resumed-st.killAt)
		lastResumed = max(lastResumed, cl.resumed)
		if cl.resumeSent != 0 && (firstSent == 0 || cl.resumeSent < firstSent) {
			firstSent = cl.resumeSent
		}
	}
	res.ResumedMs = each.percentilesMs()
	if all && res.Dropped > 0 {
		res.TimeToAllResumedMs = round3(float64(worst) / 1e6)
	}
	if firstSent > 0 && lastResumed > firstSent {
		res.ReplayEventsPerS = round3(float64(res.Replayed) / (float64(lastResumed-firstSent) / 1e9))
	}
	if len(res.PublishReasons) == 0 {
		res.PublishReasons = nil
	}
	if len(res.ResumeFailed) == 0 {
		res.ResumeFailed = nil
	}
}

func (r *run) foErr(st *foState, msg string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.errs) > 0 {
		msg += fmt.Sprintf(" (%d errors; first: %s)", len(st.errs), st.errs[0])
	}
	return errors.New("bench: failover: " + msg)
}

// writeTable prints the failover rows of the human summary.
func (fr *FailoverResults) writeTable(row func(k, format string, args ...any), pct func(Percentiles) string) {
	row("failover channels", "%d, %d subscribers (per URL %v)", len(fr.Channels), fr.Subscribers, fr.PerURL)
	row("published", "%d / %d acknowledged in %.3f s (failures %d%s)", fr.Acknowledged, fr.Messages, fr.PublishS, fr.PublishFailures, fmtCounts(fr.PublishReasons))
	row("kill -9", "pid %d after %.1f s: %d subscribers dropped, %d reconnect dials", fr.KillPID, fr.KillAfterS, fr.Dropped, fr.Reconnects)
	row("resumed", "%d / %d; all after %.1f ms (each %s)%s", fr.ResumedClients, fr.Dropped, fr.TimeToAllResumedMs, pct(fr.ResumedMs), fmtCounts(fr.ResumeFailed))
	row("replayed", "%d events, %.0f events/s", fr.Replayed, fr.ReplayEventsPerS)
	row("delivered", "%d / %d", fr.Delivered, fr.Expected)
	row("lost / dup (app)", "%d / %d", fr.Lost, fr.Duplicates)
	row("dup suppressed (serial)", "%d", fr.DuplicatesSupressed)
	if fr.Unacknowledged > 0 || fr.NoSerial > 0 {
		row("unacked delivered / no serial", "%d / %d", fr.Unacknowledged, fr.NoSerial)
	}
}
