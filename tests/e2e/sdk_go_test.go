package e2e

// The official Go server SDK, github.com/pusher/pusher-http-go/v5, against
// Herald: every REST call it makes, and its channel-authorization and
// user-authentication output used by a Go WebSocket client (herald/client)
// exactly as an app would hand it to pusher-js. The rules checked:
// docs/protocol.md §2-§4, §6 and §8.
//
// pusher-http-go's ClientFromURL accepts only numeric app ids, so the
// clients are built as structs. v5.1.1 has no TerminateUserConnections; that
// call is made with herald/client's signer, with the body the other SDKs send.
//
// "Not delivered" is always checked against a later barrier event on the same
// connection (collectUntil), never after a sleep.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"
	"golang.org/x/crypto/nacl/secretbox"

	"herald/client"
)

// waitTimeout bounds every wait for one event.
const waitTimeout = 5 * time.Second

// goSDK is the Go server SDK for the dev app pointed at h.
func goSDK(h *Herald) *pusher.Client {
	return &pusher.Client{
		AppID:      "app-id",
		Key:        "app-key",
		Secret:     "app-secret",
		Host:       h.Addr,
		Secure:     false,
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
	}
}

// uniqName returns prefix plus a random suffix (valid in channel names and
// user ids).
func uniqName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// dialApp opens a Go Pusher client on the dev app; it is closed when the
// test ends.
func dialApp(t *testing.T, h *Herald) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+h.Addr+"/app/app-key?protocol=7&client=go-e2e&version=1", client.Options{})
	if err != nil {
		t.Fatalf("dial Herald: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// waitEvent waits for event on channel ("" = any channel).
func waitEvent(t *testing.T, c *client.Conn, event, channel string) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	ev, err := c.WaitFor(ctx, event, channel)
	if err != nil {
		t.Fatalf("waiting for %s on %q (socket %s): %v", event, channel, c.SocketID(), err)
	}
	return ev
}

// collectUntil returns every event the connection receives up to and
// including the first one for which last is true.
func collectUntil(t *testing.T, c *client.Conn, what string, last func(client.Event) bool) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var got []client.Event
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s (socket %s, got %s): %v", what, c.SocketID(), names(got), err)
		}
		got = append(got, ev)
		if last(ev) {
			return got
		}
	}
}

// untilEvent is collectUntil for one event name on one channel.
func untilEvent(t *testing.T, c *client.Conn, event, channel string) []client.Event {
	t.Helper()
	return collectUntil(t, c, event+" on "+channel, func(ev client.Event) bool {
		return ev.Event == event && ev.Channel == channel
	})
}

func names(evs []client.Event) string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Event + "@" + ev.Channel
	}
	return fmt.Sprint(out)
}

func count(evs []client.Event, event, channel string) int {
	n := 0
	for _, ev := range evs {
		if ev.Event == event && ev.Channel == channel {
			n++
		}
	}
	return n
}

func subscribePublic(t *testing.T, c *client.Conn, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := c.Subscribe(ctx, channel); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
}

// authRequest is the form body pusher-js POSTs to the app's auth endpoint.
func authRequest(socketID, channel string) []byte {
	return []byte(url.Values{"socket_id": {socketID}, "channel_name": {channel}}.Encode())
}

// authResponse is what the SDK's Authorize*/AuthenticateUser return.
type authResponse struct {
	Auth         string `json:"auth"`
	ChannelData  string `json:"channel_data"`
	SharedSecret string `json:"shared_secret"`
	UserData     string `json:"user_data"`
}

func decodeAuth(t *testing.T, b []byte, err error) authResponse {
	t.Helper()
	if err != nil {
		t.Fatalf("SDK auth: %v", err)
	}
	var a authResponse
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("SDK auth response %s: %v", b, err)
	}
	return a
}

// subscribeAuthorized subscribes c with the SDK's authorization of channel
// (presence when member is not nil) and returns the subscription_succeeded.
func subscribeAuthorized(t *testing.T, sdk *pusher.Client, c *client.Conn, channel string, member *pusher.MemberData) client.Event {
	t.Helper()
	var a authResponse
	if member != nil {
		b, err := sdk.AuthorizePresenceChannel(authRequest(c.SocketID(), channel), *member)
		a = decodeAuth(t, b, err)
	} else {
		b, err := sdk.AuthorizePrivateChannel(authRequest(c.SocketID(), channel))
		a = decodeAuth(t, b, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	ev, err := c.SubscribeAuth(ctx, channel, a.Auth, a.ChannelData)
	if err != nil {
		t.Fatalf("subscribe %s with the SDK's auth %+v: %v", channel, a, err)
	}
	return ev
}

func ptr[T any](v T) *T { return &v }

func jsonEqual(t *testing.T, what, got string, want any) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, got, err)
	}
	wb, _ := json.Marshal(want)
	_ = json.Unmarshal(wb, &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: got %s, want %s", what, got, wb)
	}
}

func TestGoSDK(t *testing.T) {
	h := startHerald(t)
	sdk := goSDK(h)

	t.Run("Trigger", func(t *testing.T) {
		c := dialApp(t, h)
		ch := uniqName("go-trigger")
		subscribePublic(t, c, ch)
		if err := sdk.Trigger(ch, "my-event", map[string]string{"hello": "world"}); err != nil {
			t.Fatalf("Trigger: %v", err)
		}
		ev := waitEvent(t, c, "my-event", ch)
		jsonEqual(t, "data", ev.Data, map[string]string{"hello": "world"})
	})

	t.Run("TriggerMulti", func(t *testing.T) {
		c := dialApp(t, h)
		a, b, other := uniqName("go-multi-a"), uniqName("go-multi-b"), uniqName("go-multi-c")
		subscribePublic(t, c, a)
		subscribePublic(t, c, b)
		if err := sdk.TriggerMulti([]string{a, b, other}, "fanout", map[string]int{"n": 1}); err != nil {
			t.Fatalf("TriggerMulti: %v", err)
		}
		if err := sdk.TriggerMulti([]string{a, b}, "barrier", "{}"); err != nil {
			t.Fatalf("TriggerMulti barrier: %v", err)
		}
		seen := map[string]bool{}
		got := collectUntil(t, c, "barrier on both channels", func(ev client.Event) bool {
			if ev.Event == "barrier" {
				seen[ev.Channel] = true
			}
			return seen[a] && seen[b]
		})
		if count(got, "fanout", a) != 1 || count(got, "fanout", b) != 1 || count(got, "fanout", other) != 0 {
			t.Fatalf("want one fanout on each subscribed channel, got %s", names(got))
		}
	})

	t.Run("TriggerWithParams socket_id exclusion", func(t *testing.T) {
		ca, cb := dialApp(t, h), dialApp(t, h)
		ch := uniqName("go-exclude")
		subscribePublic(t, ca, ch)
		subscribePublic(t, cb, ch)
		if _, err := sdk.TriggerWithParams(ch, "first", "1", pusher.TriggerParams{SocketID: ptr(ca.SocketID())}); err != nil {
			t.Fatalf("TriggerWithParams: %v", err)
		}
		if err := sdk.Trigger(ch, "second", "2"); err != nil {
			t.Fatalf("Trigger: %v", err)
		}
		if got := untilEvent(t, ca, "second", ch); count(got, "first", ch) != 0 {
			t.Fatalf("the excluded socket got the event: %s", names(got))
		}
		if got := untilEvent(t, cb, "second", ch); count(got, "first", ch) != 1 {
			t.Fatalf("the other socket did not get the event: %s", names(got))
		}
	})

	t.Run("TriggerBatch", func(t *testing.T) {
		c := dialApp(t, h)
		x, y := uniqName("go-batch-x"), uniqName("go-batch-y")
		subscribePublic(t, c, x)
		subscribePublic(t, c, y)
		res, err := sdk.TriggerBatch([]pusher.Event{
			{Channel: x, Name: "e", Data: "1"},
			{Channel: y, Name: "e", Data: "2"},
			{Channel: x, Name: "e", Data: "3"},
		})
		if err != nil {
			t.Fatalf("TriggerBatch: %v", err)
		}
		if len(res.Batch) != 0 {
			t.Fatalf("batch without info: want no attributes, got %+v", res)
		}
		if _, err := sdk.TriggerBatch([]pusher.Event{{Channel: x, Name: "barrier", Data: "{}"}, {Channel: y, Name: "barrier", Data: "{}"}}); err != nil {
			t.Fatalf("TriggerBatch barrier: %v", err)
		}
		seen := map[string]bool{}
		got := collectUntil(t, c, "barrier on both channels", func(ev client.Event) bool {
			if ev.Event == "barrier" {
				seen[ev.Channel] = true
			}
			return seen[x] && seen[y]
		})
		var onX, onY []string
		for _, ev := range got {
			switch {
			case ev.Event == "e" && ev.Channel == x:
				onX = append(onX, ev.Data)
			case ev.Event == "e" && ev.Channel == y:
				onY = append(onY, ev.Data)
			}
		}
		if !reflect.DeepEqual(onX, []string{"1", "3"}) || !reflect.DeepEqual(onY, []string{"2"}) {
			t.Fatalf("batch delivery: x %v (want [1 3]), y %v (want [2])", onX, onY)
		}
	})

	t.Run("private channel: AuthorizePrivateChannel output is accepted", func(t *testing.T) {
		c := dialApp(t, h)
		ch := uniqName("private-go")
		subscribeAuthorized(t, sdk, c, ch, nil)
		if err := sdk.Trigger(ch, "secret", map[string]bool{"ok": true}); err != nil {
			t.Fatalf("Trigger: %v", err)
		}
		jsonEqual(t, "data", waitEvent(t, c, "secret", ch).Data, map[string]bool{"ok": true})

		// An authorization made for another socket is refused.
		ch2 := uniqName("private-go-replay")
		b, err := sdk.AuthorizePrivateChannel(authRequest("1234.5678", ch2))
		a := decodeAuth(t, b, err)
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		_, err = c.SubscribeAuth(ctx, ch2, a.Auth, "")
		var se *client.SubscriptionError
		if !errors.As(err, &se) {
			t.Fatalf("subscribe with another socket's auth: want a SubscriptionError, got %v", err)
		}
	})

	t.Run("presence channel and channel queries", func(t *testing.T) {
		tag := uniqName("x")[2:]
		pch, pub := "presence-go-"+tag, "go-pub-"+tag
		one := &pusher.MemberData{UserID: "1", UserInfo: map[string]string{"name": "one"}}
		two := &pusher.MemberData{UserID: "2", UserInfo: map[string]string{"name": "two"}}

		c1 := dialApp(t, h)
		ok := subscribeAuthorized(t, sdk, c1, pch, one)
		var roster struct {
			Presence struct {
				IDs   []string                     `json:"ids"`
				Hash  map[string]map[string]string `json:"hash"`
				Count int                          `json:"count"`
			} `json:"presence"`
		}
		if err := json.Unmarshal([]byte(ok.Data), &roster); err != nil {
			t.Fatalf("roster %s: %v", ok.Data, err)
		}
		if roster.Presence.Count != 1 || !reflect.DeepEqual(roster.Presence.Hash, map[string]map[string]string{"1": {"name": "one"}}) {
			t.Fatalf("roster must hold the subscriber: %s", ok.Data)
		}
		c2 := dialApp(t, h)
		subscribeAuthorized(t, sdk, c2, pch, two)
		added := waitEvent(t, c1, "pusher_internal:member_added", pch)
		jsonEqual(t, "member_added", added.Data, map[string]any{"user_id": "2", "user_info": map[string]string{"name": "two"}})
		c3 := dialApp(t, h) // user 1 again
		subscribeAuthorized(t, sdk, c3, pch, one)
		cp := dialApp(t, h)
		subscribePublic(t, cp, pub)

		list, err := sdk.Channels(pusher.ChannelsParams{FilterByPrefix: ptr("presence-go-" + tag), Info: ptr("user_count")})
		if err != nil {
			t.Fatalf("Channels: %v", err)
		}
		if want := map[string]pusher.ChannelListItem{pch: {UserCount: 2}}; !reflect.DeepEqual(list.Channels, want) {
			t.Fatalf("Channels: got %+v, want %+v", list.Channels, want)
		}
		list, err = sdk.Channels(pusher.ChannelsParams{FilterByPrefix: ptr("go-pub-" + tag)})
		if err != nil {
			t.Fatalf("Channels without info: %v", err)
		}
		if _, ok := list.Channels[pub]; !ok || len(list.Channels) != 1 {
			t.Fatalf("Channels with the public prefix: got %+v", list.Channels)
		}

		info, err := sdk.Channel(pch, pusher.ChannelParams{Info: ptr("user_count,subscription_count")})
		if err != nil {
			t.Fatalf("Channel: %v", err)
		}
		if want := (&pusher.Channel{Name: pch, Occupied: true, UserCount: 2, SubscriptionCount: 3}); !reflect.DeepEqual(info, want) {
			t.Fatalf("Channel(%s): got %+v, want %+v", pch, info, want)
		}
		info, err = sdk.Channel(pub, pusher.ChannelParams{Info: ptr("subscription_count")})
		if err != nil {
			t.Fatalf("Channel(public): %v", err)
		}
		if want := (&pusher.Channel{Name: pub, Occupied: true, SubscriptionCount: 1}); !reflect.DeepEqual(info, want) {
			t.Fatalf("Channel(%s): got %+v, want %+v", pub, info, want)
		}

		users, err := sdk.GetChannelUsers(pch)
		if err != nil {
			t.Fatalf("GetChannelUsers: %v", err)
		}
		ids := []string{}
		for _, u := range users.List {
			ids = append(ids, u.ID)
		}
		slices.Sort(ids)
		if !reflect.DeepEqual(ids, []string{"1", "2"}) {
			t.Fatalf("GetChannelUsers: got %v", ids)
		}

		counts, err := sdk.TriggerMultiWithParams([]string{pch, pub}, "counted", "{}",
			pusher.TriggerParams{Info: ptr("user_count,subscription_count")})
		if err != nil {
			t.Fatalf("TriggerMultiWithParams with info: %v", err)
		}
		want := map[string]pusher.TriggerChannelListItem{
			pch: {UserCount: ptr(2), SubscriptionCount: ptr(3)},
			pub: {SubscriptionCount: ptr(1)},
		}
		if !reflect.DeepEqual(counts.Channels, want) {
			t.Fatalf("trigger info: got %s, want %s", jsonOf(counts.Channels), jsonOf(want))
		}

		batch, err := sdk.TriggerBatch([]pusher.Event{
			{Channel: pch, Name: "b", Data: "1", Info: ptr("user_count,subscription_count")},
			{Channel: pub, Name: "b", Data: "2"},
			{Channel: pub, Name: "b", Data: "3", Info: ptr("subscription_count")},
		})
		if err != nil {
			t.Fatalf("TriggerBatch with info: %v", err)
		}
		wantBatch := []pusher.TriggerBatchChannelListItem{
			{UserCount: ptr(2), SubscriptionCount: ptr(3)},
			{},
			{SubscriptionCount: ptr(1)},
		}
		if !reflect.DeepEqual(batch.Batch, wantBatch) {
			t.Fatalf("batch info: got %s, want %s", jsonOf(batch.Batch), jsonOf(wantBatch))
		}
	})

	t.Run("encrypted channel: shared_secret from AuthorizePrivateChannel decrypts what Trigger sent", func(t *testing.T) {
		var key [32]byte
		_, _ = rand.Read(key[:])
		esdk := goSDK(h)
		esdk.EncryptionMasterKeyBase64 = base64.StdEncoding.EncodeToString(key[:])

		c := dialApp(t, h)
		ch := uniqName("private-encrypted-go")
		b, err := esdk.AuthorizePrivateChannel(authRequest(c.SocketID(), ch))
		a := decodeAuth(t, b, err)
		if a.SharedSecret == "" {
			t.Fatalf("no shared_secret in %s", b)
		}
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		if _, err := c.SubscribeAuth(ctx, ch, a.Auth, ""); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
		payload := map[string]string{"text": "attack at dawn"}
		if err := esdk.Trigger(ch, "secret", payload); err != nil {
			t.Fatalf("Trigger on an encrypted channel: %v", err)
		}
		ev := waitEvent(t, c, "secret", ch)
		var box struct{ Nonce, Ciphertext string }
		if err := json.Unmarshal([]byte(ev.Data), &box); err != nil || box.Nonce == "" || box.Ciphertext == "" {
			t.Fatalf("encrypted data %q: %v", ev.Data, err)
		}
		secret, err1 := base64.StdEncoding.DecodeString(a.SharedSecret)
		nonce, err2 := base64.StdEncoding.DecodeString(box.Nonce)
		ct, err3 := base64.StdEncoding.DecodeString(box.Ciphertext)
		if err := errors.Join(err1, err2, err3); err != nil || len(secret) != 32 || len(nonce) != 24 {
			t.Fatalf("decoding secret/nonce/ciphertext: %v (%d, %d bytes)", err, len(secret), len(nonce))
		}
		plain, ok := secretbox.Open(nil, ct, (*[24]byte)(nonce), (*[32]byte)(secret))
		if !ok {
			t.Fatalf("secretbox.Open failed: Herald changed the ciphertext or the shared secret is wrong")
		}
		jsonEqual(t, "decrypted", string(plain), payload)
	})

	t.Run("AuthenticateUser, SendToUser, terminate_connections", func(t *testing.T) {
		u1, u2 := uniqName("go-user"), uniqName("go-bystander")
		signin := func(user string) *client.Conn {
			c := dialApp(t, h)
			b, err := sdk.AuthenticateUser([]byte(url.Values{"socket_id": {c.SocketID()}}.Encode()),
				map[string]any{"id": user, "user_info": map[string]string{"name": user}})
			a := decodeAuth(t, b, err)
			if err := c.Send("pusher:signin", "", map[string]string{"auth": a.Auth, "user_data": a.UserData}); err != nil {
				t.Fatalf("send pusher:signin: %v", err)
			}
			ok := waitEvent(t, c, "pusher:signin_success", "")
			var d struct {
				UserData string `json:"user_data"`
			}
			if err := json.Unmarshal([]byte(ok.Data), &d); err != nil || d.UserData != a.UserData {
				t.Fatalf("signin_success data %s: want user_data %q (%v)", ok.Data, a.UserData, err)
			}
			// As pusher-js does after signin.
			subscribePublic(t, c, "#server-to-user-"+user)
			return c
		}
		a1, a2, b := signin(u1), signin(u1), signin(u2)

		if err := sdk.SendToUser(u1, "notice", map[string]string{"to": u1}); err != nil {
			t.Fatalf("SendToUser: %v", err)
		}
		for _, c := range []*client.Conn{a1, a2} {
			jsonEqual(t, "notice", waitEvent(t, c, "notice", "#server-to-user-"+u1).Data, map[string]string{"to": u1})
		}
		if err := sdk.SendToUser(u2, "barrier", "{}"); err != nil {
			t.Fatalf("SendToUser barrier: %v", err)
		}
		if got := untilEvent(t, b, "barrier", "#server-to-user-"+u2); count(got, "notice", "#server-to-user-"+u1) != 0 {
			t.Fatalf("another user got the notice: %s", names(got))
		}

		// pusher-http-go v5.1.1 has no TerminateUserConnections: sign the call as the node and php SDKs send it.
		rest := &client.REST{BaseURL: "http://" + h.Addr, AppID: "app-id", Key: "app-key", Secret: "app-secret"}
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		status, body, err := rest.Do(ctx, http.MethodPost, "/apps/app-id/users/"+u1+"/terminate_connections", nil, []byte("{}"))
		if err != nil || status != http.StatusOK {
			t.Fatalf("terminate_connections: %d %s %v", status, body, err)
		}
		for i, c := range []*client.Conn{a1, a2} {
			var ce *client.CloseError
			var last error
			collectCtx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			for {
				if _, last = c.Next(collectCtx); last != nil {
					break
				}
			}
			cancel()
			if !errors.As(last, &ce) {
				t.Fatalf("connection %d of %s: want it closed by the server, got %v", i+1, u1, last)
			}
			t.Logf("connection %d of %s closed: %d %q", i+1, u1, ce.Code, ce.Reason)
		}
		if err := sdk.SendToUser(u2, "still-here", "{}"); err != nil {
			t.Fatalf("SendToUser: %v", err)
		}
		waitEvent(t, b, "still-here", "#server-to-user-"+u2)
	})
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
