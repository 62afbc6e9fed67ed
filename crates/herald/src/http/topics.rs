//! Topic presence and history over HTTP: 404 `not_found` for a topic whose namespace keeps
//! none.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::Value;

use super::admin::Admin;
use super::body::answer;
use super::error::ApiError;
use crate::engine::presence_reply;
use crate::node::Herald;
use crate::protocol::command::{HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use crate::protocol::Since;

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
    Ok(answer(presence_reply(&topic, &users)))
}

/// `GET /api/v1/topics/{topic}/history?since=&limit=&epoch=`: messages after offset `since`
/// (of `epoch` when given; from the oldest kept when the epoch is not the stream's).
pub async fn history(
    _: Admin,
    State(node): State<Herald>,
    Path(topic): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    checked(&topic)?;
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("`{name}` must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let since = number("since")?;
    let limit = number("limit")?.map_or(HISTORY_DEFAULT_LIMIT, |l| {
        (l as usize).clamp(1, HISTORY_MAX_LIMIT)
    });
    if node.retention(&topic).is_none() {
        return Err(ApiError::not_found(format!("`{topic}` keeps no history")));
    }
    let since = match (since, query.get("epoch")) {
        (None, _) => None,
        (Some(offset), Some(epoch)) => Some(Since {
            offset,
            epoch: epoch.clone(),
        }),
        // No epoch given: the offset is taken in the stream's current epoch.
        (Some(offset), None) => {
            let current = node.history(&topic, None, 1).await?;
            current.map(|page| Since {
                offset,
                epoch: page.position.epoch,
            })
        }
    };
    match node.history(&topic, since.as_ref(), limit).await? {
        Some(page) => Ok(answer(page.reply(&topic))),
        None => Err(ApiError::not_found(format!("`{topic}` keeps no history"))),
    }
}
