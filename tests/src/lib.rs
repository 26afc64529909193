//! Shared helpers of the cross-process tests: installing and driving the JS peers of
//! `tests/js` (real hypercore/hyperbee/corestore from npm), and small utilities.
//!
//! The JS peer (`tests/js/peer.js`) speaks one JSON object per line on stdin/stdout; see its
//! header for the commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod agg;
pub mod bee_compare;
pub mod dht;
pub mod evil;
pub mod huge;
pub mod nats;
pub mod netns;
pub mod publisher;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tests/js`.
pub fn js_dir() -> PathBuf {
    workspace_root().join("tests").join("js")
}

static INSTALL: Mutex<bool> = Mutex::new(false);

/// Installs the JS peers (`npm ci` in tests/js) when they are missing. Safe to call from
/// every test.
pub fn ensure_js() {
    let mut done = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    let dir = js_dir();
    let marker = dir.join("node_modules").join(".package-lock.json");
    let complete = ["hyperbee", "hyperswarm", "hyperdht"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).exists());
    if !marker.exists() || !complete {
        eprintln!("installing JS test peers: npm ci in {}", dir.display());
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed (Node 20) to run the interop tests");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    *done = true;
}

/// A running `node tests/js/peer.js`.
pub struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Unsolicited `live` events received so far.
    pub events: Vec<Value>,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl JsPeer {
    /// Starts a peer with a fresh Corestore.
    pub async fn start() -> JsPeer {
        ensure_js();
        let mut child = Command::new("node")
            .arg(js_dir().join("peer.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let dir = tempfile::tempdir().unwrap();
        let mut p = JsPeer {
            child,
            stdin,
            lines,
            next_id: 1,
            events: Vec::new(),
            dir,
        };
        let d = p.dir.path().to_string_lossy().to_string();
        p.call(json!({"cmd": "init", "dir": d})).await;
        p
    }

    /// Sends a command and returns its reply; panics on an error reply.
    pub async fn call(&mut self, cmd: Value) -> Value {
        let r = self.try_call(cmd.clone()).await;
        match r {
            Ok(v) => v,
            Err(e) => panic!("JS peer failed {cmd}: {e}"),
        }
    }

    /// Sends a command; `Err` carries the peer's error message.
    pub async fn try_call(&mut self, mut cmd: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let line = format!("{cmd}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
                .await
                .map_err(|_| format!("JS peer did not answer {cmd}"))?
                .map_err(|e| e.to_string())?;
            let Some(line) = next else {
                return Err("JS peer exited".into());
            };
            let v: Value =
                serde_json::from_str(&line).map_err(|e| format!("bad line {line}: {e}"))?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if v["id"] != json!(id) {
                continue;
            }
            if v["ok"] == json!(true) {
                return Ok(v);
            }
            return Err(v["error"].as_str().unwrap_or("unknown error").to_owned());
        }
    }

    /// Starts the peer's replication server; returns its port.
    pub async fn serve(&mut self) -> u16 {
        let port = self.call(json!({"cmd": "serve"})).await["port"]
            .as_u64()
            .expect("port");
        u16::try_from(port).expect("port fits u16")
    }

    /// Waits until `pred` holds for some received event.
    pub async fn wait_event(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .ok()?
                .ok()??;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("event").is_some() {
                    self.events.push(v);
                }
            }
        }
    }

    /// Closes the peer and waits for it to exit.
    pub async fn close(mut self) {
        let _ = self.try_call(json!({"cmd": "close"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Hex of a core key from a JS reply field.
pub fn key_of(v: &Value) -> apiary_core::Key {
    apiary_core::Key::parse(v["key"].as_str().expect("key field")).expect("valid key")
}

/// An entry of ours in the JS peer's JSON form `{seq, key, value}`.
pub fn entry_json(e: &apiary_core::bee::Entry) -> Value {
    json!({
        "seq": e.seq,
        "key": String::from_utf8_lossy(&e.key),
        "value": e.value.as_ref().map(|v| serde_json::from_slice::<Value>(v).expect("JSON value")).unwrap_or(Value::Null),
    })
}

/// Starts tracing output for a test (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Path of a workspace binary, built (once per test process) if needed.
pub fn bin_path(package: &str, bin: &str) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", bin])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {bin} failed");
        built.push(bin.to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug").join(bin)
}

/// Runs a binary to completion: (exit code, stdout, stderr).
pub fn run_bin(path: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the headless-browser tests are on (`.ci/run` sets `APIARY_BROWSER_TESTS=1` after
/// installing Debian's chromium).
pub fn browser_tests_enabled() -> bool {
    std::env::var("APIARY_BROWSER_TESTS").is_ok_and(|v| v == "1")
}

/// Runs `tests/js/browser.js` with `args`; returns its JSON line.
pub fn run_browser(args: &[&str]) -> Value {
    ensure_js();
    let out = std::process::Command::new("node")
        .arg(js_dir().join("browser.js"))
        .args(args)
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    eprintln!("browser: {line}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&line).unwrap_or(json!({"ok": false, "error": line}))
}

/// A free TCP port on loopback, bound and released: another test may take it before the
/// caller binds it. Prefer binding port 0 and reading the address back (the binaries print
/// theirs: [`printed`], [`StdoutLines`]); this is for what cannot, e.g. a process in another
/// network namespace.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts TCP connections.
pub async fn wait_listening(addr: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child's stdout, read line by line into memory by a background task.
#[derive(Debug, Clone, Default)]
pub struct StdoutLines {
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<AtomicBool>,
}

impl StdoutLines {
    /// Starts reading `out`.
    pub fn collect(out: ChildStdout) -> StdoutLines {
        let me = StdoutLines::default();
        let (lines, ended) = (me.lines.clone(), me.ended.clone());
        tokio::spawn(async move {
            let mut out = BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
            ended.store(true, Ordering::SeqCst);
        });
        me
    }

    /// The lines read so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the first line `pick` takes; panics when the output ends first (the process
    /// exited) or after `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Read `ended` first: lines pushed before it was set are then all seen.
            let ended = self.ended.load(Ordering::SeqCst);
            if let Some(v) = self.lines().iter().find_map(|l| pick(l)) {
                return v;
            }
            assert!(
                !ended,
                "the process's output ended without {what}: {:?}",
                self.lines()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {timeout:?}: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the binaries print at start about the addresses they bound (so tests can bind port 0).
pub mod printed {
    /// `apiary-aggregator`: `  browse page and HTTP API: http://ADDR/ ...` → ADDR.
    pub fn aggregator_http(line: &str) -> Option<String> {
        let rest = line
            .trim_start()
            .strip_prefix("browse page and HTTP API: http://")?;
        Some(rest.split('/').next()?.to_owned())
    }

    /// `apiary-aggregator`: `  replication (publishers dial in here): ADDR` → `Some(ADDR)`,
    /// `  replication: not listening ...` → `None`.
    pub fn aggregator_replication(line: &str) -> Option<Option<String>> {
        let line = line.trim();
        if let Some(a) = line.strip_prefix("replication (publishers dial in here): ") {
            return Some(Some(a.to_owned()));
        }
        line.starts_with("replication: not listening")
            .then_some(None)
    }

    /// `apiary-publisher serve`: `serving N bee(s) for replication on ADDR` → ADDR.
    pub fn publisher_replication(line: &str) -> Option<String> {
        let (head, addr) = line.trim().rsplit_once(" for replication on ")?;
        head.starts_with("serving ").then(|| addr.to_owned())
    }

    /// `apiary-publisher serve`: `local page: http://ADDR/` → ADDR.
    pub fn publisher_page(line: &str) -> Option<String> {
        let rest = line.trim().strip_prefix("local page: http://")?;
        Some(rest.split('/').next()?.to_owned())
    }
}

/// Starts `apiary-publisher serve` (no DHT, no page) on a port of its choosing; returns it
/// and the replication address it printed.
pub async fn serve_publisher(bin: &Path, data_dir: &str) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(["--data-dir", data_dir, "serve", "--no-dht"])
        .args(["--listen", "127.0.0.1:0", "--no-page"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = StdoutLines::collect(child.stdout.take().unwrap())
        .wait_for(
            "the publisher's address",
            Duration::from_secs(20),
            printed::publisher_replication,
        )
        .await;
    (child, addr)
}

/// A default (manifest) JS bee `name` of `count` generated posts with values of about
/// `value_bytes`; returns its key (hex).
pub async fn js_bee(js: &mut JsPeer, name: &str, count: u64, value_bytes: u64) -> String {
    let created = js
        .call(json!({"cmd": "create", "name": name, "compat": false}))
        .await;
    js.call(json!({"cmd": "fill", "name": name, "count": count, "valueBytes": value_bytes}))
        .await;
    created["key"].as_str().unwrap().to_owned()
}
