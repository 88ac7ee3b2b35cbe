package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Signatures are lowercase hex HMAC-SHA256 with the app secret as key
// (docs/protocol.md §3.2, §4.2, §6.2, §7). Verification compares digests with
// hmac.Equal, in constant time.

// Sign returns the lowercase hex HMAC-SHA256 of stringToSign keyed by secret.
func Sign(secret, stringToSign string) string {
	var sum [sha256.Size]byte
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(stringToSign))
	return hex.EncodeToString(mac.Sum(sum[:0]))
}

// macParts computes HMAC-SHA256(secret, concatenation of parts) into out.
// The parts are copied into one buffer so the hash sees a single Write.
func macParts(out *[sha256.Size]byte, secret string, parts ...string) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	msg := make([]byte, 0, n)
	for _, p := range parts {
		msg = append(msg, p...)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(msg)
	mac.Sum(out[:0])
}

// ChannelStringToSign returns the string signed for a channel subscription
// (docs/protocol.md §3.2): "<socketID>:<channel>", or
// "<socketID>:<channel>:<channelData>" when channelData is not "".
func ChannelStringToSign(socketID, channel, channelData string) string {
	if channelData == "" {
		return socketID + ":" + channel
	}
	return socketID + ":" + channel + ":" + channelData
}

// ChannelAuth returns the auth string "<key>:<signature>" an app's auth
// endpoint would return for the subscription (used by tests and clients).
func ChannelAuth(key, secret, socketID, channel, channelData string) string {
	return key + ":" + Sign(secret, ChannelStringToSign(socketID, channel, channelData))
}

// VerifyChannelAuth checks auth, the "<key>:<hex signature>" string of a
// pusher:subscribe, for socketID, channel and channelData
// (docs/protocol.md §3.3). auth is split at its first ':'. The signature is
// compared in constant time; uppercase hex is accepted (docs/protocol.md §3.3
// step 3). Failures are *Error with Code 0 and Pusher's messages:
//
//	Invalid key in subscription auth data: '<key part>'
//	Invalid signature: Expected HMAC SHA256 hex digest of <string_to_sign>, but got <signature part>
//
// An auth without ':' is all key part (an empty auth is reported as a
// missing signature). It allocates only for hmac state and on failure.
func VerifyChannelAuth(key, secret, socketID, channel, channelData, auth string) error {
	keyPart, sigPart, keyOK := splitAuth(auth, key)
	if !keyOK {
		return &Error{Message: "Invalid key in subscription auth data: '" + keyPart + "'"}
	}
	var want [sha256.Size]byte
	if channelData == "" {
		macParts(&want, secret, socketID, ":", channel)
	} else {
		macParts(&want, secret, socketID, ":", channel, ":", channelData)
	}
	if !hexDigestEqual(&want, sigPart, true) {
		return &Error{Message: "Invalid signature: Expected HMAC SHA256 hex digest of " +
			ChannelStringToSign(socketID, channel, channelData) + ", but got " + sigPart}
	}
	return nil
}

// splitAuth splits auth at its first ':' into key and signature parts and
// reports whether the key part is key. An auth without ':' is all key part,
// except that "" and key itself count as the right key with a missing
// signature, so they are reported as bad signatures.
func splitAuth(auth, key string) (keyPart, sigPart string, keyOK bool) {
	keyPart, sigPart, found := strings.Cut(auth, ":")
	if !found && (auth == "" || auth == key) {
		return keyPart, "", true
	}
	return keyPart, sigPart, keyPart == key
}

// hexDigestEqual reports whether sig is the hex form of want, comparing the
// decoded bytes in constant time. Uppercase hex digits are accepted only
// when allowUpper is set.
func hexDigestEqual(want *[sha256.Size]byte, sig string, allowUpper bool) bool {
	if len(sig) != 2*sha256.Size {
		return false
	}
	if !allowUpper {
		for i := 0; i < len(sig); i++ {
			if c := sig[i]; c >= 'A' && c <= 'F' {
				return false
			}
		}
	}
	var got [sha256.Size]byte
	var src [2 * sha256.Size]byte
	copy(src[:], sig)
	if _, err := hex.Decode(got[:], src[:]); err != nil {
		return false
	}
	return hmac.Equal(got[:], want[:])
}

// UserStringToSign returns the string signed for a user signin
// (docs/protocol.md §4.2): "<socketID>::user::<userData>".
func UserStringToSign(socketID, userData string) string {
	return socketID + "::user::" + userData
}

// UserAuth returns the auth string "<key>:<signature>" an app's user-auth
// endpoint would return (used by tests and clients).
func UserAuth(key, secret, socketID, userData string) string {
	return key + ":" + Sign(secret, UserStringToSign(socketID, userData))
}

// VerifyUserAuth checks auth, the "<key>:<hex signature>" string of a
// pusher:signin, for socketID and userData (docs/protocol.md §4.2), in
// constant time. Failures are *Error with Code 4009 (CodeUnauthorized), as
// recommended for signin failures (docs/protocol.md §4.3): "Invalid key in
// user auth data: '<key part>'" or "Invalid user authentication signature".
// It does not parse userData (see ParseUserData).
func VerifyUserAuth(key, secret, socketID, userData, auth string) error {
	keyPart, sigPart, keyOK := splitAuth(auth, key)
	if !keyOK {
		return &Error{Code: CodeUnauthorized, Message: "Invalid key in user auth data: '" + keyPart + "'"}
	}
	var want [sha256.Size]byte
	macParts(&want, secret, socketID, "::user::", userData)
	if !hexDigestEqual(&want, sigPart, true) {
		return &Error{Code: CodeUnauthorized, Message: "Invalid user authentication signature"}
	}
	return nil
}

// WebhookSignature returns the X-Pusher-Signature value for a webhook body
// (docs/protocol.md §7): lowercase hex HMAC-SHA256 of the exact body bytes.
func WebhookSignature(secret string, body []byte) string {
	var sum [sha256.Size]byte
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(sum[:0]))
}

// VerifyWebhookSignature reports whether signature is the webhook signature
// of body, comparing in constant time (lowercase or uppercase hex).
func VerifyWebhookSignature(secret string, body []byte, signature string) bool {
	var want [sha256.Size]byte
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	mac.Sum(want[:0])
	return hexDigestEqual(&want, signature, true)
}
