package bus

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Route authorization (ClusterConfig.Passwords; docs/deploy.md, "A closed
// cluster").
//
// With passwords set, every route this node dials carries the user
// RouteUser and Passwords[0] (in the configured route URLs, and through
// opts.Cluster for the routes the server learns from its peers), and every
// route that dials in must present RouteUser and one of Passwords, or the
// server closes it before it carries anything: no subscription, message,
// JetStream or Raft traffic crosses an unauthenticated route. A node with
// the wrong password therefore gets no route and so no cluster: it cannot
// elect, replicate or read streams, and sees none of the others' events.
//
// The check is Herald's own (opts.CustomRouterAuthentication) rather than
// the server's single user/password, so that it can accept older passwords
// during a rotation, compare in constant time over digests (no length
// leak), count refusals (Stats.RoutesRefused) and log each refusing
// address once a minute at warning level with what was wrong. The accepted
// set can be replaced live (SetRoutePasswords); the password a node sends
// is fixed at start.

// RouteUser is the user name a route presents when route passwords are set.
const RouteUser = "herald-route"

// routeRefuseLogEvery is how often one address's refused routes are logged
// (a refused node redials every second or so).
const routeRefuseLogEvery = time.Minute

type routeAuth struct {
	accepted atomic.Pointer[[][sha256.Size]byte]
	refused  atomic.Uint64
	log      func(msg string, args ...any)

	mu   sync.Mutex
	last map[string]time.Time // remote host → when last logged
}

func newRouteAuth(passwords []string, warn func(msg string, args ...any)) *routeAuth {
	a := &routeAuth{log: warn, last: make(map[string]time.Time)}
	a.set(passwords)
	return a
}

func (a *routeAuth) set(passwords []string) {
	sums := make([][sha256.Size]byte, len(passwords))
	for i, p := range passwords {
		sums[i] = sha256.Sum256([]byte(p))
	}
	a.accepted.Store(&sums)
}

// Check implements server.Authentication for routes.
func (a *routeAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	got := sha256.Sum256([]byte(o.Password))
	ok := 0
	for _, want := range *a.accepted.Load() {
		ok |= subtle.ConstantTimeCompare(want[:], got[:])
	}
	if ok == 1 && o.Username == RouteUser {
		return true
	}
	a.refused.Add(1)
	why := "wrong cluster.route_auth password"
	switch {
	case o.Username == "" && o.Password == "":
		why = "no credentials (the dialing node has no cluster.route_auth)"
	case o.Username != RouteUser:
		why = "unknown route user"
	}
	remote := "unknown"
	if addr := c.RemoteAddress(); addr != nil {
		remote = addr.String()
	}
	if a.shouldLog(hostOf(remote), time.Now()) {
		a.log("bus: refused a NATS route: "+why, "remote", remote, "routes_refused_total", a.refused.Load())
	}
	return false
}

func (a *routeAuth) shouldLog(host string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.last) >= 1024 {
		clear(a.last)
	}
	if t, ok := a.last[host]; ok && now.Sub(t) < routeRefuseLogEvery {
		return false
	}
	a.last[host] = now
	return true
}

// hostOf drops the port: a redialing node comes from a new port each time.
func hostOf(addr string) string {
	u := url.URL{Host: addr}
	if h := u.Hostname(); h != "" {
		return h
	}
	return addr
}

// applyRouteAuth sets the route credentials on opts (after applyCluster).
func applyRouteAuth(opts *server.Options, cfg Config, ra *routeAuth) {
	pw := cfg.Cluster.Passwords
	if len(pw) == 0 {
		return
	}
	if ra == nil {
		ra = newRouteAuth(pw, cfg.Logger.Warn)
	}
	// Username makes the server announce auth_required on its route port
	// and is what it sends on implicit routes; the check itself is ra's.
	opts.Cluster.Username, opts.Cluster.Password = RouteUser, pw[0]
	opts.CustomRouterAuthentication = ra
	for _, r := range opts.Routes {
		r.User = url.UserPassword(RouteUser, pw[0])
	}
}

// SetRoutePasswords replaces the route passwords this node accepts, the
// one it sends always included (what a node sends is fixed at start). It does nothing
// on a node started without route passwords (turning route auth on or off
// needs a restart) and reports whether it applied.
func (b *Bus) SetRoutePasswords(passwords []string) bool {
	if b.routeAuth == nil || len(passwords) == 0 {
		return false
	}
	// The password this node sends stays accepted: its peers send the
	// same until they restart.
	sent := b.cfg.Cluster.Passwords[0]
	b.routeAuth.set(append(slices.Clone(passwords), sent))
	return true
}

// RoutesClosed reports whether routes need a password (started with
// Cluster.Passwords).
func (b *Bus) RoutesClosed() bool { return b.routeAuth != nil }

// RoutesRefused counts routes refused for their credentials since start.
func (b *Bus) RoutesRefused() uint64 {
	if b.routeAuth == nil {
		return 0
	}
	return b.routeAuth.refused.Load()
}

// routeTLSTimeout bounds a route's TLS handshake.
const routeTLSTimeout = 2 * time.Second

// routeTLSConfig is the routes' TLS: this node's certificate, peers'
// certificates required and verified against the CA both ways (a node
// dials and accepts routes alike), TLS 1.2 at least.
func routeTLSConfig(r RouteTLS) (*tls.Config, error) {
	for _, f := range []struct{ name, val string }{{"CertFile", r.CertFile}, {"KeyFile", r.KeyFile}, {"CAFile", r.CAFile}} {
		if f.val == "" {
			return nil, fmt.Errorf("%w: route TLS needs CertFile, KeyFile and CAFile (%s is empty)", ErrClusterConfig, f.name)
		}
	}
	c, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: r.CertFile, KeyFile: r.KeyFile, CaFile: r.CAFile, Verify: true})
	if err != nil {
		return nil, fmt.Errorf("%w: route TLS: %v", ErrClusterConfig, err)
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.RootCAs = c.ClientCAs
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c, nil
}
