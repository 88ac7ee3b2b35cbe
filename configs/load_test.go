package configs

import (
	"errors"
	"herald/app"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeConfig writes content to herald.yaml in a fresh temp dir.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, path string, opts LoadOptions) (*Config, []Warning) {
	t.Helper()
	c, w, err := Load(path, opts)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	return c, w
}

func TestLoadNoFile(t *testing.T) {
	c, w := mustLoad(t, "", LoadOptions{})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load(\"\") = %+v, want Default()", c)
	}
}

func TestLoadEmptyFiles(t *testing.T) {
	for _, content := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		c, w := mustLoad(t, writeConfig(t, content), LoadOptions{})
		if len(w) != 0 || !reflect.DeepEqual(c, Default()) {
			t.Errorf("%q: got %+v, %v; want Default()", content, c, w)
		}
	}
}

func TestLoadFileOverrides(t *testing.T) {
	path := writeConfig(t, `
listen: ":7001"
data_dir: /var/lib/herald
log: {level: debug, format: json}
apps:
  - id: shop
    key: shop-key
    secret: s3cret
    max_connections: 500
    max_batch_size: 20
  - id: blog
    key: blog.key
    secret: other
    enabled: false
    client_events: true
gateway:
  activity_timeout: 2m
  pong_timeout: 10
  max_message_bytes: 65536
  write_queue_bytes: 4096
  pollers: 4
  require_protocol: true
bus:
  shards: 8
  stream:
    enabled: false
    max_age: 1h
    max_msgs_per_channel: 50
    sync: always
http:
  max_body_bytes: 2048
  read_buffer_bytes: 65536
`)
	c, w := mustLoad(t, path, LoadOptions{})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	want := Default()
	want.Listen = ":7001"
	want.DataDir = "/var/lib/herald"
	want.Log = Log{Level: "debug", Format: "json"}
	shop := app.New("shop", "shop-key", "s3cret")
	shop.MaxConnections = 500
	shop.MaxBatchSize = 20
	blog := app.New("blog", "blog.key", "other")
	blog.Enabled = boolPtr(false)
	blog.ClientEvents = true
	want.Apps = []app.App{shop, blog}
	want.Gateway = Gateway{
		ActivityTimeout: Duration(2 * time.Minute),
		PongTimeout:     Duration(10 * time.Second),
		MaxMessageBytes: 65536,
		WriteQueueBytes: 4096,
		Pollers:         4,
		RequireProtocol: true,

		HandshakeTimeout: Duration(DefaultHandshakeTimeout),
		TrustedProxies:   []string{},
	}
	want.Bus.Shards = 8
	want.Bus.Stream = Stream{
		Enabled:           boolPtr(false),
		MaxAge:            Duration(time.Hour),
		MaxMsgsPerChannel: 50,
		Sync:              "always",
	}
	want.HTTP = HTTP{MaxBodyBytes: 2048, ReadBufferBytes: 65536}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if c.Apps[0].ClientEvents {
		t.Fatal("a configured app got client events by default")
	}
}

func TestLoadPartialSectionKeepsDefaults(t *testing.T) {
	c, _ := mustLoad(t, writeConfig(t, "gateway:\n  pollers: 2\nlog:\n"), LoadOptions{})
	want := Default()
	want.Gateway.Pollers = 2
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestLoadDurations(t *testing.T) {
	cases := []struct {
		value string
		want  time.Duration
	}{
		{value: "2m", want: 2 * time.Minute},
		{value: "120s", want: 120 * time.Second},
		{value: "120", want: 120 * time.Second},
		{value: `"90"`, want: 90 * time.Second},
		{value: "1m30s", want: 90 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			path := writeConfig(t, "gateway:\n  activity_timeout: "+tc.value+"\nbus:\n  stream:\n    max_age: "+tc.value+"\n")
			c, _ := mustLoad(t, path, LoadOptions{})
			if c.Gateway.ActivityTimeout.D() != tc.want || c.Bus.Stream.MaxAge.D() != tc.want {
				t.Fatalf("got %v and %v, want %v", c.Gateway.ActivityTimeout, c.Bus.Stream.MaxAge, tc.want)
			}
		})
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	content := `
listen: ":6001"
lisen: ":6002"
gateway:
  activty_timeout: 30s
  pollers: 2
apps:
  - id: a
    key: k
    secret: s
    scret: typo
bus:
  stream:
    replicas: 3
    nested: {deep: 1}
`
	wantKeys := []string{"lisen", "gateway.activty_timeout", "apps[0].scret", "bus.stream.replicas", "bus.stream.nested"}

	path := writeConfig(t, content)
	c, w := mustLoad(t, path, LoadOptions{})
	if c.Gateway.Pollers != 2 || c.Apps[0].Secret != "s" {
		t.Fatalf("known keys next to unknown ones were not applied: %+v", c)
	}
	if len(w) != len(wantKeys) {
		t.Fatalf("warnings = %v, want keys %v", w, wantKeys)
	}
	for i, key := range wantKeys {
		if w[i].Key != key || w[i].File != path || !strings.Contains(w[i].Message, "unknown key") {
			t.Errorf("warning %d = %+v, want key %q in %s", i, w[i], key, path)
		}
		if !strings.HasPrefix(w[i].String(), path+": "+key+": unknown key") {
			t.Errorf("String() = %q", w[i].String())
		}
	}
	if w[1].Line != 5 || !strings.Contains(w[1].Message, `did you mean "activity_timeout"?`) {
		t.Errorf("activty_timeout warning = %+v, want line 5 and a suggestion", w[1])
	}
	if !strings.Contains(w[2].Message, `did you mean "secret"?`) {
		t.Errorf("scret warning = %+v", w[2])
	}

	_, w, err := Load(path, LoadOptions{Strict: true})
	if err == nil {
		t.Fatal("Strict: no error")
	}
	if len(w) != len(wantKeys) {
		t.Errorf("Strict: warnings = %v", w)
	}
	for _, key := range wantKeys {
		if want := "config " + path + ": " + key + ": unknown key"; !strings.Contains(err.Error(), want) {
			t.Errorf("Strict error %q lacks %q", err, want)
		}
	}
}

func TestLoadValidationErrors(t *testing.T) {
	const apps = "apps:\n  - {id: a, key: k, secret: s}\n"
	cases := []struct {
		name    string
		content string
		want    string // after "config <path>: "
		raw     bool   // do not prepend a valid apps list
	}{
		{name: "listen no port", content: "listen: localhost", want: "listen: "},
		{name: "listen bad port", content: "listen: 'localhost:http'", want: `listen: port "http"`},
		{name: "listen port range", content: "listen: ':70000'", want: "listen: port"},
		{name: "data_dir empty", content: "data_dir: ''", want: "data_dir: must not be empty"},
		{name: "log level", content: "log: {level: verbose}", want: `log.level: "verbose" is not one of debug, info, warn, error`},
		{name: "log format", content: "log: {format: xml}", want: `log.format: "xml" is not one of text, json`},
		{name: "no apps", content: "apps: []", want: "apps: at least one app is required"},
		{name: "app id empty", content: "apps:\n  - {key: k, secret: s}", want: "apps[0].id: must not be empty"},
		{name: "app id chars", content: "apps:\n  - {id: 'a b', key: k, secret: s}", want: `apps[0].id: "a b" must match`},
		{name: "app id long", content: "apps:\n  - {id: " + strings.Repeat("x", 65) + ", key: k, secret: s}", want: "apps[0].id: "},
		{name: "app key empty", content: "apps:\n  - {id: a, key: k, secret: s}\n  - {id: b, key: '', secret: s}", want: "apps[1].key: must not be empty"},
		{name: "app key chars", content: "apps:\n  - {id: a, key: 'k/1', secret: s}", want: `apps[0].key: "k/1" must match`},
		{name: "app secret", content: "apps:\n  - {id: a, key: k}", want: "apps[0].secret: must not be empty"},
		{name: "duplicate id", content: "apps:\n  - {id: a, key: k1, secret: s}\n  - {id: a, key: k2, secret: s}", want: `apps[1].id: "a" is already the id of apps[0]`},
		{name: "duplicate key", content: "apps:\n  - {id: a, key: k, secret: s}\n  - {id: b, key: k, secret: s}", want: `apps[1].key: "k" is already the key of apps[0]`},
		{name: "max_connections", content: "apps:\n  - {id: a, key: k, secret: s, max_connections: -1}", want: "apps[0].max_connections: must be 0 (unlimited) or more"},
		{name: "max_event_data_bytes", content: "apps:\n  - {id: a, key: k, secret: s, max_event_data_bytes: 0}", want: "apps[0].max_event_data_bytes: must be from 1 to 1048576, got 0"},
		{name: "max_event_data_bytes high", content: "apps:\n  - {id: a, key: k, secret: s, max_event_data_bytes: 1048577}", want: "apps[0].max_event_data_bytes: must be from 1 to 1048576"},
		{name: "max_channels_per_event", content: "apps:\n  - {id: a, key: k, secret: s, max_channels_per_event: 1001}", want: "apps[0].max_channels_per_event: must be from 1 to 1000"},
		{name: "max_batch_size", content: "apps:\n  - {id: a, key: k, secret: s, max_batch_size: 0}", want: "apps[0].max_batch_size: must be from 1 to 1000"},
		{name: "max_event_name_length", content: "apps:\n  - {id: a, key: k, secret: s, max_event_name_length: 0}", want: "apps[0].max_event_name_length: "},
		{name: "max_channel_name_length", content: "apps:\n  - {id: a, key: k, secret: s, max_channel_name_length: 5000}", want: "apps[0].max_channel_name_length: "},
		{name: "activity_timeout low", content: "gateway: {activity_timeout: 500ms}", want: "gateway.activity_timeout: must be from 1s to 1h, got 500ms"},
		{name: "activity_timeout high", content: "gateway: {activity_timeout: 2h}", want: "gateway.activity_timeout: must be from 1s to 1h"},
		{name: "activity_timeout syntax", content: "gateway: {activity_timeout: abc}", want: `gateway.activity_timeout: "abc" is not a duration`},
		{name: "pong_timeout", content: "gateway: {pong_timeout: 50ms}", want: "gateway.pong_timeout: must be from 100ms to 10m"},
		{name: "max_message_bytes", content: "gateway: {max_message_bytes: 1000}", want: "gateway.max_message_bytes: must be from 1024 to 16777216"},
		{name: "write_queue_bytes", content: "gateway: {write_queue_bytes: 1073741825}", want: "gateway.write_queue_bytes: must be from 4096 to 1073741824"},
		{name: "pollers", content: "gateway: {pollers: 257}", want: "gateway.pollers: must be from 0 to 256"},
		{name: "pollers type", content: "gateway: {pollers: many}", want: `gateway.pollers: "many" is not an integer`},
		{name: "pollers overflow", content: "gateway: {pollers: 99999999999999999999}", want: "gateway.pollers: \"99999999999999999999\" is out of range"},
		{name: "require_protocol type", content: "gateway: {require_protocol: maybe}", want: `gateway.require_protocol: "maybe" is not a boolean`},
		{name: "shards", content: "bus: {shards: -1}", want: "bus.shards: must be from 0 to 256"},
		{name: "stream max_age", content: "bus: {stream: {max_age: 721h}}", want: "bus.stream.max_age: must be from 1s to 720h"},
		{name: "stream max_msgs", content: "bus: {stream: {max_msgs_per_channel: 0}}", want: "bus.stream.max_msgs_per_channel: must be from 1 to 10000000"},
		{name: "stream sync", content: "bus: {stream: {sync: never}}", want: `bus.stream.sync: "never" is not one of interval, always`},
		{name: "stream enabled type", content: "bus: {stream: {enabled: yes}}", want: `bus.stream.enabled: "yes" is not a boolean`},
		{name: "max_body_bytes", content: "http: {max_body_bytes: 100}", want: "http.max_body_bytes: must be from 1024 to 67108864"},
		{name: "read_buffer_bytes", content: "http: {read_buffer_bytes: 2097152}", want: "http.read_buffer_bytes: must be from 4096 to 1048576"},
		{name: "section not mapping", content: "gateway: 5", want: `gateway: must be a mapping, got "5"`},
		{name: "apps not list", content: "apps: {id: a}", want: "apps: must be a list, got a mapping"},
		{name: "app not mapping", content: "apps: [a]", want: `apps[0]: must be a mapping, got "a"`},
		{name: "leaf not scalar", content: "listen: [a, b]", want: "listen: must be a string, got a list"},
		{name: "top level list", content: "- a", want: "the top level must be a mapping", raw: true},
		{name: "top level scalar", content: "hello", want: `the top level must be a mapping of keys, got "hello"`, raw: true},
		{name: "duplicate key", content: "listen: ':1'\nlisten: ':2'", want: "listen: defined twice (lines 1 and 2)", raw: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			content := tc.content
			if !tc.raw && !strings.Contains(content, "apps:") {
				content = apps + content
			}
			path := writeConfig(t, content+"\n")
			c, _, err := Load(path, LoadOptions{})
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Error("a config came back with an error")
			}
			if want := "config " + path + ": " + tc.want; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error = %q\nwant prefix %q", err, want)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v is not a *KeyError", err)
			}
		})
	}
}

func TestLoadBadYAML(t *testing.T) {
	cases := []struct {
		name    string
		content string
		want    string
	}{
		{name: "bad indent", content: "listen: ':1'\ngateway:\n  pollers: 1\n pong_timeout: 1s\n", want: "line 3: did not find expected key"},
		{name: "unclosed flow", content: "log: {level: info\n", want: "line "},
		{name: "tab", content: "gateway:\n\tpollers: 1\n", want: "line 2"},
		{name: "two documents", content: "listen: ':1'\n---\nlisten: ':2'\n", want: "line 2: a second YAML document is not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, _, err := Load(path, LoadOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			rest, ok := strings.CutPrefix(err.Error(), "config "+path+": ")
			if !ok || !strings.HasPrefix(rest, tc.want) {
				t.Fatalf("error = %q, want the file and %q", err, tc.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, _, err := Load(path, LoadOptions{})
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "config "+path+": ") {
		t.Fatalf("error = %v", err)
	}
}

func TestLoadAnchorsAndMerge(t *testing.T) {
	path := writeConfig(t, `
x-limits: &limits
  max_batch_size: 50
  max_connections: 7
apps:
  - id: a
    key: ka
    secret: s
    <<: *limits
  - id: b
    key: kb
    secret: s
    <<: *limits
    max_batch_size: 5
`)
	c, w := mustLoad(t, path, LoadOptions{})
	if len(w) != 1 || w[0].Key != "x-limits" {
		t.Fatalf("warnings = %v, want only x-limits", w)
	}
	if c.Apps[0].MaxBatchSize != 50 || c.Apps[0].MaxConnections != 7 {
		t.Fatalf("app a = %+v", c.Apps[0])
	}
	if c.Apps[1].MaxBatchSize != 5 || c.Apps[1].MaxConnections != 7 {
		t.Fatalf("app b = %+v: explicit key must beat the merge", c.Apps[1])
	}
}

func TestLoadSelfReferencingAliasFails(t *testing.T) {
	for _, content := range []string{
		"gateway: &g\n  <<: *g\n",
		"apps: &a [*a]\n",
	} {
		path := writeConfig(t, content)
		if _, _, err := Load(path, LoadOptions{}); err == nil {
			t.Errorf("%q: no error", content)
		}
	}
}
