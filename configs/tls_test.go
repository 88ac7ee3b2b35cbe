package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key under dir with the
// prefix and returns their paths.
func writePair(t *testing.T, dir, prefix string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, prefix+"cert.pem"), filepath.Join(dir, prefix+"key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestTLSKeys: a usable pair validates; each bad one is an error naming
// the key and the file.
func TestTLSKeys(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "a-")
	_, otherKey := writePair(t, dir, "b-")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name     string
		tls      TLS
		key, has string // "" key: valid
	}{
		{"off", TLS{}, "", ""},
		{"pair", TLS{CertFile: cert, KeyFile: key}, "", ""},
		{"cert alone", TLS{CertFile: cert}, "tls.key_file", "must be set"},
		{"key alone", TLS{KeyFile: key}, "tls.cert_file", "must be set"},
		{"missing cert", TLS{CertFile: missing, KeyFile: key}, "tls.cert_file", missing},
		{"missing key", TLS{CertFile: cert, KeyFile: missing}, "tls.key_file", missing},
		{"not PEM", TLS{CertFile: garbage, KeyFile: key}, "tls.cert_file", garbage},
		{"key of another cert", TLS{CertFile: cert, KeyFile: otherKey}, "tls.key_file", otherKey},
		{"key is a cert", TLS{CertFile: cert, KeyFile: cert}, "tls.key_file", cert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.TLS = tc.tls
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			ke, ok := err.(*KeyError)
			if !ok || ke.Key != tc.key || !strings.Contains(ke.Problem, tc.has) {
				t.Fatalf("Validate: %v, want %s with %q", err, tc.key, tc.has)
			}
		})
	}
}
