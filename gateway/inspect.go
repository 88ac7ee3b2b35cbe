package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"herald/protocol"
)

// The debug console's view into the edge (docs/console.md): the debug
// event hooks that need more than one line, and the socket inspector. A
// connection's subscriptions and signed-in user are poller-only state, so
// the inspector runs its snapshot on the owning poller's goroutine (a
// poller task), never reading them from another.

// tapClosed reports a connection that begins closing. c.mu is held (the
// hook only queues; it takes no lock).
func (g *Gateway) tapClosed(c *Conn, code int, reason string) {
	if c.app != nil { // refused before its app was known
		g.cfg.Tap.Closed(c.app.ID, c.id, code, reason)
	}
}

// tapLost reports a released connection that never began a closing
// handshake (the peer vanished, a write failed): code 1006.
func (g *Gateway) tapLost(c *Conn) {
	if c.reason == reasonNone && c.app != nil {
		g.cfg.Tap.Closed(c.app.ID, c.id, 1006, "connection lost")
	}
}

// tapResume reports a replay that ran.
func (g *Gateway) tapResume(c *Conn, channel string, from uint64, windowPassed bool, replayed int) {
	outcome := resumeNames[resumeOK]
	if windowPassed {
		outcome = resumeNames[resumeWindowPassed]
	}
	g.cfg.Tap.Resume(c.app.ID, channel, c.id, outcome, from, replayed)
}

// SocketInfo is what the socket inspector shows of one connection.
type SocketInfo struct {
	SocketID      string             `json:"socket_id"`
	App           string             `json:"app"`
	State         string             `json:"state"` // open, closing
	ConnectedAt   time.Time          `json:"connected_at"`
	LastActivity  time.Time          `json:"last_activity"`
	UserID        string             `json:"user_id,omitempty"` // pusher:signin
	UserInfo      json.RawMessage    `json:"user_info,omitempty"`
	QueueBytes    int                `json:"write_queue_bytes"`
	QueueFrames   int                `json:"write_queue_frames"`
	Subscriptions []SubscriptionInfo `json:"subscriptions"`
}

// SubscriptionInfo is one channel of an inspected connection.
type SubscriptionInfo struct {
	Channel string `json:"channel"`
	Kind    string `json:"kind"` // public, private, presence, encrypted, cache, user
	// Member is the presence member id this connection joined as.
	Member string `json:"presence_member,omitempty"`
	// LastSerial is the serial of the last event this node delivered on
	// the channel (the socket's own, unless it is still resuming).
	LastSerial uint64 `json:"last_serial"`
	Resuming   bool   `json:"resuming,omitempty"`
}

// ErrNotHere: the socket id belongs to another node, or to no open
// connection of this one.
var ErrNotHere = errors.New("gateway: no such socket on this node")

// Inspect returns a snapshot of the connection with socket id id of app,
// taken on its poller's goroutine; it waits until ctx ends for the pollers.
func (g *Gateway) Inspect(ctx context.Context, app, id string) (SocketInfo, error) {
	sid, err := protocol.ParseSocketID(id)
	if err != nil {
		return SocketInfo{}, err
	}
	if sid.Node != g.ids.Node() {
		return SocketInfo{}, ErrNotHere
	}
	answers := make(chan *SocketInfo, len(g.pollers))
	for _, p := range g.pollers {
		p.do(func() { answers <- p.inspect(app, sid) })
	}
	for range g.pollers {
		select {
		case info := <-answers:
			if info != nil {
				return *info, nil
			}
		case <-ctx.Done():
			return SocketInfo{}, ctx.Err()
		}
	}
	return SocketInfo{}, ErrNotHere
}

// do runs f on the poller's goroutine at its next wake-up. f must not
// block.
func (p *poller) do(f func()) {
	p.mu.Lock()
	p.tasks = append(p.tasks, f)
	p.mu.Unlock()
	p.wake()
}

// inspect snapshots the poller's connection with the socket id, or
// returns nil. Poller only.
func (p *poller) inspect(app string, id protocol.SocketID) *SocketInfo {
	for _, c := range p.conns {
		if c.id != id || c.app == nil || c.app.ID != app {
			continue
		}
		info := &SocketInfo{
			SocketID:      id.String(),
			App:           app,
			ConnectedAt:   time.Unix(0, c.born),
			LastActivity:  time.Unix(0, c.lastIn),
			UserID:        c.userID(),
			UserInfo:      append(json.RawMessage(nil), c.userInfo()...),
			Subscriptions: []SubscriptionInfo{},
		}
		c.mu.Lock()
		info.State = "open"
		if c.state() != stateOpen {
			info.State = "closing"
		}
		info.QueueBytes, info.QueueFrames = c.queued, len(c.queue)
		resuming := map[string]bool{}
		for ch, r := range c.replays {
			resuming[ch] = !r.done
		}
		c.mu.Unlock()
		for _, s := range c.subs {
			info.Subscriptions = append(info.Subscriptions, SubscriptionInfo{
				Channel:    s.lc.name,
				Kind:       kindNames[kindOf(s.lc.name)],
				Member:     s.user,
				LastSerial: s.lc.last.Load(),
				Resuming:   resuming[s.lc.name],
			})
		}
		return info
	}
	return nil
}
