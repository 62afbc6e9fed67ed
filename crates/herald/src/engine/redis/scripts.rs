//! The Lua scripts of the Redis engine. Each runs atomically in Redis, which is what makes an
//! offset and its publication one step, and a user's "online or inbox" decision race-free
//! against a connection of that user reading its inbox on another node.
//!
//! Every script's keys share one hash tag (the `keys` module), so on a Redis Cluster each runs
//! on the shard of its slot. Work that spans two tags (a node's bookkeeping and a topic's, say)
//! is two calls, ordered so that a node dying between them leaves nothing the reaper cannot
//! undo; publishing goes to a channel of the script's own slot (`SPUBLISH` on a cluster).

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers: Redis time in ms, a field of a stream entry, expired-head trimming.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function entry_offset(id)
  return tonumber(string.match(id, '^(%d+)'))
end
-- Drops a stream's head entries stored before cutoff (entries are in time order).
local function trim_expired(key, cutoff)
  while true do
    local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 64)
    if #head == 0 then return end
    for _, e in ipairs(head) do
      if tonumber(field(e[2], 'ms')) >= cutoff then
        redis.call('XTRIM', key, 'MINID', e[1])
        return
      end
    end
    local last = head[#head][1]
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    redis.call('XTRIM', key, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
  end
end
local function epoch_of(meta, candidate, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('PEXPIRE', meta, meta_ttl)
  end
  return epoch
end
local function inbox_store(key, max, ttl, id, body)
  redis.call('XADD', key, 'MAXLEN', max, '*', 'ms', now_ms(), 'id', id, 'b', body)
  redis.call('PEXPIRE', key, ttl)
end
local function inbox_pending(key, ttl)
  trim_expired(key, now_ms() - tonumber(ttl))
  local out = {}
  for _, e in ipairs(redis.call('XRANGE', key, '-', '+')) do
    out[#out + 1] = field(e[2], 'b')
  end
  return out
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Appends to a topic's stream and publishes it. KEYS: meta, stream. ARGV: epoch candidate,
/// size, ttl ms, body, channel (empty: do not publish), meta ttl ms, publish command,
/// publication id. Returns {offset, epoch}. The same publication sent again right after
/// (a client library's retry of a call whose answer a dropped connection lost) is answered
/// with its first position, not appended twice.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local epoch = epoch_of(KEYS[1], ARGV[1], ARGV[6])
if redis.call('HGET', KEYS[1], 'last') == ARGV[8] then
  return {tonumber(redis.call('HGET', KEYS[1], 'offset')), epoch}
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'ms', now_ms(), 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[5] ~= '' then
  redis.call(ARGV[7], ARGV[5], 'P' .. offset .. '\n' .. epoch .. '\n' .. ARGV[4])
end
return {offset, epoch}
"#,
    )
});

/// Reads a stream. KEYS: meta, stream. ARGV: epoch candidate, exclusive start id, limit,
/// ttl ms, meta ttl ms. Returns {epoch, top, first kept, offset1, body1, offset2, ...}.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local epoch = epoch_of(KEYS[1], ARGV[1], ARGV[5])
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
trim_expired(KEYS[2], now_ms() - tonumber(ARGV[4]))
local first = top + 1
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #oldest > 0 then first = entry_offset(oldest[1][1]) end
local out = {epoch, top, first}
for _, e in ipairs(redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])) do
  out[#out + 1] = entry_offset(e[1])
  out[#out + 1] = field(e[2], 'b')
end
return out
"#,
    )
});

/// Claims an idempotency key. KEYS: the key's string. ARGV: in-flight hold ms. Returns 1 when this
/// call claimed it, else what it holds: empty while its publish is in flight, else the answer.
pub static IDEMPOTENCY_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('SET', KEYS[1], '', 'NX', 'PX', ARGV[1]) then return 1 end
return redis.call('GET', KEYS[1])
"#,
    )
});

/// Keeps a message in an inbox, unless one of its newest entries is already that message.
/// KEYS: inbox. ARGV: max, ttl ms, id, body. Returns 1 when kept, 0 when already there.
/// The check makes a store sent again right after (a client library's retry of a call whose
/// answer a dropped connection lost) and the same undelivered message kept by two nodes of
/// the user count once; other stores to the inbox may come in between, hence the window.
pub static INBOX_STORE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 64)) do
  if field(e[2], 'id') == ARGV[3] then return 0 end
end
inbox_store(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"#,
    )
});

/// An inbox's messages, oldest first. KEYS: inbox. ARGV: ttl ms. Returns bodies.
pub static INBOX_PENDING: LazyLock<Script> =
    LazyLock::new(|| script("return inbox_pending(KEYS[1], ARGV[1])"));

/// Removes messages by publication id. KEYS: inbox. ARGV: ids. Returns how many.
pub static INBOX_ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local wanted = {}
for _, id in ipairs(ARGV) do wanted[id] = true end
local removed = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  if wanted[field(e[2], 'id')] then
    removed = removed + redis.call('XDEL', KEYS[1], e[1])
  end
end
return removed
"#,
    )
});

/// A user-scope publication: to every node holding the user (they subscribe to the user's
/// channel while they do), or to the inbox when no node took it. KEYS: online, inbox, last
/// sent[, the user stream's meta, stream]. ARGV: max, ttl ms, id, body, the user's channel,
/// publish command[, epoch candidate, stream size, stream ttl ms, meta ttl ms]. With the
/// stream keys, one sent to an online user is appended to the user's stream first (and
/// published with its position). Returns the nodes that received it (0: kept in the inbox).
/// The same publication sent again right after (a client library's retry of a call whose
/// answer a dropped connection lost) gets the first answer and is not sent twice.
pub static USER_SEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local last = redis.call('HMGET', KEYS[3], 'id', 'reached')
if last[1] == ARGV[3] then return tonumber(last[2]) end
local online = redis.call('HLEN', KEYS[1]) > 0
local prefix = 'P\n\n'
if online and #KEYS == 5 then
  local epoch = epoch_of(KEYS[4], ARGV[7], ARGV[10])
  local offset = redis.call('HINCRBY', KEYS[4], 'offset', 1)
  redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[8], offset .. '-0', 'ms', now_ms(), 'b', ARGV[4])
  redis.call('PEXPIRE', KEYS[5], ARGV[9])
  redis.call('PEXPIRE', KEYS[4], ARGV[10])
  prefix = 'P' .. offset .. '\n' .. epoch .. '\n'
end
local reached = 0
if online then reached = redis.call(ARGV[6], ARGV[5], prefix .. ARGV[4]) end
if reached == 0 then inbox_store(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) end
redis.call('HSET', KEYS[3], 'id', ARGV[3], 'reached', reached)
redis.call('PEXPIRE', KEYS[3], 60000)
return reached
"#,
    )
});

/// A user came online on a node (the node counts its connections itself). KEYS: online,
/// inbox. ARGV: node, inbox ttl ms. Returns "1" when the user was online on no node before
/// (else "0"), then the inbox's bodies.
pub static ATTACH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local first = redis.call('HLEN', KEYS[1]) == 0
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local out = inbox_pending(KEYS[2], ARGV[2])
table.insert(out, 1, first and '1' or '0')
return out
"#,
    )
});

/// Adds `delta` to one field of a hash, removing the field when it reaches 0 or less. KEYS: the
/// hash. ARGV: field, delta. Returns 1 when the hash is empty afterwards.
pub static COUNT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
"#,
    )
});

/// Removes a node from a user's online mark (the node died). KEYS: online. ARGV: node. Returns
/// 1 when the user is now online on no node.
pub static FORGET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
"#,
    )
});

/// A connection joins a topic's presence (its node records the entry first, to reap it).
/// KEYS: counts, joined, connections. ARGV: user, client. Returns 1 when it is the user's first
/// connection there.
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('SADD', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], now_ms())
  return 1
end
return 0
"#,
    )
});

/// A connection leaves a topic's presence (then its node forgets the entry), or a dead node's
/// connection is reaped. KEYS and ARGV as [`JOIN`]. Returns 1 when it was the user's last
/// connection there.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    )
});

/// A topic's subscribers on every node change by `delta` (a node gained its first subscriber,
/// lost its last, or died), for `topic.occupied` / `topic.vacated` across the cluster. KEYS:
/// the topic's count. ARGV: delta. Returns how many nodes now have subscribers. At 0 or less
/// the count goes: a node that died between its own count and this one is then reaped
/// without leaving the topic occupied forever.
pub static SUBSCRIBERS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total <= 0 then redis.call('DEL', KEYS[1]) end
return total
"#,
    )
});
