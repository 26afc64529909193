//! A private hyperswarm DHT on loopback (`tests/js/dht.js`: a bootstrapper and persistent
//! nodes), so DHT tests never touch the public network.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{ensure_js, js_dir};

/// A running test DHT (killed on drop).
pub struct TestDht {
    _child: Child,
    /// Its bootstrap nodes, `host:port`.
    pub bootstrap: Vec<String>,
}

impl TestDht {
    /// Starts one bootstrapper and four nodes on 127.0.0.1.
    pub async fn start() -> TestDht {
        Self::start_in(None, "127.0.0.1").await
    }

    /// Starts it inside a network namespace (`ip netns exec NS`) on `host`.
    pub async fn start_in(netns: Option<&str>, host: &str) -> TestDht {
        Self::start_on(netns, host, 0).await
    }

    /// Starts it with its bootstrap node on `port` (0: any).
    pub async fn start_on(netns: Option<&str>, host: &str, port: u16) -> TestDht {
        ensure_js();
        let script = js_dir().join("dht.js");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        let mut child = cmd
            .arg(script)
            .args(["--host", host, "--nodes", "4", "--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the test DHT starts within 60 s")
            .unwrap()
            .expect("the test DHT prints its bootstrap address");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let bootstrap = v["bootstrap"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_owned())
            .collect();
        TestDht {
            _child: child,
            bootstrap,
        }
    }

    /// `bootstrap = [...]` for a config file.
    pub fn toml(&self) -> String {
        let list: Vec<String> = self.bootstrap.iter().map(|b| format!("{b:?}")).collect();
        format!("bootstrap = [{}]", list.join(", "))
    }
}
