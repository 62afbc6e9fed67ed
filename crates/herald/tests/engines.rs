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

/// The offsets of a page's messages.
fn offsets(page: &herald::engine::HistoryPage) -> Vec<u64> {
    page.messages.iter().filter_map(|m| m.offset).collect()
}

fn keep(size: usize, ttl: std::time::Duration) -> Retention {
    Retention { size, ttl }
}

/// A SQLite stream is a ring of `history_size` slots: reads run across its wrap in offset
/// order, expired rows go from the oldest on, and a new `history_size` lays it out again with
/// its newest rows; all of it survives a reopen.
#[tokio::test]
async fn a_sqlite_stream_reads_across_its_wrap_and_follows_a_new_history_size() {
    let dir = tempfile::tempdir().expect("dir");
    let hour = std::time::Duration::from_secs(3600);
    let (history, _) = sqlite_engines(&dir);
    let append = |n: u64, size: usize| {
        let p = Publication::new(Scope::Topic("t".into()), "e", serde_json::json!({ "n": n }));
        let history = &history;
        async move {
            history
                .append("t", &p, keep(size, hour))
                .await
                .expect("append")
        }
    };
    let first = append(1, 5).await;
    for n in 2..=12 {
        assert_eq!(append(n, 5).await.offset, n);
    }
    let page = history
        .read("t", 0, 100, keep(5, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), [8, 9, 10, 11, 12], "the newest five");
    assert_eq!((page.first_kept, page.position.offset), (8, 12));
    let ns: Vec<u64> = page
        .messages
        .iter()
        .filter_map(|m| m.data["n"].as_u64())
        .collect();
    assert_eq!(
        ns,
        [8, 9, 10, 11, 12],
        "each offset holds its own publication"
    );
    let page = history.read("t", 6, 3, keep(5, hour)).await.expect("read");
    assert_eq!(
        offsets(&page),
        [8, 9, 10],
        "across the wrap, in order, limited"
    );
    let page = history.read("t", 9, 2, keep(5, hour)).await.expect("read");
    assert_eq!(offsets(&page), [10, 11]);

    // A longer history: the five kept stay, and the ring fills up to eight.
    append(13, 8).await;
    let page = history
        .read("t", 0, 100, keep(8, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), [8, 9, 10, 11, 12, 13]);
    for n in 14..=16 {
        append(n, 8).await;
    }
    let page = history
        .read("t", 0, 100, keep(8, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), (9..=16).collect::<Vec<_>>());

    // A shorter one: reads show only the newest three at once, appends lay the ring out again.
    let page = history
        .read("t", 0, 100, keep(3, hour))
        .await
        .expect("read");
    assert_eq!((offsets(&page), page.first_kept), (vec![14, 15, 16], 14));
    append(17, 3).await;
    let page = history
        .read("t", 0, 100, keep(3, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), [15, 16, 17]);
    let page = history
        .read("t", 0, 100, keep(8, hour))
        .await
        .expect("read");
    assert_eq!(
        offsets(&page),
        [15, 16, 17],
        "what a shorter ring dropped is gone"
    );

    // Expired rows go from the oldest on, across the wrap.
    let short = std::time::Duration::from_millis(300);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let p = Publication::new(
        Scope::Topic("t".into()),
        "e",
        serde_json::json!({ "n": 18 }),
    );
    history
        .append("t", &p, keep(3, short))
        .await
        .expect("append");
    let page = history
        .read("t", 0, 100, keep(3, short))
        .await
        .expect("read");
    assert_eq!((offsets(&page), page.first_kept), (vec![18], 18));

    drop(history);
    let (history, _) = sqlite_engines(&dir);
    let page = history
        .read("t", 0, 100, keep(3, hour))
        .await
        .expect("read");
    assert_eq!((offsets(&page), page.position.offset), (vec![18], 18));
    let p = Publication::new(
        Scope::Topic("t".into()),
        "e",
        serde_json::json!({ "n": 19 }),
    );
    let at = history
        .append("t", &p, keep(3, hour))
        .await
        .expect("append");
    assert_eq!(
        (at.offset, &at.epoch),
        (19, &first.epoch),
        "the same stream goes on"
    );
}

/// A file written before streams were rings (schema 2, a `history` table keyed by offset)
/// keeps its streams: their rows, offsets and epochs, and a stream whose rows were all
/// trimmed keeps its newest offset.
#[tokio::test]
async fn a_sqlite_file_from_before_rings_keeps_its_streams() {
    let dir = tempfile::tempdir().expect("dir");
    let hour = std::time::Duration::from_secs(3600);
    {
        let conn = rusqlite::Connection::open(dir.path().join("herald.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE streams (topic TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                 top INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE history (topic TEXT NOT NULL, pos INTEGER NOT NULL,
                 id TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL, ts TEXT NOT NULL,
                 from_user TEXT, from_client TEXT, stored_ms INTEGER NOT NULL,
                 PRIMARY KEY (topic, pos)) WITHOUT ROWID;
             INSERT INTO streams VALUES ('log', 'old-epoch', 2), ('quiet', 'quiet-epoch', 9);
             PRAGMA user_version = 2;",
        )
        .expect("schema 2");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        for pos in 3..=7 {
            conn.execute(
                "INSERT INTO history VALUES ('log', ?1, ?2, 'e', ?3, 'ts', 'u', 'c', ?4)",
                rusqlite::params![pos, format!("id{pos}"), format!("{{\"n\":{pos}}}"), now],
            )
            .expect("row");
        }
    }
    let (history, _) = sqlite_engines(&dir);
    let page = history
        .read("log", 0, 100, keep(10, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), [3, 4, 5, 6, 7]);
    assert_eq!(
        (page.first_kept, page.position.epoch.as_str()),
        (3, "old-epoch")
    );
    let ids: Vec<&str> = page.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["id3", "id4", "id5", "id6", "id7"]);
    assert_eq!(
        page.messages[0].from.as_ref().map(|f| f.user_id.as_str()),
        Some("u")
    );
    let p = Publication::new(Scope::Topic("log".into()), "e", serde_json::json!({}));
    let at = history
        .append("log", &p, keep(10, hour))
        .await
        .expect("append");
    assert_eq!((at.offset, at.epoch.as_str()), (8, "old-epoch"));
    let page = history
        .read("log", 0, 100, keep(10, hour))
        .await
        .expect("read");
    assert_eq!(offsets(&page), [3, 4, 5, 6, 7, 8]);

    let quiet = history
        .read("quiet", 0, 100, keep(10, hour))
        .await
        .expect("read");
    assert_eq!((quiet.position.offset, quiet.first_kept), (9, 10));
    let at = history
        .append("quiet", &p, keep(10, hour))
        .await
        .expect("append");
    assert_eq!((at.offset, at.epoch.as_str()), (10, "quiet-epoch"));
}

/// Stores cut a SQLite inbox to its maximum now and then (not at each store, which would walk
/// the whole inbox): the file never holds more than the maximum plus 32 of a user's
/// messages, and a read gives exactly the newest.
#[tokio::test]
async fn a_sqlite_inbox_stays_near_its_maximum_between_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, inbox) = sqlite_engines(&dir);
    let limits = herald::engine::InboxLimits {
        max_messages: 10,
        ttl: std::time::Duration::from_secs(3600),
    };
    for n in 1..=200u64 {
        let p = Publication::new(
            Scope::User("dora".into()),
            "e",
            serde_json::json!({ "n": n }),
        );
        inbox.store("dora", &p, limits).await.expect("store");
        let held = inbox.totals().await.expect("totals").messages;
        assert!(held <= 10 + 32, "{held} messages held after {n} stores");
    }
    let kept = inbox.pending("dora", limits).await.expect("pending");
    let ns: Vec<u64> = kept.iter().filter_map(|m| m.data["n"].as_u64()).collect();
    assert_eq!(
        ns,
        (191..=200).collect::<Vec<_>>(),
        "exactly the newest ten"
    );
    assert_eq!(inbox.totals().await.expect("totals").messages, 10);
}
