// `encoding: 'msgpack'` against a real `herald`: the app passes a codec (@msgpack/msgpack here),
// the client asks for `?encoding=msgpack`, and every frame either way is binary MessagePack.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { encode, decode } from '@msgpack/msgpack';
import { Herald } from '../src/herald.js';
import { Server, eventually, recordingWebSocket, parseFrame } from './server.js';

let server;
const clients = [];

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const client of clients) client.disconnect();
  await server?.stop();
});

test('with encoding msgpack every frame is binary MessagePack, and everything works as with JSON', async () => {
  const Recording = recordingWebSocket(WebSocket);
  const options = { url: server.ws, WebSocket: Recording, encoding: 'msgpack', msgpack: { encode, decode }, reconnect: { minDelay: 50, maxDelay: 300 } };
  const liv = new Herald({ ...options, token: server.token('liv') });
  const max = new Herald({ ...options, token: server.token('max') });
  clients.push(liv, max);
  const session = await liv.connect();
  await max.connect();
  assert.equal(session.user_id, 'liv');
  assert.equal(liv.encoding, 'msgpack');

  const room = liv.subscription('feed:packed');
  const got = [];
  room.on('publication', (m) => got.push(m));
  await room.subscribe().ready(5000);
  const answer = await server.api.publish({ scope: 'topic', target: 'feed:packed', type: 'api.said', data: { text: 'héllo', n: 1, list: [1, 2] } });
  const published = await max.publish('feed:packed', 'client.said', { n: 2 });
  await eventually('both publications', () => got.length === 2);
  assert.deepEqual(got.map((m) => [m.type, m.data]), [['api.said', { text: 'héllo', n: 1, list: [1, 2] }], ['client.said', { n: 2 }]]);
  assert.equal(got[0].id, answer.id);
  assert.equal(got[1].offset, published.offset);
  assert.deepEqual(got[1].from, { user_id: 'max', client_id: max.session.client_id });
  assert.deepEqual((await liv.history('feed:packed')).messages.map((m) => m.type), ['api.said', 'client.said']);
  await assert.rejects(liv.publish('news', 'e', {}), { code: 'forbidden' }, 'errors decode too');

  // A reconnection resumes in msgpack as well.
  await server.away(async (api) => {
    await api.publish({ scope: 'topic', target: 'feed:packed', type: 'missed', data: { n: 3 } });
  });
  await eventually('the missed one', () => got.length === 3, 20000);
  assert.equal((await room.ready(5000)).recovered, true);

  const { urls, sent, received } = Recording.frames;
  assert.ok(urls.every((url) => new URL(url).searchParams.get('encoding') === 'msgpack'), urls.join(' '));
  assert.ok(received.length > 5);
  assert.deepEqual(received.filter((f) => typeof f === 'string'), [], 'no text frame from the server');
  assert.deepEqual(sent.filter((f) => !(f instanceof Uint8Array)), [], 'no text frame from the client');
  const types = received.map((f) => parseFrame(f, decode).type);
  assert.ok(types.includes('connection.established') || types.includes('auth_success'));
  assert.ok(types.includes('subscribed'));
});

test('encoding msgpack without a codec is refused at construction', () => {
  assert.throws(() => new Herald({ url: server.ws, WebSocket, token: 't', encoding: 'msgpack' }), /msgpack/);
  assert.throws(() => new Herald({ url: server.ws, WebSocket, token: 't', encoding: 'cbor' }), /encoding/);
});
