package app_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"herald/app"
)

// TestRecordJSON: a record round-trips with the app under its config keys;
// keys a newer binary wrote are ignored, strict decoding refuses them.
func TestRecordJSON(t *testing.T) {
	a := app.New("shop", "shop-key", "s3cret")
	a.MaxConnections = 7
	a.ClientEvents = true
	a.ReplayMaxAge = app.Duration(90 * time.Second)
	a.NATS.User = "shop-backend"
	a.Webhooks = []app.Webhook{{URL: "http://127.0.0.1:1/h", EventTypes: []string{"channel_occupied"}}}
	until := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	r := app.Record{App: a, Name: "The Shop", PreviousSecretsUntil: until, Created: until.Add(-time.Hour), Updated: until}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"max_connections":7`, `"client_events":true`, `"replay_max_age":"1m30s"`, `"user":"shop-backend"`, `"name":"The Shop"`, `"previous_secrets_until":"2026-12-08T01:00:00Z"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %s", data, want)
		}
	}
	var back app.Record
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	// (Compared as their JSON: an absent webhook headers map comes back empty.)
	j1, _ := app.AppJSON(&back.App)
	j2, _ := app.AppJSON(&r.App)
	if string(j1) != string(j2) || back.App.MaxConnections != 7 || back.App.ReplayMaxAge != r.App.ReplayMaxAge || back.Name != r.Name || !back.PreviousSecretsUntil.Equal(until) || !back.Created.Equal(r.Created) {
		t.Fatalf("round trip:\n%+v\n%+v", back, r)
	}

	newer := strings.Replace(string(data), `"max_connections":7`, `"max_connections":7,"from_the_future":1`, 1)
	if err := json.Unmarshal([]byte(newer), &back); err != nil || back.App.MaxConnections != 7 {
		t.Fatalf("a record with an unknown key: %v", err)
	}
	if _, err := app.DecodeApp([]byte(`{"max_conections":1}`), app.New("a", "b", "c"), true); err == nil || !strings.Contains(err.Error(), "max_conections") {
		t.Fatalf("strict decoding of an unknown key: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"name":"x"}`), &back); err == nil {
		t.Fatal("a record without an app decoded")
	}
	got, err := app.DecodeApp([]byte(`{"max_batch_size":5}`), a, true)
	if err != nil || got.MaxBatchSize != 5 || got.MaxConnections != 7 || got.Secret != "s3cret" {
		t.Fatalf("a partial update: %+v %v", got, err)
	}
}

// TestRecordEffective: previous secrets stay until the overlap ends.
func TestRecordEffective(t *testing.T) {
	a := app.New("shop", "shop-key", "new")
	a.PreviousSecrets = []string{"old"}
	until := time.Now().Add(time.Hour)
	r := app.Record{App: a, PreviousSecretsUntil: until}
	if e := r.Effective(until.Add(-time.Second)); len(e.PreviousSecrets) != 1 {
		t.Fatalf("during the overlap: %v", e.PreviousSecrets)
	}
	if e := r.Effective(until); len(e.PreviousSecrets) != 0 || len(r.App.PreviousSecrets) != 1 {
		t.Fatalf("after the overlap: %v (the record keeps %v)", e.PreviousSecrets, r.App.PreviousSecrets)
	}
	r.PreviousSecretsUntil = time.Time{}
	if e := r.Effective(until.Add(time.Hour)); len(e.PreviousSecrets) != 1 {
		t.Fatal("no end: the previous secrets stay")
	}
}

func TestGeneratedCredentials(t *testing.T) {
	k1, k2, s1, id := app.NewKey(), app.NewKey(), app.NewSecret(), app.NewID()
	if len(k1) != 20 || k1 == k2 || len(s1) != 32 || len(id) != 12 {
		t.Fatalf("key %q %q secret %q id %q", k1, k2, s1, id)
	}
	a := app.New(id, k1, s1)
	if err := a.Validate(); err != nil {
		t.Fatalf("a generated app is invalid: %v", err)
	}
}
