//! The HTTP face of a node: the `/ws` upgrade, the server API under `/api/v1`, and health.
//! The app is a function ([`router`]) that the server binary and tests call alike.

mod admin;
mod api;
mod error;
mod ws;

use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;

use crate::node::Herald;

/// Every route Herald serves, with the node as state.
pub fn router(node: Herald) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/ws/connect", get(ws::upgrade))
        .route("/api/v1/publish", post(api::publish))
        .route("/api/v1/projects/{id}/members", get(api::members))
        .route(
            "/api/v1/projects/{id}/members/{user_id}",
            put(api::add_member).delete(api::remove_member),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(node)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once the router serves: the embedded engines were opened before it was built.
async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "status": "ready" }))
}
