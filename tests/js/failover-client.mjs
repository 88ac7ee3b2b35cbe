// Clients of the failover test (tests/e2e/failover_test.go, TestFailoverJS):
// stock pusher-js 8.6 wrapped with withResume, one Pusher instance per
// client, subscribed to every channel. Not a node --test file: the Go test
// runs it with `node tests/js/failover-client.mjs` and reads its stdout.
//
// Environment:
//   FO_NODES     host:port of every node, comma-separated
//   FO_STARTS    the node index each client starts on, comma-separated (one
//                entry per client)
//   FO_CHANNELS  the channels, comma-separated
//
// pusher-js has one host per instance (config.wsHost/wsPort, read each time
// the connection manager builds its strategy). Failover: when a client's
// connection leaves the "connected" state, or becomes "unavailable" while
// trying, the client points pusher.config at the next node in turn and calls
// pusher.connection.switchCluster(key): that rebuilds the strategy from the
// config and retries at once (retryIn(0) aborts the attempt in progress).
// The same connection manager carries on, so withResume's hooks stay, and
// every channel resubscribes with herald_resume. pusher-js itself notices a
// closed socket at once but stays "connected" until its own retry timer
// (retryIn(1000)) fires: a client's failover starts about 1 s after the
// kill. Not shortened here, since that is what stock pusher-js does (and
// calling retryIn from outside would leave its pending timer armed).
//
// Output, one JSON object a line:
//   {"k":"sub","c":N,"ch":C}                      subscription_succeeded
//   {"k":"ev","c":N,"ch":C,"serial":S,"data":D}   event "fo" delivered
//   {"k":"ok","c":N,"ch":C,"data":D}              herald:resume_ok
//   {"k":"failed","c":N,"ch":C,"data":D}          herald:resume_failed
//   {"k":"connected","c":N,"node":I}              a handshake completed
//   {"k":"error","c":N,"code":K}                  a connection-level pusher:error
//                                                 (4200: the node drains; 4100: over capacity)
//   {"k":"stats","c":N,"connects":K,"duplicates":D}  when stdin ends
// It exits when stdin ends (the Go test closes it) or on SIGTERM.

import Pusher from 'pusher-js';
import { withResume, resumeState } from '../../clients/js/index.mjs';

const nodes = (process.env.FO_NODES || '').split(',').filter(Boolean);
const starts = (process.env.FO_STARTS || '').split(',').filter(Boolean).map(Number);
const channels = (process.env.FO_CHANNELS || '').split(',').filter(Boolean);
if (nodes.length === 0 || starts.length === 0 || channels.length === 0) {
  console.error('FO_NODES, FO_STARTS and FO_CHANNELS are required');
  process.exit(2);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function hostPort(i) {
  const addr = nodes[i % nodes.length];
  const at = addr.lastIndexOf(':');
  return { host: addr.slice(0, at), port: Number(addr.slice(at + 1)) };
}

const clients = starts.map((start, c) => {
  let node = start % nodes.length;
  let connects = 0;
  const { host, port } = hostPort(node);
  const pusher = withResume(new Pusher('app-key', {
    cluster: 'mt1',
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    // A dead node is left for the next one at once; a failed attempt on a
    // live one is retried sooner than the default 10 s.
    unavailableTimeout: 2000,
  }));

  const failover = () => {
    node = (node + 1) % nodes.length;
    const next = hostPort(node);
    pusher.config.wsHost = next.host;
    pusher.config.wsPort = next.port;
    pusher.connection.switchCluster(pusher.key);
  };
  pusher.connection.bind('state_change', ({ previous, current }) => {
    if (current === 'connected') {
      connects++;
      out({ k: 'connected', c, node });
      return;
    }
    if ((previous === 'connected' && current !== 'disconnected') || current === 'unavailable') {
      // Deferred: switchCluster from inside the state machine's own
      // callback would re-enter it.
      setTimeout(failover, 0);
    }
  });

  pusher.connection.bind('error', (err) => {
    const code = err && err.error && err.error.data ? err.error.data.code : null;
    out({ k: 'error', c, code: code ?? null });
  });

  for (const ch of channels) {
    const channel = pusher.subscribe(ch);
    channel.bind('pusher:subscription_succeeded', () => out({ k: 'sub', c, ch }));
    channel.bind('fo', (data) => {
      out({ k: 'ev', c, ch, serial: resumeState(pusher).lastSerial(ch) ?? 0, data });
    });
    channel.bind('herald:resume_ok', (data) => out({ k: 'ok', c, ch, data }));
    channel.bind('herald:resume_failed', (data) => out({ k: 'failed', c, ch, data }));
  }
  return { pusher, stats: () => ({ connects, duplicates: resumeState(pusher).stats.duplicates }) };
});

function finish() {
  clients.forEach(({ pusher, stats }, c) => {
    out({ k: 'stats', c, ...stats() });
    pusher.disconnect();
  });
  process.stdout.write('', () => process.exit(0));
}

process.stdin.on('end', finish);
process.stdin.resume();
process.on('SIGTERM', finish);
