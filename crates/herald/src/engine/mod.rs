//! The seams to state beyond one process: small traits, each with an embedded implementation
//! here and a Redis one in its own crate later, all passing one conformance suite.
//!
//! - [`Broker`] carries a publication to every node that has recipients for it (the memory
//!   broker hands it straight to the local hub).
//! - [`Membership`] answers who belongs to a project (SQLite by default, merged with the
//!   token's `projects` claim by the caller).
//! - [`Presence`] knows who is on a topic, per user, with their connection count.
//! - [`History`] keeps a topic's stream: offsets 1, 2, 3... within an epoch.
//! - [`Inbox`] keeps user-scoped events for a user with no live connection.
//! - [`Idempotency`] remembers the answers of publishes sent with an idempotency key.
//!
//! Every implementation passes one conformance suite per trait (the `herald-testkit` crate).

#[cfg(any(feature = "sqlite", feature = "redis"))]
pub(crate) use crate::sync::lock;
mod idempotency;
pub mod memory;
pub mod outbox;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

pub use crate::config::InboxLimits;
use crate::publication::{Publication, Scope};
pub use crate::topic::Retention;
pub use idempotency::{Claim, Idempotency, MemoryIdempotency, MAX_KEY_LEN};

/// A failure of an engine (storage or network); reported as `processing_error` / 5xx.
#[derive(Debug, Clone, thiserror::Error)]
#[error("engine error: {0}")]
pub struct EngineError(pub String);

impl EngineError {
    /// An error from anything displayable.
    pub fn new(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Cross-node fan-out: carries each publication to every node with recipients for it, and
/// knows which users are online anywhere (so a user-scope event goes live or to the inbox).
///
/// The memory broker serves one node: it delivers at once, under the caller's stripe. The
/// Redis broker publishes through Redis, and every node (this one included) delivers what it
/// receives in order, taking the key's stripe itself ([`Delivery::deliver_in_order`]).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Delivers a publication of scope `all`, `role`, `project`, or a topic without history;
    /// returns the recipients reached on this node (0 when delivery is asynchronous).
    async fn publish(&self, publication: Arc<Publication>) -> Result<usize, EngineError>;

    /// Queues a publication for its topic's stream, so every node sees the stream's offsets
    /// in order. Called under the topic's stripe: once it returns, the publication's place
    /// in the stream is fixed and the next one may be queued. The returned future resolves
    /// to its position and the recipients reached on this node once it is durable and
    /// delivered; the caller awaits it without the stripe, so the appends of one topic
    /// share commits instead of waiting for each other.
    async fn publish_to_stream(
        &self,
        history: &dyn History,
        publication: Publication,
        retention: Retention,
    ) -> Result<QueuedAppend, EngineError>;

    /// Appends a publication of scope `all`, `role` or `project` to its scope stream (kept in
    /// `streams`) and delivers it like [`publish`](Self::publish), with its position. A node
    /// whose broker is not remote calls it under the stream's stripe, so the stream's offsets
    /// reach its connections in order. Returns the recipients reached on this node.
    async fn publish_to_scope_stream(
        &self,
        streams: &dyn History,
        mut publication: Publication,
        retention: Retention,
    ) -> Result<usize, EngineError> {
        append_to_scope_stream(streams, &mut publication, retention).await?;
        self.publish(Arc::new(publication)).await
    }

    /// Delivers a user-scope publication to the user's connections on every node, or keeps it
    /// in their inbox when they have none anywhere. With `stream`, a publication delivered
    /// live is first appended to the user's scope stream (one kept in the inbox is not: the
    /// inbox delivers it). A kept publication's place in the inbox is fixed when this returns;
    /// [`ToUser::Kept`] resolves once it is durable, and may be awaited without the user's
    /// stripe.
    async fn publish_to_user(
        &self,
        inbox: &dyn Inbox,
        limits: InboxLimits,
        stream: Option<(&dyn History, Retention)>,
        publication: Publication,
    ) -> Result<ToUser, EngineError>;

    /// A connection of `user` is about to register on this node: marks the user online and
    /// returns their pending inbox, in one step against [`publish_to_user`](Self::publish_to_user),
    /// and, when the broker knows it (a cluster), whether the user was online on no node
    /// before.
    async fn attach_user(
        &self,
        inbox: &dyn Inbox,
        limits: InboxLimits,
        user: &str,
    ) -> Result<(Vec<Publication>, Option<bool>), EngineError>;

    /// A connection of `user` on this node ended; returns, when the broker knows it (a
    /// cluster), whether the user is now online on no node.
    async fn detach_user(&self, user: &str) -> Option<bool>;

    /// Closes the connections in `scope` (close 1000) on every node; returns how many.
    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError>;

    /// A connection on this node subscribes to `topic`: from the return on, the node receives
    /// the topic's publications. Counted: every `watch` is matched by one `unwatch`.
    async fn watch(&self, topic: &str) -> Result<(), EngineError>;

    /// A connection on this node left `topic`.
    async fn unwatch(&self, topic: &str);

    /// A subscriber on this node starts from `position` of `topic`'s stream (the broker may
    /// use it as where to catch up from after losing its link).
    fn subscribed_at(&self, _topic: &str, _position: &StreamPosition) {}

    /// Whether publications reach this node asynchronously, after the publisher returned (a
    /// subscriber then ignores stream offsets it already got by replay).
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether what is published now reaches this node's connections: false while a remote
    /// broker's link is down (they get it only through recovery, once it is back).
    fn delivers_here(&self) -> bool {
        true
    }

    /// Whether the broker is connected (for readiness).
    async fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The per-key locks of a node: publications and subscriptions of one key (a topic, a user)
/// are serialized on one of these, so a stream's offsets are delivered in order and a
/// recovery or an inbox read never interleaves with a publication to the same key.
pub struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Stripes {
    const COUNT: usize = 64;

    /// Fresh, unlocked stripes.
    pub fn new() -> Self {
        Self(
            (0..Self::COUNT)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }

    /// The stripe of a key.
    pub fn of(&self, key: &str) -> &tokio::sync::Mutex<()> {
        &self.0[self.index_of(key)]
    }

    /// The stripe of a user's key (their inbox and user-scope deliveries): the stripe of
    /// their scope stream `user:<id>`.
    pub fn of_user(&self, user: &str) -> &tokio::sync::Mutex<()> {
        self.of(&format!("user:{user}"))
    }

    fn index_of(&self, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() as usize) % self.0.len()
    }

    /// Takes the stripes of several keys, each once, in one global order (so two callers
    /// never wait for each other in a circle).
    pub async fn lock_all<'a>(
        &'a self,
        keys: impl IntoIterator<Item = &str>,
    ) -> Vec<tokio::sync::MutexGuard<'a, ()>> {
        let mut indexes: Vec<usize> = keys.into_iter().map(|k| self.index_of(k)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut guards = Vec::with_capacity(indexes.len());
        for index in indexes {
            guards.push(self.0[index].lock().await);
        }
        guards
    }
}

impl Default for Stripes {
    fn default() -> Self {
        Self::new()
    }
}

/// Who belongs to which project.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Adds a member; true if they were not one already.
    async fn add(&self, project: &str, user: &str) -> Result<bool, EngineError>;
    /// Removes a member; true if they were one.
    async fn remove(&self, project: &str, user: &str) -> Result<bool, EngineError>;
    /// The members of a project, sorted.
    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError>;
    /// Whether `user` is a member of `project` (the store only; the caller adds token claims).
    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError>;
    /// The projects `user` is a member of in the store, sorted: the project streams a
    /// connection's welcome lists (docs/PROTOCOL.md, section 15). A store that cannot answer
    /// returns none: those streams then get their first position from their first delivery.
    async fn projects_of(&self, _user: &str) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }
    /// Whether the engine answers (for readiness).
    async fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// One user on a topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PresenceEntry {
    /// The user.
    pub user_id: String,
    /// How many of the user's connections are subscribed.
    pub connections: usize,
    /// When the user's first current connection subscribed (serialized as on the wire:
    /// RFC 3339, milliseconds).
    #[serde(serialize_with = "rfc3339_millis")]
    pub joined_at: std::time::SystemTime,
}

fn rfc3339_millis<S: serde::Serializer>(
    at: &std::time::SystemTime,
    to: S,
) -> Result<S::Ok, S::Error> {
    to.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// Who is on which topic. Costs are per topic, never per server: `join` and `leave` touch one
/// user's entry, `list` walks one topic's users.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Connection `client_id` of `user` is on `topic`; true when it is the user's first there.
    async fn join(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError>;
    /// Connection `client_id` of `user` left `topic`; true when it was the user's last there.
    async fn leave(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError>;
    /// The users on a topic, sorted by user id.
    async fn list(&self, topic: &str) -> Result<Vec<PresenceEntry>, EngineError>;
}

/// A position in a topic's stream: the newest offset (0 when empty) within an epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamPosition {
    /// The newest offset (0 for an empty stream).
    pub offset: u64,
    /// The epoch: changes only when the stream's past is lost.
    pub epoch: String,
}

/// A slice of a stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryPage {
    /// The stream's newest offset and its epoch.
    pub position: StreamPosition,
    /// The oldest offset still kept (`position.offset + 1` when nothing is kept).
    pub first_kept: u64,
    /// Messages after the asked offset, oldest first, each with `offset` and `epoch` set.
    pub messages: Vec<Publication>,
}

impl PresenceEntry {
    /// As the `presence` reply lists it.
    pub fn reply(&self) -> crate::protocol::replies::PresenceUser<'_> {
        crate::protocol::replies::PresenceUser {
            user_id: &self.user_id,
            connections: self.connections,
            joined_at: humantime::format_rfc3339_millis(self.joined_at).to_string(),
        }
    }
}

/// The `presence` reply for `topic` from the presence engine's entries.
pub fn presence_reply<'a>(
    topic: &'a str,
    entries: &'a [PresenceEntry],
) -> crate::protocol::replies::Presence<'a> {
    crate::protocol::replies::Presence {
        topic,
        users: entries.iter().map(PresenceEntry::reply).collect(),
    }
}

impl HistoryPage {
    /// The `history` reply for `topic` from this page.
    pub fn reply<'a>(&'a self, topic: &'a str) -> crate::protocol::replies::History<'a> {
        crate::protocol::replies::History {
            topic,
            epoch: &self.position.epoch,
            offset: self.position.offset,
            messages: self.messages.iter().map(Publication::to_json).collect(),
        }
    }

    /// Whether this page (read after `offset`) holds everything a reader at `offset` of
    /// `epoch` missed: the same epoch, the stream not behind the reader, and nothing after
    /// `offset` trimmed away.
    pub fn continues(&self, offset: u64, epoch: &str) -> bool {
        epoch == self.position.epoch
            && offset <= self.position.offset
            && offset + 1 >= self.first_kept
    }
}

/// Topic streams. An epoch names one unbroken past: it changes only when the stream's past is
/// lost (a memory engine restarted, a store wiped), never on a clean or crash restart of a
/// durable engine.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Appends a publication, durably for durable engines, and returns its position. Keeps at
    /// most `retention` afterwards.
    async fn append(
        &self,
        topic: &str,
        publication: &Publication,
        retention: Retention,
    ) -> Result<StreamPosition, EngineError>;

    /// Up to `limit` messages with offsets after `after`, oldest first, expired ones dropped.
    async fn read(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        retention: Retention,
    ) -> Result<HistoryPage, EngineError>;

    /// Whether the engine takes writes (for readiness): an error says why not.
    async fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Queues an append (called under the topic's stripe): `then` runs once it is durable,
    /// and the `then`s of a topic run in offset order. An engine that commits in groups
    /// returns before the write; by default the append and `then` are done before return.
    async fn queue_append(
        &self,
        topic: &str,
        publication: Publication,
        retention: Retention,
        then: AfterAppend,
    ) -> Result<QueuedAppend, EngineError> {
        let at = self.append(topic, &publication, retention).await?;
        let reached = then(publication, &at);
        Ok(done(at, reached))
    }

    /// Returns once every append queued before the call is durable and its `then` ran: a read
    /// after it (under the topic's stripe) holds every message already delivered, and nothing
    /// of the topic is delivered until the next append is queued.
    async fn settle(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// What runs once an appended publication is durable, in the stream's order: its local
/// delivery, given the publication back and its position; returns the recipients reached.
pub type AfterAppend = Box<dyn FnOnce(Publication, &StreamPosition) -> usize + Send>;

/// An append whose place in its stream is fixed: resolves to its position and what its
/// [`AfterAppend`] returned, once it is durable and that ran.
pub type QueuedAppend =
    Pin<Box<dyn Future<Output = Result<(StreamPosition, usize), EngineError>> + Send>>;

/// A [`QueuedAppend`] that is already done.
pub fn done(at: StreamPosition, reached: usize) -> QueuedAppend {
    Box::pin(std::future::ready(Ok((at, reached))))
}

/// Where a user-scope publication went: to this many live connections, or into the user's
/// inbox (resolving once it is durable there).
pub enum ToUser {
    /// Delivered to this many connections (in a cluster, sent to the nodes: 0).
    Live(usize),
    /// Kept in the inbox: resolves once the store is durable.
    Kept(QueuedStore),
}

/// An inbox store whose place among the user's messages is fixed: resolves once it is
/// durable.
pub type QueuedStore = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send>>;

/// A [`QueuedStore`] that is already durable (an engine that stores before it answers).
pub fn stored() -> QueuedStore {
    Box::pin(std::future::ready(Ok(())))
}

/// Offline inboxes: per user, in publication order, until acknowledged.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Keeps a publication for `user`, dropping the oldest beyond `limits.max_messages`.
    async fn store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<(), EngineError>;

    /// Queues a store: its place among the user's messages is fixed when this returns (the
    /// caller holds the user's stripe), and what it returns resolves once it is durable, so
    /// one user's stores can share a commit. A later [`Inbox::pending`] of the user sees it.
    /// An engine without a write queue stores before it returns.
    async fn queue_store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<QueuedStore, EngineError> {
        self.store(user, publication, limits).await?;
        Ok(stored())
    }

    /// The user's unacknowledged messages, oldest first (expired ones dropped).
    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError>;

    /// Removes the messages with these ids; returns how many were removed.
    async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError>;

    /// How many messages wait, in how many inboxes (expired ones not yet swept may count, and
    /// in SQLite up to 31 per user past `max_messages` until its next read):
    /// an operator's figure, which reads every inbox.
    async fn totals(&self) -> Result<InboxTotals, EngineError>;
}

/// What the offline inboxes hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxTotals {
    /// Messages waiting.
    pub messages: u64,
    /// Users with at least one.
    pub users: u64,
}

/// Where a scope stream is kept in a [`History`] engine: its name behind `#`, a byte no topic
/// name holds, so a scope stream never shares a key with a topic (`#all`, `#user:alice`).
pub fn scope_stream_key(scope: &Scope) -> Option<String> {
    scope.stream().map(|stream| stream_key(&stream))
}

/// Appends a scope publication to its stream in `streams` and gives it its position.
pub async fn append_to_scope_stream(
    streams: &dyn History,
    publication: &mut Publication,
    retention: Retention,
) -> Result<(), EngineError> {
    let key = scope_stream_key(&publication.scope)
        .ok_or_else(|| EngineError::new("a topic publication has no scope stream"))?;
    let at = streams
        .append(&key, publication, retention)
        .await
        .inspect_err(|_| crate::metrics::engine_error("streams"))?;
    publication.offset = Some(at.offset);
    publication.epoch = Some(at.epoch);
    Ok(())
}

/// The [`History`] key of a scope stream named on the wire (`all`, `role:admin`, ...).
pub fn stream_key(stream: &str) -> String {
    format!("#{stream}")
}

/// The user ids the membership store lists for a project scope (empty for other scopes): what
/// the hub needs besides its own indexes to select a scope's connections.
pub(crate) async fn members_in(
    membership: &dyn Membership,
    scope: &Scope,
) -> Result<Vec<String>, EngineError> {
    match scope {
        Scope::Project(project) => membership
            .members(project)
            .await
            .inspect_err(|_| crate::metrics::engine_error("membership")),
        _ => Ok(Vec::new()),
    }
}

/// What a broker needs of the node it runs in: delivering to this node's connections. The
/// node implements it (`node::LocalDelivery`), so the engines know nothing of the hub.
#[async_trait]
pub trait Delivery: Send + Sync + 'static {
    /// Fans a publication out to this node's connections; returns how many it reached. The
    /// caller holds the key's stripe when order matters.
    async fn deliver(&self, publication: &Publication) -> Result<usize, EngineError>;

    /// Fans a topic publication out to this node's subscribers, at once (no engine call: a
    /// topic needs no membership); returns how many it reached.
    fn deliver_to_topic(&self, publication: &Publication) -> usize;

    /// Delivers a publication that arrived from another process, under its key's stripe: a
    /// stream message waits for a recovery in progress on its topic, a user message for a
    /// connection of that user that is reading its inbox.
    async fn deliver_in_order(&self, publication: &Publication) -> Result<usize, EngineError> {
        match &publication.scope {
            Scope::Topic(topic) if publication.offset.is_some() => {
                let _stream = self.stripes().of(topic).lock().await;
                self.deliver(publication).await
            }
            Scope::User(user) => {
                let _user = self.stripes().of_user(user).lock().await;
                self.deliver(publication).await
            }
            scope if publication.offset.is_some() => match scope.stream() {
                Some(stream) => {
                    let _stream = self.stripes().of(&stream).lock().await;
                    self.deliver(publication).await
                }
                None => self.deliver(publication).await,
            },
            _ => self.deliver(publication).await,
        }
    }

    /// The node's per-key locks.
    fn stripes(&self) -> &Stripes;

    /// Whether `user` has a connection on this node.
    fn has_user(&self, user: &str) -> bool;

    /// The user-scope messages `user`'s connections here were given but will never write
    /// (they were closed as slow consumers): the caller keeps them in the inbox.
    fn undelivered_of(&self, user: &str) -> Vec<Arc<Publication>>;

    /// Closes this node's connections in a scope (close 1000); returns how many.
    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError>;

    /// Closes this node's connections in `scope` with `reason`: a topic's subscribers, or the
    /// connections a scope stream reaches (the stream's past was lost).
    async fn close_scope(&self, scope: &Scope, reason: crate::protocol::CloseReason);
}
