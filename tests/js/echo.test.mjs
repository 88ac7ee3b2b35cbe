// Laravel Echo (laravel-echo 2.x, broadcaster 'pusher') over pusher-js,
// against Herald: what a Laravel front end does with public, private and
// presence channels, whispers and subscription errors. The app server side is
// the `pusher` SDK (what Laravel's Pusher broadcaster uses through
// pusher-http-php; same wire format) and the auth endpoint in
// auth-endpoint.mjs standing in for /broadcasting/auth.
//
// Runs under `go test ./tests/e2e/ -run TestPusherJSFeatures` (it needs the
// soketi-mode feature app); skips elsewhere.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

import { HOST, PORT, TEST_TIMEOUT_MS, WAIT_MS, uniq, withTimeout } from './helpers.mjs';
import { SKIP_WITHOUT_FEATURES, featureApp, sdkFor, startAuthEndpoint } from './auth-endpoint.mjs';

const opts = { timeout: TEST_TIMEOUT_MS, skip: SKIP_WITHOUT_FEATURES };

const open = new Set();
after(() => {
  for (const e of open) e.disconnect();
  open.clear();
});

/**
 * A connected Echo instance for app. authParams go to the auth endpoint in
 * the body (Echo's auth.params), e.g. the user the endpoint signs for.
 */
async function echoFor(t, app, ep, authParams = {}, extra = {}) {
  const echo = new Echo({
    broadcaster: 'pusher',
    key: app.key,
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    Pusher, // Echo 2 takes the client class as an option (no window.Pusher in Node)
    authEndpoint: ep ? `${ep.base}/broadcasting/auth` : undefined,
    auth: { headers: {}, params: authParams },
    ...extra,
  });
  open.add(echo);
  t.after(() => {
    open.delete(echo);
    echo.disconnect();
  });
  const conn = echo.connector.pusher.connection;
  await withTimeout(
    new Promise((resolve) => {
      if (conn.state === 'connected') return resolve();
      conn.bind('connected', resolve);
    }),
    WAIT_MS,
    `Echo connected (state ${conn.state})`,
  );
  return echo;
}

/** Resolves with the first value passed to a callback-registering Echo method. */
function firstCall(register, label, ms = WAIT_MS) {
  const p = withTimeout(new Promise((resolve) => register(resolve)), ms, label);
  p.catch(() => {}); // awaited later; a timeout must not also count as unhandled
  return p;
}

/** Resolves when an Echo channel's subscription succeeded (or rejects on .error). */
function subscribed(channel, label) {
  return withTimeout(
    new Promise((resolve, reject) => {
      if (channel.subscription.subscribed) return resolve();
      channel.subscribed(resolve);
      channel.error((e) => reject(new Error(`${label}: subscription error ${JSON.stringify(e)}`)));
    }),
    WAIT_MS,
    `${label} subscribed`,
  );
}

const user = (id, name) => ({ user_id: id, user_info: JSON.stringify({ id, name }) });

test('Echo.channel().listen: ".OrderShipped" (no namespace) and "OrderShipped" (App\\Events namespace)', opts, async (t) => {
  const app = featureApp('main');
  const sdk = sdkFor(app);
  const echo = await echoFor(t, app);
  const name = uniq('orders');
  const ch = echo.channel(name);
  const plain = [];
  const namespaced = [];
  const gotPlain = firstCall((cb) => ch.listen('.OrderShipped', (e) => (plain.push(e), cb(e))), '.OrderShipped');
  const gotNamespaced = firstCall(
    (cb) => ch.listen('OrderShipped', (e) => (namespaced.push(e), cb(e))),
    'OrderShipped as App\\Events\\OrderShipped',
  );
  await subscribed(ch, name);

  await sdk.trigger(name, 'OrderShipped', { order: 1 });
  await sdk.trigger(name, 'App\\Events\\OrderShipped', { order: 2 });
  assert.deepEqual(await gotPlain, { order: 1 });
  assert.deepEqual(await gotNamespaced, { order: 2 });
  // Barrier: one more event on the same channel; neither listener got the other's event.
  const barrier = firstCall((cb) => ch.listen('.barrier', cb), 'barrier');
  await sdk.trigger(name, 'barrier', {});
  await barrier;
  assert.deepEqual(plain, [{ order: 1 }]);
  assert.deepEqual(namespaced, [{ order: 2 }]);
});

test('Echo.private(): subscribes to private-<name> through the auth endpoint and receives events', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const echo = await echoFor(t, app, ep, user('1', 'Taylor'));
  const name = `App.Models.User.1.${uniq('x').replace(/-/g, '.')}`;
  const ch = echo.private(name);
  const got = firstCall((cb) => ch.listen('.Ping', cb), 'Ping on the private channel');
  await subscribed(ch, `private-${name}`);
  assert.equal(ep.requests.at(-1).path, '/broadcasting/auth');
  assert.equal(ep.requests.at(-1).params.channel_name, `private-${name}`, 'Echo prefixes private-');
  assert.equal(ep.requests.at(-1).params.socket_id, echo.socketId());

  await ep.sdk.trigger(`private-${name}`, 'Ping', { pong: true });
  assert.deepEqual(await got, { pong: true });
});

test('Echo.join(): here(), joining(), leaving() on presence-<name>', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const room = uniq('room');
  const e1 = await echoFor(t, app, ep, user('1', 'Alice'));
  const p1 = e1.join(room);
  const here1 = firstCall((cb) => p1.here(cb), 'here() for Alice');
  const joining = firstCall((cb) => p1.joining(cb), 'joining() on Alice');
  const leaving = firstCall((cb) => p1.leaving(cb), 'leaving() on Alice');
  assert.deepEqual(await here1, [{ id: '1', name: 'Alice' }]);
  assert.equal(ep.requests.at(-1).params.channel_name, `presence-${room}`, 'Echo prefixes presence-');

  const e2 = await echoFor(t, app, ep, user('2', 'Bob'));
  const p2 = e2.join(room);
  const here2 = await firstCall((cb) => p2.here(cb), 'here() for Bob');
  assert.deepEqual(
    here2.sort((a, b) => a.id.localeCompare(b.id)),
    [
      { id: '1', name: 'Alice' },
      { id: '2', name: 'Bob' },
    ],
  );
  assert.deepEqual(await joining, { id: '2', name: 'Bob' });

  e2.leave(room);
  assert.deepEqual(await leaving, { id: '2', name: 'Bob' });
});

test('whisper / listenForWhisper (client events) on private and presence channels', opts, async (t) => {
  const app = featureApp('main'); // client_events: true
  const ep = await startAuthEndpoint(t, app);
  const e1 = await echoFor(t, app, ep, user('1', 'Alice'));
  const e2 = await echoFor(t, app, ep, user('2', 'Bob'));

  for (const kind of ['private', 'join']) {
    const name = uniq(`whisper-${kind}`);
    const c1 = e1[kind](name);
    const c2 = e2[kind](name);
    const own = [];
    c2.listenForWhisper('typing', (e) => own.push(e));
    const got = firstCall((cb) => c1.listenForWhisper('typing', cb), `whisper on ${kind} channel`);
    await subscribed(c1, `${kind} ${name} (Alice)`);
    await subscribed(c2, `${kind} ${name} (Bob)`);
    c2.whisper('typing', { name: 'Bob', typing: true });
    assert.deepEqual(await got, { name: 'Bob', typing: true });

    // Barrier on the whisperer's own connection: a REST event on the same channel.
    const full = kind === 'private' ? `private-${name}` : `presence-${name}`;
    const barrier = firstCall((cb) => c2.listen('.barrier', cb), 'barrier on Bob');
    await ep.sdk.trigger(full, 'barrier', {});
    await barrier;
    assert.deepEqual(own, [], `${kind}: the whisperer does not hear itself`);
  }
});

test('channel.error(): fires for a subscription the server refuses (soketi mode) and for a 403 from the endpoint', opts, async (t) => {
  // Server-side refusal: soketi mode sends a channel-scoped pusher:subscription_error.
  {
    const app = featureApp('soketi');
    const ep = await startAuthEndpoint(t, app);
    const echo = await echoFor(t, app, ep, { ...user('1', 'Mallory'), forge: '1' });
    const ch = echo.private(uniq('App.Secret'));
    const err = await firstCall((cb) => ch.error(cb), 'error() for a forged signature (soketi mode)');
    assert.equal(err.type, 'AuthError', JSON.stringify(err));
    assert.equal(err.status, 401, JSON.stringify(err));
    assert.equal(ch.subscription.subscribed, false);
  }
  // Client-side refusal: the auth endpoint answers 403 (any mode).
  {
    const app = featureApp('main');
    const ep = await startAuthEndpoint(t, app);
    const echo = await echoFor(t, app, ep, { deny: '1' });
    const ch = echo.private(uniq('App.Denied'));
    const err = await firstCall((cb) => ch.error(cb), 'error() for a 403 from /broadcasting/auth');
    assert.equal(err.type, 'AuthError');
    assert.equal(err.status, 403);
  }
});

test('toOthers(): a trigger with socket_id = Echo.socketId() skips that connection', opts, async (t) => {
  const app = featureApp('main');
  const sdk = sdkFor(app);
  const me = await echoFor(t, app);
  const other = await echoFor(t, app);
  const name = uniq('orders');
  const mine = [];
  const chMe = me.channel(name).listen('.Updated', (e) => mine.push(e));
  const chOther = other.channel(name);
  const theirs = [];
  chOther.listen('.Updated', (e) => theirs.push(e));
  await subscribed(chMe, 'me');
  await subscribed(chOther, 'other');

  // What Laravel's broadcast(...)->toOthers() sends (X-Socket-ID from Echo).
  await sdk.trigger(name, 'Updated', { n: 1 }, { socket_id: me.socketId() });
  const barriers = [
    firstCall((cb) => chMe.listen('.barrier', cb), 'barrier on me'),
    firstCall((cb) => chOther.listen('.barrier', cb), 'barrier on the other'),
  ];
  await sdk.trigger(name, 'barrier', {});
  await Promise.all(barriers);
  assert.deepEqual(mine, [], 'excluded');
  assert.deepEqual(theirs, [{ n: 1 }], 'delivered to the others');
});
