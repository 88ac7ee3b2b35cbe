package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"herald/client"
)

// The presence and failover scenarios need few sockets, each with its own
// state machine (presence rosters, resume), so they do not use the epoll
// workers: the parent holds their connections with package client (a
// client.Conn each in presence.go, a client.Session each in failover.go).
// This file holds what both share.

// presConnStats are the connect figures of the scenarios that connect from
// the parent (presence and failover).
type presConnStats struct {
	hist                            Histogram
	established, failed, subscribed int64
	failures                        map[string]int64
	first, last                     int64 // unix ns: first dial, last subscribed
}

// record accounts one dial that started at start (unix ns) and ended at now
// with err. The caller serializes the calls.
func (pc *presConnStats) record(start, now int64, err error) {
	if pc.first == 0 || start < pc.first {
		pc.first = start
	}
	if err != nil {
		pc.failed++
		pc.failures[dialReason(err)]++
		return
	}
	pc.established++
	pc.hist.Record(now - start)
}

// clientURLs are the ws:// URLs of the destinations, in order, for package
// client: the same host, port and path as the workers' upgrade requests.
func (c *Config) clientURLs() []string {
	var out []string
	for _, d := range c.dests() {
		out = append(out, "ws://"+d.Host+d.Path)
	}
	return out
}

// clientOptions are the options of every parent connection: the workers'
// User-Agent (dial.go), and --dial-timeout for TCP connect, upgrade and
// pusher:connection_established together.
func (c *Config) clientOptions() client.Options {
	return client.Options{
		DialTimeout: c.DialTimeout,
		Header:      http.Header{"User-Agent": {"herald-bench"}},
	}
}

// dialReason names a failed client.Dial for the failure tables as the
// workers name the same failures (dial.go, poller.go, session.go): the
// errno ("econnrefused"), "timeout", "http_<status>", "bad_accept",
// "bad_handshake", "eof", "close_<code>" (a close frame, or the pusher:error
// that refused the connection), else the error text.
func dialReason(err error) string {
	var (
		errno  syscall.Errno
		status ws.StatusError
		closed *client.CloseError
		ne     net.Error
	)
	switch {
	case errors.As(err, &errno):
		return errReason(err)
	case errors.As(err, &status):
		return "http_" + strconv.Itoa(int(status))
	case errors.Is(err, ws.ErrHandshakeBadSecAccept):
		return "bad_accept"
	case errors.Is(err, ws.ErrHandshakeBadStatus), errors.Is(err, ws.ErrHandshakeBadUpgrade),
		errors.Is(err, ws.ErrHandshakeBadConnection), errors.Is(err, ws.ErrHandshakeBadProtocol):
		return "bad_handshake"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &closed) && closed.Code == int(ws.StatusAbnormalClosure):
		return "eof" // lost without a close frame
	case errors.As(err, &closed):
		return "close_" + strconv.Itoa(closed.Code)
	}
	return errReason(err)
}

func (r *run) progressf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench %s %5.1fs "+format+"\n", append([]any{r.cfg.Scenario, time.Since(r.start).Seconds()}, args...)...)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
