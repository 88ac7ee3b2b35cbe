package app

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Record is one app as the app registry stores it (apps_source: registry;
// the JetStream key-value bucket of bus/appstore.go, docs/apps.md): the app
// itself and what only the registry knows about it.
//
// Its JSON form is {"app":{...},"name":...,"previous_secrets_until":...,"created":...,
// "updated":...}, where the app object has the same keys as apps[] in the
// config file (the yaml tags of App), so that a record read straight from
// the bucket reads like the config it replaces.
type Record struct {
	App  App
	Name string // a label for people (herald apps create --name); not used by Herald
	// PreviousSecretsUntil is when the overlap of the last rotation ends:
	// App.PreviousSecrets are accepted until then. Zero: until they are
	// removed by hand (as in a config file).
	PreviousSecretsUntil time.Time
	Created              time.Time
	Updated              time.Time
}

// recordJSON is Record's wire form.
type recordJSON struct {
	App                  json.RawMessage `json:"app"`
	Name                 string          `json:"name,omitempty"`
	PreviousSecretsUntil *time.Time      `json:"previous_secrets_until,omitempty"`
	Created              time.Time       `json:"created"`
	Updated              time.Time       `json:"updated"`
}

// MarshalJSON writes the record with the app under its config keys.
func (r Record) MarshalJSON() ([]byte, error) {
	a, err := AppJSON(&r.App)
	if err != nil {
		return nil, err
	}
	w := recordJSON{App: a, Name: r.Name, Created: r.Created.UTC(), Updated: r.Updated.UTC()}
	if !r.PreviousSecretsUntil.IsZero() {
		t := r.PreviousSecretsUntil.UTC()
		w.PreviousSecretsUntil = &t
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a record written by MarshalJSON. Keys of the app that
// this binary does not know (a newer node wrote them) are ignored, so a
// rolling upgrade can add keys; the app is not validated here.
func (r *Record) UnmarshalJSON(data []byte) error {
	var w recordJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("app: record: %w", err)
	}
	if len(w.App) == 0 || bytes.Equal(w.App, []byte("null")) {
		return errors.New("app: record: no app")
	}
	a, err := DecodeApp(w.App, New("", "", ""), false)
	if err != nil {
		return err
	}
	*r = Record{App: a, Name: w.Name, Created: w.Created, Updated: w.Updated}
	if w.PreviousSecretsUntil != nil {
		r.PreviousSecretsUntil = *w.PreviousSecretsUntil
	}
	return nil
}

// Effective is the app as it is in force at now: the previous secrets are
// dropped once the overlap has ended.
func (r *Record) Effective(now time.Time) App {
	a := r.App
	if !r.PreviousSecretsUntil.IsZero() && !now.Before(r.PreviousSecretsUntil) && len(a.PreviousSecrets) > 0 {
		a.PreviousSecrets = []string{}
	}
	return a
}

// AppJSON is a's JSON object under its config keys (the yaml tags).
func AppJSON(a *App) ([]byte, error) {
	y, err := yaml.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("app: encode %q: %w", a.ID, err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(y, &m); err != nil {
		return nil, fmt.Errorf("app: encode %q: %w", a.ID, err)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("app: encode %q: %w", a.ID, err)
	}
	return out, nil
}

// DecodeApp reads a JSON (or YAML) object of app keys over base, so keys it
// does not name keep base's values. strict refuses keys App does not have,
// naming them (for input from people: the admin API); without it they are
// ignored (for records a newer binary may have written). It does not
// validate the app (Validate).
func DecodeApp(data []byte, base App, strict bool) (App, error) {
	a := base
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(strict)
	if err := dec.Decode(&a); err != nil {
		return App{}, fmt.Errorf("app: %w", err)
	}
	if a.PreviousSecrets == nil {
		a.PreviousSecrets = []string{}
	}
	if a.Webhooks == nil {
		a.Webhooks = []Webhook{}
	}
	return a, nil
}

// NewKey returns a new random app key: 20 hex characters, like Pusher's.
func NewKey() string { return randomHex(10) }

// NewSecret returns a new random app secret: 32 hex characters (128 bits).
func NewSecret() string { return randomHex(16) }

// NewID returns a new random app id: 12 hex characters.
func NewID() string { return randomHex(6) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
