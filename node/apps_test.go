package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/admin"
	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// registryCfg makes cfg take its apps from the registry, seeded with
// "steady" (the bystanders' app).
func registryCfg(cfg *configs.Config) {
	cfg.AppsSource = configs.AppsFromRegistry
	cfg.Apps = []app.App{appCfg("steady", "steady-secret")}
}

func adminOf(n *Node) *admin.Client { return &admin.Client{URL: n.AdminURL()} }

// createApp creates an app through the admin API of n.
func createApp(t *testing.T, n *Node, id, name string) AppView {
	t.Helper()
	var v AppView
	if err := adminOf(n).Post(ctxT(t), "/apps", map[string]string{"id": id, "name": name}, &v); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if v.ID != id || v.Key == "" || len(v.Secret) < 32 || v.Name != name {
		t.Fatalf("created %+v", v)
	}
	return v
}

func viewREST(n *Node, v AppView, secret string) *client.REST {
	return &client.REST{BaseURL: "http://" + n.Addr().String(), AppID: v.ID, Key: v.Key, Secret: secret}
}

func dialKey(t *testing.T, n *Node, key string) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/"+key+"?protocol=7", client.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", key, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantClose fails unless c is closed with code.
func wantClose(t *testing.T, c *client.Conn, code int) {
	t.Helper()
	err := closedWith(t, c)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("socket: %v, want close %d", err, code)
	}
}

// waitStatus polls a REST trigger until it answers want (at most 10 s: a
// rotation's overlap in these tests is at most 5 s).
func waitStatus(t *testing.T, r *client.REST, want int) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, func() error {
		if s := triggerStatus(t, r); s != want {
			return fmt.Errorf("REST as %s: %d, want %d", r.AppID, s, want)
		}
		return nil
	})
}

// TestRegistryApps walks the registry on one node: create, rotate (the old
// secret accepted until the overlap ends), update, disable (4003), enable,
// delete (4001), while another app's sockets stay connected and untouched;
// then the node restarts and comes back with every app.
func TestRegistryApps(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, func(c *configs.Config) { registryCfg(c); c.DataDir = dir })
	if a, ok := n.apps.ByID("steady"); !ok || a.Secret != "steady-secret" {
		t.Fatalf("the config's app was not seeded: %+v", a)
	}
	if _, ok := n.apps.ByID(configs.DevAppID); ok {
		t.Fatal("the dev app is in the registry")
	}
	by := openBystanders(t, n, "steady", "steady-key", 200)
	ac := adminOf(n)

	shop := createApp(t, n, "shop", "The Shop")
	if s := triggerStatus(t, viewREST(n, shop, shop.Secret)); s != 200 {
		t.Fatalf("REST of the new app: %d", s)
	}
	sock := dialKey(t, n, shop.Key)
	if err := sock.Subscribe(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	if s := triggerStatus(t, viewREST(n, shop, shop.Secret)); s != 200 {
		t.Fatal(s)
	}
	if ev, err := sock.WaitFor(ctxT(t), "e", "c"); err != nil || ev.Serial == 0 {
		t.Fatalf("event %+v %v (a serial: the stream was made on first use)", ev, err)
	}
	if err := ac.Post(ctxT(t), "/apps", map[string]string{"id": "shop"}, nil); !asStatus(err, nil, http.StatusConflict) {
		t.Fatalf("second create of shop: %v", err)
	}

	t.Run("status lists the registry's apps", func(t *testing.T) {
		var st Status
		if err := ac.Get(ctxT(t), "/status", &st); err != nil {
			t.Fatal(err)
		}
		if st.AppsSource != "registry" || len(st.Apps) != 2 || st.Apps[0].ID != "shop" || st.Apps[1].ID != "steady" ||
			st.Apps[1].Connections != 200 || len(st.Streams) != 1 || st.Streams[0].App != "shop" {
			t.Fatalf("status apps %+v streams %+v (only shop has used its stream)", st.Apps, st.Streams)
		}
	})

	t.Run("the console lists the registry's apps and logs a registry app in", func(t *testing.T) {
		var sess struct {
			Scope string   `json:"scope"`
			Apps  []string `json:"apps"`
		}
		if err := ac.Post(ctxT(t), "/console/api/login", map[string]string{"token": ""}, &sess); err != nil {
			t.Fatal(err)
		}
		if sess.Scope != "admin" || strings.Join(sess.Apps, ",") != "shop,steady" {
			t.Fatalf("admin session %+v", sess)
		}
		if err := ac.Post(ctxT(t), "/console/api/login", map[string]string{"key": shop.Key, "secret": shop.Secret}, &sess); err != nil {
			t.Fatal(err)
		}
		if sess.Scope != "app" || strings.Join(sess.Apps, ",") != "shop" {
			t.Fatalf("app session %+v", sess)
		}
	})

	t.Run("list and show hide the secret", func(t *testing.T) {
		var l AppList
		if err := ac.Get(ctxT(t), "/apps", &l); err != nil {
			t.Fatal(err)
		}
		if l.Source != "registry" || len(l.Apps) != 2 || l.Apps[0].ID != "shop" || l.Apps[1].ID != "steady" || l.Apps[0].Secret != "" {
			t.Fatalf("list %+v", l)
		}
		var v AppView
		if err := ac.Get(ctxT(t), "/apps/shop", &v); err != nil {
			t.Fatal(err)
		}
		if v.Secret != "" || v.Name != "The Shop" || len(v.App) == 0 || containsStr(string(v.App), shop.Secret) {
			t.Fatalf("show %+v %s", v, v.App)
		}
	})

	t.Run("rotate keeps the old secret for the overlap", func(t *testing.T) {
		var v AppView
		if err := ac.Post(ctxT(t), "/apps/shop/rotate", map[string]string{"overlap": "2s"}, &v); err != nil {
			t.Fatal(err)
		}
		if v.Secret == "" || v.Secret == shop.Secret || v.PreviousSecretsUntil == nil {
			t.Fatalf("rotated %+v", v)
		}
		for _, s := range []string{v.Secret, shop.Secret} {
			if st := triggerStatus(t, viewREST(n, shop, s)); st != 200 {
				t.Fatalf("REST during the overlap: %d", st)
			}
		}
		waitStatus(t, viewREST(n, shop, shop.Secret), 401) // the overlap ends by itself
		if st := triggerStatus(t, viewREST(n, shop, v.Secret)); st != 200 {
			t.Fatalf("REST with the new secret after the overlap: %d", st)
		}
		shop.Secret = v.Secret
	})
	by.check(t)

	t.Run("update", func(t *testing.T) {
		var v AppView
		err := ac.Do(ctxT(t), "PATCH", "/apps/shop", map[string]any{"app": map[string]any{"max_connections": 1}}, &v)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := n.apps.ByID("shop"); !ok || a.MaxConnections != 1 || a.Secret != shop.Secret {
			t.Fatalf("after update: %+v", a)
		}
		err = ac.Do(ctxT(t), "PATCH", "/apps/shop", map[string]any{"app": map[string]any{"max_conections": 1}}, nil)
		if !asStatus(err, nil, http.StatusBadRequest) {
			t.Fatalf("an unknown key: %v", err)
		}
		err = ac.Do(ctxT(t), "PATCH", "/apps/shop", map[string]any{"app": map[string]any{"key": "steady-key"}}, nil)
		if !asStatus(err, nil, http.StatusConflict) {
			t.Fatalf("another app's key: %v", err)
		}
		if err := ac.Do(ctxT(t), "PATCH", "/apps/shop", map[string]any{"app": map[string]any{"max_connections": 0}}, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("disable closes its sockets with 4003", func(t *testing.T) {
		if err := ac.Post(ctxT(t), "/apps/shop/disable", nil, nil); err != nil {
			t.Fatal(err)
		}
		wantClose(t, sock, 4003)
		if st := triggerStatus(t, viewREST(n, shop, shop.Secret)); st != 403 {
			t.Fatalf("REST of the disabled app: %d", st)
		}
		if err := ac.Post(ctxT(t), "/apps/shop/enable", nil, nil); err != nil {
			t.Fatal(err)
		}
		if st := triggerStatus(t, viewREST(n, shop, shop.Secret)); st != 200 {
			t.Fatalf("REST of the enabled app: %d", st)
		}
	})
	by.check(t)

	keep := createApp(t, n, "keep", "")
	t.Run("delete closes its sockets with 4001", func(t *testing.T) {
		c := dialKey(t, n, shop.Key)
		if err := ac.Do(ctxT(t), "DELETE", "/apps/shop", nil, nil); err != nil {
			t.Fatal(err)
		}
		wantClose(t, c, 4001)
		if st := triggerStatus(t, viewREST(n, shop, shop.Secret)); st != 404 {
			t.Fatalf("REST of the deleted app: %d", st)
		}
		if err := ac.Get(ctxT(t), "/apps/shop", nil); !asStatus(err, nil, http.StatusNotFound) {
			t.Fatalf("show of the deleted app: %v", err)
		}
	})
	by.check(t)

	t.Run("a restarted node comes back with every app", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cfg := configs.Loopback(dir)
		cfg.AppsSource = configs.AppsFromRegistry
		cfg.Apps = []app.App{appCfg("ignored", "x")} // the bucket is seeded: the file's apps are not written again
		n2, err := Start(cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer n2.Stop(context.Background())
		ids := n2.apps.Table().IDs()
		if fmt.Sprint(ids) != "[keep steady]" {
			t.Fatalf("apps after the restart: %v", ids)
		}
		if st := triggerStatus(t, viewREST(n2, keep, keep.Secret)); st != 200 {
			t.Fatalf("REST after the restart: %d", st)
		}
	})
}

// TestRegistryRefusedWithConfigSource: with apps from the config, the
// admin API lists them and refuses writes.
func TestRegistryRefusedWithConfigSource(t *testing.T) {
	n := startNode(t, nil)
	var l AppList
	if err := adminOf(n).Get(ctxT(t), "/apps", &l); err != nil {
		t.Fatal(err)
	}
	if l.Source != "config" || len(l.Apps) != 1 || l.Apps[0].ID != configs.DevAppID {
		t.Fatalf("list %+v", l)
	}
	if err := adminOf(n).Post(ctxT(t), "/apps", map[string]string{"id": "x"}, nil); !asStatus(err, nil, http.StatusConflict) {
		t.Fatalf("create with apps_source config: %v", err)
	}
}

// TestRegistryCluster: a change made through node 1 is in force on node 3,
// whose socket of another app stays untouched.
func TestRegistryCluster(t *testing.T) {
	nodes := startClusterNodesWith(t, 3, func(c *configs.Config) {
		registryCfg(c)
		c.Bus.ClientListen = "127.0.0.1:0"
	})
	n1, n3 := nodes[0], nodes[2]
	by := openBystanders(t, n3, "steady", "steady-key", 50)

	began := time.Now()
	shop := createApp(t, n1, "shop", "")
	waitStatus(t, viewREST(n3, shop, shop.Secret), 200)
	t.Logf("a new app was usable on node 3 %v after the create on node 1 began", time.Since(began))
	sock := dialKey(t, n3, shop.Key)

	t.Run("its NATS user on node 3, default inbox, its own account", func(t *testing.T) {
		nc, errs := stockConn(t, n3.NATSURL(), shop.ID, shop.Secret)
		live, err := nc.SubscribeSync("herald.shop.live.>")
		if err != nil {
			t.Fatal(err)
		}
		spy, _ := stockConn(t, n1.NATSURL(), "steady", "steady-secret")
		all, err := spy.SubscribeSync(">")
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(nc.Flush(), spy.Flush()); err != nil {
			t.Fatal(err)
		}
		for range 5 { // the queue group hands requests to any node
			m, err := nc.Request("herald.shop.api.events", []byte(`{"name":"e","channels":["c"],"data":"{}"}`), 5*time.Second)
			if err != nil || string(m.Data) != "{}" {
				t.Fatalf("request on node 3: %v %v (%v)", m, err, errs.errs)
			}
		}
		if s := triggerStatus(t, viewREST(n1, shop, shop.Secret)); s != 200 {
			t.Fatal(s)
		}
		for i := range 6 {
			if _, err := live.NextMsg(5 * time.Second); err != nil {
				t.Fatalf("live event %d on node 3: %v", i, err)
			}
		}
		if m, err := all.NextMsg(300 * time.Millisecond); err == nil {
			t.Fatalf("another app's user on node 1 got %s %s", m.Subject, m.Data)
		}
	})

	var v AppView
	if err := adminOf(n1).Post(ctxT(t), "/apps/shop/rotate", map[string]string{"overlap": "5s"}, &v); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, viewREST(n3, shop, v.Secret), 200) // the new secret reaches node 3
	if s := triggerStatus(t, viewREST(n3, shop, shop.Secret)); s != 200 {
		t.Fatalf("the old secret on node 3 during the overlap: %d", s)
	}
	waitStatus(t, viewREST(n3, shop, shop.Secret), 401) // and ends there by itself

	if err := adminOf(n1).Post(ctxT(t), "/apps/shop/disable", nil, nil); err != nil {
		t.Fatal(err)
	}
	wantClose(t, sock, 4003)
	by.check(t)

	if err := adminOf(n1).Do(ctxT(t), "DELETE", "/apps/shop", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, viewREST(n3, shop, v.Secret), 404)
	by.check(t)
}

// asStatus reports whether err is an admin error with status (copied to
// out when out is not nil).
func asStatus(err error, out *admin.Error, status int) bool {
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != status {
		return false
	}
	if out != nil {
		*out = *ae
	}
	return true
}

func containsStr(s, sub string) bool { return sub != "" && strings.Contains(s, sub) }

// TestRegistryExternal: with bus.mode external the registry is a bucket of
// the external deployment's JetStream, and works the same.
func TestRegistryExternal(t *testing.T) {
	startNodeHook = externalMode
	t.Cleanup(func() { startNodeHook = nil })
	n := startNode(t, registryCfg)
	if _, ok := n.apps.ByID("steady"); !ok {
		t.Fatal("the config's app was not seeded")
	}
	shop := createApp(t, n, "shop", "")
	if s := triggerStatus(t, viewREST(n, shop, shop.Secret)); s != 200 {
		t.Fatalf("REST of the new app: %d", s)
	}
	if err := adminOf(n).Post(ctxT(t), "/apps/shop/disable", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := triggerStatus(t, viewREST(n, shop, shop.Secret)); s != 403 {
		t.Fatalf("REST of the disabled app: %d", s)
	}
}
