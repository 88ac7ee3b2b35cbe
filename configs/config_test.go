package configs

import (
	"herald/app"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if len(c.Apps) != 1 {
		t.Fatalf("Default has %d apps, want 1", len(c.Apps))
	}
	dev := c.Apps[0]
	if dev.ID != "app-id" || dev.Key != "app-key" || dev.Secret != "app-secret" || !dev.ClientEvents || !dev.IsEnabled() {
		t.Fatalf("dev app = %+v", dev)
	}
	if c.Listen != "127.0.0.1:6001" || c.DataDir != "./data" {
		t.Fatalf("listen %q data_dir %q", c.Listen, c.DataDir)
	}
	if c.Gateway.ActivityTimeout.D() != 120*time.Second || c.Gateway.PongTimeout.D() != 30*time.Second {
		t.Fatalf("gateway = %+v", c.Gateway)
	}
	if !c.Bus.Stream.IsEnabled() || c.Bus.Stream.MaxAge.D() != 2*time.Minute || c.Bus.Stream.Sync != "interval" {
		t.Fatalf("stream = %+v", c.Bus.Stream)
	}
}

func TestDefaultReturnsFreshValues(t *testing.T) {
	a, b := Default(), Default()
	*a.Apps[0].Enabled = false
	*a.Bus.Stream.Enabled = false
	a.Apps[0].ID = "changed"
	if !b.Apps[0].IsEnabled() || !b.Bus.Stream.IsEnabled() || b.Apps[0].ID != "app-id" {
		t.Fatal("Default() values share memory between calls")
	}
}

func TestLoopback(t *testing.T) {
	dir := t.TempDir()
	c := Loopback(dir)
	if c.Listen != "127.0.0.1:0" || c.DataDir != dir {
		t.Fatalf("Loopback = listen %q data_dir %q", c.Listen, c.DataDir)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestIsEnabled(t *testing.T) {
	f, tr := false, true
	cases := []struct {
		name string
		ptr  *bool
		want bool
	}{
		{name: "nil", ptr: nil, want: true},
		{name: "true", ptr: &tr, want: true},
		{name: "false", ptr: &f, want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := app.App{Enabled: tc.ptr}
			s := Stream{Enabled: tc.ptr}
			if a.IsEnabled() != tc.want || s.IsEnabled() != tc.want {
				t.Fatalf("IsEnabled = %v/%v, want %v", a.IsEnabled(), s.IsEnabled(), tc.want)
			}
		})
	}
}

func TestActivityTimeoutSeconds(t *testing.T) {
	cases := []struct {
		in   time.Duration
		want int
	}{
		{in: 120 * time.Second, want: 120},
		{in: 1500 * time.Millisecond, want: 1},
		{in: 100 * time.Millisecond, want: 1},
		{in: time.Hour, want: 3600},
	}
	for _, tc := range cases {
		g := Gateway{ActivityTimeout: Duration(tc.in)}
		if got := g.ActivityTimeoutSeconds(); got != tc.want {
			t.Errorf("ActivityTimeoutSeconds(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "2m", want: 2 * time.Minute},
		{in: "120s", want: 120 * time.Second},
		{in: "120", want: 120 * time.Second},
		{in: "0", want: 0},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "-5", want: -5 * time.Second},
		{in: "abc", wantErr: `"abc" is not a duration`},
		{in: "1.5", wantErr: `"1.5" is not a duration`},
		{in: "", wantErr: `"" is not a duration`},
		{in: "99999999999999999", wantErr: "out of range"},
		{in: "99999999999999999999999", wantErr: "out of range"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseDuration(%q) error = %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.D() != tc.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tc.in, got.D(), err, tc.want)
			}
		})
	}
}

func TestDurationYAMLRoundTrip(t *testing.T) {
	cases := []struct {
		d    time.Duration
		text string
	}{
		{d: 2 * time.Minute, text: "2m"},
		{d: 120 * time.Second, text: "2m"},
		{d: 90 * time.Second, text: "1m30s"},
		{d: time.Hour, text: "1h"},
		{d: 720 * time.Hour, text: "720h"},
		{d: 100 * time.Millisecond, text: "100ms"},
		{d: 0, text: "0s"},
	}
	for _, tc := range cases {
		t.Run(tc.text, func(t *testing.T) {
			if got := Duration(tc.d).String(); got != tc.text {
				t.Fatalf("String() = %q, want %q", got, tc.text)
			}
			out, err := yaml.Marshal(struct {
				D Duration `yaml:"d"`
			}{Duration(tc.d)})
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				D Duration `yaml:"d"`
			}
			if err := yaml.Unmarshal(out, &back); err != nil {
				t.Fatalf("unmarshal %q: %v", out, err)
			}
			if back.D.D() != tc.d {
				t.Fatalf("round trip %q = %v, want %v", out, back.D.D(), tc.d)
			}
		})
	}
	var bad struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: [1]"), &bad); err == nil {
		t.Fatal("a list decoded as a Duration")
	}
}

// TestEnvNamesUnique guards the reflection that derives HERALD_* names: two
// keys must never share a variable.
func TestEnvNamesUnique(t *testing.T) {
	seen := map[string]string{}
	for _, v := range EnvVars() {
		if prev, dup := seen[v.Name]; dup {
			t.Fatalf("%s names both %s and %s", v.Name, prev, v.Key)
		}
		seen[v.Name] = v.Key
	}
	for _, name := range []string{
		"HERALD_LISTEN", "HERALD_DATA_DIR", "HERALD_LOG_LEVEL", "HERALD_GATEWAY_ACTIVITY_TIMEOUT",
		"HERALD_BUS_STREAM_MAX_AGE", "HERALD_BUS_STREAM_ENABLED", "HERALD_APPS",
		"HERALD_APP_ID", "HERALD_APP_KEY", "HERALD_APP_SECRET",
	} {
		if _, ok := seen[name]; !ok {
			t.Errorf("EnvVars lacks %s", name)
		}
	}
	if got := seen["HERALD_HTTP_READ_BUFFER_BYTES"]; got != "http.read_buffer_bytes" {
		t.Errorf("HERALD_HTTP_READ_BUFFER_BYTES sets %q", got)
	}
}

func TestLeafTypesSupported(t *testing.T) {
	// Every field of Config must be a leaf, a struct, a list of structs or a
	// list of leaves (cluster.seeds; set from a file only, no variable), or
	// the decoder and env reflection would skip it.
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			p := joinKey(path, yamlName(f))
			switch {
			case isLeaf(f.Type):
			case f.Type.Kind() == reflect.Slice && isLeaf(f.Type.Elem()):
			case f.Type.Kind() == reflect.Map && f.Type.Key().Kind() == reflect.String && isLeaf(f.Type.Elem()):
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, p)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(f.Type.Elem(), p+"[]")
			default:
				t.Errorf("%s has unsupported type %s", p, f.Type)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}
