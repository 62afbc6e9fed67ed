//! Limits and health (docs/PROTOCOL.md, section 8), hostile frames, and graceful shutdown: what a
//! slow, silent, buggy or hostile client observes, and that everyone else keeps being served.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let server = Server::start("[limits]\nmax_message_size = 1024\n");
    let mut client = server.user("big").await;
    let padding = "x".repeat(900);
    let reply = client
        .request(json!({"type": "echo", "data": padding}))
        .await;
    assert_eq!(reply["type"], "echo", "under the limit is fine");
    client
        .send(json!({"type": "echo", "data": "x".repeat(2000)}))
        .await;
    let closed = client.closed().await;
    assert_eq!(closed.code, 1009);
}

#[tokio::test]
async fn commands_beyond_the_rate_get_rate_limited() {
    let server = Server::start("[limits]\nrate_per_sec = 1\nrate_burst = 3\nmax_errors = 100\n");
    let mut client = server.user("fast").await;
    for i in 0..6 {
        client.send(json!({"type": "ping", "ref": i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..6 {
        let reply = client.recv().await;
        match reply["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(reply["data"]["code"], "rate_limited");
                assert!(reply["ref"].is_number(), "the ref is kept");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (pongs, limited),
        (3, 3),
        "the burst passes, the rest is refused"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(client.is_alive().await, "the bucket refills");
}

#[tokio::test]
async fn too_many_errors_close_with_1008() {
    let server = Server::start("[limits]\nmax_errors = 3\n");
    let mut client = server.user("clumsy").await;
    for bad in ["{", "[]"] {
        client.send_text(bad).await;
        assert_eq!(client.recv().await["data"]["code"], "invalid_message");
    }
    let reply = client
        .request(json!({"type": "subscribe", "topic": "user:someone-else"}))
        .await;
    assert_eq!(
        reply["data"]["code"], "forbidden",
        "the third error is still answered"
    );
    let closed = client.closed().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: "too many errors".into()
        }
    );
}

/// Publishes `count` messages of `size` bytes to `topic` in batches of 20 (a burst a queue of
/// 64 absorbs); each carries its `seq`.
async fn flood(server: &Server, topic: &str, count: usize, size: usize) {
    let pad = "p".repeat(size);
    for start in (0..count).step_by(20) {
        let messages: Vec<Value> = (start..(start + 20).min(count))
            .map(|seq| json!({"scope": "topic", "target": topic, "type": "bulk", "data": {"seq": seq, "pad": pad}}))
            .collect();
        let (status, _) = server.publish_batch(json!(messages)).await;
        assert_eq!(status, 200, "the publisher never waits on a slow client");
    }
}

async fn stat(server: &Server, name: &str) -> u64 {
    let (_, stats) = server
        .api("GET", "/api/v1/stats", Some(API_KEY), None)
        .await;
    stats[name].as_u64().expect("a count")
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_and_the_others_get_everything() {
    let server = Server::start("[limits]\nsend_queue = 64\nmax_body_size = 4194304\n");
    let mut slow = server.user("slow").await;
    slow.subscribe("feed").await;
    let mut fast = server.user("fast").await;
    fast.subscribe("feed").await;
    const COUNT: usize = 1000;
    let reader = tokio::spawn(async move {
        for expected in 0..COUNT {
            let got = fast.recv().await;
            assert_eq!(got["data"]["seq"], expected, "in order, none missing");
        }
        fast
    });
    // 32 MB: far more than the slow client's socket buffers hold.
    flood(&server, "feed", COUNT, 32 * 1024).await;
    let mut fast = reader.await.expect("the fast client got every message");
    assert!(fast.is_alive().await);
    assert_eq!(stat(&server, "slow_consumers_dropped").await, 1);
    // The slow client finds, after what it had not read, a close with 1013.
    assert_eq!(
        slow.closed().await,
        Closed {
            code: 1013,
            reason: "slow consumer".into()
        }
    );
}

/// Waits until the connection count reaches `expected`.
async fn wait_for_count(server: &Server, expected: u64) {
    eventually(&format!("{expected} connections"), || async {
        let (_, count) = server
            .api("GET", "/api/v1/connections/count", Some(API_KEY), None)
            .await;
        (count["count"] == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_write_stuck_past_the_deadline_drops_the_connection() {
    let server = Server::start(
        "[limits]\nsend_queue = 100000\nwrite_timeout = \"500ms\"\nmax_body_size = 4194304\n",
    );
    let mut stuck = server.user("stuck").await;
    stuck.subscribe("feed").await;
    flood(&server, "feed", 1000, 32 * 1024).await;
    wait_for_count(&server, 0).await;
    let (_, text) = server.api("GET", "/metrics", None, None).await;
    assert!(
        text.as_str().is_some_and(
            |t| t.contains("herald_connections_closed_total{reason=\"write_timeout\"} 1")
        ),
        "{text}"
    );
    // A client too slow for the write deadline is a slow consumer, in stats and metrics.
    assert_eq!(stat(&server, "slow_consumers_dropped").await, 1);
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("herald_drops_total{reason=\"slow_consumer\"} 1")),
        "{text}"
    );
}

/// A TCP client that completes the upgrade by hand and then never answers anything.
async fn raw_upgrade(server: &Server, query: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    tcp
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped_after_the_pong_timeout() {
    let server = Server::start("[limits]\nping_interval = \"200ms\"\npong_timeout = \"800ms\"\n");
    let mut silent = raw_upgrade(&server, &format!("token={}", token("mute", "user", &[]))).await;
    // A well-behaved client (its library answers pings) stays through several timeouts.
    let mut polite = server.user("polite").await;
    polite.expect_ping().await;
    let polite = tokio::spawn(async move {
        polite.idle_for(Duration::from_secs(3)).await;
        polite
    });

    let mut buf = vec![0u8; 4096];
    let mut saw_ping = false;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // Server frames are unmasked: a ping is 0x89 followed by its length.
                Ok(n) => saw_ping |= buf[..n].windows(2).any(|w| w == [0x89, 0x00]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent client was dropped");
    assert!(saw_ping, "it was pinged first");
    let mut polite = polite.await.expect("the polite client stayed connected");
    assert!(polite.is_alive().await, "the polite client is still served");
    assert_eq!(stat(&server, "total_clients").await, 1);
}

#[tokio::test]
async fn connections_per_ip_are_limited_with_429() {
    let server = Server::start("[limits]\nmax_connections_per_ip = 2\n");
    let first = server.user("a").await;
    let _second = server.user("b").await;
    let (status, body) = refused_status(
        &server.ws_url(&format!("token={}", token("c", "user", &[]))),
        &[],
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    drop(first);
    // Its slot comes back once the server saw it go.
    let url = server.ws_url(&format!("token={}", token("c", "user", &[])));
    connects_eventually("the first connection's slot", &url).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = Server::start("");
    let mut client = server.user("utf").await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    client.send_message(Message::Frame(frame)).await;
    assert_eq!(client.closed().await.code, 1007);
}

#[tokio::test]
async fn an_unknown_opcode_closes_with_1002() {
    let server = Server::start("");
    let mut client = server.user("op").await;
    let frame = Frame::message(b"??".to_vec(), OpCode::Data(Data::Reserved(3)), true);
    client.send_message(Message::Frame(frame)).await;
    assert_eq!(client.closed().await.code, 1002);
}

#[tokio::test]
async fn a_fragmented_command_is_reassembled() {
    let server = Server::start("");
    let mut client = server.user("frag").await;
    let text = json!({"type": "echo", "data": "in three parts", "ref": "f"}).to_string();
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(10);
    client
        .send_message(Message::Frame(Frame::message(
            a.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send_message(Message::Frame(Frame::message(
            b.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await;
    client
        .send_message(Message::Frame(Frame::message(
            c.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["data"]["original"], "in three parts");
    assert_eq!(reply["ref"], "f");
}

#[tokio::test]
async fn hostile_json_gets_invalid_message_and_changes_nothing() {
    let server = Server::start("[limits]\nmax_errors = 100\n");
    let mut client = server.user("evil").await;
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let cases = [
        deep.clone(),
        format!(r#"{{"type": "subscribe", "topic": {deep}}}"#),
        format!(
            r#"{{"type": "subscribe", "topic": "{}"}}"#,
            "a".repeat(30_000)
        ),
        r#"{"type": 12}"#.to_string(),
        r#"{"type": "subscribe", "topic": ["a"]}"#.to_string(),
        r#"{"type": "refresh", "token": 5}"#.to_string(),
        r#"{"type": "publish", "topic": "x", "event": {}}"#.to_string(),
        r#"{"type": "history", "topic": "x", "limit": -1}"#.to_string(),
        r#"{"type": "ack", "ids": [1, 2]}"#.to_string(),
        r#"{"type": "subscribe", "topic": "x", "since": {"offset": "1", "epoch": 2}}"#.to_string(),
        "\u{0}".to_string(),
        String::new(),
    ];
    for case in &cases {
        client.send_text(case).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{}", &case[..case.len().min(60)]);
        assert_eq!(
            reply["data"]["code"],
            "invalid_message",
            "{}",
            &case[..case.len().min(60)]
        );
    }
    let status = client.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!([]), "nothing changed");
}

#[tokio::test]
async fn a_token_signed_by_a_deleted_key_is_refused() {
    let old = Server::start_with("[jwt]\nsecret = \"the-old-secret\"\n");
    let signed_by_old = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "a", "exp": now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"the-old-secret"),
    )
    .expect("sign");
    old.connect(&signed_by_old).await;
    // The key was rotated: the server now knows only the new one.
    let rotated = Server::start_with("[jwt]\nsecret = \"the-new-secret\"\n");
    let (status, _) = refused_status(&rotated.ws_url(&format!("token={signed_by_old}")), &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sigterm_says_going_away_to_everyone_and_exits_0() {
    let mut server = Server::start("");
    let mut a = server.user("a").await;
    let mut b = server.user("b").await;
    let mut waiting = Client::connect(&server.ws_url("")).await;
    assert_eq!(waiting.recv().await["type"], "auth_required");
    a.subscribe("news").await;
    let addr = server.addr.clone();
    let code = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    let going_away = Closed {
        code: 1001,
        reason: "going away".into(),
    };
    assert_eq!(a.closed().await, going_away);
    assert_eq!(b.closed().await, going_away);
    assert_eq!(
        waiting.closed().await,
        going_away,
        "even before authenticating"
    );
    assert_eq!(code, Some(0));
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    let server = Server::start("");
    let client = server.user("bye").await;
    let reply = client.close_cleanly().await;
    assert_eq!(
        reply.code, 1005,
        "the reply echoes the client's (empty) close"
    );
}

#[tokio::test]
async fn sigint_shuts_down_gracefully_too() {
    let mut server = Server::start("");
    let mut client = server.user("ctrl-c").await;
    let code = tokio::task::spawn_blocking(move || server.signal("INT"))
        .await
        .expect("join");
    assert_eq!(
        client.closed().await,
        Closed {
            code: 1001,
            reason: "going away".into()
        }
    );
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_client_that_slows_down_when_refused_is_never_closed() {
    let server = Server::start("[limits]\nrate_per_sec = 5\nrate_burst = 3\nmax_errors = 2\n");
    let mut client = server.user("polite").await;
    for round in 0..3 {
        for i in 0..6 {
            client.send(json!({"type": "ping", "ref": i})).await;
        }
        let mut limited = 0;
        for _ in 0..6 {
            let reply = client.recv().await;
            if reply["data"]["code"] == "rate_limited" {
                limited += 1;
            }
        }
        assert!(
            limited >= 2,
            "round {round}: the burst is exceeded ({limited} refused)"
        );
        // Told to slow down, it waits for the bucket to refill.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(
        client.is_alive().await,
        "rate_limited is not an error toward max_errors"
    );
}

#[tokio::test]
async fn a_client_that_ignores_rate_limited_is_closed() {
    let server = Server::start("[limits]\nrate_per_sec = 1\nrate_burst = 3\n");
    let mut client = server.user("pushy").await;
    for i in 0..12 {
        client.send(json!({"type": "ping", "ref": i})).await;
    }
    let closed = client.closed().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: "too many errors".into()
        },
        "more refusals in a row than the burst"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_one_limited_and_shown() {
    let server = Server::start(
        "trusted_proxies = [\"127.0.0.0/8\"]\n[limits]\nmax_connections_per_ip = 1\n",
    );
    let url = server.ws_url(&format!("token={}", token("p", "user", &[])));
    let from = |client: &'static str| [("x-forwarded-for", client)];
    let mut first = Client::connect_with(&url, &from("203.0.113.9")).await;
    assert_eq!(first.recv().await["type"], "connection.established");
    let (status, _) = refused_status(&url, &from("203.0.113.9")).await;
    assert_eq!(status, 429, "the same client through the proxy");
    let mut other = Client::connect_with(&url, &from("203.0.113.10")).await;
    assert_eq!(
        other.recv().await["type"],
        "connection.established",
        "another client through the same proxy has its own slot"
    );
    let (_, listed) = server
        .api("GET", "/api/v1/connections", Some(API_KEY), None)
        .await;
    let mut addrs: Vec<&str> = listed
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["remote_addr"].as_str())
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["203.0.113.10", "203.0.113.9"]);

    // Without trusted proxies the header is the client's word, and ignored.
    let plain = Server::start("[limits]\nmax_connections_per_ip = 1\n");
    let url = plain.ws_url(&format!("token={}", token("p", "user", &[])));
    let mut only = Client::connect_with(&url, &from("203.0.113.9")).await;
    assert_eq!(only.recv().await["type"], "connection.established");
    let (status, _) = refused_status(&url, &from("198.51.100.1")).await;
    assert_eq!(status, 429, "a spoofed header buys no second slot");
}
