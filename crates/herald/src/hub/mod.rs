//! The live registry of this node's connections and the fan-out of publications to them.
//!
//! Architecture invariant: the hub never awaits. Its indexes sit behind one `RwLock` that
//! publications take for reading (many at once); subscriptions and (dis)connections take it for
//! writing, briefly. A publication's frame is encoded once, before the lock is taken, and each
//! recipient gets a clone of it (a reference count); pushing never waits (see [`outbox`]).

pub mod flusher;
pub mod outbox;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use crate::protocol::CloseReason;
pub(crate) use outbox::{Attention, Written};
pub use outbox::{ConnHandle, ConnId};

use crate::auth::Principal;
use crate::protocol::{Encoding, Frame};
use crate::publication::{Publication, Scope};

type Members = HashMap<ConnId, Arc<ConnHandle>>;

#[derive(Debug, Default)]
struct Indexes {
    conns: Members,
    by_user: HashMap<Arc<str>, Members>,
    by_role: HashMap<Arc<str>, Members>,
    /// Connections by the projects of their token's `projects` claim.
    by_claimed_project: HashMap<Arc<str>, Members>,
    by_topic: HashMap<Arc<str>, Members>,
    /// Per topic, the stream offset each recovering subscriber already has (cluster mode:
    /// a publication can arrive after the replay that included it).
    floors: HashMap<Arc<str>, HashMap<ConnId, u64>>,
    /// The same per scope stream (`all`, `role:<name>`, ...), for connections that attached
    /// in cluster mode, and the streams each such connection has one in (dropped with it).
    stream_floors: HashMap<Arc<str>, HashMap<ConnId, u64>>,
    floored: HashMap<ConnId, Vec<Arc<str>>>,
}

impl Indexes {
    fn insert(index: &mut HashMap<Arc<str>, Members>, key: &str, conn: &Arc<ConnHandle>) {
        index
            .entry(Arc::from(key))
            .or_default()
            .insert(conn.id, conn.clone());
    }

    fn remove(index: &mut HashMap<Arc<str>, Members>, key: &str, id: ConnId) -> bool {
        let Some(members) = index.get_mut(key) else {
            return false;
        };
        let removed = members.remove(&id).is_some();
        if members.is_empty() {
            index.remove(key);
        }
        removed
    }

    fn index_principal(&mut self, conn: &Arc<ConnHandle>, who: &Principal) {
        Self::insert(&mut self.by_user, &who.user_id, conn);
        Self::insert(&mut self.by_role, &who.role, conn);
        for project in who.projects.iter() {
            Self::insert(&mut self.by_claimed_project, project, conn);
        }
    }

    fn drop_floor(&mut self, topic: &str, id: ConnId) {
        if let Some(floors) = self.floors.get_mut(topic) {
            floors.remove(&id);
            if floors.is_empty() {
                self.floors.remove(topic);
            }
        }
    }

    fn drop_stream_floors(&mut self, id: ConnId) {
        for stream in self.floored.remove(&id).unwrap_or_default() {
            if let Some(floors) = self.stream_floors.get_mut(&stream) {
                floors.remove(&id);
                if floors.is_empty() {
                    self.stream_floors.remove(&stream);
                }
            }
        }
    }

    fn unindex_principal(&mut self, id: ConnId, who: &Principal) {
        Self::remove(&mut self.by_user, &who.user_id, id);
        Self::remove(&mut self.by_role, &who.role, id);
        for project in who.projects.iter() {
            Self::remove(&mut self.by_claimed_project, project, id);
        }
    }
}

/// What a subscription changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Joined {
    /// The connection was not subscribed before.
    pub fresh: bool,
    /// It is the topic's first subscriber on this node.
    pub first: bool,
}

/// What an unsubscription changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Left {
    /// The connection was subscribed.
    pub was: bool,
    /// It was the topic's last subscriber on this node.
    pub last: bool,
}

/// What a connection leaving the hub changed.
#[derive(Debug, Default)]
pub struct Detached {
    /// The topics it was on.
    pub topics: Vec<Arc<str>>,
    /// Those it was the last subscriber of on this node.
    pub vacated: Vec<Arc<str>>,
    /// It was its user's last connection on this node.
    pub last_of_user: bool,
}

/// Counters the hub keeps as it works.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Connections closed because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Frames queued to clients: deliveries and replies.
    pub sent: AtomicU64,
    /// Frames received from clients.
    pub received: AtomicU64,
    /// Connections registered since the node started.
    pub opened: AtomicU64,
    /// Publications fanned out on this node.
    pub publications: AtomicU64,
    /// `error` frames sent to clients.
    pub errors: AtomicU64,
    /// Connections that were sent at least one `error`.
    pub connections_with_errors: AtomicU64,
}

/// The registry and fan-out of this node's connections.
#[derive(Debug, Default)]
pub struct Hub {
    indexes: RwLock<Indexes>,
    next_id: AtomicU64,
    pub counters: HubCounters,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh connection id.
    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn read(&self) -> RwLockReadGuard<'_, Indexes> {
        // A panic elsewhere cannot leave the indexes half-updated (every update is a few map
        // operations that do not panic), so a poisoned lock is still consistent.
        self.indexes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Indexes> {
        self.indexes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an authenticated connection to the indexes; true when it is its user's first
    /// connection here.
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn attach(&self, conn: &Arc<ConnHandle>) -> bool {
        self.attach_after(conn, Vec::new())
    }

    /// [`attach`](Self::attach), skipping publications of each scope stream in `floors` whose
    /// offset is at most the one given (the connection got them by replay, or its welcome's
    /// position is past them).
    pub fn attach_after(&self, conn: &Arc<ConnHandle>, floors: Vec<(String, u64)>) -> bool {
        let who = conn.principal();
        let mut ix = self.write();
        ix.conns.insert(conn.id, conn.clone());
        let first = !ix.by_user.contains_key(&*who.user_id);
        ix.index_principal(conn, &who);
        if !floors.is_empty() {
            let mut streams = Vec::with_capacity(floors.len());
            for (stream, floor) in floors {
                let stream: Arc<str> = Arc::from(stream);
                ix.stream_floors
                    .entry(stream.clone())
                    .or_default()
                    .insert(conn.id, floor);
                streams.push(stream);
            }
            ix.floored.insert(conn.id, streams);
        }
        first
    }

    /// Removes a connection and all its subscriptions: the topics it was on, which of them
    /// it was the last subscriber of here, and whether it was its user's last connection.
    pub fn detach(&self, conn: &ConnHandle) -> Detached {
        let who = conn.principal();
        let mut ix = self.write();
        ix.conns.remove(&conn.id);
        ix.unindex_principal(conn.id, &who);
        ix.drop_stream_floors(conn.id);
        let last_of_user = !ix.by_user.contains_key(&*who.user_id);
        let topics: Vec<Arc<str>> = conn
            .topics
            .lock()
            .map(|mut t| t.drain().collect())
            .unwrap_or_default();
        let mut vacated = Vec::new();
        for topic in &topics {
            Indexes::remove(&mut ix.by_topic, topic, conn.id);
            ix.drop_floor(topic, conn.id);
            if !ix.by_topic.contains_key(&**topic) {
                vacated.push(topic.clone());
            }
        }
        Detached {
            topics,
            vacated,
            last_of_user,
        }
    }

    /// Replaces a live connection's principal (after a token refresh) and re-indexes it.
    pub fn update_principal(&self, conn: &Arc<ConnHandle>, principal: Principal) {
        let old = conn.principal();
        let mut ix = self.write();
        ix.unindex_principal(conn.id, &old);
        conn.set_principal(principal.clone());
        if ix.conns.contains_key(&conn.id) {
            ix.index_principal(conn, &principal);
        }
    }

    /// Subscribes a connection to a topic; false if it already was (the benchmarks'
    /// shorthand).
    #[cfg(feature = "bench-internals")]
    pub fn subscribe(&self, conn: &Arc<ConnHandle>, topic: &str) -> bool {
        self.subscribe_after(conn, topic, None).fresh
    }

    /// Subscribes a connection to a topic, skipping publications whose stream offset is at
    /// most `floor` (it got them by replay).
    pub fn subscribe_after(
        &self,
        conn: &Arc<ConnHandle>,
        topic: &str,
        floor: Option<u64>,
    ) -> Joined {
        let mut ix = self.write();
        if !ix.conns.contains_key(&conn.id) {
            return Joined::default();
        }
        let fresh = conn
            .topics
            .lock()
            .map(|mut t| t.insert(Arc::from(topic)))
            .unwrap_or(false);
        let first = fresh && !ix.by_topic.contains_key(topic);
        if fresh {
            Indexes::insert(&mut ix.by_topic, topic, conn);
            if let Some(floor) = floor {
                ix.floors
                    .entry(Arc::from(topic))
                    .or_default()
                    .insert(conn.id, floor);
            }
        }
        Joined { fresh, first }
    }

    /// Unsubscribes a connection from a topic: whether it was subscribed, and whether it was
    /// the topic's last subscriber here.
    pub fn unsubscribe(&self, conn: &ConnHandle, topic: &str) -> Left {
        let mut ix = self.write();
        let was = conn
            .topics
            .lock()
            .map(|mut t| t.remove(topic))
            .unwrap_or(false);
        Indexes::remove(&mut ix.by_topic, topic, conn.id);
        ix.drop_floor(topic, conn.id);
        Left {
            was,
            last: was && !ix.by_topic.contains_key(topic),
        }
    }

    /// Queues a publication to every local connection in its scope, once each, and returns
    /// how many were reached. `project_members` are the user ids the membership store lists
    /// for a project scope (connections whose token claims the project are added here).
    pub fn deliver(&self, publication: &Publication, project_members: &[String]) -> usize {
        // Encoded once per encoding in use, whatever the number of recipients.
        let json = publication.frame();
        let mut msgpack: Option<Frame> = None;
        let mut reached = 0;
        let offset = publication.offset;
        // A user-scope message a connection never writes goes back to the user's inbox.
        let kept =
            matches!(publication.scope, Scope::User(_)).then(|| Arc::new(publication.clone()));
        // Where each recipient's wait starts: acceptance on this node, else this fan-out.
        let accepted = publication.accepted.unwrap_or_else(std::time::Instant::now);
        self.for_each_in(&publication.scope, project_members, offset, |conn| {
            let frame = match conn.encoding {
                Encoding::Json => json.clone(),
                Encoding::MsgPack => msgpack
                    .get_or_insert_with(|| Encoding::MsgPack.encode(&json))
                    .clone(),
            };
            let pushed = conn.push_published(frame, accepted, kept.as_ref());
            if pushed {
                reached += 1;
            }
        });
        self.counters
            .sent
            .fetch_add(reached as u64, Ordering::Relaxed);
        reached
    }

    /// The user-scope messages `user`'s connections here were given but will never write
    /// (they were closed as slow consumers), oldest first per connection: the caller keeps
    /// them in the inbox.
    pub fn undelivered_of(&self, user: &str) -> Vec<Arc<Publication>> {
        let mut undelivered = Vec::new();
        self.for_each_in(&Scope::User(user.to_string()), &[], None, |conn| {
            undelivered.extend(conn.take_undelivered())
        });
        undelivered
    }

    /// The live connections in a scope, once each (for listings, counts and disconnects).
    pub fn select(&self, scope: &Scope, project_members: &[String]) -> Vec<Arc<ConnHandle>> {
        let mut selected = Vec::new();
        self.for_each_in(scope, project_members, None, |conn| {
            selected.push(conn.clone())
        });
        selected
    }

    /// How many live connections are in a scope.
    pub fn count(&self, scope: &Scope, project_members: &[String]) -> usize {
        let mut count = 0;
        self.for_each_in(scope, project_members, None, |_| count += 1);
        count
    }

    /// Calls `f` once for each connection in `scope`, under the read lock: `f` must not block.
    /// With a stream `offset`, connections that already have it are skipped (their floor in
    /// the topic's or the scope's stream is at or past it).
    fn for_each_in(
        &self,
        scope: &Scope,
        project_members: &[String],
        offset: Option<u64>,
        mut f: impl FnMut(&Arc<ConnHandle>),
    ) {
        let ix = self.read();
        // With a stream offset, connections whose floor in that stream is at or past it
        // already have the publication. Looked up once per publication, not per recipient.
        let floors = offset.and_then(|offset| {
            let floors = match scope {
                Scope::Topic(topic) => ix.floors.get(topic.as_str()),
                _ if ix.stream_floors.is_empty() => None,
                _ => ix.stream_floors.get(scope.stream()?.as_str()),
            };
            floors.map(|floors| (floors, offset))
        });
        let mut f = |conn: &Arc<ConnHandle>| match floors {
            Some((floors, offset)) if floors.get(&conn.id).is_some_and(|f| *f >= offset) => {}
            _ => f(conn),
        };
        let in_index =
            |index: &HashMap<Arc<str>, Members>, key: &str, f: &mut dyn FnMut(&Arc<ConnHandle>)| {
                if let Some(members) = index.get(key) {
                    members.values().for_each(f);
                }
            };
        match scope {
            Scope::All => ix.conns.values().for_each(f),
            Scope::User(user) => in_index(&ix.by_user, user, &mut f),
            Scope::Role(role) => in_index(&ix.by_role, role, &mut f),
            Scope::Topic(topic) => in_index(&ix.by_topic, topic, &mut f),
            Scope::Project(project) => {
                // A member may be listed by the store and claim the project in its token:
                // de-duplicate by connection so each gets exactly one copy.
                let mut seen = HashSet::new();
                let by_store = project_members
                    .iter()
                    .filter_map(|user| ix.by_user.get(user.as_str()))
                    .flat_map(|m| m.values());
                let by_claim = ix
                    .by_claimed_project
                    .get(project.as_str())
                    .into_iter()
                    .flat_map(|m| m.values());
                by_store
                    .chain(by_claim)
                    .filter(|c| seen.insert(c.id))
                    .for_each(f);
            }
        }
    }

    /// Whether the user has a live connection on this node.
    pub fn has_user(&self, user: &str) -> bool {
        self.read().by_user.contains_key(user)
    }

    /// Counts of what is live on this node.
    /// The topics with a subscriber on this node.
    #[cfg(feature = "redis")]
    pub fn topics(&self) -> Vec<Arc<str>> {
        self.read().by_topic.keys().cloned().collect()
    }

    pub fn snapshot(&self) -> HubSnapshot {
        let ix = self.read();
        HubSnapshot {
            connections: ix.conns.len(),
            by_role: ix
                .by_role
                .iter()
                .map(|(role, m)| (role.to_string(), m.len()))
                .collect(),
            users: ix.by_user.len(),
            topics: ix.by_topic.len(),
        }
    }
}

/// What is live on one node, counted under one read of the indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubSnapshot {
    pub connections: usize,
    pub by_role: std::collections::BTreeMap<String, usize>,
    /// Distinct users with at least one connection.
    pub users: usize,
    /// Topics with at least one subscriber.
    pub topics: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Message;
    use serde_json::json;

    fn text_ptr(frame: &Frame) -> *const u8 {
        match frame {
            Message::Text(text) => text.as_str().as_ptr(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn a_publication_is_encoded_once_and_shared_by_every_recipient() {
        let hub = Hub::new();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let who = Principal::new("alice", "user", vec!["p1".into()]);
            let conn = ConnHandle::new(hub.next_id(), who, None, Encoding::Json, 8);
            hub.attach(&conn);
            receivers.push(conn);
        }
        let publication = Publication::new(Scope::Project("p1".into()), "e", json!({"k": 1}));
        // alice is listed by the store and claims p1: still one copy per connection.
        assert_eq!(hub.deliver(&publication, &["alice".to_string()]), 3);
        let frames: Vec<Frame> = receivers
            .iter()
            .map(|conn| {
                let mut queued = conn.take_all();
                assert_eq!(queued.len(), 1, "exactly one copy");
                queued.remove(0)
            })
            .collect();
        let first = text_ptr(&frames[0]);
        assert!(
            frames.iter().all(|f| text_ptr(f) == first),
            "the same buffer"
        );
    }

    #[test]
    fn each_encoding_in_use_is_encoded_once() {
        let hub = Hub::new();
        let mut receivers = Vec::new();
        for encoding in [Encoding::Json, Encoding::MsgPack, Encoding::MsgPack] {
            let who = Principal::new("u", "user", vec![]);
            let conn = ConnHandle::new(hub.next_id(), who, None, encoding, 8);
            hub.attach(&conn);
            receivers.push((encoding, conn));
        }
        let publication = Publication::new(Scope::All, "e", json!({"k": [1, 2]}));
        assert_eq!(hub.deliver(&publication, &[]), 3);
        let mut binary = Vec::new();
        for (encoding, conn) in &receivers {
            match (encoding, conn.take_all().remove(0)) {
                (Encoding::Json, Message::Text(text)) => assert!(text.as_str().starts_with('{')),
                (Encoding::MsgPack, Message::Binary(bytes)) => {
                    let value: serde_json::Value = rmp_serde::from_slice(&bytes).expect("msgpack");
                    assert_eq!(value["data"], json!({"k": [1, 2]}));
                    binary.push(bytes.as_ptr());
                }
                other => panic!("wrong frame for the encoding: {other:?}"),
            }
        }
        assert_eq!(
            binary[0], binary[1],
            "one MessagePack encoding shared by both"
        );
    }

    #[test]
    fn a_full_queue_closes_that_connection_only() {
        let hub = Hub::new();
        let slow = ConnHandle::new(
            hub.next_id(),
            Principal::new("s", "user", vec![]),
            None,
            Encoding::Json,
            1,
        );
        let fast = ConnHandle::new(
            hub.next_id(),
            Principal::new("f", "user", vec![]),
            None,
            Encoding::Json,
            8,
        );
        hub.attach(&slow);
        hub.attach(&fast);
        let publication = Publication::new(Scope::All, "e", json!({}));
        assert_eq!(hub.deliver(&publication, &[]), 2);
        assert_eq!(
            hub.deliver(&publication, &[]),
            1,
            "the slow one's queue is full"
        );
        assert_eq!(slow.close_reason(), Some(CloseReason::SLOW_CONSUMER));
        assert_eq!(fast.close_reason(), None);
        assert_eq!(fast.take_all().len(), 2);
    }
}
