package protocol

import (
	"strconv"
	"strings"
)

// ChannelKind is the type of a channel, decided by its name prefix
// (docs/protocol.md §2.2).
type ChannelKind uint8

// Channel kinds. The cache feature is orthogonal and reported separately by
// Classify.
const (
	// Public channels need no auth (anything without a known prefix, and cache-).
	Public ChannelKind = iota
	// Private channels (private-, private-cache-) need a channel signature.
	Private
	// Presence channels (presence-, presence-cache-) need a signature over
	// socket id, channel and channel_data, and keep a member roster.
	Presence
	// Encrypted channels (private-encrypted-, private-encrypted-cache-) are
	// private channels whose data is end-to-end encrypted; the server never
	// reads it.
	Encrypted
	// ServerToUser is the internal "#server-to-user-<id>" channel: only a
	// connection signed in as <id> may subscribe.
	ServerToUser
)

// String returns a lowercase name for the kind ("public", "private",
// "presence", "encrypted", "server-to-user").
func (k ChannelKind) String() string {
	switch k {
	case Public:
		return "public"
	case Private:
		return "private"
	case Presence:
		return "presence"
	case Encrypted:
		return "encrypted"
	case ServerToUser:
		return "server-to-user"
	}
	return "ChannelKind(" + strconv.Itoa(int(k)) + ")"
}

// RequiresAuth reports whether subscribing needs a channel signature
// (private, presence and encrypted channels). ServerToUser channels need a
// signed-in user instead and report false.
func (k ChannelKind) RequiresAuth() bool {
	return k == Private || k == Presence || k == Encrypted
}

// DefaultMaxChannelNameLength is the default limit on channel name length in
// bytes: what the node and go SDKs allow (the docs say 164).
const DefaultMaxChannelNameLength = 200

// ServerToUserPrefix starts the internal per-user channel names.
const ServerToUserPrefix = "#server-to-user-"

// prefixKinds lists the typed prefixes in the order docs/protocol.md §2.2
// checks them.
var prefixKinds = [...]struct {
	prefix string
	kind   ChannelKind
	cache  bool
}{
	{"private-encrypted-cache-", Encrypted, true},
	{"private-encrypted-", Encrypted, false},
	{"private-cache-", Private, true},
	{"private-", Private, false},
	{"presence-cache-", Presence, true},
	{"presence-", Presence, false},
	{"cache-", Public, true},
}

// Classify returns the kind of the channel called name and whether it is a
// cache channel (docs/protocol.md §2.2). Prefixes are matched
// case-sensitively, dash included, in that order; "#server-to-user-<id>" with
// a non-empty id is ServerToUser; anything else is Public. Classify does not
// validate the name (see ValidateChannelName) and does not allocate.
func Classify(name string) (kind ChannelKind, cache bool) {
	for _, p := range prefixKinds {
		if strings.HasPrefix(name, p.prefix) {
			return p.kind, p.cache
		}
	}
	if _, ok := ServerToUserID(name); ok {
		return ServerToUser, false
	}
	return Public, false
}

// nameChars marks the bytes allowed in channel names: [A-Za-z0-9_\-=@,.;].
var nameChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-=@,.;" {
		t[c] = true
	}
	return t
}()

// validNameChars reports whether s is non-empty and made only of channel
// name characters.
func validNameChars(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChars[s[i]] {
			return false
		}
	}
	return true
}

// ValidateChannelName checks a channel name (docs/protocol.md §2.1):
// non-empty, at most maxLen bytes (maxLen <= 0 means
// DefaultMaxChannelNameLength), and made only of [A-Za-z0-9_\-=@,.;], except
// that "#server-to-user-<id>" is valid when <id> is non-empty and uses the
// same characters. It returns nil or an *Error with Code 0 and the message
// "Invalid channel name '<name>'" (or "Channel name too long: '<name>'"),
// ready to send in a pusher:error frame. It allocates only on failure.
func ValidateChannelName(name string, maxLen int) error {
	if maxLen <= 0 {
		maxLen = DefaultMaxChannelNameLength
	}
	if len(name) > maxLen {
		return &Error{Message: "Channel name too long: '" + name + "'"}
	}
	if validNameChars(name) {
		return nil
	}
	if id, ok := strings.CutPrefix(name, ServerToUserPrefix); ok && validNameChars(id) {
		return nil
	}
	return &Error{Message: "Invalid channel name '" + name + "'"}
}

// ServerToUserChannel returns the internal channel name of user userID,
// "#server-to-user-<userID>".
func ServerToUserChannel(userID string) string {
	return ServerToUserPrefix + userID
}

// ServerToUserID returns the user id of a "#server-to-user-<id>" channel and
// true, or "" and false when channel has another form or an empty id. It does
// not check the id's characters (ValidateChannelName does).
func ServerToUserID(channel string) (string, bool) {
	id, ok := strings.CutPrefix(channel, ServerToUserPrefix)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}
