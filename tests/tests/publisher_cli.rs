//! The real `apiary-publisher` binary: init → post → list → serve, read back over TCP by JS
//! hyperbee and by our reader; import; bad input; the local page in headless Chromium; every
//! command while `serve` runs (through its control socket), printing what it prints locally,
//! with readers (our own, the real aggregator) seeing the results live.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use apiary_core::bee::Bee;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use apiary_tests::{bin_path, init_tracing, printed, run_bin, JsPeer, StdoutLines};
use serde_json::{json, Value};
use tokio::net::UnixStream;

// Every command while `serve` runs, through its control socket.
#[path = "publisher_cli/serving.rs"]
mod serving;

struct Pub {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Pub {
    fn new() -> Pub {
        Pub {
            bin: bin_path("apiary-publisher", "apiary-publisher"),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let d = self.dir.path().to_string_lossy().to_string();
        let mut all = vec!["--data-dir", &d];
        all.extend_from_slice(args);
        run_bin(&self.bin, &all)
    }
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?} failed: {err}");
        out
    }
    fn length(&self, name: &str) -> u64 {
        let out = self.ok(&["bees"]);
        let line = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["name"] == json!(name));
        line.unwrap()["length"].as_u64().unwrap()
    }
    /// `serve` without the page, `extra` flags added, replication on a port of its choosing
    /// (read from what it prints); waits for its control socket.
    async fn serve_ctl(&self, extra: &[&str]) -> Served {
        let srv = self.spawn_serve(&["--no-page"], extra).await;
        wait_control(self.dir.path()).await;
        srv
    }
    /// `serve` with the local page, both on ports of its choosing; the page's address.
    async fn serve_page(&self) -> (Served, String) {
        let srv = self.spawn_serve(&["--page", "127.0.0.1:0"], &[]).await;
        let page = srv
            .out
            .wait_for("the page's address", SERVE_START, printed::publisher_page)
            .await;
        (srv, page)
    }
    async fn spawn_serve(&self, page: &[&str], extra: &[&str]) -> Served {
        let mut child = tokio::process::Command::new(&self.bin)
            .args(["--data-dir", &self.dir.path().to_string_lossy(), "serve"])
            .args(["--listen", "127.0.0.1:0", "--no-dht"])
            .args(page)
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = StdoutLines::collect(child.stdout.take().unwrap());
        let addr = out
            .wait_for(
                "the replication address",
                SERVE_START,
                printed::publisher_replication,
            )
            .await;
        Served { child, out, addr }
    }
}

/// How long `serve` may take to print its addresses.
const SERVE_START: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_post_list_serve_then_js_and_rust_read_it() {
    init_tracing();
    let p = Pub::new();
    let out = p.ok(&["init", "social"]);
    let url = out.lines().next().unwrap().to_owned();
    assert!(url.starts_with("hyper://"), "{out}");
    let hex = out
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("hex: ")
        .to_owned();
    let key = Key::parse(&url).unwrap();
    assert_eq!(key, Key::parse(&hex).unwrap());
    let mut posted = Vec::new();
    for (text, tag) in [
        ("first post", "rust"),
        ("второй пост", "p2p"),
        ("third 😀", "fun"),
    ] {
        let v: Value =
            serde_json::from_str(&p.ok(&["post", "social", text, "--tag", tag])).unwrap();
        assert_eq!(v["value"]["type"], "post");
        assert_eq!(v["value"]["tags"], json!([tag]));
        posted.push(v);
    }
    let listed: Vec<Value> = p
        .ok(&["list", "social"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    let rev: Vec<Value> = p
        .ok(&["list", "social", "--reverse", "--limit", "1"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rev[0]["key"], posted[2]["key"],
        "time-sortable keys: newest last"
    );

    let (mut srv, _) = p.serve_page().await;
    let addr = srv.addr.clone();
    let port = srv.port();

    // JS hyperbee reads the posts by key.
    let mut js = JsPeer::start().await;
    js.call(json!({"cmd": "connect", "port": port})).await;
    js.call(json!({"cmd": "open", "name": "social", "key": hex}))
        .await;
    for v in &posted {
        let got = js
            .call(json!({"cmd": "get", "name": "social", "key": v["key"]}))
            .await;
        assert_eq!(got["entry"]["value"], v["value"]);
    }
    js.close().await;

    // So does our reader.
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let core = rep.replica(key).unwrap();
    rep.connect(&addr).await.unwrap().open(&core).await.unwrap();
    assert_eq!(core.update(Duration::from_secs(10)).await.unwrap(), 4);
    let bee = Bee::new(core);
    for v in &posted {
        let e = bee
            .snapshot()
            .get(v["key"].as_str().unwrap().as_bytes())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(e.value.as_ref().unwrap()).unwrap(),
            v["value"]
        );
    }
    // While serve runs, the CLI goes through it, and the connected reader sees the entry.
    wait_control(p.dir.path()).await;
    let put: Value = serde_json::from_str(&p.ok(&["put", "social", "k", "1"])).unwrap();
    assert_eq!(put["seq"], 4);
    assert_eq!(wait_length(&bee, 5).await, 5);
    let e = bee.snapshot().get(b"k").await.unwrap().unwrap();
    assert_eq!(e.value.as_deref(), Some(&b"1"[..]));
    srv.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_10k_and_bad_input_leaves_the_bee_unchanged() {
    let p = Pub::new();
    p.ok(&["init", "big"]);
    let file = p.dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&json!({"key": format!("item{i:05}"), "value": {"title": format!("movie {i}"), "i": i}}).to_string());
        text.push('\n');
    }
    std::fs::write(&file, &text).unwrap();
    let out: Value =
        serde_json::from_str(&p.ok(&["import", "big", file.to_str().unwrap()])).unwrap();
    assert_eq!(out["imported"], 10_000);
    assert_eq!(p.length("big"), 10_001);
    assert_eq!(
        p.ok(&["get", "big", "item04321"]).trim(),
        r#"{"i":4321,"title":"movie 4321"}"#
    );
    let export = p.dir.path().join("out.jsonl");
    p.ok(&["export", "big", export.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&export).unwrap().lines().count(),
        10_000
    );

    // A bad line: its number is reported and nothing is written.
    let mut bad = text.clone();
    bad.push_str("{\"key\": \"ok\", \"value\": 1}\n{not json}\n");
    std::fs::write(&file, bad).unwrap();
    let (code, _, err) = p.run(&["import", "big", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 10002"), "{err}");
    assert_eq!(p.length("big"), 10_001, "nothing half-written");

    for args in [
        vec!["put", "big", "k", "{not json"],
        vec!["put", "big", "", "1"],
        vec!["put", "big", "a\u{1}b", "1"],
        vec!["put", "nobee", "k", "1"],
        vec!["put", "../etc", "k", "1"],
        vec!["get", "big", "missing"],
        vec!["post", "big", "   "],
    ] {
        let (code, _, err) = p.run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(
            err.starts_with("error: ") && err.len() > 10,
            "{args:?}: {err}"
        );
    }
    assert_eq!(p.length("big"), 10_001, "bad input left the bee unchanged");
    let (code, out, _) = p.run(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "init", "bees", "put", "post", "import", "export", "serve", "register",
    ] {
        assert!(out.contains(cmd), "--help lists {cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_page_adds_a_movie_in_headless_chromium() {
    let p = Pub::new();
    p.ok(&["init", "movies"]);
    let (mut srv, page) = p.serve_page().await;

    // The JSON endpoints behind the page.
    let client = reqwest::Client::new();
    let base = format!("http://{page}/api/bees/movies");
    let r = client
        .post(format!("{base}/entries"))
        .json(&json!({"key": "m1", "value": {"title": "Alien"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/entries"))
        .json(&json!({"key": "", "value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(format!("{base}/posts"))
        .json(&json!({"text": "hi", "tags": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = client
        .get(format!("{base}/entries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let r = client
        .get(format!("http://{page}/api/bees/nope/entries"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    if apiary_tests::browser_tests_enabled() {
        let res = apiary_tests::run_browser(&["publisher", &format!("http://{page}/")]);
        assert_eq!(res["ok"], json!(true), "{res}");
        assert!(res["rows"].as_u64().unwrap() >= 3);
    } else {
        eprintln!("browser part skipped: set APIARY_BROWSER_TESTS=1 (as .ci/run does) with Debian chromium installed");
    }
    srv.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_import_leaves_the_last_good_length() {
    const LINES: u64 = 60_000;
    const BATCH: u64 = 1000;
    let p = Pub::new();
    p.ok(&["init", "crash"]);
    // The file lives outside the data directory, which is copied while the import runs.
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("in.jsonl");
    let value = |i: u64| json!({"title": format!("movie {i}")});
    let mut text = String::new();
    for i in 0..LINES {
        text.push_str(&json!({"key": format!("item{i:06}"), "value": value(i)}).to_string());
        text.push('\n');
    }
    std::fs::write(&file, &text).unwrap();
    let d = p.dir.path().to_string_lossy().to_string();
    let mut child = tokio::process::Command::new(&p.bin)
        .args(["--data-dir", &d, "import", "crash", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Freeze the import now and then and read the bee from a copy of its data directory: a
    // frozen process writes nothing, so the copy holds what a kill leaves. Once the copy
    // holds a first batch, kill it while it is frozen.
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("data");
    let t = std::time::Instant::now();
    let seen = loop {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no batch of the import reached the disk in 120 s"
        );
        signal(pid, "STOP");
        assert!(
            wait_stopped(pid).await,
            "the import ended before a kill could land (it was still at length 1 when last frozen)"
        );
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(p.dir.path(), &copy);
        let len = length_in(&p.bin, &copy, "crash");
        if len > 1 {
            break len;
        }
        signal(pid, "CONT");
        // Let it run a little before the next look.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    signal(pid, "KILL");
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(9), "killed, not finished: {status:?}");
    let len = p.length("crash");
    eprintln!("length when frozen: {seen}; after the kill: {len}");
    assert_eq!(len, seen, "the kill left what was on disk when it landed");
    let imported = len - 1;
    assert!(
        0 < imported && imported < LINES,
        "the kill landed part-way: {imported} of {LINES} entries"
    );
    assert_eq!(
        imported % BATCH,
        0,
        "the head sits on a batch boundary: {len}"
    );
    // What is there is exactly the file's first lines, each in its own block.
    let listed: Vec<Value> = p
        .ok(&["list", "crash"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        listed.len() as u64,
        imported,
        "every entry up to the length is readable"
    );
    for (i, e) in (0u64..).zip(&listed) {
        assert_eq!(
            (&e["key"], &e["seq"], &e["value"]),
            (&json!(format!("item{i:06}")), &json!(i + 1), &value(i)),
            "entry {i} of the prefix"
        );
    }
    // The bee still takes writes and JS reads it whole.
    p.ok(&["put", "crash", "after", "1"]);
    let hex = p
        .ok(&["bees"])
        .lines()
        .next()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["hex"].clone())
        .unwrap();
    let (mut srv, _) = p.serve_page().await;
    let mut js = JsPeer::start().await;
    js.call(json!({"cmd": "connect", "port": srv.port()})).await;
    js.call(json!({"cmd": "open", "name": "c", "key": hex}))
        .await;
    let all = js
        .call(json!({"cmd": "range", "name": "c", "opts": {}}))
        .await;
    assert_eq!(all["entries"].as_array().unwrap().len() as u64, len);
    js.close().await;
    srv.child.kill().await.unwrap();
}

/// A running `serve` and the lines it printed.
struct Served {
    child: tokio::process::Child,
    out: StdoutLines,
    /// Its replication address.
    addr: String,
}

impl Served {
    async fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        self.out
            .wait_for("the line", Duration::from_secs(20), |l| {
                pred(l).then(|| l.to_owned())
            })
            .await
    }
    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    /// Ctrl-C, and waits for the clean exit.
    async fn interrupt(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let st = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        let st = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(st.success(), "serve exits cleanly: {st:?}");
    }
}

/// Where `serve` puts its control socket.
fn socket_of(dir: &Path) -> PathBuf {
    dir.join("run").join("serve.sock")
}

/// Waits until a `serve` answers on the control socket of `dir`.
async fn wait_control(dir: &Path) {
    for _ in 0..400 {
        if UnixStream::connect(socket_of(dir)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no control socket in {}", dir.display());
}

/// Updates a remote bee until it has `len` blocks (or 15 s pass); the length reached.
async fn wait_length(bee: &Bee, len: u64) -> u64 {
    let t = std::time::Instant::now();
    loop {
        let got = bee.core().update(Duration::from_secs(2)).await.unwrap_or(0);
        if got >= len || t.elapsed() > Duration::from_secs(15) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `sig` (a `kill` signal name) to `pid`.
fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Waits until every thread of `pid` is stopped (a SIGSTOP is handled by each thread on its
/// way back from the kernel, so its writes are done); `false` if the process ended instead.
async fn wait_stopped(pid: u32) -> bool {
    let t = std::time::Instant::now();
    loop {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        let mut all = true;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            match stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
            {
                Some('T' | 't') => {}
                Some('Z' | 'X') => return false,
                _ => all = false,
            }
        }
        if all {
            return true;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{pid} did not stop within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Copies a directory tree: directories, regular files and their permissions.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if ty.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The length of bee `name` in data directory `dir`, from `bees`.
fn length_in(bin: &Path, dir: &Path, name: &str) -> u64 {
    let d = dir.to_string_lossy();
    let (code, out, err) = run_bin(bin, &["--data-dir", &d, "bees"]);
    assert_eq!(code, 0, "bees in {d}: {err}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == json!(name))
        .and_then(|v| v["length"].as_u64())
        .unwrap_or_else(|| panic!("no bee {name} in {d}: {out}"))
}
