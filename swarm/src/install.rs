//! Installing the bridge: its `bridge.js`, `package.json` and `package-lock.json` are built
//! into the binary; on the first start they are written to a directory keyed by their hash
//! and `npm ci` installs the pinned hyperswarm there, once. A later start with the same files
//! finds the directory ready and starts at once.
//!
//! Two processes may install at the same time (tests do): each installs into its own
//! temporary directory and renames it into place; the loser of the race uses the winner's.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};

const BRIDGE_JS: &str = include_str!("../js/bridge.js");
const PACKAGE_JSON: &str = include_str!("../js/package.json");
const PACKAGE_LOCK: &str = include_str!("../js/package-lock.json");
/// Marks a directory whose `npm ci` finished.
const READY: &str = ".apiary-installed";
/// The oldest Node.js the pinned packages run on.
const MIN_NODE_MAJOR: u32 = 20;

/// The hyperswarm version the lockfile pins, for messages.
pub fn hyperswarm_version() -> String {
    serde_json::from_str::<serde_json::Value>(PACKAGE_JSON)
        .ok()
        .and_then(|v| v["dependencies"]["hyperswarm"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "4.x".into())
}

/// The directory name for these bridge files: `bridge-` and 16 hex digits of their hash.
fn dir_name() -> String {
    let h = apiary_core::crypto::hash(&[
        BRIDGE_JS.as_bytes(),
        PACKAGE_JSON.as_bytes(),
        PACKAGE_LOCK.as_bytes(),
    ]);
    format!("bridge-{}", hex::encode(h.get(..8).unwrap_or_default()))
}

/// Where bridges are cached by default: `$XDG_CACHE_HOME/apiary`, else `~/.cache/apiary`,
/// else `fallback` (e.g. the data directory).
pub fn default_cache_dir(fallback: &Path) -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("apiary");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache").join("apiary");
    }
    fallback.to_path_buf()
}

/// Checks Node.js (≥ 20) and npm, and returns the Node.js version.
pub async fn check_node(node: &str, npm: &str) -> Result<String> {
    let v = version_of(node).await.map_err(|e| {
        Error::unavailable(format!(
            "Node.js is needed for the DHT and `{node} --version` failed: {e}"
        ))
    })?;
    let major = v
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < MIN_NODE_MAJOR {
        return Err(Error::unavailable(format!(
            "the DHT needs Node.js {MIN_NODE_MAJOR} or newer; `{node}` is {v}"
        )));
    }
    version_of(npm).await.map_err(|e| {
        Error::unavailable(format!(
            "npm is needed to install the DHT bridge and `{npm} --version` failed: {e}"
        ))
    })?;
    Ok(v)
}

async fn version_of(cmd: &str) -> std::result::Result<String, String> {
    let out = tokio::process::Command::new(cmd)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.trim().chars().take(300).collect();
        return Err(if err.is_empty() {
            out.status.to_string()
        } else {
            format!("{}: {err}", out.status)
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Makes sure the bridge is installed under `cache`; returns the path of its `bridge.js`.
/// Progress goes to stderr (this runs once per bridge version, and takes seconds).
pub async fn ensure_installed(cache: &Path, npm: &str) -> Result<PathBuf> {
    let dir = cache.join(dir_name());
    let script = dir.join("bridge.js");
    if dir.join(READY).exists() {
        // Marks it used, for the pruning of versions nobody uses any more.
        let _ = std::fs::write(dir.join(READY), b"");
        prune(cache, &dir);
        return Ok(script);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let tmp = cache.join(format!("{}.tmp-{}", dir_name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    for (name, text) in [
        ("bridge.js", BRIDGE_JS),
        ("package.json", PACKAGE_JSON),
        ("package-lock.json", PACKAGE_LOCK),
    ] {
        let p = tmp.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    eprintln!(
        "installing the DHT bridge (hyperswarm {}) into {} with npm ci ...",
        hyperswarm_version(),
        dir.display()
    );
    let started = std::time::Instant::now();
    let res = npm_ci(&tmp, npm).await;
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let ready = tmp.join(READY);
    std::fs::write(&ready, b"").map_err(|e| Error::io(&ready, e))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Someone else finished first: theirs is as good as ours.
        Err(_) if dir.join(READY).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(&dir, e));
        }
    }
    eprintln!(
        "DHT bridge installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    prune(cache, &dir);
    Ok(script)
}

/// Removes other bridge versions unused for 30 days, and temporary directories of installs
/// interrupted over an hour ago. (A version in use by another binary is marked at each of its
/// starts, so it is kept.)
fn prune(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let age = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path == keep || !name.starts_with("bridge-") {
            continue;
        }
        let old = if name.contains(".tmp-") {
            age(&path).is_some_and(|a| a.as_secs() > 3600)
        } else {
            age(&path.join(READY)).is_some_and(|a| a.as_secs() > 30 * 24 * 3600)
        };
        if old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

async fn npm_ci(dir: &Path, npm: &str) -> Result<()> {
    let mut child = tokio::process::Command::new(npm)
        .args([
            "ci",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--loglevel=warn",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::unavailable(format!("cannot run `{npm} ci`: {e}")))?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    // npm's own lines are the progress: pass them on, and keep the last ones for the error.
    let (a, b) = tokio::join!(pump(out), pump(err));
    let tail: Vec<String> = a.into_iter().chain(b).collect();
    let status = child
        .wait()
        .await
        .map_err(|e| Error::unavailable(format!("`{npm} ci` failed: {e}")))?;
    if !status.success() {
        return Err(Error::unavailable(format!(
            "`{npm} ci` for the DHT bridge failed ({status}): {}",
            tail.join(" | ")
        )));
    }
    Ok(())
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<String> {
    let mut kept = Vec::new();
    if let Some(r) = r {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  npm: {line}");
            kept.push(line);
            if kept.len() > 20 {
                kept.remove(0);
            }
        }
    }
    kept
}
