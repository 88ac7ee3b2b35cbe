package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		kind  ChannelKind
		cache bool
	}{
		{name: "my-channel", kind: Public},
		{name: "cache-x", kind: Public, cache: true},
		{name: "private-x", kind: Private},
		{name: "private-cache-x", kind: Private, cache: true},
		{name: "private-encrypted-x", kind: Encrypted},
		{name: "private-encrypted-cache-x", kind: Encrypted, cache: true},
		{name: "presence-x", kind: Presence},
		{name: "presence-cache-x", kind: Presence, cache: true},
		{name: "#server-to-user-42", kind: ServerToUser},
		{name: "#server-to-user-", kind: Public},
		{name: "privatefoo", kind: Public},
		{name: "presence", kind: Public},
		{name: "cache", kind: Public},
		{name: "Private-x", kind: Public},
		{name: "private-", kind: Private},
		{name: "private-App.Models.User.1", kind: Private},
		{name: "", kind: Public},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, cache := Classify(tc.name)
			if kind != tc.kind || cache != tc.cache {
				t.Fatalf("Classify(%q) = %v, %v; want %v, %v", tc.name, kind, cache, tc.kind, tc.cache)
			}
		})
	}
}

func TestChannelKindString(t *testing.T) {
	tests := []struct {
		kind ChannelKind
		want string
		auth bool
	}{
		{kind: Public, want: "public"},
		{kind: Private, want: "private", auth: true},
		{kind: Presence, want: "presence", auth: true},
		{kind: Encrypted, want: "encrypted", auth: true},
		{kind: ServerToUser, want: "server-to-user"},
		{kind: 99, want: "ChannelKind(99)"},
	}
	for _, tc := range tests {
		if got := tc.kind.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		if got := tc.kind.RequiresAuth(); got != tc.auth {
			t.Errorf("%v.RequiresAuth() = %v, want %v", tc.kind, got, tc.auth)
		}
	}
}

func TestValidateChannelName(t *testing.T) {
	tests := []struct {
		name    string
		channel string
		maxLen  int
		wantErr string
	}{
		{name: "plain", channel: "my-channel"},
		{name: "all allowed chars", channel: "azAZ09_-=@,.;"},
		{name: "laravel", channel: "private-App.Models.User.1"},
		{name: "server-to-user", channel: "#server-to-user-42"},
		{name: "server-to-user with charset", channel: "#server-to-user-a.b@c"},
		{name: "empty", channel: "", wantErr: "Invalid channel name ''"},
		{name: "space", channel: "a b", wantErr: "Invalid channel name 'a b'"},
		{name: "hash elsewhere", channel: "#foo", wantErr: "Invalid channel name '#foo'"},
		{name: "server-to-user empty id", channel: "#server-to-user-", wantErr: "Invalid channel name"},
		{name: "server-to-user bad id", channel: "#server-to-user-a b", wantErr: "Invalid channel name"},
		{name: "server-to-user hash in id", channel: "#server-to-user-#1", wantErr: "Invalid channel name"},
		{name: "unicode", channel: "é", wantErr: "Invalid channel name"},
		{name: "slash", channel: "a/b", wantErr: "Invalid channel name"},
		{name: "200 bytes ok", channel: strings.Repeat("a", 200)},
		{name: "201 bytes too long", channel: strings.Repeat("a", 201), wantErr: "Channel name too long"},
		{name: "custom limit ok", channel: strings.Repeat("a", 164), maxLen: 164},
		{name: "custom limit exceeded", channel: strings.Repeat("a", 165), maxLen: 164, wantErr: "Channel name too long"},
		{name: "negative limit means default", channel: strings.Repeat("a", 200), maxLen: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateChannelName(tc.channel, tc.maxLen)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateChannelName(%q): %v", tc.channel, err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != 0 || !strings.HasPrefix(pe.Message, tc.wantErr) {
				t.Fatalf("ValidateChannelName(%q) = %#v, want *Error %q", tc.channel, err, tc.wantErr)
			}
		})
	}
}

func TestServerToUser(t *testing.T) {
	ch := ServerToUserChannel("42")
	if ch != "#server-to-user-42" {
		t.Fatalf("ServerToUserChannel = %q", ch)
	}
	tests := []struct {
		channel string
		id      string
		ok      bool
	}{
		{channel: ch, id: "42", ok: true},
		{channel: "#server-to-user-", ok: false},
		{channel: "server-to-user-42", ok: false},
		{channel: "private-x", ok: false},
	}
	for _, tc := range tests {
		id, ok := ServerToUserID(tc.channel)
		if id != tc.id || ok != tc.ok {
			t.Errorf("ServerToUserID(%q) = %q, %v; want %q, %v", tc.channel, id, ok, tc.id, tc.ok)
		}
	}
}

func TestCodeAction(t *testing.T) {
	tests := []struct {
		code int
		want CloseAction
	}{
		{code: 1000, want: ActionNone},
		{code: CodeTLSOnly, want: ActionTLSOnly},
		{code: CodeAppNotFound, want: ActionRefused},
		{code: CodeUnauthorized, want: ActionRefused},
		{code: CodeOverCapacity, want: ActionBackoff},
		{code: CodeReconnect, want: ActionRetry},
		{code: CodePongTimeout, want: ActionRetry},
		{code: CodeClientEventRateLimit, want: ActionRefused},
		{code: CodeWatchlistLimit, want: ActionRefused},
		{code: 4400, want: ActionNone},
	}
	for _, tc := range tests {
		if got := CodeAction(tc.code); got != tc.want {
			t.Errorf("CodeAction(%d) = %v, want %v", tc.code, got, tc.want)
		}
	}
	e := &Error{Code: 4001, Message: "Application does not exist"}
	if e.Error() != e.Message {
		t.Fatalf("Error() = %q", e.Error())
	}
}
