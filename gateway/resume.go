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
}

type heldEvent struct {
	serial uint64
	frame  []byte
}

type replayJob struct {
	c    *Conn
	name string
	r    *replay
}

// holdLocked reports whether a live event for the channel is taken care of
// by a replay: held back while it runs, or dropped after it as already
// replayed. c.mu must be held.
func (c *Conn) holdLocked(channel string, serial uint64, frame []byte) bool {
	r := c.replays[channel]
	if r == nil {
		return false
	}
	if r.done {
		if serial != 0 && serial <= r.floor {
			return true
		}
		c.endResumeLocked(channel, r)
		return false
	}
	if len(r.held) < maxHeld {
		r.held = append(r.held, heldEvent{serial, frame})
	} else {
		r.overflow = true
	}
	return true
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
// the queue the hold is lifted at once and the client told why.
func (g *Gateway) startReplay(c *Conn, name string, r *replay) {
	if g.cfg.Replayer == nil {
		g.finishReplay(c, name, r, "disabled", 0, r.from)
		return
	}
	select {
	case g.replayJobs <- replayJob{c, name, r}:
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
// got to: those events are stored there too.
func (g *Gateway) runReplay(job replayJob) {
	c, r := job.c, job.r
	ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
	defer cancel()
	excl := c.id.String()
	after := r.from
	var first bus.HistoryResult
	total := 0
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
		for _, h := range r.held {
			if h.serial > after && c.state() == stateOpen && c.enqueueLocked(h.frame) {
				after = h.serial
			}
		}
		r.done, r.floor, r.held = true, after, nil
		// The report goes in the same critical section, so it comes before
		// any live event that follows the replay.
		var report []byte
		g.metrics.replayed.Add(uint64(total))
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

func resumeFailed(channel string, from uint64, reason string, first uint64) []byte {
	m := map[string]any{"from": from, "reason": reason}
	if first > 0 {
		m["first"] = first
	}
	data, _ := json.Marshal(m)
	return protocol.AppendEvent(nil, "pusher_internal:resume_failed", channel, string(data), "")
}
