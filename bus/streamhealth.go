package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamHealth is one app stream's state as JetStream reports it, for an
// operator (herald status).
type StreamHealth struct {
	App      string `json:"app"`
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// Leader is the server that leads the stream's Raft group; "" on a
	// single node (no group) or while none is elected.
	Leader string `json:"leader,omitempty"`
	// Replicas is the stream's configured replica count; Current counts
	// those in sync (the leader included), Lagging those behind or offline.
	Replicas int    `json:"replicas"`
	Current  int    `json:"replicas_current"`
	Lagging  int    `json:"replicas_lagging"`
	Error    string `json:"error,omitempty"` // the info request failed (the stream missing, no leader)
}

// streamInfoWait bounds one stream info request of StreamHealth.
const streamInfoWait = 2 * time.Second

// StreamHealth asks JetStream about the main stream of each app (one
// request per app, each at most 2 s; not for a hot path). With streams off
// it returns nil.
func (b *Bus) StreamHealth(ctx context.Context, apps []string) []StreamHealth {
	if !b.cfg.StreamEnabled {
		return nil
	}
	out := make([]StreamHealth, 0, len(apps))
	for _, app := range apps {
		h := StreamHealth{App: app, Stream: StreamName(app)}
		info, err := b.streamInfo(ctx, h.Stream)
		if err != nil {
			h.Error = err.Error()
			out = append(out, h)
			continue
		}
		h.Messages, h.Bytes, h.Replicas = info.State.Msgs, info.State.Bytes, info.Config.Replicas
		h.Current = 1 // the server that answered holds it; a group corrects this below
		if ci := info.Cluster; ci != nil && (ci.Leader != "" || len(ci.Replicas) > 0) {
			h.Leader = ci.Leader
			h.Current = 0
			if ci.Leader != "" {
				h.Current = 1
			}
			for _, p := range ci.Replicas {
				if p.Current && !p.Offline {
					h.Current++
				} else {
					h.Lagging++
				}
			}
		}
		out = append(out, h)
	}
	return out
}

func (b *Bus) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, streamInfoWait)
	defer cancel()
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", name, err)
	}
	return s.CachedInfo(), nil // Stream fetched it
}
