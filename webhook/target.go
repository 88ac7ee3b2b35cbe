package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"sort"
	"sync"

	"herald/app"
)

// TargetID is the id of one webhook receiver of an app: the first 8 bytes
// of SHA-256(app id, NUL, url) in hex. It is stable across reloads and
// reorderings of apps[].webhooks and safe in a NATS subject token and a
// consumer name. Two webhooks of an app with the same url are one target:
// it gets each event once (the first entry's headers are used).
func TargetID(appID, url string) string {
	h := sha256.New()
	h.Write([]byte(appID))
	h.Write([]byte{0})
	h.Write([]byte(url))
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// partition is the outbox partition of a channel's events: one channel's
// events always share one, so they are delivered in order.
func partition(channel string, parts int) int {
	h := fnv.New32a()
	h.Write([]byte(channel))
	return int(h.Sum32() % uint32(parts))
}

// target is one webhook receiver as the current app table has it.
type target struct {
	app     string
	id      string
	url     string
	headers map[string]string
}

func targetKey(appID, id string) string { return appID + "/" + id }

// targets is the set of receivers of one app table, built once per table.
type targets struct {
	table *app.Table
	byKey map[string]*target
	list  []*target // sorted by app, then id
}

func buildTargets(t *app.Table) *targets {
	ts := &targets{table: t, byKey: make(map[string]*target)}
	for _, a := range t.All() {
		for i := range a.Webhooks {
			w := &a.Webhooks[i]
			id := TargetID(a.ID, w.URL)
			k := targetKey(a.ID, id)
			if _, ok := ts.byKey[k]; ok {
				continue
			}
			tg := &target{app: a.ID, id: id, url: w.URL, headers: w.Headers}
			ts.byKey[k] = tg
			ts.list = append(ts.list, tg)
		}
	}
	sort.Slice(ts.list, func(i, j int) bool {
		if ts.list[i].app != ts.list[j].app {
			return ts.list[i].app < ts.list[j].app
		}
		return ts.list[i].id < ts.list[j].id
	})
	return ts
}

// targetCache rebuilds the target set when the registry's table changes.
type targetCache struct {
	apps *app.Registry
	mu   sync.Mutex
	cur  *targets
}

// get returns the targets of the registry's current table.
func (c *targetCache) get() *targets {
	t := c.apps.Table()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || c.cur.table != t {
		c.cur = buildTargets(t)
	}
	return c.cur
}

// wanted returns the targets of a that want events of kind on channel,
// each once.
func wanted(a *app.App, kind, channel string, buf []string) []string {
	buf = buf[:0]
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		if !w.Wants(kind, channel) {
			continue
		}
		id := TargetID(a.ID, w.URL)
		dup := false
		for _, b := range buf {
			dup = dup || b == id
		}
		if !dup {
			buf = append(buf, id)
		}
	}
	return buf
}
