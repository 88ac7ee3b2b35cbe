package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
	"herald/protocol"
)

// testCert writes a self-signed certificate for 127.0.0.1 with the serial
// to dir (cert.pem, key.pem, overwriting) and returns it parsed.
func testCert(t testing.TB, dir string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "herald test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(serial) * 24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", "CERTIFICATE", der)
	write("key.pem", "EC PRIVATE KEY", kder)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsNode starts a node serving TLS with a fresh certificate (serial 1) in
// dir and returns a client TLS config trusting it.
func tlsNode(t *testing.T, dir string) (*Node, *x509.CertPool) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(testCert(t, dir, 1))
	n := startNode(t, func(c *configs.Config) {
		c.TLS = configs.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	})
	return n, pool
}

func httpsREST(n *Node, tc *tls.Config) *client.REST {
	r := rest(n)
	r.BaseURL = "https://" + n.Addr().String()
	r.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	return r
}

// peerSerial is the serial of the certificate the node serves now.
func peerSerial(t *testing.T, n *Node) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", n.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSWebSocketAndREST: with tls.cert_file and tls.key_file the client
// port is wss:// and https://: a WebSocket client verifying the certificate
// connects and subscribes, and an event published over https:// reaches
// it; plain ws:// to the same port gets no upgrade.
func TestTLSWebSocketAndREST(t *testing.T) {
	n, pool := tlsNode(t, t.TempDir())
	tc := &tls.Config{RootCAs: pool}
	url := "wss://" + n.Addr().String() + "/app/app-key?protocol=7"
	c, err := client.Dial(ctxT(t), url, client.Options{TLSConfig: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctxT(t), "orders"); err != nil {
		t.Fatal(err)
	}
	r := httpsREST(n, tc)
	defer r.HTTP.CloseIdleConnections()
	for i, data := range []string{`{"n":1}`, strings.Repeat("x", 10_000)} {
		status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "shipped", Data: data, Channels: []string{"orders"}})
		if err != nil || status != 200 {
			t.Fatalf("trigger %d over https: %d %s %v", i, status, body, err)
		}
		ev, err := c.WaitFor(ctxT(t), "shipped", "orders")
		if err != nil || ev.Data != data {
			t.Fatalf("event %d over wss: %v (%d bytes)", i, err, len(ev.Data))
		}
	}
	if _, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{DialTimeout: 2 * time.Second}); err == nil {
		t.Fatal("plain ws:// upgrade accepted on a TLS port")
	}
	// The node's stop closes the wss:// socket with 4200 like a plain one,
	// and the bridge's goroutines end (startNode checks for leaks).
	n.StartDrain()
	var ce *client.CloseError
	if _, err := c.WaitFor(ctxT(t), "never", ""); !errors.As(err, &ce) || ce.Code != 4200 {
		t.Fatalf("drain over wss: %v, want close 4200", err)
	}
}

// TestTLSReloadCertificate: a reload reads the certificate files again; new
// connections get the new certificate, an open socket keeps working, and a
// bad file refuses the reload naming the key and the file, the old
// certificate still served.
func TestTLSReloadCertificate(t *testing.T) {
	dir := t.TempDir()
	n, pool := tlsNode(t, dir)
	old, err := client.Dial(ctxT(t), "wss://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Subscribe(ctxT(t), "news"); err != nil {
		t.Fatal(err)
	}
	pool.AddCert(testCert(t, dir, 2))
	ch, err := n.Reload(withApps(n, n.cfg.Apps...))
	if err != nil {
		t.Fatal(err)
	}
	if ch.TLSCertNotAfter == "" || len(ch.NeedsRestart) != 0 {
		t.Fatalf("reload changes %+v: want tls_cert_not_after and nothing needing a restart", ch)
	}
	if got := peerSerial(t, n); got != 2 {
		t.Fatalf("new connection got certificate %d after the reload, want 2", got)
	}
	r := httpsREST(n, &tls.Config{RootCAs: pool})
	defer r.HTTP.CloseIdleConnections()
	if status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "after", Channels: []string{"news"}}); err != nil || status != 200 {
		t.Fatalf("trigger: %d %s %v", status, body, err)
	}
	if ev, err := old.WaitFor(ctxT(t), "e", "news"); err != nil || ev.Data != "after" {
		t.Fatalf("socket opened before the reload: %v", err)
	}

	bad := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = n.Reload(withApps(n, n.cfg.Apps...))
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("reload with a bad certificate: %v, want an error naming tls.cert_file and %s", err, bad)
	}
	if got := peerSerial(t, n); got != 2 {
		t.Fatalf("certificate %d served after a refused reload, want 2", got)
	}
}

// TestTLSMinVersion: TLS 1.1 and older are refused, 1.2 accepted.
func TestTLSMinVersion(t *testing.T) {
	n, _ := tlsNode(t, t.TempDir())
	c, err := tls.Dial("tcp", n.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake accepted")
	}
	c, err = tls.Dial("tcp", n.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	c.Close()
}

// TestTLSBadCertificateRefusesStart: a node with an unreadable certificate
// does not start, and says which key and file.
func TestTLSBadCertificateRefusesStart(t *testing.T) {
	cfg := configs.Loopback(t.TempDir())
	cfg.TLS = configs.TLS{CertFile: filepath.Join(t.TempDir(), "missing.pem"), KeyFile: "key.pem"}
	n, err := Start(cfg, quiet)
	if err == nil {
		t.Cleanup(func() { _ = n.Stop(ctxT(t)) })
		t.Fatal("node started with a missing certificate")
	}
	if !strings.Contains(err.Error(), "tls.cert_file") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("error %v: want tls.cert_file and the file", err)
	}
}

// TestTLSSlowConsumer: a wss:// socket that never reads fills its bridge
// and the poller's write queue and is closed as a slow consumer (4100),
// counted out of its channel at once, like a plain one; a bystander on the
// same channel keeps receiving.
func TestTLSSlowConsumer(t *testing.T) {
	n, pool := tlsNode(t, t.TempDir())
	by, err := client.Dial(ctxT(t), "wss://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer by.Close()
	if err := by.Subscribe(ctxT(t), "hose"); err != nil {
		t.Fatal(err)
	}
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for range 3 {
		c, err := tls.Dial("tcp", n.Addr().String(), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
		req := "GET /app/app-key?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
		sub := wsFrame(true, 0, 1, []byte(`{"event":"pusher:subscribe","data":{"channel":"hose"}}`), true)
		if _, err := c.Write(append([]byte(req), sub...)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return n.Gateway().SubscriptionCount("app-id", "hose") == 4 })
	before := n.Gateway().Stats().SlowConsumers
	data := strings.Repeat("z", 8000)
	got := 0
	for i := 0; n.Gateway().Stats().SlowConsumers < before+3; i++ {
		if i > 5000 {
			t.Fatal("no slow-consumer closes")
		}
		ps := make([]bus.Publication, 8)
		for j := range ps {
			ps[j] = bus.Publication{App: "app-id", Channel: "hose", Payload: protocol.AppendEvent(nil, "e", "hose", data, "")}
		}
		if _, err := n.Bus().PublishBatch(ctxT(t), ps); err != nil {
			t.Fatal(err)
		}
		for range ps {
			if _, err := by.WaitFor(ctxT(t), "e", "hose"); err != nil {
				t.Fatalf("bystander after %d events: %v", got, err)
			}
			got++
		}
	}
	waitFor(t, func() bool { return n.Gateway().SubscriptionCount("app-id", "hose") == 1 })
	t.Logf("3 wss:// slow consumers closed after %d events of 8000 bytes", got)
}

// TestTLSHandshakeDeadline: gateway.handshake_timeout covers the TLS
// handshake too: a socket that sends nothing, one that stops in the middle
// of its ClientHello and one that completes TLS but sends no request are
// all cut.
func TestTLSHandshakeDeadline(t *testing.T) {
	dir := t.TempDir()
	testCert(t, dir, 1)
	n := startNode(t, func(c *configs.Config) {
		c.TLS = configs.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
		c.Gateway.HandshakeTimeout = configs.Duration(300 * time.Millisecond)
	})
	addr := n.Addr().String()
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	partial, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}); err != nil { // a record header and one byte
		t.Fatal(err)
	}
	quiet, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	for name, c := range map[string]net.Conn{"silent": silent, "partial ClientHello": partial, "no request after TLS": quiet} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		var err error
		for err == nil {
			_, err = c.Read(buf)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still open after 5 s with handshake_timeout 300ms", name)
		}
	}
}
