package configs

import (
	"herald/app"
	"strings"
	"testing"
)

// A valid public user nkey (generated once with nkeys.CreateUser).
const testNkey = "UD53YMSK7VZZKTFBHZDF3XPL3WUYKC63LRCI2IC75F3SDREAVXWLTNM5"

func TestNATSDefaults(t *testing.T) {
	c := Default()
	if c.Bus.ClientListen != "127.0.0.1:4222" || c.Bus.ClientSharedInbox {
		t.Fatalf("bus = %+v", c.Bus)
	}
	dev := &c.Apps[0]
	if dev.NATSUser() != "app-id" || dev.NATSPassword() != "app-secret" {
		t.Fatalf("dev app NATS credentials %q / %q", dev.NATSUser(), dev.NATSPassword())
	}
	dev.NATS = app.NATS{User: "u", Password: "p"}
	if dev.NATSUser() != "u" || dev.NATSPassword() != "p" {
		t.Fatalf("configured NATS credentials %q / %q", dev.NATSUser(), dev.NATSPassword())
	}
	if l := Loopback(t.TempDir()); l.Bus.ClientListen != "127.0.0.1:0" {
		t.Fatalf("Loopback client_listen %q", l.Bus.ClientListen)
	}
}

func TestNATSLoad(t *testing.T) {
	c, w := mustLoad(t, writeConfig(t, `
apps:
  - {id: a, key: ka, secret: sa, nats: {user: svc-a, password: pw, nkey: `+testNkey+`}}
  - {id: b, key: kb, secret: sb}
bus:
  client_listen: ""
  client_shared_inbox: true
`), LoadOptions{})
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	if c.Bus.ClientListen != "" || !c.Bus.ClientSharedInbox {
		t.Fatalf("bus = %+v", c.Bus)
	}
	if got := c.Apps[0].NATS; got != (app.NATS{User: "svc-a", Password: "pw", Nkey: testNkey}) {
		t.Fatalf("apps[0].nats = %+v", got)
	}
	if c.Apps[1].NATSUser() != "b" || c.Apps[1].NATSPassword() != "sb" {
		t.Fatalf("apps[1] NATS credentials %q / %q", c.Apps[1].NATSUser(), c.Apps[1].NATSPassword())
	}

	c, _ = mustLoad(t, "", LoadOptions{Env: []string{
		"HERALD_BUS_CLIENT_LISTEN=0.0.0.0:4333",
		"HERALD_APP_NATS_USER=backend",
		"HERALD_APP_NATS_PASSWORD=hunter2",
	}})
	if c.Bus.ClientListen != "0.0.0.0:4333" || c.Apps[0].NATSUser() != "backend" || c.Apps[0].NATSPassword() != "hunter2" {
		t.Fatalf("env: bus %+v, app nats %+v", c.Bus, c.Apps[0].NATS)
	}
}

func TestNATSValidation(t *testing.T) {
	cases := []struct {
		name    string
		content string
		want    string
	}{
		{
			name:    "client_listen without port",
			content: "bus: {client_listen: localhost}",
			want:    "bus.client_listen: ",
		},
		{
			name:    "client_listen bad port",
			content: "bus: {client_listen: ':99999'}",
			want:    "bus.client_listen: port",
		},
		{
			name:    "user chars",
			content: "apps:\n  - {id: a, key: k, secret: s, nats: {user: 'a b'}}",
			want:    `apps[0].nats.user: "a b" must match`,
		},
		{
			name:    "reserved-looking user",
			content: "apps:\n  - {id: a, key: k, secret: s, nats: {user: '$herald'}}",
			want:    `apps[0].nats.user: "$herald" must match`,
		},
		{
			name:    "user equals another app's default user",
			content: "apps:\n  - {id: a, key: k1, secret: s}\n  - {id: b, key: k2, secret: s, nats: {user: a}}",
			want:    `apps[1].nats.user: "a" is already the NATS user of apps[0]`,
		},
		{
			name:    "bad nkey",
			content: "apps:\n  - {id: a, key: k, secret: s, nats: {nkey: UABC}}",
			want:    `apps[0].nats.nkey: "UABC" is not a public user nkey`,
		},
		{
			name:    "seed instead of public nkey",
			content: "apps:\n  - {id: a, key: k, secret: s, nats: {nkey: SUADADQ4CFZRBQEH6SXMQO4LUTIN4OZQWGSV4VW4C3U3OLEKIFHMLJJCWA}}",
			want:    "apps[0].nats.nkey: ",
		},
		{
			name:    "duplicate nkey",
			content: "apps:\n  - {id: a, key: k1, secret: s, nats: {nkey: " + testNkey + "}}\n  - {id: b, key: k2, secret: s, nats: {nkey: " + testNkey + "}}",
			want:    "apps[1].nats.nkey: already the nkey of apps[0]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Load(writeConfig(t, tc.content), LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
