package app

import "testing"

func TestOriginAllowed(t *testing.T) {
	a := New("a", "k", "s")
	if !a.OriginAllowed([]byte("https://anything.example")) {
		t.Fatal("empty list refused an origin")
	}
	a.AllowedOrigins = []string{"https://example.com", "https://*.example.org", "http://localhost:8080", "null"}
	for origin, want := range map[string]bool{
		"https://example.com":         true,
		"HTTPS://Example.COM":         true,
		"http://example.com":          false, // scheme
		"https://example.com:8443":    false, // port
		"https://www.example.com":     false, // no wildcard for .com
		"https://evil-example.com":    false,
		"https://example.com.evil.io": false,
		"https://a.example.org":       true,
		"https://a.b.example.org":     true,
		"https://example.org":         false, // the wildcard needs a label
		"https://.example.org":        false,
		"https://aexample.org":        false,
		"https://a.example.org:443":   false,
		"http://localhost:8080":       true,
		"http://localhost":            false,
		"null":                        true,
		"https://":                    false,
		"garbage":                     false,
	} {
		if got := a.OriginAllowed([]byte(origin)); got != want {
			t.Errorf("%q: allowed %v, want %v", origin, got, want)
		}
	}
	a.AllowedOrigins = []string{"*"}
	if !a.OriginAllowed([]byte("https://x.y")) {
		t.Fatal(`"*" refused an origin`)
	}
}

func TestValidateOrigins(t *testing.T) {
	for _, tc := range []struct {
		entry string
		ok    bool
	}{
		{"https://example.com", true},
		{"https://*.example.com", true},
		{"https://*.example.com:8443", true},
		{"http://localhost:8080", true},
		{"http://[::1]:8080", true},
		{"chrome-extension://abcdef", true},
		{"*", true},
		{"null", true},
		{"example.com", false},
		{"https://example.com/", false},
		{"https://example.com/path", false},
		{"https://user@example.com", false},
		{"https://*example.com", false},
		{"https://a.*.example.com", false},
		{"https://example.com:", false},
		{"https://example.com:x", false},
		{"https://", false},
		{"1http://example.com", false},
		{"", false},
	} {
		a := New("a", "k", "s")
		a.AllowedOrigins = []string{"https://ok.example", tc.entry}
		err := a.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%q: Validate %v, want ok %v", tc.entry, err, tc.ok)
		}
		if err != nil && err.Key != "allowed_origins[1]" {
			t.Errorf("%q: error key %q, want allowed_origins[1]", tc.entry, err.Key)
		}
	}
}
