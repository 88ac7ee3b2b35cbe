package bus

import (
	"testing"
	"time"
)

// An app's own replay window sets its stream's limits; other apps keep the
// defaults.
func TestAppWindows(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []string{"app1", "app2"}
	cfg.AppWindows = map[string]Window{"app2": {MaxAge: 30 * time.Second, MaxMsgsPerChannel: 5}}
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
