package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"herald/app"
	"herald/bus"
	"herald/configs"
)

// The app registry as the node's app source (apps_source: registry,
// docs/apps.md). The apps live in the replicated KV bucket HERALD_APPS
// (bus/appstore.go); every node watches it and, on each change, swaps its
// app.Registry through the same path a config reload takes (swapApps,
// reload.go's applyApps): a disabled app's sockets are closed with 4003, a
// deleted app's with 4001, NATS clients the new apps refuse are closed,
// and no other socket is touched.
//
// A rotation's overlap (app.Record.PreviousSecretsUntil) ends on every
// node by itself: the node keeps a timer at the earliest end and swaps the
// registry again then, with no write to the bucket.
//
// Seeding: the first node to start against a bucket that was never seeded
// writes the config file's apps into it (not the built-in dev app) and
// marks it seeded; from then on the file's apps are ignored.
//
// Lock order: registrySource.mu before ops.reload (docs/locks.md).

// registryWait bounds opening, seeding and the first read of the registry
// at start (a cluster may still be electing the bucket's leader).
const registryWait = 30 * time.Second

// registrySource is the node's view of the registry bucket.
type registrySource struct {
	store *bus.AppStore
	watch *bus.AppWatch

	mu     sync.Mutex
	recs   map[string]app.Record // by id, as the bucket has them
	revs   map[string]uint64     // revision of each record
	bad    map[string]bool       // records whose app does not validate (checked once per change)
	live   bool                  // the node's parts are up: changes close sockets
	closed bool
	timer  *time.Timer // the next end of a rotation's overlap; nil when none
}

func (n *Node) fromRegistry() bool { return n.cfg.AppsSource == configs.AppsFromRegistry }

// startRegistry opens the bucket, seeds it when it never was, reads every
// app into n.apps and keeps watching. Called right after the bus starts,
// before anything reads apps.
func (n *Node) startRegistry() error {
	ctx, cancel := context.WithTimeout(context.Background(), registryWait)
	defer cancel()
	store, err := n.bus.AppStore(ctx)
	if err != nil {
		return fmt.Errorf("node: app registry: %w", err)
	}
	r := &registrySource{store: store, recs: map[string]app.Record{}, revs: map[string]uint64{}, bad: map[string]bool{}}
	n.registry = r
	if err := n.seedRegistry(ctx, store); err != nil {
		return err
	}
	w, err := store.Watch(ctx, n.applyRegistry)
	if err != nil {
		return fmt.Errorf("node: app registry: %w", err)
	}
	r.mu.Lock()
	r.watch = w
	r.mu.Unlock()
	n.log.Info("app registry read", "bucket", bus.AppsBucket, "apps", n.apps.Table().Len())
	return nil
}

// seedRegistry writes the config's apps into a bucket that was never
// seeded (an app whose id is already there is left as it is).
func (n *Node) seedRegistry(ctx context.Context, store *bus.AppStore) error {
	seeded, err := store.Seeded(ctx)
	if err != nil || seeded {
		return err
	}
	now := time.Now()
	var wrote []string
	for _, a := range n.cfg.Apps {
		if a.ID == configs.DevAppID && a.Key == configs.DevAppKey && a.Secret == configs.DevAppSecret {
			continue // the built-in dev app never becomes data
		}
		_, err := store.Put(ctx, app.Record{App: a, Created: now, Updated: now}, 0)
		switch {
		case err == nil:
			wrote = append(wrote, a.ID)
		case errors.Is(err, bus.ErrAppExists):
		default:
			return fmt.Errorf("node: app registry: seed %q: %w", a.ID, err)
		}
	}
	if _, err := store.MarkSeeded(ctx); err != nil {
		return err
	}
	if len(wrote) > 0 {
		n.log.Info("app registry seeded from the config file", "apps", wrote)
	}
	return nil
}

// applyRegistry is the watch's callback: it folds the changes into the
// records and swaps the registry.
func (n *Node) applyRegistry(changes []bus.AppChange, initial bool) {
	r := n.registry
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	ids := make([]string, 0, len(changes))
	for _, c := range changes {
		ids = append(ids, c.ID)
		delete(r.bad, c.ID)
		if c.Record == nil {
			delete(r.recs, c.ID)
		} else {
			r.recs[c.ID] = *c.Record
			if err := c.Record.App.Validate(); err != nil {
				n.log.Warn("app registry: an invalid app is ignored", "app", c.ID, "revision", c.Revision, "err", err)
				r.bad[c.ID] = true
			}
		}
		r.revs[c.ID] = c.Revision
	}
	n.swapRegistryLocked(initial, ids)
}

// swapRegistryLocked builds the apps in force now from r.recs and swaps
// them in; ids, when not nil, are the only apps that changed. r.mu is
// held.
func (n *Node) swapRegistryLocked(initial bool, ids []string) {
	r := n.registry
	now := time.Now()
	all := make([]string, 0, len(r.recs))
	for id := range r.recs {
		all = append(all, id)
	}
	sort.Strings(all) // the same order, and so the same winner of a duplicate key, on every node
	list := make([]app.App, 0, len(all))
	var next time.Time
	for _, id := range all {
		if r.bad[id] {
			continue
		}
		rec := r.recs[id]
		a := rec.Effective(now) // dropping previous secrets keeps a valid app valid
		list = append(list, a)
		if u := rec.PreviousSecretsUntil; len(a.PreviousSecrets) > 0 && !u.IsZero() && (next.IsZero() || u.Before(next)) {
			next = u
		}
	}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if !next.IsZero() {
		r.timer = time.AfterFunc(time.Until(next)+10*time.Millisecond, n.overlapEnded)
	}
	if initial || !r.live {
		n.apps.Replace(list)
		return
	}
	n.ops.reload.Lock()
	ch := n.swapApps(list, ids)
	n.ops.reload.Unlock()
	if len(ch.AppsAdded)+len(ch.AppsRemoved)+len(ch.AppsChanged)+len(ch.AppsDisabled)+len(ch.AppsEnabled) > 0 {
		n.log.Info("app registry changed", "added", ch.AppsAdded, "removed", ch.AppsRemoved, "changed", ch.AppsChanged,
			"disabled", ch.AppsDisabled, "enabled", ch.AppsEnabled,
			"closed_sockets", ch.ClosedSockets, "closed_nats_clients", ch.ClosedNATSClients)
	}
}

// overlapEnded swaps the registry again when a rotation's overlap ends.
func (n *Node) overlapEnded() {
	r := n.registry
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	n.swapRegistryLocked(false, nil) // every app: whose overlap ended is not tracked
}

// registryLive marks the node's parts up: from now on a change closes
// sockets and NATS clients as a reload does.
func (n *Node) registryLive() {
	if r := n.registry; r != nil {
		r.mu.Lock()
		r.live = true
		r.mu.Unlock()
	}
}

// stopRegistry ends the watch and the overlap timer; no swap after it.
func (n *Node) stopRegistry() {
	r := n.registry
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	w := r.watch
	r.mu.Unlock()
	w.Stop() // its last callback returns at once: closed is set
}

// applied reports whether the node has the app at revision rev or later
// (deleted: it has no record of it since a revision at least rev).
func (r *registrySource) applied(id string, rev uint64, deleted bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, has := r.recs[id]
	return r.revs[id] >= rev && has != deleted
}

// records returns a copy of the records, sorted by id, with revisions.
func (r *registrySource) records() ([]app.Record, []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.recs))
	for id := range r.recs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	recs := make([]app.Record, len(ids))
	revs := make([]uint64, len(ids))
	for i, id := range ids {
		recs[i], revs[i] = r.recs[id], r.revs[id]
	}
	return recs, revs
}

// others returns the apps in the registry other than id, for the
// uniqueness checks of a write.
func (r *registrySource) others(id string) []app.App {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]app.App, 0, len(r.recs))
	for k, rec := range r.recs {
		if k != id {
			out = append(out, rec.App)
		}
	}
	return out
}

// Apps is the node's app registry, whichever the source.
func (n *Node) Apps() *app.Registry { return n.apps }
