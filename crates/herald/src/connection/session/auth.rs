//! Who the connection is: the welcome, a refreshed token, and its expiry.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Session;
use crate::auth::AuthError;
use crate::connection::Next;
use crate::node::ConnectStreams;
use crate::protocol::replies::{Greeting, Refreshed, Reply, Welcome};
use crate::protocol::{ErrorCode, Frame};

/// A far-away instant for "no expiry" (tokio timers need a deadline).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Session {
    /// When the connection's token expires, as a timer deadline.
    pub fn expiry_instant(&self) -> Instant {
        match self.conn.principal().expires_at {
            Some(exp) => {
                // The same leeway that let the token in keeps it alive past `exp`.
                let leeway = self.node.config().jwt.leeway;
                let left = Duration::from_secs(exp.saturating_sub(crate::auth::unix_now()));
                // An `exp` centuries away (up to 2^64 s) is "never": no overflow.
                let now = Instant::now();
                now.checked_add(left.saturating_add(leeway).min(NEVER))
                    .unwrap_or(now + NEVER)
            }
            None => Instant::now() + NEVER,
        }
    }

    /// `connection.established` or `auth_success`: who the server thinks this is, and where
    /// its scope streams stand (`streams`, with `resumed` after a resume).
    pub fn welcome(
        &self,
        greeting: Greeting,
        reference: Option<&Value>,
        streams: Option<&ConnectStreams>,
    ) -> Frame {
        let who = self.conn.principal();
        Welcome {
            greeting,
            client_id: &self.conn.client_id,
            user_id: &who.user_id,
            role: &who.role,
            message: crate::protocol::spelling::spelling().welcome_message,
            expires_at: who.expires_at,
            expires_in: expires_in(who.expires_at),
            streams: streams.map(ConnectStreams::streams_field),
            resumed: streams.and_then(ConnectStreams::resumed_field),
        }
        .frame(reference)
    }

    pub fn token_expired(&mut self) {
        self.error(
            ErrorCode::TokenExpired,
            "token has expired; send refresh with a newer token before exp",
            None,
        );
    }

    /// A newer token for the same user (`refresh`, or a second `auth`, answered by
    /// `auth_success`): keeps the connection past the old `exp`, and takes away at once the
    /// topics its role or projects no longer allow.
    pub(super) async fn refresh(
        &mut self,
        token: &str,
        as_auth: bool,
        reference: Option<&Value>,
    ) -> Next {
        let principal = match self.node.authenticate(token).await {
            Ok(principal) => principal,
            Err(e @ (AuthError::Expired | AuthError::Invalid(_))) => {
                self.error(ErrorCode::AuthFailed, &e.to_string(), reference);
                return Next::Continue;
            }
            Err(e @ AuthError::Unavailable(_)) => {
                self.error(ErrorCode::ProcessingError, &e.to_string(), reference);
                return Next::Continue;
            }
        };
        let current = self.conn.principal();
        if principal.user_id != current.user_id {
            self.error(
                ErrorCode::AuthFailed,
                "the new token names another user; reconnect to change user",
                reference,
            );
            return Next::Continue;
        }
        let answer = Refreshed {
            greeting: as_auth.then_some(Greeting::AuthSuccess),
            client_id: &self.conn.client_id,
            user_id: &principal.user_id,
            role: &principal.role,
            expires_at: principal.expires_at,
            expires_in: expires_in(principal.expires_at),
        }
        .frame(reference);
        self.node.hub().update_principal(&self.conn, principal);
        self.queue(answer);
        self.node.revoke_lost_topics(&self.conn).await;
        Next::ExpiryChanged
    }
}

/// Seconds from now until `exp`, by this server's clock (0 once it passed).
fn expires_in(expires_at: Option<u64>) -> Option<u64> {
    expires_at.map(|exp| exp.saturating_sub(crate::auth::unix_now()))
}
