package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/protocol"
)

// Cache channels (docs/protocol.md §2.8).
//
// The last event of every cache channel (the four prefixes for which
// protocol.Classify reports cache) is kept in a second per-app stream,
// HERALD-CACHE_<app>: one message per channel (MaxMsgsPerSubject 1) on
// herald.<app>.cache.<tok>, for CacheTTL (the stream's MaxAge). It is
// stream data, not process memory, so it survives a restart and is shared
// by every node that reaches the stream.
//
// Publish and PublishBatch write it after the event's own publish is
// acknowledged (the copy carries that serial in Herald-Serial) and before
// they return, so a REST trigger answered 200 is already cached. LastEvent
// reads it with one JetStream direct get (last_by_subj), which any replica
// may answer.
//
// Two publishes to one channel may finish their cache writes in the other
// order. A cache write is therefore a compare-and-set on the subject's last
// sequence (Nats-Expected-Last-Subject-Sequence) that keeps an entry with a
// higher serial written since the publish began: the newest event wins.
// "Since the publish began" makes an entry left by an earlier incarnation of
// the main stream (deleted and recreated, serials restarted) lose instead of
// hiding new events for a whole TTL. Its clock is the cache stream leader's;
// on one node it is exact, across nodes it is good to their clock skew.

// HeaderSerial is the cache-stream header carrying the serial (main stream
// sequence) of the cached event.
const HeaderSerial = "Herald-Serial"

const (
	cacheStreamPrefix = "HERALD-CACHE_"
	cacheInfix        = ".cache."

	headerStatus    = "Status"          // status of a direct-get reply ("404": no message)
	headerTimeStamp = "Nats-Time-Stamp" // store time of a direct-get reply, RFC 3339

	cacheGetWait       = 2 * time.Second // per direct get, within the caller's ctx
	cacheCASAttempts   = 5               // cache writes per event that lose a race before giving up
	cacheBatchParallel = 16              // cache writes in flight at once for one PublishBatch
)

// CacheStreamName is the name of app's cache stream: HERALD-CACHE_<app>.
// The dash keeps it apart from every main stream name (HERALD_<app'>), which
// HERALD_CACHE_<app> would not be for the app id "CACHE_<app>".
func CacheStreamName(app string) string { return cacheStreamPrefix + app }

// CacheSubject is the subject holding the cached event of (app, channel):
// herald.<app>.cache.<tok>.
func CacheSubject(app, channel string) string {
	return subjectRoot + app + cacheInfix + EncodeChannel(channel)
}

// cacheWildcard is the cache stream's subject filter: herald.<app>.cache.>.
func cacheWildcard(app string) string { return subjectRoot + app + ".cache.>" }

// IsCacheChannel reports whether channel is a cache channel (cache-,
// private-cache-, private-encrypted-cache-, presence-cache-). It does not
// allocate.
func IsCacheChannel(channel string) bool {
	_, cache := protocol.Classify(channel)
	return cache
}

// CacheTTL is how long a cached event is kept (Config.CacheTTL, default
// DefaultCacheTTL).
func (b *Bus) CacheTTL() time.Duration { return b.cfg.CacheTTL }

// cacheStreamConfig is app's cache stream: file storage, the main stream's
// replica count, one message per subject kept for CacheTTL, direct gets
// allowed, nothing republished.
func (b *Bus) cacheStreamConfig(app string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              CacheStreamName(app),
		Subjects:          []string{cacheWildcard(app)},
		Storage:           jetstream.FileStorage,
		Replicas:          b.streamConfig(app).Replicas,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            b.cfg.CacheTTL,
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
	}
}

// cacheEntry is a decoded direct-get reply from a cache stream.
type cacheEntry struct {
	seq     uint64 // cache stream sequence
	serial  uint64 // Herald-Serial: the event's main stream sequence
	stored  time.Time
	payload []byte
}

// CachedEvent is the last event of a cache channel, as the cache stream
// keeps it. Both the edge (cache channel subscriptions) and the REST API
// (info=cache) read this one type.
type CachedEvent struct {
	Payload []byte        // the stored Pusher event JSON; the caller's to keep
	Serial  uint64        // the event's serial in the app's main stream
	Stored  time.Time     // when it was stored
	TTL     time.Duration // how long it is still served (CacheTTL minus its age); > 0
}

// NameAndData decodes the stored Pusher event for REST answers: its event
// name, and its data as a string (REST-published data is a JSON string; a
// client event's data is raw JSON, returned as its text).
func (e CachedEvent) NameAndData() (event, data string, err error) {
	var ev struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(e.Payload, &ev); err != nil {
		return "", "", fmt.Errorf("bus: cached event: %w", err)
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		data = string(ev.Data)
	}
	return ev.Event, data, nil
}

// LastEvent returns the cached event of a cache channel. ok is false, with
// a nil error, when there is none: nothing published within CacheTTL, a
// channel that is not a cache channel, or streams off. It makes one direct
// get (after ensuring app's streams the first time app is seen), waiting at
// most 2 s within ctx; it may be called concurrently.
func (b *Bus) LastEvent(ctx context.Context, app, channel string) (ev CachedEvent, ok bool, err error) {
	if err := b.check(&Publication{App: app, Channel: channel}); err != nil {
		return ev, false, err
	}
	if !b.cfg.StreamEnabled || !IsCacheChannel(channel) {
		return ev, false, nil
	}
	if err := b.ensureCacheKnown(ctx, app); err != nil {
		return ev, false, err
	}
	e, found, err := b.getCached(ctx, app, CacheSubject(app, channel))
	if err != nil || !found {
		return ev, false, err
	}
	ttl := b.cfg.CacheTTL - time.Since(e.stored)
	if ttl <= 0 {
		return ev, false, nil // expired, not yet removed by MaxAge
	}
	return CachedEvent{Payload: e.payload, Serial: e.serial, Stored: e.stored, TTL: ttl}, true, nil
}

// getCached fetches the last message on subj from app's cache stream with a
// direct get. found is false, with a nil error, when there is none.
func (b *Bus) getCached(ctx context.Context, app, subj string) (e cacheEntry, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, cacheGetWait)
	defer cancel()
	req, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{subj})
	if err != nil {
		return e, false, fmt.Errorf("bus: cache get %q: %w", subj, err)
	}
	api := apiPrefix(b.js.Options()) + "DIRECT.GET." + CacheStreamName(app)
	reply, err := b.nc.RequestWithContext(ctx, api, req)
	if err != nil {
		return e, false, fmt.Errorf("bus: cache get %q: %w", subj, err)
	}
	h := reply.Header
	if st := h.Get(headerStatus); st != "" {
		if st == "404" {
			return e, false, nil
		}
		return e, false, fmt.Errorf("bus: cache get %q: status %s %s", subj, st, h.Get("Description"))
	}
	e.seq, err = strconv.ParseUint(h.Get(headerSequence), 10, 64)
	if err != nil {
		return e, false, fmt.Errorf("bus: cache get %q: sequence: %w", subj, err)
	}
	e.stored, err = time.Parse(time.RFC3339Nano, h.Get(headerTimeStamp))
	if err != nil {
		return e, false, fmt.Errorf("bus: cache get %q: time stamp: %w", subj, err)
	}
	e.serial = headerUint(h, HeaderSerial)
	e.payload = reply.Data
	return e, true, nil
}

// apiPrefix is the JetStream API subject prefix opts use, with its final dot.
func apiPrefix(opts jetstream.JetStreamOptions) string {
	switch {
	case opts.Domain != "":
		return "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		return strings.TrimSuffix(opts.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

// storeCache writes the cache copy of p, whose stored message m was
// acknowledged with serial by a publish that began at began. It keeps an
// entry written since began with a higher serial (see the top of this file).
func (b *Bus) storeCache(ctx context.Context, p *Publication, m *nats.Msg, serial uint64, began time.Time) error {
	if err := b.ensureCacheKnown(ctx, p.App); err != nil {
		return err
	}
	subj := CacheSubject(p.App, p.Channel)
	cm := cacheMsg(subj, m, serial)
	for range cacheCASAttempts {
		cur, found, err := b.getCached(ctx, p.App, subj)
		if err != nil {
			return err
		}
		var last uint64
		if found {
			if cur.serial > serial && !cur.stored.Before(began) {
				return nil // a newer event is cached already
			}
			last = cur.seq
		}
		_, err = b.publishStored(ctx, cm, jetstream.WithExpectLastSequencePerSubject(last))
		if err == nil {
			return nil
		}
		if !casConflict(err) {
			return fmt.Errorf("bus: cache store %q: %w", subj, err)
		}
	}
	return fmt.Errorf("bus: cache store %q: lost %d races", subj, cacheCASAttempts)
}

// storeCacheBatch writes the cache copies of the cache-channel publications
// of ps (acknowledged as futs with serials), only the last one per channel,
// up to cacheBatchParallel at a time. It returns the first error.
func (b *Bus) storeCacheBatch(ctx context.Context, ps []Publication, futs []jetstream.PubAckFuture, serials []uint64, began time.Time) error {
	var (
		last  []int // indexes into ps
		dedup map[subKey]struct{}
	)
	for i := len(ps) - 1; i >= 0; i-- {
		if !IsCacheChannel(ps[i].Channel) {
			continue
		}
		k := subKey{ps[i].App, ps[i].Channel}
		if _, dup := dedup[k]; dup {
			continue // a later publication to the channel is cached instead
		}
		if dedup == nil {
			dedup = make(map[subKey]struct{})
		}
		dedup[k] = struct{}{}
		last = append(last, i)
	}
	store := func(i int) error { return b.storeCache(ctx, &ps[i], futs[i].Msg(), serials[i], began) }
	if len(last) <= 1 {
		for _, i := range last {
			return store(i)
		}
		return nil
	}
	errs := make([]error, len(last))
	sem := make(chan struct{}, cacheBatchParallel)
	var wg sync.WaitGroup
	for j, i := range last {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[j] = store(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// cacheMsg is the cache copy of the stored message m: same payload, same
// headers except NATS's own, plus Herald-Serial.
func cacheMsg(subj string, m *nats.Msg, serial uint64) *nats.Msg {
	h := make(nats.Header, len(m.Header)+1)
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	h[HeaderSerial] = []string{strconv.FormatUint(serial, 10)}
	return &nats.Msg{Subject: subj, Data: m.Data, Header: h}
}

// casConflict reports whether a publish failed its expected-last-sequence
// check (both codes the server uses for it).
func casConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
