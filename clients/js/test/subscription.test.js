// Subscription objects (`herald.subscription(topic)`) against a real `herald`: states, events,
// several listeners, ready(), publish/presence/history through the object, reconnection, and
// the subscribe(topic, handler) sugar on top of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeraldError, Subscription } from '../src/herald.js';
import { serverForFile, eventually } from './server.js';

const { server, client } = serverForFile();

/** Records what a subscription emits, as [event, detail] pairs. */
function watch(sub, events) {
  const seen = [];
  for (const event of events) {
    sub.on(event, (e) => seen.push([event, e.type ?? e.reason ?? e.code ?? e.topic]));
  }
  return seen;
}

test('a subscription object goes unsubscribed → subscribing → subscribed and gives each listener every publication, join and leave', async () => {
  const ann = client('ann');
  const bob = client('bob');
  await Promise.all([ann.connect(), bob.connect()]);
  const room = ann.subscription('chat:objects');
  assert.ok(room instanceof Subscription);
  assert.equal(ann.subscription('chat:objects'), room, 'one object per topic');
  assert.equal(room.state, 'unsubscribed');
  const seen = watch(room, ['subscribing', 'subscribed', 'unsubscribed']);

  const first = [];
  const second = [];
  const once = [];
  const joins = [];
  const leaves = [];
  room.on('publication', (m) => first.push(m));
  const offSecond = room.on('publication', (m) => second.push(m.data.n));
  room.once('publication', (m) => once.push(m.data.n));
  room.on('join', (m) => joins.push(m.data.user_id));
  room.on('leave', (m) => leaves.push(m.data.user_id));

  assert.equal(room.subscribe(), room);
  assert.equal(room.state, 'subscribing');
  const info = await room.ready(5000);
  assert.equal(room.state, 'subscribed');
  assert.equal(info.topic, 'chat:objects');
  assert.equal(info.recovered, false);
  assert.equal(typeof info.epoch, 'string');
  assert.deepEqual(await room.ready(), info, 'ready() when subscribed resolves at once');

  const answer = await server.api.publish({ scope: 'topic', target: 'chat:objects', type: 'n', data: { n: 1 } });
  await eventually('publication 1', () => first.length === 1);
  assert.equal(first[0].id, answer.id);
  assert.equal(first[0].offset, answer.offset);
  assert.equal(room.offset, answer.offset, 'the position follows');
  offSecond();

  // Joins and leaves reach the join/leave listeners, not the publication ones: ann's own join
  // (it follows her subscribed reply), then bob's.
  await eventually('her own join', () => joins.length === 1);
  const bobRoom = bob.subscription('chat:objects').subscribe();
  await bobRoom.ready(5000);
  await eventually('his join', () => joins.length === 2);
  await bobRoom.unsubscribe();
  await eventually('the leave', () => leaves.length === 1);
  assert.deepEqual([joins, leaves], [['ann', 'bob'], ['bob']]);

  // publish / presence / history through the object.
  const mine = await room.publish('said', { n: 2 });
  assert.equal(mine.topic, 'chat:objects');
  assert.equal(mine.offset, answer.offset + 1);
  await eventually('publication 2', () => first.length === 2);
  assert.deepEqual(first.map((m) => m.data.n), [1, 2]);
  assert.deepEqual(second, [1], 'a removed listener gets nothing more');
  assert.deepEqual(once, [1], 'once() fires once');
  assert.deepEqual((await room.presence()).users.map((u) => u.user_id), ['ann']);
  assert.deepEqual((await room.history({ limit: 10 })).messages.map((m) => m.data.n), [1, 2]);

  // unsubscribe(): state, event, nothing delivered after it (a marker on another topic, not a timer).
  await room.unsubscribe();
  assert.equal(room.state, 'unsubscribed');
  await assert.rejects(room.ready(), (e) => e instanceof HeraldError && e.code === 'unsubscribed');
  const marker = [];
  const markerSub = ann.subscription('chat:marker');
  markerSub.on('publication', (m) => marker.push(m));
  await markerSub.subscribe().ready(5000);
  await server.api.publish({ scope: 'topic', target: 'chat:objects', type: 'n', data: { n: 3 } });
  await server.api.publish({ scope: 'topic', target: 'chat:marker', type: 'marker', data: {} });
  await eventually('the marker', () => marker.length === 1);
  assert.equal(first.length, 2, 'nothing after unsubscribe');
  assert.deepEqual(seen, [
    ['subscribing', 'subscribe() called'],
    ['subscribed', 'chat:objects'],
    ['unsubscribed', 'unsubscribe() called'],
  ]);
  assert.deepEqual(ann.subscriptions().map((s) => s.topic), ['chat:marker']);
});

test('ready() rejects on timeout, on a refusal (with an error event), and when the client gives up for good', async () => {
  // Not connected: subscribing, and ready(timeout) says so.
  const idle = client('idle');
  const waiting = idle.subscription('chat:idle').subscribe();
  assert.equal(waiting.state, 'subscribing');
  await assert.rejects(waiting.ready(100), { code: 'timeout' });

  // A refusal: forbidden, an error event, back to unsubscribed.
  const cora = client('cora');
  await cora.connect();
  const theirs = cora.subscription('user:someone-else');
  const errors = [];
  theirs.on('error', (error) => errors.push(error.code));
  const unsubscribed = [];
  theirs.on('unsubscribed', (e) => unsubscribed.push(e.code));
  await assert.rejects(theirs.subscribe().ready(5000), { code: 'forbidden' });
  assert.equal(theirs.state, 'unsubscribed');
  assert.deepEqual(errors, ['forbidden']);
  assert.deepEqual(unsubscribed, ['forbidden']);
  assert.equal(cora.state, 'connected');

  // The client gives up for good (a refused static token): ready() rejects with the reason.
  const refused = client('dan', { token: 'not-a-jwt' });
  const pending = refused.subscription('chat:never').subscribe().ready();
  refused.connect().catch(() => {});
  await assert.rejects(pending, { code: 'auth_failed' });

  // disconnect() too.
  const eve = client('eve');
  const sub = eve.subscription('chat:eve').subscribe();
  const ready = sub.ready();
  eve.disconnect();
  await assert.rejects(ready, { code: 'disconnected' });
});

test('a lost connection puts a subscription back to subscribing, and it is subscribed again (and recovers) after the reconnection', async () => {
  const fay = client('fay');
  await fay.connect();
  const feed = fay.subscription('feed:objects');
  const got = [];
  feed.on('publication', (m) => got.push(m.data.n));
  const seen = watch(feed, ['subscribing', 'subscribed']);
  const subscribedInfos = [];
  feed.on('subscribed', (info) => subscribedInfos.push(info));
  await feed.subscribe().ready(5000);
  await server.api.publish({ scope: 'topic', target: 'feed:objects', type: 'n', data: { n: 1 } });
  await eventually('message 1', () => got.length === 1);

  await server.away(async (api) => {
    await eventually('subscribing again', () => feed.state === 'subscribing');
    await api.publish({ scope: 'topic', target: 'feed:objects', type: 'n', data: { n: 2 } });
  });
  const info = await feed.ready(20000);
  assert.equal(feed.state, 'subscribed');
  assert.equal(info.resumed, true);
  assert.equal(info.recovered, true);
  await eventually('message 2, recovered', () => got.length === 2);
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(seen.map(([event]) => event), ['subscribing', 'subscribed', 'subscribing', 'subscribed']);
  assert.equal(subscribedInfos.length, 2);
});

test('the subscribe(topic, handler) sugar and subscription objects share one subscription', async () => {
  const gus = client('gus');
  await gus.connect();
  const viaSugar = [];
  const handler = (m) => m.type === 'n' && viaSugar.push(m.data.n); // the sugar gets joins too
  await gus.subscribe('chat:both', handler);
  const sub = gus.subscription('chat:both');
  assert.equal(sub.state, 'subscribed');
  const viaObject = [];
  sub.on('publication', (m) => viaObject.push(m.data.n));
  await server.api.publish({ scope: 'topic', target: 'chat:both', type: 'n', data: { n: 1 } });
  await eventually('both', () => viaSugar.length === 1 && viaObject.length === 1);
  // Removing the sugar handler keeps the subscription while the object has listeners.
  await gus.unsubscribe('chat:both', handler);
  assert.equal(sub.state, 'subscribed');
  await server.api.publish({ scope: 'topic', target: 'chat:both', type: 'n', data: { n: 2 } });
  await eventually('the object listener', () => viaObject.length === 2);
  assert.deepEqual(viaSugar, [1]);
  // unsubscribe(topic) ends it.
  await gus.unsubscribe('chat:both');
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(gus.subscriptions(), []);
  // Bad arguments are refused before anything is sent.
  assert.throws(() => gus.subscription(''), TypeError);
  assert.throws(() => gus.subscription('chat:x', { since: { offset: 'x' } }), TypeError);
  assert.throws(() => sub.on('publication', 'not a function'), TypeError);
});
