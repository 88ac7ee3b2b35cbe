package bus

import (
	"errors"
	"strings"
	"testing"
)

// pusherChars is every character legal in a Pusher channel name, plus '#'
// (as in #server-to-user-42).
const pusherChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;#"

func TestEncodeChannel(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "plain",
			in:   "my-channel",
			want: "my-channel",
		},
		{
			name: "echo model",
			in:   "private-App.Models.User.1",
			want: "private-App%2EModels%2EUser%2E1",
		},
		{
			name: "server to user",
			in:   "#server-to-user-42",
			want: "#server-to-user-42",
		},
		{
			name: "wildcards and percent",
			in:   "a*b>c%d",
			want: "a%2Ab%3Ec%25d",
		},
		{
			name: "space control and non-ascii",
			in:   "a b\tc\x7f\xffé",
			want: "a%20b%09c%7F%FF%C3%A9",
		},
		{
			name: "all legal except dot",
			in:   "presence-x_y=z@w,v;u#",
			want: "presence-x_y=z@w,v;u#",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EncodeChannel(tc.in)
			if got != tc.want {
				t.Fatalf("EncodeChannel(%q) = %q, want %q", tc.in, got, tc.want)
			}
			back, err := DecodeChannel(got)
			if err != nil || back != tc.in {
				t.Fatalf("DecodeChannel(%q) = %q, %v; want %q", got, back, err, tc.in)
			}
		})
	}
}

func TestEncodeChannelEveryPusherChar(t *testing.T) {
	for i := 0; i < len(pusherChars); i++ {
		for _, name := range []string{pusherChars[i : i+1], "x" + pusherChars[i:i+1] + "y"} {
			tok := EncodeChannel(name)
			if strings.ContainsAny(tok, ".*> ") {
				t.Fatalf("EncodeChannel(%q) = %q holds a NATS special character", name, tok)
			}
			back, err := DecodeChannel(tok)
			if err != nil || back != name {
				t.Fatalf("round trip %q -> %q -> %q, %v", name, tok, back, err)
			}
		}
	}
	if tok := EncodeChannel(pusherChars); tok != strings.ReplaceAll(pusherChars, ".", "%2E") {
		t.Fatalf("EncodeChannel(all) = %q", tok)
	}
}

func TestDecodeChannelRejects(t *testing.T) {
	tests := []struct {
		name string
		tok  string
	}{
		{name: "empty", tok: ""},
		{name: "raw dot", tok: "a.b"},
		{name: "raw star", tok: "a*"},
		{name: "raw gt", tok: ">"},
		{name: "raw space", tok: "a b"},
		{name: "raw non-ascii", tok: "\xff"},
		{name: "short escape", tok: "a%2"},
		{name: "bare percent", tok: "%"},
		{name: "lowercase hex", tok: "a%2e"},
		{name: "not hex", tok: "%G1"},
		{name: "needless escape", tok: "%41"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeChannel(tc.tok)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("DecodeChannel(%q) = %q, %v; want ErrInvalidToken", tc.tok, got, err)
			}
		})
	}
}

func TestSubjectsAndNames(t *testing.T) {
	if got, want := StoredSubject("app1", "private-App.Models.User.1"), "herald.app1.msg.private-App%2EModels%2EUser%2E1"; got != want {
		t.Fatalf("StoredSubject = %q, want %q", got, want)
	}
	if got, want := LiveSubject("app1", "a.b"), "herald.app1.live.a%2Eb"; got != want {
		t.Fatalf("LiveSubject = %q, want %q", got, want)
	}
	if got, want := StreamName("app-1_x"), "HERALD_app-1_x"; got != want {
		t.Fatalf("StreamName = %q, want %q", got, want)
	}
	app, tok, ok := parseLiveSubject(LiveSubject("app1", "a.b"))
	if !ok || app != "app1" || tok != "a%2Eb" {
		t.Fatalf("parseLiveSubject = %q %q %v", app, tok, ok)
	}
	for _, bad := range []string{"", "herald.", "herald.app1", "herald.app1.msg.x", "herald..live.x", "herald.app1.live.", "nats.app1.live.x"} {
		if _, _, ok := parseLiveSubject(bad); ok {
			t.Fatalf("parseLiveSubject(%q) ok", bad)
		}
	}
}

func TestValidApp(t *testing.T) {
	for _, app := range []string{"a", "app-id", "APP_1", strings.Repeat("x", 64)} {
		if !ValidApp(app) {
			t.Fatalf("ValidApp(%q) = false", app)
		}
	}
	for _, app := range []string{"", "a.b", "a b", "a*", "a>", "é", strings.Repeat("x", 65)} {
		if ValidApp(app) {
			t.Fatalf("ValidApp(%q) = true", app)
		}
	}
}

func TestEncodeDecodeNoAlloc(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		tok := EncodeChannel("presence-room-42")
		if _, err := DecodeChannel(tok); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("plain channel round trip allocates %v times", allocs)
	}
}

func FuzzChannelRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", "private-App.Models.User.1", "#server-to-user-42", "%2E", "a b*c>d", "\x00\x7f\xff", pusherChars} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := EncodeChannel(name)
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c >= 0x7F || c == '.' || c == '*' || c == '>' {
				t.Fatalf("EncodeChannel(%q) = %q holds byte 0x%02X", name, tok, c)
			}
		}
		if name == "" {
			return
		}
		back, err := DecodeChannel(tok)
		if err != nil || back != name {
			t.Fatalf("round trip %q -> %q -> %q, %v", name, tok, back, err)
		}
	})
}

// FuzzDecodeChannel checks that decoding accepts only canonical tokens: one
// channel, one subject.
func FuzzDecodeChannel(f *testing.F) {
	for _, s := range []string{"a", "a%2Eb", "%25", "%2e", "%41", "a.b", "%", "%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		name, err := DecodeChannel(tok)
		if err != nil {
			return
		}
		if again := EncodeChannel(name); again != tok {
			t.Fatalf("DecodeChannel(%q) = %q, which encodes to %q", tok, name, again)
		}
	})
}
