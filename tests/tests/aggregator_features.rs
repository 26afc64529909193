//! Aggregator features through the real binaries: live SSE, oversized values, the backfill
//! window, registration by the publisher, metrics.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, printed, run_bin, StdoutLines};
use serde_json::{json, Value};

/// Listen on a port of the process's choosing.
const ANY: &str = "127.0.0.1:0";

struct Publisher {
    bin: std::path::PathBuf,
    dir: String,
}

impl Publisher {
    fn new(dir: &std::path::Path) -> Publisher {
        Publisher {
            bin: bin_path("apiary-publisher", "apiary-publisher"),
            dir: dir.to_string_lossy().into(),
        }
    }
    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["--data-dir", &self.dir];
        all.extend_from_slice(args);
        let (code, out, err) = run_bin(&self.bin, &all);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }
    fn init(&self, name: &str) -> String {
        // The z-base-32 key (the hyper:// URL without its scheme), usable in URL paths.
        let url = self.run(&["init", name]).lines().next().unwrap().to_owned();
        url.trim_start_matches("hyper://").to_owned()
    }
    /// `serve` on `listen` (`127.0.0.1:0`: a port of its choosing), with the local page on a
    /// port of its choosing or without: the process, its replication address and its page's
    /// (as printed).
    async fn serve(
        &self,
        listen: &str,
        page: bool,
    ) -> (tokio::process::Child, String, Option<String>) {
        let page_args = if page {
            ["--page", "127.0.0.1:0"].as_slice()
        } else {
            ["--no-page"].as_slice()
        };
        let mut c = tokio::process::Command::new(&self.bin)
            .args(["--data-dir", &self.dir, "serve", "--no-dht"])
            .args(["--listen", listen])
            .args(page_args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = StdoutLines::collect(c.stdout.take().unwrap());
        let start = Duration::from_secs(20);
        let addr = out
            .wait_for("the address", start, printed::publisher_replication)
            .await;
        let page_addr = match page {
            true => Some(
                out.wait_for("the page", start, printed::publisher_page)
                    .await,
            ),
            false => None,
        };
        (c, addr, page_addr)
    }
}

/// One server-sent event: its `event`, `id` and `data` fields.
#[derive(Debug, Default, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads server-sent events off a response, `:` comments (keep-alives) skipped.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(url: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event, within 10 s.
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut ev = Sse::default();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            ev.event = v.trim().into();
                        } else if let Some(v) = line.strip_prefix("id:") {
                            ev.id = Some(v.trim().into());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            ev.data.push_str(v.trim_start());
                        }
                    }
                    if !ev.event.is_empty() {
                        return ev;
                    }
                    continue;
                }
                let chunk = self.resp.chunk().await.unwrap().expect("the stream ended");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an SSE event within 10 s")
    }
}

fn text_of(ev: &Sse) -> String {
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    v["value"]["text"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_new_entries_and_resumes_from_the_last_event_id() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("social");
    let (mut child, addr, page) = p.serve(ANY, true).await;
    let page = page.unwrap();
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{key}\"\npeers = [\"{addr}\"]"),
    )
    .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(10), |v| {
        v["length"] == json!(1)
    })
    .await;
    let client = reqwest::Client::new();
    let post = |text: &'static str, tag: &'static str| {
        let client = client.clone();
        let url = format!("http://{page}/api/bees/social/posts");
        async move {
            let r = client
                .post(url)
                .json(&json!({"text": text, "tags": [tag]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let feed_url = format!("{}/v1/feed?type=post", agg.base);
    let feed_texts = || async {
        let v: Value = client
            .get(&feed_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"]["text"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // Read (and so cache) the feed's page before the posts: it must not stay served.
    assert!(feed_texts().await.is_empty());

    let stream_url = format!("{}/v1/stream?type=post&tag=live", agg.base);
    let mut sse = SseReader::open(&stream_url, None).await;
    let t0 = std::time::Instant::now();
    // One that the filter drops, then one it passes.
    post("not this one", "other").await;
    post("hello live world", "live").await;
    let first = sse.next().await;
    eprintln!("post → SSE event in {:?}", t0.elapsed());
    assert_eq!(first.event, "entry");
    assert_eq!(text_of(&first), "hello live world");
    let id = first.id.clone().expect("entry events carry an id");
    drop(sse);

    // Posts while the client is away: a reconnect with its last id gets them, in order, and
    // nothing it already had.
    post("while away one", "live").await;
    post("while away two", "live").await;
    let mut texts = Vec::new();
    for _ in 0..100 {
        texts = feed_texts().await;
        if texts.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        texts.len(),
        4,
        "the cached page gave way to the new entries: {texts:?}"
    );
    assert_eq!(texts[0], "while away two");
    let mut sse = SseReader::open(&stream_url, Some(&id)).await;
    let a = sse.next().await;
    let b = sse.next().await;
    assert_eq!(
        (text_of(&a), text_of(&b)),
        ("while away one".into(), "while away two".into())
    );
    assert!(a.id.is_some() && a.id != b.id && a.id.as_deref() != Some(id.as_str()));
    post("live again", "live").await;
    assert_eq!(text_of(&sse.next().await), "live again");

    // An id this process never made: `reset` (re-read /v1/feed), then live events.
    let mut sse = SseReader::open(&stream_url, Some("0-7")).await;
    let reset = sse.next().await;
    assert_eq!(reset.event, "reset");
    assert!(reset.id.is_some(), "reset carries the newest id");
    post("after the reset", "live").await;
    let ev = sse.next().await;
    assert_eq!(
        (ev.event.as_str(), text_of(&ev).as_str()),
        ("entry", "after the reset")
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_skipped_and_counted_and_backfill_window_reads_sparsely() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let big = p.init("big");
    let many = p.init("many");
    p.run(&["put", "big", "small", r#"{"title":"small one"}"#]);
    p.run(&[
        "put",
        "big",
        "huge",
        &json!({"title": "x".repeat(5000)}).to_string(),
    ]);
    for i in 0..50 {
        p.run(&[
            "put",
            "many",
            &format!("k{i:02}"),
            &json!({"title": format!("item {i}")}).to_string(),
        ]);
    }
    let (mut child, addr, _) = p.serve(ANY, false).await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!(
            "max_value_bytes = 1000\nbackfill = 10\n[[follow]]\nkey = \"{big}\"\npeers = [\"{addr}\"]\n[[follow]]\nkey = \"{many}\"\npeers = [\"{addr}\"]"
        ),
    )
    .await;
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{big}"), Duration::from_secs(10), |v| {
            v["indexedVersion"] == json!(3)
        })
        .await;
    assert_eq!(st["skipped"]["tooLarge"], 1, "{st}");
    let (_, feed) = agg.get(&format!("/v1/feed?feed={big}")).await;
    let keys: Vec<&str> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["small"]);

    // backfill = 10: only the newest 10 log entries of a 50-entry bee, fetched sparsely.
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{many}"), Duration::from_secs(10), |v| {
            v["indexedVersion"] == json!(51)
        })
        .await;
    let (_, feed) = agg.get(&format!("/v1/feed?feed={many}&limit=100")).await;
    let mut keys: Vec<String> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, (40..50).map(|i| format!("k{i}")).collect::<Vec<_>>());
    assert!(st["blocksDownloaded"].as_u64().unwrap() <= 12, "{st}");

    let metrics = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("apiary_feeds_followed 2"), "{metrics}");
    assert!(metrics.contains("apiary_entries_indexed 11"), "{metrics}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_registers_its_bee_with_a_token() {
    let (_keep, dir) = temp_dir();
    let token = "registration-token-0123456789";
    let agg = AggProc::start(dir.join("agg"), &format!("admin_token = \"{token}\"")).await;
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("notes");
    p.run(&["put", "notes", "n1", r#"{"title":"registered"}"#]);
    let (mut child, addr, _) = p.serve(ANY, false).await;
    // serve holds the data dir: register reads it, so stop serve, register, serve again.
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let (code, _, err) = run_bin(
        &p.bin,
        &[
            "--data-dir",
            &p.dir,
            "register",
            "notes",
            "--aggregator",
            &agg.base,
        ],
    );
    assert_eq!(code, 1, "no token: refused");
    assert!(err.contains("401"), "{err}");
    let out = p.run(&[
        "register",
        "notes",
        "--aggregator",
        &agg.base,
        "--token",
        token,
        "--address",
        &addr,
    ]);
    assert!(out.contains("registered notes"), "{out}");
    // Again on the address it had (and registered).
    let (mut child, again, _) = p.serve(&addr, false).await;
    assert_eq!(again, addr);
    agg.wait_for("/v1/search?q=registered", Duration::from_secs(15), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    let (_, st) = agg.get(&format!("/v1/feeds/{key}")).await;
    assert_eq!(st["peers"][0]["address"], json!(addr));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_pages_walk_entries_spread_over_years_newest_first() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("years");
    let dates = [
        "2019-03-01T00:00:00Z",
        "2023-07-01T10:00:00Z",
        "2023-07-01T10:00:00Z",
        "2025-01-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-11-25T00:00:00Z",
        "2099-01-01T00:00:00Z",
    ];
    for (i, d) in dates.iter().enumerate() {
        p.run(&[
            "put",
            "years",
            &format!("e{i}"),
            &json!({"text": format!("entry {i}"), "createdAt": d}).to_string(),
        ]);
    }
    let (mut child, addr, _) = p.serve(ANY, false).await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{key}\"\npeers = [\"{addr}\"]"),
    )
    .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(10), |v| {
        v["indexedVersion"] == json!(8)
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/feed?limit=2&cursor={c}"),
            None => "/v1/feed?limit=2".to_owned(),
        };
        let (s, v) = agg.get(&path).await;
        assert_eq!(s, 200, "{v}");
        for e in v["entries"].as_array().unwrap() {
            seen.push((
                e["sortAt"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            ));
        }
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut keys: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    // e6's forged 2099 date sorts at its seenAt (now), so it leads; then by date. e1 and e2 share
    // a date: their order is the tiebreak hash of their ids, which depends on the random feed
    // key, so the test asserts only that the cursor walk yields each of them once, side by side.
    if let Some(tie) = keys.get_mut(4..6) {
        tie.sort_unstable();
    }
    assert_eq!(
        keys,
        vec!["e6", "e5", "e4", "e3", "e1", "e2", "e0"],
        "{seen:?}"
    );
    let (_, since) = agg
        .get("/v1/feed?since=2023-01-01T00:00:00Z&until=2025-06-01T00:00:00Z")
        .await;
    assert_eq!(since["entries"].as_array().unwrap().len(), 3);
    child.kill().await.unwrap();
}
