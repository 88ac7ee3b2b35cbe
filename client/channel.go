package client

import (
	"context"
	"fmt"
)

// subscribeData is the data of pusher:subscribe. Auth is always sent, as
// pusher-js does ("auth":"" on public channels); channel_data only when set.
type subscribeData struct {
	Auth        string `json:"auth"`
	Channel     string `json:"channel"`
	ChannelData string `json:"channel_data,omitempty"`
}

// Subscribe subscribes to a public channel: it sends pusher:subscribe with
// "auth":"" and waits for pusher_internal:subscription_succeeded on channel.
// A pusher:error (without a channel or on this channel) or a
// pusher:subscription_error on this channel received first fails it with a
// *SubscriptionError. Other events received meanwhile stay queued, in order,
// for Next and WaitFor.
func (c *Conn) Subscribe(ctx context.Context, channel string) error {
	_, err := c.SubscribeAuth(ctx, channel, "", "")
	return err
}

// SubscribeAuth is Subscribe with an auth value (see SignChannel) and, for
// presence channels, the channel_data string ("" to omit it). It returns the
// subscription_succeeded event, whose Data holds the presence roster.
//
// Only events received after the subscribe was sent are considered, but an
// unrelated pusher:error that was already queued and not yet read would be
// taken as the answer: read earlier errors first.
func (c *Conn) SubscribeAuth(ctx context.Context, channel, auth, channelData string) (Event, error) {
	if err := c.acquire(ctx); err != nil {
		return Event{}, fmt.Errorf("client: subscribe %q: %w", channel, err)
	}
	defer c.release()
	data := subscribeData{Auth: auth, Channel: channel, ChannelData: channelData}
	if err := c.Send(EventSubscribe, "", data); err != nil {
		return Event{}, fmt.Errorf("client: subscribe %q: %w", channel, err)
	}
	ev, err := c.waitFor(ctx, false, func(ev *Event) bool {
		switch ev.Event {
		case EventSubscriptionSucceeded, EventSubscriptionError:
			return ev.Channel == channel
		case EventError:
			return ev.Channel == "" || ev.Channel == channel
		default:
			return false
		}
	})
	if err != nil {
		return Event{}, fmt.Errorf("client: subscribe %q: %w", channel, err)
	}
	if ev.Event != EventSubscriptionSucceeded {
		return ev, newSubscriptionError(channel, ev)
	}
	return ev, nil
}

// Unsubscribe sends pusher:unsubscribe for channel. The server sends no
// acknowledgement.
func (c *Conn) Unsubscribe(channel string) error {
	return c.Send(EventUnsubscribe, "", map[string]string{"channel": channel})
}
