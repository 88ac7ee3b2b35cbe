package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"herald/internal/testkit"
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

// TestWebhookStateListsPages: more records than one direct get answers,
// some deleted: Channels lists each live one once.
func TestWebhookStateListsPages(t *testing.T) {
	b := startBus(t, testConfig(t), &recSink{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.WebhookState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 2*webhookStatePage + 10
	want := writeRecords(t, ctx, s, n)
	got := listRecords(t, ctx, s)
	if !slices.Equal(got, want) {
		t.Fatalf("Channels listed %d records, want %d: %q", len(got), len(want), got)
	}
}

// writeRecords writes n records of app1 (ch-0 ... ch-<n-1>), deletes every
// tenth and rewrites every seventh, and returns the live ones, sorted.
func writeRecords(t *testing.T, ctx context.Context, s *WebhookState, n int) []string {
	t.Helper()
	var want []string
	for i := range n {
		ch := fmt.Sprintf("ch-%d", i)
		rev, err := s.Put(ctx, "app1", ch, []byte(`{"occupied":true}`), 0)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%10 == 0:
			err = s.Delete(ctx, "app1", ch, rev)
		case i%7 == 0:
			_, err = s.Put(ctx, "app1", ch, []byte(`{"occupied":true,"members":["u"]}`), rev)
			want = append(want, "app1/"+ch)
		default:
			want = append(want, "app1/"+ch)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	return want
}

// listRecords is Channels' answer as app/channel, sorted; it fails the
// test on a channel listed twice.
func listRecords(t *testing.T, ctx context.Context, s *WebhookState) []string {
	t.Helper()
	var got []string
	if err := s.Channels(ctx, func(app, channel string) { got = append(got, app+"/"+channel) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if c := slices.Compact(slices.Clone(got)); len(c) != len(got) {
		t.Fatalf("a channel listed twice: %q", got)
	}
	return got
}

// TestWebhookStateThroughALeaderCrash: the server leading the bucket's
// stream is killed with SIGKILL (no shutdown, no leadership handoff), as a
// channel owner's takeover meets it (lifecycle/ledger.go): the records are
// listed at once, while the bucket elects a leader and even with no
// JetStream leader at all (one server of three left: no quorum), and a
// write through a survivor waits for the new leader instead of failing.
func TestWebhookStateThroughALeaderCrash(t *testing.T) {
	t.Parallel()
	cfgs := clusterConfigs(t, 3)
	child := startChild(t, cfgs[2])
	nodes := startNodes(t, cfgs[:2])
	child.waitReady(t)
	b1 := nodes[0].bus
	testkit.WaitFor(t, 10*time.Second, func() error {
		if p := b1.Peers(); p != 3 {
			return fmt.Errorf("node-1 peers = %d", p)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := b1.WebhookState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := writeRecords(t, ctx, s, 40)
	bucket := "KV_" + WebhookStateBucket
	waitStreamReplicaCurrent(t, b1, bucket, "node-3")
	stepDownTo(t, b1, bucket, "node-3")

	child.kill()
	killed := time.Now()
	// Followers answer direct gets once they are current, checked every
	// 2 s after a leader change (the step-down above): until then a list
	// may find no responder, and the ledger's scan tries again.
	testkit.WaitFor(t, 3*time.Second, func() error {
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		defer lcancel()
		var got []string
		if err := s.Channels(lctx, func(app, channel string) { got = append(got, app+"/"+channel) }); err != nil {
			return err
		}
		if slices.Sort(got); !slices.Equal(got, want) {
			t.Fatalf("listed during the election: %q, want %q", got, want)
		}
		return nil
	})
	t.Logf("records listed %v after the leader's kill", time.Since(killed).Round(time.Millisecond))
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	if _, err := s.Put(wctx, "app1", "after-crash", []byte(`{"occupied":true}`), 0); err != nil {
		t.Fatalf("write during the election: %v", err)
	}
	wcancel()
	t.Logf("a write through node-1 stored %v after the leader's kill (the election)", time.Since(killed).Round(time.Millisecond))
	want = append(want, "app1/after-crash")
	slices.Sort(want)

	nodes[1].close(t)
	lctx, lcancel := context.WithTimeout(ctx, 2*webhookStatePageWait)
	defer lcancel()
	if got := listRecords(t, lctx, s); !slices.Equal(got, want) {
		t.Fatalf("listed with no leader: %q, want %q", got, want)
	}
}
