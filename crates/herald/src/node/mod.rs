//! [`Herald`]: the front door that ties config, auth, the hub and the engines together. It is a
//! cheap cloneable handle; the HTTP layer, the connections and embedding code all hold one.
//!
//! `streams.rs` holds what keeps messages: topic history, recovery, the offline inbox.

mod builder;
mod callbacks;
#[cfg(feature = "redis")]
mod cluster;
#[cfg(not(feature = "redis"))]
#[path = "no_cluster.rs"]
mod cluster;
mod delivery;
mod handle;
mod handler;
mod idempotent;
#[cfg(feature = "jwt")]
mod key_set;
mod proxy;
mod resume;
pub(crate) mod slots;
mod streams;
mod topics;
mod webhooks;

pub use builder::HeraldBuilder;
pub use callbacks::{HookEvent, PublishDecision, PublishRequest, SubscribeRequest};
pub use handle::PublishError;
pub(crate) use handler::ConnAction;
pub use handler::{HandlerError, HandlerResult, Incoming};
pub(crate) use proxy::{PublishVerdict, RpcVerdict};
pub(crate) use resume::ConnectStreams;
pub(crate) use streams::PlacedPublish;
pub use streams::Recovery;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::HashMap;

use crate::auth::{AdminCheck, AuthError, Authenticator, Principal};
use crate::config::Config;
use handler::Handler;
use slots::ConnectionSlots;

use crate::engine::{
    Broker, EngineError, History, Idempotency, Inbox, Membership, Presence, Stripes,
};
use crate::hub::flusher::Flushers;
use crate::hub::{CloseReason, ConnHandle, Hub};
use crate::publication::{Publication, Scope};

/// Herald's own JWT keys (feature `jwt`); without it a node has none.
#[cfg(feature = "jwt")]
type JwtKeys = crate::auth::Keys;
#[cfg(not(feature = "jwt"))]
type JwtKeys = std::convert::Infallible;

/// Why Herald could not start; the text is one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// What a publication reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// The publication's id (UUID v7).
    pub id: String,
    /// Connections the publication was queued to on this node.
    pub recipients: usize,
    /// Its offset in the topic's stream, for topics with history.
    pub offset: Option<u64>,
    /// Kept in the user's offline inbox (scope `user`, no live connection).
    pub queued: bool,
}

/// What a node holds and has done since it started: the body of `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Authenticated connections.
    pub total_clients: usize,
    /// Authenticated connections by role.
    pub by_role: std::collections::BTreeMap<String, usize>,
    /// Distinct users with a connection.
    pub users: usize,
    /// Topics with at least one subscriber.
    pub topics: usize,
    /// Frames sent to clients: deliveries, replies, welcomes.
    pub messages_sent: u64,
    /// Frames received from authenticated clients.
    pub messages_received: u64,
    /// Connections closed because they could not keep up.
    pub slow_consumers_dropped: u64,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Cluster mode: each live node's own figures (the fields above are their sums; `users`
    /// and `topics` count a user or topic once per node holding it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeStats>>,
}

/// One node's figures in a cluster's [`Stats`]: its id, then the fields of [`Stats`] as that
/// node alone counts them (without `nodes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    /// The node's id (`--node-id`).
    pub node_id: String,
    /// What the node holds and has done.
    #[serde(flatten)]
    pub figures: Stats,
}

/// The engines a node runs on.
pub struct Engines {
    /// Project membership.
    pub membership: Arc<dyn Membership>,
    /// Topic streams.
    pub history: Arc<dyn History>,
    /// Offline inboxes.
    pub inbox: Arc<dyn Inbox>,
    /// Unsent webhook events.
    pub outbox: Arc<dyn crate::engine::outbox::Outbox>,
}

impl Engines {
    /// Everything in memory: nothing survives the process (tests, embedding experiments).
    pub fn memory() -> Self {
        Self {
            membership: Arc::new(crate::engine::memory::MemoryMembership::new()),
            history: Arc::new(crate::engine::memory::MemoryHistory::new()),
            outbox: Arc::new(crate::engine::outbox::MemoryOutbox),
            inbox: Arc::new(crate::engine::memory::MemoryInbox::new()),
        }
    }
}

/// What a node is made of besides its config and engines: the live registry, the per-key
/// locks, the broker and presence engines, and the cluster link in Redis mode.
pub(crate) struct Parts {
    pub hub: Arc<Hub>,
    pub stripes: Arc<Stripes>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub cluster: Option<cluster::Cluster>,
    /// Idempotency keys: in memory on one node, in Redis in a cluster.
    pub idempotency: Arc<dyn Idempotency>,
    /// The backend hooks' proxy, when `[proxy]` names a hook.
    pub proxy: Option<Arc<crate::hooks::Proxy>>,
    /// The webhook emitter, when `[webhooks]` names a URL.
    pub webhooks: Option<webhooks::Webhooks>,
    /// Where the engines keep their state: `sqlite`, `redis` or `memory` (for metrics).
    pub store: &'static str,
    /// The scope streams: in memory on one node, in Redis in a cluster.
    pub streams: Arc<dyn History>,
    /// The embedding app's hook callbacks.
    pub callbacks: callbacks::Callbacks,
}

/// Who passes the server API's check besides an API key ([`Herald::admin_check`]).
pub(crate) enum AdminAccess<'a> {
    /// The embedding app's check.
    App(&'a dyn AdminCheck),
    /// A JWT (Herald's own authenticator) whose role is admin or superadmin.
    AdminJwt,
    /// Nobody: the app's authenticator speaks for clients, not for administrators.
    ApiKeysOnly,
}

/// A running Herald: cheap to clone, shared by every connection and request.
#[derive(Clone)]
pub struct Herald {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    authenticator: Arc<dyn Authenticator>,
    /// The JWT keys, when the authenticator is Herald's own (reloadable).
    keys: Option<Arc<JwtKeys>>,
    /// The server API's keys (`api_key` and `api_keys`; reloadable).
    api_keys: std::sync::RwLock<Arc<[String]>>,
    /// The embedding app's own check of the server API's callers.
    admin_check: Option<Arc<dyn AdminCheck>>,
    handlers: HashMap<String, Handler>,
    /// The app's hook callbacks (subscribe, publish, events).
    callbacks: callbacks::Callbacks,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    /// Membership, history and inbox.
    engines: Engines,
    presence: Arc<dyn Presence>,
    stripes: Arc<Stripes>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    cluster: Option<cluster::Cluster>,
    idempotency: Arc<dyn Idempotency>,
    proxy: Option<Arc<crate::hooks::Proxy>>,
    webhooks: Option<webhooks::Webhooks>,
    /// The scope streams (`all`, `role:<name>`, `project:<id>`, `user:<id>`).
    streams: Arc<dyn History>,
    /// `sqlite`, `redis` or `memory`: the `store` label of engine-call timings.
    store: &'static str,
    shutdown: CancellationToken,
    started_at: Instant,
    /// Open connections per IP, per user and in all, bounded by `[limits]`.
    slots: ConnectionSlots,
    /// Every connection task, so shutdown can wait for their goodbyes.
    connections: TaskTracker,
    /// The writers of direct connections, one per worker thread.
    flushers: Flushers,
}

impl Herald {
    /// A builder: config, authentication, engines and custom handlers, then
    /// [`HeraldBuilder::build`].
    pub fn builder() -> HeraldBuilder {
        HeraldBuilder::default()
    }

    /// Opens the embedded engines in `config.data_dir` and builds a node with JWT
    /// authentication. `jwt_secret` overrides the configured secret (the server's development
    /// secret).
    pub async fn open(config: Config, jwt_secret: Option<&str>) -> Result<Self, StartError> {
        let mut builder = Self::builder().config(config);
        if let Some(secret) = jwt_secret {
            builder = builder.jwt_secret(secret);
        }
        builder.build().await
    }

    /// Assembles a node from its parts.
    fn assemble(
        config: Config,
        authenticator: Arc<dyn Authenticator>,
        keys: Option<Arc<JwtKeys>>,
        admin_check: Option<Arc<dyn AdminCheck>>,
        engines: Engines,
        handlers: HashMap<String, Handler>,
        parts: Parts,
    ) -> Self {
        let Parts {
            hub,
            stripes,
            broker,
            presence,
            cluster,
            idempotency,
            proxy,
            webhooks,
            store,
            streams,
            callbacks,
        } = parts;
        crate::metrics::install();
        crate::metrics::register_store(store);
        Self {
            inner: Arc::new(Inner {
                slots: ConnectionSlots::new(&config.limits),
                api_keys: std::sync::RwLock::new(config.all_api_keys().into()),
                config,
                authenticator,
                keys,
                admin_check,
                handlers,
                callbacks,
                hub,
                broker,
                engines,
                presence,
                stripes,
                cluster,
                idempotency,
                proxy,
                webhooks,
                streams,
                store,
                shutdown: CancellationToken::new(),
                started_at: Instant::now(),
                connections: TaskTracker::new(),
                flushers: Flushers::start(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
            }),
        }
    }

    /// The keys the server HTTP API accepts now.
    pub(crate) fn api_keys(&self) -> Arc<[String]> {
        self.inner
            .api_keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How the server API checks a caller that shows no API key: the app's [`AdminCheck`],
    /// else an admin JWT when the node verifies Herald's JWTs, else nothing passes.
    pub(crate) fn admin_check(&self) -> AdminAccess<'_> {
        match (&self.inner.admin_check, &self.inner.keys) {
            (Some(check), _) => AdminAccess::App(check.as_ref()),
            (None, Some(_)) => AdminAccess::AdminJwt,
            (None, None) => AdminAccess::ApiKeysOnly,
        }
    }

    /// Puts the credentials of `config` in force (the JWT keys, when the node uses Herald's
    /// own, and the server API's keys) without touching a connection: connections keep the
    /// principal they authenticated as, and a later token or request is checked with the new
    /// keys. On an error nothing changes. `herald serve` calls this on SIGHUP.
    pub fn reload_credentials(&self, config: &Config) -> Result<(), String> {
        config.validate().map_err(|e| e.0)?;
        #[cfg(feature = "jwt")]
        if let Some(keys) = &self.inner.keys {
            keys.reload(&config.jwt)?;
        }
        *self
            .inner
            .api_keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.all_api_keys().into();
        Ok(())
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Who a token names, by the node's authenticator (JWT unless the app plugged its own).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        self.inner.authenticator.authenticate(token).await
    }

    /// Who a connecting client is, from its token and request, by the node's authenticator;
    /// `None` when it is to authenticate with its first message.
    pub(crate) async fn authenticate_request(
        &self,
        token: Option<&str>,
        request: &crate::auth::ConnectRequest,
    ) -> Result<Option<Principal>, AuthError> {
        self.inner
            .authenticator
            .authenticate_request(token, request)
            .await
    }

    /// Whether webhook event `name` is sent (webhooks on, and the event among `events`).
    pub(crate) fn wants_webhook(&self, name: &str) -> bool {
        self.inner.callbacks.events.is_some()
            || self
                .inner
                .webhooks
                .as_ref()
                .is_some_and(|webhooks| webhooks.wants(name))
    }

    /// Hands lifecycle event `name` (docs/HOOKS.md) to the app's event callback and queues
    /// it as a webhook when webhooks are on; never waits.
    pub(crate) fn webhook(&self, name: &'static str, data: impl serde::Serialize) {
        self.inner.callbacks.event(name, &data);
        if let Some(webhooks) = &self.inner.webhooks {
            webhooks.emit(name, data);
        }
    }

    /// The app's handler for a custom message type.
    pub(crate) fn handler(&self, kind: &str) -> Option<Handler> {
        self.inner.handlers.get(kind).cloned()
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// What the offline inboxes hold (every inbox is read: an operator's figure).
    pub(crate) async fn inbox_totals(&self) -> Result<crate::engine::InboxTotals, EngineError> {
        self.inner.engines.inbox.totals().await
    }

    pub(crate) fn membership(&self) -> &Arc<dyn Membership> {
        &self.inner.engines.membership
    }

    /// Cancelled when the node shuts down; every connection loop watches it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Open connections per client IP, per user and in all.
    pub(crate) fn slots(&self) -> &ConnectionSlots {
        &self.inner.slots
    }

    /// The writers of direct connections.
    pub(crate) fn flushers(&self) -> &Flushers {
        &self.inner.flushers
    }

    /// The tracker every connection task runs under.
    pub(crate) fn connection_tasks(&self) -> &TaskTracker {
        &self.inner.connections
    }

    /// Starts a graceful shutdown without waiting: connections still authenticating see the
    /// shutdown token, registered ones are told to close with 1001 `going away` one by one
    /// (so no connection polls a shared token on its hot path).
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
        for conn in self.inner.hub.select(&Scope::All, &[]) {
            conn.close(CloseReason::GOING_AWAY);
        }
    }

    /// Graceful shutdown: every connection is told 1001 `going away` (after what is queued for
    /// it) and this waits, at most `limits.shutdown_grace`, until every connection task ended;
    /// in cluster mode the node then leaves the node list. Returns false if some connections
    /// were still running at the deadline.
    pub async fn shutdown(&self) -> bool {
        self.begin_shutdown();
        self.inner.connections.close();
        let all_gone = tokio::time::timeout(
            self.inner.config.limits.shutdown_grace,
            self.inner.connections.wait(),
        )
        .await
        .is_ok();
        // In cluster mode the node leaves the node list now, not when a peer reaps it.
        self.leave_cluster().await;
        // The closed connections' events are in the outbox before the process ends.
        if let Some(webhooks) = &self.inner.webhooks {
            webhooks.flush().await;
        }
        all_gone
    }

    /// How long the node has been running.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started_at.elapsed()
    }

    /// Hands a publication to the broker; returns the recipients reached here.
    async fn broadcast(&self, publication: Publication) -> Result<usize, EngineError> {
        self.timed("publish", self.inner.broker.publish(Arc::new(publication)))
            .await
            .inspect_err(|_| crate::metrics::engine_error("broker"))
    }

    /// Runs an engine call, recording how long it took under `op`.
    pub(crate) async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let result = call.await;
        crate::metrics::engine_call(self.inner.store, op, started.elapsed());
        result
    }

    /// The live connections of this node in a scope (project members resolved).
    pub(crate) async fn connections_in(
        &self,
        scope: &Scope,
    ) -> Result<Vec<Arc<ConnHandle>>, EngineError> {
        let members =
            crate::engine::members_in(self.inner.engines.membership.as_ref(), scope).await?;
        Ok(self.inner.hub.select(scope, &members))
    }

    /// How many live connections of this node are in a scope (project members resolved).
    pub(crate) async fn count_in(&self, scope: &Scope) -> Result<usize, EngineError> {
        let members =
            crate::engine::members_in(self.inner.engines.membership.as_ref(), scope).await?;
        Ok(self.inner.hub.count(scope, &members))
    }

    /// What this node holds and has done since it started (`GET /api/v1/stats`).
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let snapshot = self.inner.hub.snapshot();
        let counters = &self.inner.hub.counters;
        Stats {
            total_clients: snapshot.connections,
            by_role: snapshot.by_role,
            users: snapshot.users,
            topics: snapshot.topics,
            messages_sent: counters.sent.load(Relaxed),
            messages_received: counters.received.load(Relaxed),
            slow_consumers_dropped: counters.slow_consumers.load(Relaxed),
            uptime_s: self.uptime().as_secs(),
            nodes: None,
        }
    }

    /// Whether the engines answer (for `GET /ready`).
    pub async fn check_engines(&self) -> Result<(), EngineError> {
        self.inner.engines.membership.check().await?;
        self.inner.engines.history.check().await?;
        self.inner.broker.check().await?;
        match &self.inner.proxy {
            Some(proxy) => proxy.check().map_err(EngineError),
            None => Ok(()),
        }
    }
}
