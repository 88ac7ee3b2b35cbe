package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"herald/app"
	"herald/bus"
	"herald/debugtap"
	"herald/protocol"
)

// trigger handles POST /apps/{id}/events (docs/protocol.md §6.3).
func (s *Server) trigger(ctx *fasthttp.RequestCtx, app *app.App) error {
	body, err := s.Events(app, ctx.PostBody(), debugtap.KindRESTPublish)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, body)
	return nil
}

// batch handles POST /apps/{id}/batch_events (docs/protocol.md §6.4).
func (s *Server) batch(ctx *fasthttp.RequestCtx, app *app.App) error {
	body, err := s.BatchEvents(app, ctx.PostBody(), debugtap.KindRESTPublish)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, body)
	return nil
}

// Events validates and publishes an events body (the body of POST
// /apps/{id}/events) for an authenticated app, and returns the JSON answer:
// {} or the info attributes asked for. Errors are *protocol.HTTPError. Every
// transport (REST, the NATS API, the console) goes through here, so they
// answer alike; via names it in the debug events (debugtap.KindRESTPublish,
// KindNATSPublish, KindConsolePublish).
func (s *Server) Events(app *app.App, body []byte, via debugtap.Kind) ([]byte, error) {
	return s.submitEvents(app, body, via).wait()
}

// BatchEvents is Events for a batch_events body: validated all or nothing,
// published in order, answered with one info entry per item when any item
// asked for info.
func (s *Server) BatchEvents(app *app.App, body []byte, via debugtap.Kind) ([]byte, error) {
	return s.submitBatchEvents(app, body, via).wait()
}

// submission is an events or batch_events body, validated and sent to the
// stream (or refused), whose answer waits for the stream's acks: Events is
// submit then wait; the NATS API submits from a worker and waits from a
// committer (natsapi.go), so a worker never idles on an ack.
type submission struct {
	s       *Server
	app     *app.App
	ts      []protocol.Trigger
	batch   bool // answer as batch_events
	via     debugtap.Kind
	ps      []bus.Publication
	ctx     context.Context
	cancel  context.CancelFunc
	pending *bus.Pending // sent; nil when the Publisher is no Submitter (wait publishes)
	err     error        // refused before anything was sent
}

func (s *Server) submitEvents(app *app.App, body []byte, via debugtap.Kind) *submission {
	if !app.IsEnabled() {
		return &submission{err: &protocol.HTTPError{Status: fasthttp.StatusForbidden, Message: "App is disabled"}}
	}
	t, err := protocol.DecodeTrigger(body, app.Limits())
	if err != nil {
		return &submission{err: err}
	}
	return s.submit(app, []protocol.Trigger{t}, false, via)
}

func (s *Server) submitBatchEvents(app *app.App, body []byte, via debugtap.Kind) *submission {
	if !app.IsEnabled() {
		return &submission{err: &protocol.HTTPError{Status: fasthttp.StatusForbidden, Message: "App is disabled"}}
	}
	ts, err := protocol.DecodeBatch(body, app.Limits())
	if err != nil {
		return &submission{err: err}
	}
	return s.submit(app, ts, true, via)
}

// submit sends one event per channel of every trigger, in order, without
// waiting for the acks (bus/commit.go).
func (s *Server) submit(app *app.App, ts []protocol.Trigger, batch bool, via debugtap.Kind) *submission {
	var ps []bus.Publication
	for _, t := range ts {
		for _, ch := range t.Channels {
			ps = append(ps, bus.Publication{
				App:     app.ID,
				Channel: ch,
				Payload: protocol.AppendEvent(nil, t.Name, ch, t.Data, ""),
				Exclude: t.SocketID,
			})
		}
	}
	x := &submission{s: s, app: app, ts: ts, batch: batch, via: via, ps: ps}
	x.ctx, x.cancel = context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	if sub, ok := s.cfg.Publisher.(Submitter); ok {
		x.pending = sub.Submit(x.ctx, ps)
	}
	return x
}

// wait waits until the stream has acknowledged every event of the
// submission (so a 200 means stored) and returns the answer. Call it once.
func (x *submission) wait() ([]byte, error) {
	if x.err != nil {
		return nil, x.err
	}
	defer x.cancel()
	s := x.s
	var err error
	if x.pending != nil {
		_, err = x.pending.Wait()
	} else {
		_, err = s.cfg.Publisher.PublishBatch(x.ctx, x.ps)
	}
	if err != nil {
		if full := storeFull(err); full != nil {
			s.cfg.Logger.Debug("publish refused: store full", "app", x.app.ID, "events", len(x.ps), "err", err)
			return nil, full
		}
		s.cfg.Logger.Warn("publish failed", "app", x.app.ID, "events", len(x.ps), "err", err)
		return nil, &protocol.HTTPError{Status: fasthttp.StatusServiceUnavailable, Message: fmt.Sprintf("Could not store the event: %v", err)}
	}
	s.tapPublished(x.app, x.ts, x.via)
	return x.answer()
}

// answer is the JSON answer of a stored submission: {} or the info
// attributes asked for.
func (x *submission) answer() ([]byte, error) {
	s, app := x.s, x.app
	if !x.batch {
		t := x.ts[0]
		if len(t.Info) == 0 {
			return []byte("{}"), nil
		}
		chans := make(map[string]map[string]int, len(t.Channels))
		for _, ch := range t.Channels {
			chans[ch] = s.info(app, ch, t.Info)
		}
		return json.Marshal(map[string]any{"channels": chans})
	}
	anyInfo := false
	for _, t := range x.ts {
		anyInfo = anyInfo || len(t.Info) > 0
	}
	if !anyInfo {
		return []byte("{}"), nil
	}
	out := make([]map[string]int, len(x.ts))
	for i, t := range x.ts {
		out[i] = s.info(app, t.Channels[0], t.Info)
	}
	return json.Marshal(map[string]any{"batch": out})
}

// storeFull is the answer to a publish the bus refused because the node's
// store is full (bus.ErrStoreFull, docs/operations.md "Disk full"): 507
// with the reason, no paths; nil for any other error. The node takes
// events again by itself once it has room, so a client may retry later
// or on another node.
func storeFull(err error) *protocol.HTTPError {
	var sf *bus.StoreFullError
	if !errors.As(err, &sf) {
		return nil
	}
	return &protocol.HTTPError{Status: fasthttp.StatusInsufficientStorage,
		Message: "Insufficient storage: the node's store is full (" + sf.Reason + "); the event was not stored, retry later"}
}

// tapPublished reports stored events to the debug tap (docs/console.md).
func (s *Server) tapPublished(app *app.App, ts []protocol.Trigger, via debugtap.Kind) {
	if !s.cfg.Tap.Watched(app.ID) {
		return
	}
	for _, t := range ts {
		for _, ch := range t.Channels {
			s.cfg.Tap.Published(via, app.ID, ch, t.Name, t.Data, t.SocketID)
		}
	}
}

// info returns the attributes a trigger asked for on one channel:
// subscription_count for every channel, user_count for presence channels.
func (s *Server) info(app *app.App, channel string, attrs []string) map[string]int {
	out := make(map[string]int, len(attrs))
	kind, _ := protocol.Classify(channel)
	for _, a := range attrs {
		switch a {
		case protocol.InfoSubscriptionCount:
			out[a] = s.cfg.Counts.SubscriptionCount(app.ID, channel)
		case protocol.InfoUserCount:
			if kind == protocol.Presence {
				out[a] = s.cfg.Members.UserCount(app.ID, channel)
			}
		}
	}
	return out
}
