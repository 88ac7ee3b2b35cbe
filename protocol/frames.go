package protocol

import (
	"strconv"
	"unicode/utf8"
)

// Server -> client frame builders. Each appends one complete JSON object to b
// and returns the extended slice; none allocates when b has enough spare
// capacity. Keys always come in the order event, channel, data, user_id, so
// output is stable for golden tests. Double encoding (docs/protocol.md §1.3)
// is applied where Pusher sends data as a JSON string.

// AppendConnectionEstablished appends the handshake frame
// (docs/protocol.md §1.4):
//
//	{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}
//
// activityTimeoutSeconds must be positive (pusher-js rejects 0); the caller
// owns that check.
func AppendConnectionEstablished(b []byte, id SocketID, activityTimeoutSeconds int) []byte {
	b = append(b, `{"event":"pusher:connection_established","data":"{\"socket_id\":\"`...)
	b = id.AppendTo(b)
	b = append(b, `\",\"activity_timeout\":`...)
	b = strconv.AppendInt(b, int64(activityTimeoutSeconds), 10)
	return append(b, `}"}`...)
}

// AppendError appends a pusher:error frame (docs/protocol.md §1.6):
//
//	{"event":"pusher:error","channel":"c","data":{"code":4001,"message":"..."}}
//
// code 0 is written as "code":null; channel "" omits the channel key.
func AppendError(b []byte, code int, message string, channel string) []byte {
	b = append(b, `{"event":"pusher:error",`...)
	if channel != "" {
		b = append(b, `"channel":`...)
		b = AppendJSONString(b, channel)
		b = append(b, ',')
	}
	b = append(b, `"data":{"code":`...)
	if code == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(code), 10)
	}
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, message)
	return append(b, "}}"...)
}

// AppendPing appends {"event":"pusher:ping","data":"{}"}.
func AppendPing(b []byte) []byte {
	return append(b, `{"event":"pusher:ping","data":"{}"}`...)
}

// AppendPong appends {"event":"pusher:pong","data":"{}"}.
func AppendPong(b []byte) []byte {
	return append(b, `{"event":"pusher:pong","data":"{}"}`...)
}

// AppendSubscriptionSucceeded appends (docs/protocol.md §2.4)
//
//	{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}
//
// data is a JSON text ("{}" for non-presence channels, the presence roster
// otherwise) that is written as a JSON string.
func AppendSubscriptionSucceeded(b []byte, channel string, data string) []byte {
	return AppendEvent(b, EventSubscriptionSucceeded, channel, data, "")
}

// AppendEvent appends {"event":E,"channel":C,"data":D} where D is data
// written as a JSON string, so the client receives the data string verbatim
// (docs/protocol.md §1.3: REST data is delivered as sent, string-encoded
// once). When userID is not "", ,"user_id":U is added; when channel is "",
// the channel key is omitted.
func AppendEvent(b []byte, event, channel, data, userID string) []byte {
	b = appendEventHead(b, event, channel)
	b = append(b, `,"data":`...)
	b = AppendJSONString(b, data)
	return appendEventTail(b, userID)
}

// AppendEventRaw is like AppendEvent, but dataJSON is already a JSON value
// (object, string, ...) and is copied verbatim: client events are relayed
// with data as received (docs/protocol.md §5.4). dataJSON must be valid JSON
// (e.g. Message.Data); nil or empty omits the data key.
func AppendEventRaw(b []byte, event, channel string, dataJSON []byte, userID string) []byte {
	b = appendEventHead(b, event, channel)
	if len(dataJSON) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, dataJSON...)
	}
	return appendEventTail(b, userID)
}

func appendEventHead(b []byte, event, channel string) []byte {
	b = append(b, `{"event":`...)
	b = AppendJSONString(b, event)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = AppendJSONString(b, channel)
	}
	return b
}

func appendEventTail(b []byte, userID string) []byte {
	if userID != "" {
		b = append(b, `,"user_id":`...)
		b = AppendJSONString(b, userID)
	}
	return append(b, '}')
}

// AppendSubscriptionError appends a channel-scoped subscription failure
// (soketi style, docs/protocol.md §2.6):
//
//	{"event":"pusher:subscription_error","channel":C,"data":{"type":T,"error":E,"status":S}}
func AppendSubscriptionError(b []byte, channel, typ, errText string, status int) []byte {
	b = appendEventHead(b, EventSubscriptionError, channel)
	b = append(b, `,"data":{"type":`...)
	b = AppendJSONString(b, typ)
	b = append(b, `,"error":`...)
	b = AppendJSONString(b, errText)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	return append(b, "}}"...)
}

// AppendSigninSuccess appends (docs/protocol.md §4.3)
//
//	{"event":"pusher:signin_success","data":{"user_data":"<userData>"}}
func AppendSigninSuccess(b []byte, userData string) []byte {
	b = append(b, `{"event":"pusher:signin_success","data":{"user_data":`...)
	b = AppendJSONString(b, userData)
	return append(b, "}}"...)
}

// AppendCacheMiss appends {"event":"pusher:cache_miss","channel":C} (no data
// key, docs/protocol.md §2.8).
func AppendCacheMiss(b []byte, channel string) []byte {
	return AppendEventRaw(b, EventCacheMiss, channel, nil, "")
}

// AppendMemberAdded appends pusher_internal:member_added
// (docs/protocol.md §2.7) with data the JSON string of
// {"user_id":<userIDJSON>,"user_info":<userInfoJSON>}. userIDJSON and
// userInfoJSON are raw JSON values (see PresenceMember); empty userInfoJSON
// omits user_info.
func AppendMemberAdded(b []byte, channel string, userIDJSON, userInfoJSON []byte) []byte {
	b = appendEventHead(b, EventMemberAdded, channel)
	b = append(b, `,"data":"{\"user_id\":`...)
	b = appendEscaped(b, userIDJSON)
	if len(userInfoJSON) > 0 {
		b = append(b, `,\"user_info\":`...)
		b = appendEscaped(b, userInfoJSON)
	}
	return append(b, `}"}`...)
}

// AppendMemberRemoved appends pusher_internal:member_removed
// (docs/protocol.md §2.7) with data the JSON string of
// {"user_id":<userIDJSON>}.
func AppendMemberRemoved(b []byte, channel string, userIDJSON []byte) []byte {
	b = appendEventHead(b, EventMemberRemoved, channel)
	b = append(b, `,"data":"{\"user_id\":`...)
	b = appendEscaped(b, userIDJSON)
	return append(b, `}"}`...)
}

// AppendSubscriptionCount appends pusher_internal:subscription_count
// (docs/protocol.md §2.9) with data the JSON string of
// {"subscription_count":n}.
func AppendSubscriptionCount(b []byte, channel string, n int) []byte {
	b = appendEventHead(b, EventSubscriptionCount, channel)
	b = append(b, `,"data":"{\"subscription_count\":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, `}"}`...)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal, quotes included
// (RFC 8259). Only '"', '\\' and control characters are escaped (\n, \r,
// \t, \b, \f short forms, \u00XX otherwise); '<', '>', '&' and non-ASCII
// characters are written as is; each byte of invalid UTF-8 becomes \ufffd.
// It does not allocate when b has room.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// AppendJSONStringBytes is AppendJSONString for a byte slice.
func AppendJSONStringBytes(b []byte, s []byte) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends the escaped content of a JSON string, without quotes.
func appendEscaped[T string | []byte](b []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscapedASCII(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

func appendEscapedASCII(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}
