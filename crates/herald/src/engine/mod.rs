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
//!
//! [`conformance`] is the one suite every implementation of `History` and `Inbox` passes.

pub mod conformance;
pub mod memory;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::Hub;
use crate::publication::{Publication, Scope};

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

/// Cross-node fan-out.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Delivers a publication to every node; returns the recipients reached on this node.
    async fn publish(&self, publication: Arc<Publication>) -> Result<usize, EngineError>;
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
    /// Whether the engine answers (for readiness).
    async fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// One user on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The user.
    pub user_id: String,
    /// How many of the user's connections are subscribed.
    pub connections: usize,
    /// When the user's first current connection subscribed.
    pub joined_at: std::time::SystemTime,
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

/// How much of a stream is kept: the newest `size` messages, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept.
    pub size: usize,
    /// How long a message is kept.
    pub ttl: std::time::Duration,
}

/// A position in a topic's stream: the newest offset (0 when empty) within an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The newest offset (0 for an empty stream).
    pub offset: u64,
    /// The epoch: changes only when the stream's past is lost.
    pub epoch: String,
}

/// A slice of a stream.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The stream's newest offset and its epoch.
    pub position: StreamPosition,
    /// The oldest offset still kept (`position.offset + 1` when nothing is kept).
    pub first_kept: u64,
    /// Messages after the asked offset, oldest first, each with `offset` and `epoch` set.
    pub messages: Vec<Publication>,
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
}

/// How much an inbox keeps: the newest `max_messages`, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Messages kept per user.
    pub max_messages: usize,
    /// How long a message is kept.
    pub ttl: std::time::Duration,
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

    /// The user's unacknowledged messages, oldest first (expired ones dropped).
    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError>;

    /// Removes the messages with these ids; returns how many were removed.
    async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError>;
}

/// Hands publications to this node's hub, resolving project members on the way. Every broker
/// ends in one of these on each node.
#[derive(Clone)]
pub struct LocalDelivery {
    /// This node's hub.
    pub hub: Arc<Hub>,
    /// Where project members come from.
    pub membership: Arc<dyn Membership>,
}

impl LocalDelivery {
    /// Fans a publication out to this node's connections; returns how many it reached.
    pub async fn deliver(&self, publication: &Publication) -> Result<usize, EngineError> {
        let members = match &publication.scope {
            Scope::Project(project) => {
                self.membership.members(project).await.inspect_err(|_| {
                    crate::metrics::engine_error("membership");
                })?
            }
            _ => Vec::new(),
        };
        let started = std::time::Instant::now();
        let reached = self.hub.deliver(publication, &members);
        crate::metrics::publication(publication.scope.name(), reached, started.elapsed());
        Ok(reached)
    }
}
