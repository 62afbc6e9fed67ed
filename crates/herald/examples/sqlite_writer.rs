//! The SQLite writer on its own, without HTTP: `CONNS` (32) callers each append to one topic
//! with history (1,000 kept) and wait for the commit before the next, for `SECS` (5) seconds,
//! on a one-thread runtime. Prints appends/s and the process's CPU per append (docs/BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release -p herald --example sqlite_writer
//! taskset -c 0 target/release/examples/sqlite_writer
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::engine::sqlite::{open, GroupCommit, SqliteHistory};
use herald::engine::{History, Retention};
use herald::{Publication, Scope};

/// The process's CPU seconds so far (user + system, from /proc; 0 where there is none).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let db = Arc::new(Mutex::new(open(&dir.path().join("herald.db"))?));
        let writer = Arc::new(GroupCommit::start(db.clone())?);
        let history = Arc::new(SqliteHistory::new(db, writer));
        let keep = Retention {
            size: 1000,
            ttl: Duration::from_secs(3600),
        };
        let stop = Instant::now() + Duration::from_secs_f64(setting("SECS", 5.0));
        let (cpu, start) = (cpu_seconds(), Instant::now());
        let mut callers = Vec::new();
        for _ in 0..setting("CONNS", 32.0) as usize {
            let history = history.clone();
            callers.push(tokio::spawn(async move {
                let mut appended = 0u64;
                while Instant::now() < stop {
                    let data = serde_json::json!({ "payload": "x".repeat(80) });
                    let p = Publication::new(Scope::Topic("durable:bench".into()), "e", data);
                    history.append("durable:bench", &p, keep).await?;
                    appended += 1;
                }
                Ok::<_, herald::engine::EngineError>(appended)
            }));
        }
        let mut appended = 0;
        for caller in callers {
            appended += caller.await??;
        }
        let (cpu, secs) = (cpu_seconds() - cpu, start.elapsed().as_secs_f64());
        println!(
            "{{\"appends_per_sec\": {:.0}, \"cpu_us_per_append\": {:.2}, \"cpu_share\": {:.2}}}",
            appended as f64 / secs,
            cpu / appended as f64 * 1e6,
            cpu / secs
        );
        Ok(())
    })
}
