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
	if !app.IsEnabled() {
		return nil, &protocol.HTTPError{Status: fasthttp.StatusForbidden, Message: "App is disabled"}
	}
	t, err := protocol.DecodeTrigger(body, app.Limits())
	if err != nil {
		return nil, err
	}
	if err := s.publish(app, []protocol.Trigger{t}, via); err != nil {
		return nil, err
	}
	if len(t.Info) == 0 {
		return []byte("{}"), nil
	}
	chans := make(map[string]map[string]int, len(t.Channels))
	for _, ch := range t.Channels {
		chans[ch] = s.info(app, ch, t.Info)
	}
	return json.Marshal(map[string]any{"channels": chans})
}

// BatchEvents is Events for a batch_events body: validated all or nothing,
// published in order, answered with one info entry per item when any item
// asked for info.
func (s *Server) BatchEvents(app *app.App, body []byte, via debugtap.Kind) ([]byte, error) {
	if !app.IsEnabled() {
		return nil, &protocol.HTTPError{Status: fasthttp.StatusForbidden, Message: "App is disabled"}
	}
	ts, err := protocol.DecodeBatch(body, app.Limits())
	if err != nil {
		return nil, err
	}
	if err := s.publish(app, ts, via); err != nil {
		return nil, err
	}
	anyInfo := false
	for _, t := range ts {
		anyInfo = anyInfo || len(t.Info) > 0
	}
	if !anyInfo {
		return []byte("{}"), nil
	}
	out := make([]map[string]int, len(ts))
	for i, t := range ts {
		out[i] = s.info(app, t.Channels[0], t.Info)
	}
	return json.Marshal(map[string]any{"batch": out})
}

// publish stores one event per channel of every trigger, in order, and waits
// until the stream has acknowledged them all.
func (s *Server) publish(app *app.App, ts []protocol.Trigger, via debugtap.Kind) error {
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
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	if _, err := s.cfg.Publisher.PublishBatch(ctx, ps); err != nil {
		if full := storeFull(err); full != nil {
			s.cfg.Logger.Debug("publish refused: store full", "app", app.ID, "events", len(ps), "err", err)
			return full
		}
		s.cfg.Logger.Warn("publish failed", "app", app.ID, "events", len(ps), "err", err)
		return &protocol.HTTPError{Status: fasthttp.StatusServiceUnavailable, Message: fmt.Sprintf("Could not store the event: %v", err)}
	}
	s.tapPublished(app, ts, via)
	return nil
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
