package node

import (
	"context"
	"net/http"
	"os"
	"slices"
	"time"

	"herald/admin"
	"herald/bus"
)

// Status is GET /status: the node as an operator sees it (herald status).
type Status struct {
	Node          string             `json:"node"`              // the cluster node name, else the hostname
	Version       string             `json:"version,omitempty"` // Source.Version
	Started       time.Time          `json:"started"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Listen        string             `json:"listen"`         // the client port (WebSocket and REST)
	Admin         string             `json:"admin"`          // the admin API's URL
	NATS          string             `json:"nats,omitempty"` // the NATS client port's URL
	Ready         bool               `json:"ready"`          // what /readyz answers
	Draining      bool               `json:"draining"`       // new sockets are refused with 4200
	Connections   int64              `json:"connections"`    // WebSocket connections on this node
	AppsSource    string             `json:"apps_source"`    // "config" or "registry" (docs/apps.md)
	Apps          []AppStatus        `json:"apps"`
	Cluster       *ClusterStatus     `json:"cluster,omitempty"` // absent on a single node
	Regions       *bus.RegionInfo    `json:"regions,omitempty"` // absent without cluster.region (docs/regions.md)
	Streams       []bus.StreamHealth `json:"streams,omitempty"` // one per app; absent with streams off
	Store         *bus.StoreState    `json:"store,omitempty"`   // the store's disk (node/disk.go); absent with streams off or in external mode
	Config        ConfigStatus       `json:"config"`
}

// AppStatus is one app on this node.
type AppStatus struct {
	ID          string `json:"id"`
	Key         string `json:"key"`
	Enabled     bool   `json:"enabled"`
	Connections int64  `json:"connections"` // its WebSocket connections on this node
}

// ClusterStatus is the membership this node sees.
type ClusterStatus struct {
	Name    string         `json:"name"`
	Members []MemberStatus `json:"members"`
	// A closed cluster (closed.go): whether gossip is encrypted and routes
	// need the password, and how many of each were refused since start.
	// Never the keys themselves.
	GossipEncrypted bool   `json:"gossip_encrypted"`
	RouteAuth       bool   `json:"route_auth"`
	GossipRefused   uint64 `json:"gossip_refused"`
	RoutesRefused   uint64 `json:"routes_refused"`
}

// MemberStatus is one cluster member. Only live members are listed
// (memberlist's alive or suspect); a member that left or was declared dead
// is gone from the list.
type MemberStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`         // memberlist host:port
	HTTP    string `json:"http,omitempty"`  // its client port
	Route   string `json:"route,omitempty"` // its NATS route address
	State   string `json:"state"`           // "alive"
	Self    bool   `json:"self,omitempty"`
}

// ConfigStatus is where the config came from and what reloads did.
type ConfigStatus struct {
	File              string    `json:"file"`      // "" = no file
	LoadedAt          time.Time `json:"loaded_at"` // start, or the last reload that applied
	Reloads           int       `json:"reloads"`
	LastReloadError   string    `json:"last_reload_error,omitempty"`
	LastReloadErrorAt time.Time `json:"last_reload_error_at,omitzero"`
}

// Status reports the node's state. Stream health asks JetStream, one request
// per app (bus.StreamHealth).
func (n *Node) Status(ctx context.Context) Status {
	now := time.Now()
	s := Status{
		Version:       n.ops.src.Version,
		Started:       n.ops.started,
		UptimeSeconds: now.Sub(n.ops.started).Seconds(),
		Listen:        n.Addr().String(),
		Admin:         n.AdminURL(),
		NATS:          n.NATSURL(),
		Ready:         n.http.Ready(),
		Draining:      n.gw.Draining(),
		Connections:   n.gw.Stats().Connections,
	}
	if n.cl != nil {
		s.Node = n.cl.LocalName()
		cs := &ClusterStatus{Name: n.cfg.Cluster.Name, GossipEncrypted: n.cl.Encrypted(), RouteAuth: n.bus.RoutesClosed(),
			GossipRefused: n.cl.Stats().KeyRefused, RoutesRefused: n.bus.RoutesRefused()}
		for _, m := range n.cl.Members() {
			cs.Members = append(cs.Members, MemberStatus{Name: m.Name, Address: m.Addr, HTTP: m.Meta.HTTP,
				Route: m.Meta.Route, State: "alive", Self: m.Name == s.Node})
		}
		s.Cluster = cs
	} else if h, err := os.Hostname(); err == nil {
		s.Node = h
	}
	if ri, ok := n.bus.Regions(); ok {
		s.Regions = &ri
	}
	t := n.apps.Table()
	for _, a := range t.All() {
		s.Apps = append(s.Apps, AppStatus{ID: a.ID, Key: a.Key, Enabled: a.IsEnabled(), Connections: n.gw.AppConnections(a.ID)})
	}
	s.AppsSource = n.cfg.AppsSource
	ids := t.IDs()
	if n.fromRegistry() {
		// Registry apps get streams on first use: only those this node has
		// used are asked about (one JetStream request each).
		ids = slices.DeleteFunc(ids, func(id string) bool { return !n.bus.StreamKnown(id) })
	}
	s.Streams = n.bus.StreamHealth(ctx, ids)
	if n.bus.StreamEnabled() && n.bus.Server() != nil {
		st := n.bus.StoreState()
		s.Store = &st
	}
	n.ops.mu.Lock()
	s.Config = ConfigStatus{File: n.ops.src.Path, LoadedAt: n.ops.loadedAt, Reloads: n.ops.reloads,
		LastReloadError: n.ops.lastErr, LastReloadErrorAt: n.ops.lastErrAt}
	n.ops.mu.Unlock()
	return s
}

// statusHandler is GET /status.
func (n *Node) statusHandler(w http.ResponseWriter, r *http.Request) {
	admin.WriteJSON(w, http.StatusOK, n.Status(r.Context()))
}

// reloadHandler is POST /reload: 200 with the Changes, 422 with the error
// (naming the file and key) when the new config is refused, 400 when the
// node has no config source.
func (n *Node) reloadHandler(w http.ResponseWriter, r *http.Request) {
	ch, err := n.ReloadFromSource()
	switch {
	case err == ErrNoSource:
		admin.WriteError(w, http.StatusBadRequest, "%v", err)
	case err != nil:
		admin.WriteError(w, http.StatusUnprocessableEntity, "%v; the old config stays in force", err)
	default:
		admin.WriteJSON(w, http.StatusOK, ch)
	}
}
