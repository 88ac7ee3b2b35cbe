package bus

import "fmt"

// PublishPresence publishes a presence member change of a channel for NATS
// consumers (docs/nats.md) on herald.<app>.presence.<tok>, as core NATS: it
// is a notification, not stored; the stream keeps channel events only. It
// does not wait.
func (b *Bus) PublishPresence(app, channel string, payload []byte) error {
	if err := b.check(&Publication{App: app, Channel: channel}); err != nil {
		return err
	}
	subj := PresenceSubject(app, channel)
	if err := b.nc.Publish(subj, payload); err != nil {
		return fmt.Errorf("bus: publish %q: %w", subj, err)
	}
	return nil
}
