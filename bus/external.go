package bus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// External mode (Config.Mode == ModeExternal).
//
// The node runs no NATS server. It connects to an existing deployment at
// Config.URLs with the node's own credentials (a .creds file, or a user and
// password) and creates its streams there with Config.Replicas replicas.
// Everything above the connection is unchanged: the same subjects, the same
// streams and stream config, the same live subscriptions. Several Herald
// nodes connected to one deployment share its streams and subjects, as
// clustered nodes share their embedded cluster's.
//
// What is not the node's business in external mode: the NATS client port and
// the apps' NATS users (the deployment authenticates its own users, and its
// operator grants app users the subjects docs/nats.md lists; NodePermissions
// is what the node's own user needs), disk sync (the deployment's setting),
// and NATS routes (Config.Cluster: nodes reach each other through the
// deployment). Start refuses those fields.
//
// Losing the connection: nats.go reconnects for ever (MaxReconnects -1)
// through every URL the deployment advertises, and on reconnect restores
// every subscription itself (live channels, the API queue subscriptions),
// so the node re-establishes nothing by hand. While disconnected, live
// delivery stops and publishes fail at once (REST answers 503; nothing is
// buffered to be sent after the reconnect);
// the disconnect is logged at error level and Connected reports false until
// the reconnect, which is logged at warn level. After a reconnect every app's
// streams are ensured again on first use, in case the deployment lost them.
// A dead server is noticed by the pings below, within about 40 s.

// Connection settings of external mode.
const (
	externalConnectTimeout = 5 * time.Second  // per server, at connect and each reconnect attempt
	externalReconnectWait  = time.Second      // between reconnect attempts to one server (nats.go adds jitter)
	externalPingInterval   = 10 * time.Second // a silent connection is pinged this often...
	externalMaxPingsOut    = 3                // ...and declared dead after this many unanswered pings
	maxStreamReplicas      = 5                // JetStream's limit
)

// jsDomainPattern is what a JetStream domain may be: one subject token.
var jsDomainPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkURLs checks that every entry of urls parses as a URL with one of
// schemes and a host.
func checkURLs(field string, urls []string, schemes ...string) error {
	if len(urls) == 0 {
		return fmt.Errorf("%w: %s: at least one URL is required", ErrModeConfig, field)
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.Hostname() == "" {
			return fmt.Errorf("%w: %s: %q is not a URL such as %s://host:port", ErrModeConfig, field, raw, schemes[0])
		}
		if !slices.Contains(schemes, u.Scheme) {
			return fmt.Errorf("%w: %s: %q: scheme must be one of %v", ErrModeConfig, field, raw, schemes)
		}
	}
	return nil
}

// checkAuth checks the credential fields shared by external and leaf mode.
func checkAuth(cfg Config) error {
	if cfg.Credentials != "" && cfg.User != "" {
		return fmt.Errorf("%w: set Credentials or User and Password, not both", ErrModeConfig)
	}
	if cfg.Password != "" && cfg.User == "" {
		return fmt.Errorf("%w: Password without User", ErrModeConfig)
	}
	if cfg.JetStreamDomain != "" && !jsDomainPattern.MatchString(cfg.JetStreamDomain) {
		return fmt.Errorf("%w: JetStreamDomain %q must match %s", ErrModeConfig, cfg.JetStreamDomain, jsDomainPattern)
	}
	return nil
}

// checkExternal validates cfg for external mode.
func checkExternal(cfg Config) error {
	if err := checkURLs("URLs", cfg.URLs, "nats", "tls", "ws", "wss"); err != nil {
		return err
	}
	if err := checkAuth(cfg); err != nil {
		return err
	}
	switch {
	case cfg.Replicas > maxStreamReplicas:
		return fmt.Errorf("%w: Replicas %d: JetStream allows 1 to %d", ErrModeConfig, cfg.Replicas, maxStreamReplicas)
	case len(cfg.LeafRemotes) > 0:
		return fmt.Errorf("%w: LeafRemotes are for leaf mode", ErrModeConfig)
	case cfg.ClientListen != "" || len(cfg.ClientUsers) > 0:
		return fmt.Errorf("%w: external mode has no embedded server, so no client port (ClientListen, ClientUsers): backends connect to the external deployment", ErrModeConfig)
	case cfg.Cluster.Enabled() || len(cfg.Cluster.Routes) > 0:
		return fmt.Errorf("%w: external mode has no NATS routes (Cluster): nodes reach each other through the external deployment", ErrModeConfig)
	case cfg.SyncAlways:
		return fmt.Errorf("%w: SyncAlways is the external deployment's setting (sync_interval: always in its config)", ErrModeConfig)
	}
	return nil
}

// connectExternal connects to cfg.URLs with reconnects for ever (see the top
// of this file).
func (b *Bus) connectExternal() (*nats.Conn, error) {
	cfg := b.cfg
	opts := []nats.Option{
		nats.Name(cfg.ServerName),
		nats.Timeout(externalConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(externalReconnectWait),
		// Nothing is held while disconnected to be sent after a reconnect: a
		// publish whose caller got an error (REST 503) must not be stored
		// later behind its back. Subscriptions are restored by nats.go.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(externalPingInterval),
		nats.MaxPingsOutstanding(externalMaxPingsOut),
		nats.ErrorHandler(b.onAsyncError),
		nats.DisconnectErrHandler(b.onDisconnect),
		nats.ReconnectHandler(b.onReconnect),
	}
	switch {
	case cfg.Credentials != "":
		opts = append(opts, nats.UserCredentials(cfg.Credentials))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect to external NATS %s: %w", redactURLs(cfg.URLs), err)
	}
	b.log.Info("bus: connected to external NATS", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
	return nc, nil
}

// onDisconnect runs on nats.go's callback goroutine when the connection is
// lost (and once more on Close, which is not worth an alarm).
func (b *Bus) onDisconnect(nc *nats.Conn, err error) {
	if b.closed.Load() || nc.IsClosed() {
		return
	}
	b.log.Error("bus: lost the connection to NATS; live delivery and publishing stop until it is back, reconnecting",
		"err", err, "servers", redactURLs(nc.Servers()))
}

// onReconnect runs on nats.go's callback goroutine after a reconnect.
// nats.go has restored every subscription already. The apps' streams are
// ensured again on their next use: a deployment that lost its JetStream
// state would otherwise leave every publish failing.
func (b *Bus) onReconnect(nc *nats.Conn) {
	b.appsMu.Lock()
	clear(b.apps)
	b.appsMu.Unlock()
	b.reconnects.Add(1)
	b.log.Warn("bus: reconnected to NATS", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
}

// Connected reports whether the node's NATS connection is up: always true
// with an embedded server (an in-process connection) until Close; in
// external mode false from a lost connection until nats.go has reconnected.
// For readiness checks; it takes no lock.
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

// Reconnects is how many times the connection was re-established after a
// loss (external mode; 0 otherwise).
func (b *Bus) Reconnects() uint64 { return b.reconnects.Load() }

// waitExternalJetStream polls AccountInfo with short attempts until the
// deployment's JetStream answers it or ctx ends; with streams off it returns
// at once. A deployment (or account) without JetStream fails at once.
func (b *Bus) waitExternalJetStream(ctx context.Context) error {
	if !b.cfg.StreamEnabled {
		return nil
	}
	began := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, readyAttemptWait)
		_, err := b.js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("bus: external NATS %s: %w (turn JetStream on for the node's account%s, or set bus.stream.enabled: false)",
				b.nc.ConnectedUrlRedacted(), err, domainHint(b.cfg.JetStreamDomain))
		}
		if ctx.Err() != nil || !pause(ctx, readyRetryPause) {
			return fmt.Errorf("bus: external NATS %s: JetStream not ready after %s: %w",
				b.nc.ConnectedUrlRedacted(), time.Since(began).Round(time.Millisecond), err)
		}
	}
}

func domainHint(domain string) string {
	if domain == "" {
		return ""
	}
	return fmt.Sprintf(", check that domain %q exists", domain)
}

// NodePermissions is what a Herald node's own user needs on an external
// deployment, in nats-server terms (docs/nats.md shows them as config):
// publish and subscribe on herald.> (stored, live, cache, API and node-to-node
// subjects), publish on the JetStream API ($JS.API.>, or $JS.<domain>.API.>
// with jsDomain set) and on _INBOX.> (answers to API requests), subscribe
// on _INBOX.> (its own replies). Granting the user everything also works.
func NodePermissions(jsDomain string) *server.Permissions {
	jsAPI := "$JS.API.>"
	if jsDomain != "" {
		jsAPI = "$JS." + jsDomain + ".API.>"
	}
	return &server.Permissions{
		// $KV.<bucket>.>: writes to the KV buckets (the app registry,
		// appstore.go; the webhook state, ledgerstate.go).
		Publish:   &server.SubjectPermission{Allow: []string{subjectRoot + ">", jsAPI, inboxRoot + ".>", "$KV." + AppsBucket + ".>", "$KV." + WebhookStateBucket + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{subjectRoot + ">", inboxRoot + ".>"}},
	}
}

// redactURLs hides the passwords of URLs that carry one, for logs and errors.
func redactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = raw
		if u, err := url.Parse(raw); err == nil {
			out[i] = u.Redacted()
		}
	}
	return out
}
