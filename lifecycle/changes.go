package lifecycle

import "herald/presence"

// eventOf is the lifecycle event of a registry transition.
func eventOf(ch presence.Change) (Event, bool) {
	ev := Event{App: ch.App, Channel: ch.Channel, Subscriptions: ch.Subscribers}
	switch ch.Kind {
	case presence.KindOccupied:
		ev.Kind = ChannelOccupied
	case presence.KindVacated:
		ev.Kind = ChannelVacated
	case presence.KindSubscriptionCount:
		ev.Kind = SubscriptionCount
	case presence.KindMember:
		ev.UserID, ev.Subscriptions = ch.Member.ID, 0
		if ch.Added {
			ev.Kind = MemberAdded
			ev.UserInfo = ch.Member.Info
		} else {
			ev.Kind = MemberRemoved
		}
	default:
		return Event{}, false
	}
	return ev, true
}
