// Scope streams against a real `herald` (docs/PROTOCOL.md section 15): the client keeps the
// position of `all`, its role, its user and its projects, resumes them on every reconnection,
// and says per stream whether everything missed came back (the `resumed` event).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { encode, decode } from '@msgpack/msgpack';
import { Herald } from '../src/herald.js';
import { serverForFile, eventually, nextEvent, recordingWebSocket, parseFrame } from './server.js';

const { server, client } = serverForFile();

/**
 * A recording WebSocket class (see server.js) whose `drop()` cuts the newest socket as a network
 * would: no close frame, the client sees 1006 and reconnects.
 */
function droppableWebSocket() {
  const sockets = [];
  const Recording = recordingWebSocket(WebSocket);
  class Droppable extends Recording {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  Droppable.drop = () => sockets.at(-1).terminate();
  return Droppable;
}

/**
 * A getToken() answering `token`, except between `hold()` and `release()`: a reconnection then
 * waits, so what is published meanwhile is missed for sure (no race with the backoff).
 */
function heldToken(token) {
  let gate = null;
  const getToken = async () => {
    await gate?.promise;
    return token;
  };
  getToken.hold = () => {
    let release;
    const promise = new Promise((resolve) => (release = resolve));
    gate = { promise, release };
  };
  getToken.release = () => {
    gate?.release();
    gate = null;
  };
  return getToken;
}

/** The `auth` commands a recording WebSocket class sent, in order. */
const auths = (Socket) => Socket.frames.sent.map((frame) => parseFrame(frame, decode)).filter((m) => m.type === 'auth');

/** `positions` with each stream's offset moved on by `counts[stream]`. */
function moved(positions, counts) {
  const out = {};
  for (const [stream, { offset, epoch }] of Object.entries(positions)) out[stream] = { offset: offset + (counts[stream] ?? 0), epoch };
  return out;
}

test('the welcome says where each scope stream stands, and every delivery through a scope moves its stream forward', async () => {
  const ana = client('ana', { token: server.token('ana', { role: 'editor', projects: ['p1'] }) });
  const got = [];
  ana.on('evt', (message) => got.push(message));
  const session = await ana.connect();
  const start = ana.streams();
  assert.deepEqual(Object.keys(start).sort(), ['all', 'project:p1', 'role:editor', 'user:ana']);
  assert.deepEqual(start, session.streams, 'the positions the welcome gave');
  for (const at of Object.values(start)) {
    assert.ok(Number.isInteger(at.offset) && at.offset >= 0);
    assert.equal(typeof at.epoch, 'string');
  }

  // A broadcast to `all` carries its stream's next position, and the client takes it.
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 1 } });
  await eventually('the broadcast', () => got.length === 1);
  assert.deepEqual([got[0].stream, got[0].offset, got[0].epoch], ['all', start.all.offset + 1, start.all.epoch]);
  assert.deepEqual(ana.streams(), moved(start, { all: 1 }));

  // The role, the project and the user each move their own stream; a topic moves none.
  await ana.subscribe('feed:ana', () => {});
  await server.api.publish({ scope: 'role', target: 'editor', type: 'evt', data: { n: 2 } });
  await server.api.publish({ scope: 'project', target: 'p1', type: 'evt', data: { n: 3 } });
  await server.api.publish({ scope: 'user', target: 'ana', type: 'evt', data: { n: 4 } });
  await server.api.publish({ scope: 'topic', target: 'feed:ana', type: 'evt', data: { n: 5 } });
  await eventually('four more', () => got.length === 5);
  assert.deepEqual(
    got.map((m) => m.stream),
    ['all', 'role:editor', 'project:p1', 'user:ana', undefined],
  );
  assert.deepEqual(ana.streams(), moved(start, { all: 1, 'role:editor': 1, 'project:p1': 1, 'user:ana': 1 }));

  // streams() is a copy.
  ana.streams().all.offset = 0;
  assert.equal(ana.streams().all.offset, start.all.offset + 1);
});

test('after a dropped connection, every message missed on each scope stream arrives once, in order, before live ones, and `resumed` says recovered', async () => {
  const token = server.token('bo', { role: 'editor', projects: ['p2'] });
  const getToken = heldToken(token);
  const Socket = droppableWebSocket();
  const bo = client('bo', { getToken, WebSocket: Socket });
  // Another tab of the same user stays connected, so user events are delivered live meanwhile
  // (they go to the user's stream; with no live connection they would go to the inbox).
  const tab = client('bo', { token });
  const got = [];
  bo.on('evt', (message) => got.push(message));
  await bo.connect();
  await tab.connect();
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 'live-1' } });
  await eventually('the first broadcast', () => got.length === 1);
  const before = bo.streams();
  assert.deepEqual(Object.keys(before).sort(), ['all', 'project:p2', 'role:editor', 'user:bo']);

  const resumed = nextEvent(bo, 'resumed', () => true, 20000);
  const states = [];
  for (const type of ['disconnected', 'connected']) bo.on(type, (m) => states.push(type));
  getToken.hold();
  Socket.drop();
  await eventually('the server saw the drop', async () => (await server.api.connections({ user: 'bo' })).length === 1);
  const missed = [
    ['all', undefined, 'a1'],
    ['role', 'editor', 'r1'],
    ['all', undefined, 'a2'],
    ['project', 'p2', 'p1'],
    ['user', 'bo', 'u1'],
    ['all', undefined, 'a3'],
    ['user', 'bo', 'u2'],
  ];
  for (const [scope, target, n] of missed) await server.api.publish({ scope, target, type: 'evt', data: { n } });
  getToken.release();

  const { data } = await resumed;
  const now = moved(before, { all: 3, 'role:editor': 1, 'project:p2': 1, 'user:bo': 2 });
  const expected = {};
  for (const [stream, at] of Object.entries(now)) expected[stream] = { recovered: true, ...at };
  assert.deepEqual(data, { recovered: true, streams: expected });
  assert.deepEqual(states, ['disconnected', 'connected'], 'one automatic reconnection');

  // Published after the reconnection: it comes after every missed one.
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 'live-2' } });
  await eventually('the live broadcast', () => got.some((m) => m.data.n === 'live-2'));
  const of = (stream) => got.filter((m) => m.stream === stream).map((m) => m.data.n);
  assert.deepEqual(of('all'), ['live-1', 'a1', 'a2', 'a3', 'live-2']);
  assert.deepEqual(of('role:editor'), ['r1']);
  assert.deepEqual(of('project:p2'), ['p1']);
  assert.deepEqual(of('user:bo'), ['u1', 'u2']);
  assert.equal(got.length, 1 + missed.length + 1, 'each missed message once, nothing else');
  assert.equal(got.at(-1).data.n, 'live-2', 'the live one after every missed one');
  assert.equal(new Set(got.map((m) => m.id)).size, got.length, 'no duplicate');
  assert.ok(got.every((m) => m.offline === undefined), 'replayed from the streams, not the inbox');
  for (const stream of Object.keys(before)) {
    const offsets = got.filter((m) => m.stream === stream).map((m) => m.offset);
    assert.deepEqual(offsets, offsets.map((_, i) => offsets[0] + i), `${stream}: consecutive offsets`);
  }
  assert.deepEqual(bo.streams(), moved(now, { all: 1 }));

  // The reconnection's auth carried the positions: the first one had none to give.
  const [first, second] = auths(Socket);
  assert.equal(first.resume, undefined);
  assert.deepEqual(second.resume, before);
});

test('saved positions (the `resume` option) resume a new client, e.g. after a page reload, also over MessagePack', async () => {
  const first = client('dee');
  await first.connect();
  const saved = first.streams();
  first.disconnect();
  await eventually('dee is gone', async () => (await server.api.connections({ user: 'dee' })).length === 0);
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 'while reloading 1' } });
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 'while reloading 2' } });

  const Socket = droppableWebSocket();
  const second = client('dee', { resume: JSON.parse(JSON.stringify(saved)), WebSocket: Socket, encoding: 'msgpack', msgpack: { encode, decode } });
  assert.deepEqual(second.streams(), saved, 'known before connecting');
  const got = [];
  second.on('evt', (message) => got.push(message.data.n));
  const resumed = nextEvent(second, 'resumed');
  await second.connect();
  const { data } = await resumed;
  assert.equal(data.recovered, true);
  assert.deepEqual(data.streams.all, { recovered: true, offset: saved.all.offset + 2, epoch: saved.all.epoch });
  await eventually('both missed broadcasts', () => got.length === 2);
  assert.deepEqual(got, ['while reloading 1', 'while reloading 2']);
  assert.deepEqual(auths(Socket)[0].resume, saved, 'the first auth resumes the saved positions');
  assert.deepEqual(second.streams().all, { offset: saved.all.offset + 2, epoch: saved.all.epoch });
});

test('a saved position from another epoch is not recovered: `resumed` says so, nothing is replayed, and the position is the server\'s', async () => {
  const fay = client('fay', { resume: { all: { offset: 1, epoch: 'an-epoch-long-gone' } } });
  const got = [];
  fay.on('evt', (message) => got.push(message.data.n));
  const resumed = nextEvent(fay, 'resumed');
  const session = await fay.connect();
  const { data } = await resumed;
  assert.deepEqual(data, { recovered: false, streams: { all: { recovered: false, ...session.streams.all } } });
  assert.notEqual(session.streams.all.epoch, 'an-epoch-long-gone');
  assert.deepEqual(fay.streams(), session.streams, 'every stream from where it stands now');
  await server.api.publish({ scope: 'all', type: 'evt', data: { n: 'live' } });
  await eventually('the live broadcast', () => got.length === 1);
  assert.deepEqual(got, ['live'], 'nothing replayed before it');
});

test('a server restart gives the streams a new epoch: after the reconnection `resumed` says recovered false for each', async () => {
  const gus = client('gus');
  await gus.connect();
  const before = gus.streams();
  const resumed = nextEvent(gus, 'resumed', () => true, 20000);
  await server.away(async (api) => {
    await api.publish({ scope: 'all', type: 'evt', data: { n: 'lost with the restart' } });
  });
  const { data } = await resumed;
  assert.equal(data.recovered, false);
  assert.deepEqual(Object.keys(data.streams).sort(), Object.keys(before).sort());
  for (const [stream, how] of Object.entries(data.streams)) {
    assert.equal(how.recovered, false, stream);
    assert.notEqual(how.epoch, before[stream].epoch, `${stream}: a new epoch`);
  }
  assert.deepEqual(gus.streams(), gus.session.streams, 'positions start over from the server\'s');
});

test('over 64 streams, the reconnection resumes 64 (all, role and user first) and says the others were not recovered', async () => {
  // The welcome lists at most 64 streams (all, role, user, then the first projects); a stream
  // beyond them becomes known through its first delivery.
  const projects = Array.from({ length: 70 }, (_, i) => `wide-${i}`);
  const Socket = droppableWebSocket();
  const hal = client('hal', { token: server.token('hal', { projects }), WebSocket: Socket });
  await hal.connect();
  assert.equal(Object.keys(hal.streams()).length, 64, 'the welcome lists 64');
  assert.ok(!('project:wide-69' in hal.streams()));
  const late = nextEvent(hal, 'evt', (m) => m.stream === 'project:wide-69');
  await server.api.publish({ scope: 'project', target: 'wide-69', type: 'evt', data: {} });
  await late;
  const streams = Object.keys(hal.streams());
  assert.equal(streams.length, 65, 'one more, from its delivery');
  const resumed = nextEvent(hal, 'resumed', () => true, 20000);
  Socket.drop();
  const { data } = await resumed;
  const resume = auths(Socket)[1].resume;
  assert.equal(Object.keys(resume).length, 64, 'the most the server takes');
  for (const stream of ['all', 'role:user', 'user:hal']) assert.ok(resume[stream], stream);
  assert.deepEqual(Object.keys(data.streams).sort(), streams.sort());
  for (const stream of streams) assert.equal(data.streams[stream].recovered, stream in resume, stream);
  assert.equal(data.recovered, false);
  assert.equal(hal.state, 'connected');
});

test('options.resume is checked like a subscription\'s since', () => {
  const options = { url: server.ws, WebSocket, token: 't' };
  const bad = [null, 3, [], { all: 3 }, { all: { offset: '1', epoch: 'e' } }, { all: { offset: -1, epoch: 'e' } }, { all: { offset: 1.5, epoch: 'e' } }, { all: { offset: 1 } }];
  for (const resume of bad) assert.throws(() => new Herald({ ...options, resume }), /options\.resume must be/, JSON.stringify(resume));
  const herald = new Herald({ ...options, resume: { all: { offset: 2, epoch: 'e', extra: true } } });
  assert.deepEqual(herald.streams(), { all: { offset: 2, epoch: 'e' } });
  assert.deepEqual(new Herald(options).streams(), {});
});
