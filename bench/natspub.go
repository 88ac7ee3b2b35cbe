package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Publishing the fan-out's events over NATS instead of REST (Config.Publish):
// the same JSON bodies go to Herald's NATS API subjects
// (herald.<app>.api.events, or .batch_events with Batch > 1), from
// Publishers connections, one publishing goroutine each.
//
//   - nats-request: each goroutine sends a request and waits for Herald's
//     answer ({} once the events are stored) before the next: Publishers
//     requests in flight, like REST.
//   - nats-publish: fire-and-forget, no reply subject. A bounded queue in
//     Herald drops what it cannot take, so the publishers keep at most
//     NATSWindow events ahead of those Herald has stored, which they count
//     on the app's live subjects (herald.<app>.live.>, from one more
//     connection): the pace a backend gets by watching its events come back.
//     The publish rate reported is events stored (seen live) per second.
//
// Connections authenticate as NATSUser / NATSPassword (defaults: the app id
// and secret, Herald's defaults for an app's NATS user) with the inbox prefix
// _INBOX.<app id>, which Herald's client port requires of app users.

// Values of Config.Publish.
const (
	PublishREST        = "rest"
	PublishNATSRequest = "nats-request"
	PublishNATSPublish = "nats-publish"

	DefaultNATSURL    = "nats://127.0.0.1:4222"
	DefaultNATSWindow = 1024 // nats-publish: events ahead of those seen stored; well under Herald's 4096-message API queue

	natsRequestTimeout = 15 * time.Second
	natsSettleWait     = 10 * time.Second // nats-publish: how long to wait for the last events to be seen stored
)

// natsDefaults fills the NATS publishing defaults (called by DefaultConfig).
func (c *Config) natsDefaults() {
	if c.Publish == "" {
		c.Publish = PublishREST
	}
	if c.Publish == PublishREST {
		return
	}
	if c.NATSURL == "" {
		c.NATSURL = DefaultNATSURL
	}
	if c.NATSUser == "" {
		c.NATSUser = c.AppID
	}
	if c.NATSPassword == "" {
		c.NATSPassword = c.Secret
	}
	if c.NATSWindow == 0 {
		c.NATSWindow = DefaultNATSWindow
	}
}

// validateNATS checks the NATS publishing settings of a defaulted config.
func (c *Config) validateNATS() error {
	switch c.Publish {
	case PublishREST:
		return nil
	case PublishNATSRequest, PublishNATSPublish:
	default:
		return fmt.Errorf("bench: --publish %q: want %s, %s or %s", c.Publish, PublishREST, PublishNATSRequest, PublishNATSPublish)
	}
	if !c.fanout() {
		return fmt.Errorf("bench: --publish %s is for the fanout and publish scenarios", c.Publish)
	}
	u, err := url.Parse(c.NATSURL)
	if err != nil || u.Hostname() == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
		return fmt.Errorf("bench: --nats-url %q: want nats://host:port", c.NATSURL)
	}
	if !c.AllowRemote && !isLoopback(u.Hostname()) {
		return fmt.Errorf("bench: %q is not a loopback address; pass --allow-remote to load a remote server", u.Hostname())
	}
	if c.NATSWindow < -1 {
		return errors.New("bench: --nats-window must be -1 (no pacing) or more")
	}
	return nil
}

// natsPublisher holds the NATS side of a publisher.
type natsPublisher struct {
	cfg     *Config
	subject string
	fire    bool         // nats-publish
	conns   []*nats.Conn // one per publishing goroutine
	watch   *nats.Conn   // nats-publish: counts stored events on the live subjects
	seen    atomic.Int64 // events seen stored
	seenAt  atomic.Int64 // unix ns of the last one
}

// connectNATS opens the publisher's connections.
func connectNATS(cfg *Config) (*natsPublisher, error) {
	np := &natsPublisher{cfg: cfg, fire: cfg.Publish == PublishNATSPublish,
		subject: "herald." + cfg.AppID + ".api.events"}
	if cfg.Batch > 1 {
		np.subject = "herald." + cfg.AppID + ".api.batch_events"
	}
	opts := []nats.Option{
		nats.UserInfo(cfg.NATSUser, cfg.NATSPassword),
		nats.CustomInboxPrefix("_INBOX." + cfg.AppID),
		nats.Name("herald-bench"),
		nats.NoReconnect(),
	}
	for range cfg.Publishers {
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			np.close()
			return nil, err
		}
		np.conns = append(np.conns, nc)
	}
	if !np.fire {
		return np, nil
	}
	var err error
	if np.watch, err = nats.Connect(cfg.NATSURL, opts...); err != nil {
		np.close()
		return nil, err
	}
	sub, err := np.watch.Subscribe("herald."+cfg.AppID+".live.>", func(*nats.Msg) {
		np.seen.Add(1)
		np.seenAt.Store(time.Now().UnixNano())
	})
	if err == nil {
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = np.watch.Flush()
	}
	if err != nil {
		np.close()
		return nil, err
	}
	return np, nil
}

// pace waits, for nats-publish with a window, until the event first is at
// most NATSWindow ahead of those seen stored.
func (np *natsPublisher) pace(ctx context.Context, first int64) {
	if !np.fire || np.cfg.NATSWindow <= 0 {
		return
	}
	for first-np.seen.Load() >= int64(np.cfg.NATSWindow) && ctx.Err() == nil {
		time.Sleep(20 * time.Microsecond)
	}
}

// send publishes one body on goroutine worker's connection; it returns "" on
// success (a request answered {}; a publish handed to the connection), else
// a reason.
func (np *natsPublisher) send(ctx context.Context, worker int, body []byte) string {
	nc := np.conns[worker]
	if np.fire {
		if err := nc.Publish(np.subject, body); err != nil {
			return "nats_publish"
		}
		return ""
	}
	rctx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, np.subject, body)
	switch {
	case ctx.Err() != nil:
		return "canceled"
	case errors.Is(err, nats.ErrNoResponders):
		return "nats_no_responders"
	case err != nil:
		return "nats_timeout"
	case bytes.Equal(m.Data, []byte("{}")):
		return ""
	}
	// {"error":"...","status":N}: Herald's REST status.
	if i := bytes.Index(m.Data, []byte(`"status":`)); i >= 0 {
		n, _ := strconv.Atoi(string(bytes.TrimRight(m.Data[i+len(`"status":`):], "}")))
		return "nats_" + strconv.Itoa(n)
	}
	return "nats_bad_answer"
}

// settle flushes the connections and, for nats-publish, waits until every
// event published has been seen stored (or natsSettleWait passes). It
// returns when the last one was seen (unix ns; 0 if none).
func (np *natsPublisher) settle(published int64) int64 {
	for _, nc := range np.conns {
		_ = nc.FlushTimeout(natsSettleWait)
	}
	if !np.fire {
		return 0
	}
	deadline := time.Now().Add(natsSettleWait)
	for np.seen.Load() < published && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return np.seenAt.Load()
}

func (np *natsPublisher) close() {
	for _, nc := range np.conns {
		nc.Close()
	}
	if np.watch != nil {
		np.watch.Close()
	}
}
