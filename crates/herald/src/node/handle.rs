//! The calls an embedding app makes from anywhere in its code (Pulse's
//! `websocket.BroadcastToUser(...)`): one per scope, plus disconnects. The router and the
//! server are in `http` (`Herald::router`, `Herald::serve`).

use serde::Serialize;

use super::{Herald, Published};
use crate::engine::EngineError;
use crate::publication::{Publication, Scope};

/// Why a `broadcast_to_*` call did not publish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The topic's name breaks the rules of docs/PROTOCOL.md (the text says which).
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// The data did not serialize to JSON.
    #[error("data is not JSON: {0}")]
    Encode(String),
    /// The idempotency key is empty, too long or has control characters (the text says which).
    #[error("invalid idempotency key: {0}")]
    InvalidKey(String),
    /// An engine failed (the store, Redis): nothing was published.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn to_value(data: impl Serialize) -> Result<serde_json::Value, PublishError> {
    serde_json::to_value(data).map_err(|e| PublishError::Encode(e.to_string()))
}

impl Herald {
    async fn publish_to(
        &self,
        scope: Scope,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        Ok(self
            .publish(Publication::new(scope, event, to_value(data)?))
            .await?)
    }

    /// Sends `event` with `data` to every authenticated connection.
    pub async fn broadcast_to_all(
        &self,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        self.publish_to(Scope::All, event, data).await
    }

    /// Sends to every connection of one user (all tabs and devices); kept in the user's
    /// offline inbox when they have none.
    pub async fn broadcast_to_user(
        &self,
        user: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        self.publish_to(Scope::User(user.into()), event, data).await
    }

    /// Sends to every connection whose role is `role`.
    pub async fn broadcast_to_role(
        &self,
        role: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        self.publish_to(Scope::Role(role.into()), event, data).await
    }

    /// Sends to every connection of every member of `project` (membership store or token
    /// claim), once each.
    pub async fn broadcast_to_project(
        &self,
        project: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        self.publish_to(Scope::Project(project.into()), event, data)
            .await
    }

    /// Sends to a topic's subscribers (with an offset when the topic keeps history).
    pub async fn broadcast_to_topic(
        &self,
        topic: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, PublishError> {
        crate::topic::validate(topic).map_err(PublishError::InvalidTopic)?;
        self.publish_to(Scope::Topic(topic.into()), event, data)
            .await
    }

    /// Closes every connection of a user (close 1000), on every node in cluster mode;
    /// returns how many.
    pub async fn disconnect_user(&self, user: &str) -> Result<usize, EngineError> {
        self.disconnect(&Scope::User(user.into())).await
    }

    /// Closes every connection of every member of a project (membership store or token
    /// claim, close 1000), on every node in cluster mode; returns how many.
    pub async fn disconnect_project(&self, project: &str) -> Result<usize, EngineError> {
        self.disconnect(&Scope::Project(project.into())).await
    }

    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError> {
        self.inner.broker.disconnect(scope).await
    }
}
