// The console at `/` in a real browser (Debian's Chromium, driven by playwright-core): what a
// newcomer does with it, against a real `herald` that is killed and restarted on the same port
// and data dir. Screenshots are saved to target/artifacts/ (ARTIFACTS_DIR): console.png, and
// console-streams.png for this checkout's console (served beside herald: no rebuild needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Server, API_KEY } from './server.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const ARTIFACTS = resolve(process.env.ARTIFACTS_DIR ?? join(repo, 'target/artifacts'));
const WAIT = 15000;

let server;
let context;
let profile;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/js-test does it) or set CHROMIUM`);
  server = await Server.start();
  profile = mkdtempSync(join(tmpdir(), 'herald-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 1100 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await context?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** The texts of the log entries, in order. */
const entries = (page) => page.$$eval('#messages .entry', (items) => items.map((item) => item.textContent));

test('the console connects with a pasted token, shows live messages, and recovers what it missed across a server restart', async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // Failed requests are checked one by one below, through their responses.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(`console error: ${message.text()}`);
  });
  page.on('response', (response) => response.status() >= 400 && problems.push(`${response.status()} ${response.request().method()} ${new URL(response.url()).pathname}`));
  try {
    await page.goto(`${server.http}/`);
    assert.equal(await page.title(), 'Herald console');
    assert.equal(await page.getAttribute('#status', 'data-state'), 'disconnected');

    // Paste a token minted by `herald token`, connect: the status turns green.
    await page.fill('#token', server.token('alice', { projects: ['p1'] }));
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    assert.match(await page.textContent('#session'), /^alice · user · /);
    const green = await page.$eval('#status .dot', (dot) => getComputedStyle(dot).backgroundColor);
    assert.equal(green, 'rgb(26, 156, 62)');

    // Subscribe, then a backend publishes through the HTTP API: the message appears.
    await page.fill('#topic', 'chat:demo');
    await page.click('#subscribe');
    await page.waitForSelector('#subscription-list li[data-topic="chat:demo"] .position:has-text("offset")', { timeout: WAIT });
    await server.api.publish({ scope: 'topic', target: 'chat:demo', type: 'demo.hello', data: { text: 'hello from the API' } });
    await page.waitForSelector('#messages .entry[data-type="demo.hello"]:has-text("hello from the API")', { timeout: WAIT });
    assert.equal(await page.$eval('#messages .entry[data-type="demo.hello"] .type', (e) => e.className), 'type t-delivery');
    assert.match(await page.$eval('#messages .entry[data-type="demo.hello"] .time', (e) => e.textContent), /^\d\d:\d\d:\d\d\.\d{3}$/);

    // Presence panel: alice is on chat:demo.
    await page.fill('#presence-topic', 'chat:demo');
    await page.click('#presence-show');
    await page.waitForSelector('#presence-list li[data-user="alice"]', { timeout: WAIT });

    // The browser client publishes itself.
    await page.fill('#publish-topic', 'chat:demo');
    await page.fill('#publish-event', 'demo.said');
    await page.fill('#publish-data', '{"text": "typed in the console"}');
    await page.click('#publish-send');
    await page.waitForSelector('#messages .entry[data-type="demo.said"]:has-text("typed in the console")', { timeout: WAIT });
    await page.waitForSelector('#publish-result:has-text("published")', { timeout: WAIT });

    // SIGKILL the server; while the page cannot reach it, two messages are published to the
    // same data dir; then the server comes back on the same port.
    await server.away(async (api) => {
      await page.waitForSelector('#status:not([data-state="connected"])', { timeout: WAIT });
      const red = await page.$eval('#status .dot', (dot) => getComputedStyle(dot).backgroundColor);
      assert.equal(red, 'rgb(210, 48, 42)');
      await api.publish({ scope: 'topic', target: 'chat:demo', type: 'demo.missed', data: { text: 'missed one' } });
      await api.publish({ scope: 'topic', target: 'chat:demo', type: 'demo.missed', data: { text: 'missed two' } });
    });
    // Published just after the restart: live or recovered, it must show, after the missed ones.
    await server.api.publish({ scope: 'topic', target: 'chat:demo', type: 'demo.after', data: { text: 'after the restart' } });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await page.waitForSelector('#messages .entry[data-type="resubscribed"]:has-text("\\"recovered\\":true")', { timeout: WAIT });
    await page.waitForSelector('#messages .entry:has-text("after the restart")', { timeout: WAIT });
    const log = await entries(page);
    const at = (text) => log.findIndex((entry) => entry.includes(text));
    assert.ok(at('missed one') >= 0 && at('missed two') > at('missed one'), 'both missed messages, in order');
    assert.ok(at('after the restart') > at('missed two'), 'the live one after them');
    assert.equal(log.filter((entry) => entry.includes('missed one')).length, 1, 'no duplicate');

    // Admin view: live stats with the API key, and a publication to the user scope.
    await page.fill('#admin-key', API_KEY);
    await page.click('#admin-start');
    await page.waitForSelector('#by-role tr[data-role="user"]', { timeout: WAIT });
    assert.equal(await page.textContent('#stat-total'), '1');
    await page.waitForSelector('#stat-rate:not(:has-text("-"))', { timeout: WAIT });
    await page.selectOption('#scope', 'user');
    await page.fill('#target', 'alice');
    await page.fill('#type', 'admin.note');
    await page.fill('#data', '{"text": "to alice from the admin view"}');
    await page.click('#admin-send');
    await page.waitForSelector('#admin-result:has-text("to 1 connection")', { timeout: WAIT });
    await page.waitForSelector('#messages .entry[data-type="admin.note"]:has-text("to alice from the admin view")', { timeout: WAIT });
    // A bad scope target is refused with the server's message.
    await page.selectOption('#scope', 'project');
    await page.fill('#target', '');
    await page.click('#admin-send');
    await page.waitForSelector('#admin-result.error:has-text("target")', { timeout: WAIT });
    assert.deepEqual(problems.splice(0), ['400 POST /api/v1/publish'], 'only the refused publication failed');

    // The counter counts the log; Clear empties both.
    const shown = (await entries(page)).length;
    assert.equal(await page.textContent('#count'), String(shown));
    assert.deepEqual(problems, []);
  } finally {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console.png'), fullPage: true });
  }
  await page.click('#clear');
  assert.equal(await page.textContent('#count'), '0');
  await page.click('#disconnect');
  await page.waitForSelector('#status[data-state="disconnected"]', { timeout: WAIT });
});

/** A page server on another loopback port (another origin than herald's): `/` is an empty page,
 * `/src/herald.js` this checkout's client (the herald binary serves the one it was built with). */
async function pageServer() {
  const client = resolve(dirname(fileURLToPath(import.meta.url)), '../src/herald.js');
  const http = createServer((request, response) => {
    if (request.url === '/src/herald.js') {
      response.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      response.end(readFileSync(client));
    } else {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end('<!doctype html><title>an app on another origin</title><p>app</p>');
    }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  return { http, origin: `http://127.0.0.1:${http.address().port}` };
}

test('a page on another origin imports /herald.js from the herald server, connects and receives', async () => {
  const { http, origin } = await pageServer();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && problems.push(`console error: ${message.text()}`));
  const scripts = [];
  page.on('response', (response) => response.url().endsWith('herald.js') && scripts.push(response));
  try {
    await page.goto(`${origin}/`);
    assert.notEqual(origin, server.http, 'two origins');
    const token = server.token('remote');

    // The client as the herald server serves it (whatever its version): construct, connect,
    // subscribe(topic, handler), receive.
    const session = await page.evaluate(
      async ({ herald, ws, token }) => {
        const { Herald } = await import(`${herald}/herald.js`);
        window.got = [];
        window.served = new Herald({ url: ws, token });
        const session = await window.served.connect();
        await window.served.subscribe('chat:remote', (m) => window.got.push(m.data.text));
        return session;
      },
      { herald: server.http, ws: server.ws, token },
    );
    assert.equal(session.user_id, 'remote');
    const [served] = scripts;
    assert.equal(served.url(), `${server.http}/herald.js`);
    assert.equal(served.status(), 200);
    assert.equal(served.headers()['access-control-allow-origin'], origin, 'CORS allows the page origin');
    await server.api.publish({ scope: 'topic', target: 'chat:remote', type: 'said', data: { text: 'across origins' } });
    await page.waitForFunction(() => window.got.includes('across origins'), null, { timeout: WAIT });

    // This checkout's client in the same browser: subscription objects, ready(), once().
    const running = page.evaluate(
      async ({ ws, token }) => {
        const { Herald } = await import('/src/herald.js');
        const herald = new Herald({ url: ws, token });
        await herald.connect();
        const room = herald.subscription('chat:remote');
        const first = new Promise((resolve) => room.once('publication', (m) => resolve(m.data.text)));
        await room.subscribe().ready(5000);
        window.ready = true;
        const text = await first;
        const closed = new Promise((resolve) => herald.once('disconnected', (m) => resolve(m.data)));
        herald.disconnect();
        return { text, state: room.state, closed: await closed };
      },
      { ws: server.ws, token },
    );
    await page.waitForFunction(() => window.ready === true, null, { timeout: WAIT });
    await server.api.publish({ scope: 'topic', target: 'chat:remote', type: 'said', data: { text: 'to the new client' } });
    const seen = await running;
    assert.deepEqual(seen, {
      text: 'to the new client',
      state: 'subscribing',
      closed: { code: 1000, reason: 'client disconnect', reconnect: false },
    });
  } finally {
    await page.close();
    http.close();
  }
  assert.deepEqual(problems, []);
});

/**
 * A loopback server that serves this checkout's console (page, script, style) and client, and
 * passes everything else (the WebSocket, the API) to herald: the console's own changes are
 * tested without rebuilding the binary (which compiles in those it was built with). `drop()`
 * cuts the WebSockets passing through it, as a network would.
 */
async function checkoutConsole() {
  const files = {
    '/': ['text/html; charset=utf-8', 'crates/herald/console/index.html'],
    '/console.js': ['text/javascript; charset=utf-8', 'crates/herald/console/console.js'],
    '/console.css': ['text/css; charset=utf-8', 'crates/herald/console/console.css'],
    '/herald.js': ['text/javascript; charset=utf-8', 'clients/js/src/herald.js'],
  };
  const sockets = new Set();
  const http = createServer((request, response) => {
    const path = new URL(request.url, 'http://console').pathname;
    if (Object.hasOwn(files, path)) {
      response.writeHead(200, { 'content-type': files[path][0] });
      response.end(readFileSync(join(repo, files[path][1])));
      return;
    }
    const upstream = httpRequest({ host: '127.0.0.1', port: server.port, method: request.method, path: request.url, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  });
  http.on('upgrade', (request, socket, head) => {
    const upstream = connect(server.port, '127.0.0.1', () => {
      const headers = [];
      for (let i = 0; i < request.rawHeaders.length; i += 2) headers.push(`${request.rawHeaders[i]}: ${request.rawHeaders[i + 1]}`);
      upstream.write(`${request.method} ${request.url} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`);
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    const pair = { socket, upstream };
    sockets.add(pair);
    const end = () => {
      sockets.delete(pair);
      socket.destroy();
      upstream.destroy();
    };
    for (const side of [socket, upstream]) side.on('error', end).on('close', end);
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const drop = () => {
    for (const { socket, upstream } of sockets) {
      socket.destroy();
      upstream.destroy();
    }
  };
  return { http, origin: `http://127.0.0.1:${http.address().port}`, drop };
}

test("the console (this checkout's) shows the scope streams, and after each reconnection whether each was recovered", async () => {
  const { http, origin, drop } = await checkoutConsole();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // The attempts while the server is away fail; their outcome is checked through the page.
    if (message.type() === 'error' && !message.text().includes('WebSocket connection')) problems.push(`console error: ${message.text()}`);
  });
  const streams = ['all', 'project:p1', 'role:user', 'user:dora'];
  const recovery = (value) => Promise.all(streams.map((s) => page.waitForSelector(`#stream-list li[data-stream="${s}"] .recovery[data-recovered="${value}"]`, { timeout: WAIT })));
  const position = (stream, offset) => page.waitForSelector(`#stream-list li[data-stream="${stream}"] .position:has-text("offset ${offset} ")`, { timeout: WAIT });
  try {
    await page.goto(`${origin}/`);
    await page.fill('#token', server.token('dora', { projects: ['p1'] }));
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    assert.deepEqual(await page.$$eval('#stream-list li', (items) => items.map((item) => item.dataset.stream)), streams);
    const start = Number(/offset (\d+)/.exec(await page.textContent('#stream-list li[data-stream="all"] .position'))[1]);
    assert.equal(await page.textContent('#stream-list li[data-stream="all"] .recovery'), '', 'nothing resumed yet');

    // A broadcast: its stream and offset in the log, and the stream's position moves.
    await server.api.publish({ scope: 'all', type: 'demo.broadcast', data: { text: 'to everyone' } });
    await page.waitForSelector(`#messages .entry[data-type="demo.broadcast"] .topic:has-text("all #${start + 1}")`, { timeout: WAIT });
    await position('all', start + 1);

    // A dropped connection: every stream resumed and recovered; what was published meanwhile
    // (replayed, or live if the console was back already) shows once, before what follows.
    drop();
    await server.api.publish({ scope: 'all', type: 'demo.meanwhile', data: { text: 'meanwhile' } });
    await recovery(true);
    await page.waitForSelector('#messages .entry[data-type="resumed"][data-kind="state"]', { timeout: WAIT });
    await server.api.publish({ scope: 'all', type: 'demo.later', data: { text: 'later' } });
    await page.waitForSelector('#messages .entry[data-type="demo.later"]', { timeout: WAIT });
    const log = await entries(page);
    assert.equal(log.filter((entry) => entry.includes('meanwhile')).length, 1, 'once');
    assert.ok(log.findIndex((entry) => entry.includes('meanwhile')) < log.findIndex((entry) => entry.includes('later')));
    await position('all', start + 3);

    // A server restart gives the streams a new epoch: none is recovered, and the log says so.
    await server.away(async () => {});
    await recovery(false);
    await page.waitForSelector('#messages .entry[data-type="resumed"][data-kind="error"]', { timeout: WAIT });
    assert.equal(await page.textContent('#stream-list li[data-stream="all"] .recovery'), 'not recovered');
  } finally {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console-streams.png'), fullPage: true });
    await page.close();
    http.close();
    drop();
  }
  assert.deepEqual(problems, []);
});
