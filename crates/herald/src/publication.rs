//! A publication: one event sent to one scope, stamped once with its id and time.

use serde_json::Value;

use crate::protocol::{now_timestamp, Envelope, Frame, Sender};

/// Who receives a publication (docs/PROTOCOL.md, section 5). Serialized as the HTTP API
/// names it: `{"scope": "user", "target": "alice"}`, `{"scope": "all"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "scope", content = "target", rename_all = "lowercase")]
pub enum Scope {
    /// Every authenticated connection.
    All,
    /// Every connection of this user.
    User(String),
    /// Every connection with this role.
    Role(String),
    /// Every connection of every member of this project.
    Project(String),
    /// Every connection subscribed to this topic.
    Topic(String),
}

impl Scope {
    /// Builds a scope from its wire name and target; the error says what is missing or wrong.
    ///
    /// ```
    /// use herald::Scope;
    /// assert_eq!(Scope::parse("user", Some("alice")), Ok(Scope::User("alice".into())));
    /// assert_eq!(Scope::parse("all", None), Ok(Scope::All));
    /// assert!(Scope::parse("user", None).is_err());
    /// assert!(Scope::parse("galaxy", Some("x")).is_err());
    /// ```
    pub fn parse(name: &str, target: Option<&str>) -> Result<Self, String> {
        let target = || {
            target
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("scope `{name}` needs a `target`"))
        };
        match name {
            "all" => Ok(Self::All),
            "user" => Ok(Self::User(target()?)),
            "role" => Ok(Self::Role(target()?)),
            "project" => Ok(Self::Project(target()?)),
            "topic" => {
                let topic = target()?;
                crate::topic::validate(&topic)?;
                Ok(Self::Topic(topic))
            }
            other => Err(format!(
                "unknown scope `{other}`: expected all, user, role, project or topic"
            )),
        }
    }

    /// The scope's stream (docs/PROTOCOL.md section 15): `all`, `role:<name>`,
    /// `project:<id>` or `user:<id>`; `None` for a topic (its own stream is its history).
    ///
    /// ```
    /// use herald::Scope;
    /// assert_eq!(Scope::Role("admin".into()).stream().as_deref(), Some("role:admin"));
    /// assert_eq!(Scope::Topic("chat".into()).stream(), None);
    /// ```
    pub fn stream(&self) -> Option<String> {
        match self {
            Self::All => Some("all".into()),
            Self::User(id) => Some(format!("user:{id}")),
            Self::Role(name) => Some(format!("role:{name}")),
            Self::Project(id) => Some(format!("project:{id}")),
            Self::Topic(_) => None,
        }
    }

    /// The scope whose stream is named `stream` ([`Scope::stream`] read back).
    ///
    /// ```
    /// use herald::Scope;
    /// assert_eq!(Scope::of_stream("project:p1"), Some(Scope::Project("p1".into())));
    /// assert_eq!(Scope::of_stream("topic:x"), None);
    /// ```
    pub fn of_stream(stream: &str) -> Option<Self> {
        if stream == "all" {
            return Some(Self::All);
        }
        let (kind, target) = stream.split_once(':')?;
        let target = target.to_string();
        match kind {
            "user" => Some(Self::User(target)),
            "role" => Some(Self::Role(target)),
            "project" => Some(Self::Project(target)),
            _ => None,
        }
    }

    /// The scope's wire name (`all`, `user`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::User(_) => "user",
            Self::Role(_) => "role",
            Self::Project(_) => "project",
            Self::Topic(_) => "topic",
        }
    }
}

/// One event on its way to a scope. Built once; its frame is encoded once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Publication {
    /// UUID v7, the same on every copy.
    pub id: String,
    /// Who receives it.
    #[serde(flatten)]
    pub scope: Scope,
    /// The event name clients receive as `type`.
    pub event: String,
    /// The payload, any JSON.
    pub data: Value,
    /// When the server accepted it (RFC 3339, milliseconds).
    pub timestamp: String,
    /// Set when a client published it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Sender>,
    /// Position in its stream: the topic's history, or the scope's stream (set by the engine
    /// that appended it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The stream's epoch, with `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// When this node accepted it (set by [`Publication::new`]; not stored, not sent): the
    /// start of `herald_delivery_seconds`. `None` for one read back from a store or received
    /// from another node, which then counts from its fan-out here.
    #[serde(skip)]
    pub accepted: Option<std::time::Instant>,
}

impl Publication {
    /// Stamps a new publication with a fresh UUID v7 and the current time.
    pub fn new(scope: Scope, event: impl Into<String>, data: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            scope,
            event: event.into(),
            data,
            timestamp: now_timestamp(),
            from: None,
            offset: None,
            epoch: None,
            accepted: Some(std::time::Instant::now()),
        }
    }

    /// The frame every recipient gets: encoded here, once.
    pub fn frame(&self) -> Frame {
        self.envelope_frame(false)
    }

    /// The frame of a message delivered from the offline inbox (`"offline": true`).
    pub fn offline_frame(&self) -> Frame {
        self.envelope_frame(true)
    }

    fn envelope_frame(&self, offline: bool) -> Frame {
        let stream = self.stream();
        self.envelope(offline, stream.as_deref()).encode()
    }

    /// The message as a JSON value, as it appears in a `history` reply.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.envelope(false, None)).unwrap_or(serde_json::Value::Null)
    }

    /// The scope stream this publication has a position in, if any: a scope publication
    /// appended to its stream (a topic's position belongs to the topic).
    pub fn stream(&self) -> Option<String> {
        self.offset.and_then(|_| self.scope.stream())
    }

    fn envelope<'a>(&'a self, offline: bool, stream: Option<&'a str>) -> Envelope<'a, &'a Value> {
        let topic = match &self.scope {
            Scope::Topic(topic) => Some(topic.as_str()),
            _ => None,
        };
        Envelope {
            kind: &self.event,
            data: &self.data,
            timestamp: &self.timestamp,
            id: Some(&self.id),
            topic,
            stream,
            from: self.from.as_ref(),
            offset: self.offset,
            epoch: self.epoch.as_deref(),
            offline: offline.then_some(true),
            reference: None,
            error_text: None,
        }
    }
}
