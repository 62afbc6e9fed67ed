//! The test harness: a real `herald` process on a loopback port, real WebSocket clients, and
//! an HTTP client for the server API. Each test starts its own server in a temp dir.
#![allow(dead_code)]

pub mod redis;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789";
pub const API_KEY: &str = "test-api-key";
/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test listens to be sure a message does not come.
pub const QUIET: Duration = Duration::from_millis(400);

pub fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// A `herald serve` child process; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Server {
    /// Starts a server with the test secret and API key, plus `extra` TOML (top-level keys
    /// first, then tables).
    pub fn start(extra: &str) -> Server {
        Self::start_with(&format!(
            "api_key = \"{API_KEY}\"\n{extra}\n[jwt]\nsecret = \"{SECRET}\"\n"
        ))
    }

    /// Starts a server with exactly this config (plus listen and data_dir).
    pub fn start_with(config: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config, &[])
    }

    /// Starts a server in `dir` with `config` and extra command-line arguments.
    pub fn start_in(dir: tempfile::TempDir, config: &str, args: &[&str]) -> Server {
        let path = dir.path().join("herald.toml");
        let data = dir.path().join("data");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{config}",
            data.display()
        );
        std::fs::write(&path, text).expect("write config");
        let mut all = vec![
            "serve".to_string(),
            "--config".into(),
            path.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let (child, addr) = spawn(&all, &dir.path().join("herald.log"));
        Server {
            child,
            addr,
            dir,
            args: all,
        }
    }

    /// Kills the server (SIGKILL, no goodbye) and starts it again on the same files.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn(&self.args, &self.dir.path().join("herald.log"));
        self.child = child;
        self.addr = addr;
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("herald.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`, ...) and waits (at most 20 s) for the process to exit;
    /// returns its exit code.
    pub fn signal(&mut self, signal: &str) -> Option<i32> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..2000 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("herald did not exit within 20 s of SIGTERM");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ws_url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.addr)
        } else {
            format!("ws://{}/ws?{query}", self.addr)
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A connection authenticated through the query; its `connection.established` is read.
    pub async fn connect(&self, token: &str) -> Client {
        let mut client = Client::connect(&self.ws_url(&format!("token={token}"))).await;
        let hello = client.recv().await;
        assert_eq!(hello["type"], "connection.established", "{hello}");
        client
    }

    /// A connection for `user` (role `user`, no project claims).
    pub async fn user(&self, user: &str) -> Client {
        self.connect(&token(user, "user", &[])).await
    }

    /// `POST /api/v1/publish` with the API key; returns the status and the JSON answer.
    pub async fn publish(&self, body: Value) -> (u16, Value) {
        self.api("POST", "/api/v1/publish", Some(API_KEY), Some(body))
            .await
    }

    /// `POST /api/v1/publish/batch` with the API key: `{"messages": messages}`.
    pub async fn publish_batch(&self, messages: Value) -> (u16, Value) {
        let body = serde_json::json!({ "messages": messages });
        self.api("POST", "/api/v1/publish/batch", Some(API_KEY), Some(body))
            .await
    }

    /// Any API call with an optional bearer credential and JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = reqwest::Client::new().request(method, self.http(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// `POST` with a raw body (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.http(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("http request");
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value)
    }
}

/// Spawns `herald` with `args`, its logs (level info) appended to `log`, and waits for the line
/// that says where it listens.
fn spawn(args: &[String], log: &Path) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(herald_bin())
        .args(args)
        .env_remove("HERALD_LISTEN")
        .env_remove("HERALD_JWT_SECRET")
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_DATA_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn herald");
    let addr = wait_listening(&mut child);
    (child, addr)
}

/// Reads a `herald serve` child's stdout until it says where it listens.
pub fn wait_listening(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("herald exited before listening")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("herald listening on http://") {
            break rest.split_whitespace().next().expect("address").to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// Spawns a `herald serve` command (stdout piped) and waits until it listens; the guard kills
/// it when dropped.
pub fn serving(command: &mut Command) -> (String, Guard) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let addr = wait_listening(&mut child);
    (addr, Guard(child))
}

/// Kills a child process when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most 10 s: how tests wait for
/// something a user would see happen, without timing assertions.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("waited 10 s for {what}");
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An HS256 token signed with the test secret, valid for an hour.
pub fn token(sub: &str, role: &str, projects: &[&str]) -> String {
    sign(&json!({ "sub": sub, "role": role, "projects": projects, "exp": now() + 3600 }))
}

/// Signs any claims with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    sign_with(jsonwebtoken::Algorithm::HS256, claims)
}

pub fn sign_with(alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Waits (at most 10 s) until a WebSocket to `url` is accepted: a connection slot came back
/// once the server saw an earlier connection go.
pub async fn connects_eventually(what: &str, url: &str) {
    eventually(what, || async {
        tokio_tungstenite::connect_async(url).await.ok().map(|_| ())
    })
    .await;
}

/// How a connection attempt ended before the upgrade.
pub async fn refused_status(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A client frame as RFC 6455 wants it from a client: FIN, `opcode` (`0x1` text, `0x9` ping,
/// ...), RSV1 when `compressed` (permessage-deflate), and a masked payload.
pub fn client_frame(opcode: u8, payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode | if compressed { 0x40 } else { 0 }];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A real WebSocket client speaking JSON text frames.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did when the connection ended.
#[derive(Debug, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Client { ws }
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Client {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connect");
        Client { ws }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON, skipping control frames.
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).expect("server sent JSON")
    }

    /// The next frame that is not a ping or a pong.
    async fn next_data_frame(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("websocket error");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    /// The next text frame verbatim.
    pub async fn recv_text(&mut self) -> String {
        match self.next_data_frame().await {
            Message::Text(text) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame as JSON, or `None` once the connection ended (close frame, EOF or
    /// error); pings, pongs and binary frames are skipped.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.ok()?? {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next text frame as JSON if one comes within `wait`.
    pub async fn next_json_within(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.next_json()).await.ok()?
    }

    /// Sends a command and returns the next message.
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// Subscribes and checks the reply.
    pub async fn subscribe(&mut self, topic: &str) {
        let reply = self
            .request(json!({"type": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["data"]["topic"], topic);
    }

    /// Asserts that nothing arrives for a while.
    pub async fn expect_silence(&mut self) {
        match tokio::time::timeout(QUIET, self.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {
                Box::pin(self.expect_silence()).await
            }
            Ok(other) => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns its close code and reason.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the close");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Closed {
                        code: u16::from(frame.code),
                        reason: frame.reason.to_string(),
                    }
                }
                Some(Ok(Message::Close(None))) => {
                    return Closed {
                        code: u16::from(CloseCode::Status),
                        reason: String::new(),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Sends a value as MessagePack in a binary frame.
    pub async fn send_msgpack(&mut self, value: &Value) {
        let bytes = rmp_serde::to_vec_named(value).expect("encode");
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next binary frame, decoded from MessagePack (a text frame is a failure: a msgpack
    /// connection gets binary frames only).
    pub async fn recv_msgpack(&mut self) -> Value {
        match self.next_data_frame().await {
            Message::Binary(bytes) => rmp_serde::from_slice(&bytes).expect("MessagePack"),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Sends any WebSocket message (raw frames included).
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Waits for a WebSocket ping from the server (answered by the client library).
    pub async fn expect_ping(&mut self) {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a ping")
                .expect("connection ended")
                .expect("websocket error");
            if matches!(message, Message::Ping(_)) {
                return;
            }
        }
    }

    /// Keeps reading (so the library answers pings) for `duration`; panics if the server
    /// closes the connection meanwhile.
    pub async fn idle_for(&mut self, duration: Duration) {
        let _ = tokio::time::timeout(duration, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => panic!("closed while idle: {frame:?}"),
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended while idle: {other:?}"),
                }
            }
        })
        .await;
    }

    /// Sends a close frame and waits for the server's reply (the closing handshake).
    pub async fn close_cleanly(mut self) -> Closed {
        self.ws
            .send(Message::Close(None))
            .await
            .expect("send close");
        self.closed().await
    }

    /// Whether the connection still answers a `ping`.
    pub async fn is_alive(&mut self) -> bool {
        let reply = self.request(json!({"type": "ping", "ref": "alive?"})).await;
        reply["type"] == "pong" && reply["ref"] == "alive?"
    }
}

/// A client's positions in its scope streams (docs/PROTOCOL.md section 15): taken from the
/// welcome's `data.streams`, moved on by each delivery that carries `stream`.
#[derive(Debug, Default, Clone)]
pub struct Positions(pub std::collections::BTreeMap<String, (u64, String)>);

impl Positions {
    /// The positions a welcome frame lists.
    pub fn from_welcome(welcome: &Value) -> Positions {
        let streams = welcome["data"]["streams"]
            .as_object()
            .unwrap_or_else(|| panic!("a welcome with streams: {welcome}"));
        Positions(
            streams
                .iter()
                .map(|(name, at)| {
                    let offset = at["offset"].as_u64().expect("offset");
                    let epoch = at["epoch"].as_str().expect("epoch").to_string();
                    (name.clone(), (offset, epoch))
                })
                .collect(),
        )
    }

    /// Moves the position of the delivery's stream on; panics on a gap, a repeat or a
    /// message out of order. Returns the stream's name.
    pub fn advance(&mut self, delivery: &Value) -> String {
        let stream = delivery["stream"]
            .as_str()
            .unwrap_or_else(|| panic!("a delivery with a stream: {delivery}"))
            .to_string();
        let offset = delivery["offset"].as_u64().expect("offset");
        let epoch = delivery["epoch"].as_str().expect("epoch").to_string();
        let at = self.0.entry(stream.clone()).or_insert((0, epoch.clone()));
        assert_eq!(at.1, epoch, "the same epoch in {stream}");
        assert_eq!(
            offset,
            at.0 + 1,
            "{stream}: no gap, no repeat, in order: {delivery}"
        );
        at.0 = offset;
        stream
    }

    /// The `resume` value for these positions.
    pub fn resume(&self) -> Value {
        let streams: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(name, (offset, epoch))| {
                (name.clone(), json!({"offset": offset, "epoch": epoch}))
            })
            .collect();
        Value::Object(streams)
    }

    /// The query of a connection with `token` that resumes from these positions.
    pub fn query(&self, token: &str) -> String {
        let url = reqwest::Url::parse_with_params(
            "ws://x/ws",
            &[("token", token), ("resume", &self.resume().to_string())],
        )
        .expect("url");
        url.query().unwrap_or_default().to_string()
    }
}

/// Publishes `n` events of type `event` to each scope that a connection of `ana` (role
/// editor, project p1) receives, numbered from `from`, the scopes interleaved.
pub async fn publish_to_every_scope(server: &Server, event: &str, from: u64, n: u64) {
    for seq in from..from + n {
        for (scope, target) in [
            ("all", None),
            ("role", Some("editor")),
            ("project", Some("p1")),
            ("user", Some("ana")),
        ] {
            let mut body = json!({"scope": scope, "type": event, "data": {"seq": seq}});
            if let Some(target) = target {
                body["target"] = json!(target);
            }
            let (status, answer) = server.publish(body).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
}

/// Reads `per_stream` deliveries of type `event` of each of ana's four scope streams,
/// checking order per stream.
pub async fn read_every_stream(
    client: &mut Client,
    at: &mut Positions,
    event: &str,
    per_stream: usize,
) {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    while counts.len() < 4 || counts.values().any(|n| *n < per_stream) {
        let got = client.recv().await;
        assert_eq!(got["type"], event, "{got}");
        *counts.entry(at.advance(&got)).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == per_stream), "{counts:?}");
}

/// Waits until a node says it is ready (`/ready` 200: in cluster mode, its Pub/Sub link is up).
pub async fn ready(server: &Server) {
    eventually("the node to be ready", || async {
        let status = reqwest::get(server.http("/ready")).await.ok()?.status();
        (status == 200).then_some(())
    })
    .await;
}
