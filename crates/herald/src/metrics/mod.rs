//! Prometheus metrics, all named `herald_*`, recorded through the `metrics` facade, plus the
//! process's own `process_*` series (`process`).
//!
//! The Prometheus recorder is process-wide: the first node built installs it, and `/metrics`
//! renders it. An app that installed its own recorder first keeps it; `/metrics` then says so.
//! Hot-path metrics (deliveries, fan-out time) are one atomic add or one histogram record per
//! publication, never per recipient. Every series has a HELP line and is there from the
//! start, at zero, for every label value Herald uses (so alerts on absent series never
//! misfire); only `role` values come from tokens and appear when first seen.

mod delivery;
#[cfg(feature = "prometheus")]
mod process;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
#[cfg(feature = "prometheus")]
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

#[cfg(feature = "prometheus")]
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The hot-path series, resolved once: added to on every socket read and write.
struct Bytes {
    received: metrics::Counter,
    sent: metrics::Counter,
}

static BYTES: OnceLock<Bytes> = OnceLock::new();

/// How often histogram samples are folded into their buckets when nobody scrapes.
#[cfg(feature = "prometheus")]
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Latency buckets, in seconds, from 10 µs to 2.5 s.
const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How a registered connection can end (`connection::Ending`'s labels).
pub const CLOSE_REASONS: &[&str] = &[
    "client_closed",
    "client_gone",
    "pong_timeout",
    "write_failed",
    "write_timeout",
    "slow_consumer",
    "token_expired",
    "disconnected",
    "going_away",
    "too_many_errors",
    "too_large",
    "invalid_utf8",
    "protocol_error",
    "policy",
];

/// Client frames by command (`protocol::Command::name`, and the two unparsed kinds).
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "auth",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ack",
    "ping",
    "echo",
    "status",
    "custom",
    "invalid",
    "binary",
];

/// What is refused or cut off ([`dropped`]).
pub const DROP_REASONS: &[&str] = &[
    "slow_consumer",
    "invalid",
    "rate_limited",
    "too_large",
    "unauthenticated_data",
    "max_subscriptions",
    "max_connections",
    "max_connections_per_user",
    "max_connections_per_ip",
    "http_header_timeout",
    "http_idle_timeout",
];

/// Why a credential was refused ([`auth_failure`]).
pub const AUTH_FAILURES: &[&str] = &["expired", "invalid", "timeout", "missing", "not_admin"];

/// Why a connection or request was turned away ([`refused`]).
pub const REFUSALS: &[&str] = &[
    "origin",
    "encoding",
    "resume",
    "bad_token",
    "max_connections_per_ip",
    "max_connections",
    "max_connections_per_user",
    "api_credentials",
    "auth_failed",
    "auth_timeout",
    "unauthenticated_data",
];

/// The engines whose calls can fail ([`engine_error`]).
pub const ENGINES: &[&str] = &[
    "membership",
    "broker",
    "presence",
    "history",
    "streams",
    "inbox",
    "sqlite",
    "replication",
];

/// The publication scopes (`Scope::name`).
pub const SCOPES: &[&str] = &["all", "user", "role", "project", "topic"];

/// Without the `prometheus` feature Herald installs no recorder: its metrics go to the app's
/// own `metrics` recorder, if it installed one.
#[cfg(not(feature = "prometheus"))]
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(start_series);
}

/// Describes every series, registers each at zero and keeps the byte counters' handles: what
/// `install` does once the recorder (Herald's or the app's) is in place.
fn start_series() {
    describe();
    register_at_zero();
    let _ = BYTES.set(Bytes {
        received: counter!("herald_received_bytes_total"),
        sent: counter!("herald_sent_bytes_total"),
    });
}

/// Installs the Prometheus recorder once per process (later calls do nothing), describes
/// every series and registers each at zero.
#[cfg(feature = "prometheus")]
pub fn install() {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("herald_".into()), BUCKETS)
            .ok()?
            .install_recorder()
            .ok()?;
        start_series();
        // Histogram samples wait in the recorder until a scrape or an upkeep folds them in:
        // without a scraper, a busy node's delivery samples would pile up.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("herald-metrics".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        Some(handle)
    });
}

/// The HELP line of every `herald_*` series.
fn describe() {
    describe_gauge!(
        "herald_build_info",
        "Always 1; the labels say which Herald this is."
    );
    describe_gauge!(
        "herald_connections",
        "Authenticated WebSocket connections now."
    );
    describe_counter!(
        "herald_connections_opened_total",
        "WebSocket connections that authenticated."
    );
    describe_counter!(
        "herald_connections_closed_total",
        "Authenticated connections that ended, by reason."
    );
    describe_counter!(
        "herald_client_messages_total",
        "Frames received from clients, by command."
    );
    describe_counter!(
        "herald_publications_total",
        "Publications fanned out on this node, by scope."
    );
    describe_counter!(
        "herald_hook_requests_total",
        "Calls to the backend's hooks, by hook and outcome (ok, refused, failed)."
    );
    describe_histogram!(
        "herald_hook_seconds",
        metrics::Unit::Seconds,
        "How long the backend's hooks took to answer, by hook."
    );
    describe_gauge!(
        "herald_webhook_pending",
        "Webhook events not yet acknowledged by the backend."
    );
    describe_counter!(
        "herald_webhook_dropped_total",
        "Webhook events given up, by reason (full: over max_pending; expired: past retry_for)."
    );
    describe_counter!(
        "herald_deliveries_total",
        "Frames queued to recipients by publications."
    );
    describe_counter!(
        "herald_drops_total",
        "Frames, commands or connections refused or cut off, by reason."
    );
    describe_counter!(
        "herald_auth_failures_total",
        "Refused credentials (tokens, API keys), by reason."
    );
    describe_histogram!(
        "herald_fanout_seconds",
        metrics::Unit::Seconds,
        "Time to queue one publication to all its recipients on this node."
    );
    describe_histogram!(
        "herald_publish_api_seconds",
        metrics::Unit::Seconds,
        "POST /api/v1/publish, from the parsed body to the answer."
    );
    describe_counter!(
        "herald_engine_errors_total",
        "Failed engine calls, by engine."
    );
    describe_counter!(
        "herald_refusals_total",
        "Connections and requests turned away, by reason."
    );
    describe_counter!(
        "herald_received_bytes_total",
        metrics::Unit::Bytes,
        "Bytes read from clients' sockets (HTTP and WebSocket)."
    );
    describe_counter!(
        "herald_sent_bytes_total",
        metrics::Unit::Bytes,
        "Bytes written to clients' sockets (HTTP and WebSocket)."
    );
    describe_histogram!(
        "herald_engine_seconds",
        metrics::Unit::Seconds,
        "Engine calls, by store (sqlite, redis, memory) and operation; a durable write includes its commit."
    );
}

/// Every series Herald records, at zero, so each is there from the first scrape.
fn register_at_zero() {
    gauge!(
        "herald_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => crate::COMMIT
    )
    .set(1.0);
    gauge!("herald_connections", "role" => "user").increment(0.0);
    counter!("herald_connections_opened_total").increment(0);
    counter!("herald_deliveries_total").increment(0);
    for &reason in CLOSE_REASONS {
        counter!("herald_connections_closed_total", "reason" => reason).increment(0);
    }
    for &kind in CLIENT_MESSAGE_TYPES {
        counter!("herald_client_messages_total", "type" => kind).increment(0);
    }
    for &scope in SCOPES {
        counter!("herald_publications_total", "scope" => scope).increment(0);
    }
    for &reason in DROP_REASONS {
        counter!("herald_drops_total", "reason" => reason).increment(0);
    }
    for &reason in AUTH_FAILURES {
        counter!("herald_auth_failures_total", "reason" => reason).increment(0);
    }
    for &reason in REFUSALS {
        counter!("herald_refusals_total", "reason" => reason).increment(0);
    }
    for &engine in ENGINES {
        counter!("herald_engine_errors_total", "engine" => engine).increment(0);
    }
    for hook in ["connect", "subscribe", "publish", "rpc", "webhook"] {
        for outcome in ["ok", "refused", "failed"] {
            counter!("herald_hook_requests_total", "hook" => hook, "outcome" => outcome)
                .increment(0);
        }
        let _ = histogram!("herald_hook_seconds", "hook" => hook);
    }
    gauge!("herald_webhook_pending").set(0.0);
    for reason in ["full", "expired"] {
        counter!("herald_webhook_dropped_total", "reason" => reason).increment(0);
    }
    counter!("herald_received_bytes_total").increment(0);
    counter!("herald_sent_bytes_total").increment(0);
    // A histogram with no sample yet renders with zero counts.
    let _ = histogram!("herald_fanout_seconds");
    let _ = histogram!("herald_publish_api_seconds");
}

/// The Prometheus text exposition of every metric, the process's own included.
#[cfg(feature = "prometheus")]
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(handle)) => {
            let mut text = handle.render();
            text.push_str(&delivery::render());
            text.push_str(&process::render());
            text
        }
        _ => "# herald: another metrics recorder was installed before Herald's\n".into(),
    }
}

/// An authenticated connection was registered.
pub fn connection_opened(role: &str) {
    counter!("herald_connections_opened_total").increment(1);
    gauge!("herald_connections", "role" => role.to_string()).increment(1.0);
}

/// A registered connection ended, for `reason` (see `connection::Ending`).
pub fn connection_closed(role: &str, reason: &'static str) {
    counter!("herald_connections_closed_total", "reason" => reason).increment(1);
    gauge!("herald_connections", "role" => role.to_string()).decrement(1.0);
}

/// A client frame, by command type (`invalid` when it did not parse).
pub fn client_message(kind: &'static str) {
    counter!("herald_client_messages_total", "type" => kind).increment(1);
}

/// A publication was fanned out on this node.
pub fn publication(scope: &'static str, recipients: usize, fanout: Duration) {
    counter!("herald_publications_total", "scope" => scope).increment(1);
    counter!("herald_deliveries_total").increment(recipients as u64);
    histogram!("herald_fanout_seconds").record(fanout.as_secs_f64());
}

/// Something was not delivered or not accepted: `slow_consumer`, `rate_limited`, `too_large`,
/// `invalid`.
pub fn dropped(reason: &'static str) {
    counter!("herald_drops_total", "reason" => reason).increment(1);
}

/// A credential was refused: `expired`, `invalid`, `timeout`, `missing`, `not_admin`.
pub fn auth_failure(reason: &'static str) {
    counter!("herald_auth_failures_total", "reason" => reason).increment(1);
}

/// One call to a backend hook: its outcome (`ok`, `refused`, `failed`) and how long it took.
#[cfg(feature = "hooks")]
pub fn hook_call(hook: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!("herald_hook_requests_total", "hook" => hook, "outcome" => outcome).increment(1);
    histogram!("herald_hook_seconds", "hook" => hook).record(elapsed.as_secs_f64());
}

/// Webhook events waiting for the backend's acknowledgement.
pub fn webhook_pending(count: usize) {
    gauge!("herald_webhook_pending").set(count as f64);
}

/// Webhook events given up: `full` (over `max_pending`) or `expired` (past `retry_for`).
pub fn webhook_dropped(reason: &'static str, count: usize) {
    counter!("herald_webhook_dropped_total", "reason" => reason).increment(count as u64);
}

/// How long a publish API request took, from parse to answer.
pub fn publish_api(elapsed: Duration) {
    histogram!("herald_publish_api_seconds").record(elapsed.as_secs_f64());
}

/// A peer's address as logs show it: `-` when unknown, the IP alone when the port is not
/// known (a client named by a proxy's header).
pub struct Peer(pub Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) if addr.port() == 0 => addr.ip().fmt(f),
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A connection or request was turned away: counted, and logged (`refused`, with the peer
/// and what was wrong) at most once a second per reason, so a flood cannot flood the logs;
/// the next line says how many were not logged.
pub fn refused(reason: &'static str, remote_addr: impl std::fmt::Display, detail: &str) {
    counter!("herald_refusals_total", "reason" => reason).increment(1);
    static LAST: std::sync::Mutex<Vec<(&'static str, std::time::Instant, u64)>> =
        std::sync::Mutex::new(Vec::new());
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let unlogged = match last.iter_mut().find(|(r, ..)| *r == reason) {
        Some((_, at, skipped)) if now.duration_since(*at) < Duration::from_secs(1) => {
            *skipped += 1;
            return;
        }
        Some((_, at, skipped)) => {
            *at = now;
            std::mem::take(skipped)
        }
        None => {
            last.push((reason, now, 0));
            0
        }
    };
    drop(last);
    tracing::info!(%remote_addr, reason, detail, unlogged, "refused");
}

/// A connection's queue was emptied into its socket `waited` after the acceptance of the
/// oldest publication in it.
pub fn delivered_after(waited: Duration) {
    delivery::record(waited);
}

/// `n` bytes read from a client's socket.
pub fn received(n: usize) {
    if let Some(bytes) = BYTES.get() {
        bytes.received.increment(n as u64);
    }
}

/// `n` bytes written to a client's socket.
pub fn sent(n: usize) {
    if let Some(bytes) = BYTES.get() {
        bytes.sent.increment(n as u64);
    }
}

/// The operations [`engine_call`] times.
pub const ENGINE_OPS: &[&str] = &[
    "history_append",
    "history_read",
    "inbox_store",
    "inbox_read",
    "inbox_ack",
    "publish",
    "replica_wait",
];

/// Registers the engine-call histograms of `store` (the node's), so they are there from the
/// first scrape.
pub fn register_store(store: &'static str) {
    for &op in ENGINE_OPS {
        let _ = histogram!("herald_engine_seconds", "store" => store, "op" => op);
    }
}

/// How long one engine call took, on `store`, for `op` (one of [`ENGINE_OPS`]).
pub fn engine_call(store: &'static str, op: &'static str, took: Duration) {
    histogram!("herald_engine_seconds", "store" => store, "op" => op).record(took.as_secs_f64());
}

/// An engine call failed.
pub fn engine_error(engine: &'static str) {
    counter!("herald_engine_errors_total", "engine" => engine).increment(1);
}
