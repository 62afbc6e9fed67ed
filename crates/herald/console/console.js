// The Herald console: a page that uses the JS client (served at /herald.js from
// clients/js/src/herald.js) to connect, subscribe, publish and watch events, and the server API
// (with an API key or an admin JWT) for live stats and publishing to every scope.
// Everything from the network is shown with textContent, never parsed as HTML.
import { Herald, HeraldApi } from '/herald.js';

const $ = (id) => document.getElementById(id);
const MAX_ENTRIES = 500;
let client = null;
let count = 0;
let retrying = false; // disconnected, with a reconnection scheduled
let presenceTopic = null; // the topic the presence panel shows

// ---- the message log ----------------------------------------------------------------------------

const REPLIES = new Set(['auth_success', 'connection.established', 'subscribed', 'unsubscribed', 'published', 'presence', 'history', 'pong', 'refreshed', 'status', 'echo', 'auth_required']);
const PRESENCE = new Set(['user_joined', 'user_left']);

function kind(message) {
  if (message.type === 'error') return 'error';
  if (message.local) return (message.type === 'resubscribed' || message.type === 'resumed') && !message.data?.recovered ? 'error' : 'state';
  if (message.offline) return 'offline';
  if (PRESENCE.has(message.type)) return 'presence';
  if (REPLIES.has(message.type)) return 'reply';
  return 'delivery';
}

function clock(timestamp) {
  const date = timestamp ? new Date(timestamp) : new Date();
  const valid = Number.isNaN(date.getTime()) ? new Date() : date;
  return valid.toTimeString().slice(0, 8) + '.' + String(valid.getMilliseconds()).padStart(3, '0');
}

function cell(className, text) {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}

function log(message) {
  const entry = document.createElement('li');
  entry.className = 'entry';
  const type = kind(message);
  entry.dataset.kind = type;
  entry.dataset.type = message.type;
  const where = message.topic ?? message.stream ?? message.data?.topic ?? '';
  const offset = typeof message.offset === 'number' ? ` #${message.offset}` : '';
  entry.append(
    cell('time', clock(message.timestamp)),
    cell(`type t-${type}`, message.offline ? `${message.type} (offline)` : message.type),
    cell('topic', where + offset),
    cell('data', JSON.stringify(message.data ?? {})),
  );
  const list = $('messages');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(entry);
  while (list.children.length > MAX_ENTRIES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  count++;
  $('count').textContent = String(count);
  // Keep the presence panel current while its topic's joins and leaves arrive.
  if (PRESENCE.has(message.type) && message.topic === presenceTopic && client) showPresence();
}

$('clear').addEventListener('click', () => {
  $('messages').replaceChildren();
  count = 0;
  $('count').textContent = '0';
});

function note(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle('error', isError);
}

function parseJson(text, what) {
  try {
    return JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
}

// ---- connection ---------------------------------------------------------------------------------

function showState(state, detail = '') {
  $('status').dataset.state = state;
  $('status-text').textContent = detail ? `${state} (${detail})` : state;
  $('connect').disabled = state !== 'disconnected';
  $('disconnect').disabled = state === 'disconnected' && !retrying;
}

$('connect').addEventListener('click', () => {
  const token = $('token').value.trim();
  if (!token) {
    log({ type: 'error', local: true, data: { code: 'no_token', message: 'paste a token first (herald token --sub alice)' } });
    return;
  }
  const topics = client ? client.subscriptions() : [];
  client?.disconnect();
  client = new Herald({ url: location.origin, token, autoAck: true });
  resumed = null;
  renderStreams();
  client.on('message', (message) => {
    log(message);
    if (message.stream) renderStreamsSoon();
  });
  client.on('error', (message) => message.local && log(message));
  client.on('resubscribed', log);
  client.on('resumed', (m) => {
    resumed = m.data.streams;
    renderStreams();
    log(m);
  });
  client.on('connecting', (m) => {
    showState('connecting');
    log(m);
  });
  client.on('connected', (m) => {
    showState('connected');
    $('session').textContent = `${m.data.user_id} · ${m.data.role} · ${m.data.client_id}`;
    renderStreams();
    log(m);
  });
  client.on('disconnected', (m) => {
    retrying = m.data.reconnect;
    const retry = m.data.reconnect ? `retry in ${m.data.delay} ms` : m.data.error?.code ?? `code ${m.data.code}`;
    showState('disconnected', retry);
    $('session').textContent = '';
    log(m);
  });
  for (const { topic } of topics) subscribe(topic);
  client.connect().catch(() => {}); // a refusal is shown by the disconnected and error events
});

$('disconnect').addEventListener('click', () => {
  retrying = false;
  client?.disconnect();
  showState('disconnected');
});

// ---- scope streams ------------------------------------------------------------------------------

let resumed = null; // the last `resumed` event's streams: {stream: {recovered, offset?, epoch?}}

function renderStreams() {
  const streams = Object.entries(client?.streams() ?? {});
  $('stream-list').replaceChildren(
    ...streams.map(([stream, { offset, epoch }]) => {
      const item = document.createElement('li');
      item.dataset.stream = stream;
      const position = cell('position', `offset ${offset} · epoch …${String(epoch).slice(-8)}`);
      position.title = `epoch ${epoch}`;
      const how = resumed?.[stream];
      const recovery = cell('recovery', how ? (how.recovered ? 'recovered' : 'not recovered') : '');
      if (how) {
        recovery.dataset.recovered = String(how.recovered === true);
        recovery.title = how.recovered ? 'every message missed during the reconnection was replayed' : 'messages may be missing (too long away, or the server restarted)';
      }
      item.append(cell('name', stream), position, recovery);
      return item;
    }),
  );
}

let streamsQueued = false;
function renderStreamsSoon() {
  if (streamsQueued) return;
  streamsQueued = true;
  requestAnimationFrame(() => {
    streamsQueued = false;
    renderStreams();
  });
}

// ---- subscriptions ------------------------------------------------------------------------------

function renderSubscriptions() {
  const list = $('subscription-list');
  list.replaceChildren();
  for (const { topic, offset, epoch } of client?.subscriptions() ?? []) {
    const item = document.createElement('li');
    item.dataset.topic = topic;
    const button = document.createElement('button');
    button.textContent = 'Unsubscribe';
    button.addEventListener('click', async () => {
      try {
        await client.unsubscribe(topic);
      } catch (error) {
        log({ type: 'error', local: true, topic, data: { code: error.code ?? 'error', message: error.message } });
      }
      renderSubscriptions();
    });
    const position = offset === undefined ? '' : `offset ${offset}${epoch ? ` · epoch ${String(epoch).slice(0, 8)}` : ''}`;
    item.append(cell('name', topic), cell('position', position), button);
    list.append(item);
  }
}

async function subscribe(topic) {
  const pending = client.subscribe(topic, renderSubscriptionsSoon);
  renderSubscriptions();
  try {
    await pending;
  } catch (error) {
    // The refusal itself (forbidden, invalid_message) is in the log as an error reply.
  }
  renderSubscriptions();
}

let renderQueued = false;
function renderSubscriptionsSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderSubscriptions();
  });
}

$('subscribe-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const topic = $('topic').value.trim();
  if (!client) return log({ type: 'error', local: true, data: { code: 'not_connected', message: 'connect first' } });
  if (!topic) return log({ type: 'error', local: true, data: { code: 'invalid_topic', message: 'enter a topic' } });
  subscribe(topic);
});

// ---- publish and presence -----------------------------------------------------------------------

$('publish-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    if (!client) throw new Error('connect first');
    const data = parseJson($('publish-data').value, 'data');
    const reply = await client.publish($('publish-topic').value.trim(), $('publish-event').value.trim(), data);
    note('publish-result', `published ${reply.id}${reply.offset !== undefined ? ` at offset ${reply.offset}` : ''}`);
  } catch (error) {
    note('publish-result', error.message, true);
  }
});

async function showPresence() {
  const list = $('presence-list');
  try {
    const answer = await client.presence(presenceTopic);
    list.replaceChildren(
      ...answer.users.map((user) => {
        const item = document.createElement('li');
        item.dataset.user = user.user_id;
        item.append(cell('name', user.user_id), cell('position', `${user.connections} connection(s) since ${clock(user.joined_at)}`));
        return item;
      }),
    );
    if (answer.users.length === 0) list.replaceChildren(cell('hint', 'nobody'));
  } catch (error) {
    list.replaceChildren(cell('result error', error.message));
  }
}

$('presence-form').addEventListener('submit', (event) => {
  event.preventDefault();
  presenceTopic = $('presence-topic').value.trim();
  if (client && presenceTopic) showPresence();
});

// ---- admin: live stats and publishing to every scope --------------------------------------------

let admin = null;
let statsTimer = null;
let last = null;
const rates = [];

function drawChart() {
  const canvas = $('rate-chart');
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...rates);
  context.strokeStyle = '#d9dde3';
  context.beginPath();
  context.moveTo(0, height - 0.5);
  context.lineTo(width, height - 0.5);
  context.stroke();
  context.fillStyle = '#6b7280';
  context.font = '10px sans-serif';
  context.fillText(`${top.toFixed(top < 10 ? 1 : 0)}/s`, 4, 11);
  if (rates.length < 2) return;
  const step = width / 59;
  context.strokeStyle = '#1a9c3e';
  context.lineWidth = 2;
  context.beginPath();
  rates.forEach((rate, i) => {
    const x = width - (rates.length - 1 - i) * step;
    const y = height - 2 - (rate / top) * (height - 16);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

async function pollStats() {
  try {
    const stats = await admin.stats();
    const now = performance.now();
    if (last) {
      const rate = Math.max(0, (stats.messages_sent - last.sent) / ((now - last.at) / 1000));
      rates.push(rate);
      if (rates.length > 60) rates.shift();
      $('stat-rate').textContent = rate.toFixed(1);
    }
    last = { sent: stats.messages_sent, at: now };
    $('stat-total').textContent = String(stats.total_clients);
    $('stat-users').textContent = String(stats.users);
    $('stat-topics').textContent = String(stats.topics);
    const body = $('by-role').tBodies[0];
    body.replaceChildren(
      ...Object.entries(stats.by_role ?? {}).map(([role, n]) => {
        const row = document.createElement('tr');
        row.dataset.role = role;
        const name = document.createElement('td');
        name.textContent = role;
        const value = document.createElement('td');
        value.textContent = String(n);
        row.append(name, value);
        return row;
      }),
    );
    note('admin-error', '');
    drawChart();
  } catch (error) {
    note('admin-error', `stats: ${error.message}`, true);
  }
}

$('admin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  try {
    admin = new HeraldApi({ url: location.origin, key: $('admin-key').value.trim() });
  } catch (error) {
    note('admin-error', error.message, true);
    return;
  }
  clearInterval(statsTimer);
  last = null;
  rates.length = 0;
  pollStats();
  statsTimer = setInterval(pollStats, 1000);
  $('admin-stop').disabled = false;
});

$('admin-stop').addEventListener('click', () => {
  clearInterval(statsTimer);
  statsTimer = null;
  $('admin-stop').disabled = true;
});

$('scope').addEventListener('change', () => {
  $('target').disabled = $('scope').value === 'all';
});

$('admin-publish').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    if (!admin) admin = new HeraldApi({ url: location.origin, key: $('admin-key').value.trim() });
    const scope = $('scope').value;
    const message = { scope, type: $('type').value.trim(), data: parseJson($('data').value, 'data') };
    if (scope !== 'all') message.target = $('target').value.trim();
    const answer = await admin.publish(message);
    let text = `sent ${answer.id} to ${answer.recipients} connection(s)`;
    if (answer.queued) text += ', queued for offline delivery';
    if (answer.offset !== undefined) text += `, offset ${answer.offset}`;
    note('admin-result', text);
  } catch (error) {
    note('admin-result', error.message, true);
  }
});

showState('disconnected');
drawChart();
