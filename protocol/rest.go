package protocol

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxTimestampSkew is how far auth_timestamp may be from the server's clock,
// either way (docs/protocol.md §6.2). A skew of exactly 600 s is accepted.
const MaxTimestampSkew = 600 * time.Second

// RESTRequest is what a server received for one REST call.
type RESTRequest struct {
	// Method is the HTTP method; it is upper-cased before signing.
	Method string
	// Path is the raw path as received on the wire (not percent-decoded),
	// with any mount prefix already stripped so it starts with /apps/.
	Path string
	// RawQuery is the raw query string, without the '?'.
	RawQuery string
	// Body is the raw request body.
	Body []byte
}

// queryParam is one decoded query parameter; key is lower-cased.
type queryParam struct {
	key, value string
}

// errBadEscape reports a malformed %-escape in a query string or path.
var errBadEscape = errors.New("protocol: malformed percent-escape")

// parseQuery splits rawQuery on '&' and decodes every "key=value" pair (a
// pair without '=' has an empty value; empty pairs are skipped). Keys are
// lower-cased (ASCII). The result is in wire order.
func parseQuery(rawQuery string, plusAsSpace bool) ([]queryParam, error) {
	var params []queryParam
	for i := 0; rawQuery != ""; i++ {
		var seg string
		seg, rawQuery, _ = strings.Cut(rawQuery, "&")
		if seg == "" {
			continue
		}
		k, v, _ := strings.Cut(seg, "=")
		dk, err1 := percentDecode(k, plusAsSpace)
		dv, err2 := percentDecode(v, plusAsSpace)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("protocol: query parameter %d %q: %w", i, seg, errBadEscape)
		}
		params = append(params, queryParam{key: asciiLower(dk), value: dv})
	}
	return params, nil
}

// percentDecode decodes %XX escapes in s and, when plusAsSpace is set, '+'
// as a space; every other byte is kept as is.
func percentDecode(s string, plusAsSpace bool) (string, error) {
	if !strings.Contains(s, "%") && (!plusAsSpace || !strings.Contains(s, "+")) {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%':
			if i+2 >= len(s) {
				return "", errBadEscape
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errBadEscape
			}
			b = append(b, hi<<4|lo)
			i += 2
		case c == '+' && plusAsSpace:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// canonicalize renders params as the canonical query string: auth_signature
// dropped, sorted by key (stable), repeated keys' values joined with ',' in
// order, "k=v" pairs joined by '&', nothing re-escaped.
func canonicalize(params []queryParam) string {
	ps := make([]queryParam, 0, len(params))
	for _, p := range params {
		if p.key != "auth_signature" {
			ps = append(ps, p)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].key < ps[j].key })
	var sb strings.Builder
	for i, p := range ps {
		switch {
		case i > 0 && ps[i-1].key == p.key:
			sb.WriteByte(',')
		case i > 0:
			sb.WriteByte('&')
			fallthrough
		default:
			sb.WriteString(p.key)
			sb.WriteByte('=')
		}
		sb.WriteString(p.value)
	}
	return sb.String()
}

// lookup returns the value of key in params (repeated keys' values joined
// with ',', as in the canonical string) and whether it is present.
func lookup(params []queryParam, key string) (string, bool) {
	var v string
	found := false
	for _, p := range params {
		if p.key != key {
			continue
		}
		if found {
			v += "," + p.value
		} else {
			v, found = p.value, true
		}
	}
	return v, found
}

// CanonicalQuery builds the canonical query string of rawQuery
// (docs/protocol.md §6.2 steps 1-6): auth_signature dropped; names and values
// percent-decoded (%XX only; '+' stays literal unless plusAsSpace, the retry
// case); keys lower-cased; sorted by key; a repeated key's values joined with
// ',' in order; "k=v" pairs joined by '&' without re-escaping. A malformed
// %-escape is an error. It is deterministic and never panics.
func CanonicalQuery(rawQuery string, plusAsSpace bool) (string, error) {
	params, err := parseQuery(rawQuery, plusAsSpace)
	if err != nil {
		return "", err
	}
	return canonicalize(params), nil
}

// RESTStringToSign returns method + "\n" + path + "\n" + canonicalQuery.
// method should already be upper-case.
func RESTStringToSign(method, path, canonicalQuery string) string {
	return method + "\n" + path + "\n" + canonicalQuery
}

// VerifyREST authenticates r for the app with this key and secret at time
// now (docs/protocol.md §6.2). Checks, in order, each failing with 401:
//
//   - auth_key present and equal to key;
//   - auth_version == "1.0";
//   - auth_timestamp an integer within MaxTimestampSkew of now (600 s is ok, 601 s is not);
//   - when the body is non-empty, body_md5 present; when present (an empty
//     body too), equal to the lowercase hex MD5 of the body;
//   - auth_signature equal (constant time, lowercase hex only) to the
//     signature of RESTStringToSign(upper(method), path, CanonicalQuery(...)).
//
// When the signature does not match and the query contains '+', it is
// retried with '+' read as a space; when the path contains '%', it is
// retried with the percent-decoded path. A query with a malformed %-escape
// fails with 400. Errors are *HTTPError; VerifyREST never panics.
func VerifyREST(r RESTRequest, key, secret string, now time.Time) error {
	params, err := parseQuery(r.RawQuery, false)
	if err != nil {
		return httpErr(400, "Invalid query string: malformed percent-escape")
	}
	if herr := checkRESTParams(params, r.Body, key, now); herr != nil {
		return herr
	}
	sig, _ := lookup(params, "auth_signature")
	method := strings.ToUpper(r.Method)
	query := canonicalize(params)
	queries := []string{query}
	if strings.Contains(r.RawQuery, "+") {
		if q, err := CanonicalQuery(r.RawQuery, true); err == nil && q != query {
			queries = append(queries, q)
		}
	}
	paths := []string{r.Path}
	if strings.Contains(r.Path, "%") {
		if p, err := percentDecode(r.Path, false); err == nil && p != r.Path {
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		for _, q := range queries {
			var want [sha256.Size]byte
			macParts(&want, secret, method, "\n", p, "\n", q)
			if hexDigestEqual(&want, sig, false) {
				return nil
			}
		}
	}
	sts := strings.ReplaceAll(RESTStringToSign(method, r.Path, query), "\n", `\n`)
	return httpErr(401, `Invalid signature: you should have sent HmacSHA256Hex("`+sts+
		`", your_secret_key), but you sent "`+sig+`"`)
}

// checkRESTParams runs the checks of VerifyREST that come before the
// signature.
func checkRESTParams(params []queryParam, body []byte, key string, now time.Time) *HTTPError {
	switch k, ok := lookup(params, "auth_key"); {
	case !ok:
		return httpErr(401, "Missing auth_key")
	case k != key:
		return httpErr(401, "Invalid auth_key '"+k+"'")
	}
	if v, _ := lookup(params, "auth_version"); v != "1.0" {
		return httpErr(401, "Invalid auth_version '"+v+"': expected 1.0")
	}
	ts, ok := lookup(params, "auth_timestamp")
	if !ok {
		return httpErr(401, "Missing auth_timestamp")
	}
	if herr := checkTimestamp(ts, now); herr != nil {
		return herr
	}
	sum := md5.Sum(body)
	switch m, ok := lookup(params, "body_md5"); {
	case !ok && len(body) == 0:
		return nil
	case !ok:
		return httpErr(401, "Missing body_md5")
	case m != hex.EncodeToString(sum[:]):
		return httpErr(401, "Invalid body_md5 '"+m+"': expected the lowercase hex MD5 of the request body")
	}
	return nil
}

// checkTimestamp checks that ts is a decimal integer within MaxTimestampSkew
// of now.
func checkTimestamp(ts string, now time.Time) *HTTPError {
	valid := ts != "" && len(ts) <= 19
	for i := 0; i < len(ts) && valid; i++ {
		valid = ts[i] >= '0' && ts[i] <= '9'
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if !valid || err != nil {
		return httpErr(401, "Invalid auth_timestamp '"+ts+"': expected Unix time in seconds")
	}
	skew := int64(MaxTimestampSkew / time.Second)
	n := now.Unix()
	if t < n-skew || t > n+skew {
		return httpErr(401, "Timestamp expired: Given timestamp ("+
			time.Unix(t, 0).UTC().Format(time.RFC3339)+") not within "+
			strconv.FormatInt(skew, 10)+"s of server time ("+now.UTC().Format(time.RFC3339)+")")
	}
	return nil
}

// SignREST returns the full raw query string, auth_signature included, for
// a request signed as the official SDKs sign it: params plus auth_key,
// auth_timestamp (now, in seconds), auth_version=1.0 and, for a non-empty
// body, body_md5. Pairs are sorted by key and put on the wire with
// url.QueryEscape, except that ',' stays literal. params must not contain
// auth_* or body_md5 keys (they are overwritten). Used by tests and the Go
// client.
func SignREST(method, path string, params map[string]string, body []byte, key, secret string, now time.Time) string {
	all := make(map[string]string, len(params)+4)
	for k, v := range params {
		all[k] = v
	}
	delete(all, "auth_signature")
	all["auth_key"] = key
	all["auth_timestamp"] = strconv.FormatInt(now.Unix(), 10)
	all["auth_version"] = "1.0"
	if len(body) > 0 {
		sum := md5.Sum(body)
		all["body_md5"] = hex.EncodeToString(sum[:])
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte('&')
		}
		sb.WriteString(queryEscape(k))
		sb.WriteByte('=')
		sb.WriteString(queryEscape(all[k]))
	}
	wire := sb.String()
	// The wire form was escaped above, so decoding it (with '+' as the space
	// QueryEscape wrote) gives back the exact values; this cannot fail.
	canon, _ := CanonicalQuery(wire, true)
	sig := Sign(secret, RESTStringToSign(strings.ToUpper(method), path, canon))
	return wire + "&auth_signature=" + sig
}

// queryEscape is url.QueryEscape leaving ',' literal, as the SDKs send it.
func queryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "%2C", ",")
}
