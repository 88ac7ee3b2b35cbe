package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// History reads (what resume replays: docs/protocol-extensions.md).
//
// A channel's stored events are the messages on its stored subject in the
// app's stream. History reads them with batched direct gets
// ($JS.API.DIRECT.GET.<stream>, {"seq","next_by_subj","batch","max_bytes"};
// docs/stack.md §8): any replica may answer, and no consumer is created,
// so a reconnect storm costs reads, not consumer creations. A batch is
// answered with one message per hit, then a "204 EOB" terminator carrying
// Nats-Num-Pending; "404" means nothing from that sequence on. Batches are
// asked for while the terminator reports more pending, each from the
// sequence after the last one received; the next batch is asked for before
// the current one is handed to the caller's function, so the server works
// while the caller does.
//
// The window rule. MaxAge and MaxMsgsPerSubject both remove a subject's
// oldest messages first, so what a subject holds is always a suffix of its
// history. After reading, History asks for f, the first message still on
// the subject (one direct get from sequence 1):
//   - f <= after: the event the client last saw is still stored, so
//     everything after it is too: the window has not passed;
//   - f > after: that event is gone, so some right after it may be: passed
//     (pessimistic: there may have been none in between);
//   - no message on the subject: passed iff after+1 < the stream's FirstSeq
//     (an event after `after` was removed only if the stream's age limit
//     reached past it; the per-channel limit never empties a subject), or
//     after > the stream's LastSeq (a serial this stream never assigned:
//     it was deleted and created again since, its events are gone).
//
// f is asked for after the read, not before: if the read was overtaken by
// expiry (an event removed after it was due to be read, but before it was),
// the check afterwards sees it. For the same reason the stream's FirstSeq
// used by the third case is one asked for after f was.
//
// Direct gets answered by a replica that lags the stream leader can be
// short: they miss what the replica has not applied yet, which includes
// events already acknowledged and republished live. Holding live events
// back does not cover that (an event whose live copy went by before the
// hold is in neither), so a caller must check the read against what it
// knows was stored and read again: the gateway's resume does so against
// the node's last delivered serial and the live events' Nats-Last-Sequence
// (gateway/resume.go), the bus's own gap repair against the
// Nats-Last-Sequence chain (gapfill.go).

// ErrNoStream: streams are off (Config.StreamEnabled false), so there is no
// history to read.
var ErrNoStream = errors.New("bus: streams are off")

const (
	historyBatch    = 256             // messages per batched direct get
	historyMaxBytes = 1 << 20         // bytes per batched direct get (the server stops the batch past it)
	historyWait     = 2 * time.Second // per direct get (a batch: until its terminator), within the caller's ctx
	streamFirstTTL  = time.Second     // HistoryResult.First may come from a stream info this old
	headerNumPend   = "Nats-Num-Pending"
	headerSubject   = "Nats-Subject"
	headerDesc      = "Description"
	statusNotFound  = "404"
	statusEOB       = "204"
	statusNoRespond = "503"
)

// HistoryResult is what History read.
type HistoryResult struct {
	Last         uint64 // last serial passed to fn, or after when none was
	Count        int    // calls of fn
	WindowPassed bool   // events right after `after` may be gone (never when after is 0)
	First        uint64 // when WindowPassed: the oldest serial the app's stream holds (the next serial when it holds none); else 0
}

// HistoryFunc receives one stored event: its serial, its payload (valid
// only during the call) and its Herald-Exclude socket id ("" for none; the
// caller must honour it on replay as live delivery does). An error stops
// History, which returns it.
type HistoryFunc func(serial uint64, payload []byte, exclude string) error

// History calls fn, oldest first, for every event stored on (app, channel)
// with a serial greater than after, and reports whether the replay window
// has passed (see the top of this file). It uses batched direct gets of
// up to 256 messages or 1 MiB, each waiting at most 2 s within ctx (the
// time fn takes does not count), and creates no consumer. It may be called
// concurrently.
//
// With streams off it returns ErrNoStream. On any other error res still
// says what fn was called for (Last, Count); WindowPassed is then unknown.
// Events stored while it runs may or may not be included.
func (b *Bus) History(ctx context.Context, app, channel string, after uint64, fn func(serial uint64, payload []byte, exclude string) error) (res HistoryResult, err error) {
	res.Last = after
	if err := b.check(&Publication{App: app, Channel: channel}); err != nil {
		return res, err
	}
	if !b.cfg.StreamEnabled {
		return res, ErrNoStream
	}
	if err := b.ensureKnown(ctx, app); err != nil {
		return res, err
	}
	subj := StoredSubject(app, channel)
	res.Last, res.Count, err = b.readSubject(ctx, app, subj, after, 0, fn)
	if err != nil || after == 0 {
		return res, err
	}
	res.WindowPassed, res.First, err = b.windowPassed(ctx, app, subj, after)
	return res, err
}

// StreamFirst is the oldest serial app's stream holds (the next serial when
// it holds none), from a stream info request made after the call began
// (concurrent callers share one). With streams off it returns ErrNoStream.
func (b *Bus) StreamFirst(ctx context.Context, app string) (uint64, error) {
	if !ValidApp(app) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	if !b.cfg.StreamEnabled {
		return 0, ErrNoStream
	}
	if b.closed.Load() {
		return 0, ErrClosed
	}
	if err := b.ensureKnown(ctx, app); err != nil {
		return 0, err
	}
	st, err := b.streamBounds(ctx, app, time.Now())
	return st.first, err
}

// directGetRequest is the server's JSApiMsgGetRequest, the fields used here.
type directGetRequest struct {
	Seq        uint64     `json:"seq,omitempty"`
	StartTime  *time.Time `json:"start_time,omitempty"`
	NextBySubj string     `json:"next_by_subj,omitempty"`
	Batch      int        `json:"batch,omitempty"`
	MaxBytes   int        `json:"max_bytes,omitempty"`
}

// storedMsg is one message of a batch reply.
type storedMsg struct {
	serial uint64
	msg    *nats.Msg
}

// readSubject calls fn for each message on subj in app's stream with a
// sequence greater than after and, when upTo is not 0, less than upTo, in
// order. It returns the last sequence passed to fn (after if none) and how
// many were.
func (b *Bus) readSubject(ctx context.Context, app, subj string, after, upTo uint64, fn HistoryFunc) (last uint64, n int, err error) {
	return b.readSubjectFrom(ctx, app, subj, after, time.Time{}, upTo, fn)
}

// readSubjectSince is readSubject from the first message stored at or after
// since instead of after a sequence.
func (b *Bus) readSubjectSince(ctx context.Context, app, subj string, since time.Time, upTo uint64, fn HistoryFunc) (last uint64, n int, err error) {
	return b.readSubjectFrom(ctx, app, subj, 0, since, upTo, fn)
}

func (b *Bus) readSubjectFrom(ctx context.Context, app, subj string, after uint64, since time.Time, upTo uint64, fn HistoryFunc) (last uint64, n int, err error) {
	last = after
	if upTo != 0 && upTo <= after+1 {
		return last, 0, nil
	}
	if err := ctx.Err(); err != nil {
		return last, 0, fmt.Errorf("bus: history %q: %w", subj, err)
	}
	// Room for two batches (the one being handed to fn and the next) and
	// their terminators: more never arrives, so nothing is dropped as a
	// slow consumer.
	ch := make(chan *nats.Msg, 2*(historyBatch+1))
	inbox := b.nc.NewInbox()
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return last, 0, fmt.Errorf("bus: history %q: %w", subj, err)
	}
	defer func() {
		if uerr := sub.Unsubscribe(); uerr != nil {
			b.log.Debug("bus: history: unsubscribe", "err", uerr)
		}
	}()
	api := apiPrefix(b.js.Options()) + "DIRECT.GET." + StreamName(app)
	send := func(start uint64) error {
		req := directGetRequest{Seq: start, NextBySubj: subj, Batch: historyBatch, MaxBytes: historyMaxBytes}
		if start == 0 && !since.IsZero() {
			req.Seq, req.StartTime = 0, &since
		}
		if upTo != 0 && upTo > start && upTo-start < historyBatch {
			req.Batch = int(upTo - start) // at most this many can be below upTo
		}
		data, err := json.Marshal(req)
		if err != nil {
			return err
		}
		return b.nc.PublishRequest(api, inbox, data)
	}
	first := after + 1
	if !since.IsZero() {
		first = 0
	}
	if err := send(first); err != nil {
		return last, 0, fmt.Errorf("bus: history %q: %w", subj, err)
	}
	timer := time.NewTimer(historyWait)
	defer timer.Stop()
	var buf []storedMsg
	for {
		timer.Reset(historyWait)
		var more bool
		buf, more, err = collectBatch(ctx, timer.C, ch, subj, last, buf[:0])
		if err != nil {
			return last, n, err
		}
		if upTo != 0 {
			for i, m := range buf {
				if m.serial >= upTo {
					buf, more = buf[:i], false
					break
				}
			}
		}
		if len(buf) == 0 {
			return last, n, nil
		}
		end := buf[len(buf)-1].serial
		if more = more && (upTo == 0 || end+1 < upTo); more {
			if err := send(end + 1); err != nil {
				return last, n, fmt.Errorf("bus: history %q: %w", subj, err)
			}
		}
		for i, m := range buf {
			if fn != nil {
				var excl string
				if v := m.msg.Header[HeaderExclude]; len(v) > 0 {
					excl = v[0]
				}
				if err := fn(m.serial, m.msg.Data, excl); err != nil {
					clear(buf[i:])
					return last, n, err
				}
			}
			last = m.serial
			n++
			buf[i] = storedMsg{}
		}
		if !more {
			return last, n, nil
		}
	}
}

// collectBatch appends the messages of one batch reply to buf until its
// terminator. more reports that the terminator says more messages are
// pending (or that the server answered without batching, see below). A 404
// (nothing from the asked sequence on) is an empty batch.
// Every message must be on subj with a sequence above after and above the
// one before it.
func collectBatch(ctx context.Context, timeout <-chan time.Time, ch <-chan *nats.Msg, subj string, after uint64, buf []storedMsg) (_ []storedMsg, more bool, err error) {
	prev := after
	for {
		var msg *nats.Msg
		select {
		case msg = <-ch:
		case <-timeout:
			return buf, false, fmt.Errorf("bus: history %q: %w", subj, nats.ErrTimeout)
		case <-ctx.Done():
			return buf, false, fmt.Errorf("bus: history %q: %w", subj, ctx.Err())
		}
		h := msg.Header
		switch st := h.Get(headerStatus); st {
		case "":
		case statusEOB:
			return buf, headerUint(h, headerNumPend) > 0, nil
		case statusNotFound:
			return buf, false, nil
		case statusNoRespond:
			return buf, false, fmt.Errorf("bus: history %q: %w", subj, nats.ErrNoResponders)
		default:
			return buf, false, fmt.Errorf("bus: history %q: status %s %s", subj, st, h.Get(headerDesc))
		}
		seq := headerUint(h, headerSequence)
		if seq <= prev {
			return buf, false, fmt.Errorf("bus: history %q: sequence %d after %d", subj, seq, prev)
		}
		if s := h.Get(headerSubject); s != subj {
			return buf, false, fmt.Errorf("bus: history %q: reply for subject %q", subj, s)
		}
		prev = seq
		buf = append(buf, storedMsg{seq, msg})
		if len(h[headerNumPend]) == 0 {
			// A server without batched direct gets (before 2.11, as an
			// external deployment may run) answers one message and no
			// terminator: take it as a batch of one, and ask for the next.
			return buf, true, nil
		}
	}
}

// windowPassed applies the window rule (top of this file) for after > 0,
// once subj has been read. first is the stream's FirstSeq when passed.
func (b *Bus) windowPassed(ctx context.Context, app, subj string, after uint64) (passed bool, first uint64, err error) {
	f, found, err := b.firstOnSubject(ctx, app, subj)
	if err != nil {
		return false, 0, err
	}
	if found {
		if f <= after {
			return false, 0, nil
		}
		st, err := b.streamBounds(ctx, app, time.Now().Add(-streamFirstTTL))
		if err != nil {
			return false, 0, err
		}
		return true, st.first, nil
	}
	// Nothing on the subject: the stream's FirstSeq decides, as of after
	// the empty answer.
	st, err := b.streamBounds(ctx, app, time.Now())
	if err != nil {
		return false, 0, err
	}
	if after+1 < st.first || after > st.last {
		return true, st.first, nil
	}
	return false, 0, nil
}

// firstOnSubject is the sequence of the first message on subj in app's
// stream, with one direct get; found is false when there is none.
func (b *Bus) firstOnSubject(ctx context.Context, app, subj string) (seq uint64, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	req, err := json.Marshal(directGetRequest{Seq: 1, NextBySubj: subj})
	if err != nil {
		return 0, false, err
	}
	api := apiPrefix(b.js.Options()) + "DIRECT.GET." + StreamName(app)
	reply, err := b.nc.RequestWithContext(ctx, api, req)
	if err != nil {
		return 0, false, fmt.Errorf("bus: history %q: first: %w", subj, err)
	}
	h := reply.Header
	switch st := h.Get(headerStatus); st {
	case "":
	case statusNotFound:
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("bus: history %q: first: status %s %s", subj, st, h.Get(headerDesc))
	}
	seq, err = strconv.ParseUint(h.Get(headerSequence), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("bus: history %q: first: sequence: %w", subj, err)
	}
	return seq, true, nil
}

// historyState is the Bus's state for history reads and gap repair.
type historyState struct {
	firstMu sync.Mutex
	firsts  map[string]*firstEntry // per app; guarded by firstMu

	gapOnce   sync.Once
	gapShards []gapShard // per delivery shard, each used by its goroutine only (gapfill.go)

	gapRepairs  atomic.Uint64
	gapMessages atomic.Uint64
	gapFailures atomic.Uint64
	duplicates  atomic.Uint64
	dropLive    atomic.Pointer[func(*Message) bool] // test hook (gapfill.go)
}

// streamBounds is what History needs of a stream's state.
type streamBounds struct {
	first uint64 // FirstSeq; LastSeq+1 when the stream holds nothing
	last  uint64 // LastSeq
}

// firstEntry is one app's cached stream bounds and the stream info request
// in flight, if any.
type firstEntry struct {
	val    streamBounds
	at     time.Time // when the request that got val was sent; zero: none yet
	err    error     // the last request's error, nil if it succeeded
	errAt  time.Time // when that request was sent
	flight chan struct{}
}

// streamBounds is app's stream bounds from a stream info request sent no
// earlier than notBefore. Concurrent callers share requests: a caller waits
// for the one in flight and uses its answer if it was sent late enough,
// rather than send its own, so a storm of History calls costs about one
// request per round trip per app.
func (b *Bus) streamBounds(ctx context.Context, app string, notBefore time.Time) (streamBounds, error) {
	hs := &b.hist
	for {
		hs.firstMu.Lock()
		if hs.firsts == nil {
			hs.firsts = make(map[string]*firstEntry)
		}
		e := hs.firsts[app]
		if e == nil {
			e = &firstEntry{}
			hs.firsts[app] = e
		}
		if !e.at.IsZero() && !e.at.Before(notBefore) {
			v := e.val
			hs.firstMu.Unlock()
			return v, nil
		}
		if e.err != nil && !e.errAt.Before(notBefore) {
			err := e.err
			hs.firstMu.Unlock()
			return streamBounds{}, err
		}
		if w := e.flight; w != nil {
			hs.firstMu.Unlock()
			select {
			case <-w: // then look again: it may have been sent late enough
			case <-ctx.Done():
				return streamBounds{}, fmt.Errorf("bus: stream info %q: %w", StreamName(app), ctx.Err())
			}
			continue
		}
		w := make(chan struct{})
		sent := time.Now()
		e.flight = w
		hs.firstMu.Unlock()

		// Not cut short by this caller's ctx ending: others may be waiting.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyWait)
		v, err := b.fetchStreamBounds(rctx, app)
		cancel()

		hs.firstMu.Lock()
		if err == nil && e.at.Before(sent) {
			e.val, e.at = v, sent
		}
		e.err, e.errAt = err, sent
		e.flight = nil
		close(w)
		hs.firstMu.Unlock()
		return v, err
	}
}

// fetchStreamBounds asks the stream leader for app's stream info.
func (b *Bus) fetchStreamBounds(ctx context.Context, app string) (streamBounds, error) {
	s, err := b.js.Stream(ctx, StreamName(app))
	if err != nil {
		return streamBounds{}, fmt.Errorf("bus: stream info %q: %w", StreamName(app), err)
	}
	st := s.CachedInfo().State
	v := streamBounds{first: st.FirstSeq, last: st.LastSeq}
	if st.Msgs == 0 {
		v.first = st.LastSeq + 1
	}
	return v, nil
}
