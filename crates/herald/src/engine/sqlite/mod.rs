//! The embedded store: one SQLite file (WAL, `synchronous = FULL`) in the data dir, holding
//! project membership, topic history and offline inboxes. Every write is on disk when the call
//! returns, so a caller that answers after it never loses what it acknowledged, even to
//! `kill -9`. History appends and inbox stores go through [`GroupCommit`]: the writes that
//! arrive together share one transaction and one fsync.
//!
//! Membership is read on every project subscription and project-scope publication, so reads
//! come from an in-memory copy loaded at open; writes go to the file first (on a blocking
//! thread) and reach the copy only once they are durable.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;

use rusqlite::{params, OptionalExtension};

mod data_dir;
mod group_commit;
mod positions;

pub use data_dir::{create_private, DirLock};
pub use group_commit::GroupCommit;
use positions::Positions;

use super::memory::MemoryMembership;
use super::outbox::{Outbox, OutboxEvent};
use super::{
    lock, AfterAppend, EngineError, History, HistoryPage, Inbox, InboxLimits, Membership,
    QueuedAppend, Retention, StreamPosition,
};
use crate::protocol::Sender;
use crate::publication::{Publication, Scope};

/// The schema version this build writes (`PRAGMA user_version`). A file at 0 is new or from
/// before versions were kept (its tables are version 1's, which are created only if missing).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// `MIGRATIONS[i]` takes a file from schema version `i` to `i + 1`, in one transaction.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS project_members (
         project TEXT NOT NULL,
         user_id TEXT NOT NULL,
         PRIMARY KEY (project, user_id)
     ) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS streams (
         topic TEXT PRIMARY KEY,
         epoch TEXT NOT NULL,
         top INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS history (
         topic TEXT NOT NULL,
         pos INTEGER NOT NULL,
         id TEXT NOT NULL,
         event TEXT NOT NULL,
         data TEXT NOT NULL,
         ts TEXT NOT NULL,
         from_user TEXT,
         from_client TEXT,
         stored_ms INTEGER NOT NULL,
         PRIMARY KEY (topic, pos)
     ) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS inbox (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         user_id TEXT NOT NULL,
         id TEXT NOT NULL,
         event TEXT NOT NULL,
         data TEXT NOT NULL,
         ts TEXT NOT NULL,
         stored_ms INTEGER NOT NULL
     );
     CREATE INDEX IF NOT EXISTS inbox_by_user ON inbox (user_id, seq);",
    // 2: unsent webhook events (docs/HOOKS.md), in the order they happened.
    "CREATE TABLE IF NOT EXISTS webhook_outbox (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         id TEXT NOT NULL,
         body TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS webhook_outbox_by_id ON webhook_outbox (id);",
];

/// Opens (creating if needed, readable by its owner only) the SQLite file and brings its
/// schema up to [`SCHEMA_VERSION`]; a file from a newer Herald is refused, untouched.
pub fn open(path: &Path) -> Result<Connection, EngineError> {
    data_dir::make_private(path)?;
    let conn =
        Connection::open(path).map_err(|e| EngineError(format!("open {}: {e}", path.display())))?;
    let schema = |e: rusqlite::Error| EngineError(format!("schema of {}: {e}", path.display()));
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(schema)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(schema)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > SCHEMA_VERSION {
        return Err(EngineError(format!(
            "{} has schema version {version}, newer than this herald knows ({SCHEMA_VERSION}): run the newer herald, or restore the backup taken before the upgrade",
            path.display()
        )));
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let to = from + 1;
        conn.execute_batch(&format!(
            "BEGIN; {migration}; PRAGMA user_version = {to}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            EngineError(format!(
                "migrating {} from schema {from} to {to}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(conn)
}

/// Writes a consistent copy of the data dir's database to `to` (a new file, readable by its
/// owner only), while a server may be running on it: `VACUUM INTO` reads one snapshot, and
/// the server's writes go on meanwhile. Restoring is putting the copy in place of
/// `herald.db` (with no `-wal` or `-shm` beside it) while no server runs.
pub fn backup(data_dir: &Path, to: &Path) -> Result<(), EngineError> {
    let from = data_dir.join("herald.db");
    if !from.exists() {
        return Err(EngineError(format!("no database at {}", from.display())));
    }
    if to.exists() {
        return Err(EngineError(format!(
            "{} exists: a backup goes to a new file",
            to.display()
        )));
    }
    let conn = Connection::open_with_flags(&from, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| EngineError(format!("open {}: {e}", from.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(EngineError::new)?;
    data_dir::make_private(to)?;
    let copied = conn.execute("VACUUM INTO ?1", params![to.display().to_string()]);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(EngineError(format!("backup to {}: {e}", to.display())));
    }
    Ok(())
}

/// Puts the backup `from` in place of the data dir's database, while no server runs on it
/// (the dir's lock is taken for the time of the restore). Every topic stream gets a new epoch:
/// offsets after the backup will be given again to other publications, and a client that
/// saw the old ones must learn `recovered: false` rather than skip the new ones.
pub fn restore(data_dir: &Path, from: &Path) -> Result<(), EngineError> {
    Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM streams", [], |_| Ok(())))
        .map_err(|e| EngineError(format!("{} is not a herald backup: {e}", from.display())))?;
    create_private(data_dir)?;
    let _lock = DirLock::take(data_dir)?;
    let db = data_dir.join("herald.db");
    let staged = data_dir.join("herald.db.restoring");
    let _ = std::fs::remove_file(&staged);
    data_dir::make_private(&staged)?;
    std::fs::copy(from, &staged)
        .map_err(|e| EngineError(format!("copy {}: {e}", from.display())))?;
    {
        let mut conn = open(&staged)?;
        let streams: Vec<String> = conn
            .prepare("SELECT topic FROM streams")
            .and_then(|mut s| {
                s.query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(EngineError::new)?;
        let tx = conn.transaction().map_err(EngineError::new)?;
        for topic in streams {
            tx.execute(
                "UPDATE streams SET epoch = ?2 WHERE topic = ?1",
                params![topic, uuid::Uuid::now_v7().simple().to_string()],
            )
            .map_err(EngineError::new)?;
        }
        tx.commit().map_err(EngineError::new)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(EngineError::new)?;
    }
    for stale in [
        "herald.db-wal",
        "herald.db-shm",
        "herald.db.restoring-wal",
        "herald.db.restoring-shm",
    ] {
        let _ = std::fs::remove_file(data_dir.join(stale));
    }
    std::fs::rename(&staged, &db).map_err(|e| EngineError(format!("replace {}: {e}", db.display())))
}

/// Project membership in SQLite, served from memory.
pub struct SqliteMembership {
    db: Arc<Mutex<Connection>>,
    cache: MemoryMembership,
}

impl SqliteMembership {
    /// Loads every membership from the database.
    pub async fn load(db: Arc<Mutex<Connection>>) -> Result<Self, EngineError> {
        let rows = blocking(db.clone(), |conn| {
            let mut stmt = conn.prepare("SELECT project, user_id FROM project_members")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
        let cache = MemoryMembership::new();
        for (project, user) in rows {
            cache.add(&project, &user).await?;
        }
        Ok(Self { db, cache })
    }
}

/// Runs `f` on the connection on a blocking thread.
async fn blocking<T: Send + 'static>(
    db: Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = crate::sync::lock(&db);
        f(&mut conn).map_err(EngineError::new)
    })
    .await
    .map_err(EngineError::new)?
}

#[async_trait]
impl Membership for SqliteMembership {
    async fn add(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let (p, u) = (project.to_string(), user.to_string());
        blocking(self.db.clone(), move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO project_members (project, user_id) VALUES (?1, ?2)",
                [&p, &u],
            )
        })
        .await?;
        self.cache.add(project, user).await
    }

    async fn remove(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let (p, u) = (project.to_string(), user.to_string());
        blocking(self.db.clone(), move |conn| {
            conn.execute(
                "DELETE FROM project_members WHERE project = ?1 AND user_id = ?2",
                [&p, &u],
            )
        })
        .await?;
        self.cache.remove(project, user).await
    }

    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        self.cache.members(project).await
    }

    async fn check(&self) -> Result<(), EngineError> {
        blocking(self.db.clone(), |conn| {
            conn.query_row("SELECT count(*) FROM project_members", [], |_| Ok(()))
        })
        .await
    }

    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        self.cache.is_member(project, user).await
    }

    async fn projects_of(&self, user: &str) -> Result<Vec<String>, EngineError> {
        self.cache.projects_of(user).await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn cutoff_ms(ttl: std::time::Duration) -> i64 {
    now_ms().saturating_sub(ttl.as_millis().min(i64::MAX as u128) as i64)
}

/// Stored JSON that no longer parses is a storage fault, reported as such.
fn data_of(text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Topic streams in SQLite: their epochs are stored, so they survive restarts and crashes.
pub struct SqliteHistory {
    db: Arc<Mutex<Connection>>,
    writer: Arc<GroupCommit>,
    /// The streams' newest positions, as the appends left them.
    positions: Arc<Positions>,
    /// The data dir's lock, held as long as the streams are.
    _lock: Option<DirLock>,
}

impl SqliteHistory {
    /// Streams in the database `db` (opened with [`open`]), appended through `writer` (the
    /// database's one [`GroupCommit`]).
    pub fn new(db: Arc<Mutex<Connection>>, writer: Arc<GroupCommit>) -> Self {
        Self {
            db,
            positions: Arc::new(Positions::new(writer.rollbacks())),
            writer,
            _lock: None,
        }
    }

    /// Keeps the data dir's lock for as long as the streams live (the node's life).
    pub fn holding(self, lock: DirLock) -> Self {
        Self {
            _lock: Some(lock),
            ..self
        }
    }
}

/// Creates the stream's row (with a fresh epoch) if it has none.
fn ensure_stream(conn: &Connection, topic: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO streams (topic, epoch, top) VALUES (?1, ?2, 0)")?
        .execute(params![topic, uuid::Uuid::now_v7().simple().to_string()])?;
    Ok(())
}

/// The stream's newest offset and epoch, or `None` before it has a row in `streams`. The
/// newest offset is its newest row's, so an append writes only its row; `streams.top` keeps
/// it for when trimming leaves no row (`trim` records it before it deletes).
fn position(conn: &Connection, topic: &str) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached(
        "SELECT MAX(top, COALESCE((SELECT MAX(pos) FROM history WHERE topic = ?1), 0)), epoch
         FROM streams WHERE topic = ?1",
    )?
    .query_row(params![topic], |row| Ok((row.get(0)?, row.get(1)?)))
    .optional()
}

/// Drops what `retention` no longer keeps: every row up to `top - size`, then every row older
/// than the TTL. Both walk the (topic, pos) key from the oldest row and stop at the first one
/// kept (rows are stored in offset order, so their times only grow), so an append costs what it
/// trims, not the whole stream. When rows go, `top` is recorded: it outlives them (and a trim
/// that drops nothing writes nothing, so reads work on a full disk).
fn trim(conn: &Connection, topic: &str, top: u64, retention: Retention) -> rusqlite::Result<()> {
    let keep_from = top.saturating_sub(retention.size as u64);
    let mut dropped = conn
        .prepare_cached("DELETE FROM history WHERE topic = ?1 AND pos <= ?2")?
        .execute(params![topic, keep_from as i64])?;
    dropped += conn
        .prepare_cached(
            "DELETE FROM history WHERE topic = ?1 AND pos < COALESCE(
                 (SELECT pos FROM history WHERE topic = ?1 AND stored_ms >= ?2 ORDER BY pos LIMIT 1),
                 ?3)",
        )?
        .execute(params![topic, cutoff_ms(retention.ttl), top as i64 + 1])?;
    if dropped > 0 {
        conn.prepare_cached("UPDATE streams SET top = ?2 WHERE topic = ?1 AND top < ?2")?
            .execute(params![topic, top as i64])?;
    }
    Ok(())
}

/// How many appends to a stream go between its trims (up to this many rows beyond its
/// retention stay on disk, never in a read).
const TRIM_EVERY: u64 = 32;

/// The write of one append: the stream's next offset (remembered, or read), its row, and the
/// trim.
fn append_row(
    tx: &Connection,
    positions: &Positions,
    topic: &str,
    p: &Publication,
    retention: Retention,
) -> rusqlite::Result<StreamPosition> {
    // The stream's row exists but for its first append: created (with its epoch) only then.
    let known = match positions.get(topic) {
        Some(at) => Some(at),
        None => position(tx, topic)?,
    };
    let (newest, epoch) = match known {
        Some(at) => at,
        None => {
            ensure_stream(tx, topic)?;
            position(tx, topic)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?
        }
    };
    let top = newest + 1;
    tx.prepare_cached(
        "INSERT INTO history (topic, pos, id, event, data, ts, from_user, from_client, stored_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        topic,
        top,
        p.id,
        p.event,
        p.data.to_string(),
        p.timestamp,
        p.from.as_ref().map(|f| f.user_id.as_str()),
        p.from.as_ref().map(|f| f.client_id.as_str()),
        now_ms(),
    ])?;
    // Trimmed every TRIM_EVERY appends: each trim then empties whole pages instead of
    // rewriting one per commit. Reads trim first, so what they see is exact.
    if (top as u64).is_multiple_of(TRIM_EVERY) {
        trim(tx, topic, top as u64, retention)?;
    }
    positions.set(topic, top, &epoch);
    Ok(StreamPosition {
        offset: top as u64,
        epoch,
    })
}

#[async_trait]
impl History for SqliteHistory {
    async fn append(
        &self,
        topic: &str,
        publication: &Publication,
        retention: Retention,
    ) -> Result<StreamPosition, EngineError> {
        let topic = topic.to_string();
        let positions = self.positions.clone();
        let append = move |tx: &Connection, p: &Publication| {
            append_row(tx, &positions, &topic, p, retention)
        };
        self.writer
            .queue(publication.clone(), append, |_, at| at)
            .await
    }

    /// Queued on the writer now; `then` (the delivery) runs after the commit, in queue order,
    /// on the runtime: one wake-up per batch, and connections are woken from their own
    /// runtime.
    async fn queue_append(
        &self,
        topic: &str,
        publication: Publication,
        retention: Retention,
        then: AfterAppend,
    ) -> Result<QueuedAppend, EngineError> {
        let topic = topic.to_string();
        let positions = self.positions.clone();
        let append = move |tx: &Connection, p: &Publication| {
            append_row(tx, &positions, &topic, p, retention)
        };
        let queued = self.writer.queue(publication, append, move |p, at| {
            let reached = then(p, &at);
            (at, reached)
        });
        Ok(Box::pin(queued))
    }

    async fn settle(&self) -> Result<(), EngineError> {
        self.writer.settle().await
    }

    async fn check(&self) -> Result<(), EngineError> {
        self.writer.check()
    }

    async fn read(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        let topic = topic.to_string();
        blocking(self.db.clone(), move |conn| {
            let tx = conn.transaction()?;
            ensure_stream(&tx, &topic)?;
            let (top, epoch) =
                position(&tx, &topic)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            trim(&tx, &topic, top as u64, retention)?;
            let first: Option<i64> = tx
                .query_row(
                    "SELECT MIN(pos) FROM history WHERE topic = ?1",
                    params![topic],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            let messages = {
                let mut stmt = tx.prepare(
                    "SELECT pos, id, event, data, ts, from_user, from_client FROM history
                     WHERE topic = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![topic, after.min(i64::MAX as u64) as i64, limit as i64],
                    |row| {
                        let from_user: Option<String> = row.get(5)?;
                        let from_client: Option<String> = row.get(6)?;
                        Ok(Publication {
                            id: row.get(1)?,
                            scope: Scope::Topic(topic.clone()),
                            event: row.get(2)?,
                            data: data_of(&row.get::<_, String>(3)?)?,
                            timestamp: row.get(4)?,
                            from: from_user
                                .zip(from_client)
                                .map(|(user_id, client_id)| Sender { user_id, client_id }),
                            offset: Some(row.get::<_, i64>(0)? as u64),
                            epoch: Some(epoch.clone()),
                            accepted: None,
                        })
                    },
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(HistoryPage {
                position: StreamPosition {
                    offset: top as u64,
                    epoch,
                },
                first_kept: first.map_or(top as u64 + 1, |f| f as u64),
                messages,
            })
        })
        .await
    }
}

/// Offline inboxes in SQLite: they survive restarts.
///
/// Every connection reads its user's inbox, and most users have none: the users that may have
/// messages are kept in memory (loaded at start, added by `store`, dropped when a read finds
/// nothing), so a connection of any other user costs no query and no blocking thread. Both
/// updates happen under the database's lock, in order with the writes they follow.
pub struct SqliteInbox {
    db: Arc<Mutex<Connection>>,
    writer: Arc<GroupCommit>,
    /// `None` when the set could not be read at start: then every read queries.
    holders: Arc<Mutex<Option<HashSet<String>>>>,
}

impl SqliteInbox {
    /// Inboxes in the database `db` (opened with [`open`]), stored through `writer` (the
    /// database's one [`GroupCommit`]).
    pub fn new(db: Arc<Mutex<Connection>>, writer: Arc<GroupCommit>) -> Self {
        let holders = {
            let conn = crate::sync::lock(&db);
            let users = conn
                .prepare("SELECT DISTINCT user_id FROM inbox")
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| row.get::<_, String>(0))?
                        .collect::<rusqlite::Result<HashSet<String>>>()
                });
            users.ok()
        };
        Self {
            db,
            writer,
            holders: Arc::new(Mutex::new(holders)),
        }
    }

    fn may_hold(&self, user: &str) -> bool {
        lock(&self.holders)
            .as_ref()
            .is_none_or(|holders| holders.contains(user))
    }
}

fn expire_inbox(conn: &Connection, user: &str, limits: InboxLimits) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM inbox WHERE user_id = ?1 AND (stored_ms < ?2 OR seq NOT IN
             (SELECT seq FROM inbox WHERE user_id = ?1 ORDER BY seq DESC LIMIT ?3))",
    )?
    .execute(params![
        user,
        cutoff_ms(limits.ttl),
        limits.max_messages as i64
    ])?;
    Ok(())
}

#[async_trait]
impl Inbox for SqliteInbox {
    async fn store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<(), EngineError> {
        let user = user.to_string();
        let holders = self.holders.clone();
        let holder = user.clone();
        let store = move |tx: &Connection, p: &Publication| {
            tx.prepare_cached(
                "INSERT INTO inbox (user_id, id, event, data, ts, stored_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![user, p.id, p.event, p.data.to_string(), p.timestamp, now_ms()])?;
            expire_inbox(tx, &user, limits)
        };
        // The user may hold messages from the commit on (recorded before the caller, who
        // holds the user's stripe as every inbox reader does, is answered).
        let committed = move |_, ()| {
            if let Some(holders) = lock(&holders).as_mut() {
                holders.insert(holder);
            }
        };
        self.writer
            .queue(publication.clone(), store, committed)
            .await
    }

    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError> {
        if !self.may_hold(user) {
            return Ok(Vec::new());
        }
        let user = user.to_string();
        let holders = self.holders.clone();
        blocking(self.db.clone(), move |conn| {
            let tx = conn.transaction()?;
            expire_inbox(&tx, &user, limits)?;
            let messages = {
                let mut stmt = tx.prepare(
                    "SELECT id, event, data, ts FROM inbox WHERE user_id = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![user], |row| {
                    Ok(Publication {
                        id: row.get(0)?,
                        scope: Scope::User(user.clone()),
                        event: row.get(1)?,
                        data: data_of(&row.get::<_, String>(2)?)?,
                        timestamp: row.get(3)?,
                        from: None,
                        offset: None,
                        epoch: None,
                        accepted: None,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            if messages.is_empty() {
                if let Some(holders) = lock(&holders).as_mut() {
                    holders.remove(&user);
                }
            }
            Ok(messages)
        })
        .await
    }

    async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError> {
        let user = user.to_string();
        let ids = ids.to_vec();
        blocking(self.db.clone(), move |conn| {
            let tx = conn.transaction()?;
            let mut removed = 0;
            for id in &ids {
                removed += tx.execute(
                    "DELETE FROM inbox WHERE user_id = ?1 AND id = ?2",
                    params![user, id],
                )?;
            }
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn totals(&self) -> Result<crate::engine::InboxTotals, EngineError> {
        blocking(self.db.clone(), |conn| {
            conn.query_row(
                "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM inbox",
                [],
                |row| {
                    Ok(crate::engine::InboxTotals {
                        messages: row.get::<_, i64>(0)?.max(0) as u64,
                        users: row.get::<_, i64>(1)?.max(0) as u64,
                    })
                },
            )
        })
        .await
    }
}

/// Unsent webhook events in the SQLite file: kept and forgotten through the writer (group
/// commit), so they survive a restart and cost no fsync of their own.
pub struct SqliteOutbox {
    db: Arc<Mutex<Connection>>,
    writer: Arc<GroupCommit>,
}

impl SqliteOutbox {
    /// The outbox in the database `db`, written through `writer`.
    pub fn new(db: Arc<Mutex<Connection>>, writer: Arc<GroupCommit>) -> Self {
        Self { db, writer }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn keep(&self, events: Vec<OutboxEvent>) -> Result<(), EngineError> {
        let keep = |tx: &Connection, events: &Vec<OutboxEvent>| {
            let mut insert =
                tx.prepare_cached("INSERT INTO webhook_outbox (id, body) VALUES (?1, ?2)")?;
            for event in events {
                insert.execute(params![event.id, event.body])?;
            }
            Ok(())
        };
        self.writer.queue(events, keep, |_, ()| ()).await
    }

    async fn forget(&self, ids: Vec<String>) -> Result<(), EngineError> {
        let forget = |tx: &Connection, ids: &Vec<String>| {
            let mut delete = tx.prepare_cached("DELETE FROM webhook_outbox WHERE id = ?1")?;
            for id in ids {
                delete.execute(params![id])?;
            }
            Ok(())
        };
        self.writer.queue(ids, forget, |_, ()| ()).await
    }

    async fn load(&self) -> Result<Vec<OutboxEvent>, EngineError> {
        blocking(self.db.clone(), |conn| {
            let mut stmt = conn.prepare("SELECT id, body FROM webhook_outbox ORDER BY seq")?;
            let rows = stmt.query_map([], |row| {
                Ok(OutboxEvent {
                    id: row.get(0)?,
                    body: row.get(1)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }
}
