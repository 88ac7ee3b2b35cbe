package app

import "sync/atomic"

// Table indexes a set of apps by id and by key. It is immutable after
// NewTable returns, so any number of goroutines may read it at once; to
// change the apps, build a new Table and swap it into a Registry.
//
// The *App values it hands out point into its own copy of the apps: callers
// must not modify them.
type Table struct {
	list  []*App
	byID  map[string]*App
	byKey map[string]*App
}

// NewTable copies apps and indexes the copy. Disabled apps are included
// (callers check IsEnabled, to answer 4003 rather than 4001). If ids or keys
// repeat, which ValidateSet rejects, the first app with each wins.
func NewTable(apps []App) *Table {
	t := &Table{
		list:  make([]*App, len(apps)),
		byID:  make(map[string]*App, len(apps)),
		byKey: make(map[string]*App, len(apps)),
	}
	own := make([]App, len(apps))
	copy(own, apps)
	for i := range own {
		a := &own[i]
		if a.Enabled != nil {
			on := *a.Enabled // share nothing with the caller
			a.Enabled = &on
		}
		t.list[i] = a
		if _, ok := t.byID[a.ID]; !ok {
			t.byID[a.ID] = a
		}
		if _, ok := t.byKey[a.Key]; !ok {
			t.byKey[a.Key] = a
		}
	}
	return t
}

// ByID returns the app with id.
func (t *Table) ByID(id string) (*App, bool) {
	a, ok := t.byID[id]
	return a, ok
}

// ByKey returns the app with key.
func (t *Table) ByKey(key string) (*App, bool) {
	a, ok := t.byKey[key]
	return a, ok
}

// All returns every app in configuration order. The slice is new on each
// call; the apps are shared.
func (t *Table) All() []*App {
	out := make([]*App, len(t.list))
	copy(out, t.list)
	return out
}

// IDs returns every app id in configuration order.
func (t *Table) IDs() []string {
	out := make([]string, len(t.list))
	for i, a := range t.list {
		out[i] = a.ID
	}
	return out
}

// Len returns the number of apps.
func (t *Table) Len() int { return len(t.list) }

// Registry is the node's current app table, read by every part of the node
// and replaced whole (Replace) on a reload. Reads take no lock.
type Registry struct {
	cur atomic.Pointer[Table]
}

// NewRegistry returns a registry holding a table of apps.
func NewRegistry(apps []App) *Registry {
	r := &Registry{}
	r.cur.Store(NewTable(apps))
	return r
}

// Table returns the current table. Hold on to it to read several apps
// consistently.
func (r *Registry) Table() *Table { return r.cur.Load() }

// ByID returns the current app with id.
func (r *Registry) ByID(id string) (*App, bool) { return r.cur.Load().ByID(id) }

// ByKey returns the current app with key.
func (r *Registry) ByKey(key string) (*App, bool) { return r.cur.Load().ByKey(key) }

// Replace swaps in a new table of apps. Readers that already hold an *App
// keep the old value; the next lookup sees the new one.
func (r *Registry) Replace(apps []App) { r.cur.Store(NewTable(apps)) }
