//! The bodies of the HTTP API's answers (docs/PROTOCOL.md, section 11), each a typed struct,
//! so no other module spells a wire field. `presence` and `history` answer with the WebSocket
//! replies' data ([`super::replies`]).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{ErrorCode, ErrorData};

/// `{"error": {"code", "message"}}`: every API error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: ErrorData<'a>,
}

impl<'a> ErrorBody<'a> {
    /// An error body with this code and message.
    pub fn new(code: ErrorCode, message: &'a str) -> Self {
        Self {
            error: ErrorData {
                code,
                message,
                topic: None,
            },
        }
    }

    /// As a JSON value (a batch's result).
    pub fn to_value(&self) -> Value {
        to_value(self)
    }
}

/// A body as a JSON value; serializing these structs of strings and numbers cannot fail.
pub fn to_value(body: impl Serialize) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// `POST /api/v1/publish` (and each batch item, `projects/{id}/message`): `{id, recipients,
/// offset?, queued?}`.
#[derive(Debug, Serialize)]
pub struct PublishAnswer<'a> {
    /// The publication's id.
    pub id: &'a str,
    /// Connections it was queued to on the answering node.
    pub recipients: usize,
    /// Its offset, for a topic with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `true` when it went to an offline user's inbox (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

impl PublishAnswer<'_> {
    /// As a JSON value (a batch's result).
    pub fn to_value(&self) -> Value {
        to_value(self)
    }
}

/// `POST /api/v1/users/{id}/message`: `{id, recipients, queued}` (`queued` always present).
#[derive(Debug, Serialize)]
pub struct UserMessageAnswer<'a> {
    /// The publication's id.
    pub id: &'a str,
    /// Connections it was queued to on the answering node.
    pub recipients: usize,
    /// Whether it went to the user's offline inbox.
    pub queued: bool,
}

/// `POST /api/v1/publish/batch`: `{results}`, one per message, in order.
#[derive(Debug, Serialize)]
pub struct BatchAnswer {
    /// A [`PublishAnswer`] or an [`ErrorBody`] per message.
    pub results: Vec<Value>,
}

/// One live connection in `GET /api/v1/connections`.
#[derive(Debug, Serialize)]
pub struct ConnectionInfo<'a> {
    /// Its id.
    pub client_id: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The role.
    pub role: &'a str,
    /// The client's address, when known.
    pub remote_addr: Option<String>,
    /// When it connected (RFC 3339, milliseconds).
    pub connected_at: String,
    /// Its topics, sorted.
    pub topics: Vec<String>,
}

/// `GET /api/v1/connections/count`: `{count}`.
#[derive(Debug, Serialize)]
pub struct Count {
    /// How many.
    pub count: usize,
}

/// The users/projects `disconnect` answers: `{disconnected}`.
#[derive(Debug, Serialize)]
pub struct Disconnected {
    /// Connections closed.
    pub disconnected: usize,
}

/// `GET /api/v1/projects/{id}/members`: `{project, members}`.
#[derive(Debug, Serialize)]
pub struct Members<'a> {
    /// The project.
    pub project: &'a str,
    /// Its members, sorted.
    pub members: Vec<String>,
}

/// `PUT` / `DELETE /api/v1/projects/{id}/members/{user_id}`: `{project, user_id, added}` or
/// `{project, user_id, removed}`.
#[derive(Debug, Serialize)]
pub struct MemberChange<'a> {
    /// The project.
    pub project: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// Whether the user was not a member before (`PUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    /// Whether the user was a member before (`DELETE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
}

/// The user-management API's short stats: `{total_clients, by_role, timestamp?}`.
#[derive(Debug, Serialize)]
pub struct RoleCounts {
    /// Authenticated connections.
    pub total_clients: usize,
    /// Of which, by role.
    pub by_role: BTreeMap<String, usize>,
    /// When, on `GET /ws/stats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `POST /ws/broadcast`: `{success, message, recipients, stats}`.
#[derive(Debug, Serialize)]
pub struct BroadcastAnswer {
    /// Always true on a 2xx.
    pub success: bool,
    /// For people.
    pub message: &'static str,
    /// Connections reached on the answering node.
    pub recipients: usize,
    /// The node's connections by role.
    pub stats: RoleCounts,
}

/// `GET /health` and `GET /ready`: `{status, error?}`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Auto-Devs' `GET /api/v1/websocket/metrics`: `{hub, middleware, offline_messages}`.
#[derive(Debug, Serialize)]
pub struct WebsocketMetrics {
    /// Connections and messages.
    pub hub: HubFigures,
    /// Rate limits and errors.
    pub middleware: WebsocketMiddleware,
    /// The offline inboxes.
    pub offline_messages: OfflineFigures,
}

/// `hub` of [`WebsocketMetrics`].
#[derive(Debug, Serialize)]
pub struct HubFigures {
    /// Live connections.
    pub active_connections: usize,
    /// Connections registered since the node started.
    pub total_connections: u64,
    /// Frames sent to clients.
    pub messages_sent: u64,
    /// Frames received from clients.
    pub messages_received: u64,
    /// Publications fanned out.
    pub broadcasts_sent: u64,
}

/// `middleware` of [`WebsocketMetrics`].
#[derive(Debug, Serialize)]
pub struct WebsocketMiddleware {
    /// The per-connection command rate.
    pub rate_limiter: RateLimiterFigures,
    /// The errors sent to clients.
    pub error_handler: ErrorHandlerFigures,
}

/// `middleware.rate_limiter` of [`WebsocketMetrics`].
#[derive(Debug, Serialize)]
pub struct RateLimiterFigures {
    /// One per live connection.
    pub active_limiters: usize,
    /// `limits.rate_per_sec`.
    pub requests_per_second: f64,
}

/// `middleware.error_handler` of [`WebsocketMetrics`].
#[derive(Debug, Serialize)]
pub struct ErrorHandlerFigures {
    /// Connections sent at least one `error` since the node started.
    pub connections_with_errors: u64,
    /// `error` frames sent since the node started.
    pub total_errors: u64,
}

/// `offline_messages` of [`WebsocketMetrics`].
#[derive(Debug, Serialize)]
pub struct OfflineFigures {
    /// Messages waiting in inboxes.
    pub total_messages: u64,
    /// Users with at least one.
    pub users_with_messages: u64,
}
