// Public-channel behaviour as seen through the real pusher-js client (Node
// build) and the real `pusher` server SDK.
//
// Barriers: "X was not delivered" is always checked after a later event that
// must arrive after X (same connection, and where possible the same channel),
// never after a sleep.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';

import {
  APP,
  HOST,
  PORT,
  TEST_TIMEOUT_MS,
  WAIT_MS,
  Client,
  closeAll,
  connectedClient,
  serverSDK,
  uniq,
  withTimeout,
} from './helpers.mjs';

after(closeAll);

const opts = { timeout: TEST_TIMEOUT_MS };

test('connect: pusher-js reaches state connected with a Pusher-shaped socket_id', opts, async (t) => {
  const c = await connectedClient(t);
  assert.equal(c.pusher.connection.state, 'connected');
  assert.match(c.socketId, /^\d+\.\d+$/);
});

test('subscribe to a public channel and receive an event triggered by the server SDK', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  const ch = uniq('my-channel');
  const channel = await c.subscribe(ch);

  const received = new Promise((resolve) => channel.bind('my-event', resolve));
  const res = await sdk.trigger(ch, 'my-event', { hello: 'world' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  const m = await c.waitForEvent(ch, 'my-event');
  assert.deepEqual(m.data, { hello: 'world' });
  // And the channel binding (what apps use) fired with the same data.
  assert.deepEqual(await received, { hello: 'world' });
});

test('trigger to several channels: one copy per subscribed channel', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  const [a, b, other] = [uniq('multi-a'), uniq('multi-b'), uniq('multi-c')];
  await c.subscribe(a);
  await c.subscribe(b);

  const res = await sdk.trigger([a, b, other], 'fanout', { n: 1 });
  assert.equal(res.status, 200);
  await c.waitForEvent(a, 'fanout');
  await c.waitForEvent(b, 'fanout');

  // Barrier: a later event on each channel; any duplicate of `fanout` would
  // have arrived before it.
  await sdk.trigger([a, b], 'barrier', {});
  await c.waitForEvent(a, 'barrier');
  await c.waitForEvent(b, 'barrier');

  assert.equal(c.eventsOn(a, 'fanout').length, 1, 'copies on channel a');
  assert.equal(c.eventsOn(b, 'fanout').length, 1, 'copies on channel b');
  assert.equal(c.eventsOn(other).length, 0, 'nothing from the channel we are not subscribed to');
  assert.deepEqual(c.eventsOn(a, 'fanout')[0].data, { n: 1 });
});

test('triggerBatch: 3 events on 2 channels arrive once each, in order per channel', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  const [x, y] = [uniq('batch-x'), uniq('batch-y')];
  await c.subscribe(x);
  await c.subscribe(y);

  const res = await sdk.triggerBatch([
    { channel: x, name: 'e', data: { n: 1 } },
    { channel: y, name: 'e', data: { n: 2 } },
    { channel: x, name: 'e', data: { n: 3 } },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  await c.waitFor((m) => m.channel === x && m.event === 'e' && m.data.n === 3, 'third batch event on x');
  await c.waitFor((m) => m.channel === y && m.event === 'e' && m.data.n === 2, 'second batch event on y');

  await sdk.triggerBatch([
    { channel: x, name: 'barrier', data: {} },
    { channel: y, name: 'barrier', data: {} },
  ]);
  await c.waitForEvent(x, 'barrier');
  await c.waitForEvent(y, 'barrier');

  assert.deepEqual(
    c.eventsOn(x, 'e').map((m) => m.data.n),
    [1, 3],
  );
  assert.deepEqual(
    c.eventsOn(y, 'e').map((m) => m.data.n),
    [2],
  );
});

test('socket_id exclusion: the excluded connection does not get the event', opts, async (t) => {
  const sdk = serverSDK();
  const a = await connectedClient(t);
  const b = await connectedClient(t);
  assert.notEqual(a.socketId, b.socketId, 'socket ids are unique');
  const ch = uniq('exclusion');
  await a.subscribe(ch);
  await b.subscribe(ch);

  await sdk.trigger(ch, 'first', { n: 1 }, { socket_id: a.socketId });
  await sdk.trigger(ch, 'second', { n: 2 });

  // B gets both, in order.
  await b.waitForEvent(ch, 'second');
  assert.deepEqual(
    b.eventsOn(ch).filter((m) => !m.event.startsWith('pusher')).map((m) => m.event),
    ['first', 'second'],
  );
  // A gets the second (same channel, so it would have seen the first before it).
  await a.waitForEvent(ch, 'second');
  assert.deepEqual(
    a.eventsOn(ch).filter((m) => !m.event.startsWith('pusher')).map((m) => m.event),
    ['second'],
  );
});

test('Laravel-style channel and event names with dots and backslashes round-trip', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  // Fixed names as Laravel builds them, plus a unique suffix so parallel runs
  // against one server never collide.
  const sfx = uniq('x').replace(/-/g, '.');
  const channels = [`orders.42.${sfx}`, `App.Models.User.1.${sfx}`];
  const event = 'App\\Events\\OrderShipped'; // Echo's EventFormatter form
  for (const ch of channels) {
    const channel = await c.subscribe(ch);
    const received = new Promise((resolve) => channel.bind(event, resolve));
    const res = await sdk.trigger(ch, event, { id: 42, ch });
    assert.equal(res.status, 200);
    assert.deepEqual(await received, { id: 42, ch });
  }
  // The plain names too (no suffix), as an app would use them.
  for (const ch of ['orders.42', 'App.Models.User.1']) {
    const channel = await c.subscribe(ch);
    const received = new Promise((resolve) => channel.bind(event, resolve));
    await sdk.trigger(ch, event, { plain: ch });
    assert.deepEqual(await received, { plain: ch });
  }
});

test('unknown app key: pusher-js reports error 4001 and stops', opts, async (t) => {
  const c = new Client('nope');
  t.after(() => c.close());
  // pusher-js turns the 4001 (a pusher:error before the handshake, or the
  // close code) into a connection 'error' event:
  // {type:'WebSocketError', error:{type:'PusherError', data:{code:4001, message}}}
  const codeOf = (e) => e?.error?.data?.code ?? e?.data?.code;
  const err = await c.waitForError((e) => codeOf(e) === 4001, 'an error event with code 4001');
  assert.equal(codeOf(err), 4001);
  // 4001 is "refused": pusher-js gives up (state disconnected) instead of
  // reconnecting; 'failed'/'unavailable' would also mean it never connected.
  const conn = c.pusher.connection;
  const settled = ['disconnected', 'failed', 'unavailable'];
  await withTimeout(
    new Promise((resolve) => {
      if (settled.includes(conn.state)) return resolve();
      conn.bind('state_change', ({ current }) => settled.includes(current) && resolve());
    }),
    WAIT_MS,
    `pusher-js to give up (state ${conn.state})`,
  );
  assert.equal(c.socketId, undefined, 'never got a socket_id');
});

// Signs a REST request by hand, exactly as the spec (section 6.2) describes,
// for the case where the SDK would refuse to send something.
function signedURL(method, path, body) {
  const params = {
    auth_key: APP.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
  };
  if (body) params.body_md5 = createHash('md5').update(body).digest('hex');
  const query = Object.keys(params)
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join('&');
  const sig = createHmac('sha256', APP.secret).update([method, path, query].join('\n')).digest('hex');
  return `http://${HOST}:${PORT}${path}?${query}&auth_signature=${sig}`;
}

test('event data over 10 KB is rejected by the server with 413 and not delivered', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  const ch = uniq('big');
  await c.subscribe(ch);

  // 10 KB + 1 byte of data: the smallest size every reading of "10 KB" rejects.
  // The node SDK does not check sizes client-side, so this reaches the server.
  const big = 'x'.repeat(10 * 1024 + 1);
  const err = await sdk.trigger(ch, 'too-big', big).then(
    () => assert.fail('trigger with > 10 KB of data succeeded'),
    (e) => e,
  );
  assert.equal(err.status, 413, `expected HTTP 413, got ${err.status}: ${err.message} ${err.body ?? err.error}`);
  const body = JSON.parse(err.body);
  assert.equal(body.status, 413);
  assert.equal(typeof body.error, 'string');

  // The same through a hand-signed request (independent of the SDK).
  const reqBody = JSON.stringify({ name: 'too-big', channels: [ch], data: big });
  const path = `/apps/${APP.appId}/events`;
  const res = await fetch(signedURL('POST', path, reqBody), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: reqBody,
  });
  assert.equal(res.status, 413);
  await res.text();

  // The hand signer is right: the same request with small data is accepted.
  const okBody = JSON.stringify({ name: 'small', channels: [ch], data: '{"ok":true}' });
  const ok = await fetch(signedURL('POST', path, okBody), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: okBody,
  });
  assert.equal(ok.status, 200, `hand-signed small trigger: ${await ok.clone().text()}`);
  assert.deepEqual(await ok.json(), {});

  // Barrier: the small event follows the rejected ones on the same channel.
  await c.waitForEvent(ch, 'small');
  assert.equal(c.eventsOn(ch, 'too-big').length, 0);
});

test('unsubscribe: later events on the channel are not delivered', opts, async (t) => {
  const sdk = serverSDK();
  const c = await connectedClient(t);
  const [gone, kept] = [uniq('unsub-gone'), uniq('unsub-kept')];
  await c.subscribe(gone);
  await sdk.trigger(gone, 'before', {});
  await c.waitForEvent(gone, 'before');

  c.pusher.unsubscribe(gone);
  // The server handles one connection's frames in order, so once the
  // subscription sent after the unsubscribe is confirmed, the unsubscribe
  // has been applied.
  await c.subscribe(kept);

  await sdk.trigger(gone, 'after', {});
  await sdk.trigger(kept, 'barrier', {});
  await c.waitForEvent(kept, 'barrier');
  // Raw connection messages, so a delivery pusher-js would drop for an
  // unknown channel still counts.
  assert.equal(c.eventsOn(gone, 'after').length, 0, 'event delivered after unsubscribe');
});
