//! Idempotency keys: a publish sent again with the key of one sent within the window gets the
//! first one's answer and is not delivered again (docs/PROTOCOL.md, section 15). The first
//! claim of a key wins; the claims after it see the answer once the winner recorded it, or
//! that it is still in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::EngineError;

/// The longest idempotency key taken, in bytes (a longer one is a bad request).
pub const MAX_KEY_LEN: usize = 255;

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No publish holds the key within the window: this caller publishes, then settles it.
    First,
    /// A publish with the key is under way and has no answer yet.
    InFlight,
    /// The answer of the publish that held the key first (as given to `settle`).
    Answered(String),
}

/// Where a node keeps idempotency keys: in its memory on one node, in Redis in a cluster (so
/// a repeat sent to any node finds the first answer).
#[async_trait]
pub trait Idempotency: Send + Sync + 'static {
    /// Claims `key` if nobody holds it (see [`Claim`]), for `in_flight` at most: a claimer
    /// that dies before it settles holds the key no longer than that.
    async fn claim(&self, key: &str, in_flight: Duration) -> Result<Claim, EngineError>;

    /// Records the answer of the publish that claimed `key`, kept for `window` from now; or,
    /// with `None` (the publish failed), lets the key go so that a retry publishes.
    async fn settle(
        &self,
        key: &str,
        answer: Option<&str>,
        window: Duration,
    ) -> Result<(), EngineError>;
}

/// At most this many keys are held on one node; past it the oldest are forgotten before their
/// window ends (logged), so keys cost a bounded amount of memory (about 100 MB at most).
const MAX_KEYS: usize = 200_000;

/// Idempotency keys in this process's memory (one node; forgotten on restart).
#[derive(Default)]
pub struct MemoryIdempotency {
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    held: HashMap<String, Held>,
    /// Keys in the order they were claimed, with their windows' ends: expiry walks from the
    /// front. An entry whose key was claimed again since (a later `until`) is skipped.
    order: VecDeque<(Instant, String)>,
    /// Keys forgotten early since the last warning, and when that was (one a minute at most).
    forgotten: u64,
    warned: Option<Instant>,
}

struct Held {
    until: Instant,
    answer: Option<String>,
}

impl MemoryIdempotency {
    /// No key held.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Keys {
    /// Drops the keys whose window ended by `now`, and the oldest while more than `keep` are
    /// held.
    fn expire(&mut self, now: Instant, keep: usize) {
        while let Some((until, key)) = self.order.front() {
            let ended = *until <= now;
            if !ended && self.held.len() <= keep {
                break;
            }
            let current = self.held.get(key).is_some_and(|held| held.until == *until);
            if current {
                self.held.remove(key);
                if !ended {
                    self.forgotten += 1;
                }
            }
            self.order.pop_front();
        }
        let quiet = self
            .warned
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60));
        if self.forgotten > 0 && !quiet {
            tracing::warn!(
                forgotten = self.forgotten,
                "idempotency keys: more than {MAX_KEYS} held, so the oldest were forgotten before their window ended"
            );
            self.forgotten = 0;
            self.warned = Some(now);
        }
    }
}

#[async_trait]
impl Idempotency for MemoryIdempotency {
    async fn claim(&self, key: &str, in_flight: Duration) -> Result<Claim, EngineError> {
        let now = Instant::now();
        let mut keys = crate::sync::lock(&self.keys);
        keys.expire(now, MAX_KEYS);
        if let Some(held) = keys.held.get(key) {
            return Ok(match &held.answer {
                Some(answer) => Claim::Answered(answer.clone()),
                None => Claim::InFlight,
            });
        }
        let until = now + in_flight;
        keys.held.insert(
            key.to_string(),
            Held {
                until,
                answer: None,
            },
        );
        keys.order.push_back((until, key.to_string()));
        keys.expire(now, MAX_KEYS);
        Ok(Claim::First)
    }

    async fn settle(
        &self,
        key: &str,
        answer: Option<&str>,
        window: Duration,
    ) -> Result<(), EngineError> {
        let mut keys = crate::sync::lock(&self.keys);
        match answer {
            Some(answer) => {
                let until = Instant::now() + window;
                if let Some(held) = keys.held.get_mut(key) {
                    held.answer = Some(answer.to_string());
                    held.until = until;
                    keys.order.push_back((until, key.to_string()));
                }
            }
            None => {
                keys.held.remove(key);
            }
        }
        Ok(())
    }
}
