//! Configuration: typed values with their defaults, read from TOML.
//!
//! The server layers defaults, then the file, then the environment, then flags (see the
//! `herald-server` crate); an embedding app builds a [`Config`] however it likes. Every
//! duration is written as humantime text (`"30s"`, `"10m"`, `"24h"`), and unknown keys are
//! errors so that a typo never silently falls back to a default.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything Herald can be told, in one place.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP and WebSocket server listens on.
    pub listen: String,
    /// A second, private address for the server API, `/metrics` and the probes; with it,
    /// `listen` serves only clients (`/ws`), the probes and the console.
    pub internal_listen: Option<String>,
    /// Serve the browser console (`/`, `/herald.js`) on `listen`.
    pub console: bool,
    /// Directory of the embedded SQLite store and the development secret.
    pub data_dir: std::path::PathBuf,
    /// Bearer key accepted by the server HTTP API; `None` means only admin JWTs.
    pub api_key: Option<String>,
    /// More keys the server HTTP API accepts, beside `api_key` (to rotate one without a
    /// moment when neither works).
    pub api_keys: Vec<String>,
    /// Offer permessage-deflate when the client asks for it.
    pub compression: bool,
    /// On a deflate connection, messages smaller than this many bytes go uncompressed.
    pub compression_min_size: usize,
    /// Allowed `Origin` header values; empty allows any origin.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR blocks) whose `Forwarded` / `X-Forwarded-For`
    /// headers name the client; from anyone else those headers are ignored.
    #[serde(deserialize_with = "networks", serialize_with = "networks_text")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header a trusted proxy names the client in. Only that one is read: a proxy that
    /// appends to one header passes the other through from the client unchecked.
    pub forwarded_header: ForwardedHeader,
    /// Redis URL for cluster mode; `None` runs on the embedded engines.
    pub redis_url: Option<String>,
    /// Cluster mode on a Redis Cluster instead: seed URLs, any of its nodes (excludes
    /// `redis_url`).
    pub redis_cluster: Vec<String>,
    /// This node's name in a cluster.
    pub node_id: Option<String>,
    /// Speak as one of the products Herald replaces (docs/PROTOCOL.md, section 14;
    /// docs/MIGRATING.md); `None`: the canonical protocol.
    pub profile: Option<Profile>,
    /// How client tokens are verified (`[jwt]`).
    pub jwt: JwtConfig,
    /// The limits of docs/PROTOCOL.md, section 8 (`[limits]`).
    pub limits: Limits,
    /// The offline inbox (`[inbox]`).
    pub inbox: InboxConfig,
    /// Recovery after a reconnect and idempotent publishing (`[recovery]`).
    pub recovery: RecoveryConfig,
    /// The backend hooks' proxy (`[proxy]`, docs/HOOKS.md).
    pub proxy: ProxyConfig,
    /// Webhooks: what happened, sent to the backend (`[webhooks]`, docs/HOOKS.md).
    pub webhooks: WebhooksConfig,
    /// Topic namespaces (`[[namespaces]]`).
    pub namespaces: Vec<Namespace>,
    /// Cluster mode on Redis (`[cluster]`; in force with `redis_url`).
    pub cluster: ClusterConfig,
    /// Serve the test-only echo endpoint `/test/echo` (Autobahn conformance runs). Never from
    /// the file: only the server's hidden `--test-echo-endpoint` flag sets it.
    #[serde(skip)]
    pub test_echo_endpoint: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            internal_listen: None,
            console: true,
            data_dir: "./herald-data".into(),
            api_key: None,
            api_keys: Vec::new(),
            compression: false,
            compression_min_size: 256,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            redis_url: None,
            redis_cluster: Vec::new(),
            node_id: None,
            profile: None,
            jwt: JwtConfig::default(),
            limits: Limits::default(),
            inbox: InboxConfig::default(),
            recovery: RecoveryConfig::default(),
            proxy: ProxyConfig::default(),
            webhooks: WebhooksConfig::default(),
            namespaces: Vec::new(),
            cluster: ClusterConfig::default(),
            test_echo_endpoint: false,
        }
    }
}

/// Which header names the client behind a trusted proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (what nginx, HAProxy and most load balancers append to).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// Cluster mode on Redis (docs/CLUSTER.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// A node that stops refreshing its heartbeat for this long is dead: the others remove
    /// its presence entries and announce its users' `user_left`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub node_ttl: Duration,
    /// The longest one Redis call may take before the caller gets an error (HTTP 503).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub redis_timeout: Duration,
    /// How many replicas must have a publication's writes before it is answered (Redis
    /// `WAIT`); unset: one when the primary has any connected, none otherwise; 0: never wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<u32>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_ttl: Duration::from_secs(10),
            redis_timeout: Duration::from_secs(2),
            wait_replicas: None,
        }
    }
}

/// How client tokens are verified.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Shared secret for HS256/384/512.
    pub secret: Option<String>,
    /// Path of a PEM public key (RSA for RS256, EC P-256 for ES256).
    pub public_key: Option<std::path::PathBuf>,
    /// Accepted algorithms; empty means every algorithm the key supports.
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub leeway: Duration,
    /// More keys, tried after `secret` / `public_key` (`[[jwt.keys]]`): for rotation, or for
    /// several issuers' keys told apart by `kid`.
    pub keys: Vec<JwtKey>,
    /// A JSON Web Key Set to fetch the issuer's keys from (needs `issuer`: its keys verify
    /// that issuer's tokens only).
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again (a token with an unknown `kid` also asks for
    /// an early fetch, at most every 30 s).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub jwks_refresh: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            public_key: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
            keys: Vec::new(),
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
        }
    }
}

impl JwtConfig {
    /// Whether any key is configured (else the server uses its development secret).
    pub fn has_keys(&self) -> bool {
        self.secret.is_some()
            || self.public_key.is_some()
            || !self.keys.is_empty()
            || self.jwks_url.is_some()
    }
}

/// One more key tokens may be signed with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Tokens whose header carries this `kid` are checked with this key only.
    pub kid: Option<String>,
    /// A shared secret (HS256/384/512).
    pub secret: Option<String>,
    /// Or a PEM public key (RS256, ES256).
    pub public_key: Option<std::path::PathBuf>,
}

/// The limits of docs/PROTOCOL.md, section 8.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time to send `auth` after `auth_required` (close 1008 after).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub auth_timeout: Duration,
    /// Largest inbound message in bytes (close 1009 beyond).
    pub max_message_size: usize,
    /// Commands per second per connection (0: no limit).
    pub rate_per_sec: u32,
    /// Commands allowed in a burst.
    pub rate_burst: u32,
    /// Errors within `error_window` that close the connection (0: never).
    pub max_errors: u32,
    /// The window `max_errors` is counted in.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub error_window: Duration,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub send_queue: usize,
    /// How often the server pings.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub ping_interval: Duration,
    /// Silence (no frame at all) after which a connection is dropped.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub pong_timeout: Duration,
    /// How long one write may take before the connection is dropped.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub write_timeout: Duration,
    /// Open connections allowed per client IP, HTTP and WebSocket alike (0: unlimited).
    pub max_connections_per_ip: u32,
    /// Open WebSocket connections allowed on this node (0: unlimited; HTTP 503 beyond).
    pub max_connections: u32,
    /// Open WebSocket connections allowed per user on this node (0: unlimited).
    pub max_connections_per_user: u32,
    /// Topics one connection may be subscribed to at once (0: unlimited).
    pub max_subscriptions: usize,
    /// Longest time an HTTP request head may take to arrive, from the connection's opening
    /// or the first byte of a later request.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub http_header_timeout: Duration,
    /// Longest time a keep-alive HTTP connection may stay idle between requests, or a request
    /// may make no progress.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub http_idle_timeout: Duration,
    /// How long shutdown waits for connections to close.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Largest HTTP API request body, in bytes (413 beyond).
    pub max_body_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(30),
            max_message_size: 64 * 1024,
            rate_per_sec: 10,
            rate_burst: 20,
            max_errors: 5,
            error_window: Duration::from_secs(600),
            send_queue: 256,
            ping_interval: Duration::from_secs(54),
            pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_connections_per_ip: 0,
            max_connections: 0,
            max_connections_per_user: 0,
            max_subscriptions: 1000,
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            max_body_size: 1024 * 1024,
        }
    }
}

/// The offline inbox of docs/PROTOCOL.md, section 7.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// Messages kept per user; the oldest go first.
    pub max_messages: usize,
    /// How long a message waits for its user.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub ttl: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A compatibility profile: the server speaks as that product's README documents, so its
/// clients and backends run unchanged (docs/MIGRATING.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Pulse: every frame carries its payload under `payload`.
    Pulse,
    /// The user-management API: a token at the upgrade, a greeting in the welcome.
    UsersApi,
    /// Auto-Devs: `message_id`, and its management API under `/api/v1/websocket/`.
    AutoDevs,
    /// Conduit: clients publish to any room, Go-style durations, a pong that echoes.
    Conduit,
    /// Cartographer: anonymous readers of `?project_id=` / `?board_id=`, a top-level `error`,
    /// messages up to 512 KB.
    Cartographer,
}

impl Profile {
    /// Whether a connection must bring its token to the upgrade (no `auth` message later).
    pub fn token_at_upgrade(self) -> bool {
        self == Self::UsersApi
    }

    /// Whether a connection without a token is taken as an anonymous reader of its query's
    /// `?project_id=` / `?board_id=` topics (and nothing else).
    pub fn anonymous_readers(self) -> bool {
        self == Self::Cartographer
    }

    /// How this profile spells the frames the server sends.
    pub fn spelling(self) -> crate::protocol::spelling::Spelling {
        use crate::protocol::spelling;
        match self {
            Self::Pulse => spelling::PULSE,
            Self::UsersApi => spelling::USERS_API,
            Self::AutoDevs => spelling::AUTO_DEVS,
            Self::Conduit => spelling::CONDUIT,
            Self::Cartographer => spelling::CARTOGRAPHER,
        }
    }

    /// Whether the product's management API is served under `/api/v1/websocket/`.
    pub fn websocket_api(self) -> bool {
        self == Self::AutoDevs
    }

    /// The settings whose default the product documents otherwise, as `(section, key,
    /// value)`: `herald serve` starts from them, and the file, the environment and the flags
    /// still override them.
    pub fn defaults(self) -> &'static [(&'static str, &'static str, i64)] {
        match self {
            // 512 KB messages; anonymous readers, so a bound on each IP's connections.
            Self::Cartographer => &[
                ("limits", "max_message_size", 512 * 1024),
                ("limits", "max_connections_per_ip", 100),
            ],
            _ => &[],
        }
    }

    /// The profile's name, as `profile` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pulse => "pulse",
            Self::UsersApi => "users-api",
            Self::AutoDevs => "auto-devs",
            Self::Conduit => "conduit",
            Self::Cartographer => "cartographer",
        }
    }
}

/// Recovery and idempotent publishing, docs/PROTOCOL.md section 15 (`[recovery]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How long the scope streams (`all`, `role:<name>`, `project:<id>`, `user:<id>`) keep a
    /// publication for a resuming client (`"0s"`: no scope streams).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub window: Duration,
    /// The most publications each scope stream keeps.
    pub max_messages: usize,
    /// How long a publish's `idempotency_key` is remembered: a repeat within it gets the first
    /// answer and delivers nothing (`"0s"`: keys are ignored).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub idempotency_window: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(120),
            max_messages: 1000,
            idempotency_window: Duration::from_secs(120),
        }
    }
}

/// The backend hooks' proxy: where the backend decides (docs/HOOKS.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Authenticates connections without a valid JWT.
    pub connect: Option<String>,
    /// Decides subscriptions to namespaces with `subscribe = "proxy"`.
    pub subscribe: Option<String>,
    /// Decides client publishes to namespaces with `publish = "proxy"`.
    pub publish: Option<String>,
    /// Answers client messages whose `type` is no command.
    pub rpc: Option<String>,
    /// Signs every call (`X-Herald-Signature`); unsigned without it.
    pub secret: Option<String>,
    /// The longest a call may take; past it the backend has failed.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub timeout: Duration,
    /// The connecting request's headers shown to `connect`.
    pub forward_headers: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect: None,
            subscribe: None,
            publish: None,
            rpc: None,
            secret: None,
            timeout: Duration::from_secs(1),
            forward_headers: vec![
                "Cookie".into(),
                "Authorization".into(),
                "X-Request-Id".into(),
            ],
        }
    }
}

/// Every webhook event, in the order docs/HOOKS.md lists them.
pub const WEBHOOK_EVENTS: [&str; 9] = [
    "connection.opened",
    "connection.closed",
    "user.online",
    "user.offline",
    "topic.subscribed",
    "topic.unsubscribed",
    "topic.occupied",
    "topic.vacated",
    "client.published",
];

/// Webhooks: events sent to the backend, batched, signed and retried (docs/HOOKS.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where events are `POST`ed; none: no webhooks.
    pub url: Option<String>,
    /// Signs every request (`X-Herald-Signature`); unsigned without it.
    pub secret: Option<String>,
    /// The events sent (default: all of [`WEBHOOK_EVENTS`]).
    pub events: Vec<String>,
    /// Events per request.
    pub batch_max: usize,
    /// The longest an event waits to fill a batch.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub batch_wait: Duration,
    /// The longest one request may take; past it, it is retried.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub timeout: Duration,
    /// How long an event is retried; then it is dropped, counted and logged.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub retry_for: Duration,
    /// Events kept unsent at most; beyond, the oldest are dropped, counted and logged.
    pub max_pending: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
            batch_max: 100,
            batch_wait: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 3600),
            max_pending: 1_000_000,
        }
    }
}

/// How much an inbox keeps: the newest `max_messages`, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Messages kept per user.
    pub max_messages: usize,
    /// How long a message is kept.
    pub ttl: std::time::Duration,
}

impl InboxConfig {
    /// What each inbox keeps.
    pub fn limits(&self) -> InboxLimits {
        InboxLimits {
            max_messages: self.max_messages,
            ttl: self.ttl,
        }
    }
}

/// Who may subscribe to a namespace's topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SubscribeRule {
    /// Any authenticated connection.
    #[default]
    Authenticated,
    /// Members of the project named by the rest of the topic (`board:<project id>`).
    Members,
    /// Connections whose role is this one.
    Role(String),
    /// Nobody: server-side publish only, to scopes other than `topic`.
    None,
    /// The backend decides, through the `subscribe` hook (`[proxy] subscribe`).
    Proxy,
}

impl<'de> Deserialize<'de> for SubscribeRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "authenticated" => Ok(Self::Authenticated),
            "members" => Ok(Self::Members),
            "none" => Ok(Self::None),
            "proxy" => Ok(Self::Proxy),
            other => match other.strip_prefix("role:") {
                Some(role) if !role.is_empty() => Ok(Self::Role(role.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "subscribe rule `{other}`: expected authenticated, members, role:<name>, none or proxy"
                ))),
            },
        }
    }
}

/// Whether clients may publish to a namespace's topics (`publish = true | false | "proxy"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishRule {
    /// No client publishes (`false`, the default).
    #[default]
    Denied,
    /// Any client that may subscribe may publish (`true`).
    Allowed,
    /// The backend decides each publish (`"proxy"`).
    Proxy,
}

impl<'de> Deserialize<'de> for PublishRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Flag(true) => Ok(Self::Allowed),
            Written::Flag(false) => Ok(Self::Denied),
            Written::Text(text) if text == "proxy" => Ok(Self::Proxy),
            Written::Text(other) => Err(serde::de::Error::custom(format!(
                "publish `{other}`: expected true, false or \"proxy\""
            ))),
        }
    }
}

impl Serialize for PublishRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Denied => s.serialize_bool(false),
            Self::Allowed => s.serialize_bool(true),
            Self::Proxy => s.serialize_str("proxy"),
        }
    }
}

/// A namespace of topics (`chat` holds `chat:...`) and what it allows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The namespace: topics `<name>:...`.
    pub name: String,
    /// Who may subscribe.
    #[serde(default)]
    pub subscribe: SubscribeRule,
    /// Whether clients may publish to its topics: `true`, `false`, or `"proxy"` (the backend
    /// decides each publish, through the `publish` hook).
    #[serde(default)]
    pub publish: PublishRule,
    /// Keep presence (the `presence` command and API).
    #[serde(default)]
    pub presence: bool,
    /// Send `user_joined` / `user_left`.
    #[serde(default)]
    pub join_leave: bool,
    /// Messages kept per topic (0: no history).
    #[serde(default)]
    pub history_size: usize,
    /// How long history messages are kept.
    #[serde(
        default = "default_history_ttl",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    pub history_ttl: Duration,
}

/// A namespace in code, as a `[[namespaces]]` entry reads in TOML:
///
/// ```
/// use herald::config::{Namespace, SubscribeRule};
/// let board = Namespace::new("board")
///     .subscribe(SubscribeRule::Members)
///     .publish(true)
///     .presence(true)
///     .history(100, std::time::Duration::from_secs(3600));
/// assert_eq!(board.history_size, 100);
/// assert!(!board.join_leave);
/// ```
impl Namespace {
    /// Topics `<name>:...` with the defaults of a TOML entry that names only `name`: any
    /// authenticated connection subscribes; no client publishing, presence or history.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subscribe: SubscribeRule::default(),
            publish: PublishRule::Denied,
            presence: false,
            join_leave: false,
            history_size: 0,
            history_ttl: default_history_ttl(),
        }
    }

    /// Who may subscribe.
    pub fn subscribe(self, rule: SubscribeRule) -> Self {
        Self {
            subscribe: rule,
            ..self
        }
    }

    /// Whether clients may publish to its topics.
    pub fn publish(self, allowed: bool) -> Self {
        Self {
            publish: if allowed {
                PublishRule::Allowed
            } else {
                PublishRule::Denied
            },
            ..self
        }
    }

    /// Who decides whether clients may publish to its topics.
    pub fn publish_rule(self, rule: PublishRule) -> Self {
        Self {
            publish: rule,
            ..self
        }
    }

    /// Whether it keeps presence.
    pub fn presence(self, kept: bool) -> Self {
        Self {
            presence: kept,
            ..self
        }
    }

    /// Whether subscribers get `user_joined` / `user_left`.
    pub fn join_leave(self, sent: bool) -> Self {
        Self {
            join_leave: sent,
            ..self
        }
    }

    /// Keeps the newest `size` messages per topic, each for at most `ttl`.
    pub fn history(self, size: usize, ttl: Duration) -> Self {
        Self {
            history_size: size,
            history_ttl: ttl,
            ..self
        }
    }
}

fn default_history_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// Networks written as `10.0.0.0/8`, or one address (`127.0.0.1`, `::1`).
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not an address or a network like 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

fn networks_text<S: Serializer>(value: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(value.iter().map(ToString::to_string))
}

fn duration_text<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

impl Serialize for SubscribeRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Authenticated => s.serialize_str("authenticated"),
            Self::Members => s.serialize_str("members"),
            Self::None => s.serialize_str("none"),
            Self::Proxy => s.serialize_str("proxy"),
            Self::Role(role) => s.serialize_str(&format!("role:{role}")),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("duration `{text}`: {e}")))
}

/// A setting that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses TOML text; unknown keys and malformed values are errors (feature `config-file`).
    #[cfg(feature = "config-file")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml_parse(text)
    }

    /// Whether the engines are on Redis (`redis_url` or `redis_cluster`): cluster mode.
    pub fn on_redis(&self) -> bool {
        self.redis_url.is_some() || !self.redis_cluster.is_empty()
    }

    /// Checks what types alone cannot: values that are present but unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_url.is_some() && !self.redis_cluster.is_empty() {
            return Err(ConfigError(
                "redis_url and redis_cluster exclude each other: one Redis, or a Redis Cluster"
                    .into(),
            ));
        }
        if self.cluster.node_ttl < Duration::from_millis(300) {
            return Err(ConfigError(
                "cluster.node_ttl must be at least 300ms".into(),
            ));
        }
        if !self.recovery.window.is_zero() && self.recovery.max_messages == 0 {
            return Err(ConfigError(
                "recovery.max_messages must be at least 1 (or recovery.window \"0s\")".into(),
            ));
        }
        if self.cluster.redis_timeout.is_zero() {
            return Err(ConfigError(
                "cluster.redis_timeout must be more than 0".into(),
            ));
        }
        if let Some(id) = &self.node_id {
            if id.is_empty() || !id.bytes().all(crate::protocol::is_topic_byte) {
                return Err(ConfigError(format!(
                    "node_id `{id}` must be non-empty and use letters, digits or :_-.@/"
                )));
            }
        }
        for (name, value) in [
            ("ping_interval", self.limits.ping_interval),
            ("pong_timeout", self.limits.pong_timeout),
            ("write_timeout", self.limits.write_timeout),
            ("http_header_timeout", self.limits.http_header_timeout),
            ("http_idle_timeout", self.limits.http_idle_timeout),
        ] {
            // Each drives a connection's timer: zero would spin it or end every connection.
            if value.is_zero() {
                return Err(ConfigError(format!("limits.{name} must be more than 0")));
            }
        }
        if self.limits.pong_timeout <= self.limits.ping_interval {
            // The client's pong answers the ping: a timeout no longer than the interval drops
            // healthy clients that are merely idle.
            return Err(ConfigError(format!(
                "limits.pong_timeout ({}) must be longer than limits.ping_interval ({})",
                humantime::format_duration(self.limits.pong_timeout),
                humantime::format_duration(self.limits.ping_interval)
            )));
        }
        if self.limits.send_queue == 0 {
            return Err(ConfigError("limits.send_queue must be at least 1".into()));
        }
        if self.limits.max_message_size < 128 {
            return Err(ConfigError(
                "limits.max_message_size must be at least 128 bytes".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for ns in &self.namespaces {
            if ns.name.is_empty() || !ns.name.bytes().all(crate::protocol::is_topic_byte) {
                return Err(ConfigError(format!(
                    "namespace name `{}` must be non-empty and use letters, digits or _-.@/",
                    ns.name
                )));
            }
            if ns.name.contains(':') {
                return Err(ConfigError(format!(
                    "namespace name `{}` must not contain `:`",
                    ns.name
                )));
            }
            if !seen.insert(ns.name.as_str()) {
                return Err(ConfigError(format!(
                    "namespace `{}` is configured twice",
                    ns.name
                )));
            }
        }
        if let Some(url) = &self.jwt.jwks_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError(format!(
                    "jwt.jwks_url `{url}` must be an http:// or https:// URL"
                )));
            }
            if self.jwt.issuer.is_none() {
                return Err(ConfigError(
                    "jwt.jwks_url needs jwt.issuer: a key set's keys verify its issuer's tokens only"
                        .into(),
                ));
            }
            if self.jwt.jwks_refresh < Duration::from_secs(1) {
                return Err(ConfigError("jwt.jwks_refresh must be at least 1s".into()));
            }
        }
        for (n, key) in self.jwt.keys.iter().enumerate() {
            if key.secret.is_some() == key.public_key.is_some() {
                return Err(ConfigError(format!(
                    "jwt.keys[{n}] needs one of secret or public_key"
                )));
            }
        }
        if self
            .api_keys
            .iter()
            .chain(&self.api_key)
            .any(String::is_empty)
        {
            return Err(ConfigError("an API key must not be empty".into()));
        }
        if self.jwt.secret.is_some() && self.jwt.public_key.is_some() {
            return Err(ConfigError(
                "jwt.secret and jwt.public_key are exclusive: set one".into(),
            ));
        }
        Ok(())
    }

    /// Every key the server HTTP API accepts: `api_key`, then `api_keys`.
    pub fn all_api_keys(&self) -> Vec<String> {
        self.api_key.iter().chain(&self.api_keys).cloned().collect()
    }

    /// The configuration of the namespace `name`, if any.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|ns| ns.name == name)
    }
}

#[cfg(feature = "config-file")]
fn toml_parse(text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // toml's own message spans several lines with a source excerpt; start-up errors are one line.
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => ConfigError(format!("line {line}: {message}")),
            None => ConfigError(message),
        }
    })
}
