// Shared helpers for the end-to-end tests. Not a test file itself: node's test
// runner only picks up *.test.mjs here.
//
// The tests talk to a running Herald node given by HERALD_HOST / HERALD_PORT
// (set by `go test ./tests/e2e/`, which starts Herald with the dev app).

import { randomBytes } from 'node:crypto';
import Pusher from 'pusher-js'; // resolves to dist/node/pusher.js (package "main") in Node
import PusherServer from 'pusher';
import WebSocket from 'ws';

export const HOST = process.env.HERALD_HOST || '127.0.0.1';
export const PORT = Number(process.env.HERALD_PORT);
if (!Number.isInteger(PORT) || PORT <= 0) {
  throw new Error(
    'HERALD_PORT is not set: run these tests through `go test ./tests/e2e/`, ' +
      'or start Herald yourself and set HERALD_HOST/HERALD_PORT',
  );
}

// The dev app every `herald serve` node has.
export const APP = Object.freeze({ appId: 'app-id', key: 'app-key', secret: 'app-secret' });

// How long one awaited condition may take, and one test case in all. Every
// wait has its own deadline shorter than the test's, so a hang fails the test
// with a message that says what was awaited, and the test's cleanup still runs.
export const WAIT_MS = 5000;
export const TEST_TIMEOUT_MS = 30000;

/** A channel name unique to this run, so parallel test files never share one. */
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

/** The official node server SDK pointed at Herald. */
export function serverSDK() {
  return new PusherServer({ ...APP, host: HOST, port: PORT, useTLS: false, timeout: 10000 });
}

// Every client opened by this process, so a file-level after() can close
// whatever a failed test left behind (open sockets keep node from exiting).
const openClients = new Set();

export function closeAll() {
  for (const c of openClients) c.close();
  openClients.clear();
}

/**
 * A pusher-js client plus a record of every message its connection received
 * (decoded by pusher-js: {event, channel, data}). Tests await messages with
 * waitFor() rather than sleeping.
 */
export class Client {
  constructor(key = APP.key, options = {}) {
    this.errors = [];
    this.messages = [];
    this.waiters = [];
    this.pusher = new Pusher(key, {
      wsHost: HOST,
      wsPort: PORT,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'mt1',
      disableStats: true,
      ...options,
    });
    this.pusher.connection.bind('message', (m) => {
      this.messages.push(m);
      this.check();
    });
    this.pusher.connection.bind('error', (e) => {
      this.errors.push(e);
      this.check();
    });
    openClients.add(this);
  }

  get socketId() {
    return this.pusher.connection.socket_id;
  }

  close() {
    openClients.delete(this);
    try {
      this.pusher.disconnect();
    } catch {
      // already gone
    }
  }

  check() {
    this.waiters = this.waiters.filter((w) => !w.try());
  }

  /**
   * Resolves with the first recorded message (from the start of the
   * connection) for which pred is true; rejects after ms.
   */
  waitFor(pred, label, ms = WAIT_MS) {
    return withTimeout(
      new Promise((resolve) => {
        const w = {
          try: () => {
            const m = this.messages.find(pred);
            if (m === undefined) return false;
            resolve(m);
            return true;
          },
        };
        if (!w.try()) this.waiters.push(w);
      }),
      ms,
      `${label} (messages so far: ${this.describe()})`,
    );
  }

  /** Resolves with the first connection 'error' event for which pred is true. */
  waitForError(pred, label, ms = WAIT_MS) {
    return withTimeout(
      new Promise((resolve) => {
        const w = {
          try: () => {
            const e = this.errors.find(pred);
            if (e === undefined) return false;
            resolve(e);
            return true;
          },
        };
        if (!w.try()) this.waiters.push(w);
      }),
      ms,
      `${label} (state ${this.pusher.connection.state}, errors so far: ${JSON.stringify(this.errors)})`,
    );
  }

  /** Waits for one event on a channel, matching name (and data if given). */
  waitForEvent(channel, event, label = `${event} on ${channel}`, ms = WAIT_MS) {
    return this.waitFor((m) => m.channel === channel && m.event === event, label, ms);
  }

  /** All recorded events with this name on this channel, in arrival order. */
  eventsOn(channel, event) {
    return this.messages.filter((m) => m.channel === channel && (event === undefined || m.event === event));
  }

  describe() {
    const s = JSON.stringify(this.messages.slice(-10).map((m) => [m.event, m.channel, m.data]));
    return s.length > 1500 ? s.slice(0, 1500) + '…' : s;
  }

  /** Resolves when the connection is 'connected'. */
  connected(ms = WAIT_MS) {
    const conn = this.pusher.connection;
    if (conn.state === 'connected') return Promise.resolve(conn.socket_id);
    return withTimeout(
      new Promise((resolve) => {
        conn.bind('connected', () => resolve(conn.socket_id));
      }),
      ms,
      `state 'connected' (state ${conn.state}, errors ${JSON.stringify(this.errors)})`,
    );
  }

  /** Subscribes and waits for pusher:subscription_succeeded. */
  async subscribe(name, ms = WAIT_MS) {
    const channel = this.pusher.subscribe(name);
    if (channel.subscribed) return channel;
    await withTimeout(
      new Promise((resolve, reject) => {
        channel.bind('pusher:subscription_succeeded', () => resolve());
        channel.bind('pusher:subscription_error', (err) =>
          reject(new Error(`subscription to ${name} failed: ${JSON.stringify(err)}`)),
        );
      }),
      ms,
      `pusher:subscription_succeeded on ${name} (errors ${JSON.stringify(this.errors)})`,
    );
    return channel;
  }
}

/** Opens a pusher-js client and waits until it is connected. */
export async function connectedClient(t, key, options) {
  const c = new Client(key, options);
  t.after(() => c.close());
  await c.connected();
  return c;
}

/**
 * A raw WebSocket (the `ws` package) that records every frame as parsed JSON,
 * plus the raw text, so protocol tests can check exact encodings.
 */
export class RawSocket {
  constructor(path = `/app/${APP.key}?protocol=7&client=js&version=8.6.0&flash=false`) {
    this.url = `ws://${HOST}:${PORT}${path}`;
    this.frames = []; // {raw, msg} where msg is the parsed frame (or undefined)
    this.waiters = [];
    this.closed = null; // {code, reason}
    this.httpResponse = null; // {statusCode} if the upgrade was refused
    this.ws = new WebSocket(this.url);
    this.ws.on('message', (data, isBinary) => {
      const raw = isBinary ? data : data.toString('utf8');
      let msg;
      try {
        msg = JSON.parse(raw);
      } catch {
        msg = undefined;
      }
      this.frames.push({ raw, msg });
      this.check();
    });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString('utf8') };
      this.check();
    });
    this.ws.on('unexpected-response', (req, res) => {
      this.httpResponse = { statusCode: res.statusCode };
      res.resume();
      req.destroy();
      this.closed = this.closed || { code: null, reason: `HTTP ${res.statusCode} instead of upgrade` };
      this.check();
    });
    this.ws.on('error', (err) => {
      this.error = err;
      this.check();
    });
    openClients.add(this);
  }

  close() {
    openClients.delete(this);
    try {
      if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
        this.ws.terminate();
      }
    } catch {
      // already gone
    }
  }

  check() {
    this.waiters = this.waiters.filter((w) => !w.try());
  }

  wait(fn, label, ms = WAIT_MS) {
    return withTimeout(
      new Promise((resolve) => {
        const w = {
          try: () => {
            const v = fn();
            if (v === undefined) return false;
            resolve(v);
            return true;
          },
        };
        if (!w.try()) this.waiters.push(w);
      }),
      ms,
      `${label} (frames so far: ${this.describe()}, closed: ${JSON.stringify(this.closed)})`,
    );
  }

  /** Resolves with the first frame (from index `from`) whose parsed message matches pred. */
  waitFrame(pred, label, from = 0, ms = WAIT_MS) {
    return this.wait(() => this.frames.slice(from).find((f) => f.msg !== undefined && pred(f.msg)), label, ms);
  }

  /** Resolves with {code, reason} once the socket is closed (or the upgrade refused). */
  waitClosed(label = 'close', ms = WAIT_MS) {
    return this.wait(() => this.closed || undefined, label, ms);
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /** Waits for pusher:connection_established and returns its decoded data. */
  async established() {
    const f = await this.waitFrame((m) => m.event === 'pusher:connection_established', 'pusher:connection_established');
    return { frame: f, data: JSON.parse(f.msg.data) };
  }

  /**
   * Sends pusher:ping and waits for the pong that follows every frame seen so
   * far. Because the server handles one connection's frames in order, this is
   * a barrier: whatever the server answers to earlier frames arrives before it.
   */
  async roundTrip(label = 'pusher:pong') {
    const from = this.frames.length;
    this.send({ event: 'pusher:ping', data: {} });
    const f = await this.waitFrame((m) => m.event === 'pusher:pong', label, from);
    return this.frames.indexOf(f);
  }

  describe() {
    const s = JSON.stringify(this.frames.slice(-10).map((f) => f.raw));
    return s.length > 1500 ? s.slice(0, 1500) + '…' : s;
  }
}

export async function rawSocket(t, path) {
  const s = new RawSocket(path);
  t.after(() => s.close());
  return s;
}
