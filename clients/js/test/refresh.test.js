// Token refresh timed from the server's clock (`expires_in`), with the client's clock 30 s off
// either way, and getToken()'s "the user is logged out", against a real `herald`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Herald, HeraldError } from '../src/herald.js';
import { Server, eventually, nextEvent } from './server.js';

let server;
const clients = [];
const realNow = Date.now;

before(async () => {
  server = await Server.start();
});

after(async () => {
  Date.now = realNow;
  for (const client of clients) client.disconnect();
  await server?.stop();
});

function client(options) {
  const herald = new Herald({ url: server.ws, WebSocket, reconnect: { minDelay: 50, maxDelay: 500 }, ...options });
  clients.push(herald);
  return herald;
}

function recorder() {
  const got = [];
  const handler = (message) => got.push(message);
  handler.got = got;
  return handler;
}

for (const skew of [30000, -30000]) {
  const name = skew > 0 ? 'ahead of' : 'behind';
  test(`a client clock 30 s ${name} the server's: 20 s tokens are refreshed in time, without a getToken storm`, async () => {
    // The test process's clock is off; the server (and `herald token`) keep the real one.
    Date.now = () => realNow() + skew;
    try {
      let minted = 0;
      const user = `skew${skew > 0 ? 'ahead' : 'behind'}`;
      const herald = client({
        getToken: () => {
          minted++;
          return server.token(user, { ttl: '20s' });
        },
      });
      const closes = recorder();
      herald.on('disconnected', closes);
      const errors = recorder();
      herald.on('error', errors);
      const refreshed = recorder();
      herald.on('refreshed', refreshed);
      const session = await herald.connect();
      assert.equal(session.expires_in, 20, 'the server says how long the token lasts');
      // Past the first token's expiry (by the real clock) and two refreshes later.
      const firstExpiry = session.expires_at * 1000;
      await eventually('the first token to lapse, and two refreshes', () => realNow() > firstExpiry + 1500 && refreshed.got.length >= 2, 45000);
      assert.deepEqual(closes.got.map((m) => m.data), [], 'never disconnected (no token_expired)');
      assert.deepEqual(errors.got.map((m) => m.data.code), []);
      assert.equal((await herald.status()).client_id, session.client_id, 'the same connection');
      assert.ok(minted <= 4, `getToken() was called ${minted} times`);
      assert.equal(typeof refreshed.got[0].data.expires_in, 'number');
    } finally {
      Date.now = realNow;
    }
  });
}

test('getToken() returning null at a refresh logs out: disconnected for good, saying why', async () => {
  let calls = 0;
  const herald = client({ getToken: () => (++calls === 1 ? server.token('leaving', { ttl: '3s' }) : null) });
  const closes = recorder();
  herald.on('disconnected', closes);
  await herald.connect();
  const sub = herald.subscription('chat:leaving').subscribe();
  await sub.ready(5000);
  const event = await nextEvent(herald, 'disconnected', () => true, 15000);
  assert.deepEqual(
    [event.data.code, event.data.reason, event.data.reconnect, event.data.error?.code],
    [1000, 'logged out', false, 'logged_out'],
  );
  assert.equal(herald.state, 'disconnected');
  assert.equal(calls, 2);
  // The server saw the connection go.
  await eventually('the server to drop it', async () => (await server.api.call('GET', '/api/v1/connections/count?user=leaving')).count === 0);
  // And the client stays away.
  await assert.rejects(sub.ready(2000), { code: 'timeout' });
  assert.equal(calls, 2, 'no more getToken() calls');
  assert.equal(closes.got.length, 1);
});

test('getToken() returning null (or throwing logged_out) before connecting: connect() rejects with logged_out', async () => {
  for (const getToken of [() => null, async () => Promise.reject(new HeraldError('logged_out', 'session ended'))]) {
    let calls = 0;
    const herald = client({
      getToken: () => {
        calls++;
        return getToken();
      },
    });
    const closes = recorder();
    herald.on('disconnected', closes);
    await assert.rejects(herald.connect(), { code: 'logged_out' });
    assert.equal(herald.state, 'disconnected');
    assert.equal(calls, 1);
    assert.deepEqual(closes.got.map((m) => [m.data.reason, m.data.reconnect]), [['logged out', false]]);
  }
  // Any other failure of getToken() is retried.
  let calls = 0;
  const flaky = client({
    getToken: () => {
      if (++calls < 3) throw new Error('backend hiccup');
      return server.token('flaky');
    },
  });
  const session = await flaky.connect();
  assert.equal(session.user_id, 'flaky');
  assert.equal(calls, 3);
});
