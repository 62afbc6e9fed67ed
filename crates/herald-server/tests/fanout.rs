//! Scoped fan-out (docs/PROTOCOL.md, section 5) and `POST /api/v1/publish` (section 11, first row),
//! with its API key and admin-JWT checks, and the membership store behind the project scope.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn user_scope_reaches_every_tab_of_that_user_and_nobody_else() {
    let server = Server::start("");
    let mut tab1 = server.user("alice").await;
    let mut tab2 = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let (status, answer) = server
        .publish(json!({"scope": "user", "target": "alice", "type": "notification", "data": {"title": "hi"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recipients"], 2);
    let a = tab1.recv().await;
    let b = tab2.recv().await;
    assert_eq!(a["type"], "notification");
    assert_eq!(a["data"], json!({"title": "hi"}));
    assert_eq!(a["id"], answer["id"]);
    assert_eq!(a, b, "both tabs get the same message");
    assert!(
        a.get("topic").is_none(),
        "no topic on a user-scope delivery"
    );
    bob.expect_silence().await;
}

#[tokio::test]
async fn all_scope_reaches_every_authenticated_connection_once() {
    let server = Server::start("");
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        clients.push(server.user(user).await);
    }
    clients[0].subscribe("news").await;
    // Not authenticated yet: must not receive anything.
    let mut stranger = Client::connect(&server.ws_url("")).await;
    assert_eq!(stranger.recv().await["type"], "auth_required");

    let (_, answer) = server
        .publish(json!({"scope": "all", "type": "system.alert", "data": {"m": 1}}))
        .await;
    assert_eq!(answer["recipients"], 3);
    let mut texts = Vec::new();
    for client in &mut clients {
        texts.push(client.recv_text().await);
        client.expect_silence().await;
    }
    assert!(
        texts.iter().all(|t| *t == texts[0]),
        "one encoding, byte-identical copies"
    );
    stranger.expect_silence().await;
}

#[tokio::test]
async fn role_scope_reaches_only_that_role() {
    let server = Server::start("");
    let mut admin1 = server.connect(&token("ann", "admin", &[])).await;
    let mut admin2 = server.connect(&token("ben", "admin", &[])).await;
    let mut user = server.user("cat").await;
    let (_, answer) = server
        .publish(json!({"scope": "role", "target": "admin", "type": "user.created"}))
        .await;
    assert_eq!(answer["recipients"], 2);
    assert_eq!(admin1.recv().await["type"], "user.created");
    let got = admin2.recv().await;
    assert_eq!(got["data"], json!({}), "data defaults to {{}}");
    user.expect_silence().await;
}

#[tokio::test]
async fn project_scope_gives_members_by_claim_and_store_exactly_one_copy() {
    let server = Server::start("");
    // dan is a member twice over: in his token and in the store.
    let (status, added) = server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/dan",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(added["added"], true);
    server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/eve",
            Some(API_KEY),
            None,
        )
        .await;
    let mut dan = server.connect(&token("dan", "user", &["p1"])).await;
    let mut eve = server.user("eve").await; // by the store only
    let mut fay = server.connect(&token("fay", "user", &["p1"])).await; // by the claim only
    let mut gus = server.connect(&token("gus", "user", &["p2"])).await;

    let (_, answer) = server
        .publish(json!({"scope": "project", "target": "p1", "type": "task.created", "data": {"id": "t1"}}))
        .await;
    assert_eq!(answer["recipients"], 3);
    for member in [&mut dan, &mut eve, &mut fay] {
        let got = member.recv().await;
        assert_eq!(got["type"], "task.created");
        assert_eq!(got["data"], json!({"id": "t1"}));
        member.expect_silence().await;
    }
    gus.expect_silence().await;

    let (_, listed) = server
        .api("GET", "/api/v1/projects/p1/members", Some(API_KEY), None)
        .await;
    assert_eq!(listed["members"], json!(["dan", "eve"]));
    let (_, removed) = server
        .api(
            "DELETE",
            "/api/v1/projects/p1/members/eve",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(removed["removed"], true);
    let (_, answer) = server
        .publish(json!({"scope": "project", "target": "p1", "type": "again"}))
        .await;
    assert_eq!(answer["recipients"], 2);
    eve.expect_silence().await;
}

#[tokio::test]
async fn membership_survives_a_restart() {
    let mut server = Server::start("");
    server
        .api(
            "PUT",
            "/api/v1/projects/p9/members/hal",
            Some(API_KEY),
            None,
        )
        .await;
    server.restart();
    let (_, listed) = server
        .api("GET", "/api/v1/projects/p9/members", Some(API_KEY), None)
        .await;
    assert_eq!(listed["members"], json!(["hal"]));
    let mut hal = server.user("hal").await;
    hal.subscribe("project:p9").await;
}

#[tokio::test]
async fn topic_scope_reaches_subscribers_only() {
    let server = Server::start("");
    let mut sub1 = server.user("ida").await;
    let mut sub2 = server.user("jon").await;
    let mut other = server.user("kai").await;
    sub1.subscribe("alerts:eu").await;
    sub2.subscribe("alerts:eu").await;
    other.subscribe("alerts:us").await;
    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "alerts:eu", "type": "check.down", "data": {"check": 1}}))
        .await;
    assert_eq!(answer["recipients"], 2);
    for sub in [&mut sub1, &mut sub2] {
        let got = sub.recv().await;
        assert_eq!(got["type"], "check.down");
        assert_eq!(got["topic"], "alerts:eu");
        assert_eq!(got["id"], answer["id"]);
    }
    other.expect_silence().await;
}

#[tokio::test]
async fn a_connection_matching_a_scope_twice_gets_one_copy() {
    let server = Server::start("");
    // Subscribed to its own user topic and targeted by user scope through the index: one copy
    // per publication, whatever the route.
    let mut lia = server.connect(&token("lia", "admin", &["p1"])).await;
    lia.subscribe("user:lia").await;
    lia.subscribe("project:p1").await;
    server
        .api(
            "PUT",
            "/api/v1/projects/p1/members/lia",
            Some(API_KEY),
            None,
        )
        .await;
    for body in [
        json!({"scope": "user", "target": "lia", "type": "u"}),
        json!({"scope": "project", "target": "p1", "type": "p"}),
        json!({"scope": "role", "target": "admin", "type": "r"}),
        json!({"scope": "all", "type": "a"}),
    ] {
        let (_, answer) = server.publish(body.clone()).await;
        assert_eq!(answer["recipients"], 1, "{body}");
        assert_eq!(lia.recv().await["type"], body["type"]);
        lia.expect_silence().await;
    }
}

#[tokio::test]
async fn publish_accepts_the_api_key_and_admin_tokens_only() {
    let server = Server::start("");
    let body = json!({"scope": "all", "type": "x"});
    let (status, _) = server
        .api("POST", "/api/v1/publish", Some(API_KEY), Some(body.clone()))
        .await;
    assert_eq!(status, 200);
    for role in ["admin", "superadmin"] {
        let (status, answer) = server
            .api(
                "POST",
                "/api/v1/publish",
                Some(&token("boss", role, &[])),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 200, "{role}: {answer}");
    }
    let (status, answer) = server
        .api(
            "POST",
            "/api/v1/publish",
            Some(&token("pleb", "user", &[])),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(answer["error"]["code"], "forbidden");
    for bearer in [None, Some("wrong-key")] {
        let (status, answer) = server
            .api("POST", "/api/v1/publish", bearer, Some(body.clone()))
            .await;
        assert_eq!(status, 401, "{bearer:?}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let (status, _) = server
        .api("PUT", "/api/v1/projects/p/members/u", None, None)
        .await;
    assert_eq!(status, 401, "membership needs credentials too");
}

#[tokio::test]
async fn without_an_api_key_only_admin_tokens_publish() {
    let server = Server::start_with(&format!("[jwt]\nsecret = \"{SECRET}\"\n"));
    let body = json!({"scope": "all", "type": "x"});
    let (status, _) = server
        .api("POST", "/api/v1/publish", Some(API_KEY), Some(body.clone()))
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/publish",
            Some(&token("boss", "admin", &[])),
            Some(body),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_publish_requests_get_400_with_a_code_and_deliver_nothing() {
    let server = Server::start("");
    let mut watcher = server.connect(&token("mo", "admin", &[])).await;
    let (status, answer) = server.post_raw("/api/v1/publish", "{oops").await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_message");
    for (body, what) in [
        (json!({"scope": "galaxy", "type": "x"}), "unknown scope"),
        (json!({"scope": "user", "type": "x"}), "missing target"),
        (
            json!({"scope": "topic", "target": "bad topic", "type": "x"}),
            "bad topic",
        ),
        (json!({"scope": "all"}), "missing type"),
        (json!({"type": "x"}), "missing scope"),
        (json!([1, 2]), "not an object"),
    ] {
        let (status, answer) = server.publish(body).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(answer["error"]["code"], "invalid_message", "{what}");
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    watcher.expect_silence().await;
}
