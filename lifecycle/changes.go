package lifecycle

import "herald/presence"

// eventOf is the lifecycle event of a registry transition.
func eventOf(ch presence.Change) (Event, bool) {
	ev := Event{App: ch.App, Channel: ch.Channel, UserID: ch.Member.ID}
	if ch.Added {
		ev.Kind = MemberAdded
		ev.UserInfo = ch.Member.Info
	} else {
		ev.Kind = MemberRemoved
	}
	return ev, true
}
