//! In-process engines: the default broker, and a membership store for tests and embedding.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Broker, EngineError, LocalDelivery, Membership};
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
