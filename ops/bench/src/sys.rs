//! Process figures and the shared monotonic clock.

use crate::BoxError;

/// Clock ticks per second of /proc times (USER_HZ; 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// (user, system) CPU seconds of this process, from /proc/self/stat.
pub fn cpu_seconds() -> Result<(f64, f64), BoxError> {
    cpu_seconds_of("/proc/self")
}

/// (user, system) CPU seconds of the process whose /proc directory is `proc_dir`.
fn cpu_seconds_of(proc_dir: &str) -> Result<(f64, f64), BoxError> {
    let stat = std::fs::read_to_string(format!("{proc_dir}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<f64, BoxError> {
        let v: u64 = fields.get(n - 3).ok_or("short /proc/self/stat")?.parse()?;
        Ok(v as f64 / CLOCK_TICKS)
    };
    Ok((field(14)?, field(15)?))
}

/// Peak resident set (VmHWM) in MB (MiB, like the JS maxRSS / 1024).
pub fn max_rss_mb() -> Result<f64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmHWM in /proc/self/status")?
        .parse()?;
    Ok(round(kb / 1024.0, 1))
}

/// Figures of another process (by pid), from /proc: CPU, memory, open fds and threads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStats {
    /// User CPU seconds since the process started.
    pub cpu_user: f64,
    /// System CPU seconds since the process started.
    pub cpu_system: f64,
    /// Resident set now (VmRSS), MiB.
    pub vm_rss_mb: f64,
    /// Peak resident set (VmHWM), MiB.
    pub vm_hwm_mb: f64,
    /// Anonymous part of the resident set now (RssAnon: heap, stacks), MiB.
    pub rss_anon_mb: f64,
    /// File-backed part of the resident set now (RssFile: mapped files, e.g. index segments), MiB.
    pub rss_file_mb: f64,
    /// Open file descriptors (entries of /proc/PID/fd).
    pub fds: usize,
    /// Threads.
    pub threads: u64,
}

impl ProcStats {
    /// Reads the figures of process `pid`.
    pub fn read(pid: u32) -> Result<Self, BoxError> {
        let dir = format!("/proc/{pid}");
        let (cpu_user, cpu_system) = cpu_seconds_of(&dir)?;
        let status = std::fs::read_to_string(format!("{dir}/status"))?;
        let field = |name: &str| -> Option<f64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        let fds = std::fs::read_dir(format!("{dir}/fd"))?.count();
        Ok(ProcStats {
            cpu_user,
            cpu_system,
            vm_rss_mb: round(field("VmRSS:").unwrap_or(0.0) / 1024.0, 1),
            vm_hwm_mb: round(field("VmHWM:").unwrap_or(0.0) / 1024.0, 1),
            rss_anon_mb: round(field("RssAnon:").unwrap_or(0.0) / 1024.0, 1),
            rss_file_mb: round(field("RssFile:").unwrap_or(0.0) / 1024.0, 1),
            fds,
            threads: field("Threads:").unwrap_or(0.0) as u64,
        })
    }

    /// User + system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.cpu_user + self.cpu_system
    }
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// CLOCK_MONOTONIC in nanoseconds: the clock node's `process.hrtime.bigint()` reads (libuv
/// `uv_hrtime`), shared by every process of the machine, so a timestamp taken by a writer
/// process can be compared with one taken by a reader process. `std::time::Instant` reads the
/// same clock but does not expose its value.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // Both fields are non-negative for CLOCK_MONOTONIC.
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// The `p`-th percentile of sorted values, as the reference `pct` picks it:
/// `sorted[min(len - 1, floor(p / 100 * len))]`.
pub fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * sorted.len() as f64).floor() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

/// `{"user", "system", "maxRssMB"}` of this process.
pub fn cpu_json() -> Result<serde_json::Value, BoxError> {
    let (user, system) = cpu_seconds()?;
    Ok(
        serde_json::json!({ "user": round(user, 3), "system": round(system, 3), "maxRssMB": max_rss_mb()? }),
    )
}
