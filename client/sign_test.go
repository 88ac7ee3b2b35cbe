package client

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// Credentials of the test vectors (docs/protocol.md §9).
const (
	vecAppID  = "3"
	vecKey    = "278d425bdf160c739803"
	vecSecret = "7ad3773142a6692b25b8"
	vecSocket = "1234.1234"
	vecTime   = 1353088179
)

func TestSignChannel(t *testing.T) {
	cases := []struct {
		name        string
		channel     string
		channelData string
		want        string
	}{
		{
			name:    "9.1 private",
			channel: "private-foobar",
			want:    "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
		},
		{
			name:        "9.2 presence, recomputed",
			channel:     "presence-foobar",
			channelData: `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`,
			want:        "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
		},
		{
			name:        "9.2 presence, as published",
			channel:     "presence-foobar",
			channelData: `{"user_id":10,"user_info":{"name":"Mr. Pusher"}}`,
			want:        "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c",
		},
		{
			name:        "9.6 A presence, string id",
			channel:     "presence-chat",
			channelData: `{"user_id":"42","user_info":{"name":"Alice"}}`,
			want:        "2b6cfa1ae3c73d46e10671bf81b683ef252297ee62a03c09955d0f6719f3bfda",
		},
		{
			name:    "9.6 C presence, no channel_data",
			channel: "presence-chat",
			want:    "af3bff8c0380ef0f9d2a6d5d17d7cf300ff604ca81c1d3baa178521a0fa5ed65",
		},
		{
			name:    "9.6 F private-encrypted",
			channel: "private-encrypted-foobar",
			want:    "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := SignChannel(vecKey, vecSecret, vecSocket, tc.channel, tc.channelData)
			if want := vecKey + ":" + tc.want; got != want {
				t.Fatalf("SignChannel = %s, want %s", got, want)
			}
		})
	}
}

func TestSignUser(t *testing.T) {
	got := SignUser(vecKey, vecSecret, vecSocket, `{"id":"12345"}`)
	want := vecKey + ":4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
	if got != want {
		t.Fatalf("SignUser = %s, want %s", got, want)
	}
}

// Vector 9.4 through Trigger: body bytes, body_md5, string to sign and
// signature, with the timestamp fixed by the clock hook.
func TestTriggerSpecVector(t *testing.T) {
	var (
		gotPath  string
		gotQuery url.Values
		gotBody  []byte
		gotType  string
	)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotQuery, gotType = r.URL.EscapedPath(), r.URL.Query(), r.Header.Get("Content-Type")
		gotBody, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "{}")
	}))
	t.Cleanup(hs.Close)
	r := newTestREST(t, hs.URL)

	status, body, err := r.Trigger(context.Background(), TriggerParams{
		Name:     "foo",
		Channels: []string{"project-3"},
		Data:     `{"some":"data"}`,
	})
	if err != nil || status != http.StatusAccepted || string(body) != "{}" {
		t.Fatalf("Trigger = %d %q %v", status, body, err)
	}
	checks := []struct {
		name string
		got  string
		want string
	}{
		{
			name: "path",
			got:  gotPath,
			want: "/apps/3/events",
		},
		{
			name: "body",
			got:  string(gotBody),
			want: `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`,
		},
		{
			name: "content type",
			got:  gotType,
			want: "application/json",
		},
		{
			name: "body_md5",
			got:  gotQuery.Get("body_md5"),
			want: "ec365a775a4cd0599faeb73354201b6f",
		},
		{
			name: "auth_timestamp",
			got:  gotQuery.Get("auth_timestamp"),
			want: "1353088179",
		},
		{
			name: "auth_signature",
			got:  gotQuery.Get("auth_signature"),
			want: "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
		},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func newTestREST(t *testing.T, base string) *REST {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &REST{
		BaseURL: base,
		AppID:   vecAppID,
		Key:     vecKey,
		Secret:  vecSecret,
		HTTP:    &http.Client{Transport: tr},
		clock:   func() time.Time { return time.Unix(vecTime, 0) },
	}
}

func TestStringToSign(t *testing.T) {
	params := map[string]string{
		"auth_key":       vecKey,
		"auth_timestamp": "1353088179",
		"auth_version":   "1.0",
		"body_md5":       "ec365a775a4cd0599faeb73354201b6f",
		"auth_signature": "ignored",
	}
	got := stringToSign("post", "/apps/3/events", params)
	want := "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	if got != want {
		t.Fatalf("stringToSign = %q, want %q", got, want)
	}
	// Keys are lowercased and values not escaped (docs example).
	got = stringToSign("GET", "/x", map[string]string{"auth_key": "foo", "Name": "Something else"})
	if want := "GET\n/x\nauth_key=foo&name=Something else"; got != want {
		t.Fatalf("stringToSign = %q, want %q", got, want)
	}
}

// Vectors 9.5 and 9.6 through SignQuery.
func TestSignQueryVectors(t *testing.T) {
	cases := []struct {
		name   string
		key    string
		secret string
		method string
		path   string
		params map[string]string
		body   string
		ts     int64
		want   string
	}{
		{
			name:   "9.6 G GET channels",
			method: "GET",
			path:   "/apps/3/channels",
			params: map[string]string{"filter_by_prefix": "presence-", "info": "user_count"},
			want:   "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
		},
		{
			name:   "9.6 H comma in value",
			method: "GET",
			path:   "/apps/3/channels/presence-foobar",
			params: map[string]string{"info": "user_count,subscription_count"},
			want:   "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
		},
		{
			name:   "9.6 I GET users",
			method: "GET",
			path:   "/apps/3/channels/presence-foobar/users",
			want:   "5567dd30e7f8575e66be615d2aac3f608a0c311c31ddab8513a278b022e9597e",
		},
		{
			name:   "9.6 J terminate",
			method: "POST",
			path:   "/apps/3/users/42/terminate_connections",
			body:   "{}",
			want:   "2829710742ff5f799010258297d09016e2366257e3e954039eeda349073a2bcf",
		},
		{
			name:   "9.6 K batch",
			method: "POST",
			path:   "/apps/3/batch_events",
			body:   `{"batch":[{"channel":"my-channel","name":"my-event","data":"{\"a\":1}"},{"channel":"presence-foobar","name":"my-event","data":"hi","socket_id":"1234.1234","info":"user_count"}]}`,
			want:   "544c727d71e677f151e0d14f95d8fbba2580c856d906131a62fb9011a47ff32f",
		},
		{
			name:   "9.5 node SDK, body",
			key:    "f00d",
			secret: "tofu",
			method: "GET",
			path:   "/event",
			body:   "example body",
			ts:     1234567890,
			want:   "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b",
		},
		{
			name:   "9.5 node SDK, params",
			key:    "f00d",
			secret: "tofu",
			method: "GET",
			path:   "/event",
			params: map[string]string{"foo": "bar", "baz": "123454321"},
			ts:     1234567890,
			want:   "d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, secret, ts := tc.key, tc.secret, tc.ts
			if key == "" {
				key, secret, ts = vecKey, vecSecret, vecTime
			}
			q, err := url.ParseQuery(SignQuery(key, secret, tc.method, tc.path,
				tc.params, []byte(tc.body), time.Unix(ts, 0)))
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Get("auth_signature"); got != tc.want {
				t.Fatalf("auth_signature = %s, want %s", got, tc.want)
			}
			for k, v := range tc.params {
				if q.Get(k) != v {
					t.Fatalf("param %s = %q, want %q", k, q.Get(k), v)
				}
			}
		})
	}
}

// verifyRequest checks a request the way a Pusher server does
// (docs/protocol.md §6.2), independently of SignQuery: decode the wire query,
// drop auth_signature, sort, and compare the HMAC.
func verifyRequest(r *http.Request, body []byte, secret string) bool {
	raw := r.URL.RawQuery
	var pairs []string
	var sig string
	for _, kv := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(kv, "=")
		k, _ = url.PathUnescape(k)
		v, _ = url.PathUnescape(v) // %XX only; '+' stays literal
		if k == "auth_signature" {
			sig = v
			continue
		}
		pairs = append(pairs, strings.ToLower(k)+"="+v)
	}
	slices.Sort(pairs)
	if len(body) > 0 {
		sum := md5.Sum(body)
		if r.URL.Query().Get("body_md5") != hex.EncodeToString(sum[:]) {
			return false
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	io.WriteString(m, r.Method+"\n"+r.URL.EscapedPath()+"\n"+strings.Join(pairs, "&"))
	return hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(sig))
}

func TestRESTEndToEnd(t *testing.T) {
	type seen struct {
		method, path string
		body         string
		valid        bool
	}
	reqs := make(chan seen, 8)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ok := verifyRequest(r, b, vecSecret)
		reqs <- seen{method: r.Method, path: r.URL.Path, body: string(b), valid: ok}
		if !ok {
			http.Error(w, "Invalid signature", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "{}")
	}))
	t.Cleanup(hs.Close)
	r := newTestREST(t, hs.URL+"/")
	r.clock = nil // real time: the verifier does not check the window
	ctx := context.Background()

	status, _, err := r.TriggerBatch(ctx, []BatchItem{
		{
			Name:    "e",
			Data:    "<b>&",
			Channel: "c",
		},
		{
			Name:     "e",
			Data:     "x",
			Channel:  "presence-c",
			SocketID: "1.2",
			Info:     "user_count",
		},
	})
	if err != nil || status != http.StatusOK {
		t.Fatalf("TriggerBatch = %d %v", status, err)
	}
	got := <-reqs
	wantBody := `{"batch":[{"name":"e","data":"<b>&","channel":"c"},` +
		`{"name":"e","data":"x","channel":"presence-c","socket_id":"1.2","info":"user_count"}]}`
	if got.path != "/apps/3/batch_events" || got.body != wantBody || !got.valid {
		t.Fatalf("batch request = %+v", got)
	}

	// GET with values that need escaping, and a trigger with socket_id/info.
	params := map[string]string{"filter_by_prefix": "presence-", "info": "user_count,subscription_count", "x y": "a b+c"}
	if status, _, err := r.Do(ctx, http.MethodGet, "/apps/3/channels", params, nil); err != nil || status != http.StatusOK {
		t.Fatalf("Do GET = %d %v", status, err)
	}
	if got := <-reqs; got.method != "GET" || got.body != "" || !got.valid {
		t.Fatalf("GET request = %+v", got)
	}
	status, _, err = r.Trigger(ctx, TriggerParams{Name: "e", Data: "d", Channels: []string{"a", "b"}, SocketID: "1.2", Info: "subscription_count"})
	if err != nil || status != http.StatusOK {
		t.Fatalf("Trigger = %d %v", status, err)
	}
	if got := <-reqs; !got.valid || got.body != `{"name":"e","channels":["a","b"],"data":"d","socket_id":"1.2","info":"subscription_count"}` {
		t.Fatalf("trigger request = %+v", got)
	}

	// A forged signature is sent as given; the status is not an error.
	status, body, err := r.Do(ctx, http.MethodGet, "/apps/3/channels", map[string]string{"auth_signature": "00"}, nil)
	if err != nil || status != http.StatusUnauthorized || !strings.Contains(string(body), "Invalid signature") {
		t.Fatalf("forged Do = %d %q %v", status, body, err)
	}
	if got := <-reqs; got.valid {
		t.Fatalf("forged request verified")
	}
}

func TestRESTTransportError(t *testing.T) {
	r := newTestREST(t, "http://127.0.0.1:1")
	if _, _, err := r.Trigger(context.Background(), TriggerParams{Name: "e", Channels: []string{"a"}}); err == nil {
		t.Fatalf("Trigger to a closed port succeeded")
	}
}
