//! Authentication by first message: `auth_required`, then one `auth` within `auth_timeout`.
//! Until then every other command gets `error` `unauthorized` and changes nothing.

use axum::extract::ws::Message;
use serde_json::Value;

use super::Link;
use crate::auth::Principal;
use crate::hub::{CloseReason, ConnHandle};
use crate::node::Herald;
use crate::protocol::{error_frame, reply_frame, Command, ErrorCode, Request};

const AUTH_TIMEOUT: CloseReason = CloseReason {
    code: 1008,
    reason: "authentication timeout",
};
const AUTH_FAILED: CloseReason = CloseReason {
    code: 1008,
    reason: "authentication failed",
};

/// Waits for a good `auth`; returns the principal and the command's `ref`, or `None` once the
/// connection has been closed (bad token, timeout, client gone).
pub(super) async fn await_auth(
    link: &mut Link,
    conn: &ConnHandle,
    node: &Herald,
) -> Option<(Principal, Option<Value>)> {
    let limits = &node.config().limits;
    let encoding = conn.encoding;
    let deadline = tokio::time::Instant::now() + limits.auth_timeout;
    let required = reply_frame("auth_required", serde_json::json!({}), None);
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
                link.close_with(conn, AUTH_TIMEOUT, limits.write_timeout)
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
        let text = match message {
            Message::Text(text) => Some(text.to_string()),
            Message::Binary(bytes) => encoding.decode_binary(&bytes),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        let reply = match text {
            Some(text) => match Request::parse(&text) {
                Ok(Request {
                    command: Command::Auth { token },
                    reference,
                }) => match node.authenticate(&token).await {
                    Ok(principal) => return Some((principal, reference)),
                    Err(e) => {
                        crate::metrics::auth_failure(e.reason());
                        let frame =
                            error_frame(ErrorCode::AuthFailed, &e.to_string(), reference.as_ref());
                        let _ = send(link, conn, frame, limits.write_timeout).await;
                        link.close_with(conn, AUTH_FAILED, limits.write_timeout)
                            .await;
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
    conn.push_uncounted([frame]);
    link.drain(conn, write_timeout).await
}
