//! The server HTTP API (docs/PROTOCOL.md, section 11) as a backend or an operator uses it: every
//! endpoint, its auth, bad bodies, metrics and logs.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// Every API route that needs credentials, with a path that exercises it.
const SECURED: &[(&str, &str)] = &[
    ("POST", "/api/v1/publish"),
    ("POST", "/api/v1/publish/batch"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/connections"),
    ("GET", "/api/v1/connections/count"),
    ("POST", "/api/v1/users/u1/disconnect"),
    ("POST", "/api/v1/projects/p1/disconnect"),
    ("POST", "/api/v1/users/u1/message"),
    ("POST", "/api/v1/projects/p1/message"),
    ("GET", "/api/v1/projects/p1/members"),
    ("PUT", "/api/v1/projects/p1/members/u1"),
    ("DELETE", "/api/v1/projects/p1/members/u1"),
    ("GET", "/api/v1/topics/chat:1/presence"),
    ("GET", "/api/v1/topics/chat:1/history"),
    ("GET", "/ws/stats"),
    ("POST", "/ws/broadcast"),
];

#[tokio::test]
async fn every_secured_endpoint_answers_401_without_credentials_and_403_for_non_admins() {
    let server = Server::start("");
    let user = token("u", "user", &[]);
    let expired = sign(&json!({"sub": "a", "role": "admin", "exp": now() - 10}));
    for (method, path) in SECURED {
        for bearer in [None, Some("not-the-key"), Some(expired.as_str())] {
            let (status, body) = server.api(method, path, bearer, Some(json!({}))).await;
            assert_eq!(status, 401, "{method} {path} with {bearer:?}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
        let (status, body) = server.api(method, path, Some(&user), Some(json!({}))).await;
        assert_eq!(status, 403, "{method} {path} as a user");
        assert_eq!(body["error"]["code"], "forbidden");
    }
}

#[tokio::test]
async fn stats_match_the_connections_opened() {
    let server = Server::start("");
    let mut a1 = server.user("amy").await;
    let mut a2 = server.user("amy").await;
    let mut boss = server.connect(&token("boss", "admin", &[])).await;
    a1.subscribe("news").await;
    a2.subscribe("news").await;
    boss.subscribe("ops:x").await;
    let (status, stats) = server
        .api("GET", "/api/v1/stats", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stats["total_clients"], 3);
    assert_eq!(stats["by_role"], json!({"user": 2, "admin": 1}));
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["topics"], 2);
    assert_eq!(stats["slow_consumers_dropped"], 0);
    assert!(stats["uptime_s"].is_u64());
    // 3 welcomes + 3 subscribe replies sent; 3 subscribe commands received.
    assert_eq!(stats["messages_sent"], 6);
    assert_eq!(stats["messages_received"], 3);

    server
        .publish(json!({"scope": "topic", "target": "news", "type": "n"}))
        .await;
    a1.recv().await;
    a2.recv().await;
    drop(boss);
    let (_, after) = server
        .api("GET", "/api/v1/stats", Some(API_KEY), None)
        .await;
    assert_eq!(after["messages_sent"], 8, "two deliveries more");
    let (_, seed) = server.api("GET", "/ws/stats", Some(API_KEY), None).await;
    assert!(seed["timestamp"].is_string());
    assert!(seed["total_clients"].as_u64().is_some_and(|n| n <= 3));
}

#[tokio::test]
async fn connections_and_counts_with_filters() {
    let server = Server::start("");
    server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/bea",
            Some(API_KEY),
            None,
        )
        .await;
    let mut bea = server.user("bea").await;
    let _bea2 = server.user("bea").await;
    let _cal = server.connect(&token("cal", "user", &["p1"])).await;
    let _dee = server.user("dee").await;
    bea.subscribe("news").await;

    let (status, all) = server
        .api("GET", "/api/v1/connections", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().map(Vec::len), Some(4));
    let first = &all[0];
    assert_eq!(first["user_id"], "bea");
    assert_eq!(first["role"], "user");
    assert_eq!(first["topics"], json!(["news"]));
    assert!(first["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert!(first["client_id"].is_string() && first["connected_at"].is_string());

    let users = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|c| c["user_id"].as_str().expect("user").to_string())
            .collect()
    };
    let (_, by_user) = server
        .api("GET", "/api/v1/connections?user=bea", Some(API_KEY), None)
        .await;
    assert_eq!(by_user.as_array().map(Vec::len), Some(2));
    let (_, by_project) = server
        .api("GET", "/api/v1/connections?project=p1", Some(API_KEY), None)
        .await;
    assert_eq!(
        users(&by_project),
        BTreeSet::from(["bea".into(), "cal".into()])
    );

    for (query, expected) in [
        ("", 4),
        ("?user=bea", 2),
        ("?user=nobody", 0),
        ("?project=p1", 3),
        ("?topic=news", 1),
    ] {
        let (status, count) = server
            .api(
                "GET",
                &format!("/api/v1/connections/count{query}"),
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(count["count"], expected, "{query}");
    }
}

#[tokio::test]
async fn disconnecting_a_user_closes_every_tab_and_nothing_else() {
    let server = Server::start("");
    let mut tab1 = server.user("eli").await;
    let mut tab2 = server.user("eli").await;
    let mut other = server.user("fox").await;
    let (status, answer) = server
        .api("POST", "/api/v1/users/eli/disconnect", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["disconnected"], 2);
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(tab.closed().await.code, 1000);
    }
    assert!(other.is_alive().await);
}

#[tokio::test]
async fn disconnecting_a_project_closes_its_members_by_store_and_claim() {
    let server = Server::start("");
    server
        .api(
            "PUT",
            "/api/v1/projects/p2/members/gil",
            Some(API_KEY),
            None,
        )
        .await;
    let mut gil = server.user("gil").await;
    let mut hoa = server.connect(&token("hoa", "user", &["p2"])).await;
    let mut ira = server.user("ira").await;
    let (_, answer) = server
        .api(
            "POST",
            "/api/v1/projects/p2/disconnect",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(answer["disconnected"], 2);
    assert_eq!(gil.closed().await.code, 1000);
    assert_eq!(hoa.closed().await.code, 1000);
    assert!(ira.is_alive().await);
}

#[tokio::test]
async fn direct_user_and_project_messages() {
    let server = Server::start("");
    let mut jan = server.user("jan").await;
    let mut kit = server.connect(&token("kit", "user", &["p3"])).await;
    let (status, answer) = server
        .api(
            "POST",
            "/api/v1/users/jan/message",
            Some(API_KEY),
            Some(json!({"type": "dm", "data": {"x": 1}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["recipients"], 1);
    assert_eq!(
        answer["queued"], false,
        "jan is online: nothing for the inbox"
    );
    let got = jan.recv().await;
    assert_eq!(
        (got["type"].clone(), got["data"].clone(), got["id"].clone()),
        (json!("dm"), json!({"x": 1}), answer["id"].clone())
    );

    let (status, answer) = server
        .api(
            "POST",
            "/api/v1/projects/p3/message",
            Some(API_KEY),
            Some(json!({"type": "project.updated"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["recipients"], 1);
    assert_eq!(kit.recv().await["type"], "project.updated");
    jan.expect_silence().await;

    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/jan/message",
            Some(API_KEY),
            Some(json!({"data": {}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_message")),
        "missing type"
    );
}

#[tokio::test]
async fn batch_publish_answers_each_message_in_order() {
    let server = Server::start("");
    let mut lou = server.user("lou").await;
    let batch = json!([
        {"scope": "user", "target": "lou", "type": "one"},
        {"scope": "nowhere", "type": "bad"},
        {"scope": "all", "type": "two"},
        "not an object",
    ]);
    let (status, answer) = server.publish_batch(batch).await;
    assert_eq!(status, 200);
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["recipients"], 1);
    assert!(results[0]["id"].is_string());
    assert_eq!(results[1]["error"]["code"], "invalid_message");
    assert_eq!(results[2]["recipients"], 1);
    assert_eq!(results[3]["error"]["code"], "invalid_message");
    assert_eq!(lou.recv().await["type"], "one");
    assert_eq!(lou.recv().await["type"], "two");

    let (status, _) = server.publish_batch(json!(3)).await;
    assert_eq!(status, 400);
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"scope": "all", "type": "x"}))
        .collect();
    let (status, _) = server.publish_batch(json!(too_many)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_bodies_get_400_and_oversized_ones_413() {
    let server = Server::start("[limits]\nmax_body_size = 2048\n");
    let posts = [
        "/api/v1/publish",
        "/api/v1/publish/batch",
        "/api/v1/users/u/message",
        "/api/v1/projects/p/message",
        "/ws/broadcast",
    ];
    for path in posts {
        for raw in ["{nope", "[]", "\"text\"", ""] {
            let (status, body) = server.post_raw(path, raw).await;
            assert_eq!(status, 400, "{path} {raw:?}");
            assert_eq!(body["error"]["code"], "invalid_message", "{path} {raw:?}");
        }
        let big = json!({"scope": "all", "type": "x", "data": "y".repeat(4096)}).to_string();
        let (status, body) = server.post_raw(path, &big).await;
        assert_eq!(status, 413, "{path}");
        assert_eq!(body["error"]["code"], "message_too_large");
    }
    let (status, _) = server
        .api(
            "POST",
            "/ws/broadcast",
            Some(API_KEY),
            Some(json!({"priority": "high"})),
        )
        .await;
    assert_eq!(status, 400, "a broadcast needs a message");
}

#[tokio::test]
async fn topic_presence_and_history_are_404_for_topics_without_them() {
    let server = Server::start("");
    for what in ["presence", "history"] {
        let (status, body) = server
            .api(
                "GET",
                &format!("/api/v1/topics/chat%3Aroom%2F1/{what}?since=3&limit=5"),
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(status, 404, "{what}");
        assert_eq!(body["error"]["code"], "not_found");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("chat:room/1")),
            "{body}"
        );
        let (status, body) = server
            .api(
                "GET",
                &format!("/api/v1/topics/bad%20topic/{what}"),
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_message");
    }
}

#[tokio::test]
async fn seed_broadcast_sends_a_system_alert_to_everyone() {
    let server = Server::start("");
    let mut one = server.user("mo").await;
    let mut two = server.connect(&token("ned", "admin", &[])).await;
    let (status, answer) = server
        .api(
            "POST",
            "/ws/broadcast",
            Some(&token("root", "superadmin", &[])),
            Some(json!({"message": "Maintenance at 2am", "priority": "high", "metadata": {"at": "02:00"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["success"], true);
    assert_eq!(answer["message"], "Broadcast sent successfully");
    assert_eq!(answer["recipients"], 2);
    assert_eq!(answer["stats"]["total_clients"], 2);
    assert_eq!(answer["stats"]["by_role"], json!({"user": 1, "admin": 1}));
    for client in [&mut one, &mut two] {
        let alert = client.recv().await;
        assert_eq!(alert["type"], "system.alert");
        assert_eq!(
            alert["data"],
            json!({"message": "Maintenance at 2am", "priority": "high", "metadata": {"at": "02:00"}})
        );
    }
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name_and_labels)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_when_messages_flow() {
    let server = Server::start("");
    let mut sam = server.user("sam").await;
    sam.subscribe("news").await;
    sam.send_text("{broken").await;
    sam.recv().await;
    let _ = refused_status(&server.ws_url("token=garbage"), &[]).await;
    for _ in 0..3 {
        server
            .publish(json!({"scope": "topic", "target": "news", "type": "n"}))
            .await;
        sam.recv().await;
    }
    let (status, text) = server.api("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("prometheus text").to_string();
    assert_eq!(
        metric(&text, "herald_connections{role=\"user\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "herald_connections_opened_total"), 1.0);
    assert_eq!(
        metric(&text, "herald_publications_total{scope=\"topic\"}"),
        3.0
    );
    assert_eq!(metric(&text, "herald_deliveries_total"), 3.0);
    assert_eq!(
        metric(&text, "herald_client_messages_total{type=\"subscribe\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "herald_client_messages_total{type=\"invalid\"}"),
        1.0
    );
    assert_eq!(metric(&text, "herald_drops_total{reason=\"invalid\"}"), 1.0);
    assert_eq!(
        metric(&text, "herald_auth_failures_total{reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(metric(&text, "herald_fanout_seconds_count"), 3.0);
    assert!(metric(&text, "herald_received_bytes_total") > 0.0, "{text}");
    assert!(
        metric(&text, "herald_delivery_seconds_count") >= 3.0,
        "each publication (and each reply) emptied sam's queue: {text}"
    );
    assert!(metric(&text, "herald_sent_bytes_total") > 0.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "herald_engine_seconds_count{store=\"sqlite\",op=\"inbox_read\"}"
        ),
        1.0,
        "the inbox read at connect: {text}"
    );
    assert_eq!(metric(&text, "herald_publish_api_seconds_count"), 3.0);
    assert!(
        text.contains("herald_fanout_seconds_bucket{le=\"0.001\"}"),
        "a histogram with buckets"
    );

    drop(sam);
    let server = &server;
    let closed = eventually("the close to be counted", || async move {
        let (_, text) = server.api("GET", "/metrics", None, None).await;
        let text = text.as_str().unwrap_or("").to_string();
        let closed = metric(
            &text,
            "herald_connections_closed_total{reason=\"client_gone\"}",
        ) + metric(
            &text,
            "herald_connections_closed_total{reason=\"client_closed\"}",
        );
        (closed > 0.0).then_some(closed)
    })
    .await;
    assert_eq!(closed, 1.0, "the close is counted with its reason");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_its_paths_answer() {
    let server = Server::start("");
    let (status, doc) = server.api("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path.starts_with("/ws") && !path.starts_with("/ws/") || path == "/ws/connect" {
            continue; // the upgrade endpoints answer 400 to plain HTTP, checked elsewhere
        }
        let concrete = path
            .replace("{topic}", "chat%3A1")
            .replace("{id}", "x1")
            .replace("{user_id}", "u1");
        for method in item.as_object().expect("item").keys() {
            let (status, body) = server
                .api(
                    &method.to_uppercase(),
                    &concrete,
                    Some(API_KEY),
                    Some(json!({"type": "t", "scope": "all", "message": "m", "messages": []})),
                )
                .await;
            assert_ne!(status, 405, "{method} {path}");
            if status == 404 {
                assert_eq!(
                    body["error"]["code"], "not_found",
                    "{method} {path} is served: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn ready_checks_the_engines() {
    let server = Server::start("");
    let (status, body) = server.api("GET", "/ready", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn connection_open_and_close_are_logged_without_tokens() {
    let server = Server::start("");
    let jwt = token("logan", "user", &[]);
    let mut client = server.connect(&jwt).await;
    client.subscribe("news").await;
    drop(client);
    let _ = refused_status(&server.ws_url("token=bad.secret.token"), &[]).await;
    let logs = eventually("the close and the refusal to be logged", || async {
        let logs = server.logs();
        (logs.contains("connection closed") && logs.contains("bad_token")).then_some(logs)
    })
    .await;
    let opened = logs
        .lines()
        .find(|l| l.contains("connection opened"))
        .expect("an open line");
    assert!(
        opened.contains("user_id=logan")
            && opened.contains("client_id=")
            && opened.contains("127.0.0.1"),
        "{opened}"
    );
    let closed = logs
        .lines()
        .find(|l| l.contains("connection closed"))
        .expect("a close line");
    assert!(
        closed.contains("duration_ms=") && closed.contains("reason="),
        "{closed}"
    );
    assert!(logs.contains("token=REDACTED"), "{logs}");
    assert!(
        !logs.contains(&jwt) && !logs.contains("bad.secret.token"),
        "no token in the logs: {logs}"
    );
}

#[tokio::test]
async fn json_logs_with_a_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let config = format!("api_key = \"{API_KEY}\"\n[jwt]\nsecret = \"{SECRET}\"\n");
    let server = Server::start_in(dir, &config, &["--log-format", "json"]);
    drop(server.user("jay").await);
    let line = eventually("the open line", || async {
        server
            .logs()
            .lines()
            .find(|l| l.contains("connection opened"))
            .map(str::to_string)
    })
    .await;
    let entry: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["user_id"], "jay");
    assert_eq!(entry["message"], "connection opened");
    let started = every_line_is_json(&server.logs())
        .into_iter()
        .find(|e| e["message"] == "herald started")
        .expect("a start-up event");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["engines"], "sqlite");
    assert!(started["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(started["listen"]
        .as_str()
        .is_some_and(|l| l.starts_with("127.0.0.1:")));

    // Without a configured secret the development-secret warning is JSON too.
    let bare = Server::start_in(
        tempfile::tempdir().expect("dir"),
        "",
        &["--log-format", "json"],
    );
    let warned = every_line_is_json(&bare.logs()).into_iter().any(|e| {
        e["level"] == "WARN"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("development secret"))
    });
    assert!(warned, "{}", bare.logs());
}

/// Parses every line of `logs` as one JSON object.
fn every_line_is_json(logs: &str) -> Vec<Value> {
    logs.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test]
async fn the_js_client_can_be_imported_from_an_allowed_origin() {
    let get = |server: &Server, origin: &'static str| {
        let url = server.http("/herald.js");
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Origin", origin)
                .send()
                .await
                .expect("GET /herald.js")
        }
    };
    // Any origin when none is configured.
    let open = Server::start("");
    let answer = get(&open, "https://app.example").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // Only the configured ones otherwise.
    let strict = Server::start("allowed_origins = [\"https://app.example\"]\n");
    let allowed = get(&strict, "https://app.example").await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = get(&strict, "https://evil.example").await;
    assert_eq!(foreign.status(), 200, "the file itself is public");
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// The metric names docs/OPERATIONS.md lists, each with the label values its row names.
fn documented_metrics() -> Vec<(String, Vec<String>)> {
    let operations = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/OPERATIONS.md"
    ))
    .expect("docs/OPERATIONS.md");
    operations
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|row| {
            let (name, rest) = row.split_once('`')?;
            if !(name.starts_with("herald_") || name.starts_with("process_")) {
                return None;
            }
            let cells: Vec<&str> = rest.split('|').collect();
            let label = cells
                .get(2)
                .map(|c| c.trim().trim_matches('`'))
                .unwrap_or("");
            let meaning = cells.get(3).copied().unwrap_or("");
            // The label values a row names: its backticked words, when it has one label.
            let values = if label.is_empty() || label.contains(',') || name == "herald_build_info" {
                Vec::new()
            } else {
                meaning
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|v| v.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                    .map(str::to_string)
                    .collect()
            };
            Some((format!("{name}|{label}"), values))
        })
        .collect()
}

#[tokio::test]
async fn every_documented_metric_is_described_and_present_from_the_start() {
    let server = Server::start("");
    let (status, text) = server.api("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("prometheus text").to_string();
    let documented = documented_metrics();
    assert!(documented.len() >= 15, "the table was read: {documented:?}");
    for (key, values) in &documented {
        let (name, label) = key.split_once('|').expect("key");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "HELP for {name}:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#')),
            "{name} has a sample before any traffic:\n{text}"
        );
        for value in values {
            let series = format!("{name}{{{label}=\"{value}\"}} 0");
            assert!(text.contains(&series), "{series} at start:\n{text}");
        }
    }
    let version = format!(
        "herald_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "{text}");
    assert!(
        metric(&text, "process_resident_memory_bytes") > 0.0,
        "{text}"
    );
    assert!(metric(&text, "process_open_fds") > 0.0, "{text}");
}

#[tokio::test]
async fn every_refusal_is_counted_and_logged_with_its_reason() {
    let server = Server::start("allowed_origins = [\"https://app.example\"]\n");
    let good = server.ws_url(&format!("token={}", token("r", "user", &[])));
    let (status, _) = refused_status(&good, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let (status, _) = refused_status(&server.ws_url("token=bad.secret.token"), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = server
        .api("GET", "/api/v1/stats", Some("wrong-key"), None)
        .await;
    assert_eq!(status, 401);
    let mut by_message = Client::connect(&server.ws_url("")).await;
    assert_eq!(by_message.recv().await["type"], "auth_required");
    by_message
        .send(json!({"type": "auth", "token": "not.a.token"}))
        .await;
    assert_eq!(by_message.recv().await["data"]["code"], "auth_failed");
    assert_eq!(by_message.closed().await.code, 1008);

    let (_, text) = server.api("GET", "/metrics", None, None).await;
    let text = text.as_str().expect("text").to_string();
    for reason in ["origin", "bad_token", "api_credentials", "auth_failed"] {
        assert_eq!(
            metric(
                &text,
                &format!("herald_refusals_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{reason}: {text}"
        );
    }
    let logs = eventually("four refusals logged", || async {
        let logs = server.logs();
        (logs.matches(" refused ").count() >= 4).then_some(logs)
    })
    .await;
    for reason in ["origin", "bad_token", "api_credentials", "auth_failed"] {
        let line = logs
            .lines()
            .find(|l| {
                l.contains(&format!("reason=\"{reason}\""))
                    || l.contains(&format!("reason={reason}"))
            })
            .unwrap_or_else(|| panic!("a line for {reason}: {logs}"));
        assert!(line.contains("127.0.0.1"), "the peer: {line}");
        assert!(!line.contains("Some("), "the address as written: {line}");
    }
    assert!(
        !logs.contains("wrong-key") && !logs.contains("not.a.token"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_internal_listener_takes_the_api_and_metrics_off_the_public_port() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let internal = free.local_addr().expect("addr");
    drop(free);
    let server = Server::start_in(
        tempfile::tempdir().expect("dir"),
        &format!("api_key = \"{API_KEY}\"\n[jwt]\nsecret = \"{SECRET}\"\n"),
        &["--internal-listen", &internal.to_string(), "--no-console"],
    );
    let get = |url: String| async move {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request");
        response.status().as_u16()
    };
    // The public port: clients and probes, nothing else.
    drop(server.user("public").await);
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/api/v1/stats", 404),
        ("/metrics", 404),
        ("/ws/stats", 404),
        ("/", 404),
        ("/herald.js", 404),
    ] {
        assert_eq!(get(server.http(path)).await, status, "public {path}");
    }
    // The internal port: the API, metrics and probes, no WebSocket.
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/api/v1/stats", 200),
        ("/metrics", 200),
        ("/ws", 404),
    ] {
        assert_eq!(
            get(format!("http://{internal}{path}")).await,
            status,
            "internal {path}"
        );
    }
}

/// `POST /api/v1/publish` with the API key and an `Idempotency-Key` header.
async fn publish_with_key_header(server: &Server, key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("http request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_answer_and_delivers_once() {
    let server = Server::start("");
    let mut reader = server.user("reader").await;
    reader.subscribe("news").await;
    let body =
        |n: u64| json!({"scope": "topic", "target": "news", "type": "note", "data": {"n": n}});

    // The field, then the header, then ten at once: one publication, one answer.
    let keyed = keyed_body(&body(1), "order-17");
    let (status, first) = server.publish(keyed.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = publish_with_key_header(&server, "order-17", body(2)).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "the first answer, whatever the body"
    );
    let repeats = (0..10).map(|_| server.publish(keyed.clone()));
    for (status, answer) in futures_util::future::join_all(repeats).await {
        assert_eq!((status, &answer), (200, &first));
    }
    // Ten concurrent first claims of a fresh key: one publication too.
    let fresh = keyed_body(&body(3), "order-18");
    let racing = (0..10).map(|_| server.publish(fresh.clone()));
    let answers: BTreeSet<String> = futures_util::future::join_all(racing)
        .await
        .into_iter()
        .map(|(status, answer)| {
            assert_eq!(status, 200, "{answer}");
            answer["id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(answers.len(), 1, "one id for one key: {answers:?}");
    server.publish(body(4)).await;
    let seen: Vec<Value> = [
        reader.recv().await,
        reader.recv().await,
        reader.recv().await,
    ]
    .iter()
    .map(|m| m["data"]["n"].clone())
    .collect();
    assert_eq!(
        seen,
        [json!(1), json!(3), json!(4)],
        "each key delivered once"
    );
    reader.expect_silence().await;

    // A batch: the key of an earlier publish, and the same key twice within the batch.
    let item = keyed_body(&body(5), "order-19");
    let (status, batch) = server
        .publish_batch(json!([keyed, item.clone(), item]))
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0], first);
    assert_eq!(batch["results"][1], batch["results"][2]);
    assert_eq!(reader.recv().await["data"]["n"], 5);
    reader.expect_silence().await;

    // Bad keys change nothing.
    for bad in [
        json!(""),
        json!("k".repeat(256)),
        json!("a\nb"),
        json!(["k"]),
    ] {
        let mut wrong = body(6);
        wrong["idempotency_key"] = bad.clone();
        let (status, answer) = server.publish(wrong).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_message", "{answer}");
    }
    reader.expect_silence().await;
}

#[tokio::test]
async fn past_the_idempotency_window_a_key_publishes_again() {
    let server = Server::start("[recovery]\nidempotency_window = \"300ms\"");
    let body = keyed_body(
        &json!({"scope": "topic", "target": "news", "type": "note", "data": {}}),
        "nightly-report",
    );
    let (_, first) = server.publish(body.clone()).await;
    let (_, again) = server.publish(body.clone()).await;
    assert_eq!(again, first, "within the window");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, later) = server.publish(body).await;
    assert_eq!(status, 200, "{later}");
    assert_ne!(
        later["id"], first["id"],
        "a new publication past the window"
    );
}

fn keyed_body(body: &Value, key: &str) -> Value {
    let mut keyed = body.clone();
    keyed["idempotency_key"] = json!(key);
    keyed
}
