//! The commands of an authenticated connection, one method per command, dispatched from one
//! `match` (PROTOCOL.md sections 3 and 4). Every reply is queued, never written directly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::time::Instant;

use super::limits::{ErrorWindow, TokenBucket};
use crate::auth::AuthError;
use crate::hub::ConnHandle;
use crate::node::Herald;
use crate::protocol::{
    error_frame, reply_frame, Command, Encoding, ErrorCode, Frame, ReplyStyle, Request, Sender,
    Since,
};
use crate::publication::{Publication, Scope};
use crate::topic;
use axum::extract::ws::Utf8Bytes;

/// An authenticated connection's command state and limits.
pub(super) struct Session {
    node: Herald,
    conn: Arc<ConnHandle>,
    rate: TokenBucket,
    errors: ErrorWindow,
    too_many_errors: bool,
    /// The test-only echo endpoint: data frames go back as they came.
    echo: bool,
}

/// What the connection loop does after a command.
pub(super) enum Next {
    Continue,
    /// A refresh changed when the token expires.
    ExpiryChanged,
    /// A subscription that resumes from `since` on a topic with history: the loop first writes
    /// what is queued, then calls [`Session::recover`] and writes its frames directly, so the
    /// replay comes after every earlier frame and before every later live message.
    Recover {
        topic: String,
        since: Since,
        style: ReplyStyle,
        reference: Option<Value>,
    },
}

/// A far-away instant for "no expiry" (tokio timers need a deadline).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Session {
    pub fn new(node: Herald, conn: Arc<ConnHandle>) -> Self {
        let limits = &node.config().limits;
        Self {
            rate: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
            errors: ErrorWindow::new(limits.max_errors, limits.error_window),
            too_many_errors: false,
            echo: false,
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

    fn send(&self, frame: crate::protocol::Frame) {
        if self.conn.push(frame) {
            self.node
                .hub()
                .counters
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends an `error`; invalid, forbidden and rate-limited commands count toward the
    /// connection's error threshold.
    fn error(&mut self, code: ErrorCode, message: &str, reference: Option<&Value>) {
        self.send(error_frame(code, message, reference));
        if matches!(
            code,
            ErrorCode::InvalidMessage
                | ErrorCode::UnknownType
                | ErrorCode::Forbidden
                | ErrorCode::RateLimited
        ) && self.errors.record()
        {
            self.too_many_errors = true;
        }
    }

    /// A WebSocket ping from the client (its pong is already queued). Pings share the command
    /// rate: one beyond it counts as an error, with no error frame, so a ping flood is closed
    /// like a command flood (`too many errors`).
    pub fn on_ping(&mut self) {
        self.conn.touch_heartbeat();
        if !self.rate.take() {
            crate::metrics::dropped("rate_limited");
            if self.errors.record() {
                self.too_many_errors = true;
            }
        }
    }

    /// When the connection's token expires, as a timer deadline.
    pub fn expiry_instant(&self) -> Instant {
        match self.conn.principal().expires_at {
            Some(exp) => {
                // The same leeway that let the token in keeps it alive past `exp`.
                let leeway = self.node.config().jwt.leeway;
                let left = Duration::from_secs(exp.saturating_sub(crate::auth::unix_now()));
                // An `exp` centuries away (up to 2^64 s) is "never": no overflow.
                let now = Instant::now();
                now.checked_add(left.saturating_add(leeway).min(NEVER))
                    .unwrap_or(now + NEVER)
            }
            None => Instant::now() + NEVER,
        }
    }

    /// `connection.established` or `auth_success`: who the server thinks this is.
    pub fn welcome(&self, kind: &str, reference: Option<&Value>) -> Frame {
        let who = self.conn.principal();
        let data = json!({
            "client_id": self.conn.client_id,
            "user_id": &*who.user_id,
            "role": &*who.role,
        });
        reply_frame(kind, data, reference)
    }

    pub fn token_expired(&mut self) {
        self.error(
            ErrorCode::TokenExpired,
            "token has expired; send refresh with a newer token before exp",
            None,
        );
    }

    /// A binary frame: a command in MessagePack on a `msgpack` connection, else refused.
    pub async fn on_binary(&mut self, bytes: axum::body::Bytes) -> Next {
        if self.echo {
            self.send(axum::extract::ws::Message::Binary(bytes));
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
            self.send(axum::extract::ws::Message::Text(text));
            return Next::Continue;
        }
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
        if !self.rate.take() {
            crate::metrics::dropped("rate_limited");
            self.error(
                ErrorCode::RateLimited,
                "too many commands: slow down",
                reference,
            );
            return Next::Continue;
        }
        match command {
            Command::Auth { token } => {
                return self.refresh(&token, "auth_success", reference).await
            }
            Command::Refresh { token } => {
                return self.refresh(&token, "refreshed", reference).await
            }
            Command::Subscribe {
                topic,
                since,
                style,
            } => return self.subscribe(&topic, since, style, reference).await,
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
            Command::Echo { data } => {
                self.send(reply_frame("echo", json!({ "original": data }), reference))
            }
            Command::Status => self.status(reference),
            Command::Custom { kind, message } => self.custom(kind, message, reference).await,
        }
        Next::Continue
    }

    /// A newer token for the same user: keeps the connection past the old `exp`.
    /// A newer token for the same user: keeps the connection past the old `exp`, and takes
    /// away at once the topics its role or projects no longer allow.
    async fn refresh(&mut self, token: &str, reply: &str, reference: Option<&Value>) -> Next {
        let principal = match self.node.authenticate(token).await {
            Ok(principal) => principal,
            Err(e @ (AuthError::Expired | AuthError::Invalid(_))) => {
                self.error(ErrorCode::AuthFailed, &e.to_string(), reference);
                return Next::Continue;
            }
        };
        let current = self.conn.principal();
        if principal.user_id != current.user_id {
            self.error(
                ErrorCode::AuthFailed,
                "the new token names another user; reconnect to change user",
                reference,
            );
            return Next::Continue;
        }
        let data = json!({
            "client_id": self.conn.client_id,
            "user_id": &*principal.user_id,
            "role": &*principal.role,
            "expires_at": principal.expires_at,
        });
        self.node.hub().update_principal(&self.conn, principal);
        self.send(reply_frame(reply, data, reference));
        self.node.revoke_lost_topics(&self.conn).await;
        Next::ExpiryChanged
    }

    /// Checks the topic's name and the subscribe rule; on refusal the error is already sent.
    async fn may_subscribe(&mut self, topic: &str, reference: Option<&Value>) -> bool {
        if let Err(e) = topic::validate(topic) {
            self.error(ErrorCode::InvalidMessage, &e, reference);
            return false;
        }
        let who = self.conn.principal();
        let allowed = match self.node.may_subscribe(&who, topic).await {
            Ok(allowed) => allowed,
            Err(e) => {
                self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
                return false;
            }
        };
        if !allowed {
            self.error(
                ErrorCode::Forbidden,
                &format!("not allowed to subscribe to `{topic}`"),
                reference,
            );
        }
        allowed
    }

    /// Whether the connection may hold one more subscription (`max_subscriptions`); one it
    /// already holds is always fine. On refusal `limit_exceeded` is sent and nothing changes.
    fn has_room_for(&mut self, topic: &str, reference: Option<&Value>) -> bool {
        let max = self.node.config().limits.max_subscriptions;
        if max == 0 || self.conn.subscription_count() < max || self.conn.is_subscribed(topic) {
            return true;
        }
        crate::metrics::dropped("max_subscriptions");
        self.error(
            ErrorCode::LimitExceeded,
            &format!("a connection may hold at most {max} subscriptions"),
            reference,
        );
        false
    }

    /// Subscribes (or, for a resume on a topic with history, hands the work to the loop).
    pub async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<Since>,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) -> Next {
        if !self.may_subscribe(topic, reference).await || !self.has_room_for(topic, reference) {
            return Next::Continue;
        }
        let Some(retention) = self.node.retention(topic) else {
            let fresh = match self.node.subscribe(&self.conn, topic).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
                    return Next::Continue;
                }
            };
            // Without history nothing can be replayed: a client asking to resume is told so.
            let recovered = since.as_ref().map(|_| false);
            self.send(subscribed_frame(topic, style, None, recovered, reference));
            if fresh {
                self.node.joined(&self.conn, topic).await;
            }
            return Next::Continue;
        };
        if let Some(since) = since {
            return Next::Recover {
                topic: topic.to_string(),
                since,
                style,
                reference: reference.cloned(),
            };
        }
        match self
            .node
            .subscribe_with_history(&self.conn, topic, None, retention)
            .await
        {
            Ok(recovery) => {
                let at = Some(&recovery.position);
                self.send(subscribed_frame(topic, style, at, Some(false), reference));
                if recovery.fresh {
                    self.node.joined(&self.conn, topic).await;
                }
            }
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
        Next::Continue
    }

    /// Subscribes with recovery from `since` and returns the frames to write at once: the
    /// `subscribed` reply, then every missed message in order. The second value is true when
    /// the subscription is new (the loop then calls [`Session::joined`]).
    pub async fn recover(
        &mut self,
        topic: &str,
        since: &Since,
        style: ReplyStyle,
        reference: Option<&Value>,
    ) -> (Vec<Frame>, bool) {
        let Some(retention) = self.node.retention(topic) else {
            return (Vec::new(), false);
        };
        match self
            .node
            .subscribe_with_history(&self.conn, topic, Some(since), retention)
            .await
        {
            Ok(recovery) => {
                let mut frames = Vec::with_capacity(recovery.replay.len() + 1);
                frames.push(subscribed_frame(
                    topic,
                    style,
                    Some(&recovery.position),
                    Some(recovery.recovered),
                    reference,
                ));
                frames.extend(recovery.replay.iter().map(Publication::frame));
                (frames, recovery.fresh)
            }
            Err(e) => (
                vec![error_frame(
                    ErrorCode::ProcessingError,
                    &e.to_string(),
                    reference,
                )],
                false,
            ),
        }
    }

    /// Presence and `user_joined` for a new subscription.
    pub async fn joined(&self, topic: &str) {
        self.node.joined(&self.conn, topic).await;
    }

    async fn unsubscribe(&mut self, topic: &str, style: ReplyStyle, reference: Option<&Value>) {
        if let Err(e) = topic::validate(topic) {
            self.error(ErrorCode::InvalidMessage, &e, reference);
            return;
        }
        self.node.leave_topic(&self.conn, topic).await;
        let frame = match style {
            ReplyStyle::Room => reply_frame("room_left", json!({ "room": topic }), reference),
            ReplyStyle::Canonical => {
                reply_frame("unsubscribed", json!({ "topic": topic }), reference)
            }
        };
        self.send(frame);
    }

    async fn publish(
        &mut self,
        topic: String,
        event: String,
        data: Value,
        reference: Option<&Value>,
    ) {
        if !self.may_subscribe(&topic, reference).await {
            return;
        }
        if crate::protocol::is_reserved_event(&event) {
            self.error(
                ErrorCode::Forbidden,
                &format!("`{event}` is a name only the server sends"),
                reference,
            );
            return;
        }
        if !topic::client_may_publish(self.node.config(), &topic) {
            self.error(
                ErrorCode::Forbidden,
                &format!("clients may not publish to `{topic}`"),
                reference,
            );
            return;
        }
        let who = self.conn.principal();
        let mut publication = Publication::new(Scope::Topic(topic.clone()), event, data);
        publication.from = Some(Sender {
            user_id: who.user_id.to_string(),
            client_id: self.conn.client_id.clone(),
        });
        match self.node.send(publication).await {
            Ok(published) => self.send(reply_frame(
                "published",
                json!({ "topic": topic, "id": published.id }),
                reference,
            )),
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    /// Who is on a topic: its namespace must enable presence, and the connection must be
    /// allowed to subscribe to it.
    async fn presence(&mut self, topic: &str, reference: Option<&Value>) {
        if topic::validate(topic).is_ok() && !self.node.has_presence(topic) {
            self.error(
                ErrorCode::Forbidden,
                &format!("presence is not enabled for `{topic}`"),
                reference,
            );
            return;
        }
        if !self.may_subscribe(topic, reference).await {
            return;
        }
        match self.node.presence(topic).await {
            Ok(users) => self.send(reply_frame(
                "presence",
                json!({ "topic": topic, "users": presence_users(&users) }),
                reference,
            )),
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    /// A page of a topic's stream: its namespace must keep history (else `not_found`) and the
    /// connection must be allowed to subscribe.
    async fn history(
        &mut self,
        topic: &str,
        since: Option<Since>,
        limit: usize,
        reference: Option<&Value>,
    ) {
        if topic::validate(topic).is_ok() && self.node.retention(topic).is_none() {
            let message = format!("`{topic}` keeps no history");
            self.error(ErrorCode::NotFound, &message, reference);
            return;
        }
        if !self.may_subscribe(topic, reference).await {
            return;
        }
        match self.node.history(topic, since.as_ref(), limit).await {
            Ok(Some(page)) => self.send(reply_frame(
                "history",
                history_data(topic, &page),
                reference,
            )),
            Ok(None) => {
                let message = format!("`{topic}` keeps no history");
                self.error(ErrorCode::NotFound, &message, reference);
            }
            Err(e) => self.error(ErrorCode::ProcessingError, &e.to_string(), reference),
        }
    }

    /// A custom message type: the app's handler for it, or `unknown_type`.
    async fn custom(&mut self, kind: String, message: Value, reference: Option<&Value>) {
        let Some(handler) = self.node.handler(&kind) else {
            let text = format!("unknown message type `{kind}`");
            self.error(ErrorCode::UnknownType, &text, reference);
            return;
        };
        let incoming = crate::handler::Incoming {
            kind,
            message,
            principal: self.conn.principal(),
            client_id: self.conn.client_id.clone(),
            reference: reference.cloned(),
            conn: self.conn.clone(),
            herald: self.node.clone(),
        };
        if let Err(e) = handler.call(incoming).await {
            self.error(e.code, &e.message, reference);
        }
    }

    /// Removes acknowledged messages from the user's offline inbox; no reply.
    async fn ack(&mut self, ids: &[String], reference: Option<&Value>) {
        let user = self.conn.principal().user_id;
        if let Err(e) = self.node.ack(&user, ids).await {
            self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
        }
    }

    fn ping(&self, data: Option<Value>, reference: Option<&Value>) {
        self.conn.touch_heartbeat();
        let timestamp = crate::protocol::now_timestamp();
        let reply = match data {
            Some(data) => json!({ "timestamp": timestamp, "data": data }),
            None => json!({ "timestamp": timestamp }),
        };
        self.send(reply_frame("pong", reply, reference));
    }

    fn status(&self, reference: Option<&Value>) {
        let who = self.conn.principal();
        let connected_for = SystemTime::now()
            .duration_since(self.conn.connected_at)
            .unwrap_or_default();
        let data = json!({
            "client_id": self.conn.client_id,
            "user_id": &*who.user_id,
            "role": &*who.role,
            "connected_at": humantime::format_rfc3339_millis(self.conn.connected_at).to_string(),
            "connection_duration": connected_for.as_secs_f64(),
            "last_heartbeat": humantime::format_rfc3339_millis(self.conn.last_heartbeat()).to_string(),
            "topics": self.conn.topics(),
        });
        self.send(reply_frame("status", data, reference));
    }
}

/// `[{user_id, connections, joined_at}]`, as the `presence` reply and the HTTP API give it.
pub fn presence_users(users: &[crate::engine::PresenceEntry]) -> Value {
    users
        .iter()
        .map(|u| {
            json!({
                "user_id": u.user_id,
                "connections": u.connections,
                "joined_at": humantime::format_rfc3339_millis(u.joined_at).to_string(),
            })
        })
        .collect()
}

/// `subscribed` `{topic, offset, epoch, recovered}` (or seed 003's `room_joined` `{room}`).
fn subscribed_frame(
    topic: &str,
    style: ReplyStyle,
    at: Option<&crate::engine::StreamPosition>,
    recovered: Option<bool>,
    reference: Option<&Value>,
) -> Frame {
    if style == ReplyStyle::Room {
        return reply_frame("room_joined", json!({ "room": topic }), reference);
    }
    let mut data = json!({ "topic": topic });
    if let Some(at) = at {
        data["offset"] = json!(at.offset);
        data["epoch"] = json!(at.epoch);
    }
    if let Some(recovered) = recovered {
        data["recovered"] = json!(recovered);
    }
    reply_frame("subscribed", data, reference)
}

/// `{topic, epoch, offset, messages}`, as the `history` reply and the HTTP API give it.
pub fn history_data(topic: &str, page: &crate::engine::HistoryPage) -> Value {
    json!({
        "topic": topic,
        "epoch": page.position.epoch,
        "offset": page.position.offset,
        "messages": page.messages.iter().map(Publication::to_json).collect::<Vec<_>>(),
    })
}
