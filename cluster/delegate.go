package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Wire formats (all integers unsigned).
//
// A message (gossip or reliable), as memberlist carries it:
//
//	kind u8 | nameLen u8 | name [nameLen] | payload
//
// name is the sender's NodeName: memberlist does not say who sent a user
// message. Kind 0 is reserved.
//
// A push/pull state (LocalState / MergeRemoteState):
//
//	version u8 (=1) | nameLen u8 | name | sections...
//	section: kind u8 | len uvarint | state [len]
//
// One section per registered handler whose LocalState was not empty.
// Receivers skip kinds they have no handler for and drop a state whose
// lengths run past its end.
const stateVersion = 1

// Size limits.
const (
	// GossipBudget is the largest message (header included) that goes by
	// gossip. memberlist offers about 1,200 bytes per UDP packet with the
	// default 1,400-byte UDPBufferSize (less with a long cluster-name
	// label or encryption); a queued message larger than what a packet
	// offers would never be sent, so anything over this bound goes by
	// reliable send instead. See MaxGossipPayload for the payload share.
	GossipBudget = 1000
	// MaxMessageSize bounds a reliable message (memberlist's receivers
	// refuse user messages over 20 MiB).
	MaxMessageSize = 16 << 20
	// maxGossipQueued bounds the gossip queue; past it the oldest
	// messages are pruned (anti-entropy repairs what they carried).
	maxGossipQueued = 4096
	// reliableQueue bounds pending reliable sends of large broadcasts;
	// past it sends are dropped and counted.
	reliableQueue = 1024
	// reliableWorkers send large broadcasts (one TCP dial per target).
	reliableWorkers = 4
)

// Errors from SendTo.
var (
	ErrUnknownNode = errors.New("cluster: no such live member")
	ErrTooLarge    = errors.New("cluster: message too large")
	ErrStopped     = errors.New("cluster: node is shut down")
)

// handlerSlot boxes a Handler for atomic storage.
type handlerSlot struct{ h Handler }

// Register installs h for messages and state sections of kind (1..255).
// It panics on kind 0, a nil h, or a kind registered twice (programming
// errors). Register it right after Start: the node then exchanges state
// with every live member in the background, so h's MergeRemoteState sees
// the others' state (join = true) even though Start's own join ran
// before h existed; later members' state arrives as they join.
func (c *Cluster) Register(kind byte, h Handler) {
	if kind == 0 || h == nil {
		panic("cluster: Register needs a kind in 1..255 and a non-nil Handler")
	}
	if !c.handlers[kind].CompareAndSwap(nil, &handlerSlot{h}) {
		panic(fmt.Sprintf("cluster: kind %d registered twice", kind))
	}
	select {
	case c.syncReq <- struct{}{}:
	default:
	}
}

func (c *Cluster) handler(kind byte) Handler {
	if s := c.handlers[kind].Load(); s != nil {
		return s.h
	}
	return nil
}

// MaxGossipPayload is the largest Broadcast payload that goes by gossip:
// GossipBudget less the message header (2 bytes and this node's name).
func (c *Cluster) MaxGossipPayload() int { return GossipBudget - 2 - len(c.name) }

// frame builds a message of kind carrying payload.
func (c *Cluster) frame(kind byte, payload []byte) []byte {
	b := make([]byte, 0, 2+len(c.name)+len(payload))
	b = append(b, kind, byte(len(c.name)))
	b = append(b, c.name...)
	return append(b, payload...)
}

// Broadcast sends msg to every other live member under kind. It never
// blocks on the network, and the node itself does not receive it.
//
// A message that fits MaxGossipPayload is gossiped: UDP, sent 4 ×
// ceil(log10(N+1)) times in all to random members, so a member may
// receive it more than once (dedupe or make it idempotent) and, rarely,
// not at all (pair gossip with a LocalState that repairs it). When key is not empty, a newer
// message with the same kind and key replaces an older one still queued.
//
// A larger message (up to MaxMessageSize) goes by reliable send to each
// other member, from background workers: once per member, but with no
// ordering against gossip of the same key. When the workers' queue is
// full the send is dropped and counted in Stats.
//
// msg is copied; the caller keeps it.
func (c *Cluster) Broadcast(kind byte, key string, msg []byte) {
	if c.stopped.Load() {
		return
	}
	v := c.view.Load()
	if len(v.members) <= 1 {
		return // nobody to tell: joiners get state by push/pull
	}
	f := c.frame(kind, msg)
	if len(f) <= GossipBudget {
		var b memberlist.Broadcast = &uniqueBroadcast{msg: f}
		if key != "" {
			b = &namedBroadcast{name: string([]byte{kind}) + key, msg: f}
		}
		c.queue.QueueBroadcast(b)
		if n := c.queue.NumQueued(); n > maxGossipQueued {
			c.queue.Prune(maxGossipQueued)
			c.gossipPruned.Add(uint64(n - maxGossipQueued))
		}
		return
	}
	if len(f) > MaxMessageSize {
		c.log.Error("cluster: broadcast too large, dropped", "kind", kind, "bytes", len(f), "limit", MaxMessageSize)
		return
	}
	for i, n := range v.nodes {
		if v.names[i] == c.name {
			continue
		}
		select {
		case c.reliable <- reliableJob{node: n, msg: f}:
		default:
			c.reliableDropped.Add(1)
			c.log.Warn("cluster: reliable send queue full, dropped", "kind", kind, "to", n.Name)
		}
	}
}

// SendTo sends msg under kind to the live member named node, reliably
// (one TCP connection), and returns once it was written. It blocks for up
// to the preset's TCP timeout (1 s local, 10 s lan). Sending to this node
// itself calls the local handler directly.
func (c *Cluster) SendTo(node string, kind byte, msg []byte) error {
	if c.stopped.Load() {
		return ErrStopped
	}
	f := c.frame(kind, msg)
	if len(f) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(f), MaxMessageSize)
	}
	if node == c.name {
		c.deliver(f)
		return nil
	}
	v := c.view.Load()
	i := v.find(node)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	n := v.nodes[i]
	if err := c.ml.SendReliable(&n, f); err != nil {
		return fmt.Errorf("cluster: send to %q: %w", node, err)
	}
	return nil
}

// reliableJob is one large broadcast to one member.
type reliableJob struct {
	node memberlist.Node
	msg  []byte // shared by every target; never modified
}

// sendReliable runs one worker of large broadcasts until Shutdown.
func (c *Cluster) sendReliable() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case j := <-c.reliable:
			if err := c.ml.SendReliable(&j.node, j.msg); err != nil {
				c.log.Debug("cluster: reliable broadcast failed", "to", j.node.Name, "err", err)
			}
		}
	}
}

// deliver hands a received message to its kind's handler.
func (c *Cluster) deliver(b []byte) {
	if len(b) < 2 || len(b) < 2+int(b[1]) {
		c.log.Debug("cluster: dropped malformed message", "bytes", len(b))
		return
	}
	kind, n := b[0], int(b[1])
	h := c.handler(kind)
	if h == nil {
		c.log.Debug("cluster: no handler for message", "kind", kind)
		return
	}
	h.NotifyMsg(string(b[2:2+n]), slices.Clone(b[2+n:]))
}

// delegate is the memberlist.Delegate. memberlist may call every method
// concurrently, from its own goroutines, also during Create.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	m := *d.c.meta.Load()
	if len(m) > limit {
		return nil // Start and SetMeta check MetaMaxSize; not reached
	}
	return m
}

func (d delegate) NotifyMsg(b []byte) { d.c.deliver(b) }

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(join bool) []byte {
	c := d.c
	b := []byte{stateVersion, byte(len(c.name))}
	b = append(b, c.name...)
	for k := 1; k < len(c.handlers); k++ {
		h := c.handler(byte(k))
		if h == nil {
			continue
		}
		st := h.LocalState(join)
		if len(st) == 0 {
			continue
		}
		b = append(b, byte(k))
		b = binary.AppendUvarint(b, uint64(len(st)))
		b = append(b, st...)
	}
	if len(b) == 2+len(c.name) {
		return nil
	}
	return b
}

func (d delegate) MergeRemoteState(b []byte, join bool) {
	from, sections, err := parseState(b)
	if err != nil {
		d.c.log.Warn("cluster: dropped remote state", "err", err, "bytes", len(b))
		return
	}
	for _, s := range sections {
		if h := d.c.handler(s.kind); h != nil {
			h.MergeRemoteState(from, slices.Clone(s.state), join)
		}
	}
}

// stateSection is one handler's share of a push/pull state; state aliases
// the parsed buffer.
type stateSection struct {
	kind  byte
	state []byte
}

var errBadState = errors.New("cluster: malformed state")

// parseState splits a push/pull state into its sender and sections,
// checking every length against the bytes present before using it.
func parseState(b []byte) (string, []stateSection, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("%w: %d bytes", errBadState, len(b))
	}
	if b[0] != stateVersion {
		return "", nil, fmt.Errorf("%w: version %d", errBadState, b[0])
	}
	n := int(b[1])
	if len(b) < 2+n {
		return "", nil, fmt.Errorf("%w: name runs past the end", errBadState)
	}
	from := string(b[2 : 2+n])
	b = b[2+n:]
	var out []stateSection
	for len(b) > 0 {
		kind := b[0]
		l, w := binary.Uvarint(b[1:])
		if w <= 0 || l > uint64(len(b)-1-w) {
			return "", nil, fmt.Errorf("%w: section %d length runs past the end", errBadState, kind)
		}
		start := 1 + w
		out = append(out, stateSection{kind: kind, state: b[start : start+int(l)]})
		b = b[start+int(l):]
	}
	return from, out, nil
}

// namedBroadcast is a gossip message that replaces a queued one with the
// same name (kind byte + key).
type namedBroadcast struct {
	name string
	msg  []byte
}

func (b *namedBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *namedBroadcast) Message() []byte                       { return b.msg }
func (b *namedBroadcast) Finished()                             {}
func (b *namedBroadcast) Name() string                          { return b.name }

// uniqueBroadcast is a gossip message that replaces nothing.
type uniqueBroadcast struct{ msg []byte }

func (b *uniqueBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *uniqueBroadcast) Message() []byte                       { return b.msg }
func (b *uniqueBroadcast) Finished()                             {}
func (b *uniqueBroadcast) UniqueBroadcast()                      {}
