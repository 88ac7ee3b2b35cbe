package e2e

// (Not named resume_js_test.go: the _js suffix would make it a GOOS=js-only
// file.)

// The JS resume client (clients/js, herald-resume) against a real Herald:
// its node tests (mechanics, build, resume with pusher-js, Laravel Echo on
// top) and its headless-Chromium test. The Herald they run against has a
// small replay window (resumeWindow events per channel) so that a test can
// push a channel past it. Guarantee: docs/protocol-extensions.md, "Resume".

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// resumeWindow is bus.stream.max_msgs_per_channel of the resume tests'
// Herald: small, so that missing resumeWindow+1 events passes the window.
const resumeWindow = 5

// chromiumPath is Debian's chromium, installed by scripts/setup-chromium.sh
// (make test runs it).
const chromiumPath = "/usr/bin/chromium"

// startResumeHerald starts Herald with the dev app and a replay window of
// resumeWindow events per channel.
func startResumeHerald(t *testing.T) *Herald {
	t.Helper()
	cfg := map[string]any{
		"apps": []map[string]any{{
			"id": "app-id", "key": "app-key", "secret": "app-secret", "client_events": true,
		}},
		"bus": map[string]any{
			"stream": map[string]any{"max_msgs_per_channel": resumeWindow},
		},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("encoding the resume config: %v", err)
	}
	path := filepath.Join(t.TempDir(), "herald-resume.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return startHerald(t, "--config", path)
}

// requireClientJSDeps fails the test when clients/js has no node_modules.
func requireClientJSDeps(t *testing.T) {
	t.Helper()
	dir := filepath.Join(moduleRoot, "clients", "js", "node_modules")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%s is missing: run `make js-deps` (npm ci in clients/js) first", dir)
	}
}

// TestResumeJS runs clients/js's node tests: withResume over stock pusher-js
// and under Laravel Echo, across cut connections, against a real Herald.
func TestResumeJS(t *testing.T) {
	skipUnderRace(t)
	requireClientJSDeps(t)
	h := startResumeHerald(t)
	runNodeTests(t, h, []string{"HERALD_RESUME_WINDOW=" + strconv.Itoa(resumeWindow)},
		"clients/js/test/mechanics.test.mjs",
		"clients/js/test/build.test.mjs",
		"clients/js/test/resume.test.mjs",
		"clients/js/test/echo.test.mjs",
	)
}

// TestResumeJSBrowser runs clients/js's browser test: headless Chromium loads
// pusher-js and herald-resume (UMD by script tag, and as an ES module), the
// test cuts the page's connection and publishes, and the page must report
// every event exactly once.
func TestResumeJSBrowser(t *testing.T) {
	skipUnderRace(t)
	requireClientJSDeps(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: run scripts/setup-chromium.sh (make test does): %v", chromiumPath, err)
	}
	h := startResumeHerald(t)
	runNodeTests(t, h, []string{
		"HERALD_RESUME_WINDOW=" + strconv.Itoa(resumeWindow),
		"HERALD_CHROMIUM=" + chromiumPath,
	}, "clients/js/test/browser.test.mjs")
}
