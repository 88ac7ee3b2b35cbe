package gateway

import (
	"strconv"
	"strings"

	"herald/app"
	"herald/presence"
	"herald/protocol"
)

// maxPresenceUserIDBytes is Pusher's documented limit on presence user ids.
const maxPresenceUserIDBytes = 128

// subscription is one channel a connection is subscribed to.
type subscription struct {
	lc   *localChannel
	idx  int32 // the connection's place in lc.parts[its poller] (hub.remove keeps it)
	kind protocol.ChannelKind
	user string // presence channels: the member's user id
}

// handleMessage handles one Pusher message from a client. It runs on the
// connection's poller and must not block: anything that waits (a cache read)
// goes to a worker.
func (g *Gateway) handleMessage(c *Conn, payload []byte) {
	g.stats.messagesIn.Add(1)
	g.metrics.app(c.app.ID).messagesIn.Add(1)
	msg, err := protocol.DecodeMessage(payload)
	if err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	switch msg.Event {
	case protocol.EventPing:
		_ = c.send(g.frames.pong)
	case protocol.EventPong:
		// any inbound frame already counted as activity
	case protocol.EventSubscribe:
		g.subscribe(c, msg)
	case protocol.EventUnsubscribe:
		g.unsubscribe(c, msg)
	case protocol.EventSignin:
		g.signin(c, msg)
	default:
		if strings.HasPrefix(msg.Event, protocol.ClientEventPrefix) {
			g.clientEvent(c, msg)
		}
		// Other events, including unknown pusher:* ones, are ignored as
		// Pusher and soketi do.
	}
}

// sendError sends a pusher:error that leaves the connection open.
func (c *Conn) sendError(code int, message, channel string) {
	c.sendJSON(protocol.AppendError(nil, code, message, channel))
}

func (c *Conn) sendJSON(msg []byte) {
	_ = c.send(textFrame(msg))
}

// refuse reports a failed subscription in the app's chosen form: Pusher's
// connection-level pusher:error (code null), or soketi's channel-scoped
// pusher:subscription_error that Laravel Echo's channel.error() receives.
func (c *Conn) refuse(channel, typ, message string, status int) {
	c.poller.g.cfg.Tap.Refused(c.app.ID, channel, c.id, typ, message, status)
	if c.poller.g.appOf(c).SoketiErrors() {
		c.sendJSON(protocol.AppendSubscriptionError(nil, channel, typ, message, status))
		return
	}
	c.sendError(0, message, "")
}

// subscribed returns the connection's subscription to a channel, or nil.
func (c *Conn) subscribed(name string) *subscription {
	for i := range c.subs {
		if c.subs[i].lc.name == name {
			return &c.subs[i]
		}
	}
	return nil
}

func (g *Gateway) subscribe(c *Conn, msg protocol.Message) {
	sd, err := protocol.DecodeSubscribe(msg.Data)
	if err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	name := sd.Channel
	a := g.appOf(c)
	if !g.allowSubscribe(c, a, name) {
		return
	}
	if err := protocol.ValidateChannelName(name, a.MaxChannelNameLength); err != nil {
		c.refuse(name, "InvalidChannel", err.Error(), 4009)
		return
	}
	if c.subscribed(name) != nil {
		c.refuse(name, "AlreadySubscribed", "Existing subscription to channel "+name, 4009)
		return
	}
	if len(c.subs) >= a.MaxChannelsPerConnection {
		g.metrics.limits[limitChannels].Add(1)
		c.refuse(name, "LimitReached", "Too many subscriptions on this connection: at most "+
			strconv.Itoa(a.MaxChannelsPerConnection)+" channels", 4100)
		return
	}
	kind, cache := protocol.Classify(name)
	var member presence.Member
	switch kind {
	case protocol.Private, protocol.Encrypted:
		if err := verifyChannelAuth(a, c.id.String(), name, "", sd.Auth); err != nil {
			g.metrics.auth[authChannel].Add(1)
			c.refuse(name, "AuthError", err.Error(), 401)
			return
		}
	case protocol.Presence:
		var ok bool
		if member, ok = g.presenceMember(c, a, name, sd); !ok {
			return
		}
	case protocol.ServerToUser:
		if id, _ := protocol.ServerToUserID(name); c.userID() == "" || id != c.userID() {
			g.metrics.auth[authChannel].Add(1)
			c.refuse(name, "AuthError", "Subscribing to "+name+" requires being signed in as that user", 401)
			return
		}
	}
	// A resume holds live events back from before the subscription exists.
	var r *replay
	if sd.HasResume {
		r = c.beginResume(name, sd.Resume)
	}
	if kind == protocol.Presence {
		if !g.joinPresence(c, name, member, a.MaxPresenceMembers) {
			if r != nil {
				c.mu.Lock()
				c.endResumeLocked(name, r)
				c.mu.Unlock()
			}
			return
		}
	} else {
		if lc := g.join(c, name, kind, "", []byte("{}")); lc != nil {
			g.occupancyChanged(lc)
		}
	}
	g.cfg.Tap.Subscribed(c.app.ID, name, c.id, member.ID)
	switch {
	case r != nil:
		// The replay replaces the cached event. It must reach the last
		// serial delivered here before the subscription was in the index
		// (resume.go: a short read).
		g.startReplay(c, name, r, g.hub.last(c.app.ID, name))
	case cache:
		g.sendCached(c, name)
	}
}

// presenceMember verifies a presence subscription's signature over its exact
// channel_data and checks the member against the app's limits.
func (g *Gateway) presenceMember(c *Conn, a *app.App, name string, sd protocol.SubscribeData) (presence.Member, bool) {
	if err := verifyChannelAuth(a, c.id.String(), name, sd.ChannelData, sd.Auth); err != nil {
		g.metrics.auth[authChannel].Add(1)
		c.refuse(name, "AuthError", err.Error(), 401)
		return presence.Member{}, false
	}
	if sd.ChannelData == "" {
		// A signed-in user joins as itself (docs/protocol.md §2.7; the
		// signature then covers "socket_id:channel" only).
		if c.userID() == "" {
			c.refuse(name, "InvalidChannelData", "Presence subscriptions need channel_data or a signed-in user", 4009)
			return presence.Member{}, false
		}
		id := protocol.AppendJSONString(nil, c.userID())
		return presence.Member{ID: c.userID(), IDJSON: id, Info: c.userInfo()}, true
	}
	pm, err := protocol.ParseChannelData(sd.ChannelData)
	switch {
	case err != nil:
		c.refuse(name, "InvalidChannelData", err.Error(), 4009)
		return presence.Member{}, false
	case len(pm.UserID) > maxPresenceUserIDBytes:
		c.refuse(name, "LimitReached", "Presence user_id is longer than 128 characters", 4009)
		return presence.Member{}, false
	case len(pm.UserInfo) > a.MaxPresenceUserInfoBytes:
		c.refuse(name, "LimitReached", "Presence user_info is larger than the app's limit", 4301)
		return presence.Member{}, false
	}
	return presence.Member{ID: pm.UserID, IDJSON: pm.UserIDJSON, Info: pm.UserInfo}, true
}

// joinPresence adds the member to the registry; inside the registry's
// joined hook the connection gets its roster and enters the channel, so the
// roster and the member events that follow it are consistent. The hook runs
// join under the registry's lock. It reports whether the connection is now
// a member; when it is not, the registry holds no member for it either.
// Lock order: docs/locks.md.
func (g *Gateway) joinPresence(c *Conn, name string, m presence.Member, maxMembers int) bool {
	var lc *localChannel
	err := g.presence.Join(c.app.ID, name, presence.ConnID(c.id.String()), m, maxMembers,
		func(members []presence.Member) {
			lc = g.join(c, name, protocol.Presence, m.ID, presence.Roster(members))
		})
	if lc != nil { // after Join: the registry's lock is released
		g.occupancyChanged(lc)
	}
	if err != nil {
		c.refuse(name, "LimitReached", "Presence channel is full: at most "+strconv.Itoa(maxMembers)+" members", 4100)
		return false
	}
	if lc == nil {
		// The socket began closing before it entered the channel (join
		// refused it: closed elsewhere, or its roster overflowed its write
		// queue). The registry has the member all the same, and leaveAll
		// will not remove it (it is not in c.subs): undo the join here, or
		// the member stays for good.
		g.presence.Leave(c.app.ID, name, presence.ConnID(c.id.String()))
		return false
	}
	return true
}

// join adds the connection to a channel and acknowledges it with ackData. The
// acknowledgement is queued before the connection enters the index and
// written after it has, and the bus subscription is requested before the
// write, so every event published after the client sees
// subscription_succeeded reaches it, and none arrives before it. It returns
// the channel joined, or nil; the caller reports the new local count
// (occupancyChanged) once no registry lock is held: a presence join runs
// join under the registry's lock (joinPresence's hook). It holds no lock of
// its own while it takes another. Lock order: docs/locks.md.
func (g *Gateway) join(c *Conn, name string, kind protocol.ChannelKind, user string, ackData []byte) *localChannel {
	ack := protocol.AppendSubscriptionSucceeded(nil, name, string(ackData))
	c.mu.Lock()
	ok := c.state() == stateOpen && c.enqueueLocked(textFrame(ack))
	c.mu.Unlock()
	if !ok {
		return nil
	}
	lc, idx, first := g.hub.add(c, name)
	c.subs = append(c.subs, subscription{lc: lc, idx: idx, kind: kind, user: user})
	g.metrics.subscribed(name, 1)
	if first {
		g.cfg.Bus.Subscribe(c.app.ID, name)
	}
	c.mu.Lock()
	c.flushLocked()
	c.mu.Unlock()
	g.countChanged(lc)
	return lc
}

func (g *Gateway) unsubscribe(c *Conn, msg protocol.Message) {
	name, err := protocol.DecodeUnsubscribe(msg.Data)
	if err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	if !g.allowSubscribe(c, g.appOf(c), name) {
		return
	}
	for i := range c.subs {
		if c.subs[i].lc.name == name {
			s := c.subs[i]
			last := len(c.subs) - 1
			c.subs[i] = c.subs[last]
			c.subs[last] = subscription{}
			c.subs = c.subs[:last]
			g.leave(c, s)
			g.cfg.Tap.Unsubscribed(c.app.ID, name, c.id)
			return
		}
	}
	c.sendError(0, "No current subscription to channel "+name+", or subscription in progress", "")
}

// leave removes the connection from a channel: from the local index (the
// node's bus interest goes with the last local subscriber) and, for presence
// channels, from the registry, which reports member_removed when it was the
// user's last connection.
func (g *Gateway) leave(c *Conn, s subscription) {
	c.mu.Lock()
	if r := c.replays[s.lc.name]; r != nil {
		c.endResumeLocked(s.lc.name, r)
	}
	c.mu.Unlock()
	if g.hub.remove(c, &s) {
		g.cfg.Bus.Unsubscribe(s.lc.app.ID, s.lc.name)
	}
	g.metrics.subscribed(s.lc.name, -1)
	if s.kind == protocol.Presence {
		g.presence.Leave(s.lc.app.ID, s.lc.name, presence.ConnID(c.id.String()))
	}
	g.occupancyChanged(s.lc)
	g.countChanged(s.lc)
}

// onPresenceChange delivers member_added / member_removed to this node's
// subscribers of the channel, except the connection that caused the change,
// and hands every transition (occupancy ones too) to the lifecycle Decider,
// which emits those of channels this node owns. It runs under the presence
// registry's lock and takes a hub shard and Conn.mu; the Decider's consumers
// must not block. Lock order: docs/locks.md.
func (g *Gateway) onPresenceChange(ch presence.Change) {
	g.cfg.Lifecycle.Observe(ch)
	if ch.Kind != presence.KindMember {
		return
	}
	g.metrics.member(ch.App, ch.Added)
	var msg []byte
	if ch.Added {
		msg = protocol.AppendMemberAdded(nil, ch.Channel, ch.Member.IDJSON, ch.Member.Info)
	} else {
		msg = protocol.AppendMemberRemoved(nil, ch.Channel, ch.Member.IDJSON)
	}
	frame := textFrame(msg)
	origin, _ := protocol.ParseSocketID(string(ch.Origin))
	g.hub.fanout(ch.App, ch.Channel, 0, func(c *Conn) {
		if c.id != origin {
			_ = c.send(frame)
		}
	})
}
