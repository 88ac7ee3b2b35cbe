package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/client"
)

// TestClusterResumeRightAfterLiveCopy is the rolling restart's lost event
// (issue 13, tests/e2e/rolling_test.go) made to happen on purpose. A
// client that left a node just before an event E asks another node to
// resume from the serial before E, at the moment E's live copy has passed
// through that node. The replay reads the channel's history with direct
// gets, which a replica may answer before it has applied E (any replica
// answers, and a follower applies a stored event after the leader
// acknowledged it); E's live copy went by before the subscription's hold,
// so the replay is the only way E reaches the client. Every round, on every
// node, the resume must deliver E.
func TestClusterResumeRightAfterLiveCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const (
		ch     = "resume-race"
		rounds = 150
	)
	nodes := startClusterNodes(t, 3)
	type round struct {
		node   int
		serial uint64
		got    []uint64
		report string
		err    error
	}
	results := make(chan round, 3*rounds)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		// The watcher's subscription keeps the node subscribed to the
		// channel, so each event's live copy passes through it.
		watch := dialNode(t, nd)
		if err := watch.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				r := round{node: i}
				// A new socket each round, dialed before the event (a
				// socket's subscribes are rate limited).
				res := dialNode(t, nd)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ev, err := watch.WaitFor(ctx, "e", ch)
				if err == nil {
					// At once: E has just passed through this node.
					r.serial = ev.Serial
					r.got, r.report, err = resumeOnce(ctx, res, ch, ev.Serial-1)
				}
				cancel()
				res.CloseNow()
				r.err = err
				results <- r
				if err != nil {
					return
				}
			}
		}()
	}
	var problems []string
	for k := range rounds {
		if status, body, err := rest(nodes[k%3]).Trigger(ctxT(t), client.TriggerParams{Name: "e", Data: fmt.Sprint(k), Channels: []string{ch}}); err != nil || status != 200 {
			t.Fatalf("trigger %d: %d %s %v", k, status, body, err)
		}
		for range nodes {
			r := <-results
			if r.err != nil {
				t.Fatalf("round %d, node %d: %v", k, r.node+1, r.err)
			}
			if len(r.got) == 0 || r.got[0] != r.serial {
				problems = append(problems, fmt.Sprintf("round %d, node %d: resumed from %d, replayed %v (%s): serial %d missing",
					k, r.node+1, r.serial-1, r.got, r.report, r.serial))
			}
		}
	}
	wg.Wait()
	var rereads uint64
	for _, nd := range nodes {
		rereads += nd.gw.Metrics().ReplayRereads
	}
	t.Logf("%d resumes; %d replay reads made again after a short one", 3*rounds, rereads)
	if len(problems) > 0 {
		t.Fatalf("%d of %d resumes lost the event whose live copy had just passed:\n%s", len(problems), 3*rounds, strings.Join(problems, "\n"))
	}
}

// resumeOnce subscribes c to ch with herald_resume from, returns the
// serials of the events that came before the resume report and the
// report's data.
func resumeOnce(ctx context.Context, c *client.Conn, ch string, from uint64) (serials []uint64, report string, err error) {
	msg, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": ch, "herald_resume": from}})
	if err := c.SendRaw(msg); err != nil {
		return nil, "", err
	}
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			return serials, "", fmt.Errorf("waiting for the resume report: %w", err)
		}
		if ev.Channel != ch {
			continue
		}
		switch {
		case ev.Event == "e":
			serials = append(serials, ev.Serial)
		case strings.HasPrefix(ev.Event, "pusher_internal:resume_"):
			return serials, ev.Event + " " + ev.Data, nil
		}
	}
}
