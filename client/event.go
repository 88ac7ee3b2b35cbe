package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Pusher event names the client itself interprets.
const (
	EventConnectionEstablished = "pusher:connection_established"
	EventError                 = "pusher:error"
	EventPing                  = "pusher:ping"
	EventPong                  = "pusher:pong"
	EventSubscribe             = "pusher:subscribe"
	EventUnsubscribe           = "pusher:unsubscribe"
	EventSubscriptionError     = "pusher:subscription_error"
	EventSubscriptionSucceeded = "pusher_internal:subscription_succeeded"
)

// Errors returned by Conn. They carry the package prefix so that callers can
// match them with errors.Is.
var (
	// ErrClosed is returned by Conn methods once Close or CloseNow was called
	// (and by Next once the events received before that are consumed).
	ErrClosed = errors.New("client: connection closed")
	// ErrTooManyPending is returned by WaitFor and Subscribe when keeping the
	// events they skip would exceed Options.MaxPending.
	ErrTooManyPending = errors.New("client: too many pending events")
)

// Event is one server->client frame.
//
// Data is the "data" value: for string-encoded data (Pusher's double
// encoding) the decoded string's raw text; for object data (or any other
// non-string JSON value) the raw JSON text; "" when the frame has no data key.
// Raw is the whole frame as received; it is owned by the Event and never
// reused by the client. Serial is the optional "serial" field (0 if absent).
// Received is when the reader goroutine had read the whole frame, before it
// queued it (for the pusher:subscription_error a Session makes up when an
// AuthFunc fails, when it made it): latency measurements (herald bench) use
// it, so that the time an event waited in the queue or in a Session does not
// count.
//
// A frame that is not a JSON object is still delivered, with every field but
// Raw and Received empty, so that tests can see malformed server output.
type Event struct {
	Event    string
	Channel  string
	Data     string
	UserID   string
	Serial   uint64
	Raw      []byte
	Received time.Time
}

// wireEvent is the envelope as decoded from JSON. Every field is kept raw so
// that one wrongly typed field does not hide the others.
type wireEvent struct {
	Event   json.RawMessage `json:"event"`
	Channel json.RawMessage `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  json.RawMessage `json:"user_id"`
	Serial  json.RawMessage `json:"serial"`
}

// fastEvent is the envelope as servers send it: string event, channel and
// user_id. Decoding into it costs about half of wireEvent.
type fastEvent struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
	Serial  json.RawMessage `json:"serial"`
}

// decodeEvent decodes one text frame. It takes ownership of frame (it becomes
// Event.Raw). It never fails: what cannot be decoded is left empty.
func decodeEvent(frame []byte) Event {
	ev := Event{Raw: frame}
	var f fastEvent
	if json.Unmarshal(frame, &f) == nil {
		ev.Event, ev.Channel, ev.UserID = f.Event, f.Channel, f.UserID
		ev.Data = stringValue(f.Data)
		ev.Serial = serialValue(f.Serial)
		return ev
	}
	// Some field has an unexpected type (or the frame is not JSON): decode
	// every field on its own.
	var w wireEvent
	if json.Unmarshal(frame, &w) != nil {
		return ev
	}
	ev.Event = stringValue(w.Event)
	ev.Channel = stringValue(w.Channel)
	ev.Data = stringValue(w.Data)
	ev.UserID = stringValue(w.UserID)
	ev.Serial = serialValue(w.Serial)
	return ev
}

// stringValue returns the decoded text of a JSON string, and the raw JSON text
// of any other value ("" when absent).
func stringValue(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

// serialValue accepts a JSON number or a string holding one; anything else
// is 0.
func serialValue(raw json.RawMessage) uint64 {
	s := string(bytes.Trim(raw, `"`))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// pusherErrorData is the data of a pusher:error frame:
// {"code":4001,"message":"..."}; code may be null.
type pusherErrorData struct {
	Code    *int   `json:"code"`
	Message string `json:"message"`
}

func parsePusherError(data string) (code int, message string) {
	var d pusherErrorData
	if json.Unmarshal([]byte(data), &d) != nil {
		return 0, data
	}
	if d.Code != nil {
		code = *d.Code
	}
	return code, d.Message
}

// CloseError reports how the server ended a connection: the code and reason
// of a WebSocket close frame, or, during Dial, the code and message of a
// pusher:error received instead of pusher:connection_established (Code is 0
// when the pusher:error had "code":null).
//
// Code 1005 means a close frame without a status code. Code 1006 means the
// connection was lost without any close frame (RFC 6455 section 7.1.5); the
// Reason then describes the underlying error.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: connection closed by server: %d %s", e.Code, e.Reason)
}

// SubscriptionError reports a subscription the server refused, either with a
// pusher:error (Pusher's behaviour; Code is data.code, 0 for null) or with a
// channel-scoped pusher:subscription_error (soketi's behaviour; Code is
// data.status, Type is data.type, Message is data.error).
type SubscriptionError struct {
	Channel string
	Code    int
	Type    string
	Message string
	Event   Event // the frame that refused the subscription
}

func (e *SubscriptionError) Error() string {
	return fmt.Sprintf("client: subscribe %q: %s %d %s",
		e.Channel, e.Event.Event, e.Code, e.Message)
}

// subscriptionErrorData is the data of a pusher:subscription_error frame.
type subscriptionErrorData struct {
	Type   string `json:"type"`
	Error  string `json:"error"`
	Status int    `json:"status"`
}

func newSubscriptionError(channel string, ev Event) *SubscriptionError {
	e := &SubscriptionError{Channel: channel, Event: ev}
	if ev.Event == EventError {
		e.Code, e.Message = parsePusherError(ev.Data)
		return e
	}
	var d subscriptionErrorData
	if json.Unmarshal([]byte(ev.Data), &d) != nil {
		e.Message = ev.Data
		return e
	}
	e.Code, e.Type, e.Message = d.Status, d.Type, d.Error
	return e
}

// established is the data of pusher:connection_established.
type established struct {
	SocketID        string `json:"socket_id"`
	ActivityTimeout int    `json:"activity_timeout"`
}
