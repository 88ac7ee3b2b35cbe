package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"herald/app"
	"herald/configs"
	"herald/protocol"
)

// Hot reload (docs/operations.md "Hot reload"). What applies live:
//
//   - apps: added, removed, disabled, enabled or changed (secrets and
//     previous_secrets, limits, flags, webhooks, NATS credentials, replay
//     windows). The registry is swapped whole (app.Registry.Replace) and
//     every reader reads through it; a new app gets its streams, a changed
//     one has them updated, a removed one keeps them (its data stays until
//     the window passes). Sockets of a disabled app are closed with 4003, of
//     a removed app with 4001; no other socket is touched. NATS clients the
//     new apps no longer accept are closed (bus.RecheckClients).
//   - log.level, when the process logger has a slog.LevelVar (Source.Level).
//   - the TLS certificate (tls.cert_file, tls.key_file), read again on every
//     reload and swapped under the listener's GetCertificate (tls.go): new
//     connections get the new one, open sockets are not touched.
//
// Every other key is read once at start: a reload that changes one logs it
// as needing a restart and lists it in Changes.NeedsRestart, and applies
// the rest. An invalid config is refused whole, with the key, and the old
// one stays in force.

// Source is where a node's config came from, so that it can be read again.
type Source struct {
	// Path is the config file ("" = none: defaults and HERALD_* only). It
	// is reported by status; Load reads it.
	Path string
	// Load reads the config again as the node was started with it: the
	// file, the HERALD_* environment as it was at start, and the
	// command-line overrides. nil: POST /reload and SIGHUP are refused
	// (Reload with a config still works).
	Load func() (*configs.Config, []configs.Warning, error)
	// Level is the process logger's level; a reload sets it from
	// log.level. nil: log.level needs a restart.
	Level *slog.LevelVar
	// Version is the binary's version, reported by status.
	Version string
}

// Changes is what a reload did.
type Changes struct {
	AppsAdded    []string `json:"apps_added"`
	AppsRemoved  []string `json:"apps_removed"`
	AppsChanged  []string `json:"apps_changed"` // any key of the app but enabled
	AppsDisabled []string `json:"apps_disabled"`
	AppsEnabled  []string `json:"apps_enabled"`
	LogLevel     string   `json:"log_level,omitempty"` // the new level, when it changed
	// AcceptRate is the new gateway.accept_rate when it changed (applied
	// at once); nil when it did not.
	AcceptRate *int `json:"accept_rate,omitempty"`
	// TLSCertNotAfter is the expiry of the certificate the client port
	// serves from now on, when the reload read a different one from
	// tls.cert_file; "" when it did not change or TLS is off.
	TLSCertNotAfter string `json:"tls_cert_not_after,omitempty"`
	// GossipKeys and RoutePasswords are set when the cluster's gossip
	// keyring or the route passwords accepted were replaced (closed.go).
	GossipKeys     bool `json:"gossip_keys,omitempty"`
	RoutePasswords bool `json:"route_passwords,omitempty"`
	// NeedsRestart lists the keys that differ from the running config but
	// are read only at start; they were not applied.
	NeedsRestart []string `json:"needs_restart"`
	// ClosedSockets counts the WebSocket connections closed because their
	// app was disabled or removed; ClosedNATSClients the NATS clients whose
	// credentials the new apps no longer accept.
	ClosedSockets     int      `json:"closed_sockets"`
	ClosedNATSClients int      `json:"closed_nats_clients"`
	Warnings          []string `json:"warnings,omitempty"` // unknown keys, streams not updated yet
}

// None reports whether the reload changed nothing at all.
func (c *Changes) None() bool {
	return len(c.AppsAdded)+len(c.AppsRemoved)+len(c.AppsChanged)+len(c.AppsDisabled)+len(c.AppsEnabled)+
		len(c.NeedsRestart) == 0 && c.LogLevel == "" && c.AcceptRate == nil && c.TLSCertNotAfter == "" && !c.GossipKeys && !c.RoutePasswords
}

// ErrNoSource: the node was started without a way to read its config again
// (Start rather than StartWith with a Source.Load).
var ErrNoSource = errors.New("node: started without a config source to reload from")

// ops is the node's operational state: its config source and what reloads
// did, for status.
type ops struct {
	src     Source
	started time.Time
	reload  sync.Mutex // one reload at a time

	acceptRate int        // gateway.accept_rate in force; under reload
	closed     closedKeys // closed-cluster keys in force; under reload (closed.go)

	mu        sync.Mutex // guards the fields below
	level     string     // log.level in force
	loadedAt  time.Time  // start, or the last reload that applied
	reloads   int        // reloads applied
	lastErr   string     // the last refused reload's error; "" after one applied
	lastErrAt time.Time
}

func (o *ops) init(cfg *configs.Config, src Source) {
	now := time.Now()
	o.src, o.started, o.level, o.loadedAt = src, now, cfg.Log.Level, now
	o.acceptRate = cfg.Gateway.AcceptRate
	o.initClosed(cfg)
}

func (o *ops) applied(level string) {
	o.mu.Lock()
	o.level, o.loadedAt, o.lastErr, o.lastErrAt = level, time.Now(), "", time.Time{}
	o.reloads++
	o.mu.Unlock()
}

func (o *ops) refused(err error) {
	o.mu.Lock()
	o.lastErr, o.lastErrAt = err.Error(), time.Now()
	o.mu.Unlock()
}

// ReloadFromSource reads the config again from the node's Source and
// applies it (Reload). It is what POST /reload and SIGHUP do.
func (n *Node) ReloadFromSource() (Changes, error) {
	if n.ops.src.Load == nil {
		return Changes{}, ErrNoSource
	}
	cfg, warnings, err := n.ops.src.Load()
	if err != nil {
		n.refuse(err)
		return Changes{}, err
	}
	ch, err := n.Reload(cfg)
	for _, w := range warnings {
		ch.Warnings = append(ch.Warnings, w.String())
		n.log.Warn("config: " + w.String())
	}
	return ch, err
}

// Reload applies a new config to the running node: what can change live is
// applied (see the top of this file), what cannot is listed in
// NeedsRestart. An invalid config is refused whole and the old one stays.
func (n *Node) Reload(cfg *configs.Config) (Changes, error) {
	n.ops.reload.Lock()
	defer n.ops.reload.Unlock()
	if err := cfg.Validate(); err != nil {
		err = fmt.Errorf("config: %w", err)
		n.refuse(err)
		return Changes{}, err
	}
	cert, err := n.reloadCert(cfg) // tls.go
	if err != nil {
		n.refuse(err)
		return Changes{}, err
	}
	var ch Changes
	fromFile := !n.fromRegistry()
	if fromFile {
		ch = diffApps(n.apps.Table(), app.NewTable(cfg.Apps))
	}
	n.ops.mu.Lock()
	level := n.ops.level
	n.ops.mu.Unlock()
	live := n.reloadClosed(cfg, &ch)
	for _, k := range configs.Diff(n.cfg, cfg) {
		if live[k] || k == "apps" || k == "gateway.accept_rate" || (k == "log.level" && n.ops.src.Level != nil) ||
			(cert != nil && (k == "tls.cert_file" || k == "tls.key_file")) {
			continue
		}
		ch.NeedsRestart = append(ch.NeedsRestart, k)
	}
	if r := cfg.Gateway.AcceptRate; r != n.ops.acceptRate {
		n.gw.SetAcceptRate(r)
		n.ops.acceptRate, ch.AcceptRate = r, &r
	}
	if cfg.Log.Level != level && n.ops.src.Level != nil {
		var l slog.Level
		_ = l.UnmarshalText([]byte(cfg.Log.Level)) // Validate checked it
		n.ops.src.Level.Set(l)
		ch.LogLevel, level = cfg.Log.Level, cfg.Log.Level
	}

	ch.TLSCertNotAfter = n.swapCert(cert)
	if fromFile { // with apps_source: registry the file's apps are only a seed (apps.go)
		n.apps.Replace(cfg.Apps)
		n.applyApps(&ch)
	}
	n.ops.applied(level)
	if len(ch.NeedsRestart) > 0 {
		n.log.Warn("config reload: these keys need a restart and were not applied", "keys", ch.NeedsRestart)
	}
	n.log.Info("config reloaded", "added", ch.AppsAdded, "removed", ch.AppsRemoved, "changed", ch.AppsChanged,
		"disabled", ch.AppsDisabled, "enabled", ch.AppsEnabled, "log_level", ch.LogLevel,
		"closed_sockets", ch.ClosedSockets, "closed_nats_clients", ch.ClosedNATSClients)
	return ch, nil
}

// diffApps is what changes from the apps of old to those of next.
func diffApps(old, next *app.Table) Changes {
	var ch Changes
	for _, a := range old.All() {
		b, ok := next.ByID(a.ID)
		switch {
		case !ok:
			ch.AppsRemoved = append(ch.AppsRemoved, a.ID)
			continue
		case a.IsEnabled() && !b.IsEnabled():
			ch.AppsDisabled = append(ch.AppsDisabled, a.ID)
		case !a.IsEnabled() && b.IsEnabled():
			ch.AppsEnabled = append(ch.AppsEnabled, a.ID)
		}
		if !sameApp(a, b) {
			ch.AppsChanged = append(ch.AppsChanged, a.ID)
		}
	}
	for _, b := range next.All() {
		if _, ok := old.ByID(b.ID); !ok {
			ch.AppsAdded = append(ch.AppsAdded, b.ID)
		}
	}
	return ch
}

// diffAppsOf is diffApps for the apps with ids only: what a registry
// change can have touched, so a change among thousands of apps compares
// a few (apps.go).
func diffAppsOf(old, next *app.Table, ids []string) Changes {
	var ch Changes
	for _, id := range ids {
		a, had := old.ByID(id)
		b, has := next.ByID(id)
		switch {
		case had && !has:
			ch.AppsRemoved = append(ch.AppsRemoved, id)
		case !had && has:
			ch.AppsAdded = append(ch.AppsAdded, id)
		case had && has:
			if a.IsEnabled() && !b.IsEnabled() {
				ch.AppsDisabled = append(ch.AppsDisabled, id)
			} else if !a.IsEnabled() && b.IsEnabled() {
				ch.AppsEnabled = append(ch.AppsEnabled, id)
			}
			if !sameApp(a, b) {
				ch.AppsChanged = append(ch.AppsChanged, id)
			}
		}
	}
	return ch
}

// swapApps swaps in a new list of apps and does what follows from the
// difference (applyApps). ids, when not nil, are the only apps that may
// differ. ops.reload is held.
func (n *Node) swapApps(list []app.App, ids []string) Changes {
	next := app.NewTable(list)
	var ch Changes
	if ids == nil {
		ch = diffApps(n.apps.Table(), next)
	} else {
		ch = diffAppsOf(n.apps.Table(), next, ids)
	}
	n.apps.Replace(list)
	n.applyApps(&ch)
	return ch
}

// reloadStreamWait bounds the stream updates of one reload (a cluster may be
// electing a leader).
const reloadStreamWait = 30 * time.Second

// applyApps does what the swapped registry does not do by itself: streams
// for new and changed apps, closing the sockets of disabled and removed
// apps, and NATS clients the new credentials refuse.
func (n *Node) applyApps(ch *Changes) {
	ctx, cancel := context.WithTimeout(context.Background(), reloadStreamWait)
	defer cancel()
	for _, id := range slices.Concat(ch.AppsAdded, ch.AppsChanged) {
		ensure := n.bus.EnsureApp
		if n.fromRegistry() {
			// Registry apps get their streams on first use (bus.ensureKnown):
			// thousands of idle apps cost no streams (docs/apps.md).
			ensure = n.bus.UpdateApp
		}
		if err := ensure(ctx, id); err != nil {
			// Not fatal: a publish ensures the stream again (bus.ensureKnown).
			n.log.Warn("config reload: app stream not updated", "app", id, "err", err)
			ch.Warnings = append(ch.Warnings, fmt.Sprintf("app %s: stream not updated: %v", id, err))
		}
	}
	for _, id := range ch.AppsDisabled {
		ch.ClosedSockets += n.gw.CloseApp(id, protocol.CodeAppDisabled, "App is disabled")
	}
	for _, id := range ch.AppsRemoved {
		ch.ClosedSockets += n.gw.CloseApp(id, protocol.CodeAppNotFound, "App does not exist")
	}
	closed, err := n.bus.RecheckClients()
	ch.ClosedNATSClients = closed
	if err != nil {
		n.log.Warn("config reload: NATS clients not rechecked", "err", err)
		ch.Warnings = append(ch.Warnings, err.Error())
	}
}

// refuse logs and records a refused reload; the old config stays.
func (n *Node) refuse(err error) {
	n.ops.refused(err)
	var ke *configs.KeyError
	if errors.As(err, &ke) {
		n.log.Error("config reload refused; the old config stays in force", "key", ke.Key, "err", err)
		return
	}
	n.log.Error("config reload refused; the old config stays in force", "err", err)
}

// sameApp reports whether two apps have the same keys, enabled aside.
func sameApp(a, b *app.App) bool {
	x, y := *a, *b
	x.Enabled, y.Enabled = nil, nil
	for _, p := range []*app.App{&x, &y} { // [] and absent are the same list
		if len(p.PreviousSecrets) == 0 {
			p.PreviousSecrets = nil
		}
		if len(p.Webhooks) == 0 {
			p.Webhooks = nil
		}
		if len(p.AllowedOrigins) == 0 {
			p.AllowedOrigins = nil
		}
	}
	return reflect.DeepEqual(x, y)
}
