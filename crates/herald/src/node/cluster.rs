//! Cluster mode on Redis, the node's side: a heartbeat that carries the node's figures, the
//! reaping of dead nodes (their presence entries go, their users' `user_left` are sent), the
//! re-assertion of this node's presence after Redis came back, and cluster-wide stats.

use std::sync::Arc;
use std::time::Duration;

use super::{Herald, NodeStats, Stats};
use crate::engine::redis::{Reaped, RedisBroker, RedisStore};
use crate::engine::EngineError;
use crate::protocol::hooks;
use crate::publication::Scope;

/// The cluster link of a node.
pub(crate) struct Cluster {
    pub store: RedisStore,
    pub broker: Arc<RedisBroker>,
}

impl Stats {
    /// These figures as one node's entry in a cluster's `nodes` list.
    fn of_node(&self, node_id: &str) -> NodeStats {
        NodeStats {
            node_id: node_id.to_string(),
            figures: Stats {
                nodes: None,
                ..self.clone()
            },
        }
    }
}

impl Herald {
    fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    /// Starts the cluster tasks (nothing without Redis): first removes what a previous run
    /// under this node id left in Redis, then beats and reaps, and re-asserts presence on
    /// every reconnection. The tasks end at shutdown.
    pub(crate) async fn start_cluster(&self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let me = cluster.store.node_id().to_string();
        match cluster.store.reap(&me).await {
            Ok(reaped) => self.announce_reaped(reaped).await,
            Err(e) => tracing::warn!(error = %e, "redis: could not clear this node's old entries"),
        }
        if let Err(e) = cluster.store.refresh_replicas().await {
            tracing::warn!(error = %e, "redis: could not count the primary's replicas");
        }
        tokio::spawn(beat_and_reap(self.clone()));
        if let Some(rechecks) = cluster.broker.take_rechecks() {
            tokio::spawn(recheck_on_request(self.clone(), rechecks));
        }
        tokio::spawn(reassert_on_reconnect(
            self.clone(),
            cluster.broker.generations(),
        ));
    }

    /// A clean shutdown, once the connections are gone: what they left in Redis is cleared
    /// (their users' `user_left` sent) and the node leaves the node list at once.
    pub(crate) async fn leave_cluster(&self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let me = cluster.store.node_id().to_string();
        match cluster.store.reap(&me).await {
            Ok(reaped) => self.announce_reaped(reaped).await,
            Err(e) => tracing::warn!(error = %e, "redis: could not clear this node's entries"),
        }
        match cluster.store.leave().await {
            Ok(()) => tracing::info!(node = %me, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "redis: could not leave the node list; peers will reap it")
            }
        }
    }

    /// In a cluster, whether this node's first subscriber of `topic` (`gained`) or its last
    /// leaving occupied or vacated it on every node (counted in Redis); `None` on one node.
    pub(super) async fn occupancy_in_cluster(&self, topic: &str, gained: bool) -> Option<bool> {
        let cluster = self.cluster()?;
        let delta = if gained { 1 } else { -1 };
        match cluster.store.count_subscribers(topic, delta).await {
            Ok(nodes) => Some(if gained { nodes == 1 } else { nodes == 0 }),
            Err(e) => {
                tracing::warn!(topic, error = %e, "redis: a topic's subscribers not counted");
                Some(false)
            }
        }
    }

    /// The events of what a reaped node held: `user_left` for each `(topic, user)` whose last
    /// connection went with it, and the webhooks of the users and topics it left empty.
    async fn announce_reaped(&self, reaped: Reaped) {
        self.announce_left(reaped.left).await;
        for user_id in &reaped.offline {
            self.webhook("user.offline", hooks::UserPresence { user_id });
        }
        for topic in &reaped.vacated {
            self.webhook("topic.vacated", hooks::TopicOccupancy { topic });
        }
    }

    /// `user_left` for each `(topic, user)` whose last connection went with a dead node.
    async fn announce_left(&self, left: Vec<(String, String)>) {
        for (topic, user) in left {
            if self.presence_features(&topic).1 {
                self.announce(&topic, false, &user).await;
            }
        }
    }

    /// Writes this node's heartbeat (its figures, expiring after `node_ttl`), and counts the
    /// primary's replicas again.
    async fn beat(&self, cluster: &Cluster) -> Result<(), EngineError> {
        let me = cluster.store.node_id();
        let figures = serde_json::to_string(&self.stats().of_node(me)).unwrap_or_default();
        let ttl = self.config().cluster.node_ttl.as_millis() as u64;
        cluster.store.beat(figures, ttl).await?;
        // Redis was not reachable at start: its keys move now (once; then a no-op).
        if let Err(e) = cluster.store.migrate_layout().await {
            tracing::warn!(error = %e, "redis: cannot move the keys to the hash-tagged layout");
        }
        // A Redis that refuses INFO (an ACL) keeps the last count: the beat itself went through.
        if let Err(e) = cluster.store.refresh_replicas().await {
            tracing::debug!(error = %e, "redis: could not count the primary's replicas");
        }
        Ok(())
    }

    /// Finds nodes whose heartbeat expired and reaps each (one node does each, by a lock).
    async fn reap_dead(&self, cluster: &Cluster) -> Result<(), EngineError> {
        let store = &cluster.store;
        let ttl = self.config().cluster.node_ttl.as_millis() as u64;
        for node in store.dead_nodes().await? {
            if !store.claim_reaping(&node, ttl).await? {
                continue;
            }
            let reaped = store.reap(&node).await?;
            tracing::info!(node, users_left = reaped.left.len(), "reaped a dead node");
            // Its unsent webhook events are sent from here, then what its death changed.
            if let Some(webhooks) = &self.inner.webhooks {
                webhooks.adopt(store.adopt_webhooks(&node).await?);
            }
            store.forget_node(&node).await?;
            self.announce_reaped(reaped).await;
        }
        Ok(())
    }

    /// After the Pub/Sub link came back, Redis may have lost this node's entries (a restart
    /// without persistence): clear them and write them again from the live connections.
    async fn reassert(&self, cluster: &Cluster) -> Result<(), EngineError> {
        cluster.store.reap(cluster.store.node_id()).await?;
        let limits = self.inbox_limits();
        for conn in self.inner.hub.select(&Scope::All, &[]) {
            let who = conn.principal();
            // The inbox it returns stays where it is, for the user's next connection.
            cluster.store.attach(&who.user_id, limits).await?;
            for topic in conn.topics() {
                let (presence, join_leave) = self.presence_features(&topic);
                if presence || join_leave {
                    use crate::engine::Presence;
                    cluster
                        .store
                        .join(&topic, &who.user_id, &conn.client_id)
                        .await?;
                }
            }
        }
        // Its topics' subscriber counts, when they are kept.
        if self.wants_webhook("topic.occupied") || self.wants_webhook("topic.vacated") {
            for topic in self.inner.hub.topics() {
                cluster.store.count_subscribers(&topic, 1).await?;
            }
        }
        Ok(())
    }

    /// Has every node of the cluster re-check the subscriptions of `scope` (a user, or a
    /// project's subscribers); `None` without Redis.
    pub(super) async fn recheck_everywhere(
        &self,
        scope: &Scope,
    ) -> Option<Result<usize, EngineError>> {
        let cluster = self.cluster()?;
        Some(cluster.broker.recheck(scope).await)
    }

    /// The node's figures, and in cluster mode every live node's, summed, with a `nodes` list.
    pub async fn cluster_stats(&self) -> Result<Stats, EngineError> {
        let mut stats = self.stats();
        let Some(cluster) = self.cluster() else {
            return Ok(stats);
        };
        let store = &cluster.store;
        let me = store.node_id();
        let known = store.known_nodes().await?;
        let others: Vec<String> = known.into_iter().filter(|n| n != me).collect();
        let mut nodes = vec![stats.of_node(me)];
        nodes.extend(
            store
                .node_figures(&others)
                .await?
                .iter()
                .filter_map(|f| serde_json::from_str::<NodeStats>(f).ok()),
        );
        for node in nodes[1..].iter().map(|n| &n.figures) {
            stats.total_clients += node.total_clients;
            for (role, n) in &node.by_role {
                *stats.by_role.entry(role.clone()).or_default() += n;
            }
            stats.users += node.users;
            stats.topics += node.topics;
            stats.messages_sent += node.messages_sent;
            stats.messages_received += node.messages_received;
            stats.slow_consumers_dropped += node.slow_consumers_dropped;
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        stats.nodes = Some(nodes);
        Ok(stats)
    }
}

async fn beat_and_reap(node: Herald) {
    let Some(cluster) = node.cluster() else {
        return;
    };
    let every = node.config().cluster.node_ttl / 3;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = node.beat(cluster).await {
            tracing::warn!(error = %e, "redis: heartbeat failed");
            continue;
        }
        if let Err(e) = node.reap_dead(cluster).await {
            tracing::warn!(error = %e, "redis: reaping dead nodes failed");
        }
    }
}

async fn reassert_on_reconnect(node: Herald, mut generations: tokio::sync::watch::Receiver<u64>) {
    let Some(cluster) = node.cluster() else {
        return;
    };
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            changed = generations.changed() => if changed.is_err() { return },
        }
        // Generation 1 is the first connection: nothing was lost yet.
        if *generations.borrow_and_update() < 2 {
            continue;
        }
        if let Err(e) = node.reassert(cluster).await {
            tracing::warn!(error = %e, "redis: could not re-assert this node's presence");
        }
    }
}

/// Runs the re-checks other nodes (or this one) ask for: the live connections here lose the
/// topics they may no longer receive.
async fn recheck_on_request(
    node: Herald,
    mut rechecks: tokio::sync::mpsc::UnboundedReceiver<crate::engine::redis::Recheck>,
) {
    loop {
        let recheck = tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            next = rechecks.recv() => match next {
                Some(recheck) => recheck,
                None => return,
            },
        };
        let revoked = node.revoke_lost_topics_in(&recheck.scope).await;
        let _ = recheck.done.send(revoked);
    }
}
