package protocol

import (
	"encoding/json"
	"strconv"
)

// Message is one decoded client -> server frame (docs/protocol.md §1.2).
type Message struct {
	// Event is the non-empty "event" string.
	Event string
	// Channel is the "channel" string, or "" when absent or null.
	Channel string
	// Data is the raw JSON of "data" (whitespace around it trimmed), or nil
	// when absent. It is a copy: it does not alias the decoded frame.
	Data json.RawMessage
}

// errInvalidMessage is the reply to frames that are not a Pusher message.
func errInvalidMessage() error {
	return &Error{Message: "Invalid message format"}
}

// DecodeMessage parses one client frame: a single JSON object with a
// non-empty string "event", an optional string (or null) "channel" and an
// optional "data" of any JSON type. Keys match exactly (case-sensitive); for
// a repeated key the last one wins; other keys are ignored. Anything else
// (not JSON, not an object, trailing data, missing or non-string event)
// returns an *Error with Code 0 and message "Invalid message format".
//
// The result never aliases b. Well-known pusher:* event names are interned,
// so decoding a ping allocates only the copy of Data.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	var event, channel, data []byte
	err := eachField(b, func(key, val []byte) error {
		switch string(key) {
		case "event":
			event = val
		case "channel":
			channel = val
		case "data":
			data = val
		}
		return nil
	})
	if err != nil || event == nil {
		return Message{}, errInvalidMessage()
	}
	if m.Event, err = decodeEventName(event); err != nil || m.Event == "" {
		return Message{}, errInvalidMessage()
	}
	if m.Channel, err = decodeOptString(channel); err != nil {
		return Message{}, errInvalidMessage()
	}
	if data != nil {
		m.Data = append(json.RawMessage(nil), data...)
	}
	return m, nil
}

// decodeEventName decodes a raw event string, returning interned strings
// for the events clients send most.
func decodeEventName(v []byte) (string, error) {
	if len(v) >= 2 && v[0] == '"' {
		switch string(v[1 : len(v)-1]) {
		case EventPing:
			return EventPing, nil
		case EventPong:
			return EventPong, nil
		case EventSubscribe:
			return EventSubscribe, nil
		case EventUnsubscribe:
			return EventUnsubscribe, nil
		case EventSignin:
			return EventSignin, nil
		}
	}
	return decodeString(v)
}

// Event names of the Pusher protocol.
const (
	EventConnectionEstablished = "pusher:connection_established"
	EventError                 = "pusher:error"
	EventPing                  = "pusher:ping"
	EventPong                  = "pusher:pong"
	EventSubscribe             = "pusher:subscribe"
	EventUnsubscribe           = "pusher:unsubscribe"
	EventSignin                = "pusher:signin"
	EventSigninSuccess         = "pusher:signin_success"
	EventCacheMiss             = "pusher:cache_miss"
	EventSubscriptionError     = "pusher:subscription_error"
	EventSubscriptionSucceeded = "pusher_internal:subscription_succeeded"
	EventMemberAdded           = "pusher_internal:member_added"
	EventMemberRemoved         = "pusher_internal:member_removed"
	EventSubscriptionCount     = "pusher_internal:subscription_count"
	EventWatchlistEvents       = "pusher_internal:watchlist_events"

	// ClientEventPrefix starts the names of client events
	// (docs/protocol.md §5.1).
	ClientEventPrefix = "client-"
)

// SubscribeData is the data of a pusher:subscribe message
// (docs/protocol.md §2.3).
type SubscribeData struct {
	// Channel is the channel name (non-empty; not yet validated).
	Channel string
	// Auth is "<key>:<signature>", or "" when absent, null or empty.
	Auth string
	// ChannelData is the presence channel_data string exactly as received
	// (after JSON string decoding), or "" when absent or null. It is covered
	// byte-for-byte by the signature, so it must not be re-serialized.
	ChannelData string
	// Resume is herald_resume, the last serial the client saw on the channel
	// (docs/protocol-extensions.md); meaningful only when HasResume.
	Resume    uint64
	HasResume bool
}

// DecodeSubscribe parses pusher:subscribe's data, given as a JSON object or
// as a JSON string containing one (docs/protocol.md §1.2). channel must be a
// non-empty string; auth and channel_data must be strings, null or absent.
// Errors are *Error with Code 0.
func DecodeSubscribe(data json.RawMessage) (SubscribeData, error) {
	var d SubscribeData
	var channel, auth, channelData, resume []byte
	err := eachDataField(data, func(key, val []byte) error {
		switch string(key) {
		case "channel":
			channel = val
		case "auth":
			auth = val
		case "channel_data":
			channelData = val
		case "herald_resume":
			resume = val
		}
		return nil
	})
	if err != nil {
		return SubscribeData{}, invalidData(EventSubscribe, "not a JSON object")
	}
	if d.Channel, err = decodeOptString(channel); err != nil || d.Channel == "" {
		return SubscribeData{}, invalidData(EventSubscribe, "channel must be a non-empty string")
	}
	if d.Auth, err = decodeOptString(auth); err != nil {
		return SubscribeData{}, invalidData(EventSubscribe, "auth must be a string")
	}
	if d.ChannelData, err = decodeOptString(channelData); err != nil {
		return SubscribeData{}, invalidData(EventSubscribe, "channel_data must be a string")
	}
	if resume != nil && !isNull(resume) {
		n, err := strconv.ParseUint(string(resume), 10, 64)
		if err != nil {
			return SubscribeData{}, invalidData(EventSubscribe, "herald_resume must be a non-negative integer")
		}
		d.Resume, d.HasResume = n, true
	}
	return d, nil
}

// DecodeUnsubscribe returns the channel named by pusher:unsubscribe's data
// (a JSON object or a JSON string containing one). The channel must be a
// non-empty string. Errors are *Error with Code 0.
func DecodeUnsubscribe(data json.RawMessage) (string, error) {
	var channel []byte
	err := eachDataField(data, func(key, val []byte) error {
		if string(key) == "channel" {
			channel = val
		}
		return nil
	})
	if err != nil {
		return "", invalidData(EventUnsubscribe, "not a JSON object")
	}
	ch, err := decodeOptString(channel)
	if err != nil || ch == "" {
		return "", invalidData(EventUnsubscribe, "channel must be a non-empty string")
	}
	return ch, nil
}

// SigninData is the data of a pusher:signin message (docs/protocol.md §4.1).
type SigninData struct {
	// Auth is "<key>:<signature>".
	Auth string
	// UserData is the signed user_data string exactly as received (after
	// JSON string decoding); parse it with ParseUserData after verifying.
	UserData string
}

// DecodeSignin parses pusher:signin's data, a JSON object (or a JSON string
// containing one) with string auth and user_data; both are required and
// non-empty. Errors are *Error with Code 0.
func DecodeSignin(data json.RawMessage) (SigninData, error) {
	var d SigninData
	var auth, userData []byte
	err := eachDataField(data, func(key, val []byte) error {
		switch string(key) {
		case "auth":
			auth = val
		case "user_data":
			userData = val
		}
		return nil
	})
	if err != nil {
		return SigninData{}, invalidData(EventSignin, "not a JSON object")
	}
	if d.Auth, err = decodeOptString(auth); err != nil || d.Auth == "" {
		return SigninData{}, invalidData(EventSignin, "auth must be a non-empty string")
	}
	if d.UserData, err = decodeOptString(userData); err != nil || d.UserData == "" {
		return SigninData{}, invalidData(EventSignin, "user_data must be a non-empty string")
	}
	return d, nil
}

// eachDataField runs eachField over data, unwrapping a string-encoded object.
func eachDataField(data []byte, fn func(key, val []byte) error) error {
	obj, err := unwrapObject(data)
	if err != nil {
		return err
	}
	return eachField(obj, fn)
}

func invalidData(event, why string) error {
	return &Error{Message: "Invalid " + event + " data: " + why}
}
