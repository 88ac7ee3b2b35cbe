package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/client"
	"herald/internal/testkit"
)

// futureConfig is a config written for a newer Herald: keys this binary
// does not know at every level, inside apps[], their nats block and their
// webhooks[] too. It must boot this binary with warnings (a rollback must
// never be blocked by a config), and fail check-config --strict.
const futureConfig = `
log:
  level: info
  sampling: 0.5          # unknown
admin:
  listen: 127.0.0.1:0
  allow_from: [10.0.0.0/8] # unknown
gateway:
  compression: zstd      # unknown
future_block:            # unknown, a whole block
  knob: 1
apps:
  - id: app-id
    key: app-key
    secret: app-secret
    quota_tier: gold     # unknown
    nats:
      jwt_issuer: none   # unknown
    webhooks:
      - url: http://127.0.0.1:9/hook
        event_types: [channel_occupied]
        signing: v2      # unknown
`

var futureKeys = []string{"log.sampling", "admin.allow_from", "gateway.compression", "future_block",
	"apps[0].quota_tier", "apps[0].nats.jwt_issuer", "apps[0].webhooks[0].signing"}

// heraldCmd runs the binary with args and returns its output and exit code.
func heraldCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(heraldBinary(t), args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("herald %s: %v", strings.Join(args, " "), err)
	return "", -1
}

// TestOperations runs the real binary with a config from the future, then
// reloads it by SIGHUP and by herald reload, and reads herald status.
func TestOperations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(futureConfig)

	out, code := heraldCmd(t, "check-config", "--strict", "--config", path)
	if code != 1 {
		t.Fatalf("check-config --strict: exit %d\n%s", code, out)
	}
	for _, k := range futureKeys {
		if !strings.Contains(out, k) {
			t.Errorf("check-config --strict does not name %s:\n%s", k, out)
		}
	}
	if out, code := heraldCmd(t, "check-config", "--config", path); code != 0 || !strings.Contains(out, "config ok") {
		t.Fatalf("check-config: exit %d\n%s", code, out)
	}

	h := startHerald(t, "--config", path) // boots: the unknown keys are warnings
	for _, k := range futureKeys {
		if !strings.Contains(h.Output(), k) {
			t.Errorf("serve logged no warning for %s", k)
		}
	}
	// The node is ready a moment before it logs its start line.
	adminURL := adminURL(t, h.Output)
	rest := func(id, secret string) int {
		t.Helper()
		r := &client.REST{BaseURL: "http://" + h.Addr, AppID: id, Key: id + "-key", Secret: secret}
		if id == "app-id" {
			r.Key = "app-key"
		}
		status, _, err := r.Trigger(t.Context(), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"c"}})
		if err != nil {
			t.Fatal(err)
		}
		return status
	}

	// SIGHUP: an app added.
	withShop := futureConfig + "  - {id: shop, key: shop-key, secret: shop-1}\n"
	write(withShop)
	if err := h.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(h.Output(), "SIGHUP: config reloaded") {
			return errors.New("no reload logged after SIGHUP")
		}
		return nil
	})
	if !strings.Contains(h.Output(), "apps added: shop") {
		t.Fatalf("the SIGHUP reload did not log the added app:\n%s", h.Output())
	}
	if s := rest("shop", "shop-1"); s != 200 {
		t.Fatalf("REST of the app added by SIGHUP: %d", s)
	}

	// herald reload: the secret rotated, the old one kept for the overlap.
	write(futureConfig + "  - {id: shop, key: shop-key, secret: shop-2, previous_secrets: [shop-1]}\n")
	out, code = heraldCmd(t, "reload", "--admin", adminURL)
	if code != 0 || !strings.Contains(out, "apps changed: shop") {
		t.Fatalf("herald reload: exit %d\n%s", code, out)
	}
	if rest("shop", "shop-1") != 200 || rest("shop", "shop-2") != 200 {
		t.Fatal("both secrets must be accepted during the overlap")
	}

	// A bad value: refused with the key, exit 1, the old config stays.
	write(futureConfig + "  - {id: shop, key: shop-key, secret: shop-2, max_connections: -1}\n")
	out, code = heraldCmd(t, "reload", "--admin", adminURL)
	if code != 1 || !strings.Contains(out, "apps[1].max_connections") || !strings.Contains(out, path) {
		t.Fatalf("herald reload of a bad config: exit %d\n%s", code, out)
	}
	if rest("shop", "shop-1") != 200 {
		t.Fatal("the refused reload changed the running config")
	}

	out, code = heraldCmd(t, "status", "--admin", adminURL)
	if code != 0 || !strings.Contains(out, "shop") || !strings.Contains(out, "apps[1].max_connections") || !strings.Contains(out, "2 reload(s)") {
		t.Fatalf("herald status: exit %d\n%s", code, out)
	}
	out, code = heraldCmd(t, "status", "--json", "--admin", adminURL)
	var st struct {
		Apps []struct {
			ID string `json:"id"`
		} `json:"apps"`
		Config struct {
			File string `json:"file"`
		} `json:"config"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Apps) != 2 || st.Config.File != path {
		t.Fatalf("herald status --json: exit %d\n%s", code, out)
	}
}
