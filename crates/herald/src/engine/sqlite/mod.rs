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

use rusqlite::params;

mod data_dir;
mod group_commit;
mod history;
mod positions;

pub use data_dir::{create_private, DirLock};
pub use group_commit::GroupCommit;
pub use history::SqliteHistory;

use super::memory::MemoryMembership;
use super::outbox::{Outbox, OutboxEvent};
use super::{lock, EngineError, Inbox, InboxLimits, Membership};
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
    // 3: topic streams as rings (history.rs): a row per slot, overwritten in place. Each
    // stream's rows keep their offsets in a ring as long as the span they cover; its next
    // append lays it out for its namespace's history_size.
    "CREATE TABLE history_ring (
         topic TEXT NOT NULL,
         slot INTEGER NOT NULL,
         pos INTEGER NOT NULL,
         id TEXT NOT NULL,
         event TEXT NOT NULL,
         data TEXT NOT NULL,
         ts TEXT NOT NULL,
         from_user TEXT,
         from_client TEXT,
         stored_ms INTEGER NOT NULL,
         PRIMARY KEY (topic, slot)
     ) WITHOUT ROWID;
     ALTER TABLE streams ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
     UPDATE streams SET slots = COALESCE(
         (SELECT MAX(pos) - MIN(pos) + 1 FROM history WHERE history.topic = streams.topic), 1);
     INSERT INTO history_ring
         (topic, slot, pos, id, event, data, ts, from_user, from_client, stored_ms)
         SELECT h.topic, h.pos % s.slots, h.pos, h.id, h.event, h.data, h.ts, h.from_user,
                h.from_client, h.stored_ms
         FROM history h JOIN streams s ON s.topic = h.topic;
     DROP TABLE history;",
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
pub(super) async fn blocking<T: Send + 'static>(
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

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn cutoff_ms(ttl: std::time::Duration) -> i64 {
    now_ms().saturating_sub(ttl.as_millis().min(i64::MAX as u128) as i64)
}

/// Stored JSON that no longer parses is a storage fault, reported as such.
pub(super) fn data_of(text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
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
    stores: Arc<StoresSinceCut>,
    /// Per user, the stores queued and not yet answered: a read of their inbox first waits
    /// for them.
    queued: Arc<QueuedStores>,
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
            stores: Arc::default(),
            queued: Arc::default(),
        }
    }

    fn may_hold(&self, user: &str) -> bool {
        lock(&self.holders)
            .as_ref()
            .is_none_or(|holders| holders.contains(user))
    }
}

/// Drops the user's messages older than `ttl`. A user's messages in `seq` order are in time
/// order too, so this walks from the oldest to the first one kept: a store pays for what it
/// drops, not for the whole inbox.
fn expire_inbox(conn: &Connection, user: &str, ttl: std::time::Duration) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM inbox WHERE user_id = ?1 AND seq < COALESCE(
             (SELECT seq FROM inbox WHERE user_id = ?1 AND stored_ms >= ?2 ORDER BY seq LIMIT 1),
             9223372036854775807)",
    )?
    .execute(params![user, cutoff_ms(ttl)])?;
    Ok(())
}

/// Drops the user's messages beyond the newest `max_messages` (a walk of what it keeps, so
/// stores do it only now and then: [`STORES_BETWEEN_CUTS`]).
fn cut_inbox(conn: &Connection, user: &str, max_messages: usize) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM inbox WHERE user_id = ?1 AND seq <=
             (SELECT seq FROM inbox WHERE user_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![
        user,
        i64::try_from(max_messages).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// A user's inbox is cut to `max_messages` at every read and every this many stores (so up to
/// this many more stay on disk, never in a read).
const STORES_BETWEEN_CUTS: u32 = 32;

/// At most this many users' store counts are kept; past it the counts start over (each user's
/// next store then cuts).
const MAX_COUNTED_USERS: usize = 65_536;

/// Stores per user since its inbox was last cut, kept by the writer thread.
#[derive(Default)]
struct StoresSinceCut(Mutex<std::collections::HashMap<String, u32>>);

impl StoresSinceCut {
    /// Counts a store for `user`: true when its inbox is due a cut (its first store counted,
    /// then every [`STORES_BETWEEN_CUTS`]).
    fn due(&self, user: &str) -> bool {
        let mut counts = lock(&self.0);
        if counts.len() >= MAX_COUNTED_USERS && !counts.contains_key(user) {
            counts.clear();
        }
        match counts.get_mut(user) {
            Some(count) if *count + 1 < STORES_BETWEEN_CUTS => {
                *count += 1;
                false
            }
            Some(count) => {
                *count = 0;
                true
            }
            None => {
                counts.insert(user.to_string(), 0);
                true
            }
        }
    }
}

/// Per user, how many stores are queued on the writer and not yet answered.
#[derive(Default)]
struct QueuedStores(Mutex<std::collections::HashMap<String, usize>>);

impl QueuedStores {
    /// Counts a store of `user` until the returned guard is dropped (with its writer job, once
    /// answered, whether it was committed or not).
    fn count(self: &Arc<Self>, user: &str) -> CountedStore {
        *lock(&self.0).entry(user.to_string()).or_default() += 1;
        CountedStore {
            queued: self.clone(),
            user: user.to_string(),
        }
    }

    fn any_of(&self, user: &str) -> bool {
        lock(&self.0).contains_key(user)
    }
}

/// One counted store (see [`QueuedStores::count`]).
struct CountedStore {
    queued: Arc<QueuedStores>,
    user: String,
}

impl Drop for CountedStore {
    fn drop(&mut self) {
        let mut counts = lock(&self.queued.0);
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[async_trait]
impl Inbox for SqliteInbox {
    async fn store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<(), EngineError> {
        self.queue_store(user, publication, limits).await?.await
    }

    async fn queue_store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<crate::engine::QueuedStore, EngineError> {
        let counted = self.queued.count(user);
        let user = user.to_string();
        let holders = self.holders.clone();
        let holder = user.clone();
        let stores = self.stores.clone();
        let store = move |tx: &Connection, p: &Publication| {
            tx.prepare_cached(
                "INSERT INTO inbox (user_id, id, event, data, ts, stored_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![user, p.id, p.event, p.data.to_string(), p.timestamp, now_ms()])?;
            expire_inbox(tx, &user, limits.ttl)?;
            if stores.due(&user) {
                cut_inbox(tx, &user, limits.max_messages)?;
            }
            Ok(())
        };
        // The user may hold messages from the commit on: recorded before the store stops
        // counting as queued (the guard goes with the job, after this step or instead of it).
        let committed = move |_, ()| {
            if let Some(holders) = lock(&holders).as_mut() {
                holders.insert(holder);
            }
            drop(counted);
        };
        Ok(Box::pin(self.writer.queue(
            publication.clone(),
            store,
            committed,
        )))
    }

    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError> {
        // Stores of the user queued before this read (the caller holds the user's stripe, so
        // no more come) are committed first. A failed commit fails only those stores: what
        // the file holds is read either way.
        if self.queued.any_of(user) {
            let _ = self.writer.settle().await;
        }
        if !self.may_hold(user) {
            return Ok(Vec::new());
        }
        let user = user.to_string();
        let holders = self.holders.clone();
        blocking(self.db.clone(), move |conn| {
            let tx = conn.transaction()?;
            expire_inbox(&tx, &user, limits.ttl)?;
            cut_inbox(&tx, &user, limits.max_messages)?;
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
