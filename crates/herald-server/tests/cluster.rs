//! Many nodes as one (issue 7): three `herald` processes on one private `redis-server`. The
//! Redis engines pass the same conformance suite as the embedded ones; every scope, history
//! offsets, presence, the inbox, disconnects and stats work across nodes; and each fault (a
//! node killed, Redis restarted, Redis unreachable) has a test.

mod common;

use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisServer, SharedRedis};
use common::*;
use herald::engine::redis::{RedisOptions, RedisStore};
use herald_testkit::conformance;
use serde_json::{json, Value};

const NAMESPACES: &str =
    "[[namespaces]]\nname = \"chat\"\nhistory_size = 100\nhistory_ttl = \"1h\"\n\
     [[namespaces]]\nname = \"room\"\npresence = true\njoin_leave = true\n";

/// A node of the cluster on `redis`, named `id`, with a short node TTL and Redis timeout.
fn node(redis: &impl SharedRedis, id: &str) -> Server {
    Server::start(&format!(
        "{}\nnode_id = \"{id}\"\n[cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"{}\"\n{NAMESPACES}",
        redis.config_line(),
        redis.redis_timeout()
    ))
}

fn three_nodes(redis: &impl SharedRedis) -> [Server; 3] {
    [node(redis, "n1"), node(redis, "n2"), node(redis, "n3")]
}

/// The next `kind` event about `user`, skipping other join/leave events (a joiner also hears
/// its own `user_joined`, which in cluster mode may come before or after others').
async fn next_event(client: &mut Client, kind: &str, user: &str) -> Value {
    loop {
        let got = client.recv().await;
        if got["type"] == kind && got["data"]["user_id"] == user {
            return got;
        }
        assert!(
            got["type"] == "user_joined" || got["type"] == "user_left",
            "expected {kind} {user}, got {got}"
        );
    }
}

async fn publish(server: &Server, scope: &str, target: Option<&str>, data: Value) -> Value {
    let mut body = json!({"scope": scope, "type": "event", "data": data});
    if let Some(target) = target {
        body["target"] = json!(target);
    }
    let (status, answer) = server.publish(body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn the_redis_engines_pass_the_conformance_suite(redis: impl SharedRedis) {
    let store = RedisStore::open(&RedisOptions {
        deployment: redis.deployment(),
        node_id: "conformance".into(),
        timeout: Duration::from_secs(2),
        wait_replicas: None,
    })
    .expect("open");
    conformance::membership(&store).await;
    conformance::presence(&store).await;
    conformance::history(&store).await;
    conformance::inbox(&store).await;
}

async fn the_redis_broker_passes_the_broker_suite(redis: impl SharedRedis) {
    use herald::engine::redis::RedisBroker;
    use herald_testkit::broker::{self, Recorder};
    let store = RedisStore::open(&RedisOptions {
        deployment: redis.deployment(),
        node_id: "broker-suite".into(),
        timeout: Duration::from_secs(2),
        wait_replicas: None,
    })
    .expect("open");
    let config = herald::Config::from_toml(NAMESPACES).expect("config");
    let recorder = Recorder::new();
    let started = RedisBroker::start(store.clone(), recorder.clone(), std::sync::Arc::new(config));
    let generations = started.generations();
    let link = |at_least: u64| {
        let generations = generations.clone();
        async move { (*generations.borrow() >= at_least).then_some(()) }
    };
    eventually("the Pub/Sub link", || link(1)).await;
    broker::broker(&started, &recorder, &store, &store, "chat").await;
    let cut = async {
        assert!(redis.cut_pubsub() > 0, "no Pub/Sub connection to cut");
    };
    let up = eventually("the Pub/Sub link back", || link(2));
    broker::catch_up(&started, &recorder, &store, "chat", cut, up).await;
}

async fn every_scope_reaches_the_right_connections_on_every_node_exactly_once(
    redis: impl SharedRedis,
) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let [n1, n2, n3] = &nodes;
    // alice has a tab on n1 and on n2; bob (admin) is on n3; carol claims project p1 on n2;
    // dave is a stored member of p1 on n3; erin is on n1 with nothing in common.
    let mut alice1 = n1.connect(&token("alice", "user", &[])).await;
    let mut alice2 = n2.connect(&token("alice", "user", &[])).await;
    let mut bob = n3.connect(&token("bob", "admin", &[])).await;
    let mut carol = n2.connect(&token("carol", "user", &["p1"])).await;
    let mut dave = n3.connect(&token("dave", "user", &[])).await;
    let mut erin = n1.connect(&token("erin", "user", &[])).await;
    let (status, _) = n1
        .api(
            "PUT",
            "/api/v1/projects/p1/members/dave",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for (client, who) in [
        (&mut alice1, "alice"),
        (&mut bob, "bob"),
        (&mut erin, "erin"),
    ] {
        client.subscribe("news").await;
        let _ = who;
    }

    publish(n2, "user", Some("alice"), json!({"n": 1})).await;
    for alice in [&mut alice1, &mut alice2] {
        assert_eq!(alice.recv().await["data"]["n"], 1);
    }
    publish(n1, "role", Some("admin"), json!({"n": 2})).await;
    assert_eq!(bob.recv().await["data"]["n"], 2);
    publish(n1, "project", Some("p1"), json!({"n": 3})).await;
    assert_eq!(carol.recv().await["data"]["n"], 3);
    assert_eq!(dave.recv().await["data"]["n"], 3);
    publish(n3, "topic", Some("news"), json!({"n": 4})).await;
    for client in [&mut alice1, &mut bob, &mut erin] {
        let got = client.recv().await;
        assert_eq!(
            (got["topic"].clone(), got["data"]["n"].clone()),
            (json!("news"), json!(4))
        );
    }
    publish(n2, "all", None, json!({"n": 5})).await;
    for client in [
        &mut alice1,
        &mut alice2,
        &mut bob,
        &mut carol,
        &mut dave,
        &mut erin,
    ] {
        assert_eq!(client.recv().await["data"]["n"], 5, "everyone, once");
        client.expect_silence().await;
    }
}

async fn an_idempotency_key_sent_through_two_nodes_publishes_once(redis: impl SharedRedis) {
    let (n1, n2) = (node(&redis, "n1"), node(&redis, "n2"));
    ready(&n1).await;
    ready(&n2).await;
    let mut reader = n2.user("reader").await;
    reader.subscribe("news").await;
    let body = |key: &str, n: u64| json!({"scope": "all", "type": "event", "data": {"n": n}, "idempotency_key": key});
    let (status, first) = n1.publish(body("deploy-1", 1)).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = n2.publish(body("deploy-1", 2)).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "the first answer, from the other node"
    );
    // Both nodes at once with a fresh key: one publication, one id.
    let (a, b) = tokio::join!(
        n1.publish(body("deploy-2", 3)),
        n2.publish(body("deploy-2", 3))
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1["id"], b.1["id"]);
    assert_eq!(reader.recv().await["data"]["n"], 1);
    assert_eq!(reader.recv().await["data"]["n"], 3);
    reader.expect_silence().await;
}

async fn offsets_are_cluster_wide_and_recovery_works_on_any_node(redis: impl SharedRedis) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let mut reader = nodes[2].connect(&token("reader", "user", &[])).await;
    reader.subscribe("chat:general").await;
    for (i, n) in nodes.iter().cycle().take(6).enumerate() {
        let answer = publish(n, "topic", Some("chat:general"), json!({"i": i})).await;
        assert_eq!(
            answer["offset"],
            i as u64 + 1,
            "one counter for the cluster"
        );
    }
    let mut epoch = Value::Null;
    for i in 0..6u64 {
        let got = reader.recv().await;
        assert_eq!(
            (got["offset"].as_u64(), got["data"]["i"].as_u64()),
            (Some(i + 1), Some(i))
        );
        epoch = got["epoch"].clone();
    }
    drop(reader);
    for i in 6..9 {
        publish(&nodes[0], "topic", Some("chat:general"), json!({"i": i})).await;
    }
    // Back on another node, from offset 6: the three it missed, then live ones.
    let mut back = nodes[1].connect(&token("reader", "user", &[])).await;
    let reply = back
        .request(json!({"type": "subscribe", "topic": "chat:general",
                        "since": {"offset": 6, "epoch": epoch}}))
        .await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    for offset in 7..=9u64 {
        assert_eq!(back.recv().await["offset"], offset);
    }
    publish(&nodes[2], "topic", Some("chat:general"), json!({"i": 9})).await;
    assert_eq!(back.recv().await["offset"], 10);
    back.expect_silence().await;
    // The HTTP history answers the same on every node.
    for n in &nodes {
        let (status, page) = n
            .api(
                "GET",
                "/api/v1/topics/chat%3Ageneral/history?limit=100",
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["messages"].as_array().map(Vec::len),
            Some(10),
            "{page}"
        );
    }
}

async fn presence_and_join_leave_are_cluster_wide(redis: impl SharedRedis) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let mut alice = nodes[0].connect(&token("alice", "user", &[])).await;
    alice.subscribe("room:1").await;
    let mut bob = nodes[1].connect(&token("bob", "user", &[])).await;
    bob.subscribe("room:1").await;
    next_event(&mut alice, "user_joined", "bob").await;
    let (status, body) = nodes[2]
        .api(
            "GET",
            "/api/v1/topics/room%3A1/presence",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let users: Vec<&str> = body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user_id"].as_str())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    drop(bob);
    next_event(&mut alice, "user_left", "bob").await;
}

async fn the_inbox_is_per_user_across_the_cluster(redis: impl SharedRedis) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let carol = nodes[1].connect(&token("carol", "user", &[])).await;
    let (status, live) = nodes[0]
        .api(
            "POST",
            "/api/v1/users/carol/message",
            Some(API_KEY),
            Some(json!({"type": "note", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        live["queued"], false,
        "online on another node is online: {live}"
    );
    drop(carol.close_cleanly().await);
    let offline = eventually("carol to be offline everywhere", || async {
        let (_, answer) = nodes[0]
            .api(
                "POST",
                "/api/v1/users/carol/message",
                Some(API_KEY),
                Some(json!({"type": "note", "data": {"n": 2}})),
            )
            .await;
        (answer["queued"] == true).then_some(answer)
    })
    .await;
    let mut back = nodes[2].connect(&token("carol", "user", &[])).await;
    // The one answered `queued` is kept; so is any message that reached carol's node while
    // her connection was closing and was never written to it (delivered or kept, never
    // neither), the first one included.
    let mut kept = Vec::new();
    while let Some(message) = back.next_json_within(QUIET).await {
        assert_eq!(message["offline"], true, "{message}");
        kept.push(message["id"].clone());
    }
    assert!(kept.contains(&offline["id"]), "{kept:?}");
    back.send(json!({"type": "ack", "ids": kept})).await;
    back.expect_silence().await;
    drop(back.close_cleanly().await);
    let mut again = nodes[0].connect(&token("carol", "user", &[])).await;
    again.expect_silence().await;
}

async fn disconnects_and_stats_span_the_cluster(redis: impl SharedRedis) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let mut on1 = nodes[0].connect(&token("dave", "user", &[])).await;
    let mut on2 = nodes[1].connect(&token("dave", "user", &[])).await;
    let _other = nodes[1].connect(&token("erin", "staff", &[])).await;
    let stats = eventually("every node in the stats", || async {
        let (_, stats) = nodes[0]
            .api("GET", "/api/v1/stats", Some(API_KEY), None)
            .await;
        (stats["total_clients"] == 3 && stats["nodes"].as_array().map(Vec::len) == Some(3))
            .then_some(stats)
    })
    .await;
    let per_node: Vec<(String, u64)> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap_or("").to_string(),
                n["total_clients"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        per_node,
        [("n1".into(), 1), ("n2".into(), 2), ("n3".into(), 0)]
    );
    assert_eq!(stats["by_role"]["staff"], 1, "{stats}");
    let (status, answer) = nodes[2]
        .api("POST", "/api/v1/users/dave/disconnect", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["disconnected"], 2,
        "both of dave's sockets, on two other nodes"
    );
    for client in [&mut on1, &mut on2] {
        assert_eq!(client.closed().await.code, 1000);
    }
}

async fn a_killed_node_is_reaped_and_its_users_leave(redis: impl SharedRedis) {
    let [n1, mut n2, n3] = three_nodes(&redis);
    for n in [&n1, &n2, &n3] {
        ready(n).await;
    }
    let mut alice = n1.connect(&token("alice", "user", &[])).await;
    alice.subscribe("room:9").await;
    let mut bob = n2.connect(&token("bob", "user", &[])).await;
    bob.subscribe("room:9").await;
    next_event(&mut alice, "user_joined", "bob").await;
    n2.signal("KILL");
    // Within the node TTL (1 s here) and a heartbeat, another node announces bob's leave.
    next_event(&mut alice, "user_left", "bob").await;
    let (_, body) = n3
        .api(
            "GET",
            "/api/v1/topics/room%3A9/presence",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(body["users"].as_array().map(Vec::len), Some(1), "{body}");
    // The others keep serving, and bob is offline: his messages wait in the inbox.
    publish(&n3, "topic", Some("room:9"), json!({"still": "here"})).await;
    assert_eq!(alice.recv().await["data"]["still"], "here");
    let (_, answer) = n1
        .api(
            "POST",
            "/api/v1/users/bob/message",
            Some(API_KEY),
            Some(json!({"type": "note", "data": {}})),
        )
        .await;
    assert_eq!(answer["queued"], true, "{answer}");
    let stats = eventually("the dead node out of the stats", || async {
        let (_, stats) = n1.api("GET", "/api/v1/stats", Some(API_KEY), None).await;
        (stats["nodes"].as_array().map(Vec::len) == Some(2)).then_some(stats)
    })
    .await;
    assert_eq!(stats["total_clients"], 1, "{stats}");
}

async fn a_lost_pubsub_link_is_caught_up_from_the_stream(redis: impl SharedRedis) {
    let nodes = three_nodes(&redis);
    for n in &nodes {
        ready(n).await;
    }
    let mut reader = nodes[0].connect(&token("reader", "user", &[])).await;
    reader.subscribe("chat:blip").await;
    publish(&nodes[1], "topic", Some("chat:blip"), json!({"i": 1})).await;
    assert_eq!(reader.recv().await["offset"], 1);
    publish(&nodes[1], "all", None, json!({"i": 1})).await;
    assert_eq!(reader.recv().await["stream"], "all");
    // Every node's Pub/Sub link is cut (Redis keeps its data); a publication made before the
    // links are back still reaches the reader, once, in order: on a topic with history and
    // through a scope stream.
    assert!(redis.cut_pubsub() > 0, "no Pub/Sub connection to cut");
    publish(&nodes[1], "topic", Some("chat:blip"), json!({"i": 2})).await;
    publish(&nodes[1], "all", None, json!({"i": 2})).await;
    let mut got: Vec<(Value, Value)> = Vec::new();
    for _ in 0..2 {
        let message = reader.recv().await;
        got.push((message["stream"].clone(), message["offset"].clone()));
    }
    got.sort_by_key(|(stream, _)| stream.to_string());
    assert_eq!(got, [(json!("all"), json!(2)), (Value::Null, json!(2))]);
    publish(&nodes[2], "topic", Some("chat:blip"), json!({"i": 3})).await;
    assert_eq!(reader.recv().await["offset"], 3);
    publish(&nodes[2], "all", None, json!({"i": 3})).await;
    assert_eq!(reader.recv().await["offset"], 3);
    reader.expect_silence().await;
}

#[tokio::test]
async fn redis_down_means_503_in_bounded_time_then_a_restart_is_resumed() {
    let mut redis = RedisServer::start();
    let n1 = node(&redis, "n1");
    ready(&n1).await;
    let mut reader = n1.connect(&token("reader", "user", &[])).await;
    let reply = reader
        .request(json!({"type": "subscribe", "topic": "chat:x"}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    let mut alice = n1.connect(&token("alice", "user", &[])).await;
    alice.subscribe("room:r").await;
    let first = publish(&n1, "topic", Some("chat:x"), json!({"i": 1})).await;
    let got = reader.recv().await;
    assert_eq!(got["offset"], first["offset"]);
    let epoch = got["epoch"].clone();

    redis.stop();
    eventually("/ready to answer 503", || async {
        let status = reqwest::get(n1.http("/ready")).await.ok()?.status();
        (status == 503).then_some(())
    })
    .await;
    let started = Instant::now();
    let (status, answer) = n1
        .publish(json!({"scope": "topic", "target": "chat:x", "type": "e", "data": {}}))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "processing_error");
    // Bounded by the Redis timeout (500 ms here); the bound below only guards against a hang.
    assert!(started.elapsed() < Duration::from_secs(5), "publish hung");
    assert!(reader.is_alive().await, "live connections stay up");

    redis.start_again();
    ready(&n1).await;
    // The node wrote its presence and online marks again into the empty Redis.
    eventually("alice back in presence", || async {
        let (_, body) = n1
            .api(
                "GET",
                "/api/v1/topics/room%3Ar/presence",
                Some(API_KEY),
                None,
            )
            .await;
        (body["users"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    let (_, answer) = n1
        .api(
            "POST",
            "/api/v1/users/alice/message",
            Some(API_KEY),
            Some(json!({"type": "note", "data": {}})),
        )
        .await;
    assert_eq!(answer["queued"], false, "alice is online again: {answer}");
    let note = loop {
        let got = alice.recv().await;
        if got["type"] != "user_joined" {
            break got;
        }
    };
    assert_eq!(
        note["type"], "note",
        "delivered live, on the same connection: {note}"
    );
    // Redis came back empty: the stream's past is gone, so the subscriber is asked to
    // resubscribe, and learns that it cannot recover.
    let closed = reader.closed().await;
    assert_eq!(closed.code, 1012, "{closed:?}");
    let mut back = n1.connect(&token("reader", "user", &[])).await;
    let reply = back
        .request(json!({"type": "subscribe", "topic": "chat:x",
                        "since": {"offset": first["offset"], "epoch": epoch}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    let again = publish(&n1, "topic", Some("chat:x"), json!({"i": 2})).await;
    assert_eq!(back.recv().await["offset"], again["offset"]);
}

/// How many nodes listen to a topic's channel, as Redis counts them.
fn listeners(redis: &RedisServer, topic: &str) -> u64 {
    let reply = redis
        .command(&["PUBSUB", "NUMSUB", &format!("herald:{{t:{topic}}}:channel")])
        .expect("redis answers");
    // *2 $len herald:{t:<topic>}:channel :N
    reply
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected NUMSUB reply {reply:?}"))
}

#[tokio::test]
async fn a_node_receives_a_topic_only_while_it_has_subscribers() {
    let redis = RedisServer::start();
    let (n1, n2) = (node(&redis, "n1"), node(&redis, "n2"));
    ready(&n1).await;
    ready(&n2).await;
    assert_eq!(listeners(&redis, "news"), 0);
    let mut a = n1.connect(&token("a", "user", &[])).await;
    a.subscribe("news").await;
    assert_eq!(
        listeners(&redis, "news"),
        1,
        "the subscription waits for the node's"
    );
    let mut b = n1.connect(&token("b", "user", &[])).await;
    b.subscribe("news").await;
    assert_eq!(
        listeners(&redis, "news"),
        1,
        "one channel subscription per node"
    );
    let mut c = n2.connect(&token("c", "user", &[])).await;
    c.subscribe("news").await;
    assert_eq!(listeners(&redis, "news"), 2);
    let reply = a
        .request(json!({"type": "unsubscribe", "topic": "news"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    assert_eq!(listeners(&redis, "news"), 2, "b still listens on n1");
    drop(b);
    eventually("n1 to stop listening", || async {
        (listeners(&redis, "news") == 1).then_some(())
    })
    .await;
    // A publication now travels to n2 alone, and still arrives.
    publish(&n1, "topic", Some("news"), json!({"k": 1})).await;
    assert_eq!(c.recv().await["data"]["k"], 1);
    a.expect_silence().await;
}

async fn removing_a_member_revokes_the_project_on_every_node(redis: impl SharedRedis) {
    let [a, b] = [node(&redis, "na"), node(&redis, "nb")];
    ready(&a).await;
    ready(&b).await;
    // Membership from the store (not the token), added through node a.
    let (status, _) = a
        .api(
            "PUT",
            "/api/v1/projects/p1/members/mia",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut on_b = b.user("mia").await;
    on_b.subscribe("project:p1").await;
    let (status, _) = a
        .api(
            "DELETE",
            "/api/v1/projects/p1/members/mia",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // The node that took the request is not the one holding the connection: it is told too.
    let revoked = on_b.recv().await;
    assert_eq!(revoked["type"], "unsubscribed", "{revoked}");
    assert_eq!(revoked["data"]["topic"], "project:p1");
    assert_eq!(revoked["data"]["reason"], "permission revoked");
    publish(&a, "topic", Some("project:p1"), json!({"secret": true})).await;
    on_b.expect_silence().await;
    assert!(on_b.is_alive().await);
}

async fn a_user_message_no_connection_took_is_kept_across_nodes(redis: impl SharedRedis) {
    let config = |id: &str| {
        format!(
            "{}\nnode_id = \"{id}\"\n[cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"2s\"\n[limits]\nsend_queue = 4\n",
            redis.config_line()
        )
    };
    let a = Server::start(&config("ua"));
    let b = Server::start(&config("ub"));
    ready(&a).await;
    ready(&b).await;
    // The user's only connection, on b, stops reading; every message is published on a.
    // (12 MB in a few seconds, each copy waited for on a Redis Cluster's replicas: the
    // timeout leaves a busy machine room.)
    let mut slow = b.user("far").await;
    let pad = "f".repeat(60 * 1024);
    let mut ids = Vec::new();
    for seq in 0..200 {
        let answer = publish(&a, "user", Some("far"), json!({"seq": seq, "pad": pad})).await;
        ids.push(answer["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    while let Some(message) = slow.next_json().await {
        if let Some(id) = message["id"].as_str() {
            seen.push(id.to_string());
        }
    }
    // Whatever b could not write went to the inbox, in order, for the next connection.
    let mut fresh = a.user("far").await;
    while let Some(message) = fresh.next_json_within(Duration::from_secs(2)).await {
        assert_eq!(message["offline"], true, "{message}");
        seen.push(message["id"].as_str().expect("id").to_string());
    }
    let missing: Vec<usize> = (0..ids.len())
        .filter(|i| !seen.contains(&ids[*i]))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged #{missing:?} were neither delivered nor kept"
    );
    // Once each. (The few messages in flight to b when it dropped the connection reach the
    // inbox after later ones a stored directly: docs/GUARANTEES.md.)
    seen.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "once each");
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_leaves_the_cluster_at_once() {
    let redis = RedisServer::start();
    // A long node TTL: within this test only a node's own leaving can take it off the list.
    let slow_reaping = |id: &str| {
        Server::start(&format!(
            "redis_url = \"{}\"\nnode_id = \"{id}\"\n[cluster]\nnode_ttl = \"60s\"\n{NAMESPACES}",
            redis.url()
        ))
    };
    let n1 = slow_reaping("n1");
    let mut n2 = slow_reaping("n2");
    ready(&n1).await;
    ready(&n2).await;
    let mut alice = n1.connect(&token("alice", "user", &[])).await;
    alice.subscribe("room:s").await;
    let mut bob = n2.connect(&token("bob", "user", &[])).await;
    bob.subscribe("room:s").await;
    next_event(&mut alice, "user_joined", "bob").await;
    eventually("both nodes in the stats", || async {
        let (_, stats) = n1.api("GET", "/api/v1/stats", Some(API_KEY), None).await;
        (stats["nodes"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let (_, text) = n1.api("GET", "/metrics", None, None).await;
    let text = text.as_str().unwrap_or("").to_string();
    assert!(
        text.lines().any(|l| l
            .starts_with("herald_engine_seconds_count{store=\"redis\",op=\"inbox_read\"}")
            && !l.ends_with(" 0")),
        "Redis calls are timed: {text}"
    );
    assert_eq!(n2.terminate(), Some(0));
    next_event(&mut alice, "user_left", "bob").await;
    let (_, stats) = n1.api("GET", "/api/v1/stats", Some(API_KEY), None).await;
    assert_eq!(
        stats["nodes"].as_array().map(Vec::len),
        Some(1),
        "gone from the node list well before its 60 s TTL: {stats}"
    );
    assert_eq!(stats["total_clients"], 1, "{stats}");
}

#[tokio::test]
async fn while_its_pubsub_link_is_down_a_node_counts_no_recipient_of_its_own() {
    let redis = RedisServer::start();
    let n1 = node(&redis, "n1");
    ready(&n1).await;
    let mut reader = n1.connect(&token("reader", "user", &[])).await;
    reader.subscribe("chat:down").await;
    assert_eq!(
        publish(&n1, "topic", Some("chat:down"), json!({"i": 1})).await["recipients"],
        1
    );
    reader.recv().await;
    // The link is cut and cannot come back: Redis refuses subscriptions for now.
    redis
        .command(&[
            "ACL",
            "SETUSER",
            "default",
            "-subscribe",
            "-psubscribe",
            "-ssubscribe",
        ])
        .expect("redis");
    redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("redis");
    eventually("/ready to answer 503", || async {
        let status = reqwest::get(n1.http("/ready")).await.ok()?.status();
        (status == 503).then_some(())
    })
    .await;
    let answer = publish(&n1, "topic", Some("chat:down"), json!({"i": 2})).await;
    assert_eq!(
        answer["recipients"], 0,
        "stored, but it reaches nobody here until the link is back: {answer}"
    );
    redis
        .command(&["ACL", "SETUSER", "default", "+@all"])
        .expect("redis");
    ready(&n1).await;
    assert_eq!(
        reader.recv().await["data"]["i"],
        2,
        "caught up from the stream once the link is back"
    );
}

/// An embedding app's own membership table, which both of its nodes read (its database).
#[derive(Clone, Default)]
struct AppMembers(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl AppMembers {
    fn set(&self, key: &str, member: bool) {
        let mut members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if member {
            members.insert(key.to_string());
        } else {
            members.remove(key);
        }
    }
    fn has(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }
}

#[herald::async_trait]
impl herald::engine::Membership for AppMembers {
    async fn add(&self, _: &str, _: &str) -> Result<bool, herald::engine::EngineError> {
        Err(herald::engine::EngineError("managed by the app".into()))
    }
    async fn remove(&self, _: &str, _: &str) -> Result<bool, herald::engine::EngineError> {
        Err(herald::engine::EngineError("managed by the app".into()))
    }
    async fn members(&self, _: &str) -> Result<Vec<String>, herald::engine::EngineError> {
        Ok(Vec::new())
    }
    async fn is_member(
        &self,
        project: &str,
        user: &str,
    ) -> Result<bool, herald::engine::EngineError> {
        Ok(self.has(&format!("{project}/{user}")))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedding_apps_recheck_reaches_the_connections_of_every_node() {
    let redis = RedisServer::start();
    let members = AppMembers::default();
    members.set("p1/mia", true);
    let node = |id: &str| {
        let config = herald::Config {
            redis_url: Some(redis.url()),
            node_id: Some(id.into()),
            ..Default::default()
        };
        herald::Herald::builder()
            .config(config)
            .jwt_secret(SECRET)
            .membership(members.clone())
            .build()
    };
    let a = node("app-a").await.expect("node a");
    let b = node("app-b").await.expect("node b");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = b.ws_router();
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    let url = format!("ws://{addr}/ws?token={}", token("mia", "user", &[]));
    let mut mia = Client::connect(&url).await;
    assert_eq!(mia.recv().await["type"], "connection.established");
    mia.send(json!({"type": "subscribe", "topic": "project:p1"}))
        .await;
    assert_eq!(mia.recv().await["type"], "subscribed");

    // The app removes mia in its own table and asks the node it talks to; she is on the other.
    members.set("p1/mia", false);
    assert_eq!(a.recheck_project("p1").await.expect("recheck"), 1);
    let notice = mia.recv().await;
    assert_eq!(notice["type"], "unsubscribed", "{notice}");
    assert_eq!(notice["data"]["topic"], "project:p1");
    a.shutdown().await;
    b.shutdown().await;
}

// ---- Scope streams across nodes (docs/PROTOCOL.md section 15) ----

/// A node of the cluster with `[recovery]` settings of its own.
fn node_recovering(redis: &impl SharedRedis, id: &str, recovery: &str) -> Server {
    Server::start(&format!(
        "{}\nnode_id = \"{id}\"\n[limits]\nrate_per_sec = 0\n[cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"{}\"\n[recovery]\n{recovery}\n",
        redis.config_line(),
        redis.redis_timeout()
    ))
}

async fn a_tab_away_30s_resumes_every_scope_on_another_node_after_its_node_was_killed(
    redis: impl SharedRedis,
) {
    let window = "window = \"2m\"";
    let mut n1 = node_recovering(&redis, "n1", window);
    let n2 = std::sync::Arc::new(node_recovering(&redis, "n2", window));
    let n3 = node_recovering(&redis, "n3", window);
    for n in [&n1, &n2, &n3] {
        ready(n).await;
    }
    let ana = token("ana", "editor", &["p1"]);
    let mut away = Client::connect(&n1.ws_url(&format!("token={ana}"))).await;
    let mut at = Positions::from_welcome(&away.recv().await);
    assert_eq!(at.0.len(), 4, "{at:?}");
    // Another tab of the same user stays online on another node.
    let _other_tab = n3.connect(&ana).await;
    publish_to_every_scope(&n2, "event", 0, 1).await;
    read_every_stream(&mut away, &mut at, "event", 1).await;
    // The node the tab was on dies with it.
    let gone = Instant::now();
    n1.signal("KILL");
    drop(away);
    publish_to_every_scope(&n2, "event", 1, 100).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(gone.elapsed())).await;
    // Back on another node, while publishing goes on through a third.
    let publisher = {
        let n2 = n2.clone();
        tokio::spawn(async move { publish_to_every_scope(&n2, "event", 101, 25).await })
    };
    let mut back = Client::connect(&n3.ws_url(&at.query(&ana))).await;
    let welcome = back.recv().await;
    for stream in ["all", "project:p1", "role:editor", "user:ana"] {
        assert_eq!(
            welcome["data"]["resumed"][stream]["recovered"], true,
            "{stream}: {welcome}"
        );
    }
    read_every_stream(&mut back, &mut at, "event", 125).await;
    publisher.await.expect("publisher");
    back.expect_silence().await;
}

async fn a_resume_past_the_window_on_another_node_says_recovered_false(redis: impl SharedRedis) {
    let n1 = node_recovering(&redis, "n1", "window = \"1s\"");
    let n2 = node_recovering(&redis, "n2", "window = \"1s\"");
    for n in [&n1, &n2] {
        ready(n).await;
    }
    let ana = token("ana", "editor", &["p1"]);
    let mut client = Client::connect(&n1.ws_url(&format!("token={ana}"))).await;
    let mut at = Positions::from_welcome(&client.recv().await);
    publish_to_every_scope(&n2, "event", 0, 2).await;
    read_every_stream(&mut client, &mut at, "event", 2).await;
    drop(client);
    publish_to_every_scope(&n2, "event", 2, 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = Client::connect(&n2.ws_url(&at.query(&ana))).await;
    let welcome = client.recv().await;
    for stream in ["all", "project:p1", "role:editor"] {
        let resumed = &welcome["data"]["resumed"][stream];
        assert_eq!(resumed["recovered"], false, "{stream}: {welcome}");
        assert_eq!(resumed["offset"], 5, "{stream}: {welcome}");
    }
    // Ana was offline: her three user events waited in the inbox, which delivers them.
    for seq in 2..5 {
        let got = client.recv().await;
        assert_eq!(got["offline"], true, "{got}");
        assert_eq!(got["data"]["seq"], seq, "{got}");
    }
    client.expect_silence().await;
}

/// Acknowledged means replicated (docs/CLUSTER.md): with a replica connected, a publication to a
/// topic with history is answered only once the replica has it; with the replica frozen it is
/// refused with 503, not acknowledged; and after the primary is killed in the middle of a burst
/// from 8 publishers and the replica promoted, every acknowledged publication is in the history.
#[tokio::test]
async fn an_acknowledged_publication_survives_the_loss_of_its_primary() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    eventually("the replica in sync", || async {
        let info = replica
            .command(&["INFO", "replication"])
            .unwrap_or_default();
        let on_primary = primary
            .command(&["INFO", "replication"])
            .unwrap_or_default();
        (info.contains("master_link_status:up") && on_primary.contains("connected_slaves:1"))
            .then_some(())
    })
    .await;
    let config = |redis: &RedisServer, id: &str| {
        format!(
            "redis_url = \"{}\"\nnode_id = \"{id}\"\n[cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"500ms\"\n\
             [[namespaces]]\nname = \"ledger\"\nhistory_size = 100000\nhistory_ttl = \"1h\"\n",
            redis.url()
        )
    };
    let server = Server::start(&config(&primary, "writer"));
    ready(&server).await;
    let entry =
        |n: u64| json!({"scope": "topic", "target": "ledger:1", "type": "entry", "data": {"n": n}});
    let (status, answer) = server.publish(entry(0)).await;
    assert_eq!(status, 200, "{answer}");

    // Frozen, the replica acknowledges nothing: the publication is refused, not acknowledged.
    replica.signal("STOP");
    let (status, answer) = server.publish(entry(1)).await;
    replica.signal("CONT");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "processing_error", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("replica"),
        "{answer}"
    );
    let (status, answer) = server.publish(entry(2)).await;
    assert_eq!(status, 200, "the replica is back: {answer}");
    let (_, metrics) = server.api("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().expect("prometheus text");
    assert!(
        metrics.contains("herald_engine_errors_total{engine=\"replication\"} 1"),
        "the refusal is counted"
    );

    // A burst from 8 publishers; the primary is killed in its middle.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = std::sync::Arc::new(server);
    let publishers: Vec<_> = (0..8u64)
        .map(|p| {
            let (server, acknowledged) = (server.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let (status, answer) = server.publish(entry(1000 * (p + 1) + i)).await;
                    if status != 200 {
                        return;
                    }
                    let id = answer["id"].as_str().expect("id").to_string();
                    acknowledged.lock().expect("lock").push(id);
                }
            })
        })
        .collect();
    eventually("a hundred acknowledged", || async {
        (acknowledged.lock().expect("lock").len() >= 100).then_some(())
    })
    .await;
    primary.stop();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();

    // The replica becomes the primary; a node on it reads the topic's whole history.
    let promoted = replica
        .command(&["REPLICAOF", "NO", "ONE"])
        .unwrap_or_default();
    assert!(promoted.starts_with("+OK"), "{promoted}");
    let survivor = Server::start(&config(&replica, "survivor"));
    ready(&survivor).await;
    let kept: std::collections::HashSet<String> = history_ids(&survivor, "ledger:1")
        .await
        .into_iter()
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !kept.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged publications lost",
        lost.len(),
        acknowledged.len()
    );
}

/// Redis Cluster is not supported yet: a node pointed at a node of a real Redis Cluster (three
/// primaries, three replicas) says so and stops, instead of failing each call with MOVED or
/// CROSSSLOT.
#[test]
fn a_redis_cluster_node_is_refused_at_start_with_a_clear_line() {
    let redis = common::redis::RedisCluster::start();
    let dir = tempfile::tempdir().expect("dir");
    let output = std::process::Command::new(herald_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "s",
            "--redis-url",
        ])
        .arg(redis.url())
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("HERALD_REDIS_URL")
        .output()
        .expect("run herald");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Redis Cluster"), "{stderr}");
}

/// A write sent again right after it was run (what the cluster client does when a dropped
/// connection lost the answer) is kept once: a stream append answers its first position, a
/// user-scope send its first outcome, and the inbox holds the message once (sent, or kept
/// as undelivered).
async fn a_write_sent_twice_is_kept_once(redis: impl SharedRedis) {
    use herald::engine::redis::RedisBroker;
    use herald::engine::{Broker, History, Inbox};
    use herald_testkit::broker::Recorder;
    let store = RedisStore::open(&RedisOptions {
        deployment: redis.deployment(),
        node_id: "twice".into(),
        timeout: Duration::from_secs(2),
        wait_replicas: None,
    })
    .expect("open");
    let keep = herald::engine::Retention {
        size: 100,
        ttl: Duration::from_secs(3600),
    };
    let entry = herald::Publication::new(herald::Scope::Topic("chat:twice".into()), "e", json!({}));
    let first = store
        .append("chat:twice", &entry, keep)
        .await
        .expect("append");
    let again = store
        .append("chat:twice", &entry, keep)
        .await
        .expect("append");
    assert_eq!(first, again, "the same position");
    let page = store.read("chat:twice", 0, 10, keep).await.expect("read");
    assert_eq!(page.messages.len(), 1, "kept once");
    let next = herald::Publication::new(herald::Scope::Topic("chat:twice".into()), "e", json!({}));
    let after = store
        .append("chat:twice", &next, keep)
        .await
        .expect("append");
    assert_eq!(
        after.offset,
        first.offset + 1,
        "another publication goes on"
    );

    let config = herald::Config::from_toml(NAMESPACES).expect("config");
    let broker = RedisBroker::start(store.clone(), Recorder::new(), std::sync::Arc::new(config));
    let limits = herald::config::InboxLimits {
        max_messages: 100,
        ttl: Duration::from_secs(3600),
    };
    let note = herald::Publication::new(herald::Scope::User("away".into()), "note", json!({}));
    for _ in 0..2 {
        let sent = broker
            .publish_to_user(&store, limits, None, note.clone())
            .await
            .expect("send");
        let herald::engine::ToUser::Kept(stored) = sent else {
            panic!("kept for an offline user");
        };
        stored.await.expect("stored");
    }
    let pending = store.pending("away", limits).await.expect("inbox");
    assert_eq!(pending.len(), 1, "in the inbox once");

    // An undelivered message kept twice (a retried store; two nodes of the user) is kept
    // once, also with another store in between; a later message is kept.
    let undelivered = herald::Publication::new(herald::Scope::User("gone".into()), "u", json!({}));
    let other = herald::Publication::new(herald::Scope::User("gone".into()), "o", json!({}));
    for publication in [&undelivered, &other, &undelivered] {
        store
            .store("gone", publication, limits)
            .await
            .expect("store");
    }
    let kept: Vec<String> = store
        .pending("gone", limits)
        .await
        .expect("inbox")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        kept,
        [undelivered.id.clone(), other.id.clone()],
        "each once, in order"
    );
}

/// Each scenario above as two tests: on one Redis and on a Redis Cluster (three primaries
/// with a replica each).
macro_rules! on_one_redis_and_a_redis_cluster {
    ($($scenario:ident),* $(,)?) => {
        mod on_one_redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(RedisServer::start()).await
                }
            )*
        }
        mod on_a_redis_cluster {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(RedisCluster::start()).await
                }
            )*
        }
    };
}

on_one_redis_and_a_redis_cluster!(
    a_write_sent_twice_is_kept_once,
    the_redis_engines_pass_the_conformance_suite,
    the_redis_broker_passes_the_broker_suite,
    every_scope_reaches_the_right_connections_on_every_node_exactly_once,
    an_idempotency_key_sent_through_two_nodes_publishes_once,
    offsets_are_cluster_wide_and_recovery_works_on_any_node,
    presence_and_join_leave_are_cluster_wide,
    the_inbox_is_per_user_across_the_cluster,
    disconnects_and_stats_span_the_cluster,
    a_killed_node_is_reaped_and_its_users_leave,
    a_lost_pubsub_link_is_caught_up_from_the_stream,
    removing_a_member_revokes_the_project_on_every_node,
    a_user_message_no_connection_took_is_kept_across_nodes,
    a_tab_away_30s_resumes_every_scope_on_another_node_after_its_node_was_killed,
    a_resume_past_the_window_on_another_node_says_recovered_false,
);

/// A ledger topic's two nodes on a Redis Cluster (`writer`, `reader`) and a subscriber to
/// `ledger:1` on the reader.
async fn ledger_on(redis: &RedisCluster) -> (std::sync::Arc<Server>, Server, Client) {
    let config = |id: &str| {
        format!(
            "{}\nnode_id = \"{id}\"\n[limits]\nrate_per_sec = 0\n[cluster]\nnode_ttl = \"1s\"\nredis_timeout = \"2s\"\n\
             [[namespaces]]\nname = \"ledger\"\nhistory_size = 100000\nhistory_ttl = \"1h\"\n",
            redis.config_line()
        )
    };
    let (writer, reader) = (
        Server::start(&config("writer")),
        Server::start(&config("reader")),
    );
    ready(&writer).await;
    ready(&reader).await;
    let mut subscriber = reader.connect(&token("sub", "user", &[])).await;
    subscriber.subscribe("ledger:1").await;
    (std::sync::Arc::new(writer), reader, subscriber)
}

/// 8 publishers publish to `ledger:1` through `writer`; after 100 are acknowledged `disturb`
/// runs, and once 100 more are (within 30 s) the publishers stop. Every answer is a 200 or a
/// 503 `processing_error`. Returns the acknowledged ids and how many were refused.
async fn burst_around(
    writer: std::sync::Arc<Server>,
    disturb: impl FnOnce(),
) -> (Vec<String>, usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    let entry =
        |n: u64| json!({"scope": "topic", "target": "ledger:1", "type": "entry", "data": {"n": n}});
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..8u64)
        .map(|p| {
            let (writer, acknowledged) = (writer.clone(), acknowledged.clone());
            let (refused, stop) = (refused.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(SeqCst) {
                    i += 1;
                    let (status, answer) = writer.publish(entry(1000 * (p + 1) + i)).await;
                    match status {
                        200 => {
                            let id = answer["id"].as_str().expect("id").to_string();
                            acknowledged.lock().expect("lock").push(id);
                        }
                        503 => {
                            assert_eq!(answer["error"]["code"], "processing_error", "{answer}");
                            refused.fetch_add(1, SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("{other}: {answer}"),
                    }
                }
            })
        })
        .collect();
    let count = || acknowledged.lock().expect("lock").len();
    eventually("a hundred acknowledged", || async {
        (count() >= 100).then_some(())
    })
    .await;
    disturb();
    let before = count();
    let mut waited = 0;
    while count() < before + 100 {
        assert!(
            waited < 600,
            "nothing acknowledged for 30 s after the disturbance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    stop.store(true, SeqCst);
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    (acknowledged, refused.load(SeqCst))
}

/// The ids in a topic's whole history, in offset order, read through `server`.
async fn history_ids(server: &Server, topic: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = server
            .api(
                "GET",
                &format!("/api/v1/topics/{topic}/history?since={since}&limit=1000"),
                Some(API_KEY),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().expect("messages").clone();
        let Some(last) = messages.last() else {
            return ids;
        };
        since = last["offset"].as_u64().expect("offset");
        ids.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_string()),
        );
    }
}

/// Every acknowledged publication is in `ledger:1`'s history once, and reached the
/// subscriber once.
async fn each_kept_and_delivered_once(
    reader: &Server,
    subscriber: &mut Client,
    acknowledged: &[String],
    refused: usize,
) {
    let mut in_history = std::collections::HashMap::new();
    for id in history_ids(reader, "ledger:1").await {
        *in_history.entry(id).or_insert(0) += 1;
    }
    let mut delivered = std::collections::HashMap::new();
    while let Some(message) = subscriber.next_json_within(Duration::from_secs(3)).await {
        if let Some(id) = message["id"].as_str() {
            *delivered.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    let not_once = |seen: &std::collections::HashMap<String, usize>| {
        acknowledged
            .iter()
            .filter(|id| seen.get(*id) != Some(&1))
            .count()
    };
    assert_eq!(
        (not_once(&in_history), not_once(&delivered)),
        (0, 0),
        "of {} acknowledged ({refused} refused): not once in the history, not once at the subscriber",
        acknowledged.len()
    );
}

/// Acknowledged means replicated on a Redis Cluster: the primary serving a topic is killed
/// (SIGKILL) in the middle of a burst from 8 publishers; its replica is promoted; Herald goes
/// on serving without a restart; publications in the window get 503, none hangs; every
/// acknowledged one is in the history afterwards and reached the subscriber once.
#[tokio::test]
async fn on_a_redis_cluster_a_killed_primary_loses_no_acknowledged_publication() {
    let mut redis = RedisCluster::start();
    let (writer, reader, mut subscriber) = ledger_on(&redis).await;
    let primary = redis.primary_of("herald:{t:ledger:1}:stream");
    let (acknowledged, refused) = burst_around(writer, || redis.nodes[primary].stop()).await;
    each_kept_and_delivered_once(&reader, &mut subscriber, &acknowledged, refused).await;
}

/// A resharding during traffic: the topic's slot moves to another primary in the middle of a
/// burst from 8 publishers; nothing acknowledged is lost or kept twice, and the subscriber
/// gets each once (its node follows the channel to the slot's new shard).
#[tokio::test]
async fn on_a_redis_cluster_a_slot_moved_during_traffic_loses_and_repeats_nothing() {
    let redis = RedisCluster::start();
    let (writer, reader, mut subscriber) = ledger_on(&redis).await;
    let key = "herald:{t:ledger:1}:stream";
    let to = redis.other_primary_than(key);
    let (acknowledged, refused) = burst_around(writer, || redis.move_slot_of(key, to)).await;
    assert_eq!(redis.primary_of(key), to, "the slot moved");
    each_kept_and_delivered_once(&reader, &mut subscriber, &acknowledged, refused).await;
}

/// A Redis written by a Herald from before hash tags: at start its keys move to today's
/// names, so a topic's history (offsets and epoch), a user's inbox and the memberships carry
/// over.
#[tokio::test]
async fn a_redis_from_before_hash_tags_keeps_its_history_inbox_and_members() {
    use herald::engine::redis::codec;
    let redis = RedisServer::start();
    let body = |p: &herald::Publication| String::from_utf8(codec::encode(p)).expect("UTF-8");
    let run = |args: &[&str]| {
        let reply = redis.command(args).expect("redis answers");
        assert!(!reply.starts_with('-'), "{args:?}: {reply}");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let topic = herald::Scope::Topic("chat:old".into());
    let kept: Vec<herald::Publication> = (1..=2)
        .map(|n| herald::Publication::new(topic.clone(), "event", json!({ "n": n })))
        .collect();
    for (offset, p) in (1u64..).zip(&kept) {
        let id = format!("{offset}-0");
        run(&[
            "XADD",
            "herald:stream:chat:old",
            &id,
            "ms",
            &now,
            "b",
            &body(p),
        ]);
    }
    run(&[
        "HSET",
        "herald:meta:chat:old",
        "epoch",
        "olden",
        "offset",
        "2",
    ]);
    let waiting = herald::Publication::new(herald::Scope::User("ana".into()), "note", json!({}));
    run(&[
        "XADD",
        "herald:inbox:ana",
        "*",
        "ms",
        &now,
        "id",
        &waiting.id,
        "b",
        &body(&waiting),
    ]);
    run(&["SADD", "herald:members:p1", "ana"]);
    run(&["SADD", "herald:projects-of:ana", "p1"]);

    let server = node(&redis, "n1");
    ready(&server).await;
    let (status, page) = server
        .api(
            "GET",
            "/api/v1/topics/chat:old/history?since=0",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let messages = page["messages"].as_array().expect("messages");
    let ids: Vec<&str> = messages.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, [kept[0].id.as_str(), kept[1].id.as_str()], "{page}");
    assert_eq!(messages[1]["offset"], 2);
    assert_eq!(messages[1]["epoch"], "olden");
    let (status, members) = server
        .api("GET", "/api/v1/projects/p1/members", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["members"], json!(["ana"]));
    let mut ana = server.connect(&token("ana", "user", &["p1"])).await;
    let offline = ana.recv().await;
    assert_eq!(offline["id"], waiting.id.as_str(), "{offline}");
    assert_eq!(offline["offline"], true);
    // Nothing is left under the old names, and the next start does not look again.
    let exists = redis
        .command(&["EXISTS", "herald:stream:chat:old", "herald:members:p1"])
        .expect("redis");
    assert_eq!(exists.trim(), ":0");
    assert!(redis
        .command(&["GET", "herald:layout"])
        .expect("redis")
        .contains('2'));
    // A publication goes on from the kept offset.
    let answer = publish(&server, "topic", Some("chat:old"), json!({"n": 3})).await;
    assert_eq!(answer["offset"], 3, "{answer}");
}
