//! The calls an embedding app makes from anywhere in its code (seed 000's
//! `websocket.BroadcastToUser(...)`): one per scope, plus disconnects and the router.

use serde::Serialize;

use super::{Herald, Published};
use crate::engine::EngineError;
use crate::publication::{Publication, Scope};

fn to_value(data: impl Serialize) -> Result<serde_json::Value, EngineError> {
    serde_json::to_value(data).map_err(|e| EngineError(format!("data is not JSON: {e}")))
}

impl Herald {
    async fn send_to(
        &self,
        scope: Scope,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.send(Publication::new(scope, event, to_value(data)?))
            .await
    }

    /// Sends `event` with `data` to every authenticated connection.
    pub async fn broadcast_to_all(
        &self,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.send_to(Scope::All, event, data).await
    }

    /// Sends to every connection of one user (all tabs and devices); kept in the user's
    /// offline inbox when they have none.
    pub async fn broadcast_to_user(
        &self,
        user: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.send_to(Scope::User(user.into()), event, data).await
    }

    /// Sends to every connection whose role is `role`.
    pub async fn broadcast_to_role(
        &self,
        role: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.send_to(Scope::Role(role.into()), event, data).await
    }

    /// Sends to every connection of every member of `project` (membership store or token
    /// claim), once each.
    pub async fn broadcast_to_project(
        &self,
        project: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        self.send_to(Scope::Project(project.into()), event, data)
            .await
    }

    /// Publishes to a topic's subscribers (with an offset when the topic keeps history).
    pub async fn publish(
        &self,
        topic: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Published, EngineError> {
        crate::topic::validate(topic).map_err(EngineError)?;
        self.send_to(Scope::Topic(topic.into()), event, data).await
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
        match &self.inner.cluster {
            Some(cluster) => cluster.broker.disconnect(scope).await,
            None => self.local_delivery().disconnect(scope).await,
        }
    }

    /// Every route Herald serves (`/ws`, `/api/v1/...`, health, metrics), to merge into the
    /// app's own axum router. Serve it with [`serve`](Self::serve) for the fastest fan-out;
    /// with `axum::serve`, use `into_make_service_with_connect_info::<SocketAddr>()` for per-IP
    /// limits and remote addresses in logs.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }

    /// Serves `app` (this node's [`router`](Self::router), merged with the app's own routes
    /// if any) over HTTP/1.1 on `listener` until `shutdown` resolves; then stops accepting and
    /// waits for requests in flight. WebSockets upgraded here are written by the node straight
    /// from their queues (docs/BENCHMARKS.md); call [`shutdown`](Self::shutdown) after this
    /// returns to close them with 1001.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let limits = &self.config().limits;
        let http = crate::http::HttpLimits {
            ip_slots: self.slots().ip.clone(),
            header_timeout: limits.http_header_timeout,
            idle_timeout: limits.http_idle_timeout,
        };
        crate::http::serve(listener, app, shutdown, http).await
    }

    /// The browser console: `/` (token input, live messages, subscriptions, presence, an
    /// admin view) and the JS client at `/herald.js`. `herald serve` serves it beside
    /// [`router`](Self::router); an embedding app merges it only if it wants it at its `/`.
    pub fn console_router(&self) -> axum::Router {
        crate::http::console_router(self.clone())
    }
}
