//! `herald-bench`: Herald's load tool. It speaks Herald's protocol like any client (a JWT in
//! the query, `subscribe`, `POST /api/v1/publish`) and reads the server's memory and CPU from
//! `/proc/PID` when given its pid. It pins nothing; docs/BENCHMARKS.md shows how to pin the
//! server and the tool to separate cores with `taskset`.
//!
//! Modes: `connect` (time to open N subscribed connections), `idle` (server bytes per idle
//! connection), `fanout` (N subscribers, a publisher at R msg/s for T s: latency percentiles,
//! deliveries per second, losses, server CPU), `max-rate` (fan-out at rising rates until p99
//! passes 100 ms or a message is lost), `churn` (a fan-out while connections come and go),
//! `cluster` (the same fan-out published through another node), `publish` (HTTP publishes per
//! second to a topic with one subscriber), `overload` (a fan-out far beyond what the clients
//! read, with `/health` polled throughout and the server's slow-consumer count read after).
//!
//! Every run prints a human summary and one JSON line (`{"mode": ...}`) with the same figures.
//! The tool raises its own open-file limit to the hard limit, and past 25,000 connections it
//! connects from 127.0.0.2, 127.0.0.3, ... (one source address has ~28,000 ephemeral ports).

mod publish;
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
    /// Connect with a session cookie (`Cookie: session=bench-<i>`) and no token: the server's
    /// `[proxy] connect` hook decides each connection (`scripts/bench --connect-hook`).
    #[arg(long)]
    cookie: bool,
    /// Seconds to wait after opening the connections before a fan-out is measured (e.g. while
    /// the webhooks of those connects are sent).
    #[arg(long, default_value_t = 0)]
    settle: u64,
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
    /// HTTP publishes per second over `conns` keep-alive connections, to a topic with one
    /// subscriber.
    Publish {
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Publish to topics that keep history (namespace `durable`, which the server's config
        /// must declare with `history_size`): every publish is answered after its commit.
        #[arg(long)]
        history: bool,
        /// Publish to users with no connection instead (user scope): every publish is kept in
        /// the user's inbox and answered after its commit; `--topics` counts the users.
        #[arg(long, conflicts_with = "history")]
        inbox: bool,
        /// Spread the publishes over this many topics (connection i publishes to topic i % n).
        #[arg(long, default_value_t = 1)]
        topics: usize,
        /// Publish at this many publishes a second in all instead of as fast as answers come
        /// (answer latency then counts from when each request was due).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// A fan-out beyond what the clients read (10,000 x 100 msg/s by default): `/health` is
    /// polled throughout, and the server's slow-consumer count read after.
    Overload {
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
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
        /// Publish to the subscribers' topic (`topic`) or to every connection (`all`, through
        /// the `all` scope stream when the server keeps scope streams).
        #[arg(long, default_value = "topic", value_parser = ["topic", "all"])]
        scope: String,
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
    /// A connection with `jwt` in the query, or, with `cookie`, that cookie and no token.
    async fn connect(
        addr: &str,
        jwt: &str,
        cookie: Option<&str>,
        deflate: bool,
        source: Option<std::net::IpAddr>,
    ) -> Result<Conn, Failure> {
        let (path, headers) = match cookie {
            Some(cookie) => ("/ws".to_string(), format!("Cookie: {cookie}\r\n")),
            None => (format!("/ws?token={jwt}"), String::new()),
        };
        if !deflate {
            return Ok(Conn::Plain(Box::new(
                raw::Raw::connect(addr, &path, &headers, source).await?,
            )));
        }
        if cookie.is_some() {
            return Err("--cookie connects plain connections only".into());
        }
        let tcp = raw::tcp_to(addr, source).await?;
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

/// The source address of the `i`-th connection: the default up to 25,000, then 127.0.0.2,
/// 127.0.0.3, ... for each further 25,000.
fn source_of(i: usize) -> Option<std::net::IpAddr> {
    let extra = i.checked_sub(25_000)? / 25_000;
    Some(std::net::Ipv4Addr::new(127, 0, 0, 2 + extra.min(250) as u8).into())
}

/// One authenticated connection subscribed to `topic`.
async fn subscriber(
    addr: &str,
    jwt: &str,
    cookie: Option<&str>,
    topic: &str,
    deflate: bool,
    source: Option<std::net::IpAddr>,
) -> Result<Conn, Failure> {
    let mut ws = Conn::connect(addr, jwt, cookie, deflate, source).await?;
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
    let (sockets, failures, took, _) = open_timed(args, n, topic).await?;
    Ok((sockets, failures, took))
}

/// [`open`], with how long each connection took from its TCP connect to its `subscribed`.
async fn open_timed(
    args: &Args,
    n: usize,
    topic: &str,
) -> Result<(Vec<Conn>, usize, Duration, Vec<Duration>), Failure> {
    let jwt = token(&args.secret, "bench")?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(n);
    let mut took = Vec::with_capacity(n);
    let mut failures = 0;
    let mut pending = futures_util::stream::iter((0..n).map(|i| {
        let jwt = &jwt;
        async move {
            let cookie = args.cookie.then(|| format!("session=bench-{i}"));
            let began = Instant::now();
            let (addr, deflate, source) = (&args.addr, args.deflate, source_of(i));
            subscriber(addr, jwt, cookie.as_deref(), topic, deflate, source)
                .await
                .map(|ws| (ws, began.elapsed()))
        }
    }))
    .buffer_unordered(args.concurrency.max(1));
    while let Some(result) = pending.next().await {
        match result {
            Ok((ws, each)) => {
                sockets.push(ws);
                took.push(each);
            }
            Err(_) => failures += 1,
        }
    }
    Ok((sockets, failures, started.elapsed(), took))
}

/// The `q` quantile of `durations`, in milliseconds (0 when empty).
fn quantile_ms(durations: &mut [Duration], q: f64) -> f64 {
    durations.sort_unstable();
    let Some(last) = durations.len().checked_sub(1) else {
        return 0.0;
    };
    let at = ((last as f64) * q).round() as usize;
    durations[at.min(last)].as_secs_f64() * 1000.0
}

/// Prints the run's JSON line.
/// Prints a run's JSON line, with `steal_s`: the CPU time the hypervisor took from this
/// machine's cores since the tool started (each run starts a fresh tool), so a run slowed by
/// a noisy host shows it.
fn emit(mut line: Value) {
    if let (Value::Object(fields), Some(at_start)) = (&mut line, *STEAL_AT_START) {
        let steal = steal_s().map(|now| ((now - at_start) * 100.0).round() / 100.0);
        fields.insert("steal_s".into(), json!(steal));
    }
    println!("{line}");
}

/// [`steal_s`] when the tool started.
static STEAL_AT_START: std::sync::LazyLock<Option<f64>> = std::sync::LazyLock::new(steal_s);

/// The machine's steal time so far, all cores together (`/proc/stat`, Linux), in seconds.
fn steal_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal, in 1/100 s.
    let ticks: f64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds used by the server (if its pid is known) and by this tool since `before`.
struct Cpu {
    server: Option<f64>,
    tool: Option<f64>,
}

impl Cpu {
    fn now(args: &Args) -> Self {
        Self {
            server: args.pid.and_then(usage).map(|(_, cpu)| cpu),
            tool: usage(std::process::id()).map(|(_, cpu)| cpu),
        }
    }

    fn since(args: &Args, before: &Cpu) -> Self {
        let now = Self::now(args);
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Self {
            server: diff(now.server, before.server),
            tool: diff(now.tool, before.tool),
        }
    }

    fn text(value: Option<f64>) -> String {
        value.map_or("n/a".into(), |v| format!("{v:.2}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    std::sync::LazyLock::force(&STEAL_AT_START);
    // Thousands of sockets: take every file descriptor the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("herald-bench: cannot raise the open-file limit: {e}");
    }
    match args.mode {
        Mode::Connect { n } => {
            let before = Cpu::now(&args);
            let (sockets, failures, took, mut each) = open_timed(&args, n, "bench").await?;
            let cpu = Cpu::since(&args, &before);
            let rate = sockets.len() as f64 / took.as_secs_f64();
            let (p50, p99) = (quantile_ms(&mut each, 0.5), quantile_ms(&mut each, 0.99));
            println!(
                "connect: {} ready, {failures} failed, in {:.2} s ({rate:.0} connections/s), each p50 {p50:.2} ms p99 {p99:.2} ms; server CPU {} s, tool CPU {} s",
                sockets.len(),
                took.as_secs_f64(),
                Cpu::text(cpu.server),
                Cpu::text(cpu.tool),
            );
            emit(
                json!({"mode": "connect", "n": n, "ready": sockets.len(), "failed": failures,
                        "cookie": args.cookie, "secs": took.as_secs_f64(), "per_sec": rate,
                        "p50_ms": p50, "p99_ms": p99,
                        "server_cpu_s": cpu.server, "tool_cpu_s": cpu.tool}),
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
            emit(
                json!({"mode": "idle", "n": n, "held": sockets.len(), "failed": failures,
                        "rss_before_kib": before, "rss_after_kib": after,
                        "bytes_per_connection": per}),
            );
        }
        Mode::Fanout {
            n,
            rate,
            secs,
            size,
            ref scope,
        } => {
            let to_all = scope == "all";
            let report = fanout(&args, &args.addr, n, rate, secs, size, to_all).await?;
            println!("{report}");
            emit(report.json);
        }
        Mode::Cluster {
            ref other,
            n,
            rate,
            secs,
            size,
        } => {
            let same = fanout(&args, &args.addr, n, rate, secs, size, false).await?;
            println!("published through the subscribers' node:\n{same}");
            let across = fanout(&args, other, n, rate, secs, size, false).await?;
            println!("published through {other}:\n{across}");
            let (p50, p99) = (across.p50_ms - same.p50_ms, across.p99_ms - same.p99_ms);
            println!(
                "cluster: cross-node overhead p50 {p50:+.2} ms, p99 {p99:+.2} ms; lost {} and {}",
                same.lost, across.lost
            );
            emit(
                json!({"mode": "cluster", "same_node": same.json, "other_node": across.json,
                        "overhead_p50_ms": p50, "overhead_p99_ms": p99}),
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
        Mode::Publish {
            conns,
            secs,
            size,
            history,
            inbox,
            topics,
            rate,
        } => {
            let target = match (history, inbox) {
                (_, true) => Target::Inbox,
                (true, false) => Target::History,
                (false, false) => Target::Topic,
            };
            publish_run(&args, conns, secs, size, target, topics, rate).await?
        }
        Mode::Overload {
            n,
            rate,
            secs,
            size,
        } => overload(&args, n, rate, secs, size).await?,
    }
    Ok(())
}

/// Where `publish` sends its publications.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Topics without history, one subscriber.
    Topic,
    /// Topics of the namespace `durable` (history), one subscriber.
    History,
    /// Users with no connection: kept in their inboxes, nobody receives them.
    Inbox,
}

/// HTTP publishes per second to `topics` topics (with history or not) with one subscriber, or
/// to `topics` users without a connection (their inboxes).
async fn publish_run(
    args: &Args,
    conns: usize,
    secs: u64,
    size: usize,
    target: Target,
    topics: usize,
    rate: Option<u64>,
) -> Result<(), Failure> {
    let jwt = token(&args.secret, "bench")?;
    let namespace = if target == Target::History {
        "durable"
    } else {
        "bench"
    };
    let names: Vec<String> = (0..topics.max(1))
        .map(|k| format!("{namespace}:publish-{k}"))
        .collect();
    let mut sub = subscriber(&args.addr, &jwt, None, &names[0], false, None).await?;
    if target != Target::Inbox {
        for name in &names[1..] {
            sub.send_text(json!({"type": "subscribe", "topic": name}).to_string())
                .await?;
            let reply = recv_json(&mut sub).await?;
            if reply["type"] != "subscribed" {
                return Err(format!("unexpected {reply}").into());
            }
        }
    }
    let bodies: Vec<String> = (0..topics.max(1))
        .map(|k| {
            let (scope, to) = match target {
                Target::Inbox => ("user", format!("offline-{k}")),
                _ => ("topic", names[k].clone()),
            };
            json!({"scope": scope, "target": to, "type": "bench",
                   "data": {"pad": text_of(size)}})
            .to_string()
        })
        .collect();
    let before = Cpu::now(args);
    let outcome = publish::run(&args.addr, &args.api_key, &bodies, conns, secs, rate, sub).await?;
    let cpu = Cpu::since(args, &before);
    let per_sec = outcome.answered as f64 / outcome.took.as_secs_f64();
    let per_publish = cpu.server.map(|s| s * 1e6 / outcome.answered.max(1) as f64);
    println!(
        "publish: {} answered 2xx ({} other) over {conns} connections in {:.2} s: {per_sec:.0} publishes/s; \
         {} delivered to the subscriber; server CPU {} s ({} µs per publish), tool CPU {} s",
        outcome.answered,
        outcome.failed,
        outcome.took.as_secs_f64(),
        outcome.delivered,
        Cpu::text(cpu.server),
        per_publish.map_or("n/a".into(), |v| format!("{v:.1}")),
        Cpu::text(cpu.tool),
    );
    emit(
        json!({"mode": "publish", "conns": conns, "history": target == Target::History,
                "inbox": target == Target::Inbox, "topics": topics,
                "rate": rate,
                "secs": outcome.took.as_secs_f64(),
                "p50_ms": outcome.p50_ms, "p99_ms": outcome.p99_ms,
                "answered": outcome.answered, "failed": outcome.failed, "per_sec": per_sec,
                "delivered": outcome.delivered, "server_cpu_s": cpu.server,
                "server_cpu_us_per_publish": per_publish, "tool_cpu_s": cpu.tool}),
    );
    Ok(())
}

/// One `GET /health` on a fresh connection, answered within 2 s: whether it said 200.
fn health(addr: &str) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    tcp.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// A fan-out beyond what the clients can read, with `/health` polled every 100 ms.
async fn overload(args: &Args, n: usize, rate: u64, secs: u64, size: usize) -> Result<(), Failure> {
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // An OS thread of its own with a blocking client: the kernel schedules it beside the
    // tool's busy runtime, so the time measured is the server's, not the tool's queue.
    let poller = {
        let (polling, addr) = (polling.clone(), args.addr.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
            while polling.load(Ordering::Relaxed) {
                let asked = Instant::now();
                match health(&addr) {
                    Ok(true) => ok += 1,
                    _ => failed += 1,
                }
                slowest = slowest.max(asked.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed, slowest)
        })
    };
    let report = fanout(args, &args.addr, n, rate, secs, size, false).await?;
    polling.store(false, Ordering::Relaxed);
    let (ok, failed, slowest) = poller.join().map_err(|_| "the health poller panicked")?;
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", args.addr))
        .bearer_auth(&args.api_key)
        .send()
        .await?
        .text()
        .await?;
    // The server's own count of connections it closed as slow consumers.
    let slow: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("herald_connections_closed_total") && l.contains("slow_consumer"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v);
    println!(
        "{report}\noverload: /health answered {ok} of {} polls (slowest {:.1} ms); the server closed {slow} slow consumers",
        ok + failed,
        slowest.as_secs_f64() * 1000.0
    );
    emit(
        json!({"mode": "overload", "fanout": report.json, "health_ok": ok,
                "health_failed": failed, "health_slowest_ms": slowest.as_secs_f64() * 1000.0,
                "slow_consumers_closed": slow}),
    );
    Ok(())
}

/// Fan-out at `from`, `2 * from`, ... msg/s until p99 passes 100 ms or a message is lost.
async fn max_rate(args: &Args, n: usize, from: u64, secs: u64, size: usize) -> Result<(), Failure> {
    let mut rate = from.max(1);
    let mut held = None;
    let mut steps = Vec::new();
    loop {
        let report = fanout(args, &args.addr, n, rate, secs, size, false).await?;
        println!("{report}");
        let failed = report.p99_ms > 100.0 || report.lost > 0;
        steps.push(report.json);
        if failed {
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
    emit(json!({"mode": "max-rate", "n": n, "held_rate": held, "steps": steps}));
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
                    match subscriber(&addr, &jwt, None, "bench:churn", deflate, None).await {
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
    let report = fanout(args, &args.addr, n, rate, secs, 100, false).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = churner.await;
    let (cycles, failed) = (
        cycles.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "{report}\nchurn: {cycles} connect-subscribe-close cycles, {failed} failed, at {churn}/s requested"
    );
    emit(
        json!({"mode": "churn", "fanout": report.json, "cycles": cycles, "failed": failed,
                "requested_per_sec": churn}),
    );
    Ok(())
}

/// What one fan-out run measured.
struct Report {
    line: String,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
    json: Value,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Subscribers on `args.addr`, publications through `publish_addr` (to their topic, or to
/// every connection with `to_all`).
async fn fanout(
    args: &Args,
    publish_addr: &str,
    n: usize,
    rate: u64,
    secs: u64,
    size: usize,
    to_all: bool,
) -> Result<Report, Failure> {
    let (sockets, failures, _) = open(args, n, "bench:fanout").await?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    // Readers whose connection ended before the run did (closed by the server: 1013 for a
    // slow consumer).
    let ended = Arc::new(AtomicU64::new(0));
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
        let (received, ended) = (received.clone(), ended.clone());
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            let mut batch = Vec::new();
            while got < total {
                batch.clear();
                if ws.recv_sent_us(&mut batch).await.is_err() {
                    ended.fetch_add(1, Ordering::Relaxed);
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
    // Each publication leaves on its tick whether or not the previous one was answered (a
    // publisher that waits for each answer cannot offer more than one per round trip).
    let refused = Arc::new(AtomicU64::new(0));
    let mut in_flight = Vec::with_capacity(total as usize);
    for seq in 0..total {
        tick.tick().await;
        let data = json!({"seq": seq, "sent_us": now_us(), "pad": pad});
        let body = match to_all {
            true => json!({"scope": "all", "type": "bench", "data": data}),
            false => json!({"scope": "topic", "target": "bench:fanout", "type": "bench",
                            "data": data}),
        };
        let request = http.post(&url).bearer_auth(&args.api_key).json(&body);
        let refused = refused.clone();
        in_flight.push(tokio::spawn(async move {
            match request.send().await {
                Ok(answer) if answer.status().is_success() => {}
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let offered_secs = started.elapsed().as_secs_f64();
    for request in in_flight {
        let _ = request.await;
    }
    let refused = refused.load(Ordering::Relaxed);
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
    let diff = |before: Option<f64>, after: Option<(u64, f64)>| Some(after?.1 - before?);
    let own_s = diff(own_before, usage(std::process::id()));
    let cpu_s = diff(cpu_before, args.pid.and_then(usage));
    let got = received.load(Ordering::Relaxed);
    let wire = match (wire_before, wire_bytes()) {
        (Some(before), Some(after)) if got > 0 => {
            Some(after.saturating_sub(before) as f64 / got as f64)
        }
        _ => None,
    };
    let expected = (total - refused) * (n - failures) as u64;
    let offered_rate = total as f64 / offered_secs;
    let h = histogram.lock().map_err(|_| "histogram lock")?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let lost = expected.saturating_sub(got);
    let ended = ended.load(Ordering::Relaxed);
    let per_delivery_us = cpu_s.map(|s| s * 1e6 / got.max(1) as f64);
    let line = format!(
        "fanout: {} subscribers ({failures} failed), {rate} msg/s for {secs} s ({offered_rate:.0}/s offered, {refused} publishes refused), {size} B padding\n\
         latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n\
         deliveries: {got} of {expected} ({lost} lost, {ended} connections ended early), {:.0}/s; \
         server CPU {} s ({} µs per delivery), tool CPU {} s; on the wire {} per delivery{}",
        n - failures,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        got as f64 / took,
        Cpu::text(cpu_s),
        per_delivery_us.map_or("n/a".into(), |v| format!("{v:.1}")),
        Cpu::text(own_s),
        wire.map_or("n/a".into(), |b| format!("{b:.0} B")),
        if args.deflate { " (deflate)" } else { "" }
    );
    let json = json!({"mode": "fanout", "scope": if to_all { "all" } else { "topic" },
        "subscribers": n - failures, "failed": failures,
        "rate": rate, "offered_rate": offered_rate, "refused": refused, "secs": secs, "size": size, "deflate": args.deflate,
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0, "delivered": got, "expected": expected, "lost": lost,
        "ended_early": ended, "deliveries_per_sec": got as f64 / took, "server_cpu_s": cpu_s,
        "server_cpu_us_per_delivery": per_delivery_us, "tool_cpu_s": own_s,
        "wire_bytes_per_delivery": wire});
    Ok(Report {
        line,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        lost,
        json,
    })
}
