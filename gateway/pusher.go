package gateway

import (
	"strings"

	"github.com/gobwas/ws"

	"herald/protocol"
)

// maxSubscriptionsPerConn bounds the channels one connection may hold, so a
// client cannot grow the node's index without limit.
const maxSubscriptionsPerConn = 1000

// handleMessage handles one Pusher message from a client. It runs on the
// connection's poller and must not block: anything that waits (a bus round
// trip, an auth callback) goes elsewhere.
func (g *Gateway) handleMessage(c *Conn, payload []byte) {
	g.stats.messagesIn.Add(1)
	msg, err := protocol.DecodeMessage(payload)
	if err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	switch msg.Event {
	case "pusher:ping":
		_ = c.send(g.frames.pong)
	case "pusher:pong":
		// any inbound frame already counted as activity
	case "pusher:subscribe":
		g.subscribe(c, msg)
	case "pusher:unsubscribe":
		g.unsubscribe(c, msg)
	default:
		if strings.HasPrefix(msg.Event, "client-") {
			g.clientEvent(c, msg)
		}
		// Other events, including unknown pusher:* ones, are ignored as
		// Pusher and soketi do.
	}
}

// sendError sends a pusher:error that leaves the connection open.
func (c *Conn) sendError(code int, message, channel string) {
	msg := protocol.AppendError(nil, code, message, channel)
	_ = c.send(appendFrame(make([]byte, 0, len(msg)+4), ws.OpText, msg))
}

func (c *Conn) sendJSON(msg []byte) {
	_ = c.send(appendFrame(make([]byte, 0, len(msg)+4), ws.OpText, msg))
}

// subscribed returns the connection's subscription to a channel, or nil.
func (c *Conn) subscribed(name string) *localChannel {
	for _, lc := range c.channels {
		if lc.name == name {
			return lc
		}
	}
	return nil
}

func (g *Gateway) subscribe(c *Conn, msg protocol.Message) {
	sd, err := protocol.DecodeSubscribe(msg.Data)
	if err != nil {
		c.sendError(0, "Invalid subscribe message: "+err.Error(), "")
		return
	}
	name := sd.Channel
	if err := protocol.ValidateChannelName(name, c.app.Limits.MaxChannelName); err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	if c.subscribed(name) != nil {
		c.sendError(0, "Existing subscription to channel "+name, "")
		return
	}
	if len(c.channels) >= maxSubscriptionsPerConn {
		c.sendError(0, "Too many subscriptions on this connection", "")
		return
	}
	if err := g.authorize(c, name, sd); err != nil {
		c.sendError(0, err.Error(), "")
		return
	}
	g.join(c, name)
}

// authorize checks the subscription's signature for the channel kinds that
// need one.
func (g *Gateway) authorize(c *Conn, name string, sd protocol.SubscribeData) error {
	kind, _ := protocol.Classify(name)
	switch kind {
	case protocol.Private, protocol.Encrypted:
		return protocol.VerifyChannelAuth(c.app.Key, c.app.Secret, c.id.String(), name, "", sd.Auth)
	case protocol.Presence:
		return &protocol.Error{Message: "Presence channels are not supported by this server yet"}
	case protocol.ServerToUser:
		return &protocol.Error{Message: "Subscribing to " + name + " requires a signed-in user"}
	}
	return nil
}

// join adds the connection to a channel and acknowledges it. The
// acknowledgement is queued before the connection enters the index and written
// after it has, and the bus subscription is requested before the write, so
// every event published after the client sees subscription_succeeded reaches
// it, and none arrives before the acknowledgement.
func (g *Gateway) join(c *Conn, name string) {
	ack := protocol.AppendSubscriptionSucceeded(nil, name, "{}")
	c.mu.Lock()
	ok := c.state() == stateOpen && c.enqueueLocked(appendFrame(make([]byte, 0, len(ack)+4), ws.OpText, ack))
	c.mu.Unlock()
	if !ok {
		return
	}
	lc, _, first := g.hub.add(c, name)
	c.channels = append(c.channels, lc)
	if first && g.bus != nil {
		g.bus.Subscribe(c.app.ID, name)
	}
	c.mu.Lock()
	c.flushLocked()
	c.mu.Unlock()
}

func (g *Gateway) unsubscribe(c *Conn, msg protocol.Message) {
	name, err := protocol.DecodeUnsubscribe(msg.Data)
	if err != nil {
		c.sendError(0, "Invalid unsubscribe message: "+err.Error(), "")
		return
	}
	lc := c.subscribed(name)
	if lc == nil {
		c.sendError(0, "No current subscription to channel "+name+", or subscription in progress", "")
		return
	}
	for i, s := range c.channels {
		if s == lc {
			last := len(c.channels) - 1
			c.channels[i] = c.channels[last]
			c.channels[last] = nil
			c.channels = c.channels[:last]
			break
		}
	}
	g.leave(c, lc)
}

// leave removes the connection from a channel's local index and drops the
// node's interest in the channel with its last local subscriber.
func (g *Gateway) leave(c *Conn, lc *localChannel) {
	if g.hub.remove(c, lc) && g.bus != nil {
		g.bus.Unsubscribe(lc.app.ID, lc.name)
	}
}

// clientEvent rejects client events this server cannot relay: they are only
// allowed on private and presence channels the sender is subscribed to, when
// the app enables them.
func (g *Gateway) clientEvent(c *Conn, msg protocol.Message) {
	if !c.app.ClientEvents {
		c.sendError(protocol.CodeClientEventRateLimit, "The app does not have client messaging enabled.", "")
		return
	}
	if c.subscribed(msg.Channel) == nil {
		c.sendError(0, "Cannot broadcast client event (connection not subscribed to channel "+msg.Channel+")", "")
		return
	}
	kind, _ := protocol.Classify(msg.Channel)
	if kind != protocol.Private && kind != protocol.Presence {
		c.sendError(0, "Client events are only allowed on private and presence channels", "")
		return
	}
	c.sendError(0, "Client events are not supported by this server yet", "")
}
