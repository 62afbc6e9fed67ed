//! The wire: the only module that knows Herald's JSON field names.
//!
//! Client frames become typed [`Request`]s ([`command`]); server messages are built as
//! [`Envelope`]s and encoded once into a [`Frame`] whose bytes are shared by every recipient.

pub mod answers;
mod close;
pub mod command;
pub(crate) mod hooks;
pub mod replies;
pub mod spelling;

pub use close::CloseReason;
pub use command::{
    parse_resume, Command, Rejection, ReplyStyle, Request, Resume, Since, Wanted,
    RESUME_MAX_STREAMS, SUBSCRIBE_BATCH_MAX,
};

use axum::extract::ws::{Message, Utf8Bytes};
use serde::Serialize;
use serde_json::Value;

/// An encoded server message, ready for any number of sockets: cloning it only bumps a
/// reference count.
pub type Frame = Message;

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Bytes a topic name may contain: letters, digits and `:_-.@/`.
pub fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'.' | b'@' | b'/')
}

/// The deepest nesting a client command may have, in JSON (serde_json's recursion limit) and
/// in MessagePack alike.
pub const MAX_DEPTH: usize = 128;

/// How a connection's frames are encoded (docs/PROTOCOL.md, section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON in text frames (the default).
    #[default]
    Json,
    /// The same envelope as MessagePack in binary frames (`?encoding=msgpack`).
    MsgPack,
}

impl Encoding {
    /// A frame in this encoding. Frames are built as JSON text; for MessagePack the JSON is
    /// re-encoded (once per publication in the hub, once per reply elsewhere). Binary and
    /// control frames pass unchanged.
    pub fn encode(self, frame: &Frame) -> Frame {
        match (self, frame) {
            #[cfg(feature = "msgpack")]
            (Self::MsgPack, Message::Text(text)) => {
                match serde_json::from_str::<Value>(text.as_str())
                    .ok()
                    .and_then(|value| rmp_serde::to_vec_named(&value).ok())
                {
                    Some(bytes) => Message::Binary(bytes.into()),
                    None => frame.clone(),
                }
            }
            _ => frame.clone(),
        }
    }

    /// A client's binary frame as JSON text, for the command parser; `None` when this
    /// encoding does not take binary frames or the bytes are not a MessagePack value JSON can
    /// hold.
    pub fn decode_binary(self, bytes: &[u8]) -> Option<String> {
        match self {
            Self::Json => None,
            #[cfg(not(feature = "msgpack"))]
            Self::MsgPack => {
                let _ = bytes;
                None
            }
            #[cfg(feature = "msgpack")]
            Self::MsgPack => {
                let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
                // As deep as JSON commands may nest (serde_json's limit), not rmp's 1024.
                decoder.set_max_depth(MAX_DEPTH);
                serde::Deserialize::deserialize(&mut decoder)
                    .ok()
                    .map(|value: Value| value.to_string())
            }
        }
    }
}

/// Every frame type the server itself sends (replies, notices, presence events, product
/// aliases). A client publication may not take one of these names, or any name starting with
/// `herald.` or ending with `.result` (answers to custom messages): no client can make
/// another client's code believe the server spoke.
const SERVER_TYPES: &[&str] = &[
    "auth_required",
    "auth_success",
    "connection.established",
    "echo",
    "error",
    "history",
    "pong",
    "presence",
    "published",
    "refreshed",
    "room_joined",
    "room_left",
    "status",
    "subscribed",
    "system.alert",
    "unsubscribed",
    "user_joined",
    "user_left",
];

/// Whether `event` is a name only the server may send: a reply or notice name, or one starting
/// with `herald.` or ending with `.result`; compared without regard to ASCII case, as a
/// careless client might compare it.
pub fn is_reserved_event(event: &str) -> bool {
    let lower = event.to_ascii_lowercase();
    lower.starts_with("herald.")
        || lower.ends_with(".result")
        || SERVER_TYPES.contains(&lower.as_str())
}

/// The error codes of docs/PROTOCOL.md, section 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `invalid_message`: not JSON, no `type`, or a field of the wrong kind.
    InvalidMessage,
    /// `unknown_type`: no such command (and no handler for it).
    UnknownType,
    /// `unauthorized`: not authenticated (yet), or bad API credentials.
    Unauthorized,
    /// `auth_failed`: the token in `auth` or `refresh` was refused.
    AuthFailed,
    /// `token_expired`: the connection's token expired.
    TokenExpired,
    /// `forbidden`: not allowed (topic rules, non-admin API caller).
    Forbidden,
    /// `rate_limited`: too many commands, or connections from one IP.
    RateLimited,
    /// `message_too_large`: a body over the size limit.
    MessageTooLarge,
    /// `not_found`: no such thing (history or presence not kept).
    NotFound,
    /// `processing_error`: the server failed (an engine error).
    ProcessingError,
    /// `limit_exceeded`: a per-connection limit, such as `max_subscriptions`, was reached.
    LimitExceeded,
    /// `too_many_connections`: the user holds `max_connections_per_user` already.
    TooManyConnections,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::Unauthorized => "unauthorized",
            Self::AuthFailed => "auth_failed",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::MessageTooLarge => "message_too_large",
            Self::NotFound => "not_found",
            Self::ProcessingError => "processing_error",
            Self::LimitExceeded => "limit_exceeded",
            Self::TooManyConnections => "too_many_connections",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who published a client publication.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sender {
    /// The publishing user.
    pub user_id: String,
    /// The publishing connection.
    pub client_id: String,
}

/// One server-to-client message before encoding. Its fields are spelled by the process's
/// [`spelling`] (the canonical names, or a compatibility profile's).
#[derive(Debug)]
pub struct Envelope<'a, D: Serialize> {
    /// `type`: the event or reply name.
    pub kind: &'a str,
    /// `data`: the payload.
    pub data: D,
    /// `timestamp`: RFC 3339 UTC with milliseconds.
    pub timestamp: &'a str,
    /// `id`: set on publications.
    pub id: Option<&'a str>,
    /// `topic`: set on deliveries through a topic.
    pub topic: Option<&'a str>,
    /// `stream`: set on deliveries through a scope stream (`all`, `role:<name>`, ...).
    pub stream: Option<&'a str>,
    /// `from`: set on client publications.
    pub from: Option<&'a Sender>,
    /// Position in the topic's stream, for topics with history.
    pub offset: Option<u64>,
    /// `epoch`: with `offset`.
    pub epoch: Option<&'a str>,
    /// Set on messages delivered from the user's offline inbox.
    pub offline: Option<bool>,
    /// `ref`: copied from the command a reply answers.
    pub reference: Option<&'a Value>,
    /// An error's message, also sent as a top-level `error` where the spelling wants it.
    pub error_text: Option<&'a str>,
}

impl<D: Serialize> Serialize for Envelope<'_, D> {
    fn serialize<S: serde::Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let spelled = spelling::spelling();
        let mut map = to.serialize_map(None)?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry(spelled.data, &self.data)?;
        map.serialize_entry("timestamp", self.timestamp)?;
        if let Some(id) = self.id {
            map.serialize_entry(spelled.id, id)?;
        }
        if let Some(topic) = self.topic {
            map.serialize_entry("topic", topic)?;
        }
        if let Some(stream) = self.stream {
            map.serialize_entry("stream", stream)?;
        }
        if let Some(from) = self.from {
            map.serialize_entry("from", from)?;
        }
        if let Some(offset) = self.offset {
            map.serialize_entry("offset", &offset)?;
        }
        if let Some(epoch) = self.epoch {
            map.serialize_entry("epoch", epoch)?;
        }
        if let Some(offline) = self.offline {
            map.serialize_entry("offline", &offline)?;
        }
        if let Some(reference) = self.reference {
            map.serialize_entry("ref", reference)?;
        }
        if let Some(text) = self.error_text.filter(|_| spelled.error_text) {
            map.serialize_entry("error", text)?;
        }
        map.end()
    }
}

impl<'a, D: Serialize> Envelope<'a, D> {
    /// A reply or notice: no id, no topic.
    pub fn new(kind: &'a str, data: D, timestamp: &'a str) -> Self {
        Self {
            kind,
            data,
            timestamp,
            id: None,
            topic: None,
            stream: None,
            from: None,
            offset: None,
            epoch: None,
            offline: None,
            reference: None,
            error_text: None,
        }
    }

    /// Copies the command's `ref` into the reply.
    pub fn reply_to(mut self, reference: Option<&'a Value>) -> Self {
        self.reference = reference;
        self
    }

    /// Encodes the message into a shareable text frame.
    pub fn encode(&self) -> Frame {
        // Serializing a struct of strings and JSON values cannot fail; fall back to an error
        // frame rather than panic if a future field ever makes it possible.
        let text = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"type":"error","data":{{"code":"processing_error","message":"{}"}},"timestamp":"{}"}}"#,
                e.to_string().replace('"', "'"),
                self.timestamp
            )
        });
        Message::Text(Utf8Bytes::from(text))
    }
}

/// The current time as PROTOCOL.md writes timestamps: RFC 3339 UTC with milliseconds.
pub fn now_timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `{code, message}`, the data of an `error`.
#[derive(Debug, Serialize)]
pub struct ErrorData<'a> {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: &'a str,
    /// The topic a (un)subscription error is about, so a batch's errors can be told apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
}

/// An `error` frame with its code, a message, and the command's `ref`.
pub fn error_frame(code: ErrorCode, message: &str, reference: Option<&Value>) -> Frame {
    topic_error_frame(code, message, None, reference)
}

/// An `error` frame about one topic: `data.topic` names it.
pub fn topic_error_frame(
    code: ErrorCode,
    message: &str,
    topic: Option<&str>,
    reference: Option<&Value>,
) -> Frame {
    let data = ErrorData {
        code,
        message,
        topic,
    };
    error_frame_with(data, message, reference)
}

/// An `error` frame whose data is `data` (Herald's `{code, message}`, or a backend's), its
/// `message` also a top-level `error` where the spelling wants it.
pub fn error_frame_with<D: Serialize>(data: D, message: &str, reference: Option<&Value>) -> Frame {
    let timestamp = now_timestamp();
    let mut envelope = Envelope::new("error", data, &timestamp).reply_to(reference);
    envelope.error_text = Some(message);
    envelope.encode()
}

/// A reply frame of type `kind` with `data`, echoing `ref`.
pub fn reply_frame<D: Serialize>(kind: &str, data: D, reference: Option<&Value>) -> Frame {
    let timestamp = now_timestamp();
    Envelope::new(kind, data, &timestamp)
        .reply_to(reference)
        .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MessagePack array nested `depth` deep around an empty map.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0x80);
        bytes
    }

    #[test]
    fn msgpack_nests_no_deeper_than_json() {
        assert!(Encoding::MsgPack.decode_binary(&nested(100)).is_some());
        assert_eq!(
            Encoding::MsgPack.decode_binary(&nested(MAX_DEPTH + 10)),
            None
        );
        assert_eq!(Encoding::MsgPack.decode_binary(&nested(1000)), None);
    }

    #[test]
    fn server_names_are_reserved_in_any_case() {
        for name in [
            "error",
            "Error",
            "system.alert",
            "herald.x",
            "HERALD.x",
            "q.result",
        ] {
            assert!(is_reserved_event(name), "{name}");
        }
        for name in ["message", "chat.message", "errors", "resulting"] {
            assert!(!is_reserved_event(name), "{name}");
        }
    }
}
