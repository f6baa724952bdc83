//! A server process's memory and CPU time, from /proc (Linux): what the load generators
//! report beside their own measurements.

/// One reading of a process's memory and CPU time.
pub(crate) struct ServerStats {
    /// Resident memory now, KiB.
    pub(crate) rss_kib: u64,
    /// The most resident memory so far, KiB.
    pub(crate) peak_rss_kib: u64,
    /// User and system CPU time, in ticks (100 a second).
    pub(crate) cpu_ticks: u64,
}

impl ServerStats {
    /// Reads /proc (Linux): resident and peak memory, user + system CPU time (100 ticks/s).
    pub(crate) fn read(pid: u32) -> ServerStats {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ServerStats {
            rss_kib: field("VmRSS:"),
            peak_rss_kib: field("VmHWM:"),
            cpu_ticks: cpu_ticks(&format!("/proc/{pid}/stat")),
        }
    }
}

/// User and system CPU time, in ticks (100 a second), from a `/proc/.../stat` file (a
/// process's, or `/proc/thread-self/stat` for the calling thread's); 0 if it cannot be read.
pub(crate) fn cpu_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}
