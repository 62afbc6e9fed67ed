//! [`RedisBroker`]: publications between nodes over Redis Pub/Sub, routed by interest.
//!
//! Channels: `herald:topic:<topic>` (a node subscribes while it has subscribers to the topic),
//! `herald:scopes` (`all`, `role`, `project`: every node), `herald:to-node:<id>` (user-scope
//! publications, only to the nodes holding the user, and replies), `herald:control`
//! (disconnects, and re-checks of a user's subscriptions after a membership removal). Every publication is one Redis message per interested node, and every node,
//! the publishing one included, delivers what it receives in order from one Pub/Sub
//! connection.
//!
//! The Pub/Sub connection reconnects with backoff and resubscribes. After a loss, each topic
//! with history is caught up from the last offset the node delivered; where the past is gone
//! (Redis restarted empty, or trimmed), its subscribers are closed with 1012 so that they
//! resubscribe with `since` and learn `recovered: false`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{codec, keys, RedisStore};
use crate::config::Config;
use crate::engine::{
    lock, Broker, Delivery, EngineError, History, Inbox, InboxLimits, QueuedAppend, Retention,
    StreamPosition,
};
use crate::protocol::CloseReason;
use crate::publication::{Publication, Scope};

/// The broker of a node in a Redis cluster.
pub struct RedisBroker {
    shared: Arc<Shared>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

struct Shared {
    store: RedisStore,
    local: Arc<dyn Delivery>,
    config: Arc<Config>,
    /// The Pub/Sub sink (None while disconnected) and the topics this node wants, counted.
    subscriptions: tokio::sync::Mutex<Subscriptions>,
    connected: AtomicBool,
    /// Bumped on every (re)connection of the Pub/Sub link: the node re-asserts its presence.
    generation: tokio::sync::watch::Sender<u64>,
    /// Per topic with history, the newest position this node delivered (or a subscriber
    /// started from): where a catch-up starts, and what a late duplicate is measured against.
    delivered: Mutex<HashMap<String, StreamPosition>>,
    /// Control requests waiting for the other nodes' counts.
    replies: Mutex<HashMap<String, mpsc::UnboundedSender<usize>>>,
    /// Re-checks asked of this node, to the node's task that runs them (taken once).
    rechecks: (
        mpsc::UnboundedSender<Recheck>,
        Mutex<Option<mpsc::UnboundedReceiver<Recheck>>>,
    ),
}

/// A request to re-check subscriptions on this node; `done` gets how many topics were
/// revoked.
pub struct Recheck {
    /// Whose access changed: a user's ([`Scope::User`]) or a project's members'
    /// ([`Scope::Project`]).
    pub scope: Scope,
    /// Answered when the node has revoked what the user lost.
    pub done: tokio::sync::oneshot::Sender<usize>,
}

#[derive(Default)]
struct Subscriptions {
    sink: Option<PubSubSink>,
    interest: HashMap<String, usize>,
}

/// A request to every node, on the control channel.
#[derive(Serialize, Deserialize)]
struct Control {
    op: String,
    scope: String,
    target: Option<String>,
    from: String,
    request: String,
}

/// A node's answer to a [`Control`] request, on the requester's node channel.
#[derive(Serialize, Deserialize)]
struct Reply {
    request: String,
    count: usize,
}

impl RedisBroker {
    /// Starts the broker: the Pub/Sub link connects (and reconnects) in the background.
    pub fn start(store: RedisStore, local: Arc<dyn Delivery>, config: Arc<Config>) -> Self {
        let shared = Arc::new(Shared {
            store,
            local,
            config,
            subscriptions: tokio::sync::Mutex::new(Subscriptions::default()),
            connected: AtomicBool::new(false),
            generation: tokio::sync::watch::channel(0).0,
            delivered: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            rechecks: {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Mutex::new(Some(rx)))
            },
        });
        let listener = tokio::spawn(listen(shared.clone()));
        Self { shared, listener }
    }

    /// Changes each time the Pub/Sub link (re)connects.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Has every node re-check what `user`'s connections may still receive (a membership was
    /// removed); returns how many topics were revoked. Waits (at most the Redis timeout) for
    /// every node's answer.
    pub async fn recheck(&self, scope: &Scope) -> Result<usize, EngineError> {
        self.ask_every_node("recheck", scope).await
    }

    /// The re-checks this node is asked for; the node takes them once and answers each.
    pub fn take_rechecks(&self) -> Option<mpsc::UnboundedReceiver<Recheck>> {
        lock(&self.shared.rechecks.1).take()
    }

    /// Sends a control request to every node and sums their answers.
    async fn ask_every_node(&self, op: &str, scope: &Scope) -> Result<usize, EngineError> {
        let shared = &self.shared;
        let request = uuid::Uuid::now_v7().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&shared.replies).insert(request.clone(), tx);
        let control = Control {
            op: op.into(),
            scope: scope.name().into(),
            target: target_of(scope).map(str::to_string),
            from: shared.store.node_id().to_string(),
            request: request.clone(),
        };
        let body = serde_json::to_vec(&control).unwrap_or_default();
        let nodes = match shared.store.publish(keys::control_channel(), body).await {
            Ok(nodes) => nodes,
            Err(e) => {
                lock(&shared.replies).remove(&request);
                return Err(e);
            }
        };
        let mut total = 0;
        let deadline = tokio::time::Instant::now() + shared.store.timeout();
        for _ in 0..nodes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(count)) => total += count,
                _ => break,
            }
        }
        lock(&shared.replies).remove(&request);
        Ok(total)
    }
}

fn target_of(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::All => None,
        Scope::User(t) | Scope::Role(t) | Scope::Project(t) | Scope::Topic(t) => Some(t),
    }
}

/// Keeps the Pub/Sub link up: connect, subscribe, deliver, and on loss back off and retry.
async fn listen(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    loop {
        match shared.connect().await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                tracing::info!(node = shared.store.node_id(), "redis pub/sub connected");
                if lost {
                    shared.catch_up().await;
                }
                shared.generation.send_modify(|g| *g += 1);
                while let Some(message) = stream.next().await {
                    shared.handle(message).await;
                }
                shared.connected.store(false, Ordering::SeqCst);
                shared.subscriptions.lock().await.sink = None;
                lost = true;
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "redis pub/sub: cannot connect"),
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl Shared {
    async fn connect(&self) -> Result<PubSubStream, EngineError> {
        let store = &self.store;
        let pubsub = store.run(store.client().get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let mut subscriptions = self.subscriptions.lock().await;
        let mut channels = vec![
            keys::scopes_channel(),
            keys::control_channel(),
            format!("{}{}", keys::node_channel_prefix(), store.node_id()),
        ];
        channels.extend(
            subscriptions
                .interest
                .keys()
                .map(|t| keys::topic_channel(t)),
        );
        store.run(sink.subscribe(&channels)).await?;
        subscriptions.sink = Some(sink);
        self.connected.store(true, Ordering::SeqCst);
        Ok(stream)
    }

    async fn handle(&self, message: redis::Msg) {
        let payload = message.get_payload_bytes();
        if message.get_channel_name() == keys::control_channel() {
            self.control(payload).await;
            return;
        }
        if let Some(reply) = payload.strip_prefix(b"R") {
            if let Ok(reply) = serde_json::from_slice::<Reply>(reply) {
                if let Some(tx) = lock(&self.replies).get(&reply.request) {
                    let _ = tx.send(reply.count);
                }
            }
            return;
        }
        let publication = match codec::decode_message(payload) {
            Ok(publication) => publication,
            Err(e) => {
                tracing::warn!(error = %e, "redis: a message that is not a publication");
                return;
            }
        };
        if self.already_delivered(&publication) {
            return;
        }
        match self.local.deliver_in_order(&publication).await {
            Ok(0) => self.keep_undelivered(&publication).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "redis: delivery failed"),
        }
    }

    /// A user-scope publication sent to this node because the user was online here, whose
    /// every live push failed (the connections were closing or slow): kept in the user's
    /// inbox, so it is delivered or kept, never neither. If another node delivered it, the
    /// user may get it twice (the second time `offline`, same `id`).
    async fn keep_undelivered(&self, publication: &Publication) {
        let Scope::User(user) = &publication.scope else {
            return;
        };
        let limits = self.config.inbox.limits();
        // What a slow connection of the user was given first goes first.
        let mut undelivered = self.local.undelivered_of(user);
        undelivered.push(Arc::new(publication.clone()));
        for publication in undelivered {
            if let Err(e) = self.store.store(user, &publication, limits).await {
                crate::metrics::engine_error("inbox");
                tracing::warn!(user, error = %e, "redis: an undelivered user message could not be kept");
            }
        }
    }

    /// Records a stream message as delivered; true if this node already delivered it (a
    /// catch-up replayed it before the live copy arrived). Topic streams are kept under the
    /// topic, scope streams under their key (`#all`, ...).
    fn already_delivered(&self, publication: &Publication) -> bool {
        let (Some(offset), Some(epoch)) = (publication.offset, &publication.epoch) else {
            return false;
        };
        let key = match &publication.scope {
            Scope::Topic(topic) => topic.clone(),
            scope => match crate::engine::scope_stream_key(scope) {
                Some(key) => key,
                None => return false,
            },
        };
        let topic = &key;
        let mut delivered = lock(&self.delivered);
        match delivered.get_mut(topic) {
            Some(at) if at.epoch == *epoch && offset <= at.offset => true,
            Some(at) => {
                *at = StreamPosition {
                    offset,
                    epoch: epoch.clone(),
                };
                false
            }
            None => {
                let at = StreamPosition {
                    offset,
                    epoch: epoch.clone(),
                };
                delivered.insert(topic.clone(), at);
                false
            }
        }
    }

    async fn control(&self, payload: &[u8]) {
        let Ok(control) = serde_json::from_slice::<Control>(payload) else {
            tracing::warn!("redis: a malformed control message");
            return;
        };
        let scope = Scope::parse(&control.scope, control.target.as_deref());
        let mut recheck = None;
        let count = match (control.op.as_str(), scope) {
            ("disconnect", Ok(scope)) => self.local.disconnect(&scope).await.unwrap_or(0),
            ("recheck", Ok(scope @ (Scope::User(_) | Scope::Project(_)))) => {
                let (done, answer) = tokio::sync::oneshot::channel();
                if self.rechecks.0.send(Recheck { scope, done }).is_ok() {
                    recheck = Some(answer);
                }
                0
            }
            _ => 0,
        };
        let channel = format!("{}{}", keys::node_channel_prefix(), control.from);
        let store = self.store.clone();
        let request = control.request;
        // Answered off the listener, which must keep delivering (a re-check is answered when
        // the node has done it).
        tokio::spawn(async move {
            let count = match recheck {
                Some(answer) => answer.await.unwrap_or(0),
                None => count,
            };
            let reply = Reply { request, count };
            let mut body = b"R".to_vec();
            body.extend(serde_json::to_vec(&reply).unwrap_or_default());
            if let Err(e) = store.publish(channel, body).await {
                tracing::warn!(error = %e, "redis: could not answer a control request");
            }
        });
    }

    fn retention(&self, topic: &str) -> Option<Retention> {
        crate::topic::retention(&self.config, topic)
    }

    /// After the link came back: replays to each watched topic with history what this node
    /// missed, or, where that past is gone, asks its subscribers to resubscribe.
    async fn catch_up(&self) {
        let watched: Vec<String> = self
            .subscriptions
            .lock()
            .await
            .interest
            .keys()
            .cloned()
            .collect();
        for topic in watched {
            let Some(retention) = self.retention(&topic) else {
                continue;
            };
            let _stream = self.local.stripes().of(&topic).lock().await;
            let Some(from) = lock(&self.delivered).get(&topic).cloned() else {
                continue;
            };
            let page = self
                .store
                .read(&topic, from.offset, retention.size.max(1), retention)
                .await;
            match page {
                Ok(page) if page.continues(from.offset, &from.epoch) => {
                    for message in &page.messages {
                        if let Err(e) = self.local.deliver(message).await {
                            tracing::warn!(topic, error = %e, "catch-up delivery failed");
                        }
                    }
                    lock(&self.delivered).insert(topic, page.position);
                }
                _ => {
                    tracing::warn!(topic, "stream past lost: subscribers asked to resubscribe");
                    lock(&self.delivered).remove(&topic);
                    let scope = Scope::Topic(topic);
                    self.local
                        .close_scope(&scope, CloseReason::STREAM_LOST)
                        .await;
                }
            }
        }
        self.catch_up_scope_streams().await;
    }

    /// The same for the scope streams this node delivered from: what it missed is delivered
    /// now (the connections' floors skip what a resume already gave them); where that past
    /// is gone, the connections in the scope are closed with 1012 so that they reconnect and
    /// resume (and learn `recovered: false`).
    async fn catch_up_scope_streams(&self) {
        let recovery = &self.config.recovery;
        if recovery.window.is_zero() {
            return;
        }
        let retention = Retention {
            size: recovery.max_messages.max(1),
            ttl: recovery.window,
        };
        let streams: Vec<String> = lock(&self.delivered)
            .keys()
            .filter(|key| key.starts_with('#'))
            .cloned()
            .collect();
        for key in streams {
            let Some(scope) = Scope::of_stream(&key[1..]) else {
                continue;
            };
            let _stream = self.local.stripes().of(&key[1..]).lock().await;
            let Some(from) = lock(&self.delivered).get(&key).cloned() else {
                continue;
            };
            match self
                .store
                .read(&key, from.offset, retention.size, retention)
                .await
            {
                Ok(page) if page.continues(from.offset, &from.epoch) => {
                    for message in &page.messages {
                        if let Err(e) = self.local.deliver(message).await {
                            tracing::warn!(stream = key, error = %e, "catch-up delivery failed");
                        }
                    }
                    lock(&self.delivered).insert(key, page.position);
                }
                _ => {
                    tracing::warn!(
                        stream = key,
                        "scope stream past lost: its connections asked to resume"
                    );
                    lock(&self.delivered).remove(&key);
                    self.local
                        .close_scope(&scope, CloseReason::STREAM_LOST)
                        .await;
                }
            }
        }
    }
}

fn channel_of(scope: &Scope) -> String {
    match scope {
        Scope::Topic(topic) => keys::topic_channel(topic),
        _ => keys::scopes_channel(),
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, publication: Arc<Publication>) -> Result<usize, EngineError> {
        let channel = channel_of(&publication.scope);
        self.shared
            .store
            .publish(channel, codec::message(&publication))
            .await?;
        Ok(0)
    }

    /// Redis orders the stream itself (one script appends and publishes), so nothing waits
    /// under the stripe: concurrent publications share the connection's pipeline.
    async fn publish_to_stream(
        &self,
        _history: &dyn History,
        publication: Publication,
        retention: Retention,
    ) -> Result<QueuedAppend, EngineError> {
        let Scope::Topic(topic) = &publication.scope else {
            return Err(EngineError::new("a stream publication needs a topic"));
        };
        let (topic, channel) = (topic.clone(), keys::topic_channel(topic));
        let shared = self.shared.clone();
        Ok(Box::pin(async move {
            let at = shared
                .store
                .append_to_stream(&topic, &publication, retention, &channel)
                .await?;
            Ok((at, 0))
        }))
    }

    /// One script appends to the stream and publishes to every node (`herald:scopes`), so
    /// the stream's order is Redis's and nothing waits under a stripe here.
    async fn publish_to_scope_stream(
        &self,
        _streams: &dyn History,
        publication: Publication,
        retention: Retention,
    ) -> Result<usize, EngineError> {
        let key = crate::engine::scope_stream_key(&publication.scope)
            .ok_or_else(|| EngineError::new("a topic publication has no scope stream"))?;
        let channel = channel_of(&publication.scope);
        self.shared
            .store
            .append_to_stream(&key, &publication, retention, &channel)
            .await?;
        Ok(0)
    }

    async fn publish_to_user(
        &self,
        _inbox: &dyn Inbox,
        limits: InboxLimits,
        stream: Option<(&dyn History, Retention)>,
        publication: Publication,
    ) -> Result<Option<usize>, EngineError> {
        let Scope::User(user) = &publication.scope else {
            return Err(EngineError::new("a user publication needs a user"));
        };
        let retention = stream.map(|(_, retention)| retention);
        let live = self
            .shared
            .store
            .send_to_user(&publication, user, limits, retention)
            .await?;
        Ok(live.then_some(0))
    }

    async fn attach_user(
        &self,
        _inbox: &dyn Inbox,
        limits: InboxLimits,
        user: &str,
    ) -> Result<(Vec<Publication>, Option<bool>), EngineError> {
        let (first, pending) = self.shared.store.attach(user, limits).await?;
        Ok((pending, Some(first)))
    }

    /// Waits (at most the Redis timeout) for every node's count.
    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError> {
        self.ask_every_node("disconnect", scope).await
    }

    async fn detach_user(&self, user: &str) -> Option<bool> {
        match self.shared.store.detach(user).await {
            Ok(last) => Some(last),
            Err(e) => {
                tracing::warn!(user, error = %e, "redis: could not mark a user offline");
                None
            }
        }
    }

    async fn watch(&self, topic: &str) -> Result<(), EngineError> {
        let shared = &self.shared;
        let mut subscriptions = shared.subscriptions.lock().await;
        let count = subscriptions.interest.get(topic).copied().unwrap_or(0);
        if count == 0 {
            let Some(sink) = subscriptions.sink.as_mut() else {
                return Err(EngineError::new("redis: not connected"));
            };
            shared
                .store
                .run(sink.subscribe(keys::topic_channel(topic)))
                .await?;
        }
        subscriptions.interest.insert(topic.to_string(), count + 1);
        Ok(())
    }

    async fn unwatch(&self, topic: &str) {
        let shared = &self.shared;
        let mut subscriptions = shared.subscriptions.lock().await;
        let Some(count) = subscriptions.interest.get_mut(topic) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        subscriptions.interest.remove(topic);
        lock(&shared.delivered).remove(topic);
        if let Some(sink) = subscriptions.sink.as_mut() {
            // A failed unsubscribe only costs unwanted messages until the next reconnection.
            let _ = shared
                .store
                .run(sink.unsubscribe(keys::topic_channel(topic)))
                .await;
        }
    }

    fn subscribed_at(&self, topic: &str, position: &StreamPosition) {
        lock(&self.shared.delivered)
            .entry(topic.to_string())
            .or_insert_with(|| position.clone());
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn delivers_here(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    async fn check(&self) -> Result<(), EngineError> {
        if !self.shared.connected.load(Ordering::SeqCst) {
            return Err(EngineError::new("redis: pub/sub link down"));
        }
        self.shared.store.ping().await
    }
}
