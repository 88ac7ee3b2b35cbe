package testkit

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"herald/configs"
)

// Layout is where the nodes of an n-node test cluster listen on loopback:
// for node i, Client[i] (WebSocket, REST and /readyz), Gossip[i]
// (memberlist, TCP and UDP) and Routes[i] (NATS routes), every port from
// FreePorts. A node started again after a stop or a kill keeps its
// addresses. Every node lists every Gossip address as a seed and every
// route, its own included.
type Layout struct {
	Names  []string // prefix + "1" .. prefix + n
	Client []string
	Gossip []string
	Routes []string
}

// NewLayout lays out n nodes named prefix1..prefixN.
func NewLayout(t testing.TB, n int, prefix string) *Layout {
	t.Helper()
	ports := FreePorts(t, 3*n)
	l := &Layout{}
	for i := range n {
		l.Names = append(l.Names, fmt.Sprintf("%s%d", prefix, i+1))
		l.Client = append(l.Client, LoopbackAddr(ports[i]))
		l.Gossip = append(l.Gossip, LoopbackAddr(ports[n+i]))
		l.Routes = append(l.Routes, LoopbackAddr(ports[2*n+i]))
	}
	return l
}

// Cluster is node i's cluster section: the cluster's name, the node's name,
// its memberlist bind and route listener, every seed and every route, and
// the memberlist preset (configs.PresetLocal or configs.PresetLAN).
func (l *Layout) Cluster(i int, name, preset string) configs.Cluster {
	return configs.Cluster{
		Name:        name,
		NodeName:    l.Names[i],
		Bind:        l.Gossip[i],
		Seeds:       l.Gossip,
		Routes:      l.Routes,
		RouteListen: l.Routes[i],
		Preset:      preset,
	}
}

// StartAll calls start(0) .. start(n-1) at once, each on its own goroutine,
// and returns when all have returned, with their errors joined (nil if none
// failed). Clustered nodes start this way: none is ready before a majority
// of them runs (JetStream elects its meta leader first).
func StartAll(n int, start func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = start(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
