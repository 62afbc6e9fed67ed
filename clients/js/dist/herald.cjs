// Generated from src/herald.js by scripts/build-cjs.js: do not edit.
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);
var herald_exports = {};
__export(herald_exports, {
  Herald: () => Herald,
  HeraldApi: () => HeraldApi,
  HeraldError: () => HeraldError,
  STATE_EVENTS: () => STATE_EVENTS,
  Subscription: () => Subscription,
  backoff: () => backoff,
  tokenExpiry: () => tokenExpiry,
  websocketUrl: () => websocketUrl
});
module.exports = __toCommonJS(herald_exports);
class HeraldError extends Error {
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "HeraldError";
    this.code = code;
    this.details = details;
    if (details.status !== void 0) this.status = details.status;
  }
}
const DEFAULTS = {
  // resetAfter: the attempt count (and so the delay) starts over only once a connection has
  // stayed up this long, so a server that accepts and then drops at once is not hammered.
  reconnect: { minDelay: 500, maxDelay: 3e4, factor: 2, jitter: 0.5, resetAfter: 5e3 },
  refreshMargin: 3e4,
  minRefreshDelay: 1e3,
  requestTimeout: 1e4,
  connectTimeout: 1e4,
  heartbeat: 25e3,
  autoAck: false
};
const STATE_EVENTS = ["connecting", "connected", "disconnected"];
const TOKEN_FAILURES = ["authentication failed", "token expired", "auth_failed", "token_expired"];
const BATCH = 100;
const RESUME_MAX = 64;
const now = () => performance.now();
const local = (type, data, extra) => ({ type, data, timestamp: (/* @__PURE__ */ new Date()).toISOString(), local: true, ...extra });
const isLogout = (error) => error?.code === "logged_out";
const isPosition = (at) => Number.isSafeInteger(at?.offset) && at.offset >= 0 && typeof at.epoch === "string";
function checkHandler(handler) {
  if (typeof handler !== "function") throw new TypeError("handler must be a function");
}
function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(base64.length + (4 - base64.length % 4) % 4, "=")));
    return typeof claims.exp === "number" ? claims.exp * 1e3 : null;
  } catch {
    return null;
  }
}
function websocketUrl(url) {
  if (url === void 0) {
    if (typeof location === "undefined") {
      throw new TypeError('options.url is required outside a browser (e.g. "ws://127.0.0.1:8080/ws")');
    }
    url = `${location.origin}/ws`;
  }
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`options.url is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol === "http:" || parsed.protocol === "https:") {
    parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
    if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/ws";
    parsed.search = "";
    parsed.hash = "";
  } else if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`options.url must be ws:, wss:, http: or https:, not ${parsed.protocol}`);
  }
  return parsed.toString();
}
function backoff(attempt, { minDelay, maxDelay, factor, jitter }, random = Math.random) {
  const base = Math.min(maxDelay, minDelay * factor ** attempt);
  return Math.round(base * (1 - jitter * random()));
}
class Emitter {
  constructor() {
    this._handlers = /* @__PURE__ */ new Map();
  }
  /** Calls `handler(event)` for every `type` event. Returns a function that removes it. */
  on(type, handler) {
    if (typeof type !== "string" || type === "") throw new TypeError("on(type, handler): type must be a non-empty string");
    checkHandler(handler);
    if (!this._handlers.has(type)) this._handlers.set(type, /* @__PURE__ */ new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }
  /** As `on`, for the next `type` event only. */
  once(type, handler) {
    checkHandler(handler);
    const once = (event) => {
      this.off(type, once);
      handler(event);
    };
    once.handler = handler;
    return this.on(type, once);
  }
  /** Removes a handler given to `on` or `once`. */
  off(type, handler) {
    const handlers = this._handlers.get(type);
    for (const h of handlers ?? []) if (h === handler || h.handler === handler) handlers.delete(h);
  }
  _emit(type, event) {
    for (const handler of [...this._handlers.get(type) ?? []]) {
      try {
        handler(event);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
class Subscription extends Emitter {
  constructor(client, topic) {
    super();
    this.client = client;
    this.topic = topic;
    this.state = "unsubscribed";
    this.offset = void 0;
    this.epoch = void 0;
    this._waiters = [];
    this._sugar = /* @__PURE__ */ new Set();
    this._try = 0;
    this._info = null;
    this._confirmed = false;
  }
  /** Asks for the subscription (now, or as soon as the client is connected). */
  subscribe() {
    const { client, topic } = this;
    if (this.state === "unsubscribed") {
      if (!client._subs.has(topic)) client._subs.set(topic, this);
      this._setState("subscribing", { topic, reason: "subscribe() called" });
      client._want(this);
    }
    return this;
  }
  /** Ends the subscription. Resolves with the server's `{topic}` (at once when offline). */
  unsubscribe() {
    const { client, topic } = this;
    this._end("unsubscribe() called", new HeraldError("unsubscribed", `unsubscribe() called on ${topic}`));
    this.offset = this.epoch = void 0;
    client._toSub.delete(this);
    return client.state === "connected" ? client.request("unsubscribe", { topic }).then((reply) => reply.data) : Promise.resolve({ topic });
  }
  /**
   * Resolves with `{topic, offset?, epoch?, recovered, resumed}` once subscribed; rejects on
   * `timeoutMs` (code `timeout`), a refusal (the server's code), `unsubscribe()`, or when the
   * client disconnects for good. Waits through reconnections.
   */
  ready(timeoutMs) {
    if (this.state === "subscribed") return Promise.resolve(this._info);
    if (this.state === "unsubscribed") return Promise.reject(new HeraldError("unsubscribed", `${this.topic} is not subscribed: call subscribe() first`));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeoutMs !== void 0) {
        waiter.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== waiter);
          reject(new HeraldError("timeout", `${this.topic}: not subscribed within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._waiters.push(waiter);
    });
  }
  /** `client.publish(topic, event, data)` on this topic. */
  publish(event, data) {
    return this.client.publish(this.topic, event, data);
  }
  /** `client.presence(topic)` on this topic. */
  presence() {
    return this.client.presence(this.topic);
  }
  /** `client.history(topic, options)` on this topic. */
  history(options) {
    return this.client.history(this.topic, options);
  }
  _setState(state, event) {
    this.state = state;
    this._emit(state, event);
  }
  _settle(error, info) {
    for (const waiter of this._waiters.splice(0)) {
      clearTimeout(waiter.timer);
      if (error) waiter.reject(error);
      else waiter.resolve(info);
    }
  }
  // Ends the subscription here: unsubscribe(), a refusal, a revocation by the server. Handlers
  // given to client.subscribe(topic, handler) go with it; on()/once() listeners stay.
  _end(reason, error, code) {
    const was = this.state;
    this.state = "unsubscribed";
    this._confirmed = false;
    for (const handler of this._sugar) this.off("message", handler);
    this._sugar.clear();
    this._settle(error);
    if (was !== "unsubscribed") this._emit("unsubscribed", code ? { topic: this.topic, reason, code } : { topic: this.topic, reason });
    const subs = this.client._subs;
    if (subs.get(this.topic) === this && ![...this._handlers.values()].some((set) => set.size)) subs.delete(this.topic);
  }
}
class Herald extends Emitter {
  /**
   * @param {object} options see herald.d.ts (`HeraldOptions`).
   */
  constructor(options = {}) {
    super();
    if (options === null || typeof options !== "object") throw new TypeError("options must be an object");
    const { token, getToken, encoding = "json", msgpack, offlineQueue, resume } = options;
    if (token === void 0 && getToken === void 0) {
      throw new TypeError("pass options.token (a JWT) or options.getToken (a function returning one)");
    }
    if (token !== void 0 && (typeof token !== "string" || token === "")) {
      throw new TypeError("options.token must be a non-empty string");
    }
    if (getToken !== void 0 && typeof getToken !== "function") {
      throw new TypeError("options.getToken must be a function returning a token (or a promise of one)");
    }
    if (resume !== void 0 && (resume === null || typeof resume !== "object" || Array.isArray(resume) || !Object.values(resume).every(isPosition))) {
      throw new TypeError('options.resume must be {"<stream>": {offset: number, epoch: string}} (as streams() returns it)');
    }
    if (encoding === "msgpack") {
      if (typeof msgpack?.encode !== "function" || typeof msgpack?.decode !== "function") {
        throw new TypeError("encoding 'msgpack' needs options.msgpack = {encode, decode} (e.g. from @msgpack/msgpack)");
      }
      this._codec = msgpack;
    } else if (encoding !== "json") {
      throw new TypeError("options.encoding must be 'json' or 'msgpack'");
    }
    this.encoding = encoding;
    this.url = websocketUrl(options.url);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket (on Node 20, the ws package)");
    }
    this.reconnect = options.reconnect === false ? false : { ...DEFAULTS.reconnect, ...options.reconnect ?? {} };
    this.refreshMargin = options.refreshMargin ?? DEFAULTS.refreshMargin;
    this.minRefreshDelay = options.minRefreshDelay ?? DEFAULTS.minRefreshDelay;
    this.requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout;
    this.connectTimeout = options.connectTimeout ?? DEFAULTS.connectTimeout;
    this.heartbeat = options.heartbeat === false ? false : options.heartbeat ?? DEFAULTS.heartbeat;
    this.autoAck = options.autoAck ?? DEFAULTS.autoAck;
    this.offlineQueue = offlineQueue ? { max: 100, timeout: 1e4, ...offlineQueue === true ? {} : offlineQueue } : false;
    this._token = token;
    this._getToken = getToken;
    this.state = "disconnected";
    this.session = null;
    this._subs = /* @__PURE__ */ new Map();
    this._streams = new Map(Object.entries(resume ?? {}).map(([stream, { offset, epoch }]) => [stream, { offset, epoch }]));
    this._resumeSent = null;
    this._toSub = /* @__PURE__ */ new Set();
    this._pending = /* @__PURE__ */ new Map();
    this._queue = [];
    this._ref = 0;
    this._gen = 0;
    this._attempt = 0;
    this._wanted = false;
    this._ws = null;
    this._acks = [];
    this._waiting = null;
    this._lastError = null;
  }
  // ---- events -------------------------------------------------------------------------------
  //
  // on(type, handler) / once / off (from Emitter): `type` is any server message type
  // (`task.created`, `error`, `user_joined`, ...), `'message'` (every server message), or one of
  // the client's own events: `connecting`, `connected`, `disconnected`, `resubscribed`, `resumed`.
  _setState(state, data = {}) {
    this.state = state;
    this._emit(state, local(state, data));
  }
  // ---- connection ---------------------------------------------------------------------------
  /**
   * Opens the connection (and keeps it open: reconnects until `disconnect()`). Resolves with the
   * session once authenticated; rejects when the client gives up for good first (a refused token
   * without `getToken`, `getToken()` saying the user is logged out, a server kick,
   * `disconnect()`).
   */
  connect() {
    if (this.state === "connected") return Promise.resolve(this.session);
    if (!this._waiting) {
      let resolve;
      let reject;
      const promise2 = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise2.catch(() => {
      });
      this._waiting = { promise: promise2, resolve, reject };
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
    const error = new HeraldError("disconnected", "disconnect() was called");
    this._teardown(error);
    try {
      ws?.close(1e3, "client disconnect");
    } catch {
    }
    this._suspend("client disconnect");
    if (this.state !== "disconnected") this._setState("disconnected", { code: 1e3, reason: "client disconnect", reconnect: false });
    this._final(error);
  }
  async _open() {
    const gen = ++this._gen;
    clearTimeout(this._timer);
    this._setState("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      if (gen !== this._gen) return;
      if (isLogout(error)) return this._logout(gen);
      this._emitError("token_unavailable", `getToken() failed: ${error?.message ?? error}`);
      return this._closed(gen, { code: 4e3, reason: "getToken() failed" });
    }
    if (gen !== this._gen) return;
    if (token === null) return this._logout(gen);
    let ws;
    try {
      let url = this.url;
      if (this._codec) {
        const parsed = new URL(url);
        parsed.searchParams.set("encoding", "msgpack");
        url = parsed.toString();
      }
      ws = new this.WebSocket(url);
      ws.binaryType = "arraybuffer";
    } catch (error) {
      this._emitError("connect_failed", String(error?.message ?? error));
      return this._closed(gen, { code: 1006, reason: "could not open the WebSocket" });
    }
    this._ws = ws;
    this._connToken = token;
    this._lastError = null;
    this._resumeSent = null;
    ws.onmessage = (event) => {
      if (gen !== this._gen) return;
      this._armHeartbeat(gen);
      this._receive(event.data, ws);
    };
    ws.onclose = (event) => this._closed(gen, { code: event.code, reason: event.reason });
    ws.onerror = () => {
    };
    this._heartbeatTimer = setTimeout(() => {
      if (gen === this._gen && this.state !== "connected") this._drop(gen, 4e3, `not authenticated within ${this.connectTimeout} ms`);
    }, this.connectTimeout);
  }
  // Gives up on the current socket without waiting for a close handshake that may never come.
  _drop(gen, code, reason) {
    const ws = this._ws;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close(code, reason);
      } catch {
      }
    }
    this._closed(gen, { code, reason });
  }
  // getToken() said the user is logged out: close for good.
  _logout(gen) {
    this._wanted = false;
    this._lastError = { code: "logged_out", message: "getToken() said the user is logged out" };
    this._lastAt = now();
    this._drop(gen, 1e3, "logged out");
  }
  // After `heartbeat` ms without any message, a ping; no reply within requestTimeout: the
  // connection is dead even if TCP has not noticed, so drop it and reconnect.
  _armHeartbeat(gen) {
    if (this.heartbeat === false || this.state !== "connected") return;
    clearTimeout(this._heartbeatTimer);
    this._heartbeatTimer = setTimeout(() => {
      if (gen !== this._gen || this.state !== "connected") return;
      this.request("ping").catch((error) => {
        if (error.code === "timeout" && gen === this._gen) this._drop(gen, 4e3, "no reply to ping");
      });
    }, this.heartbeat);
  }
  // The token for a connection or a refresh; null when getToken() says the user is logged out.
  async _currentToken() {
    if (!this._getToken) return this._token;
    const token = await this._getToken();
    if (token === null) return null;
    if (typeof token !== "string" || token === "") throw new Error("getToken() must return a non-empty string, or null when logged out");
    return this._token = token;
  }
  _encode(frame) {
    return this._codec ? this._codec.encode(frame) : JSON.stringify(frame);
  }
  _send(frame) {
    this._ws.send(this._encode(frame));
  }
  _receive(raw, ws) {
    let message;
    try {
      if (typeof raw === "string") message = JSON.parse(raw);
      else if (this._codec) message = this._codec.decode(new Uint8Array(raw));
      else message = JSON.parse(new TextDecoder().decode(raw));
    } catch {
      return this._emitError("invalid_message", "the server sent a frame that could not be decoded");
    }
    if (message === null || typeof message !== "object" || typeof message.type !== "string") {
      return this._emitError("invalid_message", "the server sent a message without a type");
    }
    const { type, ref } = message;
    const publication = message.id !== void 0 || message.from !== void 0;
    this._lastError = !publication && type === "error" ? message.data ?? {} : null;
    this._lastAt = now();
    if (publication) {
      if (typeof message.stream === "string") this._advance(message);
      this._emit(type, message);
      this._emit("message", message);
      if (typeof message.topic === "string") this._deliver(message);
      if (message.offline === true && this.autoAck && typeof message.id === "string") this.ack([message.id]);
      return;
    }
    const data = message.data ?? {};
    if (type === "auth_required") ws.send(this._encode(this._auth()));
    if ((type === "auth_success" || type === "connection.established") && this.state !== "connected") this._established(data);
    const pending = ref !== void 0 ? this._pending.get(ref) : void 0;
    if (pending?.subs) {
      this._batchReply(ref, pending, message);
    } else if (pending) {
      this._pending.delete(ref);
      clearTimeout(pending.timer);
      if (type === "error") pending.reject(new HeraldError(data.code ?? "error", data.message ?? "", { message }));
      else pending.resolve(message);
    } else if (type === "error") {
      this._emit("error", message);
    }
    if (type === "unsubscribed" && ref === void 0 && typeof data.topic === "string") {
      this._subs.get(data.topic)?._end(data.reason ?? "unsubscribed by the server");
    }
    if (type !== "error") this._emit(type, message);
    this._emit("message", message);
  }
  _deliver(message) {
    const sub = this._subs.get(message.topic);
    if (!sub || sub.state === "unsubscribed") return;
    if (typeof message.offset === "number") {
      sub.offset = message.offset;
      if (typeof message.epoch === "string") sub.epoch = message.epoch;
    }
    const { type } = message;
    sub._emit(type === "user_joined" ? "join" : type === "user_left" ? "leave" : "publication", message);
    sub._emit("message", message);
  }
  // The `auth` command, with the last position of every scope stream known (`resume`), at most
  // RESUME_MAX of them: `all`, the role and the user first (the server then replays what each
  // missed, or says it cannot).
  _auth() {
    const frame = { type: "auth", token: this._connToken };
    const known = [...this._streams].sort(([a], [b]) => a.startsWith("project:") - b.startsWith("project:"));
    const sent = known.slice(0, RESUME_MAX);
    this._resumeSent = new Set(sent.map(([stream]) => stream));
    if (sent.length) frame.resume = Object.fromEntries(sent);
    return frame;
  }
  // A scope delivery moves its stream's position forward (never back); a new epoch replaces it,
  // unless the message is from the offline inbox (older news: it may only move forward).
  _advance({ stream, offset, epoch, offline }) {
    if (typeof offset !== "number" || typeof epoch !== "string") return;
    const at = this._streams.get(stream);
    if (at?.epoch === epoch ? offset > at.offset : !offline) this._streams.set(stream, { offset, epoch });
  }
  // The welcome's `streams` are this connection's scope streams and where they stand; a stream
  // whose missed messages follow (`resumed[stream].recovered`) keeps its position, which they
  // move forward. Returns the `resumed` event's data when positions were known: per stream known,
  // the server's answer, or `recovered: false` when it could not be asked (over RESUME_MAX, a
  // server without scope streams).
  _resume(data) {
    const before = this._streams;
    const answers = data.resumed ?? {};
    this._streams = /* @__PURE__ */ new Map();
    for (const [stream, at] of Object.entries(data.streams ?? {})) {
      if (answers[stream]?.recovered && before.has(stream)) this._streams.set(stream, before.get(stream));
      else if (isPosition(at)) this._streams.set(stream, { offset: at.offset, epoch: at.epoch });
    }
    if (!before.size) return null;
    const streams = {};
    for (const stream of before.keys()) {
      const answer = this._resumeSent?.has(stream) && answers[stream];
      streams[stream] = answer ? { ...answer, recovered: answer.recovered === true } : { recovered: false, ...this._streams.get(stream) };
    }
    return { recovered: Object.values(streams).every((s) => s.recovered), streams };
  }
  _established(data) {
    const gen = this._gen;
    this.session = data;
    clearTimeout(this._heartbeatTimer);
    const resumed = this._resume(data);
    this._setState("connected", data);
    if (gen !== this._gen) return;
    if (resumed) {
      this._emit("resumed", local("resumed", resumed));
      if (gen !== this._gen) return;
    }
    this._armHeartbeat(gen);
    if (this.reconnect) {
      this._stableTimer = setTimeout(() => {
        if (gen === this._gen) this._attempt = 0;
      }, this.reconnect.resetAfter);
    }
    this._scheduleRefresh(data);
    if (this._acks.length) this._flushAcks();
    for (const sub of this._subs.values()) if (sub.state === "subscribing") this._toSub.add(sub);
    this._flushSubs();
    this._drain();
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
    for (const timer of ["_refreshTimer", "_heartbeatTimer", "_stableTimer", "_drainTimer"]) {
      clearTimeout(this[timer]);
      this[timer] = null;
    }
    this._ws = null;
    this.session = null;
    this._toSub.clear();
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject?.(error);
    }
    this._pending.clear();
  }
  // Subscribed topics go back to `subscribing`: they are resubscribed on the next connection.
  _suspend(reason) {
    for (const sub of this._subs.values()) {
      if (sub.state === "subscribed") sub._setState("subscribing", { topic: sub.topic, reason });
    }
  }
  // The client gives up for good: everything still waiting is told why.
  _final(error) {
    this._settleWaiting(error);
    for (const sub of this._subs.values()) sub._settle(error);
    for (const item of this._queue.splice(0)) {
      clearTimeout(item.timer);
      item.reject(error);
    }
  }
  _closed(gen, { code, reason }) {
    if (gen !== this._gen) return;
    const error = this._lastError && now() - this._lastAt < 2e3 ? this._lastError : void 0;
    this._lastError = null;
    reason ||= code === 1006 ? "connection lost" : `closed with code ${code}`;
    const text = `connection closed (${code} ${reason})`;
    this._teardown(new HeraldError("disconnected", text));
    let reconnect = this._wanted && this.reconnect !== false && code !== 1e3;
    if (!this._getToken && (TOKEN_FAILURES.includes(reason) || TOKEN_FAILURES.includes(error?.code))) reconnect = false;
    this._suspend(reason);
    const data = { code, reason, reconnect };
    if (error) data.error = error;
    if (!reconnect) {
      this._wanted = false;
      this._setState("disconnected", data);
      this._final(error ? new HeraldError(error.code, error.message ?? "", { code, reason }) : new HeraldError("disconnected", text, { code, reason }));
      return;
    }
    data.delay = backoff(this._attempt++, this.reconnect);
    this._setState("disconnected", data);
    this._timer = setTimeout(() => {
      if (this._wanted && gen === this._gen) this._open();
    }, data.delay);
  }
  _emitError(code, message) {
    this._emit("error", local("error", { code, message }));
  }
  // ---- token refresh ------------------------------------------------------------------------
  // Timed from the server's `expires_in` (its own clock), never from the client's clock: a
  // client clock that is off neither refreshes in a loop nor lets the token lapse.
  _scheduleRefresh(data) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    let left = data.expires_in;
    if (left === void 0) {
      const expiry = tokenExpiry(this._connToken);
      left = expiry === null ? null : (expiry - Date.now()) / 1e3;
    }
    if (!this._getToken || typeof left !== "number") return;
    left *= 1e3;
    this._expiresAt = now() + left;
    const gen = this._gen;
    const delay = Math.max(this.minRefreshDelay, left - Math.min(this.refreshMargin, left / 2));
    this._refreshTimer = setTimeout(() => {
      if (gen === this._gen && this.state === "connected") this._refresh(gen);
    }, delay);
  }
  async _refresh(gen) {
    try {
      const token = await this._currentToken();
      if (gen !== this._gen) return;
      if (token === null) return this._logout(gen);
      this._connToken = token;
      const reply = await this.request("refresh", { token });
      if (gen === this._gen) this._scheduleRefresh(reply.data ?? {});
    } catch (error) {
      if (gen !== this._gen) return;
      if (isLogout(error)) return this._logout(gen);
      this._emitError(error?.code ?? "refresh_failed", `token refresh failed: ${error?.message ?? error}`);
      const left = this._expiresAt - now();
      if (left > 2e3) this._refreshTimer = setTimeout(() => this._refresh(gen), Math.min(5e3, left / 2));
    }
  }
  // ---- commands -----------------------------------------------------------------------------
  /**
   * Sends any command and resolves with the server's reply (the whole message), matched by
   * `ref`; an `error` reply rejects with a HeraldError carrying its code.
   */
  request(type, fields = {}) {
    if (this.state !== "connected" || !this._ws) {
      return Promise.reject(new HeraldError("disconnected", `cannot send ${type}: not connected`));
    }
    const ref = ++this._ref;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new HeraldError("timeout", `no reply to ${type} within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._pending.set(ref, { resolve, reject, timer });
      this._send({ ...fields, type, ref });
    });
  }
  /**
   * The Subscription object of `topic` (made on first use, the same one after). `options.since`
   * `{offset, epoch}` resumes from a position saved earlier (e.g. across a page reload).
   */
  subscription(topic, options = {}) {
    if (typeof topic !== "string" || topic === "") throw new TypeError("subscription(topic): topic must be a non-empty string");
    const { since } = options;
    if (since !== void 0 && (typeof since?.offset !== "number" || typeof since?.epoch !== "string")) {
      throw new TypeError("options.since must be {offset: number, epoch: string}");
    }
    let sub = this._subs.get(topic);
    if (!sub) this._subs.set(topic, sub = new Subscription(this, topic));
    if (since) {
      sub.offset = since.offset;
      sub.epoch = since.epoch;
    }
    return sub;
  }
  // Queues `sub` for the next batch `subscribe` (sent at once when connected, in a microtask,
  // so that the subscriptions made in one go share one command).
  _want(sub) {
    if (sub.state !== "subscribing") return;
    this._toSub.add(sub);
    if (this.state === "connected" && !this._subQueued) {
      this._subQueued = true;
      queueMicrotask(() => this._flushSubs());
    }
  }
  // One `subscribe` command per 100 topics, each from its last position when it has one: the
  // server counts a batch as one command, so no number of topics trips the rate limit.
  _flushSubs() {
    this._subQueued = false;
    if (this.state !== "connected") return;
    const subs = [...this._toSub].filter((sub) => sub.state === "subscribing");
    this._toSub.clear();
    for (let i = 0; i < subs.length; i += BATCH) {
      const ref = ++this._ref;
      const pending = { subs: /* @__PURE__ */ new Map() };
      const topics = subs.slice(i, i + BATCH).map((sub) => {
        const resumed = sub.offset !== void 0 && sub.epoch !== void 0;
        pending.subs.set(sub.topic, { sub, attempt: ++sub._try, resumed });
        return resumed ? { topic: sub.topic, since: { offset: sub.offset, epoch: sub.epoch } } : sub.topic;
      });
      this._pending.set(ref, pending);
      this._send({ type: "subscribe", topics, ref });
    }
  }
  // A batch is answered per topic (`subscribed` or `error` with `data.topic`); an error without
  // a topic (a refused command) answers all its topics still waiting.
  _batchReply(ref, pending, message) {
    const item = pending.subs.get(message.data?.topic);
    const items = item ? [item] : message.type === "error" ? [...pending.subs.values()] : [];
    for (const one of items) {
      pending.subs.delete(one.sub.topic);
      this._subReply(one, message);
    }
    if (pending.subs.size === 0) this._pending.delete(ref);
  }
  _subReply({ sub, attempt, resumed }, message) {
    if (sub._try !== attempt || sub.state !== "subscribing") return;
    const { topic } = sub;
    const data = message.data ?? {};
    if (message.type === "error") {
      const error = new HeraldError(data.code ?? "error", data.message ?? "", { message });
      if (error.code === "rate_limited") {
        const gen = this._gen;
        setTimeout(() => gen === this._gen && this._want(sub), 1e3);
        return;
      }
      if (sub._confirmed) this._emit("error", local("error", { code: error.code, message: error.message }, { topic }));
      sub._emit("error", error);
      sub._end(error.message, error, error.code);
      return;
    }
    const info = { topic, recovered: false, ...data, resumed };
    if (!info.recovered && typeof info.offset === "number") {
      sub.offset = info.offset;
      sub.epoch = info.epoch;
    }
    const again = sub._confirmed;
    sub._confirmed = true;
    sub._info = info;
    sub._setState("subscribed", info);
    sub._settle(null, info);
    if (typeof sub.onSubscribed === "function") sub.onSubscribed(info);
    if (again) this._emit("resubscribed", local("resubscribed", info, { topic }));
  }
  /**
   * Sugar over `subscription(topic)`: `handler(message)` gets every message delivered through
   * the topic (publications, joins, leaves). Kept across reconnections: the client resubscribes
   * with `since` and emits `resubscribed` with `data.recovered`; `false` means messages may be
   * missing and the app should reload its state. Resolves with
   * `{topic, offset?, epoch?, recovered, resumed}`.
   */
  subscribe(topic, handler, options = {}) {
    let sub;
    try {
      checkHandler(handler);
      sub = this.subscription(topic, options);
    } catch (error) {
      return Promise.reject(error);
    }
    sub._sugar.add(handler);
    sub.on("message", handler);
    if (options.onSubscribed !== void 0) sub.onSubscribed = options.onSubscribed;
    if (sub.state === "subscribed") return Promise.resolve({ topic, offset: sub.offset, epoch: sub.epoch, recovered: false, resumed: false });
    return sub.subscribe().ready();
  }
  /**
   * Stops the subscription (locally at once; on the server when connected). With `handler`,
   * removes only that handler; the subscription ends when no handler is left.
   */
  async unsubscribe(topic, handler) {
    const sub = this._subs.get(topic);
    if (handler !== void 0 && sub) {
      sub._sugar.delete(handler);
      sub.off("message", handler);
      const listening = ["message", "publication", "join", "leave"].some((type) => sub._handlers.get(type)?.size);
      if (listening) return { topic };
    }
    if (sub) return sub.unsubscribe();
    return this.state === "connected" ? (await this.request("unsubscribe", { topic })).data : { topic };
  }
  /**
   * The connection's scope streams (`all`, `role:<name>`, `user:<id>`, `project:<id>`) and the
   * last position seen on each: `{stream: {offset, epoch}}`. Kept across reconnections (each
   * reconnection resumes them); save it and pass it as `options.resume` to resume in a new
   * client (e.g. across a page reload).
   */
  streams() {
    return Object.fromEntries([...this._streams].map(([stream, { offset, epoch }]) => [stream, { offset, epoch }]));
  }
  /** The topics this client keeps subscribed (or is subscribing to), with the last position seen on each. */
  subscriptions() {
    return [...this._subs.values()].filter((sub) => sub.state !== "unsubscribed").map(({ topic, offset, epoch }) => ({ topic, offset, epoch }));
  }
  /**
   * Publishes `event` with `data` to `topic` (the namespace must allow client publish). Resolves
   * with `{topic, id, offset?}`. While not connected: rejects at once (`disconnected`), or with
   * the `offlineQueue` option waits in the queue (rejects with `queue_full` beyond its `max`,
   * `timeout` after its `timeout`) and is sent on reconnection.
   */
  async publish(topic, event, data = {}) {
    if (typeof topic !== "string" || topic === "") throw new TypeError("publish(topic, event, data): topic must be a non-empty string");
    if (typeof event !== "string" || event === "") throw new TypeError("publish(topic, event, data): event must be a non-empty string");
    const fields = { topic, event, data };
    const queue = this.offlineQueue;
    if (this.state === "connected" && !this._queue.length) return (await this.request("publish", fields)).data;
    if (!queue || !this._wanted) throw new HeraldError("disconnected", `cannot publish: not connected${queue ? "" : " (the offlineQueue option queues publishes)"}`);
    if (this._queue.length >= queue.max) throw new HeraldError("queue_full", `the offline queue holds ${queue.max} publishes already`);
    return new Promise((resolve, reject) => {
      this._enqueue({ fields, resolve, reject, deadline: now() + queue.timeout });
      this._drain();
    });
  }
  _enqueue(item, front) {
    item.timer = setTimeout(() => {
      this._queue = this._queue.filter((queued) => queued !== item);
      item.reject(new HeraldError("timeout", `publish to ${item.fields.topic} not sent within ${this.offlineQueue.timeout} ms`));
    }, item.deadline - now());
    if (front) this._queue.unshift(item);
    else this._queue.push(item);
  }
  // Sends the offline queue in order, at most 10 a second so that a long queue does not run
  // into the server's rate limit (default 10/s, burst 20); one refused all the same goes back
  // to the head of the queue while its time lasts.
  _drain() {
    if (this.state !== "connected" || this._drainTimer || !this._queue.length) return;
    for (const item of this._queue.splice(0, 10)) {
      clearTimeout(item.timer);
      this.request("publish", item.fields).then(
        (reply) => item.resolve(reply.data),
        (error) => {
          if (error.code !== "rate_limited" || item.deadline <= now()) return item.reject(error);
          this._enqueue(item, true);
          this._drain();
        }
      );
    }
    this._drainTimer = setTimeout(() => {
      this._drainTimer = null;
      this._drain();
    }, 1e3);
  }
  /** Who is on `topic`: `{topic, users: [{user_id, connections, joined_at}]}`. */
  async presence(topic) {
    return (await this.request("presence", { topic })).data;
  }
  /** A page of `topic`'s history: `{topic, epoch, offset, messages}`. */
  async history(topic, { since, limit } = {}) {
    const fields = { topic };
    if (since !== void 0) fields.since = since;
    if (limit !== void 0) fields.limit = limit;
    return (await this.request("history", fields)).data;
  }
  /**
   * Acknowledges offline (inbox) messages by id so they are not delivered again. Sent at once
   * when connected, else on the next connection. (With `autoAck: true` the client acks each
   * offline message after its handlers ran.)
   */
  ack(ids) {
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== "string")) throw new TypeError("ack(ids): ids must be an array of message id strings");
    this._acks.push(...ids);
    if (this.state === "connected" && !this._ackQueued) {
      this._ackQueued = true;
      queueMicrotask(() => this._flushAcks());
    }
  }
  _flushAcks() {
    this._ackQueued = false;
    if (this.state !== "connected" || !this._ws || this._acks.length === 0) return;
    this._send({ type: "ack", ids: this._acks.splice(0) });
  }
  /** Round trip to the server: resolves with the `pong` data. */
  async ping() {
    return (await this.request("ping")).data;
  }
  /** This connection as the server sees it (`status` reply data). */
  async status() {
    return (await this.request("status")).data;
  }
}
class HeraldApi {
  constructor({ url, key, fetch: fetchImpl } = {}) {
    if (typeof url !== "string") throw new TypeError('HeraldApi: url (e.g. "http://127.0.0.1:8080") is required');
    if (typeof key !== "string" || key === "") throw new TypeError("HeraldApi: key (an API key or an admin JWT) is required");
    this.url = url.replace(/\/+$/, "");
    this.key = key;
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (typeof this.fetch !== "function") throw new TypeError("HeraldApi: no fetch implementation");
  }
  /** Any API call; resolves with the JSON answer, rejects with a HeraldError (`status`, `code`). */
  async call(method, path, body) {
    const init = { method, headers: { authorization: `Bearer ${this.key}` } };
    if (body !== void 0) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(this.url + path, init);
    } catch (error) {
      throw new HeraldError("network_error", `${method} ${path}: ${error?.message ?? error}`);
    }
    const text = await response.text();
    let value;
    try {
      value = text === "" ? null : JSON.parse(text);
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
    return this.call("POST", "/api/v1/publish", message);
  }
  publishBatch(messages) {
    return this.call("POST", "/api/v1/publish/batch", { messages });
  }
  stats() {
    return this.call("GET", "/api/v1/stats");
  }
  connections(filters = {}) {
    return this.call("GET", `/api/v1/connections${query(filters)}`);
  }
  presence(topic) {
    return this.call("GET", `/api/v1/topics/${encodeURIComponent(topic)}/presence`);
  }
  history(topic, filters = {}) {
    return this.call("GET", `/api/v1/topics/${encodeURIComponent(topic)}/history${query(filters)}`);
  }
  disconnectUser(id) {
    return this.call("POST", `/api/v1/users/${encodeURIComponent(id)}/disconnect`);
  }
}
function query(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) if (value !== void 0) params.set(key, String(value));
  const text = params.toString();
  return text ? `?${text}` : "";
}
