package configs

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

func b64key(b byte, n int) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, n))
}

func TestClosedClusterKeys(t *testing.T) {
	k1, k2 := b64key(1, 32), b64key(2, 16)
	yaml := clusterYAML + "  secret_key: " + k1 + "\n  previous_secret_keys: [" + k2 + "]\n" +
		"  route_auth: a-long-route-password\n  previous_route_auth: [an-older-route-password]\n"
	c, _ := mustLoad(t, writeConfig(t, yaml), LoadOptions{Strict: true})
	keys := c.Cluster.GossipKeys()
	if len(keys) != 2 || !bytes.Equal(keys[0], bytes.Repeat([]byte{1}, 32)) || !bytes.Equal(keys[1], bytes.Repeat([]byte{2}, 16)) {
		t.Fatalf("GossipKeys = %v", keys)
	}
	if got := c.Cluster.RoutePasswords(); !slices.Equal(got, []string{"a-long-route-password", "an-older-route-password"}) {
		t.Fatalf("RoutePasswords = %v", got)
	}

	// From the environment; no padding is fine too.
	c, _ = mustLoad(t, writeConfig(t, clusterYAML), LoadOptions{Env: []string{
		"HERALD_CLUSTER_SECRET_KEY=" + strings.TrimRight(b64key(3, 32), "="),
		"HERALD_CLUSTER_ROUTE_AUTH=route-password-from-env",
	}})
	if keys := c.Cluster.GossipKeys(); len(keys) != 1 || keys[0][0] != 3 || len(keys[0]) != 32 {
		t.Fatalf("GossipKeys from env = %v", keys)
	}
	if c.Cluster.RouteAuth != "route-password-from-env" {
		t.Fatalf("route_auth from env = %q", c.Cluster.RouteAuth)
	}

	// Off by default.
	if d := Default(); d.Cluster.GossipKeys() != nil || d.Cluster.RoutePasswords() != nil {
		t.Fatal("Default() has cluster secrets")
	}
}

// TestClosedClusterBadValues: each bad value is refused with its key and
// file named, and the error never carries the value.
func TestClosedClusterBadValues(t *testing.T) {
	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQ" // "secret-secret-secret": 20 bytes
	for _, tc := range []struct {
		name, add, key, problem string
	}{
		{"not base64", "  secret_key: 'not!base64?secret'\n", "cluster.secret_key", "is not base64"},
		{"20 bytes", "  secret_key: " + secret + "\n", "cluster.secret_key", "decodes to 20 bytes"},
		{"previous without primary", "  previous_secret_keys: [" + b64key(1, 32) + "]\n", "cluster.previous_secret_keys", "needs secret_key"},
		{"previous repeats", "  secret_key: " + b64key(1, 32) + "\n  previous_secret_keys: [" + b64key(1, 32) + "]\n",
			"cluster.previous_secret_keys[0]", "is the same key as cluster.secret_key"},
		{"bad previous", "  secret_key: " + b64key(1, 32) + "\n  previous_secret_keys: [" + secret + "]\n",
			"cluster.previous_secret_keys[0]", "decodes to 20 bytes"},
		{"short route_auth", "  route_auth: short-secret\n", "cluster.route_auth", "at least 16"},
		{"previous route without route_auth", "  previous_route_auth: [a-long-route-password]\n", "cluster.previous_route_auth", "needs route_auth"},
		{"route_tls without key", "  route_tls: {cert_file: /nonexistent/c.pem, ca_file: /nonexistent/ca.pem}\n", "cluster.route_tls.key_file", "must be set"},
		{"route_tls missing files", "  route_tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem, ca_file: /nonexistent/ca.pem}\n",
			"cluster.route_tls.cert_file", "cannot load"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, clusterYAML+tc.add)
			_, _, err := Load(path, LoadOptions{})
			if err == nil {
				t.Fatal("loaded")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, tc.key+": ") || !strings.Contains(msg, tc.problem) {
				t.Fatalf("error %q, want the file, %s and %q", msg, tc.key, tc.problem)
			}
			for _, v := range []string{"not!base64?secret", secret, "short-secret", b64key(1, 32)} {
				if strings.Contains(msg, v) {
					t.Fatalf("error %q carries the value", msg)
				}
			}
		})
	}
}

// TestClosedClusterDiff: a changed key shows in a reload's diff by name.
func TestClosedClusterDiff(t *testing.T) {
	a, b := Default(), Default()
	b.Cluster.SecretKey, b.Cluster.RouteAuth = b64key(1, 32), "a-long-route-password"
	got := Diff(a, b)
	if !slices.Equal(got, []string{"cluster.secret_key", "cluster.route_auth"}) {
		t.Fatalf("Diff = %v", got)
	}
}

func TestNewSecretKey(t *testing.T) {
	a, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecretKey()
	if a == b {
		t.Fatal("two keys are equal")
	}
	if k, problem := decodeKey(a); problem != "" || len(k) != 32 {
		t.Fatalf("NewSecretKey = %q: %d bytes, %s", a, len(k), problem)
	}
}
