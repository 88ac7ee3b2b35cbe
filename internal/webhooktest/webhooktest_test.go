package webhooktest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func post(t *testing.T, r *Receiver, secret, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.URL(), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", "k")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req.Header.Set("X-Pusher-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestReceiverFindsWhatIsWrong: a well-formed request is recorded; each
// way a request can differ from Pusher's is a problem.
func TestReceiverFindsWhatIsWrong(t *testing.T) {
	r := NewReceiver("k", "s")
	defer r.Close()
	defer http.DefaultClient.CloseIdleConnections()
	now := time.Now().UnixMilli()
	body := func(ev string) string { return fmt.Sprintf(`{"time_ms":%d,"events":[%s]}`, now, ev) }

	post(t, r, "s", body(`{"id":"1","name":"member_added","channel":"presence-a","user_id":"42"},{"id":"2","name":"subscription_count","channel":"a","subscription_count":3}`))
	if p := r.Problems(); len(p) != 0 || r.Requests() != 1 {
		t.Fatalf("a good request: problems %q, %d requests", p, r.Requests())
	}
	if got := r.Lines("presence-a"); len(got) != 1 || got[0] != "member_added 42" {
		t.Fatalf("lines %q", got)
	}
	bad := []struct{ why, secret, body string }{
		{"wrong secret", "other", body(`{"id":"3","name":"channel_occupied","channel":"a"}`)},
		{"numeric user_id", "s", body(`{"id":"4","name":"member_added","channel":"presence-a","user_id":42}`)},
		{"a member Pusher does not send", "s", body(`{"id":"5","name":"channel_vacated","channel":"a","serial":1}`)},
		{"an id twice", "s", body(`{"id":"1","name":"channel_occupied","channel":"a"}`)},
		{"time_ms not an integer", "s", `{"time_ms":"1","events":[{"id":"6","name":"cache_miss","channel":"a"}]}`},
		{"client_event without data", "s", body(`{"id":"7","name":"client_event","channel":"private-a","event":"client-x","socket_id":"1.2"}`)},
	}
	for i, b := range bad {
		post(t, r, b.secret, b.body)
		if got := len(r.Problems()); got != i+1 {
			t.Fatalf("%s: %d problems, want %d: %q", b.why, got, i+1, r.Problems())
		}
	}
	if !bytes.Contains([]byte(strings.Join(r.Problems(), "\n")), []byte("received twice")) {
		t.Fatalf("problems %q", r.Problems())
	}
}
