// Channel features as seen through the real clients: pusher-js (Node build)
// with an app auth endpoint that signs with the real `pusher` server SDK,
// and the SDK's REST calls. Spec: shared/spec/pusher-protocol.md sections
// 2-5 and 8-10.
//
// These tests need the feature apps (client events off, soketi error mode,
// presence limits, subscription counts): they run under
// `go test ./tests/e2e/ -run TestPusherJSFeatures`, which starts Herald with
// a config naming those apps, and skip elsewhere (see auth-endpoint.mjs).
//
// Barriers: "X was not delivered" is always checked after a later event that
// must arrive after X (same connection and, where possible, the same
// channel), never after a sleep. For a connection's own frames the barrier is
// a later subscribe on the same connection: the server handles one
// connection's frames in order, so its answer to the earlier frame comes
// first.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import Pusher from 'pusher-js';
import {
  TEST_TIMEOUT_MS,
  WAIT_MS,
  Client,
  closeAll,
  rawSocket,
  uniq,
  withTimeout,
} from './helpers.mjs';
import {
  SKIP_WITHOUT_FEATURES,
  featureApp,
  forgedAuth,
  sdkFor,
  startAuthEndpoint,
} from './auth-endpoint.mjs';

after(closeAll);

const opts = { timeout: TEST_TIMEOUT_MS, skip: SKIP_WITHOUT_FEATURES };

// ---------------------------------------------------------------------------
// Helpers

/** A connected pusher-js client for an app, closed when the test ends. */
async function connect(t, app, options = {}) {
  const c = new Client(app.key, options);
  t.after(() => c.close());
  await c.connected();
  return c;
}

/** Resolves with the arguments of the next `event` on a pusher-js emitter. */
function nextEvent(emitter, event, label, ms = WAIT_MS) {
  let cb;
  const p = withTimeout(
    new Promise((resolve) => {
      cb = (...args) => resolve(args);
      emitter.bind(event, cb);
    }),
    ms,
    label,
  ).finally(() => emitter.unbind(event, cb));
  p.catch(() => {}); // awaited later; a timeout must not also count as unhandled
  return p;
}

/** Records every `event` on a pusher-js emitter: [[data, metadata], ...]. */
function record(emitter, event) {
  const got = [];
  emitter.bind(event, (...args) => got.push(args));
  return got;
}

/** The first connection 'error' recorded at index >= from that matches pred. */
function errorAfter(c, from, pred, label) {
  return c.waitForError((e) => c.errors.indexOf(e) >= from && pred(e), label);
}

const isPusherError = (e) => e?.type === 'PusherError' && e.data && typeof e.data === 'object';
const codeOf = (e) => e?.error?.data?.code ?? e?.data?.code;

/**
 * Subscribes to a fresh public channel and waits for its success: a barrier
 * for everything the server answered to this connection's earlier frames.
 */
async function barrierSubscribe(c, label = 'barrier') {
  await subscribeOrRefusal(c, uniq(`barrier-${label}`));
}

/** Triggers `barrier` on channel and waits until every client got it. */
async function restBarrier(sdk, channel, clients, name = 'barrier') {
  const res = await sdk.trigger(channel, name, { barrier: true });
  assert.equal(res.status, 200);
  for (const c of clients) await c.waitForEvent(channel, name, `${name} on ${channel}`);
}

/** Resolves with the new state once the connection is no longer 'connected'. */
function leftConnected(c, label) {
  const conn = c.pusher.connection;
  const p = withTimeout(
    new Promise((resolve) => {
      if (conn.state !== 'connected') return resolve(conn.state);
      conn.bind('state_change', ({ current }) => current !== 'connected' && resolve(current));
    }),
    WAIT_MS,
    `${label} (state ${conn.state}, errors ${JSON.stringify(c.errors)})`,
  );
  p.catch(() => {}); // awaited later
  return p;
}

/** Messages on a channel received after its subscription_succeeded, in order. */
function afterSucceeded(c, channel) {
  const msgs = c.eventsOn(channel);
  const i = msgs.findIndex((m) => m.event === 'pusher_internal:subscription_succeeded');
  assert.ok(i >= 0, `no subscription_succeeded on ${channel}: ${c.describe()}`);
  return msgs.slice(i + 1);
}

/**
 * Subscribes like Client.subscribe, but also fails at once, with the
 * server's message, on a pusher:error the connection gets meanwhile (how
 * Pusher mode refuses a subscription), instead of timing out.
 */
function subscribeOrRefusal(c, name, ms = WAIT_MS) {
  const channel = c.pusher.subscribe(name);
  if (channel.subscribed) return Promise.resolve(channel);
  const conn = c.pusher.connection;
  let onOk, onSubErr, onConnErr;
  return withTimeout(
    new Promise((resolve, reject) => {
      onOk = () => resolve(channel);
      onSubErr = (e) => reject(new Error(`subscription to ${name} failed: ${JSON.stringify(e)}`));
      onConnErr = (e) => isPusherError(e) && reject(new Error(`subscription to ${name} refused: ${JSON.stringify(e.data)}`));
      channel.bind('pusher:subscription_succeeded', onOk);
      channel.bind('pusher:subscription_error', onSubErr);
      conn.bind('error', onConnErr);
    }),
    ms,
    `pusher:subscription_succeeded on ${name}`,
  ).finally(() => {
    channel.unbind('pusher:subscription_succeeded', onOk);
    channel.unbind('pusher:subscription_error', onSubErr);
    conn.unbind('error', onConnErr);
  });
}

/** Presence client options: user id and user_info travel to the auth endpoint. */
function presenceAuth(ep, userId, userInfo) {
  return {
    channelAuthorization: ep.channelAuth({
      user_id: userId,
      ...(userInfo !== undefined ? { user_info: JSON.stringify(userInfo) } : {}),
    }),
  };
}

/**
 * Polls GET /channels/{name}?info=subscription_count until it equals want:
 * the only way to know the server has processed a connection's close.
 */
async function waitSubscriptionCount(sdk, channel, want) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    const res = await sdk.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } });
    last = await res.json();
    if (last.subscription_count === want) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${WAIT_MS} ms waiting for subscription_count of ${channel} to become ${want} (last ${JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ---------------------------------------------------------------------------
// 1. Private channels

test('private: a valid auth from the endpoint subscribes, and events arrive', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const c = await connect(t, app, { channelAuthorization: ep.channelAuth() });
  const ch = uniq('private-ok');
  const channel = await subscribeOrRefusal(c, ch);
  assert.equal(channel.subscribed, true);
  assert.deepEqual(ep.requests.map((r) => [r.path, r.params.socket_id, r.params.channel_name]), [
    ['/pusher/auth', c.socketId, ch],
  ]);

  const got = nextEvent(channel, 'secret-event', `secret-event on ${ch}`);
  await ep.sdk.trigger(ch, 'secret-event', { ok: 1 });
  assert.deepEqual((await got)[0], { ok: 1 });
});

test('private: a 403 from the auth endpoint gives pusher:subscription_error and no subscription', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const c = await connect(t, app, { channelAuthorization: ep.channelAuth({ deny: '1' }) });
  const ch = uniq('private-denied');
  const channel = c.pusher.subscribe(ch);
  const [err] = await nextEvent(channel, 'pusher:subscription_error', `subscription_error on ${ch}`);
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 403);

  await barrierSubscribe(c, 'after-403');
  assert.equal(channel.subscribed, false);
  assert.equal(c.eventsOn(ch, 'pusher_internal:subscription_succeeded').length, 0);
});

test('private, Pusher mode: a wrong signature, key or socket id is refused with pusher:error (code null), connection stays open', opts, async (t) => {
  const app = featureApp('main'); // subscription_error_mode: pusher
  const sdk = sdkFor(app);
  const cases = [
    {
      what: 'signature made with another secret',
      auth: ({ socketId, channelName }) => forgedAuth(app.key, `${socketId}:${channelName}`),
      message: /^Invalid signature/,
    },
    {
      what: 'key part is not the app key',
      auth: ({ socketId, channelName }) =>
        'not-the-key:' + sdk.authorizeChannel(socketId, channelName).auth.split(':')[1],
      message: /^Invalid key in subscription auth data/,
    },
    {
      what: 'signature made for another socket id',
      auth: ({ channelName }) => sdk.authorizeChannel('1234.5678', channelName).auth,
      message: /^Invalid signature/,
    },
  ];
  for (const k of cases) {
    const c = await connect(t, app, {
      channelAuthorization: { customHandler: (params, cb) => cb(null, { auth: k.auth(params) }) },
    });
    const ch = uniq('private-forged');
    const from = c.errors.length;
    const channel = c.pusher.subscribe(ch);
    const channelErrors = record(channel, 'pusher:subscription_error');
    const err = await errorAfter(c, from, isPusherError, `pusher:error for ${k.what}`);
    assert.equal(err.data.code, null, `${k.what}: code must be null, got ${JSON.stringify(err)}`);
    assert.match(err.data.message, k.message, k.what);

    await barrierSubscribe(c, 'after-forged');
    assert.equal(c.pusher.connection.state, 'connected', `${k.what}: connection stays open`);
    assert.equal(channel.subscribed, false, `${k.what}: channel must not be subscribed`);
    assert.equal(c.eventsOn(ch, 'pusher_internal:subscription_succeeded').length, 0, k.what);
    assert.deepEqual(channelErrors, [], `${k.what}: Pusher mode sends no channel-scoped subscription_error`);
  }
});

test('private, soketi mode: a wrong signature gives the channel pusher:subscription_error', opts, async (t) => {
  const app = featureApp('soketi'); // subscription_error_mode: soketi
  const c = await connect(t, app, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) =>
        cb(null, { auth: forgedAuth(app.key, `${socketId}:${channelName}`) }),
    },
  });
  const ch = uniq('private-forged-soketi');
  const channel = c.pusher.subscribe(ch);
  const [err] = await nextEvent(channel, 'pusher:subscription_error', `server subscription_error on ${ch}`);
  assert.equal(err.type, 'AuthError', JSON.stringify(err));
  assert.equal(err.status, 401, JSON.stringify(err));
  const raw = c.eventsOn(ch, 'pusher:subscription_error');
  assert.equal(raw.length, 1, 'the frame names the channel');

  await barrierSubscribe(c, 'after-soketi');
  assert.equal(c.pusher.connection.state, 'connected');
  assert.equal(channel.subscribed, false);
});

// ---------------------------------------------------------------------------
// 2. Presence

test('presence: roster includes self; member_added only on others; a 2nd connection of a user adds nothing', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('presence-roster');

  const a = await connect(t, app, presenceAuth(ep, '1', { name: 'Alice' }));
  const chA = await subscribeOrRefusal(a, ch);
  assert.equal(chA.members.count, 1);
  assert.deepEqual(chA.members.me, { id: '1', info: { name: 'Alice' } });

  const addedOnA = record(chA, 'pusher:member_added');
  const b = await connect(t, app, presenceAuth(ep, '2', { name: 'Bob' }));
  const chB = await subscribeOrRefusal(b, ch);
  assert.equal(chB.members.count, 2);
  assert.deepEqual(chB.members.me, { id: '2', info: { name: 'Bob' } });
  assert.deepEqual(chB.members.get('1'), { id: '1', info: { name: 'Alice' } });
  await a.waitForEvent(ch, 'pusher_internal:member_added', 'member_added for user 2 on A');
  assert.deepEqual(addedOnA.map(([m]) => m), [{ id: '2', info: { name: 'Bob' } }]);
  assert.equal(chA.members.count, 2);

  // User 1 again, on another connection (a second tab).
  const a2 = await connect(t, app, presenceAuth(ep, '1', { name: 'Alice' }));
  const chA2 = await subscribeOrRefusal(a2, ch);
  assert.equal(chA2.members.count, 2);
  assert.equal(chA2.members.me.id, '1');
  // The wire roster carries ids, hash and count (spec 2.4).
  const ok = a2.eventsOn(ch, 'pusher_internal:subscription_succeeded')[0].data.presence;
  assert.deepEqual([...ok.ids].map(String).sort(), ['1', '2']);
  assert.deepEqual(ok.hash, { 1: { name: 'Alice' }, 2: { name: 'Bob' } });
  assert.equal(ok.count, 2);

  await restBarrier(ep.sdk, ch, [a, b, a2]);
  const added = (c) => c.eventsOn(ch, 'pusher_internal:member_added').map((m) => String(m.data.user_id));
  assert.deepEqual(added(a), ['2'], 'A saw only user 2 join');
  assert.deepEqual(added(b), [], 'the joiner gets no member_added, and user 1 was already there');
  assert.deepEqual(added(a2), [], "a user's second connection gets no member_added");
  assert.equal(chA.members.count, 2);
  assert.equal(chB.members.count, 2);
});

test("presence: member_removed only when the user's last connection leaves", opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('presence-leave');

  const b = await connect(t, app, presenceAuth(ep, '2', { name: 'Bob' }));
  const chB = await subscribeOrRefusal(b, ch);
  const removedOnB = record(chB, 'pusher:member_removed');
  const a = await connect(t, app, presenceAuth(ep, '1', { name: 'Alice' }));
  await subscribeOrRefusal(a, ch);
  const a2 = await connect(t, app, presenceAuth(ep, '1', { name: 'Alice' }));
  await subscribeOrRefusal(a2, ch);
  const a3 = await connect(t, app, presenceAuth(ep, '1', { name: 'Alice' }));
  await subscribeOrRefusal(a3, ch);
  await b.waitForEvent(ch, 'pusher_internal:member_added', 'member_added for user 1 on B');
  assert.equal(chB.members.count, 2);

  // A2 unsubscribes: its next subscribe's success shows the server did it.
  a2.pusher.unsubscribe(ch);
  await barrierSubscribe(a2, 'after-unsubscribe');
  // A3 disconnects: the subscription count (B, A; was 4 before A2 and A3
  // left) shows when the server has processed the close.
  a3.close();
  await waitSubscriptionCount(ep.sdk, ch, 2);

  await restBarrier(ep.sdk, ch, [b], 'barrier-1');
  assert.deepEqual(b.eventsOn(ch, 'pusher_internal:member_removed'), [], 'user 1 still has a connection');
  assert.deepEqual(removedOnB, []);
  assert.equal(chB.members.count, 2);

  // The last connection of user 1 goes: now B hears of it.
  const removed = nextEvent(chB, 'pusher:member_removed', 'member_removed for user 1 on B');
  a.close();
  const [member] = await removed;
  assert.deepEqual(member, { id: '1', info: { name: 'Alice' } });
  assert.equal(chB.members.count, 1);
  await restBarrier(ep.sdk, ch, [b], 'barrier-2');
  assert.equal(b.eventsOn(ch, 'pusher_internal:member_removed').length, 1, 'exactly one member_removed');
});

test('presence: user_id 10 (number) and "10" (string) are the same user', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('presence-numeric');
  const num = await connect(t, app, {
    channelAuthorization: ep.channelAuth({ user_id: '10', numeric_id: '1', user_info: JSON.stringify({ name: 'ten' }) }),
  });
  const chNum = await subscribeOrRefusal(num, ch);
  assert.equal(chNum.members.count, 1);
  assert.equal(String(chNum.members.me?.id), '10', 'pusher-js finds itself in the roster');
  const str = await connect(t, app, presenceAuth(ep, '10', { name: 'ten' }));
  const chStr = await subscribeOrRefusal(str, ch);
  assert.equal(chStr.members.count, 1, 'one distinct user');
  await restBarrier(ep.sdk, ch, [num, str]);
  assert.equal(num.eventsOn(ch, 'pusher_internal:member_added').length, 0, 'no member_added for the same user');
  const users = await (await ep.sdk.get({ path: `/channels/${ch}/users` })).json();
  assert.deepEqual(users, { users: [{ id: '10' }] }, 'REST user ids are strings');
});

test('presence: without channel_data, the signed-in user is the member (user id and user_info)', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const uid = uniq('signed');
  const c = await connect(t, app, {
    userAuthentication: ep.userAuth({ user_id: uid, user_info: JSON.stringify({ name: 'Sig' }) }),
    channelAuthorization: ep.channelAuth({ no_channel_data: '1' }),
  });
  c.pusher.signin();
  await withTimeout(c.pusher.user.signinDonePromise, WAIT_MS, 'signinDonePromise');
  assert.equal(c.pusher.user.user_data?.id, uid, 'signed in');
  const ch = uniq('presence-signed');
  const channel = await subscribeOrRefusal(c, ch);
  assert.deepEqual(channel.members.me, { id: uid, info: { name: 'Sig' } });
  assert.equal(channel.members.count, 1);
  const users = await (await ep.sdk.get({ path: `/channels/${ch}/users` })).json();
  assert.deepEqual(users, { users: [{ id: uid }] });
});

/** Runs the member-limit scenario (max_presence_members: 2) on app; returns the third user's client and channel. */
async function memberLimitScenario(t, app) {
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('presence-full');
  const u1 = await connect(t, app, presenceAuth(ep, '1', { name: 'one' }));
  await subscribeOrRefusal(u1, ch);
  const u2 = await connect(t, app, presenceAuth(ep, '2', { name: 'two' }));
  await subscribeOrRefusal(u2, ch);
  // A second connection of a user who is present is not a new member.
  const u1b = await connect(t, app, presenceAuth(ep, '1', { name: 'one' }));
  const chU1b = await subscribeOrRefusal(u1b, ch);
  assert.equal(chU1b.members.count, 2, 'second connection of user 1 accepted at the limit');

  const u3 = await connect(t, app, presenceAuth(ep, '3', { name: 'three' }));
  return { ep, ch, u1, u2, u3 };
}

test('presence, Pusher mode: member limit 2 refuses a third user, accepts a 2nd connection of a present user', opts, async (t) => {
  const app = featureApp('limits'); // max_presence_members: 2, pusher mode
  const { ep, ch, u1, u3 } = await memberLimitScenario(t, app);
  const from = u3.errors.length;
  const channel = u3.pusher.subscribe(ch);
  const err = await errorAfter(u3, from, isPusherError, 'pusher:error for the third member');
  assert.equal(err.data.code, null, JSON.stringify(err));
  await barrierSubscribe(u3, 'after-full');
  assert.equal(channel.subscribed, false);
  assert.equal(u3.eventsOn(ch, 'pusher_internal:subscription_succeeded').length, 0);

  await restBarrier(ep.sdk, ch, [u1]);
  assert.deepEqual(
    u1.eventsOn(ch, 'pusher_internal:member_added').map((m) => String(m.data.user_id)),
    ['2'],
    'user 3 was never added',
  );
  const users = await (await ep.sdk.get({ path: `/channels/${ch}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['1', '2']);
});

test('presence, soketi mode: member limit gives the channel subscription_error LimitReached/4100', opts, async (t) => {
  const app = featureApp('soketi'); // max_presence_members: 2, soketi mode
  const { ch, u3 } = await memberLimitScenario(t, app);
  const channel = u3.pusher.subscribe(ch);
  const [err] = await nextEvent(channel, 'pusher:subscription_error', 'subscription_error for the third member');
  assert.equal(err.type, 'LimitReached', JSON.stringify(err));
  assert.equal(err.status, 4100, JSON.stringify(err));
  await barrierSubscribe(u3, 'after-full-soketi');
  assert.equal(channel.subscribed, false);
});

test('presence: user_info over max_presence_user_info_bytes (1024) is refused, in both modes', opts, async (t) => {
  const info = { name: 'big', bio: 'x'.repeat(1100) }; // > 1024 bytes of JSON
  assert.ok(JSON.stringify(info).length > 1024);

  // Pusher mode: pusher:error, code null.
  {
    const app = featureApp('limits');
    const ep = await startAuthEndpoint(t, app);
    const ch = uniq('presence-big');
    const small = await connect(t, app, presenceAuth(ep, '1', { name: 'small' }));
    await subscribeOrRefusal(small, ch);
    const big = await connect(t, app, presenceAuth(ep, '2', info));
    const from = big.errors.length;
    const channel = big.pusher.subscribe(ch);
    const err = await errorAfter(big, from, isPusherError, 'pusher:error for oversized user_info');
    assert.equal(err.data.code, null, JSON.stringify(err));
    await barrierSubscribe(big, 'after-big');
    assert.equal(channel.subscribed, false);
    await restBarrier(ep.sdk, ch, [small]);
    assert.equal(small.eventsOn(ch, 'pusher_internal:member_added').length, 0, 'the oversized member was not added');
  }
  // soketi mode: channel-scoped subscription_error.
  {
    const app = featureApp('soketi');
    const ep = await startAuthEndpoint(t, app);
    const ch = uniq('presence-big-soketi');
    const big = await connect(t, app, presenceAuth(ep, '2', info));
    const channel = big.pusher.subscribe(ch);
    const [err] = await nextEvent(channel, 'pusher:subscription_error', 'subscription_error for oversized user_info');
    t.diagnostic(`soketi-mode oversize error: ${JSON.stringify(err)}`);
    assert.equal(channel.subscribed, false);
  }
});

// ---------------------------------------------------------------------------
// 3. End-to-end encrypted channels

test('private-encrypted: the SDK encrypts, Herald relays the ciphertext, pusher-js decrypts', opts, async (t) => {
  // In Node, `pusher-js` (dist/node) is the with-encryption build: its export
  // is PusherWithEncryption and sets config.nacl. (`pusher-js/with-encryption`
  // resolves to the browser bundle, which does not load in Node.)
  assert.equal(Pusher.name, 'PusherWithEncryption');
  const app = featureApp('main');
  const encryptionMasterKeyBase64 = randomBytes(32).toString('base64');
  const ep = await startAuthEndpoint(t, app, { encryptionMasterKeyBase64 });
  const c = await connect(t, app, { channelAuthorization: ep.channelAuth() });
  assert.ok(c.pusher.config.nacl, 'client has nacl');

  const ch = uniq('private-encrypted-e2e');
  const channel = await subscribeOrRefusal(c, ch);
  const got = nextEvent(channel, 'secret', `decrypted secret on ${ch}`);
  const payload = { text: 'attack at dawn', n: 42 };
  const res = await sdkFor(app, { encryptionMasterKeyBase64 }).trigger(ch, 'secret', payload);
  assert.equal(res.status, 200);
  assert.deepEqual((await got)[0], payload);

  // What crossed Herald was ciphertext.
  const [wire] = c.eventsOn(ch, 'secret');
  assert.equal(typeof wire.data.nonce, 'string');
  assert.equal(typeof wire.data.ciphertext, 'string');
  assert.ok(!JSON.stringify(wire.data).includes('attack'), 'no plaintext on the wire');
});

// ---------------------------------------------------------------------------
// 4. Cache channels

test('cache channels: the last event triggered with no subscribers arrives right after subscription_succeeded', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  for (const prefix of ['cache-', 'private-cache-']) {
    const ch = uniq(`${prefix}last`);
    // Nobody is subscribed: these are only cached (the last one wins).
    await ep.sdk.trigger(ch, 'price', { n: 1 });
    await ep.sdk.trigger(ch, 'price', { n: 2 });

    const c = await connect(t, app, { channelAuthorization: ep.channelAuth() });
    const channel = c.pusher.subscribe(ch);
    const got = nextEvent(channel, 'price', `cached price on ${ch}`);
    await withTimeout(
      new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve)),
      WAIT_MS,
      `subscription_succeeded on ${ch}`,
    );
    assert.deepEqual((await got)[0], { n: 2 }, `${ch}: the cached event is the last one`);
    const next = afterSucceeded(c, ch)[0];
    assert.equal(next.event, 'price', `${ch}: the cached event comes right after subscription_succeeded`);

    await restBarrier(ep.sdk, ch, [c]);
    assert.deepEqual(
      c.eventsOn(ch, 'price').map((m) => m.data.n),
      [2],
      `${ch}: only the last event is replayed`,
    );
    assert.equal(c.eventsOn(ch, 'pusher:cache_miss').length, 0, `${ch}: no cache_miss when something is cached`);
  }
});

test('cache channels: nothing cached gives pusher:cache_miss right after subscription_succeeded; non-cache channels never do', opts, async (t) => {
  const app = featureApp('main');
  const sdk = sdkFor(app);
  const c = await connect(t, app);
  const empty = uniq('cache-empty');
  const channel = c.pusher.subscribe(empty);
  const miss = nextEvent(channel, 'pusher:cache_miss', `pusher:cache_miss on ${empty}`);
  await withTimeout(
    new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve)),
    WAIT_MS,
    `subscription_succeeded on ${empty}`,
  );
  await miss;
  assert.equal(afterSucceeded(c, empty)[0].event, 'pusher:cache_miss');

  const plain = uniq('not-cache');
  await subscribeOrRefusal(c, plain);
  await restBarrier(sdk, plain, [c]);
  assert.equal(c.eventsOn(plain, 'pusher:cache_miss').length, 0);
  await restBarrier(sdk, empty, [c]);
  assert.equal(c.eventsOn(empty, 'pusher:cache_miss').length, 1, 'one cache_miss per subscribe');
});

// ---------------------------------------------------------------------------
// 5. Client events

/** Two clients of app subscribed to channel through ep; returns [a, chA, b, chB]. */
async function pair(t, app, ep, ch, users = ['1', '2']) {
  const a = await connect(t, app, presenceAuth(ep, users[0], { name: `user${users[0]}` }));
  const chA = await subscribeOrRefusal(a, ch);
  const b = await connect(t, app, presenceAuth(ep, users[1], { name: `user${users[1]}` }));
  const chB = await subscribeOrRefusal(b, ch);
  return [a, chA, b, chB];
}

test('client events, private channel: the other subscriber gets client-typing, the sender does not', opts, async (t) => {
  const app = featureApp('main'); // client_events: true
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('private-chat');
  const [a, chA, b, chB] = await pair(t, app, ep, ch);
  const onA = record(chA, 'client-typing');

  const got = nextEvent(chB, 'client-typing', 'client-typing on B');
  assert.equal(chA.trigger('client-typing', { user: 'a', typing: true }), true);
  const [data, metadata] = await got;
  assert.deepEqual(data, { user: 'a', typing: true });
  assert.equal(metadata?.user_id, undefined, 'no user_id on private channels');
  const [wire] = b.eventsOn(ch, 'client-typing');
  assert.equal(wire.user_id, undefined, 'no user_id in the frame on private channels');

  await restBarrier(ep.sdk, ch, [a, b]);
  assert.deepEqual(onA, [], 'the sender does not get its own client event');
  assert.equal(a.eventsOn(ch, 'client-typing').length, 0);
  assert.equal(b.eventsOn(ch, 'client-typing').length, 1);
});

test('client events, presence channel: the receiver gets the sender user_id as metadata.user_id', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('presence-chat');
  const [a, chA, b, chB] = await pair(t, app, ep, ch, ['alice-1', 'bob-2']);

  const gotB = nextEvent(chB, 'client-typing', 'client-typing from alice on B');
  chA.trigger('client-typing', { typing: true });
  const [data, metadata] = await gotB;
  assert.deepEqual(data, { typing: true });
  assert.equal(metadata.user_id, 'alice-1');

  const gotA = nextEvent(chA, 'client-typing', 'client-typing from bob on A');
  chB.trigger('client-typing', { typing: false });
  const [dataA, metaA] = await gotA;
  assert.deepEqual(dataA, { typing: false });
  assert.equal(metaA.user_id, 'bob-2');

  await restBarrier(ep.sdk, ch, [a, b]);
  assert.equal(a.eventsOn(ch, 'client-typing').length, 1, 'A got only B’s event');
  assert.equal(b.eventsOn(ch, 'client-typing').length, 1, 'B got only A’s event');
});

test('client events: an app with client_events off answers pusher:error and relays nothing', opts, async (t) => {
  const app = featureApp('noclient'); // client_events: false
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('private-quiet');
  const [a, chA, b] = await pair(t, app, ep, ch);
  const from = a.errors.length;
  chA.trigger('client-typing', { n: 1 });
  const err = await errorAfter(a, from, isPusherError, 'pusher:error for a client event with client events off');
  t.diagnostic(`client events off: ${JSON.stringify(err.data)}`);
  await restBarrier(ep.sdk, ch, [a, b]);
  assert.equal(b.eventsOn(ch, 'client-typing').length, 0, 'not relayed');
  assert.equal(a.pusher.connection.state, 'connected', 'connection stays open');
});

test('client events: on a public channel they are refused with pusher:error (raw ws; pusher-js would not send them)', opts, async (t) => {
  const app = featureApp('main');
  const sdk = sdkFor(app);
  const path = `/app/${app.key}?protocol=7&client=js&version=8.6.0&flash=false`;
  const ch = uniq('public-chat');
  const [sender, receiver] = [await rawSocket(t, path), await rawSocket(t, path)];
  for (const s of [sender, receiver]) {
    await s.established();
    const from = s.frames.length;
    s.send({ event: 'pusher:subscribe', data: { auth: '', channel: ch } });
    await s.waitFrame((m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === ch, `subscribe ${ch}`, from);
  }
  const from = sender.frames.length;
  sender.send({ event: 'client-typing', channel: ch, data: { n: 1 } });
  const f = await sender.waitFrame((m) => m.event === 'pusher:error', 'pusher:error for a public-channel client event', from);
  t.diagnostic(`public channel: ${f.raw}`);
  await sender.roundTrip('pong after the refused client event (connection open)');
  assert.equal(sender.closed, null);

  await sdk.trigger(ch, 'barrier', {});
  await receiver.waitFrame((m) => m.event === 'barrier' && m.channel === ch, 'barrier on the receiver');
  assert.equal(receiver.frames.filter((x) => x.msg?.event === 'client-typing').length, 0, 'not relayed');
});

test('client events: a connection not subscribed to the channel is refused', opts, async (t) => {
  const app = featureApp('main');
  const s = await rawSocket(t, `/app/${app.key}?protocol=7&client=js&version=8.6.0&flash=false`);
  await s.established();
  const ch = uniq('private-elsewhere');
  const from = s.frames.length;
  s.send({ event: 'client-typing', channel: ch, data: {} });
  const f = await s.waitFrame((m) => m.event === 'pusher:error', 'pusher:error for a client event off-channel', from);
  assert.match(f.msg.data.message, /not subscribed/, f.raw);
  await s.roundTrip();
  assert.equal(s.closed, null);
});

test('client events: the 11th event within a second gets pusher:error 4301 and is dropped; the connection stays open', opts, async (t) => {
  const app = featureApp('main'); // client_event_rate: 10
  const ep = await startAuthEndpoint(t, app);
  const ch = uniq('private-rate');
  const [a, chA, b] = await pair(t, app, ep, ch);
  const from = a.errors.length;
  for (let n = 1; n <= 11; n++) chA.trigger('client-burst', { n });
  const err = await errorAfter(a, from, (e) => codeOf(e) === 4301, 'pusher:error 4301 after 11 client events');
  assert.equal(err.type, 'PusherError');

  await restBarrier(ep.sdk, ch, [a, b]);
  assert.deepEqual(
    b.eventsOn(ch, 'client-burst').map((m) => m.data.n),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    'the first 10 are relayed, the 11th is dropped',
  );
  assert.equal(a.errors.slice(from).filter((e) => codeOf(e) === 4301).length, 1, 'one 4301 error');
  assert.equal(a.pusher.connection.state, 'connected', 'never closed for the rate limit');
  await barrierSubscribe(a, 'after-rate');
});

// ---------------------------------------------------------------------------
// 6. User sign-in, server-to-user, terminate

/** A client signed in as userId; resolves once #server-to-user-<id> is subscribed. */
async function signedIn(t, app, ep, userId, params = {}) {
  const c = await connect(t, app, { userAuthentication: ep.userAuth({ user_id: userId, ...params }) });
  c.pusher.signin();
  await withTimeout(c.pusher.user.signinDonePromise, WAIT_MS, `signinDonePromise for ${userId}`);
  await c.waitForEvent(`#server-to-user-${userId}`, 'pusher_internal:subscription_succeeded', `#server-to-user-${userId} subscribed`);
  return c;
}

test('signin: pusher.signin() gets pusher:signin_success and pusher.user.user_data', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const uid = uniq('user');
  const c = await connect(t, app, {
    userAuthentication: ep.userAuth({ user_id: uid, user_info: JSON.stringify({ name: 'Ann' }) }),
  });
  c.pusher.signin();
  const ok = await c.waitForEvent(undefined, 'pusher:signin_success');
  await withTimeout(c.pusher.user.signinDonePromise, WAIT_MS, 'signinDonePromise');
  assert.deepEqual(c.pusher.user.user_data, { id: uid, user_info: { name: 'Ann' } });
  assert.deepEqual(JSON.parse(ok.data.user_data), { id: uid, user_info: { name: 'Ann' } });
  const req = ep.requests.find((r) => r.path === '/pusher/user-auth');
  assert.equal(req.params.socket_id, c.socketId);
  // pusher-js then subscribes to the user's internal channel.
  await c.waitForEvent(`#server-to-user-${uid}`, 'pusher_internal:subscription_succeeded', 'server-to-user channel');
});

test('signin: a wrong signature is refused with pusher:error and no signin_success', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const uid = uniq('forger');
  const c = await connect(t, app, { userAuthentication: ep.userAuth({ user_id: uid, forge: '1' }) });
  const from = c.errors.length;
  c.pusher.signin();
  const err = await errorAfter(c, from, isPusherError, 'pusher:error for a forged signin');
  t.diagnostic(`forged signin: ${JSON.stringify(err.data)}`);
  // Unless the app requires authorized connections, the connection stays.
  await barrierSubscribe(c, 'after-forged-signin');
  assert.equal(c.eventsOn(undefined, 'pusher:signin_success').length, 0);
  assert.equal(c.pusher.user.user_data, null);
});

test('signin: again as the same user succeeds again; as another user on the same connection is refused', opts, async (t) => {
  const app = featureApp('main');
  const sdk = sdkFor(app);
  const s = await rawSocket(t, `/app/${app.key}?protocol=7&client=js&version=8.6.0&flash=false`);
  const { data } = await s.established();
  const signin = (id) => {
    const a = sdk.authenticateUser(data.socket_id, { id });
    s.send({ event: 'pusher:signin', data: a });
    return a;
  };
  const [u1, u2] = [uniq('first'), uniq('second')];
  for (const round of [1, 2]) {
    const from = s.frames.length;
    const a = signin(u1);
    const f = await s.waitFrame((m) => m.event === 'pusher:signin_success' || m.event === 'pusher:error', `signin ${round} as ${u1}`, from);
    assert.equal(f.msg.event, 'pusher:signin_success', `round ${round}: ${f.raw}`);
    const d = typeof f.msg.data === 'string' ? JSON.parse(f.msg.data) : f.msg.data;
    assert.equal(d.user_data, a.user_data, 'signin_success echoes user_data');
  }
  const from = s.frames.length;
  signin(u2);
  const f = await s.waitFrame((m) => m.event === 'pusher:signin_success' || m.event === 'pusher:error', `signin as ${u2}`, from);
  assert.equal(f.msg.event, 'pusher:error', `a second identity must be refused: ${f.raw}`);
  await s.roundTrip();
  // Still u1: its internal channel is allowed, u2's is not.
  const from2 = s.frames.length;
  s.send({ event: 'pusher:subscribe', data: { auth: '', channel: `#server-to-user-${u1}` } });
  await s.waitFrame(
    (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === `#server-to-user-${u1}`,
    `#server-to-user-${u1} subscribed`,
    from2,
  );
});

test('#server-to-user-<id> cannot be subscribed without signing in as that user', opts, async (t) => {
  const app = featureApp('main');
  const s = await rawSocket(t, `/app/${app.key}?protocol=7&client=js&version=8.6.0&flash=false`);
  await s.established();
  const ch = `#server-to-user-${uniq('victim')}`;
  const from = s.frames.length;
  s.send({ event: 'pusher:subscribe', data: { auth: '', channel: ch } });
  await s.waitFrame((m) => m.event === 'pusher:error' || m.event === 'pusher:subscription_error', `refusal of ${ch}`, from);
  await s.roundTrip();
  assert.equal(
    s.frames.slice(from).filter((f) => f.msg?.event === 'pusher_internal:subscription_succeeded').length,
    0,
  );
});

test('sendToUser reaches pusher.user.bind on every connection of that user and no one else', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const [u1, u2] = [uniq('alice'), uniq('bob')];
  const a1 = await signedIn(t, app, ep, u1);
  const a2 = await signedIn(t, app, ep, u1);
  const b = await signedIn(t, app, ep, u2);

  const onB = record(b.pusher.user, 'notice');
  const got1 = nextEvent(a1.pusher.user, 'notice', `notice on ${u1} connection 1`);
  const got2 = nextEvent(a2.pusher.user, 'notice', `notice on ${u1} connection 2`);
  const res = await ep.sdk.sendToUser(u1, 'notice', { hello: u1 });
  assert.equal(res.status, 200);
  assert.deepEqual((await got1)[0], { hello: u1 });
  assert.deepEqual((await got2)[0], { hello: u1 });

  const barrier = nextEvent(b.pusher.user, 'barrier', `barrier on ${u2}`);
  await ep.sdk.sendToUser(u2, 'barrier', {});
  await barrier;
  assert.deepEqual(onB, [], 'the other user got nothing');
  assert.equal(a1.eventsOn(`#server-to-user-${u1}`, 'notice').length, 1, 'exactly once');
});

test("terminateUserConnections closes all of the user's connections and no one else's", opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const [u1, u2] = [uniq('banned'), uniq('bystander')];
  const a1 = await signedIn(t, app, ep, u1);
  const a2 = await signedIn(t, app, ep, u1);
  const b = await signedIn(t, app, ep, u2);
  // In a presence channel as u1 but never signed in: not terminated (docs).
  const pch = uniq('presence-terminate');
  const p = await connect(t, app, presenceAuth(ep, u1, { name: 'presence only' }));
  await subscribeOrRefusal(p, pch);

  // pusher-js quirk in Node: on a close it must not retry (4000-4099) it calls
  // close() again on the already closed faye-websocket, which then arms a 30 s
  // close timer that keeps node alive. Keep the sockets to disarm it.
  const sockets = [a1, a2].map((c) => c.pusher.connection.connection?.transport?.socket);
  const disarm = () => sockets.forEach((s) => s?._closeTimer && clearTimeout(s._closeTimer));
  t.after(disarm);

  const left = [leftConnected(a1, `${u1} connection 1 closed`), leftConnected(a2, `${u1} connection 2 closed`)];
  const res = await ep.sdk.terminateUserConnections(u1);
  assert.equal(res.status, 200);
  const states = await Promise.all(left);
  disarm();
  t.diagnostic(
    `terminated: states ${JSON.stringify(states)}, close errors ${JSON.stringify([a1.errors, a2.errors].map((e) => e.map(codeOf)))}`,
  );

  // The bystander is untouched: still connected and still reachable.
  const barrier = nextEvent(b.pusher.user, 'still-here', `still-here on ${u2}`);
  await ep.sdk.sendToUser(u2, 'still-here', {});
  await barrier;
  assert.equal(b.pusher.connection.state, 'connected');
  assert.deepEqual(b.errors, []);
  await restBarrier(ep.sdk, pch, [p]);
  assert.equal(p.pusher.connection.state, 'connected', 'a presence member that never signed in is not terminated');
  assert.deepEqual(p.errors, []);
});

// ---------------------------------------------------------------------------
// 7. REST queries through the SDK

/** Expects an SDK call to reject with HTTP status. */
async function rejectsWith(promise, status, what) {
  const err = await promise.then(
    (res) => assert.fail(`${what}: expected HTTP ${status}, got ${res.status}`),
    (e) => e,
  );
  assert.equal(err.status, status, `${what}: ${err.message} ${err.body ?? ''}`);
}

test('REST queries: channels, channel info, users, trigger and batch with info', opts, async (t) => {
  const app = featureApp('main');
  const ep = await startAuthEndpoint(t, app);
  const sdk = ep.sdk;
  const tag = randomBytes(4).toString('hex');
  const pch = `presence-rest-${tag}`;
  const pub = `rest-${tag}`;

  // Presence: user 1 on two connections, user 2 on one.
  for (const [id, name] of [['1', 'one'], ['1', 'one'], ['2', 'two']]) {
    const c = await connect(t, app, presenceAuth(ep, id, { name }));
    await subscribeOrRefusal(c, pch);
  }
  const p = await connect(t, app);
  await subscribeOrRefusal(p, pub);

  const json = async (promise) => {
    const res = await promise;
    assert.equal(res.status, 200);
    return res.json();
  };

  assert.deepEqual(
    await json(sdk.get({ path: '/channels', params: { filter_by_prefix: `presence-rest-${tag}`, info: 'user_count' } })),
    { channels: { [pch]: { user_count: 2 } } },
    'GET /channels presence prefix with user_count',
  );
  assert.deepEqual(
    await json(sdk.get({ path: '/channels', params: { filter_by_prefix: `rest-${tag}` } })),
    { channels: { [pub]: {} } },
    'GET /channels with a public prefix',
  );
  // Signed-in users' internal channels are not listed.
  const signer = await signedIn(t, app, ep, uniq('lister'));
  assert.ok(signer.pusher.user.user_data);
  const all = await json(sdk.get({ path: '/channels' }));
  assert.deepEqual(Object.keys(all.channels).filter((n) => n.startsWith('#')), [], 'no #server-to-user- channels');
  assert.ok(pub in all.channels && pch in all.channels, 'GET /channels without a prefix lists ours');
  await rejectsWith(
    sdk.get({ path: '/channels', params: { filter_by_prefix: 'rest-', info: 'user_count' } }),
    400,
    'user_count without a presence- prefix',
  );

  assert.deepEqual(
    await json(sdk.get({ path: `/channels/${pch}`, params: { info: 'subscription_count,user_count' } })),
    { occupied: true, user_count: 2, subscription_count: 3 },
    'GET presence channel info',
  );
  assert.deepEqual(
    await json(sdk.get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } })),
    { occupied: true, subscription_count: 1 },
    'GET public channel info',
  );
  await rejectsWith(sdk.get({ path: `/channels/${pub}`, params: { info: 'user_count' } }), 400, 'user_count on a public channel');
  assert.equal((await json(sdk.get({ path: `/channels/rest-empty-${tag}` }))).occupied, false);

  const users = await json(sdk.get({ path: `/channels/${pch}/users` }));
  assert.deepEqual(
    users.users.map((u) => u.id).sort(),
    ['1', '2'],
  );
  assert.ok(users.users.every((u) => typeof u.id === 'string'), 'user ids are strings');
  await rejectsWith(sdk.get({ path: `/channels/${pub}/users` }), 400, 'users of a public channel');

  assert.deepEqual(
    await json(sdk.trigger([pch, pub], 'counted', { n: 1 }, { info: 'subscription_count,user_count' })),
    { channels: { [pch]: { user_count: 2, subscription_count: 3 }, [pub]: { subscription_count: 1 } } },
    'trigger with info',
  );
  assert.deepEqual(
    await json(
      sdk.triggerBatch([
        { channel: pch, name: 'b', data: { n: 1 }, info: 'user_count,subscription_count' },
        { channel: pub, name: 'b', data: { n: 2 } },
        { channel: pub, name: 'b', data: { n: 3 }, info: 'subscription_count' },
      ]),
    ),
    { batch: [{ user_count: 2, subscription_count: 3 }, {}, { subscription_count: 1 }] },
    'triggerBatch with info',
  );
  await p.waitFor((m) => m.channel === pub && m.event === 'b' && m.data.n === 3, 'the batch was delivered');
});

// ---------------------------------------------------------------------------
// 8. subscription_count events

test('subscription_count: with the app option on, subscribers get pusher:subscription_count on every change', opts, async (t) => {
  const app = featureApp('counts'); // subscription_count: true
  const ch = uniq('counted');
  const a = await connect(t, app);
  const chA = a.pusher.subscribe(ch);
  const countsA = record(chA, 'pusher:subscription_count');
  const countIs = (c, n, label) =>
    c.waitFor(
      (m) => m.channel === ch && m.event === 'pusher_internal:subscription_count' && m.data.subscription_count === n && !m.seen,
      label,
    ).then((m) => {
      m.seen = true; // so a later wait for the same number needs a new event
      return m;
    });

  await countIs(a, 1, 'count 1 on A after its own subscribe');
  const b = await connect(t, app);
  const chB = await subscribeOrRefusal(b, ch);
  await countIs(a, 2, 'count 2 on A after B subscribed');
  await countIs(b, 2, 'count 2 on B after its own subscribe');
  assert.equal(chA.subscriptionCount, 2);
  assert.equal(chB.subscriptionCount, 2);

  b.pusher.unsubscribe(ch);
  await countIs(a, 1, 'count 1 on A after B unsubscribed');
  assert.equal(chA.subscriptionCount, 1);
  assert.deepEqual(
    countsA.map(([d]) => d.subscription_count),
    [1, 2, 1],
    'pusher:subscription_count events on A',
  );
});

test('subscription_count: every change is reported below 100 subscribers, even two joins in a row', opts, async (t) => {
  // Spec 2.9: an event on every subscribe/unsubscribe; only channels with
  // more than 100 subscribers may be throttled (to one per 5 s). Each event
  // carries the count when it was sent, so of two joins at once the first
  // event may already say 3: one event per change, never decreasing, ending
  // at the true count.
  const app = featureApp('counts');
  const sdk = sdkFor(app);
  const ch = uniq('counted-burst');
  const a = await connect(t, app);
  await subscribeOrRefusal(a, ch);
  await a.waitFor(
    (m) => m.channel === ch && m.event === 'pusher_internal:subscription_count' && m.data.subscription_count === 1,
    'count 1 on A',
  );
  const [b, c] = [await connect(t, app), await connect(t, app)];
  await Promise.all([subscribeOrRefusal(b, ch), subscribeOrRefusal(c, ch)]);
  await a.waitFor(
    (m) => m.channel === ch && m.event === 'pusher_internal:subscription_count' && m.data.subscription_count === 3,
    'count 3 on A',
  );
  await restBarrier(sdk, ch, [a]);
  const seen = a.eventsOn(ch, 'pusher_internal:subscription_count').map((m) => m.data.subscription_count);
  assert.equal(seen.length, 3, `one subscription_count per change: ${JSON.stringify(seen)}`);
  assert.equal(seen[0], 1);
  assert.ok(seen[1] === 2 || seen[1] === 3, `second event: 2, or 3 if both joins were in: ${JSON.stringify(seen)}`);
  assert.equal(seen[2], 3, `the last event has the true count: ${JSON.stringify(seen)}`);
});

test('subscription_count: off by default, and never on presence channels', opts, async (t) => {
  // Off: the main app has no subscription_count option.
  {
    const app = featureApp('main');
    const sdk = sdkFor(app);
    const ch = uniq('uncounted');
    const a = await connect(t, app);
    await subscribeOrRefusal(a, ch);
    const b = await connect(t, app);
    await subscribeOrRefusal(b, ch);
    await restBarrier(sdk, ch, [a, b]);
    assert.equal(a.eventsOn(ch, 'pusher_internal:subscription_count').length, 0, 'no count events when off');
  }
  // Presence channels use member events instead.
  {
    const app = featureApp('counts');
    const ep = await startAuthEndpoint(t, app);
    const ch = uniq('presence-counted');
    const [a, , b] = await pair(t, app, ep, ch);
    await restBarrier(ep.sdk, ch, [a, b]);
    assert.equal(a.eventsOn(ch, 'pusher_internal:subscription_count').length, 0, 'no count events on presence');
  }
});
