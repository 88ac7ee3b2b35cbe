package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/admin"
	"herald/app"
	"herald/bus"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// bystanders are raw WebSocket connections of one app that must survive
// every reload untouched: no frame at all may arrive on them (the activity
// timeout is 120 s, so not even a ping), and the node must count them all.
type bystanders struct {
	n     *Node
	appID string
	conns []net.Conn
}

func openBystanders(t *testing.T, n *Node, appID, key string, count int) *bystanders {
	t.Helper()
	b := &bystanders{n: n, appID: appID}
	t.Cleanup(func() {
		for _, c := range b.conns {
			c.Close()
		}
	})
	req := "GET /app/" + key + "?protocol=7 HTTP/1.1\r\n" + testkit.UpgradeHeaders + "\r\n"
	buf := make([]byte, 4096)
	for range count {
		c, err := net.Dial("tcp", n.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b.conns = append(b.conns, c)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		for !bytes.Contains(got, []byte("pusher:connection_established")) {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("bystander %d: %v after %q", len(b.conns), err, got)
			}
			got = append(got, buf[:k]...)
		}
	}
	b.check(t)
	return b
}

// check fails unless the node counts every bystander and none has received
// anything since its connection_established.
func (b *bystanders) check(t *testing.T) {
	t.Helper()
	if got := b.n.Gateway().AppConnections(b.appID); got != int64(len(b.conns)) {
		t.Fatalf("node counts %d connections of %s, want %d", got, b.appID, len(b.conns))
	}
	buf := make([]byte, 64)
	for i, c := range b.conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		k, err := c.Read(buf)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("bystander %d: read %d bytes %q, err %v: it was disturbed", i, k, buf[:k], err)
		}
	}
}

// closedWith reads c until it ends and returns why (a *client.CloseError
// when the server closed it).
func closedWith(t *testing.T, c *client.Conn) error {
	t.Helper()
	for {
		if _, err := c.Next(ctxT(t)); err != nil {
			return err
		}
	}
}

// appCfg is an app with its secret and previous secrets.
func appCfg(id, secret string, previous ...string) app.App {
	a := app.New(id, id+"-key", secret)
	a.PreviousSecrets = append([]string{}, previous...)
	return a
}

// withApps is the node's running config with another app list.
func withApps(n *Node, apps ...app.App) *configs.Config {
	c := *n.cfg
	c.Apps = apps
	return &c
}

// restAs signs a REST call for app with secret.
func restAs(n *Node, id, secret string) *client.REST {
	return &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: id, Key: id + "-key", Secret: secret}
}

func triggerStatus(t *testing.T, r *client.REST) int {
	t.Helper()
	status, _, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// privateAuth subscribes a new socket of app id to a private channel signed
// with secret, and a signed-in user with it too.
func privateAuth(t *testing.T, n *Node, id, secret string) error {
	t.Helper()
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/"+id+"-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := "private-rotation"
	if _, err := c.SubscribeAuth(ctxT(t), ch, client.SignChannel(id+"-key", secret, c.SocketID(), ch, ""), ""); err != nil {
		return err
	}
	data := `{"user_id":"u1"}`
	ch = "presence-rotation"
	_, err = c.SubscribeAuth(ctxT(t), ch, client.SignChannel(id+"-key", secret, c.SocketID(), ch, data), data)
	return err
}

// natsLogin connects as app id's NATS user and makes one API request.
func natsLogin(n *Node, id, password string) (*nats.Conn, error) {
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo(id, password), nats.CustomInboxPrefix(bus.InboxPrefix(id)), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	m, err := nc.Request(bus.APISubject(id, bus.APIEvents), publishBody, 5*time.Second)
	if err != nil || string(m.Data) != "{}" {
		nc.Close()
		return nil, fmt.Errorf("request as %s: %v %v", id, m, err)
	}
	return nc, nil
}

// TestReloadAppsAndRotation is the reload proof: an app added, a secret
// rotated with an overlap and then ended, and an app disabled, while 1,000
// sockets of another app stay connected and untouched.
func TestReloadAppsAndRotation(t *testing.T) {
	dev := app.New(configs.DevAppID, "app-key", configs.DevAppSecret)
	rot := appCfg("rot", "old-secret")
	off := appCfg("off", "off-secret")
	n := startNode(t, func(c *configs.Config) { c.Apps = []app.App{dev, rot, off} })
	by := openBystanders(t, n, dev.ID, dev.Key, 1000)

	offSocks := make([]*client.Conn, 3)
	for i := range offSocks {
		c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/off-key?protocol=7", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		offSocks[i] = c
	}
	// A socket from before the rotation signs with whatever its app's
	// secrets are now, not those it connected with.
	early, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/rot-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	earlyAuth := func(ch, secret string) error {
		_, err := early.SubscribeAuth(ctxT(t), ch, client.SignChannel("rot-key", secret, early.SocketID(), ch, ""), "")
		return err
	}
	oldNC, err := natsLogin(n, "rot", "old-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer oldNC.Close()

	// Reload 1: "fresh" added, rot's secret rotated (the old one still
	// accepted), "off" disabled.
	rot.Secret, rot.PreviousSecrets = "new-secret", []string{"old-secret"}
	f := false
	off.Enabled = &f
	fresh := appCfg("fresh", "fresh-secret")
	ch, err := n.Reload(withApps(n, dev, rot, off, fresh))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.AppsAdded, []string{"fresh"}) || !slices.Equal(ch.AppsChanged, []string{"rot"}) ||
		!slices.Equal(ch.AppsDisabled, []string{"off"}) || len(ch.AppsRemoved) != 0 || len(ch.NeedsRestart) != 0 || ch.ClosedSockets != 3 {
		t.Fatalf("changes %+v", ch)
	}
	for i, c := range offSocks {
		err := closedWith(t, c)
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 4003 {
			t.Fatalf("socket %d of the disabled app: %v, want close 4003", i, err)
		}
	}
	if code := (keyApp{n: n, a: off}).closeCode(t); code != 4003 {
		t.Fatalf("new socket of the disabled app: close %d, want 4003", code)
	}

	t.Run("the added app works", func(t *testing.T) {
		c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/fresh-key?protocol=7", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe(ctxT(t), "c"); err != nil {
			t.Fatal(err)
		}
		if s := triggerStatus(t, restAs(n, "fresh", "fresh-secret")); s != 200 {
			t.Fatalf("REST: %d", s)
		}
		if ev, err := c.WaitFor(ctxT(t), "e", "c"); err != nil || ev.Serial == 0 {
			t.Fatalf("event %+v %v (a serial: the app has its stream)", ev, err)
		}
		nc, err := natsLogin(n, "fresh", "fresh-secret")
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	})
	t.Run("both secrets are accepted during the overlap", func(t *testing.T) {
		for _, secret := range []string{"new-secret", "old-secret"} {
			if s := triggerStatus(t, restAs(n, "rot", secret)); s != 200 {
				t.Errorf("REST with %s: %d", secret, s)
			}
			if err := privateAuth(t, n, "rot", secret); err != nil {
				t.Errorf("channel auth with %s: %v", secret, err)
			}
			nc, err := natsLogin(n, "rot", secret)
			if err != nil {
				t.Errorf("NATS with %s: %v", secret, err)
				continue
			}
			nc.Close()
		}
		if err := earlyAuth("private-early-new", "new-secret"); err != nil {
			t.Errorf("an older socket, the new secret: %v", err)
		}
		if err := earlyAuth("private-early-old", "old-secret"); err != nil {
			t.Errorf("an older socket, the old secret: %v", err)
		}
		if s := triggerStatus(t, restAs(n, "rot", "other")); s != 401 {
			t.Errorf("REST with a wrong secret: %d", s)
		}
		if oldNC.IsClosed() {
			t.Error("the NATS client logged in with the old secret was closed during the overlap")
		}
	})
	by.check(t)

	// Reload 2: the overlap ends.
	rot.PreviousSecrets = []string{}
	if ch, err = n.Reload(withApps(n, dev, rot, off, fresh)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.AppsChanged, []string{"rot"}) || ch.ClosedNATSClients != 1 || ch.ClosedSockets != 0 {
		t.Fatalf("changes %+v", ch)
	}
	t.Run("the old secret is refused once removed", func(t *testing.T) {
		if s := triggerStatus(t, restAs(n, "rot", "old-secret")); s != 401 {
			t.Errorf("REST with the old secret: %d", s)
		}
		if s := triggerStatus(t, restAs(n, "rot", "new-secret")); s != 200 {
			t.Errorf("REST with the new secret: %d", s)
		}
		if err := privateAuth(t, n, "rot", "old-secret"); err == nil {
			t.Error("channel auth with the old secret accepted")
		}
		if err := privateAuth(t, n, "rot", "new-secret"); err != nil {
			t.Errorf("channel auth with the new secret: %v", err)
		}
		if err := earlyAuth("private-early-old2", "old-secret"); err == nil {
			t.Error("an older socket, the old secret: accepted after its removal")
		}
		if _, err := natsLogin(n, "rot", "old-secret"); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("NATS with the old secret: %v", err)
		}
		testkit.WaitFor(t, 5*time.Second, func() error {
			if !oldNC.IsClosed() {
				return errors.New("the NATS client of the old secret is still connected")
			}
			return nil
		})
	})
	by.check(t)

	t.Run("an app removed keeps its stream and loses its sockets", func(t *testing.T) {
		c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/fresh-key?protocol=7", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ch, err := n.Reload(withApps(n, dev, rot, off))
		if err != nil || !slices.Equal(ch.AppsRemoved, []string{"fresh"}) || ch.ClosedSockets != 1 {
			t.Fatalf("changes %+v %v", ch, err)
		}
		err = closedWith(t, c)
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 {
			t.Fatalf("socket of the removed app: %v, want close 4001", err)
		}
		if _, err := n.Bus().JetStream().Stream(ctxT(t), bus.StreamName("fresh")); err != nil {
			t.Fatalf("the removed app's stream: %v", err)
		}
		if s := triggerStatus(t, restAs(n, "fresh", "fresh-secret")); s != 404 {
			t.Fatalf("REST of the removed app: %d", s)
		}
	})
	by.check(t)

	t.Run("a broken reload changes nothing", func(t *testing.T) {
		bad := rot
		bad.MaxConnections = -1
		_, err := n.Reload(withApps(n, dev, bad, off))
		if err == nil || !strings.Contains(err.Error(), "apps[1].max_connections") {
			t.Fatalf("reload error %v, want one naming apps[1].max_connections", err)
		}
		if s := triggerStatus(t, restAs(n, "rot", "new-secret")); s != 200 {
			t.Fatalf("REST after the refused reload: %d", s)
		}
		st := n.Status(ctxT(t))
		if !strings.Contains(st.Config.LastReloadError, "apps[1].max_connections") || st.Config.Reloads != 3 {
			t.Fatalf("status config %+v", st.Config)
		}
	})
	by.check(t)
}

// TestReloadFromFile goes through the admin API: POST /reload re-reads the
// file, a bad value is a 422 naming the file and key, keys read only at
// start are listed, GET /status reports it all.
func TestReloadFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  listen: 127.0.0.1:0\nbus:\n  client_listen: 127.0.0.1:0\n", filepath.Join(dir, "data"))
	write(base + "log:\n  level: info\napps:\n  - {id: a1, key: a1-key, secret: s1}\n")
	load := func() (*configs.Config, []configs.Warning, error) { return configs.Load(path, configs.LoadOptions{}) }
	cfg, _, err := load()
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	base0 := testkit.Goroutines()
	n, err := StartWith(cfg, quiet, Source{Path: path, Load: load, Level: level, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.Stop(context.Background())
		base0.Check(t, 10*time.Second)
	})
	ac := &admin.Client{URL: n.AdminURL()}

	var st Status
	if err := ac.Get(ctxT(t), "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "test" || st.Config.File != path || !st.Ready || st.Draining || st.Cluster != nil ||
		len(st.Apps) != 1 || st.Apps[0].ID != "a1" || !st.Apps[0].Enabled || st.Listen != n.Addr().String() ||
		len(st.Streams) != 1 || st.Streams[0].Stream != bus.StreamName("a1") || st.Streams[0].Error != "" {
		t.Fatalf("status %+v", st)
	}

	write(base + "log:\n  level: debug\ngateway:\n  pong_timeout: 5s\napps:\n  - {id: a1, key: a1-key, secret: s1}\n  - {id: a2, key: a2-key, secret: s2}\n")
	var ch Changes
	if err := ac.Post(ctxT(t), "/reload", nil, &ch); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.AppsAdded, []string{"a2"}) || ch.LogLevel != "debug" || !slices.Equal(ch.NeedsRestart, []string{"gateway.pong_timeout"}) {
		t.Fatalf("changes %+v", ch)
	}
	if level.Level() != slog.LevelDebug {
		t.Fatalf("log level %v after the reload", level.Level())
	}
	if s := triggerStatus(t, &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: "a2", Key: "a2-key", Secret: "s2"}); s != 200 {
		t.Fatalf("REST of the added app: %d", s)
	}

	write(base + "apps:\n  - {id: a1, key: a1-key, secret: s1, max_connections: -3}\n")
	err = ac.Post(ctxT(t), "/reload", nil, nil)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != 422 || !strings.Contains(ae.Message, path) || !strings.Contains(ae.Message, "apps[0].max_connections") {
		t.Fatalf("broken reload: %v", err)
	}
	if s := triggerStatus(t, &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: "a2", Key: "a2-key", Secret: "s2"}); s != 200 {
		t.Fatalf("REST after the refused reload: %d (the old config must stay)", s)
	}
	if err := ac.Get(ctxT(t), "/status", &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Apps) != 2 || st.Config.Reloads != 1 || !strings.Contains(st.Config.LastReloadError, "apps[0].max_connections") {
		t.Fatalf("status after the refused reload %+v", st)
	}
}

// TestReloadWithoutSource: a node started with Start has nothing to re-read.
func TestReloadWithoutSource(t *testing.T) {
	n := startNode(t, nil)
	err := (&admin.Client{URL: n.AdminURL()}).Post(ctxT(t), "/reload", nil, nil)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("reload without a source: %v", err)
	}
}

// checkClusterStatus is TestCluster's GET /status: every node lists the
// three members and the app stream's leader and replicas.
func checkClusterStatus(t *testing.T, nodes []*Node) {
	defer http.DefaultClient.CloseIdleConnections() // the admin client's keep-alives (http.DefaultTransport)
	for i, nd := range nodes {
		var st Status
		if err := (&admin.Client{URL: nd.AdminURL()}).Get(ctxT(t), "/status", &st); err != nil {
			t.Fatal(err)
		}
		if st.Cluster == nil || len(st.Cluster.Members) != len(nodes) || st.Node != nd.Cluster().LocalName() {
			t.Fatalf("node %d: status %+v", i+1, st)
		}
		self := 0
		for _, m := range st.Cluster.Members {
			if m.State != "alive" || m.Address == "" || m.HTTP == "" {
				t.Fatalf("node %d: member %+v", i+1, m)
			}
			if m.Self {
				self++
			}
		}
		if self != 1 {
			t.Fatalf("node %d: %d members marked as this node", i+1, self)
		}
		if len(st.Streams) != 1 || st.Streams[0].Leader == "" || st.Streams[0].Replicas != 3 || st.Streams[0].Current+st.Streams[0].Lagging != 3 {
			t.Fatalf("node %d: streams %+v", i+1, st.Streams)
		}
	}
}
