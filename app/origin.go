package app

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// schemePattern is a URL scheme (RFC 3986 §3.1).
var schemePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.\-]*$`)

// The origin allow-list (apps[].allowed_origins, docs/limits.md "Origin").
// A browser sends the page's origin with every WebSocket upgrade; an app
// that lists origins accepts upgrades from those pages only. An entry is
// an origin as browsers send it, scheme://host[:port] with no path
// ("https://example.com", "http://localhost:8080"); "*." before the host
// matches any subdomain at any depth but not the domain itself
// ("https://*.example.com" matches https://a.example.com and
// https://a.b.example.com, not https://example.com); "*" alone matches
// every origin; "null" matches the opaque origin of sandboxed frames and
// file:// pages. Comparison ignores case; a port must be spelled as the
// browser sends it (browsers omit the scheme's default port).

// OriginAllowed reports whether a WebSocket upgrade with this Origin header
// may connect: always with an empty list, otherwise when an entry matches.
// Requests without an Origin header (server clients) are the caller's to
// let through.
func (a *App) OriginAllowed(origin []byte) bool {
	if len(a.AllowedOrigins) == 0 {
		return true
	}
	for _, e := range a.AllowedOrigins {
		if originMatches(e, origin) {
			return true
		}
	}
	return false
}

func originMatches(entry string, origin []byte) bool {
	if entry == "*" {
		return true
	}
	scheme, host, ok := strings.Cut(entry, "://")
	if !ok {
		return strings.EqualFold(entry, string(origin)) // "null"
	}
	o := string(origin)
	os, oh, ok := strings.Cut(o, "://")
	if !ok || !strings.EqualFold(scheme, os) {
		return false
	}
	if sub, ok := strings.CutPrefix(host, "*."); ok {
		// oh must be LABELS.sub with at least one non-empty label.
		return len(oh) > len(sub)+1 && oh[len(oh)-len(sub)-1] == '.' &&
			strings.EqualFold(oh[len(oh)-len(sub):], sub) && oh[0] != '.'
	}
	return strings.EqualFold(host, oh)
}

// validateOrigins checks each entry of allowed_origins.
func (a *App) validateOrigins() *FieldError {
	for i, e := range a.AllowedOrigins {
		if err := checkOrigin(e); err != "" {
			return fieldErr(fmt.Sprintf("allowed_origins[%d]", i), fmt.Sprintf("%s %s", quote(e), err))
		}
	}
	return nil
}

func checkOrigin(e string) string {
	if e == "*" || e == "null" {
		return ""
	}
	scheme, host, ok := strings.Cut(e, "://")
	switch {
	case !ok || scheme == "":
		return `is not an origin: want scheme://host[:port] ("https://example.com", "https://*.example.com"), "*" or "null"`
	case !schemePattern.MatchString(scheme):
		return "has an invalid scheme"
	case host == "" || strings.ContainsAny(host, "/?#@ "):
		return "must be scheme://host[:port] with no path, query, user or spaces (browsers send no path in Origin)"
	}
	name := strings.TrimPrefix(host, "*.")
	if strings.Contains(name, "*") {
		return `may hold "*" only as "*." before the host`
	}
	if h, port, err := net.SplitHostPort(name); err == nil {
		if port == "" || h == "" {
			return "has an empty host or port"
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return "has an invalid port"
			}
		}
	} else if strings.Contains(name, ":") && !strings.HasPrefix(name, "[") {
		return "has an invalid port"
	}
	return ""
}
