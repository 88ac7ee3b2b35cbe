package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxResponseSize bounds the response body REST reads.
const maxResponseSize = 16 << 20

// REST is a minimal Pusher REST publisher that signs its requests as the
// official server SDKs do. The fields are read on every call; do not change
// them while calls are running. A REST value is safe for concurrent use.
type REST struct {
	BaseURL string // e.g. http://127.0.0.1:6001, without a trailing /apps
	AppID   string
	Key     string
	Secret  string
	HTTP    *http.Client // nil means http.DefaultClient

	clock func() time.Time // test hook; nil means time.Now
}

// TriggerParams is the body of POST /apps/{app_id}/events. Data is sent as a
// JSON string and delivered verbatim; SocketID and Info are omitted when empty.
type TriggerParams struct {
	Name     string
	Data     string
	Channels []string
	SocketID string
	Info     string
}

// triggerBody fixes the JSON field order: name, channels, data, as in the
// Pusher docs' signing example (docs/protocol.md §9.4).
type triggerBody struct {
	Name     string   `json:"name"`
	Channels []string `json:"channels"`
	Data     string   `json:"data"`
	SocketID string   `json:"socket_id,omitempty"`
	Info     string   `json:"info,omitempty"`
}

// BatchItem is one event of POST /apps/{app_id}/batch_events.
type BatchItem struct {
	Name     string `json:"name"`
	Data     string `json:"data"`
	Channel  string `json:"channel"`
	SocketID string `json:"socket_id,omitempty"`
	Info     string `json:"info,omitempty"`
}

// Trigger POSTs /apps/{id}/events, signed as docs/protocol.md §6.2 says, and
// returns the HTTP status and body. A non-2xx status is not an error (tests
// check it); transport errors are.
func (r *REST) Trigger(ctx context.Context, p TriggerParams) (status int, body []byte, err error) {
	b, err := marshalBody(triggerBody{
		Name:     p.Name,
		Channels: p.Channels,
		Data:     p.Data,
		SocketID: p.SocketID,
		Info:     p.Info,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("client: trigger: %w", err)
	}
	return r.Do(ctx, http.MethodPost, "/apps/"+r.AppID+"/events", nil, b)
}

// TriggerBatch POSTs /apps/{id}/batch_events with {"batch":items}; see Trigger.
func (r *REST) TriggerBatch(ctx context.Context, items []BatchItem) (int, []byte, error) {
	if items == nil {
		items = []BatchItem{}
	}
	b, err := marshalBody(struct {
		Batch []BatchItem `json:"batch"`
	}{items})
	if err != nil {
		return 0, nil, fmt.Errorf("client: trigger batch: %w", err)
	}
	return r.Do(ctx, http.MethodPost, "/apps/"+r.AppID+"/batch_events", nil, b)
}

// Do sends any signed request: method, path (e.g. /apps/app-id/channels,
// signed and sent as given), extra query params (see SignQuery for auth_*
// overrides) and body (sent with Content-Type: application/json when not
// empty). It returns the status and at most 16 MiB of the response body. A
// non-2xx status is not an error; transport errors are.
func (r *REST) Do(ctx context.Context, method, path string, params map[string]string, body []byte) (int, []byte, error) {
	now := time.Now
	if r.clock != nil {
		now = r.clock
	}
	u := strings.TrimSuffix(r.BaseURL, "/") + path + "?" +
		SignQuery(r.Key, r.Secret, method, path, params, body, now())
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := r.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize))
	if err != nil {
		return resp.StatusCode, b, fmt.Errorf("client: %s %s: read body: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}

// marshalBody encodes v as JSON without escaping <, > and & (the SDKs do not
// either) and without a trailing newline.
func marshalBody(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
