//! The conformance suite of the engines (`Membership`, `Presence`, `History`, `Inbox`):
//! written once against the traits, run against every implementation (memory, SQLite, and
//! Redis on a private `redis-server`). The `Broker` has its own suite ([`crate::broker`]).
//! Each check panics with what went wrong; keys are fresh per run, so a persistent engine can
//! run it repeatedly.

use std::time::Duration;

use serde_json::json;

use herald::engine::{History, Inbox, InboxLimits, Membership, Presence, Retention};
use herald::protocol::Sender;
use herald::publication::{Publication, Scope};

/// Keeps everything a suite writes.
pub(crate) const KEEP_ALL: Retention = Retention {
    size: 1000,
    ttl: Duration::from_secs(3600),
};
/// Keeps every inbox message a suite writes.
pub(crate) const INBOX: InboxLimits = InboxLimits {
    max_messages: 1000,
    ttl: Duration::from_secs(3600),
};

use crate::broker::fresh;

fn message(topic: &str, n: u64) -> Publication {
    let mut p = Publication::new(Scope::Topic(topic.into()), "e", json!({ "n": n }));
    p.from = Some(Sender {
        user_id: "u".into(),
        client_id: "c".into(),
    });
    p
}

/// Every `History` check, in turn.
pub async fn history(engine: &dyn History) {
    offsets_count_up_within_one_epoch(engine).await;
    reads_start_after_the_offset_and_respect_the_limit(engine).await;
    retention_by_size_keeps_the_newest(engine).await;
    retention_by_ttl_drops_the_old_and_offsets_go_on(engine).await;
    streams_are_independent(engine).await;
    queued_appends_run_their_steps_in_order_and_settle_waits_for_them(engine).await;
}

async fn queued_appends_run_their_steps_in_order_and_settle_waits_for_them(engine: &dyn History) {
    let topic = fresh("chat:queued");
    let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut queued = Vec::new();
    for n in 1..=20u64 {
        let ran = ran.clone();
        let then: herald::engine::AfterAppend = Box::new(move |_, at| {
            ran.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(at.offset);
            n as usize
        });
        let append = engine
            .queue_append(&topic, message(&topic, n), KEEP_ALL, then)
            .await
            .expect("queue");
        queued.push(append);
    }
    engine.settle().await.expect("settle");
    let after_settle = ran.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        after_settle,
        (1..=20).collect::<Vec<_>>(),
        "settle returns after every queued step ran, in offset order"
    );
    let page = engine.read(&topic, 0, 100, KEEP_ALL).await.expect("read");
    assert_eq!(page.position.offset, 20, "all of them are in the stream");
    for (n, append) in (1..=20u64).zip(queued) {
        let (at, returned) = append.await.expect("append");
        assert_eq!((at.offset, returned), (n, n as usize), "in queue order");
    }
}

async fn offsets_count_up_within_one_epoch(engine: &dyn History) {
    let topic = fresh("chat:offsets");
    let empty = engine.read(&topic, 0, 10, KEEP_ALL).await.expect("read");
    assert_eq!(empty.position.offset, 0, "an empty stream is at offset 0");
    assert_eq!(empty.first_kept, 1);
    assert!(empty.messages.is_empty());
    let mut sent = Vec::new();
    for n in 1..=3 {
        let p = message(&topic, n);
        let at = engine.append(&topic, &p, KEEP_ALL).await.expect("append");
        assert_eq!(at.offset, n, "offsets are 1, 2, 3");
        assert_eq!(at.epoch, empty.position.epoch, "one epoch");
        sent.push(p);
    }
    let page = engine.read(&topic, 0, 10, KEEP_ALL).await.expect("read");
    assert_eq!(page.position.offset, 3);
    assert_eq!(page.first_kept, 1);
    assert_eq!(page.messages.len(), 3);
    for (got, sent) in page.messages.iter().zip(&sent) {
        assert_eq!(got.id, sent.id);
        assert_eq!(got.event, sent.event);
        assert_eq!(got.data, sent.data);
        assert_eq!(got.timestamp, sent.timestamp);
        assert_eq!(got.from, sent.from);
        assert_eq!(got.scope, Scope::Topic(topic.clone()));
        assert_eq!(got.epoch.as_deref(), Some(page.position.epoch.as_str()));
    }
    let offsets: Vec<_> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [Some(1), Some(2), Some(3)]);
}

async fn reads_start_after_the_offset_and_respect_the_limit(engine: &dyn History) {
    let topic = fresh("chat:after");
    for n in 1..=5 {
        engine
            .append(&topic, &message(&topic, n), KEEP_ALL)
            .await
            .expect("append");
    }
    let page = engine.read(&topic, 2, 2, KEEP_ALL).await.expect("read");
    let offsets: Vec<_> = page.messages.iter().filter_map(|m| m.offset).collect();
    assert_eq!(offsets, [3, 4], "after 2, at most 2");
    let page = engine.read(&topic, 5, 10, KEEP_ALL).await.expect("read");
    assert!(page.messages.is_empty(), "nothing after the newest");
    assert_eq!(page.position.offset, 5);
}

async fn retention_by_size_keeps_the_newest(engine: &dyn History) {
    let topic = fresh("chat:size");
    let three = Retention {
        size: 3,
        ..KEEP_ALL
    };
    for n in 1..=5 {
        engine
            .append(&topic, &message(&topic, n), three)
            .await
            .expect("append");
    }
    let page = engine.read(&topic, 0, 10, three).await.expect("read");
    assert_eq!(page.first_kept, 3, "1 and 2 were trimmed");
    let offsets: Vec<_> = page.messages.iter().filter_map(|m| m.offset).collect();
    assert_eq!(offsets, [3, 4, 5]);
}

async fn retention_by_ttl_drops_the_old_and_offsets_go_on(engine: &dyn History) {
    let topic = fresh("chat:ttl");
    let short = Retention {
        size: 100,
        ttl: Duration::from_millis(100),
    };
    engine
        .append(&topic, &message(&topic, 1), short)
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let page = engine.read(&topic, 0, 10, short).await.expect("read");
    assert!(page.messages.is_empty(), "expired");
    assert_eq!(page.position.offset, 1, "the stream remembers where it is");
    assert_eq!(page.first_kept, 2);
    let at = engine
        .append(&topic, &message(&topic, 2), short)
        .await
        .expect("append");
    assert_eq!(at.offset, 2, "offsets never go back");
    assert_eq!(at.epoch, page.position.epoch);
}

async fn streams_are_independent(engine: &dyn History) {
    let a = fresh("chat:a");
    let b = fresh("chat:b");
    engine
        .append(&a, &message(&a, 1), KEEP_ALL)
        .await
        .expect("append");
    engine
        .append(&a, &message(&a, 2), KEEP_ALL)
        .await
        .expect("append");
    let at = engine
        .append(&b, &message(&b, 1), KEEP_ALL)
        .await
        .expect("append");
    assert_eq!(at.offset, 1, "each topic counts on its own");
}

/// Every `Inbox` check, in turn.
pub async fn inbox(engine: &dyn Inbox) {
    messages_wait_in_order_until_acked(engine).await;
    the_oldest_go_first_beyond_the_maximum(engine).await;
    expired_messages_are_dropped(engine).await;
    totals_count_messages_and_users(engine).await;
}

/// Other tests may share the engine (one Redis), so the totals grow by at least what this one
/// stored.
async fn totals_count_messages_and_users(engine: &dyn Inbox) {
    let before = engine.totals().await.expect("totals");
    let (user, other) = (fresh("dora"), fresh("emil"));
    for n in 1..=2 {
        engine
            .store(&user, &user_message(&user, n), INBOX)
            .await
            .expect("store");
    }
    engine
        .store(&other, &user_message(&other, 3), INBOX)
        .await
        .expect("store");
    let after = engine.totals().await.expect("totals");
    assert!(
        after.messages >= before.messages + 3,
        "{before:?} {after:?}"
    );
    assert!(after.users >= before.users + 2, "{before:?} {after:?}");
}

fn user_message(user: &str, n: u64) -> Publication {
    Publication::new(Scope::User(user.into()), "note", json!({ "n": n }))
}

async fn messages_wait_in_order_until_acked(engine: &dyn Inbox) {
    let user = fresh("alice");
    let other = fresh("bob");
    let sent: Vec<_> = (1..=3).map(|n| user_message(&user, n)).collect();
    for p in &sent {
        engine.store(&user, p, INBOX).await.expect("store");
    }
    engine
        .store(&other, &user_message(&other, 9), INBOX)
        .await
        .expect("store");
    let pending = engine.pending(&user, INBOX).await.expect("pending");
    let ids: Vec<_> = pending.iter().map(|p| p.id.clone()).collect();
    let sent_ids: Vec<_> = sent.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, sent_ids, "in publication order");
    assert_eq!(pending[0].data, json!({ "n": 1 }));
    assert_eq!(pending[0].event, "note");
    assert_eq!(pending[0].timestamp, sent[0].timestamp);
    let again = engine.pending(&user, INBOX).await.expect("pending");
    assert_eq!(again.len(), 3, "reading does not remove");
    let removed = engine
        .ack(&user, &[sent_ids[1].clone(), "unknown".into()])
        .await
        .expect("ack");
    assert_eq!(removed, 1);
    let left: Vec<_> = engine
        .pending(&user, INBOX)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(left, [sent_ids[0].clone(), sent_ids[2].clone()]);
    let removed = engine
        .ack(&user, &[sent_ids[0].clone()])
        .await
        .expect("ack");
    assert_eq!(removed, 1);
    assert_eq!(
        engine
            .ack(&other, &[sent_ids[2].clone()])
            .await
            .expect("ack"),
        0,
        "a user acks only their own"
    );
    assert_eq!(
        engine.pending(&other, INBOX).await.expect("pending").len(),
        1
    );
}

async fn the_oldest_go_first_beyond_the_maximum(engine: &dyn Inbox) {
    let user = fresh("carol");
    let two = InboxLimits {
        max_messages: 2,
        ..INBOX
    };
    for n in 1..=4 {
        engine
            .store(&user, &user_message(&user, n), two)
            .await
            .expect("store");
    }
    let data: Vec<_> = engine
        .pending(&user, two)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| p.data)
        .collect();
    assert_eq!(data, [json!({ "n": 3 }), json!({ "n": 4 })]);
}

async fn expired_messages_are_dropped(engine: &dyn Inbox) {
    let user = fresh("dave");
    // The second message must outlive the gap between its store and the read, even on a
    // machine busy with the other tests: a 1 s TTL, passed for the first by 200 ms.
    let short = InboxLimits {
        max_messages: 10,
        ttl: Duration::from_millis(1000),
    };
    engine
        .store(&user, &user_message(&user, 1), short)
        .await
        .expect("store");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    engine
        .store(&user, &user_message(&user, 2), short)
        .await
        .expect("store");
    let data: Vec<_> = engine
        .pending(&user, short)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| p.data)
        .collect();
    assert_eq!(data, [json!({ "n": 2 })]);
}

/// Every `Membership` check.
pub async fn membership(engine: &dyn Membership) {
    let project = fresh("project");
    let other = fresh("project");
    assert!(
        engine.add(&project, "bob").await.expect("add"),
        "a new member"
    );
    assert!(
        !engine.add(&project, "bob").await.expect("add"),
        "already one"
    );
    assert!(engine.add(&project, "alice").await.expect("add"));
    assert!(engine.add(&other, "carol").await.expect("add"));
    assert_eq!(
        engine.members(&project).await.expect("members"),
        ["alice", "bob"],
        "sorted"
    );
    assert!(engine.is_member(&project, "bob").await.expect("is_member"));
    assert!(!engine
        .is_member(&project, "carol")
        .await
        .expect("is_member"));
    assert!(engine.remove(&project, "bob").await.expect("remove"));
    assert!(
        !engine.remove(&project, "bob").await.expect("remove"),
        "gone"
    );
    assert_eq!(engine.members(&project).await.expect("members"), ["alice"]);
    assert_eq!(engine.members(&other).await.expect("members"), ["carol"]);
    assert!(engine
        .members(&fresh("empty"))
        .await
        .expect("members")
        .is_empty());
    // The same pairs by user: what a connection's welcome lists as its project streams.
    let dana = fresh("dana");
    let (first, second) = (format!("a-{project}"), format!("b-{project}"));
    for p in [&second, &first] {
        engine.add(p, &dana).await.expect("add");
    }
    assert_eq!(
        engine.projects_of(&dana).await.expect("projects_of"),
        [first.clone(), second.clone()],
        "sorted"
    );
    engine.remove(&second, &dana).await.expect("remove");
    assert_eq!(
        engine.projects_of(&dana).await.expect("projects_of"),
        [first]
    );
    assert!(engine
        .projects_of(&fresh("nobody"))
        .await
        .expect("projects_of")
        .is_empty());
    engine.check().await.expect("the engine answers");
}

/// Every `Presence` check.
pub async fn presence(engine: &dyn Presence) {
    let topic = fresh("room:presence");
    let other = fresh("room:presence");
    assert!(engine.list(&topic).await.expect("list").is_empty());
    assert!(
        engine.join(&topic, "alice", "c1").await.expect("join"),
        "first"
    );
    assert!(
        !engine.join(&topic, "alice", "c2").await.expect("join"),
        "second tab"
    );
    assert!(
        !engine.join(&topic, "alice", "c1").await.expect("join"),
        "a repeat"
    );
    assert!(engine.join(&topic, "bob", "c3").await.expect("join"));
    assert!(engine.join(&other, "carol", "c4").await.expect("join"));
    let on = engine.list(&topic).await.expect("list");
    let users: Vec<(&str, usize)> = on
        .iter()
        .map(|e| (e.user_id.as_str(), e.connections))
        .collect();
    assert_eq!(
        users,
        [("alice", 2), ("bob", 1)],
        "sorted, with connections"
    );
    let now = std::time::SystemTime::now();
    for entry in &on {
        let age = now.duration_since(entry.joined_at).unwrap_or_default();
        assert!(age < Duration::from_secs(60), "joined just now: {age:?}");
    }
    assert!(
        !engine.leave(&topic, "alice", "c1").await.expect("leave"),
        "one left"
    );
    assert!(
        engine.leave(&topic, "alice", "c2").await.expect("leave"),
        "the last"
    );
    assert!(
        !engine.leave(&topic, "alice", "c2").await.expect("leave"),
        "a repeat"
    );
    assert!(
        !engine.leave(&topic, "dave", "c9").await.expect("leave"),
        "never joined"
    );
    let users: Vec<String> = engine
        .list(&topic)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.user_id)
        .collect();
    assert_eq!(users, ["bob"]);
    assert_eq!(
        engine.list(&other).await.expect("list").len(),
        1,
        "independent"
    );
}
