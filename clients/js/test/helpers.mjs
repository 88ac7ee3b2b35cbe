// Shared helpers for the herald-resume tests. Not a test file itself.
//
// The tests that need Herald read HERALD_HOST / HERALD_PORT (set by
// `go test ./tests/e2e/ -run TestResumeJS`, which starts Herald with a small
// replay window: bus.stream.max_msgs_per_channel = WINDOW) and skip without
// them; the mechanics tests run against a fake server in the test.

import net from 'node:net';
import { randomBytes } from 'node:crypto';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

import { withResume } from '../index.mjs';

export const HOST = process.env.HERALD_HOST || '127.0.0.1';
export const PORT = Number(process.env.HERALD_PORT || 0);
export const HAVE_HERALD = Number.isInteger(PORT) && PORT > 0;
export const SKIP_WITHOUT_HERALD = HAVE_HERALD ? false : 'HERALD_PORT not set (run through go test ./tests/e2e/ -run TestResumeJS)';
/** Herald's bus.stream.max_msgs_per_channel in the resume test config. */
export const WINDOW = Number(process.env.HERALD_RESUME_WINDOW || 5);

export const APP = Object.freeze({ appId: 'app-id', key: 'app-key', secret: 'app-secret' });

export const WAIT_MS = 5000;
/** Reconnects include pusher-js's own 1 s retry delay and backoff. */
export const RECONNECT_MS = 20000;
export const TEST_TIMEOUT_MS = 60000;

export function uniq(prefix) {
  return `${prefix}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Rejects after ms with a message naming what was awaited. */
export function withTimeout(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls fn every 10 ms until it returns a value other than undefined/false,
 * for at most ms (the polling stops then too, so a failed wait leaves no
 * timer keeping the process alive).
 */
export function waitUntil(fn, label, ms = WAIT_MS) {
  let timer;
  let stopped = false;
  const poll = new Promise((resolve, reject) => {
    const tick = () => {
      if (stopped) return;
      let v;
      try {
        v = fn();
      } catch (e) {
        return reject(e);
      }
      if (v !== undefined && v !== false) return resolve(v);
      timer = setTimeout(tick, 10);
    };
    tick();
  });
  return withTimeout(poll, ms, typeof label === 'function' ? { toString: label } : label).finally(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

export function serverSDK() {
  return new PusherServer({ ...APP, host: HOST, port: PORT, useTLS: false, timeout: 10000 });
}

/**
 * A TCP proxy in front of a server, so a test can cut a client's connection
 * the way a network does: cut() destroys every proxied socket (the client
 * sees an abnormal close, 1006) and holds new connections, unanswered, until
 * restore() forwards them. Holding rather than refusing keeps pusher-js from
 * backing off for many seconds: its next attempt completes at restore().
 */
export class CutProxy {
  constructor(targetHost, targetPort) {
    this.targetHost = targetHost;
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.held = [];
    this.holding = false;
    this.accepted = 0;
    this.server = net.createServer((client) => this.accept(client));
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  accept(client) {
    client.on('error', () => {});
    if (this.holding) {
      client.pause();
      this.held.push(client);
      client.on('close', () => {
        this.held = this.held.filter((c) => c !== client);
      });
      return;
    }
    this.forward(client);
  }

  forward(client) {
    this.accepted++;
    const upstream = net.connect(this.targetPort, this.targetHost);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  cut() {
    this.holding = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore() {
    this.holding = false;
    const held = this.held;
    this.held = [];
    for (const c of held) {
      if (!c.destroyed) this.forward(c);
    }
  }

  close() {
    this.cut();
    for (const c of this.held) c.destroy();
    this.held = [];
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A pusher-js client with resume on, connecting to port (a proxy or Herald). */
export function resumingClient(port, resumeOptions, pusherOptions = {}) {
  const pusher = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    ...pusherOptions,
  });
  return withResume(pusher, resumeOptions);
}

/** Resolves when the client is connected (again). */
export function connected(pusher, ms = WAIT_MS) {
  const conn = pusher.connection;
  if (conn.state === 'connected') return Promise.resolve();
  return withTimeout(
    new Promise((resolve) => {
      const cb = () => {
        conn.unbind('connected', cb);
        resolve();
      };
      conn.bind('connected', cb);
    }),
    ms,
    `state 'connected' (state ${conn.state})`,
  );
}

/** Resolves when a pusher-js channel's subscription succeeded. */
export function subscribed(channel, ms = WAIT_MS) {
  if (channel.subscribed) return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', () => resolve());
      channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription error ${JSON.stringify(e)}`)));
    }),
    ms,
    `subscription to ${channel.name}`,
  );
}

/** Records every event a channel emits to the app, in order. */
export function record(channel) {
  const got = [];
  channel.bind_global((event, data) => {
    if (event.startsWith('pusher:')) return;
    got.push({ event, data });
  });
  return got;
}
