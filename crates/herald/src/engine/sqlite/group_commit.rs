//! Group commit for the SQLite file: one writer thread takes every durable write (history
//! appends, inbox stores) from a queue; the writes that arrive while a commit is in flight go
//! into the next one, so one transaction and one fsync serve them all. Each caller is answered
//! only after the commit that covers its write (`synchronous = FULL` as before), and with an
//! error when that commit failed: nothing is half-acknowledged.
//!
//! Writes run in queue order, each in a savepoint of the batch's transaction, so one failing
//! write fails only itself; per-topic offsets stay in order because a topic's appends are
//! queued one at a time (under the topic's stripe), and the after-commit steps (deliveries)
//! run in the same order.

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};

use crate::engine::EngineError;

/// The most writes one commit carries.
const MAX_BATCH: usize = 512;

/// What runs after the batch's commit, on the runtime, in queue order: the caller's
/// `committed` step and answer (with the commit's failure, if any).
type Answer = Box<dyn FnOnce(Option<&EngineError>) + Send>;

/// A committed (or failed) batch's answers, handed from the writer thread to the runtime in
/// one message: one cross-thread wake-up per batch, not per write.
type Answered = (Vec<Answer>, Option<EngineError>);

/// One queued write: given the batch's transaction (or `None` when the batch could not begin),
/// it does its writes and returns how to answer once the batch is committed.
type Job = Box<dyn FnOnce(Option<&mut Transaction<'_>>) -> Answer + Send>;

/// The queue of a database's writer thread.
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    /// Why the last commit failed, until one succeeds again (for readiness).
    failing: Arc<Mutex<Option<String>>>,
}

impl GroupCommit {
    /// Starts the writer thread of `db`, and the task that answers its batches on the
    /// current tokio runtime; both end when the last handle is dropped.
    pub fn start(db: Arc<Mutex<Connection>>) -> Result<Self, EngineError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| EngineError(format!("the SQLite writer needs a tokio runtime: {e}")))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel::<Answered>();
        let failing = Arc::new(Mutex::new(None));
        let status = failing.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_batches(&db, &queue, &status, &answered))
            .map_err(|e| EngineError(format!("the SQLite writer thread: {e}")))?;
        runtime.spawn(async move {
            while let Some((batch, failed)) = answers.recv().await {
                for answer in batch {
                    answer(failed.as_ref());
                }
            }
        });
        Ok(Self { jobs, failing })
    }

    /// An error saying why, while the last commit failed (a full disk, a failing fsync).
    pub fn check(&self) -> Result<(), EngineError> {
        match crate::sync::lock(&self.failing).as_ref() {
            Some(why) => Err(EngineError(format!(
                "the SQLite file refuses writes: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Queues `work` for the next batch, now (writes run in the order they are queued), and
    /// returns what resolves once the batch is on disk: `committed`'s value, or the error of
    /// the write or of the commit. `committed` runs after the commit, on the runtime, in
    /// queue order, before the answer (for state that must change only after the write it
    /// follows, and for deliveries that must keep the writes' order).
    pub fn queue<T: Send + 'static, U: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        committed: impl FnOnce(T) -> U + Send + 'static,
    ) -> impl Future<Output = Result<U, EngineError>> + Send + 'static {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<U, EngineError>>();
        let job: Job = Box::new(move |tx: Option<&mut Transaction<'_>>| {
            let outcome = match tx {
                Some(tx) => in_savepoint(tx, work),
                None => Err(EngineError::new("the batch could not begin")),
            };
            Box::new(move |commit_failed: Option<&EngineError>| {
                let result = match (outcome, commit_failed) {
                    (_, Some(e)) => Err(e.clone()),
                    (Ok(value), None) => Ok(committed(value)),
                    (Err(e), None) => Err(e),
                };
                let _ = answer.send(result);
            })
        });
        let sent = self.jobs.send(job);
        async move {
            let stopped = || EngineError::new("the SQLite writer has stopped");
            sent.map_err(|_| stopped())?;
            answered.await.map_err(|_| stopped())?
        }
    }

    /// Resolves once every write queued before it is committed and its `committed` ran.
    pub async fn settle(&self) -> Result<(), EngineError> {
        // A write of nothing: answered after the batch that carries it, behind the others.
        self.queue(|_| Ok(()), |()| ()).await
    }
}

/// Runs one write in its own savepoint: on failure only its changes are undone.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, EngineError> {
    let mut savepoint = tx.savepoint().map_err(EngineError::new)?;
    match work(&savepoint) {
        Ok(value) => {
            savepoint.commit().map_err(EngineError::new)?;
            Ok(value)
        }
        Err(e) => {
            let _ = savepoint.rollback();
            Err(EngineError::new(e))
        }
    }
}

/// The writer thread: a batch is the first queued write and every one queued behind it.
fn write_batches(
    db: &Mutex<Connection>,
    queue: &mpsc::Receiver<Job>,
    failing: &Mutex<Option<String>>,
    answered: &tokio::sync::mpsc::UnboundedSender<Answered>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut conn = crate::sync::lock(db);
        let mut answers = Vec::with_capacity(batch.len());
        let committed = match conn.transaction() {
            Ok(mut tx) => {
                for job in batch {
                    answers.push(job(Some(&mut tx)));
                }
                tx.commit().map_err(EngineError::new)
            }
            Err(e) => {
                for job in batch {
                    answers.push(job(None));
                }
                Err(EngineError::new(e))
            }
        };
        if let Err(e) = &committed {
            crate::metrics::engine_error("sqlite");
            tracing::error!(error = %e, writes = answers.len(), "SQLite commit failed: its writes are refused");
        }
        *crate::sync::lock(failing) = committed.as_ref().err().map(|e| e.0.clone());
        drop(conn);
        // The runtime is gone only at exit; nobody is waiting for these answers then.
        let _ = answered.send((answers, committed.err()));
    }
}
