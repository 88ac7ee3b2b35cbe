package client

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
)

func TestDecodeEvent(t *testing.T) {
	cases := []struct {
		name  string
		frame string
		want  Event
	}{
		{
			name:  "string data is decoded once",
			frame: `{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}`,
			want: Event{
				Event: "pusher:connection_established",
				Data:  `{"socket_id":"1.2","activity_timeout":120}`,
			},
		},
		{
			name:  "object data is raw JSON",
			frame: `{"event":"pusher:error","data":{"code":null,"message":"x"}}`,
			want: Event{
				Event: "pusher:error",
				Data:  `{"code":null,"message":"x"}`,
			},
		},
		{
			name:  "plain string data",
			frame: `{"event":"e","channel":"c","data":"hello \"q\""}`,
			want: Event{
				Event:   "e",
				Channel: "c",
				Data:    `hello "q"`,
			},
		},
		{
			name:  "number data",
			frame: `{"event":"e","data":42}`,
			want: Event{
				Event: "e",
				Data:  "42",
			},
		},
		{
			name:  "no data",
			frame: `{"event":"pusher:cache_miss","channel":"cache-a"}`,
			want: Event{
				Event:   "pusher:cache_miss",
				Channel: "cache-a",
			},
		},
		{
			name:  "user id and serial",
			frame: `{"event":"client-x","channel":"presence-a","data":"{}","user_id":"42","serial":7}`,
			want: Event{
				Event:   "client-x",
				Channel: "presence-a",
				Data:    "{}",
				UserID:  "42",
				Serial:  7,
			},
		},
		{
			name:  "numeric user id, string serial",
			frame: `{"event":"e","user_id":42,"serial":"9"}`,
			want: Event{
				Event:  "e",
				UserID: "42",
				Serial: 9,
			},
		},
		{
			name:  "negative serial",
			frame: `{"event":"e","serial":-1}`,
			want: Event{
				Event: "e",
			},
		},
		{
			name:  "not JSON",
			frame: `{oops`,
			want:  Event{},
		},
		{
			name:  "not an object",
			frame: `["event"]`,
			want:  Event{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeEvent([]byte(tc.frame))
			if string(got.Raw) != tc.frame {
				t.Fatalf("Raw = %q, want the frame", got.Raw)
			}
			if stripRaw(got) != stripRaw(tc.want) {
				t.Fatalf("decodeEvent = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// eventFields is Event without Raw, so that it compares with ==.
type eventFields struct {
	Event, Channel, Data, UserID string
	Serial                       uint64
}

func stripRaw(e Event) eventFields {
	return eventFields{e.Event, e.Channel, e.Data, e.UserID, e.Serial}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"event":"e","channel":"c","data":"{\"a\":1}","user_id":"1","serial":3}`))
	f.Add([]byte(`{"event":"pusher:error","data":{"code":4001,"message":"m"}}`))
	f.Add([]byte(`{"event":1,"data":null}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		ev := decodeEvent(frame)
		if string(ev.Raw) != string(frame) {
			t.Fatalf("Raw changed")
		}
		if !json.Valid(frame) && stripRaw(ev) != (eventFields{}) {
			t.Fatalf("invalid JSON decoded to %+v", ev)
		}
	})
}

func BenchmarkDecodeEvent(b *testing.B) {
	frame := []byte(`{"event":"my-event","channel":"my-channel","data":"{\"message\":\"hello world\",\"n\":12345}","serial":42}`)
	b.ReportAllocs()
	for b.Loop() {
		decodeEvent(frame)
	}
}

// Writers and readers may be used from several goroutines at once.
func TestConcurrentUse(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s, keyOK, Options{})
	sc := s.accept(t)
	const writers, each = 4, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				if err := c.Send("client-x", "private-a", map[string]int{"i": i}); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
			}
		})
	}
	for i := 0; i < writers*each; i++ {
		sc.sendText(`{"event":"e"}`)
	}
	got := make(chan int, 2)
	for r := 0; r < 2; r++ {
		wg.Go(func() {
			n := 0
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 200e6)
				_, err := c.Next(ctx)
				cancel()
				if err != nil {
					got <- n
					return
				}
				n++
			}
		})
	}
	for i := 0; i < writers*each; i++ {
		sc.nextText(t)
	}
	wg.Wait()
	if n := <-got + <-got; n != writers*each {
		t.Fatalf("readers got %d events, want %d", n, writers*each)
	}
}
