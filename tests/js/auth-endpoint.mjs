// The app-side half of Pusher's auth flows, for the channel-feature tests:
// a tiny HTTP auth endpoint in the test process that signs with the real
// `pusher` server SDK (authorizeChannel / authenticateUser), as a Laravel or
// Express backend would. Not a test file itself (node's test runner only
// picks up *.test.mjs).
//
// It also names the feature apps. channels.test.mjs and echo.test.mjs need
// apps with per-app options (client events off, soketi error mode, presence
// limits, subscription counts), so they run against a Herald started with a
// config file by TestPusherJSFeatures (tests/e2e/features_test.go). That test
// passes the apps as JSON in HERALD_FEATURE_APPS; without it (e.g. under the
// plain TestPusherJS run, whose Herald has only the dev app) those tests skip.

import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import PusherServer from 'pusher';

import { HOST, PORT } from './helpers.mjs';

/** The apps of the feature config, by name: {name: {appId, key, secret, options}}. */
export const FEATURE_APPS = (() => {
  const raw = process.env.HERALD_FEATURE_APPS;
  if (!raw) return null;
  const out = {};
  for (const a of JSON.parse(raw)) {
    out[a.name] = Object.freeze({ appId: a.id, key: a.key, secret: a.secret, options: a.options ?? {} });
  }
  return Object.freeze(out);
})();

/**
 * `skip` value for test options: false under TestPusherJSFeatures, a reason
 * otherwise, so `node --test tests/js/` against a plain Herald reports these
 * tests as skipped instead of failing them for a missing app.
 */
export const SKIP_WITHOUT_FEATURES = FEATURE_APPS
  ? false
  : 'needs the feature apps: run through `go test ./tests/e2e/ -run TestPusherJSFeatures` (HERALD_FEATURE_APPS unset)';

/** The credentials of one feature app (throws if the config lacks it). */
export function featureApp(name) {
  const app = FEATURE_APPS?.[name];
  if (!app) throw new Error(`feature app ${name} is not in HERALD_FEATURE_APPS (${process.env.HERALD_FEATURE_APPS})`);
  return app;
}

/** The `pusher` server SDK for an app, pointed at Herald. */
export function sdkFor(app, extra = {}) {
  return new PusherServer({
    appId: app.appId,
    key: app.key,
    secret: app.secret,
    host: HOST,
    port: PORT,
    useTLS: false,
    timeout: 10000,
    ...extra,
  });
}

/** A syntactically valid `auth` value with a wrong signature. */
export function forgedAuth(key, stringToSign) {
  return `${key}:${createHmac('sha256', 'not-the-secret').update(stringToSign).digest('hex')}`;
}

/**
 * Starts the auth endpoint for one app and registers its shutdown with t.
 *
 * Routes (POST, application/x-www-form-urlencoded, as pusher-js sends):
 *   /pusher/auth, /broadcasting/auth  channel authorization
 *   /pusher/user-auth, /broadcasting/user-auth  user authentication
 *
 * Besides socket_id / channel_name, the body may carry (pusher-js sends them
 * from channelAuthorization.params / userAuthentication.params, Echo from
 * auth.params):
 *   user_id    presence member id / signed-in user id (default "1")
 *   user_info  JSON text of the presence user_info / user's user_info
 *   numeric_id=1  send the presence user_id as a JSON number (as Ruby apps do)
 *   no_channel_data=1  presence auth without channel_data, signed like a
 *              private channel: the signed-in user is the member (spec 2.7)
 *   deny=1     answer 403 (the app refuses: pusher-js emits subscription_error)
 *   forge=1    answer 200 with a wrong signature (the server must refuse it)
 *
 * sdkOptions go to the SDK (e.g. encryptionMasterKeyBase64, which makes
 * authorizeChannel add shared_secret for private-encrypted- channels).
 */
export async function startAuthEndpoint(t, app, sdkOptions = {}) {
  const sdk = sdkFor(app, sdkOptions);
  const requests = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const p = Object.fromEntries(new URLSearchParams(body));
      const path = req.url.split('?')[0];
      requests.push({ path, params: p });
      const reply = (status, obj) => {
        res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
        res.end(typeof obj === 'string' ? obj : JSON.stringify(obj));
      };
      try {
        if (req.method !== 'POST') return reply(405, { error: 'POST only' });
        if (p.deny === '1') return reply(403, { error: 'forbidden by the test app' });
        const userId = p.user_id ?? '1';
        const userInfo = p.user_info !== undefined ? JSON.parse(p.user_info) : undefined;
        if (path === '/pusher/auth' || path === '/broadcasting/auth') {
          const channel = p.channel_name;
          const presence =
            channel.startsWith('presence-') && p.no_channel_data !== '1'
              ? {
                  user_id: p.numeric_id === '1' ? Number(userId) : userId,
                  ...(userInfo !== undefined ? { user_info: userInfo } : {}),
                }
              : undefined;
          const out = sdk.authorizeChannel(p.socket_id, channel, presence);
          if (p.forge === '1') {
            out.auth = forgedAuth(app.key, [p.socket_id, channel, out.channel_data].filter(Boolean).join(':'));
          }
          return reply(200, out);
        }
        if (path === '/pusher/user-auth' || path === '/broadcasting/user-auth') {
          const user = { id: userId, ...(userInfo !== undefined ? { user_info: userInfo } : {}) };
          const out = sdk.authenticateUser(p.socket_id, user);
          if (p.forge === '1') out.auth = forgedAuth(app.key, `${p.socket_id}::user::${out.user_data}`);
          return reply(200, out);
        }
        return reply(404, { error: `no route ${path}` });
      } catch (err) {
        return reply(500, { error: String(err?.stack ?? err) });
      }
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const base = `http://127.0.0.1:${server.address().port}`;
  t.after(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return {
    base,
    sdk,
    requests,
    /** pusher-js channelAuthorization options (ajax transport) with extra body params. */
    channelAuth(params = {}) {
      return { endpoint: `${base}/pusher/auth`, transport: 'ajax', params };
    },
    /** pusher-js userAuthentication options (ajax transport) with extra body params. */
    userAuth(params = {}) {
      return { endpoint: `${base}/pusher/user-auth`, transport: 'ajax', params };
    },
  };
}
