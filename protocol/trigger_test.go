package protocol

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// channelsJSON returns a JSON array of n distinct channel names.
func channelsJSON(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf(`"ch-%d"`, i)
	}
	return "[" + strings.Join(names, ",") + "]"
}

func TestDecodeTrigger(t *testing.T) {
	data10240 := strings.Repeat("x", 10240)
	tests := []struct {
		name    string
		body    string
		lim     Limits
		want    Trigger
		status  int
		message string
	}{
		{
			name: "9.4 body",
			body: body94,
			want: Trigger{Name: "foo", Data: `{"some":"data"}`, Channels: []string{"project-3"}},
		},
		{
			name: "9.6 M sendToUser",
			body: bodyM,
			want: Trigger{Name: "my-event", Data: `{"message":"hello world"}`, Channels: []string{"#server-to-user-42"}},
		},
		{
			name: "single channel (php)",
			body: `{"name":"e","channel":"c","data":""}`,
			want: Trigger{Name: "e", Data: "", Channels: []string{"c"}},
		},
		{
			name: "channels wins over channel",
			body: `{"name":"e","channel":"b","channels":["a"],"data":"d"}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"a"}},
		},
		{
			name: "null channels falls back to channel",
			body: `{"name":"e","channel":"b","channels":null,"data":"d"}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"b"}},
		},
		{
			name: "channels de-duplicated in order",
			body: `{"name":"e","channels":["b","a","b","c","a"],"data":"d"}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"b", "a", "c"}},
		},
		{
			name: "socket_id and info",
			body: `{"name":"e","channels":["presence-a"],"data":"d","socket_id":"1234.1234","info":"user_count, subscription_count,user_count"}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"presence-a"}, SocketID: "1234.1234",
				Info: []string{InfoUserCount, InfoSubscriptionCount}},
		},
		{
			name: "empty socket_id and info ignored",
			body: `{"name":"e","channels":["a"],"data":"d","socket_id":"","info":""}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"a"}},
		},
		{
			name: "laravel event name",
			body: `{"name":"App\\Events\\OrderShipped","channels":["private-App.Models.User.1"],"data":"{}"}`,
			want: Trigger{Name: `App\Events\OrderShipped`, Data: "{}", Channels: []string{"private-App.Models.User.1"}},
		},
		{
			name: "data of exactly 10240 bytes",
			body: `{"name":"e","channels":["a"],"data":"` + data10240 + `"}`,
			want: Trigger{Name: "e", Data: data10240, Channels: []string{"a"}},
		},
		{
			name: "100 channels",
			body: `{"name":"e","channels":` + channelsJSON(100) + `,"data":"d"}`,
			want: Trigger{Name: "e", Data: "d"},
		},
		{
			name: "single encrypted channel",
			body: `{"name":"e","channels":["private-encrypted-a"],"data":"d"}`,
			want: Trigger{Name: "e", Data: "d", Channels: []string{"private-encrypted-a"}},
		},
		{
			name: "200-character event name (multi-byte)",
			body: `{"name":"` + strings.Repeat("é", 200) + `","channels":["a"],"data":"d"}`,
			want: Trigger{Name: strings.Repeat("é", 200), Data: "d", Channels: []string{"a"}},
		},
		{name: "invalid JSON", body: `{"name":`, status: 400, message: "Invalid JSON"},
		{name: "not an object", body: `["name"]`, status: 400, message: "Invalid JSON"},
		{name: "trailing garbage", body: body94 + "x", status: 400, message: "Invalid JSON"},
		{name: "name missing", body: `{"channels":["a"],"data":"d"}`, status: 400, message: "Missing event name"},
		{name: "name empty", body: `{"name":"","channels":["a"],"data":"d"}`, status: 400, message: "Missing event name"},
		{name: "name not a string", body: `{"name":1,"channels":["a"],"data":"d"}`, status: 400, message: "name must be a string"},
		{name: "name 201 characters", body: `{"name":"` + strings.Repeat("a", 201) + `","channels":["a"],"data":"d"}`,
			status: 400, message: "Event name too long"},
		{name: "name pusher:", body: `{"name":"pusher:x","channels":["a"],"data":"d"}`, status: 400, message: "reserved"},
		{name: "name pusher_internal:", body: `{"name":"pusher_internal:x","channels":["a"],"data":"d"}`, status: 400, message: "reserved"},
		{name: "data missing", body: `{"name":"e","channels":["a"]}`, status: 400, message: "Missing data"},
		{name: "data null", body: `{"name":"e","channels":["a"],"data":null}`, status: 400, message: "Missing data"},
		{name: "data object", body: `{"name":"e","channels":["a"],"data":{"a":1}}`, status: 400, message: "data must be a string"},
		{name: "data 10241 bytes", body: `{"name":"e","channels":["a"],"data":"` + data10240 + `x"}`, status: 413, message: "too large"},
		{name: "data over custom limit", body: `{"name":"e","channels":["a"],"data":"abc"}`, lim: Limits{MaxDataBytes: 2},
			status: 413, message: "too large"},
		{name: "no channels", body: `{"name":"e","data":"d"}`, status: 400, message: "Missing channels"},
		{name: "empty channels", body: `{"name":"e","channels":[],"channel":"a","data":"d"}`, status: 400, message: "Missing channels"},
		{name: "101 channels", body: `{"name":"e","channels":` + channelsJSON(101) + `,"data":"d"}`, status: 400, message: "Too many channels"},
		{name: "channels not an array", body: `{"name":"e","channels":"a","data":"d"}`, status: 400, message: "channels must be"},
		{name: "channels of numbers", body: `{"name":"e","channels":[1],"data":"d"}`, status: 400, message: "channels must be"},
		{name: "channel not a string", body: `{"name":"e","channel":1,"data":"d"}`, status: 400, message: "channel must be"},
		{name: "invalid channel name", body: `{"name":"e","channels":["a","b c"],"data":"d"}`, status: 400, message: "Invalid channel name 'b c'"},
		{name: "empty channel name", body: `{"name":"e","channel":"","data":"d"}`, status: 400, message: "Invalid channel name"},
		{name: "hash channel", body: `{"name":"e","channels":["#foo"],"data":"d"}`, status: 400, message: "Invalid channel name"},
		{name: "channel name too long", body: `{"name":"e","channels":["` + strings.Repeat("a", 201) + `"],"data":"d"}`,
			status: 400, message: "too long"},
		{name: "encrypted among several", body: `{"name":"e","channels":["a","private-encrypted-b"],"data":"d"}`,
			status: 400, message: "encrypted"},
		{name: "bad socket_id", body: `{"name":"e","channels":["a"],"data":"d","socket_id":"abc.1"}`, status: 400, message: "Invalid socket_id"},
		{name: "socket_id not a string", body: `{"name":"e","channels":["a"],"data":"d","socket_id":1.2}`, status: 400, message: "socket_id"},
		{name: "unknown info", body: `{"name":"e","channels":["a"],"data":"d","info":"user_count,cache"}`, status: 400, message: "Invalid info attribute 'cache'"},
		{name: "empty info element", body: `{"name":"e","channels":["a"],"data":"d","info":"user_count,"}`, status: 400, message: "Invalid info"},
		{name: "info not a string", body: `{"name":"e","channels":["a"],"data":"d","info":["user_count"]}`, status: 400, message: "info must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTrigger([]byte(tc.body), tc.lim)
			if tc.status != 0 {
				var he *HTTPError
				if !errors.As(err, &he) || he.Status != tc.status || !strings.Contains(he.Message, tc.message) {
					t.Fatalf("err = %#v, want %d containing %q", err, tc.status, tc.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeTrigger: %v", err)
			}
			if tc.want.Channels == nil { // the 100-channel case: only the count matters
				tc.want.Channels = got.Channels
				if len(got.Channels) != 100 {
					t.Fatalf("got %d channels, want 100", len(got.Channels))
				}
			}
			if got.Name != tc.want.Name || got.Data != tc.want.Data || got.SocketID != tc.want.SocketID ||
				!slices.Equal(got.Channels, tc.want.Channels) || !slices.Equal(got.Info, tc.want.Info) {
				t.Fatalf("DecodeTrigger = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// batchJSON returns a batch body with n valid items.
func batchJSON(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"name":"e","channel":"c-%d","data":"%d"}`, i, i)
	}
	return `{"batch":[` + strings.Join(items, ",") + `]}`
}

func TestDecodeBatch(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		lim     Limits
		want    []Trigger
		count   int
		status  int
		message string
	}{
		{
			name: "9.6 K body",
			body: bodyK,
			want: []Trigger{
				{Name: "my-event", Data: `{"a":1}`, Channels: []string{"my-channel"}},
				{Name: "my-event", Data: "hi", Channels: []string{"presence-foobar"}, SocketID: "1234.1234", Info: []string{InfoUserCount}},
			},
		},
		{name: "10 items", body: batchJSON(10), count: 10},
		{name: "3 items under custom limit", body: batchJSON(3), lim: Limits{MaxBatch: 3}, count: 3},
		{name: "11 items", body: batchJSON(11), status: 400, message: "more than 10"},
		{name: "4 items over custom limit", body: batchJSON(4), lim: Limits{MaxBatch: 3}, status: 400, message: "more than 3"},
		{name: "empty batch", body: `{"batch":[]}`, status: 400, message: "Empty batch"},
		{name: "missing batch", body: `{}`, status: 400, message: "Missing batch"},
		{name: "null batch", body: `{"batch":null}`, status: 400, message: "Missing batch"},
		{name: "batch not an array", body: `{"batch":{}}`, status: 400, message: "Invalid batch"},
		{name: "invalid JSON", body: `{"batch":[`, status: 400, message: "Invalid JSON"},
		{name: "item not an object", body: `{"batch":[1]}`, status: 400, message: "Batch event 0: expected an object"},
		{name: "item with channels", body: `{"batch":[{"name":"e","channels":["a"],"data":"d"}]}`, status: 400, message: "single channel"},
		{name: "item with channels and channel", body: `{"batch":[{"name":"e","channel":"a","channels":["a"],"data":"d"}]}`,
			status: 400, message: "single channel"},
		{name: "item missing channel", body: `{"batch":[{"name":"e","data":"d"}]}`, status: 400, message: "Missing channels"},
		{name: "second item invalid", body: `{"batch":[{"name":"e","channel":"a","data":"d"},{"name":"pusher:x","channel":"a","data":"d"}]}`,
			status: 400, message: "Batch event 1: Event name 'pusher:x' is reserved"},
		{name: "item data too large", body: `{"batch":[{"name":"e","channel":"a","data":"` + strings.Repeat("x", 10241) + `"}]}`,
			status: 413, message: "Batch event 0: Event data too large"},
		{name: "item bad socket_id", body: `{"batch":[{"name":"e","channel":"a","data":"d","socket_id":"1"}]}`, status: 400, message: "Invalid socket_id"},
		{name: "item bad info", body: `{"batch":[{"name":"e","channel":"a","data":"d","info":"x"}]}`, status: 400, message: "Invalid info"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBatch([]byte(tc.body), tc.lim)
			if tc.status != 0 {
				var he *HTTPError
				if !errors.As(err, &he) || he.Status != tc.status || !strings.Contains(he.Message, tc.message) {
					t.Fatalf("err = %#v, want %d containing %q", err, tc.status, tc.message)
				}
				if got != nil {
					t.Fatalf("partial result %v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			if tc.want == nil {
				if len(got) != tc.count {
					t.Fatalf("got %d items, want %d", len(got), tc.count)
				}
				for i, tr := range got {
					if len(tr.Channels) != 1 || tr.Channels[0] != fmt.Sprintf("c-%d", i) || tr.Data != fmt.Sprint(i) {
						t.Fatalf("item %d = %+v", i, tr)
					}
				}
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d items, want %d", len(got), len(tc.want))
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.Name != w.Name || g.Data != w.Data || g.SocketID != w.SocketID ||
					!slices.Equal(g.Channels, w.Channels) || !slices.Equal(g.Info, w.Info) {
					t.Fatalf("item %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestDefaultLimits(t *testing.T) {
	want := Limits{MaxDataBytes: 10240, MaxChannels: 100, MaxBatch: 10, MaxEventName: 200, MaxChannelName: 200}
	if got := DefaultLimits(); got != want {
		t.Fatalf("DefaultLimits = %+v", got)
	}
	if got := (Limits{MaxBatch: 5}).withDefaults(); got.MaxBatch != 5 || got.MaxDataBytes != 10240 {
		t.Fatalf("withDefaults = %+v", got)
	}
}
