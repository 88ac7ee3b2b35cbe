package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"herald/admin"
	"herald/bus"
	"herald/debugtap"
)

// The event stream, GET /console/api/stream?app=ID[&channel=PREFIX]: a
// Server-Sent Events response. While it is open it
//
//   - subscribes to every node's debug events of the app
//     (bus.DebugSubject), and
//   - announces its watch (debugtap.Watch, with the channel prefix) to
//     every node on bus.SysDebugWatchSubject every watchEvery, with a TTL
//     of watchTTL, so that a node starts producing within one round trip,
//     a node that joins later within watchEvery, and every node stops
//     within watchTTL of the stream ending even if the stop announcement
//     is lost.
//
// SSE events: "debug" (one debugtap.Event as JSON), "status" (the nodes
// that answered the last announcement with their sampling and losses, and
// the events this stream dropped because its reader was slow), which also
// keeps the connection alive.

var (
	watchEvery = 3 * time.Second
	watchTTL   = 10 * time.Second
)

// streamBuffer bounds the events waiting for one slow stream reader.
const streamBuffer = 4096

// StreamStatus is the "status" SSE event.
type StreamStatus struct {
	App     string            `json:"app"`
	Channel string            `json:"channel"`
	Nodes   []debugtap.Status `json:"nodes"`   // the nodes producing for this stream
	Dropped uint64            `json:"dropped"` // events this stream dropped (its reader was slow)
}

func (c *Console) stream(w http.ResponseWriter, r *http.Request, s scope) {
	q := r.URL.Query()
	a, ok := c.app(w, s, q.Get("app"))
	if !ok {
		return
	}
	prefix := q.Get("channel")
	flusher, ok := w.(http.Flusher)
	if !ok {
		admin.WriteError(w, http.StatusInternalServerError, "console: streaming unsupported")
		return
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		admin.WriteError(w, http.StatusServiceUnavailable, "console: node stopping")
		return
	}
	c.streams.Add(1)
	c.mu.Unlock()
	defer c.streams.Done()

	events := make(chan []byte, streamBuffer)
	var dropped atomic.Uint64
	sub, err := c.cfg.Bus.SubscribeDebug(a.ID, func(data []byte) {
		select {
		case events <- data:
		default:
			dropped.Add(1)
		}
	})
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, "console: %v", err)
		return
	}
	defer sub.Stop()
	watch := debugtap.Watch{App: a.ID, Channel: prefix, ID: randomID(), TTLms: watchTTL.Milliseconds()}
	defer func() { // stop at once rather than at the TTL
		watch.TTLms = 0
		b, _ := json.Marshal(watch)
		_, _ = c.cfg.Bus.AskDebug(context.Background(), bus.SysDebugWatchSubject, b, 0, 0, nil)
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	announce := func() error {
		b, _ := json.Marshal(watch)
		answers, _ := c.cfg.Bus.AskDebug(r.Context(), bus.SysDebugWatchSubject, b, c.cfg.Members(), askWait, nil)
		st := StreamStatus{App: a.ID, Channel: prefix, Nodes: []debugtap.Status{}, Dropped: dropped.Load()}
		for _, ab := range answers {
			var ns debugtap.Status
			if json.Unmarshal(ab, &ns) == nil {
				st.Nodes = append(st.Nodes, ns)
			}
		}
		return writeEvent(w, flusher, "status", st)
	}
	if err := announce(); err != nil {
		return
	}
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.stop:
			return
		case <-tick.C:
			if err := announce(); err != nil {
				return
			}
		case data := <-events:
			// Other watchers of the app may have asked for more than this
			// stream's prefix: every node produces their union.
			if prefix != "" && !channelHasPrefix(data, prefix) {
				continue
			}
			if err := writeRaw(w, flusher, "debug", data); err != nil {
				return
			}
		}
	}
}

// channelHasPrefix reports whether an encoded event's channel starts with
// prefix (events without a channel do not).
func channelHasPrefix(data []byte, prefix string) bool {
	var e struct {
		Channel string `json:"channel"`
	}
	return json.Unmarshal(data, &e) == nil && e.Channel != "" && strings.HasPrefix(e.Channel, prefix)
}

func writeEvent(w http.ResponseWriter, f http.Flusher, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("console: encode %s: %w", name, err)
	}
	return writeRaw(w, f, name, b)
}

// writeRaw writes one SSE event; data is one line of JSON.
func writeRaw(w http.ResponseWriter, f http.Flusher, name string, data []byte) error {
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		return err
	}
	f.Flush()
	return nil
}
