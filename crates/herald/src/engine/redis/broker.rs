//! [`RedisBroker`]: publications between nodes over Redis Pub/Sub, routed by interest.
//!
//! Channels (the `keys` module names them): a topic's (a node subscribes while it has
//! subscribers to the topic), a user's (while it holds a connection of the user), the scopes'
//! (`all`, `role`, `project`: every node), the control channel (disconnects, and re-checks of
//! a user's subscriptions after a membership removal: every node) and each node's own (the
//! answers to its control requests). Every publication is one Redis message per interested
//! node, and every node, the publishing one included, delivers what it receives in order.
//!
//! On one Redis the link is one Pub/Sub connection, which reconnects with backoff and
//! resubscribes. On a Redis Cluster it is sharded Pub/Sub (`SSUBSCRIBE`): each channel travels
//! through the shard of its slot only, over a connection per shard that the cluster client
//! reconnects and resubscribes after a failover; a channel whose slot moved (resharding) is
//! subscribed again at its new shard. After a loss, each topic with history is caught up from
//! the last offset the node delivered; where the past is gone (Redis restarted empty, or
//! trimmed), its subscribers are closed with 1012 so that they resubscribe with `since` and
//! learn `recovered: false`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::conn::{cluster_builder, Deployment};
use super::{codec, keys, RedisStore};
use crate::config::Config;
use crate::engine::{
    lock, Broker, Delivery, EngineError, History, Inbox, InboxLimits, QueuedAppend, Retention,
    StreamPosition, ToUser,
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

/// What this node subscribes to, and how.
#[derive(Default)]
struct Subscriptions {
    /// The link's subscribing end; `None` while it is down.
    sink: Option<Link>,
    /// The topics this node has subscribers of, with how many local watchers each.
    interest: HashMap<String, usize>,
    /// The users this node holds, with how many connections each.
    users: HashMap<String, usize>,
}

impl Subscriptions {
    /// Uncounts one holder of `key` in `counts`; true when it was the last (the key goes).
    fn release(counts: &mut HashMap<String, usize>, key: &str) -> bool {
        let Some(count) = counts.get_mut(key) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        counts.remove(key);
        true
    }

    /// Unsubscribes from `channel` while the link is up. A failure only costs messages this
    /// node does not want until the next reconnection.
    async fn unsubscribe(&mut self, store: &RedisStore, channel: String) {
        if let Some(sink) = self.sink.as_mut() {
            let _ = store.run(sink.unsubscribe(channel)).await;
        }
    }

    /// Every channel this node wants: its fixed ones, its topics' and its users'.
    fn channels(&self, node: &str) -> Vec<String> {
        let mut channels = vec![
            keys::scopes_channel(),
            keys::control_channel(),
            keys::node_channel(node),
        ];
        channels.extend(self.interest.keys().map(|t| keys::topic_channel(t)));
        channels.extend(self.users.keys().map(|u| keys::user_channel(u)));
        channels
    }
}

/// The subscribing end of the Pub/Sub link.
enum Link {
    /// One Redis: classic Pub/Sub on one connection.
    Single(PubSubSink),
    /// A Redis Cluster: sharded Pub/Sub, a connection per shard.
    Cluster(ClusterConnection),
}

impl Link {
    async fn subscribe(&mut self, channels: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Link::Single(sink) => sink.subscribe(channels).await,
            // One channel per call: the cluster client routes a call by its first channel.
            Link::Cluster(conn) => {
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Link::Single(sink) => sink.unsubscribe(channel).await,
            Link::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
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
    if let Deployment::Cluster(urls) = shared.store.deployment().clone() {
        return listen_sharded(shared, urls).await;
    }
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
                    let channel = message.get_channel_name().to_string();
                    shared
                        .handle(&channel, message.get_payload_bytes(), false)
                        .await;
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

/// The link on a Redis Cluster: one cluster connection (RESP3) whose pushes carry every
/// shard's messages. A lost shard connection (a `Disconnection` push) or a channel a shard
/// gave up (its slot moved: `SUNSUBSCRIBE`) starts a catch-up: once pushes are quiet for a
/// moment and every primary answers, every wanted channel is subscribed again and the streams
/// fill the gap; stream messages that arrive meanwhile are left to that catch-up.
async fn listen_sharded(shared: Arc<Shared>, urls: Vec<String>) {
    let timeout = shared.store.timeout();
    let (tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let conn = loop {
        let client = cluster_builder(&urls, timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx.clone())
            .build();
        let connected = match client {
            Ok(client) => shared.store.run(client.get_async_connection()).await,
            Err(e) => Err(EngineError(format!("redis_cluster: {e}"))),
        };
        match connected {
            Ok(conn) => break conn,
            Err(e) => tracing::warn!(error = %e, "redis sharded pub/sub: cannot connect"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    loop {
        match shared.connect_sharded(conn.clone()).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "redis sharded pub/sub: cannot subscribe"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(
        node = shared.store.node_id(),
        "redis sharded pub/sub connected"
    );
    shared.generation.send_modify(|g| *g += 1);
    // Set by a lost shard connection or a moved channel: catch up once subscriptions settle.
    let mut lost = false;
    let settle = Duration::from_millis(200);
    loop {
        let push = match lost {
            true => match tokio::time::timeout(settle, pushes.recv()).await {
                Ok(push) => push,
                Err(_) => {
                    // Quiet a moment: a request to every primary drives the client's repair
                    // of lost shard connections; once every primary answers, every wanted
                    // channel is subscribed again, one per command (the client's own
                    // resubscription groups a shard's channels into one command, which
                    // Redis refuses across slots), and then the streams fill the gap.
                    let mut ping = conn.clone();
                    let answered = shared
                        .store
                        .run(
                            async move { redis::cmd("PING").query_async::<Value>(&mut ping).await },
                        )
                        .await;
                    if answered.is_ok() && shared.subscribe_again().await.is_ok() {
                        tokio::time::sleep(settle).await;
                        shared.catch_up().await;
                        shared.connected.store(true, Ordering::SeqCst);
                        shared.generation.send_modify(|g| *g += 1);
                        lost = false;
                    }
                    continue;
                }
            },
            false => pushes.recv().await,
        };
        let Some(push) = push else {
            return;
        };
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let [channel, payload, ..] = push.data.as_slice() {
                    if let (Some(channel), Some(payload)) =
                        (super::as_string(channel), super::as_bytes(payload))
                    {
                        shared.handle(&channel, payload, lost).await;
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis sharded pub/sub: a shard's connection was lost");
                shared.connected.store(false, Ordering::SeqCst);
                lost = true;
            }
            PushKind::SUnsubscribe => {
                let Some(channel) = push.data.first().and_then(super::as_string) else {
                    continue;
                };
                if shared.resubscribe_if_wanted(channel).await {
                    lost = true;
                }
            }
            _ => {}
        }
    }
}

impl Shared {
    async fn connect(&self) -> Result<PubSubStream, EngineError> {
        let store = &self.store;
        let super::conn::Client::Single(client) = store.client() else {
            return Err(EngineError::new("redis: not one Redis"));
        };
        let pubsub = store.run(client.get_async_pubsub()).await?;
        let (sink, stream) = pubsub.split();
        let mut link = Link::Single(sink);
        let mut subscriptions = self.subscriptions.lock().await;
        let channels = subscriptions.channels(store.node_id());
        store.run(link.subscribe(channels)).await?;
        subscriptions.sink = Some(link);
        self.connected.store(true, Ordering::SeqCst);
        Ok(stream)
    }

    /// Subscribes the cluster link to every wanted channel; the cluster client keeps them
    /// from then on.
    async fn connect_sharded(&self, conn: ClusterConnection) -> Result<(), EngineError> {
        let mut link = Link::Cluster(conn);
        let mut subscriptions = self.subscriptions.lock().await;
        let channels = subscriptions.channels(self.store.node_id());
        self.store.run(link.subscribe(channels)).await?;
        subscriptions.sink = Some(link);
        self.connected.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Subscribes every wanted channel again (after a shard's connection was lost).
    async fn subscribe_again(&self) -> Result<(), EngineError> {
        let mut subscriptions = self.subscriptions.lock().await;
        let channels = subscriptions.channels(self.store.node_id());
        let Some(link) = subscriptions.sink.as_mut() else {
            return Err(EngineError::new("redis: not connected"));
        };
        self.store.run(link.subscribe(channels)).await
    }

    /// A shard gave `channel` up (its slot moved, or this node unsubscribed): subscribed again
    /// if this node still wants it; true if so.
    async fn resubscribe_if_wanted(&self, channel: String) -> bool {
        let mut subscriptions = self.subscriptions.lock().await;
        if !subscriptions
            .channels(self.store.node_id())
            .contains(&channel)
        {
            return false;
        }
        tracing::info!(
            channel,
            "redis sharded pub/sub: a channel moved; subscribing again"
        );
        if let Some(link) = subscriptions.sink.as_mut() {
            if let Err(e) = self.store.run(link.subscribe(vec![channel])).await {
                tracing::warn!(error = %e, "redis sharded pub/sub: cannot subscribe again");
            }
        }
        true
    }

    /// Delivers what came on `channel`. While `catching_up` (a shard's connection was lost and
    /// the streams have not filled the gap yet), a stream message this node already follows
    /// is left to the catch-up: delivered now, it would move the node's position past the
    /// gap.
    async fn handle(&self, channel: &str, payload: &[u8], catching_up: bool) {
        if channel == keys::control_channel() {
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
        if catching_up && self.follows_stream_of(&publication) {
            return;
        }
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

    /// Whether `publication` belongs to a stream this node has a delivered position in.
    fn follows_stream_of(&self, publication: &Publication) -> bool {
        if publication.offset.is_none() {
            return false;
        }
        let key = match &publication.scope {
            Scope::Topic(topic) => Some(topic.clone()),
            scope => crate::engine::scope_stream_key(scope),
        };
        key.is_some_and(|key| lock(&self.delivered).contains_key(&key))
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
        let channel = keys::node_channel(&control.from);
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

    /// Counts a connection of `user` on this node; the first subscribes to the user's channel.
    /// The count is kept even when the link is down (it subscribes every wanted channel when
    /// it is back); meanwhile the user's publications go to the inbox, not lost.
    async fn hold_user(&self, user: &str) {
        let mut subscriptions = self.subscriptions.lock().await;
        let count = subscriptions.users.entry(user.to_string()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        if let Some(sink) = subscriptions.sink.as_mut() {
            let channel = keys::user_channel(user);
            if let Err(e) = self.store.run(sink.subscribe(vec![channel])).await {
                tracing::warn!(user, error = %e, "redis: cannot listen for a user's messages");
            }
        }
    }

    /// Uncounts a connection of `user`; the last unsubscribes from the user's channel.
    async fn release_user(&self, user: &str) {
        let mut subscriptions = self.subscriptions.lock().await;
        if Subscriptions::release(&mut subscriptions.users, user) {
            // Meanwhile a message for the user reaching this node is kept in the inbox again.
            subscriptions
                .unsubscribe(&self.store, keys::user_channel(user))
                .await;
        }
    }

    fn retention(&self, topic: &str) -> Option<Retention> {
        crate::topic::retention(&self.config, topic)
    }

    /// After the link came back: replays to each watched topic with history what this node
    /// missed, or, where that past is gone, asks its subscribers to resubscribe.
    /// Catches up, retrying while Redis errs (a failover in progress): only a past that Redis
    /// says is gone, or one still unreadable after a few seconds, closes subscribers.
    async fn catch_up(&self) {
        for _ in 0..20 {
            if self.catch_up_once(false).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.catch_up_once(true).await;
    }

    /// One pass over the watched streams; false when a read failed and `give_up` is not set
    /// (those streams are left for the next pass).
    async fn catch_up_once(&self, give_up: bool) -> bool {
        let mut complete = true;
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
                Err(e) if !give_up => {
                    tracing::warn!(topic, error = %e, "catch-up read failed; retrying");
                    complete = false;
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
        complete && self.catch_up_scope_streams(give_up).await
    }

    /// The same for the scope streams this node delivered from: what it missed is delivered
    /// now (the connections' floors skip what a resume already gave them); where that past
    /// is gone, the connections in the scope are closed with 1012 so that they reconnect and
    /// resume (and learn `recovered: false`).
    async fn catch_up_scope_streams(&self, give_up: bool) -> bool {
        let mut complete = true;
        let recovery = &self.config.recovery;
        if recovery.window.is_zero() {
            return true;
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
                Err(e) if !give_up => {
                    tracing::warn!(stream = key, error = %e, "catch-up read failed; retrying");
                    complete = false;
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
        complete
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

    /// One script appends to the stream and publishes to every node (the scopes channel), so
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
    ) -> Result<ToUser, EngineError> {
        let Scope::User(user) = &publication.scope else {
            return Err(EngineError::new("a user publication needs a user"));
        };
        let retention = stream.map(|(_, retention)| retention);
        let live = self
            .shared
            .store
            .send_to_user(&publication, user, limits, retention)
            .await?;
        // The script kept it in the inbox (durably, as Redis is) or sent it to the nodes.
        Ok(match live {
            true => ToUser::Live(0),
            false => ToUser::Kept(crate::engine::stored()),
        })
    }

    /// The node listens on the user's channel before it marks the user online: a user
    /// publication either finds the user offline (and the inbox read here has it) or reaches
    /// this node.
    async fn attach_user(
        &self,
        _inbox: &dyn Inbox,
        limits: InboxLimits,
        user: &str,
    ) -> Result<(Vec<Publication>, Option<bool>), EngineError> {
        self.shared.hold_user(user).await;
        let (first, pending) = self.shared.store.attach(user, limits).await?;
        Ok((pending, Some(first)))
    }

    /// Waits (at most the Redis timeout) for every node's count.
    async fn disconnect(&self, scope: &Scope) -> Result<usize, EngineError> {
        self.ask_every_node("disconnect", scope).await
    }

    /// The node stops listening on the user's channel (at its last connection of the user)
    /// before it takes its online mark away: a user publication meanwhile goes to the user's
    /// other nodes or to the inbox, not to a node that would only keep it again.
    async fn detach_user(&self, user: &str) -> Option<bool> {
        self.shared.release_user(user).await;
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
                .run(sink.subscribe(vec![keys::topic_channel(topic)]))
                .await?;
        }
        subscriptions.interest.insert(topic.to_string(), count + 1);
        Ok(())
    }

    async fn unwatch(&self, topic: &str) {
        let shared = &self.shared;
        let mut subscriptions = shared.subscriptions.lock().await;
        if !Subscriptions::release(&mut subscriptions.interest, topic) {
            return;
        }
        lock(&shared.delivered).remove(topic);
        subscriptions
            .unsubscribe(&shared.store, keys::topic_channel(topic))
            .await;
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
