package bus

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"regexp"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"herald/app"
)

// Authentication on the embedded server's client port.
//
// The server does not hold a user list of its own: clientAuth is its
// CustomClientAuthentication and decides every login from the app registry
// as it is at that moment (Config.AppRegistry), so a reloaded registry
// (app.Registry.Replace) takes effect for the next connection without
// touching the server's options. That is also what lets an app's NATS user
// accept several passwords while a secret rotates (apps[].previous_secrets),
// which nats-server's own users, one password each, cannot. Connections
// already open are checked again by RecheckClients after a reload.
//
// Logins accepted:
//   - the node's own connection: internalUser with the generated password,
//     full permissions, in the global account;
//   - an app's user name with its NATS password (nats.password, else the
//     secret or, while listed, one of previous_secrets), in the app's own
//     account (accounts.go) and fenced there by AccountPermissions;
//   - an app's nkey (nats.nkey), with a signature over the nonce the server
//     sent (AlwaysEnableNonce), placed and fenced the same way.
//
// Passwords are compared in constant time, each one listed; a password
// starting with a bcrypt prefix ("$2a$10$...") is a hash.

// clientAuth implements server.Authentication.
type clientAuth struct {
	internalPassword string
	static           []ClientUser  // Config.ClientUsers given by the caller; used when apps is nil
	apps             *app.Registry // the registry read at every login, or nil
	idx              atomic.Pointer[userIndex]
	// accounts are the apps' accounts (accounts.go); set before the server
	// starts, nil until then (and with no server: the static users' tests).
	accounts atomic.Pointer[appAccounts]
}

// userIndex is the logins of one app table (or of the static users).
type userIndex struct {
	table  *app.Table // the table it was built from; nil for static users
	byUser map[string]*authUser
	byNkey map[string]*authUser
}

// authUser is one app's credentials and permissions.
type authUser struct {
	app       string
	passwords []string // the current one first
	perms     *server.Permissions
}

func newClientAuth(cfg Config) *clientAuth {
	a := &clientAuth{internalPassword: cfg.internalPassword}
	switch {
	case cfg.ClientListen == "":
		// Only the node's own user may log in (a clustered node without a
		// client port; cluster.go).
	case cfg.usersFromApps:
		a.apps = cfg.AppRegistry
	default:
		a.static = cfg.ClientUsers
	}
	return a
}

// index returns the logins of the current app table, building them once
// per table.
func (a *clientAuth) index() *userIndex {
	var t *app.Table
	if a.apps != nil {
		t = a.apps.Table()
	}
	if idx := a.idx.Load(); idx != nil && idx.table == t {
		return idx
	}
	users := a.static
	if t != nil {
		users = ClientUsersOf(t.All())
	}
	idx := &userIndex{table: t, byUser: make(map[string]*authUser, len(users)), byNkey: make(map[string]*authUser)}
	perms := make(map[string]*server.Permissions)
	for _, u := range users {
		p := perms[u.App]
		if p == nil {
			p = AccountPermissions(u.App)
			perms[u.App] = p
		}
		au := &authUser{app: u.App, passwords: append([]string{u.Password}, u.PreviousPasswords...), perms: p}
		if u.User != "" && u.User != internalUser {
			if _, dup := idx.byUser[u.User]; !dup { // app.ValidateSet keeps them unique
				idx.byUser[u.User] = au
			}
		}
		if u.Nkey != "" {
			if _, dup := idx.byNkey[u.Nkey]; !dup {
				idx.byNkey[u.Nkey] = au
			}
		}
	}
	a.idx.Store(idx)
	return idx
}

// Check decides a login (server.Authentication).
func (a *clientAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o == nil {
		return false
	}
	perms, app, ok := a.authorize(o.Username, o.Password, o.Nkey, func(pub nkeys.KeyPair) bool {
		return verifyNonce(pub, c.GetNonce(), o.Sig)
	})
	if !ok {
		return false
	}
	// Username "" leaves the client's own options as they are.
	u := &server.User{Permissions: perms}
	if app != "" {
		x := a.accounts.Load()
		if x == nil {
			return false // the server is not started yet
		}
		acc, err := x.account(app)
		if err != nil {
			return false
		}
		u.Account = acc
	}
	c.RegisterUser(u)
	return true
}

// authorize checks one set of credentials and returns the permissions they
// get (nil: full, the node's own user) and the app they belong to ("" for
// the node's own user). signed verifies an nkey's signature; nil accepts a
// listed nkey without one (a recheck of an established connection).
func (a *clientAuth) authorize(user, password, nkey string, signed func(nkeys.KeyPair) bool) (*server.Permissions, string, bool) {
	if nkey != "" {
		u := a.index().byNkey[nkey]
		if u == nil {
			return nil, "", false
		}
		if signed != nil {
			pub, err := nkeys.FromPublicKey(nkey)
			if err != nil || !signed(pub) {
				return nil, "", false
			}
		}
		return u.perms, u.app, true
	}
	if user == "" {
		return nil, "", false
	}
	if user == internalUser {
		if a.internalPassword == "" || !equalPassword(a.internalPassword, password) {
			return nil, "", false
		}
		return nil, "", true
	}
	u := a.index().byUser[user]
	if u == nil {
		return nil, "", false
	}
	ok := false
	for _, p := range u.passwords { // every one, so the time does not say which matched
		if p != "" && equalPassword(p, password) {
			ok = true
		}
	}
	return u.perms, u.app, ok
}

// bcryptPrefix is the form of a bcrypt hash, as nats-server recognizes it.
var bcryptPrefix = regexp.MustCompile(`^\$2[abxy]\$\d{2}\$`)

// equalPassword compares a client's password with a configured one (plain,
// in constant time, or a bcrypt hash).
func equalPassword(want, got string) bool {
	if bcryptPrefix.MatchString(want) {
		return bcrypt.CompareHashAndPassword([]byte(want), []byte(got)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// verifyNonce checks an nkey's signature over the server's nonce.
func verifyNonce(pub nkeys.KeyPair, nonce []byte, sig string) bool {
	if len(nonce) == 0 || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	return pub.Verify(nonce, raw) == nil
}

// accountOf is the account name a login of app is in.
func accountOf(app string) string {
	if app == "" {
		return server.DEFAULT_GLOBAL_ACCOUNT
	}
	return AppAccountName(app)
}

// RecheckClients closes every NATS client connection whose credentials the
// current app registry no longer accepts: an app removed, its NATS user
// renamed, a previous secret dropped. Call it after app.Registry.Replace
// (node's reload). It returns how many it closed. Without a client port
// it does nothing.
func (b *Bus) RecheckClients() (int, error) {
	if b.srv == nil || b.auth == nil || b.cfg.ClientListen == "" {
		return 0, nil
	}
	closed := 0
	const page = 1024
	for offset := 0; ; offset += page {
		cz, err := b.srv.Connz(&server.ConnzOptions{Offset: offset, Limit: page, Username: true, Account: ""})
		if err != nil {
			return closed, fmt.Errorf("bus: recheck clients: %w", err)
		}
		for _, ci := range cz.Conns {
			// Only connections the server has authenticated: their options
			// were written under the client's lock, which Connz took.
			if ci.AuthorizedUser == "" || ci.AuthorizedUser == internalUser {
				continue
			}
			cl := b.srv.GetClient(ci.Cid)
			if cl == nil {
				continue
			}
			o := cl.GetOpts()
			if _, app, ok := b.auth.authorize(o.Username, o.Password, o.Nkey, nil); ok && ci.Account == accountOf(app) {
				continue // still accepted, and in the account of the app it logged in to
			}
			if err := b.srv.DisconnectClientByID(ci.Cid); err == nil {
				closed++
				b.log.Info("bus: closed a NATS client the reloaded apps no longer accept", "user", ci.AuthorizedUser, "cid", ci.Cid)
			}
		}
		if len(cz.Conns) < page {
			return closed, nil
		}
	}
}
