package configs

import (
	"herald/app"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEnvOverridesFile(t *testing.T) {
	path := writeConfig(t, `
listen: ":7001"
log: {level: debug}
gateway: {activity_timeout: 60s, pollers: 2}
bus: {stream: {enabled: true, max_age: 5m}}
`)
	env := []string{
		"PATH=/usr/bin",
		"HERALD_LISTEN=:8001",
		"HERALD_LISTEN=:9001", // later entries win, as in os.Environ
		"HERALD_DATA_DIR=/srv/herald",
		"HERALD_LOG_FORMAT=json",
		"HERALD_GATEWAY_ACTIVITY_TIMEOUT=30s",
		"HERALD_GATEWAY_PONG_TIMEOUT=15",
		"HERALD_GATEWAY_REQUIRE_PROTOCOL=1",
		"HERALD_BUS_STREAM_ENABLED=false",
		"HERALD_BUS_STREAM_MAX_MSGS_PER_CHANNEL=42",
		"HERALD_BUS_SHARDS=3",
		"HERALD_HTTP_MAX_BODY_BYTES=4096",
	}
	c, w := mustLoad(t, path, LoadOptions{Env: env})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	want := Default()
	want.Listen = ":9001"
	want.DataDir = "/srv/herald"
	want.Log = Log{Level: "debug", Format: "json"}
	want.Gateway.ActivityTimeout = Duration(30 * time.Second)
	want.Gateway.PongTimeout = Duration(15 * time.Second)
	want.Gateway.Pollers = 2
	want.Gateway.RequireProtocol = true
	want.Bus.Stream.Enabled = boolPtr(false)
	want.Bus.Stream.MaxAge = Duration(5 * time.Minute)
	want.Bus.Stream.MaxMsgsPerChannel = 42
	want.Bus.Shards = 3
	want.HTTP.MaxBodyBytes = 4096
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestEnvNilMeansNoOverrides(t *testing.T) {
	t.Setenv("HERALD_LISTEN", "garbage")
	c, _ := mustLoad(t, "", LoadOptions{})
	if c.Listen != DefaultListen {
		t.Fatalf("Load read the process environment: listen %q", c.Listen)
	}
}

func TestEnvBooleans(t *testing.T) {
	cases := []struct {
		value string
		want  bool
	}{
		{value: "true", want: true},
		{value: "TRUE", want: true},
		{value: "1", want: true},
		{value: "false", want: false},
		{value: "False", want: false},
		{value: "0", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			c, _ := mustLoad(t, "", LoadOptions{Env: []string{"HERALD_BUS_STREAM_ENABLED=" + tc.value}})
			if c.Bus.Stream.IsEnabled() != tc.want {
				t.Fatalf("enabled = %v", c.Bus.Stream.IsEnabled())
			}
		})
	}
}

func TestEnvErrors(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{name: "bad duration", env: []string{"HERALD_GATEWAY_ACTIVITY_TIMEOUT=abc"}, want: `env HERALD_GATEWAY_ACTIVITY_TIMEOUT: "abc" is not a duration`},
		{name: "bad int", env: []string{"HERALD_GATEWAY_POLLERS=x"}, want: `env HERALD_GATEWAY_POLLERS: "x" is not an integer`},
		{name: "bad bool", env: []string{"HERALD_BUS_STREAM_ENABLED=yes"}, want: `env HERALD_BUS_STREAM_ENABLED: "yes" is not a boolean`},
		{name: "invalid listen", env: []string{"HERALD_LISTEN=nope"}, want: `env HERALD_LISTEN: listen: "nope" must be host:port`},
		{name: "out of range", env: []string{"HERALD_GATEWAY_POLLERS=1000"}, want: "env HERALD_GATEWAY_POLLERS: gateway.pollers: must be from 0 to 256"},
		{name: "empty is a value", env: []string{"HERALD_DATA_DIR="}, want: "env HERALD_DATA_DIR: data_dir: must not be empty"},
		{name: "app key", env: []string{"HERALD_APP_KEY=bad key"}, want: `env HERALD_APP_KEY: apps[0].key: "bad key" must match`},
		{name: "app int", env: []string{"HERALD_APP_MAX_CONNECTIONS=lots"}, want: `env HERALD_APP_MAX_CONNECTIONS: "lots" is not an integer`},
		{name: "apps syntax", env: []string{"HERALD_APPS=[{id: a"}, want: "env HERALD_APPS: line 1: "},
		{name: "apps json syntax", env: []string{`HERALD_APPS=[{"id": "a",}`}, want: "env HERALD_APPS: line 1: "},
		{name: "apps empty value", env: []string{"HERALD_APPS="}, want: "env HERALD_APPS: must be a YAML or JSON list of apps"},
		{name: "apps not a list", env: []string{`HERALD_APPS={"id": "a"}`}, want: "env HERALD_APPS: apps: must be a list, got a mapping"},
		{name: "apps bad field", env: []string{`HERALD_APPS=[{"id": "a", "key": "k", "secret": "s", "max_batch_size": "ten"}]`}, want: `env HERALD_APPS: apps[0].max_batch_size: "ten" is not an integer`},
		{name: "apps empty list", env: []string{"HERALD_APPS=[]"}, want: "env HERALD_APPS: apps: at least one app is required"},
		{name: "apps invalid app", env: []string{`HERALD_APPS=[{"id": "a", "key": "k"}]`}, want: "env HERALD_APPS: apps[0].secret: must not be empty"},
		{name: "apps duplicate key", env: []string{`HERALD_APPS=[{id: a, key: k, secret: s}, {id: b, key: k, secret: s}]`}, want: `env HERALD_APPS: apps[1].key: "k" is already the key of apps[0]`},
		{name: "app created without secret", env: []string{"HERALD_APPS=[]", "HERALD_APP_ID=x", "HERALD_APP_KEY=y"}, want: "env HERALD_APP_ID: apps[0].secret: must not be empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := Load("", LoadOptions{Env: tc.env})
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error = %q\nwant prefix %q", err, tc.want)
			}
		})
	}
}

func TestEnvErrorNamesFileForFileKeys(t *testing.T) {
	// The env sets one key; the bad value of another key still blames the file.
	path := writeConfig(t, "gateway: {pollers: 999}\n")
	_, _, err := Load(path, LoadOptions{Env: []string{"HERALD_LISTEN=:1"}})
	if want := "config " + path + ": gateway.pollers: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error = %v, want prefix %q", err, want)
	}
}

func TestEnvApps(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want []app.App
	}{
		{
			name: "json",
			env:  []string{`HERALD_APPS=[{"id":"a","key":"ka","secret":"sa","client_events":true},{"id":"b","key":"kb","secret":"sb","enabled":false,"max_connections":9}]`},
			want: func() []app.App {
				a := app.New("a", "ka", "sa")
				a.ClientEvents = true
				b := app.New("b", "kb", "sb")
				b.Enabled = boolPtr(false)
				b.MaxConnections = 9
				return []app.App{a, b}
			}(),
		},
		{
			name: "yaml flow",
			env:  []string{"HERALD_APPS=[{id: a, key: ka, secret: sa, max_batch_size: 3}]"},
			want: func() []app.App {
				a := app.New("a", "ka", "sa")
				a.MaxBatchSize = 3
				return []app.App{a}
			}(),
		},
		{
			name: "yaml block",
			env:  []string{"HERALD_APPS=- id: a\n  key: ka\n  secret: sa\n"},
			want: []app.App{app.New("a", "ka", "sa")},
		},
		{
			name: "single app vars edit the dev app",
			env:  []string{"HERALD_APP_ID=prod", "HERALD_APP_KEY=prod-key", "HERALD_APP_SECRET=prod-secret"},
			want: func() []app.App {
				a := app.New("prod", "prod-key", "prod-secret")
				a.ClientEvents = true // still the dev app's setting
				return []app.App{a}
			}(),
		},
		{
			name: "single app vars after HERALD_APPS edit its first app",
			env: []string{
				"HERALD_APP_SECRET=override", "HERALD_APP_CLIENT_EVENTS=true",
				`HERALD_APPS=[{"id":"a","key":"ka","secret":"sa"},{"id":"b","key":"kb","secret":"sb"}]`,
			},
			want: func() []app.App {
				a := app.New("a", "ka", "override")
				a.ClientEvents = true
				return []app.App{a, app.New("b", "kb", "sb")}
			}(),
		},
		{
			name: "single app vars create the app",
			env:  []string{"HERALD_APPS=[]", "HERALD_APP_ID=x", "HERALD_APP_KEY=y", "HERALD_APP_SECRET=z"},
			want: []app.App{app.New("x", "y", "z")},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, w := mustLoad(t, "", LoadOptions{Env: tc.env})
			if len(w) != 0 {
				t.Fatalf("warnings: %v", w)
			}
			if !reflect.DeepEqual(c.Apps, tc.want) {
				t.Fatalf("apps = %+v\nwant %+v", c.Apps, tc.want)
			}
		})
	}
}

func TestEnvAppsReplacesFileApps(t *testing.T) {
	path := writeConfig(t, "apps:\n  - {id: f, key: fk, secret: fs}\n")
	c, _ := mustLoad(t, path, LoadOptions{Env: []string{"HERALD_APPS=[{id: e, key: ek, secret: es}]"}})
	if len(c.Apps) != 1 || c.Apps[0].ID != "e" {
		t.Fatalf("apps = %+v", c.Apps)
	}
}

func TestEnvUnknown(t *testing.T) {
	env := []string{
		"HERALD_LSTEN=:1",
		"HERALD_CONFIG=/etc/herald.yaml",
		`HERALD_APPS=[{"id":"a","key":"k","secret":"s","scret":"x"}]`,
		"OTHER_THING=1",
	}
	_, w := mustLoad(t, "", LoadOptions{Env: env, IgnoreEnv: []string{"HERALD_CONFIG"}})
	want := []Warning{
		{File: "env HERALD_APPS", Key: "apps[0].scret", Line: 1, Message: `unknown key (line 1); did you mean "secret"?`},
		{File: "env", Key: "HERALD_LSTEN", Message: "unknown variable; did you mean HERALD_LISTEN?"},
	}
	if !reflect.DeepEqual(w, want) {
		t.Fatalf("warnings = %+v\nwant %+v", w, want)
	}
	if got := w[1].String(); got != "env: HERALD_LSTEN: unknown variable; did you mean HERALD_LISTEN?" {
		t.Fatalf("String() = %q", got)
	}

	_, _, err := Load("", LoadOptions{Env: env, Strict: true})
	if err == nil {
		t.Fatal("Strict: no error")
	}
	for _, s := range []string{
		"env HERALD_LSTEN: unknown variable",
		"env HERALD_CONFIG: unknown variable",
		"env HERALD_APPS: apps[0].scret: unknown key",
	} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Strict error %q lacks %q", err, s)
		}
	}
}
