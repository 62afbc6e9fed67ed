//! Authentication by first message: `auth_required`, then one `auth` within `auth_timeout`.
//! Until then every other command gets `error` `unauthorized` and changes nothing, and the
//! client may send at most [`UNAUTHENTICATED_BYTES`] in all.

use axum::extract::ws::Message;
use serde_json::Value;

use super::Link;
use crate::auth::{AuthError, Principal};
use crate::hub::{CloseReason, ConnHandle};
use crate::metrics::Peer;
use crate::node::slots::Holds;
use crate::node::Herald;
use crate::protocol::replies::{AuthRequired, Reply};
use crate::protocol::{error_frame, Command, ErrorCode, Request, Resume};

/// What a connection may send before it authenticated: payloads plus a frame header's 6 bytes
/// each, so a stream of empty frames counts too. An `auth` with a large token fits easily.
pub(super) const UNAUTHENTICATED_BYTES: usize = 16 * 1024;

/// The bytes a client message counts for against [`UNAUTHENTICATED_BYTES`].
fn wire_cost(message: &Message) -> usize {
    let payload = match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(frame) => frame.as_ref().map_or(0, |f| 2 + f.reason.len()),
    };
    payload + 6
}

/// What a good `auth` brought: who, the command's `ref`, and where to resume the scope streams.
pub(super) type Authenticated = (Principal, Option<Value>, Option<Resume>);

/// Waits for a good `auth`; returns the principal, the command's `ref` and its `resume`, or `None` once the
/// connection has been closed (bad token, timeout, too much data, the user's connection limit,
/// client gone). The user's connection slot is put in `holds`.
pub(super) async fn await_auth(
    link: &mut Link,
    conn: &ConnHandle,
    node: &Herald,
    holds: &mut Holds,
) -> Option<Authenticated> {
    let limits = &node.config().limits;
    let encoding = conn.encoding;
    let deadline = tokio::time::Instant::now() + limits.auth_timeout;
    let mut budget = UNAUTHENTICATED_BYTES;
    let required = AuthRequired {}.frame(None);
    send(link, conn, required, limits.write_timeout)
        .await
        .ok()?;
    loop {
        let incoming = tokio::select! {
            incoming = tokio::time::timeout_at(deadline, link.recv(conn)) => incoming,
            _ = node.shutdown_token().cancelled() => {
                link.close_with(conn, CloseReason::GOING_AWAY, limits.write_timeout).await;
                return None;
            }
        };
        let message = match incoming {
            Err(_elapsed) => {
                crate::metrics::auth_failure("timeout");
                crate::metrics::refused("auth_timeout", Peer(conn.remote_addr), "no auth message");
                link.close_with(conn, CloseReason::AUTH_TIMEOUT, limits.write_timeout)
                    .await;
                return None;
            }
            Ok(Some(Ok(Message::Close(_)))) => {
                link.answer_close(conn, limits.write_timeout).await;
                return None;
            }
            Ok(None | Some(Err(_))) => return None,
            Ok(Some(Ok(message))) => message,
        };
        match budget.checked_sub(wire_cost(&message)) {
            Some(left) => budget = left,
            None => {
                crate::metrics::dropped("unauthenticated_data");
                crate::metrics::refused(
                    "unauthenticated_data",
                    Peer(conn.remote_addr),
                    "over 16 KiB before auth",
                );
                link.close_with(
                    conn,
                    CloseReason::TOO_MUCH_UNAUTHENTICATED,
                    limits.write_timeout,
                )
                .await;
                return None;
            }
        }
        let text = match message {
            Message::Text(text) => Some(text.to_string()),
            Message::Binary(bytes) => encoding.decode_binary(&bytes),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        let reply = match text {
            Some(text) => match Request::parse(&text) {
                Ok(Request {
                    command: Command::Auth { token, resume },
                    reference,
                }) => match node.authenticate(&token).await {
                    Ok(principal) => {
                        match node.slots().user.acquire(principal.user_id.clone()) {
                            Some(slot) => holds.user = Some(slot),
                            None => {
                                crate::metrics::refused(
                                    "max_connections_per_user",
                                    Peer(conn.remote_addr),
                                    &principal.user_id,
                                );
                                let frame = error_frame(
                                    ErrorCode::TooManyConnections,
                                    "this user holds the most connections allowed",
                                    reference.as_ref(),
                                );
                                let _ = send(link, conn, frame, limits.write_timeout).await;
                                link.close_with(
                                    conn,
                                    CloseReason::TOO_MANY_CONNECTIONS,
                                    limits.write_timeout,
                                )
                                .await;
                                return None;
                            }
                        }
                        return Some((principal, reference, resume));
                    }
                    Err(e) => {
                        // A backend that could not decide is no refusal: the client retries,
                        // and the hook's own metric and log count it.
                        let (code, close) = match e {
                            AuthError::Unavailable(_) => {
                                (ErrorCode::ProcessingError, CloseReason::AUTH_UNAVAILABLE)
                            }
                            _ => {
                                crate::metrics::auth_failure(e.reason());
                                let detail = format!("{} token in an auth message", e.reason());
                                let peer = Peer(conn.remote_addr);
                                crate::metrics::refused("auth_failed", peer, &detail);
                                (ErrorCode::AuthFailed, CloseReason::AUTH_FAILED)
                            }
                        };
                        let frame = error_frame(code, &e.to_string(), reference.as_ref());
                        let _ = send(link, conn, frame, limits.write_timeout).await;
                        link.close_with(conn, close, limits.write_timeout).await;
                        return None;
                    }
                },
                Ok(request) => error_frame(
                    ErrorCode::Unauthorized,
                    "authenticate first: send {\"type\": \"auth\", \"token\": \"<jwt>\"}",
                    request.reference.as_ref(),
                ),
                Err(rejection) => error_frame(
                    rejection.code,
                    &rejection.message,
                    rejection.reference.as_ref(),
                ),
            },
            None => error_frame(
                ErrorCode::InvalidMessage,
                "binary frames need the msgpack encoding (and must hold one MessagePack map)",
                None,
            ),
        };
        send(link, conn, reply, limits.write_timeout).await.ok()?;
    }
}

/// Writes a frame (encoded for the connection) at once.
async fn send(
    link: &mut Link,
    conn: &ConnHandle,
    frame: Message,
    write_timeout: std::time::Duration,
) -> Result<(), super::socket::WriteError> {
    conn.push(frame);
    link.drain(conn, write_timeout).await
}
