package bench

import (
	"context"
	"strings"
	"testing"

	"herald/internal/testkit"
)

// startServerWithNATS is startServer with the NATS client port on a free
// loopback port too; it returns the server and the port's nats:// URL.
func startServerWithNATS(t *testing.T) (server, string) {
	t.Helper()
	natsAddr := testkit.FreeAddr(t)
	return runServer(t, natsAddr), "nats://" + natsAddr
}

func TestFanoutOverNATS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		publish string
		batch   int
	}{
		{name: "request", publish: PublishNATSRequest},
		{name: "request batch", publish: PublishNATSRequest, batch: 5},
		{name: "publish", publish: PublishNATSPublish},
		{name: "publish batch", publish: PublishNATSPublish, batch: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, natsURL := startServerWithNATS(t)
			cfg := testConfig(s, Fanout)
			cfg.Publish, cfg.NATSURL, cfg.Batch = tc.publish, natsURL, tc.batch
			cfg.NATSWindow = 8 // below the 50 events, so pacing is exercised
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			noChildren(t)
			f := rep.Results.FanoutResults
			want := int64(200 / 4 * 50)
			if f == nil || f.Published != 50 || f.PublishErrors != 0 || f.Delivered != want || f.Lost != 0 || f.Duplicates != 0 {
				t.Fatalf("fanout %+v, want 50 published and %d delivered", f, want)
			}
			if f.PublishPerS <= 0 || f.DeliveriesPerS <= 0 {
				t.Fatalf("rates: publish %v/s, deliveries %v/s", f.PublishPerS, f.DeliveriesPerS)
			}
			if got := f.PublishRTTMs.P50 > 0; got != (tc.publish == PublishNATSRequest) {
				t.Fatalf("publish round trip %+v for %s", f.PublishRTTMs, tc.publish)
			}
			if p := rep.Params; p.Publish != tc.publish || p.NATSURL != natsURL {
				t.Fatalf("params %+v", p)
			}
		})
	}
}

func TestNATSPublishErrors(t *testing.T) {
	base := Config{Scenario: Fanout, URL: "ws://127.0.0.1:1", AppID: "a", Key: "k", Secret: "s", Conns: 10}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "unknown", mod: func(c *Config) { c.Publish = "grpc" }, want: "--publish"},
		{name: "remote", mod: func(c *Config) { c.Publish, c.NATSURL = PublishNATSRequest, "nats://192.0.2.1:4222" }, want: "allow-remote"},
		{name: "bad url", mod: func(c *Config) { c.Publish, c.NATSURL = PublishNATSPublish, "http://127.0.0.1:4222" }, want: "--nats-url"},
		{name: "window", mod: func(c *Config) { c.Publish, c.NATSWindow = PublishNATSPublish, -2 }, want: "--nats-window"},
		{name: "not fanout", mod: func(c *Config) { c.Scenario, c.Publish = Connect, PublishNATSRequest }, want: "fanout and publish scenarios"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			_, err := Run(context.Background(), c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
	c := DefaultConfig(Config{Scenario: Fanout, AppID: "shop", Secret: "s3", Publish: PublishNATSRequest})
	if c.NATSURL != DefaultNATSURL || c.NATSUser != "shop" || c.NATSPassword != "s3" || c.NATSWindow != DefaultNATSWindow {
		t.Fatalf("defaults %+v", c)
	}
	if c := DefaultConfig(Config{Scenario: Fanout}); c.Publish != PublishREST || c.NATSURL != "" {
		t.Fatalf("REST defaults %+v", c)
	}
}
