//! What one hostile client, authenticated or not, can make a node hold, do or say to others:
//! each attack runs against a real server while a normal client keeps being served, and the
//! server's memory is read from /proc before and after.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a node may grow while one attacker works on it.
const RSS_BUDGET_KB: u64 = 64 * 1024;

/// The server process's resident memory, in KiB.
fn rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A TCP client that completes the WebSocket upgrade by hand and reads only the response head.
async fn upgraded(server: &Server, query: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
    let request = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgraded");
    tcp
}

/// Streams empty masked pings for `how_long` without reading anything; returns how many bytes
/// went out before the time was up or the server stopped taking them.
async fn ping_flood(tcp: &mut TcpStream, how_long: Duration) -> usize {
    let ping = client_frame(0x9, &[], false);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 10_000)
        .collect();
    let mut sent = 0;
    let _ = tokio::time::timeout(how_long, async {
        while tcp.write_all(&burst).await.is_ok() {
            sent += burst.len();
        }
    })
    .await;
    sent
}

/// Reads what the server sent (it was never read during the attack) until the connection
/// ends; returns the close code of the server's close frame, if one came.
async fn close_code_after(tcp: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read_all = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read_all.is_ok(),
        "the server ended the attacker's connection"
    );
    // Server frames are unmasked: walk them to the close frame (opcode 8).
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                4,
            ),
            127 if at + 10 <= bytes.len() => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[at + 2..at + 10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n @ 0..=125 => (usize::from(n), 2),
            _ => return None,
        };
        let payload = at + header;
        if opcode == 8 && len >= 2 && payload + 2 <= bytes.len() {
            return Some(u16::from_be_bytes([bytes[payload], bytes[payload + 1]]));
        }
        at = payload + len;
    }
    None
}

/// A normal client on another connection: subscribed to `news`, it gets what is published.
async fn bystander(server: &Server) -> Client {
    let mut client = server.user("bystander").await;
    client.subscribe("news").await;
    client
}

async fn is_served(server: &Server, bystander: &mut Client, seq: u64) {
    let (status, _) = server
        .publish(json!({"scope": "topic", "target": "news", "type": "tick", "data": {"seq": seq}}))
        .await;
    assert_eq!(status, 200);
    let got = bystander.recv().await;
    assert_eq!(got["data"]["seq"], seq, "{got}");
}

#[tokio::test]
async fn pings_before_authentication_cannot_grow_the_node() {
    let server = Server::start("");
    let mut normal = bystander(&server).await;
    let before = rss_kb(&server);
    let mut attacker = upgraded(&server, "").await;
    ping_flood(&mut attacker, Duration::from_secs(4)).await;
    is_served(&server, &mut normal, 1).await;
    let grown = rss_kb(&server).saturating_sub(before);
    assert!(grown < RSS_BUDGET_KB, "grew {grown} KiB");
    assert_eq!(
        close_code_after(&mut attacker).await,
        Some(1008),
        "closed after 16 KiB without authenticating"
    );
    is_served(&server, &mut normal, 2).await;
}

#[tokio::test]
async fn a_ping_flood_from_an_authenticated_client_is_closed() {
    let server = Server::start("");
    let mut normal = bystander(&server).await;
    let before = rss_kb(&server);
    let mut attacker = upgraded(&server, &format!("token={}", token("pinger", "user", &[]))).await;
    // Until the server stops taking them.
    let sent = ping_flood(&mut attacker, Duration::from_secs(20)).await;
    is_served(&server, &mut normal, 1).await;
    let grown = rss_kb(&server).saturating_sub(before);
    assert!(
        grown < RSS_BUDGET_KB,
        "grew {grown} KiB after {sent} bytes of pings"
    );
    // Pings share the command rate: beyond it they count as errors, and enough of them close
    // the connection like a command flood.
    assert_eq!(close_code_after(&mut attacker).await, Some(1008));
    is_served(&server, &mut normal, 2).await;
}

#[tokio::test]
async fn without_a_command_rate_pings_from_a_client_that_never_reads_still_cannot_grow_the_node() {
    let server = Server::start("[limits]\nrate_per_sec = 0\n");
    let mut normal = bystander(&server).await;
    let before = rss_kb(&server);
    let mut attacker = upgraded(&server, &format!("token={}", token("pinger", "user", &[]))).await;
    let sent = ping_flood(&mut attacker, Duration::from_secs(5)).await;
    is_served(&server, &mut normal, 1).await;
    // Its pongs count against its queue: when that is full only the newest ping is answered.
    let grown = rss_kb(&server).saturating_sub(before);
    assert!(
        grown < RSS_BUDGET_KB,
        "grew {grown} KiB after {sent} bytes of pings"
    );
    drop(attacker);
    is_served(&server, &mut normal, 2).await;
}

#[tokio::test]
async fn clients_cannot_publish_frames_that_look_like_the_servers() {
    let server = Server::start("[[namespaces]]\nname = \"chat\"\npublish = true\n");
    let mut listener = server.user("listener").await;
    listener.subscribe("chat:room").await;
    let mut spoofer = server.user("spoofer").await;
    for event in [
        "error",
        "system.alert",
        "connection.established",
        "unsubscribed",
        "auth_success",
        "subscribed",
        "user_joined",
        "pong",
        "herald.anything",
        "Error",
        "lookup.result",
    ] {
        let reply = spoofer
            .request(json!({"type": "publish", "topic": "chat:room", "event": event, "data": {"topic": "chat:room"}, "ref": event}))
            .await;
        assert_eq!(reply["type"], "error", "{event}: {reply}");
        assert_eq!(reply["data"]["code"], "forbidden", "{event}");
        assert_eq!(reply["ref"], event);
        // The error threshold would close the spoofer: reconnect it between attempts.
        spoofer = server.user("spoofer").await;
    }
    // Conduit's `broadcast` alias is refused the same way.
    let reply = spoofer
        .request(json!({"type": "broadcast", "data": {"room": "chat:room", "type": "error", "payload": {}}}))
        .await;
    assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
    // An ordinary event still goes through, and it is the only thing the listener got.
    let reply = spoofer
        .request(json!({"type": "publish", "topic": "chat:room", "event": "said", "data": {}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    let got = listener.recv().await;
    assert_eq!(got["type"], "said", "nothing spoofed came first: {got}");
    listener.expect_silence().await;
}

/// Opens `n` sockets that each send half a request head and stop.
async fn half_requests(server: &Server, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        sockets.push(tcp);
    }
    sockets
}

/// Whether the server closed `tcp` (EOF or reset) within a generous wait.
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn half_sent_requests_and_idle_keep_alives_are_closed() {
    let server =
        Server::start("[limits]\nhttp_header_timeout = \"1s\"\nhttp_idle_timeout = \"2s\"\n");
    let mut normal = bystander(&server).await;
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("fds")
            .count()
    };
    let before = fds();
    let mut slow = half_requests(&server, 300).await;
    eventually("the server to accept the 300 sockets", || async {
        (fds() >= before + 300).then_some(())
    })
    .await;
    is_served(&server, &mut normal, 1).await;
    for tcp in &mut slow {
        assert!(closed_by_server(tcp).await, "a half-sent request is closed");
    }
    eventually("the server to release the sockets", || async {
        (fds() <= before).then_some(())
    })
    .await;

    // A keep-alive connection that answered one request and then idles is closed too.
    let mut idle = TcpStream::connect(&server.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "served first");
    assert!(closed_by_server(&mut idle).await, "then closed when idle");
    // The WebSocket bystander is no HTTP connection: it stays.
    is_served(&server, &mut normal, 2).await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let server = Server::start("[limits]\nmax_subscriptions = 3\n");
    let mut client = server.user("collector").await;
    for topic in ["a", "b", "c"] {
        client.subscribe(topic).await;
    }
    let reply = client
        .request(json!({"type": "subscribe", "topic": "d", "ref": 4}))
        .await;
    assert_eq!(reply["data"]["code"], "limit_exceeded", "{reply}");
    assert_eq!(reply["ref"], 4);
    // Nothing changed: still the three, and one of them again is fine.
    let status = client.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!(["a", "b", "c"]));
    client.subscribe("b").await;
    // After leaving one there is room again.
    client
        .request(json!({"type": "unsubscribe", "topic": "a"}))
        .await;
    client.subscribe("d").await;
    assert!(client.is_alive().await);
}

#[tokio::test]
async fn connections_per_node_are_capped_with_503() {
    let server = Server::start("[limits]\nmax_connections = 2\n");
    let first = server.user("one").await;
    // A connection still authenticating holds a slot too.
    let mut pending = Client::connect(&server.ws_url("")).await;
    assert_eq!(pending.recv().await["type"], "auth_required");
    let (status, body) = refused_status(
        &server.ws_url(&format!("token={}", token("three", "user", &[]))),
        &[],
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "processing_error", "{body}");
    // HTTP is not a WebSocket: the API still answers.
    let (status, _) = server.api("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    drop(first);
    drop(pending);
    let url = server.ws_url(&format!("token={}", token("three", "user", &[])));
    connects_eventually("a slot to free up", &url).await;
}

#[tokio::test]
async fn connections_per_user_are_capped_before_and_after_the_upgrade() {
    let server = Server::start("[limits]\nmax_connections_per_user = 2\n");
    let _one = server.user("greedy").await;
    let two = server.user("greedy").await;
    let url = server.ws_url(&format!("token={}", token("greedy", "user", &[])));
    let (status, body) = refused_status(&url, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // Authenticating by message: refused after the `auth`, with the code, then closed.
    let mut late = Client::connect(&server.ws_url("")).await;
    assert_eq!(late.recv().await["type"], "auth_required");
    let reply = late
        .request(json!({"type": "auth", "token": token("greedy", "user", &[]), "ref": "a"}))
        .await;
    assert_eq!(reply["data"]["code"], "too_many_connections", "{reply}");
    assert_eq!(reply["ref"], "a");
    assert_eq!(late.closed().await.code, 1008);

    // Other users are not affected, and a slot freed is a slot again.
    server.user("modest").await;
    drop(two);
    connects_eventually("the user's slot to free up", &url).await;
}

#[tokio::test]
async fn connections_per_ip_count_every_http_connection() {
    let server = Server::start("[limits]\nmax_connections_per_ip = 2\n");
    // Two idle keep-alive HTTP connections hold the IP's two slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    let (status, body) = server.api("GET", "/health", None, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = refused_status(
        &server.ws_url(&format!("token={}", token("u", "user", &[]))),
        &[],
    )
    .await;
    assert_eq!(status, 429, "a WebSocket upgrade too");
    drop(held);
    eventually("the slots to free up", || async {
        let (status, _) = server.api("GET", "/health", None, None).await;
        (status == 200).then_some(())
    })
    .await;
}

/// Publishes `size`-byte user-scope messages to `user` through `publisher` until one finds
/// no live connection to take it (then a few more); returns every acknowledged id and the
/// answer that found none.
pub async fn publish_until_undelivered(
    publisher: &Server,
    user: &str,
    size: usize,
) -> (Vec<String>, Value) {
    let pad = "u".repeat(size);
    let mut ids = Vec::new();
    let mut undelivered = None;
    for seq in 0..2000 {
        let (status, answer) = publisher
            .publish(json!({"scope": "user", "target": user, "type": "note", "data": {"seq": seq, "pad": pad}}))
            .await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["id"].as_str().expect("id").to_string());
        if answer["recipients"] == 0 && undelivered.is_none() {
            undelivered = Some(answer);
        }
        if undelivered.is_some() && seq >= 200 {
            break;
        }
    }
    (
        ids,
        undelivered.expect("the user's one connection never stopped taking messages"),
    )
}

/// Every id the client reads until its connection ends (a slow consumer's backlog).
async fn drain_ids(client: &mut Client) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(message) = client.next_json().await {
        if let Some(id) = message["id"].as_str() {
            ids.push(id.to_string());
        }
    }
    ids
}

/// The ids of a fresh connection's offline inbox.
async fn inbox_ids(client: &mut Client) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(message) = client.next_json_within(Duration::from_secs(2)).await {
        assert_eq!(message["offline"], true, "{message}");
        ids.push(message["id"].as_str().expect("id").to_string());
    }
    ids
}

#[tokio::test]
async fn a_user_message_no_live_connection_took_is_kept_in_the_inbox() {
    // The queue overflows long before a write could time out, however slow the machine: a
    // frame half written when the connection ends by timeout instead reaches the inbox after
    // the messages published meanwhile (noted in docs/GUARANTEES.md).
    let server = Server::start("[limits]\nsend_queue = 4\nwrite_timeout = \"120s\"\n");
    // The user's only connection stops reading: its socket fills, then its queue.
    let mut slow = server.user("busy").await;
    let (ids, undelivered) = publish_until_undelivered(&server, "busy", 60 * 1024).await;
    assert_eq!(
        undelivered["queued"], true,
        "kept, since nobody took it: {undelivered}"
    );
    // What the slow connection received, plus the inbox of a new one, is everything: the
    // messages its queue held when it was closed went back to the inbox too.
    let mut seen = drain_ids(&mut slow).await;
    let mut fresh = server.user("busy").await;
    seen.extend(inbox_ids(&mut fresh).await);
    let missing: Vec<usize> = (0..ids.len())
        .filter(|i| !seen.contains(&ids[*i]))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged #{missing:?} of {} were neither delivered nor kept",
        ids.len()
    );
    assert_eq!(seen, ids, "in publication order, once each");
}

#[tokio::test]
async fn a_token_expiring_in_centuries_is_served_like_any_other() {
    let server = Server::start("");
    for exp in [i64::MAX as u64, u64::MAX] {
        let mut client = server
            .connect(&sign(&json!({"sub": "forever", "exp": exp})))
            .await;
        assert!(client.is_alive().await, "exp {exp}");
        // By first message, and as a refresh, too.
        let mut late = Client::connect(&server.ws_url("")).await;
        assert_eq!(late.recv().await["type"], "auth_required");
        let token = sign(&json!({"sub": "forever", "exp": exp}));
        let reply = late.request(json!({"type": "auth", "token": token})).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        let reply = late
            .request(json!({"type": "refresh", "token": token}))
            .await;
        assert_eq!(reply["type"], "refreshed", "{reply}");
        assert!(late.is_alive().await);
    }
    let mut other = server.user("other").await;
    assert!(other.is_alive().await);
}
