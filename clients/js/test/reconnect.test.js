// Reconnection against a real `herald`: resubscription in batches (no rate_limited, every topic
// back), backoff that grows until a connection lasts, "too many errors" retried, the reasons of
// `disconnected`, and what `rate_limited` does to a publish.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { serverForFile, eventually, nextEvent, recordingWebSocket, parseFrame, sleep } from './server.js';

const { server, client } = serverForFile();

function recorder() {
  const got = [];
  const handler = (message) => got.push(message);
  handler.got = got;
  return handler;
}

test('50 topics come back after each of 5 server restarts, one batch subscribe each time, never rate_limited', async () => {
  const Recording = recordingWebSocket(WebSocket);
  const storm = client('storm', { WebSocket: Recording });
  await storm.connect();
  // Half with history (resumed from their position), half without.
  const topics = [];
  for (let i = 0; i < 25; i++) topics.push(`feed:storm-${i}`, `storm-${i}`);
  const got = new Map(topics.map((topic) => [topic, []]));
  await Promise.all(topics.map((topic) => storm.subscribe(topic, (m) => got.get(topic).push(m.data.round))));
  const closes = recorder();
  storm.on('disconnected', closes);

  for (let round = 1; round <= 5; round++) {
    const resubscribed = new Map();
    const off = storm.on('resubscribed', (m) => resubscribed.set(m.topic, m.data));
    // The server is killed (no close frame); while the client cannot reach it, one message per
    // round goes to a topic with history; then it comes back on the same port.
    await server.away(async (api) => {
      await api.publish({ scope: 'topic', target: `feed:storm-${round}`, type: 'n', data: { round } });
    });
    await eventually(`round ${round}: 50 topics resubscribed`, () => resubscribed.size === 50, 20000);
    off();
    for (const topic of topics) {
      const info = resubscribed.get(topic);
      assert.equal(info.resumed, topic.startsWith('feed:'), topic);
      if (topic.startsWith('feed:')) assert.equal(info.recovered, true, `${topic} recovered`);
    }
    await eventually(`round ${round}: the missed message`, () => got.get(`feed:storm-${round}`).includes(round));
    const [connection] = await server.api.connections({ user: 'storm' });
    assert.equal(connection.topics.length, 50, `round ${round}: the server holds every topic`);
  }
  assert.equal(storm.state, 'connected');

  const received = Recording.frames.received.map((f) => parseFrame(f));
  const errors = received.filter((m) => m.type === 'error');
  assert.deepEqual(errors, [], 'no error frame at all (no rate_limited)');
  const subscribes = Recording.frames.sent.map((f) => parseFrame(f)).filter((m) => m.type === 'subscribe');
  assert.equal(subscribes.length, 6, 'one batch for the first subscriptions, then one per reconnection');
  for (const command of subscribes) assert.equal(command.topics.length, 50);
  const resumed = subscribes.at(-1).topics.filter((item) => typeof item === 'object');
  assert.equal(resumed.length, 25, 'the topics with history are resumed with since');
  assert.equal(typeof resumed[0].since.offset, 'number');
  assert.equal(typeof resumed[0].since.epoch, 'string');

  // Each kill, and each attempt while the server was away, is a `disconnected` that says why.
  assert.ok(closes.got.length >= 5);
  for (const close of closes.got) {
    assert.deepEqual([close.data.code, close.data.reason, close.data.reconnect], [1006, 'connection lost', true]);
  }
  for (const topic of topics) {
    const expected = topic.startsWith('feed:storm-') && Number(topic.split('-')[1]) >= 1 && Number(topic.split('-')[1]) <= 5 ? [Number(topic.split('-')[1])] : [];
    assert.deepEqual(got.get(topic), expected, `${topic}: each missed message once`);
  }
});

test('subscriptions made in one go share batch commands of at most 100 topics', async () => {
  const Recording = recordingWebSocket(WebSocket);
  const many = client('many', { WebSocket: Recording });
  await many.connect();
  const topics = Array.from({ length: 250 }, (_, i) => `many-${i}`);
  const infos = await Promise.all(topics.map((topic) => many.subscribe(topic, () => {})));
  assert.deepEqual(infos.map((info) => info.topic), topics);
  const subscribes = Recording.frames.sent.map((f) => parseFrame(f)).filter((m) => m.type === 'subscribe');
  assert.deepEqual(subscribes.map((m) => m.topics.length), [100, 100, 50]);
  assert.deepEqual(subscribes.flatMap((m) => m.topics), topics);
  const [connection] = await server.api.connections({ user: 'many' });
  assert.equal(connection.topics.length, 250);
  // One refused topic in a batch is refused alone.
  const [ok, refused] = await Promise.allSettled([many.subscribe('fine-topic', () => {}), many.subscribe('user:someone-else', () => {})]);
  assert.equal(ok.status, 'fulfilled');
  assert.equal(refused.reason.code, 'forbidden');
  assert.equal(Recording.frames.sent.map((f) => parseFrame(f)).filter((m) => m.type === 'subscribe').length, 4, 'both in one batch');
});

test('close 1008 "too many errors" is not a token failure: the client reconnects, with a backoff that grows until a connection lasts', async () => {
  // Five unknown commands: the fifth error is answered, then close 1008 "too many errors".
  const misbehave = (herald) => Promise.allSettled(Array.from({ length: 5 }, () => herald.request('no_such_command')));
  const noJitter = { minDelay: 40, maxDelay: 10000, factor: 2, jitter: 0 };

  const steady = client('errs', { reconnect: { ...noJitter, resetAfter: 60000 } });
  const closes = recorder();
  steady.on('disconnected', closes);
  await steady.connect();
  for (let round = 0; round < 3; round++) {
    const connected = nextEvent(steady, 'connected', () => true, 15000);
    const results = await misbehave(steady);
    assert.deepEqual(results.map((r) => r.reason?.code), Array(5).fill('unknown_type'));
    await connected;
  }
  assert.deepEqual(
    closes.got.map((m) => [m.data.code, m.data.reason, m.data.reconnect, m.data.error?.code, m.data.delay]),
    [
      [1008, 'too many errors', true, 'unknown_type', 40],
      [1008, 'too many errors', true, 'unknown_type', 80],
      [1008, 'too many errors', true, 'unknown_type', 160],
    ],
    'reconnects, and each quick drop doubles the delay (the count does not start over on open)',
  );

  // A connection that stayed up longer than resetAfter starts the count over.
  const lasting = client('errs2', { reconnect: { ...noJitter, resetAfter: 200 } });
  const lastingCloses = recorder();
  lasting.on('disconnected', lastingCloses);
  await lasting.connect();
  for (let round = 0; round < 2; round++) {
    const connected = nextEvent(lasting, 'connected', () => true, 15000);
    await sleep(1000); // well past resetAfter
    await misbehave(lasting);
    await connected;
  }
  assert.deepEqual(lastingCloses.got.map((m) => m.data.delay), [40, 40]);
});

test('a refused token is still final with a static token, and says why', async () => {
  const bad = client('x', { token: 'not-a-jwt' });
  const closes = recorder();
  bad.on('disconnected', closes);
  await assert.rejects(bad.connect(), { code: 'auth_failed' });
  assert.equal(closes.got.length, 1);
  const { data } = closes.got[0];
  assert.deepEqual([data.code, data.reason, data.reconnect, data.error.code], [1008, 'authentication failed', false, 'auth_failed']);
});

test('rate_limited rejects the publishes that were refused, and nothing closes', async () => {
  const chatty = client('chatty');
  const closes = recorder();
  chatty.on('disconnected', closes);
  const session = await chatty.connect();
  // 30 at once against a bucket of 20: some are refused, each with its own rejection.
  const results = await Promise.allSettled(Array.from({ length: 30 }, (_, n) => chatty.publish('feed:chatty', 'n', { n })));
  const refused = results.filter((r) => r.status === 'rejected');
  assert.ok(refused.length > 0, 'some were refused');
  assert.deepEqual([...new Set(refused.map((r) => r.reason.code))], ['rate_limited']);
  assert.ok(results.filter((r) => r.status === 'fulfilled').length >= 20 - 1);
  // A client that slows down is served again, on the same connection.
  await sleep(1500);
  const published = await chatty.publish('feed:chatty', 'n', { n: 'later' });
  assert.equal(typeof published.offset, 'number');
  assert.equal((await chatty.status()).client_id, session.client_id);
  assert.equal(closes.got.length, 0);
  assert.equal(chatty.state, 'connected');
});
