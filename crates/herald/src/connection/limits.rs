//! Per-connection limits: the command rate (a token bucket) and the error threshold (a
//! sliding window), plus connection counts per IP, per user and per node (docs/OPERATIONS.md).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// `rate_per_sec` commands a second with bursts of `rate_burst`; a rate of 0 disables it.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when none is left (the command is refused).
    pub fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts errors in a sliding window; `max` errors within `window` is a breach. A `max` of 0
/// disables it.
#[derive(Debug)]
pub struct ErrorWindow {
    max: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl ErrorWindow {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max as usize,
            window,
            times: VecDeque::new(),
        }
    }

    /// Records one error; true when this one reaches the threshold.
    pub fn record(&mut self) -> bool {
        if self.max == 0 {
            return false;
        }
        let now = Instant::now();
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() >= self.max
    }
}

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
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut counts = self.slots.counts.lock().unwrap_or_else(|e| e.into_inner());
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
    fn the_bucket_allows_the_burst_then_refuses() {
        let mut bucket = TokenBucket::new(10, 20);
        assert_eq!((0..25).filter(|_| bucket.take()).count(), 20);
        assert!(TokenBucket::new(0, 1).take(), "rate 0 disables the limit");
    }

    #[test]
    fn the_window_breaches_at_max() {
        let mut errors = ErrorWindow::new(3, Duration::from_secs(60));
        assert!(!errors.record());
        assert!(!errors.record());
        assert!(errors.record());
    }

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
