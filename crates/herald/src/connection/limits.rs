//! Per-connection limits: the command rate (a token bucket) and the error threshold (a
//! sliding window). The connection counts per IP, user and node are the node's
//! (`node::slots`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// `rate_per_sec` commands a second with bursts of `rate_burst`; a rate of 0 disables it.
/// It also tells a client that slows down when refused from one that ignores the refusals.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Commands refused since the last one let through.
    refused_in_a_row: u32,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    /// Whether the client kept sending through more than a whole burst of refusals: it is not
    /// slowing down. One that waits for a token after being refused never gets here.
    pub fn ignored(&self) -> bool {
        f64::from(self.refused_in_a_row) > self.burst
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
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
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
    fn refusals_are_ignored_only_past_a_whole_burst_in_a_row() {
        let mut bucket = TokenBucket::new(10, 3);
        assert_eq!((0..6).filter(|_| bucket.take()).count(), 3);
        assert!(!bucket.ignored(), "3 refusals in a row: told to slow down");
        assert!(!bucket.take());
        assert!(
            bucket.ignored(),
            "a 4th refusal in a row is more than the burst"
        );
        // A client that waits for a token starts over.
        std::thread::sleep(Duration::from_millis(150));
        assert!(bucket.take());
        assert!(!bucket.ignored());
    }

    #[test]
    fn the_window_breaches_at_max() {
        let mut errors = ErrorWindow::new(3, Duration::from_secs(60));
        assert!(!errors.record());
        assert!(!errors.record());
        assert!(errors.record());
    }
}
