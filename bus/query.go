package bus

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Cluster-wide channel queries are a scatter-gather over NATS: the asking
// node publishes one request on SysChannelsSubject that every node answers
// from its own local index, and waits for as many answers as memberlist
// reports live nodes, or a short timeout, whichever comes first. A dead node
// is not in the member list, so nobody waits on it; a node that died a
// moment ago costs at most the timeout. Gossiped aggregates would answer
// without a round trip but be stale by a gossip interval and cost gossip
// traffic on every subscribe; a query is rare next to subscribes, so the
// round trip is the better trade (docs/design.md, "Queries").
const (
	gatherWait   = 500 * time.Millisecond
	maxSysAnswer = 4 << 20
)

// LocalIndex answers channel questions about this node's own connections
// (the gateway implements it).
type LocalIndex interface {
	SubscriptionCount(app, channel string) int
	Channels(app string, fn func(name string, subscriptions int))
	TerminateUser(app, userID string) int
}

// sysRequest is a question every node answers about its local connections.
type sysRequest struct {
	Op        string `json:"op"` // "count", "list" or "terminate"
	App       string `json:"app"`
	Channel   string `json:"channel,omitempty"`
	User      string `json:"user,omitempty"`
	Requester string `json:"from,omitempty"`
}

type sysAnswer struct {
	Node     string         `json:"node"`
	Count    int            `json:"count,omitempty"`
	Channels map[string]int `json:"channels,omitempty"`
}

// ChannelQueries answers channel counts, channel lists and user terminations
// for the whole cluster, and answers the other nodes' queries from local.
// Its methods are safe for concurrent use.
type ChannelQueries struct {
	node    string
	local   LocalIndex
	members func() int // live nodes, this one included
	nc      *nats.Conn
	sub     *nats.Subscription
	log     *slog.Logger
}

// ServeChannelQueries starts answering other nodes' queries as node, from
// local, and returns the cluster-wide view; members reports how many nodes
// are live (this one included). One subscription, so one goroutine, whatever
// the load: queries are rare and cheap to answer.
func (b *Bus) ServeChannelQueries(node string, local LocalIndex, members func() int) (*ChannelQueries, error) {
	q := &ChannelQueries{node: node, local: local, members: members, nc: b.nc, log: b.log.With("part", "query")}
	sub, err := b.nc.Subscribe(SysChannelsSubject, q.answer)
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", SysChannelsSubject, err)
	}
	q.sub = sub
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe %s: %w", SysChannelsSubject, err)
	}
	return q, nil
}

// Stop stops answering other nodes. A nil *ChannelQueries is fine.
func (q *ChannelQueries) Stop() {
	if q != nil && q.sub != nil {
		_ = q.sub.Unsubscribe()
	}
}

func (q *ChannelQueries) answer(m *nats.Msg) {
	var r sysRequest
	if err := json.Unmarshal(m.Data, &r); err != nil || !ValidApp(r.App) {
		return
	}
	a := sysAnswer{Node: q.node}
	switch r.Op {
	case "count":
		a.Count = q.local.SubscriptionCount(r.App, r.Channel)
	case "list":
		a.Channels = map[string]int{}
		q.local.Channels(r.App, func(name string, n int) {
			if strings.HasPrefix(name, r.Channel) {
				a.Channels[name] = n
			}
		})
	case "terminate":
		a.Count = q.local.TerminateUser(r.App, r.User)
	default:
		return
	}
	if m.Reply == "" {
		return
	}
	b, _ := json.Marshal(a)
	_ = q.nc.Publish(m.Reply, b)
}

// gather sends r to every node and returns the answers that came back from
// the live nodes within gatherWait.
func (q *ChannelQueries) gather(r sysRequest) []sysAnswer {
	want := max(1, q.members())
	inbox := q.nc.NewRespInbox()
	ch := make(chan *nats.Msg, want+8)
	sub, err := q.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		q.log.Warn("cluster query: subscribe", "err", err)
		return nil
	}
	defer sub.Unsubscribe()
	b, _ := json.Marshal(r)
	if err := q.nc.PublishRequest(SysChannelsSubject, inbox, b); err != nil {
		q.log.Warn("cluster query: publish", "err", err)
		return nil
	}
	timeout := time.NewTimer(gatherWait)
	defer timeout.Stop()
	seen := make(map[string]bool, want)
	var out []sysAnswer
	for len(seen) < want {
		select {
		case m := <-ch:
			var a sysAnswer
			if len(m.Data) > maxSysAnswer || json.Unmarshal(m.Data, &a) != nil || seen[a.Node] {
				continue
			}
			seen[a.Node] = true
			out = append(out, a)
		case <-timeout.C:
			q.log.Warn("cluster query: answers missing", "op", r.Op, "got", len(seen), "want", want)
			return out
		}
	}
	return out
}

// SubscriptionCount is the number of connections subscribed to the channel
// on every live node.
func (q *ChannelQueries) SubscriptionCount(app, channel string) int {
	n := 0
	for _, a := range q.gather(sysRequest{Op: "count", App: app, Channel: channel}) {
		n += a.Count
	}
	return n
}

// Channels calls fn for every channel of the app with a subscriber on some
// live node, with its cluster-wide subscription count.
func (q *ChannelQueries) Channels(app string, fn func(name string, subscriptions int)) {
	total := map[string]int{}
	for _, a := range q.gather(sysRequest{Op: "list", App: app}) {
		for name, n := range a.Channels {
			total[name] += n
		}
	}
	for name, n := range total {
		if n > 0 {
			fn(name, n)
		}
	}
}

// TerminateUser closes the user's connections on every live node and
// returns how many were closed.
func (q *ChannelQueries) TerminateUser(app, userID string) int {
	n := 0
	for _, a := range q.gather(sysRequest{Op: "terminate", App: app, User: userID}) {
		n += a.Count
	}
	return n
}
