package gateway

import (
	"context"
	"encoding/json"
	"time"

	"herald/bus"
	"herald/protocol"
)

// Resume (docs/protocol-extensions.md, docs/resume.md): a subscribe that
// carries herald_resume N is acknowledged as usual, then
//
//  1. live events for the socket and channel are held back (not queued),
//  2. a worker reads the channel's stored events after N from the stream and
//     queues them in order,
//  3. the held live events with a serial above the last replayed one are
//     queued, the hold is lifted, and live delivery goes on,
//  4. pusher_internal:resume_ok (or resume_failed) reports the outcome.
//
// Every step that touches the socket's queue holds Conn.mu, and Deliver
// checks the hold under the same lock, so no event is lost between history
// and live and none is queued twice.
//
// The history read can be short. Any replica of the stream answers its
// direct gets (bus/history.go), and a follower applies a stored event a
// moment after the leader acknowledged and republished it, so an event
// whose live copy passed through this node just before the hold can be
// missing from the read too: it would then reach the client by neither
// way (the rolling restart lost one so, tests/e2e/rolling_test.go; node
// TestClusterResumeRightAfterLiveCopy makes it happen). Two facts show a
// short read, and the read is made again until it is complete:
//
//   - the channel's last serial delivered on this node when the
//     subscription entered the index (localChannel.last): every event up to
//     it went by before the hold, so the replay must reach it;
//   - each live event's PrevSerial (the serial before it on the channel,
//     bus.Message): the first held event above what was read must follow
//     it directly, and after the replay the first newer live event must
//     follow the floor; if it does not, the events in between are read
//     from the stream before it is queued (a repair: the same hold, no
//     second report).
//
// A read that stays short through replayShortPauses ends the resume with
// resume_failed "unavailable": the client is told, never left with a gap.

// Replayer reads a channel's stored events after a serial (bus.Bus does,
// with batched direct gets from the app's stream).
type Replayer interface {
	History(ctx context.Context, app, channel string, after uint64, fn func(serial uint64, payload []byte, exclude string) error) (bus.HistoryResult, error)
}

const (
	replayWorkers  = 4
	replayQueueLen = 4096
	replayTimeout  = 10 * time.Second
	// maxHeld bounds the live events held back for one resuming
	// subscription; past it they are dropped and read again from the
	// stream, where they are stored anyway.
	maxHeld = 4096
)

// replayShortPauses are the waits before each new read of a replay that fell
// short of what this node has seen of the channel (a lagging replica
// answered): a healthy follower is behind by milliseconds, one still
// catching up after a restart by longer. About 1.3 s in all.
var replayShortPauses = []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
	40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond, 640 * time.Millisecond}

// replay is the hold on one resuming subscription. Conn.mu guards it.
// After the replay (done) it stays as a floor: the live copy of an event can
// reach this node after the stream read returned it, so live events at or
// below the last replayed serial are dropped until the first newer one, when
// the record goes.
type replay struct {
	from     uint64
	held     []heldEvent
	overflow bool
	done     bool
	floor    uint64
	// repair: the hold was put back after the replay, because a live event
	// showed that the replay missed events (holdLocked); it ends without a
	// report unless it fails.
	repair bool
}

type heldEvent struct {
	serial uint64
	prev   uint64 // bus.Message.PrevSerial: the serial before it on the channel; 0 when unknown
	frame  []byte
}

type replayJob struct {
	c    *Conn
	name string
	r    *replay
	// seen is the channel's last serial delivered on this node when the
	// subscription entered the index: the replay must reach it.
	seen uint64
}

// holdLocked reports whether a live event for the channel is taken care of
// by a replay: held back while it runs, or dropped after it as already
// replayed. c.mu must be held.
func (c *Conn) holdLocked(channel string, serial, prev uint64, frame []byte) bool {
	r := c.replays[channel]
	if r == nil {
		return false
	}
	if r.done {
		if serial != 0 && serial <= r.floor {
			return true
		}
		if serial != 0 && prev > r.floor {
			// The replay missed the events between its floor and this one:
			// hold again and read them first.
			return c.repairLocked(channel, r, heldEvent{serial, prev, frame})
		}
		c.endResumeLocked(channel, r)
		return false
	}
	if len(r.held) < maxHeld {
		r.held = append(r.held, heldEvent{serial, prev, frame})
	} else {
		r.overflow = true
	}
	return true
}

// repairLocked puts the hold back on a replayed channel whose first newer
// live event h does not follow the floor, and queues a read of the events
// in between; h waits in the hold. Without room in the replay queue the
// client is told (resume_failed "unavailable") and h is delivered. It
// reports whether h is held. c.mu must be held.
func (c *Conn) repairLocked(channel string, r *replay, h heldEvent) bool {
	g := c.poller.g
	r.from, r.done, r.repair = r.floor, false, true
	r.held = append(r.held[:0], h)
	select {
	case g.replayJobs <- replayJob{c: c, name: channel, r: r}:
		g.metrics.rereads.Add(1)
		return true
	default:
	}
	g.metrics.resumes[resumeOutcome("unavailable")].Add(1)
	c.enqueueLocked(textFrame(resumeFailed(channel, r.floor, "unavailable", 0)))
	c.endResumeLocked(channel, r)
	return false
}

// shortLocked reports whether a replay that has read the stream up to after
// is missing events: the held events must follow on from after, each from
// the one before (PrevSerial), and together reach seen. c.mu must be held.
func (r *replay) shortLocked(after, seen uint64) bool {
	cover := after
	for _, h := range r.held {
		if h.serial <= cover {
			continue // replayed already, or without a serial
		}
		if h.prev > cover {
			return true
		}
		cover = h.serial
	}
	return cover < seen
}

// beginResume puts a hold on the channel before the subscription enters the
// index, so that no live event reaches the socket before the replay.
func (c *Conn) beginResume(name string, from uint64) *replay {
	r := &replay{from: from}
	c.mu.Lock()
	if c.replays == nil {
		c.replays = make(map[string]*replay, 1)
	}
	c.replays[name] = r
	c.mu.Unlock()
	return r
}

// endResumeLocked forgets the replay record of the channel if r is still the
// current one. c.mu must be held.
func (c *Conn) endResumeLocked(name string, r *replay) {
	if c.replays[name] == r {
		delete(c.replays, name)
	}
	if len(c.replays) == 0 {
		c.replays = nil
	}
}

// startReplay hands the replay to a worker; without a replayer or room in
// the queue the hold is lifted at once and the client told why. seen is the
// channel's last serial delivered on this node when the subscription
// entered the index.
func (g *Gateway) startReplay(c *Conn, name string, r *replay, seen uint64) {
	if g.cfg.Replayer == nil {
		g.finishReplay(c, name, r, "disabled", 0, r.from)
		return
	}
	select {
	case g.replayJobs <- replayJob{c, name, r, seen}:
	default:
		g.finishReplay(c, name, r, "unavailable", 0, r.from)
	}
}

func (g *Gateway) replayWorker() {
	for job := range g.replayJobs {
		g.runReplay(job)
	}
}

// runReplay reads the stored events after the requested serial and queues
// them, then the held live ones, then lifts the hold. When live events
// overflowed the hold meanwhile, it reads the stream again from where it
// got to: those events are stored there too. When the read fell short of
// what this node has seen of the channel (shortLocked), it waits and reads
// again from where it got to (replayShortPauses).
func (g *Gateway) runReplay(job replayJob) {
	c, r := job.c, job.r
	ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
	defer cancel()
	excl := c.id.String()
	c.mu.Lock()
	from, repair := r.from, r.repair
	c.mu.Unlock()
	after := from
	var first bus.HistoryResult
	total, shortReads := 0, 0
	for pass := 0; ; pass++ {
		res, err := g.cfg.Replayer.History(ctx, c.app.ID, job.name, after, func(serial uint64, payload []byte, exclude string) error {
			if exclude == excl {
				return nil
			}
			return c.queueReplayed(eventFrame(payload, serial))
		})
		if err != nil {
			g.log.Warn("replay failed", "app", c.app.ID, "channel", job.name, "err", err)
			g.finishReplay(c, job.name, r, "unavailable", 0, max(after, res.Last))
			return
		}
		if pass == 0 {
			first = res
		}
		total += res.Count
		after = max(after, res.Last)
		c.mu.Lock()
		if c.replays[job.name] != r {
			c.mu.Unlock()
			return // unsubscribed or closed meanwhile
		}
		if r.overflow && pass < 10 {
			r.overflow, r.held = false, nil
			c.mu.Unlock()
			continue
		}
		// A passed window is reported as such: the client refetches anyway.
		if !r.overflow && !first.WindowPassed && r.shortLocked(after, job.seen) {
			c.mu.Unlock()
			if shortReads == len(replayShortPauses) {
				g.log.Warn("replay fell short of the events this node delivered; resume failed",
					"app", c.app.ID, "channel", job.name, "from", from, "read_to", after, "seen", job.seen)
				g.finishReplay(c, job.name, r, "unavailable", 0, after)
				return
			}
			g.metrics.rereads.Add(1)
			if !sleepCtx(ctx, replayShortPauses[shortReads]) {
				g.finishReplay(c, job.name, r, "unavailable", 0, after)
				return
			}
			shortReads++
			continue
		}
		for _, h := range r.held {
			if h.serial > after && c.state() == stateOpen && c.enqueueLocked(h.frame) {
				after = h.serial
			}
		}
		r.done, r.floor, r.held, r.repair = true, after, nil, false
		g.metrics.replayed.Add(uint64(total))
		if repair {
			// The client had its report with the first replay.
			c.flushLocked()
			c.mu.Unlock()
			return
		}
		// The report goes in the same critical section, so it comes before
		// any live event that follows the replay.
		var report []byte
		g.tapResume(c, job.name, r.from, first.WindowPassed, total)
		if first.WindowPassed {
			g.metrics.resumes[resumeWindowPassed].Add(1)
			report = resumeFailed(job.name, r.from, "window_passed", first.First)
		} else {
			g.metrics.resumes[resumeOK].Add(1)
			data, _ := json.Marshal(map[string]uint64{"from": r.from, "to": after, "replayed": uint64(total)})
			report = protocol.AppendEvent(nil, "pusher_internal:resume_ok", job.name, string(data), "")
		}
		if c.state() == stateOpen {
			c.enqueueLocked(textFrame(report))
		}
		c.flushLocked()
		c.mu.Unlock()
		return
	}
}

// queueReplayed queues one replayed frame, pacing against the socket's
// queue bound: a long replay waits for the client to read rather than
// overflow it.
func (c *Conn) queueReplayed(frame []byte) error {
	limit := c.poller.g.cfg.WriteQueueBytes
	for wait := 0; ; wait++ {
		c.mu.Lock()
		if c.state() != stateOpen {
			c.mu.Unlock()
			return errConnClosed
		}
		if c.queued+len(frame) <= limit/2 || wait >= 200 {
			ok := c.enqueueLocked(frame)
			if c.queued > limit/4 {
				c.flushLocked()
			}
			c.mu.Unlock()
			if !ok {
				return errConnClosed
			}
			return nil
		}
		c.flushLocked()
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// finishReplay lifts the hold without a replay (or after one failed part
// way, having queued everything up to serial done), queues the held events
// not sent yet, and reports why.
func (g *Gateway) finishReplay(c *Conn, name string, r *replay, reason string, first, done uint64) {
	g.metrics.resumes[resumeOutcome(reason)].Add(1)
	g.cfg.Tap.Resume(c.app.ID, name, c.id, reason, r.from, 0)
	c.mu.Lock()
	if c.replays[name] == r {
		r.floor = done
		for _, h := range r.held {
			if h.serial != 0 && h.serial <= done {
				continue // replayed already
			}
			if c.state() == stateOpen && c.enqueueLocked(h.frame) {
				r.floor = max(r.floor, h.serial)
			}
		}
		r.done, r.held = true, nil
		if c.state() == stateOpen {
			c.enqueueLocked(textFrame(resumeFailed(name, r.from, reason, first)))
		}
		c.flushLocked()
	}
	c.mu.Unlock()
}

// sleepCtx waits d; it reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func resumeFailed(channel string, from uint64, reason string, first uint64) []byte {
	m := map[string]any{"from": from, "reason": reason}
	if first > 0 {
		m["first"] = first
	}
	data, _ := json.Marshal(m)
	return protocol.AppendEvent(nil, "pusher_internal:resume_failed", channel, string(data), "")
}
