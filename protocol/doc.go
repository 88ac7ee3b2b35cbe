// Package protocol owns the Pusher Channels wire format for Herald: the
// client and server JSON frames, channel kinds and name rules, every
// signature (channel auth, user auth, REST request auth, webhook), socket ids,
// and the Pusher error codes. It does no I/O and holds no state apart from
// the socket-id generator, so every function here is safe for concurrent use.
//
// Layout (one concern per file):
//
//   - errors.go:   Error (WebSocket-side, with a Pusher code) and HTTPError (REST side).
//   - channel.go:  channel kinds (Classify) and name validation.
//   - socketid.go: socket ids: parsing, formatting and a generator.
//   - message.go:  decoding client -> server frames and their data payloads.
//   - userdata.go: parsing signed user_data (signin) and channel_data (presence).
//   - frames.go:   building server -> client frames by appending to a []byte.
//   - auth.go:     channel, user and webhook signatures.
//   - rest.go:     REST request authentication (canonical query, signing, verifying).
//   - trigger.go:  REST trigger and batch bodies.
//   - jsonscan.go: the exact-key JSON object scanner the decoders share.
//
// Decoders never panic on client input; they return *Error (WebSocket side)
// or *HTTPError (REST side). Frame builders append to a caller-supplied slice
// and allocate only when it lacks capacity.
package protocol
