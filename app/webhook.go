package app

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The webhook event types an app can ask for (apps[].webhooks[].event_types).
// The values are Pusher's webhook event names (docs/webhooks.md).
const (
	WebhookChannelOccupied   = "channel_occupied"
	WebhookChannelVacated    = "channel_vacated"
	WebhookMemberAdded       = "member_added"
	WebhookMemberRemoved     = "member_removed"
	WebhookClientEvent       = "client_event"
	WebhookCacheMiss         = "cache_miss"
	WebhookSubscriptionCount = "subscription_count"
)

// WebhookEventTypes lists every event type, in the order Pusher documents them.
var WebhookEventTypes = []string{
	WebhookChannelOccupied, WebhookChannelVacated, WebhookMemberAdded, WebhookMemberRemoved,
	WebhookClientEvent, WebhookCacheMiss, WebhookSubscriptionCount,
}

// Webhook is one receiver of an app's webhooks, in soketi's shape so that a
// soketi config's list carries over.
type Webhook struct {
	URL        string            `yaml:"url"`         // required: absolute http:// or https:// URL
	EventTypes []string          `yaml:"event_types"` // required, non-empty: values of WebhookEventTypes
	Filter     WebhookFilter     `yaml:"filter"`      // default: every channel
	Headers    map[string]string `yaml:"headers"`     // default none: extra request headers (not Content-Type or X-Pusher-*)
}

// WebhookFilter narrows a webhook to channels by name; both set means both
// must hold.
type WebhookFilter struct {
	ChannelNameStartsWith string `yaml:"channel_name_starts_with"` // default "" = any
	ChannelNameEndsWith   string `yaml:"channel_name_ends_with"`   // default "" = any
}

// Wants reports whether the webhook takes events of type kind on channel.
func (w *Webhook) Wants(kind, channel string) bool {
	if !strings.HasPrefix(channel, w.Filter.ChannelNameStartsWith) || !strings.HasSuffix(channel, w.Filter.ChannelNameEndsWith) {
		return false
	}
	for _, t := range w.EventTypes {
		if t == kind {
			return true
		}
	}
	return false
}

// WantsWebhook reports whether any of the app's webhooks takes events of
// type kind on channel.
func (a *App) WantsWebhook(kind, channel string) bool {
	for i := range a.Webhooks {
		if a.Webhooks[i].Wants(kind, channel) {
			return true
		}
	}
	return false
}

// Secrets are the secrets the app accepts signatures from: Secret first,
// then PreviousSecrets (a rotation's overlap). Herald signs with Secret.
func (a *App) Secrets() []string {
	if len(a.PreviousSecrets) == 0 {
		return []string{a.Secret}
	}
	return append([]string{a.Secret}, a.PreviousSecrets...)
}

// reservedWebhookHeaders are set by the sender; a webhook may not override
// them.
var reservedWebhookHeaders = []string{"Content-Type", "Content-Length", "Host", "X-Pusher-Key", "X-Pusher-Signature"}

func (a *App) validateWebhooks() *FieldError {
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		p := fmt.Sprintf("webhooks[%d].", i)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			return fieldErr(p+"url", "must not be empty")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return fieldErr(p+"url", fmt.Sprintf("%s must be an absolute http:// or https:// URL", quote(w.URL)))
		}
		if len(w.EventTypes) == 0 {
			return fieldErr(p+"event_types", "must list at least one of "+strings.Join(WebhookEventTypes, ", "))
		}
		for j, t := range w.EventTypes {
			ok := false
			for _, k := range WebhookEventTypes {
				ok = ok || t == k
			}
			if !ok {
				return fieldErr(fmt.Sprintf("%sevent_types[%d]", p, j), fmt.Sprintf("%s is not one of %s", quote(t), strings.Join(WebhookEventTypes, ", ")))
			}
		}
		for name := range w.Headers {
			canon := http.CanonicalHeaderKey(name)
			if name == "" || strings.ContainsAny(name, " \t\r\n:") {
				return fieldErr(p+"headers", fmt.Sprintf("%s is not a header name", quote(name)))
			}
			for _, r := range reservedWebhookHeaders {
				if canon == r {
					return fieldErr(p+"headers."+name, "is set by Herald and cannot be overridden")
				}
			}
			if strings.ContainsAny(w.Headers[name], "\r\n") {
				return fieldErr(p+"headers."+name, "must not contain line breaks")
			}
		}
	}
	for i, s := range a.PreviousSecrets {
		if s == "" {
			return fieldErr(fmt.Sprintf("previous_secrets[%d]", i), "must not be empty")
		}
	}
	return nil
}
