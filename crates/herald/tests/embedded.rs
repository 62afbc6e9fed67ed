//! Herald as a library: the example app (`examples/embedded.rs`) served on a loopback port and
//! used by real WebSocket clients, plus a pluggable authenticator and membership source.

#[path = "../examples/embedded.rs"]
#[allow(dead_code)]
mod example;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::auth::{AuthError, Authenticator, Principal};
use herald::engine::{EngineError, Membership};
use herald::{Config, Herald};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "embedded-test-secret";

/// Served with `axum::serve`, deliberately: the other tests run `herald serve` (Herald's own
/// server, direct writes), so this is where sockets written by their own task are covered.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}

fn token(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": sub, "exp": herald::auth::unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn connect(addr: SocketAddr, token: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .expect("connect");
    let hello = recv(&mut ws).await;
    assert_eq!(hello["type"], "connection.established", "{hello}");
    ws
}

async fn recv(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

async fn request(ws: &mut Socket, value: Value) -> Value {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
    recv(ws).await
}

#[tokio::test]
async fn the_example_app_serves_its_routes_herald_a_handler_and_a_ticker() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::default();
    config.jwt.secret = Some(SECRET.into());
    config.data_dir = dir.path().to_path_buf();
    let (router, herald) = example::app(config).await.expect("app");
    let addr = serve(router).await;

    let hello = reqwest::get(format!("http://{addr}/hello"))
        .await
        .expect("get");
    assert_eq!(hello.text().await.expect("body"), "hello from the app");

    let mut reader = connect(addr, &token("reader")).await;
    let reply = request(
        &mut reader,
        json!({"type": "subscribe", "topic": "room:lobby"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed");
    let mut writer = connect(addr, &token("writer")).await;
    let sent = request(
        &mut writer,
        json!({"type": "chat", "data": {"room": "lobby", "text": "hi"}, "ref": 7}),
    )
    .await;
    assert_eq!(sent["type"], "chat.sent");
    assert_eq!(sent["data"], json!({"room": "lobby"}));
    assert_eq!(sent["ref"], 7, "the handler's reply carries the ref");
    let got = recv(&mut reader).await;
    assert_eq!(got["type"], "chat.message");
    assert_eq!(got["topic"], "room:lobby");
    assert_eq!(got["data"], json!({"from": "writer", "text": "hi"}));

    let refused = request(&mut writer, json!({"type": "chat", "data": {}, "ref": "x"})).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["data"]["code"], "invalid_message");
    assert_eq!(refused["ref"], "x");
    let unknown = request(&mut writer, json!({"type": "dance"})).await;
    assert_eq!(
        unknown["data"]["code"], "unknown_type",
        "no handler, no such type"
    );

    // The handle, from app code.
    let published = herald
        .broadcast_to_user("reader", "note", json!({"a": 1}))
        .await
        .expect("broadcast");
    assert_eq!(published.recipients, 1);
    assert_eq!(recv(&mut reader).await["type"], "note");
    assert_eq!(herald.stats().total_clients, 2);

    let ticker = example::spawn_ticker(herald.clone(), Duration::from_millis(50));
    let tick = recv(&mut writer).await;
    assert_eq!(tick["type"], "tick");
    ticker.abort();

    assert_eq!(
        herald.disconnect_user("writer").await.expect("disconnect"),
        1
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(5), writer.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1000);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Tokens are `session:<user>`; the app's sessions say who is who.
struct Sessions;

#[async_trait::async_trait]
impl Authenticator for Sessions {
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match token.strip_prefix("session:") {
            Some(user) if !user.is_empty() => Ok(Principal::new(user, "user", vec![])),
            _ => Err(AuthError::Invalid("no such session".into())),
        }
    }
}

/// The app's own membership table.
struct AppMembers(HashMap<String, HashSet<String>>);

#[async_trait::async_trait]
impl Membership for AppMembers {
    async fn add(&self, _: &str, _: &str) -> Result<bool, EngineError> {
        Err(EngineError("membership is managed by the app".into()))
    }
    async fn remove(&self, _: &str, _: &str) -> Result<bool, EngineError> {
        Err(EngineError("membership is managed by the app".into()))
    }
    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        let mut members: Vec<String> = self.0.get(project).into_iter().flatten().cloned().collect();
        members.sort();
        Ok(members)
    }
    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self.0.get(project).is_some_and(|m| m.contains(user)))
    }
}

#[tokio::test]
async fn an_app_plugs_in_its_own_authentication_and_membership() {
    let members = AppMembers(HashMap::from([(
        "p1".to_string(),
        HashSet::from(["mia".to_string()]),
    )]));
    let herald = Herald::builder()
        .in_memory()
        .authenticator(Sessions)
        .membership(members)
        .build()
        .await
        .expect("build");
    let addr = serve(herald.router()).await;

    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=nonsense")).await;
    assert!(refused.is_err(), "the app's authenticator refused it");
    let mut mia = connect(addr, "session:mia").await;
    let reply = request(
        &mut mia,
        json!({"type": "subscribe", "topic": "project:p1"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "a member by the app's table");
    let mut ned = connect(addr, "session:ned").await;
    let reply = request(
        &mut ned,
        json!({"type": "subscribe", "topic": "project:p1"}),
    )
    .await;
    assert_eq!(reply["data"]["code"], "forbidden");
    let published = herald
        .broadcast_to_project("p1", "project.updated", json!({}))
        .await
        .expect("broadcast");
    assert_eq!(published.recipients, 1);
    assert_eq!(recv(&mut mia).await["type"], "project.updated");
}

#[tokio::test]
async fn a_handler_cannot_take_a_built_in_type() {
    let built = Herald::builder()
        .in_memory()
        .jwt_secret("s")
        .on("subscribe", |_| async { Ok(()) })
        .build()
        .await;
    assert!(built.is_err());
}
