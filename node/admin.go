package node

import (
	"herald/admin"
)

// startAdmin binds the admin listener (admin.listen; "" = none) and
// registers every part's endpoints (docs/operations.md lists them). Binding
// happens before the other parts start, so a taken port fails the start
// with one error.
func (n *Node) startAdmin() error {
	if n.cfg.Admin.Listen == "" {
		return nil
	}
	s, err := admin.Listen(admin.Config{
		Listen: n.cfg.Admin.Listen,
		Token:  n.cfg.Admin.Token,
		Logger: n.log.With("part", "admin"),
	})
	if err != nil {
		return err
	}
	n.admin = s
	return nil
}

// serveAdmin registers the endpoints, once every part is up, and serves.
func (n *Node) serveAdmin() {
	if n.admin == nil {
		return
	}
	n.adminRoutes(n.admin)
	n.admin.Serve()
}

// adminRoutes registers the admin endpoints of the node's parts.
func (n *Node) adminRoutes(s *admin.Server) {
	s.Handle("GET /status", n.statusHandler) // status.go
	s.Handle("POST /reload", n.reloadHandler)
	n.appsRoutes(s) // /apps (appsadmin.go, docs/apps.md)
	if n.webhooks != nil {
		n.webhooks.Routes(s) // GET /webhooks/status, POST /webhooks/replay
	}
	n.drainRoutes(s)    // POST /drain, GET /drain (drain.go)
	n.console.Routes(s) // GET /console and /console/api/* (docs/console.md)
}

// AdminURL is the admin API's base URL (http://host:port), or "" when
// admin.listen is off.
func (n *Node) AdminURL() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.URL()
}
