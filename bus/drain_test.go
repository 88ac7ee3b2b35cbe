package bus

import (
	"fmt"
	"testing"
	"time"

	"herald/internal/testkit"
)

// A node that steps down hands over every stream it leads while it is
// still up: another node leads it at once and publishes go on; Close then
// goes through lame duck and hands over the meta leadership too.
func TestClusterStepDown(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, clusterConfigs(t, 3))
	checkClusterStreams(t, nodes[0].bus)
	stream := StreamName("app1")
	li := nodeByName(t, nodes, streamLeader(t, nodes[0].bus, stream))
	leader := nodes[li].bus
	// The cache stream is led somewhere too; count what this node leads.
	n, err := leader.StepDown(ctxT(t))
	if err != nil {
		t.Fatalf("StepDown: %v", err)
	}
	if n < 1 {
		t.Fatalf("StepDown of %s, the leader of %s, stepped down from %d leaderships", nodes[li].cfg.ServerName, stream, n)
	}
	other := nodes[(li+1)%3].bus
	if nl := streamLeader(t, other, stream); nl == nodes[li].cfg.ServerName {
		t.Fatalf("%s still leads %s after StepDown", nl, stream)
	}
	publish(t, leader, "app1", "after-stepdown", `{"event":"e"}`, "") // through the old leader: routed to the new one
	if again, err := leader.StepDown(ctxT(t)); err != nil || again != 0 {
		t.Fatalf("second StepDown: %d, %v; want nothing left to hand over", again, err)
	}

	// The meta leader's Close hands the meta group over (lame duck).
	meta := other.ClusterInfo().MetaLeader
	mi := nodeByName(t, nodes, meta)
	took := nodes[mi].close(t)
	t.Logf("meta leader %s closed through lame duck in %v", meta, took)
	rest := nodes[(mi+1)%3].bus
	testkit.WaitFor(t, 5*time.Second, func() error {
		if ml := rest.ClusterInfo().MetaLeader; ml == "" || ml == meta {
			return fmt.Errorf("meta leader %q after %s closed", ml, meta)
		}
		return nil
	})
	publish(t, rest, "app1", "after-close", `{"event":"e"}`, "")
}
