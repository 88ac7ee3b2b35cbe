package gateway

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"herald/app"
	"herald/protocol"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// versionRE is what a client library version may look like (4006 otherwise).
var versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,3}([-+][0-9A-Za-z.\-+]*)?$`)

// refusal is a Pusher-level reason to close a connection right after the
// upgrade (docs/protocol.md §1.1, §1.7): pusher-js needs the close code, so
// the WebSocket is accepted first and then closed with it.
type refusal struct {
	code   int
	reason string
}

// ServeUpgrade handles a request for /app/{key}: it validates the WebSocket
// handshake and hands the socket to a poller. Requests that are not WebSocket
// upgrades get an HTTP error; upgrades the Pusher protocol refuses are
// accepted and closed with the protocol's code.
func (g *Gateway) ServeUpgrade(ctx *fasthttp.RequestCtx) {
	accept, status, msg := checkHandshake(ctx)
	if status != 0 {
		if status == fasthttp.StatusUpgradeRequired {
			ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
		}
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBody((&protocol.HTTPError{Status: status, Message: msg}).Body())
		return
	}
	var a *app.App
	var ref *refusal
	if g.overBudget() {
		ref = &overCapacity
	} else {
		a, ref = g.admit(ctx)
	}
	ip := g.sourceAddr(ctx)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(nc net.Conn) { g.adopt(nc, accept, a, ref, ip) })
}

// overCapacity is the refusal of a socket over gateway.accept_rate: 4100,
// which pusher-js and client.Session answer by reconnecting after a back-off.
var overCapacity = refusal{protocol.CodeOverCapacity, "Over capacity: too many new connections; reconnect later"}

// overBudget takes a token from the admission bucket (admission.go) and
// reports whether there was none. It runs before anything else is looked
// at, so a refused socket costs its handshake and nothing more. A draining
// node refuses with 4200 (admit) instead, whatever the budget.
func (g *Gateway) overBudget() bool {
	b := g.accept.Load()
	if b == nil || g.draining.Load() || b.allow(time.Now().UnixNano()) {
		return false
	}
	g.stats.admission.Add(1)
	return true
}

// checkHandshake validates the RFC 6455 opening handshake and returns the
// Sec-WebSocket-Accept value, or an HTTP status and message.
func checkHandshake(ctx *fasthttp.RequestCtx) (accept string, status int, msg string) {
	h := &ctx.Request.Header
	return checkHandshakeParts(ctx.IsGet(), h.Peek("Upgrade"), h.Peek("Connection"), h.Peek("Sec-WebSocket-Version"), h.Peek("Sec-WebSocket-Key"))
}

// checkHandshakeParts is checkHandshake over the request's method and
// header values, however they were parsed (fasthttp, or the pollers'
// own reader in accept.go).
func checkHandshakeParts(get bool, upgrade, connection, version, key []byte) (accept string, status int, msg string) {
	if !get {
		return "", fasthttp.StatusMethodNotAllowed, "WebSocket upgrades must use GET"
	}
	if !hasToken(upgrade, "websocket") || !hasToken(connection, "upgrade") {
		return "", fasthttp.StatusBadRequest, "Expected a WebSocket upgrade request"
	}
	if string(version) != "13" {
		return "", fasthttp.StatusUpgradeRequired, "Unsupported WebSocket version; use 13"
	}
	var raw [18]byte // 24 characters of padded base64 decode to 16 bytes (18 with the padding's room)
	if len(key) != 24 {
		return "", fasthttp.StatusBadRequest, "Invalid Sec-WebSocket-Key"
	}
	if n, err := base64.StdEncoding.Decode(raw[:], key); err != nil || n != 16 {
		return "", fasthttp.StatusBadRequest, "Invalid Sec-WebSocket-Key"
	}
	return acceptKey(key), 0, ""
}

// acceptKey is the Sec-WebSocket-Accept value of a Sec-WebSocket-Key.
func acceptKey(key []byte) string {
	var buf [64]byte
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	sum := h.Sum(buf[:0])
	return base64.StdEncoding.EncodeToString(sum)
}

// hasToken reports whether a comma-separated header value holds the token,
// case-insensitively.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var part []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			part, v = v, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(token)) {
			return true
		}
	}
	return false
}

// admit decides whether the Pusher protocol accepts the connection. It reads
// everything it needs from ctx, which fasthttp reuses after the hijack.
func (g *Gateway) admit(ctx *fasthttp.RequestCtx) (*app.App, *refusal) {
	args := ctx.QueryArgs()
	return g.admitParts(ctx.Path(), args.Peek("protocol"), args.Peek("version"), ctx.Request.Header.Peek("Origin"))
}

// admitParts is admit over the request's path, its protocol and version
// query values and its Origin header (nil when absent), however they were
// parsed.
func (g *Gateway) admitParts(path, proto, version, origin []byte) (*app.App, *refusal) {
	key, ok := bytes.CutPrefix(path, []byte("/app/"))
	if !ok || len(key) == 0 || bytes.IndexByte(key, '/') >= 0 {
		return nil, &refusal{protocol.CodePathNotFound, "Path not found"}
	}
	a, ok := g.cfg.Apps.ByKey(string(key))
	switch {
	case !ok:
		return nil, &refusal{protocol.CodeAppNotFound, "App key " + strconv.Quote(string(key)) + " does not exist"}
	case !a.IsEnabled():
		return nil, &refusal{protocol.CodeAppDisabled, "App is disabled"}
	}
	// apps[].allowed_origins (app/origin.go): a browser page of another
	// origin is refused as an unauthorized connection, 4009, which
	// pusher-js does not retry. No Origin header: a server client.
	if len(origin) > 0 && !a.OriginAllowed(origin) {
		g.metrics.limits[limitOrigin].Add(1)
		return nil, &refusal{protocol.CodeUnauthorized, "Origin not allowed"}
	}
	if proto == nil {
		if g.cfg.RequireProtocol {
			return nil, &refusal{protocol.CodeNoProtocol, "No protocol version supplied"}
		}
	} else if n, err := strconv.Atoi(string(proto)); err != nil || n < 5 || n > 7 {
		return nil, &refusal{protocol.CodeUnsupportedProtocol, "Unsupported protocol version"}
	}
	if version != nil && !versionRE.Match(version) {
		return nil, &refusal{protocol.CodeInvalidVersion, "Invalid version string format"}
	}
	if g.draining.Load() {
		return nil, &refusal{protocol.CodeReconnect, "Server is shutting down; reconnect"}
	}
	return a, nil
}

// adopt takes a hijacked connection off fasthttp and onto a poller: it
// collects any bytes fasthttp read past the request, duplicates the socket's
// descriptor and closes the net.Conn (whose runtime state a poller does not
// need), writes the 101 response together with the first Pusher frame, and
// registers the descriptor. It returns at once; no goroutine stays behind.
// Most sockets never come this way: the pollers accept and upgrade them
// themselves (accept.go); this is the path of an upgrade that arrived on a
// connection fasthttp already served (a keep-alive REST client's, or one
// whose request head came in pieces).
func (g *Gateway) adopt(nc net.Conn, accept string, a *app.App, ref *refusal, ip ipKey) {
	var early []byte
	var fd int
	var err error
	if tc := tlsOf(nc); tc != nil {
		fd, err = g.bridgeTLS(nc, tc) // wss:// (tlsbridge.go)
	} else {
		early = drainBuffered(nc)
		fd, err = detachFD(nc)
	}
	if err != nil {
		g.log.Warn("websocket upgrade failed", "err", err)
		return
	}
	if fd >= len(g.fds) {
		_ = unix.Close(fd)
		return
	}
	c := &Conn{fd: fd, app: a, poller: g.pollers[fd%len(g.pollers)]}
	ref = g.establish(c, accept, ref, ip, early)

	// Queue, register, then write: once the client has its first frame the
	// connection must already be the poller's, or a poller stopping in
	// between would never close it.
	if err := c.poller.register(c); err != nil {
		if errors.Is(err, errPollerStopping) {
			g.refuseUnregistered(c)
		} else {
			g.log.Warn("register connection", "err", err)
		}
		return
	}
	g.opened(c, ref)
}

// establish counts a new connection (per-IP limits, the app's quota, the
// gateway's counters) and queues its first bytes: the 101 response and,
// unless it is refused, pusher:connection_established. It returns the
// refusal, if any, to close it with once it is registered (opened). c.app
// is the app admit found (nil when refused before).
func (g *Gateway) establish(c *Conn, accept string, ref *refusal, ip ipKey, early []byte) *refusal {
	a := c.app
	if ref == nil {
		ref = g.admitAddr(c, ip) // per source address (limits.go)
	}
	if ref == nil {
		counter := g.connCounter(a.ID)
		if n := counter.Add(1); a.MaxConnections > 0 && n > int64(a.MaxConnections) {
			counter.Add(-1)
			ref = &refusal{protocol.CodeOverQuota, "Application is over connection quota"}
		} else {
			c.counted = true
		}
	}

	var first []byte
	if ref == nil {
		first = make([]byte, 0, 256)
	} else {
		first = make([]byte, 0, 160)
	}
	first = append(first, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	first = append(first, accept...)
	first = append(first, "\r\n\r\n"...)
	if ref == nil {
		c.id = g.ids.Next()
		var msg [128]byte
		est := protocol.AppendConnectionEstablished(msg[:0], c.id, g.activitySeconds())
		first = appendFrame(first, ws.OpText, est)
	}
	if len(early) > 0 {
		c.in, c.seeded = &inbound{buf: early}, true
	}
	if n := g.stats.connections.Add(1); n > g.connPeak.Load() {
		g.connPeak.Store(n) // approximate under races; trimAfterFlood needs no more
	}
	g.stats.connects.Add(1)
	g.metrics.connected(ref)
	c.mu.Lock()
	c.appendLocked(first)
	c.mu.Unlock()
	return ref
}

// opened writes a registered connection's first bytes, or closes it with
// its refusal.
func (g *Gateway) opened(c *Conn, ref *refusal) {
	if ref == nil {
		// A reload may have disabled or removed the app since admit looked
		// it up. CloseApp scans the registered sockets after the registry
		// swap and this check follows the registration, so one of the two
		// sees the change (apps.go).
		if code, reason, ok := g.usable(c.app.ID); !ok {
			ref = &refusal{code, reason}
		}
	}
	c.mu.Lock()
	if ref != nil {
		c.beginCloseLocked(ref.code, ref.reason)
	} else {
		c.flushLocked()
	}
	c.mu.Unlock()
	if ref == nil {
		g.cfg.Tap.Connected(c.app.ID, c.id)
	}
}

// refuseUnregistered closes a connection no poller took (the gateway is
// stopping): the client is told to reconnect, and the descriptor is closed
// here since no poller will.
func (g *Gateway) refuseUnregistered(c *Conn) {
	c.mu.Lock()
	c.beginCloseLocked(protocol.CodeReconnect, "Server shutting down")
	c.setState(stateClosed)
	c.dropQueueLocked()
	c.mu.Unlock()
	_ = unix.Close(c.fd)
	g.releaseAddr(c)
	if c.counted {
		g.connCounter(c.app.ID).Add(-1)
	}
	g.stats.connections.Add(-1)
	g.metrics.disconnected(c)
}

func (g *Gateway) activitySeconds() int {
	return max(1, int(g.cfg.ActivityTimeout/time.Second))
}

// drainBuffered returns the bytes fasthttp's reader holds beyond the request.
// A read deadline in the past makes the read return what is buffered without
// touching the kernel's socket buffer.
func drainBuffered(nc net.Conn) []byte {
	_ = nc.SetReadDeadline(time.Unix(1, 0))
	var early []byte
	var tmp [512]byte
	for {
		n, err := nc.Read(tmp[:])
		early = append(early, tmp[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	_ = nc.SetReadDeadline(time.Time{})
	return early
}

// detachFD duplicates the socket's descriptor and closes the net.Conn, so
// that the Go runtime keeps no per-connection state (netFD, pollDesc,
// addresses) for a socket the poller owns. The duplicate shares the
// non-blocking open file description.
func detachFD(nc net.Conn) (int, error) {
	if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
		nc = u.UnsafeConn()
	}
	if pc, ok := nc.(*prefixConn); ok { // handed over by a poller (accept.go); drainBuffered read its prefix
		nc = pc.TCPConn
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		_ = nc.Close()
		return -1, errNotTCP
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		_ = tcp.Close()
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	_ = tcp.Close()
	if derr != nil {
		return -1, derr
	}
	return fd, nil
}

var errNotTCP = errors.New("gateway: hijacked connection is neither TCP nor TLS")
