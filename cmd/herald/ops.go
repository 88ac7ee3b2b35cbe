package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"herald/configs"
	"herald/node"
)

// The operator's tools around a running node: its config source (for
// reload), SIGHUP, and the admin API's clients `herald status` and
// `herald reload` (docs/operations.md).

// configSource is how serve reads its config, at start and on every
// reload: the file, the HERALD_* environment as it was at start (a reload
// does not pick up a changed environment: a process cannot see its
// parent's), and the command-line flags, which win.
func configSource(f *serveFlags, fs *flag.FlagSet, env []string) func() (*configs.Config, []configs.Warning, error) {
	return func() (*configs.Config, []configs.Warning, error) {
		cfg, warnings, err := configs.Load(f.config, configs.LoadOptions{Env: env})
		if err != nil {
			return nil, warnings, err
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
			return nil, warnings, fmt.Errorf("config: %w", err)
		}
		return cfg, warnings, nil
	}
}

// reloadOnHUP reloads the node's config on every SIGHUP and logs what
// changed, until the returned stop is called.
func reloadOnHUP(n *node.Node, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-hup:
				ch, err := n.ReloadFromSource()
				if err != nil { // node logged it with the key
					log.Error("SIGHUP: config reload refused", "err", err)
					continue
				}
				log.Info("SIGHUP: config reloaded", "summary", summary(&ch))
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// statusCmd is `herald status`: the node's state, readable or --json.
func statusCmd(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	c := adminFlags(fs)
	raw := fs.Bool("json", false, "print the admin API's JSON as it is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if *raw {
		var m json.RawMessage
		if err := c.Get(ctx, "/status", &m); err != nil {
			return err
		}
		_, err := os.Stdout.Write(append(m, '\n'))
		return err
	}
	var s node.Status
	if err := c.Get(ctx, "/status", &s); err != nil {
		return err
	}
	printStatus(os.Stdout, &s)
	return nil
}

func printStatus(out io.Writer, s *node.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	state := "ready"
	switch {
	case s.Draining:
		state = "draining"
	case !s.Ready:
		state = "not ready"
	}
	version := s.Version
	if version == "" {
		version = "unknown"
	}
	fmt.Fprintf(w, "node\t%s (herald %s), %s, up %s\n", s.Node, version, state, (time.Duration(s.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(w, "listen\t%s\n", s.Listen)
	fmt.Fprintf(w, "admin\t%s\n", s.Admin)
	if s.NATS != "" {
		fmt.Fprintf(w, "nats\t%s\n", s.NATS)
	}
	file := s.Config.File
	if file == "" {
		file = "(no file)"
	}
	fmt.Fprintf(w, "config\t%s, loaded %s, %d reload(s)\n", file, s.Config.LoadedAt.Format(time.RFC3339), s.Config.Reloads)
	if s.Config.LastReloadError != "" {
		fmt.Fprintf(w, "\tlast reload refused %s: %s\n", s.Config.LastReloadErrorAt.Format(time.RFC3339), s.Config.LastReloadError)
	}
	fmt.Fprintf(w, "connections\t%d\n", s.Connections)
	if st := s.Store; st != nil {
		line := fmt.Sprintf("%s free of %s", mib(st.FreeBytes), mib(st.TotalBytes))
		if st.Full {
			line = fmt.Sprintf("FULL (%s) since %s, publishes refused with 507; %s", st.Reason, st.Since.Format(time.RFC3339), line)
		}
		fmt.Fprintf(w, "store\t%s; %d publish(es) refused, %d recovery(ies)\n", line, st.Refusals, st.Recoveries)
	}
	w.Flush()

	src := s.AppsSource
	if src == "" {
		src = "config" // a node from before apps_source
	}
	fmt.Fprintf(out, "\napps (%d, from the %s)\n", len(s.Apps), src)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  ID\tKEY\tENABLED\tCONNECTIONS")
	for _, a := range s.Apps {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%d\n", a.ID, a.Key, yesNo(a.Enabled), a.Connections)
	}
	w.Flush()

	if s.Cluster != nil {
		fmt.Fprintf(out, "\ncluster %s: %d member(s)\n", s.Cluster.Name, len(s.Cluster.Members))
		fmt.Fprintf(out, "  gossip encrypted: %s (%d refused), routes authenticated: %s (%d refused)\n",
			yesNo(s.Cluster.GossipEncrypted), s.Cluster.GossipRefused, yesNo(s.Cluster.RouteAuth), s.Cluster.RoutesRefused)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "  NAME\tADDRESS\tSTATE\tCLIENT PORT\tROUTE")
		for _, m := range s.Cluster.Members {
			name := m.Name
			if m.Self {
				name += " (this node)"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", name, m.Address, m.State, m.HTTP, m.Route)
		}
		w.Flush()
	}

	if r := s.Regions; r != nil {
		fmt.Fprintf(out, "\nregion %s (home region %s)\n", r.Region, r.Home)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "  GATEWAY\tCONNECTED\tRTT\tINBOUND")
		for _, g := range r.Gateways {
			rtt := g.RTT
			if rtt == "" {
				rtt = "-"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\n", g.Name, yesNo(g.Connected), rtt, g.Inbound)
		}
		w.Flush()
	}

	if len(s.Streams) > 0 {
		fmt.Fprintln(out, "\nstreams")
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "  APP\tMESSAGES\tBYTES\tLEADER\tREPLICAS (CURRENT/LAGGING)")
		for _, h := range s.Streams {
			if h.Error != "" {
				fmt.Fprintf(w, "  %s\t-\t-\t-\t%s\n", h.App, h.Error)
				continue
			}
			leader := h.Leader
			if leader == "" {
				leader = "-"
			}
			fmt.Fprintf(w, "  %s\t%d\t%d\t%s\t%d (%d/%d)\n", h.App, h.Messages, h.Bytes, leader, h.Replicas, h.Current, h.Lagging)
		}
		w.Flush()
	}
}

// mib writes a byte count in MiB, with one decimal.
func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// reloadCmd is `herald reload`: the node re-reads its config file and
// says what changed; a refused config is an error (exit 1).
func reloadCmd(args []string) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	c := adminFlags(fs)
	raw := fs.Bool("json", false, "print the admin API's JSON as it is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ch node.Changes
	if err := c.Post(ctx, "/reload", nil, &ch); err != nil {
		return err
	}
	if *raw {
		b, _ := json.MarshalIndent(ch, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	fmt.Println(describe(&ch))
	return nil
}

// describe is Changes for a person, one line per kind of change.
func describe(ch *node.Changes) string {
	var b strings.Builder
	line := func(what string, ids []string) {
		if len(ids) > 0 {
			fmt.Fprintf(&b, "%s: %s\n", what, strings.Join(ids, ", "))
		}
	}
	line("apps added", ch.AppsAdded)
	line("apps removed", ch.AppsRemoved)
	line("apps changed", ch.AppsChanged)
	line("apps disabled", ch.AppsDisabled)
	line("apps enabled", ch.AppsEnabled)
	if ch.LogLevel != "" {
		fmt.Fprintf(&b, "log level: %s\n", ch.LogLevel)
	}
	if ch.TLSCertNotAfter != "" {
		fmt.Fprintf(&b, "tls certificate: new one served (not after %s)\n", ch.TLSCertNotAfter)
	}
	if ch.ClosedSockets > 0 {
		fmt.Fprintf(&b, "sockets closed: %d\n", ch.ClosedSockets)
	}
	if ch.ClosedNATSClients > 0 {
		fmt.Fprintf(&b, "NATS clients closed: %d\n", ch.ClosedNATSClients)
	}
	line("needs a restart (not applied)", ch.NeedsRestart)
	for _, w := range ch.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if ch.None() {
		b.WriteString("config reloaded: nothing changed\n")
	} else {
		b.WriteString("config reloaded\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// summary is describe on one line, for a log.
func summary(ch *node.Changes) string {
	return strings.ReplaceAll(describe(ch), "\n", "; ")
}
