//! A NATS JetStream cluster on loopback for the cross-process tests: `n` real `nats-server`
//! processes (Debian's 2.9.10 at `/usr/sbin/nats-server`), each with its own config, JetStream
//! store and log in one temporary directory, routed to each other as cluster "apiary".
//!
//! The tests that use it run only when `APIARY_CLUSTER_TESTS=1` (see [`cluster_tests_enabled`]);
//! `.ci/run` installs `nats-server` and sets it.
//!
//! Health and leadership come from each server's HTTP monitoring port: `/healthz` (200 once
//! the server reached the JetStream meta leader and every stream/consumer it hosts is current)
//! and `/jsz`, whose `meta_cluster.leader` names the meta leader and, with `streams=true`,
//! `account_details[].stream_detail[].cluster.leader` names each stream's leader by
//! `server_name`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Whether the cluster tests should run: `APIARY_CLUSTER_TESTS=1` (like
/// [`crate::browser_tests_enabled`]).
pub fn cluster_tests_enabled() -> bool {
    std::env::var("APIARY_CLUSTER_TESTS").is_ok_and(|v| v == "1")
}

/// The `nats-server` binary: the first on `PATH`, else Debian's `/usr/sbin/nats-server`, else
/// `None`.
pub fn nats_server_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    is_executable(&debian).then_some(debian)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How long [`NatsCluster::start`] waits for the cluster, and [`NatsCluster::restart`] for a
/// node, to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of a node's log go into panic messages.
const LOG_TAIL_LINES: usize = 30;

/// One `nats-server` of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    /// Its `server_name`: "n1".."nN".
    name: String,
    client_port: u16,
    http_port: u16,
    /// Its config file (`DIR/nK/nats.conf`).
    config: PathBuf,
    /// Its stdout+stderr (`DIR/nK/nats.log`), appended to across restarts.
    log: PathBuf,
    /// The process; `None` after [`NatsCluster::kill9`] (or once seen exited).
    child: Mutex<Option<Child>>,
}

/// A cluster of `nats-server`s on 127.0.0.1 with JetStream, started by [`NatsCluster::start`].
///
/// Node `i` (0-based) has `server_name` "n{i+1}". Dropping the cluster kills every server and
/// removes its directory (configs, JetStream stores, logs).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    bin: PathBuf,
    /// Holds `nK/nats.conf`, `nK/nats.log` and `nK/store` for each node.
    dir: tempfile::TempDir,
}

/// Picks `n` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr of a bound port").port())
        .collect()
}

impl NatsCluster {
    /// Starts `n` servers ("n1".."nN") on free loopback ports, each with JetStream (its own
    /// store, 2 GB file / 256 MB memory), in cluster "apiary" with routes to every other node,
    /// and waits (up to 30 s) until every node's `/healthz` is 200 and every node knows the
    /// JetStream meta leader. Panics (with the nodes' log tails) when that does not happen, or
    /// when `nats-server` is not installed.
    pub async fn start(n: usize) -> NatsCluster {
        assert!(n >= 1, "a NATS cluster needs at least one node");
        let bin = nats_server_bin().expect(
            "nats-server is not installed (Debian: apt-get install nats-server; \
             looked on PATH and at /usr/sbin/nats-server)",
        );
        let dir = tempfile::Builder::new()
            .prefix("apiary-nats-")
            .tempdir()
            .expect("create the NATS cluster's temporary directory");
        let ports = free_ports(3 * n);
        let (client_ports, rest) = ports.split_at(n);
        let (cluster_ports, http_ports) = rest.split_at(n);

        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let node_dir = dir.path().join(&name);
            let store = node_dir.join("store");
            std::fs::create_dir_all(&store)
                .unwrap_or_else(|e| panic!("create {}: {e}", store.display()));
            let routes: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("    \"nats-route://127.0.0.1:{}\"", cluster_ports[j]))
                .collect();
            let conf = format!(
                "# {name} of the apiary test cluster (tests/src/nats.rs)\n\
                 server_name: \"{name}\"\n\
                 listen: \"127.0.0.1:{client}\"\n\
                 http: \"127.0.0.1:{http}\"\n\
                 jetstream {{\n  \
                   store_dir: \"{store}\"\n  \
                   max_file_store: 2GB\n  \
                   max_mem_store: 256MB\n\
                 }}\n\
                 cluster {{\n  \
                   name: \"apiary\"\n  \
                   listen: \"127.0.0.1:{cluster}\"\n  \
                   routes: [\n{routes}\n  ]\n\
                 }}\n",
                client = client_ports[i],
                http = http_ports[i],
                cluster = cluster_ports[i],
                store = store.display(),
                routes = routes.join("\n"),
            );
            let config = node_dir.join("nats.conf");
            std::fs::write(&config, conf)
                .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            nodes.push(Node {
                name,
                client_port: client_ports[i],
                http_port: http_ports[i],
                config,
                log: node_dir.join("nats.log"),
                child: Mutex::new(None),
            });
        }

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build the monitoring HTTP client");
        let mut cluster = NatsCluster {
            nodes,
            http,
            bin,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let why = match cluster.all_ready().await {
                Ok(()) => break,
                Err(why) => why,
            };
            cluster.assert_all_running("while starting the cluster");
            if Instant::now() >= deadline {
                panic!(
                    "the {n}-node NATS cluster was not ready within {READY_TIMEOUT:?}: {why}\n{}",
                    cluster.all_log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// Starts node `i`'s process from its config file, output appended to its log.
    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", node.log.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", node.log.display()));
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {} -c {}: {e}",
                    self.bin.display(),
                    node.config.display()
                )
            });
        *lock(&self.nodes[i].child) = Some(child);
    }

    /// `Ok` when every node's `/healthz` is 200 and its `/jsz` names a meta leader; else why not.
    async fn all_ready(&self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.healthz(i).await?;
            let jsz = self.jsz(i, "").await?;
            let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
            if leader.is_empty() {
                return Err(format!(
                    "{} knows no JetStream meta leader yet",
                    self.nodes[i].name
                ));
            }
        }
        Ok(())
    }

    /// `Ok` when node `i`'s `/healthz` answers 200; else the status and body.
    async fn healthz(&self, i: usize) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].http_port);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::OK {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(format!("GET {url}: {status} {}", body.trim()))
    }

    /// Node `i`'s `/jsz` with `query` (e.g. `"?acc=%24G&streams=true"`), as JSON.
    async fn jsz(&self, i: usize, query: &str) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}/jsz{query}", self.nodes[i].http_port);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        resp.json::<Value>()
            .await
            .map_err(|e| format!("GET {url}: bad JSON: {e}"))
    }

    /// The client URLs of all nodes, `nats://127.0.0.1:PORT`, in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Node `i`'s client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Node `i`'s `server_name` ("n{i+1}").
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s HTTP monitoring URL, `http://127.0.0.1:PORT` (for `/healthz`, `/jsz`, ...).
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// The cluster's directory: `nK/nats.conf`, `nK/nats.log`, `nK/store` per node.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `i`'s process is running (not killed, not exited).
    pub fn is_running(&self, i: usize) -> bool {
        let mut child = lock(&self.nodes[i].child);
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Kills node `i` with SIGKILL (no lame duck, no clean shutdown) and waits until it is
    /// gone. A node that is not running is left alone.
    pub async fn kill9(&mut self, i: usize) {
        let child = lock(&self.nodes[i].child).take();
        if let Some(mut child) = child {
            // tokio's kill() is SIGKILL on Unix, then waits for the exit.
            if let Err(e) = child.kill().await {
                panic!("SIGKILL {}: {e}", self.nodes[i].name);
            }
        }
    }

    /// Starts node `i` again (killing it first if it is running) with the same config: same
    /// name, ports and JetStream store. Waits (up to 30 s) until its `/healthz` is 200, which on
    /// 2.9 means it reached the meta leader and every stream it hosts is current.
    pub async fn restart(&mut self, i: usize) {
        self.kill9(i).await;
        self.spawn(i);
        self.wait_healthy(i, READY_TIMEOUT).await;
    }

    /// Waits until node `i`'s `/healthz` is 200; panics with its log tail after `timeout` or
    /// when its process exits.
    pub async fn wait_healthy(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.healthz(i).await {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                self.is_running(i),
                "NATS node {} exited while waiting for it to be healthy ({why})\n{}",
                self.nodes[i].name,
                self.log_tail(i, LOG_TAIL_LINES)
            );
            if Instant::now() >= deadline {
                panic!(
                    "NATS node {} not healthy within {timeout:?}: {why}\n{}",
                    self.nodes[i].name,
                    self.log_tail(i, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the node leading JetStream stream `stream` (account `$G`), as seen by the
    /// monitoring endpoints of the running nodes (`/jsz?acc=$G&streams=true`,
    /// `account_details[name=$G].stream_detail[name=stream].cluster.leader`). A node that says
    /// it leads itself wins; a leader that is not running (a stale view right after a kill)
    /// counts as none. `None` while there is no (live) leader or no such stream.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.stream_leader_views(stream).await.0
    }

    /// [`Self::stream_leader`] plus a description of each live node's view (for panics).
    async fn stream_leader_views(&self, stream: &str) -> (Option<usize>, String) {
        let mut other_view = None;
        let mut views = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let jsz = match self.jsz(i, "?acc=%24G&streams=true").await {
                Ok(v) => v,
                Err(e) => {
                    views.push(format!("{}: {e}", self.nodes[i].name));
                    continue;
                }
            };
            let leader = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|acc| acc["name"] == "$G")
                .flat_map(|acc| acc["stream_detail"].as_array().into_iter().flatten())
                .find(|s| s["name"] == stream)
                .map(|s| s["cluster"]["leader"].as_str().unwrap_or("").to_owned());
            views.push(format!(
                "{} says {}",
                self.nodes[i].name,
                match &leader {
                    None => "no such stream here".to_owned(),
                    Some(l) if l.is_empty() => "no leader".to_owned(),
                    Some(l) => format!("leader {l}"),
                }
            ));
            let Some(j) = leader.and_then(|l| self.nodes.iter().position(|n| n.name == l)) else {
                continue;
            };
            if j == i {
                return (Some(i), views.join("; "));
            }
            if other_view.is_none() && self.is_running(j) {
                other_view = Some(j);
            }
        }
        (other_view, views.join("; "))
    }

    /// Waits until stream `stream` has a live leader ([`Self::stream_leader`]) and returns its
    /// index; panics after `timeout` with each node's view and log tail.
    pub async fn wait_stream_leader(&self, stream: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let (leader, views) = self.stream_leader_views(stream).await;
            if let Some(i) = leader {
                return i;
            }
            if Instant::now() >= deadline {
                panic!(
                    "JetStream stream {stream} has no live leader after {timeout:?} ({views})\n{}",
                    self.all_log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let node = &self.nodes[i];
        let text = std::fs::read_to_string(&node.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", node.log.display()));
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        format!(
            "--- last {} lines of {} ({}) ---\n{}",
            tail.len(),
            node.name,
            node.log.display(),
            tail.join("\n")
        )
    }

    /// The log tails of every node.
    fn all_log_tails(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.log_tail(i, LOG_TAIL_LINES))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics (with the log tail) when some node that should run has exited.
    fn assert_all_running(&self, context: &str) {
        for i in 0..self.nodes.len() {
            assert!(
                self.is_running(i),
                "NATS node {} exited {context}\n{}",
                self.nodes[i].name,
                self.log_tail(i, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter()
            .filter_map(|node| lock(&node.child).take())
            .collect();
        for child in &mut children {
            let _ = child.start_kill(); // SIGKILL
        }
        // Reap them (briefly) before the TempDir goes, so no server still writes into it.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline
            && children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Locks a node's child slot, ignoring poisoning (a panicking test must still clean up).
fn lock(m: &Mutex<Option<Child>>) -> std::sync::MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
