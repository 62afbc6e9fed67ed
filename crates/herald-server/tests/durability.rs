//! History, recovery after a reconnect, and the offline inbox (docs/PROTOCOL.md, sections 6 and 7),
//! on the embedded SQLite engine, including across a `kill -9`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const STREAMS: &str = "[limits]\nrate_per_sec = 0\n\
    [[namespaces]]\nname = \"chat\"\npublish = true\nhistory_size = 1000\n\
    [[namespaces]]\nname = \"small\"\nhistory_size = 3\n\
    [[namespaces]]\nname = \"brief\"\nhistory_size = 100\nhistory_ttl = \"300ms\"\n";

async fn publish_to(server: &Server, topic: &str, seq: u64) -> Value {
    let (status, answer) = server
        .publish(json!({"scope": "topic", "target": topic, "type": "msg", "data": {"seq": seq}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn subscribe_since(client: &mut Client, topic: &str, offset: u64, epoch: &str) -> Value {
    let reply = client
        .request(json!({"type": "subscribe", "topic": topic, "since": {"offset": offset, "epoch": epoch}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply["data"].clone()
}

/// The topic's current epoch, read with the `history` command.
async fn epoch_of(client: &mut Client, topic: &str) -> String {
    let reply = client
        .request(json!({"type": "history", "topic": topic}))
        .await;
    reply["data"]["epoch"].as_str().expect("epoch").to_string()
}

fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().expect("an offset")
}

#[tokio::test]
async fn messages_on_a_topic_with_history_carry_offset_and_epoch() {
    let server = Server::start(STREAMS);
    let mut client = server.user("ana").await;
    let reply = client
        .request(json!({"type": "subscribe", "topic": "chat:1"}))
        .await;
    assert_eq!(reply["data"]["offset"], 0);
    assert_eq!(
        reply["data"]["recovered"], false,
        "no since: nothing claimed"
    );
    let epoch = reply["data"]["epoch"].as_str().expect("epoch").to_string();
    for seq in 1..=3 {
        let answer = publish_to(&server, "chat:1", seq).await;
        assert_eq!(answer["offset"], seq, "the API answers the offset");
        let got = client.recv().await;
        assert_eq!(got["offset"], seq);
        assert_eq!(got["epoch"], epoch.as_str());
        assert_eq!(got["topic"], "chat:1");
    }
    // A client publication gets its offset too.
    let reply = client
        .request(json!({"type": "publish", "topic": "chat:1", "event": "say", "data": {}}))
        .await;
    let (reply, delivery) = if reply["type"] == "published" {
        let delivery = client.recv().await;
        (reply, delivery)
    } else {
        (client.recv().await, reply)
    };
    assert_eq!(reply["type"], "published");
    assert_eq!(delivery["offset"], 4);
}

#[tokio::test]
async fn resuming_while_publishers_keep_publishing_loses_and_repeats_nothing() {
    let server = Arc::new(Server::start(STREAMS));
    // Four concurrent publishers to one topic: their appends share commits, and each
    // resume lands while some are queued, committed or being delivered.
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 100;
    const TOTAL: u64 = PUBLISHERS * EACH;
    let mut client = server.user("ben").await;
    client.subscribe("chat:live").await;
    let running = Arc::new(AtomicBool::new(true));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let server = server.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    publish_to(&server, "chat:live", p * EACH + n).await;
                }
            })
        })
        .collect();
    let watcher = {
        let running = running.clone();
        tokio::spawn(async move {
            for publisher in publishers {
                publisher.await.expect("publisher");
            }
            running.store(false, Ordering::SeqCst);
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    let mut epoch = String::new();
    let mut resumed_while_publishing = 0;
    for stop_at in (1..=8).map(|k| k * 40) {
        // Read a while, then drop the connection mid-stream and resume.
        while last < stop_at {
            let got = client.recv().await;
            assert_eq!(offset(&got), last + 1, "in order, no gap, no duplicate");
            assert!(seen.insert(got["data"]["seq"].as_u64().expect("seq")));
            last = offset(&got);
            epoch = got["epoch"].as_str().expect("epoch").to_string();
        }
        drop(client);
        if running.load(Ordering::SeqCst) {
            resumed_while_publishing += 1;
        }
        client = server.user("ben").await;
        let data = subscribe_since(&mut client, "chat:live", last, &epoch).await;
        assert_eq!(data["recovered"], true);
        assert_eq!(data["epoch"], epoch.as_str());
    }
    while last < TOTAL {
        let got = client.recv().await;
        assert_eq!(offset(&got), last + 1, "in order, no gap, no duplicate");
        assert!(seen.insert(got["data"]["seq"].as_u64().expect("seq")));
        last = offset(&got);
    }
    watcher.await.expect("publishers");
    assert_eq!(seen.len() as u64, TOTAL, "every publication once");
    assert!(
        resumed_while_publishing > 0,
        "at least one resume happened while the publishers were going"
    );
    client.expect_silence().await;
}

#[tokio::test]
async fn a_wrong_epoch_or_a_trimmed_past_is_not_recovered() {
    let server = Server::start(STREAMS);
    for seq in 1..=6 {
        publish_to(&server, "small:s", seq).await;
    }
    let mut client = server.user("cal").await;
    let epoch = epoch_of(&mut client, "small:s").await;

    let data = subscribe_since(&mut client, "small:s", 5, "another-epoch").await;
    assert_eq!(data["recovered"], false, "wrong epoch");
    assert_eq!(data["offset"], 6);
    assert_eq!(
        data["epoch"],
        epoch.as_str(),
        "the current epoch, to reload from"
    );
    client.expect_silence().await;
    client
        .request(json!({"type": "unsubscribe", "topic": "small:s"}))
        .await;

    let data = subscribe_since(&mut client, "small:s", 1, &epoch).await;
    assert_eq!(data["recovered"], false, "2 and 3 were trimmed away");
    client.expect_silence().await;
    client
        .request(json!({"type": "unsubscribe", "topic": "small:s"}))
        .await;

    let data = subscribe_since(&mut client, "small:s", 3, &epoch).await;
    assert_eq!(data["recovered"], true, "4, 5, 6 are all there");
    for expected in 4..=6 {
        assert_eq!(offset(&client.recv().await), expected);
    }
    client.expect_silence().await;

    let mut future = server.user("dee").await;
    let data = subscribe_since(&mut future, "small:s", 99, &epoch).await;
    assert_eq!(
        data["recovered"], false,
        "an offset the stream never reached"
    );

    // A topic without history cannot recover either.
    let data = subscribe_since(&mut future, "news", 1, &epoch).await;
    assert_eq!(data["recovered"], false);
}

#[tokio::test]
async fn history_keeps_the_newest_by_size_and_drops_the_old_by_ttl() {
    let server = Server::start(STREAMS);
    for seq in 1..=5 {
        publish_to(&server, "small:h", seq).await;
    }
    let mut client = server.user("eli").await;
    let reply = client
        .request(json!({"type": "history", "topic": "small:h", "ref": 1}))
        .await;
    assert_eq!(reply["type"], "history");
    assert_eq!(reply["ref"], 1);
    assert_eq!(reply["data"]["offset"], 5);
    let offsets: Vec<u64> = reply["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(offset)
        .collect();
    assert_eq!(offsets, [3, 4, 5], "the newest 3");
    assert_eq!(reply["data"]["messages"][0]["data"], json!({"seq": 3}));
    assert_eq!(reply["data"]["messages"][0]["type"], "msg");

    publish_to(&server, "brief:b", 1).await;
    let reply = client
        .request(json!({"type": "history", "topic": "brief:b"}))
        .await;
    assert_eq!(reply["data"]["messages"].as_array().map(Vec::len), Some(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = client
        .request(json!({"type": "history", "topic": "brief:b"}))
        .await;
    assert_eq!(
        reply["data"]["messages"],
        json!([]),
        "expired after history_ttl"
    );
    assert_eq!(
        reply["data"]["offset"], 1,
        "the stream still knows where it is"
    );
}

#[tokio::test]
async fn history_by_command_and_http_with_since_and_limit() {
    let server = Server::start(STREAMS);
    for seq in 1..=10 {
        publish_to(&server, "chat:h", seq).await;
    }
    let mut client = server.user("fay").await;
    let epoch = epoch_of(&mut client, "chat:h").await;
    let reply = client
        .request(json!({"type": "history", "topic": "chat:h", "since": {"offset": 4, "epoch": epoch}, "limit": 3}))
        .await;
    let offsets: Vec<u64> = reply["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(offset)
        .collect();
    assert_eq!(offsets, [5, 6, 7]);

    let (status, page) = server
        .api(
            "GET",
            "/api/v1/topics/chat%3Ah/history?since=8&limit=5",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(offset)
        .collect();
    assert_eq!(offsets, [9, 10]);
    assert_eq!(page["epoch"], epoch.as_str());
    assert_eq!(page["topic"], "chat:h");
    let (status, _) = server
        .api(
            "GET",
            "/api/v1/topics/chat%3Ah/history?since=abc",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 400);

    let reply = client
        .request(json!({"type": "history", "topic": "news"}))
        .await;
    assert_eq!(reply["data"]["code"], "not_found");
    let reply = client
        .request(json!({"type": "history", "topic": "chat:h", "limit": 0}))
        .await;
    assert_eq!(reply["data"]["code"], "invalid_message");
}

#[tokio::test]
async fn history_needs_the_right_to_subscribe() {
    let server = Server::start(
        "[[namespaces]]\nname = \"board\"\nsubscribe = \"members\"\nhistory_size = 10\n",
    );
    publish_to(&server, "board:p1", 1).await;
    let mut outsider = server.user("gus").await;
    let reply = outsider
        .request(json!({"type": "history", "topic": "board:p1"}))
        .await;
    assert_eq!(reply["data"]["code"], "forbidden");
    let mut member = server.connect(&token("hal", "user", &["p1"])).await;
    let reply = member
        .request(json!({"type": "history", "topic": "board:p1"}))
        .await;
    assert_eq!(reply["data"]["messages"].as_array().map(Vec::len), Some(1));
}

/// A batch's messages to topics with history are placed one after another and awaited
/// together (they share commits); the batch still reaches a subscriber in its order, mixed
/// with messages to a topic without history, and a bad message fails alone.
#[tokio::test]
async fn a_batch_keeps_its_order_and_its_offsets_while_its_appends_share_commits() {
    let server = Server::start(STREAMS);
    let mut mia = server.user("mia").await;
    mia.subscribe("chat:batch").await;
    mia.subscribe("news").await;
    let mut messages: Vec<Value> = (0..200)
        .map(|n| {
            let topic = if n % 50 == 49 { "news" } else { "chat:batch" };
            json!({"scope": "topic", "target": topic, "type": "line", "data": {"n": n}})
        })
        .collect();
    messages.insert(
        100,
        json!({"scope": "topic", "target": "bad topic", "type": "x"}),
    );
    let (status, answer) = server.publish_batch(json!(messages)).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 201);
    assert_eq!(results[100]["error"]["code"], "invalid_message");
    let offsets: Vec<u64> = results
        .iter()
        .filter_map(|r| r["offset"].as_u64())
        .collect();
    assert_eq!(
        offsets,
        (1..=196).collect::<Vec<_>>(),
        "each history message answered with its offset, in order"
    );
    for n in 0..200 {
        let got = mia.recv().await;
        assert_eq!(got["data"]["n"], n, "in the batch's order: {got}");
        let history = got["topic"] == "chat:batch";
        assert_eq!(history, got.get("offset").is_some(), "{got}");
    }
    mia.expect_silence().await;
}

async fn message_user(server: &Server, user: &str, n: u64) -> Value {
    let (status, answer) = server
        .api(
            "POST",
            &format!("/api/v1/users/{user}/message"),
            Some(API_KEY),
            Some(json!({"type": "note", "data": {"n": n}})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn the_inbox_delivers_in_order_before_live_messages_until_acked() {
    let server = Server::start("");
    let mut ids = Vec::new();
    for n in 1..=3 {
        let answer = message_user(&server, "ivy", n).await;
        assert_eq!(answer["queued"], true, "ivy is offline");
        assert_eq!(answer["recipients"], 0);
        ids.push(answer["id"].as_str().expect("id").to_string());
    }
    let (_, answer) = server
        .publish(json!({"scope": "user", "target": "ivy", "type": "note", "data": {"n": 4}}))
        .await;
    assert_eq!(answer["queued"], true, "scope user through publish too");
    ids.push(answer["id"].as_str().expect("id").to_string());

    let mut ivy = server.user("ivy").await;
    for (n, id) in (1..=4).zip(&ids) {
        let got = ivy.recv().await;
        assert_eq!(got["offline"], true);
        assert_eq!(got["type"], "note");
        assert_eq!(got["data"]["n"], n, "in publication order");
        assert_eq!(got["id"], id.as_str());
    }
    let answer = message_user(&server, "ivy", 5).await;
    assert_eq!(answer["queued"], false, "ivy is online now");
    let live = ivy.recv().await;
    assert_eq!(live["data"]["n"], 5);
    assert!(
        live.get("offline").is_none(),
        "a live message is not offline"
    );

    ivy.send(json!({"type": "ack", "ids": [ids[0], ids[1], ids[3]]}))
        .await;
    assert!(
        ivy.is_alive().await,
        "ack has no reply; the ping after it proves it was read"
    );
    drop(ivy);
    wait_offline(&server, "ivy").await;
    let mut ivy = server.user("ivy").await;
    let again = ivy.recv().await;
    assert_eq!(
        again["id"],
        ids[2].as_str(),
        "only the unacked one comes back"
    );
    assert_eq!(again["offline"], true);
    ivy.expect_silence().await;
}

async fn wait_offline(server: &Server, user: &str) {
    eventually("the user to be offline", || async {
        let (_, count) = server
            .api(
                "GET",
                &format!("/api/v1/connections/count?user={user}"),
                Some(API_KEY),
                None,
            )
            .await;
        (count["count"] == 0).then_some(())
    })
    .await;
}

/// One user's stores are queued under the user's stripe and committed together, awaited
/// without it: a connect in the middle of a burst from several publishers still gets every
/// message exactly once (from the inbox, then live), each publisher's in its order.
#[tokio::test]
async fn a_user_connecting_during_a_burst_gets_each_message_once_in_order() {
    let server = Arc::new(Server::start("[limits]\nrate_per_sec = 0\n"));
    const PUBLISHERS: u64 = 8;
    const EACH: u64 = 40;
    let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (server, acknowledged) = (server.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0..EACH {
                    let (status, answer) = server
                        .api(
                            "POST",
                            "/api/v1/users/lee/message",
                            Some(API_KEY),
                            Some(json!({"type": "note", "data": {"p": p, "n": n}})),
                        )
                        .await;
                    assert_eq!(status, 200, "{answer}");
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually("a third of the burst to be acknowledged", || async {
        (acknowledged.load(Ordering::SeqCst) >= PUBLISHERS * EACH / 3).then_some(())
    })
    .await;
    let mut lee = server.user("lee").await;
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let mut next = [0u64; PUBLISHERS as usize];
    let (mut offline, mut live) = (0, 0);
    for _ in 0..PUBLISHERS * EACH {
        let got = lee.recv().await;
        let p = got["data"]["p"].as_u64().expect("p") as usize;
        let n = got["data"]["n"].as_u64().expect("n");
        assert_eq!(n, next[p], "publisher {p}: in order, no gap, no duplicate");
        next[p] += 1;
        if got["offline"] == true {
            assert_eq!(live, 0, "the inbox comes before live messages");
            offline += 1;
        } else {
            live += 1;
        }
    }
    lee.expect_silence().await;
    assert!(
        offline >= PUBLISHERS * EACH / 3,
        "what was acknowledged before the connect came from the inbox ({offline})"
    );
}

#[tokio::test]
async fn the_inbox_keeps_the_newest_up_to_its_limit() {
    let server = Server::start("[inbox]\nmax_messages = 2\n");
    for n in 1..=3 {
        message_user(&server, "jo", n).await;
    }
    let mut jo = server.user("jo").await;
    assert_eq!(jo.recv().await["data"]["n"], 2);
    assert_eq!(jo.recv().await["data"]["n"], 3);
    jo.expect_silence().await;
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_burst_loses_nothing_that_got_a_2xx() {
    let mut server = Server::start(STREAMS);
    let epoch = {
        let mut probe = server.user("kim").await;
        epoch_of(&mut probe, "chat:durable").await
    };
    // The inbox: three for an offline user, one acked before the crash.
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            message_user(&server, "lee", n).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    {
        let mut lee = server.user("lee").await;
        for _ in 1..=3 {
            lee.recv().await;
        }
        lee.send(json!({"type": "ack", "ids": [ids[0]]})).await;
        assert!(lee.is_alive().await, "the ack was read");
    }
    wait_offline(&server, "lee").await;

    // A burst of publications from eight concurrent publishers, killed in the middle.
    let url = server.http("/api/v1/publish");
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut publishers = Vec::new();
    for p in 0..8u64 {
        let (url, acknowledged) = (url.clone(), acknowledged.clone());
        publishers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                let seq = i * 8 + p;
                let body = json!({"scope": "topic", "target": "chat:durable", "type": "msg", "data": {"seq": seq}});
                match http.post(&url).bearer_auth(API_KEY).json(&body).send().await {
                    Ok(r) if r.status() == 200 => acknowledged.lock().expect("lock").push(seq),
                    _ => return,
                }
            }
        }));
    }
    eventually("a burst under way", || async {
        (acknowledged.lock().expect("lock").len() >= 40).then_some(())
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    server.restart();

    let (_, page) = server
        .api(
            "GET",
            "/api/v1/topics/chat%3Adurable/history?limit=1000",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(page["epoch"], epoch.as_str(), "a crash keeps the epoch");
    let kept: std::collections::HashSet<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"]["seq"].as_u64().expect("seq"))
        .collect();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 40);
    for seq in &acknowledged {
        assert!(
            kept.contains(seq),
            "publication {seq} got a 2xx and must be in history"
        );
    }
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(offset)
        .collect();
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "no hole in the offsets"
    );

    let mut kim = server.user("kim").await;
    let data = subscribe_since(&mut kim, "chat:durable", 5, &epoch).await;
    assert_eq!(data["recovered"], true, "recovery works across the crash");
    assert_eq!(offset(&kim.recv().await), 6);

    let mut lee = server.user("lee").await;
    let data: Vec<Value> = vec![lee.recv().await, lee.recv().await];
    assert_eq!(
        data[0]["id"],
        ids[1].as_str(),
        "the unacked ones come back after the crash"
    );
    assert_eq!(data[1]["id"], ids[2].as_str());
    assert!(data.iter().all(|m| m["offline"] == true));
    lee.expect_silence().await;
}

/// Unmounts a test's small filesystem when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_keeps_the_node_up_and_loses_nothing_acknowledged() {
    // The data dir on a 2 MB tmpfs: mounting needs root (CI runs as root); elsewhere the test
    // says why it cannot run.
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let _unmount = Mounted(data.clone());
    // Room held back, given back once the disk has refused a write.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).expect("filler");
    let config = format!(
        "api_key = \"{API_KEY}\"\n[jwt]\nsecret = \"{SECRET}\"\n\
         [[namespaces]]\nname = \"log\"\nhistory_size = 100000\n"
    );
    let server = Server::start_in(dir, &config, &[]);
    let pad = "x".repeat(10 * 1024);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for seq in 0..1000u64 {
        let (status, answer) = server
            .publish(json!({"scope": "topic", "target": "log:full", "type": "line", "data": {"seq": seq, "pad": pad}}))
            .await;
        if status == 200 {
            acknowledged.push(seq);
        } else {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("2 MB filled up before 1,000 messages of 10 KB");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "processing_error", "{answer}");
    assert!(acknowledged.len() > 10, "some fitted first");
    // The node stays up, and `/ready` says why it is not ready; another publication is refused
    // the same way.
    let (status, _) = server.api("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    let (status, ready) = server.api("GET", "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["error"]
            .as_str()
            .is_some_and(|e| e.contains("refuses writes")),
        "{ready}"
    );
    let (status, _) = server
        .publish(
            json!({"scope": "topic", "target": "log:full", "type": "line", "data": {"pad": pad}}),
        )
        .await;
    assert_eq!(status, 503);
    // Everything acknowledged is in history, with no gap.
    let (_, page) = server
        .api(
            "GET",
            "/api/v1/topics/log%3Afull/history?limit=1000",
            Some(API_KEY),
            None,
        )
        .await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs, acknowledged,
        "every 2xx kept, nothing half-kept: {page}"
    );
    // With room again the node takes writes again: the next publication gets the offset
    // right after the last acknowledged one (the refused ones took none), and `/ready` is 200.
    std::fs::remove_file(&filler).expect("free the room");
    let (status, answer) = server
        .publish(json!({"scope": "topic", "target": "log:full", "type": "line", "data": {"seq": 1000, "pad": "after"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let last = page["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(offset)
        .expect("an acknowledged message");
    assert_eq!(offset(&answer), last + 1, "no gap, no reuse: {answer}");
    let (status, ready) = server.api("GET", "/ready", None, None).await;
    assert_eq!(status, 200, "{ready}");
}

// ---- Scope streams: every scope recoverable (docs/PROTOCOL.md section 15) ----

fn ana() -> String {
    token("ana", "editor", &["p1"])
}

#[tokio::test]
async fn every_scope_resumes_with_no_gap_and_no_duplicate_while_publishing_goes_on() {
    let server = Arc::new(Server::start("[limits]\nrate_per_sec = 0\n"));
    let mut away = Client::connect(&server.ws_url(&format!("token={}", ana()))).await;
    let welcome = away.recv().await;
    let mut at = Positions::from_welcome(&welcome);
    let names: Vec<&str> = at.0.keys().map(String::as_str).collect();
    assert_eq!(names, ["all", "project:p1", "role:editor", "user:ana"]);
    assert!(at.0.values().all(|(offset, _)| *offset == 0), "{welcome}");
    // Another tab of the same user stays online: user events go live, not to the inbox.
    let mut other_tab = server.connect(&ana()).await;
    publish_to_every_scope(&server, "evt", 0, 1).await;
    read_every_stream(&mut away, &mut at, "evt", 1).await;
    drop(away);
    publish_to_every_scope(&server, "evt", 1, 100).await;
    // More come while the client resumes and reads its replay.
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move { publish_to_every_scope(&server, "evt", 101, 50).await })
    };
    let mut back = Client::connect(&server.ws_url(&at.query(&ana()))).await;
    let welcome = back.recv().await;
    assert_eq!(welcome["type"], "connection.established");
    for stream in ["all", "project:p1", "role:editor", "user:ana"] {
        assert_eq!(
            welcome["data"]["resumed"][stream]["recovered"], true,
            "{stream}: {welcome}"
        );
    }
    read_every_stream(&mut back, &mut at, "evt", 150).await;
    publisher.await.expect("publisher");
    back.expect_silence().await;
    // The other tab got every user event live, once.
    let mut user_events = 0;
    while let Some(got) = other_tab.next_json_within(Duration::from_millis(300)).await {
        if got["stream"] == "user:ana" {
            user_events += 1;
        }
    }
    assert_eq!(user_events, 151);
}

#[tokio::test]
async fn a_resume_past_the_window_or_from_another_epoch_says_recovered_false() {
    let server = Server::start("[limits]\nrate_per_sec = 0\n[recovery]\nwindow = \"1s\"\n");
    let mut client = Client::connect(&server.ws_url(&format!("token={}", ana()))).await;
    let mut at = Positions::from_welcome(&client.recv().await);
    publish_to_every_scope(&server, "evt", 0, 2).await;
    read_every_stream(&mut client, &mut at, "evt", 2).await;
    drop(client);
    // Within the window, from a position it never had in another epoch: not recovered.
    let mut wrong = at.clone();
    wrong.0.insert("all".into(), (1, "another-epoch".into()));
    // A stream this connection does not receive resumes nothing.
    wrong.0.insert("role:admin".into(), (0, "e".into()));
    let mut client = Client::connect(&server.ws_url(&wrong.query(&ana()))).await;
    let welcome = client.recv().await;
    let resumed = &welcome["data"]["resumed"];
    assert_eq!(resumed["all"]["recovered"], false, "{welcome}");
    assert_eq!(
        resumed["all"]["offset"], 2,
        "where the stream stands: {welcome}"
    );
    assert_eq!(resumed["role:admin"]["recovered"], false, "{welcome}");
    assert!(resumed["role:admin"].get("offset").is_none(), "{welcome}");
    assert_eq!(resumed["user:ana"]["recovered"], true, "{welcome}");
    client.expect_silence().await;
    drop(client);
    // Past the window: what was missed is gone, and the welcome says so.
    publish_to_every_scope(&server, "evt", 2, 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = Client::connect(&server.ws_url(&at.query(&ana()))).await;
    let welcome = client.recv().await;
    for stream in ["all", "project:p1", "role:editor"] {
        assert_eq!(
            welcome["data"]["resumed"][stream]["recovered"], false,
            "{welcome}"
        );
        assert_eq!(welcome["data"]["resumed"][stream]["offset"], 5, "{welcome}");
    }
    // The user was offline: those three went to the inbox, which delivers them.
    assert_eq!(
        welcome["data"]["resumed"]["user:ana"]["recovered"], true,
        "{welcome}"
    );
    for seq in 2..5 {
        let got = client.recv().await;
        assert_eq!(
            (got["offline"].clone(), got["data"]["seq"].clone()),
            (json!(true), json!(seq))
        );
    }
    client.expect_silence().await;
}

#[tokio::test]
async fn a_resume_by_auth_message_and_a_malformed_resume() {
    let server = Server::start("[limits]\nrate_per_sec = 0\n");
    let mut client = Client::connect(&server.ws_url(&format!("token={}", ana()))).await;
    let mut at = Positions::from_welcome(&client.recv().await);
    publish_to_every_scope(&server, "evt", 0, 1).await;
    read_every_stream(&mut client, &mut at, "evt", 1).await;
    drop(client);
    let other_tab = server.connect(&ana()).await;
    publish_to_every_scope(&server, "evt", 1, 3).await;
    let mut client = Client::connect(&server.ws_url("")).await;
    assert_eq!(client.recv().await["type"], "auth_required");
    let auth = json!({"type": "auth", "token": ana(), "resume": at.resume()});
    let welcome = client.request(auth).await;
    assert_eq!(welcome["type"], "auth_success", "{welcome}");
    assert_eq!(
        welcome["data"]["resumed"]["all"]["recovered"], true,
        "{welcome}"
    );
    read_every_stream(&mut client, &mut at, "evt", 3).await;
    client.expect_silence().await;
    drop(other_tab);
    // A malformed resume changes nothing and says what is wrong.
    let (status, body) =
        refused_status(&server.ws_url("token=x&resume=%7B%22all%22%3A3%7D"), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_message", "{body}");
    let mut client = Client::connect(&server.ws_url("")).await;
    client.recv().await;
    let reply = client
        .request(json!({"type": "auth", "token": ana(), "resume": {"all": {"offset": "x"}}}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "invalid_message", "{reply}");
}

#[tokio::test]
async fn with_the_window_at_zero_there_are_no_scope_streams() {
    let server = Server::start("[recovery]\nwindow = \"0s\"\n");
    let mut client = Client::connect(&server.ws_url(&format!("token={}", ana()))).await;
    let welcome = client.recv().await;
    assert!(welcome["data"].get("streams").is_none(), "{welcome}");
    let (status, _) = server
        .publish(json!({"scope": "all", "type": "evt", "data": {}}))
        .await;
    assert_eq!(status, 200);
    let got = client.recv().await;
    assert!(
        got.get("stream").is_none() && got.get("offset").is_none(),
        "{got}"
    );
}

#[tokio::test]
async fn a_project_of_the_membership_store_has_its_stream_and_a_removed_member_resumes_nothing() {
    let server = Server::start("[limits]\nrate_per_sec = 0\n");
    let (status, _) = server
        .api(
            "PUT",
            "/api/v1/projects/p9/members/ana",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut client = Client::connect(&server.ws_url(&format!("token={}", ana()))).await;
    let mut at = Positions::from_welcome(&client.recv().await);
    let names: Vec<&str> = at.0.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["all", "project:p1", "project:p9", "role:editor", "user:ana"]
    );
    let note =
        |n: u64| json!({"scope": "project", "target": "p9", "type": "evt", "data": {"seq": n}});
    server.publish(note(1)).await;
    at.advance(&client.recv().await);
    drop(client);
    server.publish(note(2)).await;
    let mut client = Client::connect(&server.ws_url(&at.query(&ana()))).await;
    let welcome = client.recv().await;
    assert_eq!(
        welcome["data"]["resumed"]["project:p9"]["recovered"], true,
        "{welcome}"
    );
    assert_eq!(at.advance(&client.recv().await), "project:p9");
    drop(client);
    // Removed meanwhile: nothing of the project is replayed, and the welcome says so.
    server.publish(note(3)).await;
    let (status, _) = server
        .api(
            "DELETE",
            "/api/v1/projects/p9/members/ana",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut client = Client::connect(&server.ws_url(&at.query(&ana()))).await;
    let welcome = client.recv().await;
    let resumed = &welcome["data"]["resumed"]["project:p9"];
    assert_eq!(resumed["recovered"], false, "{welcome}");
    assert!(resumed.get("offset").is_none(), "{welcome}");
    assert!(
        welcome["data"]["streams"].get("project:p9").is_none(),
        "{welcome}"
    );
    client.expect_silence().await;
}
