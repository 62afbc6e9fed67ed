//! A node built without the `redis` feature: never in cluster mode. The same calls as
//! `cluster.rs`, each doing what a single node does.

use super::{Herald, Stats};
use crate::engine::EngineError;
use crate::publication::Scope;

/// No cluster link can exist: `Option<Cluster>` is always `None`.
pub(crate) enum Cluster {}

impl Herald {
    pub(crate) async fn start_cluster(&self) {}

    pub(crate) async fn leave_cluster(&self) {}

    /// Always `None`: one node's first and last subscribers are the topic's.
    pub(super) async fn occupancy_in_cluster(&self, _topic: &str, _gained: bool) -> Option<bool> {
        None
    }

    /// Always `None`: the re-check runs on this node alone.
    pub(super) async fn recheck_everywhere(
        &self,
        _scope: &Scope,
    ) -> Option<Result<usize, EngineError>> {
        None
    }

    /// The node's figures.
    pub async fn cluster_stats(&self) -> Result<Stats, EngineError> {
        Ok(self.stats())
    }
}
