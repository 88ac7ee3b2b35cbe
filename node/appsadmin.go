package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"herald/admin"
	"herald/app"
	"herald/bus"
	"herald/configs"
)

// The admin API of the app registry (docs/apps.md, herald apps):
//
//	GET    /apps              every app (no secrets)
//	POST   /apps              create: {"id"?,"name"?,"app"?:{config keys}}; answers the app with its secret, once
//	GET    /apps/{id}         one app (no secrets)
//	PATCH  /apps/{id}         {"name"?,"app"?:{config keys}}: the keys given change, the others stay
//	DELETE /apps/{id}
//	POST   /apps/{id}/rotate  {"overlap"?:"24h"}: a new secret; the old one stays valid for the overlap
//	POST   /apps/{id}/disable, /enable
//
// Writes answer once the change is in force on this node (its watch has
// applied it, at most appliedWait); the other nodes apply it from their
// own watch, within a second. With apps_source: config the reads answer
// from the config's apps and the writes are refused with 409.

// DefaultRotateOverlap is how long a rotated-out secret stays valid when the
// request does not say.
const DefaultRotateOverlap = 24 * time.Hour

// appliedWait bounds how long a write waits for this node's watch.
const appliedWait = 5 * time.Second

// AppView is one app as the admin API shows it: every config key, the
// secrets only in the answers of create and rotate.
type AppView struct {
	ID                   string          `json:"id"`
	Key                  string          `json:"key"`
	Secret               string          `json:"secret,omitempty"` // create and rotate only
	Name                 string          `json:"name,omitempty"`
	Enabled              bool            `json:"enabled"`
	PreviousSecretsUntil *time.Time      `json:"previous_secrets_until,omitempty"`
	Created              *time.Time      `json:"created,omitempty"`
	Updated              *time.Time      `json:"updated,omitempty"`
	Revision             uint64          `json:"revision,omitempty"`
	App                  json.RawMessage `json:"app,omitempty"` // every key, secrets blanked (show, create and rotate)
}

// AppList is GET /apps.
type AppList struct {
	Source string    `json:"source"` // apps_source
	Apps   []AppView `json:"apps"`
}

// appWrite is the body of POST /apps and PATCH /apps/{id}.
type appWrite struct {
	ID   string          `json:"id"`
	Name *string         `json:"name"`
	App  json.RawMessage `json:"app"`
}

func (n *Node) appsRoutes(s *admin.Server) {
	s.Handle("GET /apps", n.appsList)
	s.Handle("POST /apps", n.appsCreate)
	s.Handle("GET /apps/{id}", n.appsShow)
	s.Handle("PATCH /apps/{id}", n.appsUpdate)
	s.Handle("DELETE /apps/{id}", n.appsDelete)
	s.Handle("POST /apps/{id}/rotate", n.appsRotate)
	s.Handle("POST /apps/{id}/disable", func(w http.ResponseWriter, r *http.Request) { n.appsEnable(w, r, false) })
	s.Handle("POST /apps/{id}/enable", func(w http.ResponseWriter, r *http.Request) { n.appsEnable(w, r, true) })
}

// view builds an app's view; withApp adds every key (secrets blanked),
// withSecret the secret.
func view(rec app.Record, rev uint64, withApp, withSecret bool) AppView {
	a := rec.Effective(time.Now()) // an ended overlap's secret is no longer shown as valid
	if len(a.PreviousSecrets) == 0 {
		rec.PreviousSecretsUntil = time.Time{}
	}
	v := AppView{ID: a.ID, Key: a.Key, Name: rec.Name, Enabled: a.IsEnabled(), Revision: rev}
	if withSecret {
		v.Secret = a.Secret
	}
	if !rec.PreviousSecretsUntil.IsZero() && len(a.PreviousSecrets) > 0 {
		t := rec.PreviousSecretsUntil.UTC()
		v.PreviousSecretsUntil = &t
	}
	if !rec.Created.IsZero() {
		c, u := rec.Created.UTC(), rec.Updated.UTC()
		v.Created, v.Updated = &c, &u
	}
	if withApp {
		hidden := a
		hidden.PreviousSecrets = make([]string, len(a.PreviousSecrets))
		for i := range hidden.PreviousSecrets {
			hidden.PreviousSecrets[i] = "(hidden)"
		}
		if hidden.NATS.Password != "" {
			hidden.NATS.Password = "(hidden)"
		}
		hidden.Secret = "(hidden)"
		v.App, _ = app.AppJSON(&hidden)
	}
	return v
}

func (n *Node) appsList(w http.ResponseWriter, r *http.Request) {
	out := AppList{Source: n.cfg.AppsSource, Apps: []AppView{}}
	if n.registry == nil {
		for _, a := range n.apps.Table().All() {
			out.Apps = append(out.Apps, view(app.Record{App: *a}, 0, false, false))
		}
		admin.WriteJSON(w, http.StatusOK, out)
		return
	}
	recs, revs := n.registry.records()
	for i := range recs {
		out.Apps = append(out.Apps, view(recs[i], revs[i], false, false))
	}
	admin.WriteJSON(w, http.StatusOK, out)
}

func (n *Node) appsShow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if n.registry == nil {
		a, ok := n.apps.ByID(id)
		if !ok {
			admin.WriteError(w, http.StatusNotFound, "no app %q", id)
			return
		}
		admin.WriteJSON(w, http.StatusOK, view(app.Record{App: *a}, 0, true, false))
		return
	}
	rec, rev, err := n.registry.store.Get(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, view(rec, rev, true, false))
}

// writable refuses writes when the apps come from the config file.
func (n *Node) writable(w http.ResponseWriter) bool {
	if n.registry != nil {
		return true
	}
	admin.WriteError(w, http.StatusConflict, "apps_source is %q: edit the config file and reload (herald reload); set apps_source: %s to manage apps here",
		n.cfg.AppsSource, configs.AppsFromRegistry)
	return false
}

// readBody decodes a JSON body into v; an empty body leaves v as it is.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, "read body: %v", err)
		return false
	}
	if len(data) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		admin.WriteError(w, http.StatusBadRequest, "body: %v", err)
		return false
	}
	return true
}

func (n *Node) appsCreate(w http.ResponseWriter, r *http.Request) {
	if !n.writable(w) {
		return
	}
	var req appWrite
	if !readBody(w, r, &req) {
		return
	}
	id := req.ID
	if id == "" {
		id = app.NewID()
	}
	a := app.New(id, app.NewKey(), app.NewSecret())
	if len(req.App) > 0 {
		var err error
		if a, err = app.DecodeApp(req.App, a, true); err != nil {
			admin.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if a.ID != id {
			admin.WriteError(w, http.StatusBadRequest, "app.id %q differs from id %q", a.ID, id)
			return
		}
	}
	now := time.Now().UTC()
	rec := app.Record{App: a, Created: now, Updated: now}
	if req.Name != nil {
		rec.Name = *req.Name
	}
	if !n.checkApp(w, rec.App) {
		return
	}
	rev, err := n.registry.store.Put(r.Context(), rec, 0)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	n.waitApplied(r.Context(), id, rev, false)
	admin.WriteJSON(w, http.StatusCreated, view(rec, rev, true, true))
}

// checkApp validates a and what must be unique across the registry (the
// rules of app.ValidateSet, without validating every other app again).
func (n *Node) checkApp(w http.ResponseWriter, a app.App) bool {
	if err := a.Validate(); err != nil {
		admin.WriteError(w, http.StatusUnprocessableEntity, "%v", err)
		return false
	}
	for _, o := range n.registry.others(a.ID) {
		var what string
		switch {
		case o.Key == a.Key:
			what = "key " + a.Key
		case o.NATSUser() == a.NATSUser():
			what = "NATS user " + a.NATSUser() + " (the default user is the app id)"
		case a.NATS.Nkey != "" && o.NATS.Nkey == a.NATS.Nkey:
			what = "nkey"
		default:
			continue
		}
		admin.WriteError(w, http.StatusConflict, "the %s is already app %q's", what, o.ID)
		return false
	}
	return true
}

// modify reads app id, lets change edit its record, checks and writes it
// (a compare-and-set on the revision read), and answers the result.
func (n *Node) modify(w http.ResponseWriter, r *http.Request, withSecret bool, change func(*app.Record) error) {
	if !n.writable(w) {
		return
	}
	id := r.PathValue("id")
	rec, rev, err := n.registry.store.Get(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if err := change(&rec); err != nil {
		admin.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rec.Updated = time.Now().UTC()
	if !n.checkApp(w, rec.App) {
		return
	}
	next, err := n.registry.store.Put(r.Context(), rec, rev)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	n.waitApplied(r.Context(), id, next, false)
	admin.WriteJSON(w, http.StatusOK, view(rec, next, true, withSecret))
}

func (n *Node) appsUpdate(w http.ResponseWriter, r *http.Request) {
	var req appWrite
	if !readBody(w, r, &req) {
		return
	}
	n.modify(w, r, false, func(rec *app.Record) error {
		if req.ID != "" && req.ID != rec.App.ID {
			return errors.New("an app's id cannot change (create a new app)")
		}
		if len(req.App) > 0 {
			a, err := app.DecodeApp(req.App, rec.App, true)
			if err != nil {
				return err
			}
			if a.ID != rec.App.ID {
				return errors.New("an app's id cannot change (create a new app)")
			}
			rec.App = a
		}
		if req.Name != nil {
			rec.Name = *req.Name
		}
		return nil
	})
}

// rotateRequest is the body of POST /apps/{id}/rotate.
type rotateRequest struct {
	Overlap string `json:"overlap"` // a duration; default 24h; "0s" ends the old secret at once
}

func (n *Node) appsRotate(w http.ResponseWriter, r *http.Request) {
	req := rotateRequest{}
	if !readBody(w, r, &req) {
		return
	}
	overlap := DefaultRotateOverlap
	if req.Overlap != "" {
		d, err := app.ParseDuration(req.Overlap)
		if err != nil || d < 0 || d.D() > 720*time.Hour {
			admin.WriteError(w, http.StatusBadRequest, "overlap: %q must be a duration from 0s to 720h", req.Overlap)
			return
		}
		overlap = d.D()
	}
	n.modify(w, r, true, func(rec *app.Record) error {
		old := rec.App.Secret
		rec.App.Secret = app.NewSecret()
		rec.App.PreviousSecrets = []string{}
		rec.PreviousSecretsUntil = time.Time{}
		if overlap > 0 {
			rec.App.PreviousSecrets = []string{old}
			rec.PreviousSecretsUntil = time.Now().Add(overlap).UTC()
		}
		return nil
	})
}

func (n *Node) appsEnable(w http.ResponseWriter, r *http.Request, on bool) {
	n.modify(w, r, false, func(rec *app.Record) error {
		rec.App.Enabled = &on
		return nil
	})
}

func (n *Node) appsDelete(w http.ResponseWriter, r *http.Request) {
	if !n.writable(w) {
		return
	}
	id := r.PathValue("id")
	_, rev, err := n.registry.store.Get(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if err := n.registry.store.Delete(r.Context(), id, rev); err != nil {
		writeStoreError(w, err)
		return
	}
	n.waitApplied(r.Context(), id, rev+1, true)
	admin.WriteJSON(w, http.StatusOK, map[string]string{"deleted": id})
}

// waitApplied waits until this node's watch has applied the write.
func (n *Node) waitApplied(ctx context.Context, id string, rev uint64, deleted bool) {
	ctx, cancel := context.WithTimeout(ctx, appliedWait)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !n.registry.applied(id, rev, deleted) {
		select {
		case <-ctx.Done():
			n.log.Warn("app registry: a write is not applied here yet", "app", id, "revision", rev)
			return
		case <-t.C:
		}
	}
}

// writeStoreError answers an app store error with its status.
func writeStoreError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, bus.ErrAppNotFound):
		admin.WriteError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, bus.ErrAppExists), errors.Is(err, bus.ErrAppRevision):
		admin.WriteError(w, http.StatusConflict, "%v", err)
	case errors.Is(err, bus.ErrInvalidApp):
		admin.WriteError(w, http.StatusBadRequest, "%v", err)
	default:
		admin.WriteError(w, http.StatusServiceUnavailable, "%v", err)
	}
}
