package api

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/bus"
	"herald/protocol"
)

func TestMatchRoute(t *testing.T) {
	cases := []struct {
		name string
		sub  string
		want route
	}{
		{
			name: "events",
			sub:  "events",
			want: route{endpoint: "events", method: "POST"},
		},
		{
			name: "batch",
			sub:  "batch_events",
			want: route{endpoint: "batch_events", method: "POST"},
		},
		{
			name: "channels",
			sub:  "channels",
			want: route{endpoint: "channels", method: "GET"},
		},
		{
			name: "channel",
			sub:  "channels/presence-foobar",
			want: route{endpoint: "channel", method: "GET", channel: "presence-foobar"},
		},
		{
			name: "channel called users",
			sub:  "channels/users",
			want: route{endpoint: "channel", method: "GET", channel: "users"},
		},
		{
			name: "users",
			sub:  "channels/presence-foobar/users",
			want: route{endpoint: "users", method: "GET", channel: "presence-foobar"},
		},
		{
			name: "users of a channel called users",
			sub:  "channels/users/users",
			want: route{endpoint: "users", method: "GET", channel: "users"},
		},
		{
			name: "two segments",
			sub:  "channels/a/b",
			want: route{},
		},
		{
			name: "deprecated stats",
			sub:  "channels/a/stats",
			want: route{},
		},
		{
			name: "users of a two-segment name",
			sub:  "channels/a/b/users",
			want: route{},
		},
		{
			name: "terminate, two-segment user",
			sub:  "users/a/b/terminate_connections",
			want: route{},
		},
		{
			name: "empty channel name",
			sub:  "channels/",
			want: route{endpoint: "channel", method: "GET", channel: ""},
		},
		{
			name: "terminate",
			sub:  "users/42/terminate_connections",
			want: route{endpoint: "terminate_connections", method: "POST", user: "42"},
		},
		{
			name: "terminate, empty user",
			sub:  "users//terminate_connections",
			want: route{endpoint: "terminate_connections", method: "POST", user: ""},
		},
		{
			name: "users without action",
			sub:  "users/42",
			want: route{},
		},
		{
			name: "unknown",
			sub:  "stats",
			want: route{},
		},
		{
			name: "empty",
			sub:  "",
			want: route{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := matchRoute(tc.sub); got != tc.want {
				t.Fatalf("matchRoute(%q) = %+v, want %+v", tc.sub, got, tc.want)
			}
		})
	}
}

func TestParseQueryInfo(t *testing.T) {
	all := []string{protocol.InfoUserCount, protocol.InfoSubscriptionCount, InfoCache}
	cases := []struct {
		name    string
		info    string
		allowed []string
		want    string // attributes joined with ','; "!" for a 400
	}{
		{
			name:    "empty",
			info:    "",
			allowed: all,
			want:    "",
		},
		{
			name:    "two, spaces, repeat",
			info:    " subscription_count ,user_count,subscription_count",
			allowed: all,
			want:    "subscription_count,user_count",
		},
		{
			name:    "cache",
			info:    "cache",
			allowed: all,
			want:    "cache",
		},
		{
			name:    "not allowed here",
			info:    "cache",
			allowed: all[:2],
			want:    "!",
		},
		{
			name:    "unknown",
			info:    "member_count",
			allowed: all,
			want:    "!",
		},
		{
			name:    "trailing comma",
			info:    "user_count,",
			allowed: all,
			want:    "!",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseQueryInfo(tc.info, tc.allowed...)
			if tc.want == "!" {
				var he *protocol.HTTPError
				if !errors.As(err, &he) || he.Status != 400 {
					t.Fatalf("parseQueryInfo(%q) = %v, %v; want a 400", tc.info, got, err)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != tc.want {
				t.Fatalf("parseQueryInfo(%q) = %v, %v; want %s", tc.info, got, err, tc.want)
			}
		})
	}
}

func TestTTLSeconds(t *testing.T) {
	for ttl, want := range map[time.Duration]int64{
		-time.Second:           0,
		0:                      0,
		time.Millisecond:       1,
		time.Second:            1,
		time.Second + 1:        2,
		90 * time.Second:       90,
		30*time.Minute - 1e6:   1800,
		30*time.Minute + 0:     1800,
		30*time.Minute + 1e9/2: 1801,
	} {
		if got := ttlSeconds(ttl); got != want {
			t.Errorf("ttlSeconds(%v) = %d, want %d", ttl, got, want)
		}
	}
}

// fakeChannels is a Counts and Members with fixed answers.
type fakeChannels struct {
	subs       map[string]int
	users      map[string][]string
	terminated []string
}

func (f *fakeChannels) SubscriptionCount(_, ch string) int { return f.subs[ch] }
func (f *fakeChannels) UserCount(_, ch string) int         { return len(f.users[ch]) }
func (f *fakeChannels) Users(_, ch string) []string        { return f.users[ch] }
func (f *fakeChannels) TerminateUser(_, id string) int {
	f.terminated = append(f.terminated, id)
	return 1
}
func (f *fakeChannels) Channels(_ string, fn func(string, int)) {
	for ch, n := range f.subs {
		fn(ch, n)
	}
}

// fakeCache is a Cache holding one event per channel.
type fakeCache struct {
	events map[string][2]string // channel -> event, data
	ttl    time.Duration
	err    error
}

func (f *fakeCache) LastEvent(_ context.Context, _, ch string) (bus.CachedEvent, bool, error) {
	if f.err != nil {
		return bus.CachedEvent{}, false, f.err
	}
	ev, ok := f.events[ch]
	if !ok {
		return bus.CachedEvent{}, false, nil
	}
	payload, _ := json.Marshal(map[string]string{"event": ev[0], "channel": ch, "data": ev[1]})
	return bus.CachedEvent{Payload: payload, Serial: 1, TTL: f.ttl}, true, nil
}

func newQueryServer(cache Cache) (*Server, *fakeChannels) {
	fc := &fakeChannels{
		subs: map[string]int{
			"a":                   2,
			"b":                   1,
			"gone":                0,
			"presence-x":          3,
			"presence-cache-y":    1,
			"cache-z":             1,
			"#server-to-user-u1":  1,
			"private-encrypted-q": 1,
		},
		users: map[string][]string{
			"presence-x":       {"u2", "u1", "u2"},
			"presence-cache-y": {"u9"},
		},
	}
	return New(Config{Counts: fc, Members: fc, Cache: cache}), fc
}

var queryApp = func() *app.App { a := app.New("app-id", "app-key", "app-secret"); return &a }()

// status returns the HTTP status of err, 200 for nil.
func status(err error) int {
	var he *protocol.HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	if err != nil {
		return 500
	}
	return 200
}

func TestQueryChannelsAnswers(t *testing.T) {
	s, _ := newQueryServer(nil)
	cases := []struct {
		name   string
		prefix string
		info   string
		status int
		body   string
	}{
		{
			name:   "all occupied, internal left out",
			status: 200,
			body:   `{"channels":{"a":{},"b":{},"cache-z":{},"presence-cache-y":{},"presence-x":{},"private-encrypted-q":{}}}`,
		},
		{
			name:   "prefix",
			prefix: "presence-",
			status: 200,
			body:   `{"channels":{"presence-cache-y":{},"presence-x":{}}}`,
		},
		{
			name:   "user_count",
			prefix: "presence-",
			info:   "user_count,subscription_count",
			status: 200,
			body:   `{"channels":{"presence-cache-y":{"subscription_count":1,"user_count":1},"presence-x":{"subscription_count":3,"user_count":3}}}`,
		},
		{
			name:   "user_count without presence prefix",
			prefix: "pres",
			info:   "user_count",
			status: 400,
		},
		{
			name:   "subscription_count",
			prefix: "a",
			info:   "subscription_count",
			status: 200,
			body:   `{"channels":{"a":{"subscription_count":2}}}`,
		},
		{
			name:   "nothing matches",
			prefix: "zzz",
			status: 200,
			body:   `{"channels":{}}`,
		},
		{
			name:   "cache is not a list attribute",
			info:   "cache",
			status: 400,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := s.QueryChannels(queryApp, tc.prefix, tc.info)
			if got := status(err); got != tc.status {
				t.Fatalf("status %d (%v), want %d", got, err, tc.status)
			}
			if tc.status == 200 && string(b) != tc.body {
				t.Fatalf("body %s\nwant %s", b, tc.body)
			}
		})
	}
}

func TestQueryChannelAnswers(t *testing.T) {
	cache := &fakeCache{
		events: map[string][2]string{"cache-z": {"my-event", `{"a":"<&>"}`}},
		ttl:    59*time.Second + time.Millisecond,
	}
	s, _ := newQueryServer(cache)
	sNil, _ := newQueryServer(nil)
	sErr, _ := newQueryServer(&fakeCache{err: errors.New("stream down")})
	cases := []struct {
		name    string
		s       *Server
		channel string
		info    string
		status  int
		body    string
	}{
		{
			name:    "occupied",
			s:       s,
			channel: "a",
			status:  200,
			body:    `{"occupied":true}`,
		},
		{
			name:    "unoccupied with counts",
			s:       s,
			channel: "presence-empty",
			info:    "subscription_count,user_count",
			status:  200,
			body:    `{"occupied":false,"user_count":0,"subscription_count":0}`,
		},
		{
			name:    "presence counts",
			s:       s,
			channel: "presence-x",
			info:    "subscription_count,user_count",
			status:  200,
			body:    `{"occupied":true,"user_count":3,"subscription_count":3}`,
		},
		{
			name:    "cache hit",
			s:       s,
			channel: "cache-z",
			info:    "cache,subscription_count",
			status:  200,
			body:    `{"occupied":true,"subscription_count":1,"cache":{"data":"{\"a\":\"<&>\"}","ttl":60,"event":"my-event"}}`,
		},
		{
			name:    "cache miss",
			s:       s,
			channel: "presence-cache-y",
			info:    "cache",
			status:  200,
			body:    `{"occupied":true,"cache":null}`,
		},
		{
			name:    "no cache configured",
			s:       sNil,
			channel: "cache-z",
			info:    "cache",
			status:  200,
			body:    `{"occupied":true,"cache":null}`,
		},
		{
			name:    "cache read fails",
			s:       sErr,
			channel: "cache-z",
			info:    "cache",
			status:  503,
		},
		{
			name:    "user_count on public",
			s:       s,
			channel: "a",
			info:    "user_count",
			status:  400,
		},
		{
			name:    "cache on non-cache",
			s:       s,
			channel: "presence-x",
			info:    "cache",
			status:  400,
		},
		{
			name:    "unknown attribute",
			s:       s,
			channel: "a",
			info:    "occupied",
			status:  400,
		},
		{
			name:    "invalid name",
			s:       s,
			channel: "a/b",
			status:  400,
		},
		{
			name:    "empty name",
			s:       s,
			channel: "",
			status:  400,
		},
		{
			name:    "internal channel",
			s:       s,
			channel: "#server-to-user-u1",
			info:    "subscription_count",
			status:  200,
			body:    `{"occupied":true,"subscription_count":1}`,
		},
		{
			name:    "other # name",
			s:       s,
			channel: "#foo",
			status:  400,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.s.QueryChannel(context.Background(), queryApp, tc.channel, tc.info)
			if got := status(err); got != tc.status {
				t.Fatalf("status %d (%v), want %d", got, err, tc.status)
			}
			if tc.status == 200 && string(b) != tc.body {
				t.Fatalf("body %s\nwant %s", b, tc.body)
			}
		})
	}
}

func TestQueryUsersAndTerminate(t *testing.T) {
	s, fc := newQueryServer(nil)
	for ch, want := range map[string]string{
		"presence-x":       `{"users":[{"id":"u1"},{"id":"u2"}]}`,
		"presence-cache-y": `{"users":[{"id":"u9"}]}`,
		"presence-empty":   `{"users":[]}`,
		"a":                "400",
		"private-foo":      "400",
		"presence-a b":     "400",
	} {
		b, err := s.QueryUsers(queryApp, ch)
		if want == "400" {
			if status(err) != 400 {
				t.Errorf("users of %q: %s %v, want 400", ch, b, err)
			}
		} else if err != nil || string(b) != want {
			t.Errorf("users of %q: %s %v, want %s", ch, b, err, want)
		}
	}

	for id, want := range map[string]int{"u1": 200, "": 400, strings.Repeat("x", 200): 200, strings.Repeat("x", 201): 400} {
		b, err := s.TerminateConnections(queryApp, id)
		if status(err) != want || (want == 200 && string(b) != "{}") {
			t.Errorf("terminate %.10q: %s %v, want %d", id, b, err, want)
		}
	}
	if len(fc.terminated) != 2 || fc.terminated[0] == "" {
		t.Fatalf("terminated %d users, want 2", len(fc.terminated))
	}

	off := app.New("off", "off-key", "s")
	off.Enabled = new(bool)
	if _, err := s.TerminateConnections(&off, "u1"); status(err) != 403 {
		t.Fatalf("disabled app: %v", err)
	}
}

func FuzzMatchRoute(f *testing.F) {
	for _, s := range []string{"channels", "channels/a/users", "users/1/terminate_connections", "channels//users", "events"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sub string) {
		r := matchRoute(sub)
		var back string
		switch r.endpoint {
		case "":
			return
		case "channel":
			back = "channels/" + r.channel
		case "users":
			back = "channels/" + r.channel + "/users"
		case "terminate_connections":
			back = "users/" + r.user + "/terminate_connections"
		default:
			back = r.endpoint
		}
		if back != sub || strings.Contains(r.channel, "/") || strings.Contains(r.user, "/") {
			t.Fatalf("matchRoute(%q) = %+v, which names %q", sub, r, back)
		}
	})
}
