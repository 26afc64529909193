//! The browse page's Feeds view: a followed JS bee with its peers and backfill progress,
//! updated live, checked in headless Chromium (when `APIARY_BROWSER_TESTS=1`).

use std::process::Stdio;
use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{ensure_js, init_tracing, js_dir, JsPeer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A peer address that is valid `host:port` but HTML if a page ever parsed it as such.
/// Markup as a peer address: the API refuses it (only host:port is accepted).
const EVIL_PEER: &str = "<img src=x onerror=window.__xss=1>:9";
/// A well-formed address that never answers (the .invalid TLD never resolves).
const DEAD_PEER: &str = "nobody.invalid:9";

/// The next JSON line of the browser driver; panics on a failure line or a timeout.
async fn browser_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .expect("browser.js answers within 90 s")
        .expect("browser.js stdout")
        .expect("browser.js printed a line");
    eprintln!("browser: {line}");
    let v: Value = serde_json::from_str(&line).unwrap_or(json!({"ok": false, "error": line}));
    assert_ne!(v["ok"], json!(false), "browser check failed: {v}");
    v
}

fn has_peer(row: &Value, address: &str, connected: bool) -> bool {
    row["peers"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| {
            p["address"] == address
                && p["via"] == "direct"
                && p["connected"] == json!(connected)
                && p["connText"]
                    == if connected {
                        "connected"
                    } else {
                        "not connected"
                    }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_view_shows_peers_and_progress_live_in_headless_chromium() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let hex_key = js
        .call(json!({"cmd": "create", "name": "films", "compat": false}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let filled = js
        .call(json!({"cmd": "fill", "name": "films", "count": 40, "prefix": "film-"}))
        .await;
    let len = filled["length"].as_u64().unwrap();
    assert!(len > 40, "{filled}");
    let addr = format!("127.0.0.1:{}", js.serve().await);

    let agg = AggProc::start(dir.join("agg"), "").await;
    let (s, v) = agg
        .post(
            "/v1/feeds",
            &json!({"key": hex_key, "peers": [EVIL_PEER]}),
            None,
        )
        .await;
    assert_eq!(s, 400, "markup is no peer address: {v}");
    let (s, v) = agg
        .post(
            "/v1/feeds",
            &json!({"key": hex_key, "peers": [addr, DEAD_PEER]}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let z = v["key"].as_str().unwrap().to_owned();

    // What the view is built from: the status JSON and /healthz.
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{z}"), Duration::from_secs(30), |v| {
            v["indexedVersion"] == json!(len) && v["lag"] == json!(0)
        })
        .await;
    let peers = st["peers"].as_array().unwrap();
    assert!(
        peers.iter().any(|p| p["address"] == addr.as_str()
            && p["via"] == "direct"
            && p["connected"] == true),
        "{st}"
    );
    assert!(
        peers
            .iter()
            .any(|p| p["address"] == DEAD_PEER && p["connected"] == false),
        "{st}"
    );
    let (_, health) = agg.get("/healthz").await;
    assert_eq!(health["dht"], "off", "{health}");
    let (_, doc) = agg.get("/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["FeedStatus"]["properties"]["peers"]["items"]["$ref"],
        "#/components/schemas/FeedPeer"
    );
    assert_eq!(
        schemas["FeedPeer"]["properties"]["via"]["enum"],
        json!(["direct", "dial-in", "dht"])
    );
    assert!(schemas["Health"]["properties"]["dht"].is_object());
    let page = reqwest::get(format!("{}/", agg.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"tab-feeds\"") && page.contains("/v1/feeds"));
    assert!(!page.contains("innerHTML"), "the page must not parse HTML");

    if !apiary_tests::browser_tests_enabled() {
        eprintln!("browser part skipped: set APIARY_BROWSER_TESTS=1 (as .ci/run does) with Debian chromium installed");
        js.close().await;
        return;
    }
    ensure_js();
    let mut browser = tokio::process::Command::new("node")
        .arg(js_dir().join("browser.js"))
        .args(["feeds", &format!("{}/", agg.base), &z, &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = browser.stdin.take().unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();

    // Indexed: the row is up to date (bar full), with the known address direct and
    // connected, the unreachable one not connected and shown as text.
    let first = browser_line(&mut lines).await;
    assert_eq!(first["stage"], "indexed", "{first}");
    assert_eq!(first["state"], "up-to-date", "{first}");
    assert_eq!(first["stateText"], "up to date", "{first}");
    assert_eq!(first["length"], json!(len), "{first}");
    assert_eq!(first["indexed"], json!(len), "{first}");
    assert_eq!(first["lag"], json!(0), "{first}");
    assert_eq!(first["bar"], json!({"value": len, "max": len}), "{first}");
    assert_eq!(first["pct"], "100%", "{first}");
    assert_eq!(first["problemsShown"], false, "{first}");
    assert_eq!(first["dht"], "off", "{first}");
    assert_eq!(first["count"], "1 feed followed", "{first}");
    let key_text = first["keyText"].as_str().unwrap();
    assert!(
        key_text.len() < z.len() && key_text.contains('…') && z.starts_with(&key_text[..8]),
        "{first}"
    );
    assert!(first["keyTitle"].as_str().unwrap().contains(&z), "{first}");
    assert!(has_peer(&first, &addr, true), "{first}");
    assert!(has_peer(&first, DEAD_PEER, false), "{first}");
    assert_eq!(first["injected"], false, "{first}");

    // A put on the JS side: the view shows it without a reload.
    let put = js
        .call(
            json!({"cmd": "put", "name": "films", "key": "film-new", "value": {"title": "Aliens"}}),
        )
        .await;
    let grown_len = put["length"].as_u64().unwrap();
    assert!(grown_len > len, "{put}");
    stdin.write_all(b"go\n").await.unwrap();
    stdin.flush().await.unwrap();
    let done = browser_line(&mut lines).await;
    assert_eq!(done["ok"], true, "{done}");
    let grown = &done["grown"];
    assert_eq!(grown["length"], json!(grown_len), "{done}");
    assert_eq!(grown["indexed"], json!(grown_len), "{done}");
    assert_eq!(grown["stateText"], "up to date", "{done}");
    assert!(has_peer(grown, &addr, true), "{done}");
    assert_eq!(grown["injected"], false, "{done}");
    assert_eq!(done["samePage"], true, "reloaded? {done}");
    assert_eq!(
        done["sameRow"], true,
        "row rebuilt instead of updated? {done}"
    );
    // About one poll a second while shown, none once the view is left.
    assert!(done["pollsWhileShown"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(done["pollsWhileHidden"], json!(0), "{done}");
    assert_eq!(done["feedsHidden"], true, "{done}");
    let _ = tokio::time::timeout(Duration::from_secs(10), browser.wait()).await;
    js.close().await;
}
