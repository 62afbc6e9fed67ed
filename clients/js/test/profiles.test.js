// Compatibility profiles (docs/MIGRATING.md): each product's README client code, as written,
// against a real `herald serve` with that product's profile. The code below is copied from the
// product's README; the one change is the server's address (the README's `localhost:8080`),
// since the test server listens on a free port.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { Server, eventually, API_KEY } from './server.js';

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

/** The HTTP status a WebSocket upgrade to `url` gets (101 when it opens). */
function upgradeStatus(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.on('unexpected-response', (_, response) => resolve(response.statusCode));
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
  });
}

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

  // The README's stats and test broadcast, with an admin's token; a user's is refused.
  const admin = server.token('1', { role: 'admin' });
  const stats = await fetch(`${server.http}/ws/stats`, { headers: { authorization: `Bearer ${admin}` } }).then((r) => r.json());
  assert.equal(stats.total_clients, 1);
  assert.deepEqual(stats.by_role, { user: 1 });
  assert.equal(typeof stats.timestamp, 'string');
  const asUser = await fetch(`${server.http}/ws/stats`, { headers: { authorization: `Bearer ${server.token('24')}` } });
  assert.equal(asUser.status, 403);
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
  assert.equal(await upgradeStatus(server.ws), 401);
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

// Auto-Devs' README, "Client Connection", verbatim.
const AUTO_DEVS_CONNECT = `
// Connect to WebSocket
const ws = new WebSocket('ws://localhost:8098/ws/connect?token=your-auth-token');

// Handle messages
ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    console.log('Received:', message.type, message.data);
};
`;

// The same block's subscription, verbatim. The README sends it right after `new WebSocket`,
// which no WebSocket allows before the socket opens (browsers and `ws` throw): it runs on open.
const AUTO_DEVS_SUBSCRIBE = `
// Subscribe to project
ws.send(JSON.stringify({
    type: 'subscription',
    data: {
        action: 'subscribe',
        project_id: 'project-uuid'
    }
}));
`;

test("auto-devs: the README client subscribes and gets message_id frames; every management route answers", async () => {
  const server = await Server.start('', 'profile = "auto-devs"');
  servers.push(server);
  const token = server.token('user-1', { projects: ['project-uuid'] });
  const { lines, console } = recordingConsole();
  const frames = [];
  class ReadmeWebSocket extends WebSocket {
    constructor(url) {
      super(url.replace('ws://localhost:8098', `ws://${server.addr}`).replace('your-auth-token', token));
      this.addEventListener('message', (event) => frames.push(JSON.parse(event.data)));
    }
  }
  const ws = runReadmeCode(AUTO_DEVS_CONNECT, { WebSocket: ReadmeWebSocket, console });
  await new Promise((resolve) => ws.addEventListener('open', resolve));
  new Function('ws', AUTO_DEVS_SUBSCRIBE)(ws);
  await eventually('the subscription', () => lines.some(([, , type]) => type === 'subscribed'));
  assert.deepEqual(lines.find(([, , type]) => type === 'subscribed').slice(3), [{ topic: 'project:project-uuid' }]);

  // The management API, with the server's API key as a backend calls it.
  const call = async (method, path, body) => {
    const response = await fetch(`${server.http}/api/v1/websocket${path}`, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    assert.equal(response.status, 200, `${method} ${path}: ${await response.clone().text()}`);
    return response.json();
  };
  assert.equal((await call('GET', '/health')).status, 'ready');
  assert.deepEqual(await call('GET', '/connections/count'), { count: 1 });
  assert.deepEqual(await call('GET', '/projects/project-uuid/connections/count'), { count: 1 });
  assert.deepEqual(await call('GET', '/users/user-1/connections/count'), { count: 1 });
  assert.deepEqual(await call('GET', '/users/nobody/connections/count'), { count: 0 });
  const listed = await call('GET', '/connections');
  assert.equal(listed.length, 1);
  assert.equal(listed[0].user_id, 'user-1');
  assert.equal((await call('GET', '/stats')).total_clients, 1);

  // The backend's notifications: a project message, a direct message, a broadcast.
  const project = await call('POST', '/projects/project-uuid/message', { type: 'task_created', data: { task_id: 't1' } });
  const direct = await call('POST', '/users/user-1/message', { type: 'status_changed', data: { from: 'TODO', to: 'DONE' } });
  const everyone = await call('POST', '/broadcast', { type: 'project_updated', data: { name: 'Apollo' } });
  for (const answer of [project, direct, everyone]) assert.equal(answer.recipients, 1, JSON.stringify(answer));
  await eventually('the three events', () => ['task_created', 'status_changed', 'project_updated'].every((t) => lines.some(([, , type]) => type === t)));
  assert.deepEqual(lines.find(([, , type]) => type === 'task_created').slice(3), [{ task_id: 't1' }]);
  const event = frames.find((f) => f.type === 'task_created');
  assert.equal(event.message_id, project.id);
  assert.ok(!('id' in event), JSON.stringify(event));
  for (const frame of frames) assert.ok(!('id' in frame), JSON.stringify(frame));

  // A malformed message: the README's error codes, in `data`.
  ws.send('{not json');
  await eventually('the error', () => frames.some((f) => f.type === 'error'));
  assert.equal(frames.find((f) => f.type === 'error').data.code, 'invalid_message');

  // Its metrics, in the README's JSON shape.
  const metrics = await call('GET', '/metrics');
  assert.equal(metrics.hub.active_connections, 1);
  assert.ok(metrics.hub.total_connections >= 1);
  assert.ok(metrics.hub.messages_sent >= 5, JSON.stringify(metrics));
  assert.ok(metrics.hub.messages_received >= 1, JSON.stringify(metrics));
  assert.equal(metrics.hub.broadcasts_sent, 3);
  assert.deepEqual(metrics.middleware.rate_limiter, { active_limiters: 1, requests_per_second: 10 });
  assert.deepEqual(metrics.middleware.error_handler, { connections_with_errors: 1, total_errors: 1 });
  assert.deepEqual(metrics.offline_messages, { total_messages: 0, users_with_messages: 0 });

  // Disconnects: the user's connection goes; a message to them now waits in their inbox.
  const closed = new Promise((resolve) => ws.addEventListener('close', resolve));
  assert.deepEqual(await call('POST', '/users/user-1/disconnect'), { disconnected: 1 });
  await closed;
  const queued = await call('POST', '/users/user-1/message', { type: 'task_created', data: {} });
  assert.equal(queued.queued, true);
  assert.deepEqual((await call('GET', '/metrics')).offline_messages, { total_messages: 1, users_with_messages: 1 });
  assert.deepEqual(await call('POST', '/projects/project-uuid/disconnect'), { disconnected: 0 });

  // The routes need the server API's credentials, but for health.
  const anonymous = await fetch(`${server.http}/api/v1/websocket/metrics`);
  assert.equal(anonymous.status, 401);
});

// Cartographer's README, "Client Usage (JavaScript)", verbatim.
const CARTOGRAPHER_CLIENT = `
// Connect to WebSocket
const ws = new WebSocket('ws://localhost:8080/ws?project_id=abc123');

// Handle connection open
ws.onopen = () => {
    console.log('Connected to Cartographer');
};

// Handle incoming messages
ws.onmessage = (event) => {
    const message = JSON.parse(event.data);

    switch (message.type) {
        case 'task.created':
            console.log('New task:', message.data);
            break;
        case 'task.updated':
            console.log('Task updated:', message.data);
            break;
        case 'task.deleted':
            console.log('Task deleted:', message.data);
            break;
        case 'project.updated':
            console.log('Project updated:', message.data);
            break;
        case 'board.updated':
            console.log('Board updated:', message.data);
            break;
        case 'error':
            console.error('Error:', message.error);
            break;
    }
};

// Handle errors
ws.onerror = (error) => {
    console.error('WebSocket error:', error);
};

// Handle close
ws.onclose = () => {
    console.log('Disconnected from Cartographer');
};

// Send ping
setInterval(() => {
    ws.send(JSON.stringify({ type: 'ping', timestamp: new Date() }));
}, 30000);
`;

test('cartographer: the README client reads its project anonymously; anonymous readers read only, within the per-IP limit', async () => {
  const server = await Server.start('', 'profile = "cartographer"');
  servers.push(server);
  const { lines, console } = recordingConsole();
  const frames = [];
  const timers = [];
  class ReadmeWebSocket extends WebSocket {
    constructor(url) {
      super(url.replace('ws://localhost:8080', `ws://${server.addr}`));
      this.addEventListener('message', (event) => frames.push(JSON.parse(event.data)));
    }
  }
  const ws = runReadmeCode(CARTOGRAPHER_CLIENT, {
    WebSocket: ReadmeWebSocket,
    console,
    setInterval: (fn, ms) => timers.push([fn, ms]),
  });
  await eventually('the connection', () => lines.some(([, what]) => what === 'Connected to Cartographer'));
  await eventually('the subscription', () => frames.some((f) => f.type === 'subscribed'));

  // The backend's events for the project reach it; others' do not.
  await server.api.publish({ scope: 'topic', target: 'project:other', type: 'task.deleted', data: { id: 'x' } });
  await server.api.publish({ scope: 'topic', target: 'project:abc123', type: 'task.created', data: { id: 'task-123', title: 'Implement WebSocket', status: 'done' } });
  await server.api.publish({ scope: 'topic', target: 'project:abc123', type: 'project.updated', data: { id: 'abc123' } });
  await server.api.publish({ scope: 'all', type: 'task.updated', data: { id: 'task-9' } });
  await eventually('the events', () => lines.filter(([level]) => level === 'log').length >= 4);
  assert.deepEqual(
    lines.filter(([level]) => level === 'log').slice(1),
    [
      ['log', 'New task:', { id: 'task-123', title: 'Implement WebSocket', status: 'done' }],
      ['log', 'Project updated:', { id: 'abc123' }],
      ['log', 'Task updated:', { id: 'task-9' }],
    ],
  );

  // Its ping, every 30 s in the README: answered with a pong.
  assert.deepEqual(timers.map(([, ms]) => ms), [30000]);
  timers[0][0]();
  await eventually('the pong', () => frames.some((f) => f.type === 'pong'));

  // Reading only: a subscribe or a publish is refused, and the README reads the top-level `error`.
  ws.send(JSON.stringify({ type: 'subscribe', topic: 'project:other' }));
  ws.send(JSON.stringify({ type: 'publish', topic: 'project:abc123', event: 'task.created', data: {} }));
  await eventually('two errors', () => lines.filter(([level]) => level === 'error').length >= 2);
  for (const [, label, message] of lines.filter(([level]) => level === 'error')) {
    assert.equal(label, 'Error:');
    assert.match(message, /anonymous connection only reads/);
  }
  const error = frames.find((f) => f.type === 'error');
  assert.equal(error.data.code, 'forbidden');
  assert.equal(error.error, error.data.message);
  assert.ok(!lines.some(([, what]) => what === 'Task deleted:'), 'another project stays private');

  // A board's readers; messages up to the README's 512 KB.
  const board = new WebSocket(`ws://${server.addr}/ws?board_id=xyz789`);
  const boardFrames = [];
  board.on('message', (m) => boardFrames.push(JSON.parse(m)));
  await eventually('the board subscription', () => boardFrames.some((f) => f.type === 'subscribed'));
  await server.api.publish({ scope: 'topic', target: 'board:xyz789', type: 'board.updated', data: { columns: 3 } });
  await eventually('the board event', () => boardFrames.some((f) => f.type === 'board.updated'));
  board.send(JSON.stringify({ type: 'ping', data: 'x'.repeat(400 * 1024) }));
  await eventually('the big ping answered', () => boardFrames.some((f) => f.type === 'pong'));
  assert.ok(!frames.some((f) => f.type === 'board.updated'), 'the project reader does not get the board');
  board.close();
  ws.close();
  await eventually('the close', () => lines.some(([, what]) => what === 'Disconnected from Cartographer'));

  // Anonymous connections count against the per-IP limit.
  const limited = await Server.start('[limits]\nmax_connections_per_ip = 2', 'profile = "cartographer"');
  servers.push(limited);
  const opened = [];
  for (const n of [1, 2]) {
    const reader = new WebSocket(`ws://${limited.addr}/ws?project_id=p${n}`);
    await new Promise((resolve) => reader.on('open', resolve));
    opened.push(reader);
  }
  assert.equal(await upgradeStatus(`ws://${limited.addr}/ws?project_id=p3`), 429);
  for (const reader of opened) reader.close();
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
  assert.ok(!('error' in forbidden), JSON.stringify(forbidden));
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
  // A publication's id is `id`, and the product routes are not served.
  const published = await server.api.publish({ scope: 'user', target: 'bob', type: 'n', data: {} });
  const reopened = new WebSocket(`${server.ws}?token=${server.token('bob')}`);
  const event = await new Promise((resolve) =>
    reopened.on('message', (m) => {
      const message = JSON.parse(m);
      if (message.type === 'n') resolve(message);
    }),
  );
  assert.equal(event.id, published.id);
  assert.ok(!('message_id' in event), JSON.stringify(event));
  reopened.close();
  const route = await fetch(`${server.http}/api/v1/websocket/connections/count`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  assert.equal(route.status, 404);
  const anonymous = new WebSocket(`${server.ws}?project_id=abc123`);
  const greeting = await new Promise((resolve) => anonymous.once('message', (m) => resolve(JSON.parse(m))));
  assert.equal(greeting.type, 'auth_required', 'no anonymous readers without the profile');
  anonymous.close();
});
