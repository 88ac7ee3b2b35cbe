package bus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestAppAccountRouteNoise: a route refusing an app account's interest is
// logged at debug level (accounts.go says why it is harmless); any other
// unknown account stays an error.
func TestAppAccountRouteNoise(t *testing.T) {
	var buf bytes.Buffer
	l := slogLogger{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	// The form nats-server's route code logs (server/route.go, c.Errorf with the client prefix).
	l.Errorf("127.0.0.1:6222 - rid:18 - Unknown account %q for remote subject %q", AppAccountName("shop"), ">")
	l.Errorf("127.0.0.1:6222 - rid:18 - Unknown account %q for remote subject %q", "OTHER", ">")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "level=DEBUG") || !strings.Contains(lines[0], "HERALD_APP_shop") ||
		!strings.Contains(lines[1], "level=ERROR") {
		t.Fatalf("logged %q", buf.String())
	}
}

// TestAppAccountImports: an app's account is made once, with its imports,
// and an invalid id is refused.
func TestAppAccountImports(t *testing.T) {
	cfg := testConfig(t)
	cfg.ClientListen = "127.0.0.1:0"
	b, err := startWithSink(cfg, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	x := b.auth.accounts.Load()
	a1, err := x.account("shop")
	if err != nil {
		t.Fatal(err)
	}
	if a2, _ := x.account("shop"); a2 != a1 || a1.Name != AppAccountName("shop") {
		t.Fatalf("second lookup %v, first %v", a2, a1)
	}
	if n := a1.NumServiceImports(); n < 11 { // ours, and the server's own system imports
		t.Fatalf("%d service imports", n)
	}
	if _, err := x.account("a.b"); err == nil {
		t.Fatal("an invalid app id got an account")
	}
	if err := b.EnsureAccounts([]string{"shop", "other"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.srv.LookupAccount(AppAccountName("other")); ok != nil {
		t.Fatalf("other's account: %v", ok)
	}
}
