package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"herald/client"
)

// publisher triggers the fan-out events through the signed REST API from a
// pool of keep-alive HTTP connections, or over NATS (natspub.go). Event i
// goes to channel bench-(i % C) with data {"t":<send time, unix ns>,"i":i,
// "p":"xx…"} padded to the payload size.
type publisher struct {
	cfg    *Config
	client *http.Client
	bases  []string       // REST base URLs, no trailing slash: publisher w posts to bases[w % len]
	nats   *natsPublisher // publishing over NATS (Config.Publish); nil: REST

	next      atomic.Int64 // next sequence number to claim
	published atomic.Int64 // events the server acknowledged (200)

	mu     sync.Mutex
	failed []int64          // sequence numbers whose request failed
	errs   map[string]int64 // failed requests by reason
	rtt    Histogram        // request round-trip times
	first  int64            // unix ns of the first send
	last   int64            // unix ns of the last acknowledgement
}

func newPublisher(cfg *Config) *publisher {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Publishers,
		MaxIdleConnsPerHost: cfg.Publishers,
		MaxConnsPerHost:     cfg.Publishers,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &publisher{
		cfg:    cfg,
		client: &http.Client{Transport: tr, Timeout: 15 * time.Second},
		bases:  cfg.restURLs(),
		errs:   map[string]int64{},
	}
}

// run publishes every event, Publishers requests at a time, paced to Rate
// events/s when Rate > 0. It returns when all are sent or ctx ends.
func (p *publisher) run(ctx context.Context) {
	if p.cfg.Publish != PublishREST && p.cfg.Publish != "" {
		np, err := connectNATS(p.cfg)
		if err != nil {
			p.fail(0, int64(p.cfg.Messages), "nats_connect: "+err.Error())
			return
		}
		p.nats = np
		defer np.close()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range p.cfg.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.loop(ctx, start, w)
		}()
	}
	wg.Wait()
	p.client.CloseIdleConnections()
	if p.nats != nil {
		if at := p.nats.settle(p.published.Load()); at > 0 { // nats-publish: until stored
			p.mu.Lock()
			p.last = max(p.last, at)
			p.mu.Unlock()
		}
	}
}

func (p *publisher) loop(ctx context.Context, start time.Time, worker int) {
	batch := int64(p.cfg.Batch)
	total := int64(p.cfg.Messages)
	var body []byte
	for ctx.Err() == nil {
		first := p.next.Add(batch) - batch
		if first >= total {
			return
		}
		n := min(batch, total-first)
		if p.cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(first) / p.cfg.Rate * 1e9))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					p.fail(first, n, "canceled")
					return
				}
			}
		}
		var reason string
		if p.nats != nil {
			p.nats.pace(ctx, first)
		}
		sent := time.Now().UnixNano()
		body = p.body(body[:0], first, n, sent)
		if p.nats != nil {
			reason = p.nats.send(ctx, worker, body)
		} else {
			reason = p.post(ctx, worker, body)
		}
		done := time.Now().UnixNano()
		p.mu.Lock()
		if p.first == 0 || sent < p.first {
			p.first = sent
		}
		p.last = max(p.last, done)
		if p.nats == nil || !p.nats.fire { // a fire-and-forget publish has no round trip
			p.rtt.Record(done - sent)
		}
		p.mu.Unlock()
		if reason != "" {
			p.fail(first, n, reason)
			continue
		}
		p.published.Add(n)
	}
}

func (p *publisher) fail(first, n int64, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs[reason]++
	for s := first; s < first+n; s++ {
		p.failed = append(p.failed, s)
	}
}

// body builds the JSON body for events first..first+n-1: /events for one,
// /batch_events for several (or when Batch > 1).
func (p *publisher) body(b []byte, first, n, sent int64) []byte {
	if p.cfg.Batch == 1 {
		b = append(b, `{"name":"bench","channels":["`...)
		b = p.appendChannel(b, first)
		b = append(b, `"],"data":"`...)
		b = p.appendData(b, first, sent)
		return append(b, `"}`...)
	}
	b = append(b, `{"batch":[`...)
	for s := first; s < first+n; s++ {
		if s > first {
			b = append(b, ',')
		}
		b = append(b, `{"name":"bench","channel":"`...)
		b = p.appendChannel(b, s)
		b = append(b, `","data":"`...)
		b = p.appendData(b, s, sent)
		b = append(b, `"}`...)
	}
	return append(b, `]}`...)
}

func (p *publisher) appendChannel(b []byte, seq int64) []byte {
	b = append(b, channelPrefix...)
	return strconv.AppendInt(b, seq%int64(p.cfg.Channels), 10)
}

// appendData appends the event data as the inside of a JSON string: the
// payload {"t":..,"i":..,"p":"x…"} with its quotes escaped. The unescaped
// data is Payload bytes long, or as short as the fields allow.
func (p *publisher) appendData(b []byte, seq, sent int64) []byte {
	var num [40]byte
	t := strconv.AppendInt(num[:0], sent, 10)
	used := len(`{"t":,"i":,"p":""}`) + len(t) + digits(seq)
	b = append(b, `{\"t\":`...)
	b = append(b, t...)
	b = append(b, `,\"i\":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,\"p\":\"`...)
	for range max(p.cfg.Payload-used, 0) {
		b = append(b, 'x')
	}
	return append(b, `\"}`...)
}

// post sends one signed request for publisher worker; it returns "" on
// 200, else a reason.
func (p *publisher) post(ctx context.Context, worker int, body []byte) string {
	path := "/apps/" + p.cfg.AppID + "/events"
	if p.cfg.Batch > 1 {
		path = "/apps/" + p.cfg.AppID + "/batch_events"
	}
	return signedPost(ctx, p.client, p.bases[worker%len(p.bases)], path, p.cfg.Key, p.cfg.Secret, body)
}

// signedPost sends one signed REST publish: "" on 200, else a reason
// ("timeout" when the request timed out).
func signedPost(ctx context.Context, hc *http.Client, base, path, key, secret string, body []byte) string {
	q := client.SignQuery(key, secret, http.MethodPost, path, nil, body, time.Now())
	req, err := http.NewRequestWithContext(ctx, "POST", base+path+"?"+q, bytes.NewReader(body))
	if err != nil {
		return "request"
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "canceled"
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "http_error"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "http_" + strconv.Itoa(resp.StatusCode)
	}
	return ""
}
