package node

import (
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"herald/gateway"
)

// Cluster-wide channel queries are a scatter-gather over NATS: the asking
// node publishes one request that every node answers from its own local
// index, and waits for as many answers as memberlist reports live nodes, or
// a short timeout, whichever comes first. A dead node is not in the member
// list, so nobody waits on it; a node that died a moment ago costs at most
// the timeout. Gossiped aggregates would answer without a round trip but be
// stale by a gossip interval and cost gossip traffic on every subscribe; a
// query is rare next to subscribes, so the round trip is the better trade.
const (
	sysSubject   = "herald.sys.channels"
	gatherWait   = 500 * time.Millisecond
	maxSysAnswer = 4 << 20
)

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

// sysResponder answers other nodes' queries from this node's gateway.
type sysResponder struct {
	name string
	gw   *gateway.Gateway
	nc   *nats.Conn
	sub  *nats.Subscription
	log  *slog.Logger
}

func startSysResponder(name string, gw *gateway.Gateway, nc *nats.Conn, log *slog.Logger) (*sysResponder, error) {
	r := &sysResponder{name: name, gw: gw, nc: nc, log: log}
	// One subscription, so one goroutine, whatever the load: queries are
	// rare and cheap to answer.
	sub, err := nc.Subscribe(sysSubject, r.answer)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	return r, nc.Flush()
}

func (r *sysResponder) answer(m *nats.Msg) {
	var q sysRequest
	if err := json.Unmarshal(m.Data, &q); err != nil {
		return
	}
	app, ok := r.gw.AppByID(q.App)
	if !ok {
		return
	}
	a := sysAnswer{Node: r.name}
	switch q.Op {
	case "count":
		a.Count = r.gw.SubscriptionCount(app, q.Channel)
	case "list":
		a.Channels = map[string]int{}
		r.gw.Channels(app, func(name string, n int) {
			if strings.HasPrefix(name, q.Channel) {
				a.Channels[name] = n
			}
		})
	case "terminate":
		a.Count = r.gw.TerminateUser(app, q.User)
	default:
		return
	}
	if m.Reply == "" {
		return
	}
	b, _ := json.Marshal(a)
	_ = r.nc.Publish(m.Reply, b)
}

func (r *sysResponder) stop() {
	if r != nil && r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
}

// clusterChannels answers the REST API's channel queries for the whole
// cluster: counts by scatter-gather, presence from the gossiped registry.
type clusterChannels struct {
	gw      *gateway.Gateway
	nc      *nats.Conn
	members func() int // live nodes, this one included
	log     *slog.Logger
}

// gather sends q to every node and returns the answers that came back from
// the live nodes within gatherWait.
func (cc clusterChannels) gather(q sysRequest) []sysAnswer {
	want := max(1, cc.members())
	inbox := cc.nc.NewRespInbox()
	ch := make(chan *nats.Msg, want+8)
	sub, err := cc.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		cc.log.Warn("cluster query: subscribe", "err", err)
		return nil
	}
	defer sub.Unsubscribe()
	b, _ := json.Marshal(q)
	if err := cc.nc.PublishRequest(sysSubject, inbox, b); err != nil {
		cc.log.Warn("cluster query: publish", "err", err)
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
			cc.log.Warn("cluster query: answers missing", "op", q.Op, "got", len(seen), "want", want)
			return out
		}
	}
	return out
}

func (cc clusterChannels) SubscriptionCount(app *gateway.App, ch string) int {
	n := 0
	for _, a := range cc.gather(sysRequest{Op: "count", App: app.ID, Channel: ch}) {
		n += a.Count
	}
	return n
}

func (cc clusterChannels) UserCount(app *gateway.App, ch string) int { return cc.gw.UserCount(app, ch) }

func (cc clusterChannels) Users(app *gateway.App, ch string) []string { return cc.gw.Users(app, ch) }

func (cc clusterChannels) Occupied(app *gateway.App, fn func(string, int)) {
	total := map[string]int{}
	for _, a := range cc.gather(sysRequest{Op: "list", App: app.ID}) {
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

func (cc clusterChannels) TerminateUser(app *gateway.App, user string) {
	cc.gather(sysRequest{Op: "terminate", App: app.ID, User: user})
}
