package bus

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"herald/lifecycle"
)

func TestKeyTokenRoundTrip(t *testing.T) {
	for _, name := range []string{"my-channel", "presence-room@1.a", "#server-to-user-4=2", pusherChars, "a b\x00\xff%=/"} {
		tok := EncodeKeyToken(name)
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !keepInKey(c) && c != keyTokenEscape {
				t.Fatalf("%q: token %q has byte %q", name, tok, c)
			}
		}
		back, err := DecodeKeyToken(tok)
		if err != nil || back != name {
			t.Fatalf("%q -> %q -> %q %v", name, tok, back, err)
		}
	}
	if got := EncodeKeyToken("presence-room@1.a"); got != "presence-room=401=2Ea" {
		t.Fatalf("encoded %q", got)
	}
	for _, bad := range []string{"", "a.b", "a=2", "a=2e", "a=41", "a=ZZ", "a@b"} {
		if _, err := DecodeKeyToken(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("DecodeKeyToken(%q) = %v, want ErrInvalidToken", bad, err)
		}
	}
	app, ch, err := ParseStateKey(StateKey("app1", "private-a.b"))
	if err != nil || app != "app1" || ch != "private-a.b" {
		t.Fatalf("ParseStateKey: %q %q %v", app, ch, err)
	}
	if _, _, err := ParseStateKey("nodot"); err == nil {
		t.Fatal("a key without an app parsed")
	}
}

// TestWebhookState: the bucket's compare-and-set, delete and listing, on a
// real embedded JetStream.
func TestWebhookState(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := b.WebhookState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.markerTTL {
		t.Fatal("the embedded server's bucket has no marker TTL")
	}
	if _, err := b.WebhookState(ctx); err != nil { // binding again is fine
		t.Fatal(err)
	}
	const ch = "presence-a.b@c"
	if v, rev, err := s.Get(ctx, "app1", ch); v != nil || rev != 0 || err != nil {
		t.Fatalf("empty Get: %q %d %v", v, rev, err)
	}
	r1, err := s.Put(ctx, "app1", ch, []byte(`{"occupied":true}`), 0)
	if err != nil || r1 == 0 {
		t.Fatalf("create: %d %v", r1, err)
	}
	if _, err := s.Put(ctx, "app1", ch, []byte(`{}`), 0); !errors.Is(err, lifecycle.ErrRevision) {
		t.Fatalf("second create: %v, want ErrRevision", err)
	}
	r2, err := s.Put(ctx, "app1", ch, []byte(`{"occupied":true,"members":["u"]}`), r1)
	if err != nil || r2 <= r1 {
		t.Fatalf("update: %d %v", r2, err)
	}
	if _, err := s.Put(ctx, "app1", ch, []byte(`{}`), r1); !errors.Is(err, lifecycle.ErrRevision) {
		t.Fatalf("stale update: %v, want ErrRevision", err)
	}
	if v, rev, err := s.Get(ctx, "app1", ch); string(v) != `{"occupied":true,"members":["u"]}` || rev != r2 || err != nil {
		t.Fatalf("Get: %q %d %v", v, rev, err)
	}
	if _, err := s.Put(ctx, "app1", "other", []byte(`{"occupied":true}`), 0); err != nil {
		t.Fatal(err)
	}
	var chans []string
	if err := s.Channels(ctx, func(app, channel string) { chans = append(chans, app+"/"+channel) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(chans)
	if want := []string{"app1/other", "app1/" + ch}; !slices.Equal(chans, want) {
		t.Fatalf("Channels: %q, want %q", chans, want)
	}

	if err := s.Delete(ctx, "app1", ch, r1); !errors.Is(err, lifecycle.ErrRevision) {
		t.Fatalf("stale delete: %v, want ErrRevision", err)
	}
	if err := s.Delete(ctx, "app1", ch, r2); err != nil {
		t.Fatal(err)
	}
	if v, rev, err := s.Get(ctx, "app1", ch); v != nil || rev != 0 || err != nil {
		t.Fatalf("Get after delete: %q %d %v", v, rev, err)
	}
	// A record after a delete gets a revision the key never had.
	r3, err := s.Put(ctx, "app1", ch, []byte(`{"occupied":true}`), 0)
	if err != nil || r3 <= r2 {
		t.Fatalf("create after delete: %d %v", r3, err)
	}
	if _, _, err := s.Get(ctx, "bad app", ch); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("bad app: %v", err)
	}
}
