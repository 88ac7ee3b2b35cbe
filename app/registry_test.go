package app

import (
	"sync"
	"testing"
)

func TestTable(t *testing.T) {
	off := false
	in := []App{
		New("one", "key-1", "s1"),
		New("two", "key-2", "s2"),
		{ID: "three", Key: "key-3", Secret: "s3", Enabled: &off},
	}
	apps := NewTable(in)
	in[0].Secret = "mutated" // NewTable must have copied
	off = true

	if apps.Len() != 3 {
		t.Fatalf("Len = %d", apps.Len())
	}
	cases := []struct {
		id, key string
		enabled bool
	}{
		{id: "one", key: "key-1", enabled: true},
		{id: "two", key: "key-2", enabled: true},
		{id: "three", key: "key-3", enabled: false},
	}
	for _, tc := range cases {
		byID, ok := apps.ByID(tc.id)
		if !ok {
			t.Fatalf("ByID(%q) missing", tc.id)
		}
		byKey, ok := apps.ByKey(tc.key)
		if !ok || byKey != byID {
			t.Fatalf("ByKey(%q) = %p, ByID = %p", tc.key, byKey, byID)
		}
		if byID.IsEnabled() != tc.enabled {
			t.Fatalf("%s enabled = %v", tc.id, byID.IsEnabled())
		}
	}
	if a, _ := apps.ByID("one"); a.Secret != "s1" {
		t.Fatalf("secret = %q: NewTable did not copy", a.Secret)
	}
	if _, ok := apps.ByID("key-1"); ok {
		t.Fatal("ByID found an app by key")
	}
	if _, ok := apps.ByKey("nope"); ok {
		t.Fatal("ByKey found a missing key")
	}
	all := apps.All()
	if len(all) != 3 || all[0].ID != "one" || all[2].ID != "three" {
		t.Fatalf("All = %v", all)
	}
	all[0] = nil
	if apps.All()[0] == nil {
		t.Fatal("All returned the internal slice")
	}
}

func TestTableDuplicatesFirstWins(t *testing.T) {
	apps := NewTable([]App{New("a", "k", "1"), New("a", "k", "2")})
	if a, _ := apps.ByID("a"); a.Secret != "1" {
		t.Fatalf("ByID got secret %q", a.Secret)
	}
	if a, _ := apps.ByKey("k"); a.Secret != "1" {
		t.Fatalf("ByKey got secret %q", a.Secret)
	}
}

// Readers see either the old table or the new one, whole, while Replace
// swaps (run with -race).
func TestRegistryReplace(t *testing.T) {
	r := NewRegistry([]App{New("a", "k", "s1")})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				byID, ok1 := r.ByID("a")
				tab := r.Table()
				byKey, ok2 := tab.ByKey("k")
				if !ok1 || !ok2 || (byID.Secret != "s1" && byID.Secret != "s2") || (byKey.Secret != "s1" && byKey.Secret != "s2") {
					t.Errorf("read %v %v", byID, byKey)
					return
				}
			}
		})
	}
	for i := range 200 {
		secret := "s1"
		if i%2 == 0 {
			secret = "s2"
		}
		r.Replace([]App{New("a", "k", secret)})
	}
	close(stop)
	wg.Wait()
	if a, _ := r.ByID("a"); a.Secret != "s1" {
		t.Fatalf("after the last Replace: %q", a.Secret)
	}
}
