package api

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"herald/app"
	"herald/bus"
	"herald/protocol"
)

type nopPublisher struct{}

func (nopPublisher) PublishBatch(_ context.Context, ps []bus.Publication) ([]uint64, error) {
	return make([]uint64, len(ps)), nil
}

// FuzzRequest sends raw requests through the client port's routing, the
// request signature check and the REST handlers: nothing panics, and every
// answer is a JSON body (the REST API's error shape or its result).
func FuzzRequest(f *testing.F) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"name":"e","channels":["a","presence-x"],"data":"d","info":"subscription_count,user_count"}`)
	signed := protocol.SignREST("POST", "/apps/app-id/events", nil, body, "app-key", "app-secret", now)
	batch := []byte(`{"batch":[{"name":"e","channel":"a","data":"d"}]}`)
	signedBatch := protocol.SignREST("POST", "/apps/app-id/batch_events", nil, batch, "app-key", "app-secret", now)
	query := protocol.SignREST("GET", "/apps/app-id/channels", map[string]string{"info": "subscription_count"}, nil, "app-key", "app-secret", now)
	for _, s := range []string{
		"POST /apps/app-id/events?" + signed + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body),
		"POST /apps/app-id/batch_events?" + signedBatch + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(batch)) + "\r\n\r\n" + string(batch),
		"GET /apps/app-id/channels?" + query + " HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /apps/nope/channels/x/users HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /apps/app-id/events?auth_key=app-key&body_md5=x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	fc := &fakeChannels{subs: map[string]int{"a": 1}, users: map[string][]string{"presence-x": {"u"}}}
	s := New(Config{
		Apps:      app.NewRegistry([]app.App{app.New("app-id", "app-key", "app-secret")}),
		Upgrade:   func(ctx *fasthttp.RequestCtx) { writeJSON(ctx, 101, []byte("{}")) },
		Publisher: nopPublisher{},
		Counts:    fc,
		Members:   fc,
		Now:       func() time.Time { return now },
	})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
			return
		}
		if err := req.ContinueReadBody(bufio.NewReader(bytes.NewReader(nil)), 1<<20); err != nil {
			_ = err // a body fasthttp could not read is the ErrorHandler's, not this target's
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}, nil)
		s.handle(&ctx)
		if ct := string(ctx.Response.Header.ContentType()); ct != "application/json" {
			t.Fatalf("answer %d with Content-Type %q: %s", ctx.Response.StatusCode(), ct, ctx.Response.Body())
		}
	})
}
