// Raw-frame protocol checks with the `ws` package: exact encodings, error
// frames and close codes that pusher-js hides.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { APP, TEST_TIMEOUT_MS, closeAll, rawSocket, serverSDK, uniq } from './helpers.mjs';

after(closeAll);

const opts = { timeout: TEST_TIMEOUT_MS };

/** Opens a raw socket on the dev app and waits for the handshake. */
async function open(t) {
  const s = await rawSocket(t);
  await s.established();
  return s;
}

/** Sends pusher:subscribe and waits for pusher_internal:subscription_succeeded. */
async function subscribe(s, channel, data = { auth: '', channel }) {
  const from = s.frames.length;
  s.send({ event: 'pusher:subscribe', data });
  return s.waitFrame(
    (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === channel,
    `subscription_succeeded on ${channel}`,
    from,
  );
}

test('handshake: first frame is connection_established with string data', opts, async (t) => {
  const s = await rawSocket(t);
  const { data } = await s.established();
  assert.equal(s.frames[0].msg.event, 'pusher:connection_established', 'it is the first frame');
  assert.equal(typeof s.frames[0].msg.data, 'string', 'data is double-encoded');
  assert.match(data.socket_id, /^\d+\.\d+$/);
  assert.ok(Number.isInteger(data.activity_timeout) && data.activity_timeout > 0, `activity_timeout ${data.activity_timeout}`);
});

test('pusher:ping is answered by pusher:pong with data "{}"', opts, async (t) => {
  const s = await open(t);
  for (const data of [{}, '{}']) {
    const from = s.frames.length;
    s.send({ event: 'pusher:ping', data });
    const f = await s.waitFrame((m) => m.event === 'pusher:pong', `pong to ping with data ${JSON.stringify(data)}`, from);
    assert.equal(f.msg.data, '{}', `pong data must be the string "{}", frame: ${f.raw}`);
  }
});

test('invalid JSON gets pusher:error with code null and the connection stays open', opts, async (t) => {
  const s = await open(t);
  const from = s.frames.length;
  s.send('this is {not json');
  const f = await s.waitFrame((m) => m.event === 'pusher:error', 'pusher:error for invalid JSON', from);
  assert.equal(typeof f.msg.data, 'object', `error data is an object, frame: ${f.raw}`);
  assert.equal(f.msg.data.code, null, `code is null, frame: ${f.raw}`);
  assert.equal(typeof f.msg.data.message, 'string');
  await s.roundTrip('pong after the invalid frame (connection still open)');
  assert.equal(s.closed, null);
});

test('?protocol=3 is closed with 4007', opts, async (t) => {
  const s = await rawSocket(t, `/app/${APP.key}?protocol=3&client=js&version=8.6.0&flash=false`);
  const { code } = await s.waitClosed('close for protocol 3');
  assert.equal(code, 4007, `close code (http response: ${JSON.stringify(s.httpResponse)}, frames: ${s.describe()})`);
  assert.equal(
    s.frames.some((f) => f.msg?.event === 'pusher:connection_established'),
    false,
    'no connection_established for an unsupported protocol',
  );
});

test('WebSocket upgrade on an unknown path is refused (close 4005 or HTTP 404)', opts, async (t) => {
  const s = await rawSocket(t, '/foo/bar');
  const closed = await s.waitClosed('close or HTTP answer for /foo/bar');
  // The spec allows both: a plain HTTP 404 before the upgrade (what an HTTP
  // router does for an unknown route), or an accepted upgrade closed with
  // 4005 "Path not found". The diagnostic line records which one Herald does.
  if (s.httpResponse) {
    t.diagnostic(`unknown path: HTTP ${s.httpResponse.statusCode} before upgrade`);
    assert.equal(s.httpResponse.statusCode, 404);
  } else {
    t.diagnostic(`unknown path: upgraded, then closed with ${closed.code}`);
    assert.equal(closed.code, 4005);
  }
});

test('subscribing twice: "Existing subscription to channel <name>", no second success', opts, async (t) => {
  const s = await open(t);
  const ch = uniq('dup');
  const ok = await subscribe(s, ch);
  assert.equal(ok.msg.data, '{}', `subscription_succeeded data is the string "{}": ${ok.raw}`);

  const from = s.frames.length;
  s.send({ event: 'pusher:subscribe', data: { auth: '', channel: ch } });
  const f = await s.waitFrame((m) => m.event === 'pusher:error', 'pusher:error for the second subscribe', from);
  assert.equal(f.msg.data.message, `Existing subscription to channel ${ch}`);
  assert.equal(f.msg.data.code, null);

  await s.roundTrip();
  assert.equal(
    s.frames.filter((x) => x.msg?.event === 'pusher_internal:subscription_succeeded').length,
    1,
    'exactly one subscription_succeeded',
  );

  // The first subscription is still in place.
  const sdk = serverSDK();
  await sdk.trigger(ch, 'still-here', { ok: true });
  await s.waitFrame((m) => m.event === 'still-here' && m.channel === ch, 'event on the channel after the duplicate');
});

test('public subscribe works with auth "", absent and null', opts, async (t) => {
  const s = await open(t);
  for (const [label, data] of [
    ['auth ""', (ch) => ({ auth: '', channel: ch })],
    ['no auth', (ch) => ({ channel: ch })],
    ['auth null', (ch) => ({ auth: null, channel: ch })],
  ]) {
    const ch = uniq('auth-variants');
    const f = await subscribe(s, ch, data(ch));
    assert.equal(f.msg.data, '{}', `${label}: ${f.raw}`);
  }
});

test('unsubscribing from a channel not subscribed gets pusher:error', opts, async (t) => {
  const s = await open(t);
  const ch = uniq('never-subscribed');
  const from = s.frames.length;
  s.send({ event: 'pusher:unsubscribe', data: { channel: ch } });
  const f = await s.waitFrame((m) => m.event === 'pusher:error', 'pusher:error for unsubscribe', from);
  assert.equal(typeof f.msg.data.message, 'string', f.raw);
  t.diagnostic(`unsubscribe-not-subscribed error: ${f.raw}`);
  await s.roundTrip('pong after the error (connection still open)');
});

test('channel events carry verbatim data and an integer "serial" increasing per channel', opts, async (t) => {
  const sdk = serverSDK();
  const s = await open(t);
  const [a, b] = [uniq('serial-a'), uniq('serial-b')];
  await subscribe(s, a);
  await subscribe(s, b);

  // Interleave the two channels; `data` strings are sent as-is by the SDK.
  const sent = [];
  for (let i = 1; i <= 3; i++) {
    for (const ch of [a, b]) {
      const data = JSON.stringify({ i, ch });
      sent.push({ ch, data });
      const res = await sdk.trigger(ch, 'tick', data);
      assert.equal(res.status, 200);
    }
  }
  for (const ch of [a, b]) {
    await s.waitFrame((m) => m.event === 'tick' && m.channel === ch && JSON.parse(m.data).i === 3, `third tick on ${ch}`);
  }

  for (const ch of [a, b]) {
    const frames = s.frames.filter((f) => f.msg?.event === 'tick' && f.msg.channel === ch);
    assert.equal(frames.length, 3, `three ticks on ${ch}`);
    assert.deepEqual(
      frames.map((f) => f.msg.data),
      sent.filter((x) => x.ch === ch).map((x) => x.data),
      'data is the REST data string, verbatim, in order',
    );
    const serials = frames.map((f) => f.msg.serial);
    for (const [i, serial] of serials.entries()) {
      assert.ok(Number.isSafeInteger(serial), `serial is an integer, frame: ${frames[i].raw}`);
      // It is a JSON number on the wire, not a string.
      assert.match(frames[i].raw, /"serial":\d+/);
    }
    for (let i = 1; i < serials.length; i++) {
      assert.ok(serials[i] > serials[i - 1], `serials increase on ${ch}: ${serials}`);
    }
  }
});
