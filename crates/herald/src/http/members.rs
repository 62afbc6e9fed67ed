//! Project membership over HTTP, backed by the `Membership` engine.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::body::answer;

use super::admin::Admin;
use super::error::ApiError;
use crate::node::Herald;
use crate::protocol::answers::{MemberChange, Members};

/// `GET /api/v1/projects/{id}/members` → `{project, members}`.
pub async fn list(
    _: Admin,
    State(node): State<Herald>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let members = node.membership().members(&project).await?;
    Ok(answer(Members {
        project: &project,
        members,
    }))
}

/// `PUT /api/v1/projects/{id}/members/{user_id}` → `{project, user_id, added}`.
pub async fn add(
    _: Admin,
    State(node): State<Herald>,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let added = node.membership().add(&project, &user).await?;
    Ok(answer(MemberChange {
        project: &project,
        user_id: &user,
        added: Some(added),
        removed: None,
    }))
}

/// `DELETE /api/v1/projects/{id}/members/{user_id}` → `{project, user_id, removed}`.
pub async fn remove(
    _: Admin,
    State(node): State<Herald>,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let removed = node.remove_member(&project, &user).await?;
    Ok(answer(MemberChange {
        project: &project,
        user_id: &user,
        added: None,
        removed: Some(removed),
    }))
}
