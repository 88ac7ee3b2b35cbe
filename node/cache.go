package node

import (
	"context"
	"encoding/json"
	"time"

	"herald/bus"
)

// cacheQueries answers the REST API's info=cache from the bus's cache
// stream: the stored Pusher event JSON is read back for its name and data.
type cacheQueries struct{ b *bus.Bus }

func (q cacheQueries) LastEvent(ctx context.Context, appID, channel string) (event, data string, ttl time.Duration, ok bool, err error) {
	payload, _, stored, ok, err := q.b.LastEvent(ctx, appID, channel)
	if err != nil || !ok {
		return "", "", 0, false, err
	}
	var ev struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return "", "", 0, false, err
	}
	// REST-published data is a JSON string; a client event's data is raw
	// JSON, returned as its text.
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		data = string(ev.Data)
	}
	ttl = q.b.CacheTTL() - time.Since(stored)
	if ttl <= 0 {
		return "", "", 0, false, nil
	}
	return ev.Event, data, ttl, true, nil
}
