//! The nodes of a cluster in Redis: each node's heartbeat (its figures, expiring after
//! `node_ttl`), the set of nodes seen, and the lock one node takes to reap a dead one.

use redis::AsyncCommands;

use super::{keys, RedisStore};
use crate::engine::EngineError;

impl RedisStore {
    /// Every node id seen and not yet reaped.
    pub(crate) async fn known_nodes(&self) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn();
        self.run(async move { conn.smembers(keys::nodes()).await })
            .await
    }

    /// Writes this node's heartbeat: `figures` (JSON), expiring after `ttl_ms`.
    pub(crate) async fn beat(&self, figures: String, ttl_ms: u64) -> Result<(), EngineError> {
        let me = self.node_id().to_string();
        let mut conn = self.conn();
        self.run(conn.set_options::<_, _, ()>(
            keys::node(&me),
            figures,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)),
        ))
        .await?;
        let mut conn = self.conn();
        self.run(conn.sadd::<_, _, ()>(keys::nodes(), &me)).await
    }

    /// The other known nodes whose heartbeat expired.
    pub(crate) async fn dead_nodes(&self) -> Result<Vec<String>, EngineError> {
        let mut dead = Vec::new();
        for node in self.known_nodes().await? {
            if node == self.node_id() {
                continue;
            }
            let mut conn = self.conn();
            let key = keys::node(&node);
            let alive: bool = self.run(async move { conn.exists(key).await }).await?;
            if !alive {
                dead.push(node);
            }
        }
        Ok(dead)
    }

    /// Takes the right to reap `node` for `ttl_ms`; false if another node has it.
    pub(crate) async fn claim_reaping(&self, node: &str, ttl_ms: u64) -> Result<bool, EngineError> {
        let mut conn = self.conn();
        let key = keys::reaping(node);
        let me = self.node_id().to_string();
        let won: Option<String> = self
            .run(async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(me)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(won.is_some())
    }

    /// Forgets a reaped node.
    pub(crate) async fn forget_node(&self, node: &str) -> Result<(), EngineError> {
        let mut conn = self.conn();
        let node = node.to_string();
        self.run(async move { conn.srem::<_, _, ()>(keys::nodes(), node).await })
            .await
    }

    /// This node leaves the cluster (a clean shutdown): its heartbeat and its place in the
    /// node list go at once, rather than when a peer reaps it after `node_ttl`.
    pub(crate) async fn leave(&self) -> Result<(), EngineError> {
        let me = self.node_id().to_string();
        let mut conn = self.conn();
        self.run(conn.del::<_, ()>(keys::node(&me))).await?;
        let mut conn = self.conn();
        self.run(conn.srem::<_, _, ()>(keys::nodes(), &me)).await
    }

    /// The heartbeat figures of these nodes (JSON), where they are still alive.
    pub(crate) async fn node_figures(&self, nodes: &[String]) -> Result<Vec<String>, EngineError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = nodes.iter().map(|n| keys::node(n)).collect();
        let mut conn = self.conn();
        let figures: Vec<Option<String>> = self.run(async move { conn.mget(ids).await }).await?;
        Ok(figures.into_iter().flatten().collect())
    }
}
