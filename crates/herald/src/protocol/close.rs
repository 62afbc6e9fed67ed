//! The close codes and reasons Herald sends (docs/PROTOCOL.md, section 8).

/// A close code Herald sends, with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The close code.
    pub code: u16,
    /// The reason text.
    pub reason: &'static str,
}

impl CloseReason {
    /// A full queue, or a missed write deadline.
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "slow consumer",
    };
    /// The server shuts down.
    pub const GOING_AWAY: Self = Self {
        code: 1001,
        reason: "going away",
    };
    /// The connection's token expired.
    pub const TOKEN_EXPIRED: Self = Self {
        code: 1008,
        reason: "token expired",
    };
    /// The server API or the app disconnected it.
    pub const DISCONNECTED: Self = Self {
        code: 1000,
        reason: "disconnected by the server",
    };
    /// `max_errors` errors within `error_window`.
    pub const TOO_MANY_ERRORS: Self = Self {
        code: 1008,
        reason: "too many errors",
    };
    /// A message over `max_message_size`.
    pub const MESSAGE_TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    /// A text message that is not UTF-8.
    pub const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid UTF-8",
    };
    /// Frames that break RFC 6455.
    pub const PROTOCOL_ERROR: Self = Self {
        code: 1002,
        reason: "protocol error",
    };
    /// No `auth` within `auth_timeout`.
    pub const AUTH_TIMEOUT: Self = Self {
        code: 1008,
        reason: "authentication timeout",
    };
    /// The token of an `auth` message was refused.
    pub const AUTH_FAILED: Self = Self {
        code: 1008,
        reason: "authentication failed",
    };
    /// The backend's `connect` hook failed while deciding who the connection is.
    pub const AUTH_UNAVAILABLE: Self = Self {
        code: 1011,
        reason: "authentication unavailable",
    };
    /// More than 16 KiB of frames before authenticating.
    pub const TOO_MUCH_UNAUTHENTICATED: Self = Self {
        code: 1008,
        reason: "too much data before authentication",
    };
    /// The user already holds `max_connections_per_user`.
    pub const TOO_MANY_CONNECTIONS: Self = Self {
        code: 1008,
        reason: "too many connections",
    };
    /// Cluster mode: the node lost Redis and its stream's past with it; the client should
    /// reconnect and resubscribe with `since` (it learns `recovered: false` if it missed some).
    pub const STREAM_LOST: Self = Self {
        code: 1012,
        reason: "service restart: resubscribe",
    };
}

impl CloseReason {
    /// Whether this close fails the connection (RFC 6455 7.1.7: the client's frames broke
    /// the protocol or a limit), so the server closes TCP without waiting for an answer.
    pub fn fails_the_connection(self) -> bool {
        matches!(self.code, 1002 | 1007 | 1009)
    }
}
