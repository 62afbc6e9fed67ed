//! RFC 6455 framing for connections whose socket Herald writes itself (see
//! [`crate::hub::outbox`]): client frames parsed from whatever one read returned, and server
//! frames as a header beside the shared payload, so one publication's bytes go to every
//! recipient's `writev` without a copy.
//!
//! Why not tungstenite here: it owns its stream and writes through its own buffer, so a frame
//! cannot be written from outside the connection's task, and it keeps a read buffer per
//! connection while idle. The header grammar itself is tungstenite's ([`FrameHeader::parse`]);
//! what is here is masking, reassembly, the size limit and UTF-8, checked by the Autobahn
//! cases 1-11 in CI (docs/CONFORMANCE.md).

use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// Why reading from the client failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A message beyond the size limit.
    TooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// Frames that break RFC 6455 (or RFC 7692).
    Protocol,
    /// The TCP connection ended or failed.
    Gone,
}

/// The longest server frame header: opcode byte, length byte, 8 length bytes (server frames
/// are not masked), and for a close frame its 2-byte code, carried here beside the header.
pub const HEAD_MAX: usize = 12;

/// A server frame's header (and a close frame's code) in a small array.
#[derive(Clone, Copy)]
pub struct Head {
    bytes: [u8; HEAD_MAX],
    len: u8,
}

impl Head {
    pub const EMPTY: Self = Self {
        bytes: [0; HEAD_MAX],
        len: 0,
    };

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The header of a server frame for `message` and the payload that follows it.
pub fn server_frame(message: &Message) -> (Head, &[u8]) {
    let (opcode, code, payload): (u8, Option<u16>, &[u8]) = match message {
        Message::Text(text) => (0x1, None, text.as_str().as_bytes()),
        Message::Binary(bytes) => (0x2, None, bytes),
        Message::Ping(bytes) => (0x9, None, bytes),
        Message::Pong(bytes) => (0xA, None, bytes),
        Message::Close(None) => (0x8, None, &[]),
        Message::Close(Some(frame)) => (0x8, Some(frame.code), frame.reason.as_str().as_bytes()),
    };
    let mut bytes = [0u8; HEAD_MAX];
    bytes[0] = 0x80 | opcode;
    let length = payload.len() + if code.is_some() { 2 } else { 0 };
    let mut at = match length {
        0..=125 => {
            bytes[1] = length as u8;
            2
        }
        126..=0xFFFF => {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(length as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(length as u64).to_be_bytes());
            10
        }
    };
    if let Some(code) = code {
        bytes[at..at + 2].copy_from_slice(&code.to_be_bytes());
        at += 2;
    }
    (
        Head {
            bytes,
            len: at as u8,
        },
        payload,
    )
}

/// How many bytes `message` takes on the wire.
pub fn wire_len(message: &Message) -> usize {
    let (head, payload) = server_frame(message);
    head.as_slice().len() + payload.len()
}

/// A fragmented data message being reassembled.
struct Fragments {
    binary: bool,
    data: Vec<u8>,
    /// For text: the prefix of `data` already known to be UTF-8, so that each fragment is
    /// checked once and an invalid sequence fails at the fragment that holds it.
    checked: usize,
}

/// Parses client frames into messages. Idle, it holds no buffer: bytes are kept only for a
/// frame that a read delivered in part, or a message still arriving in fragments.
#[derive(Default)]
pub struct Reader {
    partial: Vec<u8>,
    fragments: Option<Fragments>,
    max_message: usize,
}

impl Reader {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            ..Self::default()
        }
    }

    /// Takes the bytes one read returned and appends every message they complete to `out`.
    /// An error means the client broke the protocol or a limit: the connection must close.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Message>) -> Result<(), ReadError> {
        if self.partial.is_empty() {
            let used = self.parse(input, out)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            let mut kept = std::mem::take(&mut self.partial);
            kept.extend_from_slice(input);
            let used = self.parse(&kept, out)?;
            kept.drain(..used);
            self.partial = kept;
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            // Give an idle connection's memory back.
            self.partial = Vec::new();
        }
        Ok(())
    }

    /// Parses complete frames from the start of `bytes`; returns how many bytes they took.
    fn parse(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<usize, ReadError> {
        let mut used = 0;
        loop {
            let mut cursor = Cursor::new(&bytes[used..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(used),
                Err(_) => return Err(ReadError::Protocol),
            };
            self.check(&header, length)?;
            let start = used + cursor.position() as usize;
            // Within the limit checked above, so it fits a usize.
            let length = length as usize;
            if bytes.len() - start < length {
                return Ok(used);
            }
            let mut payload = bytes[start..start + length].to_vec();
            if let Some(mask) = header.mask {
                unmask(&mut payload, mask);
            }
            used = start + length;
            if let Some(message) = self.complete(&header, payload)? {
                out.push(message);
            }
        }
    }

    /// What can be refused from the header alone, before the payload is read.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<(), ReadError> {
        // No extension is negotiated on these connections; clients must mask (RFC 6455 5.1).
        if header.rsv1 || header.rsv2 || header.rsv3 || header.mask.is_none() {
            return Err(ReadError::Protocol);
        }
        match header.opcode {
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(ReadError::Protocol)
            }
            OpCode::Control(_) if length > 125 || !header.is_final => Err(ReadError::Protocol),
            OpCode::Data(_) => {
                let so_far = self.fragments.as_ref().map_or(0, |f| f.data.len() as u64);
                if so_far.saturating_add(length) > self.max_message as u64 {
                    Err(ReadError::TooBig)
                } else {
                    Ok(())
                }
            }
            OpCode::Control(_) => Ok(()),
        }
    }

    /// The message a frame completes, if any.
    fn complete(
        &mut self,
        header: &FrameHeader,
        payload: Vec<u8>,
    ) -> Result<Option<Message>, ReadError> {
        let binary = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Message::Ping(payload.into()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Message::Pong(payload.into()))),
            OpCode::Control(_) => return close_message(&payload).map(Some),
            OpCode::Data(Data::Continue) => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(ReadError::Protocol);
                };
                fragments.data.extend_from_slice(&payload);
                if !fragments.binary {
                    fragments.checked = check_utf8(&fragments.data, fragments.checked)?;
                }
                if !header.is_final {
                    return Ok(None);
                }
                let Some(done) = self.fragments.take() else {
                    return Err(ReadError::Protocol);
                };
                return data_message(done.binary, done.data).map(Some);
            }
            OpCode::Data(Data::Binary) => true,
            OpCode::Data(_) => false,
        };
        if self.fragments.is_some() {
            // A new data message before the fragmented one ended.
            return Err(ReadError::Protocol);
        }
        if header.is_final {
            return data_message(binary, payload).map(Some);
        }
        let checked = if binary { 0 } else { check_utf8(&payload, 0)? };
        self.fragments = Some(Fragments {
            binary,
            data: payload,
            checked,
        });
        Ok(None)
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Checks `data[from..]` for UTF-8, allowing an incomplete sequence at the end (the next
/// fragment may complete it); returns how far the data is known to be valid.
fn check_utf8(data: &[u8], from: usize) -> Result<usize, ReadError> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() => Ok(from + e.valid_up_to()),
        Err(_) => Err(ReadError::InvalidUtf8),
    }
}

fn data_message(binary: bool, data: Vec<u8>) -> Result<Message, ReadError> {
    if binary {
        return Ok(Message::Binary(Bytes::from(data)));
    }
    match String::from_utf8(data) {
        Ok(text) => Ok(Message::Text(Utf8Bytes::from(text))),
        Err(_) => Err(ReadError::InvalidUtf8),
    }
}

/// A client's close frame: no payload, or a code a peer may send and a UTF-8 reason.
fn close_message(payload: &[u8]) -> Result<Message, ReadError> {
    let [hi, lo, reason @ ..] = payload else {
        return if payload.is_empty() {
            Ok(Message::Close(None))
        } else {
            Err(ReadError::Protocol)
        };
    };
    let code = u16::from_be_bytes([*hi, *lo]);
    if !CloseCode::from(code).is_allowed() {
        return Err(ReadError::Protocol);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as RFC 6455 requires.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        frame
    }

    fn feed_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Message>, ReadError> {
        let mut out = Vec::new();
        reader.feed(bytes, &mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_split_across_reads_are_reassembled_and_the_buffer_is_released() {
        let mut reader = Reader::new(1 << 20);
        let mut bytes = client_frame(0x81, "héllo".as_bytes());
        bytes.extend(client_frame(0x82, &[1; 300]));
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            reader.feed(chunk, &mut got).expect("valid frames");
        }
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Message::Text(t) if t.as_str() == "héllo"));
        assert!(matches!(&got[1], Message::Binary(b) if b.len() == 300));
        assert_eq!(reader.partial.capacity(), 0, "nothing kept while idle");
    }

    #[test]
    fn fragments_form_one_message_with_control_frames_between() {
        let mut reader = Reader::new(1 << 20);
        let mut bytes = client_frame(0x01, b"hel");
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"lo"));
        let got = feed_all(&mut reader, &bytes).expect("valid");
        assert!(matches!(&got[0], Message::Ping(p) if &p[..] == b"p"));
        assert!(matches!(&got[1], Message::Text(t) if t.as_str() == "hello"));
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = [0x81, 0x01, b'x'];
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (unmasked.to_vec(), ReadError::Protocol),
            (client_frame(0xC1, b"x"), ReadError::Protocol), // RSV1
            (client_frame(0x83, b"x"), ReadError::Protocol), // reserved opcode
            (client_frame(0x80, b"x"), ReadError::Protocol), // continuation of nothing
            (client_frame(0x09, b"x"), ReadError::Protocol), // fragmented ping
            (client_frame(0x89, &[0; 126]), ReadError::Protocol), // long ping
            (client_frame(0x88, &[3]), ReadError::Protocol), // 1-byte close
            (
                client_frame(0x88, &1005u16.to_be_bytes()),
                ReadError::Protocol,
            ),
            (client_frame(0x81, &[0xff]), ReadError::InvalidUtf8),
            (client_frame(0x81, &[0; 11]), ReadError::TooBig),
        ];
        for (bytes, expected) in cases {
            let mut reader = Reader::new(10);
            assert_eq!(
                feed_all(&mut reader, &bytes).err(),
                Some(expected),
                "{bytes:x?}"
            );
        }
        let mut reader = Reader::new(1 << 20);
        let mut bytes = client_frame(0x01, b"a");
        bytes.extend(client_frame(0x81, b"b"));
        assert_eq!(
            feed_all(&mut reader, &bytes).err(),
            Some(ReadError::Protocol)
        );
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_holds_it() {
        let mut reader = Reader::new(1 << 20);
        // "é" split across fragments is fine; 0xff is not, before the message ends.
        let ok = feed_all(&mut reader, &client_frame(0x01, &[b'a', 0xc3])).expect("incomplete");
        assert!(ok.is_empty());
        let more = client_frame(0x00, &[0xa9, 0xff]);
        assert_eq!(
            feed_all(&mut reader, &more).err(),
            Some(ReadError::InvalidUtf8)
        );
    }

    #[test]
    fn a_close_frame_keeps_its_code_and_reason() {
        let mut reader = Reader::new(1 << 20);
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let got = feed_all(&mut reader, &client_frame(0x88, &payload)).expect("valid");
        assert!(
            matches!(&got[0], Message::Close(Some(f)) if f.code == 1000 && f.reason.as_str() == "bye")
        );
    }

    #[test]
    fn server_frames_have_the_right_header_for_each_length() {
        for (len, head_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let message = Message::Binary(Bytes::from(vec![7; len]));
            let (head, payload) = server_frame(&message);
            assert_eq!(head.as_slice().len(), head_len);
            assert_eq!(head.as_slice()[0], 0x82);
            assert_eq!(payload.len(), len);
            assert_eq!(wire_len(&message), head_len + len);
        }
        let close = Message::Close(Some(CloseFrame {
            code: 1013,
            reason: Utf8Bytes::from_static("slow"),
        }));
        let (head, payload) = server_frame(&close);
        assert_eq!(head.as_slice(), &[0x88, 6, 0x03, 0xf5]);
        assert_eq!(payload, b"slow");
    }
}
