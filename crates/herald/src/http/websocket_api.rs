//! Auto-Devs' management API under `/api/v1/websocket/` (served with `profile = "auto-devs"`,
//! docs/MIGRATING.md): the same operations as the canonical server API, at the product's paths,
//! and its metrics in the product's JSON shape. Each route but `health` takes the same
//! credentials as the server API.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde_json::Value;

use super::admin::Admin;
use super::body::{answer, data_field, event_type, JsonObject};
use super::error::ApiError;
use super::{api, ops, Routes};
use crate::node::Herald;
use crate::protocol::answers::{
    Count, ErrorHandlerFigures, HubFigures, OfflineFigures, RateLimiterFigures, WebsocketMetrics,
    WebsocketMiddleware,
};
use crate::publication::{Publication, Scope};

/// The product's routes, added to the server API's.
pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .add(&["GET"], "/api/v1/websocket/health", get(super::ready))
        .add(&["GET"], "/api/v1/websocket/metrics", get(metrics))
        .add(&["GET"], "/api/v1/websocket/stats", get(ops::stats))
        .add(
            &["GET"],
            "/api/v1/websocket/connections",
            get(ops::connections),
        )
        .add(
            &["GET"],
            "/api/v1/websocket/connections/count",
            get(ops::count),
        )
        .add(
            &["GET"],
            "/api/v1/websocket/projects/{id}/connections/count",
            get(project_count),
        )
        .add(
            &["GET"],
            "/api/v1/websocket/users/{id}/connections/count",
            get(user_count),
        )
        .add(&["POST"], "/api/v1/websocket/broadcast", post(broadcast))
        .add(
            &["POST"],
            "/api/v1/websocket/users/{id}/disconnect",
            post(ops::disconnect_user),
        )
        .add(
            &["POST"],
            "/api/v1/websocket/projects/{id}/disconnect",
            post(ops::disconnect_project),
        )
        .add(
            &["POST"],
            "/api/v1/websocket/users/{id}/message",
            post(api::user_message),
        )
        .add(
            &["POST"],
            "/api/v1/websocket/projects/{id}/message",
            post(api::project_message),
        )
}

/// `GET /api/v1/websocket/metrics`: this node's figures as Auto-Devs reported them.
async fn metrics(_: Admin, State(node): State<Herald>) -> Result<Json<Value>, ApiError> {
    let snapshot = node.hub().snapshot();
    let counters = &node.hub().counters;
    let offline = node.inbox_totals().await?;
    Ok(answer(WebsocketMetrics {
        hub: HubFigures {
            active_connections: snapshot.connections,
            total_connections: counters.opened.load(Relaxed),
            messages_sent: counters.sent.load(Relaxed),
            messages_received: counters.received.load(Relaxed),
            broadcasts_sent: counters.publications.load(Relaxed),
        },
        middleware: WebsocketMiddleware {
            // Each connection has its own token bucket.
            rate_limiter: RateLimiterFigures {
                active_limiters: snapshot.connections,
                requests_per_second: f64::from(node.config().limits.rate_per_sec),
            },
            error_handler: ErrorHandlerFigures {
                connections_with_errors: counters.connections_with_errors.load(Relaxed),
                total_errors: counters.errors.load(Relaxed),
            },
        },
        offline_messages: OfflineFigures {
            total_messages: offline.messages,
            users_with_messages: offline.users,
        },
    }))
}

/// `GET /api/v1/websocket/projects/{id}/connections/count` → `{count}`.
async fn project_count(
    _: Admin,
    State(node): State<Herald>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    count_in(&node, Scope::Project(project)).await
}

/// `GET /api/v1/websocket/users/{id}/connections/count` → `{count}`.
async fn user_count(
    _: Admin,
    State(node): State<Herald>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    count_in(&node, Scope::User(user)).await
}

/// This node's live connections in `scope`, as `{count}`.
async fn count_in(node: &Herald, scope: Scope) -> Result<Json<Value>, ApiError> {
    let count = node.count_in(&scope).await?;
    Ok(answer(Count { count }))
}

/// `POST /api/v1/websocket/broadcast` `{type, data}`: to everyone → `{id, recipients}`.
async fn broadcast(
    _: Admin,
    State(node): State<Herald>,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let publication = Publication::new(Scope::All, event_type(&map)?, data_field(&map));
    let published = node.publish(publication).await?;
    Ok(Json(api::publish_answer(&published)))
}
