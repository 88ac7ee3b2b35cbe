// The debug console (docs/console.md) in Debian's headless Chromium, driven
// by Playwright (playwright-core, with the system browser), against real
// Herald processes; events received with the real pusher-js and published
// with the real `pusher` server SDK.
//
// Run through `go test ./tests/e2e/ -run TestConsole`
// (tests/e2e/console_test.go), which passes:
//   HERALD_CHROMIUM          the browser (/usr/bin/chromium)
//   HERALD_CONSOLE_SHOTS     where screenshots go (the test's artifact dir)
//   one node:  HERALD_CONSOLE_ADMIN (its admin URL), HERALD_CONSOLE_TOKEN
//              (admin.token), HERALD_HOST / HERALD_PORT (its client port)
//   a cluster: HERALD_CONSOLE_CLUSTER_ADMIN (node 3's admin URL, no token)
//              and HERALD_NODES (node 1, 2, 3 as NAME=host:port)
// Each test skips without its variables (e.g. under TestPusherJS's
// `node --test tests/js/`).
//
// Barriers, not sleeps: "not shown" is checked after a later event that
// must be shown has appeared.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import PusherServer from 'pusher';

import { APP, Client, closeAll, uniq, serverSDK, WAIT_MS } from './helpers.mjs';

after(closeAll);

const CHROMIUM = process.env.HERALD_CHROMIUM;
const SHOTS = process.env.HERALD_CONSOLE_SHOTS;
const ADMIN = process.env.HERALD_CONSOLE_ADMIN;
const TOKEN = process.env.HERALD_CONSOLE_TOKEN;
const CLUSTER_ADMIN = process.env.HERALD_CONSOLE_CLUSTER_ADMIN;
const NODES = (process.env.HERALD_NODES ?? '').split(',').filter(Boolean).map((e) => {
  const [name, hp] = e.split('=');
  const [host, port] = hp.split(':');
  return { name, host, port: Number(port) };
});

async function openBrowser() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  // A laptop screen.
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  page.setDefaultTimeout(WAIT_MS * 2);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The 401s of the session check before login and of the wrong token are
  // expected; anything else logged as an error is not.
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text()); });
  return { browser, page, errors };
}

const row = (page, kind, channel) => page.locator(`#log tr.ev[data-kind="${kind}"][data-channel="${channel}"]`);

test('console on one node: login, REST publish with its payload, send from the page, filter by channel',
  { skip: !ADMIN && 'HERALD_CONSOLE_ADMIN not set (run through go test ./tests/e2e/ -run TestConsoleBrowser)', timeout: 60000 },
  async () => {
    const { browser, page, errors } = await openBrowser();
    try {
      await page.goto(`${ADMIN}/console`);
      // A wrong token is refused with a message, the right one logs in.
      await page.fill('#login-token', 'wrong');
      await page.click('[data-testid=login-submit]');
      await page.waitForSelector('#login-error:text("wrong admin token")');
      await page.fill('#login-token', TOKEN);
      await page.click('[data-testid=login-submit]');
      await page.waitForSelector('#live[data-nodes="1"]');

      // A pusher-js subscriber: its connection and subscription show.
      const channel = uniq('console');
      const other = uniq('elsewhere');
      const sub = new Client();
      await sub.connected();
      await sub.subscribe(channel);
      await sub.subscribe(other);
      await row(page, 'subscribed', channel).waitFor();

      // A REST publish shows with its payload when expanded.
      await serverSDK().trigger(channel, 'greet', { hello: 'console' });
      const pub = row(page, 'rest_publish', channel);
      await pub.waitFor();
      await pub.click();
      const payload = await page.locator('#log tr.payload td').first().textContent();
      assert.match(payload, /"hello": "console"/);
      assert.match(payload, /"event": "greet"/);

      // The event creator publishes through the real path; pusher-js gets it.
      await page.fill('#pub-channel', channel);
      await page.fill('#pub-event', 'from-page');
      await page.fill('#pub-data', '{"sent":"by the console"}');
      await page.click('[data-testid=pub-send]');
      const got = await sub.waitFor((m) => m.event === 'from-page' && m.channel === channel, 'the page\'s event');
      assert.deepEqual(got.data, { sent: 'by the console' });
      await row(page, 'console_publish', channel).waitFor();

      // Filter by channel: the other channel's events stop showing.
      await page.fill('#f-channel', channel);
      await page.waitForFunction((c) => [...document.querySelectorAll('#log tr.ev')].every((tr) => tr.dataset.channel.startsWith(c)), channel);
      // The stream reconnects with the prefix; wait for its status.
      await page.waitForSelector('#live[data-nodes="1"]');
      await serverSDK().trigger(other, 'hidden', { n: 1 });
      await serverSDK().trigger(channel, 'after', { n: 2 });
      await page.locator(`#log tr.ev[data-kind="rest_publish"][data-channel="${channel}"]:has-text("after")`).waitFor();
      assert.equal(await row(page, 'rest_publish', other).count(), 0, 'filtered-out channel shown');

      // Stats at a glance count the subscriber.
      await page.waitForFunction(() => Number(document.querySelector('#t-conns').textContent) >= 1);
      // The socket inspector finds the pusher-js socket.
      await page.fill('#sock-id', sub.pusher.connection.socket_id);
      await page.click('[data-testid=sock-go]');
      await page.locator(`#sock-out td:text-is("${channel}")`).waitFor();

      if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'console.png'), fullPage: true });
      assert.deepEqual(errors, [], 'errors in the page');
    } finally {
      await browser.close();
    }
  });

test('a console on node 3 shows an event published on node 1',
  { skip: !CLUSTER_ADMIN && 'HERALD_CONSOLE_CLUSTER_ADMIN not set (run through go test ./tests/e2e/ -run TestConsoleCluster)', timeout: 60000 },
  async () => {
    const { browser, page, errors } = await openBrowser();
    try {
      await page.goto(`${CLUSTER_ADMIN}/console`);
      // No admin token in this cluster: the console is open, and every
      // node answers its watch.
      await page.waitForSelector('#live[data-nodes="3"]');
      const n1 = NODES[0];
      const channel = uniq('cluster-console');
      const sdk = new PusherServer({ ...APP, host: n1.host, port: n1.port, useTLS: false, timeout: 10000 });
      await sdk.trigger(channel, 'from-node-1', { via: n1.name });
      const r = row(page, 'rest_publish', channel);
      await r.waitFor();
      assert.equal(await r.locator('td').nth(1).textContent(), n1.name, 'the event names the node it was published on');
      await r.click();
      assert.match(await page.locator('#log tr.payload td').first().textContent(), new RegExp(`"via": "${n1.name}"`));
      // Stats list all three nodes.
      await page.waitForFunction(() => document.querySelectorAll('#nodes tr').length === 3);
      if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'console-cluster.png'), fullPage: true });
      assert.deepEqual(errors, [], 'errors in the page');
    } finally {
      await browser.close();
    }
  });
