package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/app"
	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

// End-to-end tests of the REST queries (docs/protocol.md §6.5-§6.8) through a
// real node. TestQueriesWithPresence needs presence channels and
// pusher:signin in the gateway; the others need only public channels.

// restAnswer is one REST response.
type restAnswer struct {
	status int
	body   string
}

// restDo sends a signed request with the test app's credentials; path is
// signed and sent as given (percent-escapes included).
func restDo(t *testing.T, r *client.REST, method, path string, params map[string]string, body string) restAnswer {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	status, got, err := r.Do(ctxT(t), method, path, params, b)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return restAnswer{status, string(got)}
}

// dialNode opens a Pusher connection to n and closes it at the end of the test.
func dialNode(t *testing.T, n *Node) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctxT(t), "ws://"+n.Addr().String()+"/app/app-key?protocol=7", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkErrorBody fails unless body is the JSON error shape with status.
func checkErrorBody(t *testing.T, a restAnswer, status int) {
	t.Helper()
	var e struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if a.status != status || json.Unmarshal([]byte(a.body), &e) != nil || e.Error == "" || e.Status != status {
		t.Fatalf("got %d %s, want a JSON %d error", a.status, a.body, status)
	}
}

func TestChannelQueries(t *testing.T) {
	n := startNode(t, nil)
	r := rest(n)
	c1, c2 := dialNode(t, n), dialNode(t, n)
	for _, ch := range []string{"orders.1", "orders.2", "chat", "orders.3"} {
		if err := c1.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := c2.Subscribe(ctxT(t), "orders.1"); err != nil {
		t.Fatal(err)
	}
	// orders.3 was occupied and is not any more.
	if err := c1.Unsubscribe("orders.3"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		a := restDo(t, r, "GET", "/apps/app-id/channels/orders.3", nil, "")
		if a.body != `{"occupied":false}` {
			return fmt.Errorf("orders.3 after unsubscribe: %d %s", a.status, a.body)
		}
		return nil
	})

	cases := []struct {
		name   string
		method string
		path   string
		params map[string]string
		body   string
		status int
		want   string // exact body; "" for an error body
	}{
		{
			name:   "channels",
			method: "GET",
			path:   "/apps/app-id/channels",
			status: 200,
			want:   `{"channels":{"chat":{},"orders.1":{},"orders.2":{}}}`,
		},
		{
			name:   "channels by prefix",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"filter_by_prefix": "orders."},
			status: 200,
			want:   `{"channels":{"orders.1":{},"orders.2":{}}}`,
		},
		{
			name:   "channels with subscription_count",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"filter_by_prefix": "orders.", "info": "subscription_count"},
			status: 200,
			want:   `{"channels":{"orders.1":{"subscription_count":2},"orders.2":{"subscription_count":1}}}`,
		},
		{
			name:   "channels, prefix matches none",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"filter_by_prefix": "presence-"},
			status: 200,
			want:   `{"channels":{}}`,
		},
		{
			name:   "channels user_count without prefix",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"info": "user_count"},
			status: 400,
		},
		{
			name:   "channels user_count with a public prefix",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"filter_by_prefix": "orders.", "info": "user_count"},
			status: 400,
		},
		{
			name:   "channels unknown info",
			method: "GET",
			path:   "/apps/app-id/channels",
			params: map[string]string{"info": "cache"},
			status: 400,
		},
		{
			name:   "channel occupied",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1",
			status: 200,
			want:   `{"occupied":true}`,
		},
		{
			name:   "channel subscription_count",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1",
			params: map[string]string{"info": "subscription_count"},
			status: 200,
			want:   `{"occupied":true,"subscription_count":2}`,
		},
		{
			name:   "channel unoccupied",
			method: "GET",
			path:   "/apps/app-id/channels/orders.3",
			params: map[string]string{"info": "subscription_count"},
			status: 200,
			want:   `{"occupied":false,"subscription_count":0}`,
		},
		{
			name:   "channel percent-encoded",
			method: "GET",
			path:   "/apps/app-id/channels/orders%2E1",
			params: map[string]string{"info": "subscription_count"},
			status: 200,
			want:   `{"occupied":true,"subscription_count":2}`,
		},
		{
			name:   "channel internal, percent-encoded",
			method: "GET",
			path:   "/apps/app-id/channels/%23server-to-user-u1",
			status: 200,
			want:   `{"occupied":false}`,
		},
		{
			name:   "channel presence counts, unoccupied",
			method: "GET",
			path:   "/apps/app-id/channels/presence-room",
			params: map[string]string{"info": "user_count,subscription_count"},
			status: 200,
			want:   `{"occupied":false,"user_count":0,"subscription_count":0}`,
		},
		{
			name:   "channel cache, nothing cached",
			method: "GET",
			path:   "/apps/app-id/channels/cache-prices",
			params: map[string]string{"info": "cache"},
			status: 200,
			want:   `{"occupied":false,"cache":null}`,
		},
		{
			name:   "channel user_count on public",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1",
			params: map[string]string{"info": "user_count"},
			status: 400,
		},
		{
			name:   "channel cache on non-cache",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1",
			params: map[string]string{"info": "cache"},
			status: 400,
		},
		{
			name:   "channel unknown info",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1",
			params: map[string]string{"info": "members"},
			status: 400,
		},
		{
			name:   "channel invalid name",
			method: "GET",
			path:   "/apps/app-id/channels/orders%201",
			status: 400,
		},
		{
			name:   "channel name too long",
			method: "GET",
			path:   "/apps/app-id/channels/" + strings.Repeat("c", 201),
			status: 400,
		},
		{
			name:   "users of a public channel",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1/users",
			status: 400,
		},
		{
			name:   "users of a private channel",
			method: "GET",
			path:   "/apps/app-id/channels/private-x/users",
			status: 400,
		},
		{
			name:   "users of an empty presence channel",
			method: "GET",
			path:   "/apps/app-id/channels/presence-room/users",
			status: 200,
			want:   `{"users":[]}`,
		},
		{
			name:   "terminate",
			method: "POST",
			path:   "/apps/app-id/users/u1/terminate_connections",
			body:   "{}",
			status: 200,
			want:   `{}`,
		},
		{
			name:   "terminate without body",
			method: "POST",
			path:   "/apps/app-id/users/nobody/terminate_connections",
			status: 200,
			want:   `{}`,
		},
		{
			name:   "terminate, user id too long",
			method: "POST",
			path:   "/apps/app-id/users/" + strings.Repeat("u", 201) + "/terminate_connections",
			body:   "{}",
			status: 400,
		},
		{
			name:   "terminate, longest user id",
			method: "POST",
			path:   "/apps/app-id/users/" + strings.Repeat("u", 200) + "/terminate_connections",
			body:   "{}",
			status: 200,
			want:   `{}`,
		},
		{
			name:   "POST channels",
			method: "POST",
			path:   "/apps/app-id/channels",
			body:   "{}",
			status: 405,
			want:   `{"error":"Method not allowed","status":405}`,
		},
		{
			name:   "DELETE channel",
			method: "DELETE",
			path:   "/apps/app-id/channels/orders.1",
			status: 405,
			want:   `{"error":"Method not allowed","status":405}`,
		},
		{
			name:   "GET terminate",
			method: "GET",
			path:   "/apps/app-id/users/u1/terminate_connections",
			status: 405,
			want:   `{"error":"Method not allowed","status":405}`,
		},
		{
			name:   "GET events",
			method: "GET",
			path:   "/apps/app-id/events",
			status: 405,
			want:   `{"error":"Method not allowed","status":405}`,
		},
		{
			name:   "unknown endpoint",
			method: "GET",
			path:   "/apps/app-id/users/u1",
			status: 404,
		},
		{
			name:   "deprecated stats endpoint",
			method: "GET",
			path:   "/apps/app-id/channels/orders.1/stats",
			status: 404, // deprecated, not served
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := restDo(t, r, tc.method, tc.path, tc.params, tc.body)
			if tc.want == "" {
				checkErrorBody(t, a, tc.status)
				return
			}
			if a.status != tc.status || a.body != tc.want {
				t.Fatalf("got %d %s, want %d %s", a.status, a.body, tc.status, tc.want)
			}
		})
	}

	// Metrics count the queries by endpoint.
	resp, err := http.Get("http://" + n.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`herald_rest_requests_total{endpoint="channels",status="200"}`,
		`herald_rest_requests_total{endpoint="channel",status="400"}`,
		`herald_rest_requests_total{endpoint="users",status="200"} 1`,
		`herald_rest_requests_total{endpoint="terminate_connections",status="200"} 3`,
		`herald_rest_requests_total{endpoint="channels",status="405"} 1`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestQueriesAuthentication(t *testing.T) {
	n := startNode(t, func(c *configs.Config) {
		off := app.New("off", "off-key", "off-secret")
		f := false
		off.Enabled = &f
		c.Apps = append(c.Apps, off)
	})
	base := "http://" + n.Addr().String()
	wrong := &client.REST{BaseURL: base, AppID: "app-id", Key: "app-key", Secret: "wrong"}
	off := &client.REST{BaseURL: base, AppID: "off", Key: "off-key", Secret: "off-secret"}
	endpoints := []struct {
		method, path, body string
	}{
		{"GET", "/channels", ""},
		{"GET", "/channels/orders.1", ""},
		{"GET", "/channels/presence-room/users", ""},
		{"POST", "/users/u1/terminate_connections", "{}"},
	}
	for _, e := range endpoints {
		t.Run(e.method+e.path, func(t *testing.T) {
			a := restDo(t, wrong, e.method, "/apps/app-id"+e.path, nil, e.body)
			checkErrorBody(t, a, 401)
			if !strings.Contains(a.body, "Invalid signature") {
				t.Fatalf("401 body %s", a.body)
			}
			// Signed for another path.
			q := client.SignQuery("app-key", "app-secret", e.method, "/apps/app-id/events", nil, []byte(e.body), time.Now())
			checkErrorBody(t, rawRequest(t, e.method, base+"/apps/app-id"+e.path+"?"+q, e.body), 401)
			// Unsigned.
			checkErrorBody(t, rawRequest(t, e.method, base+"/apps/app-id"+e.path, e.body), 401)
			// Disabled app, correctly signed.
			checkErrorBody(t, restDo(t, off, e.method, "/apps/off"+e.path, nil, e.body), 403)
		})
	}
	// A query signed without the body it carries.
	q := client.SignQuery("app-key", "app-secret", "POST", "/apps/app-id/users/u1/terminate_connections", nil, nil, time.Now())
	checkErrorBody(t, rawRequest(t, "POST", base+"/apps/app-id/users/u1/terminate_connections?"+q, "{}"), 401)
}

// rawRequest sends url as given (its query unchanged on the wire).
func rawRequest(t *testing.T, method, url, body string) restAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return restAnswer{resp.StatusCode, string(b)}
}

// TestQueriesSignatureVectors sends the requests of vectors G, H, I and J
// (docs/protocol.md §9.6) built exactly as there, but for the test app and
// with the current time, in both wire forms of a comma (raw, as the go and
// node SDKs send it, and %2C, as php does).
func TestQueriesSignatureVectors(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.Addr().String()

	vectors := []struct {
		name   string
		method string
		path   string // with /apps/3 for the vectors' app
		params map[string]string
		body   string
		sig    string // the vector's signature at auth_timestamp 1353088179
		want   string
	}{
		{
			name:   "G",
			method: "GET",
			path:   "/apps/3/channels",
			params: map[string]string{"filter_by_prefix": "presence-", "info": "user_count"},
			sig:    "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
			want:   `{"channels":{}}`,
		},
		{
			name:   "H",
			method: "GET",
			path:   "/apps/3/channels/presence-foobar",
			params: map[string]string{"info": "user_count,subscription_count"},
			sig:    "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
			want:   `{"occupied":false,"user_count":0,"subscription_count":0}`,
		},
		{
			name:   "I",
			method: "GET",
			path:   "/apps/3/channels/presence-foobar/users",
			sig:    "5567dd30e7f8575e66be615d2aac3f608a0c311c31ddab8513a278b022e9597e",
			want:   `{"users":[]}`,
		},
		{
			name:   "J",
			method: "POST",
			path:   "/apps/3/users/42/terminate_connections",
			body:   "{}",
			sig:    "2829710742ff5f799010258297d09016e2366257e3e954039eeda349073a2bcf",
			want:   `{}`,
		},
	}
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			// The request as built here signs to the vector's value...
			q := client.SignQuery("278d425bdf160c739803", "7ad3773142a6692b25b8", v.method, v.path,
				v.params, []byte(v.body), time.Unix(1353088179, 0))
			if !strings.HasSuffix(q, "&auth_signature="+v.sig) {
				t.Fatalf("vector %s signs as %s", v.name, q)
			}
			if v.body != "" && !strings.Contains(q, "body_md5=99914b932bd37a50b983c5e7c90ae93b") {
				t.Fatalf("vector %s body_md5: %s", v.name, q)
			}
			// ...and the same request, for this app and now, is accepted.
			path := strings.Replace(v.path, "/apps/3/", "/apps/app-id/", 1)
			q = client.SignQuery("app-key", "app-secret", v.method, path, v.params, []byte(v.body), time.Now())
			forms := []string{q}
			if strings.Contains(q, "%2C") {
				forms = append(forms, strings.ReplaceAll(q, "%2C", ","))
			}
			for _, q := range forms {
				a := rawRequest(t, v.method, base+path+"?"+q, v.body)
				if a.status != 200 || a.body != v.want {
					t.Fatalf("%s ?%s: %d %s, want 200 %s", v.method, q, a.status, a.body, v.want)
				}
			}
		})
	}
}

// TestQueriesWithPresence checks the answers that need presence members and
// signed-in users: it fails until the gateway implements presence channels
// and pusher:signin.
func TestQueriesWithPresence(t *testing.T) {
	n := startNode(t, nil)
	r := rest(n)
	const room = "presence-room"
	join := func(userID string) *client.Conn {
		t.Helper()
		c := dialNode(t, n)
		data := `{"user_id":"` + userID + `","user_info":{"name":"A"}}`
		auth := client.SignChannel("app-key", "app-secret", c.SocketID(), room, data)
		if _, err := c.SubscribeAuth(ctxT(t), room, auth, data); err != nil {
			t.Fatalf("join %s as %s: %v", room, userID, err)
		}
		return c
	}
	member := join("u1")
	join("u2")
	join("u1") // a second socket of u1

	for _, tc := range []struct {
		path   string
		params map[string]string
		want   string
	}{
		{
			path:   "/apps/app-id/channels",
			params: map[string]string{"filter_by_prefix": "presence-", "info": "user_count,subscription_count"},
			want:   `{"channels":{"presence-room":{"subscription_count":3,"user_count":2}}}`,
		},
		{
			path:   "/apps/app-id/channels/" + room,
			params: map[string]string{"info": "user_count,subscription_count"},
			want:   `{"occupied":true,"user_count":2,"subscription_count":3}`,
		},
		{
			path: "/apps/app-id/channels/" + room + "/users",
			want: `{"users":[{"id":"u1"},{"id":"u2"}]}`,
		},
	} {
		if a := restDo(t, r, "GET", tc.path, tc.params, ""); a.status != 200 || a.body != tc.want {
			t.Errorf("GET %s %v: %d %s, want %s", tc.path, tc.params, a.status, a.body, tc.want)
		}
	}

	// terminate_connections closes the sockets signed in as u1, and not the
	// ones that are only presence members as u1 (docs/protocol.md §4.5).
	signed := dialNode(t, n)
	userData := `{"id":"u1"}`
	if err := signed.Send("pusher:signin", "", map[string]string{
		"auth":      client.SignUser("app-key", "app-secret", signed.SocketID(), userData),
		"user_data": userData,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := signed.WaitFor(ctxT(t), "pusher:signin_success", ""); err != nil {
		t.Fatalf("signin: %v", err)
	}
	if a := restDo(t, r, "POST", "/apps/app-id/users/u1/terminate_connections", nil, "{}"); a.status != 200 || a.body != "{}" {
		t.Fatalf("terminate: %d %s", a.status, a.body)
	}
	for {
		_, err := signed.Next(ctxT(t))
		if err == nil {
			continue // a pusher:error may come before the close
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 4009 {
			t.Fatalf("signed-in socket ended with %v, want close 4009", err)
		}
		break
	}
	status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "still-here", Data: "1", Channels: []string{room}})
	if err != nil || status != 200 {
		t.Fatalf("trigger: %d %s %v", status, body, err)
	}
	if _, err := member.WaitFor(ctxT(t), "still-here", room); err != nil {
		t.Fatalf("presence-only member of u1 was cut off: %v", err)
	}
}

// TestQueriesWithCache reads a cache channel's last event through GET
// channel info=cache; it needs the node's Cache wired to the bus.
func TestQueriesWithCache(t *testing.T) {
	n := startNode(t, nil)
	r := rest(n)
	status, body, err := r.Trigger(ctxT(t), client.TriggerParams{Name: "price", Data: `{"eur":"<1&2>"}`, Channels: []string{"cache-prices"}})
	if err != nil || status != 200 {
		t.Fatalf("trigger: %d %s %v", status, body, err)
	}
	a := restDo(t, r, "GET", "/apps/app-id/channels/cache-prices", map[string]string{"info": "cache,subscription_count"}, "")
	var got struct {
		Occupied          *bool `json:"occupied"`
		SubscriptionCount *int  `json:"subscription_count"`
		Cache             *struct {
			Data  string `json:"data"`
			TTL   int    `json:"ttl"`
			Event string `json:"event"`
		} `json:"cache"`
	}
	if a.status != 200 || json.Unmarshal([]byte(a.body), &got) != nil || got.Occupied == nil || *got.Occupied ||
		got.SubscriptionCount == nil || *got.SubscriptionCount != 0 || got.Cache == nil ||
		got.Cache.Data != `{"eur":"<1&2>"}` || got.Cache.Event != "price" || got.Cache.TTL <= 0 || got.Cache.TTL > 3600 {
		t.Fatalf("cache query: %d %s", a.status, a.body)
	}
	if a := restDo(t, r, "GET", "/apps/app-id/channels/cache-other", map[string]string{"info": "cache"}, ""); a.body != `{"occupied":false,"cache":null}` {
		t.Fatalf("nothing cached: %d %s", a.status, a.body)
	}
}
