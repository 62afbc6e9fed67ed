//! In-process engines: the default broker, and a membership store for tests and embedding.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Broker, EngineError, LocalDelivery, Membership, Presence, PresenceEntry};
use crate::publication::Publication;

/// A broker for one node: publishing is delivering locally.
pub struct MemoryBroker {
    local: LocalDelivery,
}

impl MemoryBroker {
    pub fn new(local: LocalDelivery) -> Self {
        Self { local }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publication: Arc<Publication>) -> Result<usize, EngineError> {
        self.local.deliver(&publication).await
    }
}

/// Project membership held in memory; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryMembership {
    projects: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl MemoryMembership {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, BTreeSet<String>>) -> T) -> T {
        let mut guard = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl Membership for MemoryMembership {
    async fn add(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|p| {
            p.entry(project.to_string())
                .or_default()
                .insert(user.to_string())
        }))
    }

    async fn remove(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|p| {
            let Some(members) = p.get_mut(project) else {
                return false;
            };
            let removed = members.remove(user);
            if members.is_empty() {
                p.remove(project);
            }
            removed
        }))
    }

    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        Ok(self.with(|p| {
            p.get(project)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.with(|p| p.get(project).is_some_and(|m| m.contains(user))))
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
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<String, OnTopic>>) -> T) -> T {
        let mut guard = self.topics.lock().unwrap_or_else(|e| e.into_inner());
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
            entry.connections.insert(client_id.to_string());
            entry.connections.len() == 1
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
