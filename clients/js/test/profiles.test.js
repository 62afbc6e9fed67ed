// Compatibility profiles (docs/MIGRATING.md): each product's README client code, as written,
// against a real `herald serve` with that product's profile. The code below is copied from the
// product's README; the one change is the server's address (the README's `localhost:8080`),
// since the test server listens on a free port.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { Server, eventually } from './server.js';

const servers = [];
after(async () => {
  for (const server of servers) await server.stop();
});

/** Runs a README's browser code with `globals` in scope (its `WebSocket`, its app functions). */
function runReadmeCode(code, globals) {
  const names = Object.keys(globals);
  // eslint-disable-next-line no-new-func
  return new Function(...names, `${code}\nreturn typeof ws === 'undefined' ? undefined : ws;`)(
    ...names.map((name) => globals[name]),
  );
}

// Pulse's README, "Frontend Connection", verbatim.
const PULSE_FRONTEND = `
// Get token from your auth system
const token = getAuthToken() // Your function to get JWT token

// Connect to WebSocket (no auth required at connection time)
const ws = new WebSocket('ws://localhost:8080/ws')

ws.onopen = () => {
  console.log('WebSocket connected')

  // Authenticate immediately after connection
  ws.send(JSON.stringify({
    type: 'auth',
    token
  }))
}

ws.onmessage = (event) => {
  const message = JSON.parse(event.data)

  // Handle authentication response
  if (message.type === 'auth_success') {
    console.log('Authentication successful')

    // Subscribe to topics you're interested in
    ws.send(JSON.stringify({
      type: 'subscribe',
      topic: \`project:\${currentProjectId}\`
    }))
  } else if (message.type === 'subscribed') {
    console.log('Subscribed to topic:', message.payload.topic)
  } else if (message.type === 'unsubscribed') {
    console.log('Unsubscribed from topic:', message.payload.topic)
  } else if (message.type === 'error') {
    console.error('Error:', message.payload.message)
  } else {
    // Handle other message types (broadcasts)
    console.log('Received:', message.type, message.payload)

    switch (message.type) {
      case 'check_run_completed':
        // Update UI with check run result
        updateCheckStatus(message.payload)
        break
      case 'alert_created':
        // Show alert notification
        showAlert(message.payload)
        break
      case 'notification':
        // Show user notification
        showNotification(message.payload)
        break
    }
  }
}

ws.onerror = (error) => {
  console.error('WebSocket error:', error)
}

ws.onclose = () => {
  console.log('WebSocket disconnected')
  // Optionally reconnect
}
`;

/** A console that records what the README's code logs. */
function recordingConsole() {
  const lines = [];
  const record = (level) => (...args) => lines.push([level, ...args]);
  return { lines, console: { log: record('log'), error: record('error') } };
}

test('pulse: the README frontend authenticates, subscribes, reads payload of replies, errors and every broadcast', async () => {
  const server = await Server.start('', 'profile = "pulse"');
  servers.push(server);
  const token = server.token('alice', { projects: ['p1'] });
  const { lines, console } = recordingConsole();
  const frames = [];
  const got = { checks: [], alerts: [], notifications: [] };
  // The README's WebSocket, with every frame also kept for the envelope checks below.
  class RecordingWebSocket extends WebSocket {
    constructor(url) {
      super(url.replace('ws://localhost:8080', `ws://${server.addr}`));
      this.addEventListener('message', (event) => frames.push(JSON.parse(event.data)));
    }
  }
  const ws = runReadmeCode(PULSE_FRONTEND, {
    WebSocket: RecordingWebSocket,
    console,
    getAuthToken: () => token,
    currentProjectId: 'p1',
    updateCheckStatus: (payload) => got.checks.push(payload),
    showAlert: (payload) => got.alerts.push(payload),
    showNotification: (payload) => got.notifications.push(payload),
  });
  await eventually('the subscription', () => lines.some(([, what]) => what === 'Subscribed to topic:'));
  assert.deepEqual(lines.find(([, what]) => what === 'Subscribed to topic:'), ['log', 'Subscribed to topic:', 'project:p1']);
  assert.ok(lines.some(([, what]) => what === 'Authentication successful'));

  // The backend's three broadcasts of the README: to the project, to everyone, to the user.
  await server.api.publish({ scope: 'project', target: 'p1', type: 'check_run_completed', data: { check_id: 'c1', status: 'down' } });
  await server.api.publish({ scope: 'all', type: 'alert_created', data: { alert_id: 'a1' } });
  await server.api.publish({ scope: 'user', target: 'alice', type: 'notification', data: { title: 'Check Alert' } });
  await eventually('the three broadcasts', () => got.checks.length && got.alerts.length && got.notifications.length);
  assert.deepEqual(got.checks, [{ check_id: 'c1', status: 'down' }]);
  assert.deepEqual(got.alerts, [{ alert_id: 'a1' }]);
  assert.deepEqual(got.notifications, [{ title: 'Check Alert' }]);

  // A topic it may not subscribe to: the README's error branch reads `payload.message`.
  ws.send(JSON.stringify({ type: 'subscribe', topic: 'project:p2' }));
  await eventually('the error', () => lines.some(([level]) => level === 'error'));
  const [, label, message] = lines.find(([level]) => level === 'error');
  assert.equal(label, 'Error:');
  assert.match(message, /not allowed/);

  // Every frame, reply or publication, carries its payload under `payload`, never `data`.
  assert.ok(frames.length >= 6, JSON.stringify(frames));
  for (const frame of frames) {
    assert.ok('payload' in frame && !('data' in frame), JSON.stringify(frame));
  }
  ws.close();
});

// The user-management API's README, "WebSocket Connection", the Node.js block verbatim.
const USERS_API_NODE = `
const WebSocket = require('ws');
const ws = new WebSocket(\`ws://localhost:8080/ws?token=\${token}\`);

ws.on('message', (data) => {
  const message = JSON.parse(data);
  console.log(message);
});
`;

// Its "Client-Side Handling (Node.js)" block, verbatim: added to the same socket.
const USERS_API_PING = `
ws.on('ping', () => {
  ws.pong(); // Respond to ping
});
`;

test('users-api: the README Node client gets its welcome message and a broadcast; no token is a 401', async () => {
  const server = await Server.start('', 'profile = "users-api"');
  servers.push(server);
  const { lines, console } = recordingConsole();
  const require = createRequire(import.meta.url);
  const localRequire = (name) => {
    const module = require(name);
    if (name !== 'ws') return module;
    // The README's `localhost:8080`, here the test server's address.
    return class extends module {
      constructor(url) {
        super(url.replace('ws://localhost:8080', `ws://${server.addr}`));
      }
    };
  };
  const ws = runReadmeCode(`${USERS_API_NODE}\n${USERS_API_PING}`, {
    require: localRequire,
    console,
    token: server.token('24'),
  });
  await eventually('the welcome', () => lines.length >= 1);
  const [, welcome] = lines[0];
  assert.equal(welcome.type, 'connection.established');
  assert.equal(welcome.data.message, 'Welcome to WebSocket real-time updates');
  assert.equal(welcome.data.user_id, '24');
  assert.equal(welcome.data.role, 'user');
  assert.equal(typeof welcome.data.client_id, 'string');

  // The README's test broadcast, with an admin's token.
  const admin = server.token('1', { role: 'admin' });
  const answer = await fetch(`${server.http}/ws/broadcast`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message: 'System maintenance scheduled', priority: 'high', metadata: { scheduled_time: '2025-01-07T02:00:00Z' } }),
  }).then((r) => r.json());
  assert.equal(answer.success, true);
  assert.equal(answer.message, 'Broadcast sent successfully');
  await eventually('the alert', () => lines.length >= 2);
  const [, alert] = lines[1];
  assert.equal(alert.type, 'system.alert');
  assert.equal(alert.data.message, 'System maintenance scheduled');
  assert.equal(alert.data.priority, 'high');
  ws.close();

  // Without a token the upgrade is refused with 401, as the README's server does.
  const status = await new Promise((resolve) => {
    const bare = new WebSocket(server.ws);
    bare.on('unexpected-response', (_, response) => resolve(response.statusCode));
    bare.on('open', () => resolve(101));
  });
  assert.equal(status, 401);
});

test("conduit: the README's documented frames (rooms, ping, echo, status, broadcast to a room) as written", async () => {
  const server = await Server.start('', 'profile = "conduit"');
  servers.push(server);
  // The README's connection: `ws://localhost:8080/ws?token=your-jwt-token`.
  const open = (sub) =>
    new Promise((resolve) => {
      const ws = new WebSocket(`ws://${server.addr}/ws?token=${server.token(sub)}`);
      ws.queue = [];
      ws.on('message', (data) => ws.queue.push(JSON.parse(data)));
      ws.on('open', () => resolve(ws));
    });
  const next = (ws, type) =>
    eventually(`a ${type}`, () => {
      const at = ws.queue.findIndex((m) => m.type === type);
      return at >= 0 && ws.queue.splice(at, 1)[0];
    });
  const send = (ws, message) => ws.send(JSON.stringify(message));
  const [a, b] = [await open('user-123'), await open('user-456')];
  for (const ws of [a, b]) {
    send(ws, { type: 'join_room', data: { room: 'room-name' } });
    assert.deepEqual((await next(ws, 'room_joined')).data, { room: 'room-name' });
  }
  send(a, { type: 'ping', data: '2024-01-01T00:00:00Z' });
  assert.deepEqual((await next(a, 'pong')).data, { timestamp: '2024-01-01T00:00:00Z' });
  send(a, { type: 'echo', data: 'test message' });
  assert.deepEqual((await next(a, 'echo')).data, { original: 'test message' });
  send(a, { type: 'status' });
  const status = (await next(a, 'status')).data;
  assert.equal(status.user_id, 'user-123');
  assert.match(status.connection_duration, /^(\d+h)?(\d+m)?\d+s$/, JSON.stringify(status));
  assert.equal(typeof status.connected_at, 'string');
  assert.equal(typeof status.last_heartbeat, 'string');
  // A client broadcasts to a room (no namespace config needed), as Conduit's clients do.
  send(a, { type: 'broadcast', data: { room: 'room-name', type: 'notification', payload: { message: 'hello' } } });
  assert.deepEqual((await next(b, 'notification')).data, { message: 'hello' });
  send(a, { type: 'leave_room', data: { room: 'room-name' } });
  assert.deepEqual((await next(a, 'room_left')).data, { room: 'room-name' });
  assert.ok(!a.queue.some((m) => m.type === 'error'), JSON.stringify(a.queue));
  a.close();
  b.close();
});

test('without a profile the canonical protocol holds: `data`, no greeting, a token may come later', async () => {
  const server = await Server.start();
  servers.push(server);
  const ws = new WebSocket(`${server.ws}?token=${server.token('bob')}`);
  const welcome = await new Promise((resolve) => ws.once('message', (m) => resolve(JSON.parse(m))));
  assert.equal(welcome.type, 'connection.established');
  assert.ok('data' in welcome && !('payload' in welcome), JSON.stringify(welcome));
  assert.ok(!('message' in welcome.data), JSON.stringify(welcome));
  // Clients may not publish to a namespace the config does not open; status is in seconds.
  const forbidden = await new Promise((resolve) => {
    ws.on('message', (m) => {
      const message = JSON.parse(m);
      if (message.type === 'error') resolve(message);
    });
    ws.send(JSON.stringify({ type: 'broadcast', data: { room: 'room-name', type: 'n', payload: {} } }));
  });
  assert.equal(forbidden.data.code, 'forbidden');
  const status = await new Promise((resolve) => {
    ws.on('message', (m) => {
      const message = JSON.parse(m);
      if (message.type === 'status') resolve(message);
    });
    ws.send(JSON.stringify({ type: 'status' }));
  });
  assert.equal(typeof status.data.connection_duration, 'number');
  ws.close();
  const bare = new WebSocket(server.ws);
  const first = await new Promise((resolve) => bare.once('message', (m) => resolve(JSON.parse(m))));
  assert.equal(first.type, 'auth_required');
  bare.close();
});
