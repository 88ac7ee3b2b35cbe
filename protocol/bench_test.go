package protocol

import (
	"testing"
	"time"
)

func BenchmarkAppendEvent(b *testing.B) {
	buf := make([]byte, 0, 1024)
	data := `{"message":"hello world","n":42,"tags":["a","b"]}`
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], "my-event", "presence-room", data, "")
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeMessage(b *testing.B) {
	frames := []struct {
		name  string
		frame []byte
	}{
		{name: "ping", frame: []byte(`{"event":"pusher:ping","data":{}}`)},
		{name: "subscribe", frame: []byte(wsFrames[4])},
		{name: "client-event", frame: []byte(`{"event":"client-typing","channel":"private-chat.1","data":{"user":"bob"}}`)},
	}
	for _, f := range frames {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.frame)))
			for b.Loop() {
				if _, err := DecodeMessage(f.frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyChannelAuth(b *testing.B) {
	a := channelVectors[6] // 9.6 A, presence
	auth := a.key + ":" + a.sig
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyChannelAuth(a.key, a.secret, a.socketID, a.channel, a.channelData, auth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyREST(b *testing.B) {
	v := restVectors[0]
	r := RESTRequest{Method: v.method, Path: v.path, RawQuery: v.query + "&auth_signature=" + v.sig, Body: []byte(v.body)}
	now := time.Unix(v.timestamp, 0)
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyREST(r, v.key, v.secret, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeTrigger(b *testing.B) {
	body := []byte(body94)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeTrigger(body, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
