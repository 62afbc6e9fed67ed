//! Acknowledged means replicated: a publication's writes (history, scope and user streams,
//! inboxes) go over one connection of their own, and are answered only once Redis says a
//! replica has them (`WAIT`). `WAIT` covers every earlier write of the connection it is sent
//! on, so the writes that complete while one `WAIT` is out share the next one, like a group
//! commit. The connection is never silently replaced: a write and its `WAIT` must travel on
//! the same one, so each connection has a generation, and a waiter whose write went over an
//! earlier one fails (503) instead of being taken as replicated.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::oneshot;

use crate::engine::EngineError;

/// A write waiting for its `WAIT`: the generation of the connection it went over, how many
/// replicas it needs, and where to say whether they have it.
type Waiter = (u64, u32, oneshot::Sender<Result<(), EngineError>>);

#[derive(Default)]
struct State {
    /// The writes' connection and its generation; `None` after a failure (the next write
    /// opens a new one, of the next generation).
    conn: Option<(u64, MultiplexedConnection)>,
    generation: u64,
    waiting: Vec<Waiter>,
    /// A task is sending `WAIT`s for the waiting writes.
    draining: bool,
}

/// The replicas a write waits for, and the connection and `WAIT`s that make it so.
pub(crate) struct Replication {
    /// `[cluster] wait_replicas`; `None`: as many as Redis reports connected, at most one.
    fixed: Option<u32>,
    /// Replicas connected to the primary when last asked (`INFO replication`).
    connected: AtomicU32,
    timeout: Duration,
    state: Mutex<State>,
    /// On a Redis Cluster, the writes' own connections, taken in turn (a `WAIT` holds the
    /// node connection it is sent on until a replica answers, so it must not be the one
    /// everything else shares, and several let a shard's writes wait side by side).
    cluster_writes: Mutex<Vec<redis::cluster_async::ClusterConnection>>,
    /// The next of `cluster_writes` to take.
    cluster_turn: std::sync::atomic::AtomicUsize,
}

/// The writes' connections to a Redis Cluster: each shard then has as many `WAIT`s in flight.
const CLUSTER_WRITE_CONNECTIONS: usize = 8;

impl Replication {
    pub(crate) fn new(fixed: Option<u32>, timeout: Duration) -> Self {
        Self {
            fixed,
            connected: AtomicU32::new(0),
            timeout,
            state: Mutex::default(),
            cluster_writes: Mutex::default(),
            cluster_turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How long Redis may wait for replicas (`WAIT`'s timeout, ms): half the Redis timeout,
    /// the rest for the answer to come back.
    pub(crate) fn wait_ms(&self) -> u64 {
        (self.timeout / 2).as_millis().max(1) as u64
    }

    /// The error of a write that fewer than `replicas` replicas acknowledged in time.
    pub(crate) fn short_of(&self, acked: u32, replicas: u32) -> EngineError {
        EngineError(format!(
            "redis: {acked} of {replicas} replicas acknowledged the write within {}",
            humantime::format_duration(self.timeout / 2)
        ))
    }

    /// How many replicas a write waits for now (0: writes go the usual way).
    pub(crate) fn wanted(&self) -> u32 {
        self.fixed
            .unwrap_or_else(|| self.connected.load(Relaxed).min(1))
    }

    /// Records the replicas Redis reports connected (what `wanted` follows without a fixed
    /// number); returns whether that changed what writes wait for.
    pub(crate) fn set_connected(&self, replicas: u32) -> bool {
        let before = self.wanted();
        self.connected.store(replicas, Relaxed);
        before != self.wanted()
    }

    /// The next of the writes' connections to a Redis Cluster, opened (lazily) on first use.
    pub(crate) fn cluster_writes(
        &self,
        client: &super::conn::Client,
    ) -> Result<redis::cluster_async::ClusterConnection, EngineError> {
        let mut writes = crate::sync::lock(&self.cluster_writes);
        while writes.len() < CLUSTER_WRITE_CONNECTIONS {
            match client.connect_lazily(self.timeout)? {
                super::conn::Conn::Cluster(conn) => writes.push(conn),
                super::conn::Conn::Single(_) => {
                    return Err(EngineError::new("redis: not a Redis Cluster"))
                }
            }
        }
        let turn = self.cluster_turn.fetch_add(1, Relaxed) % writes.len();
        Ok(writes[turn].clone())
    }

    /// The writes' connection, opened if there is none.
    pub(crate) async fn conn(
        &self,
        client: &redis::Client,
    ) -> Result<(u64, MultiplexedConnection), EngineError> {
        if let Some(open) = crate::sync::lock(&self.state).conn.clone() {
            return Ok(open);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = tokio::time::timeout(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| EngineError::new("redis: no connection within the timeout"))?
        .map_err(|e| EngineError(format!("redis: {e}")))?;
        let mut state = crate::sync::lock(&self.state);
        if let Some(open) = state.conn.clone() {
            return Ok(open); // another write opened one meanwhile
        }
        state.generation += 1;
        let opened = (state.generation, conn);
        state.conn = Some(opened.clone());
        Ok(opened)
    }

    /// The connection of `generation` failed: the next write opens another.
    pub(crate) fn failed(&self, generation: u64) {
        let mut state = crate::sync::lock(&self.state);
        if state.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            state.conn = None;
        }
    }

    /// Waits until `replicas` replicas have every write made so far over the connection of
    /// `generation` (one `WAIT` for every write waiting with it).
    pub(crate) async fn replicated(
        self: &Arc<Self>,
        generation: u64,
        replicas: u32,
    ) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut state = crate::sync::lock(&self.state);
            state.waiting.push((generation, replicas, tx));
            !std::mem::replace(&mut state.draining, true)
        };
        if lead {
            tokio::spawn(self.clone().drain());
        }
        rx.await
            .map_err(|_| EngineError::new("redis: replication wait abandoned"))?
    }

    /// Sends `WAIT`s until no write is waiting.
    async fn drain(self: Arc<Self>) {
        loop {
            let (batch, conn) = {
                let mut state = crate::sync::lock(&self.state);
                if state.waiting.is_empty() {
                    state.draining = false;
                    return;
                }
                (std::mem::take(&mut state.waiting), state.conn.clone())
            };
            let needed = batch.iter().map(|(_, n, _)| *n).max().unwrap_or(0);
            let outcome = match conn {
                Some((generation, conn)) => (generation, self.wait(generation, conn, needed).await),
                None => (
                    0,
                    Err(EngineError::new("redis: the write's connection was lost")),
                ),
            };
            for (generation, replicas, tx) in batch {
                let answer = match &outcome {
                    (g, Ok(acked)) if *g == generation && *acked >= replicas => Ok(()),
                    (g, Ok(acked)) if *g == generation => Err(self.short_of(*acked, replicas)),
                    (_, Err(e)) => Err(e.clone()),
                    _ => Err(EngineError::new("redis: the write's connection was lost")),
                };
                let _ = tx.send(answer);
            }
        }
    }

    /// One `WAIT replicas timeout` on the writes' connection; how many replicas acknowledged.
    async fn wait(
        &self,
        generation: u64,
        mut conn: MultiplexedConnection,
        replicas: u32,
    ) -> Result<u32, EngineError> {
        let wait = redis::cmd("WAIT")
            .arg(replicas)
            .arg(self.wait_ms())
            .to_owned();
        match tokio::time::timeout(self.timeout, wait.query_async::<u32>(&mut conn)).await {
            Ok(Ok(acked)) => Ok(acked),
            Ok(Err(e)) => {
                self.failed(generation);
                Err(EngineError(format!("redis: {e}")))
            }
            Err(_) => {
                self.failed(generation);
                Err(EngineError::new(
                    "redis: no answer to WAIT within the timeout",
                ))
            }
        }
    }
}
