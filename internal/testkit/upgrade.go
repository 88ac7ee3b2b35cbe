package testkit

// UpgradeHeaders are the headers of a valid WebSocket upgrade request, each
// line ending in CRLF, without the request line and the blank line that
// ends the head, for tests that speak raw HTTP to an edge:
//
//	"GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
//
// The key is RFC 6455's sample nonce.
const UpgradeHeaders = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
