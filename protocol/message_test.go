package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Message
		wantErr bool
	}{
		{
			name: "pusher-js ping",
			in:   `{"event":"pusher:ping","data":{}}`,
			want: Message{Event: "pusher:ping", Data: json.RawMessage(`{}`)},
		},
		{
			name: "string data",
			in:   `{"event":"pusher:ping","data":"{}"}`,
			want: Message{Event: "pusher:ping", Data: json.RawMessage(`"{}"`)},
		},
		{
			name: "no data",
			in:   `{"event":"pusher:ping"}`,
			want: Message{Event: "pusher:ping"},
		},
		{
			name: "9.6 A subscribe frame",
			in:   `{"event":"pusher:subscribe","data":{"channel":"presence-chat","auth":"278d425bdf160c739803:2b6cfa1ae3c73d46e10671bf81b683ef252297ee62a03c09955d0f6719f3bfda","channel_data":"{\"user_id\":\"42\",\"user_info\":{\"name\":\"Alice\"}}"}}`,
			want: Message{Event: "pusher:subscribe", Data: json.RawMessage(`{"channel":"presence-chat","auth":"278d425bdf160c739803:2b6cfa1ae3c73d46e10671bf81b683ef252297ee62a03c09955d0f6719f3bfda","channel_data":"{\"user_id\":\"42\",\"user_info\":{\"name\":\"Alice\"}}"}`)},
		},
		{
			name: "client event with channel and whitespace",
			in:   " {\n \"event\" : \"client-typing\" , \"channel\":\"private-chat.1\", \"data\" : {\"user\":\"bob\"} } ",
			want: Message{Event: "client-typing", Channel: "private-chat.1", Data: json.RawMessage(`{"user":"bob"}`)},
		},
		{
			name: "escaped event name",
			in:   `{"event":"client-\u00e9\n","data":null}`,
			want: Message{Event: "client-é\n", Data: json.RawMessage(`null`)},
		},
		{
			name: "escaped key matches",
			in:   `{"\u0065vent":"pusher:ping"}`,
			want: Message{Event: "pusher:ping"},
		},
		{
			name: "null channel",
			in:   `{"event":"x","channel":null}`,
			want: Message{Event: "x"},
		},
		{
			name: "last duplicate wins",
			in:   `{"event":"a","event":"b"}`,
			want: Message{Event: "b"},
		},
		{
			name: "unknown keys ignored",
			in:   `{"x":[1,{"event":"no"}],"event":"yes","y":"}"}`,
			want: Message{Event: "yes"},
		},
		{name: "not JSON", in: `hello`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
		{name: "array", in: `[{"event":"x"}]`, wantErr: true},
		{name: "string", in: `"x"`, wantErr: true},
		{name: "missing event", in: `{"data":{}}`, wantErr: true},
		{name: "empty event", in: `{"event":""}`, wantErr: true},
		{name: "numeric event", in: `{"event":1}`, wantErr: true},
		{name: "null event", in: `{"event":null}`, wantErr: true},
		{name: "case differs", in: `{"Event":"pusher:ping"}`, wantErr: true},
		{name: "numeric channel", in: `{"event":"x","channel":1}`, wantErr: true},
		{name: "trailing garbage", in: `{"event":"x"}x`, wantErr: true},
		{name: "two objects", in: `{"event":"x"}{"event":"y"}`, wantErr: true},
		{name: "truncated", in: `{"event":"x"`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(tc.in))
			if tc.wantErr {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != 0 || pe.Message != "Invalid message format" {
					t.Fatalf("err = %#v, want Invalid message format", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if got.Event != tc.want.Event || got.Channel != tc.want.Channel || string(got.Data) != string(tc.want.Data) ||
				(got.Data == nil) != (tc.want.Data == nil) {
				t.Fatalf("DecodeMessage = %+v (data %s), want %+v (data %s)", got, got.Data, tc.want, tc.want.Data)
			}
		})
	}
}

func TestDecodeMessageDoesNotAlias(t *testing.T) {
	in := []byte(`{"event":"client-x","channel":"private-a","data":{"k":"v"}}`)
	m, err := DecodeMessage(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'X'
	}
	if m.Event != "client-x" || m.Channel != "private-a" || string(m.Data) != `{"k":"v"}` {
		t.Fatalf("message changed with its input: %+v", m)
	}
}

func TestDecodeSubscribe(t *testing.T) {
	const cd = `{"user_id":"42","user_info":{"name":"Alice"}}`
	tests := []struct {
		name    string
		data    string
		want    SubscribeData
		wantErr bool
	}{
		{
			name: "9.6 A object form",
			data: `{"channel":"presence-chat","auth":"k:s","channel_data":"{\"user_id\":\"42\",\"user_info\":{\"name\":\"Alice\"}}"}`,
			want: SubscribeData{Channel: "presence-chat", Auth: "k:s", ChannelData: cd},
		},
		{
			name: "string-encoded object",
			data: `"{\"channel\":\"presence-chat\",\"auth\":\"k:s\",\"channel_data\":\"{\\\"user_id\\\":\\\"42\\\",\\\"user_info\\\":{\\\"name\\\":\\\"Alice\\\"}}\"}"`,
			want: SubscribeData{Channel: "presence-chat", Auth: "k:s", ChannelData: cd},
		},
		{
			name: "channel_data bytes kept exactly",
			data: `{"channel":"presence-x","auth":"k:s","channel_data":"{\"user_id\": 10 , \"a\":\"\\u00e9\"}"}`,
			want: SubscribeData{Channel: "presence-x", Auth: "k:s", ChannelData: `{"user_id": 10 , "a":"\u00e9"}`},
		},
		{
			name: "public with empty auth",
			data: `{"auth":"","channel":"my-channel"}`,
			want: SubscribeData{Channel: "my-channel"},
		},
		{
			name: "public with null auth",
			data: `{"auth":null,"channel":"my-channel"}`,
			want: SubscribeData{Channel: "my-channel"},
		},
		{
			name: "public without auth",
			data: `{"channel":"my-channel"}`,
			want: SubscribeData{Channel: "my-channel"},
		},
		{name: "absent data", data: ``, wantErr: true},
		{name: "missing channel", data: `{"auth":""}`, wantErr: true},
		{name: "empty channel", data: `{"channel":""}`, wantErr: true},
		{name: "numeric channel", data: `{"channel":1}`, wantErr: true},
		{name: "numeric auth", data: `{"channel":"a","auth":1}`, wantErr: true},
		{name: "object channel_data", data: `{"channel":"presence-a","channel_data":{"user_id":"1"}}`, wantErr: true},
		{name: "string not holding an object", data: `"hello"`, wantErr: true},
		{name: "array", data: `[]`, wantErr: true},
		{name: "bad JSON", data: `{"channel":"a"`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var data json.RawMessage
			if tc.data != "" {
				data = json.RawMessage(tc.data)
			}
			got, err := DecodeSubscribe(data)
			if tc.wantErr {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != 0 {
					t.Fatalf("err = %#v, want *Error", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecodeSubscribe = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeUnsubscribe(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    string
		wantErr bool
	}{
		{name: "object", data: `{"channel":"my-channel"}`, want: "my-channel"},
		{name: "string", data: `"{\"channel\":\"my-channel\"}"`, want: "my-channel"},
		{name: "missing", data: `{}`, wantErr: true},
		{name: "null data", data: `null`, wantErr: true},
		{name: "number", data: `{"channel":5}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeUnsubscribe(json.RawMessage(tc.data))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("DecodeUnsubscribe = %q, %v; want %q, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestDecodeSignin(t *testing.T) {
	const ud = `{"id":"42","user_info":{"name":"Alice"},"watchlist":["7","8"]}`
	tests := []struct {
		name    string
		data    string
		want    SigninData
		wantErr bool
	}{
		{
			name: "9.6 E frame",
			data: `{"auth":"278d425bdf160c739803:3a73068960e68d0b303676e9ac1216ad2f426dcad01ef300c31c4021289e9b0a","user_data":"{\"id\":\"42\",\"user_info\":{\"name\":\"Alice\"},\"watchlist\":[\"7\",\"8\"]}"}`,
			want: SigninData{Auth: "278d425bdf160c739803:3a73068960e68d0b303676e9ac1216ad2f426dcad01ef300c31c4021289e9b0a", UserData: ud},
		},
		{
			name: "string-encoded",
			data: `"{\"auth\":\"k:s\",\"user_data\":\"{\\\"id\\\":\\\"1\\\"}\"}"`,
			want: SigninData{Auth: "k:s", UserData: `{"id":"1"}`},
		},
		{name: "missing auth", data: `{"user_data":"{}"}`, wantErr: true},
		{name: "missing user_data", data: `{"auth":"k:s"}`, wantErr: true},
		{name: "object user_data", data: `{"auth":"k:s","user_data":{"id":"1"}}`, wantErr: true},
		{name: "not an object", data: `5`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeSignin(json.RawMessage(tc.data))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("DecodeSignin = %+v, %v; want %+v, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseUserData(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		id        string
		info      string
		watchlist []string
		wantErr   bool
	}{
		{name: "id only", in: `{"id":"12345"}`, id: "12345"},
		{name: "full", in: `{"id":"42","user_info":{"name":"Alice"},"watchlist":["7","8"]}`, id: "42",
			info: `{"name":"Alice"}`, watchlist: []string{"7", "8"}},
		{name: "null watchlist", in: `{"id":"1","watchlist":null}`, id: "1"},
		{name: "numeric id", in: `{"id":42}`, wantErr: true},
		{name: "empty id", in: `{"id":""}`, wantErr: true},
		{name: "missing id", in: `{"user_info":{}}`, wantErr: true},
		{name: "null id", in: `{"id":null}`, wantErr: true},
		{name: "watchlist of numbers", in: `{"id":"1","watchlist":[7]}`, wantErr: true},
		{name: "watchlist not array", in: `{"id":"1","watchlist":"7"}`, wantErr: true},
		{name: "not JSON", in: `id=1`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseUserData(tc.in)
			if tc.wantErr {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != CodeUnauthorized {
					t.Fatalf("err = %#v, want *Error 4009", err)
				}
				return
			}
			if err != nil || u.ID != tc.id || string(u.UserInfo) != tc.info || len(u.Watchlist) != len(tc.watchlist) {
				t.Fatalf("ParseUserData = %+v, %v", u, err)
			}
			for i := range u.Watchlist {
				if u.Watchlist[i] != tc.watchlist[i] {
					t.Fatalf("watchlist = %v, want %v", u.Watchlist, tc.watchlist)
				}
			}
		})
	}
}

func TestParseChannelData(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		id      string
		idJSON  string
		info    string
		wantErr bool
	}{
		{name: "9.6 A", in: `{"user_id":"42","user_info":{"name":"Alice"}}`, id: "42", idJSON: `"42"`, info: `{"name":"Alice"}`},
		{name: "9.2 numeric id", in: `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, id: "10", idJSON: `10`, info: `{"name":"Mr. Channels"}`},
		{name: "9.6 B no user_info", in: `{"user_id":"42"}`, id: "42", idJSON: `"42"`},
		{name: "negative number", in: `{"user_id":-1}`, id: "-1", idJSON: `-1`},
		{name: "missing user_id", in: `{"user_info":{}}`, wantErr: true},
		{name: "empty user_id", in: `{"user_id":""}`, wantErr: true},
		{name: "bool user_id", in: `{"user_id":true}`, wantErr: true},
		{name: "object user_id", in: `{"user_id":{}}`, wantErr: true},
		{name: "not an object", in: `"42"`, wantErr: true},
		{name: "not JSON", in: `{`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseChannelData(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseChannelData = %+v, want error", m)
				}
				return
			}
			if err != nil || m.UserID != tc.id || string(m.UserIDJSON) != tc.idJSON || string(m.UserInfo) != tc.info {
				t.Fatalf("ParseChannelData = %+v, %v", m, err)
			}
		})
	}
}

func TestDecodeSubscribeResume(t *testing.T) {
	cases := []struct {
		in      string
		want    uint64
		has     bool
		wantErr bool
	}{
		{`{"channel":"a"}`, 0, false, false},
		{`{"channel":"a","herald_resume":null}`, 0, false, false},
		{`{"channel":"a","herald_resume":0}`, 0, true, false},
		{`{"channel":"a","herald_resume":1733}`, 1733, true, false},
		{`{"channel":"a","herald_resume":-1}`, 0, false, true},
		{`{"channel":"a","herald_resume":"5"}`, 0, false, true},
		{`{"channel":"a","herald_resume":1.5}`, 0, false, true},
	}
	for _, tc := range cases {
		d, err := DecodeSubscribe([]byte(tc.in))
		if (err != nil) != tc.wantErr || d.Resume != tc.want || d.HasResume != tc.has {
			t.Fatalf("%s: %+v %v", tc.in, d, err)
		}
	}
}
