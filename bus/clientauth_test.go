package bus

import (
	"encoding/base64"
	"testing"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"herald/app"
)

// TestClientAuthFollowsTheRegistry: logins are decided from the registry as
// it is at each login, previous secrets included while listed, and an nkey
// needs its signature over the nonce.
func TestClientAuthFollowsTheRegistry(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	hash, err := bcrypt.GenerateFromPassword([]byte("hashed-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rot := app.New("rot", "rot-key", "new")
	rot.PreviousSecrets = []string{"old"}
	fixed := app.New("fixed", "fixed-key", "fixed-secret")
	fixed.PreviousSecrets = []string{"fixed-old"}
	fixed.NATS = app.NATS{Password: string(hash), Nkey: pub}
	reg := app.NewRegistry([]app.App{rot, fixed})
	a := newClientAuth(Config{ClientListen: "127.0.0.1:0", AppRegistry: reg, usersFromApps: true, internalPassword: "internal"})

	accept := func(user, pw string, want bool) {
		t.Helper()
		if _, _, ok := a.authorize(user, pw, "", nil); ok != want {
			t.Errorf("%s/%s: accepted %v, want %v", user, pw, ok, want)
		}
	}
	accept("rot", "new", true)
	accept("rot", "old", true)
	accept("rot", "other", false)
	accept("fixed", "hashed-pw", true)
	accept("fixed", "fixed-secret", false) // nats.password set: the secrets are not NATS passwords
	accept("fixed", "fixed-old", false)
	accept(internalUser, "internal", true)
	accept(internalUser, "", false)

	nonce := []byte("nonce-from-the-server")
	sig, _ := kp.Sign(nonce)
	good := base64.RawURLEncoding.EncodeToString(sig)
	other, _ := nkeys.CreateUser()
	osig, _ := other.Sign(nonce)
	forged := base64.RawURLEncoding.EncodeToString(osig)
	for _, tc := range []struct {
		sig  string
		want bool
	}{{good, true}, {forged, false}, {"", false}, {"!!", false}} {
		_, _, ok := a.authorize("", "", pub, func(k nkeys.KeyPair) bool { return verifyNonce(k, nonce, tc.sig) })
		if ok != tc.want {
			t.Errorf("nkey signature %q: accepted %v, want %v", tc.sig, ok, tc.want)
		}
	}

	rot.PreviousSecrets = []string{}
	reg.Replace([]app.App{rot})
	accept("rot", "old", false)
	accept("rot", "new", true)
	accept("fixed", "hashed-pw", false) // removed
	if _, _, ok := a.authorize("", "", pub, nil); ok {
		t.Error("the removed app's nkey is still accepted")
	}
}
