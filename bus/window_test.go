package bus

import (
	"testing"
	"time"

	"herald/app"
)

// An app's own replay window sets its stream's limits; other apps keep the
// defaults.
func TestAppWindows(t *testing.T) {
	cfg := testConfig(t)
	app2 := app.New("app2", "key2", "secret2")
	app2.ReplayMaxAge = app.Duration(30 * time.Second)
	app2.ReplayMaxMsgsPerChannel = 5
	cfg.Apps = nil
	cfg.AppRegistry = app.NewRegistry([]app.App{app.New("app1", "key1", "secret1"), app2})
	b := startBus(t, cfg, &recSink{})
	for _, tc := range []struct {
		app  string
		age  time.Duration
		msgs int64
	}{
		{"app1", cfg.MaxAge, cfg.MaxMsgsPerChannel},
		{"app2", 30 * time.Second, 5},
	} {
		s, err := b.JetStream().Stream(ctxT(t), StreamName(tc.app))
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxAge != tc.age || c.MaxMsgsPerSubject != tc.msgs {
			t.Fatalf("%s: max_age %v, max_msgs_per_subject %d; want %v, %d", tc.app, c.MaxAge, c.MaxMsgsPerSubject, tc.age, tc.msgs)
		}
	}
}
