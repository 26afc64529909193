//! Every command while `serve` runs: through its control socket they print what they print
//! locally, readers (our own, the real aggregator) see their writes and new bees live,
//! `register` works, and the socket survives garbage and a killed `serve`.

use std::path::Path;
use std::time::Duration;

use apiary_core::bee::Bee;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use apiary_tests::agg::{temp_dir, AggProc};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{socket_of, wait_length, Pub};

fn jsonl(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn import_file(dir: &Path, name: &str, n: usize, bad_at: Option<usize>) -> String {
    let mut text = String::new();
    for i in 0..n {
        let line = if Some(i) == bad_at {
            json!({"key": format!("item{i:05}")}).to_string()
        } else {
            json!({"key": format!("item{i:05}"), "value": {"title": format!("movie {i}")}})
                .to_string()
        };
        text.push_str(&line);
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_runs_through_serve_and_prints_what_it_prints_locally() {
    let local = Pub::new();
    let served = Pub::new();
    let srv = served.serve_ctl(&[]).await;
    for p in [&local, &served] {
        let out = p.ok(&["init", "notes"]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("hyper://") && lines[1].starts_with("hex: "));
    }
    // Bees::subscribe_created heard of the bee made through the socket.
    srv.wait_line(|l| l.starts_with("new bee: notes  hyper://"))
        .await;

    let dir = local.dir.path();
    let good = import_file(dir, "good.jsonl", 3000, None);
    let bad = import_file(dir, "bad.jsonl", 3000, Some(1500));
    let same = |args: &[&str]| {
        let here = local.run(args);
        let there = served.run(args);
        assert_eq!(here, there, "{args:?}: local vs through serve");
        here
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = same(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let user_error = |args: &[&str], says: &str| {
        let (code, out, err) = same(args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
    };
    assert_eq!(
        ok(&["put", "notes", "a", r#"{"title":"Alien"}"#]),
        "{\"key\":\"a\",\"seq\":1}\n"
    );
    ok(&["put", "notes", "b", "[1, 2, 3]"]);
    assert_eq!(ok(&["get", "notes", "a"]), "{\"title\":\"Alien\"}\n");
    assert_eq!(
        ok(&["del", "notes", "b"]),
        "{\"deleted\":\"b\",\"seq\":3}\n"
    );
    user_error(&["del", "notes", "b"], "no entry \"b\" in notes");
    user_error(&["get", "notes", "b"], "no entry \"b\" in notes");
    user_error(&["put", "notes", "k", "{not json"], "not JSON");
    user_error(&["put", "notes", "", "1"], "key must be");
    user_error(&["put", "nobee", "k", "1"], "no bee named");
    user_error(&["init", "notes"], "exists already");
    user_error(&["init", "../x"], "bee name");
    user_error(&["post", "notes", "  "], "needs some text");

    // Import: the same all-or-nothing check, the same progress line and result.
    let (code, out, err) = same(&["import", "notes", &good]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"imported\":3000,\"length\":3004}\n");
    assert_eq!(err, "imported 3000/3000\n");
    user_error(
        &["import", "notes", &bad],
        "line 1501: needs a \"value\"; nothing was imported",
    );
    let (code, _, err) = same(&["import", "notes", "/no/such/file.jsonl"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        ok(&["get", "notes", "item01234"]),
        "{\"title\":\"movie 1234\"}\n"
    );
    assert_eq!(
        ok(&["list", "notes", "--prefix", "item0299"])
            .lines()
            .count(),
        10
    );
    assert_eq!(
        jsonl(&ok(&["list", "notes", "--reverse", "--limit", "2"]))[0]["key"],
        "item02999"
    );
    assert_eq!(ok(&["list", "notes"]).lines().count(), 3001);

    // Export to stdout, and to a file named relative to the CLI's directory (serve runs
    // elsewhere, yet writes where the user meant).
    let (code, out, err) = same(&["export", "notes"]);
    assert_eq!((code, out.lines().count()), (0, 3001));
    assert_eq!(err, "exported 3001 entries\n");
    for p in [&local, &served] {
        let d = p.dir.path().to_string_lossy().to_string();
        let st = std::process::Command::new(&p.bin)
            .args(["--data-dir", &d, "export", "notes", "out.jsonl"])
            .current_dir(p.dir.path())
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        assert_eq!(
            String::from_utf8_lossy(&st.stderr),
            "exported 3001 entries\n"
        );
    }
    let exported = |p: &Pub| std::fs::read_to_string(p.dir.path().join("out.jsonl")).unwrap();
    assert_eq!(exported(&local), exported(&served));
    assert_eq!(exported(&served), out, "the file holds what stdout showed");

    // Posts differ only in their time-sortable key and date.
    let posts: Vec<Value> = [&local, &served]
        .map(|p| serde_json::from_str(&p.ok(&["post", "notes", "hello", "--tag", "p2p"])).unwrap())
        .into();
    for v in &posts {
        assert_eq!(v["seq"], 3004);
        assert_eq!(v["value"]["text"], "hello");
        assert_eq!(v["value"]["tags"], json!(["p2p"]));
        assert_eq!(v["key"].as_str().unwrap().len(), 13);
    }
    // `bees` differs only in the keys.
    let strip = |p: &Pub| -> Vec<Value> {
        jsonl(&p.ok(&["bees"]))
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                assert!(o.remove("key").is_some() && o.remove("hex").is_some());
                v
            })
            .collect()
    };
    assert_eq!(strip(&local), strip(&served));
    assert_eq!(
        strip(&served),
        vec![json!({"name": "notes", "length": 3005, "version": 3005})]
    );

    let mut srv = srv;
    assert!(srv.running(), "all of it went through the running serve");
    srv.interrupt().await;
    assert!(
        !socket_of(served.dir.path()).exists(),
        "a clean shutdown removes the socket"
    );
    // What went through serve is on disk.
    let list = |p: &Pub| p.ok(&["list", "notes", "--prefix", "item"]);
    assert_eq!(list(&local), list(&served));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_cli_writes_and_new_bees_live_through_serve() {
    let (_keep, dir) = temp_dir();
    let agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 50").await;
    let p = Pub::new();
    let url = p.ok(&["init", "notes"]).lines().next().unwrap().to_owned();
    p.ok(&["put", "notes", "n1", r#"{"title":"before serving"}"#]);
    assert_eq!(agg.follow(&url, None).await.0, 201);
    let mut srv = p.serve_ctl(&["--aggregator", &agg.listen]).await;
    let addr = srv.addr.clone();
    let search = |q: &str| format!("/v1/search?q={q}");
    let hits = |n: usize| move |v: &Value| v["entries"].as_array().unwrap().len() == n;
    agg.wait_for(&search("before"), Duration::from_secs(20), hits(1))
        .await;

    // The dialed-in aggregator sees CLI writes live: a put, then a delete.
    p.ok(&["put", "notes", "n2", r#"{"title":"written while serving"}"#]);
    agg.wait_for(&search("while"), Duration::from_secs(15), hits(1))
        .await;
    p.ok(&["del", "notes", "n1"]);
    agg.wait_for(&search("before"), Duration::from_secs(15), hits(0))
        .await;

    // A reader connected before the bee exists opens it on the same connection at once.
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let conn = rep.connect(&addr).await.unwrap();
    let fresh = p.ok(&["init", "fresh"]).lines().next().unwrap().to_owned();
    let core = rep.replica(Key::parse(&fresh).unwrap()).unwrap();
    conn.open(&core).await.unwrap();
    let bee = Bee::new(core);
    assert_eq!(wait_length(&bee, 1).await, 1, "the header block");
    p.ok(&["put", "fresh", "f1", r#"{"title":"a fresh bee"}"#]);
    assert_eq!(wait_length(&bee, 2).await, 2);
    let e = bee.snapshot().get(b"f1").await.unwrap().unwrap();
    assert_eq!(e.value.as_deref(), Some(&br#"{"title":"a fresh bee"}"#[..]));

    // The aggregator, given the new bee and the serve's address, indexes it.
    assert_eq!(agg.follow(&fresh, Some(&addr)).await.0, 201);
    agg.wait_for(&search("fresh"), Duration::from_secs(20), hits(1))
        .await;
    assert!(srv.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_works_while_serve_runs() {
    let (_keep, dir) = temp_dir();
    let token = "registration-token-0123456789";
    let agg = AggProc::start(dir.join("agg"), &format!("admin_token = \"{token}\"")).await;
    let p = Pub::new();
    p.ok(&["init", "notes"]);
    p.ok(&[
        "put",
        "notes",
        "n1",
        r#"{"title":"registered while serving"}"#,
    ]);
    let mut srv = p.serve_ctl(&[]).await;
    let addr = srv.addr.clone();
    let (code, _, err) = p.run(&["register", "notes", "--aggregator", &agg.base]);
    assert_eq!(
        code, 1,
        "no token: refused by the aggregator, not by a busy data dir"
    );
    assert!(err.contains("401"), "{err}");
    let out = p.ok(&[
        "register",
        "notes",
        "--aggregator",
        &agg.base,
        "--token",
        token,
        "--address",
        &addr,
    ]);
    assert!(out.starts_with("registered notes with "), "{out}");
    let (code, _, err) = p.run(&["register", "nobee", "--aggregator", &agg.base]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no bee named \"nobee\""), "{err}");
    agg.wait_for("/v1/search?q=registered", Duration::from_secs(20), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    assert!(srv.running());
}

/// A raw client of the control socket.
struct Raw {
    rd: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl Raw {
    async fn connect(dir: &Path) -> Raw {
        let (rd, wr) = UnixStream::connect(socket_of(dir))
            .await
            .unwrap()
            .into_split();
        Raw {
            rd: BufReader::new(rd).lines(),
            wr,
        }
    }
    async fn line(&mut self) -> Option<Value> {
        let l = tokio::time::timeout(Duration::from_secs(20), self.rd.next_line())
            .await
            .unwrap()
            .ok()??;
        Some(serde_json::from_str(&l).unwrap())
    }
    /// Sends a line; every reply line up to the final one.
    async fn ask(&mut self, req: &[u8]) -> Vec<Value> {
        self.wr.write_all(req).await.unwrap();
        self.wr.write_all(b"\n").await.unwrap();
        let mut all = Vec::new();
        while let Some(v) = self.line().await {
            let done = v.get("ok").is_some() || v.get("error").is_some();
            all.push(v);
            if done {
                break;
            }
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_refuses_garbage_and_stale_sockets_are_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let p = Pub::new();
    p.ok(&["init", "notes"]);
    p.ok(&["put", "notes", "a", "1"]);
    let mut srv = p.serve_ctl(&[]).await;
    let sock = socket_of(p.dir.path());
    let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(sock.parent().unwrap()), 0o700);

    // A silent client holds a connection: nobody else waits for it.
    let _silent = UnixStream::connect(&sock).await.unwrap();
    let mut raw = Raw::connect(p.dir.path()).await;
    for (req, code) in [
        (&b"garbage"[..], "bad_request"),
        (b"\xff\xfe{", "bad_request"),
        (br#"{"cmd":"serve"}"#, "bad_request"),
        (br#"{"cmd":"put","name":"notes"}"#, "bad_request"),
        (
            br#"{"cmd":"put","name":"notes","key":"k","json":"1","x":1}"#,
            "bad_request",
        ),
        (
            br#"{"cmd":"export","name":"notes","file":"rel.jsonl"}"#,
            "bad_request",
        ),
        (br#"{"cmd":"get","name":"notes","key":"zz"}"#, "not_found"),
    ] {
        let r = raw.ask(req).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0]["error"]["code"],
            code,
            "{}: {r:?}",
            String::from_utf8_lossy(req)
        );
        assert!(r[0]["error"]["message"].as_str().unwrap().len() > 5);
    }
    // The same connection still works.
    let r = raw.ask(br#"{"cmd":"get","name":"notes","key":"a"}"#).await;
    assert_eq!(r, vec![json!({"out": "1"}), json!({"ok": true})]);
    assert_eq!(p.ok(&["get", "notes", "a"]), "1\n");

    // An overlong line: an error, then the connection is closed.
    let mut long = Raw::connect(p.dir.path()).await;
    let _ = long.wr.write_all(&vec![b'x'; 2 * 1024 * 1024]).await;
    let r = long.line().await.unwrap();
    assert_eq!(r["error"]["code"], "too_long", "{r}");
    assert!(long.line().await.is_none());
    assert!(srv.running());
    assert_eq!(
        p.ok(&["put", "notes", "b", "2"]),
        "{\"key\":\"b\",\"seq\":2}\n"
    );

    // kill -9 leaves a stale socket; the dir is free, so commands run here; the next serve
    // replaces the socket.
    srv.child.kill().await.unwrap();
    assert!(sock.exists());
    assert_eq!(p.ok(&["get", "notes", "b"]), "2\n");
    let mut srv = p.serve_ctl(&[]).await;
    assert_eq!(
        p.ok(&["put", "notes", "c", "3"]),
        "{\"key\":\"c\",\"seq\":3}\n"
    );
    assert!(srv.running());

    // Busy and nobody answering (the socket is gone): the clear "in use" error.
    std::fs::remove_file(&sock).unwrap();
    let (code, _, err) = p.run(&["put", "notes", "d", "4"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("in use") && err.contains("serve.sock"),
        "{err}"
    );
    srv.child.kill().await.unwrap();
}
