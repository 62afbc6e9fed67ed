// The JS client against a real `herald` (HERALD_BIN, default target/debug/herald): what an app
// using the client sees. Each test waits for conditions with bounded timeouts, never for time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Herald, HeraldApi, HeraldError, backoff, tokenExpiry, websocketUrl } from '../src/herald.js';
import { serverForFile, eventually, nextEvent, API_KEY } from './server.js';

const { server, client, clients } = serverForFile();

/** Records the messages a handler gets (except the topic's join/leave announcements). */
function recorder() {
  const got = [];
  const handler = (message) => {
    if (message.type !== 'user_joined' && message.type !== 'user_left') got.push(message);
  };
  handler.got = got;
  return handler;
}

test('a subscriber gets what a backend publishes to its topic through the HTTP API', async () => {
  const alice = client('alice');
  const states = [];
  for (const state of ['connecting', 'connected']) alice.on(state, (m) => states.push(m.type));
  const session = await alice.connect();
  assert.equal(session.user_id, 'alice');
  assert.equal(session.role, 'user');
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.equal(alice.state, 'connected');

  const onTopic = recorder();
  const byType = recorder();
  alice.on('task.created', byType);
  const info = await alice.subscribe('chat:tasks', onTopic);
  assert.equal(info.topic, 'chat:tasks');
  assert.equal(typeof info.epoch, 'string');

  const answer = await server.api.publish({ scope: 'topic', target: 'chat:tasks', type: 'task.created', data: { id: 't1' } });
  assert.equal(answer.recipients, 1);
  await eventually('the publication', () => onTopic.got.length === 1);
  const [message] = onTopic.got;
  assert.equal(message.type, 'task.created');
  assert.equal(message.topic, 'chat:tasks');
  assert.deepEqual(message.data, { id: 't1' });
  assert.equal(message.id, answer.id);
  assert.equal(message.offset, answer.offset);
  assert.equal(byType.got.length, 1, 'on(type) sees it too');
  assert.deepEqual(alice.subscriptions(), [{ topic: 'chat:tasks', offset: answer.offset, epoch: info.epoch }]);
});

test('disconnect() closes, says disconnected, and stops reconnecting', async () => {
  const carol = client('carol');
  await carol.connect();
  const disconnected = nextEvent(carol, 'disconnected');
  carol.disconnect();
  const event = await disconnected;
  assert.equal(event.data.reconnect, false);
  assert.equal(carol.state, 'disconnected');
  await assert.rejects(carol.publish('chat:x', 'e', {}), { code: 'disconnected' });
});

test('client publish, history and unsubscribe', async () => {
  const dave = client('dave');
  const erin = client('erin');
  await Promise.all([dave.connect(), erin.connect()]);
  const atErin = recorder();
  await erin.subscribe('feed:room', atErin);
  const published = await dave.publish('feed:room', 'said', { text: 'hi' });
  assert.equal(published.topic, 'feed:room');
  await eventually('the client publication', () => atErin.got.length === 1);
  assert.equal(atErin.got[0].type, 'said');
  assert.deepEqual(atErin.got[0].from, { user_id: 'dave', client_id: dave.session.client_id });

  const page = await dave.history('feed:room', { limit: 10 });
  assert.deepEqual(page.messages.map((m) => m.id), [published.id]);

  // After unsubscribing, only the other topic's publication comes (a marker, not a timer).
  await erin.unsubscribe('feed:room');
  const atOther = recorder();
  await erin.subscribe('chat:other', atOther);
  await server.api.publish({ scope: 'topic', target: 'feed:room', type: 'said', data: { text: 'gone' } });
  await server.api.publish({ scope: 'topic', target: 'chat:other', type: 'marker', data: {} });
  await eventually('the marker', () => atOther.got.length === 1);
  assert.equal(atErin.got.length, 1, 'nothing after unsubscribe');
});

test('after the server is killed and restarted, the client reconnects and recovers what it missed', async () => {
  const frank = client('frank');
  await frank.connect();
  const got = recorder();
  await frank.subscribe('feed:recover', got);
  await server.api.publish({ scope: 'topic', target: 'feed:recover', type: 'n', data: { n: 1 } });
  await eventually('message 1', () => got.got.length === 1);

  const states = [];
  for (const state of ['connecting', 'connected', 'disconnected']) frank.on(state, (m) => states.push(m));
  const resubscribed = nextEvent(frank, 'resubscribed', (m) => m.topic === 'feed:recover', 20000);
  await server.away(async (api) => {
    for (const n of [2, 3, 4]) await api.publish({ scope: 'topic', target: 'feed:recover', type: 'n', data: { n } });
  });
  const event = await resubscribed;
  assert.equal(event.data.recovered, true);
  assert.equal(event.data.resumed, true);
  await server.api.publish({ scope: 'topic', target: 'feed:recover', type: 'n', data: { n: 5 } });
  await eventually('messages 2 to 5', () => got.got.length === 5);
  assert.deepEqual(got.got.map((m) => m.data.n), [1, 2, 3, 4, 5], 'in order, no gap, no duplicate');
  assert.deepEqual(got.got.map((m) => m.offset), [1, 2, 3, 4, 5]);

  const disconnected = states.find((m) => m.type === 'disconnected');
  assert.ok(disconnected, 'a disconnected event');
  assert.equal(disconnected.data.reconnect, true);
  assert.equal(typeof disconnected.data.delay, 'number');
  assert.ok(states.some((m) => m.type === 'connecting'));
  assert.equal(states.at(-1).type, 'connected');
  assert.equal(frank.state, 'connected');
});

test('recovered: false reaches the app when what it missed was trimmed', async () => {
  const gina = client('gina');
  await gina.connect();
  const got = recorder();
  await gina.subscribe('short:feed', got);
  await server.api.publish({ scope: 'topic', target: 'short:feed', type: 'n', data: { n: 1 } });
  await eventually('message 1', () => got.got.length === 1);

  const resubscribed = nextEvent(gina, 'resubscribed', (m) => m.topic === 'short:feed', 20000);
  // history_size = 2: of 2..5 only 4 and 5 are kept, so 2 and 3 are lost for gina.
  await server.away(async (api) => {
    for (const n of [2, 3, 4, 5]) await api.publish({ scope: 'topic', target: 'short:feed', type: 'n', data: { n } });
  });
  const event = await resubscribed;
  assert.equal(event.data.recovered, false);
  assert.equal(event.data.resumed, true);
  assert.equal(event.data.offset, 5, 'where to continue from');
  await server.api.publish({ scope: 'topic', target: 'short:feed', type: 'n', data: { n: 6 } });
  await eventually('message 6', () => got.got.length >= 2);
  assert.deepEqual(got.got.map((m) => m.data.n), [1, 6], 'nothing replayed, live again');
});

test('getToken() refreshes the token before it expires, on the same connection', async () => {
  let minted = 0;
  const henry = client('henry', {
    getToken: () => {
      minted++;
      return server.token('henry', { ttl: '3s' });
    },
  });
  const closes = recorder();
  henry.on('disconnected', closes);
  const refreshed = recorder();
  henry.on('refreshed', refreshed);
  await henry.connect();
  const first = henry.session.client_id;
  const firstExpiry = tokenExpiry(await Promise.resolve(server.token('henry', { ttl: '3s' })));
  // Two refreshes, and past the first token's expiry, still the same connection.
  await eventually('two refreshes', () => refreshed.got.length >= 2, 15000);
  await eventually('the first token to expire', () => Date.now() > firstExpiry + 500, 15000);
  const status = await henry.status();
  assert.equal(status.client_id, first);
  assert.equal(closes.got.length, 0, 'never disconnected');
  assert.ok(minted >= 3);
  assert.equal(typeof refreshed.got[0].data.expires_at, 'number');
});

test('a static token that expires closes the connection with token_expired, and no retry', async () => {
  const ivan = new Herald({ url: server.ws, WebSocket, token: server.token('ivan', { ttl: '2s' }), reconnect: { minDelay: 50 } });
  clients.push(ivan);
  const errors = recorder();
  ivan.on('error', errors);
  const disconnected = nextEvent(ivan, 'disconnected', () => true, 15000);
  await ivan.connect();
  const event = await disconnected;
  assert.equal(event.data.code, 1008);
  assert.equal(event.data.reconnect, false);
  assert.equal(event.data.error.code, 'token_expired');
  assert.ok(errors.got.some((m) => m.data.code === 'token_expired'));
});

test('offline messages arrive first with offline: true, and an acked one is not delivered again', async () => {
  const api = server.api;
  const first = await api.publish({ scope: 'user', target: 'judy', type: 'note', data: { n: 1 } });
  const second = await api.publish({ scope: 'user', target: 'judy', type: 'note', data: { n: 2 } });
  assert.equal(first.recipients, 0);

  const a = client('judy');
  const notes = recorder();
  a.on('note', notes);
  await a.connect();
  await a.ping(); // the inbox is written before any reply, so it is all here now
  assert.deepEqual(notes.got.map((m) => [m.data.n, m.offline]), [[1, true], [2, true]]);
  a.ack([first.id]);
  await a.ping(); // the ack went before the ping
  a.disconnect();

  const b = client('judy', { autoAck: true });
  const again = recorder();
  b.on('note', again);
  await b.connect();
  await b.ping();
  assert.deepEqual(again.got.map((m) => m.id), [second.id], 'only the unacked one');
  await b.ping(); // autoAck sent its ack
  b.disconnect();

  const c = client('judy');
  const none = recorder();
  c.on('note', none);
  await c.connect();
  await c.ping();
  assert.deepEqual(none.got, [], 'autoAck acknowledged it');
});

test('presence lists who is on a topic, and join events reach the others', async () => {
  const kim = client('kim');
  const leo = client('leo');
  await Promise.all([kim.connect(), leo.connect()]);
  await kim.subscribe('chat:lobby', () => {});
  const joined = nextEvent(kim, 'user_joined', (m) => m.data.user_id === 'leo');
  await leo.subscribe('chat:lobby', () => {});
  await joined;
  const presence = await kim.presence('chat:lobby');
  assert.equal(presence.topic, 'chat:lobby');
  assert.deepEqual(presence.users.map((u) => [u.user_id, u.connections]), [['kim', 1], ['leo', 1]]);
  assert.deepEqual(await server.api.presence('chat:lobby'), presence);
});

test('errors reach the app with their codes', async () => {
  // A refused token: connect() rejects, no retry with a static token.
  const bad = new Herald({ url: server.ws, WebSocket, token: 'not-a-jwt', reconnect: { minDelay: 50 } });
  clients.push(bad);
  const errors = recorder();
  bad.on('error', errors);
  await assert.rejects(bad.connect(), (e) => e instanceof HeraldError && e.code === 'auth_failed');
  assert.equal(bad.state, 'disconnected');
  assert.equal(errors.got[0].data.code, 'auth_failed');

  const mia = client('mia');
  await mia.connect();
  // No client publish in the default namespace; someone else's user topic.
  await assert.rejects(mia.publish('news', 'e', {}), { code: 'forbidden' });
  await assert.rejects(mia.subscribe('user:other', () => {}), { code: 'forbidden' });
  assert.deepEqual(mia.subscriptions(), [], 'a refused subscription is not kept');
  await assert.rejects(mia.subscribe('bad topic!', () => {}), { code: 'invalid_message' });
  await assert.rejects(mia.history('news'), { code: 'not_found' });
  assert.equal(mia.state, 'connected', 'errors do not close the connection');

  // Bad input is refused by the client before anything is sent.
  assert.throws(() => new Herald({ url: server.ws, WebSocket }), /token/);
  assert.throws(() => new Herald({ url: 'ftp://x', WebSocket, token: 't' }), /ws:/);
  assert.throws(() => new Herald({ url: 'ws://x/ws', token: 't', WebSocket: undefined }), /WebSocket/);
  await assert.rejects(mia.subscribe('', () => {}), TypeError);
  await assert.rejects(mia.subscribe('chat:x', 'not a function'), TypeError);
  assert.throws(() => mia.ack('id'), TypeError);

  // The HTTP API: a wrong key is 401 unauthorized, a bad scope 400 invalid_message.
  const wrong = new HeraldApi({ url: server.http, key: 'wrong' });
  await assert.rejects(wrong.stats(), { status: 401, code: 'unauthorized' });
  await assert.rejects(server.api.publish({ scope: 'planet', type: 'x' }), { status: 400, code: 'invalid_message' });
  const admin = new HeraldApi({ url: server.http, key: server.token('ops', { role: 'admin' }) });
  assert.equal(typeof (await admin.stats()).total_clients, 'number');
  assert.equal(API_KEY, server.api.key);
});

test('a server kick (close 1000) is final: no reconnection', async () => {
  const nina = client('nina');
  await nina.connect();
  const disconnected = nextEvent(nina, 'disconnected');
  const answer = await server.api.disconnectUser('nina');
  assert.equal(answer.disconnected, 1);
  const event = await disconnected;
  assert.equal(event.data.code, 1000);
  assert.equal(event.data.reconnect, false);
  assert.equal(nina.state, 'disconnected');
});

test('a frozen server (sockets open, no answers) is noticed by the heartbeat, and the client comes back when it thaws', async () => {
  const olga = client('olga', { heartbeat: 200, requestTimeout: 500, connectTimeout: 500 });
  await olga.connect();
  const got = recorder();
  await olga.subscribe('feed:frozen', got);
  const dropped = nextEvent(olga, 'disconnected');
  server.freeze();
  let back;
  try {
    const event = await dropped;
    assert.equal(event.data.code, 4000);
    assert.equal(event.data.reason, 'no reply to ping');
    assert.equal(event.data.reconnect, true);
    // Attempts against the frozen server are given up after connectTimeout, and retried.
    await nextEvent(olga, 'disconnected', (m) => m.data.reason.startsWith('not authenticated within'));
    back = nextEvent(olga, 'resubscribed', (m) => m.topic === 'feed:frozen', 20000);
  } finally {
    server.thaw();
  }
  assert.equal((await back).data.recovered, true);
  await server.api.publish({ scope: 'topic', target: 'feed:frozen', type: 'n', data: { n: 1 } });
  await eventually('the publication after the thaw', () => got.got.length === 1);
});

test('a subscription the server revokes is dropped, not resubscribed', async () => {
  await server.api.call('PUT', '/api/v1/projects/p9/members/pat');
  const pat = client('pat');
  await pat.connect();
  await pat.subscribe('project:p9', () => {});
  const revoked = nextEvent(pat, 'unsubscribed', (m) => m.data.topic === 'project:p9');
  await server.api.call('DELETE', '/api/v1/projects/p9/members/pat');
  assert.equal((await revoked).data.reason, 'permission revoked');
  assert.deepEqual(pat.subscriptions(), []);
});

test('a publication named like a server frame changes nothing in the client', async () => {
  const sam = client('sam');
  await sam.connect();
  const onTopic = recorder();
  await sam.subscribe('chat:spoof', onTopic);
  // The server refuses such names from clients; a backend may still use them.
  for (const type of ['unsubscribed', 'connection.established', 'error']) {
    await server.api.publish({ scope: 'topic', target: 'chat:spoof', type, data: { topic: 'chat:spoof', code: 'x' } });
  }
  await server.api.publish({ scope: 'topic', target: 'chat:spoof', type: 'after', data: {} });
  await eventually('the last publication', () => onTopic.got.some((m) => m.type === 'after'));
  assert.deepEqual(onTopic.got.map((m) => m.type), ['unsubscribed', 'connection.established', 'error', 'after']);
  assert.deepEqual(sam.subscriptions().map((s) => s.topic), ['chat:spoof'], 'still subscribed');
  assert.equal(sam.state, 'connected');
});

test('two parts of an app can subscribe to one topic, and each handler gets every message', async () => {
  const uma = client('uma');
  await uma.connect();
  const first = recorder();
  const second = recorder();
  await uma.subscribe('chat:shared', first);
  await uma.subscribe('chat:shared', second);
  await server.api.publish({ scope: 'topic', target: 'chat:shared', type: 'one', data: {} });
  await eventually('both handlers', () => first.got.length === 1 && second.got.length === 1);
  // Removing one handler keeps the subscription for the other.
  await uma.unsubscribe('chat:shared', first);
  await server.api.publish({ scope: 'topic', target: 'chat:shared', type: 'two', data: {} });
  await eventually('the second handler', () => second.got.length === 2);
  assert.deepEqual(first.got.map((m) => m.type), ['one']);
  assert.deepEqual(uma.subscriptions().map((s) => s.topic), ['chat:shared']);
});

test('a subscribe() still waiting when the app disconnects is rejected, not left pending', async () => {
  const vic = client('vic');
  const pending = vic.subscribe('chat:never', () => {});
  vic.disconnect();
  await assert.rejects(pending, (error) => error instanceof HeraldError && error.code === 'disconnected');
});

test('backoff grows exponentially to its cap, with jitter below the base', () => {
  const options = { minDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5 };
  const high = (attempt) => backoff(attempt, options, () => 0);
  const low = (attempt) => backoff(attempt, options, () => 1);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(high), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(low), [50, 100, 200, 400, 500, 500]);
  assert.equal(websocketUrl('http://h:1'), 'ws://h:1/ws');
  assert.equal(websocketUrl('https://h/'), 'wss://h/ws');
  assert.equal(websocketUrl('ws://h:1/ws/connect'), 'ws://h:1/ws/connect');
});

test('in a browser the default URL is the page origin + /ws, whatever the page path', () => {
  globalThis.location = { origin: 'https://app.example:8443', href: 'https://app.example:8443/app/board?x=1' };
  try {
    assert.equal(websocketUrl(), 'wss://app.example:8443/ws');
  } finally {
    delete globalThis.location;
  }
});
