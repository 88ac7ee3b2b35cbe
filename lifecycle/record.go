package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"herald/app"
	"herald/hook"
	"herald/protocol"
)

// This file is the ledger's pure part: the record of one channel, what a
// channel's webhooks want, and decide, which compares a record with the
// cluster-wide state and says what to emit. No I/O, no clock of its own.

// record is what the webhook state bucket holds for one channel: what its
// owner emitted, and the events it decided at this revision that may not be
// in the outbox yet (Pending: whoever reads a record with Pending enqueues
// them before anything else, under ids derived from the record's revision,
// so a crash between the write and the enqueue loses nothing and a second
// enqueue is dropped by the outbox as a duplicate).
type record struct {
	Occupied bool      `json:"occupied,omitempty"`
	Count    int       `json:"subscription_count,omitempty"` // the count last emitted (channels whose webhooks want subscription_count)
	Members  []string  `json:"members,omitempty"`            // user ids emitted as present, sorted
	Pending  []pending `json:"pending,omitempty"`
}

// pending is one event decided and not known to be in the outbox.
type pending struct {
	Kind  Kind   `json:"kind"`
	User  string `json:"user_id,omitempty"`
	Count int    `json:"subscription_count,omitempty"`
}

// empty reports whether the record remembers nothing: it is deleted rather
// than written.
func (r *record) empty() bool {
	return !r.Occupied && r.Count == 0 && len(r.Members) == 0 && len(r.Pending) == 0
}

// sameState reports whether r and o remember the same emitted state.
func (r *record) sameState(o *record) bool {
	return r.Occupied == o.Occupied && r.Count == o.Count && slices.Equal(r.Members, o.Members)
}

func decodeRecord(raw []byte) (record, error) {
	var r record
	if len(raw) == 0 {
		return r, nil
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return record{}, fmt.Errorf("lifecycle: undecodable webhook record: %w", err)
	}
	slices.Sort(r.Members)
	r.Members = slices.Compact(r.Members)
	return r, nil
}

// eventID is the id of one event decided at record revision rev: the same
// on every node that reads that revision, and never the same for two
// events (a revision is a stream sequence, never reused; within one
// revision no kind and user repeats).
func eventID(app, channel string, rev uint64, kind Kind, user string) string {
	h := sha256.New()
	for _, s := range []string{app, channel, strconv.FormatUint(rev, 10), string(kind), user} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// webhookEvents are the outbox's events for the pending events of the
// record at revision rev.
func webhookEvents(app, channel string, rev uint64, ps []pending) []hook.Event {
	evs := make([]hook.Event, len(ps))
	for i, p := range ps {
		evs[i] = hook.Event{
			ID:      eventID(app, channel, rev, p.Kind, p.User),
			Name:    string(p.Kind),
			Channel: channel,
			UserID:  p.User,
		}
		if p.Kind == SubscriptionCount {
			n := p.Count
			evs[i].SubscriptionCount = &n
		}
	}
	return evs
}

// wants is what a channel's webhooks ask for, as far as the ledger goes.
type wants struct {
	occupied, vacated bool
	added, removed    bool // presence channels only
	count             bool // subscription_count; not on presence channels
}

// wantsOf reads the app's webhooks for channel. Server-to-user channels
// have no webhooks (docs/webhooks.md).
func wantsOf(a *app.App, channel string) wants {
	if len(a.Webhooks) == 0 {
		return wants{}
	}
	kind, _ := protocol.Classify(channel)
	if kind == protocol.ServerToUser {
		return wants{}
	}
	w := wants{
		occupied: a.WantsWebhook(app.WebhookChannelOccupied, channel),
		vacated:  a.WantsWebhook(app.WebhookChannelVacated, channel),
	}
	if kind == protocol.Presence {
		w.added = a.WantsWebhook(app.WebhookMemberAdded, channel)
		w.removed = a.WantsWebhook(app.WebhookMemberRemoved, channel)
	} else {
		w.count = a.WantsWebhook(app.WebhookSubscriptionCount, channel)
	}
	return w
}

func (w wants) any() bool { return w.occupied || w.vacated || w.added || w.removed || w.count }

// members reports whether the record keeps the channel's members.
func (w wants) members() bool { return w.added || w.removed }

// appWantsAny reports whether any webhook of the app takes a kind the
// ledger decides, on any channel.
func appWantsAny(a *app.App) bool {
	for i := range a.Webhooks {
		for _, t := range a.Webhooks[i].EventTypes {
			switch t {
			case app.WebhookChannelOccupied, app.WebhookChannelVacated, app.WebhookMemberAdded,
				app.WebhookMemberRemoved, app.WebhookSubscriptionCount:
				return true
			}
		}
	}
	return false
}

// Pusher throttles subscription_count above countThrottleAbove subscribers
// to one every countThrottle (docs/protocol.md §7.3).
const (
	countThrottleAbove = 100
	countThrottle      = 5 * time.Second
)

// absence remembers, on the node deciding a channel, since when each of
// its removals (the channel's occupancy "", a member "m:"+id) has been
// seen: a removal is emitted once it has lasted the grace. It is a timer,
// not a decision: lost with the node, it restarts on the next owner, from
// takeover (floor).
type absence struct {
	at map[string]time.Time
}

// since returns when item was first seen absent, starting now if it was
// not, and never before floor.
func (a *absence) since(item string, now, floor time.Time) time.Time {
	t, ok := a.at[item]
	if !ok {
		if a.at == nil {
			a.at = make(map[string]time.Time)
		}
		t = now
		a.at[item] = t
	}
	if t.Before(floor) {
		return floor
	}
	return t
}

// back forgets item's absence: it is present again.
func (a *absence) back(item string) { delete(a.at, item) }

// decision is what decide found.
type decision struct {
	next    record    // the record after the events (Pending unset)
	events  []pending // in the order they are sent
	due     time.Time // when to look again (a removal's grace ends, a throttled count); zero: no need
	counted bool      // a subscription_count is among events
	// gone are the absence items whose removal is decided: once the
	// decision is written, their absence is forgotten (absence.back).
	gone []string
}

// decide compares rec, what was emitted, with the state now (subs: the
// cluster-wide subscriber count; members: the presence members, in join
// order) and returns the events that bring the record to the state.
// Additions are emitted at once; a removal once it has lasted grace
// (absent, floored at the takeover time floor). Order: occupied, members
// added, subscription_count, members removed, vacated. Only kinds in w are
// emitted; the record follows the state for every kind it keeps.
// lastCount is when this node last emitted the channel's count (throttle).
func decide(rec record, subs int, members []string, w wants, grace time.Duration,
	ab *absence, floor, lastCount, now time.Time) decision {
	d := decision{next: record{Occupied: rec.Occupied, Count: rec.Count, Members: slices.Clone(rec.Members)}}
	emit := func(want bool, p pending) {
		if want {
			d.events = append(d.events, p)
		}
	}
	wait := func(t time.Time) {
		if d.due.IsZero() || t.Before(d.due) {
			d.due = t
		}
	}
	occupied := subs > 0
	if occupied {
		ab.back("")
		if !d.next.Occupied {
			d.next.Occupied = true
			emit(w.occupied, pending{Kind: ChannelOccupied})
		}
	}

	var inState map[string]bool
	if w.members() {
		inState = make(map[string]bool, len(members))
		for _, u := range members {
			inState[u] = true
			ab.back("m:" + u)
			if _, found := slices.BinarySearch(d.next.Members, u); found {
				continue
			}
			if !d.next.Occupied {
				// A member before the count that occupies its channel (they
				// travel apart): the count's transition brings us back.
				wait(now.Add(grace))
				continue
			}
			i, _ := slices.BinarySearch(d.next.Members, u)
			d.next.Members = slices.Insert(d.next.Members, i, u)
			emit(w.added, pending{Kind: MemberAdded, User: u})
		}
	}

	if w.count && occupied && d.next.Occupied && subs != d.next.Count {
		if next := lastCount.Add(countThrottle); (subs > countThrottleAbove || d.next.Count > countThrottleAbove) && now.Before(next) {
			wait(next)
		} else {
			d.next.Count = subs
			d.counted = true
			emit(true, pending{Kind: SubscriptionCount, Count: subs})
		}
	}

	if w.members() {
		kept := d.next.Members[:0:0]
		for _, u := range d.next.Members {
			if inState[u] {
				kept = append(kept, u)
				continue
			}
			if end := ab.since("m:"+u, now, floor).Add(grace); now.Before(end) {
				kept = append(kept, u)
				wait(end)
				continue
			}
			d.gone = append(d.gone, "m:"+u)
			emit(w.removed, pending{Kind: MemberRemoved, User: u})
		}
		d.next.Members = kept
	}

	if !occupied && d.next.Occupied {
		switch end := ab.since("", now, floor).Add(grace); {
		case now.Before(end):
			wait(end)
		case len(d.next.Members) > 0:
			// Members still recorded (their removals wait, or the state
			// shows a member of a channel without subscribers): vacated
			// comes after their member_removed.
			wait(now.Add(max(grace, time.Second)))
		default:
			d.gone = append(d.gone, "")
			d.next.Occupied = false
			d.next.Count = 0
			emit(w.vacated, pending{Kind: ChannelVacated})
		}
	}
	if !w.count {
		d.next.Count = 0
	}
	if !w.members() {
		d.next.Members = nil
	}
	return d
}

func jsonRecord(r *record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: encode webhook record: %w", err)
	}
	return b, nil
}
