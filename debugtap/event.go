package debugtap

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"herald/lifecycle"
	"herald/protocol"
)

// Kind is what a debug event reports.
type Kind string

// The debug event kinds (docs/console.md lists their fields).
const (
	KindConnected        Kind = "connection_opened"
	KindClosed           Kind = "connection_closed" // Code and Reason: the close code and its text
	KindSubscribed       Kind = "subscribed"
	KindSubscribeRefused Kind = "subscribe_refused" // Reason: the error type and text; Code: its status
	KindUnsubscribed     Kind = "unsubscribed"
	KindRESTPublish      Kind = "rest_publish"    // an event stored through the REST API
	KindNATSPublish      Kind = "nats_publish"    // through the NATS API (docs/nats.md)
	KindConsolePublish   Kind = "console_publish" // through the console's event creator
	KindClientEvent      Kind = "client_event"
	KindMemberAdded      Kind = "member_added" // presence; UserID, Payload: user_info
	KindMemberRemoved    Kind = "member_removed"
	KindOccupied         Kind = "channel_occupied"
	KindVacated          Kind = "channel_vacated"
	KindResume           Kind = "resume"       // Reason: outcome; Count: events replayed; Serial: resumed after
	KindWebhookSent      Kind = "webhook_sent" // URL, Status, Count: events in the batch
	KindWebhookFailed    Kind = "webhook_failed"
)

// Event is one debug event, as it is published and streamed (JSON). The
// first six fields are always present; the others when they apply.
type Event struct {
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`
	Kind      Kind      `json:"kind"`
	App       string    `json:"app"`
	Channel   string    `json:"channel"`
	SocketID  string    `json:"socket_id"`
	Event     string    `json:"event,omitempty"`
	Size      int       `json:"size,omitempty"`    // the whole payload's bytes
	Payload   string    `json:"payload,omitempty"` // at most Config.MaxPayload bytes of it
	Truncated bool      `json:"truncated,omitempty"`
	Code      int       `json:"code,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	UserID    string    `json:"user_id,omitempty"`
	Count     int       `json:"count,omitempty"`
	Serial    uint64    `json:"serial,omitempty"`
	URL       string    `json:"url,omitempty"`
	Status    int       `json:"status,omitempty"`
	Sample    int       `json:"sample,omitempty"` // > 1: one event in Sample of this node's was kept
}

// Line is the event on one line, as `herald tap` prints it.
func (e *Event) Line() string {
	var b strings.Builder
	b.WriteString(e.Time.Format("15:04:05.000"))
	for _, f := range []string{e.Node, string(e.Kind), dash(e.Channel), dash(e.SocketID)} {
		b.WriteByte(' ')
		b.WriteString(f)
	}
	if e.Event != "" {
		b.WriteString(" event=" + e.Event)
	}
	if e.UserID != "" {
		b.WriteString(" user=" + strconv.Quote(e.UserID))
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, " code=%d", e.Code)
	}
	if e.Reason != "" {
		b.WriteString(" reason=" + strconv.Quote(e.Reason))
	}
	if e.Kind == KindResume {
		fmt.Fprintf(&b, " after=%d replayed=%d", e.Serial, e.Count)
	}
	if e.URL != "" {
		fmt.Fprintf(&b, " url=%s status=%d events=%d", e.URL, e.Status, e.Count)
	}
	if e.Size > 0 {
		fmt.Fprintf(&b, " size=%d", e.Size)
	}
	if e.Payload != "" {
		b.WriteString(" payload=" + e.Payload)
		if e.Truncated {
			b.WriteString("…")
		}
	}
	if e.Sample > 1 {
		fmt.Fprintf(&b, " (1 in %d)", e.Sample)
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// The hooks. Each is safe for concurrent use, never blocks, and costs one
// atomic load when nothing is watched on this node. Arguments are passed
// as the caller has them (a SocketID value, a byte slice) so that the
// unwatched path converts and copies nothing; a watched hook copies what it
// keeps, so callers may reuse their buffers at once.

// newEvent returns the event to fill when (app, channel) is watched and
// the sampler keeps it, or nil.
func (t *Tap) newEvent(ws *watchSet, kind Kind, app, channel string, id protocol.SocketID) *Event {
	if !ws.wants(app, channel) {
		return nil
	}
	every, ok := t.admit()
	if !ok {
		return nil
	}
	e := &Event{Time: time.Now(), Kind: kind, App: app, Channel: channel, Sample: every}
	if !id.IsZero() {
		e.SocketID = id.String()
	}
	if e.Sample <= 1 {
		e.Sample = 0
	}
	return e
}

// setPayload keeps at most MaxPayload bytes of p, copied.
func (t *Tap) setPayload(e *Event, p []byte) {
	e.Size = len(p)
	if len(p) > t.cfg.MaxPayload {
		p, e.Truncated = p[:t.cfg.MaxPayload], true
	}
	e.Payload = string(p)
}

func (t *Tap) setPayloadString(e *Event, s string) {
	e.Size = len(s)
	if len(s) > t.cfg.MaxPayload {
		s, e.Truncated = s[:t.cfg.MaxPayload], true
	}
	e.Payload = strings.Clone(s)
}

// Connected: a WebSocket was accepted and got its socket id.
func (t *Tap) Connected(app string, id protocol.SocketID) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindConnected, app, "", id); e != nil {
			t.enqueue(e)
		}
	}
}

// Closed: a connection began closing with code and reason (1006: it went
// without a closing handshake). id is zero for connections refused before
// they got one (over quota).
func (t *Tap) Closed(app string, id protocol.SocketID, code int, reason string) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindClosed, app, "", id); e != nil {
			e.Code, e.Reason = code, strings.Clone(reason)
			t.enqueue(e)
		}
	}
}

// Subscribed: a subscription succeeded; user is the presence member.
func (t *Tap) Subscribed(app, channel string, id protocol.SocketID, user string) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindSubscribed, app, channel, id); e != nil {
			e.UserID = strings.Clone(user)
			t.enqueue(e)
		}
	}
}

// Refused: a subscription was refused with an error type ("AuthError"),
// its message and status.
func (t *Tap) Refused(app, channel string, id protocol.SocketID, typ, message string, status int) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindSubscribeRefused, app, channel, id); e != nil {
			e.Reason, e.Code = typ+": "+message, status
			t.enqueue(e)
		}
	}
}

// Unsubscribed: the client unsubscribed (not sent for a closing socket's
// subscriptions: its connection_closed says it).
func (t *Tap) Unsubscribed(app, channel string, id protocol.SocketID) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindUnsubscribed, app, channel, id); e != nil {
			t.enqueue(e)
		}
	}
}

// Published: an event was stored on channel through the API kind names
// (KindRESTPublish, KindNATSPublish, KindConsolePublish); exclude is the
// socket_id it is not delivered to.
func (t *Tap) Published(kind Kind, app, channel, event, data, exclude string) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, kind, app, channel, protocol.SocketID{}); e != nil {
			e.Event, e.SocketID = strings.Clone(event), strings.Clone(exclude)
			t.setPayloadString(e, data)
			t.enqueue(e)
		}
	}
}

// ClientEvent: a client event from socket id was relayed on channel.
func (t *Tap) ClientEvent(app, channel, event string, id protocol.SocketID, data []byte) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindClientEvent, app, channel, id); e != nil {
			e.Event = strings.Clone(event)
			t.setPayload(e, data)
			t.enqueue(e)
		}
	}
}

// Resume: a subscription's resume after serial ended with outcome ("ok",
// "window_passed", "disabled", "unavailable") having replayed n events.
func (t *Tap) Resume(app, channel string, id protocol.SocketID, outcome string, after uint64, n int) {
	if t == nil {
		return
	}
	if ws := t.watch.Load(); ws != nil {
		if e := t.newEvent(ws, KindResume, app, channel, id); e != nil {
			e.Reason, e.Serial, e.Count = outcome, after, n
			t.enqueue(e)
		}
	}
}

// Lifecycle is a lifecycle.Consumer (node subscribes it): presence members
// and channel occupancy, once per cluster, from the channel's owner. It
// runs under the presence registry's lock and does not block.
func (t *Tap) Lifecycle(ev lifecycle.Event) {
	if t == nil {
		return
	}
	ws := t.watch.Load()
	if ws == nil {
		return
	}
	var kind Kind
	switch ev.Kind {
	case lifecycle.MemberAdded:
		kind = KindMemberAdded
	case lifecycle.MemberRemoved:
		kind = KindMemberRemoved
	case lifecycle.ChannelOccupied:
		kind = KindOccupied
	case lifecycle.ChannelVacated:
		kind = KindVacated
	default:
		return // subscription counts: too chatty for a log, on the stats panel instead
	}
	if e := t.newEvent(ws, kind, ev.App, ev.Channel, protocol.SocketID{}); e != nil {
		e.UserID = ev.UserID
		if len(ev.UserInfo) > 0 {
			t.setPayload(e, ev.UserInfo)
		}
		if kind == KindOccupied || kind == KindVacated {
			e.Count = ev.Subscriptions
		}
		t.enqueue(e)
	}
}

// Delivery is one webhook request as the webhook sender reports it to
// Webhook.
type Delivery struct {
	App      string
	URL      string
	Channels []string // the channels of the batch's events (the first names the debug event)
	Events   []string // the batch's event names ("channel_occupied", "member_added", ...)
	Body     []byte   // the JSON body sent (kept up to MaxPayload)
	Status   int      // the receiver's HTTP status; 0 when none came back
	Err      error    // nil: delivered (2xx); else why it failed (this attempt)
	Attempt  int      // 1 for the first try
}

// Webhook reports one webhook delivery attempt: webhook_sent, or
// webhook_failed with Err's text. The webhook sender calls it after every
// attempt (docs/console.md, "Webhooks"); it never blocks.
func (t *Tap) Webhook(d Delivery) {
	if t == nil {
		return
	}
	ws := t.watch.Load()
	if ws == nil {
		return
	}
	channel := ""
	for _, ch := range d.Channels {
		if ws.wants(d.App, ch) {
			channel = ch
			break
		}
	}
	if channel == "" && !ws.wants(d.App, "") {
		return
	}
	kind := KindWebhookSent
	if d.Err != nil {
		kind = KindWebhookFailed
	}
	if e := t.newEvent(ws, kind, d.App, channel, protocol.SocketID{}); e != nil {
		e.URL, e.Status, e.Count, e.Code = d.URL, d.Status, len(d.Events), d.Attempt
		e.Event = strings.Join(d.Events, ",")
		if d.Err != nil {
			e.Reason = d.Err.Error()
		}
		t.setPayload(e, d.Body)
		t.enqueue(e)
	}
}
