//! One connection as the hub sees it: who it is and a bounded queue of frames to write.
//!
//! The hub only ever calls [`ConnHandle::push`], which never waits: a full queue marks the
//! connection as a slow consumer and asks it to close with 1013, so a publisher and the other
//! recipients never wait on one slow socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::protocol::{Encoding, Frame};

/// The hub's key for a connection.
pub type ConnId = u64;

/// Close codes Herald sends, with the reasons PROTOCOL.md names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "slow consumer",
    };
    pub const GOING_AWAY: Self = Self {
        code: 1001,
        reason: "going away",
    };
    pub const TOKEN_EXPIRED: Self = Self {
        code: 1008,
        reason: "token expired",
    };
    pub const DISCONNECTED: Self = Self {
        code: 1000,
        reason: "disconnected by the server",
    };
    pub const TOO_MANY_ERRORS: Self = Self {
        code: 1008,
        reason: "too many errors",
    };
    pub const MESSAGE_TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    pub const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid UTF-8",
    };
    pub const PROTOCOL_ERROR: Self = Self {
        code: 1002,
        reason: "protocol error",
    };
    /// Cluster mode: the node lost Redis and its stream's past with it; the client should
    /// reconnect and resubscribe with `since` (it learns `recovered: false` if it missed some).
    pub const STREAM_LOST: Self = Self {
        code: 1012,
        reason: "service restart: resubscribe",
    };
}

/// The shared half of a connection: the hub holds it in its indexes, the connection task
/// holds the receiving end of its queue.
#[derive(Debug)]
pub struct ConnHandle {
    pub id: ConnId,
    /// The id clients see (`client_id`), a UUID v7.
    pub client_id: String,
    pub remote_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    /// How this connection's frames are encoded.
    pub encoding: Encoding,
    principal: Mutex<Principal>,
    /// Topics this connection is subscribed to; changed only by the hub, under its lock.
    pub(crate) topics: Mutex<HashSet<Arc<str>>>,
    outbox: mpsc::Sender<Frame>,
    closing: CancellationToken,
    close_reason: Mutex<Option<CloseReason>>,
    /// Unix milliseconds of the last ping or pong from the client.
    last_heartbeat_ms: AtomicU64,
}

impl ConnHandle {
    /// A handle and the receiving end of its queue of `capacity` frames.
    pub fn new(
        id: ConnId,
        principal: Principal,
        remote_addr: Option<SocketAddr>,
        encoding: Encoding,
        capacity: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Frame>) {
        let (outbox, rx) = mpsc::channel(capacity);
        let now = SystemTime::now();
        let handle = Self {
            id,
            client_id: uuid::Uuid::now_v7().to_string(),
            remote_addr,
            connected_at: now,
            encoding,
            principal: Mutex::new(principal),
            topics: Mutex::new(HashSet::new()),
            outbox,
            closing: CancellationToken::new(),
            close_reason: Mutex::new(None),
            last_heartbeat_ms: AtomicU64::new(unix_ms(now)),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a frame without waiting. Returns false when the frame was not queued: the
    /// connection is closing, or its queue was full (it is then closed as a slow consumer).
    pub fn push(&self, frame: Frame) -> bool {
        match self.encoding {
            Encoding::Json => self.push_encoded(frame),
            encoding => self.push_encoded(encoding.encode(&frame)),
        }
    }

    /// Queues a frame already in this connection's encoding (the hub's fan-out path, which
    /// encodes each publication once per encoding).
    pub fn push_encoded(&self, frame: Frame) -> bool {
        match self.outbox.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        if let Ok(mut slot) = self.close_reason.lock() {
            slot.get_or_insert(reason);
        }
        self.closing.cancel();
    }

    /// Resolves when [`close`](Self::close) was called.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.lock().ok().and_then(|r| *r)
    }

    pub fn principal(&self) -> Principal {
        match self.principal.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_principal(&self, principal: Principal) {
        match self.principal.lock() {
            Ok(mut p) => *p = principal,
            Err(poisoned) => *poisoned.into_inner() = principal,
        }
    }

    /// The topics this connection is subscribed to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .topics
            .lock()
            .map(|t| t.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        topics.sort();
        topics
    }

    pub fn touch_heartbeat(&self) {
        self.last_heartbeat_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn last_heartbeat(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_millis(self.last_heartbeat_ms.load(Ordering::Relaxed))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
