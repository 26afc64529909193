//! Shared code of the benchmark binaries: the deterministic dataset, process figures, and
//! the common `main` of the async binaries.

pub mod data;
pub mod fanout;
pub mod sys;

use std::future::Future;

/// The error type of the benchmark binaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `Replicator` over a fresh sled store in a temp dir named after `name`. Keep the dir
/// alive as long as the replicator.
pub fn temp_replicator(
    name: &str,
    opts: apiary_core::replicate::ReplicatorOptions,
) -> Result<(tempfile::TempDir, apiary_core::replicate::Replicator), BoxError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("apiary-bench-{name}-"))
        .tempdir()?;
    let store = apiary_core::store::Store::open(dir.path())?;
    Ok((dir, apiary_core::replicate::Replicator::new(store, opts)))
}

/// Runs `run` on a multi-thread runtime (`threads` workers, or one per core), prints its JSON
/// line (nothing for `Null`), and exits: 0, or 1 with `name: error` on stderr. Exiting at once
/// means no wait for spawned connection tasks.
pub fn run_main<F>(name: &str, threads: Option<usize>, run: impl FnOnce() -> F) -> !
where
    F: Future<Output = Result<serde_json::Value, BoxError>>,
{
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    match rt
        .build()
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run()))
    {
        Ok(serde_json::Value::Null) => {}
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(0);
}
