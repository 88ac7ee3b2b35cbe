package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"herald/console"
	"herald/debugtap"
)

// tapCmd is `herald tap`: a node's debug event stream in a terminal, one
// line per event, until SIGINT/SIGTERM (docs/console.md).
func tapCmd(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runTap(ctx, args, os.Stdout, os.Stderr)
}

func runTap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	appID := fs.String("app", "", "app `id` whose events to print (required)")
	channel := fs.String("channel", "", "only channels starting with this `prefix` (the nodes produce nothing else)")
	asJSON := fs.Bool("json", false, "one JSON object per line (time, node, kind, app, channel, socket_id, ...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("tap: unexpected argument %q", fs.Arg(0))
	}
	if *appID == "" {
		return errors.New("tap: --app is required")
	}
	sampling := map[string]int{}
	onStatus := func(st console.StreamStatus) {
		for _, n := range st.Nodes {
			if n.SampleEvery != sampling[n.Node] && (n.SampleEvery > 1 || sampling[n.Node] > 1) {
				fmt.Fprintf(stderr, "tap: node %s keeps 1 event in %d (over %d/s)\n", n.Node, n.SampleEvery, debugtap.DefaultMaxRate)
			}
			sampling[n.Node] = n.SampleEvery
		}
		if st.Dropped > 0 {
			fmt.Fprintf(stderr, "tap: %d events dropped on the way (this terminal reads too slowly)\n", st.Dropped)
		}
	}
	onEvent := func(e debugtap.Event, raw []byte) {
		if *asJSON {
			fmt.Fprintf(stdout, "%s\n", raw)
			return
		}
		fmt.Fprintln(stdout, e.Line())
	}
	return console.Stream(ctx, c, *appID, *channel, onEvent, onStatus)
}
