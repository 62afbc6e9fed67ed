//! The calls an embedding app makes from anywhere in its code (Pulse's
//! `websocket.BroadcastToUser(...)`): one per scope, plus disconnects. The router and the
//! server are in `http` (`Herald::router`, `Herald::serve`).

use serde::Serialize;

use super::{Herald, Published};
use crate::engine::EngineError;
use crate::publication::{Publication, Scope};

fn to_value(data: impl Serialize) -> Result<serde_json::Value, EngineError> {
    serde_json::to_value(data).map_err(|e| EngineError(format!("data is not JSON: {e}")))
}

impl Herald {
    async fn publish_to(
        &self,
        scope: Scope,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.publish(Publication::new(scope, event, to_value(data)?))
            .await
    }

    /// Sends `event` with `data` to every authenticated connection.
    pub async fn broadcast_to_all(
        &self,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.publish_to(Scope::All, event, data).await
    }

    /// Sends to every connection of one user (all tabs and devices); kept in the user's
    /// offline inbox when they have none.
    pub async fn broadcast_to_user(
        &self,
        user: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.publish_to(Scope::User(user.into()), event, data).await
    }

    /// Sends to every connection whose role is `role`.
    pub async fn broadcast_to_role(
        &self,
        role: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.publish_to(Scope::Role(role.into()), event, data).await
    }

    /// Sends to every connection of every member of `project` (membership store or token
    /// claim), once each.
    pub async fn broadcast_to_project(
        &self,
        project: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.publish_to(Scope::Project(project.into()), event, data)
            .await
    }

    /// Sends to a topic's subscribers (with an offset when the topic keeps history).
    pub async fn broadcast_to_topic(
        &self,
        topic: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        crate::topic::validate(topic).map_err(EngineError)?;
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
