//! One socket, one task: it reads client frames and dispatches commands ([`session`]); the
//! connection's queue is written by the node's flusher or by this task ([`link`]).
//!
//! Architecture invariant: every frame for a client, reply or delivery, goes through the
//! connection's one queue ([`ConnHandle`]), so a client sees frames in the order they were
//! produced, and a full queue ends the connection (1013) instead of blocking anyone.

mod handshake;
pub mod limits;
mod link;
mod session;
mod socket;

pub use link::Link;
pub use socket::Socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use tokio::time::{sleep_until, Instant};

use crate::auth::Principal;
use crate::hub::{Attention, CloseReason, ConnHandle};
use crate::metrics::Peer;
use crate::node::Herald;
use crate::protocol::replies::Greeting;
use crate::protocol::{Encoding, ReplyStyle, Wanted};
use serde_json::Value;
use session::Session;
use socket::{ReadError, WriteError};

/// What the HTTP upgrade learned before the socket opened.
#[derive(Debug, Default)]
pub struct Start {
    /// Set when the token came in the query or the `Authorization` header.
    pub principal: Option<Principal>,
    /// Topics to subscribe right after authentication (`?project_id=`, `?board_id=`).
    pub auto_topics: Vec<String>,
    /// No token, taken as an anonymous reader of `auto_topics` and nothing else (a profile's
    /// choice: `cartographer`).
    pub anonymous: bool,
    /// `?resume=`: where to resume the scope streams.
    pub resume: Option<crate::protocol::Resume>,
    pub remote_addr: Option<SocketAddr>,
    /// This connection's slots (per IP, per user, in the node), released when it ends.
    pub holds: crate::node::slots::Holds,
    /// The test-only echo endpoint: no auth, every data frame sent back as it came.
    pub echo: bool,
    /// `?encoding=`: JSON text frames or MessagePack binary frames.
    pub encoding: Encoding,
}

/// The role (and the user id's prefix) of an anonymous reader.
pub const ANONYMOUS: &str = "anonymous";

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Send this close frame (after flushing what is queued, unless the client is too slow).
    Close(CloseReason),
    /// The client left, went silent, or the socket failed: nothing more to send. The text
    /// says which, for logs and metrics.
    Gone(&'static str),
}

impl Ending {
    /// Closed because it could not keep up: its queue filled, or a write missed the deadline.
    fn is_slow_consumer(&self) -> bool {
        matches!(
            self,
            Self::Close(CloseReason::SLOW_CONSUMER) | Self::Gone("write_timeout")
        )
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Close(CloseReason::SLOW_CONSUMER) => "slow_consumer",
            Self::Close(CloseReason::GOING_AWAY) => "going_away",
            Self::Close(CloseReason::TOKEN_EXPIRED) => "token_expired",
            Self::Close(CloseReason::DISCONNECTED) => "disconnected",
            Self::Close(CloseReason::TOO_MANY_ERRORS) => "too_many_errors",
            Self::Close(CloseReason::MESSAGE_TOO_BIG) => "too_large",
            Self::Close(CloseReason::INVALID_UTF8) => "invalid_utf8",
            Self::Close(CloseReason::PROTOCOL_ERROR) => "protocol_error",
            Self::Close(_) => "policy",
            Self::Gone(why) => why,
        }
    }
}

/// Runs one WebSocket connection to its end.
pub async fn serve(mut link: Link, node: Herald, start: Start) {
    let Start {
        principal,
        auto_topics,
        anonymous,
        resume,
        remote_addr,
        mut holds,
        echo,
        encoding,
    } = start;
    let conn = link.handle(&node, node.hub().next_id(), remote_addr, encoding);
    if echo {
        Box::pin(serve_echo(&mut link, &conn, &node)).await;
        drop(holds);
        let _ = conn.end();
        return;
    }
    // The opening and the closing are boxed: the task keeps only what waiting needs.
    let Some((mut session, role, greeted)) = Box::pin(open(
        &mut link,
        &conn,
        &node,
        principal,
        Topics {
            auto: auto_topics,
            anonymous,
        },
        resume,
        &mut holds,
    ))
    .await
    else {
        // Never registered: nothing but its welcome and inbox (still in the inbox) was queued.
        let _ = conn.end();
        return;
    };
    let ending = match greeted {
        Ok(()) => run(&mut link, &mut session).await,
        Err(e) => write_failure(e),
    };
    Box::pin(close(link, &conn, &node, ending, &role)).await;
    drop(holds);
    let undelivered = conn.end();
    if !undelivered.is_empty() {
        Box::pin(node.keep_undelivered(&conn.principal().user_id, undelivered)).await;
    }
}

/// The query's topics, and whether they are all an anonymous connection may read.
struct Topics {
    auto: Vec<String>,
    anonymous: bool,
}

/// Authenticates (unless the upgrade did), greets, attaches to the hub and subscribes to the
/// query's topics; returns the session, the role the connection is counted under until it
/// closes (a refresh may change it), and how writing the greeting went.
async fn open(
    link: &mut Link,
    conn: &Arc<ConnHandle>,
    node: &Herald,
    principal: Option<Principal>,
    topics: Topics,
    resume: Option<crate::protocol::Resume>,
    holds: &mut crate::node::slots::Holds,
) -> Option<(Session, Arc<str>, Result<(), WriteError>)> {
    let (principal, greeting, reference, resume) = match principal {
        Some(principal) => (principal, Greeting::Established, None, resume),
        // Its own user (never another's inbox or user events), under a role of its own.
        None if topics.anonymous => {
            let user = format!("{ANONYMOUS}:{}", conn.client_id);
            let principal = Principal::new(&user, ANONYMOUS, Vec::new());
            (principal, Greeting::Established, None, resume)
        }
        None => {
            let (principal, reference, resume) =
                handshake::await_auth(link, conn, node, holds).await?;
            (principal, Greeting::AuthSuccess, reference, resume)
        }
    };
    conn.set_principal(principal);
    let mut session = Session::new(node.clone(), conn.clone());
    if topics.anonymous {
        session.read_only(topics.auto.clone());
    }
    // First the welcome, then the offline inbox and the replay of a resume, queued before the
    // connection is visible to publishers (attached by `attach`).
    let welcome = |streams: Option<&_>| session.welcome(greeting, reference.as_ref(), streams);
    let queued = node.attach(conn, resume.as_ref(), welcome).await;
    node.hub()
        .counters
        .sent
        .fetch_add(1 + queued as u64, std::sync::atomic::Ordering::Relaxed);
    if node.shutdown_token().is_cancelled() {
        // Registered after shutdown went through the hub: close like the others.
        conn.close(CloseReason::GOING_AWAY);
    }
    let greeted = link.drain(conn, node.config().limits.write_timeout).await;
    let who = conn.principal();
    node.hub()
        .counters
        .opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::connection_opened(&who.role);
    tracing::info!(
        client_id = %conn.client_id,
        user_id = %who.user_id,
        role = %who.role,
        remote_addr = %Peer(conn.remote_addr),
        "connection opened"
    );
    for topic in &topics.auto {
        session
            .subscribe(topic, None, ReplyStyle::Canonical, None)
            .await;
    }
    Some((session, who.role, greeted))
}

/// Leaves the hub, records how the connection ended, and says goodbye.
async fn close(mut link: Link, conn: &ConnHandle, node: &Herald, ending: Ending, role: &str) {
    let who = conn.principal();
    let code = match &ending {
        Ending::Close(reason) => Some(reason.code),
        Ending::Gone(_) => None,
    };
    let closed = crate::protocol::hooks::ConnectionClosed {
        client_id: &conn.client_id,
        user_id: &who.user_id,
        role: &who.role,
        reason: ending.label(),
        code,
    };
    node.webhook("connection.closed", closed);
    node.detach(conn).await;
    // A slow consumer's unwritten user messages go to the inbox before its goodbye (which may
    // take a while), so they come before what is published to the user from now on.
    let undelivered = conn.take_undelivered();
    if !undelivered.is_empty() {
        node.keep_undelivered(&conn.principal().user_id, undelivered)
            .await;
    }
    crate::metrics::connection_closed(role, ending.label());
    tracing::info!(
        client_id = %conn.client_id,
        user_id = %conn.principal().user_id,
        remote_addr = %Peer(conn.remote_addr),
        duration_ms = conn.connected_at.elapsed().unwrap_or_default().as_millis() as u64,
        reason = ending.label(),
        "connection closed"
    );
    if ending.is_slow_consumer() {
        node.hub()
            .counters
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    finish(&mut link, conn, ending, node.config().limits.write_timeout).await;
}

/// Says goodbye as the ending requires: what is queued, then the close frame (a slow consumer
/// gets only the close frame, behind what it has begun to receive).
async fn finish(link: &mut Link, conn: &ConnHandle, ending: Ending, write_timeout: Duration) {
    if ending.is_slow_consumer() {
        crate::metrics::dropped("slow_consumer");
    }
    let Ending::Close(reason) = ending else {
        return;
    };
    if reason == CloseReason::MESSAGE_TOO_BIG {
        crate::metrics::dropped("too_large");
    }
    if reason == CloseReason::SLOW_CONSUMER {
        conn.discard_queued();
    }
    link.close_with(conn, reason, write_timeout).await;
}

/// The test-only echo endpoint: the same reader, limits and writer as `/ws`, with every data
/// frame sent back. It exists only when the server runs with `--test-echo-endpoint`.
async fn serve_echo(link: &mut Link, conn: &Arc<ConnHandle>, node: &Herald) {
    conn.set_principal(Principal::new("echo", "echo", Vec::new()));
    let mut session = Session::echo(node.clone(), conn.clone());
    let ending = run(link, &mut session).await;
    Box::pin(finish(
        link,
        conn,
        ending,
        node.config().limits.write_timeout,
    ))
    .await;
}

async fn run(link: &mut Link, session: &mut Session) -> Ending {
    let node = session.node().clone();
    let conn = session.conn().clone();
    let limits = &node.config().limits;
    // One timer for the three deadlines (the next ping, the client's silence, the token's
    // expiry): it fires at the earliest, and each firing re-arms it. A read only records its
    // time, so a busy connection does not touch the timer wheel per message.
    let mut clock = Clock {
        next_ping: Instant::now() + limits.ping_interval,
        last_read: Instant::now(),
        expires: session.expiry_instant(),
        pong_timeout: limits.pong_timeout,
    };
    let timer = sleep_until(clock.earliest());
    tokio::pin!(timer);
    // The node's shared shutdown token is not watched here (that would put one lock on the
    // path of every wake-up): shutdown closes each registered connection through its handle.
    let closing =
        |conn: &ConnHandle| Ending::Close(conn.close_reason().unwrap_or(CloseReason::DISCONNECTED));
    loop {
        tokio::select! {
            biased;
            _ = conn.woken() => match conn.attention() {
                Attention::Close(reason) => return Ending::Close(reason),
                Attention::Failed => return Ending::Gone("write_failed"),
                Attention::Blocked | Attention::Frames => {
                    if let Err(e) = Box::pin(link.write_some(&conn, limits.write_timeout)).await {
                        // A slow consumer is told to close while its write may be stuck:
                        // stop waiting for the write then.
                        return match conn.close_reason() {
                            Some(_) => closing(&conn),
                            None => write_failure(e),
                        };
                    }
                }
                Attention::Nothing => {}
            },
            // Before reading: a client that keeps the socket readable still meets its deadlines.
            _ = &mut timer => {
                let now = Instant::now();
                // No frame at all from the client (pong included) for this long: it is gone.
                if now >= clock.last_read + clock.pong_timeout {
                    return Ending::Gone("pong_timeout");
                }
                if now >= clock.expires {
                    session.token_expired();
                    return Ending::Close(CloseReason::TOKEN_EXPIRED);
                }
                if now >= clock.next_ping {
                    clock.next_ping = now + limits.ping_interval;
                    if let Err(e) = Box::pin(link.ping(&conn, limits.write_timeout)).await {
                        return write_failure(e);
                    }
                }
                timer.as_mut().reset(clock.earliest());
            }
            incoming = link.recv(&conn) => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    None => return Ending::Gone("client_gone"),
                    Some(Err(e)) => return read_failure(e),
                };
                clock.last_read = Instant::now();
                // Boxed: a command's future (engines, replies) is large and the connection
                // spends its life waiting, so the task keeps only the waiting state.
                match Box::pin(handle(message, link, session)).await {
                    Next::ExpiryChanged => {
                        clock.expires = session.expiry_instant();
                        timer.as_mut().reset(clock.earliest());
                    }
                    Next::End(ending) => return ending,
                    Next::Continue | Next::Recover { .. } => {}
                }
            }
        }
    }
}

/// A connection's deadlines, behind its one timer.
struct Clock {
    next_ping: Instant,
    last_read: Instant,
    expires: Instant,
    pong_timeout: Duration,
}

impl Clock {
    fn earliest(&self) -> Instant {
        self.next_ping
            .min(self.last_read + self.pong_timeout)
            .min(self.expires)
    }
}

/// What the connection loop does after a client message.
pub(crate) enum Next {
    Continue,
    /// A refresh changed when the token expires.
    ExpiryChanged,
    /// A subscription that resumes from `since` on a topic with history: the loop first writes
    /// what is queued, then calls [`Session::recover`] and writes its frames directly, so the
    /// replay comes after every earlier frame and before every later live message.
    /// A batch may resume several topics: `topics` all carry `since`.
    Recover {
        topics: Vec<Wanted>,
        style: ReplyStyle,
        reference: Option<Value>,
    },
    /// The connection ends.
    End(Ending),
}

/// Handles one message from the client; never returns [`Next::Recover`] (it does it).
async fn handle(message: Message, link: &mut Link, session: &mut Session) -> Next {
    let node = session.node().clone();
    let conn = session.conn().clone();
    let write_timeout = node.config().limits.write_timeout;
    node.hub()
        .counters
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let next = match message {
        Message::Text(text) => session.on_text(text).await,
        Message::Binary(bytes) => session.on_binary(bytes).await,
        Message::Ping(_) => {
            session.on_ping();
            Next::Continue
        }
        Message::Pong(_) => {
            conn.touch_heartbeat();
            Next::Continue
        }
        Message::Close(_) => {
            link.answer_close(&conn, write_timeout).await;
            return Next::End(Ending::Gone("client_closed"));
        }
    };
    let next = match next {
        Next::Recover {
            topics,
            style,
            reference,
        } => {
            // Per topic: what was queued before goes first, then the reply and its replay,
            // then live messages (queued meanwhile, behind the replay). One topic at a time
            // keeps what is held in memory to one topic's replay.
            for Wanted { topic, since } in topics {
                let Some(since) = since else { continue };
                conn.hold();
                if let Err(e) = link.drain(&conn, write_timeout).await {
                    conn.release();
                    return Next::End(write_failure(e));
                }
                let (frames, fresh) = session
                    .recover(&topic, &since, style, reference.as_ref())
                    .await;
                node.hub()
                    .counters
                    .sent
                    .fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
                conn.push_front(frames);
                conn.release();
                if let Err(e) = link.drain(&conn, write_timeout).await {
                    return Next::End(write_failure(e));
                }
                if fresh {
                    session.joined(&topic).await;
                }
            }
            Next::Continue
        }
        other => other,
    };
    if session.too_many_errors() {
        return Next::End(Ending::Close(CloseReason::TOO_MANY_ERRORS));
    }
    next
}

/// Maps a failed write to how the connection ends: a client that took nothing within the write
/// deadline is a slow consumer, like one whose queue filled.
fn write_failure(error: WriteError) -> Ending {
    match error {
        WriteError::TimedOut => Ending::Gone("write_timeout"),
        WriteError::Failed => Ending::Gone("write_failed"),
    }
}

/// Maps a failed read to how the connection ends: the client's frames were refused (too big,
/// not UTF-8, not the protocol) or the socket failed.
fn read_failure(error: ReadError) -> Ending {
    match error {
        ReadError::TooBig => Ending::Close(CloseReason::MESSAGE_TOO_BIG),
        ReadError::InvalidUtf8 => Ending::Close(CloseReason::INVALID_UTF8),
        ReadError::Protocol => Ending::Close(CloseReason::PROTOCOL_ERROR),
        ReadError::Gone => Ending::Gone("client_gone"),
    }
}
