//! The Redis engines, for many nodes behind one Redis: every trait of [`crate::engine`] on one
//! shared connection. [`RedisStore`] holds the state (membership sets, topic streams, inbox
//! streams, presence hashes); [`RedisBroker`] carries publications between nodes over
//! Pub/Sub, routed by interest. docs/CLUSTER.md lists every key.
//!
//! Every call is bounded by the configured timeout: with Redis unreachable a caller gets an
//! [`EngineError`] (HTTP 503) in bounded time, never a hang.

mod broker;
pub mod codec;
mod conn;
mod layout;
mod nodes;
mod replication;
mod scripts;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Value};

pub use broker::{Recheck, RedisBroker};
pub use conn::Deployment;
use conn::{Client, Conn};

use super::outbox::{Outbox, OutboxEvent};
use super::{
    Claim, EngineError, History, HistoryPage, Idempotency, Inbox, InboxLimits, Membership,
    Presence, PresenceEntry, Retention, StreamPosition,
};
use crate::publication::Publication;

/// Every key and channel starts with this.
pub const PREFIX: &str = "herald:";

/// The keys and channels of the Redis engine, in one place (docs/CLUSTER.md describes them).
///
/// Every key carries a hash tag (`{...}`): the keys one script touches together share it, so
/// on a Redis Cluster they share a slot. A topic's keys are tagged `t:<topic>`, a user's (their
/// inbox, online mark, projects and scope stream) `u:<user>`, a project's members
/// `p:<project>`, a node's bookkeeping `n:<node>`, and the streams of the scopes every node
/// receives (`all`, roles, projects) share the tag `s` with their channel.
pub mod keys {
    use super::PREFIX;

    fn key(tag: &str, kind: &str) -> String {
        format!("{PREFIX}{{{tag}}}:{kind}")
    }
    fn user(user: &str, kind: &str) -> String {
        key(&format!("u:{user}"), kind)
    }
    fn topic(topic: &str, kind: &str) -> String {
        key(&format!("t:{topic}"), kind)
    }
    fn node_key(node: &str, kind: &str) -> String {
        key(&format!("n:{node}"), kind)
    }
    /// A stream's key of `kind`: a topic's under the topic, a user's scope stream under the
    /// user, the other scope streams under `s`.
    fn stream_key(stream: &str, kind: &str) -> String {
        match stream.strip_prefix('#') {
            Some(scope) => match scope.strip_prefix("user:") {
                Some(id) => user(id, kind),
                None => key("s", &format!("{kind}:{stream}")),
            },
            None => topic(stream, kind),
        }
    }

    /// SET: a project's members.
    pub fn members(project: &str) -> String {
        key(&format!("p:{project}"), "members")
    }
    /// SET of project ids: the projects a user is a member of (the same pairs as `members`).
    pub fn projects_of(id: &str) -> String {
        user(id, "projects")
    }
    /// HASH `{epoch, offset}`: a stream's position (a topic's, or a scope's: `#all`, ...).
    pub fn meta(stream: &str) -> String {
        stream_key(stream, "meta")
    }
    /// STREAM: a stream's kept messages, entry id `<offset>-0`, fields `ms`, `b`.
    pub fn stream(stream: &str) -> String {
        stream_key(stream, "stream")
    }
    /// STREAM: a user's offline inbox, fields `ms`, `id`, `b`.
    pub fn inbox(id: &str) -> String {
        user(id, "inbox")
    }
    /// HASH `{id, reached}` for a minute: the user's last user-scope publication and how many
    /// nodes it reached (a retried send of it is answered from here, not sent twice).
    pub fn last_sent(id: &str) -> String {
        user(id, "sent")
    }
    /// HASH node -> connections: where a user is online.
    pub fn online(id: &str) -> String {
        user(id, "online")
    }
    /// HASH user -> connections on a topic.
    pub fn presence(name: &str) -> String {
        topic(name, "presence")
    }
    /// HASH user -> ms: when each user on a topic joined.
    pub fn joined(name: &str) -> String {
        topic(name, "joined")
    }
    /// SET: the connection ids on a topic's presence.
    pub fn conns(name: &str) -> String {
        topic(name, "conns")
    }
    /// STRING (integer): a topic's subscribers on every node (kept while webhooks want
    /// `topic.occupied` / `topic.vacated`).
    pub fn subscribers(name: &str) -> String {
        topic(name, "subscribers")
    }
    /// SET `topic\nclient\nuser`: the presence entries a node holds (removed when it dies).
    pub fn node_presence(node: &str) -> String {
        node_key(node, "presence")
    }
    /// HASH topic -> subscribers: a node's share of each `subscribers` count.
    pub fn node_subscribers(node: &str) -> String {
        node_key(node, "subscribers")
    }
    /// HASH event id -> event JSON: a node's unsent webhook events.
    pub fn webhooks(node: &str) -> String {
        node_key(node, "webhooks")
    }
    /// HASH user -> connections: the users a node holds.
    pub fn node_users(node: &str) -> String {
        node_key(node, "users")
    }
    /// STRING (JSON stats) with an expiry: a live node's heartbeat.
    pub fn node(node: &str) -> String {
        node_key(node, "beat")
    }
    /// STRING with an expiry: a lock so one node reaps a dead one.
    pub fn reaping(node: &str) -> String {
        node_key(node, "reaping")
    }
    /// SET: every node id seen, live or not yet reaped.
    pub fn nodes() -> String {
        format!("{PREFIX}nodes")
    }
    /// STRING with an expiry (the idempotency window): empty while the publish that claimed
    /// the key is in flight, then its answer (JSON).
    pub fn idempotency(key: &str) -> String {
        format!("{PREFIX}idempotency:{key}")
    }
    /// STRING: the key layout this Redis holds (absent: the layout before hash tags).
    pub fn layout() -> String {
        format!("{PREFIX}layout")
    }
    /// Channel: a topic's publications (subscribed by nodes with subscribers).
    pub fn topic_channel(name: &str) -> String {
        topic(name, "channel")
    }
    /// Channel: a user's publications (subscribed by the nodes holding the user).
    pub fn user_channel(id: &str) -> String {
        user(id, "channel")
    }
    /// Channel: publications to `all`, a role or a project (every node).
    pub fn scopes_channel() -> String {
        key("s", "channel")
    }
    /// Channel: disconnect and re-check requests (every node).
    pub fn control_channel() -> String {
        format!("{PREFIX}control")
    }
    /// Channel: one node's replies to its control requests.
    pub fn node_channel(node: &str) -> String {
        node_key(node, "channel")
    }
}

/// How the Redis engine connects.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One Redis (`redis_url`) or a Redis Cluster (`redis_cluster`).
    pub deployment: Deployment,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// The longest any Redis call may take.
    pub timeout: Duration,
    /// The replicas a publication's writes wait for before it is answered (`WAIT`); `None`:
    /// one when the primary has any connected (checked at start and every heartbeat).
    pub wait_replicas: Option<u32>,
}

/// The state half of the Redis engine: implements [`Membership`], [`History`], [`Inbox`] and
/// [`Presence`]. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    deployment: Deployment,
    /// The keys are known to have today's names (`layout`): no need to look again.
    layout_checked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: Client,
    conn: Conn,
    node_id: String,
    timeout: Duration,
    replication: std::sync::Arc<replication::Replication>,
}

impl RedisStore {
    /// A store on `options.deployment`. Connects lazily and reconnects on its own: with Redis
    /// down, calls fail within the timeout and work again once it is back. Needs a Tokio
    /// runtime (a Redis Cluster connection runs a task of its own).
    pub fn open(options: &RedisOptions) -> Result<Self, EngineError> {
        let client = Client::open(&options.deployment, options.timeout)?;
        let conn = client.connect_lazily(options.timeout)?;
        Ok(Self {
            deployment: options.deployment.clone(),
            layout_checked: Default::default(),
            client,
            conn,
            node_id: options.node_id.clone(),
            timeout: options.timeout,
            replication: std::sync::Arc::new(replication::Replication::new(
                options.wait_replicas,
                options.timeout,
            )),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Whether this store is on a Redis Cluster.
    pub fn is_on_cluster(&self) -> bool {
        self.client.is_cluster()
    }

    /// The command that publishes on a channel: sharded Pub/Sub on a Redis Cluster (a channel
    /// travels through the shard of its slot only), classic Pub/Sub on one Redis.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self.client.is_cluster() {
            true => "SPUBLISH",
            false => "PUBLISH",
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection handle for one call (clones share one multiplexed connection).
    pub(crate) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs one Redis call within the timeout.
    pub(crate) async fn run<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(EngineError(format!("redis: {e}"))),
            Err(_) => Err(EngineError(format!(
                "redis: no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// Runs one script invocation within the timeout.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'static>,
    ) -> Result<T, EngineError> {
        let mut conn = self.conn();
        self.run(async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Runs a publication's write: as [`Self::invoke`] when no replica is waited for, else on
    /// the writes' own connection and answered once enough replicas have it (`replication`).
    async fn invoke_replicated<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'static>,
    ) -> Result<T, EngineError> {
        let replicas = self.replication.wanted();
        if replicas == 0 {
            return self.invoke(invocation).await;
        }
        let client = match &self.client {
            Client::Single(client) => client,
            Client::Cluster(_) => return self.write_then_wait(invocation, replicas).await,
        };
        let (generation, mut conn) = self.replication.conn(client).await?;
        let written = self
            .run(async move { invocation.invoke_async(&mut conn).await })
            .await;
        if written.is_err() {
            self.replication.failed(generation);
        }
        let written = written?;
        let started = std::time::Instant::now();
        let replicated = self.replication.replicated(generation, replicas).await;
        crate::metrics::engine_call("redis", "replica_wait", started.elapsed());
        if replicated.is_err() {
            crate::metrics::engine_error("replication");
        }
        replicated?;
        Ok(written)
    }

    /// On a Redis Cluster: the write, then `WAIT`, pipelined on the writes' own connection to
    /// the primary of the write's slot, so the `WAIT` counts exactly that connection's writes.
    /// Each write waits for itself: the `WAIT` holds that connection, not the others.
    async fn write_then_wait<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'static>,
        replicas: u32,
    ) -> Result<T, EngineError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation)
            .cmd("WAIT")
            .arg(replicas)
            .arg(self.replication.wait_ms());
        let mut conn = self.replication.cluster_writes(&self.client)?;
        let started = std::time::Instant::now();
        let sent = {
            let mut conn = conn.clone();
            let pipe = pipe.clone();
            self.run(async move { pipe.query_async::<(T, u32)>(&mut conn).await })
                .await
        };
        let (written, acked) = match sent {
            Err(e) if e.0.to_ascii_lowercase().contains("noscript") => {
                // A primary that never ran the script (new, or restarted): load it everywhere.
                self.run(invocation.load_async(&mut conn)).await?;
                self.run(async move { pipe.query_async::<(T, u32)>(&mut conn).await })
                    .await?
            }
            sent => sent?,
        };
        crate::metrics::engine_call("redis", "replica_wait", started.elapsed());
        if acked < replicas {
            crate::metrics::engine_error("replication");
            let short = self.replication.short_of(acked, replicas);
            let after = started.elapsed().as_millis();
            return Err(EngineError(format!(
                "{} (WAIT answered after {after} ms)",
                short.0
            )));
        }
        Ok(written)
    }

    /// Whether Redis says it is a Redis Cluster node (`INFO cluster`), which `redis_url`
    /// cannot use (`redis_cluster` can); false when it does not answer (the node starts, and
    /// retries).
    pub(crate) async fn is_cluster_node(&self) -> bool {
        self.info("cluster")
            .await
            .is_ok_and(|info| info.lines().any(|line| line.trim() == "cluster_enabled:1"))
    }

    /// One section of `INFO`.
    async fn info(&self, section: &'static str) -> Result<String, EngineError> {
        let mut conn = self.conn();
        self.run(async move { redis::cmd("INFO").arg(section).query_async(&mut conn).await })
            .await
    }

    /// Asks Redis how many replicas its primary has in sync (`INFO replication`; on a Redis
    /// Cluster, the fewest any primary has), which the writes follow unless `wait_replicas`
    /// is set. A replica still loading its first copy cannot acknowledge a write yet.
    pub(crate) async fn refresh_replicas(&self) -> Result<(), EngineError> {
        let replicas = match self.client.is_cluster() {
            true => self.fewest_replicas_online().await?,
            false => layout::replicas_online(&self.info("replication").await?),
        };
        if self.replication.set_connected(replicas) {
            tracing::info!(
                replicas,
                waited_for = self.replication.wanted(),
                "redis: the replicas a publication waits for changed"
            );
        }
        Ok(())
    }

    /// Publishes `body` on `channel`; returns how many subscribers (nodes) received it.
    pub(crate) async fn publish(
        &self,
        channel: String,
        body: Vec<u8>,
    ) -> Result<usize, EngineError> {
        let mut conn = self.conn();
        let command = self.publish_command();
        self.run(async move {
            redis::cmd(command)
                .arg(channel)
                .arg(body)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// Whether Redis answers a PING.
    pub async fn ping(&self) -> Result<(), EngineError> {
        let mut conn = self.conn();
        self.run(async move { redis::cmd("PING").query_async::<String>(&mut conn).await })
            .await
            .map(|_| ())
    }
}

/// A call of [`scripts::JOIN`] or [`scripts::LEAVE`]: the topic's keys, the user and the
/// connection.
fn presence_call(
    script: &'static redis::Script,
    topic: &str,
    user: &str,
    client_id: &str,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys::presence(topic))
        .key(keys::joined(topic))
        .key(keys::conns(topic))
        .arg(user)
        .arg(client_id);
    invocation
}

/// What reaping a node removed.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The `(topic, user)` pairs whose last connection on the topic went with the node.
    pub left: Vec<(String, String)>,
    /// The users now online on no node.
    pub offline: Vec<String>,
    /// The topics now without a subscriber on any node (counted while webhooks want them).
    pub vacated: Vec<String>,
}

/// Outbox events by id, oldest first (ids are UUID v7, ordered by their creation).
fn in_order(mut events: Vec<(String, String)>) -> Vec<OutboxEvent> {
    events.sort_by(|a, b| a.0.cmp(&b.0));
    events
        .into_iter()
        .map(|(id, body)| OutboxEvent { id, body })
        .collect()
}

/// A node's unsent webhook events, in Redis (`webhooks:{node}`): they outlive the node, and
/// the node that reaps a dead one sends them.
#[async_trait]
impl Outbox for RedisStore {
    async fn keep(&self, events: Vec<OutboxEvent>) -> Result<(), EngineError> {
        if events.is_empty() {
            return Ok(());
        }
        let key = keys::webhooks(&self.node_id);
        let pairs: Vec<(String, String)> = events.into_iter().map(|e| (e.id, e.body)).collect();
        let mut conn = self.conn();
        self.run(async move { conn.hset_multiple::<_, _, _, ()>(key, &pairs).await })
            .await
    }

    async fn forget(&self, ids: Vec<String>) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = keys::webhooks(&self.node_id);
        let mut conn = self.conn();
        self.run(async move { conn.hdel::<_, _, ()>(key, ids).await })
            .await
    }

    async fn load(&self) -> Result<Vec<OutboxEvent>, EngineError> {
        let key = keys::webhooks(&self.node_id);
        let mut conn = self.conn();
        let events: Vec<(String, String)> =
            self.run(async move { conn.hgetall(key).await }).await?;
        Ok(in_order(events))
    }
}

fn meta_ttl_ms(retention: Retention) -> u64 {
    // The position outlives the messages by a day, so offsets go on after a quiet spell.
    (retention.ttl + Duration::from_secs(24 * 3600)).as_millis() as u64
}

fn new_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn bad_reply(what: &str) -> EngineError {
    EngineError(format!("redis: unexpected reply to {what}"))
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_string(value: &Value) -> Option<String> {
    as_bytes(value).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn decode_bodies(values: Vec<Vec<u8>>) -> Result<Vec<Publication>, EngineError> {
    values
        .iter()
        .map(|body| codec::decode(body, None, None))
        .collect()
}

#[async_trait]
impl Membership for RedisStore {
    /// Two sets under two hash tags, written one after the other: a failure between them is
    /// reported (503) and the same call again completes it.
    async fn add(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn();
        let added: i64 = self.run(conn.sadd(keys::members(project), user)).await?;
        let mut conn = self.conn();
        self.run(conn.sadd::<_, _, i64>(keys::projects_of(user), project))
            .await?;
        Ok(added == 1)
    }

    async fn remove(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn();
        let removed: i64 = self.run(conn.srem(keys::members(project), user)).await?;
        let mut conn = self.conn();
        self.run(conn.srem::<_, _, i64>(keys::projects_of(user), project))
            .await?;
        Ok(removed == 1)
    }

    async fn projects_of(&self, user: &str) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn();
        let mut projects: Vec<String> = self
            .run(async move { conn.smembers(keys::projects_of(user)).await })
            .await?;
        projects.sort();
        Ok(projects)
    }

    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn();
        let mut members: Vec<String> = self
            .run(async move { conn.smembers(keys::members(project)).await })
            .await?;
        members.sort();
        Ok(members)
    }

    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn();
        self.run(async move { conn.sismember(keys::members(project), user).await })
            .await
    }

    async fn check(&self) -> Result<(), EngineError> {
        self.ping().await
    }
}

impl RedisStore {
    /// Appends to a stream, publishing on `channel` in the same step when it is not empty.
    pub(crate) async fn append_to_stream(
        &self,
        topic: &str,
        publication: &Publication,
        retention: Retention,
        channel: &str,
    ) -> Result<StreamPosition, EngineError> {
        let mut invocation = scripts::APPEND.prepare_invoke();
        invocation
            .key(keys::meta(topic))
            .key(keys::stream(topic))
            .arg(new_epoch())
            .arg(retention.size.max(1))
            .arg(retention.ttl.as_millis() as u64)
            .arg(codec::encode(publication))
            .arg(channel)
            .arg(meta_ttl_ms(retention))
            .arg(self.publish_command())
            .arg(&publication.id);
        let (offset, epoch): (u64, String) = self.invoke_replicated(invocation).await?;
        Ok(StreamPosition { offset, epoch })
    }
}

#[async_trait]
impl History for RedisStore {
    async fn append(
        &self,
        topic: &str,
        publication: &Publication,
        retention: Retention,
    ) -> Result<StreamPosition, EngineError> {
        self.append_to_stream(topic, publication, retention, "")
            .await
    }

    async fn read(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        let mut invocation = scripts::READ.prepare_invoke();
        invocation
            .key(keys::meta(topic))
            .key(keys::stream(topic))
            .arg(new_epoch())
            .arg(format!("({after}-0"))
            .arg(limit)
            .arg(retention.ttl.as_millis() as u64)
            .arg(meta_ttl_ms(retention));
        let reply: Vec<Value> = self.invoke(invocation).await?;
        let bad = || bad_reply("a history read");
        let [epoch, top, first, rest @ ..] = reply.as_slice() else {
            return Err(bad());
        };
        let epoch = as_string(epoch).ok_or_else(bad)?;
        let top = as_u64(top).ok_or_else(bad)?;
        let first_kept = as_u64(first).ok_or_else(bad)?;
        let mut messages = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let [offset, body] = pair else {
                return Err(bad());
            };
            let offset = as_u64(offset).ok_or_else(bad)?;
            let body = as_bytes(body).ok_or_else(bad)?;
            messages.push(codec::decode(body, Some(offset), Some(epoch.clone()))?);
        }
        Ok(HistoryPage {
            position: StreamPosition { offset: top, epoch },
            first_kept,
            messages,
        })
    }
}

#[async_trait]
impl Inbox for RedisStore {
    async fn store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<(), EngineError> {
        let mut invocation = scripts::INBOX_STORE.prepare_invoke();
        invocation
            .key(keys::inbox(user))
            .arg(limits.max_messages.max(1))
            .arg(limits.ttl.as_millis() as u64)
            .arg(&publication.id)
            .arg(codec::encode(publication));
        self.invoke_replicated::<i64>(invocation).await.map(|_| ())
    }

    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError> {
        let mut invocation = scripts::INBOX_PENDING.prepare_invoke();
        invocation
            .key(keys::inbox(user))
            .arg(limits.ttl.as_millis() as u64);
        let bodies: Vec<Vec<u8>> = self.invoke(invocation).await?;
        decode_bodies(bodies)
    }

    async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut invocation = scripts::INBOX_ACK.prepare_invoke();
        invocation.key(keys::inbox(user)).arg(ids);
        let removed: u64 = self.invoke(invocation).await?;
        Ok(removed as usize)
    }

    /// Every inbox's length, by a `SCAN` of every primary (a cluster's inboxes are spread
    /// over them).
    async fn totals(&self) -> Result<crate::engine::InboxTotals, EngineError> {
        let mut totals = crate::engine::InboxTotals::default();
        for key in self.scan_all(&format!("{PREFIX}{{u:*}}:inbox")).await? {
            let mut conn = self.conn();
            let length: u64 = self.run(conn.xlen(key)).await?;
            totals.messages += length;
            totals.users += u64::from(length > 0);
        }
        Ok(totals)
    }
}

impl RedisStore {
    /// A user-scope publication: live on the nodes holding the user, else into the inbox.
    /// Returns false when it was kept in the inbox.
    /// With `stream`, one sent live is first appended to the user's scope stream.
    pub(crate) async fn send_to_user(
        &self,
        publication: &Publication,
        user: &str,
        limits: InboxLimits,
        stream: Option<Retention>,
    ) -> Result<bool, EngineError> {
        let mut invocation = scripts::USER_SEND.prepare_invoke();
        invocation
            .key(keys::online(user))
            .key(keys::inbox(user))
            .key(keys::last_sent(user))
            .arg(limits.max_messages.max(1))
            .arg(limits.ttl.as_millis() as u64)
            .arg(&publication.id)
            .arg(codec::encode(publication))
            .arg(keys::user_channel(user))
            .arg(self.publish_command());
        if let Some(retention) = stream {
            let key = crate::engine::stream_key(&format!("user:{user}"));
            invocation
                .key(keys::meta(&key))
                .key(keys::stream(&key))
                .arg(new_epoch())
                .arg(retention.size.max(1))
                .arg(retention.ttl.as_millis() as u64)
                .arg(meta_ttl_ms(retention));
        }
        let reached: u64 = self.invoke_replicated(invocation).await?;
        Ok(reached > 0)
    }

    /// Marks a user online on this node; returns whether they were online on no node before,
    /// and their inbox. The node's own count goes first: a node that dies between the two
    /// leaves nothing its reaper cannot undo. On one Redis both go at once, in that order on
    /// the one connection (one round trip: a connect holds its user's stripe meanwhile).
    pub(crate) async fn attach(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<(bool, Vec<Publication>), EngineError> {
        let counted = self.count(keys::node_users(&self.node_id), user, 1);
        let mut invocation = scripts::ATTACH.prepare_invoke();
        invocation
            .key(keys::online(user))
            .key(keys::inbox(user))
            .arg(&self.node_id)
            .arg(limits.ttl.as_millis() as u64);
        let attached = self.invoke::<Vec<Vec<u8>>>(invocation);
        let (counted, attached) = match self.client.is_cluster() {
            false => tokio::join!(counted, attached),
            true => {
                let counted = counted.await;
                (counted, attached.await)
            }
        };
        counted?;
        let mut bodies = attached?;
        if bodies.is_empty() {
            return Err(bad_reply("an attach"));
        }
        let first = bodies.remove(0) == b"1";
        Ok((first, decode_bodies(bodies)?))
    }

    /// One connection of a user on this node ended; returns whether the user is now online
    /// on no node.
    pub(crate) async fn detach(&self, user: &str) -> Result<bool, EngineError> {
        let last = self.count(keys::online(user), &self.node_id, -1).await?;
        self.count(keys::node_users(&self.node_id), user, -1)
            .await?;
        Ok(last)
    }

    /// Adds `delta` to `field` of the hash `key` (a field at 0 goes); true when the hash is
    /// empty afterwards.
    async fn count(&self, key: String, field: &str, delta: i64) -> Result<bool, EngineError> {
        let mut invocation = scripts::COUNT.prepare_invoke();
        invocation.key(key).arg(field).arg(delta);
        self.invoke::<i64>(invocation).await.map(|empty| empty == 1)
    }

    /// This node gained its first subscriber of `topic` (`delta` 1) or lost its last (-1);
    /// returns how many nodes now have subscribers of it. The topic's count is raised before
    /// the node's share and lowered after it: a node that dies between the two leaves the
    /// topic counted occupied a while longer, never vacated too early.
    pub(crate) async fn count_subscribers(
        &self,
        topic: &str,
        delta: i64,
    ) -> Result<i64, EngineError> {
        let node = keys::node_subscribers(&self.node_id);
        if delta < 0 {
            self.count(node.clone(), topic, delta).await?;
        }
        let total = self.add_subscribers(topic, delta).await?;
        if delta > 0 {
            self.count(node, topic, delta).await?;
        }
        Ok(total)
    }

    async fn add_subscribers(&self, topic: &str, delta: i64) -> Result<i64, EngineError> {
        let mut invocation = scripts::SUBSCRIBERS.prepare_invoke();
        invocation.key(keys::subscribers(topic)).arg(delta);
        self.invoke(invocation).await
    }

    /// Removes everything `node` held in presence, online marks and subscriber counts, one
    /// entry at a time (each under its own hash tag), each entry forgotten once undone: a
    /// reaper that stops half-way leaves the rest to the next one.
    pub async fn reap(&self, node: &str) -> Result<Reaped, EngineError> {
        let mut reaped = Reaped::default();
        let entries_key = keys::node_presence(node);
        let mut conn = self.conn();
        let entries: Vec<String> = self.run(conn.smembers(&entries_key)).await?;
        for entry in entries {
            let mut parts = entry.splitn(3, '\n');
            if let (Some(topic), Some(client), Some(user)) =
                (parts.next(), parts.next(), parts.next())
            {
                let invocation = presence_call(&scripts::LEAVE, topic, user, client);
                if self.invoke::<i64>(invocation).await? == 1 {
                    reaped.left.push((topic.to_string(), user.to_string()));
                }
            }
            let mut conn = self.conn();
            self.run(conn.srem::<_, _, i64>(&entries_key, &entry))
                .await?;
        }
        let users_key = keys::node_users(node);
        let mut conn = self.conn();
        let users: Vec<String> = self.run(conn.hkeys(&users_key)).await?;
        for user in users {
            let mut invocation = scripts::FORGET.prepare_invoke();
            invocation.key(keys::online(&user)).arg(node);
            if self.invoke::<i64>(invocation).await? == 1 {
                reaped.offline.push(user.clone());
            }
            let mut conn = self.conn();
            self.run(conn.hdel::<_, _, i64>(&users_key, &user)).await?;
        }
        let topics_key = keys::node_subscribers(node);
        let mut conn = self.conn();
        let topics: Vec<(String, i64)> = self.run(conn.hgetall(&topics_key)).await?;
        for (topic, share) in topics {
            let total = self.add_subscribers(&topic, -share).await?;
            if total <= 0 && share > 0 {
                reaped.vacated.push(topic.clone());
            }
            let mut conn = self.conn();
            self.run(conn.hdel::<_, _, i64>(&topics_key, &topic))
                .await?;
        }
        Ok(reaped)
    }

    /// Takes `node`'s unsent webhook events (it died): they are removed from it and
    /// returned, oldest first, for this node to send.
    pub async fn adopt_webhooks(&self, node: &str) -> Result<Vec<OutboxEvent>, EngineError> {
        let key = keys::webhooks(node);
        let mut conn = self.conn();
        let (events, _): (Vec<(String, String)>, i64) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .hgetall(&key)
                    .del(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(in_order(events))
    }
}

#[async_trait]
impl Presence for RedisStore {
    /// The node records the entry before the topic counts it, and forgets it after: a node
    /// that dies between the two leaves nothing its reaper cannot undo.
    async fn join(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn();
        let entry = format!("{topic}\n{client_id}\n{user}");
        self.run(conn.sadd::<_, _, i64>(keys::node_presence(&self.node_id), entry))
            .await?;
        let invocation = presence_call(&scripts::JOIN, topic, user, client_id);
        let first: i64 = self.invoke(invocation).await?;
        Ok(first == 1)
    }

    async fn leave(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError> {
        let invocation = presence_call(&scripts::LEAVE, topic, user, client_id);
        let last: i64 = self.invoke(invocation).await?;
        let mut conn = self.conn();
        let entry = format!("{topic}\n{client_id}\n{user}");
        self.run(conn.srem::<_, _, i64>(keys::node_presence(&self.node_id), entry))
            .await?;
        Ok(last == 1)
    }

    async fn list(&self, topic: &str) -> Result<Vec<PresenceEntry>, EngineError> {
        let mut conn = self.conn();
        let (counts, joined): (Vec<(String, u64)>, Vec<(String, u64)>) = self
            .run(async move {
                redis::pipe()
                    .hgetall(keys::presence(topic))
                    .hgetall(keys::joined(topic))
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let joined: std::collections::HashMap<String, u64> = joined.into_iter().collect();
        let mut entries: Vec<PresenceEntry> = counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(user_id, connections)| {
                let ms = joined.get(&user_id).copied().unwrap_or(0);
                PresenceEntry {
                    joined_at: std::time::UNIX_EPOCH + Duration::from_millis(ms),
                    user_id,
                    connections: connections as usize,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(entries)
    }
}

#[async_trait]
impl Idempotency for RedisStore {
    async fn claim(&self, key: &str, in_flight: Duration) -> Result<Claim, EngineError> {
        let mut invocation = scripts::IDEMPOTENCY_CLAIM.prepare_invoke();
        invocation
            .key(keys::idempotency(key))
            .arg(in_flight.as_millis().max(1) as u64);
        match self.invoke::<Value>(invocation).await? {
            Value::Int(1) => Ok(Claim::First),
            Value::BulkString(held) if held.is_empty() => Ok(Claim::InFlight),
            Value::BulkString(held) => String::from_utf8(held)
                .map(Claim::Answered)
                .map_err(|_| EngineError::new("an idempotency answer in Redis is not UTF-8")),
            other => Err(EngineError(format!(
                "unexpected idempotency claim from Redis: {other:?}"
            ))),
        }
    }

    async fn settle(
        &self,
        key: &str,
        answer: Option<&str>,
        window: Duration,
    ) -> Result<(), EngineError> {
        let key = keys::idempotency(key);
        let mut conn = self.conn();
        match answer {
            Some(answer) => {
                let answer = answer.to_string();
                self.run(async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(answer)
                        .arg("XX")
                        .arg("PX")
                        .arg(window.as_millis().max(1) as u64)
                        .query_async::<Value>(&mut conn)
                        .await
                })
                .await?;
            }
            None => {
                self.run(async move { conn.del::<_, ()>(&key).await })
                    .await?;
            }
        }
        Ok(())
    }
}
