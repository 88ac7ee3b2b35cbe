package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"herald/probe"
)

// errProbeFailed is returned after a failed run was printed; main exits 1.
var errProbeFailed = errors.New("probe failed")

// probeCmd is `herald probe`: one end-to-end run (exit 0 when every step
// passed, 1 with a one-line reason otherwise), or with --every a monitor
// that runs forever and serves its own metrics.
func probeCmd(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runProbe(ctx, args, os.Stdout, os.Stderr)
}

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg probe.Config
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "", "the deployment's WebSocket `URL`, ws://HOST:PORT or wss://HOST:PORT (through its load balancer)")
	fs.StringVar(&cfg.API, "api", "", "the REST API's `URL` (default: --url as http(s))")
	fs.StringVar(&cfg.AppID, "app-id", "", "app `id`")
	fs.StringVar(&cfg.Key, "key", "", "app `key`")
	fs.StringVar(&cfg.Secret, "secret", os.Getenv("HERALD_PROBE_SECRET"), "app `secret`, to sign the private channel and the REST call (default $HERALD_PROBE_SECRET)")
	fs.DurationVar(&cfg.Timeout, "timeout", probe.DefaultTimeout, "bound on one whole run")
	asJSON := fs.Bool("json", false, "print one JSON document per run instead of a table")
	every := fs.Duration("every", 0, "run again at this `interval` until SIGINT/SIGTERM (monitoring mode); 0: once")
	listen := fs.String("metrics-listen", "", "with --every: serve Prometheus metrics on `HOST:PORT` at /metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("probe: unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *every == 0 {
		if *listen != "" {
			return errors.New("probe: --metrics-listen needs --every")
		}
		res := probe.Run(ctx, cfg)
		printResult(stdout, res, *asJSON)
		if !res.OK {
			fmt.Fprintln(stderr, "herald: probe failed:", res.Error)
			return errProbeFailed
		}
		return nil
	}
	if *every < time.Second {
		return errors.New("probe: --every must be at least 1s")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	m := probe.NewMetrics(reg)
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("probe: metrics listen %s: %w", *listen, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				slog.Error("probe metrics server", "err", err)
			}
		}()
		defer srv.Close()
		slog.Info("probe metrics", "url", "http://"+ln.Addr().String()+"/metrics", "every", every.String())
	}
	probe.Monitor(ctx, cfg, *every, func(res probe.Result) {
		m.Observe(res)
		if *asJSON {
			printResult(stdout, res, true)
		} else {
			printSummary(stdout, res)
		}
	})
	return nil
}

// printResult prints one run: a JSON document, or a table of the steps.
func printResult(w io.Writer, res probe.Result, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(w, string(b))
		return
	}
	for _, s := range res.Steps {
		status := "ok"
		if !s.OK {
			status = "FAIL"
		}
		line := fmt.Sprintf("%-18s %-4s %9.1f ms", s.Name, status, s.MS)
		if s.Error != "" {
			line += "  " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	if s := res.Skew; s != nil {
		fmt.Fprintf(w, "%-18s %+.1f s (server minus local, from the REST answer's Date header, ±%.1f s; signatures allow ±%d s)\n",
			"clock_skew", float64(s.MS)/1000, float64(s.ResolutionMS)/1000, s.LimitMS/1000)
	}
	if res.OK {
		fmt.Fprintln(w, "probe ok")
	}
}

// printSummary is one line per run in monitoring mode.
func printSummary(w io.Writer, res probe.Result) {
	line := res.Started.UTC().Format(time.RFC3339) + " "
	if res.OK {
		line += "ok"
	} else {
		line += "FAIL " + res.Error
	}
	for _, s := range res.Steps {
		if s.OK {
			line += fmt.Sprintf(" %s=%.1fms", s.Name, s.MS)
		}
	}
	fmt.Fprintln(w, line)
}
