//! The WebSocket under a connection: axum's (tungstenite) for plain connections, yawc's for
//! connections that negotiated permessage-deflate (tungstenite has no compression). Both speak
//! axum's [`Message`], so the connection code is one, and a publication's encoded frame is
//! shared by every plain recipient and compressed per deflate recipient.

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
#[cfg(feature = "compression")]
use {
    axum::body::Bytes,
    axum::extract::ws::{CloseFrame, Utf8Bytes},
    futures_util::Sink,
};

pub use crate::wire::ReadError;

/// A deflate connection's socket, as yawc hands it over after the upgrade.
#[cfg(feature = "compression")]
pub type DeflateSocket = yawc::HttpWebSocket;

/// Writing failed; the connection ends.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The socket is gone.
    Failed,
    /// The client did not take the frames within `write_timeout`: a slow consumer.
    TimedOut,
}

/// One connection's WebSocket.
pub enum Socket {
    /// No extension: tungstenite through axum.
    Plain(Box<WebSocket>),
    /// permessage-deflate negotiated: yawc.
    #[cfg(feature = "compression")]
    Deflate(Box<Deflated>),
}

/// A yawc socket, and whether yawc already sent its close frame (it answers a client's close
/// and fails a bad stream with one of its own; a second close frame would break RFC 6455).
#[cfg(feature = "compression")]
pub struct Deflated {
    ws: DeflateSocket,
    close_sent: bool,
}

#[cfg(feature = "compression")]
impl Socket {
    /// A socket on which permessage-deflate was negotiated.
    pub fn deflate(ws: DeflateSocket) -> Self {
        Self::Deflate(Box::new(Deflated {
            ws,
            close_sent: false,
        }))
    }
}

#[cfg(feature = "compression")]
impl Deflated {
    /// Writes the frames yawc owes the peer (a pong, its close frame): `poll_ready` sends them.
    async fn send_owed(&mut self) {
        let ws = &mut self.ws;
        let _ = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *ws).poll_ready(cx)).await;
        let _ = self.ws.flush().await;
    }
}

impl Socket {
    /// The next message from the client; `None` once the connection ended.
    pub async fn recv(&mut self) -> Option<Result<Message, ReadError>> {
        match self {
            Self::Plain(ws) => Some(ws.recv().await?.map_err(plain_read_error)),
            #[cfg(feature = "compression")]
            Self::Deflate(socket) => loop {
                let frame = match socket.ws.next_frame().await {
                    Ok(frame) => frame,
                    Err(yawc::WebSocketError::ConnectionClosed) => return None,
                    Err(e) => {
                        // yawc queued a close frame with the matching code: send it.
                        socket.close_sent = true;
                        socket.send_owed().await;
                        return Some(Err(deflate_read_error(&e)));
                    }
                };
                match frame.opcode() {
                    yawc::OpCode::Close => {
                        // yawc queued the reply to the client's close: send it now.
                        socket.close_sent = true;
                        socket.send_owed().await;
                    }
                    // yawc queues a pong per ping without bound: reading waits until it is
                    // written, so a client that pings and never reads holds one pong here
                    // (and is dropped when it stays silent past pong_timeout).
                    yawc::OpCode::Ping => socket.send_owed().await,
                    _ => {}
                }
                if let Some(message) = from_yawc(frame) {
                    return Some(message);
                }
            },
        }
    }

    /// Queues a message without flushing.
    pub async fn feed(&mut self, message: Message) -> Result<(), WriteError> {
        match self {
            Self::Plain(ws) => ws.feed(message).await.map_err(|_| WriteError::Failed),
            #[cfg(feature = "compression")]
            Self::Deflate(socket) => {
                if matches!(message, Message::Close(_)) {
                    if socket.close_sent {
                        return Ok(());
                    }
                    socket.close_sent = true;
                }
                socket
                    .ws
                    .feed(to_yawc(message))
                    .await
                    .map_err(|_| WriteError::Failed)
            }
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        match self {
            Self::Plain(ws) => ws.flush().await.map_err(|_| WriteError::Failed),
            #[cfg(feature = "compression")]
            Self::Deflate(socket) => socket.ws.flush().await.map_err(|_| WriteError::Failed),
        }
    }

    /// Queues a message and flushes.
    pub async fn send(&mut self, message: Message) -> Result<(), WriteError> {
        self.feed(message).await?;
        self.flush().await
    }
}

fn plain_read_error(error: axum::Error) -> ReadError {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.into_inner().downcast_ref::<WsError>() {
        // The TCP connection ended without a close frame: the client is simply gone.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => ReadError::Gone,
        Some(WsError::Capacity(_)) => ReadError::TooBig,
        Some(WsError::Utf8(_)) => ReadError::InvalidUtf8,
        Some(WsError::Protocol(_)) => ReadError::Protocol,
        _ => ReadError::Gone,
    }
}

#[cfg(feature = "compression")]
fn deflate_read_error(error: &yawc::WebSocketError) -> ReadError {
    use yawc::WebSocketError as E;
    match error {
        E::FrameTooLarge => ReadError::TooBig,
        E::InvalidUTF8 => ReadError::InvalidUtf8,
        e if e.is_protocol_error() => ReadError::Protocol,
        _ => ReadError::Gone,
    }
}

#[cfg(feature = "compression")]
/// A yawc frame as a message: `None` for what the connection never sees (continuations are
/// reassembled by yawc).
fn from_yawc(frame: yawc::Frame) -> Option<Result<Message, ReadError>> {
    use yawc::OpCode;
    let opcode = frame.opcode();
    let close = (opcode == OpCode::Close).then(|| {
        let code = frame.close_code().map(u16::from);
        let reason = frame
            .close_reason()
            .ok()
            .flatten()
            .unwrap_or("")
            .to_string();
        (code, reason)
    });
    let payload = frame.into_payload();
    Some(Ok(match opcode {
        OpCode::Text => match Utf8Bytes::try_from(payload) {
            Ok(text) => Message::Text(text),
            Err(_) => return Some(Err(ReadError::InvalidUtf8)),
        },
        OpCode::Binary => Message::Binary(payload),
        OpCode::Ping => Message::Ping(payload),
        OpCode::Pong => Message::Pong(payload),
        OpCode::Close => Message::Close(close.and_then(|(code, reason)| {
            code.map(|code| CloseFrame {
                code,
                reason: reason.into(),
            })
        })),
        OpCode::Continuation => return None,
    }))
}

#[cfg(feature = "compression")]
fn to_yawc(message: Message) -> yawc::Frame {
    match message {
        Message::Text(text) => yawc::Frame::text(Bytes::from(text)),
        Message::Binary(bytes) => yawc::Frame::binary(bytes),
        Message::Ping(bytes) => yawc::Frame::ping(bytes),
        Message::Pong(bytes) => yawc::Frame::pong(bytes),
        Message::Close(frame) => match frame {
            Some(frame) => yawc::Frame::close(frame.code.into(), frame.reason.as_bytes()),
            None => yawc::Frame::close(yawc::close::CloseCode::Normal, b""),
        },
    }
}
