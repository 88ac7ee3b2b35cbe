package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// serverOptions builds the embedded server's options from cfg. It is the one
// place that decides how the server runs. External mode runs none
// (external.go).
//
// Single node: JetStream standalone, the node connects in-process. Without
// a client port there is no listener at all (DontListen) and no auth; with
// one (cfg.ClientListen) the server listens there and requires a user: the
// node's own, with full permissions, in the global account, or an app's,
// in the app's own account made while the server runs (accounts.go; never
// Options.Accounts, which hit nats-server#6890, docs/stack.md §5), fenced
// there (clientport.go). DontListen must not be
// combined with a cluster block: nats-server then never opens its route
// listener and Shutdown hangs (see docs/stack.md §5).
//
// Clustered (cfg.Cluster.Listen set): the same, plus the cluster block and
// routes, and always a client listener (applyCluster, cluster.go).
//
// Leaf mode: either of the above, plus leaf connections to the hub and a
// JetStream domain of its own (applyLeaf, leaf.go).
func serverOptions(cfg Config) *server.Options {
	opts := &server.Options{
		ServerName: cfg.ServerName,
		DontListen: true,
		NoSigs:     true,
		NoLog:      false,
		JetStream:  true,
		StoreDir:   cfg.storeDir(),
		SyncAlways: cfg.SyncAlways,
	}
	applyClientPort(opts, cfg)
	if cfg.Cluster.Enabled() {
		applyCluster(opts, cfg)
	}
	if cfg.Mode == ModeLeaf {
		applyLeaf(opts, cfg)
	}
	return opts
}

// startServer creates, starts and waits for the embedded server.
// On error nothing is left running.
func startServer(cfg Config) (*server.Server, error) {
	opts := serverOptions(cfg)
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: new server: %w", err)
	}
	debug := cfg.Logger.Enabled(context.Background(), slog.LevelDebug)
	s.SetLoggerV2(slogLogger{l: cfg.Logger, onError: cfg.serverError}, debug, false, false)
	if cfg.auth != nil && cfg.ClientListen != "" { // the apps' accounts, before any login (accounts.go)
		x, err := newAppAccounts(s)
		if err != nil {
			s.Shutdown()
			return nil, err
		}
		cfg.auth.accounts.Store(x)
	}
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("bus: server not ready for connections after %s", readyTimeout)
	}
	return s, nil
}

// slogLogger bridges server.Logger to log/slog. Fatalf is logged as an error
// and does not exit: the embedding process decides. onError, when set, also
// gets every error and warning: the disk watcher learns of a failed store
// write there (disk.go), which the server reports nowhere else.
type slogLogger struct {
	l       *slog.Logger
	onError func(msg string)
}

// levelTrace is below slog.LevelDebug; it is only logged when the handler
// enables it.
const levelTrace = slog.LevelDebug - 4

func (g slogLogger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return
	}
	g.l.Log(ctx, level, fmt.Sprintf(format, v...), "component", "nats")
}

// problem logs an error or warning and hands it to onError, formatted once.
func (g slogLogger) problem(level slog.Level, format string, v []any) {
	if g.onError == nil {
		g.log(level, format, v)
		return
	}
	msg := fmt.Sprintf(format, v...)
	g.onError(msg)
	g.l.Log(context.Background(), level, msg, "component", "nats")
}

// Noticef is debug: the embedded server's notices are its start-up banner and
// routine lifecycle lines, which would drown Herald's own log at info.
func (g slogLogger) Noticef(format string, v ...any) { g.log(slog.LevelDebug, format, v) }
func (g slogLogger) Warnf(format string, v ...any)   { g.problem(slog.LevelWarn, format, v) }
func (g slogLogger) Fatalf(format string, v ...any)  { g.problem(slog.LevelError, format, v) }
func (g slogLogger) Errorf(format string, v ...any) {
	if strings.Contains(format, "Unknown account") && strings.Contains(fmt.Sprintf(format, v...), `Unknown account "`+accountsPrefix) {
		// A route refusing an app account's interest: harmless by design
		// (accounts.go), so not an error.
		g.log(slog.LevelDebug, format, v)
		return
	}
	g.problem(slog.LevelError, format, v)
}
func (g slogLogger) Debugf(format string, v ...any) { g.log(slog.LevelDebug, format, v) }
func (g slogLogger) Tracef(format string, v ...any) { g.log(levelTrace, format, v) }
