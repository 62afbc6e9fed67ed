//! A minimal WebSocket client for the load tool's plain connections: the handshake by hand,
//! then frames parsed straight from a byte buffer, so one `read` takes every frame the socket
//! holds and a message costs a scan for `"sent_us":` rather than a JSON tree. The tool runs on
//! one core and must read faster than the server writes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Failure;

const OPCODE_TEXT: u8 = 1;
const OPCODE_CLOSE: u8 = 8;

pub struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data not yet parsed: `buf[start..end]`.
    start: usize,
    end: usize,
}

/// One complete frame at the start of `bytes`: (opcode, payload range, frame length).
fn frame_at(bytes: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let [b0, b1, ..] = *bytes else {
        return None;
    };
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    // Server frames are never masked (RFC 6455 5.1).
    let total = header + len;
    (bytes.len() >= total).then_some((b0 & 0x0f, header..total, total))
}

/// The number after `"sent_us":` in a message, if any.
pub fn sent_us(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    digits.try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// A TCP connection to `addr`, bound to `source` when given (past ~25,000 connections one
/// source address runs out of ephemeral ports).
pub async fn tcp_to(addr: &str, source: Option<std::net::IpAddr>) -> Result<TcpStream, Failure> {
    let tcp = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let target = tokio::net::lookup_host(addr)
                .await?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or("no address of the source's family")?;
            let socket = match ip {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(target).await?
        }
    };
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

impl Raw {
    /// Opens `path` on `addr` (from `source`, when given) with `headers` (each line ending in
    /// CRLF) and completes the WebSocket handshake.
    pub async fn connect(
        addr: &str,
        path: &str,
        headers: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Raw, Failure> {
        let mut tcp = tcp_to(addr, source).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut raw = Raw {
            tcp,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        };
        loop {
            raw.fill().await?;
            let head = &raw.buf[..raw.end];
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !head.starts_with(b"HTTP/1.1 101") {
                    let status = String::from_utf8_lossy(&head[..at]).into_owned();
                    return Err(format!("upgrade refused: {status}").into());
                }
                raw.start = at + 4;
                return Ok(raw);
            }
        }
    }

    /// Reads what the socket holds (one syscall) after the unparsed bytes; an error at EOF.
    async fn fill(&mut self) -> Result<(), Failure> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.tcp.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err("connection ended".into());
        }
        self.end += n;
        Ok(())
    }

    /// Calls `f` with the payload of every complete text frame now buffered; false once a close
    /// frame came.
    fn drain(&mut self, mut f: impl FnMut(&[u8])) -> bool {
        while let Some((opcode, payload, total)) = frame_at(&self.buf[self.start..self.end]) {
            let at = self.start;
            match opcode {
                OPCODE_TEXT => f(&self.buf[at + payload.start..at + payload.end]),
                OPCODE_CLOSE => return false,
                _ => {} // pings: the runs are shorter than the server's pong timeout
            }
            self.start += total;
        }
        true
    }

    /// The next text message.
    pub async fn recv_text(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            let mut first = None;
            while first.is_none() {
                let Some((opcode, payload, total)) = frame_at(&self.buf[self.start..self.end])
                else {
                    break;
                };
                let at = self.start;
                self.start += total;
                match opcode {
                    OPCODE_TEXT => {
                        first = Some(self.buf[at + payload.start..at + payload.end].to_vec())
                    }
                    OPCODE_CLOSE => return Err("closed".into()),
                    _ => {}
                }
            }
            if let Some(text) = first {
                return Ok(text);
            }
            self.fill().await?;
        }
    }

    /// Reads once and returns the `sent_us` of every message that read completed.
    pub async fn recv_batch(&mut self, out: &mut Vec<Option<u64>>) -> Result<(), Failure> {
        self.fill().await?;
        if self.drain(|payload| out.push(sent_us(payload))) {
            Ok(())
        } else {
            Err("closed".into())
        }
    }

    /// Sends a text message, masked as a client must.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Failure> {
        let payload = text.as_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x1f, 0x2e, 0x3d, 0x4c];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a close frame (code 1000) and stops.
    pub async fn close(&mut self) {
        let _ = self
            .tcp
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await;
        let _ = self.tcp.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_timestamps_are_read_from_bytes() {
        let mut bytes = vec![0x81, 5];
        bytes.extend_from_slice(b"hello");
        bytes.extend_from_slice(&[0x81, 126, 0, 3]);
        assert_eq!(frame_at(&bytes), Some((1, 2..7, 7)));
        assert_eq!(frame_at(&bytes[7..]), None, "incomplete");
        assert_eq!(
            sent_us(br#"{"data":{"seq":1,"sent_us":1234,"pad":"x"}}"#),
            Some(1234)
        );
        assert_eq!(sent_us(br#"{"type":"subscribed"}"#), None);
    }
}
