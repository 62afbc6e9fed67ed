//! The process's own figures, named as Prometheus' client libraries name them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), so dashboards built
//! for those work unchanged. Read from `/proc` at each scrape (Linux; elsewhere nothing): a
//! few small file reads, where a crate for it would bring a large build tree.

/// The `process_*` series in Prometheus text, or nothing when `/proc` cannot be read.
pub fn render() -> String {
    #[cfg(target_os = "linux")]
    if let Some(figures) = linux::read() {
        return figures.text();
    }
    String::new()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fmt::Write;

    /// `/proc` reports CPU times in USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub struct Figures {
        cpu_seconds: f64,
        resident_bytes: u64,
        virtual_bytes: u64,
        open_fds: u64,
        max_fds: Option<u64>,
        start_time_seconds: Option<f64>,
        threads: u64,
    }

    pub fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The name in parentheses may hold spaces: fields are counted after its `)`.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // fields[0] is field 3 of proc(5): field N is fields[N - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let ticks = field(14)? + field(15)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find_map(|line| line.strip_prefix("Max open files"))
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            });
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|t| t.trim().parse::<u64>().ok())
        });
        let start_time_seconds = boot
            .zip(field(22))
            .map(|(boot, started)| boot as f64 + started as f64 / TICKS_PER_SECOND);
        Some(Figures {
            cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
            resident_bytes: resident_kb * 1024,
            virtual_bytes: field(23)?,
            open_fds,
            max_fds,
            start_time_seconds,
            threads: field(20)?,
        })
    }

    impl Figures {
        pub fn text(&self) -> String {
            let mut text = String::new();
            let mut series = |name: &str, kind: &str, help: &str, value: String| {
                let _ = write!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            };
            series(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                self.cpu_seconds.to_string(),
            );
            series(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size, in bytes.",
                self.resident_bytes.to_string(),
            );
            series(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size, in bytes.",
                self.virtual_bytes.to_string(),
            );
            series(
                "process_open_fds",
                "gauge",
                "Open file descriptors (every connection is one).",
                self.open_fds.to_string(),
            );
            if let Some(max) = self.max_fds {
                series(
                    "process_max_fds",
                    "gauge",
                    "The open file descriptor limit (soft).",
                    max.to_string(),
                );
            }
            if let Some(start) = self.start_time_seconds {
                series(
                    "process_start_time_seconds",
                    "gauge",
                    "When the process started, in seconds since the Unix epoch.",
                    start.to_string(),
                );
            }
            series(
                "process_threads",
                "gauge",
                "OS threads in the process.",
                self.threads.to_string(),
            );
            text
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_figures_of_this_process_are_read() {
            let figures = super::read().expect("/proc is readable");
            assert!(figures.resident_bytes > 0);
            assert!(figures.open_fds > 0);
            assert!(figures.threads >= 1);
            let text = figures.text();
            assert!(
                text.contains("# TYPE process_cpu_seconds_total counter\n"),
                "{text}"
            );
        }
    }
}
