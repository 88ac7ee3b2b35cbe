package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/app"
)

// The app registry (apps_source: registry, docs/apps.md): a JetStream KV
// bucket, AppsBucket, replicated like the app streams (R3 in a cluster of
// three or more), one key per app id holding its app.Record as JSON, one
// revision kept per key. Every node watches the whole bucket (Watch) and
// swaps its app.Registry on each change; every write is a compare-and-set
// on the key's revision, so two admins editing one app at once cannot lose
// each other's change silently (the loser gets ErrAppRevision).
//
// The bucket also holds one key that is not an app, appsSeededKey: written
// once when a node first seeded the bucket from its config file's apps. An
// app id cannot contain '.', so it cannot collide with an app.

// appsSeededKey marks a bucket seeded from a config file (node/apps.go).
const appsSeededKey = "herald.seeded"

// Errors of the app store.
var (
	ErrAppNotFound = errors.New("bus: no such app in the registry")
	ErrAppExists   = errors.New("bus: an app with this id is already in the registry")
	// ErrAppRevision: the app changed since it was read; read it again.
	ErrAppRevision = errors.New("bus: the app changed meanwhile (revision mismatch)")
)

// appStoreWait bounds one call that finds no responder (a leader election)
// when ctx has no deadline of its own.
const appStoreWait = 10 * time.Second

// AppStore is the app registry bucket. Build it with Bus.AppStore.
type AppStore struct {
	kv  jetstream.KeyValue
	log interface {
		Warn(msg string, args ...any)
	}
}

// AppStore creates the app registry bucket, or binds to it, with the app
// streams' replica count, retrying as EnsureApp does (in a cluster until
// ctx's deadline).
func (b *Bus) AppStore(ctx context.Context) (*AppStore, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	kv, err := b.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:      AppsBucket,
		Description: "Herald: the app registry (apps_source: registry), one app.Record per app id",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    b.replicas(),
	})
	if err != nil {
		return nil, err
	}
	return &AppStore{kv: kv, log: b.log}, nil
}

// withWait gives ctx a deadline when it has none.
func withWait(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, appStoreWait)
}

// Get returns the app with id and its revision.
func (s *AppStore) Get(ctx context.Context, id string) (app.Record, uint64, error) {
	if !ValidApp(id) {
		return app.Record{}, 0, fmt.Errorf("%w: %q", ErrInvalidApp, id)
	}
	ctx, cancel := withWait(ctx)
	defer cancel()
	var e jetstream.KeyValueEntry
	err := whileLeaderless(ctx, func() (err error) {
		e, err = s.kv.Get(ctx, id)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return app.Record{}, 0, fmt.Errorf("%w: %q", ErrAppNotFound, id)
	}
	if err != nil {
		return app.Record{}, 0, fmt.Errorf("bus: app registry get %q: %w", id, err)
	}
	var r app.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return app.Record{}, 0, fmt.Errorf("bus: app registry get %q: %w", id, err)
	}
	return r, e.Revision(), nil
}

// Put writes r under its app id: rev 0 creates it (ErrAppExists when the id
// is taken), else it replaces revision rev (ErrAppRevision when the app
// changed since). It returns the new revision. r is not validated here.
func (s *AppStore) Put(ctx context.Context, r app.Record, rev uint64) (uint64, error) {
	id := r.App.ID
	if !ValidApp(id) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidApp, id)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("bus: app registry put %q: %w", id, err)
	}
	ctx, cancel := withWait(ctx)
	defer cancel()
	var next uint64
	err = whileLeaderless(ctx, func() (err error) {
		if rev == 0 {
			next, err = s.kv.Create(ctx, id, data)
		} else {
			next, err = s.kv.Update(ctx, id, data, rev)
		}
		return err
	})
	switch {
	case err == nil:
		return next, nil
	case rev == 0 && errors.Is(err, jetstream.ErrKeyExists):
		return 0, fmt.Errorf("%w: %q", ErrAppExists, id)
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("%w: %q at revision %d", ErrAppRevision, id, rev)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return 0, fmt.Errorf("%w: %q at revision %d", ErrAppRevision, id, rev)
	}
	return 0, fmt.Errorf("bus: app registry put %q: %w", id, err)
}

// Delete removes the app with id if its revision is still rev (0: whatever
// it is).
func (s *AppStore) Delete(ctx context.Context, id string, rev uint64) error {
	if !ValidApp(id) {
		return fmt.Errorf("%w: %q", ErrInvalidApp, id)
	}
	ctx, cancel := withWait(ctx)
	defer cancel()
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := whileLeaderless(ctx, func() error { return s.kv.Purge(ctx, id, opts...) })
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("%w: %q at revision %d", ErrAppRevision, id, rev)
		}
		return fmt.Errorf("bus: app registry delete %q: %w", id, err)
	}
	return nil
}

// Seeded reports whether the bucket was ever seeded from a config file;
// MarkSeeded records that it was (a create: false when another node did it
// first).
func (s *AppStore) Seeded(ctx context.Context) (bool, error) {
	ctx, cancel := withWait(ctx)
	defer cancel()
	err := whileLeaderless(ctx, func() error { _, err := s.kv.Get(ctx, appsSeededKey); return err })
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("bus: app registry: %w", err)
}

// MarkSeeded writes the seeded marker; false when it was there already.
func (s *AppStore) MarkSeeded(ctx context.Context) (bool, error) {
	ctx, cancel := withWait(ctx)
	defer cancel()
	stamp, _ := time.Now().UTC().MarshalText()
	err := whileLeaderless(ctx, func() error { _, err := s.kv.Create(ctx, appsSeededKey, stamp); return err })
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bus: app registry: %w", err)
	}
	return true, nil
}

// AppChange is one change of the registry: the app's record, or nil when it
// was deleted.
type AppChange struct {
	ID       string
	Record   *app.Record
	Revision uint64
}

// AppWatch is a running watch of the registry (Watch). Stop ends it.
type AppWatch struct {
	w    jetstream.KeyWatcher
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Watch reads every app in the bucket and calls apply once with all of
// them (initial true), before it returns; then, from a goroutine of its
// own, with each later batch of changes, in order (changes that arrived
// together are passed together). A record that does not decode is logged
// and skipped. apply must not block for long. ctx bounds the initial read.
func (s *AppStore) Watch(ctx context.Context, apply func(changes []AppChange, initial bool)) (*AppWatch, error) {
	w, err := s.kv.WatchAll(context.Background())
	if err != nil {
		return nil, fmt.Errorf("bus: app registry watch: %w", err)
	}
	aw := &AppWatch{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	var initial []AppChange
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, fmt.Errorf("bus: app registry watch: initial read: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("bus: app registry watch: ended during the initial read")
			}
			if e == nil { // the initial values are all delivered
				apply(initial, true)
				go aw.loop(s, apply)
				return aw, nil
			}
			if c, ok := s.change(e); ok {
				initial = append(initial, c)
			}
		}
	}
}

func (aw *AppWatch) loop(s *AppStore, apply func([]AppChange, bool)) {
	defer close(aw.done)
	for {
		var batch []AppChange
		select {
		case <-aw.stop:
			return
		case e, ok := <-aw.w.Updates():
			if !ok {
				return
			}
			if c, ok := s.change(e); ok {
				batch = append(batch, c)
			}
		}
	more: // what else is already waiting goes with it
		for len(batch) < 4096 {
			select {
			case e, ok := <-aw.w.Updates():
				if !ok {
					break more
				}
				if c, ok := s.change(e); ok {
					batch = append(batch, c)
				}
			default:
				break more
			}
		}
		if len(batch) > 0 {
			apply(batch, false)
		}
	}
}

// change turns a watch entry into an AppChange; false for the seeded
// marker, keys that are not app ids and records that do not decode.
func (s *AppStore) change(e jetstream.KeyValueEntry) (AppChange, bool) {
	if e == nil || !ValidApp(e.Key()) {
		return AppChange{}, false
	}
	c := AppChange{ID: e.Key(), Revision: e.Revision()}
	if e.Operation() != jetstream.KeyValuePut {
		return c, true
	}
	var r app.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		s.log.Warn("bus: app registry: a record that does not decode is ignored", "app", e.Key(), "revision", e.Revision(), "err", err)
		return AppChange{}, false
	}
	if r.App.ID != e.Key() {
		s.log.Warn("bus: app registry: a record whose id is not its key is ignored", "key", e.Key(), "id", r.App.ID)
		return AppChange{}, false
	}
	c.Record = &r
	return c, true
}

// Stop ends the watch and waits for its goroutine (no apply call after it
// returns). Calling it again is a no-op.
func (aw *AppWatch) Stop() {
	if aw == nil {
		return
	}
	aw.once.Do(func() {
		close(aw.stop)
		_ = aw.w.Stop()
		<-aw.done
	})
}
