//! [`Herald`]: the front door that ties config, auth, the hub and the engines together. It is a
//! cheap cloneable handle; the HTTP layer, the connections and embedding code all hold one.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Principal, Verifier};
use crate::config::Config;
use crate::connection::limits::IpSlots;
use crate::engine::memory::MemoryBroker;
use crate::engine::sqlite::{self, SqliteMembership};
use crate::engine::{Broker, EngineError, LocalDelivery, Membership};
use crate::hub::Hub;
use crate::publication::Publication;

/// Why Herald could not start; the text is one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// What a publication reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    /// Connections the publication was queued to on this node.
    pub recipients: usize,
}

/// A running Herald: cheap to clone, shared by every connection and request.
#[derive(Clone)]
pub struct Herald {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    verifier: Verifier,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    membership: Arc<dyn Membership>,
    shutdown: CancellationToken,
    started_at: Instant,
    ip_slots: Arc<IpSlots>,
    /// Every connection task, so shutdown can wait for their goodbyes.
    connections: TaskTracker,
}

impl Herald {
    /// Opens the embedded engines in `config.data_dir` and builds a node. `jwt_secret`
    /// overrides the configured secret (the server's development secret).
    pub async fn open(config: Config, jwt_secret: Option<&str>) -> Result<Self, StartError> {
        config.validate().map_err(|e| StartError(e.0))?;
        if config.redis_url.is_some() {
            return Err(StartError(
                "redis_url: the Redis engine is not part of this build yet".into(),
            ));
        }
        let verifier = Verifier::from_config(&config.jwt, jwt_secret).map_err(StartError)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError(format!("data dir {}: {e}", config.data_dir.display())))?;
        let db = sqlite::open(&config.data_dir.join("herald.db")).map_err(|e| StartError(e.0))?;
        let membership = SqliteMembership::load(Arc::new(Mutex::new(db)))
            .await
            .map_err(|e| StartError(e.0))?;
        Ok(Self::with_engines(config, verifier, Arc::new(membership)))
    }

    /// Builds a node on a given verifier and membership store, with the memory broker.
    pub fn with_engines(
        config: Config,
        verifier: Verifier,
        membership: Arc<dyn Membership>,
    ) -> Self {
        crate::metrics::install();
        let hub = Arc::new(Hub::new());
        let broker = Arc::new(MemoryBroker::new(LocalDelivery {
            hub: hub.clone(),
            membership: membership.clone(),
        }));
        Self {
            inner: Arc::new(Inner {
                ip_slots: IpSlots::new(config.limits.max_connections_per_ip),
                config,
                verifier,
                hub,
                broker,
                membership,
                shutdown: CancellationToken::new(),
                started_at: Instant::now(),
                connections: TaskTracker::new(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub fn membership(&self) -> &Arc<dyn Membership> {
        &self.inner.membership
    }

    /// Cancelled when the node shuts down; every connection loop watches it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Open connections per client IP.
    pub fn ip_slots(&self) -> &Arc<IpSlots> {
        &self.inner.ip_slots
    }

    /// The tracker every connection task runs under.
    pub fn connection_tasks(&self) -> &TaskTracker {
        &self.inner.connections
    }

    /// Graceful shutdown: every connection is told 1001 `going away` (after what is queued for
    /// it) and this waits, at most `limits.shutdown_grace`, until every connection task ended.
    /// Returns false if some were still running at the deadline.
    pub async fn shutdown(&self) -> bool {
        self.inner.shutdown.cancel();
        self.inner.connections.close();
        tokio::time::timeout(
            self.inner.config.limits.shutdown_grace,
            self.inner.connections.wait(),
        )
        .await
        .is_ok()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started_at.elapsed()
    }

    /// Sends a publication to its scope through the broker.
    pub async fn publish(&self, publication: Publication) -> Result<Published, EngineError> {
        let id = publication.id.clone();
        let recipients = self
            .inner
            .broker
            .publish(Arc::new(publication))
            .await
            .inspect_err(|_| crate::metrics::engine_error("broker"))?;
        Ok(Published { id, recipients })
    }

    /// The live connections of this node in a scope (project members resolved).
    pub async fn connections_in(
        &self,
        scope: &crate::publication::Scope,
    ) -> Result<Vec<Arc<crate::hub::ConnHandle>>, EngineError> {
        let members = match scope {
            crate::publication::Scope::Project(project) => {
                self.inner.membership.members(project).await?
            }
            _ => Vec::new(),
        };
        Ok(self.inner.hub.select(scope, &members))
    }

    /// `GET /api/v1/stats`: what this node holds and has done since it started.
    pub fn stats(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let snapshot = self.inner.hub.snapshot();
        let counters = &self.inner.hub.counters;
        serde_json::json!({
            "total_clients": snapshot.connections,
            "by_role": snapshot.by_role,
            "users": snapshot.users,
            "topics": snapshot.topics,
            "messages_sent": counters.sent.load(Relaxed),
            "messages_received": counters.received.load(Relaxed),
            "slow_consumers_dropped": counters.slow_consumers.load(Relaxed),
            "uptime_s": self.uptime().as_secs(),
        })
    }

    /// Whether the engines answer (for `GET /ready`).
    pub async fn check_engines(&self) -> Result<(), EngineError> {
        self.inner.membership.check().await
    }

    /// Whether `who` belongs to `project`, by the token's claim or the membership store.
    pub async fn is_member(&self, who: &Principal, project: &str) -> Result<bool, EngineError> {
        if who.projects.iter().any(|p| p == project) {
            return Ok(true);
        }
        self.inner
            .membership
            .is_member(project, &who.user_id)
            .await
            .inspect_err(|_| crate::metrics::engine_error("membership"))
    }
}
