//! The engine conformance suites, run against the memory and SQLite implementations (the
//! SQLite ones on a real file, reopened to check that what was acknowledged survives).

use std::sync::{Arc, Mutex};

use herald::engine::memory::{MemoryHistory, MemoryInbox};
use herald::engine::sqlite::{self, SqliteHistory, SqliteInbox};
use herald::engine::{History, Inbox, Retention};
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

/// A database's history and inbox, sharing its one writer (as a node does).
fn sqlite_engines(dir: &tempfile::TempDir) -> (SqliteHistory, SqliteInbox) {
    let db = sqlite_db(dir);
    let writer = Arc::new(sqlite::GroupCommit::start(db.clone()).expect("writer"));
    (
        SqliteHistory::new(db.clone(), writer.clone()),
        SqliteInbox::new(db, writer),
    )
}

fn sqlite_db(dir: &tempfile::TempDir) -> Arc<Mutex<rusqlite::Connection>> {
    Arc::new(Mutex::new(
        sqlite::open(&dir.path().join("herald.db")).expect("open"),
    ))
}

#[tokio::test]
async fn sqlite_history_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    conformance::history(&sqlite_engines(&dir).0).await;
}

#[tokio::test]
async fn sqlite_inbox_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    conformance::inbox(&sqlite_engines(&dir).1).await;
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
        let (history, _) = sqlite_engines(&dir);
        history.append("t", &p, keep).await.expect("append")
    };
    let (history, _) = sqlite_engines(&dir);
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

/// The default node's pairing: appends are queued on the SQLite writer and delivered after
/// their commit, in stream order.
#[tokio::test]
async fn the_memory_broker_over_sqlite_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    let (history, inbox) = sqlite_engines(&dir);
    let recorder = herald_testkit::broker::Recorder::new();
    let broker = herald::engine::memory::MemoryBroker::new(recorder.clone());
    herald_testkit::broker::broker(&broker, &recorder, &history, &inbox, "chat").await;
}

#[tokio::test]
async fn concurrent_sqlite_writes_share_commits_and_keep_every_stream_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let (history, inbox) = sqlite_engines(&dir);
    let (history, inbox) = (Arc::new(history), Arc::new(inbox));
    let keep = Retention {
        size: 1000,
        ttl: std::time::Duration::from_secs(60),
    };
    let limits = herald::engine::InboxLimits {
        max_messages: 1000,
        ttl: std::time::Duration::from_secs(60),
    };
    // 16 writers at once, each on its own topic and user, 50 writes each.
    let mut writers = Vec::new();
    for w in 0..16 {
        let (history, inbox) = (history.clone(), inbox.clone());
        writers.push(tokio::spawn(async move {
            let topic = format!("t{w}");
            for n in 1..=50u64 {
                let p = Publication::new(
                    Scope::Topic(topic.clone()),
                    "e",
                    serde_json::json!({ "n": n }),
                );
                let at = history.append(&topic, &p, keep).await.expect("append");
                assert_eq!(at.offset, n, "offsets count up, no gap");
                let note = Publication::new(
                    Scope::User(format!("u{w}")),
                    "e",
                    serde_json::json!({ "n": n }),
                );
                inbox
                    .store(&format!("u{w}"), &note, limits)
                    .await
                    .expect("store");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    // Reopened: everything acknowledged is there, in order.
    drop((history, inbox));
    let (history, inbox) = sqlite_engines(&dir);
    for w in 0..16 {
        let page = history
            .read(&format!("t{w}"), 0, 100, keep)
            .await
            .expect("read");
        let ns: Vec<u64> = page
            .messages
            .iter()
            .filter_map(|m| m.data["n"].as_u64())
            .collect();
        assert_eq!(ns, (1..=50).collect::<Vec<_>>());
        let kept = inbox
            .pending(&format!("u{w}"), limits)
            .await
            .expect("pending");
        assert_eq!(kept.len(), 50);
    }
}
