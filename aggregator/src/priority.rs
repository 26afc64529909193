//! Reads before ingest. The HTTP API runs on a runtime of its own at the process's priority;
//! everything else (replication, the index writer, tantivy's indexing and merge threads, the
//! store's threads, the DHT bridge) runs [`Config::ingest_nice`](crate::config::Config)
//! lower.
//!
//! Why: while a large feed is ingested, both cores are busy, and a request waited behind
//! replication tasks in the same run queues and behind indexing for the CPUs. Measured at 1M
//! entries (`LOAD_DURING_INGEST` in ops/bench/run-aggregator.sh), one search at a time took
//! p50 5.8 ms, p99 115 ms during an ingest, against 0.14 / 0.51 ms without. Lower-priority
//! threads still get every CPU that reads leave (an idle server ingests at full speed);
//! under reads that fill every core they get about a tenth of it (nice 10), so the ingest
//! slows down rather than the reads.
//!
//! On Linux a thread's nice value is its own (`setpriority` on the calling thread) and a new
//! thread starts with its creator's. So the ingest runtime's threads lower themselves as they
//! start, and the main thread lowers itself once the HTTP runtime's threads exist: what it
//! starts afterwards (the store, the index writer) inherits the lower priority. Elsewhere
//! `setpriority` would lower the whole process, so this does nothing there.

/// The nice value of ingest's threads: the calling thread's (at start, the process's) plus
/// `nice`, at most 19.
pub fn ingest_priority(nice: u8) -> i32 {
    #[cfg(target_os = "linux")]
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    #[cfg(not(target_os = "linux"))]
    let now = 0;
    now.saturating_add(i32::from(nice)).min(19)
}

/// Sets the calling thread's nice value to `priority` (from [`ingest_priority`]; the same
/// value for every thread, also one started by a thread already lowered).
pub fn set_this_thread(priority: i32) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        if getpriority_process(None).ok() == Some(priority) {
            return;
        }
        if let Err(e) = setpriority_process(None, priority) {
            tracing::warn!("cannot lower the priority of an ingest thread: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustix::process::getpriority_process;

    #[test]
    fn a_thread_lowers_only_itself_and_what_it_starts() {
        let before = getpriority_process(None).unwrap();
        let low = super::ingest_priority(3);
        assert_eq!(low, (before + 3).min(19));
        let (mine, child, again) = std::thread::spawn(move || {
            super::set_this_thread(low);
            let mine = getpriority_process(None).unwrap();
            // A lowered thread's child starts lowered; setting it again does not add up.
            let (child, again) = std::thread::spawn(move || {
                let child = getpriority_process(None).unwrap();
                super::set_this_thread(low);
                (child, getpriority_process(None).unwrap())
            })
            .join()
            .unwrap();
            (mine, child, again)
        })
        .join()
        .unwrap();
        assert_eq!(mine, low);
        assert_eq!(
            child, low,
            "a new thread starts with its creator's priority"
        );
        assert_eq!(again, low);
        assert_eq!(
            getpriority_process(None).unwrap(),
            before,
            "others keep theirs"
        );
    }
}
