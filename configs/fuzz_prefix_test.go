package configs

import "testing"

// FuzzParsePrefix: gateway.trusted_proxies entries never panic, and what is
// accepted is a masked prefix that contains its own address.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::ffff:10.1.2.3", "10.0.0.1/33", "", "/", "1.2.3.4/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || !p.Contains(p.Addr()) {
			t.Fatalf("%q parsed as %s", s, p)
		}
	})
}
