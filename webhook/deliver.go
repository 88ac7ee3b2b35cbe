package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/bus"
	"herald/debugtap"
)

// Delivery.
//
// Every (target, partition) has a durable consumer on the outbox, filtered
// to its subject, and every node runs one lane per consumer: a goroutine
// that long-polls it for the next event, takes what else is waiting (up to
// BatchSize), sends them in one request while holding one of the Workers
// slots, and acknowledges them, or dead-letters or schedules the retry.
// A lane waiting for events or for a retry holds no slot, so Workers bound
// the requests in flight, not the targets.
//
// Order per channel (a channel's events share a partition, so a consumer):
//   - MaxAckPending = BatchSize, so at most one batch of a consumer is out.
//   - The consumer's priority group is pinned: the server hands its events
//     to one lane (one node) at a time. The other nodes' lanes wait in their
//     long polls and take over when the pinned one has sent no pull request
//     for PinnedTTL (its node died), which is longer than AckWait, so by then
//     the dead lane's batch is due for redelivery, and is redelivered before
//     anything after it.
//   - A failed batch is retried with NakWithDelay and the lane pulls nothing
//     until the delay has passed: the retried events come back first. If
//     events after them arrive first anyway (the server's timer late by a
//     few milliseconds, or a retried batch coming back in pieces), the lane
//     puts those back and waits (lane.inTurn).

const (
	priorityGroup = "webhooks"
	pinIDHeader   = "Nats-Pin-Id" // on every message the server hands a pinned lane
	longPoll      = 30 * time.Second
	// lingerWait is how long a lane waits for more events after the first
	// one, to fill a batch; a longer wait batches more at low rates and adds
	// its length to every delivery's latency.
	lingerWait = 2 * time.Millisecond
	// holdGuard is how long after a retry's delay a lane still refuses newer
	// events before the retried ones.
	holdGuard = 2 * time.Second
	// outOfTurnDelay puts back an event pulled before a held one.
	outOfTurnDelay = 50 * time.Millisecond
	// maxResponseBytes of an answer are read (so the connection is reused).
	maxResponseBytes = 64 << 10
)

// laneSet is the running lanes, by consumer name.
type laneSet struct {
	mu    sync.Mutex
	lanes map[string]*lane
}

func (ls *laneSet) stopAll() {
	ls.mu.Lock()
	all := ls.lanes
	ls.lanes = map[string]*lane{}
	ls.mu.Unlock()
	for _, l := range all {
		l.stop()
	}
}

// lane delivers the events of one consumer.
type lane struct {
	s      *Sender
	app    string
	target string
	part   int
	name   string
	cons   jetstream.Consumer
	cancel context.CancelFunc
	done   chan struct{}

	// held are the stream sequences of this lane's events waiting for their
	// retry, each with how long to keep waiting for it (its delay plus
	// holdGuard). Nothing after one of them is sent before it. At most
	// BatchSize entries (MaxAckPending); lane goroutine only.
	held map[uint64]time.Time
	// pin is the id of the pin this lane was last handed events under
	// (the Nats-Pin-Id header): what it claims when a node is gone (pins.go).
	pin atomic.Value
}

func (l *lane) stop() {
	l.cancel()
	<-l.done
}

// consumerName is the durable name of a target's partition.
func consumerName(appID, target string, part int) string {
	return "wh_" + appID + "_" + target + "_" + strconv.Itoa(part)
}

func (s *Sender) consumerConfig(appID, target string, part int) jetstream.ConsumerConfig {
	ackWait := s.cfg.Timeout + 30*time.Second
	return jetstream.ConsumerConfig{
		Durable:        consumerName(appID, target, part),
		FilterSubject:  bus.WebhookOutboxSubject(appID, target, part),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  s.cfg.BatchSize,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{priorityGroup},
		// Longer than any gap between a lane's pull requests (a retry's
		// delay plus a request) and than AckWait: see the top of this file.
		PinnedTTL: s.cfg.MaxBackoff + ackWait + 30*time.Second,
	}
}

// watchLoop applies reloads: every syncEvery it compares the registry's
// table with the one the lanes were made for.
func (s *Sender) watchLoop() {
	defer s.wg.Done()
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		if err := s.sync(ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("webhook: applying the webhooks of a reload", "err", err)
		}
		cancel()
	}
}

// sync starts a lane (and makes sure of its consumer) for every partition
// of every target of the current table, and stops the lanes of targets no
// longer there, deleting their consumers and dropping their events.
func (s *Sender) sync(ctx context.Context) error {
	ts := s.targets.get()
	want := make(map[string]*target)
	for _, t := range ts.list {
		for p := 0; p < s.cfg.Partitions; p++ {
			want[consumerName(t.app, t.id, p)] = t
		}
	}
	s.lanes.mu.Lock()
	var gone []*lane
	for name, l := range s.lanes.lanes {
		if _, ok := want[name]; !ok {
			gone = append(gone, l)
			delete(s.lanes.lanes, name)
		}
	}
	var missing []string
	for name := range want {
		if _, ok := s.lanes.lanes[name]; !ok {
			missing = append(missing, name)
		}
	}
	s.lanes.mu.Unlock()

	var errs []error
	removed := map[string]bool{}
	for _, l := range gone {
		l.stop()
		if err := s.streams.Outbox.DeleteConsumer(ctx, l.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("webhook: delete consumer %s: %w", l.name, err))
		}
		k := targetKey(l.app, l.target)
		if !removed[k] {
			removed[k] = true
			s.dropTarget(ctx, l.app, l.target)
		}
	}
	for _, name := range missing {
		t := want[name]
		var part int
		for p := 0; p < s.cfg.Partitions; p++ {
			if consumerName(t.app, t.id, p) == name {
				part = p
			}
		}
		if err := s.startLane(ctx, t, part); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dropTarget purges the outbox of a removed target.
func (s *Sender) dropTarget(ctx context.Context, appID, target string) {
	subj := bus.WebhookOutboxFilter(appID, target, -1)
	info, err := s.streams.Outbox.Info(ctx, jetstream.WithSubjectFilter(subj))
	var n uint64
	if err == nil {
		for _, c := range info.State.Subjects {
			n += c
		}
	}
	if err := s.streams.Outbox.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		s.log.Warn("webhook: purging a removed webhook's events", "app", appID, "target", target, "err", err)
		return
	}
	s.m.dropped.WithLabelValues(appID, "target_removed").Add(float64(n))
	s.log.Info("webhook: webhook removed from the config; its pending events are dropped", "app", appID, "target", target, "events", n)
}

func (s *Sender) startLane(ctx context.Context, t *target, part int) error {
	cfg := s.consumerConfig(t.app, t.id, part)
	cons, err := s.streams.Outbox.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("webhook: consumer %s: %w", cfg.Durable, err)
	}
	lctx, cancel := context.WithCancel(s.ctx)
	l := &lane{s: s, app: t.app, target: t.id, part: part, name: cfg.Durable, cons: cons, cancel: cancel, done: make(chan struct{})}
	s.lanes.mu.Lock()
	if s.closed.Load() {
		s.lanes.mu.Unlock()
		cancel()
		return nil
	}
	s.lanes.lanes[l.name] = l
	s.lanes.mu.Unlock()
	go l.run(lctx)
	return nil
}

// run pulls and delivers until ctx ends.
func (l *lane) run(ctx context.Context) {
	defer close(l.done)
	for ctx.Err() == nil {
		batch, err := l.pull(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.s.log.Debug("webhook: pull", "consumer", l.name, "err", err)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				l.recreate(ctx)
			}
			sleep(ctx, time.Second)
			continue
		}
		if len(batch) == 0 {
			continue
		}
		send, later := l.inTurn(batch)
		for _, m := range later {
			_ = m.NakWithDelay(outOfTurnDelay)
		}
		if len(send) == 0 {
			sleep(ctx, outOfTurnDelay+10*time.Millisecond)
			continue
		}
		l.deliver(ctx, send)
	}
}

// pull waits for the next event, then takes what else is waiting, up to
// BatchSize.
func (l *lane) pull(ctx context.Context) ([]jetstream.Msg, error) {
	pctx, cancel := context.WithTimeout(ctx, longPoll)
	first, err := l.cons.Next(jetstream.FetchContext(pctx), jetstream.FetchPriorityGroup(priorityGroup))
	cancel()
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, nil
		}
		return nil, err
	}
	if h := first.Headers(); h != nil {
		if p := h.Get(pinIDHeader); p != "" {
			l.pin.Store(p)
		}
	}
	batch := []jetstream.Msg{first}
	if n := l.s.cfg.BatchSize - 1; n > 0 {
		more, err := l.cons.Fetch(n, jetstream.FetchMaxWait(lingerWait), jetstream.FetchPriorityGroup(priorityGroup))
		if err == nil {
			for m := range more.Messages() {
				batch = append(batch, m)
			}
		}
	}
	return batch, nil
}

// inTurn splits a pulled batch into the events that may be sent now, in
// stream order, and those that must wait: every event after a held one that
// has not come back yet (see the top of this file). A retried batch comes
// back from the server in pieces when its delays expire a little apart.
func (l *lane) inTurn(batch []jetstream.Msg) (send, later []jetstream.Msg) {
	seq := func(m jetstream.Msg) uint64 {
		if md, err := m.Metadata(); err == nil {
			return md.Sequence.Stream
		}
		return 0
	}
	sort.SliceStable(batch, func(i, j int) bool { return seq(batch[i]) < seq(batch[j]) })
	if len(l.held) == 0 {
		return batch, nil
	}
	now := time.Now()
	in := make(map[uint64]bool, len(batch))
	for _, m := range batch {
		in[seq(m)] = true
	}
	first := uint64(math.MaxUint64) // the first held event not in batch
	for sq, until := range l.held {
		if now.After(until) { // taken over elsewhere, or acked after all
			delete(l.held, sq)
			continue
		}
		if !in[sq] && sq < first {
			first = sq
		}
	}
	for i, m := range batch {
		if seq(m) > first {
			return batch[:i], batch[i:]
		}
	}
	return batch, nil
}

// recreate makes sure of a deleted consumer again, if its target is still
// configured (another node may have applied a reload first).
func (l *lane) recreate(ctx context.Context) {
	if _, ok := l.s.targets.get().byKey[targetKey(l.app, l.target)]; !ok {
		return
	}
	cons, err := l.s.streams.Outbox.CreateOrUpdateConsumer(ctx, l.s.consumerConfig(l.app, l.target, l.part))
	if err == nil {
		l.cons = cons
	}
}

// deliver sends one batch and settles each of its events.
func (l *lane) deliver(ctx context.Context, batch []jetstream.Msg) {
	s := l.s
	t, ok := s.targets.get().byKey[targetKey(l.app, l.target)]
	a, appOK := s.cfg.Apps.ByID(l.app)
	if !ok || !appOK {
		for _, m := range batch {
			_ = m.Ack()
		}
		s.m.dropped.WithLabelValues(l.app, "target_removed").Add(float64(len(batch)))
		s.log.Info("webhook: events for a webhook no longer configured dropped", "app", l.app, "target", l.target, "events", len(batch))
		return
	}
	body := requestBody(time.Now(), batch)
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return // the batch is redelivered after AckWait
	}
	status, err := s.post(ctx, t, a.Key, a.Secret, body)
	<-s.slots
	if ctx.Err() != nil {
		return
	}
	if s.cfg.Tap.Watched(l.app) {
		s.cfg.Tap.Webhook(tapDelivery(l.app, t.url, batch, body, status, err))
	}
	now := time.Now()
	st := s.stats.of(t)
	if err == nil {
		for _, m := range batch {
			_ = m.Ack()
			if md, err := m.Metadata(); err == nil {
				s.m.latency.WithLabelValues(l.app).Observe(now.Sub(md.Timestamp).Seconds())
			}
		}
		s.m.sent.WithLabelValues(l.app).Add(float64(len(batch)))
		st.sent(len(batch), now)
		l.release(batch)
		return
	}
	st.failed(err, now)
	l.retryOrDeadLetter(ctx, t, batch, err, now)
}

// retryOrDeadLetter moves the events older than RetryFor to the dead
// letters and schedules the others' retry, with the lane waiting it out.
func (l *lane) retryOrDeadLetter(ctx context.Context, t *target, batch []jetstream.Msg, cause error, now time.Time) {
	s := l.s
	var retry []jetstream.Msg
	attempts := uint64(1)
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			retry = append(retry, m)
			continue
		}
		if now.Sub(md.Timestamp) < s.cfg.RetryFor {
			retry = append(retry, m)
			if md.NumDelivered > attempts {
				attempts = md.NumDelivered
			}
			continue
		}
		if err := s.deadLetter(ctx, t, m, md, cause); err != nil {
			s.log.Warn("webhook: dead-lettering failed; retrying the event", "app", l.app, "url", t.url, "err", err)
			retry = append(retry, m)
			continue
		}
		_ = m.Ack()
		s.m.dead.WithLabelValues(l.app).Inc()
		delete(l.held, md.Sequence.Stream)
	}
	if len(retry) == 0 {
		return
	}
	delay := s.backoff(attempts)
	until := time.Now().Add(delay + holdGuard)
	if l.held == nil {
		l.held = make(map[uint64]time.Time)
	}
	for _, m := range retry {
		_ = m.NakWithDelay(delay)
		if md, err := m.Metadata(); err == nil {
			l.held[md.Sequence.Stream] = until
		}
	}
	s.m.retried.WithLabelValues(l.app).Add(float64(len(retry)))
	s.log.Debug("webhook: request failed; retrying", "app", l.app, "url", t.url, "events", len(retry), "in", delay, "err", cause)
	sleep(ctx, delay+10*time.Millisecond)
}

// release forgets the held events of a settled batch.
func (l *lane) release(batch []jetstream.Msg) {
	for _, m := range batch {
		if md, err := m.Metadata(); err == nil {
			delete(l.held, md.Sequence.Stream)
		}
	}
}

// backoff is the delay before attempt+1: MinBackoff doubled per attempt up
// to MaxBackoff, then between half and all of that (jitter, so that many
// events failing together do not retry together).
func (s *Sender) backoff(attempt uint64) time.Duration {
	d := s.cfg.MinBackoff
	for i := uint64(1); i < attempt && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// Headers of a dead letter.
const (
	headerStored = "Herald-Stored"     // when the event was first stored (RFC 3339, ns)
	headerURL    = "Herald-Url"        // the webhook's url
	headerError  = "Herald-Last-Error" // why the last attempt failed
)

// deadLetter copies one event into the dead-letter stream and waits for the
// acknowledgement.
func (s *Sender) deadLetter(ctx context.Context, t *target, m jetstream.Msg, md *jetstream.MsgMetadata, cause error) error {
	dm := nats.NewMsg(bus.WebhookDeadSubject(t.app, t.id))
	dm.Data = m.Data()
	dm.Header.Set(headerStored, md.Timestamp.UTC().Format(time.RFC3339Nano))
	dm.Header.Set(headerURL, t.url)
	msg := cause.Error()
	if len(msg) > 512 {
		msg = msg[:512]
	}
	dm.Header.Set(headerError, msg)
	// Dedupe in the dead-letter stream is not needed: a second copy would
	// only be replayed with the same event id.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.js.PublishMsg(pctx, dm); err != nil {
		return fmt.Errorf("webhook: dead letter: %w", err)
	}
	return nil
}

// requestBody is {"time_ms": now, "events": [...]}: the stored event
// objects as they are, serialized once; the signature covers these bytes.
func requestBody(now time.Time, batch []jetstream.Msg) []byte {
	n := 32
	for _, m := range batch {
		n += len(m.Data()) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"time_ms":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	b = append(b, `,"events":[`...)
	for i, m := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.Data()...)
	}
	return append(b, "]}"...)
}

// Sign is X-Pusher-Signature for body: the lowercase hex HMAC-SHA256 of the
// raw body with the app's secret.
func Sign(secret string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// errStatus is a receiver's non-2xx answer.
type errStatus struct{ code int }

func (e errStatus) Error() string { return "receiver answered " + strconv.Itoa(e.code) }

// post sends one request as Pusher does and reports whether the receiver
// accepted it (2xx), with the status it answered (0: none).
func (s *Sender) post(ctx context.Context, t *target, key, secret string, body []byte) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("webhook: request %s: %w", t.url, err)
	}
	for k, v := range t.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", key)
	req.Header.Set("X-Pusher-Signature", Sign(secret, body))
	resp, err := s.cfg.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webhook: POST %s: %w", t.url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("webhook: POST %s: %w", t.url, errStatus{resp.StatusCode})
	}
	return resp.StatusCode, nil
}

// tapDelivery describes one attempt for the debug console
// (debugtap.Tap.Webhook); built only while the app is watched.
func tapDelivery(app, url string, batch []jetstream.Msg, body []byte, status int, err error) debugtap.Delivery {
	d := debugtap.Delivery{App: app, URL: url, Body: body, Status: status, Err: err, Attempt: 1}
	for _, m := range batch {
		var ev struct{ Name, Channel string }
		if json.Unmarshal(m.Data(), &ev) == nil {
			d.Events, d.Channels = append(d.Events, ev.Name), append(d.Channels, ev.Channel)
		}
		if md, err := m.Metadata(); err == nil && int(md.NumDelivered) > d.Attempt {
			d.Attempt = int(md.NumDelivered)
		}
	}
	return d
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
