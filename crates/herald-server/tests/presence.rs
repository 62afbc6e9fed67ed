//! Presence, join/leave events and live permission changes (docs/PROTOCOL.md, sections 3 and 4).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ROOMS: &str =
    "[[namespaces]]\nname = \"room\"\npresence = true\njoin_leave = true\npublish = true\n\
                     [[namespaces]]\nname = \"quiet\"\npresence = true\n";

/// `{user_id: connections}` from a `presence` reply's data (or the HTTP answer).
fn who(data: &Value) -> BTreeMap<String, u64> {
    data["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            assert!(u["joined_at"].is_string(), "{u}");
            (
                u["user_id"].as_str().expect("user_id").to_string(),
                u["connections"].as_u64().expect("connections"),
            )
        })
        .collect()
}

fn users(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(u, n)| (u.to_string(), *n)).collect()
}

async fn presence_by_command(client: &mut Client, topic: &str) -> BTreeMap<String, u64> {
    let reply = client
        .request(json!({"type": "presence", "topic": topic}))
        .await;
    assert_eq!(reply["type"], "presence", "{reply}");
    assert_eq!(reply["data"]["topic"], topic);
    who(&reply["data"])
}

async fn presence_by_http(server: &Server, topic: &str) -> BTreeMap<String, u64> {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/topics/{}/presence", topic.replace(':', "%3A")),
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    who(&body)
}

/// The next `user_joined` / `user_left` the observer gets: (event, user).
async fn event(observer: &mut Client) -> (String, String) {
    let got = observer.recv().await;
    assert_eq!(got["topic"], "room:1", "{got}");
    (
        got["type"].as_str().expect("type").to_string(),
        got["data"]["user_id"]
            .as_str()
            .expect("user_id")
            .to_string(),
    )
}

/// Sends a command and returns the reply of type `kind`, passing over join/leave events the
/// client had not read yet.
async fn reply_of(client: &mut Client, command: Value, kind: &str) -> Value {
    client.send(command).await;
    loop {
        let got = client.recv().await;
        if got["type"] == kind {
            return got;
        }
        assert!(
            matches!(got["type"].as_str(), Some("user_joined" | "user_left")),
            "{got}"
        );
    }
}

fn ev(kind: &str, user: &str) -> (String, String) {
    (kind.to_string(), user.to_string())
}

#[tokio::test]
async fn two_users_and_two_tabs_join_and_leave_in_every_order() {
    let server = Server::start(ROOMS);
    let mut observer = server.user("olga").await;
    observer.subscribe("room:1").await;
    assert_eq!(
        event(&mut observer).await,
        ev("user_joined", "olga"),
        "the observer's own join"
    );

    let mut tab1 = server.user("alice").await;
    tab1.subscribe("room:1").await;
    assert_eq!(event(&mut observer).await, ev("user_joined", "alice"));
    let mut tab2 = server.user("alice").await;
    tab2.subscribe("room:1").await;
    let mut bob = server.user("bob").await;
    bob.subscribe("room:1").await;
    // Alice's second tab made no second join: the next event is bob's.
    assert_eq!(event(&mut observer).await, ev("user_joined", "bob"));
    let expected = users(&[("alice", 2), ("bob", 1), ("olga", 1)]);
    assert_eq!(presence_by_command(&mut observer, "room:1").await, expected);
    assert_eq!(presence_by_http(&server, "room:1").await, expected);

    // Alice's first tab leaves by unsubscribing: she is still there through the second.
    reply_of(
        &mut tab1,
        json!({"type": "unsubscribe", "topic": "room:1"}),
        "unsubscribed",
    )
    .await;
    assert_eq!(
        presence_by_http(&server, "room:1").await,
        users(&[("alice", 1), ("bob", 1), ("olga", 1)])
    );
    // Bob closes: he leaves. Then alice's second tab closes: she leaves.
    drop(bob);
    assert_eq!(event(&mut observer).await, ev("user_left", "bob"));
    tab2.close_cleanly().await;
    assert_eq!(event(&mut observer).await, ev("user_left", "alice"));
    observer.expect_silence().await;
    assert_eq!(
        presence_by_http(&server, "room:1").await,
        users(&[("olga", 1)])
    );

    // And the other order: tab A joins, tab B joins, A closes, B unsubscribes.
    let mut a = server.user("carl").await;
    let mut b = server.user("carl").await;
    a.subscribe("room:1").await;
    assert_eq!(event(&mut observer).await, ev("user_joined", "carl"));
    b.subscribe("room:1").await;
    drop(a);
    reply_of(
        &mut b,
        json!({"type": "unsubscribe", "topic": "room:1"}),
        "unsubscribed",
    )
    .await;
    assert_eq!(event(&mut observer).await, ev("user_left", "carl"));
    observer.expect_silence().await;
    assert_eq!(
        presence_by_command(&mut observer, "room:1").await,
        users(&[("olga", 1)])
    );
}

#[tokio::test]
async fn a_kick_by_the_api_ends_in_user_left() {
    let server = Server::start(ROOMS);
    let mut observer = server.user("olga").await;
    observer.subscribe("room:1").await;
    event(&mut observer).await;
    let mut dan = server.user("dan").await;
    dan.subscribe("room:1").await;
    assert_eq!(event(&mut observer).await, ev("user_joined", "dan"));
    server
        .api("POST", "/api/v1/users/dan/disconnect", Some(API_KEY), None)
        .await;
    assert_eq!(event(&mut observer).await, ev("user_left", "dan"));
}

#[tokio::test]
async fn a_dropped_connection_ends_in_user_left_after_the_pong_timeout() {
    let server = Server::start(&format!(
        "[limits]\nping_interval = \"200ms\"\npong_timeout = \"1s\"\n{ROOMS}"
    ));
    let mut observer = server.user("olga").await;
    observer.subscribe("room:1").await;
    event(&mut observer).await;
    let mut ghost = server.user("ghost").await;
    ghost.subscribe("room:1").await;
    assert_eq!(event(&mut observer).await, ev("user_joined", "ghost"));
    // The ghost's process hangs: its socket stays open but nothing answers pings any more.
    let observed = tokio::spawn(async move {
        let got = event(&mut observer).await;
        (got, observer)
    });
    let hung = ghost; // kept open, never polled again
    let (got, _observer) = tokio::time::timeout(Duration::from_secs(10), observed)
        .await
        .expect("user_left within 10 s")
        .expect("join");
    assert_eq!(got, ev("user_left", "ghost"));
    drop(hung);
}

#[tokio::test]
async fn namespaces_without_join_leave_announce_nothing_and_without_presence_refuse_it() {
    let server = Server::start(ROOMS);
    let mut a = server.user("ann").await;
    a.subscribe("quiet:1").await;
    let mut b = server.user("ben").await;
    b.subscribe("quiet:1").await;
    a.expect_silence().await;
    assert_eq!(
        presence_by_command(&mut a, "quiet:1").await,
        users(&[("ann", 1), ("ben", 1)])
    );

    for topic in ["news", "project:p1", "other:1"] {
        let reply = a.request(json!({"type": "presence", "topic": topic})).await;
        assert_eq!(reply["data"]["code"], "forbidden", "{topic}");
        let (status, body) = server
            .api(
                "GET",
                &format!("/api/v1/topics/{}/presence", topic.replace(':', "%3A")),
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (404, json!("not_found")),
            "{topic}"
        );
    }
    let reply = a
        .request(json!({"type": "presence", "topic": "bad topic"}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message");
}

#[tokio::test]
async fn presence_needs_the_right_to_subscribe() {
    let server = Server::start(
        "[[namespaces]]\nname = \"staff\"\nsubscribe = \"role:admin\"\npresence = true\n",
    );
    let mut admin = server.connect(&token("root", "admin", &[])).await;
    admin.subscribe("staff:x").await;
    let mut user = server.user("eve").await;
    let reply = user
        .request(json!({"type": "presence", "topic": "staff:x"}))
        .await;
    assert_eq!(reply["data"]["code"], "forbidden");
    assert_eq!(
        presence_by_command(&mut admin, "staff:x").await,
        users(&[("root", 1)])
    );
}

#[tokio::test]
async fn typing_indicators_are_delivered_live() {
    // A namespace with client publish and no history: an ephemeral signal.
    let server = Server::start(ROOMS);
    let mut ann = server.user("ann").await;
    let mut ben = server.user("ben").await;
    ann.subscribe("room:typing").await;
    ben.subscribe("room:typing").await;
    let joined = ann.recv().await;
    assert_eq!(joined["type"], "user_joined");
    assert_eq!(ann.recv().await["data"]["user_id"], "ben");
    ben.recv().await;
    ben.send(json!({"type": "publish", "topic": "room:typing", "event": "typing", "data": {"typing": true}}))
        .await;
    let got = ann.recv().await;
    assert_eq!(got["type"], "typing");
    assert_eq!(got["from"]["user_id"], "ben");
    let reply = ann
        .request(json!({"type": "history", "topic": "room:typing"}))
        .await;
    assert_eq!(reply["data"]["code"], "not_found", "nothing was stored");
}

#[tokio::test]
async fn a_removed_member_stops_receiving_project_topics_at_once() {
    let server = Server::start("");
    server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/fay",
            Some(API_KEY),
            None,
        )
        .await;
    let mut fay = server.user("fay").await;
    let mut fay2 = server.user("fay").await;
    fay.subscribe("project:p1").await;
    fay2.subscribe("project:p1").await;
    let (status, _) = server
        .api(
            "DELETE",
            "/api/v1/projects/p1/members/fay",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for tab in [&mut fay, &mut fay2] {
        let notice = tab.recv().await;
        assert_eq!(notice["type"], "unsubscribed");
        assert_eq!(notice["data"]["topic"], "project:p1");
        assert_eq!(notice["data"]["reason"], "permission revoked");
    }
    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "project:p1", "type": "secret"}))
        .await;
    assert_eq!(answer["recipients"], 0);
    let (_, answer) = server
        .publish(json!({"scope": "project", "target": "p1", "type": "secret"}))
        .await;
    assert_eq!(answer["recipients"], 0);
    fay.expect_silence().await;
    let reply = fay
        .request(json!({"type": "subscribe", "topic": "project:p1"}))
        .await;
    assert_eq!(reply["data"]["code"], "forbidden");
}

#[tokio::test]
async fn a_member_by_token_claim_keeps_the_topic_when_the_store_entry_goes() {
    let server = Server::start("");
    server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/gus",
            Some(API_KEY),
            None,
        )
        .await;
    let mut gus = server.connect(&token("gus", "user", &["p1"])).await;
    gus.subscribe("project:p1").await;
    server
        .api(
            "DELETE",
            "/api/v1/projects/p1/members/gus",
            Some(API_KEY),
            None,
        )
        .await;
    gus.expect_silence().await;
    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "project:p1", "type": "still"}))
        .await;
    assert_eq!(answer["recipients"], 1);
}

#[tokio::test]
async fn a_refreshed_token_that_lost_grants_loses_those_topics() {
    let server = Server::start("");
    let mut hal = server.connect(&token("hal", "admin", &["p1", "p2"])).await;
    for topic in ["project:p1", "project:p2", "role:admin", "news"] {
        hal.subscribe(topic).await;
    }
    let reply = hal
        .request(json!({"type": "refresh", "token": token("hal", "user", &["p2"])}))
        .await;
    assert_eq!(reply["type"], "refreshed");
    let mut revoked = Vec::new();
    for _ in 0..2 {
        let notice = hal.recv().await;
        assert_eq!(notice["type"], "unsubscribed");
        assert_eq!(notice["data"]["reason"], "permission revoked");
        revoked.push(notice["data"]["topic"].as_str().expect("topic").to_string());
    }
    revoked.sort();
    assert_eq!(revoked, ["project:p1", "role:admin"]);
    let status = hal.request(json!({"type": "status"})).await;
    assert_eq!(status["data"]["topics"], json!(["news", "project:p2"]));
    assert_eq!(status["data"]["role"], "user");
}
