package bus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/internal/testkit"
)

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRouteAuthRefusesWrongPassword runs a 3-node cluster on loopback
// whose routes need the cluster's password, then starts one node again
// with another password: it gets no route to either of the others, so it
// never sees a meta leader and its Start fails, while the two others keep
// their cluster (events cross between them), log the refusal and count
// it. No password appears in any log line, at debug level included.
//
// The stranger takes the place of a member because a fresh JetStream
// cluster elects its first meta leader only once every configured node has
// been seen; after that a majority is enough.
func TestRouteAuthRefusesWrongPassword(t *testing.T) {
	const good, bad = "route-password-of-the-cluster", "route-password-of-a-stranger"
	cfgs := clusterConfigs(t, 3)
	logs := make([]*logBuffer, 3)
	for i := range cfgs {
		logs[i] = &logBuffer{}
		cfgs[i].Logger = slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfgs[i].Cluster.Passwords = []string{good}
	}
	members := startNodes(t, cfgs)
	members[2].close(t)
	stranger := cfgs[2]
	stranger.Cluster.Passwords = []string{bad}
	stranger.ReadyTimeout = 4 * time.Second
	if b, err := Start(stranger); err == nil {
		b.Close()
		t.Fatal("the node with the wrong route password started: it reached a meta leader")
	} else if !strings.Contains(err.Error(), "JetStream not ready") {
		t.Fatalf("the node with the wrong route password: Start = %v, want JetStream not ready", err)
	}
	nodes := members[:2]
	for _, n := range nodes {
		if p := n.bus.Peers(); p != 2 {
			t.Errorf("%s: Peers = %d, want 2 (the other good node and itself)", n.cfg.ServerName, p)
		}
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if r := nodes[0].bus.RoutesRefused() + nodes[1].bus.RoutesRefused(); r == 0 {
			return fmt.Errorf("no route refused yet")
		}
		return nil
	})

	// Events cross between the good nodes.
	nodes[1].bus.Subscribe("app1", "across")
	waitInterest(t, []*Bus{nodes[0].bus}, "herald.app1.live.across", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[0].bus.Publish(ctx, Publication{App: "app1", Channel: "across", Payload: []byte(`{"n":1}`)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nodes[1].sink.waitCount(t, "across", 1)

	all := logs[0].String() + logs[1].String()
	if !strings.Contains(all, "bus: refused a NATS route: wrong cluster.route_auth password") {
		t.Errorf("no refusal logged by the good nodes; their log:\n%s", all)
	}
	all += logs[2].String()
	for _, pw := range []string{good, bad} {
		if strings.Contains(all, pw) {
			t.Errorf("a log line carries a route password %q", pw)
		}
	}
}

// TestRouteAuthRotation rotates the route password of a running 3-node
// cluster without ever refusing a node: first every node accepts the new
// password besides the old (live, SetRoutePasswords), then each node in
// turn restarts sending the new one, then the old one is dropped.
func TestRouteAuthRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts three clustered nodes")
	}
	const old, next = "the-old-route-password", "the-new-route-password"
	cfgs := clusterConfigs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.Passwords = []string{old}
	}
	nodes := startNodes(t, cfgs)
	for _, n := range nodes {
		if !n.bus.SetRoutePasswords([]string{old, next}) {
			t.Fatalf("%s: SetRoutePasswords did not apply", n.cfg.ServerName)
		}
	}
	for _, n := range nodes {
		n.close(t)
		n.cfg.Cluster.Passwords = []string{next, old}
		n.restart(t)
		testkit.WaitFor(t, 15*time.Second, func() error {
			for _, m := range nodes {
				if p := m.bus.Peers(); p != 3 {
					return fmt.Errorf("%s: Peers = %d after restarting %s", m.cfg.ServerName, p, n.cfg.ServerName)
				}
			}
			return nil
		})
	}
	for _, n := range nodes {
		n.bus.SetRoutePasswords([]string{next})
		if r := n.bus.RoutesRefused(); r != 0 {
			t.Errorf("%s: %d routes refused during the rotation, want 0", n.cfg.ServerName, r)
		}
	}
}

// grepLines returns the lines of s holding any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// testCA is a throwaway CA that signs route certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, "ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a route certificate and key for 127.0.0.1 (server and
// client use) and returns their files with the CA's.
func (ca *testCA) issue(t *testing.T, dir, name string) RouteTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	r := RouteTLS{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), CAFile: ca.file}
	writePEM(t, r.CertFile, "CERTIFICATE", der)
	writePEM(t, r.KeyFile, "PRIVATE KEY", kb)
	return r
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRouteTLS runs a 3-node cluster whose routes are in mutual TLS (and
// need the password): it forms and events cross; then one node starts
// again with a certificate from another CA and gets no route.
func TestRouteTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	cfgs := clusterConfigs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.Passwords = []string{"route-password-of-the-cluster"}
		cfgs[i].Cluster.TLS = ca.issue(t, dir, cfgs[i].ServerName)
	}
	nodes := startNodes(t, cfgs)
	for _, n := range nodes {
		// The route port speaks TLS before anything and wants a client
		// certificate: a TLS client without one reads nothing.
		d := &net.Dialer{Timeout: 2 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", n.cfg.Cluster.Listen, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			var line string
			line, err = bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil {
				t.Fatalf("%s: a TLS client without a certificate read %q", n.cfg.ServerName, line)
			}
		}
		if !strings.Contains(err.Error(), "certificate") { // "tls: certificate required" (1.3) or "bad certificate" (1.2)
			t.Fatalf("%s: the route port did not refuse for the missing certificate: %v", n.cfg.ServerName, err)
		}
	}
	nodes[1].bus.Subscribe("app1", "tls")
	waitInterest(t, []*Bus{nodes[0].bus}, "herald.app1.live.tls", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[0].bus.Publish(ctx, Publication{App: "app1", Channel: "tls", Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nodes[1].sink.waitCount(t, "tls", 1)

	nodes[2].close(t)
	other := newTestCA(t, t.TempDir())
	stranger := cfgs[2]
	stranger.Cluster.TLS = other.issue(t, dir, "stranger")
	stranger.ReadyTimeout = 4 * time.Second
	if b, err := Start(stranger); err == nil {
		b.Close()
		t.Fatal("a node with a certificate from another CA reached a meta leader")
	}
	for _, n := range nodes[:2] {
		if p := n.bus.Peers(); p != 2 {
			t.Errorf("%s: Peers = %d, want 2", n.cfg.ServerName, p)
		}
	}

	// A missing file is a config error at Start.
	bad := cfgs[0]
	bad.Cluster.TLS.KeyFile = ""
	if err := checkCluster(bad); !errors.Is(err, ErrClusterConfig) {
		t.Fatalf("route TLS without a key file: %v", err)
	}
}
