package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/admin"
	"herald/bus"
)

// Status is the answer of GET /webhooks/status.
type Status struct {
	// Backlog is the number of events waiting in the outbox, cluster-wide
	// (one per event and receiving webhook).
	Backlog uint64 `json:"backlog"`
	// OldestPendingAge is how long the oldest of them has waited (a Go
	// duration, "0s" with none); OldestPendingSeconds the same in seconds.
	OldestPendingAge     string  `json:"oldest_pending_age"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	// Webhooks is one entry per configured receiver (per app and url).
	Webhooks []URLStatus `json:"webhooks"`
	// DeadLetters counts the dead-lettered events kept, per app id.
	DeadLetters map[string]uint64 `json:"dead_letters"`
}

// URLStatus is one receiver's part of Status. Pending is cluster-wide; the
// counters and times are this node's, since it started.
type URLStatus struct {
	App         string     `json:"app"`
	URL         string     `json:"url"`
	Target      string     `json:"target"`
	Pending     uint64     `json:"pending"`
	Sent        uint64     `json:"sent"`
	Failures    uint64     `json:"failures"` // failed requests
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
}

// ReplayRequest is the body of POST /webhooks/replay.
type ReplayRequest struct {
	App   string `json:"app"`
	Since string `json:"since"` // a Go duration: dead letters of the last Since
}

// ReplayResult is its answer.
type ReplayResult struct {
	App      string `json:"app"`
	Since    string `json:"since"`
	Replayed int    `json:"replayed"` // dead letters written back to the outbox (and removed from the dead letters)
	Skipped  int    `json:"skipped"`  // dead letters of webhooks no longer configured, kept
}

// Routes registers GET /webhooks/status and POST /webhooks/replay on the
// admin API (node/admin.go).
func (s *Sender) Routes(srv *admin.Server) {
	srv.Handle("GET /webhooks/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Status(r.Context())
		if err != nil {
			admin.WriteError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, st)
	})
	srv.Handle("POST /webhooks/replay", func(w http.ResponseWriter, r *http.Request) {
		var req ReplayRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			admin.WriteError(w, http.StatusBadRequest, "body must be {\"app\": ID, \"since\": DURATION}: %v", err)
			return
		}
		since, err := time.ParseDuration(req.Since)
		switch {
		case req.App == "":
			admin.WriteError(w, http.StatusBadRequest, "app is required")
			return
		case err != nil || since <= 0:
			admin.WriteError(w, http.StatusBadRequest, "since %q is not a positive duration (e.g. 30m, 6h)", req.Since)
			return
		}
		if _, ok := s.cfg.Apps.ByID(req.App); !ok {
			admin.WriteError(w, http.StatusNotFound, "no app %q", req.App)
			return
		}
		res, err := s.Replay(r.Context(), req.App, since)
		if err != nil {
			admin.WriteError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		res.Since = req.Since
		admin.WriteJSON(w, http.StatusOK, res)
	})
}

// Status reports the outbox, every receiver and the dead letters.
func (s *Sender) Status(ctx context.Context) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.streams.Outbox.Info(ctx, jetstream.WithSubjectFilter(bus.WebhookOutboxFilter("*", "*", -1)))
	if err != nil {
		return nil, fmt.Errorf("webhook: status: outbox: %w", err)
	}
	st := &Status{Backlog: info.State.Msgs, OldestPendingAge: "0s", DeadLetters: map[string]uint64{}}
	if info.State.Msgs > 0 && !info.State.FirstTime.IsZero() {
		age := time.Since(info.State.FirstTime)
		st.OldestPendingAge = age.Round(time.Millisecond).String()
		st.OldestPendingSeconds = age.Seconds()
	}
	pending := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		if a, t, ok := bus.ParseWebhookSubject(subj); ok {
			pending[targetKey(a, t)] += n
		}
	}
	for _, t := range s.targets.get().list {
		u := s.stats.of(t).snapshot()
		u.App, u.URL, u.Target, u.Pending = t.app, t.url, t.id, pending[targetKey(t.app, t.id)]
		st.Webhooks = append(st.Webhooks, u)
	}
	dinfo, err := s.streams.Dead.Info(ctx, jetstream.WithSubjectFilter(bus.WebhookDeadFilter("")))
	if err != nil {
		return nil, fmt.Errorf("webhook: status: dead letters: %w", err)
	}
	for subj, n := range dinfo.State.Subjects {
		if a, _, ok := bus.ParseWebhookSubject(subj); ok {
			st.DeadLetters[a] += n
		}
	}
	return st, nil
}

// Replay writes the dead letters of appID stored in the last since back to
// the outbox, each as a new outbox message carrying the same event (same
// id, so receivers deduplicate), and removes them from the dead letters.
// Dead letters of a webhook no longer configured are kept and counted as
// skipped.
func (s *Sender) Replay(ctx context.Context, appID string, since time.Duration) (*ReplayResult, error) {
	res := &ReplayResult{App: appID}
	start := time.Now().Add(-since)
	cons, err := s.js.OrderedConsumer(ctx, bus.WebhookDeadStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.WebhookDeadFilter(appID)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: replay: %w", err)
	}
	targets := s.targets.get()
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return res, fmt.Errorf("webhook: replay: %w", err)
		}
		var msgs []*nats.Msg
		var seqs []uint64
		var left uint64
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			left = md.NumPending
			a, tid, ok := bus.ParseWebhookSubject(m.Subject())
			var ev Event
			if !ok || json.Unmarshal(m.Data(), &ev) != nil || ev.ID == "" {
				continue
			}
			if _, ok := targets.byKey[targetKey(a, tid)]; !ok {
				res.Skipped++
				continue
			}
			om := nats.NewMsg(bus.WebhookOutboxSubject(a, tid, partition(ev.Channel, s.cfg.Partitions)))
			om.Data = m.Data()
			om.Header.Set(jetstream.MsgIDHeader, ev.ID+"."+tid+".replay."+strconv.FormatUint(md.Sequence.Stream, 10))
			msgs = append(msgs, om)
			seqs = append(seqs, md.Sequence.Stream)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return res, fmt.Errorf("webhook: replay: %w", err)
		}
		if len(msgs) > 0 {
			if err := s.publishAll(ctx, msgs); err != nil {
				return res, err
			}
			s.m.queued.WithLabelValues(appID).Add(float64(len(msgs)))
			for _, seq := range seqs {
				if err := s.streams.Dead.DeleteMsg(ctx, seq); err != nil {
					s.log.Warn("webhook: replay: removing a replayed dead letter", "seq", seq, "err", err)
				}
			}
			res.Replayed += len(msgs)
		}
		if got == 0 || left == 0 {
			return res, nil
		}
	}
}

// targetStatsSet keeps each receiver's counters on this node.
type targetStatsSet struct {
	mu  sync.Mutex
	all map[string]*targetStats
}

func (ss *targetStatsSet) of(t *target) *targetStats {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.all == nil {
		ss.all = make(map[string]*targetStats)
	}
	k := targetKey(t.app, t.id)
	st := ss.all[k]
	if st == nil {
		st = &targetStats{}
		ss.all[k] = st
	}
	return st
}

type targetStats struct {
	mu          sync.Mutex
	sentN       uint64
	failures    uint64
	lastError   string
	lastErrorAt time.Time
	lastSuccess time.Time
}

func (st *targetStats) sent(n int, now time.Time) {
	st.mu.Lock()
	st.sentN += uint64(n)
	st.lastSuccess = now
	st.mu.Unlock()
}

func (st *targetStats) failed(err error, now time.Time) {
	st.mu.Lock()
	st.failures++
	st.lastError, st.lastErrorAt = err.Error(), now
	st.mu.Unlock()
}

func (st *targetStats) snapshot() URLStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	u := URLStatus{Sent: st.sentN, Failures: st.failures, LastError: st.lastError}
	if !st.lastErrorAt.IsZero() {
		t := st.lastErrorAt
		u.LastErrorAt = &t
	}
	if !st.lastSuccess.IsZero() {
		t := st.lastSuccess
		u.LastSuccess = &t
	}
	return u
}
