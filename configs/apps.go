package configs

// Apps indexes the configured apps by id and by key. It is immutable after
// NewApps returns, so any number of goroutines may read it at once; to change
// the apps, build a new Apps and swap it in (e.g. with an atomic.Pointer).
//
// The *App values it hands out point into its own copy of the apps: callers
// must not modify them.
type Apps struct {
	list  []*App
	byID  map[string]*App
	byKey map[string]*App
}

// NewApps copies apps and indexes the copy. Disabled apps are included
// (callers check IsEnabled, to answer 4003 rather than 4001). If ids or keys
// repeat, which Validate rejects, the first app with each wins.
func NewApps(apps []App) *Apps {
	a := &Apps{
		list:  make([]*App, len(apps)),
		byID:  make(map[string]*App, len(apps)),
		byKey: make(map[string]*App, len(apps)),
	}
	own := make([]App, len(apps))
	copy(own, apps)
	for i := range own {
		app := &own[i]
		if app.Enabled != nil {
			app.Enabled = boolPtr(*app.Enabled) // share nothing with the caller
		}
		a.list[i] = app
		if _, ok := a.byID[app.ID]; !ok {
			a.byID[app.ID] = app
		}
		if _, ok := a.byKey[app.Key]; !ok {
			a.byKey[app.Key] = app
		}
	}
	return a
}

// ByID returns the app with id.
func (a *Apps) ByID(id string) (*App, bool) {
	app, ok := a.byID[id]
	return app, ok
}

// ByKey returns the app with key.
func (a *Apps) ByKey(key string) (*App, bool) {
	app, ok := a.byKey[key]
	return app, ok
}

// All returns every app in configuration order. The slice is new on each
// call; the apps are shared.
func (a *Apps) All() []*App {
	out := make([]*App, len(a.list))
	copy(out, a.list)
	return out
}

// Len returns the number of apps.
func (a *Apps) Len() int { return len(a.list) }
