package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"herald/admin"
)

// The drain: how a node stops without losing anything and without turning
// its restart into a reconnect storm (docs/drain.md). In order:
//
//  1. /readyz answers 503, so a load balancer stops sending new sockets;
//     nothing is closed yet.
//  2. New upgrades are refused: upgraded and closed with 4200, so pusher-js
//     reconnects at once, elsewhere.
//  3. In a cluster the node marks itself draining (cluster.Drain): it stays
//     a member, its presence members and subscription counts still part of
//     the state, but owns no channel from then on, so its sockets' removals
//     are decided by the channels' new owners from the state
//     (docs/lifecycle.md, "A node that stops"). It also hands over every
//     JetStream stream it leads (bus.StepDown), meanwhile, while it is still
//     fully up.
//  4. Its sockets are told to reconnect (close 4200), spread evenly with
//     jitter over shutdown.drain_window (gateway.CloseConns), and it waits
//     until they are gone.
//  5. It stops: HTTP, the NATS API, the gateway, then it leaves memberlist
//     (its presence slice goes everywhere at once) and the bus closes, the
//     embedded NATS server in lame-duck mode, which hands over any Raft
//     leadership still here (the meta group's) before it shuts down.
//
// shutdown.deadline, counted from the start, is the hard stop: the socket
// phase ends early enough (closeReserve) for step 5 to finish inside it,
// and whatever is still open then is closed at once.

// closeReserve is the part of the deadline kept for step 5: the parts'
// own shutdowns (lame duck, memberlist leave, HTTP) take a few seconds.
func closeReserve(deadline time.Duration) time.Duration {
	return min(5*time.Second, deadline/4)
}

// drainState is what GET /drain reports.
type drainState struct {
	mu      sync.Mutex
	phase   string // "serving", "draining", "closing", "stopped"
	began   time.Time
	window  time.Duration
	told    int // sockets told to reconnect
	stepped int // JetStream leaderships handed over
}

// DrainStatus is the answer of POST and GET /drain on the admin API.
type DrainStatus struct {
	Phase       string `json:"phase"` // serving, draining, closing, stopped
	StartedAt   string `json:"started_at,omitempty"`
	Window      string `json:"window"`
	Deadline    string `json:"deadline"`
	Connections int64  `json:"connections"`
	Told        int    `json:"told"`                 // sockets told to reconnect so far (once the paced closes are done)
	SteppedDown int    `json:"stepped_down"`         // JetStream leaderships handed over
	ElapsedMs   int64  `json:"elapsed_ms,omitempty"` // since the drain began
}

func (n *Node) drainStatus() DrainStatus {
	d := &n.drain
	d.mu.Lock()
	defer d.mu.Unlock()
	st := DrainStatus{
		Phase:    d.phase,
		Window:   n.cfg.Shutdown.DrainWindow.D().String(),
		Deadline: n.cfg.Shutdown.Deadline.D().String(),
		Told:     d.told,
	}
	if st.Phase == "" {
		st.Phase = "serving"
	}
	if n.gw != nil {
		st.Connections = n.gw.Stats().Connections
	}
	st.SteppedDown = d.stepped
	if !d.began.IsZero() {
		st.StartedAt = d.began.UTC().Format(time.RFC3339Nano)
		st.ElapsedMs = time.Since(d.began).Milliseconds()
		st.Window = d.window.String()
	}
	return st
}

func (n *Node) setPhase(p string) {
	n.drain.mu.Lock()
	n.drain.phase = p
	n.drain.mu.Unlock()
}

// StopTimeout is the hard stop of a drain (shutdown.deadline): what the
// signal path gives Drain as its context's deadline.
func (n *Node) StopTimeout() time.Duration { return n.cfg.Shutdown.Deadline.D() }

// Drain stops the node the way docs/drain.md describes: readiness off, new
// sockets refused with 4200, ownership and JetStream leaderships handed
// over, the sockets told to reconnect (4200) spread over window, then
// every part stopped. ctx's deadline is the hard stop. It returns when the
// node is stopped; calls after the first (Stop included) wait for the
// first to finish and return its error. Window 0 closes the sockets at
// once and waits for nobody (Stop; tests).
func (n *Node) Drain(ctx context.Context, window time.Duration) error {
	n.stopOnce.Do(func() {
		defer close(n.done)
		n.stopErr = n.runDrain(ctx, window)
		n.setPhase("stopped")
		n.log.Info("herald node stopped")
	})
	<-n.done
	return n.stopErr
}

// Stop is Drain with a window of 0: everything at once, as fast as it can.
func (n *Node) Stop(ctx context.Context) error { return n.Drain(ctx, 0) }

// Done is closed once the node has stopped (by Stop, Drain, a signal or
// POST /drain on the admin API).
func (n *Node) Done() <-chan struct{} { return n.done }

func (n *Node) runDrain(ctx context.Context, window time.Duration) error {
	began := time.Now()
	n.drain.mu.Lock()
	n.drain.phase, n.drain.began, n.drain.window = "draining", began, window
	n.drain.mu.Unlock()

	// 1 and 2: before any socket is closed.
	n.http.SetReady(false)
	n.gw.Drain()
	n.log.Info("draining", "window", window, "connections", n.gw.Stats().Connections)

	// 3: ownership and leaderships move while everything still works.
	if n.cl != nil {
		if err := n.cl.Drain(); err != nil {
			n.log.Warn("cluster drain", "err", err)
		}
	}
	// Stop (window 0) leaves the handover to lame duck, which does it
	// synchronously: StepDown asks the meta leader, which a cluster being
	// stopped whole may no longer have.
	stepped := make(chan struct{})
	go func() {
		defer close(stepped)
		if window <= 0 {
			return
		}
		k, err := n.bus.StepDown(ctx)
		if err != nil {
			n.log.Warn("bus step down", "err", err)
		}
		n.drain.mu.Lock()
		n.drain.stepped = k
		n.drain.mu.Unlock()
	}()

	// 4: the paced closes, then wait for the sockets to go, keeping
	// closeReserve of the deadline for the rest.
	if window > 0 {
		sctx := ctx
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			sctx, cancel = context.WithDeadline(ctx, dl.Add(-closeReserve(dl.Sub(began))))
			defer cancel()
		}
		told := n.gw.CloseConns(sctx, window)
		n.drain.mu.Lock()
		n.drain.told = told
		n.drain.mu.Unlock()
		idle := n.gw.WaitIdle(sctx)
		n.log.Info("drained", "told", told, "took", time.Since(began).Round(time.Millisecond),
			"all_gone", idle, "left", n.gw.Stats().Connections)
	}
	<-stepped

	// 5: stop the parts.
	n.setPhase("closing")
	var errs []error
	if err := n.http.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		errs = append(errs, fmt.Errorf("node: stop http: %w", err))
	}
	if n.nats != nil {
		if err := n.nats.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("node: stop nats api: %w", err))
		}
	}
	n.closeParts()
	return errors.Join(errs...)
}

// drainRoutes registers the drain on the admin API: POST /drain starts it
// (with shutdown.drain_window and shutdown.deadline) and answers at once,
// 202 with the status; GET /drain reports it. `herald drain` calls them.
func (n *Node) drainRoutes(s *admin.Server) {
	s.Handle("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		n.StartDrain()
		admin.WriteJSON(w, http.StatusAccepted, n.drainStatus())
	})
	s.Handle("GET /drain", func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, n.drainStatus())
	})
}

// StartDrain begins the configured drain in the background, once; Done
// says when the node has stopped.
func (n *Node) StartDrain() {
	n.drainOnce.Do(func() {
		n.setPhase("draining") // answered at once, before the goroutine runs
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), n.StopTimeout())
			defer cancel()
			if err := n.Drain(ctx, n.cfg.Shutdown.DrainWindow.D()); err != nil {
				n.log.Warn("drain", "err", err)
			}
		}()
	})
}
