// A pusher-js subscriber driven by tests/e2e/nats_pusherjs_test.go (not a
// node test file: node's test runner only picks up *.test.mjs here).
//
// Env: HERALD_HOST / HERALD_PORT (the Herald node), CHANNELS (comma-separated
// channel names), EXPECT (how many events to wait for), TIMEOUT_MS (default
// 20000).
//
// It connects pusher-js, subscribes to every channel and prints `READY` once
// all subscriptions succeeded. Then it prints one JSON line per event
// received on those channels, as pusher-js decoded it:
// {"channel":..,"event":..,"data":..}, and exits 0 after EXPECT events, or 1
// (with a line on stderr) if they did not all arrive within TIMEOUT_MS.
// pusher: / pusher_internal: protocol events are not printed.

import { Client, closeAll, withTimeout } from './helpers.mjs';

const channels = (process.env.CHANNELS || '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');
const expect = Number(process.env.EXPECT);
const timeoutMs = Number(process.env.TIMEOUT_MS || 20000);

function fail(msg) {
  process.stderr.write(`nats-subscriber: ${msg}\n`);
  closeAll();
  process.exit(1);
}

if (channels.length === 0) fail('CHANNELS is empty');
if (!Number.isInteger(expect) || expect <= 0) fail(`EXPECT must be a positive integer, got ${process.env.EXPECT}`);

// The overall deadline also covers connecting and subscribing.
const deadline = setTimeout(() => fail(`timed out after ${timeoutMs} ms (${received} of ${expect} events)`), timeoutMs);

let received = 0;
let done = false;
const wanted = new Set(channels);

const c = new Client();
c.pusher.connection.bind('message', (m) => {
  if (done || !wanted.has(m.channel) || /^pusher(_internal)?:/.test(m.event)) return;
  received++;
  process.stdout.write(JSON.stringify({ channel: m.channel, event: m.event, data: m.data }) + '\n');
  if (received === expect) {
    done = true;
    clearTimeout(deadline);
    c.close();
    // Exit once the last line is written.
    process.stdout.write('', () => process.exit(0));
  }
});

try {
  await c.connected(timeoutMs);
  await withTimeout(Promise.all(channels.map((ch) => c.subscribe(ch, timeoutMs))), timeoutMs, 'all subscriptions');
} catch (e) {
  fail(e.message);
}
process.stdout.write('READY\n');
