//! The newest offset, epoch and ring length of each stream, kept beside the file by the
//! appends (which all run on the writer thread), so that an append costs its row and no query
//! for its place.
//!
//! What is kept is only ever what the file holds: an append records its position after its
//! statements succeeded, and every undo of writes that ran (a batch rolled back, a failed
//! commit) moves the writer's rollback count, which empties this before the next write reads
//! it. Dropping expired rows never moves a stream's newest offset, and epochs change only
//! offline (restore).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a stream stands in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The newest offset (0 before the first append).
    pub newest: i64,
    pub epoch: String,
    /// The length of the stream's ring (see `history.rs`).
    pub slots: i64,
}

/// At most this many streams are remembered; past it the memory starts over (a query each
/// for the streams appended next), so a node with countless topics holds a bounded map.
const MAX_STREAMS: usize = 65_536;

/// Streams' newest positions, valid while the writer's rollback count stays where it was.
pub struct Positions {
    rollbacks: Arc<AtomicU64>,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// The rollback count `streams` was filled under.
    seen: u64,
    streams: HashMap<String, Place>,
}

impl Positions {
    /// Positions that are forgotten whenever `rollbacks` (the writer's count) moves.
    pub fn new(rollbacks: Arc<AtomicU64>) -> Self {
        Self {
            rollbacks,
            known: Mutex::default(),
        }
    }

    /// Where the stream stands, when known.
    pub fn get(&self, topic: &str) -> Option<Place> {
        let mut known = crate::sync::lock(&self.known);
        let now = self.rollbacks.load(Ordering::SeqCst);
        if known.seen != now {
            known.streams.clear();
            known.seen = now;
            return None;
        }
        known.streams.get(topic).cloned()
    }

    /// Records where the stream stands after an append's statements succeeded.
    pub fn set(&self, topic: &str, at: Place) {
        let mut known = crate::sync::lock(&self.known);
        let now = self.rollbacks.load(Ordering::SeqCst);
        if known.seen != now || known.streams.len() >= MAX_STREAMS {
            known.streams.clear();
            known.seen = now;
        }
        match known.streams.get_mut(topic) {
            Some(known) => *known = at,
            None => {
                known.streams.insert(topic.to_string(), at);
            }
        }
    }
}
