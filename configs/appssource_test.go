package configs

import (
	"strings"
	"testing"
)

// TestAppsSource: apps_source defaults to config, takes registry from the
// file or HERALD_APPS_SOURCE, and refuses anything else naming the key.
func TestAppsSource(t *testing.T) {
	if c := Default(); c.AppsSource != AppsFromConfig {
		t.Fatalf("default %q", c.AppsSource)
	}
	c, _, err := Load("", LoadOptions{Env: []string{"HERALD_APPS_SOURCE=registry"}})
	if err != nil || c.AppsSource != AppsFromRegistry {
		t.Fatalf("from the environment: %q %v", c.AppsSource, err)
	}
	c = Default()
	c.AppsSource = "mysql"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "apps_source") {
		t.Fatalf("a bad source: %v", err)
	}
}
