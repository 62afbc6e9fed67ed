//! One socket, one task: it reads client frames and dispatches commands ([`session`]), and
//! drains the connection's queue into the socket in batches with one flush each.
//!
//! Architecture invariant: nothing but this task writes to its socket. Replies to commands go
//! through the same bounded queue as deliveries, so a client sees them in the order they were
//! produced, and a full queue ends the connection (1013) instead of blocking anyone.

mod handshake;
pub mod limits;
mod session;
mod socket;

pub use session::{history_data, presence_users};
pub use socket::Socket;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::auth::Principal;
use crate::hub::{CloseReason, ConnHandle};
use crate::node::Herald;
use crate::protocol::{Encoding, Frame, ReplyStyle};
use crate::publication::Publication;
use session::{Next, Session};
use socket::{ReadError, WriteError};

/// How many queued frames one write gathers before it flushes.
const WRITE_BATCH: usize = 64;

/// What the HTTP upgrade learned before the socket opened.
#[derive(Debug, Default)]
pub struct Start {
    /// Set when the token came in the query or the `Authorization` header.
    pub principal: Option<Principal>,
    /// Topics to subscribe right after authentication (`?project_id=`, `?board_id=`).
    pub auto_topics: Vec<String>,
    pub remote_addr: Option<SocketAddr>,
    /// This connection's hold on its IP's connection slots, released when it ends.
    pub ip_slot: Option<limits::IpSlot>,
    /// The test-only echo endpoint: no auth, every data frame sent back as it came.
    pub echo: bool,
    /// `?encoding=`: JSON text frames or MessagePack binary frames.
    pub encoding: Encoding,
}

/// A remote address for logs: the address, or `-` when the listener did not record it.
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Send this close frame (after flushing what is queued, unless the client is too slow).
    Close(CloseReason),
    /// The client left, went silent, or the socket failed: nothing more to send. The text
    /// says which, for logs and metrics.
    Gone(&'static str),
}

impl Ending {
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
pub async fn serve(mut socket: Socket, node: Herald, start: Start) {
    let limits = node.config().limits.clone();
    if start.echo {
        return serve_echo(socket, node, start).await;
    }
    let (principal, welcome, reference) = match start.principal {
        Some(principal) => (principal, "connection.established", None),
        None => match handshake::await_auth(&mut socket, &node, start.encoding).await {
            Some((principal, reference)) => (principal, "auth_success", reference),
            None => return,
        },
    };
    let (conn, mut outbox) = ConnHandle::new(
        node.hub().next_id(),
        principal,
        start.remote_addr,
        start.encoding,
        limits.send_queue,
    );
    let mut session = Session::new(node.clone(), conn.clone());
    // First the welcome, then the offline inbox, written before anything queued for the
    // connection once it is visible to publishers (registered by `attach`).
    let welcome = session.welcome(welcome, reference.as_ref());
    let inbox = node.attach(&conn).await;
    if node.shutdown_token().is_cancelled() {
        // Registered after shutdown went through the hub: close like the others.
        conn.close(CloseReason::GOING_AWAY);
    }
    let mut first = Vec::with_capacity(inbox.len() + 1);
    first.push(welcome);
    first.extend(inbox.iter().map(Publication::offline_frame));
    let greeted = write_frames(&mut socket, &conn, &node, first, limits.write_timeout).await;
    let who = conn.principal();
    crate::metrics::connection_opened(&who.role);
    tracing::info!(
        client_id = %conn.client_id,
        user_id = %who.user_id,
        role = %who.role,
        remote_addr = %Peer(conn.remote_addr),
        "connection opened"
    );
    for topic in &start.auto_topics {
        session
            .subscribe(topic, None, ReplyStyle::Canonical, None)
            .await;
    }

    let ending = match greeted {
        Ok(()) => run(&mut socket, &mut session, &mut outbox).await,
        Err(_) => Ending::Gone("write_failed"),
    };

    node.forget(&conn).await;
    drop(start.ip_slot);
    crate::metrics::connection_closed(&who.role, ending.label());
    tracing::info!(
        client_id = %conn.client_id,
        user_id = %who.user_id,
        remote_addr = %Peer(conn.remote_addr),
        duration_ms = conn.connected_at.elapsed().unwrap_or_default().as_millis() as u64,
        reason = ending.label(),
        "connection closed"
    );
    if ending == Ending::Close(CloseReason::SLOW_CONSUMER) {
        node.hub()
            .counters
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    finish(&mut socket, &mut outbox, ending, limits.write_timeout).await;
}

/// Says goodbye as the ending requires: what is queued, then the close frame (a slow consumer
/// gets only the close frame, behind what it has not read yet).
async fn finish(
    socket: &mut Socket,
    outbox: &mut mpsc::Receiver<Frame>,
    ending: Ending,
    write_timeout: Duration,
) {
    let Ending::Close(reason) = ending else {
        return;
    };
    match reason {
        CloseReason::SLOW_CONSUMER => crate::metrics::dropped("slow_consumer"),
        CloseReason::MESSAGE_TOO_BIG => crate::metrics::dropped("too_large"),
        _ => {}
    }
    if reason != CloseReason::SLOW_CONSUMER {
        flush_queued(socket, outbox, write_timeout).await;
    }
    close_with(socket, reason, write_timeout).await;
}

/// The test-only echo endpoint: the same reader, limits and writer as `/ws`, with every data
/// frame sent back. It exists only when the server runs with `--test-echo-endpoint`.
async fn serve_echo(mut socket: Socket, node: Herald, start: Start) {
    let limits = node.config().limits.clone();
    let principal = crate::auth::Principal::new("echo", "echo", Vec::new());
    let (conn, mut outbox) = ConnHandle::new(
        node.hub().next_id(),
        principal,
        start.remote_addr,
        Encoding::Json,
        limits.send_queue,
    );
    let mut session = Session::echo(node.clone(), conn);
    let ending = run(&mut socket, &mut session, &mut outbox).await;
    drop(start.ip_slot);
    finish(&mut socket, &mut outbox, ending, limits.write_timeout).await;
}

async fn run(
    socket: &mut Socket,
    session: &mut Session,
    outbox: &mut mpsc::Receiver<Frame>,
) -> Ending {
    let node = session.node().clone();
    let conn = session.conn().clone();
    let limits = &node.config().limits;
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    // No frame at all from the client (pong included) for this long: it is gone.
    let read_deadline = sleep_until(Instant::now() + limits.pong_timeout);
    let expiry = sleep_until(session.expiry_instant());
    // Created once: a `cancelled()` future registers a waiter on its token. The node's shared
    // shutdown token is not watched here (that would put one lock on the path of every
    // delivery): shutdown closes each registered connection through its own handle.
    let closing = conn.closing().cancelled();
    tokio::pin!(read_deadline, expiry, closing);
    loop {
        tokio::select! {
            biased;
            _ = &mut closing => {
                return Ending::Close(conn.close_reason().unwrap_or(CloseReason::DISCONNECTED));
            }
            frame = outbox.recv() => {
                let Some(frame) = frame else { return Ending::Gone("closed") };
                // A slow consumer is told to close while its write may be stuck: stop waiting
                // for the write then (what was written stays buffered, in order, before the
                // close frame).
                let write = write_batch(socket, frame, outbox, limits.write_timeout);
                tokio::select! {
                    written = write => if written.is_err() {
                        return Ending::Gone("write_failed");
                    },
                    _ = &mut closing => {
                        return Ending::Close(conn.close_reason().unwrap_or(CloseReason::DISCONNECTED));
                    }
                }
            }
            incoming = socket.recv() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    None => return Ending::Gone("client_gone"),
                    Some(Err(e)) => return read_failure(e),
                };
                read_deadline.as_mut().reset(Instant::now() + limits.pong_timeout);
                node.hub().counters.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match message {
                    Message::Text(text) => match session.on_text(text).await {
                        Next::Continue => {}
                        Next::ExpiryChanged => expiry.as_mut().reset(session.expiry_instant()),
                        Next::Recover { topic, since, style, reference } => {
                            // What was queued before the subscription goes first, then the
                            // reply and the replay, then (through the queue) live messages.
                            flush_queued(socket, outbox, limits.write_timeout).await;
                            let (frames, fresh) =
                                session.recover(&topic, &since, style, reference.as_ref()).await;
                            if write_frames(socket, &conn, &node, frames, limits.write_timeout).await.is_err() {
                                return Ending::Gone("write_failed");
                            }
                            if fresh {
                                session.joined(&topic).await;
                            }
                        }
                    },
                    Message::Binary(bytes) => {
                        if let Next::ExpiryChanged = session.on_binary(bytes).await {
                            expiry.as_mut().reset(session.expiry_instant());
                        }
                    }
                    Message::Ping(_) | Message::Pong(_) => conn.touch_heartbeat(),
                    Message::Close(_) => {
                        // The WebSocket layer queued the reply to the client's close frame;
                        // flushing sends it, completing the closing handshake.
                        let _ = tokio::time::timeout(limits.write_timeout, socket.flush()).await;
                        return Ending::Gone("client_closed");
                    }
                }
                if session.too_many_errors() {
                    return Ending::Close(CloseReason::TOO_MANY_ERRORS);
                }
            }
            _ = ping.tick() => {
                let sent = tokio::time::timeout(limits.write_timeout, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Ending::Gone("write_failed");
                }
            }
            _ = &mut read_deadline => return Ending::Gone("pong_timeout"),
            _ = &mut expiry => {
                session.token_expired();
                return Ending::Close(CloseReason::TOKEN_EXPIRED);
            }
        }
    }
}

/// Maps a failed read to how the connection ends: the WebSocket layer refused the client's
/// frames (too big, not UTF-8, not the protocol) or the socket failed.
fn read_failure(error: ReadError) -> Ending {
    match error {
        ReadError::TooBig => Ending::Close(CloseReason::MESSAGE_TOO_BIG),
        ReadError::InvalidUtf8 => Ending::Close(CloseReason::INVALID_UTF8),
        ReadError::Protocol => Ending::Close(CloseReason::PROTOCOL_ERROR),
        ReadError::Gone => Ending::Gone("client_gone"),
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut Socket,
    first: Frame,
    outbox: &mut mpsc::Receiver<Frame>,
    write_timeout: Duration,
) -> Result<(), WriteError> {
    let write = async {
        socket.feed(first).await?;
        for _ in 1..WRITE_BATCH {
            match outbox.try_recv() {
                Ok(frame) => socket.feed(frame).await?,
                Err(_) => break,
            }
        }
        socket.flush().await
    };
    tokio::time::timeout(write_timeout, write)
        .await
        .unwrap_or(Err(WriteError))
}

/// Writes frames straight to the socket (not through the queue), in the connection's
/// encoding, then flushes once. They count as sent like queued ones.
async fn write_frames(
    socket: &mut Socket,
    conn: &ConnHandle,
    node: &Herald,
    frames: Vec<Frame>,
    write_timeout: Duration,
) -> Result<(), WriteError> {
    node.hub()
        .counters
        .sent
        .fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let write = async {
        for frame in frames {
            socket.feed(conn.encoding.encode(&frame)).await?;
        }
        socket.flush().await
    };
    tokio::time::timeout(write_timeout, write)
        .await
        .unwrap_or(Err(WriteError))
}

/// Writes what is still queued before a close frame (a reply such as `token_expired`).
async fn flush_queued(
    socket: &mut Socket,
    outbox: &mut mpsc::Receiver<Frame>,
    write_timeout: Duration,
) {
    while let Ok(frame) = outbox.try_recv() {
        if write_batch(socket, frame, outbox, write_timeout)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends a close frame, then waits briefly for the client's own close so that the TCP
/// connection ends cleanly and the client reads the code.
pub(crate) async fn close_with(socket: &mut Socket, reason: CloseReason, write_timeout: Duration) {
    let frame = Message::Close(Some(CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from_static(reason.reason),
    }));
    if !matches!(
        tokio::time::timeout(write_timeout, socket.send(frame)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
