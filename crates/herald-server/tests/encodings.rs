//! Encodings (docs/PROTOCOL.md, section 10): MessagePack in binary frames beside JSON clients.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_msgpack_client_and_a_json_client_on_one_topic_both_get_the_publication() {
    let server = Server::start("");
    let mut packed = Client::connect(&server.ws_url(&format!(
        "encoding=msgpack&token={}",
        token("mp", "user", &[])
    )))
    .await;
    let hello = packed.recv_msgpack().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["user_id"], "mp");
    packed
        .send_msgpack(&json!({"type": "subscribe", "topic": "feed", "ref": 1}))
        .await;
    let reply = packed.recv_msgpack().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["ref"], 1);

    let mut plain = server.user("js").await;
    plain.subscribe("feed").await;

    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "feed", "type": "update", "data": {"n": [1, 2.5, "x"]}}))
        .await;
    assert_eq!(answer["recipients"], 2);
    let a = packed.recv_msgpack().await;
    let b = plain.recv().await;
    assert_eq!(a, b, "the same envelope in both encodings");
    assert_eq!(a["data"], json!({"n": [1, 2.5, "x"]}));
}

#[tokio::test]
async fn msgpack_errors_and_first_message_auth_are_binary_too() {
    let server = Server::start("[limits]\nmax_errors = 100\n");
    let mut client = Client::connect(&server.ws_url("encoding=msgpack")).await;
    assert_eq!(client.recv_msgpack().await["type"], "auth_required");
    client
        .send_msgpack(&json!({"type": "auth", "token": token("ann", "user", &[]), "ref": "a"}))
        .await;
    let ok = client.recv_msgpack().await;
    assert_eq!(ok["type"], "auth_success");
    assert_eq!(ok["ref"], "a");

    client.send_binary(b"\xc1\xc1 not msgpack").await;
    let error = client.recv_msgpack().await;
    assert_eq!(error["data"]["code"], "invalid_message");
    client.send_msgpack(&json!({"type": "teleport"})).await;
    assert_eq!(client.recv_msgpack().await["data"]["code"], "unknown_type");
    client
        .send_msgpack(&json!({"type": "ping", "ref": 2}))
        .await;
    assert_eq!(client.recv_msgpack().await["type"], "pong");
}

#[tokio::test]
async fn an_unknown_encoding_is_refused_before_the_upgrade() {
    let server = Server::start("");
    let (status, body) = refused_status(
        &server.ws_url(&format!("encoding=xml&token={}", token("x", "user", &[]))),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_message");
}

/// A WebSocket client that speaks permessage-deflate (RFC 7692) by hand, so the test sees the
/// wire: the negotiated extension, the RSV1 bit, the compressed bytes.
mod deflate {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct RawClient {
        stream: TcpStream,
        /// The server's answer to `Sec-WebSocket-Extensions`, if any.
        pub extensions: Option<String>,
    }

    /// One frame as it came: whether RSV1 (compressed) was set, the opcode, the payload as
    /// sent (still compressed when RSV1 is set).
    pub struct RawFrame {
        pub compressed: bool,
        pub opcode: u8,
        pub payload: Vec<u8>,
    }

    impl RawClient {
        /// Opens `path` on `addr`, offering permessage-deflate when `offer` is true.
        pub async fn connect(addr: &str, path: &str, offer: bool) -> RawClient {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let extension = if offer {
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            } else {
                ""
            };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream
                    .read_exact(&mut byte)
                    .await
                    .expect("read the response");
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).expect("ASCII headers");
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let extensions = head
                .lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("sec-websocket-extensions:")
                })
                .map(|l| l.split_once(':').map_or("", |(_, v)| v).trim().to_string());
            RawClient { stream, extensions }
        }

        pub async fn read_frame(&mut self) -> RawFrame {
            let read = async {
                let mut head = [0u8; 2];
                self.stream.read_exact(&mut head).await?;
                let len = match head[1] & 0x7f {
                    126 => self.stream.read_u16().await? as usize,
                    127 => self.stream.read_u64().await? as usize,
                    n => n as usize,
                };
                assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
                let mut payload = vec![0u8; len];
                self.stream.read_exact(&mut payload).await?;
                Ok::<_, std::io::Error>(RawFrame {
                    compressed: head[0] & 0x40 != 0,
                    opcode: head[0] & 0x0f,
                    payload,
                })
            };
            tokio::time::timeout(super::WAIT, read)
                .await
                .expect("timed out waiting for a frame")
                .expect("read a frame")
        }

        /// The next text message as JSON, inflating it when it came compressed.
        pub async fn recv(&mut self) -> (bool, serde_json::Value) {
            loop {
                let frame = self.read_frame().await;
                if frame.opcode != 1 {
                    continue; // pings
                }
                let text = if frame.compressed {
                    inflate(&frame.payload)
                } else {
                    frame.payload
                };
                return (
                    frame.compressed,
                    serde_json::from_slice(&text).expect("JSON"),
                );
            }
        }

        /// Sends a text message, compressed (RSV1) or not, masked as a client must.
        pub async fn send(&mut self, text: &str, compress: bool) {
            let payload = if compress {
                deflate(text.as_bytes())
            } else {
                text.as_bytes().to_vec()
            };
            let frame = crate::common::client_frame(0x1, &payload, compress);
            self.stream.write_all(&frame).await.expect("send");
        }
    }

    /// RFC 7692: the message is a raw deflate stream ending in an empty stored block, whose
    /// last four bytes (00 00 ff ff) are left off the wire.
    pub fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        // decompress_vec fills only the capacity it is given: room for any test message.
        let mut out = Vec::with_capacity(1 << 20);
        let mut inflater = Decompress::new(false);
        inflater
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("valid deflate");
        out
    }

    pub fn deflate(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        let mut deflater = Compress::new(Compression::default(), false);
        deflater
            .compress_vec(text, &mut out, FlushCompress::Sync)
            .expect("deflate");
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }
}

#[tokio::test]
async fn a_deflate_client_and_a_plain_client_on_one_topic_both_get_the_publication() {
    let server = Server::start("compression = true");
    let path = format!("/ws?token={}", token("zip", "user", &[]));
    let mut zipped = deflate::RawClient::connect(&server.addr, &path, true).await;
    let negotiated = zipped.extensions.clone().unwrap_or_default();
    assert!(negotiated.starts_with("permessage-deflate"), "{negotiated}");
    assert!(
        negotiated.contains("server_no_context_takeover"),
        "{negotiated}"
    );
    let (_, hello) = zipped.recv().await;
    assert_eq!(hello["type"], "connection.established");
    // A compressed command is understood.
    zipped
        .send(r#"{"type": "subscribe", "topic": "feed", "ref": 7}"#, true)
        .await;
    let (_, reply) = zipped.recv().await;
    assert_eq!(
        (reply["type"].clone(), reply["ref"].clone()),
        (json!("subscribed"), json!(7))
    );

    let mut plain = server.user("js").await;
    plain.subscribe("feed").await;
    let text = "all work and no play makes a dull message ".repeat(50);
    let (status, answer) = server
        .publish(
            json!({"scope": "topic", "target": "feed", "type": "update", "data": {"text": text}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (compressed, got) = zipped.recv().await;
    assert!(compressed, "a 2 KB message goes compressed");
    assert_eq!(got["data"]["text"], text);
    assert_eq!(plain.recv().await, got, "the same envelope, plain");

    // Small messages go as they are.
    server
        .publish(json!({"scope": "topic", "target": "feed", "type": "tick", "data": {}}))
        .await;
    let (compressed, tick) = zipped.recv().await;
    assert_eq!(tick["type"], "tick");
    assert!(!compressed, "below the threshold, not worth compressing");
}

#[tokio::test]
async fn without_compression_a_deflate_offer_gets_a_plain_connection() {
    let server = Server::start("");
    let path = format!("/ws?token={}", token("zip", "user", &[]));
    let mut client = deflate::RawClient::connect(&server.addr, &path, true).await;
    assert_eq!(client.extensions, None, "no extension negotiated");
    let (compressed, hello) = client.recv().await;
    assert!(!compressed);
    assert_eq!(hello["type"], "connection.established");
}
