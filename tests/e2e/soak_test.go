package e2e

import (
	"encoding/json"
	"os"
	"testing"
)

// TestSoak runs tests/js/soak.test.mjs against one Herald node with the
// feature apps: rounds of real pusher-js and Laravel Echo clients connecting,
// subscribing to every channel kind, receiving events, whispering and
// leaving (politely or by dropping the socket). Every subscription must be
// acknowledged and every event delivered. HERALD_SOAK_ROUNDS and
// HERALD_SOAK_PARALLEL make it longer (the default keeps it within `make
// test`'s budget).
func TestSoak(t *testing.T) {
	skipUnderRace(t)
	h := startFeatureHerald(t)
	apps, err := json.Marshal(featureApps)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"HERALD_FEATURE_APPS=" + string(apps)}
	for _, k := range []string{"HERALD_SOAK_ROUNDS", "HERALD_SOAK_PARALLEL"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	runNodeTests(t, h, env, "tests/js/soak.test.mjs")
}
