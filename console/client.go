package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"herald/admin"
	"herald/debugtap"
)

// Stream reads a node's event stream (GET /console/api/stream) with the
// admin client's URL and bearer token, and calls onEvent for every debug
// event and onStatus (may be nil) for every status, until ctx ends (nil
// is returned then) or the stream fails.
func Stream(ctx context.Context, c *admin.Client, app, channel string, onEvent func(debugtap.Event, []byte), onStatus func(StreamStatus)) error {
	q := url.Values{"app": {app}}
	if channel != "" {
		q.Set("channel", channel)
	}
	u := strings.TrimRight(c.URL, "/") + "/console/api/stream?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("console: stream %s: %w", u, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{} // no timeout: the stream is long-lived
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("console: stream %s: %w (is the node running, with admin.listen there?)", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb admin.ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		return &admin.Error{Status: resp.StatusCode, Message: eb.Error}
	}
	err = readSSE(resp.Body, func(name string, data []byte) {
		switch name {
		case "debug":
			var e debugtap.Event
			if json.Unmarshal(data, &e) == nil {
				onEvent(e, data)
			}
		case "status":
			var st StreamStatus
			if onStatus != nil && json.Unmarshal(data, &st) == nil {
				onStatus(st)
			}
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("console: stream %s ended: %w", u, err)
}

// readSSE calls fn for every event of a Server-Sent Events body (the
// subset the console writes: "event:" and one "data:" line per event).
func readSSE(r io.Reader, fn func(name string, data []byte)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	name, data := "message", []byte(nil)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data != nil {
				fn(name, data)
			}
			name, data = "message", nil
		case line[0] == ':':
		default:
			k, v, _ := strings.Cut(string(line), ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "event":
				name = v
			case "data":
				data = append(data, v...)
			}
		}
	}
	return sc.Err()
}
