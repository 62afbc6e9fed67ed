//! Topic streams in the SQLite file, kept as rings. A stream of `slots` slots keeps the
//! publication at offset `pos` in slot `pos % slots` (table `history_ring`, keyed by topic and
//! slot), so an append overwrites, in place, the row of the offset `slots` before it. A commit
//! then writes only the pages that hold its rows: no B-tree splits, no freed pages, no deletes
//! to trim by size (docs/BENCHMARKS.md: a third of the pages and of the writer's CPU of a
//! table keyed by offset).
//!
//! What stays true:
//! - Every offset from `newest - slots + 1` to `newest` has its row in its slot, unless the TTL
//!   dropped it; expired rows are always the oldest ones (times grow with offsets). Older
//!   offsets have no row.
//! - So the rows of an offset range are one or two slot ranges (from the first offset's slot
//!   on, then from slot 0): reads and drops walk the key, never the whole ring.
//! - A ring is as long as its namespace's `history_size`; when that changes, the stream's next
//!   append lays it out again (the newest rows kept). Reads never show more than `history_size`.
//! - `streams.top` keeps the newest offset for when no row is left (the TTL dropped them all).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::positions::{Place, Positions};
use super::{blocking, cutoff_ms, data_of, now_ms, DirLock, GroupCommit};
use crate::engine::{
    AfterAppend, EngineError, History, HistoryPage, QueuedAppend, Retention, StreamPosition,
};
use crate::protocol::Sender;
use crate::publication::{Publication, Scope};

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
    /// Streams in the database `db` (opened with [`super::open`]), appended through `writer`
    /// (the database's one [`GroupCommit`]).
    pub fn new(db: Arc<Mutex<Connection>>, writer: Arc<GroupCommit>) -> Self {
        Self {
            db,
            positions: Arc::new(Positions::new(writer.rollbacks())),
            writer,
            _lock: None,
        }
    }

    /// The writer's job for one append to `topic` (run on the writer thread).
    fn append_write(
        &self,
        topic: &str,
        retention: Retention,
    ) -> impl FnMut(&Connection, &Publication) -> rusqlite::Result<StreamPosition> + Send + 'static
    {
        let topic = topic.to_string();
        let positions = self.positions.clone();
        move |tx, p| append_row(tx, &positions, &topic, p, retention)
    }

    /// Keeps the data dir's lock for as long as the streams live (the node's life).
    pub fn holding(self, lock: DirLock) -> Self {
        Self {
            _lock: Some(lock),
            ..self
        }
    }
}

/// The ring length for `retention`: its size, at least one slot.
fn slots_for(retention: Retention) -> i64 {
    i64::try_from(retention.size).unwrap_or(i64::MAX).max(1)
}

/// The slot ranges (inclusive) that hold offsets `from..=to` of a ring of `slots`, in offset
/// order: at most two, none when the range is empty. Offsets older than the ring holds are
/// left out.
fn slot_ranges(from: i64, to: i64, slots: i64) -> Vec<(i64, i64)> {
    let from = from.max(to.saturating_sub(slots - 1)).max(1);
    if from > to {
        return Vec::new();
    }
    let (first, last) = (from % slots, to % slots);
    if first <= last {
        vec![(first, last)]
    } else {
        vec![(first, slots - 1), (0, last)]
    }
}

/// Creates the stream's row (with a fresh epoch and a ring of `slots`) if it has none.
fn ensure_stream(conn: &Connection, topic: &str, slots: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO streams (topic, epoch, top, slots) VALUES (?1, ?2, 0, ?3)",
    )?
    .execute(params![
        topic,
        uuid::Uuid::now_v7().simple().to_string(),
        slots
    ])?;
    Ok(())
}

/// The stream's newest offset, epoch and ring length, or `None` before it has a row in
/// `streams`. The newest offset is its newest row's (a walk of the ring's rows), or `top` when
/// none is left.
fn place(conn: &Connection, topic: &str) -> rusqlite::Result<Option<Place>> {
    conn.prepare_cached(
        "SELECT MAX(top, COALESCE((SELECT MAX(pos) FROM history_ring WHERE topic = ?1), 0)),
                epoch, slots
         FROM streams WHERE topic = ?1",
    )?
    .query_row(params![topic], |row| {
        Ok(Place {
            newest: row.get(0)?,
            epoch: row.get(1)?,
            slots: row.get::<_, i64>(2)?.max(1),
        })
    })
    .optional()
}

/// The offset of the stream's first row from `from` on (in offset order) that is at least as
/// new as `cutoff_ms` (`i64::MIN` for any row).
fn first_row(
    conn: &Connection,
    topic: &str,
    at: &Place,
    from: i64,
    cutoff_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    let mut first = conn.prepare_cached(
        "SELECT pos FROM history_ring
         WHERE topic = ?1 AND slot BETWEEN ?2 AND ?3 AND stored_ms >= ?4
         ORDER BY slot LIMIT 1",
    )?;
    for (low, high) in slot_ranges(from, at.newest, at.slots) {
        let found = first
            .query_row(params![topic, low, high, cutoff_ms], |row| row.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Drops the stream's rows older than `ttl`: they are its oldest, so this walks from the
/// oldest to the first row kept. When rows go, `top` is recorded (it outlives them). A drop of
/// nothing writes nothing, so reads work on a full disk.
fn expire(
    conn: &Connection,
    topic: &str,
    at: &Place,
    ttl: std::time::Duration,
) -> rusqlite::Result<()> {
    let oldest = at.newest - at.slots + 1;
    let kept = first_row(conn, topic, at, oldest, cutoff_ms(ttl))?;
    let drop_to = kept.map_or(at.newest, |first| first - 1);
    let mut dropped = 0;
    let mut drop = conn
        .prepare_cached("DELETE FROM history_ring WHERE topic = ?1 AND slot BETWEEN ?2 AND ?3")?;
    for (low, high) in slot_ranges(oldest, drop_to, at.slots) {
        dropped += drop.execute(params![topic, low, high])?;
    }
    if dropped > 0 {
        conn.prepare_cached("UPDATE streams SET top = ?2 WHERE topic = ?1 AND top < ?2")?
            .execute(params![topic, at.newest])?;
    }
    Ok(())
}

/// Lays the stream's ring out again for `slots` (its namespace's `history_size` changed): the
/// newest rows that fit keep their offsets, the others go. Once per change, at an append.
fn relay(conn: &Connection, topic: &str, at: &Place, slots: i64) -> rusqlite::Result<()> {
    let keep_after = at.newest - at.slots.min(slots);
    // The kept rows move to negative slots first (their offsets are consecutive, so their new
    // slots differ), which no old row holds; the rest go; then the kept ones take their slots.
    conn.execute(
        "UPDATE history_ring SET slot = -1 - pos % ?3 WHERE topic = ?1 AND pos > ?2",
        params![topic, keep_after, slots],
    )?;
    conn.execute(
        "DELETE FROM history_ring WHERE topic = ?1 AND slot >= 0",
        params![topic],
    )?;
    conn.execute(
        "UPDATE history_ring SET slot = -1 - slot WHERE topic = ?1",
        params![topic],
    )?;
    conn.execute(
        "UPDATE streams SET slots = ?2, top = MAX(top, ?3) WHERE topic = ?1",
        params![topic, slots, at.newest],
    )?;
    Ok(())
}

/// How many appends to a stream go between its checks for expired rows.
const EXPIRE_EVERY: i64 = 32;

/// The write of one append: the stream's place (remembered, or read), its row in its slot,
/// and now and then the drop of expired rows.
fn append_row(
    tx: &Connection,
    positions: &Positions,
    topic: &str,
    p: &Publication,
    retention: Retention,
) -> rusqlite::Result<StreamPosition> {
    let slots = slots_for(retention);
    // The stream's row exists but for its first append: created (with its epoch) only then.
    let known = match positions.get(topic) {
        Some(at) => Some(at),
        None => place(tx, topic)?,
    };
    let mut at = match known {
        Some(at) => at,
        None => {
            ensure_stream(tx, topic, slots)?;
            place(tx, topic)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?
        }
    };
    if at.slots != slots {
        relay(tx, topic, &at, slots)?;
        at.slots = slots;
    }
    at.newest += 1;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO history_ring
             (topic, slot, pos, id, event, data, ts, from_user, from_client, stored_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        topic,
        at.newest % at.slots,
        at.newest,
        p.id,
        p.event,
        p.data.to_string(),
        p.timestamp,
        p.from.as_ref().map(|f| f.user_id.as_str()),
        p.from.as_ref().map(|f| f.client_id.as_str()),
        now_ms(),
    ])?;
    if at.newest % EXPIRE_EVERY == 0 {
        expire(tx, topic, &at, retention.ttl)?;
    }
    let position = StreamPosition {
        offset: at.newest as u64,
        epoch: at.epoch.clone(),
    };
    positions.set(topic, at);
    Ok(position)
}

/// A page of the stream: up to `limit` rows after `after`, of the newest `retention.size`.
fn read_page(
    conn: &mut Connection,
    topic: &str,
    after: u64,
    limit: usize,
    retention: Retention,
) -> rusqlite::Result<HistoryPage> {
    let slots = slots_for(retention);
    let tx = conn.transaction()?;
    ensure_stream(&tx, topic, slots)?;
    let at = place(&tx, topic)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    expire(&tx, topic, &at, retention.ttl)?;
    // A ring longer than the namespace keeps now (laid out again at its next append) shows
    // only the newest `history_size`.
    let oldest = at.newest - at.slots.min(slots) + 1;
    let first_kept = first_row(&tx, topic, &at, oldest, i64::MIN)?.unwrap_or(at.newest + 1);
    let from = oldest.max(i64::try_from(after).unwrap_or(i64::MAX).saturating_add(1));
    let mut messages = Vec::new();
    {
        let mut rows = tx.prepare_cached(
            "SELECT pos, id, event, data, ts, from_user, from_client FROM history_ring
             WHERE topic = ?1 AND slot BETWEEN ?2 AND ?3 ORDER BY slot LIMIT ?4",
        )?;
        for (low, high) in slot_ranges(from, at.newest, at.slots) {
            let left = limit.saturating_sub(messages.len());
            if left == 0 {
                break;
            }
            let left = i64::try_from(left).unwrap_or(i64::MAX);
            let page = rows.query_map(params![topic, low, high, left], |row| {
                let from_user: Option<String> = row.get(5)?;
                let from_client: Option<String> = row.get(6)?;
                Ok(Publication {
                    id: row.get(1)?,
                    scope: Scope::Topic(topic.to_string()),
                    event: row.get(2)?,
                    data: data_of(&row.get::<_, String>(3)?)?,
                    timestamp: row.get(4)?,
                    from: from_user
                        .zip(from_client)
                        .map(|(user_id, client_id)| Sender { user_id, client_id }),
                    offset: Some(row.get::<_, i64>(0)? as u64),
                    epoch: Some(at.epoch.clone()),
                    accepted: None,
                })
            })?;
            for message in page {
                messages.push(message?);
            }
        }
    }
    tx.commit()?;
    Ok(HistoryPage {
        position: StreamPosition {
            offset: at.newest as u64,
            epoch: at.epoch,
        },
        first_kept: first_kept as u64,
        messages,
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
        let append = self.append_write(topic, retention);
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
        let append = self.append_write(topic, retention);
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
            read_page(conn, &topic, after, limit, retention)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::slot_ranges;

    #[test]
    fn offset_ranges_are_one_or_two_slot_ranges_in_offset_order() {
        assert_eq!(slot_ranges(3, 7, 10), [(3, 7)]);
        assert_eq!(slot_ranges(8, 12, 10), [(8, 9), (0, 2)]);
        assert_eq!(slot_ranges(10, 19, 10), [(0, 9)], "a whole lap");
        assert_eq!(
            slot_ranges(1, 25, 10),
            [(6, 9), (0, 5)],
            "only what the ring holds"
        );
        assert_eq!(slot_ranges(5, 4, 10), Vec::<(i64, i64)>::new());
        assert_eq!(slot_ranges(-3, 2, 10), [(1, 2)], "offsets start at 1");
        assert_eq!(slot_ranges(7, 9, 1), [(0, 0)], "one slot holds the newest");
    }
}
