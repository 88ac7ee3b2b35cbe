package configs

import (
	"herald/app"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a config file. Load must never
// panic, and whatever it accepts must validate.
func FuzzLoad(f *testing.F) {
	if example, err := os.ReadFile(examplePath); err == nil {
		f.Add(example)
	}
	for _, seed := range []string{
		"",
		"listen: ':1'\n",
		"apps:\n  - {id: a, key: k, secret: s, max_batch_size: 5}\n",
		"apps: [{id: a, key: k, secret: s}, {id: a, key: k, secret: s}]\n",
		"gateway: {activity_timeout: 2m, pong_timeout: 30, pollers: x}\n",
		"bus: {stream: {enabled: false, max_age: 720h, sync: always}}\n",
		"x: &a {y: 1}\ngateway:\n  <<: *a\n",
		"gateway: &g\n  <<: *g\n",
		"apps: &a [*a]\n",
		"a: &a [*a, *a]\nb: &b [*a, *a]\n",
		"- 1\n",
		"listen: ':1'\n---\nlisten: ':2'\n",
		"log: {level: info\n",
		"? [complex, key]\n: value\n",
		"gateway:\n  pollers: 99999999999999999999\n",
		clusterYAML,
		"cluster: {name: c, node_name: n, routes: [a:1, b:1, 'c:1'], route_listen: ':1', seeds: [[x]]}\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := Load(path, LoadOptions{})
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted an invalid config: %v", err)
		}
		_ = app.NewTable(c.Apps)
	})
}

// FuzzEnvApps feeds arbitrary text to HERALD_APPS and other variables.
func FuzzEnvApps(f *testing.F) {
	f.Add(`[{"id":"a","key":"k","secret":"s"}]`, "30s")
	f.Add("- id: a\n  key: k\n  secret: s\n", "2m")
	f.Add("[]", "x")
	f.Add("{", "")
	f.Fuzz(func(t *testing.T, apps, timeout string) {
		env := []string{"HERALD_APPS=" + apps, "HERALD_GATEWAY_ACTIVITY_TIMEOUT=" + timeout}
		c, _, err := Load("", LoadOptions{Env: env})
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("Load accepted an invalid config: %v", err)
			}
		}
	})
}
