// A soak of the real clients against one Herald node: pusher-js, Laravel
// Echo and the `pusher` server SDK, many rounds of connecting, subscribing to
// every channel kind, receiving events, whispering and leaving, some
// politely and some by dropping the socket. Every subscription must be
// acknowledged within WAIT_MS, every event must arrive, every whisper must
// reach the other client and not the sender.
//
// It is the regression test of a defect found this way (issue 18, docs/limits.md
// "Long runs from one address"): after enough traffic, one subscription in a
// long run was never acknowledged.
//
// Runs under `go test ./tests/e2e/ -run TestSoak` (tests/e2e/soak_test.go),
// which starts Herald with the feature apps; skips elsewhere. Knobs:
//   HERALD_SOAK_ROUNDS    rounds (default 40)
//   HERALD_SOAK_PARALLEL  scenarios run at once in a round (default 4)
// A failure names the scenario, the round, the client's socket id, and the
// frames that client sent and received, with times.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

import { HOST, PORT, WAIT_MS, uniq, withTimeout } from './helpers.mjs';
import { SKIP_WITHOUT_FEATURES, featureApp, sdkFor, startAuthEndpoint } from './auth-endpoint.mjs';

const ROUNDS = Number(process.env.HERALD_SOAK_ROUNDS || 40);
const PARALLEL = Number(process.env.HERALD_SOAK_PARALLEL || 4);

/**
 * A channel tag for one scenario run. Odd rounds reuse the same names for a
 * slot and scenario kind, so channels are occupied, vacated and occupied
 * again (the node's channel index, presence registry and bus interest go
 * through their whole cycle); even rounds use fresh names.
 */
const tagOf = (round, slot, kind) => (round % 2 ? `s${slot}-${kind}` : randomBytes(4).toString('hex'));

// ---------------------------------------------------------------------------
// Traced clients: every frame a client sends and receives, for the report.

const open = new Set();
after(() => {
  for (const c of open) c.close();
  open.clear();
});

const t0 = Date.now();
const stamp = () => ((Date.now() - t0) / 1000).toFixed(3);

/**
 * Wraps a pusher-js instance (its own, or Echo's): records what it sends
 * (send_event, which subscribe, unsubscribe, signin and client events go
 * through) and everything it receives.
 */
class Traced {
  constructor(label, pusher, closeFn) {
    this.label = label;
    this.pusher = pusher;
    this.closeFn = closeFn;
    this.trace = [];
    this.messages = [];
    this.errors = [];
    this.waiters = [];
    const send = pusher.send_event.bind(pusher);
    pusher.send_event = (event, data, channel) => {
      this.trace.push(`${stamp()} > ${event} ${channel ?? ''} ${short(data)}`);
      return send(event, data, channel);
    };
    pusher.connection.bind('message', (m) => {
      this.trace.push(`${stamp()} < ${m.event} ${m.channel ?? ''} ${short(m.data)}`);
      this.messages.push(m);
      this.check();
    });
    pusher.connection.bind('state_change', ({ previous, current }) => {
      this.trace.push(`${stamp()} state ${previous} -> ${current} (socket ${pusher.connection.socket_id})`);
    });
    pusher.connection.bind('error', (e) => {
      this.errors.push(e);
      this.trace.push(`${stamp()} error ${short(e)}`);
    });
    open.add(this);
  }

  get socketId() {
    return this.pusher.connection.socket_id;
  }

  close() {
    open.delete(this);
    try {
      this.closeFn();
    } catch {
      // already gone
    }
  }

  /** Drops the TCP connection without a closing handshake (a tab killed, a network gone). */
  drop() {
    open.delete(this);
    const sock = this.pusher.connection.connection?.transport?.socket;
    // faye-websocket (pusher-js in Node): _driver's io stream is the TCP socket.
    const tcp = sock?._stream ?? sock?._driver?.io;
    if (tcp?.destroy) {
      this.pusher.connection.unbind();
      tcp.destroy();
      try {
        this.pusher.disconnect();
      } catch {
        // the socket is gone already
      }
    } else {
      this.close();
    }
  }

  check() {
    this.waiters = this.waiters.filter((w) => !w());
  }

  /** Resolves with the first received message matching pred. */
  waitFor(pred, label, ms = WAIT_MS) {
    return withTimeout(
      new Promise((resolve) => {
        const w = () => {
          const m = this.messages.find(pred);
          if (m === undefined) return false;
          resolve(m);
          return true;
        };
        if (!w()) this.waiters.push(w);
      }),
      ms,
      label,
    );
  }

  report() {
    let lines = this.trace;
    if (lines.length > 100) {
      lines = [...lines.slice(0, 20), `… ${lines.length - 80} more …`, ...lines.slice(-60)];
    }
    return `${this.label} (socket ${this.socketId}, state ${this.pusher.connection.state}):\n    ` + lines.join('\n    ');
  }
}

function short(v) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  if (s === undefined) return '';
  return s.length > 160 ? s.slice(0, 160) + '…' : s;
}

/** A failure that carries the traces of the clients involved. */
class SoakError extends Error {
  constructor(message, clients) {
    super(`${message}\n  ${clients.map((c) => c.report()).join('\n  ')}`);
  }
}

/** Waits for conditions, failing with every involved client's trace. */
async function expect(clients, promise) {
  try {
    return await promise;
  } catch (err) {
    throw new SoakError(err.message, clients);
  }
}

function pusherClient(label, app, options = {}) {
  const p = new Pusher(app.key, {
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    ...options,
  });
  return new Traced(label, p, () => p.disconnect());
}

function echoClient(label, app, ep, authParams) {
  const echo = new Echo({
    broadcaster: 'pusher',
    key: app.key,
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    Pusher,
    authEndpoint: `${ep.base}/broadcasting/auth`,
    auth: { headers: {}, params: authParams },
  });
  const c = new Traced(label, echo.connector.pusher, () => echo.disconnect());
  c.echo = echo;
  return c;
}

function connected(c) {
  const conn = c.pusher.connection;
  return expect(
    [c],
    withTimeout(
      new Promise((resolve) => {
        if (conn.state === 'connected') return resolve();
        conn.bind('connected', resolve);
      }),
      WAIT_MS,
      `${c.label} connected`,
    ),
  );
}

/** Subscribes through pusher-js and waits for the acknowledgement (or fails with the refusal). */
function subscribe(c, name) {
  const ch = c.pusher.subscribe(name);
  return acked(c, ch, name).then(() => ch);
}

/** Waits for a pusher-js channel's subscription_succeeded, or fails at once on an error. */
function acked(c, ch, name) {
  stats.subscriptions++;
  return expect(
    [c],
    withTimeout(
      new Promise((resolve, reject) => {
        if (ch.subscribed) return resolve();
        ch.bind('pusher:subscription_succeeded', () => resolve());
        ch.bind('pusher:subscription_error', (e) => reject(new Error(`subscription to ${name} failed: ${short(e)}`)));
      }),
      WAIT_MS,
      `${c.label}: subscription_succeeded on ${name}`,
    ),
  );
}

/** Waits until c received event on channel (data matching when given). */
function received(clients, c, channel, event, data) {
  stats.events++;
  return expect(
    clients,
    c.waitFor(
      (m) => m.channel === channel && m.event === event && (data === undefined || JSON.stringify(m.data) === JSON.stringify(data)),
      `${c.label}: ${event} on ${channel}${data === undefined ? '' : ' ' + JSON.stringify(data)}`,
    ),
  );
}

const stats = { scenarios: 0, subscriptions: 0, events: 0, connections: 0 };

// ---------------------------------------------------------------------------
// Scenarios. Each one opens its own clients and closes (or drops) them; a
// run is {round, slot, tag}.

/** Presence auth params: a user id unique to the run, user_info {name}. */
const presenceParams = (run, who) => ({
  user_id: `${who}-${run.round}-${run.slot}`,
  user_info: JSON.stringify({ name: `user ${who}` }),
});

/**
 * pusher-js: signs in, then public, private, presence, private-encrypted and
 * cache channels on one connection; an event on each (and one to the user);
 * unsubscribes from two and leaves, politely or by dropping the socket.
 */
async function everyKind(ctx, run) {
  const uid = `soak-user-${run.tag}-${run.round}`;
  const c = pusherClient(`everyKind r${run.round} s${run.slot}`, ctx.app, {
    channelAuthorization: ctx.ep.channelAuth(presenceParams(run, 'k')),
    userAuthentication: ctx.ep.userAuth({ user_id: uid }),
  });
  stats.connections++;
  try {
    await connected(c);
    c.pusher.signin();
    const t = run.tag;
    const names = [`soak-pub-${t}`, `private-soak-${t}`, `presence-soak-${t}`, `private-encrypted-soak-${t}`];
    const cache = `cache-soak-${t}`;
    const chans = await Promise.all(names.map((n) => subscribe(c, n)));
    const decrypted = new Promise((resolve) => chans[3].bind('secret', resolve));
    await received([c], c, `#server-to-user-${uid}`, 'pusher_internal:subscription_succeeded');
    stats.subscriptions++;

    // The cached event, triggered before the subscription, arrives after it.
    await ctx.ep.sdk.trigger(cache, 'cached', { n: run.round });
    await subscribe(c, cache);

    await ctx.ep.sdk.triggerBatch(names.slice(0, 3).map((n, i) => ({ channel: n, name: 'ev', data: { i, round: run.round } })));
    await ctx.encSdk.trigger(names[3], 'secret', { round: run.round });
    await ctx.ep.sdk.sendToUser(uid, 'notice', { round: run.round });
    await Promise.all([
      ...names.slice(0, 3).map((n, i) => received([c], c, n, 'ev', { i, round: run.round })),
      received([c], c, cache, 'cached', { n: run.round }),
      received([c], c, `#server-to-user-${uid}`, 'notice', { round: run.round }),
      expect([c], withTimeout(decrypted, WAIT_MS, `${c.label}: decrypted secret on ${names[3]}`)).then((d) =>
        assert.deepEqual(d, { round: run.round }),
      ),
    ]);
    stats.events++;

    // Leave two channels politely; the rest go with the connection.
    c.pusher.unsubscribe(names[0]);
    c.pusher.unsubscribe(names[2]);
  } finally {
    if (run.round % 2) c.drop();
    else c.close();
  }
}

/** pusher-js: two connections whisper on a private and a presence channel. */
async function pusherWhisper(ctx, run) {
  const a = pusherClient(`pusherWhisper A r${run.round} s${run.slot}`, ctx.app, {
    channelAuthorization: ctx.ep.channelAuth(presenceParams(run, 'a')),
  });
  const b = pusherClient(`pusherWhisper B r${run.round} s${run.slot}`, ctx.app, {
    channelAuthorization: ctx.ep.channelAuth(presenceParams(run, 'b')),
  });
  stats.connections += 2;
  try {
    await Promise.all([connected(a), connected(b)]);
    for (const name of [`private-soak-w-${run.tag}`, `presence-soak-w-${run.tag}`]) {
      const chA = await subscribe(a, name);
      const chB = await subscribe(b, name);
      const presence = name.startsWith('presence-');
      if (presence) await received([a, b], a, name, 'pusher_internal:member_added');
      const nth = (c) => c.messages.filter((m) => m.channel === name && m.event === 'client-typing').length;
      assert.equal(chB.trigger('client-typing', { from: 'b', round: run.round }), true);
      await received([a, b], a, name, 'client-typing', { from: 'b', round: run.round });
      assert.equal(chA.trigger('client-typing', { from: 'a', round: run.round }), true);
      await received([a, b], b, name, 'client-typing', { from: 'a', round: run.round });
      // Barrier: a REST event after the whispers; nobody heard itself.
      await ctx.ep.sdk.trigger(name, 'barrier', { round: run.round });
      await Promise.all([received([a, b], a, name, 'barrier'), received([a, b], b, name, 'barrier')]);
      if (nth(a) !== 1 || nth(b) !== 1) {
        throw new SoakError(`${name}: each side must hear exactly the other's whisper (A ${nth(a)}, B ${nth(b)})`, [a, b]);
      }
      b.pusher.unsubscribe(name);
      if (presence) await received([a, b], a, name, 'pusher_internal:member_removed');
    }
  } finally {
    a.close();
    if (run.round % 3 === 0) b.drop();
    else b.close();
  }
}

/**
 * Laravel Echo: two clients subscribe to the same private channel, one after
 * the other, and whisper both ways (the scenario of the defect); then a
 * presence join with here(), joining() and leaving().
 */
async function echoWhisper(ctx, run) {
  const label = `r${run.round} s${run.slot}`;
  const e1 = echoClient(`echo 1 ${label}`, ctx.app, ctx.ep, presenceParams(run, '1'));
  const e2 = echoClient(`echo 2 ${label}`, ctx.app, ctx.ep, presenceParams(run, '2'));
  stats.connections += 2;
  const within = (clients, p, what) => expect(clients, withTimeout(p, WAIT_MS, what));
  try {
    await Promise.all([connected(e1), connected(e2)]);
    const name = `App.Models.Chat.${run.tag}`;
    const c1 = e1.echo.private(name);
    const heard1 = new Promise((resolve) => c1.listenForWhisper('typing', resolve));
    await acked(e1, c1.subscription, `private-${name}`);
    const c2 = e2.echo.private(name);
    const heard2 = new Promise((resolve) => c2.listenForWhisper('typing', resolve));
    await acked(e2, c2.subscription, `private-${name}`);
    c2.whisper('typing', { name: 'two', round: run.round });
    assert.deepEqual(await within([e1, e2], heard1, `echo 1 heard echo 2 on private-${name}`), { name: 'two', round: run.round });
    c1.whisper('typing', { name: 'one', round: run.round });
    assert.deepEqual(await within([e1, e2], heard2, `echo 2 heard echo 1 on private-${name}`), { name: 'one', round: run.round });
    stats.events += 2;

    const room = `soak.room.${run.tag}`;
    const p1 = e1.echo.join(room);
    const here1 = new Promise((resolve) => p1.here(resolve));
    const joining = new Promise((resolve) => p1.joining(resolve));
    const leaving = new Promise((resolve) => p1.leaving(resolve));
    assert.deepEqual(await within([e1], here1, `echo 1 here() on presence-${room}`), [{ name: 'user 1' }]);
    const p2 = e2.echo.join(room);
    const here2 = await within([e1, e2], new Promise((resolve) => p2.here(resolve)), `echo 2 here() on presence-${room}`);
    assert.deepEqual(here2.map((m) => m.name).sort(), ['user 1', 'user 2']);
    assert.deepEqual(await within([e1, e2], joining, `echo 1 joining() on presence-${room}`), { name: 'user 2' });
    e2.echo.leave(room);
    assert.deepEqual(await within([e1, e2], leaving, `echo 1 leaving() on presence-${room}`), { name: 'user 2' });
    stats.subscriptions += 2;
    stats.events += 2;
  } finally {
    e1.close();
    if (run.round % 2) e2.drop();
    else e2.close();
  }
}

/**
 * Short-lived connections: each subscribes to a public channel; half wait
 * for the acknowledgement and close, half drop the socket at once, the
 * subscription possibly still in flight.
 */
async function churn(ctx, run) {
  const cs = [];
  for (let i = 0; i < 4; i++) cs.push(pusherClient(`churn ${i} r${run.round} s${run.slot}`, ctx.app));
  stats.connections += cs.length;
  try {
    await Promise.all(cs.map(connected));
    await Promise.all(
      cs.map((c, i) => (i % 2 ? subscribe(c, `soak-churn-${run.tag}`) : c.pusher.subscribe(`soak-churn-${run.tag}-${i}`))),
    );
  } finally {
    cs.forEach((c, i) => (i % 2 ? c.close() : c.drop()));
  }
}

/**
 * pusher-js with many channels on one connection: 80 subscribed at once
 * (what pusher-js sends when it connects), then a reconnect, after which
 * pusher-js subscribes to all 80 again in one burst. Every one must be
 * acknowledged both times: pusher-js never resends a subscribe that got no
 * answer (docs/limits.md, "Why a burst").
 */
async function manyChannels(ctx, run) {
  const c = pusherClient(`manyChannels r${run.round} s${run.slot}`, ctx.app);
  stats.connections++;
  try {
    await connected(c);
    const names = Array.from({ length: 80 }, (_, i) => `soak-many-${run.tag}-${i}`);
    const chans = names.map((n) => c.pusher.subscribe(n));
    await Promise.all(chans.map((ch, i) => acked(c, ch, names[i])));
    c.pusher.disconnect();
    c.pusher.connect();
    stats.connections++;
    await connected(c);
    await Promise.all(chans.map((ch, i) => acked(c, ch, `${names[i]} after the reconnect`)));
    await ctx.ep.sdk.trigger(names.slice(-3), 'ev', { round: run.round });
    await Promise.all(names.slice(-3).map((n) => received([c], c, n, 'ev', { round: run.round })));
  } finally {
    c.close();
  }
}

const KINDS = [everyKind, pusherWhisper, echoWhisper, churn, manyChannels];

// ---------------------------------------------------------------------------

test(
  `soak: ${ROUNDS} rounds of pusher-js and Echo clients, ${PARALLEL} scenarios at a time`,
  { skip: SKIP_WITHOUT_FEATURES, timeout: 60000 + ROUNDS * 10000 },
  async (t) => {
    const app = featureApp('main'); // client events on, Pusher-mode errors
    const masterKey = randomBytes(32).toString('base64');
    const ctx = {
      app,
      ep: await startAuthEndpoint(t, app, { encryptionMasterKeyBase64: masterKey }),
      encSdk: sdkFor(app, { encryptionMasterKeyBase64: masterKey }),
    };
    for (let round = 0; round < ROUNDS; round++) {
      const jobs = [];
      for (let slot = 0; slot < PARALLEL; slot++) {
        const kind = (round + slot) % KINDS.length;
        jobs.push(KINDS[kind](ctx, { round, slot, tag: tagOf(round, slot, kind) }));
        stats.scenarios++;
      }
      const failed = (await Promise.allSettled(jobs)).filter((r) => r.status === 'rejected');
      if (failed.length > 0) {
        throw new Error(
          `round ${round}: ${failed.length} of ${jobs.length} scenarios failed after ${JSON.stringify(stats)}:\n` +
            failed.map((f) => f.reason?.stack ?? f.reason).join('\n\n'),
        );
      }
    }
    t.diagnostic(`soak: ${JSON.stringify(stats)} in ${stamp()} s`);
  },
);
