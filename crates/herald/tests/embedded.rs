//! Herald as a library: the example app (`examples/embedded.rs`) served on a loopback port and
//! used by real WebSocket clients, plus a pluggable authenticator and membership source.

#[path = "../examples/embedded.rs"]
#[allow(dead_code)]
mod example;

use std::collections::HashSet;
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

#[tokio::test]
async fn an_app_plugs_in_its_own_authentication_and_membership() {
    let members = LiveMembers::default();
    members.set("p1", "mia", true);
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

/// Tokens are `session:<user>:<role>`: the app gives some of its users the role `admin`.
struct RoleSessions;

#[async_trait::async_trait]
impl Authenticator for RoleSessions {
    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let session = token.strip_prefix("session:");
        match session.and_then(|s| s.split_once(':')) {
            Some((user, role)) if !user.is_empty() => Ok(Principal::new(user, role, vec![])),
            _ => Err(AuthError::Invalid("no such session".into())),
        }
    }
}

/// An HTTP call on the app's port: status and body.
async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if path.ends_with("/publish") {
        request = request.json(&json!({"scope": "all", "type": "news", "data": {}}));
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn an_app_mounts_the_routers_apart_and_its_own_check_guards_the_server_api() {
    let herald = Herald::builder()
        .in_memory()
        .authenticator(RoleSessions)
        .admin_check(|headers: &axum::http::HeaderMap| {
            headers.get("x-ops-secret").is_some_and(|v| v == "vault")
        })
        .build()
        .await
        .expect("build");
    // The app's own /health beside Herald's WebSocket: no overlap, no panic.
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { "the app is fine" }),
        )
        .merge(herald.ws_router())
        .nest("/herald", herald.api_router())
        .nest("/ops", herald.ops_router());
    let addr = serve(app).await;

    let (status, body) = call(addr, reqwest::Method::GET, "/health", &[]).await;
    assert_eq!((status, body.as_str()), (200, "the app is fine"));
    let (status, _) = call(addr, reqwest::Method::GET, "/metrics", &[]).await;
    assert_eq!(status, 404, "metrics only where the app mounts them");
    let (status, body) = call(addr, reqwest::Method::GET, "/ops/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("herald_connections"), "{body}");
    let (status, _) = call(addr, reqwest::Method::GET, "/api/v1/stats", &[]).await;
    assert_eq!(status, 404, "the server API only under the app's prefix");

    let mut reader = connect(addr, "session:ann:user").await;
    // A client the app made an admin is still only a client to the server API.
    let boss = [("authorization", "Bearer session:boss:admin")];
    let (status, body) = call(addr, reqwest::Method::POST, "/herald/api/v1/publish", &boss).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(addr, reqwest::Method::POST, "/herald/api/v1/publish", &[]).await;
    assert_eq!(status, 403, "no credentials: the app's check says no");
    let ops = [("x-ops-secret", "vault")];
    let (status, body) = call(addr, reqwest::Method::POST, "/herald/api/v1/publish", &ops).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(recv(&mut reader).await["type"], "news");
}

#[tokio::test]
async fn with_the_apps_authenticator_and_no_check_only_api_keys_open_the_server_api() {
    let config = Config {
        api_key: Some("backend-key".into()),
        ..Config::default()
    };
    let herald = Herald::builder()
        .config(config)
        .in_memory()
        .authenticator(RoleSessions)
        .build()
        .await
        .expect("build");
    let addr = serve(herald.router()).await;
    let boss = [("authorization", "Bearer session:boss:admin")];
    let (status, body) = call(addr, reqwest::Method::POST, "/api/v1/publish", &boss).await;
    assert_eq!(status, 401, "{body}");
    let key = [("authorization", "Bearer backend-key")];
    let (status, body) = call(addr, reqwest::Method::POST, "/api/v1/publish", &key).await;
    assert_eq!(status, 200, "{body}");
}

/// The app's own membership table, which it changes in its own store (Herald only reads it).
#[derive(Clone, Default)]
struct LiveMembers(std::sync::Arc<std::sync::Mutex<HashSet<(String, String)>>>);

impl LiveMembers {
    fn set(&self, project: &str, user: &str, member: bool) {
        let mut members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (project.to_string(), user.to_string());
        if member {
            members.insert(key);
        } else {
            members.remove(&key);
        }
    }
}

#[async_trait::async_trait]
impl Membership for LiveMembers {
    async fn add(&self, _: &str, _: &str) -> Result<bool, EngineError> {
        Err(EngineError("membership is managed by the app".into()))
    }
    async fn remove(&self, _: &str, _: &str) -> Result<bool, EngineError> {
        Err(EngineError("membership is managed by the app".into()))
    }
    async fn members(&self, project: &str) -> Result<Vec<String>, EngineError> {
        let members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut users: Vec<String> = members
            .iter()
            .filter(|(p, _)| p == project)
            .map(|(_, u)| u.clone())
            .collect();
        users.sort();
        Ok(users)
    }
    async fn is_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(members.contains(&(project.to_string(), user.to_string())))
    }
}

#[tokio::test]
async fn a_member_the_app_removes_stops_receiving_after_a_recheck() {
    let members = LiveMembers::default();
    members.set("p1", "mia", true);
    members.set("p1", "ned", true);
    members.set("p2", "mia", true);
    let herald = Herald::builder()
        .in_memory()
        .authenticator(Sessions)
        .membership(members.clone())
        .build()
        .await
        .expect("build");
    let addr = serve(herald.ws_router()).await;
    let mut mia = connect(addr, "session:mia").await;
    let mut ned = connect(addr, "session:ned").await;
    for topic in ["project:p1", "project:p2"] {
        let reply = request(&mut mia, json!({"type": "subscribe", "topic": topic})).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    let reply = request(
        &mut ned,
        json!({"type": "subscribe", "topic": "project:p1"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    // The app removes mia from p1 in its own store and asks Herald to re-check the project.
    members.set("p1", "mia", false);
    assert_eq!(herald.recheck_project("p1").await.expect("recheck"), 1);
    let notice = recv(&mut mia).await;
    assert_eq!(notice["type"], "unsubscribed", "{notice}");
    assert_eq!(notice["data"]["topic"], "project:p1");
    assert_eq!(notice["data"]["reason"], "permission revoked");
    // The very next publication to p1 reaches ned only; mia still gets p2.
    let published = herald
        .broadcast_to_topic("project:p1", "task.moved", json!({"n": 1}))
        .await
        .expect("publish");
    assert_eq!(published.recipients, 1);
    assert_eq!(recv(&mut ned).await["type"], "task.moved");
    herald
        .broadcast_to_topic("project:p2", "task.added", json!({}))
        .await
        .expect("publish");
    assert_eq!(
        recv(&mut mia).await["type"],
        "task.added",
        "nothing of p1 before it"
    );

    // recheck(user) does the same for one user, whatever changed.
    members.set("p2", "mia", false);
    assert_eq!(herald.recheck("mia").await.expect("recheck"), 1);
    assert_eq!(recv(&mut mia).await["data"]["topic"], "project:p2");
    assert_eq!(
        herald.recheck("mia").await.expect("recheck"),
        0,
        "nothing left"
    );
}

#[tokio::test]
async fn errors_are_typed_and_a_handler_passes_them_on_with_a_question_mark() {
    let herald = Herald::builder()
        .in_memory()
        .authenticator(Sessions)
        .on("relay", |msg| async move {
            let topic = msg.data()["topic"].as_str().unwrap_or_default().to_string();
            msg.herald()
                .broadcast_to_topic(&topic, "relayed", json!({}))
                .await?;
            msg.reply("relay.done", json!({}));
            Ok(())
        })
        .build()
        .await
        .expect("build");
    let refused = herald
        .broadcast_to_topic("no spaces allowed", "x", json!({}))
        .await;
    assert!(
        matches!(refused, Err(herald::PublishError::InvalidTopic(_))),
        "{refused:?}"
    );
    let addr = serve(herald.ws_router()).await;
    let mut ann = connect(addr, "session:ann").await;
    let reply = request(
        &mut ann,
        json!({"type": "relay", "data": {"topic": "bad topic"}}),
    )
    .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "invalid_message", "{reply}");
    let reply = request(
        &mut ann,
        json!({"type": "relay", "data": {"topic": "news"}}),
    )
    .await;
    assert_eq!(reply["type"], "relay.done", "{reply}");
}

/// Reads the app's session cookie (`sid=<user>`) at the upgrade, no token needed, and attaches
/// what the app knows of the user and of the request.
struct CookieSessions;

#[async_trait::async_trait]
impl Authenticator for CookieSessions {
    async fn authenticate(&self, _: &str) -> Result<Principal, AuthError> {
        Err(AuthError::Invalid(
            "this app signs in with its cookie".into(),
        ))
    }

    async fn authenticate_request(
        &self,
        _token: Option<&str>,
        request: &herald::auth::ConnectRequest,
    ) -> Result<Option<Principal>, AuthError> {
        let cookie = request
            .headers
            .get("cookie")
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default();
        let Some(user) = cookie.split("; ").find_map(|c| c.strip_prefix("sid=")) else {
            return Err(AuthError::Invalid("no session cookie".into()));
        };
        let from = request.remote_addr.map(|a| a.ip().to_string());
        let meta = json!({"plan": "pro", "from": from, "lang": request.query.get("lang")});
        Ok(Some(Principal::new(user, "user", vec![]).with_meta(meta)))
    }
}

async fn connect_with_cookie(addr: SocketAddr, user: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws?lang=fr")
        .into_client_request()
        .expect("request");
    let cookie = format!("theme=dark; sid={user}").parse().expect("header");
    request.headers_mut().insert("cookie", cookie);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    let hello = recv(&mut ws).await;
    assert_eq!(hello["type"], "connection.established", "{hello}");
    ws
}

#[tokio::test]
async fn the_authenticator_sees_the_request_and_a_handler_acts_on_the_sender_only() {
    let herald = Herald::builder()
        .in_memory()
        .authenticator(CookieSessions)
        .on("whoami", |msg| async move {
            let meta = msg.principal.meta.clone().unwrap_or_default();
            msg.reply("whoami.result", &*meta);
            Ok(())
        })
        .on("join", |msg| async move {
            let room = msg.data()["room"].as_str().unwrap_or_default().to_string();
            msg.reply("join.ok", json!({}));
            msg.subscribe(&format!("room:{room}"));
            Ok(())
        })
        .on("leave", |msg| async move {
            let room = msg.data()["room"].as_str().unwrap_or_default().to_string();
            msg.unsubscribe(&format!("room:{room}"));
            Ok(())
        })
        .on("bye", |msg| async move {
            msg.reply("bye.ok", json!({}));
            msg.close();
            Ok(())
        })
        .build()
        .await
        .expect("build");
    let addr = serve(herald.ws_router()).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    assert!(refused.is_err(), "no cookie, no connection");

    let mut tab = connect_with_cookie(addr, "zoe").await;
    let mut other_tab = connect_with_cookie(addr, "zoe").await;
    let me = request(&mut tab, json!({"type": "whoami"})).await;
    assert_eq!(
        me["data"],
        json!({"plan": "pro", "from": "127.0.0.1", "lang": "fr"})
    );

    assert_eq!(
        request(&mut tab, json!({"type": "join", "data": {"room": "a"}})).await["type"],
        "join.ok"
    );
    let subscribed = recv(&mut tab).await;
    assert_eq!(
        (
            subscribed["type"].as_str(),
            subscribed["data"]["topic"].as_str()
        ),
        (Some("subscribed"), Some("room:a"))
    );
    let reached = herald
        .broadcast_to_topic("room:a", "said", json!({}))
        .await
        .expect("publish");
    assert_eq!(reached.recipients, 1, "only the tab that asked");
    assert_eq!(recv(&mut tab).await["type"], "said");

    let left = request(&mut tab, json!({"type": "leave", "data": {"room": "a"}})).await;
    assert_eq!(left["type"], "unsubscribed", "{left}");
    let reached = herald
        .broadcast_to_topic("room:a", "said", json!({}))
        .await
        .expect("publish");
    assert_eq!(reached.recipients, 0);

    assert_eq!(
        request(&mut other_tab, json!({"type": "bye"})).await["type"],
        "bye.ok"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match other_tab.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some(1000));
    assert_eq!(
        request(&mut tab, json!({"type": "whoami"})).await["type"],
        "whoami.result",
        "the other tab stays"
    );
}

#[test]
fn the_public_data_types_serialize_as_the_http_api_spells_them() {
    let publication =
        herald::Publication::new(herald::Scope::User("ann".into()), "note", json!({"n": 1}));
    let value = serde_json::to_value(&publication).expect("serialize");
    assert_eq!(value["scope"], "user");
    assert_eq!(value["target"], "ann");
    assert_eq!(value["data"], json!({"n": 1}));
    assert!(
        value.get("accepted").is_none() && value.get("offset").is_none(),
        "{value}"
    );
    let all = serde_json::to_value(herald::Scope::All).expect("serialize");
    assert_eq!(all, json!({"scope": "all"}));
    let who = Principal::new("ann", "user", vec!["p1".into()]).with_meta(json!({"plan": "pro"}));
    assert_eq!(
        serde_json::to_value(&who).expect("serialize"),
        json!({"user_id": "ann", "role": "user", "projects": ["p1"], "meta": {"plan": "pro"}})
    );
}

/// The backend hooks as Rust callbacks: the app decides `subscribe = "proxy"` and
/// `publish = "proxy"` namespaces (and may replace data), and hears the lifecycle events a
/// webhook would carry, with the same names and data.
#[tokio::test]
async fn the_app_decides_proxy_namespaces_and_hears_lifecycle_events_in_rust() {
    use herald::config::{Namespace, PublishRule, SubscribeRule};
    use herald::{HookEvent, PublishDecision};
    use std::sync::{Arc, Mutex};

    let mut config = Config::default();
    config.namespaces.push(
        Namespace::new("gated")
            .subscribe(SubscribeRule::Proxy)
            .publish_rule(PublishRule::Proxy),
    );
    let heard: Arc<Mutex<Vec<HookEvent>>> = Arc::default();
    let herald = Herald::builder()
        .config(config)
        .jwt_secret(SECRET)
        .in_memory()
        .on_subscribe(|request| async move { !request.topic.ends_with(":closed") })
        .on_publish(|request| async move {
            match request.event.as_str() {
                "shout" => PublishDecision::Replace(json!({"text": "(calmly) hello"})),
                "spam" => PublishDecision::Deny,
                _ => PublishDecision::Allow,
            }
        })
        .on_event({
            let heard = heard.clone();
            move |event| heard.lock().expect("lock").push(event.clone())
        })
        .build()
        .await
        .expect("build");
    let addr = serve(herald.router()).await;
    let mut ada = connect(addr, &token("ada")).await;

    let reply = request(
        &mut ada,
        json!({"type": "subscribe", "topic": "gated:closed"}),
    )
    .await;
    assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
    let reply = request(
        &mut ada,
        json!({"type": "subscribe", "topic": "gated:open"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    let publish = |event: &str| json!({"type": "publish", "topic": "gated:open", "event": event, "data": {"text": "HELLO"}});
    let reply = request(&mut ada, publish("spam")).await;
    assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
    ada.send(Message::text(publish("shout").to_string()))
        .await
        .expect("send");
    let mut delivered = None;
    for _ in 0..2 {
        let got = recv(&mut ada).await;
        if got["type"] == "shout" {
            delivered = Some(got);
        }
    }
    let delivered = delivered.expect("the publication");
    assert_eq!(
        delivered["data"]["text"], "(calmly) hello",
        "the app's data"
    );

    drop(ada);
    let names = |heard: &Mutex<Vec<HookEvent>>| -> Vec<&'static str> {
        heard.lock().expect("lock").iter().map(|e| e.name).collect()
    };
    for _ in 0..100 {
        if names(&heard).contains(&"user.offline") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        names(&heard),
        [
            "connection.opened",
            "user.online",
            "topic.occupied",
            "topic.subscribed",
            "client.published",
            "connection.closed",
            "topic.unsubscribed",
            "topic.vacated",
            "user.offline",
        ]
    );
    let heard = heard.lock().expect("lock");
    let published = &heard[4].data;
    assert_eq!(published["topic"], "gated:open");
    assert_eq!(published["type"], "shout");
    assert_eq!(published["data"]["text"], "(calmly) hello");
    assert_eq!(heard[0].data["user_id"], "ada");
}
