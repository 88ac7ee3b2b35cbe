package gateway

import (
	"sync"
	"sync/atomic"

	"herald/protocol"
)

// The gateway's operator metrics: why sockets connect and close, what they
// subscribe to, how auth and resume go, per app what flows. Every counter is
// an atomic bumped where the thing happens (no lock, no allocation on a hot
// path; the per-app ones are one sync.Map read per message, not per
// delivery); node/metrics.go reads them at scrape time. Every label value
// comes from a fixed list here or is an app id, never a channel name.

// closeReason classifies why a socket closed or was refused: the bounded
// "reason" label of herald_connects_total and herald_disconnects_total.
type closeReason uint8

const (
	reasonNone          closeReason = iota // not closing yet; at release: the peer vanished
	reasonAccepted                         // connects only: upgraded and connection_established sent
	reasonNormal                           // the client closed (1000, 1001)
	reasonClientGone                       // no closing handshake: reset, EOF, write error, close timeout
	reasonProtocolError                    // the client broke RFC 6455 or the Pusher handshake rules (1002, 1003, 1007, 1009, 1010, 4005-4008)
	reasonSlowConsumer                     // the write queue overflowed (4100 from failSlowLocked)
	reasonAuth                             // unknown key (4001), unauthorized or terminated (4009)
	reasonAppDisabled                      // 4003
	reasonOverCapacity                     // connection quota (4004) or over capacity (4100)
	reasonDrain                            // reconnect elsewhere (4200)
	reasonTimeout                          // keep-alive (4201, 4202)
	reasonRateLimited                      // 4300-4399
	reasonOther                            // anything else (1011, unknown codes)
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone: "client_gone", reasonAccepted: "accepted", reasonNormal: "normal", reasonClientGone: "client_gone",
	reasonProtocolError: "protocol_error", reasonSlowConsumer: "slow_consumer", reasonAuth: "auth",
	reasonAppDisabled: "app_disabled", reasonOverCapacity: "over_capacity", reasonDrain: "drain",
	reasonTimeout: "timeout", reasonRateLimited: "rate_limited", reasonOther: "other",
}

// CloseReasons lists every reason label value, for dashboards and tests.
func CloseReasons() []string {
	var out []string
	for r := reasonAccepted; r < numReasons; r++ {
		out = append(out, reasonNames[r])
	}
	return out
}

// reasonOf classifies a close code.
func reasonOf(code int) closeReason {
	switch {
	case code == 1000 || code == 1001:
		return reasonNormal
	case code == 1006:
		return reasonClientGone
	case code == 1002 || code == 1003 || code == 1007 || code == 1009 || code == 1010,
		code >= protocol.CodePathNotFound && code <= protocol.CodeNoProtocol:
		return reasonProtocolError
	case code == protocol.CodeAppNotFound || code == protocol.CodeUnauthorized:
		return reasonAuth
	case code == protocol.CodeAppDisabled:
		return reasonAppDisabled
	case code == protocol.CodeOverQuota || code == protocol.CodeOverCapacity:
		return reasonOverCapacity
	case code == protocol.CodeReconnect:
		return reasonDrain
	case code == protocol.CodePongTimeout || code == 4202:
		return reasonTimeout
	case code >= 4300 && code <= 4399:
		return reasonRateLimited
	}
	return reasonOther
}

// subKind is the bounded "kind" label of subscriptions: the channel's kind,
// or cache for any cache channel.
type subKind uint8

const (
	kindPublic subKind = iota
	kindPrivate
	kindPresence
	kindEncrypted
	kindCache
	kindUser // #server-to-user-<id>
	numKinds
)

var kindNames = [numKinds]string{"public", "private", "presence", "encrypted", "cache", "user"}

func kindOf(name string) subKind {
	kind, cache := protocol.Classify(name)
	if cache {
		return kindCache
	}
	switch kind {
	case protocol.Private:
		return kindPrivate
	case protocol.Presence:
		return kindPresence
	case protocol.Encrypted:
		return kindEncrypted
	case protocol.ServerToUser:
		return kindUser
	}
	return kindPublic
}

// Auth failure kinds (the REST signature's is counted by api).
const (
	authChannel = iota // private, encrypted and presence subscriptions, #server-to-user
	authUser           // pusher:signin
	numAuth
)

// Resume outcomes: resume_ok, or resume_failed's reason.
const (
	resumeOK = iota
	resumeWindowPassed
	resumeDisabled
	resumeUnavailable
	numResume
)

var resumeNames = [numResume]string{"ok", "window_passed", "disabled", "unavailable"}

func resumeOutcome(reason string) int {
	for i, n := range resumeNames {
		if n == reason {
			return i
		}
	}
	return resumeUnavailable
}

type metrics struct {
	connects    [numReasons]atomic.Uint64
	disconnects [numReasons]atomic.Uint64
	subs        [numKinds]atomic.Int64
	subscribes  [numKinds]atomic.Uint64
	auth        [numAuth]atomic.Uint64
	resumes     [numResume]atomic.Uint64
	replayed    atomic.Uint64
	rereads     atomic.Uint64 // replays read again: short reads and repairs (resume.go)
	limits      limitCounters // refusals by limit (limits.go)
	apps        sync.Map      // app id -> *appMetrics
}

// appMetrics are one app's counters on this node; they outlive reloads.
type appMetrics struct {
	messagesIn atomic.Uint64
	deliveries atomic.Uint64
	members    atomic.Int64 // distinct presence members cluster-wide, as this node's registry sees them
}

func (m *metrics) app(id string) *appMetrics {
	if v, ok := m.apps.Load(id); ok {
		return v.(*appMetrics)
	}
	v, _ := m.apps.LoadOrStore(id, new(appMetrics))
	return v.(*appMetrics)
}

func (m *metrics) connected(ref *refusal) {
	if ref == nil {
		m.connects[reasonAccepted].Add(1)
		return
	}
	m.connects[reasonOf(ref.code)].Add(1)
}

// disconnected counts a released connection by the reason it was closed
// with; reasonNone means the peer went without a closing handshake.
func (m *metrics) disconnected(c *Conn) { m.disconnects[c.reason].Add(1) }

// Metrics is a snapshot of the gateway's operator metrics.
type Metrics struct {
	Connects      map[string]uint64 // by reason: accepted, or the refusal's class
	Disconnects   map[string]uint64 // by reason
	Subscriptions map[string]int64  // open subscriptions by kind
	Subscribes    map[string]uint64 // subscriptions made, by kind
	AuthFailures  map[string]uint64 // channel, user
	Resumes       map[string]uint64 // by outcome: ok, window_passed, disabled, unavailable
	Replayed      uint64            // events sent by resume replays
	ReplayRereads uint64            // replay reads made again: a read fell short of what the node had delivered, or a live event after a replay did not follow on (resume.go)
	Apps          map[string]AppMetrics
}

// AppMetrics are one app's figures on this node.
type AppMetrics struct {
	Connections     int64  // open connections counted against the app's limit
	MessagesIn      uint64 // Pusher messages received from its sockets
	Deliveries      uint64 // events queued to its sockets
	PresenceMembers int64  // distinct presence channel members, cluster-wide
}

// SubscriptionKinds lists the kind label values.
func SubscriptionKinds() []string { return kindNames[:] }

// Metrics returns the current figures; cheap enough for every scrape.
func (g *Gateway) Metrics() Metrics {
	m := &g.metrics
	s := Metrics{
		Connects: map[string]uint64{}, Disconnects: map[string]uint64{},
		Subscriptions: map[string]int64{}, Subscribes: map[string]uint64{},
		AuthFailures: map[string]uint64{"channel": m.auth[authChannel].Load(), "user": m.auth[authUser].Load()},
		Resumes:      map[string]uint64{}, Replayed: m.replayed.Load(), ReplayRereads: m.rereads.Load(),
		Apps: map[string]AppMetrics{},
	}
	for r := reasonNone; r < numReasons; r++ {
		name := reasonNames[r]
		if r != reasonAccepted {
			s.Disconnects[name] += m.disconnects[r].Load()
		}
		if r != reasonNone {
			s.Connects[name] += m.connects[r].Load()
		}
	}
	for k := range numKinds {
		s.Subscriptions[kindNames[k]] = m.subs[k].Load()
		s.Subscribes[kindNames[k]] = m.subscribes[k].Load()
	}
	for i, n := range resumeNames {
		s.Resumes[n] = m.resumes[i].Load()
	}
	m.apps.Range(func(k, v any) bool {
		a := v.(*appMetrics)
		s.Apps[k.(string)] = AppMetrics{MessagesIn: a.messagesIn.Load(), Deliveries: a.deliveries.Load(), PresenceMembers: a.members.Load()}
		return true
	})
	g.appConns.Range(func(k, v any) bool {
		a := s.Apps[k.(string)]
		a.Connections = v.(*atomic.Int64).Load()
		s.Apps[k.(string)] = a
		return true
	})
	return s
}

// subscribed counts a subscription made (delta 1) or ended (-1).
func (m *metrics) subscribed(channel string, delta int64) {
	k := kindOf(channel)
	m.subs[k].Add(delta)
	if delta > 0 {
		m.subscribes[k].Add(1)
	}
}

// member follows a presence member_added / member_removed transition.
func (m *metrics) member(app string, added bool) {
	if added {
		m.app(app).members.Add(1)
	} else {
		m.app(app).members.Add(-1)
	}
}
