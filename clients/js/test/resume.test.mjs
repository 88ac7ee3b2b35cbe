// withResume against a real Herald (HERALD_HOST/HERALD_PORT, started by
// `go test ./tests/e2e/ -run TestResumeJS` with a replay window of WINDOW
// events per channel): the connection is cut by a proxy, events are
// published with the `pusher` server SDK while the client is away, and the
// client gets every event exactly once, in order, after it reconnects.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { resumeState } from '../index.mjs';
import {
  CutProxy,
  HOST,
  PORT,
  RECONNECT_MS,
  SKIP_WITHOUT_HERALD,
  TEST_TIMEOUT_MS,
  WINDOW,
  connected,
  record,
  resumingClient,
  serverSDK,
  subscribed,
  uniq,
  waitUntil,
} from './helpers.mjs';

const opts = { timeout: TEST_TIMEOUT_MS, skip: SKIP_WITHOUT_HERALD };

/** A proxy to Herald and a resuming client behind it, both closed after t. */
async function clientBehindProxy(t, resumeOptions) {
  const proxy = await new CutProxy(HOST, PORT).listen();
  const pusher = resumingClient(proxy.port, resumeOptions);
  t.after(async () => {
    pusher.disconnect();
    await proxy.close();
  });
  await connected(pusher);
  return { proxy, pusher };
}

/** Publishes events n = from..to on channel, one after the other. */
async function publish(sdk, channel, from, to, event = 'tick') {
  for (let n = from; n <= to; n++) {
    await sdk.trigger(channel, event, { n });
  }
}

const numbers = (got, event = 'tick') => got.filter((e) => e.event === event).map((e) => e.data.n);

const describe = (pusher, got) => () =>
  `events ${JSON.stringify(got)}, state ${pusher.connection.state}, resume ${JSON.stringify(resumeState(pusher).stats)}`;

/** Cuts the connection and waits until pusher-js has noticed. */
async function cut(proxy, pusher) {
  proxy.cut();
  await waitUntil(() => pusher.connection.state !== 'connected' || undefined, 'pusher-js to notice the cut');
}

test('every event exactly once, in order, across a cut connection', opts, async (t) => {
  const sdk = serverSDK();
  const { proxy, pusher } = await clientBehindProxy(t);
  const names = [uniq('resume-a'), uniq('resume-b')];
  const channels = names.map((n) => pusher.subscribe(n));
  const got = channels.map(record);
  await Promise.all(channels.map((c) => subscribed(c)));

  for (const name of names) await publish(sdk, name, 1, 2);
  await waitUntil(() => got.every((g) => g.length === 2), describe(pusher, got));
  for (const name of names) {
    assert.ok(resumeState(pusher).lastSerial(name) > 0, `events on ${name} carry serials`);
  }

  await cut(proxy, pusher);
  for (const name of names) await publish(sdk, name, 3, 4); // missed: both channels
  proxy.restore();
  await connected(pusher, RECONNECT_MS);

  await waitUntil(() => got.every((g) => numbers(g).length >= 4), describe(pusher, got), RECONNECT_MS);
  for (const name of names) await publish(sdk, name, 5, 5); // live again
  await waitUntil(() => got.every((g) => numbers(g).length >= 5), describe(pusher, got));

  for (const g of got) {
    assert.deepEqual(numbers(g), [1, 2, 3, 4, 5]);
    assert.ok(g.some((e) => e.event === 'herald:resume_ok'), 'the resume was reported');
  }
  assert.equal(resumeState(pusher).stats.resumed, 2);
  assert.equal(resumeState(pusher).stats.resumeFailed, 0);
});

test('pusher.disconnect() then connect() resumes too', opts, async (t) => {
  const sdk = serverSDK();
  const { pusher } = await clientBehindProxy(t);
  const name = uniq('resume-dc');
  const ch = pusher.subscribe(name);
  const got = record(ch);
  await subscribed(ch);
  await publish(sdk, name, 1, 1);
  await waitUntil(() => numbers(got).length === 1, describe(pusher, got));

  pusher.disconnect();
  await publish(sdk, name, 2, 3);
  pusher.connect();
  await connected(pusher);
  await waitUntil(() => numbers(got).length === 3, describe(pusher, got), RECONNECT_MS);
  await publish(sdk, name, 4, 4);
  await waitUntil(() => numbers(got).length === 4, describe(pusher, got));
  assert.deepEqual(numbers(got), [1, 2, 3, 4]);
});

test(`a channel that missed more than the window (${WINDOW} events) reports resume_failed`, opts, async (t) => {
  const sdk = serverSDK();
  const failed = [];
  const { proxy, pusher } = await clientBehindProxy(t, { onResumeFailed: (ch, d) => failed.push([ch, d]) });
  const name = uniq('resume-window');
  const ch = pusher.subscribe(name);
  const got = record(ch);
  await subscribed(ch);
  await publish(sdk, name, 1, 1);
  await waitUntil(() => numbers(got).length === 1, describe(pusher, got));
  const before = resumeState(pusher).lastSerial(name);

  await cut(proxy, pusher);
  const missed = WINDOW + 3;
  await publish(sdk, name, 2, 1 + missed);
  proxy.restore();
  await connected(pusher, RECONNECT_MS);

  await waitUntil(() => failed.length === 1 || undefined, describe(pusher, got), RECONNECT_MS);
  const [channel, data] = failed[0];
  assert.equal(channel, name);
  assert.equal(data.reason, 'window_passed');
  assert.equal(data.from, before, 'from is the last serial delivered before the cut');
  // first is the oldest serial the app's stream still holds (any channel).
  assert.ok(Number.isInteger(data.first) && data.first > 0, `first ${data.first}`);
  assert.ok(got.some((e) => e.event === 'herald:resume_failed'), 'reported on the channel');

  // What the window still held was replayed: a gapless, duplicate-free
  // suffix of the missed events after the one delivered before the cut.
  const n = numbers(got);
  assert.equal(n[0], 1);
  const replayed = n.slice(1);
  assert.ok(replayed.length >= 1 && replayed.length <= WINDOW, `replayed ${JSON.stringify(replayed)}`);
  const start = replayed[0];
  assert.deepEqual(
    replayed,
    Array.from({ length: 1 + missed - start + 1 }, (_, i) => start + i),
  );
});
