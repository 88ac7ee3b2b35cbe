package e2e

// The failover proof of gapless resume (docs/resume.md): a 3-node cluster of
// real herald processes, client.Session clients spread over the three nodes,
// publishers sending numbered events to several channels at a steady rate
// through nodes 1 and 2; node 3 is killed with SIGKILL mid-stream; its
// clients reconnect to the other two and resume. Every client must end with
// every acknowledged (HTTP 200) event exactly once and in order per channel.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"

	"herald/client"
	"herald/configs"
	"herald/internal/testkit"
)

const (
	foSessions      = 12 // session i starts on node i%3
	foChannels      = 8  // every session subscribes to every channel fo-0..7
	foRatePerSecond = 100
	foBeforeKill    = 1500 * time.Millisecond
	foAfterKill     = 3 * time.Second
	foAfterRecovery = 1500 * time.Millisecond
	foPublishCap    = 15 * time.Second
	foDeliverWait   = 20 * time.Second
)

// foCluster is the failover test's cluster (startCluster, cluster_test.go):
// preset local, the dev app, no NATS client port.
var foCluster = clusterSpec{name: "herald-fo", nodePrefix: "fo", preset: configs.PresetLocal, outputTail: 40000}

// foEvent is one event a client delivered, as the checks need it.
type foEvent struct {
	channel string
	serial  uint64
	i       int
	at      time.Time
}

// foClientLog is what one client delivered.
type foClientLog struct {
	mu       sync.Mutex
	name     string
	startOn  int         // node index of its first URL
	resumeAt []time.Time // when each herald:resume_ok was read
	events   []foEvent
	byCh     map[string]map[int]bool
	resumed  []resumeData // herald:resume_ok data
	failed   []string     // herald:resume_failed data
	subsOK   map[string]bool
	errs     []string // malformed events
	maxSerCh map[string]uint64
	// pusher-js clients (failover_pusherjs_test.go): when the last 4200
	// pusher:error was read, and each 4200-to-connected time.
	told4200 time.Time
	moves    []time.Duration
	// trail is what a Go session did, with times (dials, resume reports,
	// events), for the report of an event it misses (rolling_test.go).
	trail []string
}

// trailTime is the clock format of trail lines and the publisher's.
const trailTime = "15:04:05.000000"

func (l *foClientLog) note(format string, args ...any) {
	l.mu.Lock()
	l.trail = append(l.trail, time.Now().Format(trailTime)+" "+fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// trailFor is the trail without the events of channels other than ch.
// l.mu must be held.
func (l *foClientLog) trailFor(ch string) []string {
	var out []string
	for _, n := range l.trail {
		if f := strings.Fields(n); len(f) < 3 || f[1] != "event" || f[2] == ch {
			out = append(out, n)
		}
	}
	return out
}

func newFoClientLog(name string, startOn int) *foClientLog {
	return &foClientLog{name: name, startOn: startOn, byCh: map[string]map[int]bool{},
		subsOK: map[string]bool{}, maxSerCh: map[string]uint64{}}
}

func (l *foClientLog) addEvent(ch string, serial uint64, data string, at time.Time) {
	var d struct {
		Ch string `json:"ch"`
		I  int    `json:"i"`
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := json.Unmarshal([]byte(data), &d); err != nil || d.Ch != ch {
		l.errs = append(l.errs, fmt.Sprintf("bad event data on %s: %q (%v)", ch, data, err))
		return
	}
	l.events = append(l.events, foEvent{channel: ch, serial: serial, i: d.I, at: at})
	l.trail = append(l.trail, at.Format(trailTime)+fmt.Sprintf(" event %s i=%d serial=%d", ch, d.I, serial))
	if l.byCh[ch] == nil {
		l.byCh[ch] = map[int]bool{}
	}
	l.byCh[ch][d.I] = true
}

// missing returns how many acknowledged events the client has not delivered.
func (l *foClientLog) missing(acked map[string][]int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ch, is := range acked {
		for _, i := range is {
			if !l.byCh[ch][i] {
				n++
			}
		}
	}
	return n
}

// check applies the invariant: per channel, serials strictly increasing
// (nothing delivered twice), every acknowledged event delivered, and the
// acknowledged ones in publish order.
func (l *foClientLog) check(acked map[string][]int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	problems = append(problems, l.errs...)
	last := map[string]uint64{}
	seen := map[string]map[int]bool{}
	order := map[string][]int{}
	for _, ev := range l.events {
		if ev.serial == 0 {
			problems = append(problems, fmt.Sprintf("%s: event i=%d on %s without serial", l.name, ev.i, ev.channel))
			continue
		}
		if ev.serial <= last[ev.channel] {
			problems = append(problems, fmt.Sprintf("%s: serial %d after %d on %s (i=%d)", l.name, ev.serial, last[ev.channel], ev.channel, ev.i))
		}
		last[ev.channel] = ev.serial
		if seen[ev.channel] == nil {
			seen[ev.channel] = map[int]bool{}
		}
		if seen[ev.channel][ev.i] {
			problems = append(problems, fmt.Sprintf("%s: i=%d delivered twice on %s", l.name, ev.i, ev.channel))
		}
		seen[ev.channel][ev.i] = true
		order[ev.channel] = append(order[ev.channel], ev.i)
	}
	for ch, is := range acked {
		ackSet := map[int]bool{}
		var miss []int
		for _, i := range is {
			ackSet[i] = true
			if !seen[ch][i] {
				miss = append(miss, i)
			}
		}
		if len(miss) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d acknowledged events missing on %s: %v", l.name, len(miss), ch, foShort(miss)))
		}
		// Each publisher waits for an acknowledgement before the next
		// publish on the channel, so acknowledged events are stored in
		// i order.
		prev := 0
		for _, i := range order[ch] {
			if !ackSet[i] {
				continue
			}
			if i <= prev {
				problems = append(problems, fmt.Sprintf("%s: acknowledged i=%d after i=%d on %s", l.name, i, prev, ch))
			}
			prev = i
		}
	}
	return problems
}

func foShort(is []int) []int {
	if len(is) > 20 {
		return is[:20]
	}
	return is
}

// foPublisher sends numbered events through one node and records which were
// acknowledged.
type foPublisher struct {
	sdk      *pusher.Client
	channels []string

	mu     sync.Mutex
	next   map[string]int
	acked  map[string][]int
	failed []string // "ch i: error", publishes not acknowledged
	sent   int
	// after: publishes sent at or after it count for firstAck.
	after    time.Time
	firstAck time.Time // when the first publish sent after after was acknowledged
}

func (p *foPublisher) run(stop <-chan struct{}, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ch := p.channels[k%len(p.channels)]
		p.mu.Lock()
		p.next[ch]++
		i := p.next[ch]
		p.sent++
		after := p.after
		p.mu.Unlock()
		sentAt := time.Now()
		err := p.sdk.Trigger(ch, "fo", map[string]any{"ch": ch, "i": i})
		p.mu.Lock()
		if err == nil {
			p.acked[ch] = append(p.acked[ch], i)
			if !after.IsZero() && !sentAt.Before(after) && p.firstAck.IsZero() {
				p.firstAck = time.Now()
			}
		} else {
			p.failed = append(p.failed, fmt.Sprintf("%s %d: %v", ch, i, err))
		}
		p.mu.Unlock()
	}
}

func foSessionURLs(nodes []*clusterNode, start int) []string {
	var urls []string
	for k := range len(nodes) {
		n := nodes[(start+k)%len(nodes)]
		urls = append(urls, "ws://"+n.Addr+"/app/app-key?protocol=7&client=go-session&version=1")
	}
	return urls
}

// TestFailoverGo: 12 client.Session clients, a third starting on each node,
// every one subscribed to all 8 channels fo-0..fo-7; two publishers (node 1:
// channels 0,2,4,6; node 2: channels 1,3,5,7) at 50 events/s each, one
// channel after the other, data {"ch":..,"i":N} with N counting per channel;
// node 3 is killed with SIGKILL 1.5 s into the stream, publishing goes on for
// 3 s more. Every session must then deliver, per channel, every acknowledged
// event, with strictly increasing serials and acknowledged events in order.
func TestFailoverGo(t *testing.T) {
	t.Run("kill-stream-leader", func(t *testing.T) { foRun(t, true, foStartGoSessions) })
	t.Run("kill-follower", func(t *testing.T) { foRun(t, false, foStartGoSessions) })
}

// foStarter starts the clients on the nodes, subscribed to every channel
// (or about to be), and returns their logs and a function giving client k's
// handshakes and duplicates dropped so far.
type foStarter func(t *testing.T, nodes []*clusterNode, channels []string) ([]*foClientLog, func(k int) (connects, dups uint64))

// foStartGoSessions starts foSessions client.Session clients, session k
// with the nodes' URLs in turn from node k%3.
func foStartGoSessions(t *testing.T, nodes []*clusterNode, channels []string) ([]*foClientLog, func(k int) (uint64, uint64)) {
	logs := make([]*foClientLog, foSessions)
	sessions := make([]*client.Session, foSessions)
	var readers sync.WaitGroup
	for k := range foSessions {
		start := k % 3
		l := newFoClientLog(fmt.Sprintf("session %d (started on %s)", k, nodes[start].Name), start)
		s := client.NewSession(foSessionURLs(nodes, start), client.SessionOptions{Dial: func(ctx context.Context, url string, opt client.Options) (*client.Conn, error) {
			c, err := client.Dial(ctx, url, opt)
			if err == nil {
				l.note("connected to %s, socket %s", url, c.SocketID())
			} else {
				l.note("dial %s failed: %v", url, err)
			}
			return c, err
		}})
		sessions[k] = s
		logs[k] = l
		for _, ch := range channels {
			s.Subscribe(ch, nil)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ev := range s.Events() {
				now := time.Now()
				switch ev.Event {
				case "fo":
					l.addEvent(ev.Channel, ev.Serial, ev.Data, now)
				case client.EventSubscriptionSucceeded:
					l.mu.Lock()
					l.subsOK[ev.Channel] = true
					l.mu.Unlock()
				case client.EventResumeOK, client.EventResumeFailed:
					l.note("%s %s %s", ev.Event, ev.Channel, ev.Data)
				}
				switch ev.Event {
				case client.EventResumeOK:
					var d resumeData
					_ = json.Unmarshal([]byte(ev.Data), &d)
					l.mu.Lock()
					l.resumed = append(l.resumed, d)
					l.resumeAt = append(l.resumeAt, now)
					l.mu.Unlock()
				case client.EventResumeFailed:
					l.mu.Lock()
					l.failed = append(l.failed, ev.Channel+" "+ev.Data)
					l.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(func() {
		for _, s := range sessions {
			s.Close()
		}
		readers.Wait()
	})

	return logs, func(k int) (uint64, uint64) {
		st := sessions[k].Stats()
		return st.Connects, st.Duplicates
	}
}

// foRun runs the scenario on a fresh cluster; the node killed is the app
// stream's leader (an election while publishing: no event is stored until a
// new leader is elected) or a follower (the stream stays writable: events go
// on being stored while the victim's clients are away and are replayed).
func foRun(t *testing.T, killLeader bool, start foStarter) {
	nodes := startCluster(t, foCluster)
	channels := make([]string, foChannels)
	for c := range channels {
		channels[c] = fmt.Sprintf("fo-%d", c)
	}

	logs, stats := start(t, nodes, channels)

	// Every session subscribed on every channel before the first publish.
	testkit.WaitFor(t, 10*time.Second, func() error {
		ok := 0
		for _, l := range logs {
			l.mu.Lock()
			if len(l.subsOK) == foChannels {
				ok++
			}
			l.mu.Unlock()
		}
		if ok != len(logs) {
			return fmt.Errorf("only %d of %d sessions subscribed to all %d channels", ok, len(logs), foChannels)
		}
		return nil
	})

	// The node to kill is the app stream's leader, so that the kill forces
	// an election while events are published (node 3 if the logs do not
	// tell). The publishers use the two other nodes.
	stream, _ := currentLeaders(nodes)
	leader := slices.IndexFunc(nodes, func(n *clusterNode) bool { return n.Name == stream })
	vi, how := 2, "stream leader unknown"
	switch {
	case leader < 0:
		if killLeader {
			t.Logf("the stream leader is not in the logs: killing %s, maybe a follower", nodes[2].Name)
		}
	case killLeader:
		vi, how = leader, "the stream leader"
	case leader == 2:
		vi, how = 1, "a follower; the leader is "+nodes[leader].Name
	default:
		how = "a follower; the leader is " + nodes[leader].Name
	}
	victim := nodes[vi]
	var others []int
	for k := range nodes {
		if k != vi {
			others = append(others, k)
		}
	}
	t.Logf("victim: %s (%s); publishing through %s and %s", victim.Name, how, nodes[others[0]].Name, nodes[others[1]].Name)

	pubs := make([]*foPublisher, 2)
	for p := range pubs {
		sdk := goSDK(&Herald{Addr: nodes[others[p]].Addr})
		// Short: a publish stalled by an election fails fast, and the outage is
		// measured to about a second.
		sdk.HTTPClient = &http.Client{Timeout: time.Second}
		pub := &foPublisher{sdk: sdk, next: map[string]int{}, acked: map[string][]int{}}
		for c := p; c < foChannels; c += 2 {
			pub.channels = append(pub.channels, channels[c])
		}
		pubs[p] = pub
	}
	stopPub := make(chan struct{})
	var pubWG sync.WaitGroup
	interval := time.Second * time.Duration(len(pubs)) / foRatePerSecond
	for _, p := range pubs {
		pubWG.Add(1)
		go func() { defer pubWG.Done(); p.run(stopPub, interval) }()
	}

	time.Sleep(foBeforeKill)
	killedAt, _, err := victim.kill9()
	if err != nil {
		close(stopPub)
		pubWG.Wait()
		t.Fatal(err)
	}
	for _, p := range pubs {
		p.mu.Lock()
		p.after = killedAt
		p.mu.Unlock()
	}
	// Publishing goes on for foAfterKill, and at least until both
	// publishers have had a publish sent after the kill acknowledged for
	// foAfterRecovery (a stream leader's election stalls publishes), at most
	// foPublishCap after the kill.
	var recovered time.Time // both publishers acknowledged after the kill
	for {
		now := time.Now()
		recovered = time.Time{}
		for _, p := range pubs {
			p.mu.Lock()
			fa := p.firstAck
			p.mu.Unlock()
			if fa.IsZero() {
				recovered = time.Time{}
				break
			}
			if fa.After(recovered) {
				recovered = fa
			}
		}
		if now.Sub(killedAt) >= foAfterKill && !recovered.IsZero() && now.Sub(recovered) >= foAfterRecovery {
			break
		}
		if now.Sub(killedAt) >= foPublishCap {
			t.Errorf("publishing through the surviving nodes not acknowledged again within %v of the kill", foPublishCap)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopPub)
	pubWG.Wait()
	stoppedAt := time.Now()

	acked := map[string][]int{}
	var failed []string
	sent, nAcked := 0, 0
	for _, p := range pubs {
		p.mu.Lock()
		for ch, is := range p.acked {
			acked[ch] = append(acked[ch], is...)
			nAcked += len(is)
		}
		failed = append(failed, p.failed...)
		sent += p.sent
		p.mu.Unlock()
	}
	if nAcked == 0 {
		t.Fatalf("no publish acknowledged (%d sent); failures: %v", sent, failed)
	}

	// Wait until every session delivered every acknowledged event.
	if err := testkit.Poll(foDeliverWait, func() error {
		missing := 0
		for _, l := range logs {
			missing += l.missing(acked)
		}
		if missing > 0 {
			return fmt.Errorf("%d acknowledged deliveries still missing %v after publishing stopped", missing, foDeliverWait)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	allIn := time.Since(stoppedAt)

	var problems []string
	var worst time.Duration
	replayed, resumeOKs, resumeFailed := 0, 0, 0
	var perSession []string
	for k, l := range logs {
		problems = append(problems, l.check(acked)...)
		connects, dups := stats(k)
		l.mu.Lock()
		for _, d := range l.resumed {
			replayed += d.Replayed
		}
		resumeOKs += len(l.resumed)
		resumeFailed += len(l.failed)
		if len(l.failed) > 0 {
			problems = append(problems, fmt.Sprintf("%s: resume_failed %v", l.name, l.failed))
		}
		if l.startOn == vi {
			// Resumed: the first resume_ok after the kill (it comes on the
			// new connection), then the first event read after it.
			var resumedAt, first time.Time
			for _, at := range l.resumeAt {
				if at.After(killedAt) {
					resumedAt = at
					break
				}
			}
			for _, ev := range l.events {
				if !resumedAt.IsZero() && !ev.at.Before(resumedAt) {
					first = ev.at
					break
				}
			}
			if first.IsZero() {
				problems = append(problems, fmt.Sprintf("%s: no resume_ok and event after the kill", l.name))
			} else {
				d := first.Sub(killedAt)
				worst = max(worst, d)
				n := 0
				for _, r := range l.resumed {
					n += r.Replayed
				}
				perSession = append(perSession, fmt.Sprintf("client %d: resume_ok %v, first event %v after the kill, %d resume_ok, %d replayed, connects %d, dup dropped %d",
					k, resumedAt.Sub(killedAt).Round(time.Millisecond), d.Round(time.Millisecond), len(l.resumed), n, connects, dups))
			}
		} else if connects != 1 {
			t.Logf("%s reconnected (connects %d)", l.name, connects)
		}
		l.mu.Unlock()
	}

	t.Logf("published %d events in %v (%d acknowledged, %d failed), %d clients x %d channels",
		sent, stoppedAt.Sub(killedAt.Add(-foBeforeKill)).Round(time.Millisecond), nAcked, len(failed), len(logs), foChannels)
	for _, f := range foShort2(failed) {
		t.Logf("  failed publish: %s", f)
	}
	if !recovered.IsZero() {
		t.Logf("kill -9 %s -> publishes acknowledged again on both surviving nodes: %v", victim.Name, recovered.Sub(killedAt).Round(time.Millisecond))
	}
	t.Logf("kill -9 %s -> every client that was on it delivering again: %v", victim.Name, worst.Round(time.Millisecond))
	for _, s := range perSession {
		t.Logf("  %s", s)
	}
	t.Logf("resume_ok: %d, events replayed: %d, resume_failed: %d; all acknowledged events in %v after publishing stopped",
		resumeOKs, replayed, resumeFailed, allIn.Round(time.Millisecond))

	slices.Sort(problems)
	if len(problems) > 0 {
		if len(problems) > 50 {
			problems = append(problems[:50], fmt.Sprintf("... and %d more", len(problems)-50))
		}
		t.Fatalf("failover broke the invariant:\n%s", strings.Join(problems, "\n"))
	}
}

func foShort2(s []string) []string {
	if len(s) > 10 {
		return append(s[:10:10], fmt.Sprintf("... and %d more", len(s)-10))
	}
	return s
}

// foJSClients is the number of pusher-js clients of TestFailoverJS (one node
// process); client k starts on node k%3.
const foJSClients = 6
