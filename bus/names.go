package bus

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Subject scheme (the only place it is spelled out):
//
//	herald.<app>.msg.<tok>   stored: published into the app's stream HERALD_<app>
//	herald.<app>.live.<tok>  live: the stream republishes every stored message here
//	herald.<app>.cache.<tok> a cache channel's last event, in HERALD-CACHE_<app> (cache.go)
//	herald.<app>.presence.<tok> member events for NATS consumers (presence.go)
//	herald.<app>.api.<endpoint> the NATS publishing API (clientport.go, apiserve.go)
//	herald.sys.channels      cluster-wide channel queries between nodes (query.go)
//	herald.sys.webhooks.out.<app>.<target>.<part>  the webhook outbox, HERALD-WEBHOOKS (webhooks.go)
//	herald.sys.webhooks.dead.<app>.<target>        dead-lettered webhook events, HERALD-WEBHOOKS-DEAD (webhooks.go)
//	herald.sys.webhooks.pins  which delivery lanes each node's webhook sender holds pinned (webhook/pins.go)
//	herald.<app>.debug.<node> the debug events node produces for app (debug.go, docs/console.md)
//	herald.sys.debug.watch   console and tap interest, renewed while they stream (debug.go)
//	herald.sys.debug.stats   per-node figures for the console (debug.go)
//	herald.sys.debug.socket  the console's socket inspector (debug.go)
//
// <node> is a node name encoded like a channel token.
// <app> is an app id (^[A-Za-z0-9_-]{1,64}$), used as is. <tok> is the channel
// name encoded into one NATS subject token by EncodeChannel.
//
// The webhook state bucket (ledgerstate.go), a JetStream KV bucket named
// WebhookStateBucket, keys each channel as <app>.<key>, where <key> is the
// channel name encoded by EncodeKeyToken: KV keys allow fewer bytes than
// subject tokens do. The app registry, the KV bucket AppsBucket, keys each
// app by its id (appstore.go).
const (
	subjectRoot  = "herald."
	storedInfix  = ".msg."
	liveInfix    = ".live."
	streamPrefix = "HERALD_"
	maxAppLen    = 64

	// WebhookStateBucket is the JetStream KV bucket holding, per channel,
	// what its owner emitted as occupancy and presence webhook events
	// (ledgerstate.go, lifecycle/ledger.go).
	WebhookStateBucket = "HERALD_WEBHOOK_STATE"

	// AppsBucket is the JetStream KV bucket of the app registry
	// (apps_source: registry; appstore.go, docs/apps.md): one key per app
	// id, its app.Record as JSON.
	AppsBucket = "HERALD_APPS"

	// SysChannelsSubject carries cluster-wide channel queries: every node
	// answers from its own connections (query.go). Not reachable by app
	// users (clientport.go grants them herald.<app>.* only).
	SysChannelsSubject = "herald.sys.channels"

	// WebhookOutboxStream and WebhookDeadStream are the webhook streams
	// (webhooks.go). The "-" keeps them apart from every HERALD_<app>.
	WebhookOutboxStream = "HERALD-WEBHOOKS"
	WebhookDeadStream   = "HERALD-WEBHOOKS-DEAD"
	// WebhookPinsSubject: every node's webhook sender answers here with
	// the pins its delivery lanes hold (webhook/pins.go).
	WebhookPinsSubject = "herald.sys.webhooks.pins"
	webhookOutboxRoot  = "herald.sys.webhooks.out."
	webhookDeadRoot    = "herald.sys.webhooks.dead."
	// The debug console's node-to-node subjects (debug.go). Not reachable
	// by app users either.
	SysDebugWatchSubject  = "herald.sys.debug.watch"
	SysDebugStatsSubject  = "herald.sys.debug.stats"
	SysDebugSocketSubject = "herald.sys.debug.socket"
	debugInfix            = ".debug."
)

// Sentinel errors.
var (
	// ErrInvalidApp: the app id does not match ^[A-Za-z0-9_-]{1,64}$.
	ErrInvalidApp = errors.New("bus: invalid app id")
	// ErrInvalidChannel: the channel name is empty.
	ErrInvalidChannel = errors.New("bus: invalid channel name")
	// ErrInvalidToken: a subject token is not the canonical encoding of any channel name.
	ErrInvalidToken = errors.New("bus: invalid channel token")
	// ErrClosed: the Bus was closed.
	ErrClosed = errors.New("bus: closed")
)

// ValidApp reports whether app is a legal app id: 1 to 64 bytes of A-Z a-z 0-9 _ -.
func ValidApp(app string) bool {
	if len(app) == 0 || len(app) > maxAppLen {
		return false
	}
	for i := 0; i < len(app); i++ {
		c := app[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// WebhookOutboxSubject is where an event for one webhook target of app is
// stored: herald.sys.webhooks.out.<app>.<target>.<part>. target is a
// subject-safe id of the webhook (webhook.TargetID) and part the partition
// of the event's channel.
func WebhookOutboxSubject(app, target string, part int) string {
	return webhookOutboxRoot + app + "." + target + "." + strconv.Itoa(part)
}

// WebhookOutboxFilter matches every outbox subject of one target of app
// (part < 0) or of one of its partitions.
func WebhookOutboxFilter(app, target string, part int) string {
	if part < 0 {
		return webhookOutboxRoot + app + "." + target + ".*"
	}
	return WebhookOutboxSubject(app, target, part)
}

// WebhookDeadSubject is where a dead-lettered event of one target of app is
// kept: herald.sys.webhooks.dead.<app>.<target>.
func WebhookDeadSubject(app, target string) string { return webhookDeadRoot + app + "." + target }

// WebhookDeadFilter matches the dead letters of app, or of every app when
// app is "".
func WebhookDeadFilter(app string) string {
	if app == "" {
		return webhookDeadRoot + ">"
	}
	return webhookDeadRoot + app + ".*"
}

// ParseWebhookSubject splits an outbox or dead-letter subject into app and
// target.
func ParseWebhookSubject(subj string) (app, target string, ok bool) {
	rest, found := strings.CutPrefix(subj, webhookOutboxRoot)
	if !found {
		if rest, found = strings.CutPrefix(subj, webhookDeadRoot); !found {
			return "", "", false
		}
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// StreamName is the name of app's stream: HERALD_<app>.
func StreamName(app string) string { return streamPrefix + app }

// StoredSubject is the subject a publish to (app, channel) goes to: herald.<app>.msg.<tok>.
func StoredSubject(app, channel string) string {
	return subjectRoot + app + storedInfix + EncodeChannel(channel)
}

// LiveSubject is the subject (app, channel) is delivered live on: herald.<app>.live.<tok>.
func LiveSubject(app, channel string) string {
	return subjectRoot + app + liveInfix + EncodeChannel(channel)
}

// storedWildcard is the stream's subject filter: herald.<app>.msg.>.
func storedWildcard(app string) string { return subjectRoot + app + ".msg.>" }

// liveWildcard is the republish destination: herald.<app>.live.>.
func liveWildcard(app string) string { return subjectRoot + app + ".live.>" }

// PresenceSubject is where presence member changes of a channel are
// published for NATS consumers: herald.<app>.presence.<tok>.
func PresenceSubject(app, channel string) string {
	return subjectRoot + app + ".presence." + EncodeChannel(channel)
}

func presenceWildcard(app string) string { return subjectRoot + app + ".presence.>" }

// DebugSubject is where node publishes app's debug events:
// herald.<app>.debug.<node>, the node name encoded as a channel token.
func DebugSubject(app, node string) string {
	return subjectRoot + app + debugInfix + EncodeChannel(node)
}

// debugWildcard is every node's debug events of app: herald.<app>.debug.*.
func debugWildcard(app string) string { return subjectRoot + app + debugInfix + "*" }

// parseLiveSubject splits herald.<app>.live.<tok> into app and tok.
// It does not allocate: both are substrings of subj.
func parseLiveSubject(subj string) (app, tok string, ok bool) {
	app, tok, ok = splitSubject(subj, liveInfix)
	if !ok || tok == "" {
		return "", "", false
	}
	return app, tok, true
}

// splitSubject splits herald.<app><infix><rest> into app and rest, where
// infix starts with the dot after the app (".live.", ".api."). It does not
// allocate.
func splitSubject(subj, infix string) (app, rest string, ok bool) {
	rest, ok = strings.CutPrefix(subj, subjectRoot)
	if !ok {
		return "", "", false
	}
	i := strings.IndexByte(rest, '.')
	if i <= 0 {
		return "", "", false
	}
	app, rest = rest[:i], rest[i:]
	rest, ok = strings.CutPrefix(rest, infix)
	if !ok {
		return "", "", false
	}
	return app, rest, true
}

// needsEscape reports whether byte c cannot appear raw in a channel token:
// the escape character itself, NATS token separator and wildcards, and every
// space, control or non-ASCII byte.
func needsEscape(c byte) bool {
	return c <= ' ' || c >= 0x7F || c == '%' || c == '.' || c == '*' || c == '>'
}

const upperHex = "0123456789ABCDEF"

// alphabet is a reversible one-token encoding: bytes outside keep become
// esc followed by two uppercase hex digits. Subject tokens and KV key
// tokens differ only in their alphabet (subjectToken, keyToken).
type alphabet struct {
	esc  byte
	keep [256]bool // esc itself is never kept
}

func newAlphabet(esc byte, keep func(byte) bool) *alphabet {
	a := &alphabet{esc: esc}
	for c := range 256 {
		a.keep[c] = byte(c) != esc && keep(byte(c))
	}
	return a
}

var (
	subjectToken = newAlphabet('%', func(c byte) bool { return !needsEscape(c) })
	keyToken     = newAlphabet(keyTokenEscape, keepInKey)
)

// encode escapes name; a name with nothing to escape is returned as is,
// without allocating.
func (a *alphabet) encode(name string) string {
	n := 0
	for i := 0; i < len(name); i++ {
		if !a.keep[name[i]] {
			n++
		}
	}
	if n == 0 {
		return name
	}
	var sb strings.Builder
	sb.Grow(len(name) + 2*n)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if a.keep[c] {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte(a.esc)
		sb.WriteByte(upperHex[c>>4])
		sb.WriteByte(upperHex[c&0x0F])
	}
	return sb.String()
}

// decode reverses encode, accepting only canonical tokens: a raw byte that
// needs escaping, a malformed or lowercase escape, or an escape of a byte
// that needs none is an error wrapping ErrInvalidToken, so that one name has
// exactly one token. A token without escapes is returned as is.
func (a *alphabet) decode(tok string) (string, error) {
	if tok == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	esc := 0
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c == a.esc:
			esc++
		case !a.keep[c]:
			return "", fmt.Errorf("%w: raw byte 0x%02X at %d", ErrInvalidToken, c, i)
		}
	}
	if esc == 0 {
		return tok, nil
	}
	buf := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != a.esc {
			buf = append(buf, c)
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: short escape at %d", ErrInvalidToken, i)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("%w: bad escape at %d", ErrInvalidToken, i)
		}
		d := byte(hi<<4 | lo)
		if a.keep[d] {
			return "", fmt.Errorf("%w: needless escape at %d", ErrInvalidToken, i)
		}
		buf = append(buf, d)
		i += 2
	}
	return string(buf), nil
}

// EncodeChannel encodes a channel name into one NATS subject token,
// reversibly: '%' -> %25, '.' -> %2E, '*' -> %2A, '>' -> %3E, and every
// space, control character or byte >= 0x7F -> %XX (uppercase hex). All other
// bytes, including every legal Pusher channel character except '.', are kept.
// A name with nothing to escape is returned as is, without allocating.
// The empty name encodes to the empty string, which is not a valid token.
func EncodeChannel(name string) string { return subjectToken.encode(name) }

// DecodeChannel reverses EncodeChannel. It accepts only canonical tokens
// (those EncodeChannel produces): a raw byte that needs escaping, a malformed
// or lowercase escape, or an escape of a byte that needs none is an error
// wrapping ErrInvalidToken, so that one channel has exactly one subject.
// A token without escapes is returned as is, without allocating.
func DecodeChannel(tok string) (string, error) { return subjectToken.decode(tok) }

// unhex decodes one uppercase hex digit, or returns -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// keyTokenEscape starts an escape in a KV key token.
const keyTokenEscape = '='

// keepInKey reports whether byte c stands for itself in a KV key token:
// A-Z a-z 0-9 _ -. KV keys also allow '/', '=' and '.', but '.' separates
// the app from the channel and '=' is the escape.
func keepInKey(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// EncodeKeyToken encodes a channel name into one JetStream KV key token,
// reversibly: every byte but A-Z a-z 0-9 _ - becomes =XX (uppercase hex),
// so "presence-room@1.a" is "presence-room=401=2Ea". A name with nothing to
// escape is returned as is, without allocating. The empty name encodes to
// the empty string, which is not a valid token.
func EncodeKeyToken(name string) string { return keyToken.encode(name) }

// DecodeKeyToken reverses EncodeKeyToken. Like DecodeChannel it accepts
// only canonical tokens.
func DecodeKeyToken(tok string) (string, error) { return keyToken.decode(tok) }
