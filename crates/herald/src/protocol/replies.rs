//! Every frame the server sends that is not a publication: each reply's `data` is a typed
//! struct here, with its `type`, so no other module spells a wire field (docs/PROTOCOL.md,
//! sections 2 and 3).

use serde::Serialize;
use serde_json::Value;

use super::{now_timestamp, Envelope, Frame};

/// A reply (or notice) the server sends: its `type` and its `data`.
pub trait Reply: Serialize {
    /// The frame's `type`.
    fn kind(&self) -> &'static str;

    /// The frame, with the command's `ref` when it answers one.
    fn frame(&self, reference: Option<&Value>) -> Frame {
        let timestamp = now_timestamp();
        Envelope::new(self.kind(), self, &timestamp)
            .reply_to(reference)
            .encode()
    }
}

/// `auth_required` `{}`: the first frame of a connection that came without a token.
#[derive(Debug, Serialize)]
pub struct AuthRequired {}

impl Reply for AuthRequired {
    fn kind(&self) -> &'static str {
        "auth_required"
    }
}

/// How the welcome is named: after a token in the URL or header, or after an `auth` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// `connection.established`.
    Established,
    /// `auth_success` (also the answer to a second `auth`, which is a refresh).
    AuthSuccess,
}

/// The welcome: who the server thinks the connection is.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    /// How it is named.
    #[serde(skip)]
    pub greeting: Greeting,
    /// The connection's id.
    pub client_id: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The role.
    pub role: &'a str,
    /// A greeting, under a profile whose product sent one (`users-api`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// The token's `exp` (Unix seconds), or null when it never expires.
    pub expires_at: Option<u64>,
    /// Seconds until `exp` by the server's clock, or null: a client refreshes from this, so a
    /// skewed client clock cannot make it refresh too early or too late.
    pub expires_in: Option<u64>,
    /// The connection's scope streams and their positions (absent when scope streams are off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<std::collections::BTreeMap<&'a str, StreamAt<'a>>>,
    /// Per stream the client asked to resume: whether it gets everything it missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<std::collections::BTreeMap<&'a str, Resumed<'a>>>,
}

/// A position in a stream: its newest offset and epoch.
#[derive(Debug, Serialize)]
pub struct StreamAt<'a> {
    /// The newest offset.
    pub offset: u64,
    /// The epoch.
    pub epoch: &'a str,
}

/// How a resumed stream went (docs/PROTOCOL.md section 15).
#[derive(Debug, Serialize)]
pub struct Resumed<'a> {
    /// Every message after the client's offset follows (replayed, then live).
    pub recovered: bool,
    /// Where the stream stands after the replay (absent for a stream the connection does not
    /// receive).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub at: Option<StreamAt<'a>>,
}

impl Reply for Welcome<'_> {
    fn kind(&self) -> &'static str {
        match self.greeting {
            Greeting::Established => "connection.established",
            Greeting::AuthSuccess => "auth_success",
        }
    }
}

/// `refreshed` `{client_id, user_id, role, expires_at}` (or `auth_success` with the same data,
/// for a second `auth`).
#[derive(Debug, Serialize)]
pub struct Refreshed<'a> {
    /// Answers `refresh` (`refreshed`) or a second `auth` (`auth_success`).
    #[serde(skip)]
    pub greeting: Option<Greeting>,
    /// The connection's id.
    pub client_id: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The role the new token gives.
    pub role: &'a str,
    /// The new `exp` (Unix seconds), or null.
    pub expires_at: Option<u64>,
    /// Seconds until the new `exp` by the server's clock, or null.
    pub expires_in: Option<u64>,
}

impl Reply for Refreshed<'_> {
    fn kind(&self) -> &'static str {
        match self.greeting {
            Some(Greeting::AuthSuccess) => "auth_success",
            _ => "refreshed",
        }
    }
}

/// `subscribed` `{topic, offset?, epoch?, recovered?}`.
#[derive(Debug, Serialize)]
pub struct Subscribed<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The stream's newest offset at the subscription (topics with history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The stream's epoch, with `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    /// Whether everything after the client's `since` follows (only when it gave one, or the
    /// topic keeps history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

impl Reply for Subscribed<'_> {
    fn kind(&self) -> &'static str {
        "subscribed"
    }
}

/// `unsubscribed` `{topic, reason?}`: an answer, or the server ending a subscription.
#[derive(Debug, Serialize)]
pub struct Unsubscribed<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Why the server ended it (`permission revoked`); absent on an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl Reply for Unsubscribed<'_> {
    fn kind(&self) -> &'static str {
        "unsubscribed"
    }
}

/// The room spelling of `subscribed` / `unsubscribed` (`join_room`, `leave_room`).
#[derive(Debug, Serialize)]
pub struct Room<'a> {
    /// Joined or left.
    #[serde(skip)]
    pub joined: bool,
    /// The room (topic).
    pub room: &'a str,
}

impl Reply for Room<'_> {
    fn kind(&self) -> &'static str {
        match self.joined {
            true => "room_joined",
            false => "room_left",
        }
    }
}

/// `published` `{topic, id, offset?}`: a client publication was accepted (and, on a topic
/// with history, stored at `offset`).
#[derive(Debug, Serialize)]
pub struct Published<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The publication's id.
    pub id: &'a str,
    /// Its offset in the topic's stream, on a topic with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Reply for Published<'_> {
    fn kind(&self) -> &'static str {
        "published"
    }
}

/// One user on a topic, as the `presence` reply and the HTTP API list them.
#[derive(Debug, Serialize)]
pub struct PresenceUser<'a> {
    /// The user.
    pub user_id: &'a str,
    /// How many of their connections are subscribed.
    pub connections: usize,
    /// When their first current connection subscribed (RFC 3339, milliseconds).
    pub joined_at: String,
}

/// `presence` `{topic, users}` (also the HTTP API's answer).
#[derive(Debug, Serialize)]
pub struct Presence<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Who is on it, by user id.
    pub users: Vec<PresenceUser<'a>>,
}

impl Reply for Presence<'_> {
    fn kind(&self) -> &'static str {
        "presence"
    }
}

/// `history` `{topic, epoch, offset, messages}` (also the HTTP API's answer).
#[derive(Debug, Serialize)]
pub struct History<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The stream's epoch.
    pub epoch: &'a str,
    /// The stream's newest offset.
    pub offset: u64,
    /// The messages, oldest first, as publications are sent.
    pub messages: Vec<Value>,
}

impl Reply for History<'_> {
    fn kind(&self) -> &'static str {
        "history"
    }
}

/// `pong` `{timestamp, data?}`: the answer to the `ping` command.
#[derive(Debug, Serialize)]
pub struct Pong {
    /// When the server answered.
    pub timestamp: String,
    /// The ping's `data`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Reply for Pong {
    fn kind(&self) -> &'static str {
        "pong"
    }
}

/// `echo` `{original}`.
#[derive(Debug, Serialize)]
pub struct Echo {
    /// What the client sent.
    pub original: Value,
}

impl Reply for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }
}

/// `status`: the connection as the server sees it.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// The connection's id.
    pub client_id: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The role.
    pub role: &'a str,
    /// When it connected (RFC 3339, milliseconds).
    pub connected_at: String,
    /// How long it has been connected: seconds, or a duration string under a profile whose
    /// product wrote one (`conduit`).
    #[serde(serialize_with = "connection_duration")]
    pub connection_duration: std::time::Duration,
    /// The last ping or pong from the client (RFC 3339, milliseconds).
    pub last_heartbeat: String,
    /// Its topics, sorted.
    pub topics: Vec<String>,
}

fn connection_duration<S: serde::Serializer>(
    duration: &std::time::Duration,
    to: S,
) -> Result<S::Ok, S::Error> {
    if super::spelling::spelling().duration_as_text {
        to.serialize_str(&super::spelling::go_duration(*duration))
    } else {
        to.serialize_f64(duration.as_secs_f64())
    }
}

impl Reply for Status<'_> {
    fn kind(&self) -> &'static str {
        "status"
    }
}

/// `user_joined` / `user_left` `{user_id}`: the data of a presence announcement (a
/// publication to the topic).
#[derive(Debug, Serialize)]
pub struct PresenceChange<'a> {
    /// Who joined or left.
    pub user_id: &'a str,
}

impl PresenceChange<'_> {
    /// The announcement's event name.
    pub fn event(joined: bool) -> &'static str {
        match joined {
            true => "user_joined",
            false => "user_left",
        }
    }

    /// As publication data.
    pub fn data(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `system.alert` `{message, priority, metadata?}` data (the user-management API's broadcast).
#[derive(Debug, Serialize)]
pub struct SystemAlert<'a> {
    /// The text.
    pub message: &'a str,
    /// `normal` unless given.
    pub priority: &'a str,
    /// Anything the caller attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
}

impl SystemAlert<'_> {
    /// The event name.
    pub const EVENT: &'static str = "system.alert";

    /// As publication data.
    pub fn data(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
