// Package presence owns presence-channel membership: which users are in which
// presence channel, through which connections, and the member events that
// follow (a user's first connection in a channel joins the user, the last one
// leaving removes it). It also owns channel occupancy: how many subscribers
// each channel, of any kind, has across the cluster, and the occupied,
// vacated and subscription-count events that follow.
//
// Registry is the API the gateway uses. Local is the single-node
// implementation; a cluster implementation merges every node's members over
// memberlist behind the same API, which is why changes are reported through a
// Listener rather than as return values only: remote joins and leaves arrive
// on their own.
package presence

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
)

// Member is one user in a presence channel.
type Member struct {
	// ID is the user id in canonical string form.
	ID string
	// IDJSON is the id as the app sent it (a JSON string or number).
	IDJSON json.RawMessage
	// Info is the raw JSON of user_info, or nil.
	Info json.RawMessage
}

// ChangeKind says what a Change reports. The zero kind is KindMember, so a
// Change built before occupancy existed still means what it meant.
type ChangeKind uint8

const (
	// KindMember: a user joined (Added) or left a presence channel, across
	// every connection of the user. Member and Origin are set.
	KindMember ChangeKind = iota
	// KindOccupied: the channel got its first subscriber anywhere in the
	// cluster. Subscribers is the cluster-wide count.
	KindOccupied
	// KindVacated: no live node has a subscriber of the channel any more
	// (the last one unsubscribed, or its node died, left or restarted).
	// Subscribers is 0.
	KindVacated
	// KindSubscriptionCount: the cluster-wide count changed while the
	// channel stayed occupied. Subscribers is the new count.
	KindSubscriptionCount
)

func (k ChangeKind) String() string {
	switch k {
	case KindMember:
		return "member"
	case KindOccupied:
		return "occupied"
	case KindVacated:
		return "vacated"
	case KindSubscriptionCount:
		return "subscription_count"
	}
	return "ChangeKind(" + strconv.Itoa(int(k)) + ")"
}

// Change is what the Listener gets; Kind says which fields are set.
//
// A member change (KindMember) is a user joining or leaving a presence
// channel (across every connection of the user). Origin is the connection
// that caused it, so the gateway can leave it out of member_added.
//
// An occupancy change (the other kinds) has App, Channel and Subscribers;
// Member, Added and Origin are zero. Any channel has occupancy, a presence
// channel too: its members and its subscribers are counted apart.
type Change struct {
	App, Channel string
	Member       Member
	Added        bool
	Origin       ConnID
	Kind         ChangeKind
	// Subscribers is the channel's cluster-wide subscriber count after an
	// occupancy change.
	Subscribers int
}

// occupancyChange returns the Change of a channel whose cluster-wide
// subscriber count went from was to now, if it changed.
func occupancyChange(app, ch string, was, now int) (Change, bool) {
	c := Change{App: app, Channel: ch, Subscribers: now}
	switch {
	case was == now:
		return Change{}, false
	case was == 0:
		c.Kind = KindOccupied
	case now == 0:
		c.Kind = KindVacated
	default:
		c.Kind = KindSubscriptionCount
	}
	return c, true
}

// ConnID identifies a connection cluster-wide (its socket id).
type ConnID string

// Listener receives every Change, in the order the registry's state changed:
// it is called with the registry's lock held, so it must not block and must
// not call back into the registry. What it may lock: docs/locks.md.
type Listener func(Change)

// ErrFull is returned by Join when the channel already holds its limit of
// distinct users and the joiner is not one of them.
var ErrFull = errors.New("presence: channel is full")

// Registry is presence membership as the gateway sees it.
type Registry interface {
	// Join adds a connection's membership. It fails with ErrFull when the
	// user is new and the channel has maxMembers distinct users. On success,
	// joined (if not nil) is called with every member, the joiner included,
	// before any Change the join causes is reported and before any later
	// change: a subscriber that starts listening inside joined misses nothing
	// and sees nothing twice. joined runs under the registry's lock, like
	// the Listener.
	Join(app, channel string, conn ConnID, m Member, maxMembers int, joined func([]Member)) error
	// Leave removes a connection's membership, if it has one.
	Leave(app, channel string, conn ConnID)
	// Members returns the distinct users in the channel, in join order.
	Members(app, channel string) []Member
	// Count returns the number of distinct users in the channel.
	Count(app, channel string) int
	// SetSubscribers records that this node has n local subscribers of the
	// channel, of any kind (0: none; a negative n counts as 0). It is cheap,
	// never waits on the network and may be called from any goroutine. The
	// occupancy Change it causes reaches the Listener like any other:
	// before it returns (Local) or shortly after, from the registry's own
	// goroutine (Gossip). Either way the caller must not hold a lock its
	// Listener takes.
	SetSubscribers(app, channel string, n int)
	// Subscribers returns the channel's cluster-wide subscriber count as
	// this node sees it: the sum of every live node's SetSubscribers, the
	// count the Listener last reported.
	Subscribers(app, channel string) int
}

type key struct{ app, channel string }

type user struct {
	member Member
	conns  map[ConnID]struct{}
}

type channel struct {
	users map[string]*user
	order []string // user ids in join order
}

// Local is the Registry of a single node.
type Local struct {
	mu       sync.Mutex
	channels map[key]*channel
	subs     map[key]int // channels with subscribers → count; apart from channels
	listener Listener
}

// NewLocal returns an empty registry that reports changes to l (nil: none).
func NewLocal(l Listener) *Local {
	return &Local{channels: make(map[key]*channel), subs: make(map[key]int), listener: l}
}

// Join implements Registry. A user's first connection in the channel emits
// an added Change; later connections of the same user emit nothing (the
// first connection's user_info stays). joined and the Listener run under
// r.mu. Lock order: docs/locks.md.
func (r *Local) Join(app, ch string, conn ConnID, m Member, maxMembers int, joined func([]Member)) error {
	r.mu.Lock()
	k := key{app, ch}
	c := r.channels[k]
	if c == nil {
		c = &channel{users: make(map[string]*user)}
		r.channels[k] = c
	}
	u := c.users[m.ID]
	if u == nil {
		if maxMembers > 0 && len(c.users) >= maxMembers {
			if len(c.users) == 0 {
				delete(r.channels, k)
			}
			r.mu.Unlock()
			return ErrFull
		}
		u = &user{member: m, conns: make(map[ConnID]struct{}, 1)}
		c.users[m.ID] = u
		c.order = append(c.order, m.ID)
	}
	first := len(u.conns) == 0
	u.conns[conn] = struct{}{}
	if joined != nil {
		joined(c.members())
	}
	if first && r.listener != nil {
		r.listener(Change{App: app, Channel: ch, Member: u.member, Added: true, Origin: conn})
	}
	r.mu.Unlock()
	return nil
}

// Leave implements Registry. The user's last connection leaving emits a
// removed Change. The Listener runs under r.mu. Lock order: docs/locks.md.
func (r *Local) Leave(app, ch string, conn ConnID) {
	r.mu.Lock()
	k := key{app, ch}
	c := r.channels[k]
	if c == nil {
		r.mu.Unlock()
		return
	}
	var gone *user
	for id, u := range c.users {
		if _, ok := u.conns[conn]; !ok {
			continue
		}
		delete(u.conns, conn)
		if len(u.conns) == 0 {
			delete(c.users, id)
			c.order = removeString(c.order, id)
			gone = u
		}
		break
	}
	if len(c.users) == 0 {
		delete(r.channels, k)
	}
	if gone != nil && r.listener != nil {
		r.listener(Change{App: app, Channel: ch, Member: gone.member, Added: false, Origin: conn})
	}
	r.mu.Unlock()
}

// Members implements Registry.
func (r *Local) Members(app, ch string) []Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.channels[key{app, ch}]; c != nil {
		return c.members()
	}
	return nil
}

func (c *channel) members() []Member {
	out := make([]Member, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.users[id].member)
	}
	return out
}

// Count implements Registry.
func (r *Local) Count(app, ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.channels[key{app, ch}]; c != nil {
		return len(c.users)
	}
	return 0
}

// SetSubscribers implements Registry. The Change, if any, is reported
// before it returns, on the caller's goroutine.
func (r *Local) SetSubscribers(app, ch string, n int) {
	n = max(n, 0)
	k := key{app, ch}
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.subs[k]
	if n == 0 {
		delete(r.subs, k)
	} else {
		r.subs[k] = n
	}
	if c, ok := occupancyChange(app, ch, was, n); ok && r.listener != nil {
		r.listener(c)
	}
}

// Subscribers implements Registry: on a single node, the last count set.
func (r *Local) Subscribers(app, ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.subs[key{app, ch}]
}

func removeString(s []string, v string) []string {
	for i, x := range s {
		if x == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}

// Roster is the data of a presence subscription_succeeded (docs/protocol.md
// §2.4):
// {"presence":{"ids":[...],"hash":{id:info},"count":N}}.
func Roster(members []Member) []byte {
	b := make([]byte, 0, 64+len(members)*48)
	b = append(b, `{"presence":{"ids":[`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = appendJSON(b, m.ID)
	}
	b = append(b, `],"hash":{`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = appendJSON(b, m.ID)
		b = append(b, ':')
		if len(m.Info) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, m.Info...)
		}
	}
	b = append(b, `},"count":`...)
	b, _ = appendJSON(b, len(members))
	return append(b, "}}"...)
}

func appendJSON(b []byte, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	return append(b, j...), err
}
