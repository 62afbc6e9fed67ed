//! `herald_delivery_seconds`, kept here rather than in the recorder: it is recorded once per
//! emptied connection queue (tens of thousands of times a second under fan-out), and a
//! recorder histogram keeps each sample until the next scrape or upkeep. Fixed buckets of
//! atomics cost one add per sample and no memory.

#[cfg(feature = "prometheus")]
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::BUCKETS;

/// Samples per bucket (not cumulative; the last counts those above every bound).
static COUNTS: [AtomicU64; BUCKETS.len() + 1] = [const { AtomicU64::new(0) }; BUCKETS.len() + 1];
/// The sum of every sample, in nanoseconds.
static SUM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Records one sample.
pub fn record(waited: Duration) {
    let seconds = waited.as_secs_f64();
    let bucket = BUCKETS.partition_point(|bound| *bound < seconds);
    if let Some(count) = COUNTS.get(bucket) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
    SUM_NANOS.fetch_add(nanos, Ordering::Relaxed);
}

/// The histogram in Prometheus text, with its HELP.
#[cfg(feature = "prometheus")]
pub fn render() -> String {
    let name = "herald_delivery_seconds";
    let mut text = format!(
        "# HELP {name} From the acceptance of a publication (its commit included) until the queue it joined on an idle connection was all handed to the kernel; once per emptied queue.\n# TYPE {name} histogram\n"
    );
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(&COUNTS) {
        cumulative += count.load(Ordering::Relaxed);
        let _ = writeln!(text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    if let Some(above) = COUNTS.last() {
        cumulative += above.load(Ordering::Relaxed);
    }
    let sum = SUM_NANOS.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(text, "{name}_sum {sum}");
    let _ = writeln!(text, "{name}_count {cumulative}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_cumulative_buckets() {
        record(Duration::from_micros(30));
        record(Duration::from_secs(10));
        let text = render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        assert!(
            line("herald_delivery_seconds_bucket{le=\"0.00005\"}") >= 1,
            "{text}"
        );
        assert!(line("herald_delivery_seconds_count") >= 2, "{text}");
        assert!(
            line("herald_delivery_seconds_bucket{le=\"+Inf\"}")
                > line("herald_delivery_seconds_bucket{le=\"2.5\"}"),
            "{text}"
        );
    }
}
