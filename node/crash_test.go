package node

// crashForTest stops the node the way a crash looks to the others: the
// memberlist agent goes silent without leaving (the others must detect the
// failure), and the NATS server stops without draining. Sockets are then
// dropped; their presence leaves cannot reach anyone any more.
func (n *Node) crashForTest() {
	n.stopOnce.Do(func() {
		defer close(n.done) // Stop, called again at cleanup, returns at once
		n.lifecycle.Close() // a crashed node decides nothing more
		n.ledger.Close()
		_ = n.cl.Shutdown()
		n.gossip.Close()
		n.bus.Server().Shutdown()
		_ = n.http.Shutdown(ctxBackground())
		n.queries.Stop()
		n.gw.Close()
		if n.webhooks != nil { // its lanes die with the node; their batches are redelivered elsewhere
			n.webhooks.Close()
		}
		_ = n.bus.Close()
		_ = n.ln.Close()
		n.stopConsole()     // its goroutines die with the process too
		if n.admin != nil { // a crashed process's listeners are gone too
			_ = n.admin.Close(ctxBackground())
		}
	})
}
