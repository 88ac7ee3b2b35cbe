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
)

// The failover scenario kills a cluster node under load and checks that
// resume (docs/protocol-extensions.md: serial, herald_resume) loses and
// duplicates nothing. Like presence it uses the plain blocking client in the
// parent (a goroutine per socket), not the epoll workers: every socket must
// reconnect and resubscribe with its own herald_resume.
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
//     the one it lost), and subscribes with herald_resume = the last serial
//     it saw on its channel (0 when none). resume_failed "unavailable"
//     makes it reconnect and try again.
//  4. Each subscriber drops an event whose serial is ≤ the last it saw
//     (duplicates_suppressed, the client library's job); what passes is the
//     "app" layer, which counts an event seq it already had as a duplicate
//     (target 0) and at the end every acknowledged event of its channel it
//     never had as lost (target 0).
//
// time_to_all_resumed_ms is kill → the last dropped subscriber's
// resume_ok; replayed is the sum of resume_ok's "replayed"; the replay
// throughput divides it by the span from the first resuming subscribe sent
// to the last resume_ok.

// MaxFailoverConns bounds the failover scenario's subscribers (a goroutine
// per socket in the parent).
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
	url        int
	channel    int
	last       int64  // last serial seen
	seen       []bool // per seq: reached the app
	dropped    int64  // unix ns its socket dropped after the kill (0: not)
	resumeSent int64  // unix ns of the first resuming subscribe
	resumed    int64  // unix ns of resume_ok
	subscribed bool
}

type foState struct {
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

// foMsg is a server message with its serial.
type foMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Serial  int64           `json:"serial"`
}

func (r *run) failover(ctx context.Context) error {
	c := r.cfg
	dests := c.dests()
	targets, err := parentTargets(dests)
	if err != nil {
		return err
	}
	n := c.Conns
	prefix := "failover-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	res := &FailoverResults{Subscribers: n, PerURL: make([]int, len(dests)), Messages: c.Messages,
		KillPID: c.KillPID, KillAfterS: c.KillAfter.Seconds(), PublishReasons: map[string]int64{}, ResumeFailed: map[string]int64{}}
	for k := range c.Channels {
		res.Channels = append(res.Channels, prefix+strconv.Itoa(k))
	}
	st := &foState{clients: make([]foClient, n), acked: make([]bool, c.Messages), res: res, wake: make(chan struct{}, 1)}
	for i := range st.clients {
		st.clients[i] = foClient{url: i % len(dests), channel: i % c.Channels, seen: make([]bool, c.Messages)}
		res.PerURL[i%len(dests)]++
	}
	r.fo = res
	r.pc = &presConnStats{failures: map[string]int64{}}
	var reconnects atomic.Int64

	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	var connMu sync.Mutex
	conns := make([]*pconn, n)
	setConn := func(i int, pc *pconn) bool {
		connMu.Lock()
		defer connMu.Unlock()
		if sctx.Err() != nil {
			return false
		}
		conns[i] = pc
		return true
	}
	go func() { // closes every socket when the run stops
		<-sctx.Done()
		connMu.Lock()
		defer connMu.Unlock()
		for _, pc := range conns {
			if pc != nil {
				pc.close()
			}
		}
	}()

	// session runs subscriber i: connect, subscribe, read; after an unasked
	// drop, reconnect elsewhere with herald_resume.
	session := func(i int, release func()) {
		defer wg.Done()
		defer release()
		u := st.clients[i].url
		first := true
		for attempt := 0; sctx.Err() == nil; attempt++ {
			start := time.Now().UnixNano()
			pc, err := dialPusher(sctx, targets[u], dests[u].Addr, c.DialTimeout)
			now := time.Now().UnixNano()
			if first {
				release()
				st.mu.Lock()
				if r.pc.first == 0 || start < r.pc.first {
					r.pc.first = start
				}
				if err != nil {
					r.pc.failed++
					r.pc.failures[errReason(err)]++
				} else {
					r.pc.established++
					r.pc.hist.Record(now - start)
				}
				st.mu.Unlock()
			} else {
				reconnects.Add(1)
			}
			if err != nil {
				if first {
					st.mu.Lock()
					st.errs = append(st.errs, fmt.Sprintf("subscriber %d (%s): %v", i, dests[u].Addr, err))
					st.mu.Unlock()
					st.notify()
					return
				}
				// Try the next URL, never the one the socket was lost on.
				u = (u + 1) % len(dests)
				if u == st.clients[i].url && len(dests) > 1 {
					u = (u + 1) % len(dests)
				}
				sleepCtx(sctx, time.Duration(min(attempt, 10))*50*time.Millisecond)
				continue
			}
			if !setConn(i, pc) {
				pc.close()
				return
			}
			st.mu.Lock()
			cl := &st.clients[i]
			data := map[string]any{"channel": res.Channels[cl.channel], "auth": ""}
			if !first {
				data["herald_resume"] = cl.last
				if cl.resumeSent == 0 {
					cl.resumeSent = time.Now().UnixNano()
				}
			}
			st.mu.Unlock()
			msg, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": data})
			if err := pc.send(opText, msg); err == nil {
				r.foRead(st, i, pc)
			}
			pc.close()
			if sctx.Err() != nil {
				return
			}
			st.mu.Lock()
			cl = &st.clients[i]
			if st.killAt == 0 {
				st.errs = append(st.errs, fmt.Sprintf("subscriber %d dropped before the kill", i))
			} else if cl.dropped == 0 && cl.resumed == 0 {
				cl.dropped = time.Now().UnixNano()
			}
			lost := cl.url
			st.mu.Unlock()
			st.notify()
			if !first {
				sleepCtx(sctx, 50*time.Millisecond) // resume_failed "unavailable", or a second drop: do not spin
			}
			if first && len(dests) > 1 {
				// Lost its first node: move on, and remember which to skip.
				u = (lost + 1) % len(dests)
			}
			first = false
		}
	}

	// 1. The subscribers, at most 64 dials at a time.
	r.connStart = time.Now()
	sem := make(chan struct{}, 64)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		var once sync.Once
		go session(i, func() { once.Do(func() { <-sem }) })
	}
	subscribedAll := func() bool {
		if len(st.errs) > 0 {
			return true
		}
		for i := range st.clients {
			if !st.clients[i].subscribed {
				return false
			}
		}
		return true
	}
	if !st.wait(ctx, time.Now().Add(c.DialTimeout+time.Duration(n/64+1)*c.DialTimeout/10), subscribedAll) || len(st.errs) > 0 {
		return r.foErr(st, "not every subscriber was subscribed within --dial-timeout")
	}
	r.pc.subscribed = int64(n)
	r.pc.last = time.Now().UnixNano()
	r.connEnd = time.Now()
	r.markPhase()
	r.progressf("failover: %d subscribers on %d URLs, %d channels; publishing %d events to %s", n, len(dests), c.Channels, c.Messages, c.RESTURL)

	// 2. Publish; 3. kill at KillAfter into it.
	pubStart := time.Now()
	pubDone := make(chan struct{})
	go func() { r.foPublish(ctx, st, res.Channels); close(pubDone) }()
	killTimer := time.NewTimer(c.KillAfter)
	defer killTimer.Stop()
	var killErr error
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
	if err := syscall.Kill(c.KillPID, syscall.SIGKILL); err != nil {
		killErr = fmt.Errorf("bench: failover: kill %d: %w", c.KillPID, err)
	}
	<-pubDone
	res.PublishS = round3(time.Since(pubStart).Seconds())
	if killErr != nil {
		return killErr
	}
	r.progressf("failover: published %d, acknowledged %d, failed %d", c.Messages, res.Acknowledged, res.PublishFailures)

	// Every dropped subscriber resumed, and every subscriber has every
	// acknowledged event of its channel (or the converge timeout).
	complete := func() bool {
		for i := range st.clients {
			cl := &st.clients[i]
			if cl.dropped != 0 && cl.resumed == 0 {
				return false
			}
			for seq, ok := range st.acked {
				if ok && seq%c.Channels == cl.channel && !cl.seen[seq] {
					return false
				}
			}
		}
		return true
	}
	st.wait(ctx, time.Now().Add(c.Converge), complete)
	stop()
	wg.Wait()
	res.Reconnects = reconnects.Load()
	r.phaseEnd = time.Now()
	r.serversAtEnd()
	r.foTally(st)
	r.progressf("failover: lost %d, duplicates %d, resumed %d/%d in %.1f ms", res.Lost, res.Duplicates, res.ResumedClients, res.Dropped, res.TimeToAllResumedMs)
	if res.Dropped == 0 {
		return fmt.Errorf("bench: failover: no subscriber's socket closed after killing %d: it held none of this run's subscribers", c.KillPID)
	}
	return nil
}

// foRead handles subscriber i's messages until its socket ends.
func (r *run) foRead(st *foState, i int, pc *pconn) {
	for {
		raw, err := pc.next()
		if err != nil {
			return
		}
		var m foMsg
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		now := time.Now().UnixNano()
		switch m.Event {
		case "pusher:ping":
			_ = pc.send(opText, pongMsg)
		case "pusher_internal:subscription_succeeded":
			st.mu.Lock()
			st.clients[i].subscribed = true
			st.mu.Unlock()
			st.notify()
		case "pusher_internal:resume_ok":
			var d struct {
				Replayed int64 `json:"replayed"`
			}
			_ = decodeData(m.Data, &d)
			st.mu.Lock()
			cl := &st.clients[i]
			if cl.resumed == 0 {
				cl.resumed = now
			}
			st.res.Replayed += d.Replayed
			st.mu.Unlock()
			st.notify()
		case "pusher_internal:resume_failed":
			var d struct {
				Reason string `json:"reason"`
			}
			_ = decodeData(m.Data, &d)
			st.mu.Lock()
			st.res.ResumeFailed[d.Reason]++
			st.mu.Unlock()
			if d.Reason == "unavailable" {
				return // reconnect and try again
			}
		case "bench":
			var d struct {
				I int `json:"i"`
			}
			if decodeData(m.Data, &d) != nil {
				continue
			}
			st.mu.Lock()
			cl := &st.clients[i]
			switch {
			case m.Serial == 0:
				st.res.NoSerial++
			case m.Serial <= cl.last:
				st.res.DuplicatesSupressed++
				st.mu.Unlock()
				continue
			default:
				cl.last = m.Serial
			}
			if d.I >= 0 && d.I < len(cl.seen) {
				if cl.seen[d.I] {
					st.res.Duplicates++
				}
				cl.seen[d.I] = true
			}
			st.mu.Unlock()
			st.notify()
		}
	}
}

// foPublish publishes the events, Publishers at a time, paced to Rate.
func (r *run) foPublish(ctx context.Context, st *foState, channels []string) {
	c := r.cfg
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, MaxIdleConnsPerHost: c.Publishers}}
	defer client.CloseIdleConnections()
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
				reason := signedPost(ctx, client, base, path, c.Key, c.Secret, body)
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
