package admin_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"herald/admin"
	"herald/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func start(t *testing.T, token string) *admin.Server {
	t.Helper()
	s, err := admin.Listen(admin.Config{Listen: "127.0.0.1:0", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, map[string]string{"hello": "admin"})
	})
	s.Serve()
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func TestTokenIsRequired(t *testing.T) {
	s := start(t, "s3cret")
	ctx := context.Background()
	var out map[string]string
	for _, tok := range []string{"", "wrong", "s3cret!"} {
		err := (&admin.Client{URL: s.URL(), Token: tok}).Get(ctx, "/hello", &out)
		var ae *admin.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Message == "" {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
	if err := (&admin.Client{URL: s.URL(), Token: "s3cret"}).Get(ctx, "/hello", &out); err != nil || out["hello"] != "admin" {
		t.Fatalf("right token: %v %v", out, err)
	}
}

func TestUnknownEndpointIsJSON404(t *testing.T) {
	s := start(t, "")
	err := (&admin.Client{URL: s.URL()}).Post(context.Background(), "/nothing", map[string]int{"a": 1}, nil)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message != "no admin endpoint POST /nothing" {
		t.Fatalf("got %v", err)
	}
}

func TestListenFailsWhenTaken(t *testing.T) {
	s := start(t, "")
	if _, err := admin.Listen(admin.Config{Listen: s.Addr().String()}); err == nil {
		t.Fatal("second listener on the same port")
	}
}

func TestStoppedNodeIsAClearError(t *testing.T) {
	s, err := admin.Listen(admin.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	url := s.URL()
	_ = s.Close(context.Background())
	if err := (&admin.Client{URL: url}).Get(context.Background(), "/status", nil); err == nil {
		t.Fatal("no error from a closed listener")
	}
}
