package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/bus"
)

// Pins of nodes that are gone.
//
// A consumer's priority group is pinned to one lane (deliver.go), and the
// server moves the pin only when the pinned lane has sent no pull request
// for PinnedTTL: MaxBackoff + AckWait + 30 s, about two minutes. That is
// right for a live lane waiting out a retry, and wrong for a lane whose
// node died or left: every event of its partitions, of every channel,
// waited those two minutes (tests/e2e TestClusterWebhooks met it after a
// kill -9). So when a node is gone (PeerGone, from the node's membership
// watch) every sender asks all senders which pins their lanes hold
// (WebhookPinsSubject) and unpins each consumer whose pin nobody claims:
// the server then pins the next lane that asks, on a live node.
//
// It unpins only when every live member answered, and only pins assigned
// before the loss (a pin assigned since is a live lane's that may not have
// seen its first message yet). Order per channel holds as it does for a
// PinnedTTL expiry: a consumer with events still unacknowledged (the dead
// lane's batch) is unpinned only once AckWait has passed since the loss,
// when that batch is due for redelivery, which the server sends before
// anything newer.

// pinsWait bounds collecting the senders' answers.
const pinsWait = time.Second

// A consumer whose leader was on the lost node answers its info request
// only once a new leader is elected (seconds), so each request has its own
// short deadline, and several run at once: one such consumer must not hold
// up the others' release (releasePins), and the next pass asks it again.
const (
	pinsInfoTimeout  = 2 * time.Second
	pinsInfoParallel = 8
)

// PeerGone says that another node left or was declared dead: the sender
// releases the pins its lanes held (above). It does not block.
func (s *Sender) PeerGone() {
	if s.closed.Load() {
		return
	}
	s.lostMu.Lock()
	s.lostAt = time.Now()
	s.lostMu.Unlock()
	select {
	case s.lost <- struct{}{}:
	default:
	}
}

// startPins answers pin questions and releases dead pins after PeerGone.
// Only in a cluster (Config.Members set).
func (s *Sender) startPins() error {
	if s.cfg.Members == nil {
		return nil
	}
	sub, err := s.js.Conn().Subscribe(bus.WebhookPinsSubject, func(m *nats.Msg) {
		b, _ := json.Marshal(s.lanes.pins())
		_ = m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("webhook: subscribe %s: %w", bus.WebhookPinsSubject, err)
	}
	s.pinSub = sub
	s.wg.Add(1)
	go s.pinLoop()
	return nil
}

func (s *Sender) pinLoop() {
	defer s.wg.Done()
	defer func() { _ = s.pinSub.Unsubscribe() }()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.lost:
		}
		s.lostMu.Lock()
		at := s.lostAt
		s.lostMu.Unlock()
		s.releaseAfter(at)
	}
}

// releaseAfter releases the pins of the loss at `at`: once membership has
// settled, those of consumers with nothing pending; after AckWait, the
// others. A pass that could not decide everything (a sender did not
// answer, or a consumer's info or unpin failed: the dead node's JetStream
// groups elect new leaders for seconds after it) is tried again within
// seconds, until the server's own PinnedTTL would have moved the pins
// anyway.
func (s *Sender) releaseAfter(at time.Time) {
	cc := s.consumerConfig("", "", 0)
	pendingAt := at.Add(cc.AckWait + time.Second)
	wait := pinsWait
	for {
		sleep(s.ctx, wait)
		if s.ctx.Err() != nil {
			return
		}
		pendingToo := !time.Now().Before(pendingAt)
		left, unsure := s.releasePins(at, pendingToo)
		switch {
		case unsure && time.Since(at) < cc.PinnedTTL:
			wait = min(2*wait, 5*time.Second)
		case left && !pendingToo:
			wait = time.Until(pendingAt)
		default:
			return
		}
	}
}

// releasePins unpins every consumer pinned before lost to a lane no live
// sender claims. It reports whether some were left because they had events
// pending (pendingToo false), and whether it could not tell for some (no
// answer from every sender, a consumer's info or its unpin failed).
func (s *Sender) releasePins(lost time.Time, pendingToo bool) (left, unsure bool) {
	if s.ctx.Err() != nil {
		return false, false
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	claimed, err := s.claimedPins(ctx)
	if err != nil {
		s.log.Debug("webhook: not releasing pins yet", "err", err)
		return false, true
	}
	lanes := s.lanes.all()
	infos := make([]*jetstream.ConsumerInfo, len(lanes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, pinsInfoParallel)
	for i, l := range lanes {
		sem <- struct{}{} // as bus/cache.go: at most pinsInfoParallel goroutines, however many lanes
		wg.Go(func() {
			defer func() { <-sem }()
			ictx, cancel := context.WithTimeout(ctx, pinsInfoTimeout)
			defer cancel()
			info, err := l.cons.Info(ictx)
			if err != nil {
				s.log.Debug("webhook: pins: consumer info", "consumer", l.name, "err", err)
				return
			}
			infos[i] = info
		})
	}
	wg.Wait()
	for i, l := range lanes {
		info := infos[i]
		if info == nil {
			unsure = true
			continue
		}
		for _, g := range info.PriorityGroups {
			if g.Group != priorityGroup || g.PinnedClientID == "" || claimed[g.PinnedClientID] || !g.PinnedTS.Before(lost) {
				continue
			}
			if info.NumAckPending > 0 && !pendingToo {
				left = true
				continue
			}
			if err := s.streams.Outbox.UnpinConsumer(ctx, l.name, priorityGroup); err != nil {
				s.log.Debug("webhook: unpin", "consumer", l.name, "err", err)
				unsure = true
				continue
			}
			s.log.Info("webhook: released a delivery lane pinned to a node that is gone", "consumer", l.name, "pending", info.NumAckPending)
		}
	}
	return left, unsure
}

// claimedPins asks every sender (this one included) for its lanes' pins;
// an error if fewer than the live members answered within pinsWait.
func (s *Sender) claimedPins(ctx context.Context) (map[string]bool, error) {
	nc := s.js.Conn()
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("webhook: pins inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(bus.WebhookPinsSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("webhook: ask for pins: %w", err)
	}
	want := s.cfg.Members()
	claimed := map[string]bool{}
	t := time.NewTimer(pinsWait)
	defer t.Stop()
	for got := 0; got < want; {
		select {
		case m := <-ch:
			var pins []string
			if json.Unmarshal(m.Data, &pins) == nil {
				got++
				for _, p := range pins {
					claimed[p] = true
				}
			}
		case <-t.C:
			return nil, fmt.Errorf("webhook: %d of %d senders answered with their pins", got, want)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return claimed, nil
}

// pins are the pin ids this node's lanes hold.
func (ls *laneSet) pins() []string {
	out := []string{}
	for _, l := range ls.all() {
		if p, _ := l.pin.Load().(string); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (ls *laneSet) all() []*lane {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]*lane, 0, len(ls.lanes))
	for _, l := range ls.lanes {
		out = append(out, l)
	}
	return out
}

// Pins returns the pin ids this node's lanes hold, as it answers other
// nodes (for tests and diagnostics).
func (s *Sender) Pins() []string { return s.lanes.pins() }
