package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// featureApp is one app of the channel-feature config. Options are the
// per-app feature keys (client_events, subscription_error_mode, ...), written
// into the YAML as given.
type featureApp struct {
	Name    string         `json:"name"` // how the JS tests look it up
	ID      string         `json:"id"`
	Key     string         `json:"key"`
	Secret  string         `json:"secret"`
	Options map[string]any `json:"options"`
}

// featureApps is the app list of TestPusherJSFeatures (and the Go SDK tests'
// feature runs). The node tests get it as JSON in HERALD_FEATURE_APPS, so this
// is the only place the credentials and options are written down.
var featureApps = []featureApp{
	{
		// The dev app, with every feature option spelled out.
		Name: "main", ID: "app-id", Key: "app-key", Secret: "app-secret",
		Options: map[string]any{
			"client_events":                true,
			"subscription_error_mode":      "pusher",
			"max_presence_members":         100,
			"max_presence_user_info_bytes": 1024,
			"client_event_rate":            10,
			"user_authentication":          false,
		},
	},
	{
		// soketi's channel-scoped pusher:subscription_error, small presence limits.
		Name: "soketi", ID: "soketi-id", Key: "soketi-key", Secret: "soketi-secret",
		Options: map[string]any{
			"client_events":                true,
			"subscription_error_mode":      "soketi",
			"max_presence_members":         2,
			"max_presence_user_info_bytes": 1024,
		},
	},
	{
		// Pusher-mode errors with small presence limits.
		Name: "limits", ID: "limits-id", Key: "limits-key", Secret: "limits-secret",
		Options: map[string]any{
			"client_events":                true,
			"subscription_error_mode":      "pusher",
			"max_presence_members":         2,
			"max_presence_user_info_bytes": 1024,
		},
	},
	{
		// Client events disabled.
		Name: "noclient", ID: "noclient-id", Key: "noclient-key", Secret: "noclient-secret",
		Options: map[string]any{"client_events": false},
	},
	{
		// pusher_internal:subscription_count events on.
		Name: "counts", ID: "counts-id", Key: "counts-key", Secret: "counts-secret",
		Options: map[string]any{"client_events": true, "subscription_count": true},
	},
}

// writeFeatureConfig writes the feature apps as a Herald YAML config in a
// temporary directory and returns its path.
func writeFeatureConfig(t *testing.T) string {
	t.Helper()
	apps := make([]map[string]any, 0, len(featureApps))
	for _, a := range featureApps {
		m := map[string]any{"id": a.ID, "key": a.Key, "secret": a.Secret}
		for k, v := range a.Options {
			m[k] = v
		}
		apps = append(apps, m)
	}
	b, err := yaml.Marshal(map[string]any{"apps": apps})
	if err != nil {
		t.Fatalf("encoding the feature config: %v", err)
	}
	path := filepath.Join(t.TempDir(), "herald-features.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return path
}

// startFeatureHerald starts Herald with the feature config. Unknown keys must
// only be warned about; the warnings are logged so a run shows which feature
// keys the server does not know yet.
func startFeatureHerald(t *testing.T) *Herald {
	t.Helper()
	h := startHerald(t, "--config", writeFeatureConfig(t))
	for _, line := range strings.Split(h.Output(), "\n") {
		if strings.Contains(line, "unknown key") {
			t.Logf("herald config warning: %s", line)
		}
	}
	return h
}

// TestPusherJSFeatures runs the channel-feature node tests (channels.test.mjs,
// echo.test.mjs) against a Herald started with the feature apps.
func TestPusherJSFeatures(t *testing.T) {
	skipUnderRace(t)
	h := startFeatureHerald(t)
	apps, err := json.Marshal(featureApps)
	if err != nil {
		t.Fatal(err)
	}
	runNodeTests(t, h, []string{"HERALD_FEATURE_APPS=" + string(apps)},
		"tests/js/channels.test.mjs", "tests/js/echo.test.mjs")
}

// runNodeTests runs `node --test` on files (relative to the module root)
// against h, with extra environment variables, and fails with the output if
// any test fails.
func runNodeTests(t *testing.T, h *Herald, env []string, files ...string) {
	t.Helper()
	jsDir := filepath.Join(moduleRoot, "tests", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules")); err != nil {
		t.Fatalf("%s is missing: run `make test` (npm ci in tests/js) first", filepath.Join(jsDir, "node_modules"))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH (Node.js 20 or later is needed): %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	args := append([]string{"--test", "--test-reporter=spec"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(),
		"HERALD_HOST="+h.Host,
		"HERALD_PORT="+strconv.Itoa(h.Port),
		"NO_COLOR=1",
	)
	cmd.Env = append(cmd.Env, env...)
	setProcAttrs(cmd)
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	cmd.WaitDelay = 10 * time.Second
	var output lockedBuffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	track(cmd)
	err = cmd.Wait()
	killGroup(cmd)
	untrack(cmd)
	out := []byte(output.String())
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("node --test %v did not finish within 5 minutes; output:\n%s", files, out)
	}
	if err != nil {
		t.Fatalf("node --test %v failed (%v); output:\n%s", files, err, out)
	}
	t.Logf("node --test %v passed:\n%s", files, summary(out))
}
