//! Topic presence and history over HTTP: 404 `not_found` for a topic whose namespace keeps
//! none. No namespace keeps history until that engine lands.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::admin::Admin;
use super::error::ApiError;
use crate::node::Herald;

fn checked(topic: &str) -> Result<(), ApiError> {
    crate::topic::validate(topic).map_err(ApiError::bad_request)
}

/// `GET /api/v1/topics/{topic}/presence`.
pub async fn presence(
    _: Admin,
    State(node): State<Herald>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked(&topic)?;
    if !node.has_presence(&topic) {
        return Err(ApiError::not_found(format!(
            "`{topic}` has no presence: its namespace does not enable it"
        )));
    }
    let users = node.presence(&topic).await?;
    Ok(Json(serde_json::json!({
        "topic": topic,
        "users": crate::connection::presence_users(&users),
    })))
}

/// `GET /api/v1/topics/{topic}/history?since=&limit=`.
pub async fn history(
    _: Admin,
    State(_node): State<Herald>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked(&topic)?;
    Err(ApiError::not_found(format!("`{topic}` keeps no history")))
}
