// Package probe owns `herald probe`: a synthetic end-to-end check of a
// Herald deployment as a client and a backend see it, through whatever sits
// in front of it (a load balancer, an ingress). One run connects a
// WebSocket, subscribes to a public and a private channel (the private
// channel's auth signed locally with the app secret, docs/protocol.md §3),
// publishes one event to both through the signed REST API, waits for it on
// both, and reports each step's latency and the REST clock skew. Every run
// uses channel names of its own, so runs never see each other's events.
//
// The WebSocket side is the repo's client package; the channel signature is
// protocol.ChannelAuth, the server's own scheme; the REST request is signed
// by client.REST. Monitor repeats runs and feeds Metrics (metrics.go).
package probe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"herald/client"
	"herald/protocol"
)

// Step names, in the order a run takes them.
const (
	StepConnect          = "connect"
	StepSubscribePublic  = "subscribe_public"
	StepSubscribePrivate = "subscribe_private"
	StepPublish          = "publish"
	StepReceivePublic    = "receive_public"
	StepReceivePrivate   = "receive_private"
)

// Steps lists every step name in run order.
var Steps = []string{StepConnect, StepSubscribePublic, StepSubscribePrivate, StepPublish, StepReceivePublic, StepReceivePrivate}

// EventName is the event every probe publishes.
const EventName = "herald-probe"

// DefaultTimeout bounds one run when Config.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// Config says what to probe and with which app.
type Config struct {
	URL     string        // ws://host:port or wss://host:port; a path other than / is kept as is
	API     string        // http(s)://host:port of the REST API; "" = URL with http(s)
	AppID   string        // required
	Key     string        // required
	Secret  string        // required
	Timeout time.Duration // one whole run; 0: DefaultTimeout
	HTTP    *http.Client  // nil: a client of its own (no shared idle connections)
}

// Step is one step's outcome. MS is how long it took; for the receive steps
// it is the time from the publish request's start to the event's arrival
// (the end-to-end delivery latency Pusher's guidance puts under 100 ms).
type Step struct {
	Name  string  `json:"name"`
	OK    bool    `json:"ok"`
	MS    float64 `json:"ms"`
	Error string  `json:"error,omitempty"`
}

// Skew is the local clock's offset from the server's, as the REST
// signature check sees it (auth_timestamp must be within
// protocol.MaxTimestampSkew of the server's clock). MS > 0: the server is
// ahead. The server's clock comes from the REST answer: Source
// "server_time" is Herald's Herald-Time header (milliseconds, the clock the
// signature was checked against), "http_date" the Date header of a server
// that sends none (whole seconds). Either is compared with the midpoint of
// the request; ResolutionMS says how far off the figure may be.
type Skew struct {
	MS           int64  `json:"ms"`
	Source       string `json:"source"`
	ResolutionMS int64  `json:"resolution_ms"`
	LimitMS      int64  `json:"limit_ms"`
}

// Result is one run: every step in order (a step not run because an
// earlier one failed is ok:false with a "skipped" error), the skew when the
// REST answer carried a Date header, and whether every step passed.
type Result struct {
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"` // the first failed step's one-line reason, "" when ok
	Started time.Time `json:"started"`
	Steps   []Step    `json:"steps"`
	Skew    *Skew     `json:"skew,omitempty"`
	Public  string    `json:"public_channel"`
	Private string    `json:"private_channel"`
}

// Err is the run's failure as an error, nil when it passed.
func (r Result) Err() error {
	if r.OK {
		return nil
	}
	return errors.New(r.Error)
}

// Validate checks the config before a run.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("probe: --url is required (ws://HOST:PORT)")
	case c.AppID == "" || c.Key == "" || c.Secret == "":
		return errors.New("probe: --app-id, --key and --secret are required")
	}
	if _, err := c.socketURL(); err != nil {
		return err
	}
	if _, err := c.apiBase(); err != nil {
		return err
	}
	return nil
}

// socketURL is the WebSocket URL: URL with /app/KEY?protocol=7 when it has
// no path of its own.
func (c Config) socketURL() (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", fmt.Errorf("probe: --url %q: %w", c.URL, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("probe: --url %q: scheme must be ws or wss", c.URL)
	}
	if u.Host == "" {
		return "", fmt.Errorf("probe: --url %q: no host", c.URL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/app/" + c.Key
		u.RawQuery = "protocol=7&client=herald-probe"
	}
	return u.String(), nil
}

// apiBase is the REST base URL: API, or URL's host with http(s).
func (c Config) apiBase() (string, error) {
	raw := c.API
	if raw == "" {
		u, err := url.Parse(c.URL)
		if err != nil {
			return "", fmt.Errorf("probe: --url %q: %w", c.URL, err)
		}
		scheme := "http"
		if u.Scheme == "wss" || u.Scheme == "https" {
			scheme = "https"
		}
		return scheme + "://" + u.Host, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("probe: --api %q: want http(s)://HOST:PORT", raw)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// Run probes once. It never panics and always returns every step.
func Run(ctx context.Context, cfg Config) Result {
	r := run{cfg: cfg, res: Result{Started: time.Now()}}
	id := newID()
	r.res.Public = "herald-probe-" + id
	r.res.Private = "private-herald-probe-" + id
	r.nonce = id
	if err := cfg.Validate(); err != nil {
		r.res.Error = err.Error()
		return r.res
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r.cfg = cfg
	r.steps(ctx)
	r.res.Steps = sortSteps(r.res.Steps)
	r.res.OK = true
	for _, s := range r.res.Steps {
		if !s.OK {
			r.res.OK = false
			if r.res.Error == "" {
				r.res.Error = oneLine(s.Name + ": " + s.Error)
			}
		}
	}
	return r.res
}

type run struct {
	cfg   Config
	res   Result
	nonce string
}

// step records a step that ran; skip one that could not.
func (r *run) step(name string, began time.Time, err error) bool {
	s := Step{Name: name, OK: err == nil, MS: ms(time.Since(began))}
	if err != nil {
		s.Error = oneLine(err.Error())
	}
	r.res.Steps = append(r.res.Steps, s)
	return err == nil
}

func (r *run) skip(name, because string) {
	r.res.Steps = append(r.res.Steps, Step{Name: name, Error: "skipped: " + because + " failed"})
}

func (r *run) steps(ctx context.Context) {
	wsURL, _ := r.cfg.socketURL()
	began := time.Now()
	conn, err := client.Dial(ctx, wsURL, client.Options{DialTimeout: r.cfg.Timeout})
	if !r.step(StepConnect, began, explain(err)) {
		for _, s := range Steps[1:] {
			r.skip(s, StepConnect)
		}
		return
	}
	defer conn.CloseNow()

	began = time.Now()
	pubOK := r.step(StepSubscribePublic, began, explain(conn.Subscribe(ctx, r.res.Public)))
	began = time.Now()
	auth := protocol.ChannelAuth(r.cfg.Key, r.cfg.Secret, conn.SocketID(), r.res.Private, "")
	_, err = conn.SubscribeAuth(ctx, r.res.Private, auth, "")
	privOK := r.step(StepSubscribePrivate, began, explain(err))

	var chans []string
	if pubOK {
		chans = append(chans, r.res.Public)
	}
	if privOK {
		chans = append(chans, r.res.Private)
	}
	if len(chans) == 0 {
		r.skip(StepPublish, "both subscribes")
		r.skip(StepReceivePublic, StepSubscribePublic)
		r.skip(StepReceivePrivate, StepSubscribePrivate)
		return
	}
	sent := time.Now()
	err = r.publish(ctx, chans)
	if !r.step(StepPublish, sent, err) {
		r.skip(StepReceivePublic, StepPublish)
		r.skip(StepReceivePrivate, StepPublish)
		return
	}
	r.receive(ctx, conn, sent, pubOK, privOK)
}

// payload is the probe event's data: the run's id, so an event of another
// run (or a replay) is never taken for this one.
type payload struct {
	Probe string `json:"probe"`
	Sent  int64  `json:"sent_unix_ms"`
}

// publish triggers the probe event on chans through the signed REST API and
// measures the clock skew from the answer.
func (r *run) publish(ctx context.Context, chans []string) error {
	base, _ := r.cfg.apiBase()
	hc := r.cfg.HTTP
	if hc == nil {
		hc = &http.Client{}
		defer hc.CloseIdleConnections()
	}
	dt := &dateTransport{next: hc.Transport}
	if dt.next == nil {
		dt.next = http.DefaultTransport
	}
	hcCopy := *hc
	hcCopy.Transport = dt
	rest := &client.REST{BaseURL: base, AppID: r.cfg.AppID, Key: r.cfg.Key, Secret: r.cfg.Secret, HTTP: &hcCopy}
	data, _ := json.Marshal(payload{Probe: r.nonce, Sent: time.Now().UnixMilli()})
	status, body, err := rest.Trigger(ctx, client.TriggerParams{Name: EventName, Data: string(data), Channels: chans})
	r.res.Skew = dt.skew()
	if err != nil {
		return fmt.Errorf("POST %s/apps/%s/events: %w", base, r.cfg.AppID, err)
	}
	if status != http.StatusOK {
		msg := fmt.Sprintf("POST %s/apps/%s/events: HTTP %d %s", base, r.cfg.AppID, status, restMessage(body))
		if s := r.res.Skew; s != nil && abs(s.MS) > s.LimitMS {
			msg += fmt.Sprintf(" (local clock %+.1f s off the server's, beyond the %d s the signature allows)", -float64(s.MS)/1000, s.LimitMS/1000)
		}
		return errors.New(msg)
	}
	return nil
}

// receive waits for the probe event on every channel subscribed to.
func (r *run) receive(ctx context.Context, conn *client.Conn, sent time.Time, pub, priv bool) {
	want := map[string]*Step{}
	var order []*Step
	add := func(name, channel string, ok bool, because string) {
		if !ok {
			r.skip(name, because)
			return
		}
		s := &Step{Name: name}
		want[channel] = s
		order = append(order, s)
	}
	add(StepReceivePublic, r.res.Public, pub, StepSubscribePublic)
	add(StepReceivePrivate, r.res.Private, priv, StepSubscribePrivate)
	left := len(want)
	var failure error
	for left > 0 {
		ev, err := conn.Next(ctx)
		if err != nil {
			failure = err
			break
		}
		s := want[ev.Channel]
		if s == nil || s.OK || ev.Event != EventName {
			continue
		}
		var p payload
		if json.Unmarshal([]byte(ev.Data), &p) != nil || p.Probe != r.nonce {
			continue
		}
		s.OK, s.MS = true, ms(ev.Received.Sub(sent))
		left--
	}
	for _, s := range order {
		if !s.OK {
			s.MS = ms(time.Since(sent))
			s.Error = oneLine(receiveError(failure))
		}
	}
	for _, s := range order {
		r.res.Steps = append(r.res.Steps, *s)
	}
}

func receiveError(err error) string {
	var ce *client.CloseError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the published event did not arrive before the timeout (REST accepted it, so delivery to sockets is broken)"
	case errors.As(err, &ce):
		return "connection closed before the event arrived: " + ce.Error()
	case err != nil:
		return "before the event arrived: " + err.Error()
	}
	return "not received"
}

// sortSteps puts steps in run order (a skip is recorded when it is decided,
// which may be before a step that comes ahead of it).
func sortSteps(steps []Step) []Step {
	out := make([]Step, 0, len(steps))
	for _, name := range Steps {
		for _, s := range steps {
			if s.Name == name {
				out = append(out, s)
			}
		}
	}
	return out
}

// explain turns client errors into what an operator reads: a refused
// subscription says why, a refused connection says its close code.
func explain(err error) error {
	if err == nil {
		return nil
	}
	var se *client.SubscriptionError
	if errors.As(err, &se) {
		return fmt.Errorf("refused: %s", se.Error())
	}
	var ce *client.CloseError
	if errors.As(err, &ce) {
		return fmt.Errorf("closed by the server: %s", ce.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

// restMessage is the "error" of a Herald JSON error body, or the body.
func restMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := string(body)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// headerTime is api.HeaderTime: the server's clock in Unix milliseconds, as
// its REST signature check read it (probe_test.go checks the two agree).
const headerTime = "Herald-Time"

// dateTransport remembers, of the last answer, when its request was sent
// and answered and the server's clock: Herald-Time when the server sends
// it, else the Date header.
type dateTransport struct {
	next       http.RoundTripper
	mu         sync.Mutex
	sent, recv time.Time
	server     time.Time
	source     string
	resolution time.Duration // how far off server may be, before the round trip's share
}

func (d *dateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := time.Now()
	resp, err := d.next.RoundTrip(req)
	recv := time.Now()
	if err != nil {
		return resp, err
	}
	var server time.Time
	var source string
	var res time.Duration
	if v, perr := strconv.ParseInt(resp.Header.Get(headerTime), 10, 64); perr == nil && v > 0 {
		server, source, res = time.UnixMilli(v), "server_time", time.Millisecond
	} else if t, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
		// Whole seconds, and servers that cache the header (fasthttp
		// refreshes it once a second) send one up to 2 s behind their
		// clock: take the middle of that.
		server, source, res = t.Add(time.Second), "http_date", time.Second
	}
	if source != "" {
		d.mu.Lock()
		d.sent, d.recv, d.server, d.source, d.resolution = sent, recv, server, source, res
		d.mu.Unlock()
	}
	return resp, err
}

// skew compares the server's clock with the request's midpoint; the round
// trip's half is added to the resolution (the server read its clock
// somewhere in it).
func (d *dateTransport) skew() *Skew {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.source == "" {
		return nil
	}
	rtt := d.recv.Sub(d.sent)
	mid := d.sent.Add(rtt / 2)
	return &Skew{
		MS:           d.server.Sub(mid).Milliseconds(),
		Source:       d.source,
		ResolutionMS: (d.resolution + rtt/2).Milliseconds(),
		LimitMS:      protocol.MaxTimestampSkew.Milliseconds(),
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// oneLine keeps a reason on one line, as the CLI's contract says.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
