//! JSON request bodies: a size limit answered with 413, anything else malformed with 400, both
//! with the JSON error body every endpoint uses.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::node::Herald;
use crate::protocol::ErrorCode;

/// A request body that must be one JSON object.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<Herald> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, node: &Herald) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, node)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::MessageTooLarge,
                        format!(
                            "the request body is larger than {} bytes",
                            node.config().limits.max_body_size
                        ),
                    )
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        parse_object(&bytes).map(JsonObject)
    }
}

/// Parses a JSON object, answering 400 `invalid_message` when it is not one.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// A string field, or a number kept as its text (ids may be either).
pub fn text_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::bad_request(format!("`{name}` must be a string"))),
    }
}

/// The required, non-empty event name in `type`.
pub fn event_type(map: &Map<String, Value>) -> Result<String, ApiError> {
    match text_field(map, "type")? {
        Some(event) if !event.is_empty() => Ok(event),
        _ => Err(ApiError::bad_request("missing `type`")),
    }
}

/// `data`, defaulting to `{}`.
pub fn data_field(map: &Map<String, Value>) -> Value {
    map.get("data")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// An answer body (a typed struct of `protocol::answers`) as JSON.
pub fn answer(body: impl serde::Serialize) -> axum::Json<Value> {
    axum::Json(crate::protocol::answers::to_value(body))
}
