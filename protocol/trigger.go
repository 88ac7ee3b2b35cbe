package protocol

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits bounds REST trigger bodies (docs/protocol.md §6.3, §6.4, §6.9). A
// zero or negative field means its default (DefaultLimits).
type Limits struct {
	// MaxDataBytes is the largest accepted data string, in bytes (10240);
	// larger data is rejected with 413.
	MaxDataBytes int
	// MaxChannels is the most channels per trigger (100).
	MaxChannels int
	// MaxBatch is the most events per batch (10).
	MaxBatch int
	// MaxEventName is the longest event name, in characters (200).
	MaxEventName int
	// MaxChannelName is the longest channel name, in bytes (200).
	MaxChannelName int
}

// DefaultLimits returns Pusher's limits: 10 KiB data, 100 channels, 10
// batch events, 200-character event and channel names.
func DefaultLimits() Limits {
	return Limits{
		MaxDataBytes:   10240,
		MaxChannels:    100,
		MaxBatch:       10,
		MaxEventName:   200,
		MaxChannelName: DefaultMaxChannelNameLength,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	for _, f := range []struct{ v, def *int }{
		{&l.MaxDataBytes, &d.MaxDataBytes},
		{&l.MaxChannels, &d.MaxChannels},
		{&l.MaxBatch, &d.MaxBatch},
		{&l.MaxEventName, &d.MaxEventName},
		{&l.MaxChannelName, &d.MaxChannelName},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return l
}

// Attributes that a trigger's info parameter may request
// (docs/protocol.md §6.3).
const (
	InfoUserCount         = "user_count"
	InfoSubscriptionCount = "subscription_count"
)

// Trigger is one validated event to publish.
type Trigger struct {
	// Name is the event name.
	Name string
	// Data is the event data string, delivered verbatim.
	Data string
	// Channels are the target channels, valid and de-duplicated in order.
	Channels []string
	// SocketID is the connection to exclude from delivery, or "".
	SocketID string
	// Info lists the requested attributes (InfoUserCount,
	// InfoSubscriptionCount), de-duplicated in order; nil when none.
	Info []string
}

// triggerFields holds the raw values of one trigger object's members; a nil
// field is absent.
type triggerFields struct {
	name, data, channels, channel, socketID, info []byte
}

func (f *triggerFields) collect(key, val []byte) error {
	switch string(key) {
	case "name":
		f.name = val
	case "data":
		f.data = val
	case "channels":
		f.channels = val
	case "channel":
		f.channel = val
	case "socket_id":
		f.socketID = val
	case "info":
		f.info = val
	}
	return nil
}

// DecodeTrigger parses and validates a POST /apps/{id}/events body
// (docs/protocol.md §6.3). Errors are *HTTPError: 413 when data is longer
// than lim.MaxDataBytes, 400 for everything else: invalid JSON or not an
// object; name missing, empty, longer than lim.MaxEventName characters, or
// starting with "pusher:" or "pusher_internal:"; data missing or not a
// string; neither channels nor channel ("channels" wins when both are given);
// no channels or more than lim.MaxChannels; an invalid channel name; several
// channels including a private-encrypted- one; a non-empty socket_id that is
// not a valid socket id; info not a comma-separated list of user_count and
// subscription_count.
func DecodeTrigger(body []byte, lim Limits) (Trigger, error) {
	var f triggerFields
	if err := eachField(body, f.collect); err != nil {
		return Trigger{}, httpErr(400, "Invalid JSON body: expected an object")
	}
	t, herr := f.trigger(lim.withDefaults(), false)
	if herr != nil {
		return Trigger{}, herr
	}
	return t, nil
}

// errTooMany stops the scan of an over-long array.
var errTooMany = errors.New("protocol: too many elements")

// DecodeBatch parses and validates a POST /apps/{id}/batch_events body
// {"batch":[...]} (docs/protocol.md §6.4). Each item is validated like
// DecodeTrigger, but must name a single "channel" (an item with "channels" is
// rejected). The batch must hold 1 to lim.MaxBatch items. Validation is
// all-or-nothing: the first invalid item's *HTTPError is returned (its
// message prefixed with "Batch event <index>: "). Each returned Trigger has
// exactly one channel.
func DecodeBatch(body []byte, lim Limits) ([]Trigger, error) {
	lim = lim.withDefaults()
	var batch []byte
	err := eachField(body, func(key, val []byte) error {
		if string(key) == "batch" {
			batch = val
		}
		return nil
	})
	if err != nil {
		return nil, httpErr(400, "Invalid JSON body: expected an object")
	}
	if batch == nil || isNull(batch) {
		return nil, httpErr(400, "Missing batch")
	}
	var items [][]byte
	err = eachElement(batch, func(i int, val []byte) error {
		if i >= lim.MaxBatch {
			return errTooMany
		}
		items = append(items, val)
		return nil
	})
	switch {
	case errors.Is(err, errTooMany):
		return nil, httpErr(400, "Cannot batch-send more than "+strconv.Itoa(lim.MaxBatch)+" events at once")
	case err != nil:
		return nil, httpErr(400, "Invalid batch: expected an array")
	case len(items) == 0:
		return nil, httpErr(400, "Empty batch")
	}
	out := make([]Trigger, 0, len(items))
	for i, item := range items {
		var f triggerFields
		if err := eachField(item, f.collect); err != nil {
			return nil, batchErr(i, httpErr(400, "expected an object"))
		}
		t, herr := f.trigger(lim, true)
		if herr != nil {
			return nil, batchErr(i, herr)
		}
		out = append(out, t)
	}
	return out, nil
}

func batchErr(i int, e *HTTPError) *HTTPError {
	return httpErr(e.Status, "Batch event "+strconv.Itoa(i)+": "+e.Message)
}

// trigger validates the collected fields; single forbids "channels".
func (f *triggerFields) trigger(lim Limits, single bool) (Trigger, *HTTPError) {
	var t Trigger
	var herr *HTTPError
	if t.Name, herr = eventName(f.name, lim); herr != nil {
		return Trigger{}, herr
	}
	if f.data == nil || isNull(f.data) {
		return Trigger{}, httpErr(400, "Missing data")
	}
	data, err := decodeString(f.data)
	if err != nil {
		return Trigger{}, httpErr(400, "data must be a string")
	}
	if len(data) > lim.MaxDataBytes {
		return Trigger{}, httpErr(413, "Event data too large: "+strconv.Itoa(len(data))+
			" bytes, limit "+strconv.Itoa(lim.MaxDataBytes))
	}
	t.Data = data
	if t.Channels, herr = f.channelList(lim, single); herr != nil {
		return Trigger{}, herr
	}
	if t.SocketID, err = decodeOptString(f.socketID); err != nil {
		return Trigger{}, httpErr(400, "socket_id must be a string")
	}
	if t.SocketID != "" && !ValidSocketID(t.SocketID) {
		return Trigger{}, httpErr(400, "Invalid socket_id '"+t.SocketID+"'")
	}
	info, err := decodeOptString(f.info)
	if err != nil {
		return Trigger{}, httpErr(400, "info must be a string")
	}
	if t.Info, herr = parseInfo(info); herr != nil {
		return Trigger{}, herr
	}
	return t, nil
}

// eventName decodes and checks the name member.
func eventName(raw []byte, lim Limits) (string, *HTTPError) {
	if raw == nil || isNull(raw) {
		return "", httpErr(400, "Missing event name")
	}
	name, err := decodeString(raw)
	switch {
	case err != nil:
		return "", httpErr(400, "name must be a string")
	case name == "":
		return "", httpErr(400, "Missing event name")
	case utf8.RuneCountInString(name) > lim.MaxEventName:
		return "", httpErr(400, "Event name too long (limit "+strconv.Itoa(lim.MaxEventName)+" characters)")
	case strings.HasPrefix(name, "pusher:"), strings.HasPrefix(name, "pusher_internal:"):
		return "", httpErr(400, "Event name '"+name+"' is reserved (pusher: and pusher_internal: prefixes)")
	}
	return name, nil
}

// channelList decodes channels (or channel), checks count and names, and
// de-duplicates in order.
func (f *triggerFields) channelList(lim Limits, single bool) ([]string, *HTTPError) {
	var list []string
	switch {
	case single && f.channels != nil && !isNull(f.channels):
		return nil, httpErr(400, "Batch events take a single channel, not channels")
	case f.channels != nil && !isNull(f.channels):
		err := eachElement(f.channels, func(i int, val []byte) error {
			if i >= lim.MaxChannels {
				return errTooMany
			}
			s, err := decodeString(val)
			list = append(list, s)
			return err
		})
		switch {
		case errors.Is(err, errTooMany):
			return nil, httpErr(400, "Too many channels (limit "+strconv.Itoa(lim.MaxChannels)+")")
		case err != nil:
			return nil, httpErr(400, "channels must be an array of strings")
		}
	case f.channel != nil && !isNull(f.channel):
		s, err := decodeString(f.channel)
		if err != nil {
			return nil, httpErr(400, "channel must be a string")
		}
		list = []string{s}
	default:
		return nil, httpErr(400, "Missing channels")
	}
	if len(list) == 0 {
		return nil, httpErr(400, "Missing channels")
	}
	out := list[:0]
	encrypted := false
	for _, ch := range list {
		if err := ValidateChannelName(ch, lim.MaxChannelName); err != nil {
			return nil, httpErr(400, err.Error())
		}
		if kind, _ := Classify(ch); kind == Encrypted {
			encrypted = true
		}
		if !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	if encrypted && len(out) > 1 {
		return nil, httpErr(400, "Cannot trigger an event on multiple channels when one is encrypted (private-encrypted-)")
	}
	return out, nil
}

// parseInfo splits a comma-separated info parameter, trimming spaces; every
// attribute must be user_count or subscription_count. "" gives nil.
func parseInfo(info string) ([]string, *HTTPError) {
	if info == "" {
		return nil, nil
	}
	var out []string
	for a := range strings.SplitSeq(info, ",") {
		a = strings.TrimSpace(a)
		if a != InfoUserCount && a != InfoSubscriptionCount {
			return nil, httpErr(400, "Invalid info attribute '"+a+"'")
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}
