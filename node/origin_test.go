package node

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"herald/app"
	"herald/client"
)

// TestOriginsLiveOnReload: apps[].allowed_origins is read through the app
// registry at each upgrade, so a reload applies it to new connections; a
// socket opened before stays, and the reload reports the app as changed.
func TestOriginsLiveOnReload(t *testing.T) {
	n := startNode(t, nil)
	url := "ws://" + n.Addr().String() + "/app/app-key?protocol=7"
	dial := func(origin string) (*client.Conn, error) {
		return client.Dial(ctxT(t), url, client.Options{Header: http.Header{"Origin": {origin}}})
	}
	early, err := dial("https://a.test")
	if err != nil {
		t.Fatalf("no list: %v", err)
	}
	defer early.Close()
	if err := early.Subscribe(ctxT(t), "news"); err != nil {
		t.Fatal(err)
	}

	withList := func(list ...string) app.App {
		a := n.cfg.Apps[0]
		a.AllowedOrigins = list
		return a
	}
	ch, err := n.Reload(withApps(n, withList("https://b.test")))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ch.AppsChanged, "app-id") || ch.ClosedSockets != 0 {
		t.Fatalf("reload changes %+v: want app-id changed, no socket closed", ch)
	}
	var ce *client.CloseError
	if _, err := dial("https://a.test"); !errors.As(err, &ce) || ce.Code != 4009 {
		t.Fatalf("origin dropped from the list by a reload: %v, want 4009", err)
	}
	c, err := dial("https://b.test")
	if err != nil {
		t.Fatalf("origin added by a reload: %v", err)
	}
	c.Close()
	if s, body, err := rest(n).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: "d", Channels: []string{"news"}}); err != nil || s != 200 {
		t.Fatalf("trigger: %d %s %v", s, body, err)
	}
	if _, err := early.WaitFor(ctxT(t), "e", "news"); err != nil {
		t.Fatalf("socket opened before the reload: %v", err)
	}

	if _, err := n.Reload(withApps(n, withList())); err != nil {
		t.Fatal(err)
	}
	c, err = dial("https://a.test")
	if err != nil {
		t.Fatalf("list emptied by a reload: %v", err)
	}
	c.Close()
}
