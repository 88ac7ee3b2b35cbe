package bench

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// signedQuery returns the query string of a signed Pusher REST request
// (docs/protocol.md §6.2): auth_key, auth_timestamp, auth_version, body_md5
// and auth_signature = lowercase hex HMAC-SHA256(secret,
// "METHOD\nPATH\nQUERY"), where QUERY is the other parameters sorted by key.
// The values need no escaping: keys are hex or base62 in practice, and the
// rest is digits and hex.
func signedQuery(method, path, key, secret string, ts int64, body []byte) string {
	sum := md5.Sum(body)
	q := "auth_key=" + key +
		"&auth_timestamp=" + strconv.FormatInt(ts, 10) +
		"&auth_version=1.0" +
		"&body_md5=" + hex.EncodeToString(sum[:])
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(method + "\n" + path + "\n" + q))
	return q + "&auth_signature=" + hex.EncodeToString(mac.Sum(nil))
}
