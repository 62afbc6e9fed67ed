//! The WebSocket protocol as a client sees it: connecting and authenticating (PROTOCOL.md
//! section 2), commands (3), topic rules (4) and the replaced products' aliases (9).

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

fn assert_timestamp(value: &Value) {
    let text = value.as_str().expect("timestamp is a string");
    // RFC 3339 UTC with milliseconds: 2026-01-06T10:30:01.123Z
    assert_eq!(text.len(), 24, "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
    assert!(humantime::parse_rfc3339(text).is_ok(), "{text}");
}

#[tokio::test]
async fn query_token_gets_connection_established_with_who_it_is() {
    let server = Server::start("");
    let mut client =
        Client::connect(&server.ws_url(&format!("token={}", token("alice", "admin", &[])))).await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["user_id"], "alice");
    assert_eq!(hello["data"]["role"], "admin");
    assert!(hello["data"]["client_id"]
        .as_str()
        .is_some_and(|id| id.len() == 36));
    assert_timestamp(&hello["timestamp"]);
}

#[tokio::test]
async fn bearer_header_authenticates_and_numeric_sub_is_kept_as_text() {
    let server = Server::start("");
    let jwt = sign(&json!({"sub": 42, "exp": now() + 60}));
    let mut client = Client::connect_with(
        &server.ws_url(""),
        &[("authorization", &format!("Bearer {jwt}"))],
    )
    .await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["user_id"], "42");
    assert_eq!(hello["data"]["role"], "user", "role defaults to user");
}

#[tokio::test]
async fn first_message_auth_and_nothing_before_it() {
    let server = Server::start("");
    let mut client = Client::connect(&server.ws_url("")).await;
    assert_eq!(client.recv().await["type"], "auth_required");
    let early = client
        .request(json!({"type": "subscribe", "topic": "news", "ref": 1}))
        .await;
    assert_eq!(early["type"], "error");
    assert_eq!(early["data"]["code"], "unauthorized");
    assert_eq!(early["ref"], 1);
    let ok = client
        .request(json!({"type": "auth", "token": token("bob", "user", &[]), "ref": "a"}))
        .await;
    assert_eq!(ok["type"], "auth_success");
    assert_eq!(ok["data"]["user_id"], "bob");
    assert_eq!(ok["ref"], "a");
    // The early subscribe changed nothing.
    let status = client.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!([]));
}

#[tokio::test]
async fn bad_first_message_auth_is_auth_failed_and_close_1008() {
    let server = Server::start("");
    let mut client = Client::connect(&server.ws_url("")).await;
    assert_eq!(client.recv().await["type"], "auth_required");
    let reply = client
        .request(json!({"type": "auth", "token": "garbage"}))
        .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["data"]["code"], "auth_failed");
    assert_eq!(client.closed().await.code, 1008);
}

#[tokio::test]
async fn no_auth_within_the_timeout_closes_with_1008() {
    let server = Server::start("[limits]\nauth_timeout = \"300ms\"\n");
    let mut client = Client::connect(&server.ws_url("")).await;
    assert_eq!(client.recv().await["type"], "auth_required");
    let closed = client.closed().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: "authentication timeout".into()
        }
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let server = Server::start("");
    let expired = sign(&json!({"sub": "a", "exp": now() - 1}));
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &json!({"sub": "a", "exp": now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret"),
    )
    .expect("sign");
    // alg none: a header and claims with an empty signature.
    use base64_url as b64;
    let none = format!(
        "{}.{}.",
        b64::encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64::encode(&json!({"sub": "a", "exp": now() + 60}).to_string())
    );
    let future = sign(&json!({"sub": "a", "nbf": now() + 3600, "exp": now() + 7200}));
    let no_sub = sign(&json!({"exp": now() + 60}));
    for (name, jwt) in [
        ("expired", expired),
        ("wrong signature", wrong_key),
        ("alg none", none),
        ("garbage", "not.a.token".to_string()),
        ("nbf in the future", future),
        ("no sub", no_sub),
    ] {
        let (status, body) = refused_status(&server.ws_url(&format!("token={jwt}")), &[]).await;
        assert_eq!(status, 401, "{name}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let (status, _) = refused_status(
            &server.ws_url(""),
            &[("authorization", &format!("Bearer {jwt}"))],
        )
        .await;
        assert_eq!(status, 401, "{name} in the header");
    }
}

/// A tiny base64url encoder for hand-made tokens.
mod base64_url {
    pub fn encode(input: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = input.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn every_hmac_algorithm_is_accepted() {
    let server = Server::start("");
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let jwt = sign_with(alg, &json!({"sub": "h", "exp": now() + 60}));
        server.connect(&jwt).await;
    }
}

fn sign_pem(alg: Algorithm, private: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(private)).expect("fixture");
    let key = match alg {
        Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
    }
    .expect("private key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).expect("sign")
}

#[tokio::test]
async fn rs256_with_a_public_key_and_no_hs_confusion() {
    let public = fixture("rsa_public.pem");
    let server = Server::start_with(&format!("[jwt]\npublic_key = \"{}\"\n", public.display()));
    let claims = json!({"sub": "r", "exp": now() + 60});
    server
        .connect(&sign_pem(Algorithm::RS256, "rsa_private.pem", &claims))
        .await;
    // The public key used as an HMAC secret must not pass.
    let pem = std::fs::read(&public).expect("fixture");
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&pem),
    )
    .expect("sign");
    let (status, _) = refused_status(&server.ws_url(&format!("token={confused}")), &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn es256_with_a_public_key() {
    let public = fixture("ec_public.pem");
    let server = Server::start_with(&format!("[jwt]\npublic_key = \"{}\"\n", public.display()));
    let claims = json!({"sub": "e", "exp": now() + 60});
    server
        .connect(&sign_pem(Algorithm::ES256, "ec_private.pem", &claims))
        .await;
    let (status, _) =
        refused_status(&server.ws_url(&format!("token={}", sign(&claims))), &[]).await;
    assert_eq!(
        status, 401,
        "an HS256 token is refused when a public key is configured"
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let server = Server::start_with(&format!(
        "[jwt]\nsecret = \"{SECRET}\"\nissuer = \"https://auth.example\"\naudience = \"herald\"\n"
    ));
    let good = sign(
        &json!({"sub": "i", "iss": "https://auth.example", "aud": "herald", "exp": now() + 60}),
    );
    server.connect(&good).await;
    for claims in [
        json!({"sub": "i", "iss": "https://evil.example", "aud": "herald", "exp": now() + 60}),
        json!({"sub": "i", "iss": "https://auth.example", "aud": "other", "exp": now() + 60}),
        json!({"sub": "i", "exp": now() + 60}),
    ] {
        let (status, _) =
            refused_status(&server.ws_url(&format!("token={}", sign(&claims))), &[]).await;
        assert_eq!(status, 401, "{claims}");
    }
}

#[tokio::test]
async fn an_expiring_token_gets_token_expired_and_close_1008() {
    let server = Server::start("");
    let mut client = server
        .connect(&sign(&json!({"sub": "x", "exp": now() + 1})))
        .await;
    let notice = client.recv().await;
    assert_eq!(notice["type"], "error");
    assert_eq!(notice["data"]["code"], "token_expired");
    assert_eq!(client.closed().await.code, 1008);
}

#[tokio::test]
async fn refresh_with_a_newer_token_keeps_the_connection() {
    let server = Server::start("");
    let mut client = server
        .connect(&sign(&json!({"sub": "x", "exp": now() + 1})))
        .await;
    let reply = client
        .request(json!({"type": "refresh", "token": sign(&json!({"sub": "x", "exp": now() + 3600})), "ref": 9}))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    assert_eq!(reply["ref"], 9);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        client.is_alive().await,
        "the old exp passed and the connection stayed"
    );

    let other = client
        .request(json!({"type": "refresh", "token": token("mallory", "admin", &[])}))
        .await;
    assert_eq!(
        other["data"]["code"], "auth_failed",
        "a token for another user is refused"
    );
}

#[tokio::test]
async fn refused_origin_gets_403_and_allowed_origin_connects() {
    let server = Server::start("allowed_origins = [\"https://app.example.com\"]");
    let url = server.ws_url(&format!("token={}", token("o", "user", &[])));
    let (status, body) = refused_status(&url, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    let mut client = Client::connect_with(&url, &[("origin", "https://app.example.com")]).await;
    assert_eq!(client.recv().await["type"], "connection.established");
}

#[tokio::test]
async fn ping_echo_and_status_answer_with_the_ref() {
    let server = Server::start("");
    let mut client = server.user("carol").await;
    let pong = client.request(json!({"type": "ping", "ref": "p1"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["ref"], "p1");
    assert_timestamp(&pong["data"]["timestamp"]);

    let echo = client
        .request(json!({"type": "echo", "data": {"a": [1, 2]}, "ref": 7}))
        .await;
    assert_eq!(echo["type"], "echo");
    assert_eq!(echo["data"], json!({"original": {"a": [1, 2]}}));
    assert_eq!(echo["ref"], 7);

    client.subscribe("news").await;
    let status = client.request(json!({"type": "status"})).await;
    let data = &status["data"];
    assert_eq!(data["user_id"], "carol");
    assert_eq!(data["role"], "user");
    assert!(data["client_id"].is_string());
    assert_timestamp(&data["connected_at"]);
    assert_timestamp(&data["last_heartbeat"]);
    assert!(data["connection_duration"]
        .as_f64()
        .is_some_and(|d| d >= 0.0));
    assert_eq!(data["topics"], json!(["news"]));
}

#[tokio::test]
async fn malformed_and_unknown_commands_get_errors_and_the_connection_stays() {
    let server = Server::start("[limits]\nmax_errors = 100\n");
    let mut client = server.user("dave").await;
    client.send_text("{not json").await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["data"]["code"], "invalid_message");

    let reply = client.request(json!({"topic": "news"})).await;
    assert_eq!(reply["data"]["code"], "invalid_message", "missing type");

    let reply = client
        .request(json!({"type": "subscribe", "topic": 5, "ref": "r"}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message", "wrong kind");
    assert_eq!(reply["ref"], "r");

    let reply = client.request(json!({"type": "teleport", "ref": 3})).await;
    assert_eq!(reply["data"]["code"], "unknown_type");
    assert_eq!(reply["ref"], 3);

    client.send_binary(b"\x01\x02").await;
    assert_eq!(
        client.recv().await["data"]["code"],
        "invalid_message",
        "binary without msgpack"
    );

    let reply = client
        .request(json!({"type": "subscribe", "topic": "bad topic!"}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message", "topic characters");

    assert!(client.is_alive().await);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_replies() {
    let server = Server::start("");
    let mut client = server.user("erin").await;
    let reply = client
        .request(json!({"type": "subscribe", "topic": "news", "ref": "s"}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["data"]["topic"], "news");
    assert_eq!(reply["ref"], "s");
    let reply = client
        .request(json!({"type": "unsubscribe", "topic": "news", "ref": "u"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(reply["data"], json!({"topic": "news"}));
    assert_eq!(reply["ref"], "u");
    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "news", "type": "n"}))
        .await;
    assert_eq!(answer["recipients"], 0);
    client.expect_silence().await;
}

#[tokio::test]
async fn topic_rules_for_user_role_project_and_namespaces() {
    let server = Server::start(
        "[limits]\nmax_errors = 100\n\
         [[namespaces]]\nname = \"ops\"\nsubscribe = \"role:admin\"\n\
         [[namespaces]]\nname = \"sealed\"\nsubscribe = \"none\"\n\
         [[namespaces]]\nname = \"board\"\nsubscribe = \"members\"\n",
    );
    let mut frank = server.connect(&token("frank", "user", &["p1"])).await;
    let allowed = [
        "user:frank",
        "role:user",
        "project:p1",
        "board:p1",
        "anything:else",
        "plain",
    ];
    for topic in allowed {
        frank.subscribe(topic).await;
    }
    let denied = [
        "user:grace",
        "role:admin",
        "project:p2",
        "ops:alerts",
        "sealed:x",
        "board:p2",
    ];
    for topic in denied {
        let reply = frank
            .request(json!({"type": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "error", "{topic}");
        assert_eq!(reply["data"]["code"], "forbidden", "{topic}");
    }
    let mut admin = server.connect(&token("root", "admin", &[])).await;
    admin.subscribe("ops:alerts").await;
    admin.subscribe("role:admin").await;
}

#[tokio::test]
async fn store_membership_opens_project_topics() {
    let server = Server::start("");
    let mut gina = server.user("gina").await;
    let refused = gina
        .request(json!({"type": "subscribe", "topic": "project:p7"}))
        .await;
    assert_eq!(
        refused["data"]["code"], "forbidden",
        "a non-member is refused"
    );
    let (status, _) = server
        .api(
            "PUT",
            "/api/v1/projects/p7/members/gina",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    gina.subscribe("project:p7").await;
}

#[tokio::test]
async fn client_publish_follows_the_namespace_config() {
    let server = Server::start(
        "[[namespaces]]\nname = \"chat\"\npublish = true\n[[namespaces]]\nname = \"project\"\npublish = true\n",
    );
    let mut hank = server.connect(&token("hank", "user", &["p1"])).await;
    let mut ivy = server.user("ivy").await;
    ivy.subscribe("chat:lobby").await;
    hank.subscribe("chat:lobby").await;

    let reply = hank
        .request(json!({"type": "publish", "topic": "chat:lobby", "event": "say", "data": {"text": "hi"}, "ref": 1}))
        .await;
    // The publisher is subscribed too: the delivery and the reply may come in either order.
    let delivery = if reply["type"] == "published" {
        hank.recv().await
    } else {
        reply.clone()
    };
    let reply = if reply["type"] == "published" {
        reply
    } else {
        hank.recv().await
    };
    assert_eq!(reply["type"], "published");
    assert_eq!(reply["data"]["topic"], "chat:lobby");
    assert_eq!(reply["ref"], 1);
    assert_eq!(delivery["type"], "say");
    assert!(
        reply["data"].get("offset").is_none(),
        "no history, no offset: {reply}"
    );

    let got = ivy.recv().await;
    assert_eq!(got["type"], "say");
    assert_eq!(got["topic"], "chat:lobby");
    assert_eq!(got["data"], json!({"text": "hi"}));
    assert_eq!(got["from"]["user_id"], "hank");
    assert!(got["from"]["client_id"].is_string());
    assert_eq!(got["id"], reply["data"]["id"]);
    assert_timestamp(&got["timestamp"]);

    for topic in ["news", "user:hank", "role:user"] {
        let reply = hank
            .request(json!({"type": "publish", "topic": topic, "event": "e", "data": {}}))
            .await;
        assert_eq!(reply["data"]["code"], "forbidden", "{topic}");
    }
    let reply = ivy
        .request(json!({"type": "publish", "topic": "project:p1", "event": "e"}))
        .await;
    assert_eq!(
        reply["data"]["code"], "forbidden",
        "a non-member may not publish to a project"
    );
    let reply = hank
        .request(json!({"type": "publish", "topic": "project:p1", "event": "e", "ref": "ok"}))
        .await;
    assert_eq!(
        reply["type"], "published",
        "a member may when the project namespace allows it"
    );
}

#[tokio::test]
async fn seed_aliases_work_unchanged() {
    let server = Server::start("");
    let mut kim = server.connect(&token("kim", "user", &["p1"])).await;

    let joined = kim
        .request(json!({"type": "join_room", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(joined["type"], "room_joined");
    assert_eq!(joined["data"], json!({"room": "lobby"}));

    let subscribed = kim
        .request(
            json!({"type": "subscription", "data": {"action": "subscribe", "project_id": "p1"}}),
        )
        .await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["data"]["topic"], "project:p1");

    let pong = kim
        .request(json!({"type": "ping", "timestamp": "2025-10-23T17:00:00Z"}))
        .await;
    assert_eq!(pong["type"], "pong");

    let status = kim.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!(["lobby", "project:p1"]));

    let left = kim
        .request(json!({"type": "leave_room", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(left["type"], "room_left");
    assert_eq!(left["data"], json!({"room": "lobby"}));
    let unsubscribed = kim
        .request(
            json!({"type": "subscription", "data": {"action": "unsubscribe", "project_id": "p1"}}),
        )
        .await;
    assert_eq!(unsubscribed["type"], "unsubscribed");
    assert_eq!(unsubscribed["data"]["topic"], "project:p1");
    let status = kim.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!([]));
}

#[tokio::test]
async fn broadcast_alias_publishes_to_a_room() {
    let server = Server::start("[[namespaces]]\nname = \"room\"\npublish = true\n");
    let mut lee = server.user("lee").await;
    let mut mia = server.user("mia").await;
    mia.request(json!({"type": "join_room", "data": {"room": "room:1"}}))
        .await;
    let reply = lee
        .request(json!({"type": "broadcast", "data": {"room": "room:1", "type": "chat", "payload": {"m": 1}}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    let got = mia.recv().await;
    assert_eq!(got["type"], "chat");
    assert_eq!(got["topic"], "room:1");
    assert_eq!(got["data"], json!({"m": 1}));
}

#[tokio::test]
async fn project_id_and_board_id_on_connect_subscribe_after_auth() {
    let server = Server::start("");
    let jwt = token("ned", "user", &["p5"]);
    let mut client =
        Client::connect(&server.ws_url(&format!("token={jwt}&project_id=p5&board_id=b9"))).await;
    assert_eq!(client.recv().await["type"], "connection.established");
    let first = client.recv().await;
    let second = client.recv().await;
    assert_eq!(first["data"]["topic"], "project:p5");
    assert_eq!(second["data"]["topic"], "board:b9");
    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "board:b9", "type": "board.updated"}))
        .await;
    assert_eq!(answer["recipients"], 1);
    assert_eq!(client.recv().await["type"], "board.updated");

    // The same through first-message auth.
    let mut late = Client::connect(&server.ws_url("project_id=p5")).await;
    assert_eq!(late.recv().await["type"], "auth_required");
    assert_eq!(
        late.request(json!({"type": "auth", "token": jwt})).await["type"],
        "auth_success"
    );
    assert_eq!(late.recv().await["data"]["topic"], "project:p5");

    // A project the user may not see is refused, and the connection stays.
    let mut nosy = Client::connect(
        &server.ws_url(&format!("token={}&project_id=p6", token("oz", "user", &[]))),
    )
    .await;
    assert_eq!(nosy.recv().await["type"], "connection.established");
    assert_eq!(nosy.recv().await["data"]["code"], "forbidden");
    assert!(nosy.is_alive().await);
}

#[tokio::test]
async fn ws_connect_is_an_alias_of_ws() {
    let server = Server::start("");
    let url = format!(
        "ws://{}/ws/connect?token={}",
        server.addr,
        token("pat", "user", &[])
    );
    let mut client = Client::connect(&url).await;
    assert_eq!(client.recv().await["type"], "connection.established");
}

#[tokio::test]
async fn leeway_is_zero_unless_configured() {
    let just_expired = sign(&json!({"sub": "l", "exp": now() - 5}));
    let strict = Server::start("");
    let (status, _) = refused_status(&strict.ws_url(&format!("token={just_expired}")), &[]).await;
    assert_eq!(status, 401);
    let lenient = Server::start_with(&format!("[jwt]\nsecret = \"{SECRET}\"\nleeway = \"60s\"\n"));
    let mut client = lenient.connect(&just_expired).await;
    assert!(
        client.is_alive().await,
        "the leeway applies to the expiry timer too"
    );
}

/// A client that does not wait for the 101 before its first frame: both arrive in one packet,
/// so the server's HTTP layer has read the frame already, and the connection must take it over.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("");
    let mut tcp = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    let mut bytes = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("eager", "user", &[]),
        server.addr
    )
    .into_bytes();
    let command = br#"{"type":"ping","ref":"early"}"#;
    bytes.extend(client_frame(0x1, command, false));
    tcp.write_all(&bytes).await.expect("write");

    let mut seen = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before answering: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains(r#""type":"pong""#) && text.contains(r#""ref":"early""#) {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("the pipelined command was answered");
    let welcome = answered.find("connection.established").expect("welcome");
    let pong = answered.find(r#""type":"pong""#).expect("pong");
    assert!(answered.starts_with("HTTP/1.1 101"), "{answered}");
    assert!(welcome < pong, "the welcome comes first: {answered}");
}

#[tokio::test]
async fn a_client_publish_to_a_topic_with_history_is_answered_with_its_offset() {
    let server =
        Server::start("[[namespaces]]\nname = \"log\"\npublish = true\nhistory_size = 10\n");
    let mut writer = server.user("writer").await;
    for expected in 1..=3 {
        let reply = writer
            .request(json!({"type": "publish", "topic": "log:a", "event": "line", "data": {}}))
            .await;
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["data"]["offset"], expected, "{reply}");
    }
}

#[tokio::test]
async fn the_welcome_and_refreshed_say_when_the_token_expires_by_the_servers_clock() {
    let server = Server::start("");
    let exp = now() + 600;
    let mut client = server
        .connect(&sign(&json!({"sub": "t", "exp": exp})))
        .await;
    // The welcome was read by `connect`; a second connection shows it whole.
    let mut again = Client::connect(
        &server.ws_url(&format!("token={}", sign(&json!({"sub": "t", "exp": exp})))),
    )
    .await;
    let hello = again.recv().await;
    assert_eq!(hello["data"]["expires_at"], exp, "{hello}");
    let left = hello["data"]["expires_in"].as_u64().expect("expires_in");
    assert!((590..=600).contains(&left), "{hello}");

    let reply = client
        .request(
            json!({"type": "refresh", "token": sign(&json!({"sub": "t", "exp": now() + 3600}))}),
        )
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    let left = reply["data"]["expires_in"].as_u64().expect("expires_in");
    assert!((3590..=3600).contains(&left), "{reply}");

    let mut forever =
        Client::connect(&server.ws_url(&format!("token={}", sign(&json!({"sub": "f"}))))).await;
    let hello = forever.recv().await;
    assert!(hello["data"]["expires_in"].is_null(), "{hello}");
    assert!(hello["data"]["expires_at"].is_null(), "{hello}");
}

/// Reads `count` frames and returns them by `data.topic`.
async fn answers_by_topic(
    client: &mut Client,
    count: usize,
) -> std::collections::HashMap<String, Value> {
    let mut answers = std::collections::HashMap::new();
    for _ in 0..count {
        let frame = client.recv().await;
        let topic = frame["data"]["topic"]
            .as_str()
            .expect("a topic")
            .to_string();
        answers.insert(topic, frame);
    }
    answers
}

#[tokio::test]
async fn one_subscribe_with_topics_is_one_command_answered_per_topic() {
    // A burst of 20 commands: 50 topics in one command pass it.
    let server = Server::start("[[namespaces]]\nname = \"log\"\nhistory_size = 10\n");
    let mut client = server.user("many").await;
    let topics: Vec<String> = (0..50).map(|i| format!("board:{i}")).collect();
    client
        .send(json!({"type": "subscribe", "topics": topics, "ref": "b1"}))
        .await;
    let answers = answers_by_topic(&mut client, 50).await;
    for topic in &topics {
        let answer = &answers[topic];
        assert_eq!(answer["type"], "subscribed", "{answer}");
        assert_eq!(answer["ref"], "b1");
    }
    let status = client.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"].as_array().map(Vec::len), Some(50));

    // A refused topic is answered with an error naming it; the others go through, and the
    // command counts once toward max_errors (5 by default) however many were refused.
    let forbidden: Vec<String> = (0..6).map(|i| format!("user:other{i}")).collect();
    let mut mixed = forbidden.clone();
    mixed.push("board:new".into());
    client
        .send(json!({"type": "subscribe", "topics": mixed, "ref": "b2"}))
        .await;
    let answers = answers_by_topic(&mut client, 7).await;
    for topic in &forbidden {
        assert_eq!(
            answers[topic]["data"]["code"], "forbidden",
            "{}",
            answers[topic]
        );
        assert_eq!(answers[topic]["ref"], "b2");
    }
    assert_eq!(answers["board:new"]["type"], "subscribed");
    assert!(
        client.is_alive().await,
        "6 refusals in one command are one error"
    );

    // Topics with history resume from where the client was, in one command.
    server
        .publish(json!({"scope": "topic", "target": "log:a", "type": "t", "data": {"n": 1}}))
        .await;
    let mut resumer = server.user("resumer").await;
    resumer
        .send(json!({"type": "subscribe", "topics": ["log:a", "log:b"]}))
        .await;
    let answers = answers_by_topic(&mut resumer, 2).await;
    let epoch = answers["log:a"]["data"]["epoch"].clone();
    assert_eq!(answers["log:a"]["data"]["offset"], 1);
    drop(resumer);
    for n in 2..=3 {
        server
            .publish(json!({"scope": "topic", "target": "log:a", "type": "t", "data": {"n": n}}))
            .await;
    }
    let mut back = server.user("resumer").await;
    back.send(json!({"type": "subscribe", "topics": [
        {"topic": "log:a", "since": {"offset": 1, "epoch": epoch}},
        {"topic": "log:b", "since": {"offset": 0, "epoch": answers["log:b"]["data"]["epoch"]}},
        "board:plain"
    ]}))
    .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let frame = back.recv().await;
        seen.push(format!(
            "{} {} {}",
            frame["type"].as_str().unwrap_or(""),
            frame["data"]["topic"]
                .as_str()
                .or(frame["topic"].as_str())
                .unwrap_or(""),
            frame["data"]["n"]
        ));
        if frame["type"] == "subscribed" && frame["data"]["topic"] != "board:plain" {
            assert_eq!(frame["data"]["recovered"], true, "{frame}");
        }
    }
    assert_eq!(
        seen,
        [
            "subscribed board:plain null",
            "subscribed log:a null",
            "t log:a 2",
            "t log:a 3",
            "subscribed log:b null",
        ]
    );
}

#[tokio::test]
async fn a_subscribe_batch_is_bounded_and_checked_whole() {
    let server = Server::start("");
    let mut client = server.user("bounds").await;
    let too_many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let reply = client
        .request(json!({"type": "subscribe", "topics": too_many, "ref": 1}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message", "{reply}");
    let reply = client
        .request(json!({"type": "subscribe", "topics": ["ok", 7]}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message", "{reply}");
    let status = client.request(json!({"type": "status"})).await;
    assert_eq!(
        status["data"]["topics"],
        json!([]),
        "nothing was subscribed"
    );
}

/// An identity provider's key set, served on a loopback port; `keys` can change under it,
/// and `down` makes it answer 503.
struct KeySetServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl KeySetServer {
    async fn start(keys: Value) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let keys = std::sync::Arc::new(std::sync::Mutex::new(keys));
        let down = std::sync::Arc::new(AtomicBool::new(false));
        let (served, refused) = (keys.clone(), down.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (served, refused) = (served.clone(), refused.clone());
                async move {
                    if refused.load(Ordering::SeqCst) {
                        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let keys = served.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    Ok(axum::Json(json!({ "keys": keys })))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, keys, down }
    }
}

fn oct_key(kid: &str, k: &str) -> Value {
    json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": k})
}

fn signed_by(secret: &str, kid: &str, iss: &str, sub: &str) -> String {
    let header = jsonwebtoken::Header {
        kid: Some(kid.to_string()),
        ..jsonwebtoken::Header::default()
    };
    jsonwebtoken::encode(
        &header,
        &json!({"sub": sub, "iss": iss, "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

// Multi-threaded: the key set is served from this test while `Server::start_with` blocks
// (herald fetches it before it listens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_the_issuers_key_set_and_follow_its_changes() {
    const ISSUER: &str = "https://idp.example";
    const ONE: &str = "jwks-secret-one-0123456789";
    const TWO: &str = "jwks-secret-two-0123456789";
    let idp = KeySetServer::start(json!([oct_key(
        "k1",
        "andrcy1zZWNyZXQtb25lLTAxMjM0NTY3ODk"
    )]))
    .await;
    let server = Server::start_with(&format!(
        "[jwt]\nissuer = \"{ISSUER}\"\njwks_url = \"{}\"\njwks_refresh = \"1s\"\n",
        idp.url
    ));
    let url = |token: String| server.ws_url(&format!("token={token}"));
    drop(server.connect(&signed_by(ONE, "k1", ISSUER, "alice")).await);
    let (status, _) = refused_status(
        &url(signed_by(ONE, "k1", "https://evil.example", "mallory")),
        &[],
    )
    .await;
    assert_eq!(status, 401, "another issuer's token with a known kid");
    let (status, _) = refused_status(&url(signed_by(TWO, "k2", ISSUER, "bob")), &[]).await;
    assert_eq!(status, 401, "a kid the set does not hold yet");

    // The issuer adds a key: it is picked up by the next fetch.
    idp.keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_array_mut()
        .expect("keys")
        .push(oct_key("k2", "andrcy1zZWNyZXQtdHdvLTAxMjM0NTY3ODk"));
    connects_eventually("the new key", &url(signed_by(TWO, "k2", ISSUER, "bob"))).await;

    // A key set over 1 MiB is refused (unread past the bound): the keys in force stay.
    idp.keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_array_mut()
        .expect("keys")
        .push(json!({"kty": "oct", "kid": "huge", "k": "A".repeat(2 * 1024 * 1024)}));
    eventually("the oversized key set to be refused", || async {
        server
            .logs()
            .contains("larger than 1048576 bytes")
            .then_some(())
    })
    .await;
    drop(server.connect(&signed_by(TWO, "k2", ISSUER, "bob")).await);

    // The key set cannot be fetched at all: the keys in force stay.
    idp.down.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("a failed fetch to be logged", || async {
        server
            .logs()
            .contains("503 Service Unavailable")
            .then_some(())
    })
    .await;
    drop(server.connect(&signed_by(TWO, "k2", ISSUER, "bob")).await);
    drop(server.connect(&signed_by(ONE, "k1", ISSUER, "alice")).await);
}
