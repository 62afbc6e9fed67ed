//! The soak test: rounds of thousands of connections that connect, subscribe, receive and
//! drop (half with a close frame, half by cutting TCP), for a bounded time; then the server's
//! file descriptors, memory and indexes must be back where they were. Out of the default suite:
//!
//! ```sh
//! scripts/soak                      # SOAK_SECS=60 SOAK_CONNS=2000 by default
//! ```

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS in KiB, open file descriptors) of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count();
    (rss, fds)
}

async fn wait_for_no_connections(server: &Server) {
    eventually("connections and index entries to drain", || async {
        let (_, stats) = server
            .api("GET", "/api/v1/stats", Some(API_KEY), None)
            .await;
        (stats["total_clients"] == 0 && stats["topics"] == 0 && stats["users"] == 0).then_some(())
    })
    .await;
}

/// One round: `n` connections subscribe, all receive one publication, then all go away.
async fn round(server: &Server, n: usize, round: usize) {
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let opened = join_all(chunk.iter().map(|i| async move {
            let mut c = server.user(&format!("soak-{round}-{}", i % 500)).await;
            c.subscribe("soak").await;
            c
        }))
        .await;
        clients.extend(opened);
    }
    let (_, answer) = server
        .publish(
            json!({"scope": "topic", "target": "soak", "type": "tick", "data": {"round": round}}),
        )
        .await;
    assert_eq!(answer["recipients"], n);
    let received = join_all(
        clients
            .iter_mut()
            .map(|c| async move { c.recv().await["data"]["round"] == round }),
    )
    .await;
    assert!(
        received.into_iter().all(|ok| ok),
        "every connection got the round's message"
    );
    for (i, client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(client); // TCP cut, no close frame
        } else {
            client.close_cleanly().await;
        }
    }
    wait_for_no_connections(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run with scripts/soak"]
async fn connections_come_and_go_without_leaking() {
    let seconds = env_or("SOAK_SECS", 60);
    let n = env_or("SOAK_CONNS", 2000) as usize;
    let server = Server::start("");
    round(&server, n, 0).await;
    let (rss0, fds0) = usage(server.pid());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 1;
    while Instant::now() < deadline {
        round(&server, n, rounds).await;
        rounds += 1;
    }
    let (rss, fds) = usage(server.pid());
    println!(
        "soak: {rounds} rounds of {n} connections in {seconds} s; RSS {rss0} -> {rss} KiB, fds {fds0} -> {fds}"
    );
    assert_eq!(fds, fds0, "file descriptors are back to the baseline");
    assert!(
        rss <= rss0 + rss0 / 5 + 4096,
        "memory is back near the baseline: {rss0} -> {rss} KiB"
    );
}
