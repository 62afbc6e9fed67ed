//! HTTP errors: `{"error": {"code", "message"}}` with a 4xx or 5xx status, mapped here once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;
use crate::protocol::answers::ErrorBody;
use crate::protocol::ErrorCode;

/// An API failure as the caller sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ProcessingError,
            e.to_string(),
        )
    }
}

impl From<crate::PublishError> for ApiError {
    fn from(e: crate::PublishError) -> Self {
        match e {
            crate::PublishError::Engine(e) => e.into(),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl ApiError {
    /// `{"error": {"code", "message"}}`, the body of every API error.
    pub fn body(&self) -> serde_json::Value {
        ErrorBody::new(self.code, &self.message).to_value()
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
