//! Group commit for the SQLite file: one writer thread takes every durable write (history
//! appends, inbox stores) from a queue; the writes that arrive while a commit is in flight go
//! into the next one, so one transaction and one fsync serve them all. Each caller is answered
//! only after the commit that covers its write (`synchronous = FULL` as before), and with an
//! error when that commit failed: nothing is half-acknowledged.
//!
//! Writes run in queue order in one transaction. When one of them fails, the batch is rolled
//! back and run again with each write in its own savepoint, so one failing write fails only
//! itself (savepoints copy every page they touch, so the common path goes without). Per-topic
//! offsets stay in order because a topic's appends are queued one at a time (under the topic's
//! stripe), and the after-commit steps (deliveries) run in the same order.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};

use crate::engine::EngineError;

/// The most writes one commit carries.
const MAX_BATCH: usize = 512;

/// One queued write. `run` may be called twice (see the module's comment), so it keeps its
/// outcome instead of returning it; `answer` runs after the commit, on the runtime.
trait Write: Send {
    /// Does the write on the batch's transaction; false when it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Records that the write could not run (its batch did not begin).
    fn refuse(&mut self, why: EngineError);
    /// Answers the caller once the batch is committed, or failed with `commit_failed`.
    fn answer(self: Box<Self>, commit_failed: Option<&EngineError>);
}

/// A write with what it writes (`item`, handed on to the after-commit step, so it is never
/// copied), the step that runs after its commit, and the caller's answer.
struct Queued<P, T, U, W, C> {
    item: P,
    work: W,
    committed: Option<C>,
    outcome: Option<Result<T, EngineError>>,
    answer: tokio::sync::oneshot::Sender<Result<U, EngineError>>,
}

impl<P, T, U, W, C> Write for Queued<P, T, U, W, C>
where
    P: Send,
    T: Send,
    U: Send,
    W: FnMut(&Connection, &P) -> rusqlite::Result<T> + Send,
    C: FnOnce(P, T) -> U + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.work)(conn, &self.item).map_err(EngineError::new);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn refuse(&mut self, why: EngineError) {
        self.outcome = Some(Err(why));
    }

    fn answer(self: Box<Self>, commit_failed: Option<&EngineError>) {
        let Queued {
            item,
            committed,
            outcome,
            answer,
            ..
        } = *self;
        let outcome = outcome.unwrap_or_else(|| Err(EngineError::new("the write did not run")));
        let result = match (outcome, commit_failed, committed) {
            (_, Some(e), _) => Err(e.clone()),
            (Ok(value), None, Some(committed)) => Ok(committed(item, value)),
            (Ok(_), None, None) => Err(EngineError::new("the write was answered twice")),
            (Err(e), None, _) => Err(e),
        };
        let _ = answer.send(result);
    }
}

type Job = Box<dyn Write>;

/// A committed (or failed) batch, handed from the writer thread to the runtime in one
/// message: one cross-thread wake-up per batch, not per write.
type Answered = (Vec<Job>, Option<EngineError>);

/// The queue of a database's writer thread.
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    /// Why the last commit failed, until one succeeds again (for readiness).
    failing: Arc<Mutex<Option<String>>>,
    /// How many times a batch's writes were undone (see [`GroupCommit::rollbacks`]).
    rollbacks: Arc<AtomicU64>,
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
        let rollbacks = Arc::new(AtomicU64::new(0));
        let undone = rollbacks.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_batches(&db, &queue, &status, &undone, &answered))
            .map_err(|e| EngineError(format!("the SQLite writer thread: {e}")))?;
        runtime.spawn(async move {
            while let Some((batch, failed)) = answers.recv().await {
                for job in batch {
                    job.answer(failed.as_ref());
                }
            }
        });
        Ok(Self {
            jobs,
            failing,
            rollbacks,
        })
    }

    /// A count that grows, before the next write runs, whenever writes that already ran were
    /// undone (a batch rolled back to be rerun, a failed commit): state a write keeps beside
    /// the file (a cache of what it wrote) is stale once this moved.
    pub fn rollbacks(&self) -> Arc<AtomicU64> {
        self.rollbacks.clone()
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

    /// Queues `work` on `item` for the next batch, now (writes run in the order they are
    /// queued), and returns what resolves once the batch is on disk: `committed`'s value, or
    /// the error of the write or of the commit. `committed` gets the item back and runs after
    /// the commit, on the runtime, in queue order, before the answer (for state that must
    /// change only after the write it follows, and for deliveries that must keep the writes'
    /// order).
    pub fn queue<P: Send + 'static, T: Send + 'static, U: Send + 'static>(
        &self,
        item: P,
        work: impl FnMut(&Connection, &P) -> rusqlite::Result<T> + Send + 'static,
        committed: impl FnOnce(P, T) -> U + Send + 'static,
    ) -> impl Future<Output = Result<U, EngineError>> + Send + 'static {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<U, EngineError>>();
        let job: Job = Box::new(Queued {
            item,
            work,
            committed: Some(committed),
            outcome: None,
            answer,
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
        self.queue((), |_, ()| Ok(()), |(), ()| ()).await
    }
}

/// Runs one write in its own savepoint: on failure only its changes are undone (counted in
/// `rollbacks`).
fn in_savepoint(tx: &mut Transaction<'_>, job: &mut Job, rollbacks: &AtomicU64) {
    let mut savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(e) => return job.refuse(EngineError::new(e)),
    };
    if job.run(&savepoint) {
        if let Err(e) = savepoint.commit() {
            rollbacks.fetch_add(1, Ordering::SeqCst);
            job.refuse(EngineError::new(e));
        }
    } else {
        let _ = savepoint.rollback();
        rollbacks.fetch_add(1, Ordering::SeqCst);
    }
}

/// Writes `batch` in one transaction and commits it: first all together; when a write fails,
/// rolled back and again with each write in its own savepoint. Every undo of writes that ran
/// counts in `rollbacks` before the next write runs.
fn commit(
    conn: &mut Connection,
    batch: &mut [Job],
    rollbacks: &AtomicU64,
) -> Result<(), EngineError> {
    let undone = || {
        rollbacks.fetch_add(1, Ordering::SeqCst);
    };
    let refuse_all = |batch: &mut [Job], e: &EngineError| {
        for job in batch.iter_mut() {
            job.refuse(e.clone());
        }
    };
    match conn.transaction() {
        Ok(tx) => {
            if batch.iter_mut().all(|job| job.run(&tx)) {
                return tx
                    .commit()
                    .map_err(EngineError::new)
                    .inspect_err(|_| undone());
            }
            // Dropping the transaction rolls it back.
            drop(tx);
            undone();
        }
        Err(e) => {
            let e = EngineError::new(e);
            refuse_all(batch, &e);
            return Err(e);
        }
    }
    match conn.transaction() {
        Ok(mut tx) => {
            for job in batch.iter_mut() {
                in_savepoint(&mut tx, job, rollbacks);
            }
            tx.commit()
                .map_err(EngineError::new)
                .inspect_err(|_| undone())
        }
        Err(e) => {
            let e = EngineError::new(e);
            refuse_all(batch, &e);
            Err(e)
        }
    }
}

/// The writer thread: a batch is the first queued write and every one queued behind it.
fn write_batches(
    db: &Mutex<Connection>,
    queue: &mpsc::Receiver<Job>,
    failing: &Mutex<Option<String>>,
    rollbacks: &AtomicU64,
    answered: &tokio::sync::mpsc::UnboundedSender<Answered>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        // The write that woke this thread is seldom alone for long: the thread that queued it
        // is likely taking other publishers' requests too. Yielding lets it run on (when it
        // shares this core) and queue them into this batch, instead of one batch and two
        // context switches per write; the batch is closed once a yield brings nothing new.
        loop {
            std::thread::yield_now();
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == MAX_BATCH {
                break;
            }
        }
        let committed = commit(&mut crate::sync::lock(db), &mut batch, rollbacks);
        if let Err(e) = &committed {
            crate::metrics::engine_error("sqlite");
            tracing::error!(error = %e, writes = batch.len(), "SQLite commit failed: its writes are refused");
        }
        *crate::sync::lock(failing) = committed.as_ref().err().map(|e| e.0.clone());
        // The runtime is gone only at exit; nobody is waiting for these answers then.
        let _ = answered.send((batch, committed.err()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(conn: &Connection, x: &i64) -> rusqlite::Result<()> {
        conn.execute("INSERT INTO t (x) VALUES (?1)", [x])
            .map(|_| ())
    }

    /// A write that fails in a batch fails alone: the batch is written again without it, and
    /// every other write in it is committed and answered Ok.
    #[tokio::test]
    async fn a_failing_write_fails_only_itself() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let conn = super::super::open(&dir.path().join("t.db"))?;
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?;
        let db = Arc::new(Mutex::new(conn));
        let writer = GroupCommit::start(db.clone())?;
        // The first write holds the writer a moment, so the next ones share one batch.
        let first = writer.queue(
            1,
            |conn: &Connection, x: &i64| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                insert(conn, x)
            },
            |_, ()| (),
        );
        let rollbacks = writer.rollbacks();
        let ok = writer.queue(2, insert, |x, ()| (x, "two"));
        let duplicate = writer.queue(2, insert, |_, ()| "again");
        let after = writer.queue(3, insert, |_, ()| "three");
        first.await?;
        assert_eq!(
            ok.await?,
            (2, "two"),
            "the item comes back after the commit"
        );
        let refused = duplicate
            .await
            .expect_err("a duplicate key must be refused");
        assert!(refused.0.contains("UNIQUE"), "{refused}");
        assert_eq!(after.await?, "three");
        writer.settle().await?;
        assert!(
            rollbacks.load(Ordering::SeqCst) >= 2,
            "the batch's first run and the failing write's savepoint were undone"
        );
        let rows: Vec<i64> = crate::sync::lock(&db)
            .prepare("SELECT x FROM t ORDER BY x")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(rows, [1, 2, 3]);
        writer.check()?;
        Ok(())
    }
}
