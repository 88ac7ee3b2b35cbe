package gateway

import (
	"sync/atomic"

	"herald/app"
	"herald/protocol"
)

// Apps change under a running gateway (node's hot reload swaps the
// registry, app.Registry.Replace). A connection keeps the *app.App it was
// accepted with for what never changes (its id, and the choices fixed at
// connect such as user_authentication); everything a reload may change
// (secrets, limits, flags) is read from the registry when it is used
// (appOf). An app that is disabled or removed has its sockets closed by
// the node through CloseApp.

// appOf is the connection's app as the registry has it now: the current
// secrets, limits and flags. A removed app keeps the one it connected with
// (its sockets are being closed).
func (g *Gateway) appOf(c *Conn) *app.App {
	if a, ok := g.cfg.Apps.ByID(c.app.ID); ok {
		return a
	}
	return c.app
}

// usable reports whether the registry still lets app id connect: present
// and enabled.
func (g *Gateway) usable(id string) (code int, reason string, ok bool) {
	a, found := g.cfg.Apps.ByID(id)
	switch {
	case !found:
		return protocol.CodeAppNotFound, "App does not exist", false
	case !a.IsEnabled():
		return protocol.CodeAppDisabled, "App is disabled", false
	}
	return 0, "", true
}

// CloseApp starts closing every open connection of app on this node with a
// close code and reason (4003 for an app disabled by a reload, 4001 for one
// removed), and returns how many it closed. Other apps' sockets are not
// touched. It scans the descriptor table, so it is for rare events, not a
// hot path. Any goroutine may call it.
func (g *Gateway) CloseApp(appID string, code int, reason string) int {
	n := 0
	for i := range g.fds {
		// State first: a socket still in its handshake (accept.go) is in
		// the table while its poller sets c.app; the poller stores
		// stateOpen after that, so an open state makes c.app safe to read.
		c := g.fds[i].Load()
		if c == nil || c.state() != stateOpen || c.app == nil || c.app.ID != appID {
			continue
		}
		c.closeWith(code, reason)
		n++
	}
	return n
}

// Draining reports whether new upgrades are refused with 4200 (Drain).
func (g *Gateway) Draining() bool { return g.draining.Load() }

// AppConnections is how many connections of app are open on this node.
func (g *Gateway) AppConnections(appID string) int64 {
	if v, ok := g.appConns.Load(appID); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// verifyChannelAuth checks a channel signature against each of the app's
// secrets (the current one, then apps[].previous_secrets while a secret
// rotates; docs/operations.md), each compared in constant time. The error
// is the current secret's.
func verifyChannelAuth(a *app.App, socketID, channel, channelData, auth string) error {
	var first error
	for _, s := range a.Secrets() {
		err := protocol.VerifyChannelAuth(a.Key, s, socketID, channel, channelData, auth)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// verifyUserAuth is verifyChannelAuth for pusher:signin.
func verifyUserAuth(a *app.App, socketID, userData, auth string) error {
	var first error
	for _, s := range a.Secrets() {
		err := protocol.VerifyUserAuth(a.Key, s, socketID, userData, auth)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}
