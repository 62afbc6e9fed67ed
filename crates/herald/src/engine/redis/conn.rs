//! One Redis or a Redis Cluster behind one connection type: the engine's commands and scripts
//! run on [`Conn`] either way. A Redis Cluster connection follows MOVED and ASK, refreshes its
//! slot map after a failover or a resharding, and reconnects on its own.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::engine::EngineError;

/// Where the engine's data lives.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// One Redis (standalone, or a primary behind Sentinel): `redis://[user:password@]host:port[/db]`.
    Single(String),
    /// A Redis Cluster: seed URLs, any of its nodes.
    Cluster(Vec<String>),
}

/// The client a [`Conn`] (and the broker's Pub/Sub link) is made from.
#[derive(Clone)]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl Client {
    pub(crate) fn open(deployment: &Deployment, timeout: Duration) -> Result<Self, EngineError> {
        match deployment {
            Deployment::Single(url) => redis::Client::open(url.as_str())
                .map(Client::Single)
                .map_err(|e| EngineError(format!("redis_url: {e}"))),
            Deployment::Cluster(urls) if urls.is_empty() => {
                Err(EngineError::new("redis_cluster: no seed URL"))
            }
            Deployment::Cluster(urls) => cluster_builder(urls, timeout)
                .build()
                .map(|client| Client::Cluster(Box::new(client)))
                .map_err(|e| EngineError(format!("redis_cluster: {e}"))),
        }
    }

    /// A connection that connects lazily and reconnects on its own.
    pub(crate) fn connect_lazily(&self, timeout: Duration) -> Result<Conn, EngineError> {
        match self {
            Client::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(Conn::Single)
                    .map_err(|e| EngineError(format!("redis: {e}")))
            }
            Client::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }
}

/// The cluster client's settings: the timeouts, and retries that outlast a failover (a
/// replica's promotion takes about `cluster-node-timeout`).
pub(crate) fn cluster_builder(urls: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(6)
        .min_retry_wait(20)
        .max_retry_wait(500)
}

/// A connection to one Redis or to a Redis Cluster. Cheap to clone: clones share it.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}
