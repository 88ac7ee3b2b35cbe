// Command nats-publisher publishes one event to Herald over NATS with plain
// nats.go: no HTTP, no request signature. It sends the body of Pusher's
// POST /apps/{id}/events to herald.<app>.api.events as a NATS request and
// prints Herald's answer, which is exactly what the REST API would answer:
// {} once the event is stored, or {"error":"...","status":N}.
//
//	go run ./examples/nats-publisher -channel orders.42 -event shipped -data '{"id":42}'
//	go run ./examples/nats-publisher -fire ...   # fire-and-forget: no answer
//
// It uses only nats.go, so it can be copied into any Go service. See
// docs/nats.md for the subjects, credentials and permissions.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// options are the command-line flags.
type options struct {
	server, user, password, app string
	channels, event, data       string
	info                        string
	fire                        bool
	timeout                     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", "nats://127.0.0.1:4222", "Herald's NATS client port (bus.client_listen)")
	flag.StringVar(&o.app, "app", "app-id", "app id")
	flag.StringVar(&o.user, "user", "app-id", "NATS user (default for an app: its id)")
	flag.StringVar(&o.password, "password", "app-secret", "NATS password (default for an app: its secret)")
	flag.StringVar(&o.channels, "channel", "my-channel", "channel, or several separated by commas")
	flag.StringVar(&o.event, "event", "my-event", "event name")
	flag.StringVar(&o.data, "data", `{"message":"hello from NATS"}`, "event data (a string; JSON is passed through as text)")
	flag.StringVar(&o.info, "info", "", `attributes to return, e.g. "subscription_count"`)
	flag.BoolVar(&o.fire, "fire", false, "fire-and-forget: publish without waiting for an answer")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "nats-publisher:", err)
		os.Exit(1)
	}
}

// event is the body of POST /apps/{id}/events.
type event struct {
	Name     string   `json:"name"`
	Channels []string `json:"channels"`
	Data     string   `json:"data"`
	Info     string   `json:"info,omitempty"`
}

// run publishes one event and writes the answer (a request) or nothing
// (fire-and-forget) to out.
func run(o options, out io.Writer) error {
	// Default options: each app's users have a NATS account of their own
	// on Herald's server, so the default _INBOX. replies are private
	// (docs/nats.md "Accounts").
	nc, err := nats.Connect(o.server,
		nats.UserInfo(o.user, o.password),
		nats.Name("nats-publisher"),
	)
	if err != nil {
		return fmt.Errorf("connect %s: %w", o.server, err)
	}
	defer nc.Close()

	body, err := json.Marshal(event{Name: o.event, Channels: strings.Split(o.channels, ","), Data: o.data, Info: o.info})
	if err != nil {
		return err
	}
	subject := "herald." + o.app + ".api.events"
	if o.fire {
		if err := nc.Publish(subject, body); err != nil {
			return err
		}
		return nc.Flush() // the message has left the process once Flush returns
	}
	msg, err := nc.Request(subject, body, o.timeout)
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	_, err = fmt.Fprintf(out, "%s\n", msg.Data)
	return err
}
