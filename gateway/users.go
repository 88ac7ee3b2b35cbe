package gateway

import (
	"strconv"
	"sync"
	"time"

	"herald/app"
	"herald/bus"
	"herald/protocol"
)

type userKey struct {
	app string // app id
	id  string
}

// userIndex maps signed-in users to their connections on this node.
type userIndex struct {
	mu sync.Mutex
	m  map[userKey]map[*Conn]struct{}
}

func (u *userIndex) add(c *Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[userKey]map[*Conn]struct{})
	}
	k := userKey{c.app.ID, c.userID()}
	set := u.m[k]
	if set == nil {
		set = make(map[*Conn]struct{}, 1)
		u.m[k] = set
	}
	set[c] = struct{}{}
}

func (u *userIndex) remove(c *Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := userKey{c.app.ID, c.userID()}
	if set := u.m[k]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(u.m, k)
		}
	}
}

func (u *userIndex) conns(app, id string) []*Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	set := u.m[userKey{app, id}]
	out := make([]*Conn, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out
}

// signin handles pusher:signin (docs/protocol.md §4): the user_data signature
// is checked, the connection is bound to the user id, and
// pusher:signin_success echoes the verified user_data. A failure is a
// pusher:error 4009; it also closes the connection when the app requires
// signed-in connections.
func (g *Gateway) signin(c *Conn, msg protocol.Message) {
	sd, err := protocol.DecodeSignin(msg.Data)
	if err == nil {
		err = verifyUserAuth(g.appOf(c), c.id.String(), sd.UserData, sd.Auth)
	}
	var ud protocol.UserData
	if err == nil {
		ud, err = protocol.ParseUserData(sd.UserData)
	}
	if err == nil && c.userID() != "" && c.userID() != ud.ID {
		err = &protocol.Error{Code: protocol.CodeUnauthorized, Message: "Connection is already signed in as another user"}
	}
	if err != nil {
		g.metrics.auth[authUser].Add(1)
		if c.app.UserAuthentication {
			c.closeWith(protocol.CodeUnauthorized, err.Error())
			return
		}
		c.sendError(protocol.CodeUnauthorized, err.Error(), "")
		return
	}
	if c.userID() == "" {
		c.user = &signedIn{id: ud.ID, info: ud.UserInfo}
		g.users.add(c)
	}
	c.sendJSON(protocol.AppendSigninSuccess(nil, sd.UserData))
}

// TerminateUser closes every connection of the app signed in as userID with
// 4009, and returns how many there were.
func (g *Gateway) TerminateUser(app, userID string) int {
	conns := g.users.conns(app, userID)
	for _, c := range conns {
		c.closeWith(protocol.CodeUnauthorized, "You got disconnected by the app.")
	}
	return len(conns)
}

// clientEvent relays a client event (docs/protocol.md §5): only on private
// and presence channels the sender is subscribed to, when the app enables
// them, within the app's rate and size limits. The event goes through the bus
// like any other, so every node's subscribers get it, minus the sender.
func (g *Gateway) clientEvent(c *Conn, msg protocol.Message) {
	a := g.appOf(c)
	if !a.ClientEvents {
		c.sendError(protocol.CodeClientEventRateLimit, "The app does not have client messaging enabled.", msg.Channel)
		return
	}
	s := c.subscribed(msg.Channel)
	if s == nil {
		c.sendError(0, "Cannot broadcast client event (connection not subscribed to channel "+msg.Channel+")", msg.Channel)
		return
	}
	if s.kind != protocol.Private && s.kind != protocol.Presence {
		c.sendError(0, "Client events are only allowed on private and presence channels", msg.Channel)
		return
	}
	if !c.allowClientEvent(c.poller.now, a.ClientEventRate) {
		// One answer per window, not one per dropped event: a flood must
		// not be mirrored back at the same rate.
		g.metrics.limits[limitClientEventRate].Add(1)
		if !c.ceWarned {
			c.ceWarned = true
			c.sendError(protocol.CodeClientEventRateLimit, "Client event rejected due to rate limit", msg.Channel)
		}
		return
	}
	if len(msg.Event) > a.MaxEventNameLength {
		g.metrics.limits[limitClientEventName].Add(1)
		c.sendError(protocol.CodeClientEventRateLimit, "Client event name is longer than "+strconv.Itoa(a.MaxEventNameLength)+" characters", msg.Channel)
		return
	}
	if len(msg.Data) > a.MaxEventDataBytes {
		g.metrics.limits[limitClientEventData].Add(1)
		c.sendError(0, "Client event data is larger than "+strconv.Itoa(a.MaxEventDataBytes)+" bytes", msg.Channel)
		return
	}
	data := msg.Data
	if data == nil {
		data = []byte("null")
	}
	payload := protocol.AppendEventRaw(nil, msg.Event, msg.Channel, data, s.user)
	if g.cfg.Publisher == nil {
		return
	}
	if err := g.cfg.Publisher.PublishAsync(bus.Publication{App: c.app.ID, Channel: msg.Channel, Payload: payload, Exclude: c.id.String()}); err != nil {
		c.sendError(0, "Client event could not be delivered: server busy", msg.Channel)
		return
	}
	if g.cfg.Webhooks != nil && a.WantsWebhook(app.WebhookClientEvent, msg.Channel) {
		user := ""
		if s.kind == protocol.Presence {
			user = s.user
		}
		g.cfg.Webhooks.ClientEvent(a, msg.Channel, msg.Event, msg.Data, c.id.String(), user)
	}
	g.cfg.Tap.ClientEvent(c.app.ID, msg.Channel, msg.Event, c.id, data)
}

// allowClientEvent counts a client event against the connection's rate: at
// most rate (the app's ClientEventRate) per one-second window. Poller only.
func (c *Conn) allowClientEvent(now int64, rate int) bool {
	if now-c.ceWindow >= int64(time.Second) {
		c.ceWindow, c.ceCount, c.ceWarned = now, 0, false
	}
	if int(c.ceCount) >= rate {
		return false
	}
	c.ceCount++
	return true
}
