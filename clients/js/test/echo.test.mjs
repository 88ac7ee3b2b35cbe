// Laravel Echo (2.x, broadcaster 'pusher') on top of a resuming pusher-js
// client, unchanged: the three lines of README.md, then a cut connection and
// events published meanwhile. Needs Herald (see resume.test.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { withResume } from '../index.mjs';
import {
  APP,
  CutProxy,
  HOST,
  PORT,
  RECONNECT_MS,
  SKIP_WITHOUT_HERALD,
  TEST_TIMEOUT_MS,
  connected,
  serverSDK,
  uniq,
  waitUntil,
  withTimeout,
  WAIT_MS,
} from './helpers.mjs';

test('Laravel Echo over withResume: every event once, in order, across a cut', { timeout: TEST_TIMEOUT_MS, skip: SKIP_WITHOUT_HERALD }, async (t) => {
  const proxy = await new CutProxy(HOST, PORT).listen();
  const options = {
    broadcaster: 'pusher',
    key: APP.key,
    wsHost: '127.0.0.1',
    wsPort: proxy.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  };
  // The README's three lines.
  const pusher = withResume(new Pusher(options.key, options));
  const echo = new Echo({ ...options, client: pusher });
  t.after(async () => {
    echo.disconnect();
    await proxy.close();
  });
  assert.equal(echo.connector.pusher, pusher, 'Echo uses the wrapped client');
  await connected(pusher);

  const name = uniq('echo-resume');
  const got = [];
  const failed = [];
  const channel = echo
    .channel(name)
    .listen('.OrderShipped', (e) => got.push(e.n))
    .listen('.herald:resume_failed', (e) => failed.push(e));
  await withTimeout(new Promise((resolve) => channel.subscribed(resolve)), WAIT_MS, `Echo subscribed to ${name}`);

  const sdk = serverSDK();
  const publish = async (from, to) => {
    for (let n = from; n <= to; n++) await sdk.trigger(name, 'OrderShipped', { n });
  };
  await publish(1, 2);
  await waitUntil(() => got.length === 2, () => `2 events, got ${JSON.stringify(got)}`);

  proxy.cut();
  await waitUntil(() => pusher.connection.state !== 'connected' || undefined, 'pusher-js to notice the cut');
  await publish(3, 4);
  proxy.restore();
  await connected(pusher, RECONNECT_MS);
  await waitUntil(() => got.length >= 4, () => `4 events, got ${JSON.stringify(got)}`, RECONNECT_MS);
  await publish(5, 5);
  await waitUntil(() => got.length >= 5, () => `5 events, got ${JSON.stringify(got)}`);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.deepEqual(failed, []);
});
