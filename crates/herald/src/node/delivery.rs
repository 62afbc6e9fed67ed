//! [`LocalDelivery`]: the node's side of the engines' [`Delivery`]: what a broker hands to
//! this node's connections, with project members resolved on the way.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;

use crate::engine::{members_in, Delivery, EngineError, Membership, Stripes};
use crate::hub::Hub;
use crate::protocol::CloseReason;
use crate::publication::{Publication, Scope};

/// Delivers to this node's hub. Every broker ends in one of these on each node.
#[derive(Clone)]
pub struct LocalDelivery {
    /// This node's hub.
    pub(crate) hub: Arc<Hub>,
    /// Where project members come from.
    pub(crate) membership: Arc<dyn Membership>,
    /// The node's per-key locks.
    pub(crate) stripes: Arc<Stripes>,
}

impl LocalDelivery {
    /// Counts a publication fanned out here (the node's stats and the metrics).
    fn fanned_out(&self, publication: &Publication, reached: usize, started: std::time::Instant) {
        self.hub.counters.publications.fetch_add(1, Relaxed);
        crate::metrics::publication(publication.scope.name(), reached, started.elapsed());
    }
}

#[async_trait]
impl Delivery for LocalDelivery {
    async fn deliver(&self, publication: &Publication) -> Result<usize, EngineError> {
        let members = members_in(self.membership.as_ref(), &publication.scope).await?;
        let started = std::time::Instant::now();
        let reached = self.hub.deliver(publication, &members);
        self.fanned_out(publication, reached, started);
        Ok(reached)
    }

    fn deliver_to_topic(&self, publication: &Publication) -> usize {
        let started = std::time::Instant::now();
        let reached = self.hub.deliver(publication, &[]);
        self.fanned_out(publication, reached, started);
        reached
    }

    fn stripes(&self) -> &Stripes {
        &self.stripes
    }

    fn has_user(&self, user: &str) -> bool {
        self.hub.has_user(user)
    }

    fn undelivered_of(&self, user: &str) -> Vec<Arc<Publication>> {
        self.hub.undelivered_of(user)
    }

    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError> {
        let members = members_in(self.membership.as_ref(), scope).await?;
        let conns = self.hub.select(scope, &members);
        for conn in &conns {
            conn.close(CloseReason::DISCONNECTED);
        }
        Ok(conns.len())
    }

    async fn close_scope(&self, scope: &Scope, reason: CloseReason) {
        let members = match members_in(self.membership.as_ref(), scope).await {
            Ok(members) => members,
            Err(e) => return tracing::warn!(error = %e, "could not close a scope's connections"),
        };
        for conn in self.hub.select(scope, &members) {
            conn.close(reason);
        }
    }
}
