package api

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"herald/app"
	"herald/protocol"
)

// The HTTP-level limits of the client port (docs/limits.md): how long a
// connection may take to send a request header (gateway.handshake_timeout,
// which cuts sockets that never speak and byte-at-a-time headers), how
// large a header and a body may be (http.read_buffer_bytes,
// http.max_body_bytes), and how many REST requests of one app may be in
// progress (apps[].max_concurrent_rest_requests). Every refusal is a JSON
// error like the REST API's own, and is counted by a fixed label.

// RESTReadTimeout is how long a REST request's body may take once its
// header has arrived.
const RESTReadTimeout = 30 * time.Second

// lingerFor bounds how long a refused request's unread body is read and
// thrown away after the answer, so that the close does not reset the
// connection before the client has read the answer.
const (
	lingerFor   = 2 * time.Second
	lingerBytes = 64 << 20
)

type limitKind uint8

const (
	limitRESTConcurrency  limitKind = iota // apps[].max_concurrent_rest_requests
	limitBodySize                          // http.max_body_bytes
	limitHeaderSize                        // http.read_buffer_bytes
	limitHandshakeTimeout                  // gateway.handshake_timeout (and a REST body past RESTReadTimeout)
	limitMalformed                         // a request that is not HTTP
	numLimits
)

var limitNames = [numLimits]string{"rest_concurrency", "body_size", "header_size", "handshake_timeout", "malformed_request"}

// LimitNames lists api's values of the limit label.
func LimitNames() []string { return limitNames[:] }

type limits struct {
	inFlight sync.Map // app id -> *atomic.Int64
	refused  [numLimits]atomic.Uint64
}

// begin counts a REST request of the app in progress, or refuses it over
// the app's limit; done uncounts it.
func (l *limits) begin(a *app.App) (done func(), ok bool) {
	v, found := l.inFlight.Load(a.ID)
	if !found {
		v, _ = l.inFlight.LoadOrStore(a.ID, new(atomic.Int64))
	}
	n := v.(*atomic.Int64)
	if n.Add(1) > int64(a.MaxConcurrentRESTRequests) {
		n.Add(-1)
		l.refused[limitRESTConcurrency].Add(1)
		return nil, false
	}
	return func() { n.Add(-1) }, true
}

// LimitRefusals returns how often each HTTP-level limit refused a request.
func (s *Server) LimitRefusals() map[string]uint64 {
	out := make(map[string]uint64, numLimits)
	for i, n := range limitNames {
		out[n] = s.limits.refused[i].Load()
	}
	return out
}

// headerReceived gives a REST request's body RESTReadTimeout; a WebSocket
// upgrade has no body and keeps the handshake deadline until the gateway
// takes the socket.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if bytes.EqualFold(h.Peek("Upgrade"), []byte("websocket")) {
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{ReadTimeout: RESTReadTimeout}
}

// requestError answers a request fasthttp could not read, in the REST
// API's JSON error shape: 413 for a body over http.max_body_bytes (announced
// or streamed), 431 for a request line or header over the read buffer, 408
// for a header (or body) that did not arrive in time, 400 for anything that
// is not HTTP.
func (s *Server) requestError(ctx *fasthttp.RequestCtx, err error) {
	var (
		status = fasthttp.StatusBadRequest
		msg    = "Malformed HTTP request"
		kind   = limitMalformed
		small  *fasthttp.ErrSmallBuffer
		ne     net.Error
	)
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, kind = fasthttp.StatusRequestEntityTooLarge, limitBodySize
		msg = "Request body is larger than " + strconv.Itoa(s.cfg.MaxBodyBytes) + " bytes (http.max_body_bytes)"
	case errors.As(err, &small):
		status, kind = fasthttp.StatusRequestHeaderFieldsTooLarge, limitHeaderSize
		msg = "Request line or headers are larger than " + strconv.Itoa(s.readBuffer()) + " bytes (http.read_buffer_bytes)"
	case errors.As(err, &ne) && ne.Timeout():
		status, kind = fasthttp.StatusRequestTimeout, limitHandshakeTimeout
		msg = "Request not received in time"
	}
	s.limits.refused[kind].Add(1)
	he := &protocol.HTTPError{Status: status, Message: msg}
	writeError(ctx, he)
	if kind == limitBodySize {
		lingerAnswer(ctx.Conn(), status, he.Body())
	}
}

func (s *Server) readBuffer() int {
	if s.cfg.ReadBufferSize > 0 {
		return s.cfg.ReadBufferSize
	}
	return 4096 // fasthttp's default
}

// lingerAnswer writes the answer to a refused request itself, ends the
// write side and reads what the client still sends (for at most lingerFor
// and lingerBytes): closing a socket with unread bytes sends a reset, which
// can destroy the answer before the client has read it, while a client
// still streaming its body reads answers only after it has sent it. The
// answer fasthttp writes after this finds the write side shut and goes
// nowhere.
func lingerAnswer(c net.Conn, status int, body []byte) {
	hw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, fasthttp.StatusMessage(status)...)
	b = append(b, "\r\nServer: herald\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	_ = c.SetWriteDeadline(time.Now().Add(lingerFor))
	if _, err := c.Write(b); err != nil {
		return
	}
	_ = hw.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(lingerFor))
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}
