// Command herald runs a Herald node and its tools. It only wires flags to
// packages.
//
//	herald [serve] [--config FILE] [--listen HOST:PORT] [--data DIR]
//	herald check-config [--strict] --config FILE
//	herald probe --url ws://HOST:PORT --app-id ID --key KEY --secret SECRET [--api URL] [--json]
//	herald status [--admin URL] [--token T] [--json]
//	herald reload [--admin URL] [--token T]
//	herald webhooks status [--json] | replay --app ID --since DURATION
//	herald drain [--admin URL] [--token T] [--wait]
//	herald tap --admin URL --app ID [--channel PREFIX] [--json]
//	herald keygen
//	herald apps create|list|show|update|rotate|disable|enable|delete [--admin URL] [ID]
//	herald version
package main

import (
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
	case "status":
		err = statusCmd(args) // ops.go
	case "reload":
		err = reloadCmd(args)
	case "webhooks":
		err = webhooksCmd(args)
	case "drain":
		err = drainCmd(args)
	case "tap":
		err = tapCmd(args)
	case "keygen":
		err = keygenCmd(args, os.Stdout) // keygen.go
	case "apps":
		err = appsCmd(args) // apps.go
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
  herald status [--admin URL] [--token T] [--json]                    a running node's state (admin API)
  herald reload [--admin URL] [--token T]                             make a running node re-read its config (or SIGHUP)
  herald webhooks status [--json] [--admin URL] [--token T]           webhook backlog, receivers, dead letters
  herald webhooks replay --app ID --since DURATION [--admin URL]      send dead-lettered webhooks again
  herald drain [--admin URL] [--token T] [--wait]                     drain a node: sockets move elsewhere, then it exits
  herald tap --admin URL --app ID [--channel PREFIX] [--json]         print a node's live debug events (docs/console.md)
  herald keygen                                                       print a fresh cluster.secret_key (or route_auth)
  herald apps create [--id ID] [--name NAME] [--set KEY=VALUE]       create an app in the registry; prints its id, key and secret (docs/apps.md)
  herald apps list | show ID | update ID --set KEY=VALUE              list, show or change registry apps
  herald apps rotate ID [--overlap 24h] | disable ID | enable ID | delete ID
                                                                      (every apps subcommand takes --admin URL --token T --json)
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
	load := configSource(f, fs, os.Environ()) // ops.go: read again on reload
	cfg, warnings, err := load()
	if err != nil {
		return err
	}
	log, level := newLogger(cfg.Log)
	for _, w := range warnings {
		log.Warn("config: " + w.String())
	}
	n, err := node.StartWith(cfg, log, node.Source{Path: f.config, Load: load, Level: level, Version: version})
	if err != nil {
		return err
	}
	defer reloadOnHUP(n, log)()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	window := cfg.Shutdown.DrainWindow.D()
	select {
	case s := <-sig:
		log.Info("draining", "signal", s.String(), "window", window, "deadline", n.StopTimeout())
	case <-n.Done(): // POST /drain on the admin API (herald drain)
		return nil
	case err := <-n.Err():
		if err == nil { // shut down by a drain (POST /drain): let it finish
			<-n.Done()
			return nil
		}
		log.Error("http server stopped", "err", err)
		window = 0
	}
	return drainAndExit(n, window, sig, log)
}

// newLogger is the process logger; its level is a LevelVar so that a
// reload can change it.
func newLogger(c configs.Log) (*slog.Logger, *slog.LevelVar) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), lv
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), lv
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
