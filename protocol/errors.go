package protocol

import (
	"strconv"
)

// Error is a Pusher protocol error reported to a WebSocket client, either in a
// pusher:error frame or as a close code and reason.
//
// Code 0 means "no code": it is rendered as JSON null in pusher:error frames,
// which is what Pusher sends for per-request failures on an open connection
// (bad subscription auth, duplicate subscription, ...). Non-zero codes are
// the close codes below; their ranges decide what pusher-js does next.
type Error struct {
	Code    int
	Message string
}

// Error returns e.Message unchanged, so the text can be sent to a client as
// is; the code is available as e.Code.
func (e *Error) Error() string { return e.Message }

// Pusher close and error codes (docs/protocol.md §1.7). The range decides the
// client's reconnect behaviour:
//
//   - 4000-4099: do not reconnect with the same parameters (pusher-js stops).
//   - 4100-4199: reconnect after a back-off of at least one second.
//   - 4200-4299: reconnect immediately.
//   - 4300-4399: any other error. Never use these as WebSocket close codes:
//     pusher-js treats them as "refused" and stops reconnecting. Send them
//     only inside pusher:error frames on an open connection.
const (
	CodeTLSOnly              = 4000 // app accepts TLS only; client retries over wss
	CodeAppNotFound          = 4001 // unknown app key
	CodeAppDisabled          = 4003 // app disabled
	CodeOverQuota            = 4004 // app over its connection quota
	CodePathNotFound         = 4005 // bad WebSocket path
	CodeInvalidVersion       = 4006 // malformed version query parameter
	CodeUnsupportedProtocol  = 4007 // protocol outside 5-7
	CodeNoProtocol           = 4008 // protocol parameter missing (strict mode)
	CodeUnauthorized         = 4009 // connection unauthorized / terminated by the app
	CodeOverCapacity         = 4100 // node overloaded or draining; back off
	CodeReconnect            = 4200 // generic "reconnect now" (shutdown, rebalancing)
	CodePongTimeout          = 4201 // keep-alive failure
	CodeClientEventRateLimit = 4301 // pusher:error only, never a close code
	CodeWatchlistLimit       = 4302 // pusher:error only, never a close code
	CodeSubscribeRateLimit   = 4303 // Herald's: subscribe/unsubscribe over apps[].subscribe_rate; pusher:error only
)

// CloseAction is what a Pusher client does after a close with a given code.
type CloseAction uint8

// Close actions, as pusher-js's getCloseAction maps close codes.
const (
	// ActionNone: not a Pusher code (below 4000 or above 4399).
	ActionNone CloseAction = iota
	// ActionTLSOnly: retry at once over TLS (4000).
	ActionTLSOnly
	// ActionRefused: do not reconnect (4001-4099, and 4300-4399).
	ActionRefused
	// ActionBackoff: reconnect after at least one second (4100-4199).
	ActionBackoff
	// ActionRetry: reconnect immediately (4200-4299).
	ActionRetry
)

// CodeAction returns the client's reaction to close code code, per the
// ranges documented on the Code constants.
func CodeAction(code int) CloseAction {
	switch {
	case code == CodeTLSOnly:
		return ActionTLSOnly
	case code > CodeTLSOnly && code < 4100:
		return ActionRefused
	case code >= 4100 && code < 4200:
		return ActionBackoff
	case code >= 4200 && code < 4300:
		return ActionRetry
	case code >= 4300 && code < 4400:
		return ActionRefused
	}
	return ActionNone
}

// HTTPError is a REST API failure. Status is the HTTP status code to answer
// with and Message the human-readable explanation.
type HTTPError struct {
	Status  int
	Message string
}

// Error returns the status and message, e.g. "401: Invalid signature ...".
func (e *HTTPError) Error() string {
	return strconv.Itoa(e.Status) + ": " + e.Message
}

// Body renders the response body exactly as
// {"error":"<message>","status":<status>}, with the message JSON-escaped.
// It allocates a new slice on every call.
func (e *HTTPError) Body() []byte {
	b := make([]byte, 0, len(e.Message)+32)
	b = append(b, `{"error":`...)
	b = AppendJSONString(b, e.Message)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	return append(b, '}')
}

// httpErr builds an *HTTPError; it keeps call sites short.
func httpErr(status int, msg string) *HTTPError {
	return &HTTPError{Status: status, Message: msg}
}
