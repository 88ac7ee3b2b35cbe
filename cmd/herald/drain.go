package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"herald/admin"
	"herald/node"
)

// drainAndExit runs the node's drain after a signal (docs/drain.md) with
// shutdown.deadline as its hard stop. The deadline is kept even if a part
// hangs: past it the process exits with status 1; so does a second signal.
func drainAndExit(n *node.Node, window time.Duration, sig <-chan os.Signal, log *slog.Logger) error {
	deadline := n.StopTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	hard := time.AfterFunc(deadline, func() {
		log.Error("drain: shutdown.deadline passed; exiting", "deadline", deadline)
		os.Exit(1)
	})
	defer hard.Stop()
	go func() {
		if s, ok := <-sig; ok {
			log.Error("drain: second signal; exiting now", "signal", s.String())
			os.Exit(1)
		}
	}()
	return n.Drain(ctx, window)
}

// drainCmd is `herald drain`: POST /drain on a node's admin API, and with
// --wait, follow the drain until the node has exited.
func drainCmd(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	c := adminFlags(fs)
	wait := fs.Bool("wait", false, "wait until the node has drained and exited")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: herald drain [--admin URL] [--token T] [--wait]")
		fmt.Fprintln(fs.Output(), "Drains a node (docs/drain.md): /readyz 503, its sockets told to reconnect elsewhere (4200)")
		fmt.Fprintln(fs.Output(), "over shutdown.drain_window, then it exits. The same as SIGTERM.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("drain: unexpected argument %q", fs.Arg(0))
	}
	ctx := context.Background()
	var st node.DrainStatus
	if err := c.Post(ctx, "/drain", nil, &st); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	fmt.Printf("draining: %d connections, window %s, deadline %s\n", st.Connections, st.Window, st.Deadline)
	if !*wait {
		return nil
	}
	return followDrain(ctx, c, st)
}

// followDrain polls GET /drain until the admin API stops answering (the
// node has exited) or says stopped, printing progress when it changes.
// It gives up a little after the drain's deadline.
func followDrain(ctx context.Context, c *admin.Client, st node.DrainStatus) error {
	deadline, err := time.ParseDuration(st.Deadline)
	if err != nil {
		deadline = time.Minute
	}
	give := time.Now().Add(deadline + 10*time.Second)
	last := st
	for time.Now().Before(give) {
		time.Sleep(200 * time.Millisecond)
		var cur node.DrainStatus
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Get(rctx, "/drain", &cur)
		cancel()
		if err != nil {
			var ae *admin.Error
			if errors.As(err, &ae) {
				return fmt.Errorf("drain: %w", err)
			}
			// Connection refused: the admin listener is gone with the node.
			fmt.Printf("stopped after %s\n", time.Duration(last.ElapsedMs)*time.Millisecond)
			return nil
		}
		if cur.Phase != last.Phase || cur.Connections != last.Connections {
			fmt.Printf("%s: %d connections (%.1fs)\n", cur.Phase, cur.Connections, float64(cur.ElapsedMs)/1000)
		}
		last = cur
		if cur.Phase == "stopped" {
			return nil
		}
	}
	return fmt.Errorf("drain: node still answering %s after its deadline (%s)", c.URL, st.Deadline)
}
