// A minimal Chrome DevTools Protocol driver for Debian's chromium: launch it
// headless with a fresh profile, open pages, evaluate expressions in them.
// Only what browser.test.mjs needs. Not a test file itself.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

import { withTimeout } from './helpers.mjs';

export const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';

const LAUNCH_MS = 30000;
const CALL_MS = 10000;

export class Browser {
  /** Starts chromium and connects to its DevTools endpoint. */
  static async launch(path = CHROMIUM) {
    const profile = mkdtempSync(join(tmpdir(), 'herald-chromium-'));
    const args = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      `--user-data-dir=${profile}`,
      '--remote-debugging-address=127.0.0.1',
      '--remote-debugging-port=0',
      'about:blank',
    ];
    const proc = spawn(path, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const b = new Browser(proc, profile);
    try {
      const url = await withTimeout(b.endpoint(), LAUNCH_MS, `chromium's DevTools endpoint (stderr: ${b.stderr.slice(-2000)})`);
      await b.connect(url);
    } catch (e) {
      await b.close();
      throw e;
    }
    return b;
  }

  constructor(proc, profile) {
    this.proc = proc;
    this.profile = profile;
    this.stderr = '';
    this.nextId = 1;
    this.pending = new Map();
    this.exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-64 * 1024);
    });
  }

  endpoint() {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(this.stderr);
        if (m) {
          this.proc.stderr.off('data', check);
          resolve(m[1]);
        }
      };
      this.proc.stderr.on('data', check);
      this.proc.once('exit', (code) => reject(new Error(`chromium exited (${code}): ${this.stderr.slice(-2000)}`)));
      check();
    });
  }

  connect(url) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString());
      const p = msg.id !== undefined && this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
      else p.resolve(msg.result);
    });
    this.ws.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error(`${p.method}: DevTools connection closed`));
      this.pending.clear();
    });
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  /** Sends one CDP command (to a page when sessionId is given). */
  call(method, params = {}, sessionId) {
    const id = this.nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, method }));
    this.ws.send(JSON.stringify(msg));
    return withTimeout(p, CALL_MS, `CDP ${method}`);
  }

  /** Opens url in a new tab and returns a Page. */
  async open(url) {
    const { targetId } = await this.call('Target.createTarget', { url });
    const { sessionId } = await this.call('Target.attachToTarget', { targetId, flatten: true });
    return new Page(this, sessionId);
  }

  async close() {
    try {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        await this.call('Browser.close').catch(() => {});
        this.ws.close();
      }
    } finally {
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      if (this.proc.exitCode === null && this.proc.signalCode === null) {
        await this.exited;
      }
      clearTimeout(timer);
      rmSync(this.profile, { recursive: true, force: true });
    }
  }
}

export class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
  }

  /** Evaluates expression in the page (awaiting a promise) and returns its JSON value. */
  async eval(expression) {
    const r = await this.browser.call(
      'Runtime.evaluate',
      { expression, returnByValue: true, awaitPromise: true },
      this.sessionId,
    );
    if (r.exceptionDetails) {
      throw new Error(`page: ${expression}: ${JSON.stringify(r.exceptionDetails.exception || r.exceptionDetails)}`);
    }
    return r.result.value;
  }

  /** Polls expression until it is truthy; returns its value. */
  async until(expression, label, ms) {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await this.eval(expression);
      if (v) return v;
      if (Date.now() > deadline) {
        const state = await this.eval('JSON.stringify(window.pageState ? window.pageState() : null)').catch((e) => String(e));
        throw new Error(`timed out after ${ms} ms waiting for ${label} (page: ${state})`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
