package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/internal/testkit"
	"herald/protocol"
)

func joinPresence(t *testing.T, c *client.Conn, ch, user string) (client.Event, error) {
	t.Helper()
	data := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
	return c.SubscribeAuth(ctx5(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, data), data)
}

type roster struct {
	Presence struct {
		IDs   []string                   `json:"ids"`
		Hash  map[string]json.RawMessage `json:"hash"`
		Count int                        `json:"count"`
	} `json:"presence"`
}

func TestPresenceMembers(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.MaxPresenceMembers = 2 }))
	a1 := dial(t, e.url("app-key"))
	a2 := dial(t, e.url("app-key")) // second tab of user a
	b := dial(t, e.url("app-key"))
	const ch = "presence-room"

	ev, err := joinPresence(t, a1, ch, "a")
	if err != nil {
		t.Fatal(err)
	}
	var r roster
	if err := json.Unmarshal([]byte(ev.Data), &r); err != nil || r.Presence.Count != 1 || r.Presence.IDs[0] != "a" {
		t.Fatalf("first roster %s %v", ev.Data, err)
	}
	if _, err := joinPresence(t, b, ch, "b"); err != nil {
		t.Fatal(err)
	}
	added, err := a1.WaitFor(ctx5(t), "pusher_internal:member_added", ch)
	if err != nil || !strings.Contains(added.Data, `"user_id":"b"`) {
		t.Fatalf("member_added %+v %v", added, err)
	}
	// A second connection of a: no member_added for it, and the limit of two
	// distinct users does not count it.
	ev, err = joinPresence(t, a2, ch, "a")
	if err != nil {
		t.Fatalf("second connection of a member refused: %v", err)
	}
	if err := json.Unmarshal([]byte(ev.Data), &r); err != nil || r.Presence.Count != 2 {
		t.Fatalf("roster %s", ev.Data)
	}
	// A third distinct user is over the limit.
	c := dial(t, e.url("app-key"))
	if _, err := joinPresence(t, c, ch, "c"); err == nil {
		t.Fatal("third user accepted over the limit of 2")
	}
	if n := e.g.UserCount(e.app.ID, ch); n != 2 {
		t.Fatalf("user count %d", n)
	}
	// a's first tab leaves: a is still there through a2, so nothing is sent.
	// b leaving is the next thing a2 sees.
	if err := a1.Unsubscribe(ch); err != nil {
		t.Fatal(err)
	}
	b.Close()
	ev, err = a2.WaitFor(ctx5(t), "pusher_internal:member_removed", ch)
	if err != nil || !strings.Contains(ev.Data, `"user_id":"b"`) {
		t.Fatalf("member_removed %+v %v", ev, err)
	}
	if got := e.g.Users(e.app.ID, ch); fmt.Sprint(got) != "[a]" {
		t.Fatalf("users %v", got)
	}
}

func TestPresenceRejections(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.MaxPresenceUserInfoBytes = 20 }))
	c := dial(t, e.url("app-key"))
	const ch = "presence-x"
	good := `{"user_id":"1"}`
	cases := []struct {
		name, auth, data, want string
	}{
		{"signature over other data", client.SignChannel("app-key", "app-secret", c.SocketID(), ch, good), `{"user_id":"2"}`, "Invalid signature"},
		{"user_info too big", "", `{"user_id":"1","user_info":{"name":"aaaaaaaaaaaaaaaaaaaa"}}`, "user_info"},
		{"no user_id", "", `{"user_info":{}}`, "user_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			auth := tc.auth
			if auth == "" {
				auth = client.SignChannel("app-key", "app-secret", c.SocketID(), ch, tc.data)
			}
			_, err := c.SubscribeAuth(ctx5(t), ch, auth, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestClientEvents(t *testing.T) {
	e := startEdge(t, func(c *Config) {
		withApp(func(a *app.App) {
			a.ClientEvents = true
			a.ClientEventRate = 3
		})(c)
	})
	a := dial(t, e.url("app-key"))
	b := dial(t, e.url("app-key"))
	const ch = "presence-chat"
	for i, c := range []*client.Conn{a, b} {
		if _, err := joinPresence(t, c, ch, fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SendRaw([]byte(`{"event":"client-typing","channel":"presence-chat","data":{"on":true}}`)); err != nil {
		t.Fatal(err)
	}
	ev, err := b.WaitFor(ctx5(t), "client-typing", ch)
	if err != nil || ev.Data != `{"on":true}` || ev.UserID != "u0" {
		t.Fatalf("b got %+v %v", ev, err)
	}
	// The rate limit: 3 a second; the burst below crosses it.
	for range 4 {
		_ = a.SendRaw([]byte(`{"event":"client-x","channel":"presence-chat","data":{}}`))
	}
	ev, err = a.WaitFor(ctx5(t), "pusher:error", "")
	if err != nil || !strings.Contains(ev.Data, "4301") {
		t.Fatalf("rate limit: %+v %v", ev, err)
	}
	// The sender never receives its own events: a barrier from b shows it.
	_ = b.SendRaw([]byte(`{"event":"client-barrier","channel":"presence-chat","data":{}}`))
	for {
		ev, err := a.Next(ctx5(t))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Event == "client-barrier" {
			break
		}
		if strings.HasPrefix(ev.Event, "client-") {
			t.Fatalf("sender received its own %s", ev.Event)
		}
	}
}

func TestSigninServerToUserAndTerminate(t *testing.T) {
	e := startEdge(t, nil)
	c := dial(t, e.url("app-key"))
	other := dial(t, e.url("app-key"))
	signin := func(conn *client.Conn, userData string, auth string) {
		if auth == "" {
			auth = "app-key:" + protocol.Sign("app-secret", protocol.UserStringToSign(conn.SocketID(), userData))
		}
		msg, _ := json.Marshal(map[string]any{"event": "pusher:signin", "data": map[string]string{"auth": auth, "user_data": userData}})
		if err := conn.SendRaw(msg); err != nil {
			t.Fatal(err)
		}
	}
	// Someone else's channel is refused before signing in.
	if err := c.Subscribe(ctx5(t), "#server-to-user-42"); err == nil {
		t.Fatal("#server-to-user subscribed without signin")
	}
	signin(c, `{"id":"7"}`, "app-key:0000")
	if ev, err := c.WaitFor(ctx5(t), "pusher:error", ""); err != nil || !strings.Contains(ev.Data, "4009") {
		t.Fatalf("bad signin: %+v %v", ev, err)
	}
	signin(c, `{"id":"42","user_info":{"name":"A"}}`, "")
	ev, err := c.WaitFor(ctx5(t), "pusher:signin_success", "")
	if err != nil || !strings.Contains(string(ev.Raw), `{\"id\":\"42\"`) {
		t.Fatalf("signin_success %+v %v", ev, err)
	}
	if err := c.Subscribe(ctx5(t), "#server-to-user-42"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx5(t), "#server-to-user-43"); err == nil {
		t.Fatal("subscribed to another user's channel")
	}
	publish(t, e, "#server-to-user-42", "hello", "hi", "")
	if _, err := c.WaitFor(ctx5(t), "hello", "#server-to-user-42"); err != nil {
		t.Fatal(err)
	}
	if n := e.g.TerminateUser(e.app.ID, "42"); n != 1 {
		t.Fatalf("terminated %d connections", n)
	}
	for {
		_, err := c.Next(ctx5(t))
		if err != nil {
			var ce *client.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CodeUnauthorized {
				t.Fatalf("terminated connection closed with %v", err)
			}
			break
		}
	}
	_ = other.SendRaw([]byte(`{"event":"pusher:ping","data":{}}`))
	if _, err := other.WaitFor(ctx5(t), "pusher:pong", ""); err != nil {
		t.Fatalf("another user's connection was hit: %v", err)
	}
}

func TestSubscriptionCountEvents(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.SubscriptionCount = true }))
	a := dial(t, e.url("app-key"))
	b := dial(t, e.url("app-key"))
	for _, c := range []*client.Conn{a, b} {
		if err := c.Subscribe(ctx5(t), "counted"); err != nil {
			t.Fatal(err)
		}
	}
	for {
		ev, err := a.WaitFor(ctx5(t), "pusher_internal:subscription_count", "counted")
		if err != nil {
			t.Fatal(err)
		}
		if ev.Data == `{"subscription_count":2}` {
			return
		}
	}
}

func TestSoketiSubscriptionErrors(t *testing.T) {
	e := startEdge(t, withApp(func(a *app.App) { a.SubscriptionErrorMode = app.SubscriptionErrorsSoketi }))
	c := dial(t, e.url("app-key"))
	_ = c.SendRaw([]byte(`{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"app-key:00"}}`))
	ev, err := c.WaitFor(ctx5(t), "pusher:subscription_error", "private-x")
	if err != nil || !strings.Contains(ev.Data, `"type":"AuthError"`) || !strings.Contains(ev.Data, `"status":401`) {
		t.Fatalf("got %+v %v", ev, err)
	}
}

// TestPresenceJoinOfAClosingSocketLeavesNoMember: a presence subscription
// whose socket is closed while it joins (here: its roster does not fit the
// write queue, so it is failed as a slow consumer) must not stay a member.
// It used to: the registry kept the member although the socket never
// entered the channel, so nothing removed it when the socket went; the
// channel showed a user who had left, the others never got member_removed,
// and the ghost counted against max_presence_members for good.
func TestPresenceJoinOfAClosingSocketLeavesNoMember(t *testing.T) {
	e := startEdge(t, func(c *Config) { c.WriteQueueBytes = 4096 })
	const ch = "presence-big"
	info := strings.Repeat("x", 1000)
	join := func(c *client.Conn, user string) error {
		data := `{"user_id":"` + user + `","user_info":{"bio":"` + info + `"}}`
		_, err := c.SubscribeAuth(ctx5(t), ch, client.SignChannel("app-key", "app-secret", c.SocketID(), ch, data), data)
		return err
	}
	first := dial(t, e.url("app-key"))
	for i, c := range []*client.Conn{first, dial(t, e.url("app-key")), dial(t, e.url("app-key"))} {
		if err := join(c, fmt.Sprint("u", i)); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	// The fourth roster is over 4 KiB: the socket is closed with 4100.
	big := dial(t, e.url("app-key"))
	if err := join(big, "ghost"); err == nil || !strings.Contains(err.Error(), "4100") {
		t.Fatalf("fourth member: %v, want the slow consumer's 4100", err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		if got := e.g.Users(e.app.ID, ch); fmt.Sprint(got) != "[u0 u1 u2]" {
			return fmt.Errorf("members %v, want [u0 u1 u2]", got)
		}
		return nil
	})
	// What the others saw of it ends with its removal.
	for {
		ev, err := first.Next(ctx5(t))
		if err != nil {
			t.Fatalf("member u0 never saw the ghost leave: %v", err)
		}
		if ev.Event == "pusher_internal:member_removed" && strings.Contains(ev.Data, `"ghost"`) {
			break
		}
	}
}
