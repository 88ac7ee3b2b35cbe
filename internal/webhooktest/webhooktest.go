// Package webhooktest is a real local HTTP webhook receiver for tests: it
// checks every request the way a Pusher backend's verifier does (POST,
// Content-Type application/json, X-Pusher-Key, X-Pusher-Signature over the
// raw body) and the body's exact shape ({"time_ms":<int>,"events":[...]}
// with Pusher's field names and types, and no field an event of its kind
// does not have), and records every event with when it arrived. What it
// finds wrong is kept in Problems, never a panic or a t.Errorf from the
// server's goroutine. Imported only from _test.go files.
package webhooktest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Event is one event object as the receiver got it.
type Event struct {
	ID       string
	Name     string
	Channel  string
	UserID   string
	Event    string // client_event
	Data     string // client_event
	SocketID string // client_event
	Count    *int   // subscription_count
	At       time.Time
	Raw      string // the object as sent
}

// Line is the event as tests compare it: "name[ user][ count]".
func (e Event) Line() string {
	s := e.Name
	if e.UserID != "" {
		s += " " + e.UserID
	}
	if e.Count != nil {
		s += fmt.Sprintf(" %d", *e.Count)
	}
	return s
}

// Receiver is a running receiver. Its zero value is not usable: NewReceiver.
type Receiver struct {
	srv         *httptest.Server
	key, secret string

	mu       sync.Mutex
	events   []Event
	requests int
	problems []string
	seen     map[string]int // id -> times received
	status   int            // what it answers; 0: 200
}

// NewReceiver starts a receiver that expects requests signed for the app
// with key and secret. Close it when done.
func NewReceiver(key, secret string) *Receiver {
	r := &Receiver{key: key, secret: secret, seen: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

// URL is the receiver's webhook URL.
func (r *Receiver) URL() string { return r.srv.URL + "/pusher/webhooks" }

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// Answer makes the receiver answer status to every request from now on
// (events of a non-2xx answer are not recorded); 0 or 200: accept.
func (r *Receiver) Answer(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// Events returns every event received, in arrival order.
func (r *Receiver) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Of returns channel's events, in arrival order.
func (r *Receiver) Of(channel string) []Event {
	var out []Event
	for _, e := range r.Events() {
		if e.Channel == channel {
			out = append(out, e)
		}
	}
	return out
}

// Lines returns channel's events as Lines, in arrival order.
func (r *Receiver) Lines(channel string) []string {
	var out []string
	for _, e := range r.Of(channel) {
		out = append(out, e.Line())
	}
	return out
}

// Requests is how many requests were accepted.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Problems returns what was wrong with the requests so far: a bad
// signature, key or content type, a malformed body, an event id received
// twice.
func (r *Receiver) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.problems)
}

func (r *Receiver) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// fields are the members an event of each kind has, besides id, name and
// channel; optional ones start with "?".
var fields = map[string][]string{
	"channel_occupied":   nil,
	"channel_vacated":    nil,
	"cache_miss":         nil,
	"member_added":       {"user_id"},
	"member_removed":     {"user_id"},
	"subscription_count": {"subscription_count"},
	"client_event":       {"event", "data", "socket_id", "?user_id"},
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.problem("reading a request: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.status != 0 && r.status != http.StatusOK {
		w.WriteHeader(r.status)
		return
	}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.problem("request %s with Content-Type %q", req.Method, req.Header.Get("Content-Type"))
	}
	if k := req.Header.Get("X-Pusher-Key"); k != r.key {
		r.problem("X-Pusher-Key %q, want %q", k, r.key)
	}
	mac := hmac.New(sha256.New, []byte(r.secret))
	mac.Write(body)
	if sig := req.Header.Get("X-Pusher-Signature"); !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		r.problem("X-Pusher-Signature %q does not sign the body %s", sig, body)
	}
	evs, err := parseBody(body, now)
	if err != nil {
		r.problem("body %s: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.requests++
	for _, e := range evs {
		e.At = now
		r.seen[e.ID]++
		if r.seen[e.ID] == 2 {
			r.problem("event id %s received twice: %s", e.ID, e.Raw)
		}
		r.events = append(r.events, e)
	}
}

// parseBody checks the body's exact shape and returns its events.
func parseBody(body []byte, now time.Time) ([]Event, error) {
	var top map[string]json.RawMessage
	if err := strictUnmarshal(body, &top); err != nil {
		return nil, err
	}
	if len(top) != 2 || top["time_ms"] == nil || top["events"] == nil {
		return nil, fmt.Errorf("top-level members %v, want exactly time_ms and events", keys(top))
	}
	var ms json.Number
	if err := strictUnmarshal(top["time_ms"], &ms); err != nil || strings.ContainsAny(ms.String(), ".eE-") {
		return nil, fmt.Errorf("time_ms %s is not a positive integer", top["time_ms"])
	}
	if t, _ := ms.Int64(); now.Sub(time.UnixMilli(t)).Abs() > time.Minute {
		return nil, fmt.Errorf("time_ms %d is not now", t)
	}
	var raws []json.RawMessage
	if err := strictUnmarshal(top["events"], &raws); err != nil || len(raws) == 0 {
		return nil, fmt.Errorf("events %s: not a non-empty array (%v)", top["events"], err)
	}
	out := make([]Event, 0, len(raws))
	for _, raw := range raws {
		e, err := parseEvent(raw)
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", raw, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func parseEvent(raw json.RawMessage) (Event, error) {
	var obj map[string]json.RawMessage
	if err := strictUnmarshal(raw, &obj); err != nil {
		return Event{}, err
	}
	str := func(k string) (string, error) {
		var s string
		if err := json.Unmarshal(obj[k], &s); err != nil {
			return "", fmt.Errorf("%s %s is not a string", k, obj[k])
		}
		return s, nil
	}
	e := Event{Raw: string(raw)}
	var err error
	for _, p := range []struct {
		k string
		v *string
	}{{"id", &e.ID}, {"name", &e.Name}, {"channel", &e.Channel}} {
		if *p.v, err = str(p.k); err != nil {
			return e, err
		}
		if *p.v == "" {
			return e, fmt.Errorf("empty %s", p.k)
		}
	}
	want, ok := fields[e.Name]
	if !ok {
		return e, fmt.Errorf("unknown event name %q", e.Name)
	}
	allowed := map[string]bool{"id": true, "name": true, "channel": true}
	for _, f := range want {
		opt := strings.HasPrefix(f, "?")
		f = strings.TrimPrefix(f, "?")
		allowed[f] = true
		if obj[f] == nil {
			if !opt {
				return e, fmt.Errorf("%s without %s", e.Name, f)
			}
			continue
		}
		switch f {
		case "subscription_count":
			var n int
			if err := strictUnmarshal(obj[f], &n); err != nil {
				return e, fmt.Errorf("subscription_count %s is not an integer", obj[f])
			}
			e.Count = &n
		default:
			s, err := str(f)
			if err != nil {
				return e, err
			}
			switch f {
			case "user_id":
				e.UserID = s
			case "event":
				e.Event = s
			case "data":
				e.Data = s
			case "socket_id":
				e.SocketID = s
			}
		}
	}
	for k := range obj {
		if !allowed[k] {
			return e, fmt.Errorf("%s has a member %q Pusher does not send", e.Name, k)
		}
	}
	return e, nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
