package bus

import (
	"fmt"

	"herald/lifecycle"
	"herald/protocol"
)

// PublishMemberEvent is the lifecycle consumer behind the NATS presence
// subjects (docs/nats.md): it publishes each member_added / member_removed
// event on herald.<app>.presence.<tok> as core NATS (a notification, not
// stored; the stream keeps channel events only), once cluster-wide because
// the lifecycle Decider emits only the owner's transitions. Other kinds are
// not published there. It does not wait.
func (b *Bus) PublishMemberEvent(ev lifecycle.Event) {
	if ev.Kind != lifecycle.MemberAdded && ev.Kind != lifecycle.MemberRemoved {
		return
	}
	if err := b.PublishPresence(ev.App, ev.Channel, memberEventJSON(ev)); err != nil {
		b.log.Debug("presence event not published", "app", ev.App, "channel", ev.Channel, "err", err)
	}
}

// memberEventJSON is a member event as NATS consumers read it:
// {"event","channel","user_id"} plus "user_info" on member_added.
func memberEventJSON(ev lifecycle.Event) []byte {
	b := append([]byte(`{"event":`), protocol.AppendJSONString(nil, string(ev.Kind))...)
	b = append(b, `,"channel":`...)
	b = protocol.AppendJSONString(b, ev.Channel)
	b = append(b, `,"user_id":`...)
	b = protocol.AppendJSONString(b, ev.UserID)
	if ev.Kind == lifecycle.MemberAdded && len(ev.UserInfo) > 0 {
		b = append(b, `,"user_info":`...)
		b = append(b, ev.UserInfo...)
	}
	return append(b, '}')
}

// PublishPresence publishes a presence payload of a channel on
// herald.<app>.presence.<tok>, as core NATS. It does not wait.
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
