package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"

	"herald/app"
)

// TestRequestFormat: every event type reaches a real receiver as Pusher
// sends it: POST, Content-Type exactly application/json, X-Pusher-Key, an
// HMAC-SHA256 signature of the raw body that pusher-http-go's Webhook and
// the pusher npm SDK's webhook().isValid() accept, the webhook's extra
// headers, and a body {"time_ms": ..., "events": [...]} with each event's
// exact JSON.
func TestRequestFormat(t *testing.T) {
	rcv := newReceiver(t)
	h := everyEvent(rcv.url("/hooks"))
	h.Headers = map[string]string{"Authorization": "Bearer backend-token"}
	apps := testApps(t, h)
	b := startBus(t, apps)
	s, _ := startSender(t, b, apps, nil)
	a, _ := apps.ByID(testApp)

	three := 3
	began := time.Now()
	// One channel per event, so each is its own partition's first event; the
	// exact bodies are compared per event.
	enqueue(t, s,
		Event{ID: "e1", Name: app.WebhookChannelOccupied, Channel: "c-occupied"},
		Event{ID: "e2", Name: app.WebhookChannelVacated, Channel: "c-vacated"},
		Event{ID: "e3", Name: app.WebhookMemberAdded, Channel: "presence-room", UserID: "42"},
		Event{ID: "e4", Name: app.WebhookMemberRemoved, Channel: "presence-hall", UserID: "43"},
		Event{ID: "e5", Name: app.WebhookSubscriptionCount, Channel: "c-count", SubscriptionCount: &three},
	)
	s.ClientEvent(a, "presence-chat", "client-typing", []byte(`{"user":"bob"}`), "123.456", "42")
	s.ClientEvent(a, "private-chat", "client-note", []byte(`"plain text"`), "123.457", "")
	s.CacheMiss(a, "cache-news")
	s.CacheMiss(a, "cache-news") // de-duplicated
	evs := rcv.waitEvents(t, 8, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // a second cache_miss would have come by now
	if n := len(rcv.accepted(t)); n != 8 {
		t.Fatalf("%d events accepted, want 8 (one cache_miss)", n)
	}
	byID := uniqueIDs(t, evs)

	want := map[string]string{
		"e1": `{"id":"e1","name":"channel_occupied","channel":"c-occupied"}`,
		"e2": `{"id":"e2","name":"channel_vacated","channel":"c-vacated"}`,
		"e3": `{"id":"e3","name":"member_added","channel":"presence-room","user_id":"42"}`,
		"e4": `{"id":"e4","name":"member_removed","channel":"presence-hall","user_id":"43"}`,
		"e5": `{"id":"e5","name":"subscription_count","channel":"c-count","subscription_count":3}`,
	}
	generated := map[string]string{ // by channel: the ids are nuids
		"presence-chat": `{"id":"ID","name":"client_event","channel":"presence-chat","user_id":"42","event":"client-typing","data":"{\"user\":\"bob\"}","socket_id":"123.456"}`,
		"private-chat":  `{"id":"ID","name":"client_event","channel":"private-chat","event":"client-note","data":"plain text","socket_id":"123.457"}`,
		"cache-news":    `{"id":"ID","name":"cache_miss","channel":"cache-news"}`,
	}
	var raws []string
	for _, q := range rcv.requests() {
		checkHeaders(t, q)
		var bd body
		if err := json.Unmarshal(q.body, &bd); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(q.body, []byte(`{"time_ms":`+strconv.FormatInt(bd.TimeMs, 10)+`,"events":[`)) {
			t.Fatalf("body %s does not start with time_ms then events", q.body)
		}
		if bd.TimeMs < began.UnixMilli() || bd.TimeMs > time.Now().UnixMilli() {
			t.Fatalf("time_ms %d outside the test", bd.TimeMs)
		}
		for _, raw := range bd.Events {
			raws = append(raws, string(raw))
		}
	}
	for _, raw := range raws {
		var ev Event
		_ = json.Unmarshal([]byte(raw), &ev)
		w, ok := want[ev.ID]
		if !ok {
			w = strings.Replace(generated[ev.Channel], `"id":"ID"`, `"id":"`+ev.ID+`"`, 1)
			if len(ev.ID) < 16 {
				t.Fatalf("generated id %q too short to be unique", ev.ID)
			}
		}
		if raw != w {
			t.Errorf("event\n got %s\nwant %s", raw, w)
		}
	}
	if len(byID) != 8 {
		t.Fatalf("%d distinct ids", len(byID))
	}

	// pusher-http-go's verifier, as a Go backend would run it.
	sdk := &pusher.Client{AppID: testApp, Key: testKey, Secret: testSecret}
	for _, q := range rcv.requests() {
		wh, err := sdk.Webhook(q.header, q.body)
		if err != nil {
			t.Fatalf("pusher-http-go Webhook: %v", err)
		}
		if len(wh.Events) == 0 || wh.TimeMs == 0 {
			t.Fatalf("pusher-http-go parsed %+v", wh)
		}
	}
	bad := rcv.requests()[0]
	if _, err := (&pusher.Client{AppID: testApp, Key: testKey, Secret: "wrong"}).Webhook(bad.header, bad.body); err == nil {
		t.Fatal("pusher-http-go accepted a webhook signed with another secret")
	}

	verifyWithNodeSDK(t, rcv.requests())
}

func checkHeaders(t *testing.T, q request) {
	t.Helper()
	if got := q.header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
		t.Fatalf("Content-Type %q, want exactly application/json", got)
	}
	if got := q.header.Get("X-Pusher-Key"); got != testKey {
		t.Fatalf("X-Pusher-Key %q", got)
	}
	if got, want := q.header.Get("X-Pusher-Signature"), Sign(testSecret, q.body); got != want {
		t.Fatalf("X-Pusher-Signature %q, want %q", got, want)
	}
	if got := q.header.Get("Authorization"); got != "Bearer backend-token" {
		t.Fatalf("extra header Authorization %q", got)
	}
}

// verifyWithNodeSDK runs tests/js/webhook-verify.mjs: the pusher npm SDK's
// webhook({headers, rawBody}).isValid() on every request, plus one with a
// tampered body that it must refuse.
func verifyWithNodeSDK(t *testing.T, reqs []request) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "tests", "js", "node_modules", "pusher")); err != nil {
		t.Fatalf("tests/js/node_modules/pusher is missing: run `make test` (npm ci in tests/js) first")
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH: %v", err)
	}
	type jsReq struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		Valid   bool              `json:"valid"`
	}
	var in []jsReq
	for _, q := range reqs {
		hs := map[string]string{}
		for k := range q.header {
			hs[strings.ToLower(k)] = q.header.Get(k)
		}
		in = append(in, jsReq{Headers: hs, Body: string(q.body), Valid: true})
	}
	tampered := in[0]
	tampered.Body = strings.Replace(tampered.Body, `"events"`, `"events" `, 1)
	tampered.Valid = false
	in = append(in, tampered)
	data, _ := json.Marshal(map[string]any{"key": testKey, "secret": testSecret, "requests": in})
	cmd := exec.Command(nodeBin, "tests/js/webhook-verify.mjs")
	cmd.Dir = root
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pusher npm SDK: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "ok "+strconv.Itoa(len(in)) {
		t.Fatalf("pusher npm SDK: %s", out)
	}
}

// TestSign pins the signature against openssl's: printf '%s' BODY |
// openssl dgst -sha256 -hmac secret1.
func TestSign(t *testing.T) {
	body := []byte(`{"time_ms":1,"events":[]}`)
	if got, want := Sign("secret1", body), "e87c33c2e9d8dab40040dec3e9418c0f10dd2bcc6e4770e77086cf11f1603e00"; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}
