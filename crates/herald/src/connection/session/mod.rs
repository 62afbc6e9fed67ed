//! The commands of an authenticated connection, dispatched from one `match` in
//! [`Session::on_text`] (docs/PROTOCOL.md, sections 3 and 4), one file per family: `auth`
//! (refresh, expiry), `subscribe` (subscribe, resume, unsubscribe), `streams` (publish,
//! history, ack), `presence`. Every reply is queued on the connection, never written here.

mod auth;
mod presence;
mod streams;
mod subscribe;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;

use super::limits::{ErrorWindow, TokenBucket};
use super::Next;
use crate::hub::ConnHandle;
use crate::node::{ConnAction, Herald, RpcVerdict};
use crate::protocol::replies::{Echo, Pong, Reply, Status};
use crate::protocol::{
    error_frame, topic_error_frame, Command, Encoding, ErrorCode, Frame, Request,
};

/// An authenticated connection's command state and limits.
pub(super) struct Session {
    node: Herald,
    conn: Arc<ConnHandle>,
    rate: TokenBucket,
    errors: ErrorWindow,
    too_many_errors: bool,
    /// The command being handled already counted toward `max_errors` (a command counts once,
    /// however many of a batch's topics it was refused).
    counted: bool,
    /// The test-only echo endpoint: data frames go back as they came.
    echo: bool,
    /// An anonymous reader: the only topics it holds (it sends nothing but `ping`, `echo`
    /// and `status`).
    reads_only: Option<Vec<String>>,
    /// This connection was sent an `error` (counted once in `connections_with_errors`).
    had_errors: bool,
}

impl Session {
    pub fn new(node: Herald, conn: Arc<ConnHandle>) -> Self {
        let limits = &node.config().limits;
        Self {
            rate: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
            errors: ErrorWindow::new(limits.max_errors, limits.error_window),
            too_many_errors: false,
            counted: false,
            echo: false,
            reads_only: None,
            had_errors: false,
            node,
            conn,
        }
    }

    /// A session of the test-only echo endpoint.
    pub fn echo(node: Herald, conn: Arc<ConnHandle>) -> Self {
        Self {
            echo: true,
            ..Self::new(node, conn)
        }
    }

    /// Makes this session an anonymous reader of `topics`.
    pub fn read_only(&mut self, topics: Vec<String>) {
        self.reads_only = Some(topics);
    }

    /// Whether the errors this connection caused reached `max_errors` within `error_window`.
    pub fn too_many_errors(&self) -> bool {
        self.too_many_errors
    }

    pub fn node(&self) -> &Herald {
        &self.node
    }

    pub fn conn(&self) -> &Arc<ConnHandle> {
        &self.conn
    }

    /// Queues a frame for this connection (counted in `messages_sent`).
    fn queue(&self, frame: Frame) {
        if self.conn.push(frame) {
            self.node
                .hub()
                .counters
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Queues a reply to the command whose `ref` is `reference`.
    fn reply(&self, reply: &impl Reply, reference: Option<&Value>) {
        self.queue(reply.frame(reference));
    }

    /// Queues an `error`; an invalid, unknown or forbidden command counts toward the
    /// connection's error threshold, once per command.
    fn error(&mut self, code: ErrorCode, message: &str, reference: Option<&Value>) {
        self.queue(error_frame(code, message, reference));
        self.count(code);
    }

    /// Counts an `error` sent, and this connection among those that got one.
    fn tally_error(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.node.hub().counters;
        counters.errors.fetch_add(1, Relaxed);
        if !self.had_errors {
            self.had_errors = true;
            counters.connections_with_errors.fetch_add(1, Relaxed);
        }
    }

    /// Queues an `error` about one topic (`data.topic` names it), counted like [`Self::error`].
    fn topic_error(
        &mut self,
        code: ErrorCode,
        topic: &str,
        message: &str,
        reference: Option<&Value>,
    ) {
        self.queue(topic_error_frame(code, message, Some(topic), reference));
        self.count(code);
    }

    /// `rate_limited` is not counted: a client told to slow down that does is never closed.
    /// One that keeps sending through a whole burst of refusals is ([`Self::take_rate`]).
    fn count(&mut self, code: ErrorCode) {
        self.tally_error();
        let counts = matches!(
            code,
            ErrorCode::InvalidMessage | ErrorCode::UnknownType | ErrorCode::Forbidden
        );
        if counts && !self.counted {
            self.counted = true;
            if self.errors.record() {
                self.too_many_errors = true;
            }
        }
    }

    /// Takes a token from the command rate; a refusal after more than `rate_burst` refusals in
    /// a row ends the connection like too many errors (unless `max_errors` is 0).
    fn take_rate(&mut self) -> bool {
        if self.rate.take() {
            return true;
        }
        crate::metrics::dropped("rate_limited");
        if self.rate.ignored() && self.node.config().limits.max_errors > 0 {
            self.too_many_errors = true;
        }
        false
    }

    /// A WebSocket ping from the client (its pong is already queued). Pings share the command
    /// rate, with no error frame when refused, so a ping flood is closed like a command flood
    /// (`too many errors`).
    pub fn on_ping(&mut self) {
        self.conn.touch_heartbeat();
        self.take_rate();
    }

    /// A binary frame: a command in MessagePack on a `msgpack` connection, else refused.
    pub async fn on_binary(&mut self, bytes: axum::body::Bytes) -> Next {
        if self.echo {
            self.queue(axum::extract::ws::Message::Binary(bytes));
            return Next::Continue;
        }
        if let Some(text) = self.conn.encoding.decode_binary(&bytes) {
            return self.on_text(Utf8Bytes::from(text)).await;
        }
        crate::metrics::client_message("binary");
        crate::metrics::dropped("invalid");
        let message = match self.conn.encoding {
            Encoding::Json => "binary frames need the msgpack encoding",
            Encoding::MsgPack => "a binary frame must hold one MessagePack value",
        };
        self.error(ErrorCode::InvalidMessage, message, None);
        Next::Continue
    }

    /// Handles one text frame and says what the loop must do next.
    pub async fn on_text(&mut self, text: Utf8Bytes) -> Next {
        if self.echo {
            self.queue(axum::extract::ws::Message::Text(text));
            return Next::Continue;
        }
        self.counted = false;
        let Request { command, reference } = match Request::parse(&text) {
            Ok(request) => request,
            Err(rejection) => {
                crate::metrics::client_message("invalid");
                crate::metrics::dropped("invalid");
                self.error(
                    rejection.code,
                    &rejection.message,
                    rejection.reference.as_ref(),
                );
                return Next::Continue;
            }
        };
        crate::metrics::client_message(command.name());
        let reference = reference.as_ref();
        if !self.take_rate() {
            self.error(
                ErrorCode::RateLimited,
                "too many commands: slow down",
                reference,
            );
            return Next::Continue;
        }
        if self.reads_only.is_some()
            && !matches!(
                command,
                Command::Ping { .. } | Command::Echo { .. } | Command::Status
            )
        {
            let text = "an anonymous connection only reads the topics of its URL: connect with a token to do more";
            self.error(ErrorCode::Forbidden, text, reference);
            return Next::Continue;
        }
        match command {
            Command::Auth { token, .. } => return self.refresh(&token, true, reference).await,
            Command::Refresh { token } => return self.refresh(&token, false, reference).await,
            Command::Subscribe {
                topic,
                since,
                style,
            } => return self.subscribe(&topic, since, style, reference).await,
            Command::SubscribeMany { topics } => {
                return self.subscribe_many(topics, reference).await
            }
            Command::Unsubscribe { topic, style } => {
                self.unsubscribe(&topic, style, reference).await
            }
            Command::Publish { topic, event, data } => {
                self.publish(topic, event, data, reference).await
            }
            Command::Presence { topic } => self.presence(&topic, reference).await,
            Command::History {
                topic,
                since,
                limit,
            } => self.history(&topic, since, limit, reference).await,
            Command::Ack { ids } => self.ack(&ids, reference).await,
            Command::Ping { data } => self.ping(data, reference),
            Command::Echo { data } => self.reply(&Echo { original: data }, reference),
            Command::Status => self.status(reference),
            Command::Custom { kind, message } => self.custom(kind, message, reference).await,
        }
        Next::Continue
    }

    /// A custom message type: the app's handler for it, or `unknown_type`.
    async fn custom(&mut self, kind: String, message: Value, reference: Option<&Value>) {
        let Some(handler) = self.node.handler(&kind) else {
            if self.node.has_rpc() {
                return self.rpc(&kind, &message, reference).await;
            }
            let text = format!("unknown message type `{kind}`");
            self.error(ErrorCode::UnknownType, &text, reference);
            return;
        };
        let actions = Arc::default();
        let incoming = crate::Incoming {
            kind,
            message,
            principal: self.conn.principal(),
            client_id: self.conn.client_id.clone(),
            reference: reference.cloned(),
            conn: self.conn.clone(),
            herald: self.node.clone(),
            actions: Arc::clone(&actions),
        };
        if let Err(e) = handler.call(incoming).await {
            self.error(e.code, &e.message, reference);
        }
        let asked = std::mem::take(&mut *crate::sync::lock(&actions));
        for action in asked {
            match action {
                ConnAction::Subscribe(topic) => {
                    self.subscribe(&topic, None, crate::protocol::ReplyStyle::Canonical, None)
                        .await;
                }
                ConnAction::Unsubscribe(topic) => {
                    self.unsubscribe(&topic, crate::protocol::ReplyStyle::Canonical, None)
                        .await;
                }
            }
        }
    }

    /// A message type for the backend's `rpc` hook: its answer goes back as
    /// `<type>.result`, nothing, or the backend's `error`.
    async fn rpc(&mut self, kind: &str, message: &Value, reference: Option<&Value>) {
        let who = self.conn.principal();
        let data = message.get("data").cloned().unwrap_or(Value::Null);
        match self
            .node
            .proxy_rpc(&self.conn.client_id, &who, kind, &data)
            .await
        {
            Ok(RpcVerdict::Result(data)) => {
                let frame =
                    crate::protocol::reply_frame(&format!("{kind}.result"), data, reference);
                self.queue(frame);
            }
            Ok(RpcVerdict::Nothing) => {}
            Ok(RpcVerdict::Error { code, message }) => {
                let error = crate::protocol::hooks::BackendError {
                    code: &code,
                    message: &message,
                };
                self.queue(crate::protocol::error_frame_with(
                    error, &message, reference,
                ));
                self.tally_error();
            }
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    fn ping(&self, data: Option<Value>, reference: Option<&Value>) {
        self.conn.touch_heartbeat();
        // A profile whose product echoed the ping's time answers with it (`conduit`).
        let pong = match data {
            Some(Value::String(sent))
                if crate::protocol::spelling::spelling().pong_echoes_timestamp =>
            {
                Pong {
                    timestamp: sent,
                    data: None,
                }
            }
            data => Pong {
                timestamp: crate::protocol::now_timestamp(),
                data,
            },
        };
        self.reply(&pong, reference);
    }

    fn status(&self, reference: Option<&Value>) {
        let who = self.conn.principal();
        let connected_for = SystemTime::now()
            .duration_since(self.conn.connected_at)
            .unwrap_or_default();
        let status = Status {
            client_id: &self.conn.client_id,
            user_id: &who.user_id,
            role: &who.role,
            connected_at: humantime::format_rfc3339_millis(self.conn.connected_at).to_string(),
            connection_duration: connected_for,
            last_heartbeat: humantime::format_rfc3339_millis(self.conn.last_heartbeat())
                .to_string(),
            topics: self.conn.topics(),
        };
        self.reply(&status, reference);
    }
}
