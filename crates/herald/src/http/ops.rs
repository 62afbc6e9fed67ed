//! What operators ask of a node: stats, connection listings and counts, disconnects, and the
//! user-management API's `/ws/stats` and `/ws/broadcast`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::Value;

use super::admin::Admin;
use super::body::{answer, text_field, JsonObject};
use super::error::ApiError;
use crate::hub::ConnHandle;
use crate::node::Herald;
use crate::protocol::answers::{BroadcastAnswer, ConnectionInfo, Count, Disconnected, RoleCounts};
use crate::protocol::replies::SystemAlert;
use crate::publication::{Publication, Scope};

/// `GET /api/v1/stats`.
pub async fn stats(
    _: Admin,
    State(node): State<Herald>,
) -> Result<Json<crate::node::Stats>, ApiError> {
    Ok(Json(node.cluster_stats().await?))
}

/// The connections a `?user=` / `?project=` / `?topic=` filter selects (all when none).
async fn filtered(
    node: &Herald,
    filters: &HashMap<String, String>,
) -> Result<Vec<Arc<ConnHandle>>, ApiError> {
    let scope = if let Some(user) = filters.get("user") {
        Scope::User(user.clone())
    } else if let Some(project) = filters.get("project") {
        Scope::Project(project.clone())
    } else if let Some(topic) = filters.get("topic") {
        Scope::Topic(topic.clone())
    } else {
        Scope::All
    };
    Ok(node.connections_in(&scope).await?)
}

fn describe(conn: &ConnHandle) -> Value {
    let who = conn.principal();
    let info = ConnectionInfo {
        client_id: &conn.client_id,
        user_id: &who.user_id,
        role: &who.role,
        remote_addr: conn
            .remote_addr
            .map(|a| crate::metrics::Peer(Some(a)).to_string()),
        connected_at: humantime::format_rfc3339_millis(conn.connected_at).to_string(),
        topics: conn.topics(),
    };
    serde_json::to_value(info).unwrap_or(Value::Null)
}

/// `GET /api/v1/connections` `?user=` `?project=` → a list, oldest first.
pub async fn connections(
    _: Admin,
    State(node): State<Herald>,
    Query(filters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut conns = filtered(&node, &filters).await?;
    conns.sort_by_key(|c| c.id);
    Ok(Json(Value::Array(
        conns.iter().map(|c| describe(c)).collect(),
    )))
}

/// `GET /api/v1/connections/count` `?user=` `?project=` `?topic=` → `{count}`.
pub async fn count(
    _: Admin,
    State(node): State<Herald>,
    Query(filters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let count = filtered(&node, &filters).await?.len();
    Ok(answer(Count { count }))
}

/// `POST /api/v1/users/{id}/disconnect` → `{disconnected}`.
pub async fn disconnect_user(
    _: Admin,
    State(node): State<Herald>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let disconnected = node.disconnect_user(&user).await?;
    Ok(answer(Disconnected { disconnected }))
}

/// `POST /api/v1/projects/{id}/disconnect` → `{disconnected}`.
pub async fn disconnect_project(
    _: Admin,
    State(node): State<Herald>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let disconnected = node.disconnect_project(&project).await?;
    Ok(answer(Disconnected { disconnected }))
}

/// The user-management API's short stats: `{total_clients, by_role}` of this node.
fn role_counts(node: &Herald) -> RoleCounts {
    let snapshot = node.hub().snapshot();
    RoleCounts {
        total_clients: snapshot.connections,
        by_role: snapshot.by_role,
        timestamp: None,
    }
}

/// `GET /ws/stats`: `{total_clients, by_role, timestamp}`.
pub async fn ws_stats(_: Admin, State(node): State<Herald>) -> Json<Value> {
    answer(RoleCounts {
        timestamp: Some(crate::protocol::now_timestamp()),
        ..role_counts(&node)
    })
}

/// `POST /ws/broadcast` `{message, priority, metadata}`: a `system.alert` to everyone.
pub async fn ws_broadcast(
    _: Admin,
    State(node): State<Herald>,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let message = match text_field(&map, "message")? {
        Some(message) if !message.is_empty() => message,
        _ => return Err(ApiError::bad_request("missing `message`")),
    };
    let priority = text_field(&map, "priority")?.unwrap_or_else(|| "normal".into());
    let alert = SystemAlert {
        message: &message,
        priority: &priority,
        metadata: map.get("metadata").filter(|m| !m.is_null()),
    };
    let published = node
        .publish(Publication::new(
            Scope::All,
            SystemAlert::EVENT,
            alert.data(),
        ))
        .await?;
    Ok(answer(BroadcastAnswer {
        success: true,
        message: "Broadcast sent successfully",
        recipients: published.recipients,
        stats: role_counts(&node),
    }))
}
