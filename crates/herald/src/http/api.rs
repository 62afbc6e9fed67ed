//! Publishing over HTTP: publish, batch publish, and the direct user and project messages.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{Map, Value};

use super::admin::Admin;
use super::body::{answer, data_field, event_type, text_field, JsonObject};
use super::error::ApiError;
use crate::node::{Herald, PlacedPublish};
use crate::protocol::answers::{BatchAnswer, PublishAnswer, UserMessageAnswer};
use crate::publication::{Publication, Scope};

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// `{scope, target, type, data}` → a publication, or 400 saying what is wrong.
fn publication(map: &Map<String, Value>) -> Result<Publication, ApiError> {
    let scope_name =
        text_field(map, "scope")?.ok_or_else(|| ApiError::bad_request("missing `scope`"))?;
    let target = text_field(map, "target")?;
    let scope = Scope::parse(&scope_name, target.as_deref()).map_err(ApiError::bad_request)?;
    Ok(Publication::new(scope, event_type(map)?, data_field(map)))
}

/// The publish's `idempotency_key` field, else (for a single publish) its `Idempotency-Key`
/// header.
fn idempotency_key(
    map: &Map<String, Value>,
    headers: Option<&HeaderMap>,
) -> Result<Option<String>, ApiError> {
    if let Some(key) = text_field(map, "idempotency_key")? {
        return Ok(Some(key));
    }
    match headers.and_then(|h| h.get("idempotency-key")) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|key| Some(key.to_string()))
            .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text")),
    }
}

/// Publishes one message of a publish or a batch: once per idempotency key when it has one.
async fn publish_one(
    node: &Herald,
    map: &Map<String, Value>,
    headers: Option<&HeaderMap>,
) -> Result<crate::Published, ApiError> {
    let publication = publication(map)?;
    match idempotency_key(map, headers)? {
        Some(key) => Ok(node.publish_idempotent(&key, publication).await?),
        None => Ok(node.publish(publication).await?),
    }
}

/// `POST /api/v1/publish` → `{id, recipients}`.
pub async fn publish(
    _: Admin,
    State(node): State<Herald>,
    headers: HeaderMap,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let published = publish_one(&node, &map, Some(&headers)).await?;
    crate::metrics::publish_api(started.elapsed());
    Ok(Json(publish_answer(&published)))
}

/// `POST /api/v1/publish/batch` `{messages: [...]}` → `{results: [...]}`, one result per
/// message in order: `{id, recipients}` or `{error: {code, message}}`. A bad message does not
/// stop the others.
pub async fn publish_batch(
    _: Admin,
    State(node): State<Herald>,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let Some(Value::Array(messages)) = map.get("messages") else {
        return Err(ApiError::bad_request("`messages` must be a list"));
    };
    if messages.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} messages"
        )));
    }
    // Messages to topics with history are placed in their streams one after another and
    // awaited together, so they share commits. Any other message is published once every
    // message before it is done: the batch reaches subscribers in its order.
    let mut results = Vec::with_capacity(messages.len());
    let mut placed: Vec<(usize, PlacedPublish)> = Vec::new();
    for message in messages {
        let outcome = match message {
            Value::Object(item) => match (publication(item), idempotency_key(item, None)) {
                (Ok(p), Ok(None)) => match node.place(p).await {
                    Ok(Ok(placing)) => {
                        placed.push((results.len(), placing));
                        results.push(Value::Null);
                        continue;
                    }
                    Ok(Err(p)) => {
                        settle(&mut placed, &mut results).await;
                        node.publish(p).await.map_err(ApiError::from)
                    }
                    Err(e) => Err(ApiError::from(e)),
                },
                (Ok(p), Ok(Some(key))) => {
                    settle(&mut placed, &mut results).await;
                    node.publish_idempotent(&key, p)
                        .await
                        .map_err(ApiError::from)
                }
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            },
            _ => Err(ApiError::bad_request("each message must be a JSON object")),
        };
        results.push(match outcome {
            Ok(published) => publish_answer(&published),
            Err(e) => e.body(),
        });
    }
    settle(&mut placed, &mut results).await;
    Ok(answer(BatchAnswer { results }))
}

/// Awaits the placed messages of a batch, in order, and writes their answers in their slots.
async fn settle(placed: &mut Vec<(usize, PlacedPublish)>, results: &mut [Value]) {
    for (slot, placing) in placed.drain(..) {
        let answer = match placing.await {
            Ok(published) => publish_answer(&published),
            Err(e) => ApiError::from(e).body(),
        };
        if let Some(result) = results.get_mut(slot) {
            *result = answer;
        }
    }
}

/// `POST /api/v1/users/{id}/message` `{type, data}` → `{id, recipients, queued}`.
/// `queued` tells whether the message went to the user's offline inbox.
pub async fn user_message(
    _: Admin,
    State(node): State<Herald>,
    Path(user): Path<String>,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let p = Publication::new(Scope::User(user), event_type(&map)?, data_field(&map));
    let published = node.publish(p).await?;
    Ok(answer(UserMessageAnswer {
        id: &published.id,
        recipients: published.recipients,
        queued: published.queued,
    }))
}

/// `POST /api/v1/projects/{id}/message` `{type, data}` → `{id, recipients}`.
pub async fn project_message(
    _: Admin,
    State(node): State<Herald>,
    Path(project): Path<String>,
    JsonObject(map): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let p = Publication::new(Scope::Project(project), event_type(&map)?, data_field(&map));
    let published = node.publish(p).await?;
    Ok(Json(publish_answer(&published)))
}

/// `{id, recipients}`, with `offset` for topics with history and `queued: true` when the
/// event went to an offline user's inbox.
pub(super) fn publish_answer(published: &crate::Published) -> Value {
    PublishAnswer {
        id: &published.id,
        recipients: published.recipients,
        offset: published.offset,
        queued: published.queued,
    }
    .to_value()
}
