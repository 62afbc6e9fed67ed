//! Per-connection limits of PROTOCOL.md section 8: the command rate (a token bucket) and the
//! error threshold (a sliding window), plus the per-IP connection count.

use std::collections::{HashMap, VecDeque};
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

/// Open connections per client IP, bounded by `max_connections_per_ip` (0: unlimited).
#[derive(Debug, Default)]
pub struct IpSlots {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One IP's hold on a slot, released when dropped (when its connection ends).
#[derive(Debug)]
pub struct IpSlot {
    slots: Arc<IpSlots>,
    ip: IpAddr,
}

impl IpSlots {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::default(),
        })
    }

    /// A slot for `ip`, or `None` when it already holds the maximum.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            // Unlimited: nothing to count (the drop finds no entry and does nothing).
            return Some(IpSlot {
                slots: self.clone(),
                ip,
            });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
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
