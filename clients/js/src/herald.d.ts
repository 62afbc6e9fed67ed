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
  /** Position in the topic's stream (topics with history). */
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
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

/** `{client_id, user_id, role}` of an authenticated connection. */
export interface Session {
  client_id: string;
  user_id: string;
  role: string;
}

export interface DisconnectedData {
  /** WebSocket close code (1006: the connection was lost without a close frame). */
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** Milliseconds until the next attempt, when `reconnect`. */
  delay?: number;
  /** The server's last error before closing (`auth_failed`, `token_expired`, ...). */
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
}

export interface HeraldOptions {
  /** `ws://host:port/ws`, or an http(s) base URL (`/ws` is added). Default in a browser: this page's origin. */
  url?: string;
  /** A JWT. Without `getToken`, a refused or expired token ends the connection for good. */
  token?: string;
  /** Called for a token at every (re)connection and before the current one expires. */
  getToken?: () => string | Promise<string>;
  /** A WebSocket constructor: the global one by default; on Node 20, `import WebSocket from 'ws'`. */
  WebSocket?: new (url: string) => any;
  /** Backoff between reconnection attempts, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Refresh this many ms before `exp` (at most half the token's remaining life). Default 30000. */
  refreshMargin?: number;
  /** How long a command waits for its reply, ms (default 10000). */
  requestTimeout?: number;
  /** How long a new connection may take to be authenticated before it is dropped and retried, ms (default 10000). */
  connectTimeout?: number;
  /** After this many ms without a message, send a ping; no reply within requestTimeout drops and reconnects. Default 25000; false: off. */
  heartbeat?: number | false;
  /** Ack each offline message after its handlers ran (default false: call `ack()`). */
  autoAck?: boolean;
}

export interface SubscribeOptions {
  /** Resume from a position saved earlier (e.g. across a page reload). */
  since?: { offset: number; epoch: string };
  /** Called on every (re)subscription. */
  onSubscribed?: (info: SubscribedInfo) => void;
}

export interface PresenceData {
  topic: string;
  users: { user_id: string; connections: number; joined_at: string }[];
}

export interface HistoryData {
  topic: string;
  epoch: string;
  offset: number;
  messages: HeraldMessage[];
}

export class HeraldError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  /** A protocol error code (`forbidden`, `auth_failed`, ...) or a client one (`disconnected`, `timeout`). */
  code: string;
  /** HTTP status, for HeraldApi errors. */
  status?: number;
  details: Record<string, unknown>;
}

type Handler<D = any> = (message: HeraldMessage<D>) => void;

export class Herald {
  constructor(options: HeraldOptions);
  readonly url: string;
  state: ConnectionState;
  session: Session | null;

  on(type: 'connecting', handler: Handler<{ attempt: number }>): () => void;
  on(type: 'connected', handler: Handler<Session>): () => void;
  on(type: 'disconnected', handler: Handler<DisconnectedData>): () => void;
  on(type: 'resubscribed', handler: Handler<SubscribedInfo>): () => void;
  on(type: 'error', handler: Handler<ErrorData>): () => void;
  /** `'message'`: every server message; any other string: server messages of that type. */
  on(type: string, handler: Handler): () => void;
  off(type: string, handler: Handler): void;

  connect(): Promise<Session>;
  disconnect(): void;

  subscribe(topic: string, handler: Handler, options?: SubscribeOptions): Promise<SubscribedInfo>;
  /** Without `handler`, ends the subscription; with it, removes that handler only (the
   * subscription ends when no handler is left). */
  unsubscribe(topic: string, handler?: Handler): Promise<{ topic: string }>;
  subscriptions(): { topic: string; offset?: number; epoch?: string }[];
  publish(topic: string, event: string, data?: unknown): Promise<{ topic: string; id: string; offset?: number }>;
  presence(topic: string): Promise<PresenceData>;
  history(topic: string, options?: { since?: { offset: number; epoch?: string }; limit?: number }): Promise<HistoryData>;
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
export function backoff(attempt: number, options: Required<ReconnectOptions>, random?: () => number): number;
export const STATE_EVENTS: ConnectionState[];
