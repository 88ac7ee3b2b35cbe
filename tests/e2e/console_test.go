package e2e

// The debug console (docs/console.md) in headless Chromium: tests/js's
// console.test.mjs, driven by Playwright (playwright-core with Debian's
// chromium), against one `herald` process with an admin token, and against
// a three-node cluster with the console opened on node 3. Screenshots go
// to the test's artifact directory (go test -artifacts keeps them).

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"herald/configs"
)

// adminLine finds the admin URL in a node's "herald node started" line (the
// tests' nodes bind admin.listen to port 0).
var adminLine = regexp.MustCompile(`herald node started.* admin=(http://[0-9.:]+)`)

// adminURL waits for the node's start line and returns its admin URL.
func adminURL(t *testing.T, output func() string) string {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if m := adminLine.FindStringSubmatch(output()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no admin URL in the node's output:\n%s", output())
	return ""
}

func requireBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: run scripts/setup-chromium.sh (make test does): %v", chromiumPath, err)
	}
}

// TestConsoleBrowser: log in, see a REST publish with its payload, send an
// event from the page and receive it with pusher-js, filter by channel,
// inspect a socket, take a screenshot.
func TestConsoleBrowser(t *testing.T) {
	skipUnderRace(t)
	requireBrowser(t)
	const token = "e2e-console-token"
	cfg := map[string]any{
		"admin": map[string]any{"token": token},
		"apps": []map[string]any{{
			"id": "app-id", "key": "app-key", "secret": "app-secret", "client_events": true,
		}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "herald-console.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHerald(t, "--config", path)
	shots := t.ArtifactDir()
	runNodeTests(t, h, []string{
		"HERALD_CHROMIUM=" + chromiumPath,
		"HERALD_CONSOLE_ADMIN=" + adminURL(t, h.Output),
		"HERALD_CONSOLE_TOKEN=" + token,
		"HERALD_CONSOLE_SHOTS=" + shots,
	}, "tests/js/console.test.mjs")
	t.Logf("screenshot: %s", filepath.Join(shots, "console.png"))
}

// TestConsoleCluster: in a three-node cluster, an event published on node
// 1 shows on a console opened on node 3, named with node 1's name.
func TestConsoleCluster(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	requireBrowser(t)
	nodes := startCluster(t, clusterSpec{name: "herald-console", nodePrefix: "cn", preset: configs.PresetLocal, outputTail: 20000})
	var spec []string
	for _, nd := range nodes {
		spec = append(spec, nd.Name+"="+nd.Addr)
	}
	host, port, _ := net.SplitHostPort(nodes[0].Addr)
	p, _ := strconv.Atoi(port)
	shots := t.ArtifactDir()
	runNodeTests(t, &Herald{Host: host, Port: p, Addr: nodes[0].Addr}, []string{
		"HERALD_CHROMIUM=" + chromiumPath,
		"HERALD_CONSOLE_CLUSTER_ADMIN=" + adminURL(t, nodes[2].output.String),
		"HERALD_NODES=" + strings.Join(spec, ","),
		"HERALD_CONSOLE_SHOTS=" + shots,
	}, "tests/js/console.test.mjs")
	t.Logf("screenshot: %s", filepath.Join(shots, "console-cluster.png"))
}
