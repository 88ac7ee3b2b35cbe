package bus

import (
	"fmt"
	"net/url"

	"github.com/nats-io/nats-server/v2/server"
)

// Leaf mode (Config.Mode == ModeLeaf).
//
// The node runs its embedded server exactly as in embedded mode (standalone
// or clustered, with or without a client port) and that server also keeps a
// leaf node connection to an existing deployment, the hub, at one of
// Config.LeafRemotes (several URLs are alternatives for the same hub). A
// region runs Herald nodes next to its users; the hub is the central NATS
// that backends already use.
//
// What crosses the leaf connection, in the node's account:
//
//	herald.<app>.api.>   both ways: a backend on the hub sends API requests
//	                     (docs/nats.md) that a leaf node answers; queue group
//	                     herald-api, so one node handles each
//	herald.<app>.live.>  both ways: the hub sees every event the leaf stores
//	                     (with its serial headers), and live events on the
//	                     hub reach the leaf's subscribers
//	_INBOX.>             replies
//
// What stays on the leaf (LeafLocalSubjects, denied both ways):
//
//	herald.<app>.msg.>, herald.<app>.cache.>  the stream subjects: the
//	                     streams live in the leaf's own JetStream and store
//	                     only what the leaf's nodes publish; letting them cross
//	                     would make every other JetStream with such a stream
//	                     (another leaf) store and republish the event again
//	herald.sys.>         node-to-node queries stay within the region's nodes
//	$JS.API.>            nats-server denies it on every leaf connection;
//	                     the hub reaches this leaf's JetStream as
//	                     $JS.<JetStreamDomain>.API.> (nats --js-domain)
//
// One region per app and hub: a live event's serial is a sequence of the
// stream that stored it, and the leaf's subscribers, duplicate and gap
// checks (gapfill.go) and replay know only the leaf's own stream. Events of
// a second region storing the same app would arrive with serials from
// another sequence. Keeping them out is not possible with the leaf
// connection's deny lists: denying the import of live subjects also filters
// what the hub's wildcard subscriptions (herald.<app>.live.>) receive from
// the leaf (nats-server applies a leaf connection's subscribe denies to the
// remote's subscriptions too).
//
// A hub that is down or unreachable does not stop the node: its own clients
// keep publishing and receiving; the server retries the leaf connection
// every 1 to 2 seconds and logs failures at error level (the first, then
// periodically). LeafConnections shows the link.

// LeafLocalSubjects are the subjects a leaf node neither sends to nor
// accepts from its hub (see the top of this file).
var LeafLocalSubjects = []string{
	subjectRoot + "*.msg.>",
	subjectRoot + "*" + cacheInfix + ">",
	subjectRoot + "sys.>",
}

// checkLeaf validates cfg for leaf mode.
func checkLeaf(cfg Config) error {
	if err := checkURLs("LeafRemotes", cfg.LeafRemotes, "nats-leaf", "nats", "tls", "ws", "wss"); err != nil {
		return err
	}
	if err := checkAuth(cfg); err != nil {
		return err
	}
	switch {
	case cfg.JetStreamDomain == "":
		return fmt.Errorf("%w: leaf mode needs a JetStreamDomain for the leaf's own JetStream (unique per region)", ErrModeConfig)
	case len(cfg.URLs) > 0:
		return fmt.Errorf("%w: URLs are for external mode (leaf mode uses LeafRemotes)", ErrModeConfig)
	case cfg.Replicas > 1:
		return fmt.Errorf("%w: Replicas is for external mode (a clustered leaf uses min(3, nodes))", ErrModeConfig)
	}
	return nil
}

// applyLeaf adds the leaf connection and the JetStream domain to opts
// (built by serverOptions). cfg must have passed checkLeaf.
func applyLeaf(opts *server.Options, cfg Config) {
	urls := make([]*url.URL, 0, len(cfg.LeafRemotes))
	for _, raw := range cfg.LeafRemotes {
		u, _ := url.Parse(raw)
		if u.User == nil && cfg.User != "" {
			u.User = url.UserPassword(cfg.User, cfg.Password)
		}
		urls = append(urls, u)
	}
	opts.LeafNode.Remotes = []*server.RemoteLeafOpts{{
		URLs:        urls,
		Credentials: cfg.Credentials,
		DenyImports: LeafLocalSubjects,
		DenyExports: LeafLocalSubjects,
	}}
	opts.JetStreamDomain = cfg.JetStreamDomain
}

// LeafConnections is the number of leaf connections to the hub that are up:
// 0 or 1 in leaf mode (0 while the hub is unreachable), always 0 in the
// other modes. It is cheap.
func (b *Bus) LeafConnections() int {
	if b.cfg.Mode != ModeLeaf || b.srv == nil {
		return 0
	}
	return b.srv.NumLeafNodes()
}
