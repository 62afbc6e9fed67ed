// Types for herald.js (hand-written; the module itself is plain JavaScript).

/** Every message the server sends, and every event the client emits itself (`local: true`). */
export interface HeraldMessage<D = any> {
  /** Event or reply name: `task.created`, `subscribed`, `error`, `user_joined`, ... */
  type: string;
  data: D;
  /** RFC 3339 UTC with milliseconds: when the server accepted it (or the client made it). */
  timestamp: string;
  /** Publication id, the same on every copy of one publication. */
  id?: string;
  /** The topic a delivery came through. */
  topic?: string;
  /** The scope stream a delivery through `all`, a role, a project or a user belongs to: `all`, `role:<name>`, `project:<id>`, `user:<id>`. */
  stream?: string;
  /** Position in the topic's stream (topics with history) or in the scope stream `stream`. */
  offset?: number;
  epoch?: string;
  /** Copied from the command this replies to. */
  ref?: string | number;
  /** Delivered from the offline inbox: `ack([id])` it once processed. */
  offline?: true;
  /** Who published it, for client publications. */
  from?: { user_id: string; client_id: string };
  /** Made by the client (state events, `resubscribed`, client-side errors), not sent by the server. */
  local?: true;
  [field: string]: unknown;
}

export interface ErrorData {
  code: string;
  message: string;
  /** The topic of a refused `subscribe`. */
  topic?: string;
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

/** A position in a stream: the last offset seen, in its epoch. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** How one resumed scope stream went. */
export interface StreamResumed {
  /**
   * True when every message missed on the stream follows (replayed before anything live).
   * False means messages may be missing (the window passed, the stream was trimmed, the server
   * restarted, the connection no longer receives it): reload what depends on it.
   */
  recovered: boolean;
  /** Where the stream stands now (absent for a stream this connection does not receive). */
  offset?: number;
  epoch?: string;
}

/** The `resumed` event's data: per scope stream the client knew, how it resumed. */
export interface ResumedData {
  /** True when every stream is `recovered`. */
  recovered: boolean;
  streams: Record<string, StreamResumed>;
}

/** The welcome's (and `refreshed`'s) data. */
export interface Session {
  client_id: string;
  user_id: string;
  role: string;
  /** The token's `exp` (Unix seconds), or null for a token without one. */
  expires_at?: number | null;
  /** Seconds left until `exp` by the server's clock, or null. */
  expires_in?: number | null;
  /** The connection's scope streams and where each stands (absent when the server keeps none). */
  streams?: Record<string, StreamPosition>;
  /** After a resume, the server's answer per stream named. */
  resumed?: Record<string, StreamResumed>;
}

export interface DisconnectedData {
  /** WebSocket close code (1006: the connection was lost without a close frame; 4000: dropped by the client). */
  code: number;
  /** Never empty: the server's reason, or the client's (`connection lost`, `logged out`, `client disconnect`, ...). */
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** Milliseconds until the next attempt, when `reconnect`. */
  delay?: number;
  /** The error frame that came just before the close (`too many errors` after `unknown_type`, `token_expired`, ...), or the client's `logged_out`. */
  error?: ErrorData;
}

export interface SubscribedInfo {
  topic: string;
  /** Newest offset when subscribed (topics with history). */
  offset?: number;
  epoch?: string;
  /**
   * True when every message after `since` was replayed. False after a resumption (`resumed`)
   * means messages may be missing: reload the app's state.
   */
  recovered: boolean;
  /** Whether the subscription asked for the past (`since`). */
  resumed: boolean;
}

export interface ReconnectOptions {
  /** First delay, ms (default 500). */
  minDelay?: number;
  /** Largest delay, ms (default 30000). */
  maxDelay?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Fraction of the delay taken off at random, 0..1 (default 0.5). */
  jitter?: number;
  /** The attempt count starts over once a connection has stayed up this long, ms (default 5000). */
  resetAfter?: number;
}

export interface OfflineQueueOptions {
  /** Publishes held at most; one more is rejected with `queue_full` (default 100). */
  max?: number;
  /** How long a publish may wait for the connection, ms; then rejected with `timeout` (default 10000). */
  timeout?: number;
}

/** A MessagePack codec, e.g. `import { encode, decode } from '@msgpack/msgpack'`. */
export interface MessagePackCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

export interface HeraldOptions {
  /** `ws://host:port/ws`, or an http(s) base URL (`/ws` is added). Default in a browser: this page's origin. */
  url?: string;
  /** A JWT. Without `getToken`, a refused or expired token ends the connection for good. */
  token?: string;
  /**
   * Called for a token at every (re)connection and before the current one expires. Return (or
   * resolve with) `null`, or throw a `HeraldError` with code `logged_out`, when the user is
   * logged out: the client then disconnects for good. Any other throw is retried with backoff.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** A WebSocket constructor: the global one by default; on Node 20, `import WebSocket from 'ws'`. */
  WebSocket?: new (url: string) => any;
  /** Backoff between reconnection attempts, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Refresh this many ms before the token expires by the server's clock (at most half its remaining life). Default 30000. */
  refreshMargin?: number;
  /** The shortest wait before a refresh, ms (default 1000): never a refresh loop. */
  minRefreshDelay?: number;
  /** How long a command waits for its reply, ms (default 10000). */
  requestTimeout?: number;
  /** How long a new connection may take to be authenticated before it is dropped and retried, ms (default 10000). */
  connectTimeout?: number;
  /** After this many ms without a message, send a ping; no reply within requestTimeout drops and reconnects. Default 25000; false: off. */
  heartbeat?: number | false;
  /** Ack each offline message after its handlers ran (default false: call `ack()`). */
  autoAck?: boolean;
  /** Queue publishes made while not connected and send them on reconnection (default: off, such a publish rejects at once with `disconnected`). `true`: `{max: 100, timeout: 10000}`. */
  offlineQueue?: OfflineQueueOptions | boolean;
  /** `json` (default) or `msgpack` (binary frames; needs `msgpack`). */
  encoding?: 'json' | 'msgpack';
  /** The MessagePack codec for `encoding: 'msgpack'`. */
  msgpack?: MessagePackCodec;
  /** Scope stream positions saved earlier (`streams()`, e.g. across a page reload): the first connection resumes them. */
  resume?: Record<string, StreamPosition>;
}

export interface SubscribeOptions {
  /** Resume from a position saved earlier (e.g. across a page reload). */
  since?: { offset: number; epoch: string };
}

export interface SugarSubscribeOptions extends SubscribeOptions {
  /** Called on every (re)subscription. */
  onSubscribed?: (info: SubscribedInfo) => void;
}

export interface PresenceData {
  topic: string;
  users: { user_id: string; connections: number; joined_at: string }[];
}

export interface HistoryData<P = any> {
  topic: string;
  epoch: string;
  offset: number;
  messages: HeraldMessage<P>[];
}

export interface PublishResult {
  topic: string;
  id: string;
  /** On a topic with history. */
  offset?: number;
}

export class HeraldError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  /**
   * A protocol error code (`forbidden`, `auth_failed`, `rate_limited`, ...) or a client one
   * (`disconnected`, `timeout`, `queue_full`, `unsubscribed`, `logged_out`).
   */
  code: string;
  /** HTTP status, for HeraldApi errors. */
  status?: number;
  details: Record<string, unknown>;
}

/** The client's own events and the server messages it knows, by name: their `data`. */
export interface ClientEvents {
  connecting: { attempt: number };
  connected: Session;
  disconnected: DisconnectedData;
  resubscribed: SubscribedInfo;
  /** After a connection that resumed the scope streams: whether each was recovered. */
  resumed: ResumedData;
  error: ErrorData;
  /** Every server message. */
  message: any;
  refreshed: Session;
  subscribed: { topic: string; offset?: number; epoch?: string; recovered?: boolean };
  unsubscribed: { topic: string; reason?: string };
  published: PublishResult;
  user_joined: { user_id: string };
  user_left: { user_id: string };
  'system.alert': { message: string; priority: string; metadata?: unknown };
  'connection.established': Session;
  auth_success: Session;
  auth_required: Record<string, never>;
  pong: { timestamp: string; data?: unknown };
  presence: PresenceData;
  history: HistoryData;
  status: Record<string, unknown>;
  echo: { original: unknown };
}

/**
 * An app's own event names and their payloads, e.g. `{'task.created': {id: string}}`:
 * `new Herald<MyEvents>(...)`. Event names outside `ClientEvents` and this map do not compile;
 * `Herald<Record<string, any>>` accepts any name.
 */
export type EventMap = object;

type EventName<E> = (keyof ClientEvents | keyof E) & string;
type EventData<E, K> = K extends keyof E ? E[K] : K extends keyof ClientEvents ? ClientEvents[K] : never;
type Handler<D = any> = (message: HeraldMessage<D>) => void;

/** A Subscription's events and what its listeners get. `P`: the publications' `data`. */
export interface SubscriptionEvents<P = any> {
  publication: HeraldMessage<P>;
  join: HeraldMessage<{ user_id: string }>;
  leave: HeraldMessage<{ user_id: string }>;
  /** Every delivery: publications, joins and leaves. */
  message: HeraldMessage;
  subscribing: { topic: string; reason: string };
  subscribed: SubscribedInfo;
  unsubscribed: { topic: string; reason: string; code?: string };
  error: HeraldError;
}

export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

export class Subscription<P = any> {
  readonly client: Herald<any>;
  readonly topic: string;
  readonly state: SubscriptionState;
  /** The last position seen (topics with history). */
  readonly offset?: number;
  readonly epoch?: string;
  on<K extends keyof SubscriptionEvents<P>>(event: K, listener: (event: SubscriptionEvents<P>[K]) => void): () => void;
  once<K extends keyof SubscriptionEvents<P>>(event: K, listener: (event: SubscriptionEvents<P>[K]) => void): () => void;
  off<K extends keyof SubscriptionEvents<P>>(event: K, listener: (event: SubscriptionEvents<P>[K]) => void): void;
  /** Asks for the subscription (now, or once connected). */
  subscribe(): this;
  /** Ends it; resolves with the server's `{topic}` (at once when offline). */
  unsubscribe(): Promise<{ topic: string }>;
  /** Resolves once subscribed; rejects on timeout, refusal, `unsubscribe()` or a disconnection for good. */
  ready(timeoutMs?: number): Promise<SubscribedInfo>;
  publish(event: string, data?: P): Promise<PublishResult>;
  presence(): Promise<PresenceData>;
  history(options?: { since?: { offset: number; epoch?: string }; limit?: number }): Promise<HistoryData<P>>;
}

export class Herald<E extends EventMap = {}> {
  constructor(options: HeraldOptions);
  readonly url: string;
  readonly encoding: 'json' | 'msgpack';
  state: ConnectionState;
  session: Session | null;

  /** A client event or server message type (`'message'`: every server message). Returns a function that removes the handler. */
  on<K extends EventName<E>>(type: K, handler: Handler<EventData<E, K>>): () => void;
  once<K extends EventName<E>>(type: K, handler: Handler<EventData<E, K>>): () => void;
  off<K extends EventName<E>>(type: K, handler: Handler<EventData<E, K>>): void;

  connect(): Promise<Session>;
  disconnect(): void;

  /** The Subscription object of `topic` (made on first use, the same one after). */
  subscription<P = any>(topic: string, options?: SubscribeOptions): Subscription<P>;
  /** Sugar: `handler` gets every message delivered through `topic`. */
  subscribe<P = any>(topic: string, handler: Handler<P>, options?: SugarSubscribeOptions): Promise<SubscribedInfo>;
  /** Without `handler`, ends the subscription; with it, removes that handler only (the
   * subscription ends when no handler is left). */
  unsubscribe(topic: string, handler?: Handler): Promise<{ topic: string }>;
  subscriptions(): { topic: string; offset?: number; epoch?: string }[];
  /** The connection's scope streams and the last position seen on each; kept across reconnections. */
  streams(): Record<string, StreamPosition>;
  publish<D = unknown>(topic: string, event: string, data?: D): Promise<PublishResult>;
  presence(topic: string): Promise<PresenceData>;
  history<P = any>(topic: string, options?: { since?: { offset: number; epoch?: string }; limit?: number }): Promise<HistoryData<P>>;
  ack(ids: string[]): void;
  ping(): Promise<{ timestamp: string; data?: unknown }>;
  status(): Promise<Record<string, unknown>>;
  /** Any command; resolves with the whole reply message. */
  request(type: string, fields?: Record<string, unknown>): Promise<HeraldMessage>;
}

export type Scope = 'all' | 'user' | 'role' | 'project' | 'topic';

export interface PublishRequest {
  scope: Scope;
  /** Required for every scope but `all`. */
  target?: string | number;
  type: string;
  data?: unknown;
}

export interface Stats {
  total_clients: number;
  by_role: Record<string, number>;
  users: number;
  topics: number;
  messages_sent: number;
  messages_received: number;
  slow_consumers_dropped: number;
  uptime_s: number;
}

export class HeraldApi {
  constructor(options: { url: string; key: string; fetch?: typeof fetch });
  call<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  publish(message: PublishRequest): Promise<{ id: string; recipients: number; offset?: number; queued?: boolean }>;
  publishBatch(messages: PublishRequest[]): Promise<{ results: unknown[] }>;
  stats(): Promise<Stats>;
  connections(filters?: { user?: string; project?: string }): Promise<Record<string, unknown>[]>;
  presence(topic: string): Promise<PresenceData>;
  history(topic: string, filters?: { since?: number; limit?: number; epoch?: string }): Promise<HistoryData>;
  disconnectUser(id: string): Promise<{ disconnected: number }>;
}

export function tokenExpiry(token: string): number | null;
export function websocketUrl(url?: string): string;
export function backoff(attempt: number, options: Omit<Required<ReconnectOptions>, 'resetAfter'>, random?: () => number): number;
export const STATE_EVENTS: ConnectionState[];
