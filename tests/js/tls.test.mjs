// pusher-js and the `pusher` server SDK against a node serving wss:// and
// https:// itself (tls.cert_file, tls.key_file). Run by TestPusherJSOverTLS
// in tests/e2e, which starts such a node with a self-signed certificate and
// sets HERALD_TLS=1 and NODE_EXTRA_CA_CERTS to that certificate, so both
// clients verify it. Skipped in the plain run (TestPusherJS).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import PusherServer from 'pusher';

import { APP, HOST, PORT, TEST_TIMEOUT_MS, closeAll, connectedClient, uniq } from './helpers.mjs';

after(closeAll);

const skip = process.env.HERALD_TLS === '1' ? false : 'HERALD_TLS is not set: run by TestPusherJSOverTLS';
const opts = { timeout: TEST_TIMEOUT_MS, skip };
const tlsOptions = { forceTLS: true, wssPort: PORT, enabledTransports: ['ws', 'wss'] };

test('pusher-js connects over wss://, subscribes, and receives an event the SDK sent over https://', opts, async (t) => {
  const c = await connectedClient(t, APP.key, tlsOptions);
  assert.equal(c.pusher.connection.state, 'connected');
  const ch = uniq('tls');
  await c.subscribe(ch);
  const sdk = new PusherServer({ ...APP, host: HOST, port: PORT, useTLS: true, timeout: 10000 });
  const res = await sdk.trigger(ch, 'over-tls', { secure: true });
  assert.equal(res.status, 200);
  const m = await c.waitForEvent(ch, 'over-tls');
  assert.deepEqual(m.data, { secure: true });
});
