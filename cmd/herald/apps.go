package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"herald/node"
)

// appsCmd is herald apps create|list|show|update|rotate|disable|enable|delete,
// against a running node's admin API (docs/apps.md). The node must run with
// apps_source: registry for the writes.
func appsCmd(args []string) error {
	return appsRun(args, os.Stdout)
}

const appsUsage = "apps: want a subcommand: create [--id ID] [--name NAME], list, show ID, update ID --set KEY=VALUE..., rotate ID [--overlap 24h], disable ID, enable ID, delete ID"

func appsRun(args []string, w io.Writer) error {
	if len(args) == 0 {
		return errors.New(appsUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("apps "+sub, flag.ContinueOnError)
	cl := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	var id, name, overlap string
	var sets setFlags
	wantID := true
	switch sub {
	case "create":
		fs.StringVar(&id, "id", "", "the new app's `id` (default: a random one)")
		fs.StringVar(&name, "name", "", "a `label` for people")
		fs.Var(&sets, "set", "set a config `key=value` of the app (repeatable; e.g. client_events=true)")
		wantID = false
	case "list":
		wantID = false
	case "update":
		fs.StringVar(&name, "name", "", "a new `label`")
		fs.Var(&sets, "set", "set a config `key=value` of the app (repeatable; e.g. max_connections=1000)")
	case "rotate":
		fs.StringVar(&overlap, "overlap", node.DefaultRotateOverlap.String(), "how long the old secret stays valid (`duration`; 0s: not at all)")
	case "show", "disable", "enable", "delete":
	default:
		return fmt.Errorf("apps: unknown subcommand %q; %s", sub, appsUsage)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case wantID && len(pos) != 1:
		return fmt.Errorf("apps %s: want one app id, got %d arguments", sub, len(pos))
	case !wantID && len(pos) > 0:
		return fmt.Errorf("apps %s: unexpected argument %q", sub, pos[0])
	}
	if wantID {
		id = pos[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := "/apps/" + url.PathEscape(id)
	var v node.AppView
	switch sub {
	case "list":
		var l node.AppList
		if err := cl.Get(ctx, "/apps", &l); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(w, l)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKEY\tENABLED\tNAME")
		for _, a := range l.Apps {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", a.ID, a.Key, a.Enabled, a.Name)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "%d apps (apps_source: %s)\n", len(l.Apps), l.Source)
		return nil
	case "create":
		body := map[string]any{}
		if id != "" {
			body["id"] = id
		}
		if name != "" {
			body["name"] = name
		}
		if len(sets) > 0 {
			body["app"] = sets.object()
		}
		err = cl.Post(ctx, "/apps", body, &v)
	case "update":
		body := map[string]any{}
		if name != "" {
			body["name"] = name
		}
		if len(sets) > 0 {
			body["app"] = sets.object()
		}
		if len(body) == 0 {
			return errors.New("apps update: nothing to change (--set KEY=VALUE or --name)")
		}
		err = cl.Do(ctx, "PATCH", path, body, &v)
	case "rotate":
		err = cl.Post(ctx, path+"/rotate", map[string]string{"overlap": overlap}, &v)
	case "disable", "enable":
		err = cl.Post(ctx, path+"/"+sub, nil, &v)
	case "show":
		err = cl.Get(ctx, path, &v)
	case "delete":
		var out map[string]string
		if err := cl.Do(ctx, "DELETE", path, nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(w, out)
		}
		fmt.Fprintf(w, "deleted %s\n", id)
		return nil
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(w, v)
	}
	printApp(w, &v, sub == "show")
	return nil
}

// printApp writes an app as "field: value" lines; the secret only when the
// answer has it (create, rotate), with a reminder that it is shown once.
func printApp(w io.Writer, v *node.AppView, keys bool) {
	fmt.Fprintf(w, "id:      %s\n", v.ID)
	fmt.Fprintf(w, "key:     %s\n", v.Key)
	if v.Secret != "" {
		fmt.Fprintf(w, "secret:  %s\n", v.Secret)
	}
	if v.Name != "" {
		fmt.Fprintf(w, "name:    %s\n", v.Name)
	}
	fmt.Fprintf(w, "enabled: %t\n", v.Enabled)
	if v.PreviousSecretsUntil != nil {
		fmt.Fprintf(w, "previous secret valid until: %s\n", v.PreviousSecretsUntil.Format(time.RFC3339))
	}
	if keys && len(v.App) > 0 {
		var m map[string]any
		if json.Unmarshal(v.App, &m) == nil {
			b, _ := json.MarshalIndent(m, "", "  ")
			fmt.Fprintf(w, "config:  %s\n", b)
		}
	}
	if v.Secret != "" {
		fmt.Fprintln(w, "(the secret is shown only now; keep it)")
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseInterleaved parses fs over args where flags and positional
// arguments may come in any order (herald apps rotate ID --admin URL).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// setFlags collects --set key=value; values are JSON when they parse as
// JSON (numbers, true/false, lists), else strings.
type setFlags []string

func (s *setFlags) String() string { return strings.Join(*s, ",") }

func (s *setFlags) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	*s = append(*s, v)
	return nil
}

// object is the keys as a JSON object; a dotted key (nats.user) is nested.
func (s setFlags) object() map[string]any {
	out := map[string]any{}
	for _, kv := range s {
		k, raw, _ := strings.Cut(kv, "=")
		var val any = raw
		var j any
		if json.Unmarshal([]byte(raw), &j) == nil {
			val = j
		}
		m := out
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = val
	}
	return out
}
