package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"herald/webhook"
)

// webhooksCmd is herald webhooks status|replay, against a running node's
// admin API (docs/webhooks.md).
func webhooksCmd(args []string) error {
	if len(args) == 0 {
		return errors.New("webhooks: want a subcommand: status [--json] or replay --app ID --since DURATION")
	}
	switch args[0] {
	case "status":
		return webhooksStatus(args[1:], os.Stdout)
	case "replay":
		return webhooksReplay(args[1:], os.Stdout)
	}
	return fmt.Errorf("webhooks: unknown subcommand %q (status or replay)", args[0])
}

func webhooksStatus(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("webhooks status", flag.ContinueOnError)
	cl := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st webhook.Status
	if err := cl.Get(ctx, "/webhooks/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printWebhookStatus(w, &st)
	return nil
}

// printWebhookStatus writes the status as a table.
func printWebhookStatus(w io.Writer, st *webhook.Status) {
	fmt.Fprintf(w, "backlog: %d events, oldest pending %s\n\n", st.Backlog, st.OldestPendingAge)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tURL\tPENDING\tSENT\tFAILURES\tLAST SUCCESS\tLAST ERROR")
	for _, u := range st.Webhooks {
		last := "-"
		if u.LastSuccess != nil {
			last = u.LastSuccess.Local().Format(time.DateTime)
		}
		lerr := "-"
		if u.LastError != "" {
			lerr = u.LastError
			if u.LastErrorAt != nil {
				lerr = u.LastErrorAt.Local().Format(time.DateTime) + " " + lerr
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", u.App, u.URL, u.Pending, u.Sent, u.Failures, last, lerr)
	}
	_ = tw.Flush()
	if len(st.Webhooks) == 0 {
		fmt.Fprintln(w, "(no webhooks configured)")
	}
	apps := make([]string, 0, len(st.DeadLetters))
	for a := range st.DeadLetters {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	fmt.Fprintln(w)
	if len(apps) == 0 {
		fmt.Fprintln(w, "dead letters: none")
		return
	}
	fmt.Fprintln(w, "dead letters (herald webhooks replay --app ID --since DURATION):")
	for _, a := range apps {
		fmt.Fprintf(w, "  %s: %d\n", a, st.DeadLetters[a])
	}
}

func webhooksReplay(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("webhooks replay", flag.ContinueOnError)
	cl := adminFlags(fs)
	appID := fs.String("app", "", "app `id` whose dead letters to send again (required)")
	since := fs.String("since", "", "replay the events dead-lettered in the last `duration`, e.g. 2h (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *appID == "" || *since == "" {
		return errors.New("webhooks replay: --app and --since are required")
	}
	if d, err := time.ParseDuration(*since); err != nil || d <= 0 {
		return fmt.Errorf("webhooks replay: --since %q is not a positive duration (e.g. 30m, 6h)", *since)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res webhook.ReplayResult
	if err := cl.Post(ctx, "/webhooks/replay", webhook.ReplayRequest{App: *appID, Since: *since}, &res); err != nil {
		return err
	}
	fmt.Fprintf(w, "replayed %d dead-lettered events of app %s from the last %s", res.Replayed, res.App, res.Since)
	if res.Skipped > 0 {
		fmt.Fprintf(w, " (%d kept: their webhook is no longer configured)", res.Skipped)
	}
	fmt.Fprintln(w)
	return nil
}
