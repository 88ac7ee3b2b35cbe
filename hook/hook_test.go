package hook

import (
	"encoding/json"
	"testing"
)

func TestEventJSON(t *testing.T) {
	three := 3
	cases := []struct {
		ev   Event
		want string
	}{
		{Event{ID: "1", Name: "channel_occupied", Channel: "c"}, `{"id":"1","name":"channel_occupied","channel":"c"}`},
		{Event{ID: "2", Name: "member_added", Channel: "presence-c", UserID: "42"}, `{"id":"2","name":"member_added","channel":"presence-c","user_id":"42"}`},
		{Event{ID: "3", Name: "client_event", Channel: "private-c", Event: "client-x", SocketID: "1.2"}, `{"id":"3","name":"client_event","channel":"private-c","event":"client-x","socket_id":"1.2","data":""}`},
		{Event{ID: "4", Name: "client_event", Channel: "private-c", Event: "client-x", Data: `{"a":1}`, SocketID: "1.2"}, `{"id":"4","name":"client_event","channel":"private-c","event":"client-x","data":"{\"a\":1}","socket_id":"1.2"}`},
		{Event{ID: "5", Name: "subscription_count", Channel: "c", SubscriptionCount: &three}, `{"id":"5","name":"subscription_count","channel":"c","subscription_count":3}`},
	}
	for _, tc := range cases {
		b, err := json.Marshal(tc.ev)
		if err != nil || string(b) != tc.want {
			t.Errorf("got %s %v\nwant %s", b, err, tc.want)
		}
	}
}
