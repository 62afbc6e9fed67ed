//! [`HeraldBuilder`]: the same config as the server, plus what only code can give: an
//! authenticator, a membership source, custom message handlers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::callbacks::{Callbacks, HookEvent, PublishDecision, PublishRequest, SubscribeRequest};
use super::cluster::Cluster;
use super::delivery::LocalDelivery;
use super::handler::{Handler, HandlerResult, Incoming};
use super::JwtKeys;
use super::{Engines, Herald, Parts, StartError};
#[cfg(feature = "jwt")]
use crate::auth::Keys;
use crate::auth::{AdminCheck, Authenticator};
use crate::config::Config;
use crate::engine::memory::{MemoryBroker, MemoryPresence};
#[cfg(feature = "redis")]
use crate::engine::redis::{RedisBroker, RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
use crate::engine::sqlite::{self, SqliteHistory, SqliteInbox, SqliteMembership};
use crate::engine::{
    Broker, Delivery, Idempotency, Membership, MemoryIdempotency, Presence, Stripes,
};
use crate::hub::Hub;

/// Client commands Herald answers itself: a custom handler cannot take these names.
const BUILT_IN: &[&str] = &[
    "auth",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ack",
    "ping",
    "echo",
    "status",
    "join_room",
    "leave_room",
    "subscription",
    "broadcast",
];

/// Builds a [`Herald`] node.
///
/// ```
/// # async fn run() -> Result<(), herald::StartError> {
/// use herald::{Config, Herald, HandlerError};
///
/// let herald = Herald::builder()
///     .config(Config::default())
///     .jwt_secret("a secret shared with the app's login")
///     .in_memory()
///     .on("chat", |msg| async move {
///         let text = msg.data()["text"].as_str().ok_or_else(|| HandlerError::invalid("text?"))?;
///         msg.reply("chat.sent", serde_json::json!({ "length": text.len() }));
///         Ok(())
///     })
///     .build()
///     .await?;
/// # let _ = herald;
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct HeraldBuilder {
    config: Config,
    jwt_secret: Option<String>,
    authenticator: Option<Arc<dyn Authenticator>>,
    admin_check: Option<Arc<dyn AdminCheck>>,
    membership: Option<Arc<dyn Membership>>,
    in_memory: bool,
    handlers: HashMap<String, Handler>,
    bad_handler: Option<String>,
    callbacks: Callbacks,
}

impl HeraldBuilder {
    /// The configuration (the server's TOML, as a [`Config`]); default: [`Config::default`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The HS256/384/512 secret, overriding `config.jwt.secret`.
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Authenticates clients with the app's own check instead of JWTs.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Who may call the server API ([`Herald::api_router`]) besides an API key: the app's
    /// own check, instead of a JWT with an admin role. With an app's own
    /// [`authenticator`](Self::authenticator) and no check, only API keys pass: a role the
    /// app gives its clients never opens the server API.
    pub fn admin_check(mut self, check: impl AdminCheck) -> Self {
        self.admin_check = Some(Arc::new(check));
        self
    }

    /// Reads project membership from the app's own store (merged, as always, with a token's
    /// `projects` claim) instead of Herald's SQLite table.
    pub fn membership(mut self, membership: impl Membership) -> Self {
        self.membership = Some(Arc::new(membership));
        self
    }

    /// Keeps history, inboxes and membership in memory: no data dir, nothing survives the
    /// process. For tests and experiments.
    pub fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self
    }

    /// Handles client messages of type `kind`. The handler gets the message and its sender
    /// ([`Incoming`]) and may reply, publish, or fail with a [`crate::HandlerError`] that the
    /// client receives as `error`. It runs on the sender's connection task: spawn long work.
    pub fn on<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        if BUILT_IN.contains(&kind) || kind.is_empty() {
            self.bad_handler.get_or_insert_with(|| kind.to_string());
        }
        self.handlers
            .insert(kind.to_string(), Handler::new(handler));
        self
    }

    /// Decides subscriptions to namespaces with `subscribe = "proxy"` in the app (instead of
    /// the `[proxy] subscribe` hook): true allows. The namespace's other rules come first.
    /// It runs on the connection's task.
    pub fn on_subscribe<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(SubscribeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.callbacks.on_subscribe(decide);
        self
    }

    /// Decides client publishes to namespaces with `publish = "proxy"` in the app (instead of
    /// the `[proxy] publish` hook), and may replace their data. It runs on the publisher's
    /// connection task.
    pub fn on_publish<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(PublishRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PublishDecision> + Send + 'static,
    {
        self.callbacks.on_publish(decide);
        self
    }

    /// Hears every lifecycle event a webhook would carry (`connection.opened`, `user.online`,
    /// `topic.occupied`, `client.published`, ... with the same `data`), whether or not
    /// `[webhooks]` is set. It is called where the event happens, on that task: it must not
    /// block (send to a channel or spawn for anything slow). On one node: in a cluster each
    /// node's callback hears what happens on that node.
    pub fn on_event(mut self, hear: impl Fn(&HookEvent) + Send + Sync + 'static) -> Self {
        self.callbacks.on_event(hear);
        self
    }

    /// Checks the config and opens the engines: Redis for all of them when
    /// `config.redis_url` is set (cluster mode), else the SQLite file in `config.data_dir`
    /// unless [`in_memory`](Self::in_memory).
    pub async fn build(self) -> Result<Herald, StartError> {
        let config = self.config;
        config.validate().map_err(|e| StartError(e.0))?;
        if let Some(kind) = self.bad_handler {
            return Err(StartError(format!(
                "a handler cannot take the message type `{kind}`: Herald answers it itself"
            )));
        }
        #[cfg(not(feature = "compression"))]
        if config.compression {
            return Err(StartError(
                "compression needs the `compression` feature of the herald crate".into(),
            ));
        }
        // A profile's spelling is the process's.
        let spelling = config.profile.map(crate::config::Profile::spelling);
        if let Some(spelling) = spelling {
            crate::protocol::spelling::set_spelling(spelling).map_err(StartError)?;
        }
        let (authenticator, keys) = match self.authenticator {
            Some(authenticator) => (authenticator, None),
            None => jwt_authenticator(&config, self.jwt_secret.as_deref())?,
        };
        let proxy = crate::hooks::Proxy::start(&config.proxy)
            .map_err(StartError)?
            .map(Arc::new);
        super::proxy::check_rules(&config, proxy.as_deref(), &self.callbacks)
            .map_err(StartError)?;
        let authenticator = super::proxy::with_connect_hook(authenticator, proxy.clone());
        let redis = open_redis(&config)?;
        #[cfg(feature = "redis")]
        if let Some(store) = &redis {
            if !store.is_on_cluster() && store.is_cluster_node().await {
                return Err(StartError(
                    "redis_url names a Redis Cluster node: give the cluster's nodes as redis_cluster instead (docs/CLUSTER.md)".into(),
                ));
            }
            // A single Redis written by an earlier Herald: its keys move to today's names. A
            // Redis that answers but refuses stops the start; one not reachable yet is left to
            // the heartbeat, which moves them once it answers.
            if store.ping().await.is_ok() {
                if let Err(e) = store.migrate_layout().await {
                    return Err(StartError(format!(
                        "redis: cannot move the keys to the hash-tagged layout: {e}"
                    )));
                }
            }
        }
        // The store engine calls are timed under (an app's own membership source included).
        let store = match &redis {
            Some(_) => "redis",
            None if self.in_memory => "memory",
            None => "sqlite",
        };
        let mut engines = match &redis {
            Some(store) => redis_engines(store),
            None if self.in_memory => Engines::memory(),
            None => open_sqlite(&config).await?,
        };
        if let Some(membership) = self.membership {
            engines.membership = membership;
        }
        let webhooks =
            match crate::hooks::WebhookClient::start(&config.webhooks).map_err(StartError)? {
                None => None,
                Some(client) => {
                    check_webhook_events(&config.webhooks.events).map_err(StartError)?;
                    let node = config.node_id.clone().unwrap_or_else(|| "herald".into());
                    Some(super::webhooks::Webhooks::start(
                        &config.webhooks,
                        client,
                        engines.outbox.clone(),
                        node,
                    ))
                }
            };
        let idempotency = match &redis {
            Some(store) => redis_idempotency(store),
            None => Arc::new(MemoryIdempotency::new()) as Arc<dyn Idempotency>,
        };
        let hub = Arc::new(Hub::new());
        let stripes = Arc::new(Stripes::new());
        let local: Arc<dyn Delivery> = Arc::new(LocalDelivery {
            hub: hub.clone(),
            membership: engines.membership.clone(),
            stripes: stripes.clone(),
        });
        // Scope streams are short (`[recovery] window`): memory on one node, where a write
        // costs no fsync (a restart gives them a new epoch, so resumes say so); Redis in a
        // cluster, where every node reads them.
        let (broker, presence, cluster, streams) = match redis {
            Some(store) => redis_broker(store, local, &config),
            None => (
                Arc::new(MemoryBroker::new(local)) as Arc<dyn Broker>,
                Arc::new(MemoryPresence::new()) as Arc<dyn Presence>,
                None,
                memory_streams(&config) as Arc<dyn crate::engine::History>,
            ),
        };
        let parts = Parts {
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
            callbacks: self.callbacks,
        };
        let herald = Herald::assemble(
            config,
            authenticator,
            keys.clone(),
            self.admin_check,
            engines,
            self.handlers,
            parts,
        );
        herald.start_cluster().await;
        #[cfg(feature = "jwt")]
        if let Some(keys) = keys {
            herald.start_key_set(keys).await;
        }
        Ok(herald)
    }
}

/// One node's scope streams, in memory, swept every few seconds so that a stream nobody
/// writes any more lets its messages go once they are past the window (the task ends with
/// the node).
fn memory_streams(config: &Config) -> Arc<crate::engine::memory::MemoryHistory> {
    let streams = Arc::new(crate::engine::memory::MemoryHistory::with_one_epoch());
    let recovery = &config.recovery;
    if recovery.window.is_zero() {
        return streams;
    }
    let retention = crate::engine::Retention {
        size: recovery.max_messages,
        ttl: recovery.window,
    };
    let every = (recovery.window / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let weak = Arc::downgrade(&streams);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(streams) = weak.upgrade() else {
                return;
            };
            streams.sweep(retention);
        }
    });
    streams
}

/// Every `[webhooks] events` entry names an event Herald sends.
fn check_webhook_events(events: &[String]) -> Result<(), String> {
    match events
        .iter()
        .find(|e| !crate::config::WEBHOOK_EVENTS.contains(&e.as_str()))
    {
        Some(unknown) => Err(format!(
            "[webhooks] events: `{unknown}` is no event (expected some of {})",
            crate::config::WEBHOOK_EVENTS.join(", ")
        )),
        None => Ok(()),
    }
}

/// A node's authenticator, and its JWT keys when it is Herald's own.
type NodeAuth = (Arc<dyn Authenticator>, Option<Arc<JwtKeys>>);

/// Herald's JWT authenticator from `[jwt]` (or the development secret), and its keys.
#[cfg(feature = "jwt")]
fn jwt_authenticator(config: &Config, dev_secret: Option<&str>) -> Result<NodeAuth, StartError> {
    let keys = Arc::new(Keys::from_config(&config.jwt, dev_secret).map_err(StartError)?);
    Ok((keys.clone(), Some(keys)))
}

#[cfg(not(feature = "jwt"))]
fn jwt_authenticator(_: &Config, _: Option<&str>) -> Result<NodeAuth, StartError> {
    Err(StartError(
        "no authenticator: give one with .authenticator(...), or enable the `jwt` feature of \
         the herald crate for JWTs"
            .into(),
    ))
}

/// The Redis of `redis_url` or the Redis Cluster of `redis_cluster` (cluster mode), when one
/// is set.
#[cfg(feature = "redis")]
fn open_redis(config: &Config) -> Result<Option<RedisStore>, StartError> {
    use crate::engine::redis::Deployment;
    let deployment = match &config.redis_url {
        Some(url) => Deployment::Single(url.clone()),
        None if !config.redis_cluster.is_empty() => {
            Deployment::Cluster(config.redis_cluster.clone())
        }
        None => return Ok(None),
    };
    RedisStore::open(&RedisOptions {
        deployment,
        node_id: config.node_id.clone().unwrap_or_else(random_node_id),
        timeout: config.cluster.redis_timeout,
        wait_replicas: config.cluster.wait_replicas,
    })
    .map(Some)
    .map_err(|e| StartError(e.0))
}

#[cfg(feature = "redis")]
fn redis_engines(store: &RedisStore) -> Engines {
    Engines {
        membership: Arc::new(store.clone()),
        history: Arc::new(store.clone()),
        inbox: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
    }
}

/// The cluster's broker and presence, and the node's link to the cluster.
#[cfg(feature = "redis")]
fn redis_broker(store: RedisStore, local: Arc<dyn Delivery>, config: &Config) -> ClusterParts {
    let broker = Arc::new(RedisBroker::start(
        store.clone(),
        local,
        Arc::new(config.clone()),
    ));
    let cluster = Cluster {
        store: store.clone(),
        broker: broker.clone(),
    };
    let streams = Arc::new(store.clone());
    (broker, Arc::new(store), Some(cluster), streams)
}

/// Without the `redis` feature there is no Redis to open: `redis_url` is refused.
#[cfg(not(feature = "redis"))]
type RedisStore = std::convert::Infallible;

#[cfg(not(feature = "redis"))]
fn open_redis(config: &Config) -> Result<Option<RedisStore>, StartError> {
    match config.on_redis() {
        true => Err(StartError(
            "redis_url and redis_cluster need the `redis` feature of the herald crate".into(),
        )),
        false => Ok(None),
    }
}

#[cfg(not(feature = "redis"))]
fn redis_engines(store: &RedisStore) -> Engines {
    match *store {}
}

/// Idempotency keys in Redis: a repeat sent to any node finds the first answer.
#[cfg(feature = "redis")]
fn redis_idempotency(store: &RedisStore) -> Arc<dyn Idempotency> {
    Arc::new(store.clone())
}

#[cfg(not(feature = "redis"))]
fn redis_idempotency(store: &RedisStore) -> Arc<dyn Idempotency> {
    match *store {}
}

#[cfg(not(feature = "redis"))]
fn redis_broker(store: RedisStore, _: Arc<dyn Delivery>, _: &Config) -> ClusterParts {
    match store {}
}

/// A node's broker, presence, cluster link and scope streams.
type ClusterParts = (
    Arc<dyn Broker>,
    Arc<dyn Presence>,
    Option<Cluster>,
    Arc<dyn crate::engine::History>,
);

#[cfg(feature = "redis")]
/// A node id for a node started without one: unique, and new on every start (the old one's
/// entries are reaped once its heartbeat expires).
fn random_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

/// Without the `sqlite` feature there is no embedded store.
#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_: &Config) -> Result<Engines, StartError> {
    Err(StartError(
        "the embedded store needs the `sqlite` feature of the herald crate: enable it, or \
         build with .in_memory()"
            .into(),
    ))
}

/// The embedded engines on one SQLite file in the data dir.
#[cfg(feature = "sqlite")]
async fn open_sqlite(config: &Config) -> Result<Engines, StartError> {
    sqlite::create_private(&config.data_dir).map_err(|e| StartError(e.0))?;
    // Two servers on one file would interleave a stream's offsets: the second one stops here.
    let lock = sqlite::DirLock::take(&config.data_dir).map_err(|e| StartError(e.0))?;
    let db = sqlite::open(&config.data_dir.join("herald.db")).map_err(|e| StartError(e.0))?;
    let db = Arc::new(std::sync::Mutex::new(db));
    let membership = SqliteMembership::load(db.clone())
        .await
        .map_err(|e| StartError(e.0))?;
    let writer = Arc::new(sqlite::GroupCommit::start(db.clone()).map_err(|e| StartError(e.0))?);
    Ok(Engines {
        membership: Arc::new(membership),
        history: Arc::new(SqliteHistory::new(db.clone(), writer.clone()).holding(lock)),
        inbox: Arc::new(SqliteInbox::new(db.clone(), writer.clone())),
        outbox: Arc::new(sqlite::SqliteOutbox::new(db, writer)),
    })
}
