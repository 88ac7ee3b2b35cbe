package protocol

import (
	"encoding/json"
	"testing"
)

// FuzzParseChannelData: never panics; an accepted member has a non-empty id,
// and its raw JSON parts are valid JSON.
func FuzzParseChannelData(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"42","user_info":{"name":"Alice"}}`,
		`{"user_id":10,"user_info":{"name":"Mr. Channels"}}`,
		`{"user_id":"7","user_info":{}}`,
		`{"user_info":{}}`,
		`{"user_id":null}`,
		`[]`, `"x"`, `{"user_id":"a","user_id":"b"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseChannelData(s)
		if err != nil {
			return
		}
		if m.UserID == "" {
			t.Fatalf("accepted %q with an empty user id", s)
		}
		if !json.Valid(m.UserIDJSON) || (m.UserInfo != nil && !json.Valid(m.UserInfo)) {
			t.Fatalf("accepted %q with invalid JSON parts %q %q", s, m.UserIDJSON, m.UserInfo)
		}
	})
}

// FuzzParseUserData: never panics; an accepted user has a non-empty string id
// and valid JSON user_info.
func FuzzParseUserData(f *testing.F) {
	for _, s := range []string{
		`{"id":"12345"}`,
		`{"id":"42","user_info":{"name":"Alice"},"watchlist":["7","8"]}`,
		`{"id":42}`, `{"id":""}`, `{"watchlist":[1]}`, `{}`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUserData(s)
		if err != nil {
			return
		}
		if u.ID == "" {
			t.Fatalf("accepted %q with an empty id", s)
		}
		if u.UserInfo != nil && !json.Valid(u.UserInfo) {
			t.Fatalf("accepted %q with invalid user_info %q", s, u.UserInfo)
		}
	})
}
