package console

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"herald/admin"
	"herald/bus"
	"herald/debugtap"
	"herald/gateway"
)

// Stats at a glance: every node records, every historyStep, each app's
// open connections and its message and delivery counters (the figures
// behind herald_app_connections, herald_messages_in_total and
// herald_deliveries_total: gateway.Metrics), and answers the console's
// question on bus.SysDebugStatsSubject with the current figures and the
// last historyLen steps as rates. Recording reads a few atomics per app
// every historyStep whether or not a console is open, so the sparklines
// have minutes of history the moment one opens.

// historyStep and historyLen: six minutes of five-second steps.
var historyStep = 5 * time.Second

const historyLen = 72

// askWait bounds a console question to the other nodes.
const askWait = 500 * time.Millisecond

type point struct {
	at    time.Time
	conns int64
	in    uint64 // herald_messages_in_total
	out   uint64 // herald_deliveries_total
}

// history is each app's recent points, oldest first.
type history struct {
	mu   sync.Mutex
	apps map[string][]point
}

func newHistory() *history { return &history{apps: map[string][]point{}} }

func (h *history) record(m gateway.Metrics, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, a := range m.Apps {
		pts := append(h.apps[id], point{at: now, conns: a.Connections, in: a.MessagesIn, out: a.Deliveries})
		if len(pts) > historyLen+1 {
			pts = append(pts[:0], pts[len(pts)-historyLen-1:]...)
		}
		h.apps[id] = pts
	}
}

func (h *history) points(app string) []point {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]point(nil), h.apps[app]...)
}

func (c *Console) sample() {
	defer c.wg.Done()
	t := time.NewTicker(historyStep)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.hist.record(c.cfg.Gateway.Metrics(), now)
		}
	}
}

// NodeStats is one node's figures for one app.
type NodeStats struct {
	Node          string  `json:"node"`
	Connections   int64   `json:"connections"`
	Channels      int     `json:"channels"` // channels with a subscriber on this node
	MessagesIn    uint64  `json:"messages_in_total"`
	Deliveries    uint64  `json:"deliveries_total"`
	MessagesInPS  float64 `json:"messages_in_per_s"` // since the last recorded step
	DeliveriesPS  float64 `json:"deliveries_per_s"`
	PresenceUsers int64   `json:"presence_members"`
	History       Series  `json:"history"`
	// Tap is this node's debug event producer: its sampling and losses.
	Tap debugtap.Status `json:"tap"`
}

// Series is the sparkline data, oldest first, one value per StepSeconds.
type Series struct {
	StepSeconds  float64   `json:"step_s"`
	Connections  []int64   `json:"connections"`
	MessagesInPS []float64 `json:"messages_in_per_s"`
	DeliveriesPS []float64 `json:"deliveries_per_s"`
}

type statsRequest struct {
	App string `json:"app"`
}

// localStats are this node's figures for app.
func (c *Console) localStats(appID string) NodeStats {
	m := c.cfg.Gateway.Metrics()
	a := m.Apps[appID]
	now := time.Now()
	st := NodeStats{
		Node: c.cfg.Node, Connections: a.Connections, MessagesIn: a.MessagesIn, Deliveries: a.Deliveries,
		PresenceUsers: a.PresenceMembers, Tap: c.cfg.Tap.Status(),
		History: Series{StepSeconds: historyStep.Seconds(), Connections: []int64{}, MessagesInPS: []float64{}, DeliveriesPS: []float64{}},
	}
	c.cfg.Gateway.Channels(appID, func(string, int) { st.Channels++ })
	pts := c.hist.points(appID)
	pts = append(pts, point{at: now, conns: a.Connections, in: a.MessagesIn, out: a.Deliveries})
	for i := 1; i < len(pts); i++ {
		p, q := pts[i-1], pts[i]
		dt := q.at.Sub(p.at).Seconds()
		if dt <= 0 {
			continue
		}
		in, out := rate(p.in, q.in, dt), rate(p.out, q.out, dt)
		if i == len(pts)-1 {
			st.MessagesInPS, st.DeliveriesPS = in, out
			break // the partial step is the current rate, not a point
		}
		st.History.Connections = append(st.History.Connections, q.conns)
		st.History.MessagesInPS = append(st.History.MessagesInPS, in)
		st.History.DeliveriesPS = append(st.History.DeliveriesPS, out)
	}
	return st
}

func rate(a, b uint64, dt float64) float64 {
	if b < a {
		return 0
	}
	return float64(b-a) / dt
}

// answerStats answers bus.SysDebugStatsSubject.
func (c *Console) answerStats(req []byte) []byte {
	var r statsRequest
	if json.Unmarshal(req, &r) != nil || !bus.ValidApp(r.App) {
		return nil
	}
	b, _ := json.Marshal(c.localStats(r.App))
	return b
}

// StatsAnswer is GET /console/api/stats: every node's figures and their
// sums.
type StatsAnswer struct {
	App          string      `json:"app"`
	Connections  int64       `json:"connections"`
	Channels     int         `json:"channels"` // summed over nodes: a channel with subscribers on two nodes counts twice
	MessagesInPS float64     `json:"messages_in_per_s"`
	DeliveriesPS float64     `json:"deliveries_per_s"`
	Nodes        []NodeStats `json:"nodes"`
}

func (c *Console) stats(w http.ResponseWriter, r *http.Request, s scope) {
	a, ok := c.app(w, s, r.URL.Query().Get("app"))
	if !ok {
		return
	}
	req, _ := json.Marshal(statsRequest{App: a.ID})
	answers, err := c.cfg.Bus.AskDebug(r.Context(), bus.SysDebugStatsSubject, req, c.cfg.Members(), askWait, nil)
	if err != nil && len(answers) == 0 {
		admin.WriteError(w, http.StatusServiceUnavailable, "console: stats: %v", err)
		return
	}
	out := StatsAnswer{App: a.ID, Nodes: []NodeStats{}}
	for _, b := range answers {
		var ns NodeStats
		if json.Unmarshal(b, &ns) != nil {
			continue
		}
		out.Nodes = append(out.Nodes, ns)
		out.Connections += ns.Connections
		out.Channels += ns.Channels
		out.MessagesInPS += ns.MessagesInPS
		out.DeliveriesPS += ns.DeliveriesPS
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Node < out.Nodes[j].Node })
	admin.WriteJSON(w, http.StatusOK, out)
}

// socketRequest and socketAnswer are the inspector's question and a
// node's answer on bus.SysDebugSocketSubject.
type socketRequest struct {
	App      string `json:"app"`
	SocketID string `json:"socket_id"`
}

type socketAnswer struct {
	Node   string              `json:"node"`
	Found  bool                `json:"found"`
	Socket *gateway.SocketInfo `json:"socket,omitempty"`
}

func (c *Console) answerSocket(req []byte) []byte {
	var r socketRequest
	if json.Unmarshal(req, &r) != nil || !bus.ValidApp(r.App) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), askWait/2)
	defer cancel()
	a := socketAnswer{Node: c.cfg.Node}
	if info, err := c.cfg.Gateway.Inspect(ctx, r.App, r.SocketID); err == nil {
		a.Found, a.Socket = true, &info
	}
	b, _ := json.Marshal(a)
	return b
}

// socket is GET /console/api/socket?app=&socket_id=: the socket's node
// answers with its snapshot (every node is asked; the id's node part
// lets the others answer at once).
func (c *Console) socket(w http.ResponseWriter, r *http.Request, s scope) {
	q := r.URL.Query()
	a, ok := c.app(w, s, q.Get("app"))
	if !ok {
		return
	}
	id := q.Get("socket_id")
	req, _ := json.Marshal(socketRequest{App: a.ID, SocketID: id})
	found := func(b []byte) bool {
		var sa socketAnswer
		return json.Unmarshal(b, &sa) == nil && sa.Found
	}
	answers, _ := c.cfg.Bus.AskDebug(r.Context(), bus.SysDebugSocketSubject, req, c.cfg.Members(), askWait, found)
	for _, b := range answers {
		var sa socketAnswer
		if json.Unmarshal(b, &sa) == nil && sa.Found {
			admin.WriteJSON(w, http.StatusOK, sa)
			return
		}
	}
	admin.WriteError(w, http.StatusNotFound, "console: no open connection of app %s has socket id %q (asked %d nodes)", a.ID, id, len(answers))
}
