package gateway

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"

	"herald/app"
)

// FuzzUpgradeRequest feeds raw upgrade requests through everything the edge
// reads from one before the hijack: the RFC 6455 handshake check, the
// Pusher admission (path, key, protocol, version) and the source address
// behind a trusted proxy's X-Forwarded-For. None may panic, and a request
// the handshake accepts has a 28-character accept value.
func FuzzUpgradeRequest(f *testing.F) {
	for _, s := range []string{
		"GET /app/app-key?protocol=7&version=8.4.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /app/app-key HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n\r\n",
		"GET /app/off-key?protocol=4 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ::ffff:1.2.3.4,, junk\r\n\r\n",
		"POST /app/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	off := app.New("off", "off-key", "s")
	off.Enabled = new(bool)
	g := &Gateway{cfg: Config{
		Apps:           app.NewRegistry([]app.App{app.New("app-id", "app-key", "app-secret"), off}),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
	}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
			return
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}, nil)
		accept, status, _ := checkHandshake(&ctx)
		if status == 0 && len(accept) != 28 {
			t.Fatalf("accepted with %q", accept)
		}
		g.admit(&ctx)
		if a := g.sourceAddr(&ctx); !a.IsValid() {
			t.Fatal("no source address")
		}
	})
}

func FuzzParseClose(f *testing.F) {
	f.Add([]byte{0x03, 0xe8})
	f.Add([]byte{0x03, 0xe8, 'b', 'y', 'e'})
	f.Add([]byte{0x0f, 0xa0, 0xff})
	f.Add([]byte{0x03})
	f.Fuzz(func(t *testing.T, p []byte) {
		code, err := parseClose(p)
		if err == nil && len(p) >= 2 && !validCloseCode(code) {
			t.Fatalf("close code %d accepted", code)
		}
	})
}
