// Compiled by test/package.test.js with `tsc --noEmit -p test/types`: the typings must accept
// what an app writes and refuse typos. Each `@ts-expect-error` line must be an error (tsc fails
// on an unused one), so this file fails to compile if the typings stop catching it.
import { Herald, HeraldError, type Subscription, type HeraldMessage } from '@herald-rt/client';

interface AppEvents {
  'task.created': { id: string; title: string };
}

const herald = new Herald<AppEvents>({ url: 'ws://127.0.0.1:8080/ws', getToken: async () => null });

// Client events: known names, typed data.
herald.on('connected', (m) => {
  const user: string = m.data.user_id;
  const left: number | null | undefined = m.data.expires_in;
  void user, left;
});
herald.once('disconnected', (m) => {
  const code: number = m.data.code;
  const why: string = m.data.reason;
  const again: boolean = m.data.reconnect;
  const error: string | undefined = m.data.error?.code;
  void code, why, again, error;
});
herald.on('task.created', (m) => {
  const title: string = m.data.title;
  void title;
  // @ts-expect-error: no such field in the declared payload
  void m.data.titel;
});
// @ts-expect-error: a misspelled client event name
herald.on('conected', () => {});
// @ts-expect-error: a misspelled app event name
herald.on('task.craeted', () => {});
// @ts-expect-error: once takes the same names
herald.once('disconected', () => {});

// Scope streams: positions, saved and given back, and how each resumed.
const saved: Record<string, { offset: number; epoch: string }> = herald.streams();
new Herald({ token: 't', resume: saved });
// @ts-expect-error: a position needs its epoch
new Herald({ token: 't', resume: { all: { offset: 3 } } });
herald.on('resumed', (m) => {
  const all: boolean = m.data.recovered;
  for (const [stream, how] of Object.entries(m.data.streams)) {
    const recovered: boolean = how.recovered;
    const offset: number | undefined = how.offset;
    void stream, recovered, offset;
  }
  void all;
});
// @ts-expect-error: a misspelled client event name
herald.on('resume', () => {});
herald.on('message', (m) => void (m.stream === 'all' && m.offset));

// Subscriptions: typed publications.
interface Chat {
  text: string;
}
const room: Subscription<Chat> = herald.subscription<Chat>('chat:lobby');
room.on('publication', (m: HeraldMessage<Chat>) => {
  const text: string = m.data.text;
  // @ts-expect-error: text is a string
  const wrong: number = m.data.text;
  void text, wrong;
});
room.once('subscribed', (info) => {
  const recovered: boolean = info.recovered;
  void recovered;
});
room.on('join', (m) => void m.data.user_id);
room.on('error', (error: HeraldError) => void error.code);
// @ts-expect-error: a misspelled subscription event
room.on('publikation', () => {});
const state: 'unsubscribed' | 'subscribing' | 'subscribed' = room.subscribe().state;
void state;
void room.ready(5000).then((info) => info.offset);
void room.publish('said', { text: 'hi' });
// @ts-expect-error: the payload type is Chat
void room.publish('said', { txt: 'hi' });

// The sugar keeps working.
void herald.subscribe('chat:lobby', (m) => void m.data, { onSubscribed: (info) => void info.resumed });
void herald.unsubscribe('chat:lobby');

// Any event name, for an app that does not declare its events.
const loose = new Herald<Record<string, any>>({ token: 't', offlineQueue: { max: 10, timeout: 5000 } });
loose.on('anything.goes', (m) => void m.data);

// msgpack needs a codec of the right shape.
new Herald({ token: 't', encoding: 'msgpack', msgpack: { encode: (v: unknown) => new Uint8Array(), decode: (b: Uint8Array) => b } });
// @ts-expect-error: no such encoding
new Herald({ token: 't', encoding: 'cbor' });
