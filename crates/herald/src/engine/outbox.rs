//! Where unsent webhook events wait (docs/HOOKS.md): kept until the backend acknowledged them,
//! so that they survive a restart. The memory outbox keeps nothing (an embedding app's
//! in-memory node); the SQLite one keeps them in the data dir.

use async_trait::async_trait;

use super::EngineError;

/// One event as sent: its id (the same on every retry) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event's id (UUID v7).
    pub id: String,
    /// The event as the backend gets it: `{id, name, time, node, data}`.
    pub body: String,
}

/// Unsent webhook events, in the order they happened.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Keeps `events` (durably for durable engines) behind those already kept.
    async fn keep(&self, events: Vec<OutboxEvent>) -> Result<(), EngineError>;
    /// Forgets the events with these ids (acknowledged, or dropped).
    async fn forget(&self, ids: Vec<String>) -> Result<(), EngineError>;
    /// Every kept event, oldest first (at start).
    async fn load(&self) -> Result<Vec<OutboxEvent>, EngineError>;
}

/// An outbox that keeps nothing: events live in the sender's memory only.
pub struct MemoryOutbox;

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn keep(&self, _: Vec<OutboxEvent>) -> Result<(), EngineError> {
        Ok(())
    }

    async fn forget(&self, _: Vec<String>) -> Result<(), EngineError> {
        Ok(())
    }

    async fn load(&self) -> Result<Vec<OutboxEvent>, EngineError> {
        Ok(Vec::new())
    }
}
