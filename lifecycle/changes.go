package lifecycle

import "herald/presence"

// eventOf is the lifecycle event of a registry transition.
func eventOf(ch presence.Change) (Event, bool) {
	ev := Event{App: ch.App, Channel: ch.Channel}
	switch ch.Kind {
	case presence.KindOccupied:
		ev.Kind, ev.Subscriptions = ChannelOccupied, ch.Subscribers
	case presence.KindVacated:
		ev.Kind, ev.Subscriptions = ChannelVacated, ch.Subscribers
	case presence.KindSubscriptionCount:
		ev.Kind, ev.Subscriptions = SubscriptionCount, ch.Subscribers
	case presence.KindMember:
		ev.Kind, ev.UserID = MemberRemoved, ch.Member.ID
		if ch.Added {
			ev.Kind, ev.UserInfo = MemberAdded, ch.Member.Info
		}
	default:
		return Event{}, false
	}
	return ev, true
}
