// Test harness: a real `herald serve` process in its own temp dir (config, SQLite data dir,
// log), on a loopback port; killed by PID when the test ends. No part of the server is mocked.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, openSync, closeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { before, after } from 'node:test';
import WebSocket from 'ws';
import { Herald, HeraldApi } from '../src/herald.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** The environment a test server runs in: this process's, less the harness's own variable. */
function serverEnv() {
  const { HERALD_BIN: _, ...env } = process.env;
  return env;
}

export const HERALD_BIN = process.env.HERALD_BIN ? resolve(process.env.HERALD_BIN) : join(repo, 'target/debug/herald');
export const API_KEY = 'js-test-api-key';
const SECRET = 'js-test-secret-0123456789';

if (!existsSync(HERALD_BIN)) {
  throw new Error(`no herald binary at ${HERALD_BIN}: run \`cargo build -p herald-server\` or set HERALD_BIN`);
}

// The namespaces the tests use: `chat` (history, presence, join/leave, client publish),
// `feed` (history only), `short` (a history of 2, to trim what a client missed); other topics
// are the default namespace (no history, no client publish).
const NAMESPACES = `
[[namespaces]]
name = "feed"
publish = true
history_size = 100
[[namespaces]]
name = "chat"
publish = true
presence = true
join_leave = true
history_size = 100

[[namespaces]]
name = "short"
history_size = 2
`;

const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

export class Server {
  /** Starts `herald serve` on a free loopback port with the test config plus `extra` TOML. */
  static async start(extra = '', top = '') {
    const server = new Server(extra, top);
    await server.spawn('127.0.0.1:0');
    return server;
  }

  /** `extra`: TOML tables after the test config's; `top`: top-level keys (e.g. `profile`). */
  constructor(extra, top = '') {
    this.dir = mkdtempSync(join(tmpdir(), 'herald-js-'));
    this.config = join(this.dir, 'herald.toml');
    this.log = join(this.dir, 'herald.log');
    writeFileSync(
      this.config,
      `listen = "127.0.0.1:0"\ndata_dir = "${join(this.dir, 'data')}"\napi_key = "${API_KEY}"\n${top}\n` +
        `[jwt]\nsecret = "${SECRET}"\n${NAMESPACES}\n${extra}\n`,
    );
    this.child = null;
  }

  /** Spawns the server on `listen` (same config and data dir) and waits until it listens. */
  async spawn(listen) {
    const log = openSync(this.log, 'a');
    const child = spawn(HERALD_BIN, ['serve', '--config', this.config, '--listen', listen], {
      stdio: ['ignore', 'pipe', log],
      // HERALD_BIN is this harness's setting, not the server's (it would warn about it).
      env: { ...serverEnv(), RUST_LOG: 'info' },
    });
    closeSync(log);
    live.add(child);
    child.once('exit', () => live.delete(child));
    const addr = await new Promise((resolvePromise, reject) => {
      const lines = createInterface({ input: child.stdout });
      const onExit = (code) => reject(new Error(`herald exited (${code}) before listening; log:\n${this.logs()}`));
      child.once('exit', onExit);
      lines.on('line', (line) => {
        const match = /^herald listening on http:\/\/(\S+)/.exec(line);
        if (match) {
          child.off('exit', onExit);
          resolvePromise(match[1]);
        }
      });
    });
    this.child = child;
    this.addr = addr;
    this.port = Number(addr.split(':').pop());
    return addr;
  }

  get http() {
    return `http://${this.addr}`;
  }

  get ws() {
    return `ws://${this.addr}/ws`;
  }

  /** The server API with the test API key. */
  get api() {
    return new HeraldApi({ url: this.http, key: API_KEY });
  }

  /** A JWT minted by `herald token` with this server's config. */
  token(sub, { role, projects, ttl } = {}) {
    const args = ['token', '--config', this.config, '--sub', sub];
    if (role) args.push('--role', role);
    if (projects) args.push('--projects', projects.join(','));
    if (ttl) args.push('--ttl', ttl);
    return execFileSync(HERALD_BIN, args, { encoding: 'utf8', env: serverEnv() }).trim();
  }

  /** SIGKILL: no goodbye to the clients, nothing flushed but what was committed. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(child.pid, 'SIGKILL');
    await exited;
    this.child = null;
  }

  /** Starts the server again on the same data dir, on `port` (default: the port it had). */
  async restart(port = this.port) {
    await this.kill();
    return this.spawn(`127.0.0.1:${port}`);
  }

  /** SIGSTOP: the process stops answering, but its sockets stay open (no FIN, no RST). */
  freeze() {
    process.kill(this.child.pid, 'SIGSTOP');
  }

  /** SIGCONT: the frozen process carries on. */
  thaw() {
    process.kill(this.child.pid, 'SIGCONT');
  }

  /**
   * Kills the server and runs `during(api)` against the same data dir served on another port,
   * where the clients (who know only the first port) cannot reach it: what `during` publishes
   * is what they miss. Then kills that one and serves the first port again.
   */
  async away(during) {
    const port = this.port;
    await this.kill();
    do {
      await this.kill();
      await this.spawn('127.0.0.1:0');
    } while (this.port === port); // the kernel may hand out the freed port again
    try {
      return await during(this.api);
    } finally {
      await this.kill();
      await this.spawn(`127.0.0.1:${port}`);
    }
  }

  logs() {
    try {
      return readFileSync(this.log, 'utf8');
    } catch {
      return '';
    }
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The usual setup of a test file: one server, started before the file's tests and stopped after
 * them, and `client(sub, options)`: a client of it for `sub` (short reconnect delays, up to
 * `maxDelay`; `options` override; none with `getToken`), disconnected when the file ends.
 */
export function serverForFile({ maxDelay = 500 } = {}) {
  const server = new Server('');
  const clients = [];
  before(() => server.spawn('127.0.0.1:0'));
  after(async () => {
    for (const client of clients) client.disconnect();
    await server.stop();
  });
  const client = (sub, options = {}) => {
    const herald = new Herald({
      url: server.ws,
      WebSocket,
      token: options.getToken ? undefined : server.token(sub),
      reconnect: { minDelay: 50, maxDelay },
      ...options,
    });
    clients.push(herald);
    return herald;
  };
  return { server, client, clients };
}

/** Polls `probe` every 20 ms until it returns something truthy, for at most `timeout` ms. */
export async function eventually(what, probe, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    const found = await probe();
    if (found) return found;
    if (Date.now() > end) throw new Error(`waited ${timeout} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next event `type` from `client` that passes `filter`, within `timeout` ms. */
export function nextEvent(client, type, filter = () => true, timeout = 10000) {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`waited ${timeout} ms for a ${type} event`));
    }, timeout);
    const off = client.on(type, (message) => {
      if (!filter(message)) return;
      clearTimeout(timer);
      off();
      resolvePromise(message);
    });
  });
}

/**
 * A subclass of `WebSocket` (the ws package's) that records every frame its instances send and
 * receive, as sent (strings or bytes), and the URLs they were opened with: `Recording.frames`
 * `{urls, sent, received}`. The client under test uses it as its `WebSocket` option.
 */
export function recordingWebSocket(WebSocket) {
  const frames = { urls: [], sent: [], received: [] };
  class Recording extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      frames.urls.push(String(url));
      this.addEventListener('message', (event) => frames.received.push(event.data));
    }

    send(data, ...rest) {
      frames.sent.push(data);
      return super.send(data, ...rest);
    }
  }
  Recording.frames = frames;
  return Recording;
}

/** A recorded frame as an object: JSON text, or binary decoded with `decode` (MessagePack). */
export function parseFrame(frame, decode) {
  if (typeof frame === 'string') return JSON.parse(frame);
  const bytes = frame instanceof ArrayBuffer ? new Uint8Array(frame) : frame;
  if (!decode) return JSON.parse(new TextDecoder().decode(bytes));
  return decode(bytes);
}

/** Resolves after `ms` milliseconds (to let time pass, never to assert on it). */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
