package configs

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// A closed cluster: cluster.secret_key (memberlist gossip, encrypted and
// authenticated) and cluster.route_auth (the NATS routes' password), with
// previous_secret_keys and previous_route_auth for rotation
// (docs/deploy.md, "A closed cluster"). Their values are secrets: no error
// here quotes them, Diff reports only key names, and status reports only
// whether they are set.

// RouteTLS is cluster.route_tls: mutual TLS on the NATS routes. Every
// node presents CertFile (with KeyFile) and accepts only a peer whose
// certificate CAFile signed, both ways; the certificate must name the
// address other nodes dial (an IP or DNS SAN of the route address) and be
// usable as both server and client certificate. All three or none.
type RouteTLS struct {
	CertFile string `yaml:"cert_file"` // PEM certificate (chain) of this node; default "" = routes in clear
	KeyFile  string `yaml:"key_file"`  // PEM private key of CertFile
	CAFile   string `yaml:"ca_file"`   // PEM CA certificate(s) peers' certificates must chain to
}

// Enabled reports whether route TLS is configured.
func (r RouteTLS) Enabled() bool { return r.CertFile != "" || r.KeyFile != "" || r.CAFile != "" }

// check loads the files, so that a bad one fails at load with its key.
func (r RouteTLS) check(p string) *KeyError {
	if !r.Enabled() {
		return nil
	}
	for _, f := range []struct{ key, val string }{{"cert_file", r.CertFile}, {"key_file", r.KeyFile}, {"ca_file", r.CAFile}} {
		if f.val == "" {
			return keyErr(p+"."+f.key, "must be set with the other route_tls keys (cert_file, key_file and ca_file together)")
		}
	}
	if _, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile); err != nil {
		return keyErr(p+".cert_file", fmt.Sprintf("cannot load the certificate with key_file: %v", err))
	}
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		return keyErr(p+".ca_file", err.Error())
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return keyErr(p+".ca_file", "holds no PEM certificate")
	}
	return nil
}

// MinRouteAuthLen is the shortest cluster.route_auth accepted: a shared
// password guessed over the network must not be short.
const MinRouteAuthLen = 16

// GossipKeys returns the decoded gossip keys, secret_key first (the key a
// node sends with), then previous_secret_keys; nil when secret_key is "".
// The config must have passed Validate.
func (c *Cluster) GossipKeys() [][]byte {
	if c.SecretKey == "" {
		return nil
	}
	keys := make([][]byte, 0, 1+len(c.PreviousSecretKeys))
	for _, s := range append([]string{c.SecretKey}, c.PreviousSecretKeys...) {
		k, _ := decodeKey(s)
		keys = append(keys, k)
	}
	return keys
}

// RoutePasswords returns route_auth then previous_route_auth; nil when
// route_auth is "".
func (c *Cluster) RoutePasswords() []string {
	if c.RouteAuth == "" {
		return nil
	}
	return append([]string{c.RouteAuth}, c.PreviousRouteAuth...)
}

// NewSecretKey returns a fresh 32-byte key in the encoding secret_key wants
// (herald keygen).
func NewSecretKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("configs: new secret key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// decodeKey decodes a base64 key (standard encoding, padding optional;
// surrounding spaces ignored) and checks its length. The error never
// carries the value.
func decodeKey(s string) ([]byte, string) {
	s = strings.TrimSpace(s)
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if k, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, "is not base64 (the standard encoding `herald keygen` prints)"
		}
	}
	switch len(k) {
	case 16, 24, 32:
		return k, ""
	}
	return nil, fmt.Sprintf("decodes to %d bytes; a key is 16, 24 or 32 bytes (AES-128, -192, -256): make one with `herald keygen`", len(k))
}

// checkClosed checks the closed-cluster keys of a clustered node.
func checkClosed(p string, cl *Cluster) *KeyError {
	seen := map[string]string{}
	if cl.SecretKey != "" {
		k, problem := decodeKey(cl.SecretKey)
		if problem != "" {
			return keyErr(p+".secret_key", problem)
		}
		seen[string(k)] = p + ".secret_key"
	}
	if len(cl.PreviousSecretKeys) > 0 && cl.SecretKey == "" {
		return keyErr(p+".previous_secret_keys", "needs secret_key: the keys listed here are only accepted, secret_key is the one sent with")
	}
	for i, s := range cl.PreviousSecretKeys {
		key := fmt.Sprintf("%s.previous_secret_keys[%d]", p, i)
		k, problem := decodeKey(s)
		if problem != "" {
			return keyErr(key, problem)
		}
		if other, dup := seen[string(k)]; dup {
			return keyErr(key, "is the same key as "+other)
		}
		seen[string(k)] = key
	}
	if cl.RouteAuth != "" && len(cl.RouteAuth) < MinRouteAuthLen {
		return keyErr(p+".route_auth", fmt.Sprintf("is %d characters; at least %d are required (`herald keygen` makes one)", len(cl.RouteAuth), MinRouteAuthLen))
	}
	if len(cl.PreviousRouteAuth) > 0 && cl.RouteAuth == "" {
		return keyErr(p+".previous_route_auth", "needs route_auth: the passwords listed here are only accepted, route_auth is the one sent")
	}
	for i, s := range cl.PreviousRouteAuth {
		if len(s) < MinRouteAuthLen {
			return keyErr(fmt.Sprintf("%s.previous_route_auth[%d]", p, i), fmt.Sprintf("is %d characters; at least %d are required", len(s), MinRouteAuthLen))
		}
	}
	return cl.RouteTLS.check(p + ".route_tls")
}
