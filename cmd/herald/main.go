// Command herald runs a Herald node and its tools. It only wires flags to
// packages.
//
//	herald [serve] [--config FILE] [--listen HOST:PORT] [--data DIR]
//	herald check-config [--strict] --config FILE
//	herald probe --url ws://HOST:PORT --app-id ID --key KEY --secret SECRET [--api URL] [--json]
//	herald tap --admin URL --app ID [--channel PREFIX] [--json]
//	herald version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"herald/configs"
	"herald/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "check-config":
		err = checkConfig(args)
	case "bench":
		err = benchCmd(args)
	case "probe":
		err = probeCmd(args)
	case "tap":
		err = tapCmd(args)
	case "version":
		fmt.Println("herald", version)
	case "help":
		usage(os.Stdout)
	default:
		usage(os.Stderr)
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if errors.Is(err, errProbeFailed) { // its one-line reason is printed
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  herald [serve] [--config FILE] [--listen HOST:PORT] [--data DIR]   run a node
  herald check-config [--strict] --config FILE                        validate a config file
  herald bench SCENARIO [flags]                                       run a load scenario (herald bench -h)
  herald probe --url ws://HOST:PORT --app-id ID --key KEY --secret SECRET [--api URL] [--json] [--every 30s --metrics-listen HOST:PORT]
                                                                      end-to-end check of a deployment (docs/deploy.md)
  herald tap --admin URL --app ID [--channel PREFIX] [--json]         print a node's live debug events (docs/console.md)
  herald version                                                      print the version
`)
}

// serveFlags are the serve flags; set ones override the config file.
type serveFlags struct {
	config, listen, data string
}

func parseServe(args []string) (*serveFlags, *flag.FlagSet, error) {
	f := &serveFlags{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.config, "config", "", "YAML config `file` (default: none, built-in defaults and the dev app)")
	fs.StringVar(&f.listen, "listen", "", "client `host:port` for WebSocket and REST (default 127.0.0.1:6001)")
	fs.StringVar(&f.data, "data", "", "data `dir` (default ./data)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, fs, nil
}

func serve(args []string) error {
	f, fs, err := parseServe(args)
	if err != nil {
		return err
	}
	cfg, warnings, err := configs.Load(f.config, configs.LoadOptions{Env: os.Environ()})
	if err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "listen":
			cfg.Listen = f.listen
		case "data":
			cfg.DataDir = f.data
		}
	})
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := newLogger(cfg.Log)
	for _, w := range warnings {
		log.Warn("config: " + w.String())
	}
	n, err := node.Start(cfg, log)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-n.Err():
		log.Error("http server stopped", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), node.StopTimeout)
	defer cancel()
	return n.Stop(ctx)
}

func newLogger(c configs.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func checkConfig(args []string) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config `file` to check")
	strict := fs.Bool("strict", false, "treat unknown keys and HERALD_* variables as errors")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	_, warnings, err := configs.Load(*path, configs.LoadOptions{Env: os.Environ(), Strict: *strict})
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w.String())
	}
	if err != nil {
		return err
	}
	fmt.Println("config ok")
	return nil
}
