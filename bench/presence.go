package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The presence scenario measures how fast presence changes reach every
// node of a cluster. It needs few sockets, so it does not use the epoll
// workers: the parent holds them with a plain blocking WebSocket client, a
// reader goroutine per socket, and timestamps every member_added and
// member_removed as it arrives (one clock for sender and receivers).
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

// presConnStats are the presence scenario's connect figures.
type presConnStats struct {
	hist                            Histogram
	established, failed, subscribed int64
	failures                        map[string]int64
	first, last                     int64 // unix ns: first dial, last subscribed
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

// observe handles one message to observer i.
func (s *presState) observe(i int, m pusherMsg, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notify()
	switch m.Event {
	case "pusher_internal:subscription_succeeded":
		var d struct {
			Presence struct {
				IDs []json.RawMessage `json:"ids"`
			} `json:"presence"`
		}
		_ = decodeData(m.Data, &d)
		for _, id := range d.Presence.IDs {
			s.view[i][userID(id)] = true
		}
		s.subscribed[i] = true
	case "pusher_internal:member_added":
		var d struct {
			UserID json.RawMessage `json:"user_id"`
		}
		_ = decodeData(m.Data, &d)
		u := userID(d.UserID)
		if s.view[i][u] {
			s.dups++
		}
		s.view[i][u] = true
		s.stamp(s.added, u, i, now)
	case "pusher_internal:member_removed":
		var d struct {
			UserID json.RawMessage `json:"user_id"`
		}
		_ = decodeData(m.Data, &d)
		u := userID(d.UserID)
		if !s.view[i][u] {
			s.dups++
		}
		delete(s.view[i], u)
		s.stamp(s.removed, u, i, now)
	case "pusher:error", "pusher:subscription_error":
		s.errs = append(s.errs, fmt.Sprintf("observer %d: %s %s", i, m.Event, m.Data))
	}
}

// presence runs the presence scenario (see the comment at the top).
func (r *run) presence(ctx context.Context) error {
	c := r.cfg
	dests := c.dests()
	targets, err := parentTargets(dests)
	if err != nil {
		return err
	}
	n := c.Conns
	channel := "presence-bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	obsUser := func(i int) string { return "bench-observer-" + strconv.Itoa(i) }
	st := &presState{
		view: make([]map[string]bool, n), subscribed: make([]bool, n), dropped: make([]int64, n),
		added: map[string][]int64{}, removed: map[string][]int64{}, wake: make(chan struct{}, 1),
	}
	for i := range st.view {
		st.view[i] = map[string]bool{}
	}
	res := &PresenceResults{Channel: channel, Subscribers: n, PerURL: make([]int, len(dests)), Joins: c.Joins}
	r.pres = res
	r.pc = &presConnStats{failures: map[string]int64{}}
	for i := range n {
		res.PerURL[i%len(dests)]++
		if i%len(dests) != 0 || len(dests) == 1 {
			res.Remote++
		}
	}
	remote := func(i int) bool { return len(dests) == 1 || i%len(dests) != 0 }

	var readers sync.WaitGroup
	var all []*pconn // every socket, closed at the end
	var allMu sync.Mutex
	defer func() {
		allMu.Lock()
		for _, pc := range all {
			pc.close()
		}
		allMu.Unlock()
		readers.Wait()
	}()
	// dial opens a socket to URL u and starts its reader.
	dial := func(u int, onMsg func(pusherMsg, int64), onEnd func(int64)) (*pconn, error) {
		start := time.Now().UnixNano()
		pc, err := dialPusher(ctx, targets[u], dests[u].Addr, c.DialTimeout)
		now := time.Now().UnixNano()
		allMu.Lock()
		defer allMu.Unlock()
		if r.pc.first == 0 || start < r.pc.first {
			r.pc.first = start
		}
		if err != nil {
			r.pc.failed++
			r.pc.failures[errReason(err)]++
			return nil, err
		}
		r.pc.established++
		r.pc.hist.Record(now - start)
		all = append(all, pc)
		readers.Add(1)
		go func() {
			defer readers.Done()
			pc.readLoop(onMsg, onEnd)
		}()
		return pc, nil
	}

	// 1. The observers, at most 64 dials at a time.
	r.connStart = time.Now()
	obs := make([]*pconn, n)
	var dialErr error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var errMu sync.Mutex
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pc, err := dial(i%len(dests),
				func(m pusherMsg, now int64) { st.observe(i, m, now) },
				func(now int64) {
					st.mu.Lock()
					st.dropped[i] = now
					st.mu.Unlock()
					st.notify()
				})
			if err != nil {
				errMu.Lock()
				dialErr = fmt.Errorf("bench: presence: observer %d (%s): %w", i, dests[i%len(dests)].Addr, err)
				errMu.Unlock()
				return
			}
			obs[i] = pc
			err = pc.subscribe(c.Key, c.Secret, channel, obsUser(i))
			if err != nil {
				errMu.Lock()
				dialErr = fmt.Errorf("bench: presence: observer %d: subscribe: %w", i, err)
				errMu.Unlock()
			}
		}()
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
	if !st.wait(ctx, time.Now().Add(c.DialTimeout), subscribedAll) {
		return r.presErr(st, "not every observer was subscribed within --dial-timeout")
	}
	r.pc.subscribed = int64(n)
	r.pc.last = time.Now().UnixNano()
	// Every observer lists every observer: the cluster has converged.
	full := func() bool {
		for i := range n {
			for j := range n {
				if !st.view[i][obsUser(j)] {
					return false
				}
			}
		}
		return true
	}
	if !st.wait(ctx, time.Now().Add(c.Converge), full) {
		return r.presErr(st, "the observers' member lists did not converge within --converge-timeout")
	}
	r.connEnd = time.Now()
	r.markPhase()
	r.progressf("presence: %d observers on %d URLs converged; %d joins", n, len(dests), c.Joins)

	// 2. Joins and leaves, one at a time, from the first URL.
	var joinAll, joinEach, leaveAll, leaveEach Histogram
	// timeTo waits until every live observer has a stamp in m[user] and
	// records, for the remote ones, stamp - t0 in each and the max in last.
	timeTo := func(m map[string][]int64, user string, t0 int64, each, last *Histogram) bool {
		ok := st.wait(ctx, time.Now().Add(c.Converge), func() bool {
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
			if at != 0 && remote(i) {
				each.Record(at - t0)
				worst = max(worst, at-t0)
			}
		}
		if ok {
			last.Record(worst)
		}
		return ok
	}
	for k := range c.Joins {
		// A random pause, so that joins and leaves do not fall in step with
		// the nodes' gossip ticks (each convergence ends on a tick).
		sleepCtx(ctx, rand.N(presencePause))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		user := "bench-joiner-" + strconv.Itoa(k)
		pc, err := dial(0, func(m pusherMsg, _ int64) {
			if m.Event == "pusher:error" || m.Event == "pusher:subscription_error" {
				st.mu.Lock()
				st.errs = append(st.errs, fmt.Sprintf("joiner %d: %s %s", k, m.Event, m.Data))
				st.mu.Unlock()
			}
		}, nil)
		if err != nil {
			return fmt.Errorf("bench: presence: joiner %d: %w", k, err)
		}
		t0 := time.Now().UnixNano()
		if err := pc.subscribe(c.Key, c.Secret, channel, user); err != nil {
			return fmt.Errorf("bench: presence: joiner %d: subscribe: %w", k, err)
		}
		if timeTo(st.added, user, t0, &joinEach, &joinAll) {
			res.JoinsConverged++
		}
		sleepCtx(ctx, rand.N(presencePause))
		t1 := time.Now().UnixNano()
		pc.close()
		if timeTo(st.removed, user, t1, &leaveEach, &leaveAll) {
			res.LeavesConverged++
		}
	}
	res.JoinMs, res.JoinEachMs = joinAll.percentilesMs(), joinEach.percentilesMs()
	res.LeaveMs, res.LeaveEachMs = leaveAll.percentilesMs(), leaveEach.percentilesMs()
	r.presLatency = joinEach
	r.progressf("presence: joins converged %d/%d, p50 %.1f ms, p99 %.1f ms", res.JoinsConverged, c.Joins, res.JoinMs.P50, res.JoinMs.P99)

	// 3. Kill a node.
	if c.KillPID > 0 {
		if err := r.presenceKill(ctx, st, n, obsUser); err != nil {
			return err
		}
	}
	r.phaseEnd = time.Now()
	r.serversAtEnd()

	st.mu.Lock()
	defer st.mu.Unlock()
	res.DuplicateEvents = st.dups
	for i := range n {
		if st.dropped[i] == 0 {
			for _, at := range st.removed[obsUser(i)] {
				if at != 0 {
					res.SpuriousRemoved++
				}
			}
		}
	}
	if res.JoinsConverged < c.Joins || res.LeavesConverged < c.Joins {
		return r.presErrLocked(st, fmt.Sprintf("%d of %d joins and %d of %d leaves reached every observer within --converge-timeout",
			res.JoinsConverged, c.Joins, res.LeavesConverged, c.Joins))
	}
	if k := res.Kill; k != nil && !k.Converged {
		return fmt.Errorf("bench: presence: member_removed for the killed node's members missing at %d (survivor, member) pairs after --converge-timeout", k.Missing)
	}
	return nil
}

// presenceKill sends SIGKILL to KillPID and times member_removed for the
// members whose sockets it closed.
func (r *run) presenceKill(ctx context.Context, st *presState, n int, obsUser func(int) string) error {
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
			v := st.removed[obsUser(d)]
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
		v := st.removed[obsUser(d)]
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

func (r *run) progressf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench %s %5.1fs "+format+"\n", append([]any{r.cfg.Scenario, time.Since(r.start).Seconds()}, args...)...)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// pusherMsg is a Pusher protocol message; Data is a JSON string (server
// events) or object.
type pusherMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// decodeData decodes a message's data into v, unwrapping a JSON string.
func decodeData(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = []byte(s)
	}
	return json.Unmarshal(raw, v)
}

// userID is the text of a user_id, a JSON string or number.
func userID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// pconn is a blocking client socket of the presence scenario.
type pconn struct {
	nc       net.Conn
	socketID string
	pending  []byte // bytes read past the upgrade response or the first message

	wmu     sync.Mutex
	mask    uint32
	closing bool // guarded by wmu: closed on purpose, not a drop
}

// dialPusher connects to addr, upgrades and waits for
// pusher:connection_established, within timeout.
func dialPusher(ctx context.Context, t *target, addr string, timeout time.Duration) (*pconn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc := &pconn{nc: nc, mask: uint32(time.Now().UnixNano()) | 1}
	fail := func(err error) (*pconn, error) {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if _, err := nc.Write(t.request); err != nil {
		return fail(err)
	}
	buf := make([]byte, 0, 4096)
	for {
		res, n, reason := t.parseUpgrade(buf)
		if res == upgradeBad {
			return fail(errors.New(reason))
		}
		if res == upgradeOK {
			pc.pending = append(pc.pending, buf[n:]...)
			break
		}
		if buf, err = readMore(nc, buf); err != nil {
			return fail(err)
		}
	}
	msg, err := pc.next()
	if err != nil {
		return fail(err)
	}
	var m pusherMsg
	if err := json.Unmarshal(msg, &m); err != nil || m.Event != "pusher:connection_established" {
		return fail(fmt.Errorf("bad_first_message: %.200s", msg))
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if err := decodeData(m.Data, &est); err != nil || est.SocketID == "" {
		return fail(fmt.Errorf("bad connection_established: %.200s", msg))
	}
	pc.socketID = est.SocketID
	_ = nc.SetDeadline(time.Time{})
	return pc, nil
}

func readMore(r io.Reader, buf []byte) ([]byte, error) {
	if len(buf) == cap(buf) {
		buf = append(buf, make([]byte, len(buf)+4096)...)[:len(buf)]
	}
	n, err := r.Read(buf[len(buf):cap(buf)])
	buf = buf[:len(buf)+n]
	if n > 0 {
		return buf, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return buf, err
}

// next returns the next text message, answering pings on the way.
func (pc *pconn) next() ([]byte, error) {
	var frag []byte
	for {
		f, n, err := parseFrame(pc.pending)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			if pc.pending, err = readMore(pc.nc, pc.pending); err != nil {
				return nil, err
			}
			continue
		}
		payload := append([]byte(nil), f.payload...)
		pc.pending = append(pc.pending[:0], pc.pending[n:]...)
		switch f.op {
		case opPing:
			if err := pc.send(opPong, payload); err != nil {
				return nil, err
			}
		case opClose:
			return nil, errors.New("close")
		case opText, opBin, opCont:
			frag = append(frag, payload...)
			if f.fin {
				return frag, nil
			}
		}
	}
}

// send writes one masked frame. Safe for concurrent use.
func (pc *pconn) send(op byte, payload []byte) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	pc.mask ^= pc.mask << 13
	pc.mask ^= pc.mask >> 17
	pc.mask ^= pc.mask << 5
	_, err := pc.nc.Write(appendClientFrame(nil, op, payload, pc.mask))
	return err
}

// subscribe joins a presence channel as user, with a signed auth.
func (pc *pconn) subscribe(key, secret, channel, user string) error {
	chData := `{"user_id":` + strconv.Quote(user) + `}`
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(pc.socketID + ":" + channel + ":" + chData))
	msg, err := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{
		"channel": channel, "auth": key + ":" + hex.EncodeToString(mac.Sum(nil)), "channel_data": chData,
	}})
	if err != nil {
		return err
	}
	return pc.send(opText, msg)
}

// readLoop hands every message to onMsg with its arrival time until the
// socket ends; then, unless close was called, it calls onEnd.
func (pc *pconn) readLoop(onMsg func(pusherMsg, int64), onEnd func(int64)) {
	for {
		msg, err := pc.next()
		now := time.Now().UnixNano()
		if err != nil {
			pc.wmu.Lock()
			asked := pc.closing
			pc.wmu.Unlock()
			if !asked && onEnd != nil {
				onEnd(now)
			}
			return
		}
		var m pusherMsg
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		if m.Event == "pusher:ping" {
			_ = pc.send(opText, pongMsg)
			continue
		}
		onMsg(m, now)
	}
}

// close sends a close frame and closes the socket; the reader then ends
// without reporting a drop.
func (pc *pconn) close() {
	pc.wmu.Lock()
	if pc.closing {
		pc.wmu.Unlock()
		return
	}
	pc.closing = true
	_ = pc.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	pc.mask ^= pc.mask << 13
	_, _ = pc.nc.Write(appendClientFrame(nil, opClose, []byte{0x03, 0xe8}, pc.mask))
	pc.wmu.Unlock()
	_ = pc.nc.Close()
}
