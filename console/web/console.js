// The Herald debug console (docs/console.md). Plain DOM, no build step: the
// page talks to /console/api/* on the admin listener that served it.
'use strict';

const API = '/console/api';
const MAX_ROWS = 2000; // events kept in the page
const $ = (sel) => document.querySelector(sel);

const state = {
  session: null,
  app: '',
  es: null,
  events: [], // newest last, at most MAX_ROWS
  paused: false,
  held: 0, // events that arrived while paused (kept, not shown)
  filters: { channel: '', event: '', socket: '' },
  statsTimer: null,
};

async function api(path, opts = {}) {
  const init = { credentials: 'same-origin', ...opts };
  if (opts.body !== undefined) {
    init.method = init.method || 'POST';
    init.headers = { 'Content-Type': 'application/json', 'X-Herald-Console': '1' };
    init.body = JSON.stringify(opts.body);
  }
  const res = await fetch(API + path, init);
  let data = null;
  try { data = await res.json(); } catch { /* empty body */ }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// ---- login ----

function showLogin(msg = '') {
  $('#login').hidden = false;
  $('#main').hidden = true;
  $('#bar').hidden = true;
  $('#login-error').textContent = msg;
}

async function start() {
  try {
    const s = await api('/session');
    enter(s);
  } catch (e) {
    showLogin(e.status === 401 ? '' : e.message);
  }
}

function enter(session) {
  state.session = session;
  $('#login').hidden = true;
  $('#main').hidden = false;
  $('#bar').hidden = false;
  $('#who').textContent = `${session.open ? 'open console' : session.scope === 'admin' ? 'admin' : 'app login'} · node ${session.node}`;
  $('#logout').hidden = session.open;
  const sel = $('#app');
  sel.replaceChildren(...session.apps.map((id) => el('option', { value: id }, id)));
  const wanted = new URLSearchParams(location.search).get('app');
  state.app = session.apps.includes(wanted) ? wanted : session.apps[0] || '';
  sel.value = state.app;
  connect();
  refreshStats();
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(refreshStats, 5000);
}

$('#login-form').addEventListener('change', () => {
  const app = document.querySelector('input[name=mode]:checked').value === 'app';
  $('#mode-app').hidden = !app;
  $('#mode-token').hidden = app;
});

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const app = document.querySelector('input[name=mode]:checked').value === 'app';
  const body = app ? { key: $('#login-key').value, secret: $('#login-secret').value } : { token: $('#login-token').value };
  try {
    enter(await api('/login', { body }));
  } catch (e) {
    $('#login-error').textContent = e.message;
  }
});

$('#logout').addEventListener('click', async () => {
  await api('/logout', { body: {} }).catch(() => {});
  if (state.es) state.es.close();
  clearInterval(state.statsTimer);
  showLogin();
});

$('#app').addEventListener('change', (ev) => {
  state.app = ev.target.value;
  state.events = [];
  render();
  connect();
  refreshStats();
});

// ---- the stream ----

function connect() {
  if (state.es) state.es.close();
  if (!state.app) return;
  const q = new URLSearchParams({ app: state.app });
  if (state.filters.channel) q.set('channel', state.filters.channel);
  const es = new EventSource(`${API}/stream?${q}`);
  state.es = es;
  setLive('connecting…', 'off');
  es.addEventListener('debug', (m) => onEvent(JSON.parse(m.data)));
  es.addEventListener('status', (m) => onStatus(JSON.parse(m.data)));
  es.onerror = () => {
    setLive('reconnecting…', 'off');
    // A 401 ends the stream for good; ask the session whether to log in.
    api('/session').catch((e) => { if (e.status === 401) { es.close(); showLogin('session ended'); } });
  };
}

function setLive(text, cls = '') {
  const l = $('#live');
  l.textContent = text;
  l.className = `pill ${cls}`;
}

function onStatus(st) {
  const names = st.nodes.map((n) => n.node).sort();
  setLive(`live · ${names.length} node${names.length === 1 ? '' : 's'}: ${names.join(', ')}`);
  $('#live').dataset.nodes = String(names.length);
  const sampled = st.nodes.filter((n) => n.sample_every > 1);
  const s = $('#sampling');
  const lost = st.nodes.reduce((a, n) => a + n.dropped, 0) + st.dropped;
  s.hidden = sampled.length === 0 && lost === 0;
  s.textContent = [
    ...sampled.map((n) => `${n.node} samples 1 in ${n.sample_every}`),
    lost ? `${lost} dropped` : '',
  ].filter(Boolean).join(' · ');
}

function onEvent(ev) {
  state.events.push(ev);
  if (state.events.length > MAX_ROWS) state.events.splice(0, state.events.length - MAX_ROWS);
  if (state.paused) {
    state.held++;
    updateCount();
    return;
  }
  if (matches(ev)) {
    const tb = $('#log');
    const sc = $('.scroll');
    const atTop = sc.scrollTop < 10;
    tb.prepend(...rows(ev));
    while (tb.children.length > MAX_ROWS * 2) tb.lastChild.remove();
    if (!atTop) sc.scrollTop += 0; // keep the reader's place
  }
  updateCount();
}

function matches(ev) {
  const f = state.filters;
  if (f.channel && !(ev.channel || '').startsWith(f.channel)) return false;
  if (f.event && !(ev.event || '').includes(f.event)) return false;
  if (f.socket && !(ev.socket_id || '').includes(f.socket)) return false;
  return true;
}

function details(ev) {
  const parts = [];
  if (ev.user_id) parts.push(`user ${ev.user_id}`);
  if (ev.code) parts.push(ev.kind.startsWith('webhook') ? `attempt ${ev.code}` : `code ${ev.code}`);
  if (ev.reason) parts.push(ev.reason);
  if (ev.kind === 'resume') parts.push(`after ${ev.serial || 0}, replayed ${ev.count || 0}`);
  if (ev.url) parts.push(`${ev.url} → ${ev.status || 'no answer'} (${ev.count} events)`);
  if (ev.kind === 'channel_occupied' || ev.kind === 'channel_vacated') parts.push(`${ev.count || 0} subscriptions`);
  if (ev.size) parts.push(`${ev.size} B`);
  if (ev.payload) parts.push(ev.payload.length > 80 ? ev.payload.slice(0, 80) + '…' : ev.payload);
  if (ev.sample > 1) parts.push(`(1 in ${ev.sample})`);
  return parts.join(' · ');
}

function rows(ev) {
  const t = new Date(ev.time);
  const time = t.toLocaleTimeString([], { hour12: false }) + '.' + String(t.getMilliseconds()).padStart(3, '0');
  const sock = ev.socket_id
    ? el('a', { href: '#', class: 'sock', title: 'inspect', onclick: (e) => { e.preventDefault(); e.stopPropagation(); inspect(ev.socket_id); } }, ev.socket_id)
    : '';
  const tr = el('tr', { class: 'ev', 'data-kind': ev.kind, 'data-channel': ev.channel || '' },
    el('td', {}, time), el('td', {}, ev.node), el('td', {}, el('span', { class: `kind k-${ev.kind}` }, ev.kind)),
    el('td', {}, ev.channel || ''), el('td', {}, sock), el('td', {}, ev.event || ''),
    el('td', { class: 'details' }, details(ev)));
  tr.addEventListener('click', () => {
    const next = tr.nextSibling;
    if (next && next.classList && next.classList.contains('payload')) { next.remove(); return; }
    tr.after(el('tr', { class: 'payload' }, el('td', { colSpan: 7, 'data-testid': 'payload' }, expand(ev))));
  });
  return [tr];
}

// expand is an entry opened: every field, the payload pretty-printed when
// it is JSON.
function expand(ev) {
  let payload = ev.payload || '';
  try { payload = JSON.stringify(JSON.parse(payload), null, 2); } catch { /* not JSON: as is */ }
  const rest = { ...ev };
  delete rest.payload;
  return `${JSON.stringify(rest, null, 2)}${payload ? `\n\npayload${ev.truncated ? ' (truncated)' : ''}:\n${payload}` : ''}`;
}

function render() {
  const tb = $('#log');
  const shown = state.events.filter(matches).reverse();
  tb.replaceChildren(...shown.flatMap(rows));
  updateCount();
}

function updateCount() {
  const shown = $('#log').querySelectorAll('tr.ev').length;
  $('#count').textContent = `${shown} shown · ${state.events.length} kept${state.held ? ` · ${state.held} arrived while paused` : ''}`;
}

let filterTimer = null;
for (const [id, key] of [['#f-channel', 'channel'], ['#f-event', 'event'], ['#f-socket', 'socket']]) {
  $(id).addEventListener('input', (ev) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      const changedChannel = key === 'channel' && state.filters.channel !== ev.target.value.trim();
      state.filters[key] = ev.target.value.trim();
      render();
      // The channel filter is also the stream's: nodes then produce only
      // that channel's events.
      if (changedChannel) connect();
    }, 300);
  });
}

$('#pause').addEventListener('click', () => {
  state.paused = !state.paused;
  $('#pause').textContent = state.paused ? 'Resume' : 'Pause';
  if (!state.paused) { state.held = 0; render(); }
  updateCount();
});

$('#clear').addEventListener('click', () => { state.events = []; state.held = 0; render(); });

// ---- stats ----

async function refreshStats() {
  if (!state.app) return;
  let s;
  try { s = await api(`/stats?app=${encodeURIComponent(state.app)}`); } catch { return; }
  const fmt = (n) => (n >= 100 ? Math.round(n) : Math.round(n * 10) / 10);
  $('#t-conns').textContent = s.connections;
  $('#t-chans').textContent = s.channels;
  $('#t-in').textContent = fmt(s.messages_in_per_s);
  $('#t-out').textContent = fmt(s.deliveries_per_s);
  $('#nodes').replaceChildren(...s.nodes.map((n) => el('tr', { 'data-node': n.node },
    el('td', {}, n.node), el('td', {}, n.connections), el('td', {}, n.channels), el('td', {}, fmt(n.deliveries_per_s)),
    el('td', { title: `deliveries/s, every ${n.history.step_s} s` }, spark(n.history.deliveries_per_s)))));
}

function spark(values) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 110 22');
  const vs = values.slice(-72);
  const top = Math.max(1, ...vs);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', vs.map((v, i) => `${(110 * (i + 72 - vs.length)) / 71},${21 - (20 * v) / top}`).join(' '));
  svg.append(line);
  return svg;
}

// ---- event creator ----

$('#pub-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('#pub-result');
  out.textContent = 'sending…';
  try {
    await api('/publish', { body: { app: state.app, channel: $('#pub-channel').value.trim(), event: $('#pub-event').value.trim(), data: $('#pub-data').value } });
    out.textContent = `sent ${new Date().toLocaleTimeString([], { hour12: false })}`;
    out.className = 'muted';
  } catch (e) {
    out.textContent = e.message;
    out.className = 'error';
  }
});

// ---- socket inspector ----

$('#sock-form').addEventListener('submit', (ev) => { ev.preventDefault(); inspect($('#sock-id').value.trim()); });

async function inspect(id) {
  $('#sock-id').value = id;
  const out = $('#sock-out');
  out.textContent = 'asking…';
  try {
    const a = await api(`/socket?app=${encodeURIComponent(state.app)}&socket_id=${encodeURIComponent(id)}`);
    const s = a.socket;
    const dl = el('dl', {},
      el('dt', {}, 'node'), el('dd', { 'data-testid': 'sock-node' }, a.node),
      el('dt', {}, 'state'), el('dd', {}, s.state),
      el('dt', {}, 'connected'), el('dd', {}, new Date(s.connected_at).toLocaleString()),
      el('dt', {}, 'user'), el('dd', {}, s.user_id ? `${s.user_id} ${s.user_info ? JSON.stringify(s.user_info) : ''}` : '(not signed in)'),
      el('dt', {}, 'write queue'), el('dd', {}, `${s.write_queue_bytes} B in ${s.write_queue_frames} frames`));
    const table = el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'channel'), el('th', {}, 'kind'), el('th', {}, 'last serial'), el('th', {}, 'member'))),
      el('tbody', {}, ...s.subscriptions.map((x) => el('tr', {}, el('td', {}, x.channel), el('td', {}, x.kind),
        el('td', {}, x.last_serial + (x.resuming ? ' (resuming)' : '')), el('td', {}, x.presence_member || '')))));
    out.replaceChildren(dl, table);
  } catch (e) {
    out.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}

start();
