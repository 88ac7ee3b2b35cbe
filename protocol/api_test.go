package protocol

import (
	"encoding/json"
	"time"
)

// Compile-time check that the exported API keeps the signatures other
// packages are written against. Changing one of these breaks callers.
var (
	_ func(*Error) string                                                               = (*Error).Error
	_ func(*HTTPError) string                                                           = (*HTTPError).Error
	_ func(*HTTPError) []byte                                                           = (*HTTPError).Body
	_ func(ChannelKind) string                                                          = ChannelKind.String
	_ func(string) (ChannelKind, bool)                                                  = Classify
	_ func(string, int) error                                                           = ValidateChannelName
	_ func(string) string                                                               = ServerToUserChannel
	_ func(string) (string, bool)                                                       = ServerToUserID
	_ func(SocketID) string                                                             = SocketID.String
	_ func(SocketID, []byte) []byte                                                     = SocketID.AppendTo
	_ func(string) (SocketID, error)                                                    = ParseSocketID
	_ func(string) bool                                                                 = ValidSocketID
	_ func(uint64) *SocketIDs                                                           = NewSocketIDs
	_ func(*SocketIDs) SocketID                                                         = (*SocketIDs).Next
	_ func([]byte) (Message, error)                                                     = DecodeMessage
	_ func(json.RawMessage) (SubscribeData, error)                                      = DecodeSubscribe
	_ func(json.RawMessage) (string, error)                                             = DecodeUnsubscribe
	_ func(json.RawMessage) (SigninData, error)                                         = DecodeSignin
	_ func([]byte, SocketID, int) []byte                                                = AppendConnectionEstablished
	_ func([]byte, int, string, string) []byte                                          = AppendError
	_ func([]byte) []byte                                                               = AppendPing
	_ func([]byte) []byte                                                               = AppendPong
	_ func([]byte, string, string) []byte                                               = AppendSubscriptionSucceeded
	_ func([]byte, string, string, string, string) []byte                               = AppendEvent
	_ func([]byte, string, string, []byte, string) []byte                               = AppendEventRaw
	_ func([]byte, string, string, string, int) []byte                                  = AppendSubscriptionError
	_ func([]byte, string) []byte                                                       = AppendJSONString
	_ func(string, string) string                                                       = Sign
	_ func(string, string, string) string                                               = ChannelStringToSign
	_ func(string, string, string, string, string, string) error                        = VerifyChannelAuth
	_ func(string, string) string                                                       = UserStringToSign
	_ func(string, string, string, string, string) error                                = VerifyUserAuth
	_ func(string, []byte) string                                                       = WebhookSignature
	_ func(string, bool) (string, error)                                                = CanonicalQuery
	_ func(string, string, string) string                                               = RESTStringToSign
	_ func(RESTRequest, string, string, time.Time) error                                = VerifyREST
	_ func(string, string, map[string]string, []byte, string, string, time.Time) string = SignREST
	_ func() Limits                                                                     = DefaultLimits
	_ func([]byte, Limits) (Trigger, error)                                             = DecodeTrigger
	_ func([]byte, Limits) ([]Trigger, error)                                           = DecodeBatch

	_ = Error{Code: 0, Message: ""}
	_ = HTTPError{Status: 0, Message: ""}
	_ = SocketID{Node: 0, Seq: 0}
	_ = Message{Event: "", Channel: "", Data: json.RawMessage(nil)}
	_ = SubscribeData{Channel: "", Auth: "", ChannelData: ""}
	_ = SigninData{Auth: "", UserData: ""}
	_ = RESTRequest{Method: "", Path: "", RawQuery: "", Body: []byte(nil)}
	_ = Limits{MaxDataBytes: 0, MaxChannels: 0, MaxBatch: 0, MaxEventName: 0, MaxChannelName: 0}
	_ = Trigger{Name: "", Data: "", Channels: []string(nil), SocketID: "", Info: []string(nil)}
	_ = [...]ChannelKind{Public, Private, Presence, Encrypted, ServerToUser}
	_ = [...]int{
		CodeTLSOnly, CodeAppNotFound, CodeAppDisabled, CodeOverQuota, CodePathNotFound, CodeInvalidVersion,
		CodeUnsupportedProtocol, CodeNoProtocol, CodeUnauthorized, CodeOverCapacity, CodeReconnect,
		CodePongTimeout, CodeClientEventRateLimit, CodeWatchlistLimit,
	}
	_ time.Duration = MaxTimestampSkew
	_               = [DefaultMaxChannelNameLength]struct{}{}
)

// The constant values are part of the wire protocol.
var _ = [1]struct{}{}[(CodeTLSOnly-4000)|(CodeAppNotFound-4001)|(CodeAppDisabled-4003)|(CodeOverQuota-4004)|
	(CodePathNotFound-4005)|(CodeInvalidVersion-4006)|(CodeUnsupportedProtocol-4007)|(CodeNoProtocol-4008)|
	(CodeUnauthorized-4009)|(CodeOverCapacity-4100)|(CodeReconnect-4200)|(CodePongTimeout-4201)|
	(CodeClientEventRateLimit-4301)|(CodeWatchlistLimit-4302)|(DefaultMaxChannelNameLength-200)|
	int(Public)|int(Private-1)|int(Presence-2)|int(Encrypted-3)|int(ServerToUser-4)]
