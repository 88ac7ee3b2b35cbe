// withResume in a real browser: headless Chromium (Debian's chromium, see
// scripts/setup-chromium.sh) loads pusher-js's web build and herald-resume
// from a tiny static server in this test, once as a plain <script> tag (the
// UMD build) and once as an ES module import. The test cuts the page's
// connection with a proxy, publishes while it is away, and the page reports
// every event exactly once, in order.
//
// Needs Herald and chromium: run through `go test ./tests/e2e/ -run
// TestResumeJSBrowser`; skips without HERALD_PORT or without the browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { Browser, CHROMIUM } from './cdp.mjs';
import { CutProxy, HOST, PORT, RECONNECT_MS, SKIP_WITHOUT_HERALD, WAIT_MS, serverSDK, uniq } from './helpers.mjs';

const skip = SKIP_WITHOUT_HERALD || (existsSync(CHROMIUM) ? false : `${CHROMIUM} missing (run scripts/setup-chromium.sh)`);
const opts = { timeout: 120000, skip };

const file = (p) => fileURLToPath(new URL(p, import.meta.url));

// The page: connect through the proxy on ?port=, subscribe to ?channel=,
// record what the app would see. pageState() is what the test reads.
const PAGE_SCRIPT = `
  const params = new URLSearchParams(location.search);
  const pusher = withResume(new Pusher('app-key', {
    wsHost: '127.0.0.1', wsPort: Number(params.get('port')), forceTLS: false,
    enabledTransports: ['ws'], cluster: 'mt1', disableStats: true,
  }));
  const received = [], reports = [];
  let subscriptions = 0;
  const channel = pusher.subscribe(params.get('channel'));
  channel.bind('tick', (d) => received.push(d.n));
  channel.bind('pusher:subscription_succeeded', () => subscriptions++);
  channel.bind('herald:resume_ok', (d) => reports.push(['ok', d]));
  channel.bind('herald:resume_failed', (d) => reports.push(['failed', d]));
  window.pageState = () => ({ state: pusher.connection.state, subscriptions, received, reports });
`;

const PAGES = {
  '/umd.html': `<!doctype html><meta charset="utf-8"><title>umd</title>
<script src="/pusher.js"></script>
<script src="/herald-resume.js"></script>
<script>const { withResume } = window.HeraldResume;${PAGE_SCRIPT}</script>`,
  '/esm.html': `<!doctype html><meta charset="utf-8"><title>esm</title>
<script src="/pusher.js"></script>
<script type="module">import { withResume } from '/index.mjs';${PAGE_SCRIPT}</script>`,
};

const FILES = {
  '/pusher.js': file('../node_modules/pusher-js/dist/web/pusher.js'),
  '/herald-resume.js': file('../dist/herald-resume.js'),
  '/index.mjs': file('../index.mjs'),
};

let web;
let browser;

before(async () => {
  if (skip) return;
  web = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (PAGES[path]) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(PAGES[path]);
    }
    if (FILES[path]) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      return res.end(readFileSync(FILES[path]));
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((resolve) => web.listen(0, '127.0.0.1', resolve));
  browser = await Browser.launch();
});

after(async () => {
  if (browser) await browser.close();
  if (web) await new Promise((resolve) => web.close(resolve));
});

for (const page of Object.keys(PAGES)) {
  test(`${page}: every event exactly once, in order, across a cut connection`, opts, async (t) => {
    const proxy = await new CutProxy(HOST, PORT).listen();
    t.after(() => proxy.close());
    const channel = uniq('browser');
    const tab = await browser.open(`http://127.0.0.1:${web.address().port}${page}?port=${proxy.port}&channel=${channel}`);
    const state = () => tab.eval('window.pageState ? window.pageState() : null');

    await tab.until('window.pageState && window.pageState().subscriptions === 1', 'the page to subscribe', WAIT_MS * 2);
    const sdk = serverSDK();
    const publish = async (from, to) => {
      for (let n = from; n <= to; n++) await sdk.trigger(channel, 'tick', { n });
    };

    await publish(1, 2);
    await tab.until('window.pageState().received.length === 2', 'events 1-2', WAIT_MS);

    proxy.cut();
    await tab.until(`window.pageState().state !== 'connected'`, 'the page to notice the cut', WAIT_MS);
    await publish(3, 5);
    proxy.restore();
    await tab.until('window.pageState().subscriptions === 2', 'the page to subscribe again', RECONNECT_MS);
    await tab.until('window.pageState().received.length >= 5', 'events 3-5 replayed', RECONNECT_MS);
    await publish(6, 6);
    await tab.until('window.pageState().received.length >= 6', 'event 6 live', WAIT_MS);

    const s = await state();
    assert.deepEqual(s.received, [1, 2, 3, 4, 5, 6]);
    assert.equal(s.reports.length, 1, `one resume report: ${JSON.stringify(s.reports)}`);
    assert.equal(s.reports[0][0], 'ok');
    assert.equal(s.reports[0][1].replayed, 3);
  });
}
