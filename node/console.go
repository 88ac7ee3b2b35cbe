package node

import (
	"herald/app"
	"herald/console"
	"herald/debugtap"
)

// The debug console (docs/console.md): every node has a debug tap (its
// hooks in the gateway, the API and the lifecycle consumers) and answers
// the console's questions over NATS, so a console on any node sees them
// all; the page and its endpoints are on the admin listener (adminRoutes).

// startTap builds the node's debug event producer, publishing through the
// bus. Before the gateway and the API, which call its hooks.
func (n *Node) startTap() {
	name := n.cfg.Cluster.LocalName()
	n.tap = debugtap.New(debugtap.Config{
		Node:    name,
		Publish: func(appID string, data []byte) error { return n.bus.PublishDebug(appID, name, data) },
		Logger:  n.log.With("part", "debugtap"),
	})
}

// startConsole answers the console's node-to-node questions; after the
// API, whose publish path the event creator uses.
func (n *Node) startConsole() error {
	members := func() int { return 1 }
	if cl := n.cl; cl != nil {
		members = func() int { return len(cl.Members()) }
	}
	c, err := console.Start(console.Config{
		Node:       n.cfg.Cluster.LocalName(),
		Bus:        n.bus,
		Gateway:    n.gw,
		Tap:        n.tap,
		Apps:       n.apps,
		AdminToken: n.cfg.Admin.Token,
		Publish: func(a *app.App, body []byte) ([]byte, error) {
			return n.http.Events(a, body, debugtap.KindConsolePublish)
		},
		Members: members,
		Logger:  n.log.With("part", "console"),
	})
	if err != nil {
		return err
	}
	n.console = c
	return nil
}

// stopConsole ends the console's streams (before the admin listener's
// shutdown waits for them) and the tap.
func (n *Node) stopConsole() {
	n.console.Stop()
	n.tap.Close()
}

// Tap returns the node's debug event producer.
func (n *Node) Tap() *debugtap.Tap { return n.tap }
