//! The server API rows built so far: publish and project membership (PROTOCOL.md section 11).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

use super::admin::Admin;
use super::error::ApiError;
use crate::node::Herald;
use crate::publication::{Publication, Scope};

/// Parses a JSON object body, answering 400 `invalid_message` when it is not one.
fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// A string field, or a number kept as its text (ids may be either).
fn text_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::bad_request(format!("`{name}` must be a string"))),
    }
}

/// `POST /api/v1/publish` `{scope, target, type, data}` → `{id, recipients}`.
pub async fn publish(
    _: Admin,
    State(node): State<Herald>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let map = json_object(&body)?;
    let scope_name =
        text_field(&map, "scope")?.ok_or_else(|| ApiError::bad_request("missing `scope`"))?;
    let target = text_field(&map, "target")?;
    let scope = Scope::parse(&scope_name, target.as_deref()).map_err(ApiError::bad_request)?;
    let event = match text_field(&map, "type")? {
        Some(event) if !event.is_empty() => event,
        _ => return Err(ApiError::bad_request("missing `type`")),
    };
    let data = map.get("data").cloned().unwrap_or_else(|| json!({}));
    let published = node.publish(Publication::new(scope, event, data)).await?;
    Ok(Json(
        json!({ "id": published.id, "recipients": published.recipients }),
    ))
}

/// `GET /api/v1/projects/{id}/members` → `{project, members}`.
pub async fn members(
    _: Admin,
    State(node): State<Herald>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let members = node.membership().members(&project).await?;
    Ok(Json(json!({ "project": project, "members": members })))
}

/// `PUT /api/v1/projects/{id}/members/{user_id}` → `{project, user_id, added}`.
pub async fn add_member(
    _: Admin,
    State(node): State<Herald>,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let added = node.membership().add(&project, &user).await?;
    Ok(Json(
        json!({ "project": project, "user_id": user, "added": added }),
    ))
}

/// `DELETE /api/v1/projects/{id}/members/{user_id}` → `{project, user_id, removed}`.
pub async fn remove_member(
    _: Admin,
    State(node): State<Herald>,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let removed = node.membership().remove(&project, &user).await?;
    Ok(Json(
        json!({ "project": project, "user_id": user, "removed": removed }),
    ))
}
