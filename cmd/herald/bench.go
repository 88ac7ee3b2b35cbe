package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"herald/bench"
)

const benchUsage = `usage: herald bench SCENARIO --url ws://HOST:PORT --app-id ID --key KEY --secret SECRET --conns N [flags]

Scenarios:
  connect   open N sockets (at --rate per second, or as fast as possible):
            connects/s, failures by reason, time to connection_established
  idle      hold N sockets over --channels channels for --hold: server RSS per
            connection (--server-pid), kernel slab per socket, drops
  fanout    N subscribers over --channels channels, --messages events through
            REST (at --rate per second, or as fast as it takes them):
            deliveries/s, lost, publish → receive latency
  storm     drop N sockets at once and reconnect them: time until all are back
  failover  not available yet (needs clustering)

  herald bench summary FILE...   markdown table of earlier runs' JSON reports

Prints one JSON document on stdout, progress and a summary on stderr.
Sockets are spread over worker processes (at most 15,000 each) that bind
source addresses 127.0.0.2, 127.0.0.3, ... on loopback.

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
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:6001", "server WebSocket `URL` (ws://host:port)")
	fs.StringVar(&c.RESTURL, "rest-url", "", "REST base `URL` (default: --url with http://)")
	fs.StringVar(&c.AppID, "app-id", "app-id", "app `id`")
	fs.StringVar(&c.Key, "key", "app-key", "app `key`")
	fs.StringVar(&c.Secret, "secret", "app-secret", "app `secret` (signs REST requests)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	fs.IntVar(&c.Conns, "conns", 1000, "number of sockets `N`")
	fs.IntVar(&c.Channels, "channels", -1, "channels `C`; conn i subscribes to bench-(i%C); 0: none (default: 0 for connect, 1 otherwise)")
	fs.IntVar(&c.Messages, "messages", 100, "fanout: events `M` to publish")
	fs.Float64Var(&c.Rate, "rate", 0, "connect: dials per second; fanout: publishes per second (0: as fast as possible)")
	fs.DurationVar(&c.Hold, "hold", 30*time.Second, "idle: how long to hold the sockets")
	fs.IntVar(&c.Payload, "payload", 100, "fanout: event data size in `bytes`")
	fs.IntVar(&c.Publishers, "publishers", 4, "fanout: concurrent REST requests (keep-alive connections)")
	fs.IntVar(&c.Batch, "batch", 1, "fanout: events per REST request (>1 uses batch_events, max 10)")
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
	fs.IntVar(&c.ServerPID, "server-pid", 0, "server `PID` to measure (RSS, CPU from /proc)")
	fs.StringVar(&c.Plot, "plot", "", "write a PNG `file`: latency CDF and rate over time")
	return fs
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
