//! In-process engines: the default broker, and a membership store for tests and embedding.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use std::collections::VecDeque;
use std::time::Instant;

use super::{
    AfterAppend, Broker, Delivery, EngineError, History, HistoryPage, Inbox, InboxLimits,
    Membership, Presence, PresenceEntry, QueuedAppend, Retention, StreamPosition, ToUser,
};
use crate::publication::Publication;

/// A broker for one node: publishing is delivering locally.
pub struct MemoryBroker {
    local: Arc<dyn Delivery>,
}

impl MemoryBroker {
    /// A broker that delivers through `local`.
    pub fn new(local: Arc<dyn Delivery>) -> Self {
        Self { local }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publication: Arc<Publication>) -> Result<usize, EngineError> {
        self.local.deliver(&publication).await
    }

    async fn publish_to_stream(
        &self,
        history: &dyn History,
        publication: Publication,
        retention: Retention,
    ) -> Result<QueuedAppend, EngineError> {
        let crate::publication::Scope::Topic(topic) = &publication.scope else {
            return Err(EngineError::new("a stream publication needs a topic"));
        };
        let topic = topic.clone();
        let local = self.local.clone();
        let deliver: AfterAppend = Box::new(move |mut publication, at: &StreamPosition| {
            publication.offset = Some(at.offset);
            publication.epoch = Some(at.epoch.clone());
            local.deliver_to_topic(&publication)
        });
        history
            .queue_append(&topic, publication, retention, deliver)
            .await
            .inspect_err(|_| crate::metrics::engine_error("history"))
    }

    async fn publish_to_user(
        &self,
        inbox: &dyn Inbox,
        limits: InboxLimits,
        stream: Option<(&dyn History, Retention)>,
        mut publication: Publication,
    ) -> Result<ToUser, EngineError> {
        let crate::publication::Scope::User(user) = &publication.scope else {
            return Err(EngineError::new("a user publication needs a user"));
        };
        let user = user.clone();
        let user = &user;
        if self.local.has_user(user) {
            if let Some((streams, retention)) = stream {
                crate::engine::append_to_scope_stream(streams, &mut publication, retention).await?;
            }
            let reached = self.local.deliver(&publication).await?;
            // Delivered or kept, never neither: when every live push failed (the user's
            // connections are closing or slow), the inbox keeps it.
            if reached > 0 {
                return Ok(ToUser::Live(reached));
            }
        }
        // What a slow connection of the user was given first goes first.
        let mut stores = Vec::new();
        let failed = |_: &EngineError| crate::metrics::engine_error("inbox");
        for earlier in self.local.undelivered_of(user) {
            stores.push(
                inbox
                    .queue_store(user, &earlier, limits)
                    .await
                    .inspect_err(failed)?,
            );
        }
        stores.push(
            inbox
                .queue_store(user, &publication, limits)
                .await
                .inspect_err(failed)?,
        );
        Ok(ToUser::Kept(Box::pin(async move {
            for stored in stores {
                stored.await.inspect_err(failed)?;
            }
            Ok(())
        })))
    }

    async fn attach_user(
        &self,
        inbox: &dyn Inbox,
        limits: InboxLimits,
        user: &str,
    ) -> Result<(Vec<Publication>, Option<bool>), EngineError> {
        Ok((inbox.pending(user, limits).await?, None))
    }

    async fn detach_user(&self, _user: &str) -> Option<bool> {
        None
    }

    async fn disconnect(&self, scope: &crate::publication::Scope) -> Result<usize, EngineError> {
        self.local.disconnect(scope).await
    }

    async fn watch(&self, _topic: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn unwatch(&self, _topic: &str) {}
}

/// Project membership held in memory; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryMembership {
    index: Mutex<MembershipIndex>,
}

/// Members by project, and the same pairs by user.
#[derive(Debug, Default)]
struct MembershipIndex {
    by_project: HashMap<String, BTreeSet<String>>,
    by_user: HashMap<String, BTreeSet<String>>,
}

/// Inserts `value` under `key`; true if it was not there.
fn insert_pair(index: &mut HashMap<String, BTreeSet<String>>, key: &str, value: &str) -> bool {
    index
        .entry(key.to_string())
        .or_default()
        .insert(value.to_string())
}

/// Removes `value` from under `key` (and the key once empty); true if it was there.
fn remove_pair(index: &mut HashMap<String, BTreeSet<String>>, key: &str, value: &str) -> bool {
    let Some(values) = index.get_mut(key) else {
        return false;
    };
    let removed = values.remove(value);
    if values.is_empty() {
        index.remove(key);
    }
    removed
}

fn listed(index: &HashMap<String, BTreeSet<String>>, key: &str) -> Vec<String> {
    index
        .get(key)
        .map(|values| values.iter().cloned().collect())
        .unwrap_or_default()
}

impl MemoryMembership {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MembershipIndex) -> T) -> T {
        let mut guard = crate::sync::lock(&self.index);
        f(&mut guard)
    }
}

#[async_trait]
impl Membership for MemoryMembership {
    async fn add(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|ix| {
            insert_pair(&mut ix.by_user, user, project);
            insert_pair(&mut ix.by_project, project, user)
        }))
    }

    async fn remove(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|ix| {
            remove_pair(&mut ix.by_user, user, project);
            remove_pair(&mut ix.by_project, project, user)
        }))
    }

    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        Ok(self.with(|ix| listed(&ix.by_project, project)))
    }

    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|ix| ix.by_project.get(project).is_some_and(|m| m.contains(user))))
    }

    async fn projects_of(&self, user: &str) -> Result<Vec<String>, EngineError> {
        Ok(self.with(|ix| listed(&ix.by_user, user)))
    }
}

/// A user's connections on one topic.
#[derive(Debug)]
struct OnTopic {
    connections: HashSet<String>,
    joined_at: SystemTime,
}

/// Presence for one node, in memory: topic, then user, then that user's connections.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    topics: Mutex<HashMap<String, BTreeMap<String, OnTopic>>>,
}

impl MemoryPresence {
    /// No one on any topic.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<String, OnTopic>>) -> T) -> T {
        let mut guard = crate::sync::lock(&self.topics);
        f(&mut guard)
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError> {
        Ok(self.with(|topics| {
            let users = topics.entry(topic.to_string()).or_default();
            let entry = users.entry(user.to_string()).or_insert_with(|| OnTopic {
                connections: HashSet::new(),
                joined_at: SystemTime::now(),
            });
            entry.connections.insert(client_id.to_string()) && entry.connections.len() == 1
        }))
    }

    async fn leave(&self, topic: &str, user: &str, client_id: &str) -> Result<bool, EngineError> {
        Ok(self.with(|topics| {
            let Some(users) = topics.get_mut(topic) else {
                return false;
            };
            let Some(entry) = users.get_mut(user) else {
                return false;
            };
            if !entry.connections.remove(client_id) || !entry.connections.is_empty() {
                return false;
            }
            users.remove(user);
            if users.is_empty() {
                topics.remove(topic);
            }
            true
        }))
    }

    async fn list(&self, topic: &str) -> Result<Vec<PresenceEntry>, EngineError> {
        Ok(self.with(|topics| {
            topics
                .get(topic)
                .map(|users| {
                    users
                        .iter()
                        .map(|(user, on)| PresenceEntry {
                            user_id: user.clone(),
                            connections: on.connections.len(),
                            joined_at: on.joined_at,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

/// One topic's stream in memory.
#[derive(Debug)]
struct Stream {
    epoch: String,
    top: u64,
    kept: VecDeque<(Publication, Instant)>,
}

impl Stream {
    fn trim(&mut self, retention: Retention) {
        while self.kept.len() > retention.size
            || self
                .kept
                .front()
                .is_some_and(|(_, at)| at.elapsed() > retention.ttl)
        {
            self.kept.pop_front();
        }
    }
}

/// Topic streams in memory: lost on restart, so each stream's epoch is new in each process.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    streams: Mutex<HashMap<String, Stream>>,
    /// One epoch for every stream (scope streams): a stream never written reads as empty in
    /// it without being kept, so a connect costs no memory for a stream nobody writes.
    epoch: Option<String>,
}

impl MemoryHistory {
    /// No streams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams that share one epoch, new in each process: the scope streams of one node.
    pub fn with_one_epoch() -> Self {
        Self {
            streams: Mutex::default(),
            epoch: Some(uuid::Uuid::now_v7().simple().to_string()),
        }
    }

    fn with<T>(&self, topic: &str, f: impl FnOnce(&mut Stream) -> T) -> T {
        let mut streams = crate::sync::lock(&self.streams);
        let stream = streams.entry(topic.to_string()).or_insert_with(|| Stream {
            epoch: self
                .epoch
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string()),
            top: 0,
            kept: VecDeque::new(),
        });
        f(stream)
    }

    /// Drops what every stream keeps beyond `retention`, whether or not it is written or
    /// read again (a quiet stream would otherwise hold its last messages for good). A stream
    /// keeps its position, so its offsets never start over within the epoch.
    pub fn sweep(&self, retention: Retention) {
        for stream in crate::sync::lock(&self.streams).values_mut() {
            stream.trim(retention);
        }
    }

    /// The page of a stream never written, when streams share an epoch.
    fn unwritten(&self, topic: &str) -> Option<HistoryPage> {
        let epoch = self.epoch.as_ref()?;
        if crate::sync::lock(&self.streams).contains_key(topic) {
            return None;
        }
        Some(HistoryPage {
            position: StreamPosition {
                offset: 0,
                epoch: epoch.clone(),
            },
            first_kept: 1,
            messages: Vec::new(),
        })
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        topic: &str,
        publication: &Publication,
        retention: Retention,
    ) -> Result<StreamPosition, EngineError> {
        Ok(self.with(topic, |stream| {
            stream.top += 1;
            let mut stored = publication.clone();
            stored.offset = Some(stream.top);
            stored.epoch = Some(stream.epoch.clone());
            stream.kept.push_back((stored, Instant::now()));
            stream.trim(retention);
            StreamPosition {
                offset: stream.top,
                epoch: stream.epoch.clone(),
            }
        }))
    }

    async fn read(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        if let Some(page) = self.unwritten(topic) {
            return Ok(page);
        }
        Ok(self.with(topic, |stream| {
            stream.trim(retention);
            let first_kept = stream
                .kept
                .front()
                .and_then(|(p, _)| p.offset)
                .unwrap_or(stream.top + 1);
            HistoryPage {
                position: StreamPosition {
                    offset: stream.top,
                    epoch: stream.epoch.clone(),
                },
                first_kept,
                // Kept offsets are consecutive from `first_kept`: skip straight to `after`.
                messages: stream
                    .kept
                    .iter()
                    .skip(after.saturating_add(1).saturating_sub(first_kept) as usize)
                    .take(limit)
                    .map(|(p, _)| p.clone())
                    .collect(),
            }
        }))
    }
}

/// Offline inboxes in memory: lost on restart.
#[derive(Debug, Default)]
pub struct MemoryInbox {
    users: Mutex<HashMap<String, VecDeque<(Publication, Instant)>>>,
}

impl MemoryInbox {
    /// No inboxes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, VecDeque<(Publication, Instant)>>) -> T,
    ) -> T {
        let mut users = crate::sync::lock(&self.users);
        f(&mut users)
    }
}

fn expire(queue: &mut VecDeque<(Publication, Instant)>, limits: InboxLimits) {
    while queue.len() > limits.max_messages
        || queue
            .front()
            .is_some_and(|(_, at)| at.elapsed() > limits.ttl)
    {
        queue.pop_front();
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn store(
        &self,
        user: &str,
        publication: &Publication,
        limits: InboxLimits,
    ) -> Result<(), EngineError> {
        self.with(|users| {
            let queue = users.entry(user.to_string()).or_default();
            queue.push_back((publication.clone(), Instant::now()));
            expire(queue, limits);
        });
        Ok(())
    }

    async fn pending(
        &self,
        user: &str,
        limits: InboxLimits,
    ) -> Result<Vec<Publication>, EngineError> {
        Ok(self.with(|users| {
            let Some(queue) = users.get_mut(user) else {
                return Vec::new();
            };
            expire(queue, limits);
            queue.iter().map(|(p, _)| p.clone()).collect()
        }))
    }

    async fn ack(&self, user: &str, ids: &[String]) -> Result<usize, EngineError> {
        Ok(self.with(|users| {
            let Some(queue) = users.get_mut(user) else {
                return 0;
            };
            let before = queue.len();
            queue.retain(|(p, _)| !ids.contains(&p.id));
            let removed = before - queue.len();
            if queue.is_empty() {
                users.remove(user);
            }
            removed
        }))
    }

    async fn totals(&self) -> Result<super::InboxTotals, EngineError> {
        Ok(self.with(|users| super::InboxTotals {
            messages: users.values().map(|q| q.len() as u64).sum(),
            users: users.values().filter(|q| !q.is_empty()).count() as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn presence_counts_first_and_last_connection_per_user() {
        let p = MemoryPresence::new();
        assert!(p.join("t", "alice", "c1").await.unwrap());
        assert!(!p.join("t", "alice", "c2").await.unwrap(), "a second tab");
        assert!(
            !p.join("t", "alice", "c2").await.unwrap(),
            "the same tab twice"
        );
        assert!(p.join("t", "bob", "c3").await.unwrap());
        let list = p.list("t").await.unwrap();
        let counts: Vec<_> = list
            .iter()
            .map(|e| (e.user_id.as_str(), e.connections))
            .collect();
        assert_eq!(counts, [("alice", 2), ("bob", 1)]);
        assert!(!p.leave("t", "alice", "c1").await.unwrap());
        assert!(
            !p.leave("t", "alice", "c9").await.unwrap(),
            "an unknown connection"
        );
        assert!(p.leave("t", "alice", "c2").await.unwrap(), "the last tab");
        assert!(p.leave("t", "bob", "c3").await.unwrap());
        assert!(p.list("t").await.unwrap().is_empty());
        assert!(
            p.topics.lock().unwrap().is_empty(),
            "no empty entries left behind"
        );
    }
}
