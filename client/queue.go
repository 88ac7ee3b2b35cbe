package client

import (
	"context"
)

// acquire takes the reader slot (c.rsem), or fails when ctx ends first.
func (c *Conn) acquire(ctx context.Context) error {
	select {
	case c.rsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Conn) release() { <-c.rsem }

// Next returns the next event (any kind, including pusher:ping, pusher:pong
// and pusher:error), or an error when ctx ends or the connection is over.
// Events that WaitFor or Subscribe skipped come first, in the order received.
//
// When the connection is over, Next still returns the events received before
// the end, then the terminal error: a *CloseError with the close frame's code
// when the server sent one (code 1006 when the connection was lost without a
// close frame), ErrClosed after Close or CloseNow, or a wrapped error when
// the server broke RFC 6455. Every later call returns the same error.
func (c *Conn) Next(ctx context.Context) (Event, error) {
	if err := c.acquire(ctx); err != nil {
		return Event{}, err
	}
	defer c.release()
	if c.pendingLen() > 0 {
		return c.takePending(c.pendingHead), nil
	}
	return c.receive(ctx)
}

// WaitFor returns the next event named event (on channel, if channel is not
// empty), looking at the events skipped earlier first. The events it skips
// stay queued, in order, for later Next and WaitFor calls. It fails with
// ErrTooManyPending when more than Options.MaxPending events would be kept,
// and with Next's errors when ctx ends or the connection is over.
func (c *Conn) WaitFor(ctx context.Context, event, channel string) (Event, error) {
	if err := c.acquire(ctx); err != nil {
		return Event{}, err
	}
	defer c.release()
	return c.waitFor(ctx, true, func(ev *Event) bool {
		return ev.Event == event && (channel == "" || ev.Channel == channel)
	})
}

// waitFor returns the first event match accepts, looking at pending events
// first when scanPending is set; it keeps the others in c.pending.
// c.rsem must be held.
func (c *Conn) waitFor(ctx context.Context, scanPending bool, match func(*Event) bool) (Event, error) {
	if scanPending {
		for i := c.pendingHead; i < len(c.pending); i++ {
			if match(&c.pending[i]) {
				return c.takePending(i), nil
			}
		}
	}
	for {
		if c.pendingLen() >= c.opt.MaxPending {
			return Event{}, ErrTooManyPending
		}
		ev, err := c.receive(ctx)
		if err != nil {
			return Event{}, err
		}
		if match(&ev) {
			return ev, nil
		}
		c.keep(ev)
	}
}

// receive waits for the next event from the reader goroutine. An event that
// is already queued is returned even if ctx has ended. c.rsem must be held.
func (c *Conn) receive(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-c.events:
		return c.received(ev, ok)
	default:
	}
	select {
	case ev, ok := <-c.events:
		return c.received(ev, ok)
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

func (c *Conn) received(ev *Event, ok bool) (Event, error) {
	if !ok {
		return Event{}, c.termErr // set before c.events was closed
	}
	return *ev, nil
}

// The pending events are c.pending[c.pendingHead:], oldest first. The methods
// below need c.rsem held.

func (c *Conn) pendingLen() int { return len(c.pending) - c.pendingHead }

// keep appends ev to the pending events, reusing the space before the head
// when the slice is full.
func (c *Conn) keep(ev Event) {
	if len(c.pending) == cap(c.pending) && c.pendingHead > 0 {
		n := copy(c.pending, c.pending[c.pendingHead:])
		clear(c.pending[n:])
		c.pending = c.pending[:n]
		c.pendingHead = 0
	}
	c.pending = append(c.pending, ev)
}

// takePending removes and returns c.pending[i], keeping the order of the rest.
func (c *Conn) takePending(i int) Event {
	ev := c.pending[i]
	if i == c.pendingHead {
		c.pending[i] = Event{}
		c.pendingHead++
	} else {
		copy(c.pending[i:], c.pending[i+1:])
		c.pending[len(c.pending)-1] = Event{}
		c.pending = c.pending[:len(c.pending)-1]
	}
	if c.pendingHead == len(c.pending) {
		c.pending = c.pending[:0]
		c.pendingHead = 0
	}
	return ev
}
