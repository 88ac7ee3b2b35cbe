package cluster

import (
	"fmt"
	"testing"
	"time"

	"herald/internal/testkit"
)

// A draining node stays a member but owns nothing, on every node: the
// channels it owned move to the others, the rest stay where they were; when
// every member drains, ownership falls back to all of them.
func TestDrainingNodeOwnsNothing(t *testing.T) {
	nodes := startN(t, 3, nil)
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("ch-%d", i)
	}
	before := map[string]string{}
	for _, k := range keys {
		before[k] = nodes[0].Owner("app", k)
	}
	if err := nodes[2].Drain(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Drain(); err != nil { // again: nothing more
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		for _, c := range nodes {
			for _, k := range keys {
				if o := c.Owner("app", k); o == "n2" {
					return fmt.Errorf("%s still sees n2 own %s", c.LocalName(), k)
				}
			}
		}
		return nil
	})
	moved := 0
	for _, k := range keys {
		o := nodes[1].Owner("app", k)
		if before[k] != "n2" && o != before[k] {
			t.Errorf("%s moved from %s to %s, though its owner is not draining", k, before[k], o)
		}
		if before[k] == "n2" {
			moved++
		}
		if got := nodes[0].Owner("app", k); got != o {
			t.Errorf("n0 and n1 disagree on %s: %s, %s", k, got, o)
		}
	}
	if moved == 0 {
		t.Fatal("n2 owned none of 300 keys before draining: the test proves nothing")
	}
	waitMembers(t, time.Second, nodes, "n0", "n1", "n2")
	for _, m := range nodes[0].Members() {
		if m.Meta.Draining != (m.Name == "n2") {
			t.Errorf("member %s: draining %v", m.Name, m.Meta.Draining)
		}
		if m.Meta.Boot == 0 || m.Meta.HTTP == "" {
			t.Errorf("member %s lost its meta: %+v", m.Name, m.Meta)
		}
	}

	// All draining: every member owns again (someone must decide).
	if err := nodes[0].Drain(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Drain(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, func() error {
		for _, k := range keys {
			if o := nodes[0].Owner("app", k); o != before[k] {
				return fmt.Errorf("all draining: %s owned by %s, want %s", k, o, before[k])
			}
		}
		return nil
	})
}
