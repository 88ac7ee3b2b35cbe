package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"herald/bench"
)

const benchUsage = `usage: herald bench SCENARIO --url ws://HOST:PORT[,ws://HOST:PORT...] --app-id ID --key KEY --secret SECRET --conns N [flags]

Scenarios:
  connect   open N sockets (at --rate per second, or as fast as possible):
            connects/s, failures by reason, time to connection_established
  idle      hold N sockets over --channels channels for --hold: server RSS per
            connection (--server-pid), kernel slab per socket, drops
  fanout    N subscribers over --channels channels, --messages events through
            REST or NATS (--publish; at --rate per second, or as fast as it
            takes them): deliveries/s, lost, publish → receive latency
  publish   the publish-bound scenario: fanout with --conns 10000 over
            --channels 1000 (10 subscribers each), --publishers 8 concurrent
            signed REST publishers sending --messages 20000 as fast as the
            answers come: events_per_s (answered 200) and deliveries_per_s
  storm     drop N sockets at once and reconnect them: time until all are back
  presence  --conns subscribers (default: one per --url) on a presence channel;
            --joins members join (and leave) on the first URL, one at a time:
            time until member_added (member_removed) reaches the subscribers
            on the other URLs; with --kill-pid, SIGKILL that node (it must
            hold one of the subscribers) and time member_removed at the
            survivors (one sample)
  failover  --conns subscribers over --channels channels (conn i on URL i %
            count); --messages events published over REST to the first URL
            (which must not be the victim) at --rate; --kill-after into it,
            SIGKILL --kill-pid; dropped clients reconnect to the next URL and
            resubscribe with herald_resume (their last serial): lost and
            duplicated events (vs. the publishes answered 200), publish
            failures, time from the kill until every client resumed, replay
            throughput. Results under results.failover

  herald bench summary FILE...   markdown table of earlier runs' JSON reports

Prints one JSON document on stdout, progress and a summary on stderr.
Sockets are spread over worker processes (at most 15,000 each) that bind
source addresses 127.0.0.2, 127.0.0.3, ... on loopback.
Several --url (comma-separated or repeated; a cluster's nodes): conn i goes
to URL i % count; REST goes to the first URL's host unless --rest-url says
otherwise. Several --server-pid likewise: server CPU and RSS are their sum.

Flags:
`

// benchCmd runs `herald bench`; the bench package does the work.
func benchCmd(args []string) error {
	if len(args) > 0 && args[0] == "worker" {
		if !bench.IsWorker() {
			return errors.New("bench worker: started by hand; the bench parent runs workers")
		}
		return bench.RunWorker(os.Stdin, os.Stdout, os.Stderr)
	}
	if len(args) > 0 && args[0] == "summary" {
		return bench.WriteSummary(os.Stdout, args[1:])
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fs := benchFlags(&bench.Config{})
		fs.SetOutput(os.Stderr)
		fs.Usage()
		return flag.ErrHelp
	}
	cfg := bench.Config{Scenario: args[0]}
	fs := benchFlags(&cfg)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if cfg.Scenario == bench.Presence && !flagSet(fs, "conns") {
		cfg.Conns = 0 // one subscriber per --url
	}
	if cfg.Scenario == bench.PublishBound { // flags left out take the scenario's defaults (bench.DefaultConfig)
		for name, v := range map[string]*int{"conns": &cfg.Conns, "messages": &cfg.Messages, "publishers": &cfg.Publishers} {
			if !flagSet(fs, name) {
				*v = 0
			}
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	cfg.Progress, cfg.Table = os.Stderr, os.Stderr
	cfg.Command = shellJoin(append([]string{"herald", "bench"}, args...))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(rep); e != nil && err == nil {
			err = e
		}
	}
	return err
}

func benchFlags(c *bench.Config) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	c.URL = "ws://127.0.0.1:6001"
	fs.Var(&urlList{dst: &c.URL}, "url", "server WebSocket `URL` (ws://host:port); several (a cluster's nodes) comma-separated or repeated: conn i goes to URL i % count")
	fs.StringVar(&c.RESTURL, "rest-url", "", "REST base `URL` (default: the first --url with http://); fanout, publish: several comma-separated, publisher i posts to URL i % count")
	fs.StringVar(&c.AppID, "app-id", "app-id", "app `id`")
	fs.StringVar(&c.Key, "key", "app-key", "app `key`")
	fs.StringVar(&c.Secret, "secret", "app-secret", "app `secret` (signs REST requests)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	fs.IntVar(&c.Conns, "conns", 1000, "number of sockets `N`")
	fs.IntVar(&c.Channels, "channels", -1, "channels `C`; conn i subscribes to bench-(i%C); 0: none (default: 0 for connect, 1 otherwise)")
	fs.IntVar(&c.Messages, "messages", 100, "fanout, failover: events `M` to publish")
	fs.Float64Var(&c.Rate, "rate", 0, "connect: dials per second; fanout: publishes per second (0: as fast as possible)")
	fs.DurationVar(&c.Hold, "hold", 30*time.Second, "idle: how long to hold the sockets")
	fs.IntVar(&c.Payload, "payload", 100, "fanout: event data size in `bytes`")
	fs.IntVar(&c.Publishers, "publishers", 4, "fanout: concurrent publishers (REST: keep-alive connections; NATS: connections, one publishing goroutine each)")
	fs.IntVar(&c.Batch, "batch", 1, "fanout: events per REST request or NATS message (>1 uses batch_events, max 10)")
	fs.StringVar(&c.Publish, "publish", bench.PublishREST, "fanout: how events are published: rest (signed REST), nats-request (NATS API request, waits for the answer) or nats-publish (fire-and-forget)")
	fs.StringVar(&c.NATSURL, "nats-url", bench.DefaultNATSURL, "fanout over NATS: Herald's NATS client port `URL`")
	fs.StringVar(&c.NATSUser, "nats-user", "", "fanout over NATS: NATS user (default: --app-id)")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "fanout over NATS: NATS password (default: --secret)")
	fs.IntVar(&c.NATSWindow, "nats-window", bench.DefaultNATSWindow, "nats-publish: events sent ahead of those seen stored on the live subjects (-1: no pacing)")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "fanout: how long to wait for deliveries after the last publish")
	fs.IntVar(&c.Workers, "workers", 0, "worker processes (default ceil(conns/15000), each at most 15000 sockets)")
	fs.IntVar(&c.Pollers, "pollers", 0, "epoll goroutines per worker (default: cores)")
	fs.IntVar(&c.Inflight, "inflight", 256, "connection attempts in flight over all workers (-1: unlimited)")
	fs.IntVar(&c.StormInflight, "storm-inflight", 0, "storm: attempts in flight per poller (0: all at once)")
	fs.IntVar(&c.Retries, "retries", 3, "storm: redials per socket after a failed attempt")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", 10*time.Second, "per attempt: TCP connect to subscribed")
	fs.StringVar(&c.SourceBase, "source-base", "127.0.0.2", "first loopback source address (\"none\": let the kernel choose)")
	fs.IntVar(&c.PerSource, "per-source", bench.MaxPerSource, "sockets per source address")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "hard limit for the whole run")
	fs.Var(&pidList{first: &c.ServerPID, rest: &c.ServerPIDs}, "server-pid", "server `PID` to measure (RSS, CPU from /proc); several comma-separated or repeated: their sum")
	fs.IntVar(&c.Joins, "joins", 20, "presence: members that join and leave, one at a time, each timed")
	fs.IntVar(&c.KillPID, "kill-pid", 0, "presence: after the joins, SIGKILL this node `PID` (it must hold a subscriber) and time member_removed; failover: the node to kill (not the first --url's)")
	fs.DurationVar(&c.KillAfter, "kill-after", 2*time.Second, "failover: SIGKILL --kill-pid this long into publishing")
	fs.DurationVar(&c.Converge, "converge-timeout", 30*time.Second, "presence: how long to wait for each change to reach every subscriber; failover: after publishing, for every client to resume and have every acknowledged event")
	fs.StringVar(&c.Plot, "plot", "", "write a PNG `file`: latency CDF and rate over time")
	return fs
}

// urlList is --url: comma-separated, or repeated; the first use replaces the
// default.
type urlList struct {
	dst *string
	set bool
}

func (u *urlList) String() string {
	if u.dst == nil {
		return ""
	}
	return *u.dst
}

func (u *urlList) Set(v string) error {
	if !u.set || *u.dst == "" {
		*u.dst, u.set = v, true
		return nil
	}
	*u.dst += "," + v
	return nil
}

// pidList is --server-pid: comma-separated or repeated PIDs; the first goes
// to first, the others to rest.
type pidList struct {
	first *int
	rest  *[]int
}

func (p *pidList) String() string {
	if p.first == nil || *p.first == 0 {
		return ""
	}
	out := []string{strconv.Itoa(*p.first)}
	for _, v := range *p.rest {
		out = append(out, strconv.Itoa(v))
	}
	return strings.Join(out, ",")
}

func (p *pidList) Set(v string) error {
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return fmt.Errorf("bad PID %q", f)
		}
		if *p.first == 0 {
			*p.first = pid
		} else {
			*p.rest = append(*p.rest, pid)
		}
	}
	return nil
}

// flagSet reports whether the command line set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// shellJoin joins args into a command line, quoting the ones that need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
