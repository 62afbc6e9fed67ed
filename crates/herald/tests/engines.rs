//! The engine conformance suites, run against the memory and SQLite implementations (the
//! SQLite ones on a real file, reopened to check that what was acknowledged survives).

use std::sync::{Arc, Mutex};

use herald::engine::memory::{MemoryHistory, MemoryInbox};
use herald::engine::sqlite::{self, SqliteHistory, SqliteInbox};
use herald::engine::{History, Retention};
use herald::publication::{Publication, Scope};
use herald_testkit::conformance;

#[tokio::test]
async fn memory_membership_and_presence_conform() {
    conformance::membership(&herald::engine::memory::MemoryMembership::new()).await;
    conformance::presence(&herald::engine::memory::MemoryPresence::new()).await;
}

#[tokio::test]
async fn sqlite_membership_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    let membership = herald::engine::sqlite::SqliteMembership::load(sqlite_db(&dir))
        .await
        .expect("load");
    conformance::membership(&membership).await;
}

#[tokio::test]
async fn memory_history_conforms() {
    conformance::history(&MemoryHistory::new()).await;
}

#[tokio::test]
async fn memory_inbox_conforms() {
    conformance::inbox(&MemoryInbox::new()).await;
}

fn sqlite_db(dir: &tempfile::TempDir) -> Arc<Mutex<rusqlite::Connection>> {
    Arc::new(Mutex::new(
        sqlite::open(&dir.path().join("herald.db")).expect("open"),
    ))
}

#[tokio::test]
async fn sqlite_history_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    conformance::history(&SqliteHistory::new(sqlite_db(&dir))).await;
}

#[tokio::test]
async fn sqlite_inbox_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    conformance::inbox(&SqliteInbox::new(sqlite_db(&dir))).await;
}

#[tokio::test]
async fn a_sqlite_stream_keeps_its_epoch_and_offsets_across_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let keep = Retention {
        size: 100,
        ttl: std::time::Duration::from_secs(60),
    };
    let p = Publication::new(Scope::Topic("t".into()), "e", serde_json::json!({}));
    let first = {
        let history = SqliteHistory::new(sqlite_db(&dir));
        history.append("t", &p, keep).await.expect("append")
    };
    let history = SqliteHistory::new(sqlite_db(&dir));
    let second = history.append("t", &p, keep).await.expect("append");
    assert_eq!(second.epoch, first.epoch, "the same past, the same epoch");
    assert_eq!(second.offset, first.offset + 1);
    let fresh = MemoryHistory::new();
    let other = fresh.append("t", &p, keep).await.expect("append");
    assert_ne!(
        other.epoch, first.epoch,
        "a memory stream starts a new epoch"
    );
}

#[tokio::test]
async fn the_memory_broker_conforms() {
    let recorder = herald_testkit::broker::Recorder::new();
    let broker = herald::engine::memory::MemoryBroker::new(recorder.clone());
    let history = MemoryHistory::new();
    let inbox = MemoryInbox::new();
    herald_testkit::broker::broker(&broker, &recorder, &history, &inbox, "chat").await;
}
