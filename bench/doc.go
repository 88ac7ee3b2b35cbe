// Package bench is Herald's load generator: a client of the Pusher Channels
// protocol that needs only a server URL, an app id, key and secret. Of
// Herald's packages it imports only client, itself standalone.
//
// Scenarios (Run with Config.Scenario):
//
//   - connect: open N sockets at a rate or as fast as possible (within
//     Config.Inflight attempts at a time): connects/s, failures by reason,
//     dial → pusher:connection_established percentiles.
//   - idle: hold N sockets subscribed over C channels for Config.Hold: the
//     server's RSS per connection (VmRSS of Config.ServerPID before
//     connecting and after the hold), the kernel's Slab per socket
//     (/proc/meminfo, system-wide), drops.
//   - fanout: N subscribers over C channels, M events published through the
//     signed REST API or Herald's NATS API (requests or fire-and-forget,
//     natspub.go): deliveries/s, exact loss and duplicates, publish →
//     receive percentiles.
//   - publish: fanout sized so that publishing is the bound (1,000 channels
//     of 10 subscribers, 8 concurrent signed REST publishers, each sending
//     its next event when the last one was answered): events_per_s
//     accepted (answered 200) and deliveries_per_s.
//   - storm: drop every socket at once (RST) and redial them all: time until
//     all are back (established and resubscribed), failures, the attempts
//     refused with 4100 by admission control (gateway.accept_rate; redialed
//     after 1-1.5 s, as pusher-js does, without using up Config.Retries),
//     and a bystander socket's pusher:ping round trips before and during
//     the storm (bystander.go).
//   - presence: a few subscribers on one presence channel (one per URL);
//     members join and leave on the first URL one at a time: time until
//     member_added / member_removed reaches the subscribers on the other
//     nodes; optionally SIGKILL a node (Config.KillPID) and time
//     member_removed for its members at the survivors. It connects from
//     the parent with a client.Conn per socket, not from the workers
//     (presence.go).
//   - failover: subscribers over C channels on a cluster's nodes, M events
//     published over REST to the first URL's node while Config.KillPID (not
//     that node) is SIGKILLed Config.KillAfter into publishing; dropped
//     clients reconnect to the next URL and resubscribe with herald_resume:
//     lost and duplicated events (against the publishes answered 200), time
//     until every dropped client resumed, replay throughput. A
//     client.Session per subscriber in the parent (failover.go), so the
//     resume measured is the one Go apps use; results under
//     results.failover.
//
// # Clusters
//
// Config.URL may list several servers, separated by commas (a cluster's
// nodes): socket i connects to URL i % len, in every worker, and REST
// publishes go to the first URL's host unless Config.RESTURL is set (for
// fanout and publish it may list several, one per publisher in turn).
// Config.ServerPIDs adds server processes to Config.ServerPID: the report's
// server CPU and RSS are their sums, with each one's under server.nodes.
//
// # Processes
//
// The parent (Run) starts Config.Workers copies of its own binary with
// WorkerEnv=1 (see RunWorker) and talks to them in JSON lines over their
// stdin and stdout (wire.go). Each worker holds at most MaxPerWorker sockets,
// below this machine's open-files hard limit, and binds its own loopback
// source addresses (127.0.0.2, 127.0.0.3, …, at most MaxPerSource sockets
// each) so ephemeral ports do not run out. The parent publishes, aggregates
// the workers' results and prints the report. Workers die with the parent
// (Pdeathsig), when their stdin closes, and at a hard deadline; Run always
// waits for them.
//
// # Client design
//
// The mass-socket scenarios (connect, idle, fanout, publish, storm) have their own
// client, for a footprint package client's goroutine per socket cannot
// have: a worker runs one epoll loop per core over golang.org/x/sys/unix
// (poller.go): non-blocking connect, upgrade, subscribe and reads all happen
// in that loop, with no goroutine per socket. Frames are parsed from the
// read buffer in place (frame.go); a published event's data carries its
// send time and sequence number ({"t":<unix ns>,"i":<seq>,"p":"x…"}), which
// a small scanner extracts without allocating. Each subscriber keeps one bit
// per event it must receive, so lost and duplicate deliveries are counted
// exactly. The client's own CPU (all workers and the parent) is reported
// next to the server's, so a reader can tell which side was the bottleneck.
//
// Only loopback targets are accepted unless Config.AllowRemote is set.
// TLS (wss://) is not supported: TLS sockets cannot be driven from epoll.
package bench
