//! Driving the real `apiary-publisher` binary: one data directory, commands, and `serve`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{bin_path, run_bin};

/// A publisher data directory (removed on drop).
pub struct Publisher {
    /// The binary.
    pub bin: PathBuf,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

/// A running `serve` and what it printed so far.
pub struct Serving {
    /// The process (killed on drop).
    pub child: tokio::process::Child,
    /// Its stdout and stderr lines, as they come.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Serving {
    /// Waits until a stdout line contains `needle`; returns it.
    pub async fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "serve never printed {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Publisher {
    /// A fresh data directory.
    pub fn new() -> Publisher {
        Publisher {
            bin: bin_path("apiary-publisher", "apiary-publisher"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs a command on this data directory; asserts it succeeds; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let d = self.dir.path().to_string_lossy().to_string();
        let mut all = vec!["--data-dir", &d];
        all.extend_from_slice(args);
        let (code, out, err) = run_bin(&self.bin, &all);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }

    /// `init NAME`; returns the z-base-32 key.
    pub fn init(&self, name: &str) -> String {
        let url = self.run(&["init", name]).lines().next().unwrap().to_owned();
        url.trim_start_matches("hyper://").to_owned()
    }

    /// Starts `serve` (no page, any port) with `extra` flags, optionally inside a network
    /// namespace, and collects its stdout.
    pub fn serve(&self, extra: &[&str], netns: Option<&str>) -> Serving {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => tokio::process::Command::new(&self.bin),
        };
        let mut child = cmd
            .args(["--data-dir", &self.dir.path().to_string_lossy(), "serve"])
            .args(["--no-page", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let l = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                l.lock().unwrap().push(line);
            }
        });
        // Its log too (a test can wait on a warning), still shown in the test's output.
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let l = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                eprintln!("{line}");
                l.lock().unwrap().push(line);
            }
        });
        Serving { child, lines }
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}
