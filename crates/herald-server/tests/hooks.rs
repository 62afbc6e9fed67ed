//! Backend hooks (docs/HOOKS.md): the proxy's `connect`, `subscribe`, `publish` and `rpc`
//! calls against a real HTTP backend on loopback, which checks every request's signature.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const HOOK_SECRET: &str = "hook-secret";

/// One request the backend got: the hook, its body, whether its signature was right.
#[derive(Debug, Clone)]
struct Call {
    hook: String,
    body: Value,
    signed: bool,
}

#[derive(Clone, Default)]
struct Backend {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Backend {
    fn calls(&self, hook: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().filter(|c| c.hook == hook).cloned().collect()
    }
}

fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    headers
        .get("x-herald-signature")
        .and_then(|v| v.to_str().ok())
        == Some(format!("sha256={hex}").as_str())
}

/// What the backend decides, by hook and by what it was sent.
async fn decide(hook: &str, body: &Value, headers: &HeaderMap) -> Response {
    let answer = |status: u16, body: Value| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            Json(body),
        )
            .into_response()
    };
    match hook {
        "connect" => {
            let cookie = body["headers"]["cookie"].as_str().unwrap_or("");
            let _ = headers;
            match cookie {
                "session=good" => answer(
                    200,
                    json!({"user_id": "cookie-user", "role": "editor", "projects": ["p1"]}),
                ),
                "session=broken" => answer(500, json!({})),
                "session=slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    answer(200, json!({"user_id": "too-late"}))
                }
                _ => answer(401, json!({})),
            }
        }
        "subscribe" => match body["topic"].as_str() {
            Some("vip:open") => answer(200, json!({})),
            Some("vip:broken") => answer(502, json!({})),
            _ => answer(403, json!({})),
        },
        "publish" => {
            if body["data"]["deny"] == true {
                answer(403, json!({}))
            } else if body["data"]["replace"] == true {
                answer(200, json!({"data": {"replaced": true, "by": "backend"}}))
            } else {
                answer(200, json!({}))
            }
        }
        "rpc" => match body["type"].as_str() {
            Some("chat") => answer(
                200,
                json!({"data": {"echo": body["data"].clone(), "user": body["user_id"].clone()}}),
            ),
            Some("quiet") => StatusCode::NO_CONTENT.into_response(),
            Some("bad") => answer(
                422,
                json!({"error": {"code": "invalid_room", "message": "no such room"}}),
            ),
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                answer(200, json!({"data": "too late"}))
            }
            _ => answer(503, json!({})),
        },
        _ => answer(404, json!({})),
    }
}

/// Starts the backend on a loopback port; returns it and its base URL.
async fn backend() -> (Backend, String) {
    let backend = Backend::default();
    let handler = |hook: &'static str| {
        move |State(b): State<Backend>, headers: HeaderMap, bytes: axum::body::Bytes| async move {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                hook: hook.to_string(),
                body: body.clone(),
                signed: signed(&headers, &bytes),
            };
            b.calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
            decide(hook, &body, &headers).await
        }
    };
    let app = axum::Router::new()
        .route("/connect", axum::routing::post(handler("connect")))
        .route("/subscribe", axum::routing::post(handler("subscribe")))
        .route("/publish", axum::routing::post(handler("publish")))
        .route("/rpc", axum::routing::post(handler("rpc")))
        .with_state(backend.clone());
    (backend, format!("http://{}", serve_on_loopback(app).await))
}

/// Serves `app` on a free loopback port for the rest of the test; returns its address.
async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn server_with_hooks(base: &str) -> Server {
    Server::start(&format!(
        "[proxy]\nconnect = \"{base}/connect\"\nsubscribe = \"{base}/subscribe\"\n\
         publish = \"{base}/publish\"\nrpc = \"{base}/rpc\"\nsecret = \"{HOOK_SECRET}\"\n\
         timeout = \"500ms\"\n\
         [[namespaces]]\nname = \"vip\"\nsubscribe = \"proxy\"\npublish = \"proxy\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_authenticates_from_the_cookie_when_there_is_no_valid_jwt() {
    let (backend, base) = backend().await;
    let server = server_with_hooks(&base);
    let url = server.ws_url("");

    // A session cookie and no token: the backend says who it is.
    let mut client = Client::connect_with(&url, &[("Cookie", "session=good")]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "connection.established", "{welcome}");
    assert_eq!(welcome["data"]["user_id"], "cookie-user");
    assert_eq!(welcome["data"]["role"], "editor");
    client.subscribe("project:p1").await;
    let calls = backend.calls("connect");
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signed, "{calls:?}");
    assert_eq!(calls[0].body["headers"]["cookie"], "session=good");
    assert!(calls[0].body.get("token").is_none(), "{calls:?}");

    // A valid JWT never reaches the backend.
    let _jwt_client = server.user("jwt-user").await;
    assert_eq!(backend.calls("connect").len(), 1);

    // A bad JWT with a good cookie: the backend decides, and sees the token.
    let bad = format!("{url}?token=not-a-jwt");
    let mut rescued = Client::connect_with(&bad, &[("Cookie", "session=good")]).await;
    assert_eq!(rescued.recv().await["data"]["user_id"], "cookie-user");
    assert_eq!(backend.calls("connect")[1].body["token"], "not-a-jwt");

    // Refused: 401. Failing (a 500, or no answer within the timeout): 503, never a yes.
    let (status, body) = refused_status(&url, &[("Cookie", "session=nobody")]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    for cookie in ["session=broken", "session=slow"] {
        let (status, body) = refused_status(&url, &[("Cookie", cookie)]).await;
        assert_eq!(status, 503, "{cookie}: {body}");
        assert_eq!(body["error"]["code"], "processing_error", "{body}");
    }
    // While the backend fails, /ready says so.
    let (status, ready) = server.api("GET", "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["error"]
            .as_str()
            .is_some_and(|e| e.contains("connect hook")),
        "{ready}"
    );
    let (_, metrics) = server.api("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("herald_hook_requests_total{hook=\"connect\",outcome=\"failed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_and_publish_are_decided_by_the_backend() {
    let (backend, base) = backend().await;
    let server = server_with_hooks(&base);
    let mut alice = server.user("alice").await;
    alice.subscribe("vip:open").await;
    let call = backend.calls("subscribe").pop().expect("a subscribe call");
    assert!(call.signed);
    assert_eq!(call.body["user_id"], "alice");
    assert_eq!(call.body["topic"], "vip:open");
    assert!(call.body["client_id"].is_string(), "{call:?}");
    for (topic, code) in [
        ("vip:closed", "forbidden"),
        ("vip:broken", "processing_error"),
    ] {
        let reply = alice
            .request(json!({"type": "subscribe", "topic": topic, "ref": 1}))
            .await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["data"]["code"], code, "{topic}: {reply}");
    }

    let publish = |data: Value| json!({"type": "publish", "topic": "vip:open", "event": "note", "data": data, "ref": 2});
    // The publisher is a subscriber too: its delivery and its reply, in either order.
    for (sent, delivered) in [
        (json!({"text": "as sent"}), json!({"text": "as sent"})),
        (
            json!({"replace": true}),
            json!({"replaced": true, "by": "backend"}),
        ),
    ] {
        alice.send(publish(sent)).await;
        let two = [alice.recv().await, alice.recv().await];
        let reply = two.iter().find(|m| m["type"] == "published");
        let note = two.iter().find(|m| m["type"] == "note");
        assert!(reply.is_some(), "{two:?}");
        assert_eq!(note.map(|n| &n["data"]), Some(&delivered), "{two:?}");
    }
    let reply = alice.request(publish(json!({"deny": true}))).await;
    assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
    alice.expect_silence().await;
    let calls = backend.calls("publish");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.signed));
    assert_eq!(calls[0].body["type"], "note");
    assert_eq!(calls[0].body["topic"], "vip:open");
}

#[tokio::test(flavor = "multi_thread")]
async fn message_types_that_are_no_command_go_to_the_rpc_hook() {
    let (backend, base) = backend().await;
    let server = server_with_hooks(&base);
    let mut bob = server.user("bob").await;
    let reply = bob
        .request(json!({"type": "chat", "data": {"room": "r1", "text": "hi"}, "ref": "c1"}))
        .await;
    assert_eq!(reply["type"], "chat.result", "{reply}");
    assert_eq!(reply["ref"], "c1");
    assert_eq!(
        reply["data"],
        json!({"echo": {"room": "r1", "text": "hi"}, "user": "bob"})
    );
    bob.send(json!({"type": "quiet", "data": {}})).await;
    bob.expect_silence().await;
    let reply = bob.request(json!({"type": "bad", "ref": 3})).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "invalid_room");
    assert_eq!(reply["data"]["message"], "no such room");
    let reply = bob.request(json!({"type": "down", "ref": 4})).await;
    assert_eq!(reply["data"]["code"], "processing_error", "{reply}");
    // No answer within the proxy's 500 ms: a failure, never a result.
    let reply = bob.request(json!({"type": "slow", "ref": 5})).await;
    assert_eq!(reply["data"]["code"], "processing_error", "{reply}");
    assert_eq!(reply["ref"], 5);
    let calls = backend.calls("rpc");
    assert_eq!(calls.len(), 5);
    assert!(calls.iter().all(|c| c.signed));
    assert_eq!(calls[0].body["role"], "user");
    // Commands never reach it.
    bob.request(json!({"type": "ping", "ref": 6})).await;
    assert_eq!(backend.calls("rpc").len(), 5);
}

#[tokio::test]
async fn a_proxy_rule_without_its_hook_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "api_key = \"{API_KEY}\"\n[jwt]\nsecret = \"{SECRET}\"\n\
             [[namespaces]]\nname = \"vip\"\nsubscribe = \"proxy\"\n"
        ),
    )
    .expect("config");
    let out = std::process::Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[proxy] subscribe"), "{stderr}");
}

/// One request the receiver got: what it answered, whether it was signed, its events.
type Batch = (u16, bool, Vec<Value>);

/// A webhook receiver: records every request (its events, whether it was signed, what it
/// answered) and answers as `mode` says: 0 ok, 1 a 500, 2 a 500 after 1.5 s (past the
/// server's 500 ms timeout).
#[derive(Clone, Default)]
struct Receiver {
    mode: Arc<std::sync::atomic::AtomicU8>,
    batches: Arc<Mutex<Vec<Batch>>>,
}

impl Receiver {
    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }

    /// The events of the batches it acknowledged, in order.
    fn acknowledged(&self) -> Vec<Value> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .iter()
            .filter(|(status, ..)| *status == 200)
            .flat_map(|(_, _, events)| events.clone())
            .collect()
    }

    fn all(&self) -> Vec<Batch> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = axum::Router::new()
        .route(
            "/events",
            axum::routing::post(
                |State(r): State<Receiver>, headers: HeaderMap, bytes: axum::body::Bytes| async move {
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    let status = match r.mode.load(std::sync::atomic::Ordering::SeqCst) {
                        0 => 200,
                        1 => 500,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            500
                        }
                    };
                    r.batches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((status, signed(&headers, &bytes), events));
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
                },
            ),
        )
        .with_state(receiver.clone());
    let addr = serve_on_loopback(app).await;
    (receiver, format!("http://{addr}/events"))
}

fn server_with_webhooks(url: &str) -> Server {
    Server::start(&format!(
        "[webhooks]\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\nbatch_wait = \"50ms\"\n\
         timeout = \"500ms\"\n\
         [[namespaces]]\nname = \"room\"\npublish = true\n"
    ))
}

/// Waits until the receiver acknowledged events named as `names`, in this order.
async fn acknowledged_names(receiver: &Receiver, count: usize) -> Vec<Value> {
    eventually("the webhook events", || async {
        let got = receiver.acknowledged();
        (got.len() >= count).then_some(got)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_webhook_event_reaches_the_backend_signed_and_in_order() {
    let (receiver, url) = receiver().await;
    let server = server_with_webhooks(&url);
    let mut alice = server.user("alice").await;
    alice.subscribe("room:1").await;
    let mut bob = server.user("bob").await;
    bob.subscribe("room:1").await;
    alice
        .send(json!({"type": "publish", "topic": "room:1", "event": "note", "data": {"n": 1}, "ref": 1}))
        .await;
    // Her reply and her own copy, in either order; bob's copy.
    alice.recv().await;
    alice.recv().await;
    bob.recv().await;
    let left = alice
        .request(json!({"type": "unsubscribe", "topic": "room:1"}))
        .await;
    assert_eq!(left["type"], "unsubscribed", "{left}");
    drop(bob);
    let events = acknowledged_names(&receiver, 13).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "connection.opened",
            "user.online",
            "topic.occupied",
            "topic.subscribed",
            "connection.opened",
            "user.online",
            "topic.subscribed",
            "client.published",
            "topic.unsubscribed",
            "connection.closed",
            "topic.unsubscribed",
            "topic.vacated",
            "user.offline",
        ],
        "{events:?}"
    );
    assert!(receiver.all().iter().all(|(_, signed, _)| *signed));
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    assert_eq!(events[0]["data"]["user_id"], "alice");
    assert!(events[0]["data"]["client_id"].is_string());
    assert!(events[0]["time"].is_string() && events[0]["node"].is_string());
    assert_eq!(events[2]["data"], json!({"topic": "room:1"}));
    assert_eq!(events[7]["data"]["data"], json!({"n": 1}));
    assert_eq!(events[7]["data"]["type"], "note");
    assert_eq!(events[9]["data"]["user_id"], "bob");
    assert!(events[9]["data"]["reason"].is_string(), "{}", events[9]);
    drop(alice);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_batches_are_retried_after_500s_and_timeouts_with_the_same_ids() {
    let (receiver, url) = receiver().await;
    receiver.set(1);
    let server = server_with_webhooks(&url);
    let _carol = server.user("carol").await;
    eventually("a refused batch", || async {
        (receiver.all().len() >= 2).then_some(())
    })
    .await;
    receiver.set(2);
    eventually("a timed-out batch", || async {
        receiver
            .all()
            .iter()
            .any(|(status, ..)| *status == 500)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    receiver.set(0);
    let events = acknowledged_names(&receiver, 2).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        ["connection.opened", "user.online"],
        "once each: {events:?}"
    );
    // Every try carried the same events, with the same ids.
    let tries = receiver.all();
    assert!(tries.len() >= 3, "{tries:?}");
    for (_, signed, events) in &tries {
        assert!(signed);
        let ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
        let first: Vec<&Value> = tries[0].2.iter().map(|e| &e["id"]).collect();
        assert_eq!(ids, first);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_events_pending_while_the_backend_is_down_survive_a_restart() {
    let (receiver, url) = receiver().await;
    receiver.set(1);
    let mut server = server_with_webhooks(&url);
    let dave = server.user("dave").await;
    drop(dave);
    eventually("dave's events tried", || async {
        receiver
            .all()
            .iter()
            .any(|(_, _, events)| events.iter().any(|e| e["name"] == "user.offline"))
            .then_some(())
    })
    .await;
    let tried: Vec<Value> = receiver
        .all()
        .iter()
        .flat_map(|(_, _, events)| events.clone())
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(server.terminate(), Some(0));
    receiver.set(0);
    server.restart();
    let events = acknowledged_names(&receiver, 4).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "connection.opened",
            "user.online",
            "connection.closed",
            "user.offline"
        ],
        "{events:?}"
    );
    for event in &events {
        assert!(
            tried.contains(&event["id"]),
            "the same ids after the restart: {event}"
        );
    }
}

/// A node of a two-node cluster on `redis` whose webhooks go to `url`.
fn cluster_node_with_webhooks(redis: &common::redis::RedisServer, id: &str, url: &str) -> Server {
    Server::start(&format!(
        "redis_url = \"{}\"\nnode_id = \"{id}\"\n\
         [cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"500ms\"\n\
         [webhooks]\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\nbatch_wait = \"50ms\"\n\
         timeout = \"500ms\"\n\
         [[namespaces]]\nname = \"room\"\npublish = true\n",
        redis.url()
    ))
}

/// The acknowledged events named `name` about `field` = `value`.
fn named<'a>(events: &'a [Value], name: &str, field: &str, value: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["name"] == name && e["data"][field] == value)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_cluster_each_event_is_sent_once_and_a_killed_nodes_are_sent_by_its_reaper() {
    let redis = common::redis::RedisServer::start();
    let (receiver, url) = receiver().await;
    let n1 = cluster_node_with_webhooks(&redis, "n1", &url);
    let mut n2 = cluster_node_with_webhooks(&redis, "n2", &url);
    ready(&n1).await;
    ready(&n2).await;
    // Dana on both nodes, both subscribed to one topic: one user.online, one topic.occupied.
    let mut on_n1 = n1.user("dana").await;
    on_n1.subscribe("room:9").await;
    let mut on_n2 = n2.user("dana").await;
    on_n2.subscribe("room:9").await;
    let events = acknowledged_names(&receiver, 6).await;
    assert_eq!(
        named(&events, "user.online", "user_id", "dana").len(),
        1,
        "{events:?}"
    );
    assert_eq!(
        named(&events, "topic.occupied", "topic", "room:9").len(),
        1,
        "{events:?}"
    );
    assert_eq!(
        named(&events, "connection.opened", "user_id", "dana").len(),
        2
    );
    assert_eq!(
        named(&events, "topic.subscribed", "topic", "room:9").len(),
        2
    );
    // Her n1 tab leaves: she is still online on n2, the topic still occupied there.
    drop(on_n1);
    eventually("n1's connection.closed", || async {
        let got = receiver.acknowledged();
        (!named(&got, "connection.closed", "user_id", "dana").is_empty()).then_some(())
    })
    .await;
    // The backend fails while n2 has an event to send: it waits in n2's outbox in Redis.
    receiver.set(1);
    on_n2
        .send(json!({"type": "publish", "topic": "room:9", "event": "note", "data": {"n": 2}}))
        .await;
    eventually("n2's event refused once", || async {
        let refused = receiver.all().into_iter().any(|(status, _, events)| {
            status == 500 && events.iter().any(|e| e["name"] == "client.published")
        });
        refused.then_some(())
    })
    .await;
    // n2 dies with her last connection. The node that reaps it sends what n2 could not, then
    // says she went offline and the topic is vacated, once each.
    n2.signal("KILL");
    drop(on_n2);
    receiver.set(0);
    eventually("the reaper's events", || async {
        let got = receiver.acknowledged();
        let done = got.iter().any(|e| e["name"] == "client.published")
            && !named(&got, "user.offline", "user_id", "dana").is_empty()
            && !named(&got, "topic.vacated", "topic", "room:9").is_empty();
        done.then_some(())
    })
    .await;
    // A little longer: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = receiver.acknowledged();
    assert_eq!(
        named(&events, "user.offline", "user_id", "dana").len(),
        1,
        "{events:?}"
    );
    assert_eq!(
        named(&events, "topic.vacated", "topic", "room:9").len(),
        1,
        "{events:?}"
    );
    assert_eq!(
        named(&events, "user.online", "user_id", "dana").len(),
        1,
        "{events:?}"
    );
    let published: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "client.published")
        .collect();
    assert_eq!(published.len(), 1, "{events:?}");
    assert_eq!(published[0]["node"], "n2", "made on n2, sent by its reaper");
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice: {events:?}");
    assert!(receiver.all().iter().all(|(_, signed, _)| *signed));
}
