//! Driving the real `apiary-aggregator` binary in tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::{bin_path, printed, StdoutLines};

/// A running aggregator process.
pub struct AggProc {
    /// Its process (killed on drop).
    pub child: Option<tokio::process::Child>,
    /// HTTP base URL.
    pub base: String,
    /// Replication address.
    pub listen: String,
    /// The config file it runs with.
    pub config: PathBuf,
    /// Data dir (kept across restarts).
    pub dir: PathBuf,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Environment variables set for the process (on top of ours).
    pub env: Vec<(String, String)>,
    /// A command the binary runs under (e.g. `prlimit --nofile=256:256`), if any.
    pub prefix: Vec<String>,
    /// What the current process printed on stdout.
    pub stdout: StdoutLines,
}

impl AggProc {
    /// Writes a config (`extra` TOML lines appended) and starts the binary. The DHT is off
    /// unless `extra` sets `dht` (tests never reach the public DHT). Its first start binds
    /// port 0 for HTTP and replication and reads the addresses it prints; the config is then
    /// rewritten with them, so that restarts (and anyone dialing `listen`) keep them.
    pub async fn start(dir: PathBuf, extra: &str) -> AggProc {
        Self::start_env(dir, extra, Vec::new()).await
    }

    /// As [`AggProc::start`], with environment variables for the process.
    pub async fn start_env(dir: PathBuf, extra: &str, env: Vec<(String, String)>) -> AggProc {
        Self::start_full(dir, extra, env, Vec::new()).await
    }

    /// Writes the config and starts the binary under `prefix` (a command such as `prlimit`).
    pub async fn start_under(dir: PathBuf, extra: &str, prefix: &[&str]) -> AggProc {
        let prefix = prefix.iter().map(|s| s.to_string()).collect();
        Self::start_full(dir, extra, Vec::new(), prefix).await
    }

    async fn start_full(
        dir: PathBuf,
        extra: &str,
        env: Vec<(String, String)>,
        prefix: Vec<String>,
    ) -> AggProc {
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("aggregator.toml");
        let dht = if extra.lines().any(|l| l.trim_start().starts_with("dht")) {
            ""
        } else {
            "dht = false\n"
        };
        let text = |http: &str, listen: &str| {
            format!(
                "data_dir = {:?}\nhttp = \"{http}\"\nlisten = \"{listen}\"\nrate_limit_per_second = 10000\nrate_limit_burst = 10000\nlog = \"warn\"\n{dht}{extra}\n",
                dir.join("data")
            )
        };
        std::fs::write(&config, text("127.0.0.1:0", "127.0.0.1:0")).unwrap();
        let mut a = AggProc {
            child: None,
            base: String::new(),
            listen: String::new(),
            config,
            dir: dir.clone(),
            http: reqwest::Client::new(),
            env,
            prefix,
            stdout: StdoutLines::default(),
        };
        let (http, listen) = a.spawn().await;
        a.base = format!("http://{http}");
        a.listen = listen.unwrap_or_default();
        std::fs::write(&a.config, text(&http, &a.listen)).unwrap();
        a
    }

    /// Starts it with the DHT on, bootstrapping from `dht` only.
    pub async fn start_dht(dir: PathBuf, dht: &crate::dht::TestDht, extra: &str) -> AggProc {
        Self::start(dir, &format!("dht = true\n{}\n{extra}", dht.toml())).await
    }

    /// The process id (to find its children, e.g. the DHT bridge).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The pid of its DHT bridge child (node running bridge.js), found in /proc.
    pub fn bridge_pid(&self) -> Option<u32> {
        let me = self.pid()?;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == Some(me) && String::from_utf8_lossy(&cmd).contains("bridge.js") {
                return Some(pid);
            }
        }
        None
    }

    /// (Re)starts the process on the same config and data; it must bind the same addresses.
    pub async fn restart(&mut self) {
        let (http, listen) = self.spawn().await;
        assert_eq!(
            format!("http://{http}"),
            self.base,
            "HTTP address after a restart"
        );
        assert_eq!(
            listen.unwrap_or_default(),
            self.listen,
            "replication address after a restart"
        );
    }

    /// Starts the process; waits until it prints its HTTP and replication addresses (it binds
    /// both before printing them) and returns them.
    async fn spawn(&mut self) -> (String, Option<String>) {
        let bin = bin_path("apiary-aggregator", "apiary-aggregator");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => tokio::process::Command::new(bin),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.stdout = StdoutLines::collect(child.stdout.take().unwrap());
        self.child = Some(child);
        let wait = Duration::from_secs(30);
        let http = self
            .stdout
            .wait_for(
                "the aggregator's HTTP address",
                wait,
                printed::aggregator_http,
            )
            .await;
        let listen = self
            .stdout
            .wait_for(
                "the aggregator's replication address",
                wait,
                printed::aggregator_replication,
            )
            .await;
        (http, listen)
    }

    /// SIGKILL, no goodbye.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM (what a service manager sends to stop it); waits up to `within` for the
    /// exit. Returns its status and how long the exit took.
    pub async fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("the aggregator runs");
        let pid = c.id().expect("it has a pid").to_string();
        let t = std::time::Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let st = tokio::time::timeout(within, c.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {within:?} of SIGTERM"))
            .unwrap();
        (st, t.elapsed())
    }

    /// GET → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// GET → the body as text (e.g. `/metrics`, the browse page).
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POST JSON → (status, body).
    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Follows `key` through the API (no token), with `peer` as its known address.
    pub async fn follow(&self, key: &str, peer: Option<&str>) -> (u16, Value) {
        let body = match peer {
            Some(p) => serde_json::json!({"key": key, "peers": [p]}),
            None => serde_json::json!({"key": key}),
        };
        self.post("/v1/feeds", &body, None).await
    }

    /// DELETE → status.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> u16 {
        let mut req = self.http.delete(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// Polls `path` until `pred` holds on the body; returns the body and the time it took.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let t = std::time::Instant::now();
        loop {
            let (s, v) = self.get(path).await;
            if s == 200 && pred(&v) {
                return (v, t.elapsed());
            }
            assert!(
                t.elapsed() < timeout,
                "timed out waiting on {path}: last {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every entry of a feed, paging through /v1/feed.
    pub async fn all_entries(&self, feed: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/feed?feed={feed}&limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (s, v) = self.get(&path).await;
            assert_eq!(s, 200, "{v}");
            out.extend(v["entries"].as_array().cloned().unwrap_or_default());
            match v["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

/// A temp dir that is kept for the life of the test.
pub fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}
