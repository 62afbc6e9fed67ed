//! The node's writers of direct connections (see [`super::outbox`]): a push lists its
//! connection here, and a flusher task writes each listed connection's whole queue in one
//! `writev`. A publication to 1,000 subscribers is then 1,000 pushes and 1,000 writes, with no
//! task woken per recipient; when publications come faster than the writes, each write takes
//! every frame queued since the last one, so the cost per delivery falls as the load rises
//! (docs/BENCHMARKS.md).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::ConnHandle;

/// How many connections a flusher writes before it lets other tasks run.
const YIELD_EVERY: usize = 64;

/// One writer: the connections waiting to be written, and the task that writes them.
#[derive(Debug, Default)]
pub struct Flusher {
    due: Mutex<Vec<Arc<ConnHandle>>>,
    notify: Notify,
}

impl Flusher {
    /// Lists a connection to be written (once: its `scheduled` flag says it is listed).
    pub(crate) fn schedule(&self, conn: Arc<ConnHandle>) {
        let mut due = crate::sync::lock(&self.due);
        let first = due.is_empty();
        due.push(conn);
        drop(due);
        if first {
            self.notify.notify_one();
        }
    }

    /// Empties the list (the benchmarks: nothing runs this flusher).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn take_due(&self) -> Vec<Arc<ConnHandle>> {
        std::mem::take(&mut *crate::sync::lock(&self.due))
    }

    /// Writes listed connections until the node ends (the task is aborted with the runtime).
    pub(crate) async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.notify.notified().await;
            loop {
                std::mem::swap(&mut *crate::sync::lock(&self.due), &mut batch);
                if batch.is_empty() {
                    break;
                }
                for (i, conn) in batch.drain(..).enumerate() {
                    conn.flush_scheduled();
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        // A batch can be thousands of writes: let requests (`/health`, a
                        // publish) and reads in between, even when the node is overloaded.
                        tokio::task::yield_now().await;
                    }
                }
                // What was pushed meanwhile is the next batch.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The node's flushers, one per worker thread, each connection on one of them.
#[derive(Debug)]
pub struct Flushers(Vec<Arc<Flusher>>);

impl Flushers {
    /// `n` flushers, each on its own task (must run inside a tokio runtime).
    pub fn start(n: usize) -> Self {
        let flushers: Vec<Arc<Flusher>> = (0..n.max(1)).map(|_| Arc::default()).collect();
        for flusher in &flushers {
            tokio::spawn(flusher.clone().run());
        }
        Self(flushers)
    }

    /// The flusher of connection `id`.
    pub fn of(&self, id: u64) -> Arc<Flusher> {
        self.0[(id as usize) % self.0.len()].clone()
    }
}
