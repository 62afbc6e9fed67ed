//! The `Broker` conformance suite: what every broker (memory, Redis) does for the node it
//! runs in, checked through a [`Recorder`] that stands in for the node's connections.
//!
//! - A topic's stream reaches the node in offset order, once each.
//! - Every other scope reaches the node once per publication.
//! - A user-scope publication is delivered when the user is attached here, else kept in the
//!   inbox (and a remote broker routes a topic only while the node watches it).
//! - A remote broker that loses its link catches up from the stream ([`catch_up`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald::engine::{Broker, Delivery, EngineError, History, Inbox, Stripes, ToUser};
use herald::protocol::CloseReason;
use herald::publication::{Publication, Scope};
use serde_json::json;

use crate::conformance::{INBOX, KEEP_ALL as KEEP};

/// What a broker handed to its node: a stand-in for the node's connections.
#[derive(Default)]
pub struct Recorder {
    delivered: Mutex<Vec<Publication>>,
    users: Mutex<HashSet<String>>,
    closed: Mutex<Vec<String>>,
    stripes: Stripes,
}

impl Recorder {
    /// A recorder with nobody attached.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Marks `user` as having a connection here.
    pub fn attach(&self, user: &str) {
        lock(&self.users).insert(user.to_string());
    }

    /// Everything delivered so far that matches `scope`.
    pub fn delivered_to(&self, scope: &Scope) -> Vec<Publication> {
        lock(&self.delivered)
            .iter()
            .filter(|p| &p.scope == scope)
            .cloned()
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Delivery for Recorder {
    async fn deliver(&self, publication: &Publication) -> Result<usize, EngineError> {
        Ok(self.deliver_to_topic(publication))
    }

    fn deliver_to_topic(&self, publication: &Publication) -> usize {
        lock(&self.delivered).push(publication.clone());
        1
    }

    fn stripes(&self) -> &Stripes {
        &self.stripes
    }

    fn has_user(&self, user: &str) -> bool {
        lock(&self.users).contains(user)
    }

    fn undelivered_of(&self, _user: &str) -> Vec<Arc<Publication>> {
        Vec::new()
    }

    async fn disconnect(&self, _scope: &Scope) -> Result<usize, EngineError> {
        Ok(0)
    }

    async fn close_scope(&self, scope: &Scope, _reason: CloseReason) {
        if let Scope::Topic(topic) = scope {
            lock(&self.closed).push(topic.to_string());
        }
    }
}

/// A name no earlier run used, so a persistent engine can run the suite again.
pub fn fresh(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::now_v7().simple())
}

/// Waits (at most 10 s) until `recorder` holds `n` deliveries to `scope`; a remote broker
/// delivers after the publisher returned.
pub async fn wait_for(recorder: &Recorder, scope: &Scope, n: usize) -> Vec<Publication> {
    for _ in 0..500 {
        let got = recorder.delivered_to(scope);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = recorder.delivered_to(scope).len();
    panic!("waited 10 s for {n} deliveries to {scope:?}, got {got}");
}

/// Every check of the suite, on a broker that delivers into `recorder`, with the history and
/// inbox engines it runs beside. `stream_namespace` names a namespace whose topics keep
/// history in the broker's config (`<namespace>:...`).
pub async fn broker(
    broker: &dyn Broker,
    recorder: &Recorder,
    history: &dyn History,
    inbox: &dyn Inbox,
    stream_namespace: &str,
) {
    a_stream_arrives_in_order_once_each(broker, recorder, history, stream_namespace).await;
    other_scopes_arrive_once_each(broker, recorder).await;
    a_user_message_is_delivered_or_kept(broker, recorder, inbox).await;
    if broker.is_remote() {
        a_topic_is_routed_only_while_watched(broker, recorder).await;
    }
}

async fn a_stream_arrives_in_order_once_each(
    broker: &dyn Broker,
    recorder: &Recorder,
    history: &dyn History,
    namespace: &str,
) {
    let topic = fresh(&format!("{namespace}:order"));
    broker.watch(&topic).await.expect("watch");
    // All 50 are queued before any is awaited, as concurrent publishers do once the stripe
    // is released: their commits may be shared, their order may not change.
    let mut queued = Vec::new();
    for n in 0..50u64 {
        let publication = Publication::new(Scope::Topic(topic.clone()), "e", json!({ "n": n }));
        let append = broker
            .publish_to_stream(history, publication, KEEP)
            .await
            .expect("queue for the stream");
        queued.push(append);
    }
    for (n, append) in (0..50u64).zip(queued) {
        let (at, _) = append.await.expect("publish to stream");
        assert_eq!(at.offset, n + 1, "offsets count up from 1");
    }
    let scope = Scope::Topic(topic.clone());
    let got = wait_for(recorder, &scope, 50).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_after = recorder.delivered_to(&scope);
    assert_eq!(got_after.len(), got.len(), "no copy arrives twice");
    let offsets: Vec<u64> = got.iter().filter_map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        (1..=50).collect::<Vec<_>>(),
        "in offset order, once each"
    );
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p.data["n"], n as u64, "the payload travels with its offset");
    }
    broker.unwatch(&topic).await;
}

async fn other_scopes_arrive_once_each(broker: &dyn Broker, recorder: &Recorder) {
    let scopes = [Scope::Role(fresh("role")), Scope::Project(fresh("project"))];
    for scope in &scopes {
        for n in 0..3u64 {
            let publication = Publication::new(scope.clone(), "e", json!({ "n": n }));
            broker
                .publish(Arc::new(publication))
                .await
                .expect("publish");
        }
        let got = wait_for(recorder, scope, 3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            recorder.delivered_to(scope).len(),
            3,
            "once each: {scope:?}"
        );
        let ns: Vec<u64> = got.iter().filter_map(|p| p.data["n"].as_u64()).collect();
        assert_eq!(ns, vec![0, 1, 2], "in order: {scope:?}");
    }
}

async fn a_user_message_is_delivered_or_kept(
    broker: &dyn Broker,
    recorder: &Recorder,
    inbox: &dyn Inbox,
) {
    let away = fresh("away");
    let note = Publication::new(Scope::User(away.clone()), "note", json!({}));
    let id = note.id.clone();
    let sent = broker
        .publish_to_user(inbox, INBOX, None, note)
        .await
        .expect("publish to user");
    let ToUser::Kept(stored) = sent else {
        panic!("nobody attached: kept");
    };
    // Attached before the store is awaited: a store queued before the inbox read is in it.
    let (pending, _first) = broker
        .attach_user(inbox, INBOX, &away)
        .await
        .expect("attach");
    stored.await.expect("the store is durable");
    assert_eq!(
        pending.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![id],
        "what was kept is handed over when the user attaches"
    );
    recorder.attach(&away);
    let note = Publication::new(Scope::User(away.clone()), "note", json!({"live": true}));
    let live = broker
        .publish_to_user(inbox, INBOX, None, note)
        .await
        .expect("publish to user");
    assert!(matches!(live, ToUser::Live(_)), "attached: delivered live");
    let scope = Scope::User(away.clone());
    let got = wait_for(recorder, &scope, 1).await;
    assert_eq!(got[0].data["live"], true);
    broker.detach_user(&away).await;
}

async fn a_topic_is_routed_only_while_watched(broker: &dyn Broker, recorder: &Recorder) {
    let topic = fresh("interest");
    let scope = Scope::Topic(topic.clone());
    let send = |n: u64| {
        let publication = Publication::new(scope.clone(), "e", json!({ "n": n }));
        broker.publish(Arc::new(publication))
    };
    send(0).await.expect("publish");
    broker.watch(&topic).await.expect("watch");
    send(1).await.expect("publish");
    let got = wait_for(recorder, &scope, 1).await;
    broker.unwatch(&topic).await;
    send(2).await.expect("publish");
    // A marker on a watched topic, published after: once it arrives, 2 would have too.
    let marker = fresh("marker");
    broker.watch(&marker).await.expect("watch");
    let publication = Publication::new(Scope::Topic(marker.clone()), "e", json!({}));
    broker
        .publish(Arc::new(publication))
        .await
        .expect("publish");
    wait_for(recorder, &Scope::Topic(marker.clone()), 1).await;
    broker.unwatch(&marker).await;
    let ns: Vec<u64> = recorder
        .delivered_to(&scope)
        .iter()
        .filter_map(|p| p.data["n"].as_u64())
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(ns, vec![1], "only what was published while watched");
}

/// A remote broker that lost its link catches up from the stream: what was published to a
/// watched topic while the link was down arrives once each, in order, after it is back.
/// `cut_link` ends the broker's link (its Pub/Sub connection); `link_up` resolves once the
/// broker says it is connected again.
pub async fn catch_up<C, U>(
    broker: &dyn Broker,
    recorder: &Recorder,
    history: &dyn History,
    stream_namespace: &str,
    cut_link: C,
    link_up: U,
) where
    C: std::future::Future<Output = ()>,
    U: std::future::Future<Output = ()>,
{
    let topic = fresh(&format!("{stream_namespace}:catch-up"));
    let scope = Scope::Topic(topic.clone());
    broker.watch(&topic).await.expect("watch");
    let publish = |n: u64| {
        let publication = Publication::new(scope.clone(), "e", json!({ "n": n }));
        async move {
            broker
                .publish_to_stream(history, publication, KEEP)
                .await?
                .await
        }
    };
    let (at, _) = publish(0).await.expect("publish");
    broker.subscribed_at(&topic, &at);
    wait_for(recorder, &scope, 1).await;
    cut_link.await;
    for n in 1..10 {
        publish(n).await.expect("publish while the link is down");
    }
    link_up.await;
    let got = wait_for(recorder, &scope, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let offsets: Vec<u64> = recorder
        .delivered_to(&scope)
        .iter()
        .filter_map(|p| p.offset)
        .collect();
    assert_eq!(got.len(), 10);
    assert_eq!(offsets, (1..=10).collect::<Vec<_>>(), "in order, once each");
    broker.unwatch(&topic).await;
}
