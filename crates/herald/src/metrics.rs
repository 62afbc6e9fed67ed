//! Prometheus metrics, all named `herald_*`, recorded through the `metrics` facade.
//!
//! The Prometheus recorder is process-wide: the first node built installs it, and `/metrics`
//! renders it. An app that installed its own recorder first keeps it; `/metrics` then says so.
//! Hot-path metrics (deliveries, fan-out time) are one atomic add or one histogram record per
//! publication, never per recipient.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, in seconds, from 10 µs to 2.5 s.
const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Installs the Prometheus recorder once per process (later calls do nothing).
pub fn install() {
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("herald_".into()), BUCKETS)
            .ok()?
            .install_recorder()
            .ok()
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(handle)) => handle.render(),
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

/// How long a publish API request took, from parse to answer.
pub fn publish_api(elapsed: Duration) {
    histogram!("herald_publish_api_seconds").record(elapsed.as_secs_f64());
}

/// An engine call failed.
pub fn engine_error(engine: &'static str) {
    counter!("herald_engine_errors_total", "engine" => engine).increment(1);
}
