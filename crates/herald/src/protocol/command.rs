//! Client commands: one JSON text frame in, one typed [`Request`] out (docs/PROTOCOL.md, sections 3
//! and 9). Aliases from the products Herald replaces are folded into the canonical commands here, remembering only
//! how the client wants the reply spelled.

use serde_json::{Map, Value};

use super::ErrorCode;

/// How a (un)subscription's reply is spelled: canonical or Conduit's room alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStyle {
    /// `subscribed` / `unsubscribed`.
    Canonical,
    /// `room_joined` / `room_left` (Conduit).
    Room,
}

/// A position in a topic's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last offset the client has.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// One topic of a batch `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The topic.
    pub topic: String,
    /// Where to resume from, for topics with history.
    pub since: Option<Since>,
}

/// Where a reconnecting client resumes its scope streams: per stream name (`all`,
/// `role:<name>`, `project:<id>`, `user:<id>`), the last position it has.
pub type Resume = std::collections::BTreeMap<String, Since>;

/// The most streams one `resume` may name.
pub const RESUME_MAX_STREAMS: usize = 64;

/// Reads a `resume` value: `{"<stream>": {"offset": n, "epoch": "..."}}`, at most
/// [`RESUME_MAX_STREAMS`] streams; the error says what is wrong.
///
/// ```
/// use herald::protocol::parse_resume;
/// let resume = parse_resume(&serde_json::json!({"all": {"offset": 3, "epoch": "e"}})).unwrap();
/// assert_eq!(resume["all"].offset, 3);
/// assert!(parse_resume(&serde_json::json!({"all": 3})).is_err());
/// ```
pub fn parse_resume(value: &Value) -> Result<Resume, String> {
    let shape = "`resume` must be {\"<stream>\": {offset: number, epoch: string}}";
    let Value::Object(streams) = value else {
        return Err(shape.into());
    };
    if streams.len() > RESUME_MAX_STREAMS {
        return Err(format!(
            "`resume` may name at most {RESUME_MAX_STREAMS} streams"
        ));
    }
    let mut resume = Resume::new();
    for (stream, at) in streams {
        let offset = at.get("offset").and_then(Value::as_u64);
        let epoch = at.get("epoch").and_then(Value::as_str);
        let (Some(offset), Some(epoch)) = (offset, epoch) else {
            return Err(shape.into());
        };
        resume.insert(
            stream.clone(),
            Since {
                offset,
                epoch: epoch.to_string(),
            },
        );
    }
    Ok(resume)
}

/// The most topics one `subscribe` may carry in `topics`.
pub const SUBSCRIBE_BATCH_MAX: usize = 100;

/// One client command, already checked for shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `auth`: authenticate with a token.
    Auth {
        /// The token.
        token: String,
        /// Where to resume the scope streams (honoured on the first `auth` only).
        resume: Option<Resume>,
    },
    /// `refresh`: a newer token for the same user.
    Refresh {
        /// The token.
        token: String,
    },
    /// `subscribe` (and `join_room`, `subscription`).
    Subscribe {
        /// The topic.
        topic: String,
        /// Where to resume from, for topics with history.
        since: Option<Since>,
        /// How to spell the reply.
        style: ReplyStyle,
    },
    /// `subscribe` with `topics`: several topics in one command, answered per topic.
    SubscribeMany {
        /// The topics, in the order given.
        topics: Vec<Wanted>,
    },
    /// `unsubscribe` (and `leave_room`, `subscription`).
    Unsubscribe {
        /// The topic.
        topic: String,
        /// How to spell the reply.
        style: ReplyStyle,
    },
    /// `publish` (and `broadcast`).
    Publish {
        /// The topic.
        topic: String,
        /// The event name subscribers receive as `type`.
        event: String,
        /// The payload (default `{}`).
        data: Value,
    },
    /// `presence`: who is on a topic.
    Presence {
        /// The topic.
        topic: String,
    },
    /// `history`: a page of a topic's stream.
    History {
        /// The topic.
        topic: String,
        /// Read after this position.
        since: Option<Since>,
        /// At most this many (1 to 1000, default 100).
        limit: usize,
    },
    /// `ack`: remove messages from the user's inbox.
    Ack {
        /// The message ids.
        ids: Vec<String>,
    },
    /// `ping` (and Cartographer's `ping` with `timestamp`).
    Ping {
        /// Echoed in the `pong`, when given.
        data: Option<Value>,
    },
    /// `echo`: answered with the data.
    Echo {
        /// The data to echo.
        data: Value,
    },
    /// `status`: the connection's own state.
    Status,
    /// Any other type: handed to the app's handler for it, if it registered one (else
    /// `unknown_type`).
    Custom {
        /// The message type.
        kind: String,
        /// The whole message object (without `ref`).
        message: Value,
    },
}

/// A command and the `ref` to copy into its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The `ref` to copy into the reply.
    pub reference: Option<Value>,
}

/// Why a frame could not become a [`Request`]; `reference` is kept when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `invalid_message` or `unknown_type`.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
    /// The `ref`, when it could be read.
    pub reference: Option<Value>,
}

/// The `limit` of the `history` command when none is given.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;
/// The largest `limit` of the `history` command.
pub const HISTORY_MAX_LIMIT: usize = 1000;

impl Command {
    /// The canonical command name (for metrics and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Refresh { .. } => "refresh",
            Self::Subscribe { .. } | Self::SubscribeMany { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
            Self::Presence { .. } => "presence",
            Self::History { .. } => "history",
            Self::Ack { .. } => "ack",
            Self::Ping { .. } => "ping",
            Self::Echo { .. } => "echo",
            Self::Status => "status",
            Self::Custom { .. } => "custom",
        }
    }
}

impl Request {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| invalid(None, format!("not valid JSON: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(invalid(None, "a command must be a JSON object".into()));
        };
        let reference = match fields.remove("ref") {
            None | Some(Value::Null) => None,
            Some(r @ (Value::String(_) | Value::Number(_))) => Some(r),
            Some(_) => return Err(invalid(None, "`ref` must be a string or a number".into())),
        };
        let fields = Fields {
            map: fields,
            reference: &reference,
        };
        let command = fields.command()?;
        Ok(Self { command, reference })
    }
}

fn invalid(reference: Option<Value>, message: String) -> Rejection {
    Rejection {
        code: ErrorCode::InvalidMessage,
        message,
        reference,
    }
}

/// The fields of one command object, with typed getters that produce `invalid_message`.
struct Fields<'a> {
    map: Map<String, Value>,
    reference: &'a Option<Value>,
}

impl Fields<'_> {
    fn command(self) -> Result<Command, Rejection> {
        let kind = match self.map.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(self.invalid("`type` must be a string")),
            None => return Err(self.invalid("missing `type`")),
        };
        Ok(match kind.as_str() {
            "auth" => Command::Auth {
                token: self.string("token")?,
                resume: match self.map.get("resume") {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(parse_resume(value).map_err(|e| self.invalid(&e))?),
                },
            },
            "refresh" => Command::Refresh {
                token: self.string("token")?,
            },
            "subscribe" if self.map.contains_key("topics") => Command::SubscribeMany {
                topics: self.wanted()?,
            },
            "subscribe" => Command::Subscribe {
                topic: self.string("topic")?,
                since: self.since()?,
                style: ReplyStyle::Canonical,
            },
            "unsubscribe" => Command::Unsubscribe {
                topic: self.string("topic")?,
                style: ReplyStyle::Canonical,
            },
            "publish" => Command::Publish {
                topic: self.string("topic")?,
                event: self.string("event")?,
                data: self.map.get("data").cloned().unwrap_or_else(empty_object),
            },
            "presence" => Command::Presence {
                topic: self.string("topic")?,
            },
            "history" => Command::History {
                topic: self.string("topic")?,
                since: self.since()?,
                limit: self.limit()?,
            },
            "ack" => Command::Ack { ids: self.ids()? },
            "ping" => Command::Ping {
                data: self.map.get("data").cloned(),
            },
            "echo" => Command::Echo {
                data: self.map.get("data").cloned().unwrap_or(Value::Null),
            },
            "status" => Command::Status,
            "join_room" => Command::Subscribe {
                topic: self.data()?.string("room")?,
                since: None,
                style: ReplyStyle::Room,
            },
            "leave_room" => Command::Unsubscribe {
                topic: self.data()?.string("room")?,
                style: ReplyStyle::Room,
            },
            "subscription" => self.data()?.subscription()?,
            "broadcast" => {
                let data = self.data()?;
                Command::Publish {
                    topic: data.string("room")?,
                    event: data.string("type")?,
                    data: data
                        .map
                        .get("payload")
                        .cloned()
                        .unwrap_or_else(empty_object),
                }
            }
            _ => Command::Custom {
                kind,
                message: Value::Object(self.map),
            },
        })
    }

    fn invalid(&self, message: &str) -> Rejection {
        invalid(self.reference.clone(), message.to_string())
    }

    /// A required non-empty string field.
    fn string(&self, name: &str) -> Result<String, Rejection> {
        match self.map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(self.invalid(&format!("`{name}` must not be empty"))),
            Some(_) => Err(self.invalid(&format!("`{name}` must be a string"))),
            None => Err(self.invalid(&format!("missing `{name}`"))),
        }
    }

    /// A required id: a non-empty string, or a number kept as its text.
    fn id(&self, name: &str) -> Result<String, Rejection> {
        match self.map.get(name) {
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => self.string(name),
        }
    }

    /// The nested `data` object of the products' aliases.
    fn data(&self) -> Result<Fields<'_>, Rejection> {
        match self.map.get("data") {
            Some(Value::Object(map)) => Ok(Fields {
                map: map.clone(),
                reference: self.reference,
            }),
            Some(_) => Err(self.invalid("`data` must be an object")),
            None => Err(self.invalid("missing `data`")),
        }
    }

    /// Auto-Devs' `subscription` with `action` and `project_id`.
    fn subscription(&self) -> Result<Command, Rejection> {
        let topic = format!("project:{}", self.id("project_id")?);
        match self.string("action")?.as_str() {
            "subscribe" => Ok(Command::Subscribe {
                topic,
                since: None,
                style: ReplyStyle::Canonical,
            }),
            "unsubscribe" => Ok(Command::Unsubscribe {
                topic,
                style: ReplyStyle::Canonical,
            }),
            _ => Err(self.invalid("`action` must be subscribe or unsubscribe")),
        }
    }

    fn since(&self) -> Result<Option<Since>, Rejection> {
        self.map
            .get("since")
            .map_or(Ok(None), |value| self.since_in(value))
    }

    fn since_in(&self, value: &Value) -> Result<Option<Since>, Rejection> {
        let shape = || self.invalid("`since` must be {offset: number, epoch: string}");
        match value {
            Value::Null => Ok(None),
            Value::Object(since) => {
                let offset = since
                    .get("offset")
                    .and_then(Value::as_u64)
                    .ok_or_else(shape)?;
                let epoch = since
                    .get("epoch")
                    .and_then(Value::as_str)
                    .ok_or_else(shape)?;
                Ok(Some(Since {
                    offset,
                    epoch: epoch.to_string(),
                }))
            }
            _ => Err(shape()),
        }
    }

    /// `topics` of a batch `subscribe`: 1 to [`SUBSCRIBE_BATCH_MAX`] items, each a topic name
    /// or `{topic, since?}`; `topic` beside it is refused rather than guessed at.
    fn wanted(&self) -> Result<Vec<Wanted>, Rejection> {
        if self.map.contains_key("topic") {
            return Err(self.invalid("give `topic` or `topics`, not both"));
        }
        let shape = || {
            self.invalid(&format!(
                "`topics` must be a list of 1 to {SUBSCRIBE_BATCH_MAX} topics or {{topic, since}} objects"
            ))
        };
        let Some(Value::Array(items)) = self.map.get("topics") else {
            return Err(shape());
        };
        if items.is_empty() || items.len() > SUBSCRIBE_BATCH_MAX {
            return Err(shape());
        }
        items
            .iter()
            .map(|item| match item {
                Value::String(topic) if !topic.is_empty() => Ok(Wanted {
                    topic: topic.clone(),
                    since: None,
                }),
                Value::Object(fields) => match fields.get("topic") {
                    Some(Value::String(topic)) if !topic.is_empty() => Ok(Wanted {
                        topic: topic.clone(),
                        since: fields
                            .get("since")
                            .map_or(Ok(None), |value| self.since_in(value))?,
                    }),
                    _ => Err(shape()),
                },
                _ => Err(shape()),
            })
            .collect()
    }

    fn limit(&self) -> Result<usize, Rejection> {
        match self.map.get("limit") {
            None | Some(Value::Null) => Ok(HISTORY_DEFAULT_LIMIT),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok((n as usize).min(HISTORY_MAX_LIMIT)),
                _ => Err(self.invalid("`limit` must be a positive integer")),
            },
        }
    }

    fn ids(&self) -> Result<Vec<String>, Rejection> {
        let shape = || self.invalid("`ids` must be a list of strings");
        match self.map.get("ids") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(shape))
                .collect(),
            _ => Err(shape()),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Command, Rejection> {
        Request::parse(text).map(|r| r.command)
    }

    #[test]
    fn canonical_commands_parse() {
        assert_eq!(
            parse(r#"{"type":"subscribe","topic":"chat:1","since":{"offset":3,"epoch":"e"}}"#),
            Ok(Command::Subscribe {
                topic: "chat:1".into(),
                since: Some(Since {
                    offset: 3,
                    epoch: "e".into()
                }),
                style: ReplyStyle::Canonical
            })
        );
        assert_eq!(parse(r#"{"type":"status"}"#), Ok(Command::Status));
        assert!(matches!(
            parse(r#"{"type":"history","topic":"a","limit":5000}"#),
            Ok(Command::History { limit: 1000, .. })
        ));
    }

    #[test]
    fn a_batch_subscribe_takes_names_and_positions() {
        assert_eq!(
            parse(
                r#"{"type":"subscribe","topics":["a",{"topic":"b","since":{"offset":2,"epoch":"e"}},{"topic":"c"}]}"#
            ),
            Ok(Command::SubscribeMany {
                topics: vec![
                    Wanted {
                        topic: "a".into(),
                        since: None
                    },
                    Wanted {
                        topic: "b".into(),
                        since: Some(Since {
                            offset: 2,
                            epoch: "e".into()
                        })
                    },
                    Wanted {
                        topic: "c".into(),
                        since: None
                    },
                ]
            })
        );
        let too_many =
            serde_json::json!({"type": "subscribe", "topics": vec!["t"; SUBSCRIBE_BATCH_MAX + 1]});
        for bad in [
            r#"{"type":"subscribe","topics":[]}"#,
            r#"{"type":"subscribe","topics":"a"}"#,
            r#"{"type":"subscribe","topics":[7]}"#,
            r#"{"type":"subscribe","topics":[""]}"#,
            r#"{"type":"subscribe","topics":[{"since":{"offset":1,"epoch":"e"}}]}"#,
            r#"{"type":"subscribe","topics":[{"topic":"a","since":3}]}"#,
            r#"{"type":"subscribe","topic":"a","topics":["b"]}"#,
            &too_many.to_string(),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn seed_aliases_fold_into_canonical_commands() {
        assert_eq!(
            parse(r#"{"type":"subscription","data":{"action":"subscribe","project_id":42}}"#),
            Ok(Command::Subscribe {
                topic: "project:42".into(),
                since: None,
                style: ReplyStyle::Canonical
            })
        );
        assert_eq!(
            parse(r#"{"type":"broadcast","data":{"room":"r","type":"t","payload":[1]}}"#),
            Ok(Command::Publish {
                topic: "r".into(),
                event: "t".into(),
                data: serde_json::json!([1])
            })
        );
    }

    #[test]
    fn bad_shapes_are_invalid_and_keep_the_ref() {
        let err = Request::parse(r#"{"type":"subscribe","topic":7,"ref":"r1"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert_eq!(err.reference, Some(Value::String("r1".into())));
        let custom = Request::parse(r#"{"type":"nope","x":1,"ref":2}"#).unwrap();
        assert_eq!(
            custom.command,
            Command::Custom {
                kind: "nope".into(),
                message: serde_json::json!({"type": "nope", "x": 1})
            }
        );
        assert_eq!(custom.reference, Some(serde_json::json!(2)));
        assert_eq!(
            Request::parse("[1]").unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            Request::parse("{").unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            Request::parse(r#"{"topic":"a"}"#).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }
}
