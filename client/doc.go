// Package client is a Go Pusher-protocol (version 7) client, used by Herald's
// tests, by `herald bench`, and by Go backends.
//
// It owns three things:
//
//   - Conn: one WebSocket connection speaking pusher:* messages (Dial,
//     Subscribe, Send, Next, WaitFor, Close). Each Conn runs exactly one reader
//     goroutine, which decodes server frames into a bounded queue, answers
//     pings (pusher:ping and WebSocket pings) when AutoPong is on, and exits
//     when the connection ends. Conn also exposes raw frame writers
//     (SendRaw, SendFrame, SendBytes) for conformance tests that need to send
//     malformed input.
//   - Session: a connection that resumes by itself (docs/protocol-extensions.md):
//     it redials the given URLs, resubscribes with herald_resume set to the
//     last serial it delivered per channel, and drops duplicates, so the app
//     sees every event of a channel once and in order across reconnects.
//   - REST: a minimal Pusher REST publisher that signs requests the way the
//     official server SDKs do (auth_key, auth_timestamp, auth_version,
//     body_md5, auth_signature), plus the signing helpers SignChannel,
//     SignUser and SignQuery.
//
// The package is standalone: it imports no other Herald package, so its
// signatures are an independent implementation of the Pusher schemes that
// Herald's server side can be checked against.
package client
