//! Open connections counted per client IP, per user and per node, each bounded by its
//! `[limits]` key (docs/OPERATIONS.md): a connection holds its slots until it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The connection counts a node bounds (`[limits]`): per client IP, per user, and in all.
#[derive(Debug)]
pub struct ConnectionSlots {
    /// Every HTTP connection of an IP, and each WebSocket upgraded from one.
    pub ip: Arc<IpSlots>,
    /// Each authenticated WebSocket of a user.
    pub user: Arc<Slots<Arc<str>>>,
    /// Each WebSocket of the node, authenticated or not.
    pub node: Arc<Slots<()>>,
}

impl ConnectionSlots {
    pub fn new(limits: &crate::config::Limits) -> Self {
        Self {
            ip: Slots::new(limits.max_connections_per_ip),
            user: Slots::new(limits.max_connections_per_user),
            node: Slots::new(limits.max_connections),
        }
    }
}

/// What one WebSocket holds until it ends: its slots, released when dropped.
#[derive(Debug, Default)]
pub struct Holds {
    /// Shared with the HTTP connection it was upgraded from.
    pub ip: Option<Arc<IpSlot>>,
    pub node: Option<Slot<()>>,
    pub user: Option<Slot<Arc<str>>>,
}

/// Open connections counted per key (a client IP, a user, or one key for the whole node),
/// each key bounded by `max` (0: unlimited).
#[derive(Debug, Default)]
pub struct Slots<K: Hash + Eq + Clone> {
    max: u32,
    counts: Mutex<HashMap<K, u32>>,
}

/// One connection's hold on a slot of its key, released when dropped (when it ends).
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

/// Connections per client IP: every HTTP connection holds one, a WebSocket for its whole life.
pub type IpSlots = Slots<IpAddr>;
/// See [`IpSlots`].
pub type IpSlot = Slot<IpAddr>;

impl<K: Hash + Eq + Clone> Slots<K> {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::default(),
        })
    }

    /// A slot for `key`, or `None` when it already holds the maximum.
    pub fn acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        if self.max == 0 {
            // Unlimited: nothing to count (the drop finds no entry and does nothing).
            return Some(Slot {
                slots: self.clone(),
                key,
            });
        }
        let mut counts = crate::sync::lock(&self.counts);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = crate::sync::lock(&self.slots.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_slots_are_bounded_and_released() {
        let slots = IpSlots::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = slots.acquire(ip).expect("first");
        let _b = slots.acquire(ip).expect("second");
        assert!(slots.acquire(ip).is_none());
        assert!(slots.acquire([127, 0, 0, 2].into()).is_some(), "per IP");
        drop(a);
        assert!(slots.acquire(ip).is_some());
    }
}
