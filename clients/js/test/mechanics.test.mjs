// withResume's mechanics against a fake Pusher server in the test (the `ws`
// package): what pusher-js sends on resubscribe, duplicate dropping, the
// resume reports. No Herald needed; test/resume.test.mjs does the same
// against a real one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer } from 'ws';

import Pusher from 'pusher-js';
import { withResume, resumeState } from '../index.mjs';
import { resumingClient, connected, subscribed, record, waitUntil, RECONNECT_MS } from './helpers.mjs';

const opts = { timeout: 60000 };

/**
 * A Pusher-protocol server that records every frame it receives and answers
 * subscribes with subscription_succeeded. The test sends with send() and cuts
 * with drop().
 */
class FakeServer {
  constructor() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    this.received = []; // parsed client frames, all connections
    this.sockets = [];
    this.connections = 0;
    this.wss.on('connection', (ws) => {
      this.connections++;
      this.sockets.push(ws);
      ws.send(
        JSON.stringify({
          event: 'pusher:connection_established',
          data: JSON.stringify({ socket_id: `1.${this.connections}`, activity_timeout: 120 }),
        }),
      );
      ws.on('message', (raw) => {
        const msg = JSON.parse(raw.toString());
        this.received.push(msg);
        if (msg.event === 'pusher:subscribe') {
          ws.send(JSON.stringify({ event: 'pusher_internal:subscription_succeeded', channel: msg.data.channel, data: '{}' }));
        } else if (msg.event === 'pusher:ping') {
          ws.send(JSON.stringify({ event: 'pusher:pong', data: '{}' }));
        }
      });
    });
  }

  get port() {
    return this.wss.address().port;
  }

  get current() {
    return this.sockets[this.sockets.length - 1];
  }

  send(frame) {
    this.current.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  event(channel, serial, name = 'e') {
    this.send(`{"event":"${name}","channel":"${channel}","data":"{\\"n\\":${serial}}","serial":${serial}}`);
  }

  drop() {
    this.current.terminate();
  }

  subscribes(channel) {
    return this.received.filter((m) => m.event === 'pusher:subscribe' && m.data.channel === channel);
  }

  close() {
    for (const s of this.sockets) s.terminate();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }
}

async function fakeServer(t) {
  const s = new FakeServer();
  await new Promise((resolve) => s.wss.once('listening', resolve));
  t.after(() => s.close());
  return s;
}

function client(t, port, resumeOptions) {
  const p = resumingClient(port, resumeOptions);
  t.after(() => p.disconnect());
  return p;
}

const serials = (got) => got.filter((e) => e.event === 'e').map((e) => e.data.n);

test('resubscribes with the last serial and drops what was already delivered', opts, async (t) => {
  const srv = await fakeServer(t);
  const reports = [];
  const pusher = client(t, srv.port, { onResumeOk: (ch, d) => reports.push([ch, d]) });
  const ch = pusher.subscribe('orders');
  const got = record(ch);
  await subscribed(ch);
  assert.equal('herald_resume' in srv.subscribes('orders')[0].data, false, 'first subscribe has no herald_resume');

  srv.event('orders', 5);
  srv.event('orders', 7);
  await waitUntil(() => got.length === 2, 'two events');
  assert.equal(resumeState(pusher).lastSerial('orders'), 7);

  srv.drop();
  await waitUntil(() => srv.subscribes('orders').length === 2, 'the subscribe after reconnect', RECONNECT_MS);
  assert.equal(srv.subscribes('orders')[1].data.herald_resume, 7);
  await subscribed(ch);

  // A replay from older than asked: 5 and 7 are dropped.
  srv.event('orders', 5);
  srv.event('orders', 7);
  srv.event('orders', 9);
  srv.send({ event: 'pusher_internal:resume_ok', channel: 'orders', data: '{"from":7,"to":9,"replayed":1}' });
  srv.event('orders', 11);
  await waitUntil(() => serials(got).includes(11), () => `event 11 (got ${JSON.stringify(got)})`);
  assert.deepEqual(serials(got), [5, 7, 9, 11]);
  assert.deepEqual(
    got.map((e) => e.event),
    ['e', 'e', 'e', 'herald:resume_ok', 'e'],
    'the resume report comes in frame order',
  );
  assert.deepEqual(reports, [['orders', { from: 7, to: 9, replayed: 1 }]]);
  assert.equal(resumeState(pusher).stats.duplicates, 2);
});

test('reports resume_failed on the channel and to onResumeFailed', opts, async (t) => {
  const srv = await fakeServer(t);
  const failures = [];
  const pusher = client(t, srv.port, { onResumeFailed: (ch, d) => failures.push([ch, d]) });
  const ch = pusher.subscribe('feed');
  const onChannel = [];
  ch.bind('herald:resume_failed', (d) => onChannel.push(d));
  await subscribed(ch);
  srv.event('feed', 3);
  await waitUntil(() => resumeState(pusher).lastSerial('feed') === 3, 'serial 3');
  srv.drop();
  await waitUntil(() => srv.subscribes('feed').length === 2, 'resubscribe', RECONNECT_MS);
  srv.send({
    event: 'pusher_internal:resume_failed',
    channel: 'feed',
    data: '{"from":3,"reason":"window_passed","first":2050}',
  });
  const want = { from: 3, reason: 'window_passed', first: 2050 };
  await waitUntil(() => failures.length === 1, 'onResumeFailed');
  assert.deepEqual(failures, [['feed', want]]);
  assert.deepEqual(onChannel, [want]);
});

test('replayFromStart asks for herald_resume 0 until an event is delivered', opts, async (t) => {
  const srv = await fakeServer(t);
  const pusher = client(t, srv.port, { replayFromStart: true });
  const ch = pusher.subscribe('news');
  await subscribed(ch);
  assert.equal(srv.subscribes('news')[0].data.herald_resume, 0);
});

test('unsubscribing forgets the channel: a later subscribe is plain', opts, async (t) => {
  const srv = await fakeServer(t);
  const pusher = client(t, srv.port);
  let ch = pusher.subscribe('a');
  await subscribed(ch);
  srv.event('a', 4);
  await waitUntil(() => resumeState(pusher).lastSerial('a') === 4, 'serial 4');
  pusher.unsubscribe('a');
  assert.equal(resumeState(pusher).lastSerial('a'), undefined);
  ch = pusher.subscribe('a');
  await subscribed(ch);
  assert.equal('herald_resume' in srv.subscribes('a')[1].data, false);
});

test('events on channels the client does not have leave no state', opts, async (t) => {
  const srv = await fakeServer(t);
  const pusher = client(t, srv.port);
  const ch = pusher.subscribe('mine');
  await subscribed(ch);
  srv.event('not-mine', 8);
  srv.event('mine', 9);
  await waitUntil(() => resumeState(pusher).lastSerial('mine') === 9, 'serial 9');
  assert.equal(resumeState(pusher).lastSerial('not-mine'), undefined);
});

test('withResume works on a client that is already connected, and only once', opts, async (t) => {
  const srv = await fakeServer(t);
  const pusher = new Pusher('k', {
    wsHost: '127.0.0.1',
    wsPort: srv.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  });
  t.after(() => pusher.disconnect());
  await connected(pusher);
  assert.equal(withResume(pusher), pusher);
  assert.equal(withResume(pusher), pusher);
  const ch = pusher.subscribe('late');
  const got = record(ch);
  await subscribed(ch);
  srv.event('late', 2);
  srv.event('late', 2);
  srv.event('late', 3);
  await waitUntil(() => resumeState(pusher).lastSerial('late') === 3, 'serial 3');
  assert.deepEqual(serials(got), [2, 3]);
  assert.throws(() => withResume({}), TypeError);
});
