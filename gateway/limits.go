package gateway

import (
	"bytes"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"herald/app"
	"herald/protocol"
)

// The limits on what one client may ask of the edge (docs/limits.md): per
// source address (open sockets, new sockets per second), per socket
// (channels, subscribe rate, client events), each refusal counted in
// herald_limit_refusals_total by a label from the fixed list below.

// limitKind is the bounded "limit" label of herald_limit_refusals_total.
type limitKind uint8

const (
	limitConnectionsPerIP limitKind = iota // gateway.max_connections_per_ip
	limitAcceptRatePerIP                   // gateway.accept_rate_per_ip
	limitChannels                          // apps[].max_channels_per_connection
	limitSubscribeRate                     // apps[].subscribe_rate
	limitClientEventRate                   // apps[].client_event_rate
	limitClientEventName                   // apps[].max_event_name_length on client events
	limitClientEventData                   // apps[].max_event_data_bytes on client events
	limitSlowConsumer                      // gateway.write_queue_bytes
	limitOrigin                            // apps[].allowed_origins
	numLimits
)

var limitNames = [numLimits]string{
	limitConnectionsPerIP: "connections_per_ip", limitAcceptRatePerIP: "accept_rate_per_ip",
	limitChannels: "channels_per_connection", limitSubscribeRate: "subscribe_rate",
	limitClientEventRate: "client_event_rate", limitClientEventName: "client_event_name",
	limitClientEventData: "client_event_data", limitSlowConsumer: "write_queue",
	limitOrigin: "origin",
}

// LimitNames lists the gateway's values of the limit label.
func LimitNames() []string { return limitNames[:] }

// LimitRefusals returns how often each limit refused something, by label.
func (g *Gateway) LimitRefusals() map[string]uint64 {
	out := make(map[string]uint64, numLimits)
	for i, n := range limitNames {
		out[n] = g.metrics.limits[i].Load()
	}
	return out
}

// ipKey is a source address as the per-IP limits count it: IPv4 and
// IPv4-mapped IPv6 are one address; an IPv6 client is counted by its /64,
// which is what one host (or one home network) gets.
type ipKey = netip.Addr

func keyOf(a netip.Addr) ipKey {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// sourceAddr is the client's address for the per-IP limits: the TCP peer,
// or, when the peer is a trusted proxy, the last X-Forwarded-For entry that
// is not itself a trusted proxy. It reads ctx before the hijack.
func (g *Gateway) sourceAddr(ctx *fasthttp.RequestCtx) ipKey {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return g.sourceAddrOf(peer, ctx.Request.Header.Peek("X-Forwarded-For"))
}

// sourceAddrOf is sourceAddr over the TCP peer and the X-Forwarded-For
// value (the first such header, as fasthttp's Peek gives it), however the
// request was parsed.
func (g *Gateway) sourceAddrOf(peer netip.Addr, xff []byte) ipKey {
	peer = peer.Unmap()
	if !g.trusted(peer) {
		return keyOf(peer)
	}
	for len(xff) > 0 {
		var part []byte
		if i := bytes.LastIndexByte(xff, ','); i >= 0 {
			part, xff = xff[i+1:], xff[:i]
		} else {
			part, xff = xff, nil
		}
		a, err := netip.ParseAddr(strings.TrimSpace(string(part)))
		if err != nil {
			break // a malformed entry: nothing left of it can be believed
		}
		if a = a.Unmap(); !g.trusted(a) {
			return keyOf(a)
		}
		peer = a
	}
	return keyOf(peer)
}

func (g *Gateway) trusted(a netip.Addr) bool {
	for _, p := range g.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipLimits counts open sockets and recent accepts per source address. An
// entry lives while its address has open sockets or an unspent burst; the
// sweep deletes the rest and rebuilds the map after a flood, since a Go map
// keeps its buckets when emptied.
type ipLimits struct {
	maxOpen int32
	rate    float64 // tokens per second; 0 = off
	burst   float64

	mu        sync.Mutex
	m         map[ipKey]*ipEntry
	peak      int
	lastSweep int64
}

type ipEntry struct {
	open   int32
	tokens float64
	at     int64 // unix nanos of the last refill
}

const ipSweepEvery = 10 * time.Second

func (l *ipLimits) on() bool { return l.maxOpen > 0 || l.rate > 0 }

// acquire counts a new socket from ip at now, or says which limit refuses it.
func (l *ipLimits) acquire(ip ipKey, now int64) (limitKind, bool) {
	_, kind, ok := l.acquireEntry(ip, now)
	return kind, ok
}

// acquireEntry is acquire, returning the address's entry: a connection
// keeps the pointer (8 bytes, where the address is 24) to release it, and
// the entry stays in the table while its open count is above 0.
func (l *ipLimits) acquireEntry(ip ipKey, now int64) (*ipEntry, limitKind, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now-l.lastSweep >= int64(ipSweepEvery) {
		l.sweepLocked(now)
	}
	e := l.m[ip]
	if e == nil {
		e = &ipEntry{tokens: l.burst, at: now}
		l.m[ip] = e
		l.peak = max(l.peak, len(l.m))
	}
	if l.rate > 0 {
		e.refill(now, l.rate, l.burst)
		if e.tokens < 1 {
			return nil, limitAcceptRatePerIP, false
		}
	}
	if l.maxOpen > 0 && e.open >= l.maxOpen {
		return nil, limitConnectionsPerIP, false
	}
	e.tokens--
	e.open++
	return e, 0, true
}

func (l *ipLimits) release(ip ipKey) {
	l.mu.Lock()
	if e := l.m[ip]; e != nil {
		e.open--
	}
	l.mu.Unlock()
}

// releaseEntry uncounts one socket from the entry acquireEntry gave.
func (l *ipLimits) releaseEntry(e *ipEntry) {
	l.mu.Lock()
	e.open--
	l.mu.Unlock()
}

func (e *ipEntry) refill(now int64, rate, burst float64) {
	if rate <= 0 {
		return
	}
	e.tokens = min(burst, e.tokens+float64(now-e.at)*rate/1e9)
	e.at = now
}

func (l *ipLimits) sweepLocked(now int64) {
	l.lastSweep = now
	for k, e := range l.m {
		e.refill(now, l.rate, l.burst)
		if e.open <= 0 && e.tokens >= l.burst {
			delete(l.m, k)
		}
	}
	if l.peak > 1024 && len(l.m) < l.peak/4 {
		m := make(map[ipKey]*ipEntry, len(l.m))
		for k, e := range l.m {
			m[k] = e
		}
		l.m, l.peak = m, len(m)
	}
}

// size is how many addresses are tracked (tests).
func (l *ipLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// admitAddr applies the per-IP limits to a new connection from ip: the
// refusal, or nil with the connection counted against its address.
func (g *Gateway) admitAddr(c *Conn, ip ipKey) *refusal {
	if !g.ips.on() || !ip.IsValid() {
		return nil
	}
	e, kind, ok := g.ips.acquireEntry(ip, time.Now().UnixNano())
	if !ok {
		g.metrics.limits[kind].Add(1)
		msg := "Too many connections from your address; reconnect later"
		if kind == limitAcceptRatePerIP {
			msg = "Too many new connections from your address; reconnect later"
		}
		return &refusal{protocol.CodeOverCapacity, msg}
	}
	c.ipe = e
	return nil
}

// releaseAddr uncounts a released connection from its address.
func (g *Gateway) releaseAddr(c *Conn) {
	if c.ipe != nil {
		g.ips.releaseEntry(c.ipe)
		c.ipe = nil
	}
}

// allowSubscribe counts a subscribe or unsubscribe message against the
// socket's budget: a bucket of the app's max_channels_per_connection tokens
// (or subscribe_rate, if that is larger), full when the socket connects and
// refilled at subscribe_rate a second. pusher-js sends every subscription
// of a connection at once when it connects and again after each reconnect,
// and never resends one that got no answer: a socket must be able to
// subscribe to as many channels as it may hold in one burst, or the ones
// past the rate would be lost for the life of the connection. A socket that
// keeps subscribing and unsubscribing is held to the rate. Over it the
// message is dropped and the socket gets a pusher:error 4303, at most one a
// second. Poller only.
func (g *Gateway) allowSubscribe(c *Conn, a *app.App, channel string) bool {
	now := c.poller.now
	rate := float64(a.SubscribeRate)
	burst := max(rate, float64(a.MaxChannelsPerConnection))
	if c.subAt == 0 {
		c.subTokens = float32(burst)
	} else if now > c.subAt {
		c.subTokens = float32(min(burst, float64(c.subTokens)+float64(now-c.subAt)*rate/1e9))
	}
	c.subAt = now
	if c.subTokens >= 1 {
		c.subTokens--
		return true
	}
	g.metrics.limits[limitSubscribeRate].Add(1)
	if c.subWarnAt == 0 || now-c.subWarnAt >= int64(time.Second) {
		c.subWarnAt = now
		c.sendError(protocol.CodeSubscribeRateLimit, "Subscription rejected due to rate limit: at most "+strconv.Itoa(a.SubscribeRate)+
			" subscribe and unsubscribe messages per second after the first "+strconv.Itoa(int(burst))+" (first refused: "+channel+")", "")
	}
	return false
}

// slowTailBytes is room for a slow consumer's pusher:error and close frame.
const slowTailBytes = 512

// wmemMax is net.core.wmem_max, the most SO_SNDBUF may ask for without
// CAP_NET_ADMIN; 0 when unknown.
var wmemMax = func() int {
	b, err := os.ReadFile("/proc/sys/net/core/wmem_max")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}()

// growSendBuffer raises a full socket's send buffer so that need more bytes,
// the end of a closing stream, fit behind what the kernel already holds. It
// reports whether it did. The kernel doubles what SO_SNDBUF asks for and
// caps it at wmem_max unless the process may force it (CAP_NET_ADMIN); a
// request it would cap is not made, since that could shrink the buffer.
func growSendBuffer(fd, need int) bool {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return false
	}
	// Asking for cur doubles the limit: the kernel counts its overhead in
	// it, so a tight raise may still leave no room. Only the tail is
	// written afterwards, so the raised limit is never filled.
	want := cur + 2*need
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want) == nil {
		return true
	}
	if want <= wmemMax {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, want) == nil
	}
	return false
}

// limitCounters are the refusal counters (gateway/metrics.go holds them).
type limitCounters [numLimits]atomic.Uint64

// trimAfterFlood returns the memory of a flood of sockets that has gone:
// what their handshakes used (fasthttp's per-connection contexts and
// buffers) sits in sync.Pools that only two GC cycles empty, and an idle
// heap starts no GC, so without this the node would hold a flood's peak
// for minutes (Go forces a GC every two minutes, and scavenges slowly).
// Once the open sockets have fallen to half their peak, and by at least
// trimMinDrop, one forced collection returns it. Called every countEvery.
func (g *Gateway) trimAfterFlood() {
	n, peak := g.stats.connections.Load(), g.connPeak.Load()
	if peak-n >= trimMinDrop && n < peak/2 {
		g.connPeak.Store(n)
		debug.FreeOSMemory()
	}
}

// trimMinDrop is the fall in open sockets that makes a flood worth trimming.
const trimMinDrop = 1000
