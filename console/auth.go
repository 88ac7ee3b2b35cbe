package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"herald/admin"
	"herald/app"
)

// The console's login (docs/console.md, "Login"). Two credentials:
//
//   - the admin token (admin.token): every app;
//   - an app's key and secret (any of App.Secrets()): that app alone.
//
// A login sets a session cookie: "<payload>.<mac>", the payload
// base64url("v1|<expiry unix>|<scope>|<fingerprint>") and the mac its
// HMAC-SHA256 under a key drawn at start (so a restart logs everyone out,
// and a cookie of one node is no good on another). The scope is "*" or
// "app:<id>"; the fingerprint is a hash of the credential it was issued
// for, checked again on every request, so changing the token or rotating
// the app's secret ends its sessions. The cookie is HttpOnly,
// SameSite=Strict, Path=/console. Every comparison of a secret is
// constant-time (hmac.Equal, subtle.ConstantTimeCompare).
//
// Tools send the admin token as "Authorization: Bearer" instead (herald
// tap). State-changing requests with a cookie must carry the header
// X-Herald-Console (a page of another origin cannot send it without CORS,
// which the admin listener never grants).

const (
	cookieName  = "herald_console"
	sessionTTL  = 12 * time.Hour
	csrfHeader  = "X-Herald-Console"
	scopeAll    = "*"
	scopePrefix = "app:"
)

// scope is what one request may see: every app, or one.
type scope struct {
	all bool
	app string
}

func (s scope) allows(appID string) bool { return s.all || s.app == appID }

// fingerprint names a credential without revealing it.
func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// loginRequest is POST /console/api/login's body: token, or key and secret.
type loginRequest struct {
	Token  string `json:"token"`
	Key    string `json:"key"`
	Secret string `json:"secret"`
}

// sessionInfo answers the login and GET /console/api/session.
type sessionInfo struct {
	Node  string   `json:"node"`
	Scope string   `json:"scope"` // "admin" or "app"
	Apps  []string `json:"apps"`  // the apps this login may watch
	Open  bool     `json:"open"`  // no admin token is configured: no login needed
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
		admin.WriteError(w, http.StatusBadRequest, "console: login: bad JSON body: %v", err)
		return
	}
	var s scope
	var fp string
	switch {
	case req.Key != "":
		a, ok := c.cfg.Apps.ByKey(req.Key)
		if !ok || !secretMatches(a, req.Secret) {
			c.refuse(w, "wrong app key or secret")
			return
		}
		s, fp = scope{app: a.ID}, fingerprint(a.Key, req.Secret)
	default:
		if c.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(req.Token), []byte(c.cfg.AdminToken)) != 1 {
			c.refuse(w, "wrong admin token")
			return
		}
		s, fp = scope{all: true}, fingerprint(c.cfg.AdminToken)
	}
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    c.sign(s, fp, time.Now().Add(sessionTTL)),
		Path:     "/console",
		MaxAge:   int(sessionTTL / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	admin.WriteJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) refuse(w http.ResponseWriter, why string) {
	c.log.Info("console: login refused", "why", why)
	admin.WriteError(w, http.StatusUnauthorized, "console: %s", why)
}

// secretMatches compares against every secret the app accepts, each in
// constant time.
func secretMatches(a *app.App, secret string) bool {
	ok := 0
	for _, s := range a.Secrets() {
		ok |= subtle.ConstantTimeCompare([]byte(secret), []byte(s))
	}
	return ok == 1 && secret != ""
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/console", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	admin.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (c *Console) session(w http.ResponseWriter, r *http.Request, s scope) {
	admin.WriteJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) info(s scope) sessionInfo {
	in := sessionInfo{Node: c.cfg.Node, Scope: "app", Open: c.cfg.AdminToken == ""}
	if s.all {
		in.Scope = "admin"
		in.Apps = c.cfg.Apps.Table().IDs()
	} else {
		in.Apps = []string{s.app}
	}
	return in
}

// sign builds a session cookie's value.
func (c *Console) sign(s scope, fp string, exp time.Time) string {
	sc := scopeAll
	if !s.all {
		sc = scopePrefix + s.app
	}
	payload := "v1|" + strconv.FormatInt(exp.Unix(), 10) + "|" + sc + "|" + fp
	mac := hmac.New(sha256.New, c.key)
	mac.Write([]byte(payload))
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(mac.Sum(nil))
}

// verify checks a session cookie and returns its scope.
func (c *Console) verify(value string, now time.Time) (scope, bool) {
	enc := base64.RawURLEncoding
	p64, m64, ok := strings.Cut(value, ".")
	if !ok {
		return scope{}, false
	}
	payload, err1 := enc.DecodeString(p64)
	got, err2 := enc.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return scope{}, false
	}
	mac := hmac.New(sha256.New, c.key)
	mac.Write(payload)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return scope{}, false
	}
	f := strings.Split(string(payload), "|")
	if len(f) != 4 || f[0] != "v1" {
		return scope{}, false
	}
	exp, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || now.Unix() >= exp {
		return scope{}, false
	}
	fp := []byte(f[3])
	if f[2] == scopeAll {
		return scope{all: true}, subtle.ConstantTimeCompare(fp, []byte(fingerprint(c.cfg.AdminToken))) == 1
	}
	id, ok := strings.CutPrefix(f[2], scopePrefix)
	a, found := c.cfg.Apps.ByID(id)
	if !ok || !found {
		return scope{}, false
	}
	match := 0
	for _, sec := range a.Secrets() { // the secret it was issued for must still be accepted
		match |= subtle.ConstantTimeCompare(fp, []byte(fingerprint(a.Key, sec)))
	}
	return scope{app: id}, match == 1
}

// authorize finds the request's scope: the admin bearer token, or a valid
// session cookie (with the CSRF header on anything but GET). With no
// admin token configured the console is open, like the admin API.
func (c *Console) authorize(r *http.Request) (scope, int, string) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if c.cfg.AdminToken == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.AdminToken)) == 1 {
			return scope{all: true}, 0, ""
		}
		return scope{}, http.StatusUnauthorized, "console: wrong bearer token"
	}
	if ck, err := r.Cookie(cookieName); err == nil {
		s, ok := c.verify(ck.Value, time.Now())
		if !ok && c.cfg.AdminToken == "" {
			s, ok = scope{all: true}, true
		}
		if !ok {
			return scope{}, http.StatusUnauthorized, "console: session expired or revoked; log in again"
		}
		if r.Method != http.MethodGet && r.Header.Get(csrfHeader) == "" {
			return scope{}, http.StatusForbidden, "console: the " + csrfHeader + " header is required"
		}
		return s, 0, ""
	}
	if c.cfg.AdminToken == "" {
		return scope{all: true}, 0, ""
	}
	return scope{}, http.StatusUnauthorized, "console: log in first"
}

// authed wraps a handler with authorize.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, scope)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, status, msg := c.authorize(r)
		if status != 0 {
			admin.WriteError(w, status, "%s", msg)
			return
		}
		h(w, r, s)
	}
}
