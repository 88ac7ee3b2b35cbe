package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Leaving a cluster gracefully (the node's drain, docs/drain.md).
//
// A clustered node that simply stopped would take its Raft leaderships
// with it: every stream it led (and JetStream's meta group, if it led
// that) would wait for the survivors' election timeout before anything
// could be stored again, and REST publishes would stall for seconds.
// Instead the drain calls StepDown when it begins, while the node is still
// fully up, so each stream it leads hands its leadership to a current
// follower at once; and Close puts the embedded server in lame-duck mode
// (server.LameDuckShutdown), which transfers whatever Raft leadership is
// still here (the meta group's included: nats-server only takes a meta
// step-down request from the system account, which Herald's connection is
// not in), shuts JetStream down cleanly and tells the other servers and
// any NATS client this server is going.

// Lame-duck timing of the embedded server (server.Options): the clients
// still connected when lame duck begins (apps' NATS clients on the client
// port; the node's own connection is closed before) are told at once, and
// closed over lameDuckDuration after lameDuckGrace. nats-server's defaults
// (2 minutes, 10 s) are for a server of thousands of clients; a node's
// drain is bounded by shutdown.deadline.
const (
	lameDuckDuration = 2 * time.Second
	lameDuckGrace    = 200 * time.Millisecond
)

// stepDownWait bounds how long StepDown waits for each stream it led to
// have a new leader.
const stepDownWait = 3 * time.Second

// StepDown hands every JetStream stream and consumer this node's server
// leads to another server, and waits (within ctx, at most a few seconds)
// until each has a new leader. It returns how many it stepped down. Only a
// clustered embedded server has leaderships to give: otherwise it does
// nothing. A stream that cannot elect a leader elsewhere (no current
// follower) keeps this one; the error says which.
func (b *Bus) StepDown(ctx context.Context) (int, error) {
	if b.srv == nil || !b.cfg.Cluster.Enabled() || !b.srv.JetStreamIsClustered() {
		return 0, nil
	}
	acc := b.srv.GlobalAccount().Name
	self := b.cfg.ServerName
	type led struct{ stream, consumer string }
	var leading []led
	lctx, cancel := context.WithTimeout(ctx, stepDownWait)
	defer cancel()
	names := b.js.ListStreams(lctx)
	for si := range names.Info() {
		if si.Config.Replicas <= 1 {
			// No other replica to hand it to (a one-node home region:
			// docs/regions.md); it stays with this node until it stops.
			continue
		}
		if si.Cluster != nil && si.Cluster.Leader == self {
			leading = append(leading, led{stream: si.Config.Name})
		}
		s, err := b.js.Stream(lctx, si.Config.Name)
		if err != nil {
			continue
		}
		cons := s.ListConsumers(lctx)
		for ci := range cons.Info() {
			if ci.Cluster != nil && ci.Cluster.Leader == self {
				leading = append(leading, led{stream: si.Config.Name, consumer: ci.Name})
			}
		}
	}
	if err := names.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return 0, fmt.Errorf("bus: step down: list streams: %w", err)
	}
	var errs []error
	for _, l := range leading {
		var err error
		if l.consumer == "" {
			err = b.srv.JetStreamStepdownStream(acc, l.stream)
		} else {
			err = b.srv.JetStreamStepdownConsumer(acc, l.stream, l.consumer)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bus: step down %s %s: %w", l.stream, l.consumer, err))
		}
	}
	// Wait for the streams' new leaders: publishes go on through them.
	wctx, wcancel := context.WithTimeout(ctx, stepDownWait)
	defer wcancel()
	for _, l := range leading {
		if l.consumer != "" {
			continue
		}
		for !b.hasOtherLeader(wctx, l.stream) {
			if wctx.Err() != nil {
				errs = append(errs, fmt.Errorf("bus: step down %s: no new leader within %v", l.stream, stepDownWait))
				break
			}
			select {
			case <-wctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	b.log.Info("bus: stepped down from JetStream leaderships", "count", len(leading))
	return len(leading), errors.Join(errs...)
}

// hasOtherLeader reports whether stream has a leader and it is not this
// server.
func (b *Bus) hasOtherLeader(ctx context.Context, stream string) bool {
	actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	s, err := b.js.Stream(actx, stream)
	if err != nil {
		return false
	}
	ci := s.CachedInfo().Cluster
	return ci != nil && ci.Leader != "" && ci.Leader != b.cfg.ServerName
}

// shutdownLameDuck stops a clustered embedded server through lame-duck
// mode (see the top of this file); it returns once the server is down.
func shutdownLameDuck(s *server.Server) {
	s.LameDuckShutdown()
	// LameDuckShutdown returns without stopping a server that was already
	// shutting down or has no client listener; Shutdown is then the rest.
	s.Shutdown()
	s.WaitForShutdown()
}
