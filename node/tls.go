package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync/atomic"

	"herald/configs"
)

// certs is the client port's certificate when tls.cert_file and
// tls.key_file are set: every TLS handshake reads it through
// GetCertificate, and a reload swaps it (reloadCert), so new connections
// get the new certificate while open ones keep the session they have.
type certs struct {
	cur atomic.Pointer[tls.Certificate]
}

func (c *certs) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// serverConfig is the client port's TLS configuration: TLS 1.2 at least
// (the Go defaults above it), HTTP/1.1 only (the WebSocket upgrade and
// fasthttp speak nothing else).
func (c *certs) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.get,
		NextProtos:     []string{"http/1.1"},
	}
}

// listenTLS wraps the client listener in TLS when the config asks for it
// (configs.TLS). The plain listener stays underneath, so the patient
// accept (listener.go) still applies; the TLS handshake itself runs on the
// first read, under the HTTP server's handshake deadline
// (gateway.handshake_timeout).
func (n *Node) listenTLS(ln net.Listener) (net.Listener, error) {
	if !n.cfg.TLS.Enabled() {
		return ln, nil
	}
	cert, err := n.cfg.TLS.LoadCertificate()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	n.certs = &certs{}
	n.certs.cur.Store(cert)
	n.log.Info("client port serves TLS (wss://, https://)", "cert_file", n.cfg.TLS.CertFile, "not_after", notAfter(cert))
	return tls.NewListener(ln, n.certs.serverConfig()), nil
}

// reloadCert reads the certificate again from the new config, before
// anything of the reload is applied, so that a bad file refuses the reload
// whole. It returns nil when the client port serves no TLS (it was started
// without, or the new config turns it off: both need a restart).
func (n *Node) reloadCert(cfg *configs.Config) (*tls.Certificate, error) {
	if n.certs == nil || !cfg.TLS.Enabled() {
		return nil, nil
	}
	cert, err := cfg.TLS.LoadCertificate()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return cert, nil
}

// swapCert serves cert to new connections and reports, for the reload's
// Changes, the new leaf's expiry when the leaf changed ("" otherwise).
func (n *Node) swapCert(cert *tls.Certificate) string {
	if cert == nil {
		return ""
	}
	old := n.certs.cur.Swap(cert)
	if old != nil && len(old.Certificate) > 0 && len(cert.Certificate) > 0 && bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return ""
	}
	na := notAfter(cert)
	n.log.Info("config reload: new TLS certificate served to new connections", "not_after", na)
	return na
}

func notAfter(c *tls.Certificate) string {
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return ""
	}
	return leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z")
}
