package configs

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"os"
)

// TLS serves the client port (WebSocket and REST) over TLS: wss:// and
// https:// on listen, for deployments without a load balancer in front
// (docs/deploy.md "TLS"). Both keys empty (the default): plain ws:// and
// http://. The certificate is read again on every reload
// (node/reload.go); turning TLS on or off needs a restart.
type TLS struct {
	CertFile string `yaml:"cert_file"` // default "": PEM certificate chain, leaf first
	KeyFile  string `yaml:"key_file"`  // default "": PEM private key of the leaf
}

// Enabled reports whether the client port serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// LoadCertificate reads and parses the certificate and key; an error names
// the key and the file. Validate calls it, and the node again when it
// (re)loads the certificate.
func (t TLS) LoadCertificate() (*tls.Certificate, error) {
	if err := t.loadCheck(); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return nil, keyErr("tls.cert_file", fmt.Sprintf("cannot read %s: %v", quote(t.CertFile), err))
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		return nil, keyErr("tls.key_file", fmt.Sprintf("cannot read %s: %v", quote(t.KeyFile), err))
	}
	if !hasPEM(certPEM, "CERTIFICATE") {
		return nil, keyErr("tls.cert_file", fmt.Sprintf("%s holds no PEM CERTIFICATE block", quote(t.CertFile)))
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The certificate's PEM parsed, so what is left is the key: none,
		// unreadable, or not the certificate's.
		return nil, keyErr("tls.key_file", fmt.Sprintf("%s with certificate %s: %v", quote(t.KeyFile), quote(t.CertFile), err))
	}
	return &cert, nil
}

func (t TLS) loadCheck() *KeyError {
	switch {
	case t.CertFile == "":
		return keyErr("tls.cert_file", "must be set with tls.key_file")
	case t.KeyFile == "":
		return keyErr("tls.key_file", "must be set with tls.cert_file")
	}
	return nil
}

func (t TLS) check() *KeyError {
	if !t.Enabled() {
		return nil
	}
	if _, err := t.LoadCertificate(); err != nil {
		return err.(*KeyError)
	}
	return nil
}

// hasPEM reports whether b holds a PEM block of the type.
func hasPEM(b []byte, typ string) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if blk.Type == typ {
			return true
		}
	}
}
