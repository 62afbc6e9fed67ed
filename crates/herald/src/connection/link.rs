//! A connection's socket as its task uses it, whoever writes it (see [`crate::hub::outbox`]):
//!
//! - [`Link::Direct`]: a TCP socket Herald accepted itself; the task reads and frames client
//!   messages ([`wire::Reader`]) with no buffer while idle, and the node's flusher writes the
//!   connection's queue. The task writes only when the socket was full or before it closes.
//! - [`Link::Socket`]: tungstenite or yawc ([`Socket`]); the task writes the queue itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio::net::TcpStream;

use super::socket::{ReadError, Socket, WriteError};
use crate::auth::Principal;
use crate::hub::{CloseReason, ConnHandle, ConnId, Written};
use crate::node::Herald;
use crate::protocol::Encoding;
use crate::wire;

/// How many queued frames a task-written connection writes before it flushes.
const WRITE_BATCH: usize = 64;

/// How much one wake-up reads at most before the task handles what it read.
const READ_CHUNK: usize = 4096;
const READ_PER_WAKE: usize = 64 * 1024;

/// See the module docs.
pub enum Link {
    Direct(Box<Direct>),
    Socket(Socket),
}

/// A direct connection's read side.
pub struct Direct {
    stream: Arc<TcpStream>,
    reader: wire::Reader,
    /// Messages read but not handed to the task yet.
    pending: VecDeque<Message>,
    /// How reading ended, once it did (handed over after `pending`).
    ended: Option<Option<ReadError>>,
    /// A close frame was queued: RFC 6455 allows nothing after it.
    close_sent: bool,
}

impl Link {
    /// A direct link on an upgraded TCP socket; `early` holds bytes the HTTP server read past
    /// the upgrade request (frames a client sent without waiting for the response).
    pub fn direct(stream: TcpStream, early: &[u8], max_message: usize) -> Self {
        let mut direct = Direct {
            stream: Arc::new(stream),
            reader: wire::Reader::new(max_message),
            pending: VecDeque::new(),
            ended: None,
            close_sent: false,
        };
        if !early.is_empty() {
            direct.take(early);
        }
        Self::Direct(Box::new(direct))
    }

    /// The connection's handle, written the way this link is.
    pub fn handle(
        &self,
        node: &Herald,
        id: ConnId,
        remote: Option<std::net::SocketAddr>,
        encoding: Encoding,
    ) -> Arc<ConnHandle> {
        let capacity = node.config().limits.send_queue;
        // Who it is is known after authentication (`ConnHandle::set_principal`).
        let nobody = Principal::new("", "", Vec::new());
        match self {
            Self::Direct(direct) => ConnHandle::direct(
                id,
                nobody,
                remote,
                encoding,
                capacity,
                direct.stream.clone(),
                node.flushers().of(id),
            ),
            Self::Socket(_) => ConnHandle::new(id, nobody, remote, encoding, capacity),
        }
    }

    /// The next message from the client; `None` once the connection ended. A ping is answered
    /// and a close frame echoed (queued) before the message is returned. Cancel-safe.
    pub async fn recv(&mut self, conn: &ConnHandle) -> Option<Result<Message, ReadError>> {
        let direct = match self {
            Self::Socket(socket) => return socket.recv().await,
            Self::Direct(direct) => direct,
        };
        loop {
            if let Some(message) = direct.pending.pop_front() {
                match &message {
                    Message::Ping(payload) if !direct.close_sent => {
                        conn.push_pong(Message::Pong(payload.clone()));
                    }
                    Message::Close(frame) if !direct.close_sent => {
                        direct.close_sent = true;
                        conn.push_close(Message::Close(frame.clone()));
                    }
                    _ => {}
                }
                if direct.pending.is_empty() {
                    // Nothing kept while idle.
                    direct.pending = VecDeque::new();
                }
                return Some(Ok(message));
            }
            if let Some(ended) = direct.ended.take() {
                return ended.map(Err);
            }
            if direct.stream.readable().await.is_err() {
                return Some(Err(ReadError::Gone));
            }
            direct.read_available();
        }
    }

    /// Writes everything queued, waiting for the socket as needed (at most `timeout`).
    pub async fn drain(&mut self, conn: &ConnHandle, timeout: Duration) -> Result<(), WriteError> {
        let drain = async {
            match self {
                Self::Direct(direct) => write_direct(&direct.stream, conn).await,
                Self::Socket(socket) => {
                    while write_batch(socket, conn).await? {}
                    Ok(())
                }
            }
        };
        tokio::time::timeout(timeout, drain)
            .await
            .unwrap_or(Err(WriteError::TimedOut))
    }

    /// The task's part of writing after it was woken: a direct connection whose socket was
    /// full is written once the socket takes more; a task-written one writes one batch. Gives
    /// up when the connection is asked to close meanwhile (the caller then closes).
    pub async fn write_some(
        &mut self,
        conn: &ConnHandle,
        timeout: Duration,
    ) -> Result<(), WriteError> {
        let write = async {
            match self {
                Self::Direct(direct) => write_direct(&direct.stream, conn).await,
                Self::Socket(socket) => write_batch(socket, conn).await.map(|_| ()),
            }
        };
        let write = async {
            tokio::select! {
                written = write => written,
                _ = wait_for_close(conn) => Err(WriteError::Failed),
            }
        };
        tokio::time::timeout(timeout, write)
            .await
            .unwrap_or(Err(WriteError::TimedOut))
    }

    /// Sends a ping (after what is queued).
    pub async fn ping(&mut self, conn: &ConnHandle, timeout: Duration) -> Result<(), WriteError> {
        match self {
            Self::Direct(_) => {
                conn.push_ping(Message::Ping(Bytes::new()));
                Ok(())
            }
            Self::Socket(socket) => {
                match tokio::time::timeout(timeout, socket.send(Message::Ping(Bytes::new()))).await
                {
                    Ok(result) => result,
                    Err(_) => Err(WriteError::TimedOut),
                }
            }
        }
    }

    /// Writes what is queued and then the close frame (unless one was sent already).
    async fn send_close(
        &mut self,
        conn: &ConnHandle,
        frame: Message,
        timeout: Duration,
    ) -> Result<(), WriteError> {
        if let Self::Direct(direct) = &mut *self {
            if direct.close_sent {
                return self.drain(conn, timeout).await;
            }
            direct.close_sent = true;
        }
        conn.push_close(frame);
        self.drain(conn, timeout).await
    }

    /// After the client's close frame: sends the answer [`Self::recv`] (or the WebSocket
    /// library) queued, completing the closing handshake.
    /// The server then ends the TCP connection first.
    pub async fn answer_close(&mut self, conn: &ConnHandle, timeout: Duration) {
        let answered = match self {
            Self::Direct(_) => self.drain(conn, timeout).await,
            Self::Socket(socket) => tokio::time::timeout(timeout, socket.flush())
                .await
                .unwrap_or(Err(WriteError::TimedOut)),
        };
        if answered.is_ok() {
            self.end_tcp().await;
        }
    }

    /// Sends a close frame after what is queued, then ends the TCP connection first, as RFC
    /// 6455 7.1.1 asks of a server. A connection the server closes in good order waits briefly
    /// for the client's close frame; one it fails (bad frames: 1002, 1007, 1009) does not,
    /// since such a client may never answer.
    pub async fn close_with(&mut self, conn: &ConnHandle, reason: CloseReason, timeout: Duration) {
        let frame = Message::Close(Some(CloseFrame {
            code: reason.code,
            reason: Utf8Bytes::from_static(reason.reason),
        }));
        if self.send_close(conn, frame, timeout).await.is_err() {
            return;
        }
        if !reason.fails_the_connection() {
            // The deadline is checked per message too: a client that keeps sending keeps the
            // socket readable, and a read that is always ready never lets a timer fire.
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, self.recv(conn)).await {
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None | Some(Err(_))) | Err(_) => break,
                    Ok(Some(Ok(_))) => {}
                }
            }
        }
        self.end_tcp().await;
    }

    /// The server's side of ending the TCP connection after the closing handshake: a FIN
    /// first, then whatever the client still sends is read and dropped until it closes too
    /// (at most [`CLOSE_WAIT`]), so the close frame is not lost to a reset caused by unread
    /// data.
    pub async fn end_tcp(&mut self) {
        let Self::Direct(direct) = self else {
            // The WebSocket libraries end their own TCP connections.
            return;
        };
        let _ = socket2::SockRef::from(&*direct.stream).shutdown(std::net::Shutdown::Write);
        let stream = direct.stream.clone();
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        let mut sink = [0u8; 1024];
        // A client still sending 64 KiB after the close is not listening: reset it.
        let mut left: usize = 64 * 1024;
        while left > 0 && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, stream.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// How long a closing server waits for the client's close frame, then for its end of TCP.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Writes a direct connection's whole queue, waiting whenever its socket is full.
async fn write_direct(stream: &TcpStream, conn: &ConnHandle) -> Result<(), WriteError> {
    loop {
        match conn.write_queued() {
            Written::All => return Ok(()),
            Written::Failed => return Err(WriteError::Failed),
            Written::Blocked => stream.writable().await.map_err(|_| WriteError::Failed)?,
        }
    }
}

/// Writes one batch of a task-written connection's queue and flushes; false if there was
/// nothing to write.
async fn write_batch(socket: &mut Socket, conn: &ConnHandle) -> Result<bool, WriteError> {
    let frames = conn.take_frames(WRITE_BATCH);
    if frames.is_empty() {
        return Ok(false);
    }
    for frame in frames {
        socket.feed(frame).await?;
    }
    socket.flush().await?;
    Ok(true)
}

async fn wait_for_close(conn: &ConnHandle) {
    loop {
        conn.woken().await;
        if conn.close_reason().is_some() {
            return;
        }
    }
}

impl Direct {
    /// Reads what the socket holds (up to a limit) and parses it. A read that fills less than
    /// the chunk has most likely emptied the socket: the next `readable` finds out.
    fn read_available(&mut self) {
        let mut chunk = [0u8; READ_CHUNK];
        let mut total = 0;
        while total < READ_PER_WAKE && self.ended.is_none() {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => self.ended = Some(None),
                Ok(n) => {
                    crate::metrics::received(n);
                    self.take(&chunk[..n]);
                    total += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.ended = Some(Some(ReadError::Gone)),
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let mut messages = Vec::new();
        let result = self.reader.feed(bytes, &mut messages);
        self.pending.extend(messages);
        if let Err(e) = result {
            self.ended = Some(Some(e));
        }
    }
}
