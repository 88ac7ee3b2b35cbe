package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFrameGoldens(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			name: "connection established",
			got:  AppendConnectionEstablished(nil, SocketID{Node: 123456, Seq: 7890123}, 120),
			want: `{"event":"pusher:connection_established","data":"{\"socket_id\":\"123456.7890123\",\"activity_timeout\":120}"}`,
		},
		{
			name: "error with code",
			got:  AppendError(nil, CodeAppNotFound, "Application does not exist", ""),
			want: `{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}`,
		},
		{
			name: "error null code",
			got:  AppendError(nil, 0, "Existing subscription to channel test-channel", ""),
			want: `{"event":"pusher:error","data":{"code":null,"message":"Existing subscription to channel test-channel"}}`,
		},
		{
			name: "error with channel",
			got:  AppendError(nil, 0, `Invalid channel name 'a"b'`, "private-x"),
			want: `{"event":"pusher:error","channel":"private-x","data":{"code":null,"message":"Invalid channel name 'a\"b'"}}`,
		},
		{
			name: "ping",
			got:  AppendPing(nil),
			want: `{"event":"pusher:ping","data":"{}"}`,
		},
		{
			name: "pong",
			got:  AppendPong(nil),
			want: `{"event":"pusher:pong","data":"{}"}`,
		},
		{
			name: "subscription succeeded",
			got:  AppendSubscriptionSucceeded(nil, "my-channel", "{}"),
			want: `{"event":"pusher_internal:subscription_succeeded","channel":"my-channel","data":"{}"}`,
		},
		{
			name: "subscription succeeded presence",
			got:  AppendSubscriptionSucceeded(nil, "presence-example", `{"presence":{"ids":["11814b"],"hash":{"11814b":{"name":"Phil"}},"count":1}}`),
			want: `{"event":"pusher_internal:subscription_succeeded","channel":"presence-example","data":"{\"presence\":{\"ids\":[\"11814b\"],\"hash\":{\"11814b\":{\"name\":\"Phil\"}},\"count\":1}}"}`,
		},
		{
			name: "event",
			got:  AppendEvent(nil, "my-event", "my-channel", `{"some":"data"}`, ""),
			want: `{"event":"my-event","channel":"my-channel","data":"{\"some\":\"data\"}"}`,
		},
		{
			name: "event with user_id",
			got:  AppendEvent(nil, "client-typing", "presence-room", "hi", "42"),
			want: `{"event":"client-typing","channel":"presence-room","data":"hi","user_id":"42"}`,
		},
		{
			name: "event without channel",
			got:  AppendEvent(nil, "pusher_internal:watchlist_events", "", `{"events":[]}`, ""),
			want: `{"event":"pusher_internal:watchlist_events","data":"{\"events\":[]}"}`,
		},
		{
			name: "event 9.7 encrypted data verbatim",
			got: AppendEvent(nil, "e", "private-encrypted-foobar",
				`{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX","ciphertext":"JudJzMunSIiVrODAo+lfpUsGJzgoj596PYEg0Ekt7UbHsg5iiqAaZxI="}`, ""),
			want: `{"event":"e","channel":"private-encrypted-foobar","data":"{\"nonce\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX\",\"ciphertext\":\"JudJzMunSIiVrODAo+lfpUsGJzgoj596PYEg0Ekt7UbHsg5iiqAaZxI=\"}"}`,
		},
		{
			name: "raw event object data",
			got:  AppendEventRaw(nil, "client-typing", "presence-room", []byte(`{"user":"bob"}`), "42"),
			want: `{"event":"client-typing","channel":"presence-room","data":{"user":"bob"},"user_id":"42"}`,
		},
		{
			name: "raw event string data",
			got:  AppendEventRaw(nil, "client-typing", "private-chat.1", []byte(`"hi"`), ""),
			want: `{"event":"client-typing","channel":"private-chat.1","data":"hi"}`,
		},
		{
			name: "cache miss",
			got:  AppendCacheMiss(nil, "cache-x"),
			want: `{"event":"pusher:cache_miss","channel":"cache-x"}`,
		},
		{
			name: "subscription error",
			got:  AppendSubscriptionError(nil, "private-x", "AuthError", "The connection is unauthorized.", 401),
			want: `{"event":"pusher:subscription_error","channel":"private-x","data":{"type":"AuthError","error":"The connection is unauthorized.","status":401}}`,
		},
		{
			name: "signin success",
			got:  AppendSigninSuccess(nil, `{"id":"12345"}`),
			want: `{"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"12345\"}"}}`,
		},
		{
			name: "member added",
			got:  AppendMemberAdded(nil, "presence-example", []byte(`"11814b"`), []byte(`{"name":"Phil"}`)),
			want: `{"event":"pusher_internal:member_added","channel":"presence-example","data":"{\"user_id\":\"11814b\",\"user_info\":{\"name\":\"Phil\"}}"}`,
		},
		{
			name: "member added numeric id no info",
			got:  AppendMemberAdded(nil, "presence-example", []byte(`10`), nil),
			want: `{"event":"pusher_internal:member_added","channel":"presence-example","data":"{\"user_id\":10}"}`,
		},
		{
			name: "member removed",
			got:  AppendMemberRemoved(nil, "presence-example", []byte(`"11814b"`)),
			want: `{"event":"pusher_internal:member_removed","channel":"presence-example","data":"{\"user_id\":\"11814b\"}"}`,
		},
		{
			name: "subscription count",
			got:  AppendSubscriptionCount(nil, "my-channel", 3),
			want: `{"event":"pusher_internal:subscription_count","channel":"my-channel","data":"{\"subscription_count\":3}"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Fatalf("got  %s\nwant %s", tc.got, tc.want)
			}
			if !json.Valid(tc.got) {
				t.Fatalf("invalid JSON: %s", tc.got)
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "plain", in: "abc", want: `"abc"`},
		{name: "empty", in: "", want: `""`},
		{name: "quote and backslash", in: `a"b\c`, want: `"a\"b\\c"`},
		{name: "short escapes", in: "\n\r\t\b\f", want: `"\n\r\t\b\f"`},
		{name: "other controls", in: "\x00\x1f\x7f", want: `"\u0000\u001f` + "\x7f" + `"`},
		{name: "html kept", in: "<a>&", want: `"<a>&"`},
		{name: "utf-8 kept", in: "ą§¶™€ 😀", want: `"ą§¶™€ 😀"`},
		{name: "line separators kept", in: "\u2028\u2029", want: "\"\u2028\u2029\""},
		{name: "invalid utf-8", in: "a\xffb\xc3", want: `"a\ufffdb\ufffd"`},
		{name: "surrogate half", in: "\xed\xa0\x80", want: `"\ufffd\ufffd\ufffd"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendJSONString([]byte("x"), tc.in)
			if string(got) != "x"+tc.want {
				t.Fatalf("AppendJSONString(%q) = %s, want %s", tc.in, got[1:], tc.want)
			}
			if b := AppendJSONStringBytes(nil, []byte(tc.in)); string(b) != tc.want {
				t.Fatalf("AppendJSONStringBytes(%q) = %s, want %s", tc.in, b, tc.want)
			}
			var back string
			if err := json.Unmarshal(got[1:], &back); err != nil {
				t.Fatalf("output not valid JSON: %v", err)
			}
			if want := strings.ToValidUTF8(tc.in, "\ufffd"); !strings.Contains(tc.in, "\xed") && back != want {
				t.Fatalf("round trip = %q, want %q", back, want)
			}
		})
	}
}

func TestFramesDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	id := SocketID{Node: 1, Seq: 2}
	data := strings.Repeat(`{"k":"v\n"}`, 20)
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendEvent(buf[:0], "my-event", "presence-room", data, "42")
		b = AppendEventRaw(b, "client-x", "private-a", []byte(`{"a":1}`), "")
		b = AppendError(b, 0, "Invalid channel name 'é\xff'", "c")
		b = AppendConnectionEstablished(b, id, 120)
		b = AppendSubscriptionSucceeded(b, "c", "{}")
		b = AppendSubscriptionError(b, "c", "AuthError", "x", 401)
		b = AppendMemberAdded(b, "presence-a", []byte(`"1"`), []byte(`{"n":"é"}`))
		b = AppendJSONStringBytes(b, []byte("é\xff"))
		_ = AppendPong(b)
	})
	if allocs != 0 {
		t.Fatalf("frame builders allocate %v times per run", allocs)
	}
}
