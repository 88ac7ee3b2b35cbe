package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"herald/app"
	"herald/protocol"
)

// This file holds the REST queries (docs/protocol.md §6.5-§6.8): GET
// channels, GET channel, GET channel users and POST terminate_connections,
// plus the routing of every path below /apps/{id}/ that api.go's fixed cases
// do not take.
//
// Each query has a transport-neutral form (QueryChannels, QueryChannel,
// QueryUsers, TerminateConnections) that returns the JSON answer or an
// *protocol.HTTPError, like Events; the fasthttp handlers only pick the
// parameters out of the request.

// InfoCache is the info attribute of GET channel that returns a cache
// channel's last event (docs/protocol.md §6.6).
const InfoCache = "cache"

// MaxUserIDBytes is the longest user id terminate_connections accepts.
const MaxUserIDBytes = 200

// cacheReadTimeout bounds how long GET channel waits for Cache.LastEvent.
const cacheReadTimeout = 5 * time.Second

// presencePrefix is the filter_by_prefix a GET channels must start with to
// ask for user_count (presence- and presence-cache- channels both match).
const presencePrefix = "presence-"

// errMethodNotAllowed answers a known path asked with another method.
var errMethodNotAllowed = &protocol.HTTPError{Status: fasthttp.StatusMethodNotAllowed, Message: "Method not allowed"}

// route is what a path below /apps/{id}/ names.
type route struct {
	endpoint string // metrics label; "" when the path names no endpoint
	method   string // the one method the endpoint accepts
	channel  string // the channel of "channel" and "users", as in the path
	user     string // the user id of "terminate_connections", as in the path
}

// matchRoute maps sub, the percent-decoded path after "/apps/{id}/", to an
// endpoint. A channel name or user id is one path segment (neither may
// contain '/'), possibly empty; a path of any other shape names no endpoint.
// matchRoute does not allocate.
func matchRoute(sub string) route {
	switch sub {
	case "events":
		return route{endpoint: "events", method: fasthttp.MethodPost}
	case "batch_events":
		return route{endpoint: "batch_events", method: fasthttp.MethodPost}
	case "channels":
		return route{endpoint: "channels", method: fasthttp.MethodGet}
	}
	if rest, ok := strings.CutPrefix(sub, "channels/"); ok {
		ch, tail, nested := strings.Cut(rest, "/")
		switch {
		case !nested:
			return route{endpoint: "channel", method: fasthttp.MethodGet, channel: ch}
		case tail == "users":
			return route{endpoint: "users", method: fasthttp.MethodGet, channel: ch}
		}
		return route{}
	}
	if rest, ok := strings.CutPrefix(sub, "users/"); ok {
		if id, tail, _ := strings.Cut(rest, "/"); tail == "terminate_connections" {
			return route{endpoint: "terminate_connections", method: fasthttp.MethodPost, user: id}
		}
	}
	return route{}
}

// restRoute picks the handler for sub (see matchRoute) and ctx's method. It
// returns the endpoint's metrics label and handler, or an error to answer
// with before authentication: 404 for an unknown path (label "unknown"),
// 405 with an Allow header for a known path asked with another method.
func (s *Server) restRoute(ctx *fasthttp.RequestCtx, sub string) (string, func(*fasthttp.RequestCtx, *app.App) error, error) {
	r := matchRoute(sub)
	if r.endpoint == "" {
		return "unknown", nil, &protocol.HTTPError{Status: fasthttp.StatusNotFound,
			Message: "Unknown endpoint " + string(ctx.Method()) + " " + string(ctx.Path())}
	}
	if string(ctx.Method()) != r.method {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, r.method)
		return r.endpoint, nil, errMethodNotAllowed
	}
	var h func(*fasthttp.RequestCtx, *app.App) error
	switch r.endpoint {
	case "events":
		h = s.trigger
	case "batch_events":
		h = s.batch
	case "channels":
		h = s.channels
	case "channel":
		h = func(ctx *fasthttp.RequestCtx, app *app.App) error { return s.channel(ctx, app, r.channel) }
	case "users":
		h = func(ctx *fasthttp.RequestCtx, app *app.App) error { return s.users(ctx, app, r.channel) }
	case "terminate_connections":
		h = func(ctx *fasthttp.RequestCtx, app *app.App) error { return s.terminate(ctx, app, r.user) }
	}
	return r.endpoint, h, nil
}

// channels handles GET /apps/{id}/channels (docs/protocol.md §6.5).
func (s *Server) channels(ctx *fasthttp.RequestCtx, app *app.App) error {
	args := ctx.QueryArgs()
	body, err := s.QueryChannels(app, queryValue(args, "filter_by_prefix"), queryValue(args, "info"))
	return answer(ctx, body, err)
}

// channel handles GET /apps/{id}/channels/{channel} (docs/protocol.md §6.6).
func (s *Server) channel(ctx *fasthttp.RequestCtx, app *app.App, channel string) error {
	body, err := s.QueryChannel(ctx, app, channel, queryValue(ctx.QueryArgs(), "info"))
	return answer(ctx, body, err)
}

// users handles GET /apps/{id}/channels/{channel}/users
// (docs/protocol.md §6.7).
func (s *Server) users(ctx *fasthttp.RequestCtx, app *app.App, channel string) error {
	body, err := s.QueryUsers(app, channel)
	return answer(ctx, body, err)
}

// terminate handles POST /apps/{id}/users/{user}/terminate_connections
// (docs/protocol.md §6.8). The body (the SDKs send {}) is covered by the
// signature and otherwise ignored.
func (s *Server) terminate(ctx *fasthttp.RequestCtx, app *app.App, userID string) error {
	body, err := s.TerminateConnections(app, userID)
	return answer(ctx, body, err)
}

// answer writes body with 200 unless err is set, which it returns.
func answer(ctx *fasthttp.RequestCtx, body []byte, err error) error {
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, body)
	return nil
}

// queryValue returns the decoded query parameter key, its values joined
// with ',' when it repeats (as the signature's canonical query joins them).
func queryValue(args *fasthttp.Args, key string) string {
	vs := args.PeekMulti(key)
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return string(vs[0])
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = string(v)
	}
	return strings.Join(parts, ",")
}

// QueryChannels answers GET /apps/{id}/channels for an authenticated app:
// {"channels":{"<name>":{attrs},...}} with every occupied channel whose name
// starts with prefix ("" for all), internal "#" channels left out. info is
// the comma-separated attribute list: subscription_count, and user_count
// when prefix starts with "presence-" (400 otherwise). Without info every
// channel maps to {}. Errors are *protocol.HTTPError.
func (s *Server) QueryChannels(app *app.App, prefix, info string) ([]byte, error) {
	if err := checkEnabled(app); err != nil {
		return nil, err
	}
	attrs, err := parseQueryInfo(info, protocol.InfoUserCount, protocol.InfoSubscriptionCount)
	if err != nil {
		return nil, err
	}
	if slices.Contains(attrs, protocol.InfoUserCount) && !strings.HasPrefix(prefix, presencePrefix) {
		return nil, badRequest("user_count may only be requested for presence channels: filter_by_prefix must start with " + presencePrefix)
	}
	type occupied struct {
		name string
		subs int
	}
	// Collect first: Channels may hold locks while it calls back, and
	// UserCount may need them.
	var list []occupied
	s.cfg.Counts.Channels(app.ID, func(ch string, subs int) {
		if subs > 0 && strings.HasPrefix(ch, prefix) && !strings.HasPrefix(ch, "#") {
			list = append(list, occupied{ch, subs})
		}
	})
	out := make(map[string]map[string]int, len(list))
	for _, c := range list {
		m := make(map[string]int, len(attrs))
		for _, a := range attrs {
			switch a {
			case protocol.InfoSubscriptionCount:
				m[a] = c.subs
			case protocol.InfoUserCount:
				m[a] = s.cfg.Members.UserCount(app.ID, c.name)
			}
		}
		out[c.name] = m
	}
	return json.Marshal(map[string]any{"channels": out})
}

// QueryChannel answers GET /apps/{id}/channels/{channel} for an
// authenticated app:
//
//	{"occupied":true,"user_count":1,"subscription_count":2,"cache":{"data":"d","ttl":60,"event":"e"}}
//
// occupied is always there (subscription count > 0); the others only when
// info asks for them: user_count on presence channels, subscription_count on
// any, cache on cache channels (null when nothing is cached or no Cache is
// configured); any other combination is 400. Counts of an unoccupied channel
// are 0. ctx bounds the cache read. Errors are *protocol.HTTPError.
func (s *Server) QueryChannel(ctx context.Context, app *app.App, channel, info string) ([]byte, error) {
	if err := checkEnabled(app); err != nil {
		return nil, err
	}
	if err := protocol.ValidateChannelName(channel, app.MaxChannelNameLength); err != nil {
		return nil, badRequest(err.Error())
	}
	attrs, err := parseQueryInfo(info, protocol.InfoUserCount, protocol.InfoSubscriptionCount, InfoCache)
	if err != nil {
		return nil, err
	}
	kind, cached := protocol.Classify(channel)
	for _, a := range attrs {
		switch {
		case a == protocol.InfoUserCount && kind != protocol.Presence:
			return nil, badRequest("user_count is only available for presence channels")
		case a == InfoCache && !cached:
			return nil, badRequest("cache is only available for cache channels")
		}
	}
	subs := s.cfg.Counts.SubscriptionCount(app.ID, channel)
	b := make([]byte, 0, 64)
	b = append(b, `{"occupied":`...)
	b = strconv.AppendBool(b, subs > 0)
	// Fixed key order, whatever the order of info.
	if slices.Contains(attrs, protocol.InfoUserCount) {
		users := 0
		if subs > 0 {
			users = s.cfg.Members.UserCount(app.ID, channel)
		}
		b = append(b, `,"user_count":`...)
		b = strconv.AppendInt(b, int64(users), 10)
	}
	if slices.Contains(attrs, protocol.InfoSubscriptionCount) {
		b = append(b, `,"subscription_count":`...)
		b = strconv.AppendInt(b, int64(subs), 10)
	}
	if slices.Contains(attrs, InfoCache) {
		b = append(b, `,"cache":`...)
		if b, err = s.appendCache(ctx, b, app, channel); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendCache appends the cache attribute of channel to b:
// {"data":"<data>","ttl":<seconds left>,"event":"<name>"}, or null.
func (s *Server) appendCache(ctx context.Context, b []byte, app *app.App, channel string) ([]byte, error) {
	if s.cfg.Cache == nil {
		return append(b, "null"...), nil
	}
	ctx, cancel := context.WithTimeout(ctx, cacheReadTimeout)
	defer cancel()
	cached, ok, err := s.cfg.Cache.LastEvent(ctx, app.ID, channel)
	var event, data string
	if err == nil && ok {
		event, data, err = cached.NameAndData()
	}
	if err != nil {
		s.cfg.Logger.Warn("cache read failed", "app", app.ID, "channel", channel, "err", err)
		return nil, &protocol.HTTPError{Status: fasthttp.StatusServiceUnavailable, Message: fmt.Sprintf("Could not read the cache: %v", err)}
	}
	if !ok {
		return append(b, "null"...), nil
	}
	b = append(b, `{"data":`...)
	b = protocol.AppendJSONString(b, data)
	b = append(b, `,"ttl":`...)
	b = strconv.AppendInt(b, ttlSeconds(cached.TTL), 10)
	b = append(b, `,"event":`...)
	b = protocol.AppendJSONString(b, event)
	return append(b, '}'), nil
}

// ttlSeconds rounds a remaining time to live up to whole seconds, so that
// an entry still cached never reports 0; a negative ttl gives 0.
func ttlSeconds(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64((ttl + time.Second - 1) / time.Second)
}

// QueryUsers answers GET /apps/{id}/channels/{channel}/users for an
// authenticated app: {"users":[{"id":"<id>"},...]}, one entry per distinct
// user, ids as JSON strings in byte order; {"users":[]} when the channel is
// empty. Channels other than presence channels are 400. Errors are
// *protocol.HTTPError.
func (s *Server) QueryUsers(app *app.App, channel string) ([]byte, error) {
	if err := checkEnabled(app); err != nil {
		return nil, err
	}
	if err := protocol.ValidateChannelName(channel, app.MaxChannelNameLength); err != nil {
		return nil, badRequest(err.Error())
	}
	if kind, _ := protocol.Classify(channel); kind != protocol.Presence {
		return nil, badRequest("users are only available for presence channels")
	}
	ids := slices.Clone(s.cfg.Members.Users(app.ID, channel))
	slices.Sort(ids)
	n := 16
	for _, id := range ids {
		n += len(id) + 12
	}
	b := make([]byte, 0, n)
	b = append(b, `{"users":[`...)
	for i, id := range slices.Compact(ids) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = protocol.AppendJSONString(b, id)
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// TerminateConnections answers POST
// /apps/{id}/users/{user}/terminate_connections for an authenticated app: it
// asks Channels to close every connection signed in as userID
// (docs/protocol.md §4.5) and answers {}, also when the user has none. userID
// must be 1 to MaxUserIDBytes bytes (400 otherwise). Errors are
// *protocol.HTTPError.
func (s *Server) TerminateConnections(app *app.App, userID string) ([]byte, error) {
	if err := checkEnabled(app); err != nil {
		return nil, err
	}
	if userID == "" || len(userID) > MaxUserIDBytes {
		return nil, badRequest("Invalid user id: must be 1 to " + strconv.Itoa(MaxUserIDBytes) + " bytes")
	}
	s.cfg.Counts.TerminateUser(app.ID, userID)
	return []byte("{}"), nil
}

// parseQueryInfo splits a comma-separated info parameter, trimming spaces
// and dropping repeats; each attribute must be one of allowed (400
// otherwise, as for triggers). "" gives nil.
func parseQueryInfo(info string, allowed ...string) ([]string, error) {
	if info == "" {
		return nil, nil
	}
	var out []string
	for a := range strings.SplitSeq(info, ",") {
		a = strings.TrimSpace(a)
		if !slices.Contains(allowed, a) {
			return nil, badRequest("Invalid info attribute '" + a + "'")
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// checkEnabled refuses queries to a disabled app with 403, as Events does.
func checkEnabled(app *app.App) error {
	if !app.IsEnabled() {
		return &protocol.HTTPError{Status: fasthttp.StatusForbidden, Message: "App is disabled"}
	}
	return nil
}

func badRequest(msg string) *protocol.HTTPError {
	return &protocol.HTTPError{Status: fasthttp.StatusBadRequest, Message: msg}
}
