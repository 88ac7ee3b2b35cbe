package client

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// hmacHex returns the lowercase hex HMAC-SHA256 of msg keyed with secret.
func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// SignChannel returns the "auth" value for a private or presence channel
// subscription: "<key>:<hex hmac-sha256(secret, socketID:channel[:channelData])>".
// channelData is appended only when it is not empty, and must be the exact
// string sent as channel_data.
func SignChannel(key, secret, socketID, channel, channelData string) string {
	msg := socketID + ":" + channel
	if channelData != "" {
		msg += ":" + channelData
	}
	return key + ":" + hmacHex(secret, msg)
}

// SignUser returns the "auth" value of pusher:signin:
// "<key>:<hex hmac-sha256(secret, socketID::user::userData)>".
func SignUser(key, secret, socketID, userData string) string {
	return key + ":" + hmacHex(secret, socketID+"::user::"+userData)
}

// SignQuery returns the query string of a signed Pusher REST request
// (docs/protocol.md §6.2): params plus auth_key, auth_timestamp (now, Unix
// seconds), auth_version=1.0, body_md5 (when body is not empty) and
// auth_signature, the hex HMAC-SHA256 of "<METHOD>\n<path>\n<canonical
// query>".
//
// A value given in params for auth_key, auth_timestamp, auth_version or
// body_md5 replaces the computed one and is signed as given; an
// auth_signature in params is sent instead of the computed signature. Tests
// of the server's checks use this to send expired or forged requests.
//
// path is signed exactly as given and must be the path on the wire (without
// any prefix of the base URL). Names and values are percent-encoded on the
// wire (a space as %20, never +) and signed decoded.
func SignQuery(key, secret, method, path string, params map[string]string, body []byte, now time.Time) string {
	q := make(map[string]string, len(params)+5)
	q["auth_key"] = key
	q["auth_timestamp"] = strconv.FormatInt(now.Unix(), 10)
	q["auth_version"] = "1.0"
	if len(body) > 0 {
		sum := md5.Sum(body)
		q["body_md5"] = hex.EncodeToString(sum[:])
	}
	for k, v := range params {
		q[k] = v
	}
	sig, forged := q["auth_signature"]
	delete(q, "auth_signature")
	if !forged {
		sig = hmacHex(secret, stringToSign(method, path, q))
	}

	keys := sortedKeys(q)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(queryEscape(k))
		b.WriteByte('=')
		b.WriteString(queryEscape(q[k]))
		b.WriteByte('&')
	}
	b.WriteString("auth_signature=")
	b.WriteString(queryEscape(sig))
	return b.String()
}

// stringToSign builds "<METHOD>\n<path>\n<canonical query>" where the
// canonical query is every parameter but auth_signature, keys lowercased,
// sorted, joined as key=value with & and not escaped.
func stringToSign(method, path string, params map[string]string) string {
	lower := make(map[string]string, len(params))
	for k, v := range params {
		if k == "auth_signature" {
			continue
		}
		lower[strings.ToLower(k)] = v
	}
	var b strings.Builder
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	for i, k := range sortedKeys(lower) {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(lower[k])
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// queryEscape percent-encodes s for a query string, with %20 for a space:
// Pusher servers read '+' literally.
func queryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
