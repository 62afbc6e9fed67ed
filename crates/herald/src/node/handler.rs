//! Custom message types: an app registers `on("chat", handler)` and Herald hands it every
//! client message of that type, with who sent it (Conduit's `RegisterHandler`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::auth::Principal;
use crate::hub::ConnHandle;
use crate::node::Herald;
use crate::protocol::{reply_frame, ErrorCode};

/// A client message of a custom type, with its sender; the handler's argument.
pub struct Incoming {
    /// The message type (`type`), the name the handler was registered under.
    pub kind: String,
    /// The whole message object as the client sent it (without `ref`).
    pub message: Value,
    /// Who sent it.
    pub principal: Principal,
    /// The sending connection's `client_id`.
    pub client_id: String,
    pub(crate) reference: Option<Value>,
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) herald: Herald,
    /// What the handler asked of the sender's connection, done when it returns.
    pub(crate) actions: Arc<std::sync::Mutex<Vec<ConnAction>>>,
}

/// A change to the sender's connection that a handler asks for ([`Incoming::subscribe`],
/// [`Incoming::unsubscribe`]); the connection makes it once the handler returned, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnAction {
    Subscribe(String),
    Unsubscribe(String),
}

impl Incoming {
    /// The message's `data` field (`null` when absent).
    pub fn data(&self) -> &Value {
        self.message.get("data").unwrap_or(&Value::Null)
    }

    /// Sends a reply to the sending connection only, carrying the message's `ref`.
    pub fn reply(&self, kind: &str, data: impl Serialize) {
        self.conn
            .push(reply_frame(kind, data, self.reference.as_ref()));
    }

    /// The node, to publish, broadcast or look things up.
    pub fn herald(&self) -> &Herald {
        &self.herald
    }

    /// Subscribes the sending connection (only it, not the user's other tabs) to `topic`
    /// once the handler returns, as if the client had sent `subscribe`: the same rules
    /// apply, and the client gets `subscribed` or an `error` naming the topic.
    pub fn subscribe(&self, topic: &str) {
        crate::sync::lock(&self.actions).push(ConnAction::Subscribe(topic.to_string()));
    }

    /// Unsubscribes the sending connection from `topic` once the handler returns, as if the
    /// client had sent `unsubscribe` (it gets `unsubscribed`).
    pub fn unsubscribe(&self, topic: &str) {
        crate::sync::lock(&self.actions).push(ConnAction::Unsubscribe(topic.to_string()));
    }

    /// Closes the sending connection only (close 1000 `disconnected by the server`), after
    /// what is queued for it, the handler's reply included.
    pub fn close(&self) {
        self.conn.close(crate::hub::CloseReason::DISCONNECTED);
    }
}

/// A handler's refusal: the client receives `error` with this code and message (and the
/// message's `ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// One of PROTOCOL.md's error codes.
    pub code: ErrorCode,
    /// Text for the client.
    pub message: String,
}

impl HandlerError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `invalid_message`: the message's content is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }

    /// `forbidden`: the sender may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `processing_error`: the handler failed.
    pub fn processing(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ProcessingError, message)
    }
}

/// An engine's failure in a handler (`?` on a Herald call): `processing_error`.
impl From<crate::engine::EngineError> for HandlerError {
    fn from(e: crate::engine::EngineError) -> Self {
        Self::processing(e.to_string())
    }
}

/// A failed publish in a handler: `invalid_message` for a bad topic or data, else
/// `processing_error`.
impl From<super::handle::PublishError> for HandlerError {
    fn from(e: super::handle::PublishError) -> Self {
        use super::handle::PublishError;
        match e {
            PublishError::InvalidTopic(_)
            | PublishError::Encode(_)
            | PublishError::InvalidKey(_) => Self::invalid(e.to_string()),
            PublishError::Engine(e) => e.into(),
        }
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

type BoxedFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A registered handler, type-erased.
#[derive(Clone)]
pub(crate) struct Handler(Arc<dyn Fn(Incoming) -> BoxedFuture + Send + Sync>);

impl Handler {
    pub(crate) fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Self(Arc::new(move |incoming| Box::pin(f(incoming))))
    }

    pub(crate) async fn call(&self, incoming: Incoming) -> HandlerResult {
        (self.0)(incoming).await
    }
}
