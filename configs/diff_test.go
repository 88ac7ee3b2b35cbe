package configs

import (
	"slices"
	"testing"
	"time"

	"herald/app"
)

func TestDiffNamesTheKeys(t *testing.T) {
	a, b := Default(), Default()
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("two defaults differ in %v", d)
	}
	off := false
	b.Gateway.PongTimeout = Duration(5 * time.Second)
	b.Bus.Stream.Enabled = &off
	b.Cluster.Seeds = []string{"n2:7946"}
	b.Log.Level = "debug"
	b.Apps = append(b.Apps, app.New("x", "x-key", "x-secret"))
	want := []string{"log.level", "apps", "gateway.pong_timeout", "bus.stream.enabled", "cluster.seeds"}
	if d := Diff(a, b); !slices.Equal(d, want) {
		t.Fatalf("Diff = %v, want %v", d, want)
	}
}
