//! `herald-bench`: Herald's load tool. It speaks Herald's protocol like any client (a JWT in
//! the query, `subscribe`, `POST /api/v1/publish`) and reads the server's memory and CPU from
//! `/proc/PID` when given its pid. It pins nothing; docs/BENCHMARKS.md shows how to pin the
//! server and the tool to separate cores with `taskset`.
//!
//! Modes: `connect` (time to open N subscribed connections), `idle` (server bytes per idle
//! connection), `fanout` (N subscribers, a publisher at R msg/s for T s: latency percentiles,
//! deliveries per second, losses, server CPU), `max-rate` (fan-out at rising rates until p99
//! passes 100 ms or a message is lost), `churn` (a fan-out while connections come and go).

mod raw;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(name = "herald-bench", about = "Load tool for a running herald")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The JWT secret the server verifies with (tokens are signed here).
    #[arg(long, env = "HERALD_JWT_SECRET")]
    secret: String,
    /// The server's API key (for publishing).
    #[arg(long, env = "HERALD_API_KEY")]
    api_key: String,
    /// The server's pid, to read its RSS and CPU time from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Offer permessage-deflate (the server needs `compression = true`).
    #[arg(long)]
    deflate: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N authenticated, subscribed connections; report the time and failures.
    Connect {
        #[arg(long, default_value_t = 1000)]
        n: usize,
    },
    /// Hold N connections; report the server's RSS growth per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        n: usize,
    },
    /// Fan-out at rising rates (doubling from `from`) until p99 > 100 ms or any loss.
    MaxRate {
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 25)]
        from: u64,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// A fan-out while `churn` connections a second connect, subscribe and leave.
    Churn {
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 200)]
        churn: u64,
    },
    /// Subscribers on `--addr`, the same fan-out published once through `--addr` and once
    /// through another node of the cluster (`--other`): the latency Redis adds.
    Cluster {
        /// Another node of the same cluster.
        #[arg(long)]
        other: String,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 10)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// N subscribers on one topic, a publisher at `rate` msg/s for `secs` seconds.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Payload padding in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn token(secret: &str, sub: &str) -> Result<String, Failure> {
    let claims = json!({ "sub": sub, "exp": now_us() / 1_000_000 + 3600 });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// (VmRSS in KiB, CPU seconds) of a process.
fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss, ticks / 100.0))
}

/// A client connection: plain ([`raw::Raw`]), or with permessage-deflate (yawc) for `--deflate`.
enum Conn {
    Plain(Box<raw::Raw>),
    Deflate(Box<yawc::WebSocket<tokio::net::TcpStream>>),
}

impl Conn {
    async fn connect(addr: &str, jwt: &str, deflate: bool) -> Result<Conn, Failure> {
        let path = format!("/ws?token={jwt}");
        if !deflate {
            return Ok(Conn::Plain(Box::new(raw::Raw::connect(addr, &path).await?)));
        }
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let options = yawc::Options::default()
            .with_low_latency_compression()
            .with_read_buffer_capacity(4096)
            .with_write_buffer_capacity(4096);
        let url = format!("ws://{addr}{path}");
        let ws = yawc::WebSocket::handshake(url.parse()?, tcp, options).await?;
        Ok(Conn::Deflate(Box::new(ws)))
    }

    async fn recv_json(&mut self) -> Result<Value, Failure> {
        match self {
            Conn::Plain(ws) => Ok(serde_json::from_slice(&ws.recv_text().await?)?),
            Conn::Deflate(ws) => loop {
                let frame = ws.next_frame().await?;
                match frame.opcode() {
                    yawc::OpCode::Text => return Ok(serde_json::from_slice(frame.payload())?),
                    yawc::OpCode::Close => return Err("closed".into()),
                    _ => continue,
                }
            },
        }
    }

    /// The `data.sent_us` of the messages that arrived (None for one without it): for a plain
    /// connection, every message one read returned.
    async fn recv_sent_us(&mut self, out: &mut Vec<Option<u64>>) -> Result<(), Failure> {
        match self {
            Conn::Plain(ws) => ws.recv_batch(out).await,
            Conn::Deflate(ws) => loop {
                let frame = ws.next_frame().await?;
                match frame.opcode() {
                    yawc::OpCode::Text => {
                        out.push(raw::sent_us(frame.payload()));
                        return Ok(());
                    }
                    yawc::OpCode::Close => return Err("closed".into()),
                    _ => continue,
                }
            },
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), Failure> {
        match self {
            Conn::Plain(ws) => ws.send_text(&text).await?,
            Conn::Deflate(ws) => ws.send(yawc::Frame::text(text)).await?,
        }
        Ok(())
    }

    async fn close(&mut self) {
        match self {
            Conn::Plain(ws) => ws.close().await,
            Conn::Deflate(ws) => {
                let _ = ws.close().await;
            }
        }
    }
}

/// `size` bytes of text like an app's payload (words from a small vocabulary in a fixed
/// pseudo-random order): it compresses about as well as real JSON text does, unlike a run of
/// one letter.
fn text_of(size: usize) -> String {
    const WORDS: [&str; 32] = [
        "task",
        "moved",
        "to",
        "done",
        "by",
        "alice",
        "check",
        "down",
        "project",
        "board",
        "comment",
        "added",
        "on",
        "the",
        "card",
        "status",
        "green",
        "red",
        "deploy",
        "build",
        "42",
        "2026-11-22T06:40:00Z",
        "user",
        "bob",
        "joined",
        "alert",
        "cpu",
        "high",
        "on",
        "node-7",
        "ok",
        "retry",
    ];
    let mut state: u32 = 2_463_534_242;
    let mut text = String::with_capacity(size + 32);
    while text.len() < size {
        // xorshift32: a fixed, cheap sequence.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        text.push_str(WORDS[(state % WORDS.len() as u32) as usize]);
        text.push(' ');
    }
    text.truncate(size);
    text
}

/// IP bytes sent on this machine's network namespace so far (`IpExt: OutOctets` in
/// /proc/net/netstat): on an otherwise quiet loopback, what the run put on the wire, headers,
/// acknowledgements and publish requests included.
fn wire_bytes() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("IpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == "OutOctets")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

async fn recv_json(ws: &mut Conn) -> Result<Value, Failure> {
    ws.recv_json().await
}

/// One authenticated connection subscribed to `topic`.
async fn subscriber(addr: &str, jwt: &str, topic: &str, deflate: bool) -> Result<Conn, Failure> {
    let mut ws = Conn::connect(addr, jwt, deflate).await?;
    let hello = recv_json(&mut ws).await?;
    if hello["type"] != "connection.established" {
        return Err(format!("unexpected {hello}").into());
    }
    ws.send_text(json!({"type": "subscribe", "topic": topic}).to_string())
        .await?;
    let reply = recv_json(&mut ws).await?;
    if reply["type"] != "subscribed" {
        return Err(format!("unexpected {reply}").into());
    }
    Ok(ws)
}

/// Opens `n` subscribed connections, `concurrency` at a time; returns them and the failures.
async fn open(args: &Args, n: usize, topic: &str) -> Result<(Vec<Conn>, usize, Duration), Failure> {
    let jwt = token(&args.secret, "bench")?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(n);
    let mut failures = 0;
    let mut pending = futures_util::stream::iter(
        (0..n).map(|_| subscriber(&args.addr, &jwt, topic, args.deflate)),
    )
    .buffer_unordered(args.concurrency.max(1));
    while let Some(result) = pending.next().await {
        match result {
            Ok(ws) => sockets.push(ws),
            Err(_) => failures += 1,
        }
    }
    Ok((sockets, failures, started.elapsed()))
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    match args.mode {
        Mode::Connect { n } => {
            let (sockets, failures, took) = open(&args, n, "bench").await?;
            println!(
                "connect: {} ready, {failures} failed, in {:.2} s ({:.0} connections/s)",
                sockets.len(),
                took.as_secs_f64(),
                sockets.len() as f64 / took.as_secs_f64()
            );
        }
        Mode::Idle { n } => {
            let pid = args.pid.ok_or("idle needs --pid")?;
            let (before, _) = usage(pid).ok_or("cannot read /proc")?;
            let (sockets, failures, _) = open(&args, n, "bench").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (after, _) = usage(pid).ok_or("cannot read /proc")?;
            let per = (after.saturating_sub(before) * 1024) as f64 / sockets.len().max(1) as f64;
            println!(
                "idle: {} connections ({failures} failed): RSS {before} -> {after} KiB, {per:.0} bytes per connection",
                sockets.len()
            );
        }
        Mode::Fanout {
            n,
            rate,
            secs,
            size,
        } => {
            println!("{}", fanout(&args, &args.addr, n, rate, secs, size).await?);
        }
        Mode::Cluster {
            ref other,
            n,
            rate,
            secs,
            size,
        } => {
            let same = fanout(&args, &args.addr, n, rate, secs, size).await?;
            println!("published through the subscribers' node:\n{same}");
            let across = fanout(&args, other, n, rate, secs, size).await?;
            println!("published through {other}:\n{across}");
            println!(
                "cluster: cross-node overhead p50 {:+.2} ms, p99 {:+.2} ms; lost {} and {}",
                across.p50_ms - same.p50_ms,
                across.p99_ms - same.p99_ms,
                same.lost,
                across.lost
            );
        }
        Mode::MaxRate {
            n,
            from,
            secs,
            size,
        } => max_rate(&args, n, from, secs, size).await?,
        Mode::Churn {
            n,
            rate,
            secs,
            churn,
        } => churn_run(&args, n, rate, secs, churn).await?,
    }
    Ok(())
}

/// Fan-out at `from`, `2 * from`, ... msg/s until p99 passes 100 ms or a message is lost.
async fn max_rate(args: &Args, n: usize, from: u64, secs: u64, size: usize) -> Result<(), Failure> {
    let mut rate = from.max(1);
    let mut held = None;
    loop {
        let report = fanout(args, &args.addr, n, rate, secs, size).await?;
        println!("{report}");
        if report.p99_ms > 100.0 || report.lost > 0 {
            break;
        }
        held = Some(rate);
        rate *= 2;
    }
    match held {
        Some(rate) => {
            println!("max-rate: {rate} msg/s to {n} subscribers held (p99 <= 100 ms, no loss)")
        }
        None => println!("max-rate: not even {from} msg/s held"),
    }
    Ok(())
}

/// A fan-out while `churn` connections a second connect, subscribe and close (a reconnect
/// storm beside steady traffic).
async fn churn_run(args: &Args, n: usize, rate: u64, secs: u64, churn: u64) -> Result<(), Failure> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let churner = {
        let (stop, cycles, failed) = (stop.clone(), cycles.clone(), failed.clone());
        let addr = args.addr.clone();
        let jwt = token(&args.secret, "churn")?;
        let deflate = args.deflate;
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / churn.max(1) as f64));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (addr, jwt) = (addr.clone(), jwt.clone());
                let (cycles, failed) = (cycles.clone(), failed.clone());
                tokio::spawn(async move {
                    match subscriber(&addr, &jwt, "bench:churn", deflate).await {
                        Ok(mut ws) => {
                            ws.close().await;
                            cycles.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };
    let report = fanout(args, &args.addr, n, rate, secs, 100).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = churner.await;
    println!(
        "{report}\nchurn: {} connect-subscribe-close cycles, {} failed, at {churn}/s requested",
        cycles.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What one fan-out run measured.
struct Report {
    line: String,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Subscribers on `args.addr`, publications through `publish_addr`.
async fn fanout(
    args: &Args,
    publish_addr: &str,
    n: usize,
    rate: u64,
    secs: u64,
    size: usize,
) -> Result<Report, Failure> {
    let (sockets, failures, _) = open(args, n, "bench:fanout").await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let total = rate * secs;
    // Readers record into their own histogram (no per-message timer: a stuck reader is
    // aborted after the publisher is done and a grace period), merged at the end.
    let mut readers = Vec::new();
    let mut shards = Vec::new();
    for mut ws in sockets {
        let shard = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?));
        shards.push(shard.clone());
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            let mut batch = Vec::new();
            while got < total {
                batch.clear();
                if ws.recv_sent_us(&mut batch).await.is_err() {
                    break;
                }
                let now = now_us();
                let Ok(mut h) = shard.lock() else { break };
                for sent in batch.iter().flatten() {
                    let _ = h.record(now.saturating_sub(*sent).max(1));
                    got += 1;
                }
                received.fetch_add(batch.iter().flatten().count() as u64, Ordering::Relaxed);
            }
        }));
    }
    let cpu_before = args.pid.and_then(usage).map(|(_, cpu)| cpu);
    // The tool's own CPU, beside the server's: where the tool is the bound, it shows.
    let own_before = usage(std::process::id()).map(|(_, cpu)| cpu);
    let wire_before = wire_bytes();
    let http = reqwest::Client::new();
    let url = format!("http://{publish_addr}/api/v1/publish");
    let pad = text_of(size);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    for seq in 0..total {
        tick.tick().await;
        let body = json!({"scope": "topic", "target": "bench:fanout", "type": "bench",
                          "data": {"seq": seq, "sent_us": now_us(), "pad": pad}});
        http.post(&url)
            .bearer_auth(&args.api_key)
            .json(&body)
            .send()
            .await?;
    }
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    for reader in &mut readers {
        tokio::select! {
            _ = &mut *reader => {}
            _ = &mut grace => break,
        }
    }
    for reader in &readers {
        reader.abort();
    }
    if let Ok(mut all) = histogram.lock() {
        for shard in &shards {
            if let Ok(shard) = shard.lock() {
                let _ = all.add(&*shard);
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    let own = match (own_before, usage(std::process::id())) {
        (Some(before), Some((_, after))) => format!("{:.2}", after - before),
        _ => "n/a".into(),
    };
    let cpu = match (cpu_before, args.pid.and_then(usage)) {
        (Some(before), Some((_, after))) => format!("{:.2}", after - before),
        _ => "n/a".into(),
    };
    let got = received.load(Ordering::Relaxed);
    let per_delivery = match (wire_before, wire_bytes()) {
        (Some(before), Some(after)) if got > 0 => {
            format!("{:.0} B", after.saturating_sub(before) as f64 / got as f64)
        }
        _ => "n/a".into(),
    };
    let expected = total * (n - failures) as u64;
    let h = histogram.lock().map_err(|_| "histogram lock")?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let lost = expected.saturating_sub(got);
    let line = format!(
        "fanout: {} subscribers ({failures} failed), {rate} msg/s for {secs} s, {size} B padding\n\
         latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n\
         deliveries: {got} of {expected} ({lost} lost), {:.0}/s; server CPU {cpu} s, tool CPU {own} s; \
         on the wire {per_delivery} per delivery{}",
        n - failures,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        got as f64 / took,
        if args.deflate { " (deflate)" } else { "" }
    );
    Ok(Report {
        line,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        lost,
    })
}
