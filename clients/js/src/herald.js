// Herald JS client: one ES module, no dependencies, for browsers and Node 20+.
//
// `Herald` holds one WebSocket to a Herald server and does the hard parts: authentication by
// first message, token refresh before expiry, reconnection with exponential backoff and jitter,
// resubscription with `since` so a topic with history loses nothing, and acknowledgement of
// offline (inbox) messages. `HeraldApi` calls the server HTTP API (publish, stats, ...).
// The wire names used here are those of docs/PROTOCOL.md; the server serves this very
// file at `/herald.js` for its console.

/** An error from the server (`error` frame, HTTP error body) or from the client itself. */
export class HeraldError extends Error {
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = 'HeraldError';
    this.code = code;
    this.details = details;
    if (details.status !== undefined) this.status = details.status;
  }
}

const DEFAULTS = {
  reconnect: { minDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5 },
  refreshMargin: 30000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  heartbeat: 25000,
  autoAck: false,
};

// Events the client itself emits, beside every server message type.
const STATE_EVENTS = ['connecting', 'connected', 'disconnected'];

/** The `exp` claim of a JWT in milliseconds, or null (no `exp`, not a JWT). */
export function tokenExpiry(token) {
  try {
    const part = String(token).split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), '=')));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** The WebSocket URL for `url`: ws(s) URLs as given; http(s) ones with `/ws` when no path; by
 * default (in a browser) the page's origin + `/ws`. */
export function websocketUrl(url) {
  if (url === undefined) {
    if (typeof location === 'undefined') {
      throw new TypeError('options.url is required outside a browser (e.g. "ws://127.0.0.1:8080/ws")');
    }
    // The page's origin, at /ws (not the page's own path).
    url = `${location.origin}/ws`;
  }
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`options.url is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol === 'http:' || parsed.protocol === 'https:') {
    parsed.protocol = parsed.protocol === 'https:' ? 'wss:' : 'ws:';
    if (parsed.pathname === '/' || parsed.pathname === '') parsed.pathname = '/ws';
    parsed.search = '';
    parsed.hash = '';
  } else if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`options.url must be ws:, wss:, http: or https:, not ${parsed.protocol}`);
  }
  return parsed.toString();
}

/** The delay before reconnection attempt `attempt` (0-based): exponential, capped, jittered. */
export function backoff(attempt, { minDelay, maxDelay, factor, jitter }, random = Math.random) {
  const base = Math.min(maxDelay, minDelay * factor ** attempt);
  return Math.round(base * (1 - jitter * random()));
}

export class Herald {
  /**
   * @param {object} options see herald.d.ts (`HeraldOptions`).
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    const { token, getToken } = options;
    if (token === undefined && getToken === undefined) {
      throw new TypeError('pass options.token (a JWT) or options.getToken (a function returning one)');
    }
    if (token !== undefined && (typeof token !== 'string' || token === '')) {
      throw new TypeError('options.token must be a non-empty string');
    }
    if (getToken !== undefined && typeof getToken !== 'function') {
      throw new TypeError('options.getToken must be a function returning a token (or a promise of one)');
    }
    this.url = websocketUrl(options.url);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (on Node 20, the ws package)');
    }
    this.reconnect = options.reconnect === false ? false : { ...DEFAULTS.reconnect, ...(options.reconnect ?? {}) };
    this.refreshMargin = options.refreshMargin ?? DEFAULTS.refreshMargin;
    this.requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout;
    this.connectTimeout = options.connectTimeout ?? DEFAULTS.connectTimeout;
    this.heartbeat = options.heartbeat === false ? false : options.heartbeat ?? DEFAULTS.heartbeat;
    this.autoAck = options.autoAck ?? DEFAULTS.autoAck;
    this._token = token;
    this._getToken = getToken;

    /** `connecting`, `connected` or `disconnected`. */
    this.state = 'disconnected';
    /** `{client_id, user_id, role}` of the current connection, or null. */
    this.session = null;
    this._handlers = new Map();
    this._subs = new Map();
    this._pending = new Map();
    this._ref = 0;
    this._gen = 0;
    this._attempt = 0;
    this._wanted = false;
    this._ws = null;
    this._timer = null;
    this._refreshTimer = null;
    this._heartbeatTimer = null;
    this._acks = [];
    this._ackQueued = false;
    this._waiting = null;
  }

  // ---- events -------------------------------------------------------------------------------

  /**
   * Calls `handler(message)` for every server message of this `type` (`task.created`, `error`,
   * `user_joined`, ...), for `'message'` (every server message), or for the client's own events:
   * `connecting`, `connected`, `disconnected`, `resubscribed`. Returns a function that removes it.
   */
  on(type, handler) {
    if (typeof type !== 'string' || type === '') throw new TypeError('on(type, handler): type must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('on(type, handler): handler must be a function');
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
  }

  _emit(type, message) {
    for (const handler of [...(this._handlers.get(type) ?? [])]) {
      try {
        handler(message);
      } catch (error) {
        // A failing handler must not break the connection or the other handlers.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  _setState(state, data = {}) {
    this.state = state;
    this._emit(state, { type: state, data, timestamp: new Date().toISOString(), local: true });
  }

  // ---- connection ---------------------------------------------------------------------------

  /**
   * Opens the connection (and keeps it open: reconnects until `disconnect()`). Resolves with the
   * session `{client_id, user_id, role}` once authenticated; rejects when the server refuses the
   * token and there is no `getToken` to get another one, or when `disconnect()` is called first.
   */
  connect() {
    if (this.state === 'connected') return Promise.resolve(this.session);
    if (!this._waiting) {
      let resolve;
      let reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // a caller that never awaits must not crash Node
      this._waiting = { promise, resolve, reject };
    }
    const { promise } = this._waiting;
    if (!this._wanted) {
      this._wanted = true;
      this._attempt = 0;
      this._open();
    }
    return promise;
  }

  /** Closes the connection (code 1000) and stops reconnecting. Subscriptions are kept for the next `connect()`. */
  disconnect() {
    this._wanted = false;
    clearTimeout(this._timer);
    const ws = this._ws;
    this._gen++;
    this._teardown(new HeraldError('disconnected', 'disconnect() was called'));
    if (ws) {
      try {
        ws.close(1000, 'client disconnect');
      } catch {
        // already closed
      }
    }
    this._settleWaiting(new HeraldError('disconnected', 'disconnect() was called'));
    this._rejectSubscribeWaiters(new HeraldError('disconnected', 'disconnect() was called'));
    if (this.state !== 'disconnected') this._setState('disconnected', { code: 1000, reason: 'client disconnect', reconnect: false });
  }

  /** Settles every `subscribe()` still waiting for its answer (the subscriptions are kept). */
  _rejectSubscribeWaiters(error) {
    for (const sub of this._subs.values()) {
      for (const waiter of sub.waiters.splice(0)) waiter.reject(error);
    }
  }

  async _open() {
    const gen = ++this._gen;
    clearTimeout(this._timer);
    this._setState('connecting', { attempt: this._attempt });
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      if (gen !== this._gen) return;
      this._emitError('token_unavailable', `getToken() failed: ${error?.message ?? error}`);
      this._closed(gen, { code: 4000, reason: 'getToken() failed' });
      return;
    }
    if (gen !== this._gen) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (error) {
      this._emitError('connect_failed', String(error?.message ?? error));
      this._closed(gen, { code: 1006, reason: 'could not open the WebSocket' });
      return;
    }
    this._ws = ws;
    this._connToken = token;
    this._lastError = null;
    ws.onmessage = (event) => {
      if (gen !== this._gen) return;
      this._armHeartbeat(gen);
      this._receive(event.data, ws);
    };
    ws.onclose = (event) => this._closed(gen, { code: event.code, reason: event.reason });
    ws.onerror = () => {}; // the close event that follows says what happened
    // A server that accepts TCP but never answers (frozen, half-open) must not hold us forever.
    this._heartbeatTimer = setTimeout(() => {
      if (gen === this._gen && this.state !== 'connected') this._drop(gen, 4000, `not authenticated within ${this.connectTimeout} ms`);
    }, this.connectTimeout);
  }

  // Gives up on the current socket without waiting for a close handshake that may never come.
  _drop(gen, code, reason) {
    const ws = this._ws;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
    this._closed(gen, { code, reason });
  }

  // After `heartbeat` ms without any message, a ping; no reply within requestTimeout: the
  // connection is dead even if TCP has not noticed, so drop it and reconnect.
  _armHeartbeat(gen) {
    if (this.heartbeat === false || this.state !== 'connected') return;
    clearTimeout(this._heartbeatTimer);
    this._heartbeatTimer = setTimeout(() => {
      if (gen !== this._gen || this.state !== 'connected') return;
      this.request('ping').catch((error) => {
        if (error.code === 'timeout' && gen === this._gen) this._drop(gen, 4000, 'no reply to ping');
      });
    }, this.heartbeat);
  }

  async _currentToken() {
    if (this._getToken) {
      const token = await this._getToken();
      if (typeof token !== 'string' || token === '') throw new Error('getToken() must return a non-empty string');
      this._token = token;
      return token;
    }
    return this._token;
  }

  _send(frame) {
    this._ws.send(JSON.stringify(frame));
  }

  _receive(raw, ws) {
    let message;
    try {
      message = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      this._emitError('invalid_message', 'the server sent a frame that is not JSON');
      return;
    }
    if (message === null || typeof message !== 'object' || typeof message.type !== 'string') {
      this._emitError('invalid_message', 'the server sent a message without a type');
      return;
    }
    // A publication (it has an `id`, or a `from` when a client sent it) is news for the app,
    // never a frame that changes this client's state, whatever its type says.
    if (message.id !== undefined || message.from !== undefined) {
      this._emit(message.type, message);
      this._emit('message', message);
      if (typeof message.topic === 'string') this._deliver(message);
      if (message.offline === true && this.autoAck && typeof message.id === 'string') this.ack([message.id]);
      return;
    }
    switch (message.type) {
      case 'auth_required':
        ws.send(JSON.stringify({ type: 'auth', token: this._connToken }));
        break;
      case 'auth_success':
      case 'connection.established':
        if (this.state !== 'connected') this._established(message.data ?? {});
        break;
      default:
        break;
    }
    if (message.type === 'error' && this.state !== 'connected') {
      this._lastError = message.data;
    }
    const pending = message.ref !== undefined ? this._pending.get(message.ref) : undefined;
    if (pending) {
      this._pending.delete(message.ref);
      clearTimeout(pending.timer);
      if (message.type === 'error') {
        pending.reject(new HeraldError(message.data?.code ?? 'error', message.data?.message ?? '', { message }));
      } else {
        pending.resolve(message);
      }
    } else if (message.type === 'error') {
      if (message.data?.code === 'token_expired' || message.data?.code === 'auth_failed') this._lastError = message.data;
      this._emit('error', message);
    }
    // The server ended a subscription by itself (a revoked permission): do not resubscribe.
    if (message.type === 'unsubscribed' && !pending && typeof message.data?.topic === 'string') this._subs.delete(message.data.topic);
    if (message.type !== 'error') this._emit(message.type, message);
    this._emit('message', message);
  }

  _deliver(message) {
    const sub = this._subs.get(message.topic);
    if (!sub) return;
    if (typeof message.offset === 'number') {
      sub.offset = message.offset;
      if (typeof message.epoch === 'string') sub.epoch = message.epoch;
    }
    for (const handler of [...sub.handlers]) {
      try {
        handler(message);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  _established(data) {
    this.session = data;
    this._attempt = 0;
    clearTimeout(this._heartbeatTimer);
    this._setState('connected', data);
    this._armHeartbeat(this._gen);
    this._scheduleRefresh(this._connToken);
    if (this._acks.length) this._flushAcks();
    for (const sub of this._subs.values()) this._sendSubscribe(sub, sub.confirmed === true);
    this._settleWaiting(null, data);
  }

  _settleWaiting(error, value) {
    const waiting = this._waiting;
    if (!waiting) return;
    this._waiting = null;
    if (error) waiting.reject(error);
    else waiting.resolve(value);
  }

  _teardown(error) {
    clearTimeout(this._refreshTimer);
    clearTimeout(this._heartbeatTimer);
    this._refreshTimer = null;
    this._heartbeatTimer = null;
    this._ws = null;
    this.session = null;
    for (const [ref, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
      this._pending.delete(ref);
    }
  }

  _closed(gen, { code, reason }) {
    if (gen !== this._gen) return;
    const serverError = this._lastError;
    this._teardown(new HeraldError('disconnected', `connection closed (${code}${reason ? ` ${reason}` : ''})`));
    let reconnect = this._wanted && this.reconnect !== false;
    // 1000 from the server is a deliberate kick ("disconnected by the server"): stay away.
    if (code === 1000) reconnect = false;
    // A refused or expired token only gets better with a new one from getToken().
    if (code === 1008 && !this._getToken) reconnect = false;
    const data = { code, reason, reconnect };
    if (serverError) data.error = serverError;
    if (!reconnect) {
      this._wanted = false;
      this._setState('disconnected', data);
      const err = serverError
        ? new HeraldError(serverError.code, serverError.message ?? '', { code, reason })
        : new HeraldError('disconnected', `connection closed (${code}${reason ? ` ${reason}` : ''})`, { code, reason });
      this._settleWaiting(err);
      this._rejectSubscribeWaiters(err);
      return;
    }
    data.delay = backoff(this._attempt++, this.reconnect);
    this._setState('disconnected', data);
    this._timer = setTimeout(() => {
      if (this._wanted && gen === this._gen) this._open();
    }, data.delay);
  }

  _emitError(code, message) {
    this._emit('error', { type: 'error', data: { code, message }, timestamp: new Date().toISOString(), local: true });
  }

  // ---- token refresh ------------------------------------------------------------------------

  _scheduleRefresh(token) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (!this._getToken) return;
    const expiry = tokenExpiry(token);
    if (expiry === null) return;
    const left = expiry - Date.now();
    const margin = Math.min(this.refreshMargin, left / 2);
    const gen = this._gen;
    this._refreshTimer = setTimeout(() => {
      if (gen === this._gen && this.state === 'connected') this._refresh(gen);
    }, Math.max(0, left - margin));
  }

  async _refresh(gen) {
    try {
      const token = await this._currentToken();
      if (gen !== this._gen) return;
      this._connToken = token;
      const reply = await this.request('refresh', { token });
      if (gen !== this._gen) return;
      this._scheduleRefresh(token);
      return reply;
    } catch (error) {
      if (gen !== this._gen) return;
      this._emitError(error?.code ?? 'refresh_failed', `token refresh failed: ${error?.message ?? error}`);
      // Try again while the old token lasts; if it expires, the server closes (1008) and
      // the reconnection asks getToken() again.
      const left = (tokenExpiry(this._connToken) ?? 0) - Date.now();
      if (left > 2000) this._refreshTimer = setTimeout(() => this._refresh(gen), Math.min(5000, left / 2));
    }
  }

  // ---- commands -----------------------------------------------------------------------------

  /**
   * Sends any command and resolves with the server's reply (the whole message), matched by
   * `ref`; an `error` reply rejects with a HeraldError carrying its code.
   */
  request(type, fields = {}) {
    if (this.state !== 'connected' || !this._ws) {
      return Promise.reject(new HeraldError('disconnected', `cannot send ${type}: not connected`));
    }
    const ref = ++this._ref;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new HeraldError('timeout', `no reply to ${type} within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._pending.set(ref, { resolve, reject, timer });
      this._send({ ...fields, type, ref });
    });
  }

  /**
   * Subscribes to `topic`; `handler(message)` gets every message delivered through it. Kept
   * across reconnections: the client resubscribes with `since` (the last offset and epoch seen)
   * and emits `resubscribed` with `data.recovered`; `false` means messages may be missing and
   * the app should reload its state. Resolves with `{topic, offset?, epoch?, recovered}`.
   */
  subscribe(topic, handler, options = {}) {
    if (typeof topic !== 'string' || topic === '') return Promise.reject(new TypeError('subscribe(topic, handler): topic must be a non-empty string'));
    if (typeof handler !== 'function') return Promise.reject(new TypeError('subscribe(topic, handler): handler must be a function'));
    const since = options.since;
    if (since !== undefined && (typeof since?.offset !== 'number' || typeof since?.epoch !== 'string')) {
      return Promise.reject(new TypeError('subscribe: options.since must be {offset: number, epoch: string}'));
    }
    const existing = this._subs.get(topic);
    const sub = existing ?? { topic, offset: undefined, epoch: undefined, waiters: [], handlers: new Set() };
    // Several parts of an app may subscribe to one topic: each handler gets every message.
    sub.handlers.add(handler);
    if (options.onSubscribed !== undefined) sub.onSubscribed = options.onSubscribed;
    if (since) {
      sub.offset = since.offset;
      sub.epoch = since.epoch;
    }
    this._subs.set(topic, sub);
    if (existing?.confirmed && this.state === 'connected' && existing.waiters.length === 0) {
      // Already subscribed here: the new handler joins at once.
      return Promise.resolve({ topic, offset: sub.offset, epoch: sub.epoch, recovered: false, resumed: false });
    }
    const promise = new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
    if (this.state === 'connected' && (!existing || existing.waiters.length === 1)) this._sendSubscribe(sub, false);
    return promise;
  }

  async _sendSubscribe(sub, resubscribing) {
    const fields = { topic: sub.topic };
    const resumed = sub.offset !== undefined && sub.epoch !== undefined;
    if (resumed) fields.since = { offset: sub.offset, epoch: sub.epoch };
    let reply;
    try {
      reply = await this.request('subscribe', fields);
    } catch (error) {
      if (error.code === 'disconnected' || error.code === 'timeout') return; // retried on the next connection
      if (error.code === 'rate_limited') {
        // Many topics resubscribed at once can exceed the command rate: try again shortly.
        const gen = this._gen;
        setTimeout(() => {
          if (gen === this._gen && this.state === 'connected' && this._subs.get(sub.topic) === sub) this._sendSubscribe(sub, resubscribing);
        }, 1000);
        return;
      }
      if (this._subs.get(sub.topic) === sub) this._subs.delete(sub.topic);
      for (const waiter of sub.waiters.splice(0)) waiter.reject(error);
      if (resubscribing) this._emit('error', { type: 'error', topic: sub.topic, data: { code: error.code, message: error.message }, timestamp: new Date().toISOString(), local: true });
      return;
    }
    const data = { topic: sub.topic, recovered: false, ...(reply.data ?? {}) };
    // Where to continue from: our own position when the past was replayed, else the server's.
    if (!data.recovered && typeof data.offset === 'number') {
      sub.offset = data.offset;
      sub.epoch = data.epoch;
    }
    const info = { ...data, resumed };
    sub.confirmed = true;
    for (const waiter of sub.waiters.splice(0)) waiter.resolve(info);
    if (typeof sub.onSubscribed === 'function') sub.onSubscribed(info);
    if (resubscribing) this._emit('resubscribed', { type: 'resubscribed', topic: sub.topic, data: info, timestamp: new Date().toISOString(), local: true });
  }

  /**
   * Stops the subscription (locally at once; on the server when connected). With `handler`,
   * removes only that handler; the subscription ends when no handler is left.
   */
  async unsubscribe(topic, handler) {
    const sub = this._subs.get(topic);
    if (handler !== undefined && sub) {
      sub.handlers.delete(handler);
      if (sub.handlers.size > 0) return { topic };
    }
    this._subs.delete(topic);
    for (const waiter of sub?.waiters.splice(0) ?? []) waiter.reject(new HeraldError('unsubscribed', `unsubscribed from ${topic}`));
    if (this.state !== 'connected') return { topic };
    const reply = await this.request('unsubscribe', { topic });
    return reply.data;
  }

  /** The topics this client keeps subscribed, with the last position seen on each. */
  subscriptions() {
    return [...this._subs.values()].map(({ topic, offset, epoch }) => ({ topic, offset, epoch }));
  }

  /** Publishes `event` with `data` to `topic` (the namespace must allow client publish). Resolves with `{topic, id, offset?}`. */
  async publish(topic, event, data = {}) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('publish(topic, event, data): topic must be a non-empty string');
    if (typeof event !== 'string' || event === '') throw new TypeError('publish(topic, event, data): event must be a non-empty string');
    return (await this.request('publish', { topic, event, data })).data;
  }

  /** Who is on `topic`: `{topic, users: [{user_id, connections, joined_at}]}`. */
  async presence(topic) {
    return (await this.request('presence', { topic })).data;
  }

  /** A page of `topic`'s history: `{topic, epoch, offset, messages}`. */
  async history(topic, { since, limit } = {}) {
    const fields = { topic };
    if (since !== undefined) fields.since = since;
    if (limit !== undefined) fields.limit = limit;
    return (await this.request('history', fields)).data;
  }

  /**
   * Acknowledges offline (inbox) messages by id so they are not delivered again. Sent at once
   * when connected, else on the next connection. (With `autoAck: true` the client acks each
   * offline message after its handlers ran.)
   */
  ack(ids) {
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) throw new TypeError('ack(ids): ids must be an array of message id strings');
    this._acks.push(...ids);
    if (this.state === 'connected' && !this._ackQueued) {
      this._ackQueued = true;
      queueMicrotask(() => this._flushAcks());
    }
  }

  _flushAcks() {
    this._ackQueued = false;
    if (this.state !== 'connected' || !this._ws || this._acks.length === 0) return;
    this._send({ type: 'ack', ids: this._acks.splice(0) });
  }

  /** Round trip to the server: resolves with the `pong` data. */
  async ping() {
    return (await this.request('ping')).data;
  }

  /** This connection as the server sees it (`status` reply data). */
  async status() {
    return (await this.request('status')).data;
  }
}

/** The server HTTP API, with an API key or an admin JWT. Uses the global `fetch` unless given one. */
export class HeraldApi {
  constructor({ url, key, fetch: fetchImpl } = {}) {
    if (typeof url !== 'string') throw new TypeError('HeraldApi: url (e.g. "http://127.0.0.1:8080") is required');
    if (typeof key !== 'string' || key === '') throw new TypeError('HeraldApi: key (an API key or an admin JWT) is required');
    this.url = url.replace(/\/+$/, '');
    this.key = key;
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (typeof this.fetch !== 'function') throw new TypeError('HeraldApi: no fetch implementation');
  }

  /** Any API call; resolves with the JSON answer, rejects with a HeraldError (`status`, `code`). */
  async call(method, path, body) {
    const init = { method, headers: { authorization: `Bearer ${this.key}` } };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(this.url + path, init);
    } catch (error) {
      throw new HeraldError('network_error', `${method} ${path}: ${error?.message ?? error}`);
    }
    const text = await response.text();
    let value;
    try {
      value = text === '' ? null : JSON.parse(text);
    } catch {
      value = text;
    }
    if (!response.ok) {
      const error = value?.error ?? {};
      throw new HeraldError(error.code ?? `http_${response.status}`, error.message ?? String(text), { status: response.status });
    }
    return value;
  }

  /** `{scope, target?, type, data}` to `all`, a `user`, a `role`, a `project` or a `topic`: `{id, recipients, offset?}`. */
  publish(message) {
    return this.call('POST', '/api/v1/publish', message);
  }

  publishBatch(messages) {
    return this.call('POST', '/api/v1/publish/batch', { messages });
  }

  stats() {
    return this.call('GET', '/api/v1/stats');
  }

  connections(filters = {}) {
    return this.call('GET', `/api/v1/connections${query(filters)}`);
  }

  presence(topic) {
    return this.call('GET', `/api/v1/topics/${encodeURIComponent(topic)}/presence`);
  }

  history(topic, filters = {}) {
    return this.call('GET', `/api/v1/topics/${encodeURIComponent(topic)}/history${query(filters)}`);
  }

  disconnectUser(id) {
    return this.call('POST', `/api/v1/users/${encodeURIComponent(id)}/disconnect`);
  }
}

function query(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) if (value !== undefined) params.set(key, String(value));
  const text = params.toString();
  return text ? `?${text}` : '';
}

export { STATE_EVENTS };
