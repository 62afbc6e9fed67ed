//! The embedded store: one SQLite file (WAL) in the data dir.
//!
//! Membership is read on every project subscription and project-scope publication, so reads
//! come from an in-memory copy loaded at open; writes go to the file first (on a blocking
//! thread) and reach the copy only once they are durable.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;

use super::memory::MemoryMembership;
use super::{EngineError, Membership};

/// Opens (creating if needed) the SQLite file and applies the schema.
pub fn open(path: &Path) -> Result<Connection, EngineError> {
    let conn =
        Connection::open(path).map_err(|e| EngineError(format!("open {}: {e}", path.display())))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS project_members (
             project TEXT NOT NULL,
             user_id TEXT NOT NULL,
             PRIMARY KEY (project, user_id)
         ) WITHOUT ROWID;",
    )
    .map_err(|e| EngineError(format!("schema of {}: {e}", path.display())))?;
    Ok(conn)
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

async fn blocking<T: Send + 'static>(
    db: Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(move || {
        let conn = db.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(EngineError::new)
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
}
