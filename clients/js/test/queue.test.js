// The offline publish queue against a real `herald`: off by default (a publish while offline
// rejects at once), and with `offlineQueue` bounded, timed, and sent in order on reconnection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Herald } from '../src/herald.js';
import { serverForFile, eventually } from './server.js';

const { server, client } = serverForFile({ maxDelay: 300 });

test('by default a publish while offline rejects at once, with a clear error', async () => {
  const ida = client('ida');
  await ida.connect();
  await server.away(async () => {
    await eventually('ida to notice', () => ida.state !== 'connected');
    await assert.rejects(ida.publish('feed:queue', 'n', {}), (error) => error.code === 'disconnected' && /offlineQueue/.test(error.message));
  });
});

test('with offlineQueue, publishes made while offline are sent in order on reconnection; one beyond max is refused', async () => {
  const reader = client('reader');
  const writer = client('writer', { offlineQueue: { max: 3, timeout: 30000 } });
  await Promise.all([reader.connect(), writer.connect()]);
  const got = [];
  await reader.subscribe('feed:queue', (m) => got.push(m.data.n));
  let queued;
  await server.away(async () => {
    await eventually('the writer to notice', () => writer.state !== 'connected');
    queued = [1, 2, 3].map((n) => writer.publish('feed:queue', 'n', { n }));
    for (const promise of queued) promise.catch(() => {}); // awaited below; never unhandled
    await assert.rejects(writer.publish('feed:queue', 'n', { n: 4 }), { code: 'queue_full' });
  });
  const results = await Promise.all(queued);
  assert.deepEqual(results.map((r) => r.topic), ['feed:queue', 'feed:queue', 'feed:queue']);
  const offsets = results.map((r) => r.offset);
  assert.deepEqual(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2], 'in order');
  await eventually('the reader to get them', () => got.length === 3, 15000);
  assert.deepEqual(got, [1, 2, 3]);
  // Connected again: a publish goes straight out.
  assert.equal(typeof (await writer.publish('feed:queue', 'n', { n: 5 })).offset, 'number');
});

test('a queued publish rejects with timeout when the connection is not back in time, and disconnect() rejects the rest', async () => {
  const jo = client('jo', { offlineQueue: { max: 10, timeout: 200 } });
  await jo.connect();
  await server.away(async () => {
    await eventually('jo to notice', () => jo.state !== 'connected');
    await assert.rejects(jo.publish('feed:queue', 'n', {}), { code: 'timeout' });
    const long = new Herald({ url: server.ws, WebSocket, token: server.token('kai'), offlineQueue: { timeout: 60000 } });
    // Not started (no connect()): nothing to wait for, so it rejects at once.
    await assert.rejects(long.publish('feed:queue', 'n', {}), { code: 'disconnected' });
  });
  const kai = client('kai', { offlineQueue: { timeout: 60000 } });
  await kai.connect();
  await server.away(async () => {
    await eventually('kai to notice', () => kai.state !== 'connected');
    const waiting = kai.publish('feed:queue', 'n', {});
    waiting.catch(() => {});
    kai.disconnect();
    await assert.rejects(waiting, { code: 'disconnected' });
  });
});
