package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadString loads content as a config file and returns Load's error text
// ("" when it loads).
func loadString(t *testing.T, content string) (*Config, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(path, LoadOptions{Strict: true})
	if err != nil {
		return nil, err.Error()
	}
	return c, ""
}

func TestOperationsKeys(t *testing.T) {
	c, msg := loadString(t, `
gateway: {accept_rate: 2000}
admin: {listen: "0.0.0.0:6060", token: s3cret}
shutdown: {drain_window: 5s, deadline: 20s}
webhooks: {grace: 1s, retry_for: 1h, timeout: 2s, batch_size: 10, workers: 2, dead_letter_max_age: 48h}
apps:
  - id: a1
    key: k1
    secret: new
    previous_secrets: [old]
    webhooks:
      - url: http://127.0.0.1:9000/hook
        event_types: [channel_occupied, member_added]
        filter: {channel_name_starts_with: presence-}
        headers: {Authorization: "Bearer x", X-Env: prod}
`)
	if msg != "" {
		t.Fatal(msg)
	}
	if c.Gateway.AcceptRate != 2000 || c.Admin.Token != "s3cret" || c.Shutdown.DrainWindow.D().Seconds() != 5 ||
		c.Webhooks.BatchSize != 10 || c.Webhooks.Grace.D().Seconds() != 1 {
		t.Fatalf("decoded %+v %+v %+v %+v", c.Gateway, c.Admin, c.Shutdown, c.Webhooks)
	}
	a := c.Apps[0]
	if got := a.Secrets(); len(got) != 2 || got[0] != "new" || got[1] != "old" {
		t.Fatalf("secrets %v", got)
	}
	w := a.Webhooks[0]
	if w.Headers["X-Env"] != "prod" || w.Filter.ChannelNameStartsWith != "presence-" {
		t.Fatalf("webhook %+v", w)
	}
	if !a.WantsWebhook("member_added", "presence-room") || a.WantsWebhook("member_added", "private-room") || a.WantsWebhook("channel_vacated", "presence-room") {
		t.Fatal("WantsWebhook ignores the filter or the event types")
	}
}

func TestOperationsValidation(t *testing.T) {
	app := "apps: [{id: a1, key: k1, secret: s, %s}]"
	cases := []struct{ content, want string }{
		{"admin: {listen: '0.0.0.0:6060'}", `admin.token: is required when admin.listen ("0.0.0.0:6060") is not a loopback address`},
		{"admin: {listen: ':6060'}", "admin.token: is required"},
		{"admin: {listen: nohost}", `admin.listen: "nohost" must be host:port`},
		{"shutdown: {drain_window: 40s, deadline: 30s}", "shutdown.deadline: 30s must be at least shutdown.drain_window (40s)"},
		{"shutdown: {drain_window: 11m, deadline: 1h}", "shutdown.drain_window: must be from 0s to 10m, got 11m"},
		{"gateway: {accept_rate: -1}", "gateway.accept_rate: "},
		{"webhooks: {batch_size: 0}", "webhooks.batch_size: "},
		{"webhooks: {timeout: 10ms}", "webhooks.timeout: "},
		{strings.Replace(app, "%s", "webhooks: [{event_types: [channel_occupied]}]", 1), "apps[0].webhooks[0].url: must not be empty"},
		{strings.Replace(app, "%s", "webhooks: [{url: 'ftp://x/y', event_types: [channel_occupied]}]", 1), `apps[0].webhooks[0].url: "ftp://x/y" must be an absolute http:// or https:// URL`},
		{strings.Replace(app, "%s", "webhooks: [{url: 'http://x/y'}]", 1), "apps[0].webhooks[0].event_types: must list at least one of channel_occupied"},
		{strings.Replace(app, "%s", "webhooks: [{url: 'http://x/y', event_types: [channel_occupied, presence]}]", 1), `apps[0].webhooks[0].event_types[1]: "presence" is not one of`},
		{strings.Replace(app, "%s", "webhooks: [{url: 'http://x/y', event_types: [cache_miss], headers: {x-pusher-signature: f}}]", 1), "apps[0].webhooks[0].headers.x-pusher-signature: is set by Herald"},
		{strings.Replace(app, "%s", "webhooks: [{url: 'http://x/y', event_types: [cache_miss], headers: {X-A: {b: c}}}]", 1), "apps[0].webhooks[0].headers.X-A: must map a name to a string"},
		{strings.Replace(app, "%s", "previous_secrets: ['']", 1), "apps[0].previous_secrets[0]: must not be empty"},
	}
	for _, tc := range cases {
		_, msg := loadString(t, tc.content)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.content, msg, tc.want)
		}
	}
	if _, msg := loadString(t, "admin: {listen: '127.0.0.5:6060'}\n"); msg != "" {
		t.Errorf("a loopback admin listener needs no token: %s", msg)
	}
}
