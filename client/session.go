package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A Session is a Pusher client that stays connected and resumes: it redials
// when its connection ends, subscribes again to every channel, and asks the
// server (Herald's resume extension, docs/protocol-extensions.md) for the
// events it missed, so that the app sees each event of a channel at most
// once, in order, and none missing as long as the server's replay window
// still holds them.
//
// Events delivers every frame the server sends on a channel the session is
// subscribed to, in the order it was sent: channel events,
// pusher_internal:subscription_succeeded after each subscribe, presence
// member events, pusher:subscription_error and channel-scoped pusher:error
// (and a pusher:subscription_error with {"type":"AuthError",...} data when an
// AuthFunc fails). Two changes:
//
//   - a channel event whose serial is not greater than the last serial
//     delivered on its channel is a duplicate and is dropped
//     (SessionStats.Duplicates);
//   - pusher_internal:resume_ok is delivered as EventResumeOK and
//     pusher_internal:resume_failed as EventResumeFailed, with the server's
//     data ({"from":..,"to":..,"replayed":..} and
//     {"from":..,"reason":..,"first":..}). After EventResumeFailed the app
//     has missed events on that channel and should refetch its state.
//
// Frames without a channel (pusher:ping, pusher:pong, connection-level
// pusher:error) are handled by the session and not delivered.
//
// Reconnecting follows the close-code ranges of the Pusher protocol
// (docs/protocol.md §1.7), for close frames (and the pusher:error of a failed
// handshake):
//
//   - 4200-4299: redial at once (after the backoff when the connection lived
//     less than a second, so a server that keeps refusing is not hammered);
//     a pusher:error without a channel in this range ends the connection
//     at once, without waiting for the close frame;
//   - 4100-4199: redial after at least one second (pusher:error likewise);
//   - 4000: redial the same URL at once over wss://;
//   - 4001-4099, 4300-4399 as a close code, and 4000 on a wss:// URL: a
//     refusal; the session ends (Events is closed, Err says why);
//   - a missed pong: redial at once (after the backoff when the connection
//     lived less than a second);
//   - anything else (network errors, close codes below 4000 or above 4399):
//     redial after the backoff, MinBackoff doubling up to MaxBackoff.
//
// Any other pusher:error on an open connection (4000-4099 without a close
// frame, 4300-4399, null codes) is a report, not a close: the connection
// stays. Each dial takes the next URL.
//
// Serials of one channel come from one stream. If the server's stream is
// recreated (serials start again at 1), the session drops the new events as
// duplicates until they pass the old last serial; unsubscribe and subscribe
// again to start over.
//
// One goroutine runs the session; each connection adds its Conn's reader.
// All methods are safe for concurrent use.
type Session struct {
	opt    SessionOptions
	events chan Event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the run goroutine has exited

	closeOnce sync.Once

	// mu guards everything below.
	mu       sync.Mutex
	urls     []string // a 4000 (TLS only) close rewrites ws:// to wss://
	next     int      // index in urls of the next dial
	conn     *Conn    // the current connection; nil between connections
	gen      uint64   // connection number; each handshake increments it
	wake     context.CancelFunc
	channels map[string]*sessionChannel
	seq      uint64   // Subscribe calls so far: orders the channels
	unsubs   []string // unsubscribes for the run goroutine to send
	err      error    // why the session ended

	stats sessionCounters
}

// sessionChannel is the session's state for one subscribed channel.
type sessionChannel struct {
	seq       uint64 // subscribes go out in the order of Subscribe calls
	auth      AuthFunc
	last      uint64 // last serial delivered; valid when delivered is set
	delivered bool
	sentGen   uint64 // gen of the connection the subscribe was sent on
}

// AuthFunc returns the auth value (and, for presence channels, the
// channel_data) for subscribing socketID to channel, as an app's auth
// endpoint would. It runs on the session's goroutine, once per subscribe
// (every reconnect included), and must return in bounded time: reading,
// resubscribing and Close wait for it.
type AuthFunc func(socketID, channel string) (auth, channelData string, err error)

// Event names a Session uses for what it reports about resume.
const (
	// EventResumeOK: the server replayed what the channel missed. Data is
	// {"from":F,"to":T,"replayed":N}.
	EventResumeOK = "herald:resume_ok"
	// EventResumeFailed: the server could not replay everything the channel
	// missed (reason "window_passed", "unavailable" or "disabled"). Data is
	// {"from":F,"reason":R,"first":S}. Events may be missing before the next
	// delivered one; the app should refetch the channel's state.
	EventResumeFailed = "herald:resume_failed"

	eventWireResumeOK     = "pusher_internal:resume_ok"
	eventWireResumeFailed = "pusher_internal:resume_failed"
)

// Errors of a Session.
var (
	// ErrSessionClosed is Err's answer after Close.
	ErrSessionClosed = errors.New("client: session closed")
	// ErrPongTimeout ends a connection whose server did not answer a
	// pusher:ping within SessionOptions.PongTimeout; the session redials.
	ErrPongTimeout = errors.New("client: pong timeout")
)

// Defaults for SessionOptions; a zero field means the default.
const (
	DefaultSessionQueueSize = 1024
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 2 * time.Second
	DefaultActivityTimeout  = 120 * time.Second
	DefaultPongTimeout      = 30 * time.Second

	// sessionStable is how long a connection must have lived for its end
	// to reset the backoff; a 4200-4299 close of a younger one backs off too.
	sessionStable = time.Second
	// overCapacityDelay is the least wait after a 4100-4199 close.
	overCapacityDelay = time.Second
)

// SessionOptions configure NewSession. The zero value is usable.
type SessionOptions struct {
	// Conn are the options of every connection (NoHandshakeWait is
	// ignored).
	Conn Options
	// ReplayFromStart subscribes channels that never delivered an event
	// with herald_resume 0: the server replays everything its window still
	// holds for the channel. Off, such channels subscribe plainly.
	ReplayFromStart bool
	// ResumeUnseen does what ReplayFromStart does, but only after a
	// reconnect: a channel subscribed on an earlier connection that has
	// delivered no event yet is subscribed with herald_resume 0, so the
	// events published while the session was away are replayed, together
	// with any older ones the server's window still holds for the channel
	// (none for a channel whose name is new, as in herald bench). Off, such
	// a channel subscribes plainly and misses those events.
	ResumeUnseen bool
	// Dial, when set, is called instead of client.Dial for every
	// connection attempt, on the session goroutine, with the URL the
	// session chose and the Conn options; ctx ends when the session is
	// closed. It must return a Conn or an error. It may count or time the
	// attempts, wait, or dial another URL (herald bench's failover scenario
	// does all three, bench/failover.go). The backoff of MinBackoff and
	// MaxBackoff still comes before each call: set both to a nanosecond to
	// leave the pacing to Dial.
	Dial func(ctx context.Context, url string, opt Options) (*Conn, error)
	// QueueSize is the capacity of Events. When it is full the session
	// stops reading, which pushes back on the server; a server that then
	// drops the connection is resumed from. Default 1024.
	QueueSize int
	// MinBackoff and MaxBackoff bound the wait between dial attempts:
	// it doubles from MinBackoff with each failure, up to MaxBackoff, with
	// jitter. Defaults 100ms and 2s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// ActivityTimeout is how long a silent connection waits before it sends
	// pusher:ping; the server's activity_timeout when that is shorter.
	// Default 120s.
	ActivityTimeout time.Duration
	// PongTimeout is how long a ping waits for any frame before the
	// connection is dropped and redialed. Default 30s.
	PongTimeout time.Duration
}

func (o SessionOptions) withDefaults() SessionOptions {
	o.Conn.NoHandshakeWait = false // a session needs the socket_id
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultSessionQueueSize
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.ActivityTimeout <= 0 {
		o.ActivityTimeout = DefaultActivityTimeout
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = DefaultPongTimeout
	}
	return o
}

// SessionStats counts what a Session did since it started.
type SessionStats struct {
	Connects     uint64 // handshakes completed
	DialFailures uint64 // dials that did not complete a handshake
	Delivered    uint64 // events handed to Events
	Duplicates   uint64 // channel events dropped: serial already delivered
	ResumeFailed uint64 // pusher_internal:resume_failed frames received
	Queued       int    // events waiting in Events now
}

type sessionCounters struct {
	connects, dialFailures, delivered, duplicates, resumeFailed atomic.Uint64
}

// NewSession starts a session that dials urls in turn (ws:// or wss://
// Pusher URLs such as ws://host:6001/app/KEY?protocol=7) and keeps one of
// them connected until Close. It returns at once; connecting happens in the
// background. urls must not be empty.
func NewSession(urls []string, opt SessionOptions) *Session {
	if len(urls) == 0 {
		panic("client: NewSession without URLs")
	}
	opt = opt.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		opt:      opt,
		events:   make(chan Event, opt.QueueSize),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		urls:     append([]string(nil), urls...),
		channels: make(map[string]*sessionChannel),
	}
	go s.run()
	return s
}

// Subscribe adds channel to the session: it is subscribed now if the session
// is connected, and again on every reconnect, with the last serial delivered
// as herald_resume. auth signs private and presence subscriptions; nil for
// public channels. Subscribing to a channel already in the session only
// replaces its AuthFunc.
func (s *Session) Subscribe(channel string, auth AuthFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.channels[channel]; ok {
		ch.auth = auth
		return
	}
	s.seq++
	s.channels[channel] = &sessionChannel{seq: s.seq, auth: auth}
	if s.wake != nil {
		s.wake()
	}
}

// Unsubscribe removes channel from the session and forgets its last serial;
// events already queued in Events stay there.
func (s *Session) Unsubscribe(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.channels[channel]
	if !ok {
		return
	}
	delete(s.channels, channel)
	if s.conn != nil && ch.sentGen == s.gen {
		s.unsubs = append(s.unsubs, channel)
		if s.wake != nil {
			s.wake()
		}
	}
}

// Events returns the channel the session delivers on (see Session). It is
// closed when the session ends: after Close, or when a server refuses the
// connection for good (see Err).
func (s *Session) Events() <-chan Event { return s.events }

// Err returns why the session ended: ErrSessionClosed after Close, the
// *CloseError of a refusal (close codes 4001-4099 and 4300-4399, a
// handshake pusher:error 4001-4099, 4000 on a wss:// URL), or nil while it
// runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stats returns the session's counters.
func (s *Session) Stats() SessionStats {
	return SessionStats{
		Connects:     s.stats.connects.Load(),
		DialFailures: s.stats.dialFailures.Load(),
		Delivered:    s.stats.delivered.Load(),
		Duplicates:   s.stats.duplicates.Load(),
		ResumeFailed: s.stats.resumeFailed.Load(),
		Queued:       len(s.events),
	}
}

// Reconnect drops the current connection, if there is one, as if it had
// been lost: the session delivers what the connection had queued, redials
// after the backoff and resumes every channel from the last serial it
// delivered, so nothing is missed or repeated. An app calls it, for
// instance, after EventResumeFailed with reason "unavailable", which
// docs/protocol-extensions.md lets a client retry. It drops the connection
// current when it runs, which may already be a newer one than the one an
// event came from.
func (s *Session) Reconnect() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.CloseNow()
	}
}

// Close ends the session: the connection is closed (with a close frame,
// waiting at most a second for the server's), Events is closed, and no
// goroutine of the session is left when Close returns. Events still queued
// stay readable. Idempotent.
func (s *Session) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		if s.err == nil {
			s.err = ErrSessionClosed
		}
		s.mu.Unlock()
		s.cancel()
	})
	<-s.done
}

// run is the session goroutine: dial, serve, wait, again.
func (s *Session) run() {
	defer close(s.done)
	defer close(s.events)
	failures := 0
	var delay time.Duration
	for {
		if !s.sleep(delay) {
			return
		}
		url := s.nextURL()
		dial := s.opt.Dial
		if dial == nil {
			dial = Dial
		}
		c, err := dial(s.ctx, url, s.opt.Conn)
		var lived time.Duration
		if err == nil {
			s.stats.connects.Add(1)
			start := time.Now()
			err = s.serve(c)
			lived = time.Since(start)
		} else {
			s.stats.dialFailures.Add(1)
		}
		if s.ctx.Err() != nil {
			return
		}
		if lived >= sessionStable {
			failures = 0
		}
		failures++
		var stop bool
		delay, stop = s.retryDelay(err, url, lived, failures)
		if stop {
			s.mu.Lock()
			if s.err == nil { // Close may have come first
				s.err = err
			}
			s.mu.Unlock()
			return
		}
	}
}

// sleep waits d; it reports false when the session was closed meanwhile.
func (s *Session) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Session) nextURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.urls[s.next%len(s.urls)]
	s.next++
	return u
}

// retryDelay applies the close-code ranges of the Pusher protocol
// (docs/protocol.md §1.7) to why a connection (or dial) ended: it returns how
// long to wait before the next dial, or stop for a refusal.
func (s *Session) retryDelay(err error, url string, lived time.Duration, failures int) (delay time.Duration, stop bool) {
	backoff := s.backoff(failures)
	var ce *CloseError
	if !errors.As(err, &ce) {
		if errors.Is(err, ErrPongTimeout) && lived >= sessionStable {
			return 0, false
		}
		return backoff, false
	}
	switch code := ce.Code; {
	case code == 4000: // TLS only: the same node over wss://
		return 0, !s.useTLS(url)
	case code > 4000 && code < 4100, code >= 4300 && code < 4400:
		return 0, true
	case code >= 4100 && code < 4200:
		return max(overCapacityDelay, backoff), false
	case code >= 4200 && code < 4300:
		if lived >= sessionStable {
			return 0, false
		}
		return backoff, false
	default: // 1000-3999 and 4400+: the connection ended, reconnect
		return backoff, false
	}
}

// backoff is the wait after the n-th consecutive failure (n ≥ 1): MinBackoff
// doubled n-1 times, capped at MaxBackoff, then jittered into [d/2, d].
func (s *Session) backoff(n int) time.Duration {
	d := s.opt.MinBackoff
	for i := 1; i < n && d < s.opt.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opt.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// useTLS rewrites url from ws:// to wss:// in the session's list. It
// reports false when url was not a ws:// URL (a 4000 over TLS is a refusal).
func (s *Session) useTLS(url string) bool {
	if !strings.HasPrefix(url, "ws://") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, u := range s.urls {
		if u == url {
			s.urls[i] = "wss://" + strings.TrimPrefix(u, "ws://")
		}
	}
	return true
}

// serve runs one connection until it ends, and returns why. It subscribes
// every channel of the session, then reads, delivers, answers Subscribe and
// Unsubscribe calls, and keeps the connection alive with pusher:ping.
func (s *Session) serve(c *Conn) (err error) {
	idle := s.opt.ActivityTimeout
	if t := c.ActivityTimeout(); t > 0 {
		idle = min(idle, t)
	}
	s.mu.Lock()
	s.conn = c
	s.gen++
	gen := s.gen
	s.unsubs = s.unsubs[:0]
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conn, s.wake = nil, nil
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			c.Close()
		} else {
			c.CloseNow()
		}
	}()

	var (
		received, checked uint64
		pingAt            time.Time
		deadline          = time.Now().Add(idle)
	)
	for {
		// One context per wait: Subscribe and Unsubscribe cancel it to wake
		// the loop, and its deadline is the keep-alive check.
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		s.mu.Lock()
		s.wake = cancel
		s.mu.Unlock()
		if err := s.sendPending(c, gen); err != nil {
			cancel()
			return err
		}
		for err == nil {
			var ev Event
			ev, err = c.Next(ctx)
			if err == nil {
				received++
				err = s.handle(ev)
			}
		}
		cancel()
		if ctx.Err() == nil || s.ctx.Err() != nil || !isContextErr(err) {
			return err
		}
		err = nil
		now := time.Now()
		switch {
		case now.Before(deadline): // woken by Subscribe or Unsubscribe
		case received != checked: // there was traffic
			checked, pingAt = received, time.Time{}
			deadline = now.Add(idle)
		case pingAt.IsZero():
			if err := c.Send(EventPing, "", struct{}{}); err != nil {
				return err
			}
			pingAt = now
			deadline = now.Add(s.opt.PongTimeout)
		default:
			return ErrPongTimeout
		}
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// subscribeRequest is what sendPending subscribes with.
type subscribeRequest struct {
	seq     uint64
	channel string
	auth    AuthFunc
	resume  *uint64
}

// resumeData is the data of a pusher:subscribe with the resume extension.
type resumeData struct {
	Auth         string  `json:"auth"`
	Channel      string  `json:"channel"`
	ChannelData  string  `json:"channel_data,omitempty"`
	HeraldResume *uint64 `json:"herald_resume,omitempty"`
}

// sendPending sends the unsubscribes queued by Unsubscribe, then subscribes
// every channel not yet subscribed on connection gen, in the order they were
// added. It returns an error
// only when c cannot be written to.
func (s *Session) sendPending(c *Conn, gen uint64) error {
	s.mu.Lock()
	unsubs := s.unsubs
	s.unsubs = nil
	var reqs []subscribeRequest
	for name, ch := range s.channels {
		if ch.sentGen == gen {
			continue
		}
		resubscribe := ch.sentGen != 0 // subscribed on an earlier connection
		ch.sentGen = gen
		r := subscribeRequest{seq: ch.seq, channel: name, auth: ch.auth}
		switch {
		case ch.delivered:
			r.resume = new(ch.last)
		case s.opt.ReplayFromStart, s.opt.ResumeUnseen && resubscribe:
			r.resume = new(uint64(0))
		}
		reqs = append(reqs, r)
	}
	s.mu.Unlock()
	slices.SortFunc(reqs, func(a, b subscribeRequest) int { return cmp.Compare(a.seq, b.seq) })

	for _, name := range unsubs {
		if err := c.Unsubscribe(name); err != nil {
			return err
		}
	}
	for _, r := range reqs {
		d := resumeData{Channel: r.channel, HeraldResume: r.resume}
		if r.auth != nil {
			var err error
			d.Auth, d.ChannelData, err = r.auth(c.SocketID(), r.channel)
			if err != nil {
				if err := s.deliver(authError(r.channel, err)); err != nil {
					return err
				}
				continue
			}
		}
		if err := c.Send(EventSubscribe, "", d); err != nil {
			return err
		}
	}
	return nil
}

// authError is the pusher:subscription_error pusher-js reports when its
// authorizer fails.
func authError(channel string, err error) Event {
	data, _ := json.Marshal(map[string]string{"type": "AuthError", "error": err.Error()})
	raw, _ := json.Marshal(map[string]any{
		"event": EventSubscriptionError, "channel": channel, "data": string(data),
	})
	return Event{Event: EventSubscriptionError, Channel: channel, Data: string(data), Raw: raw, Received: time.Now()}
}

// handle looks at one frame: it delivers what belongs to the app, drops
// duplicates, and returns an error when the connection must end.
func (s *Session) handle(ev Event) error {
	if ev.Channel == "" {
		if ev.Event == EventError {
			return connectionError(ev)
		}
		return nil
	}
	switch ev.Event {
	case eventWireResumeOK:
		ev.Event = EventResumeOK
	case eventWireResumeFailed:
		ev.Event = EventResumeFailed
		s.stats.resumeFailed.Add(1)
	}
	s.mu.Lock()
	ch, ok := s.channels[ev.Channel]
	if ok && ev.Serial > 0 {
		if ch.delivered && ev.Serial <= ch.last {
			ok = false
			s.stats.duplicates.Add(1)
		} else {
			ch.last, ch.delivered = ev.Serial, true
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return s.deliver(ev)
}

// connectionError returns the error that ends the connection for a
// pusher:error without a channel whose code is 4100-4299 (the server closes
// the connection after it; the session does not wait for that), and nil for
// the others: 4000-4099 are acted on when the close frame that follows
// arrives (Herald also sends 4009 alone, for a refused pusher:signin, and
// the connection stays open), 4300-4399 and null codes are reports.
func connectionError(ev Event) error {
	code, msg := parsePusherError(ev.Data)
	if code >= 4100 && code < 4300 {
		return &CloseError{Code: code, Reason: msg}
	}
	return nil
}

// deliver hands ev to the app, waiting while Events is full.
func (s *Session) deliver(ev Event) error {
	select {
	case s.events <- ev:
		s.stats.delivered.Add(1)
		return nil
	case <-s.ctx.Done():
		return ErrSessionClosed
	}
}
