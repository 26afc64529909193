//! The browse page checks every hit's proof bundle in the browser (`aggregator/src/page/verify.js`)
//! against the hit's feed key: our publisher's bee and two JS bees (a corestore core and a
//! compat core) are followed, and in headless Chromium (when `APIARY_BROWSER_TESTS=1`) every
//! hit of the merged feed and of a search ends up marked verified; then, with the search and
//! the proofs tampered with on the way (playwright intercepts them), a flipped bit of a block,
//! a hit shown under another feed and a changed value are each marked unverified.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, run_bin, serve_publisher, JsPeer};
use serde_json::{json, Value};

/// The mark of the hit with bee key `key` in a `proofMarks` report.
fn mark<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["marks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("no hit {key} in {report}"))
}

fn all_verified(report: &Value, hits: u64) {
    assert_eq!(report["hits"], json!(hits), "{report}");
    assert_eq!(report["verified"], json!(hits), "{report}");
    for m in report["marks"].as_array().unwrap() {
        assert_eq!(m["text"], "✓ verified", "{m}");
        assert!(
            m["title"].as_str().unwrap().contains("signed a log of"),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_page_verifies_every_hit_in_headless_chromium() {
    let (_keep, dir) = temp_dir();
    let p = bin_path("apiary-publisher", "apiary-publisher");
    let pd = dir.join("pub").to_string_lossy().to_string();
    let (_, out, _) = run_bin(&p, &["--data-dir", &pd, "init", "m"]);
    let ours = out.lines().next().unwrap().to_owned();
    for (k, v) in [
        ("ours-1", r#"{"title":"Nostromo crew","year":1979}"#),
        ("ours-2", r#"{"title":"Nostromo logs","tags":["ship"]}"#),
        (
            "ours-3",
            r#"{"title":"Nostromo 🚀 cargo","text":"line one\nline two"}"#,
        ),
        ("ours-4", r#"{"title":"Other film"}"#),
    ] {
        let (c, _, e) = run_bin(&p, &["--data-dir", &pd, "put", "m", k, v]);
        assert_eq!(c, 0, "{e}");
    }
    let (mut publisher, paddr) = serve_publisher(&p, &pd).await;

    let mut js = JsPeer::start().await;
    let mut js_keys = Vec::new();
    for (name, compat, titles) in [
        (
            "store",
            false,
            &["Nostromo in JS", "Nostromo again", "Not it"][..],
        ),
        ("old", true, &["Nostromo, compat"][..]),
    ] {
        let c = js
            .call(json!({"cmd": "create", "name": name, "compat": compat}))
            .await;
        js_keys.push(c["key"].as_str().unwrap().to_owned());
        for (i, t) in titles.iter().enumerate() {
            js.call(json!({"cmd": "put", "name": name, "key": format!("{name}-{i}"), "value": {"title": t}}))
                .await;
        }
    }
    let jport = js.serve().await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{ours}\"\npeers = [\"{paddr}\"]"),
    )
    .await;
    for k in &js_keys {
        let (s, v) = agg.follow(k, Some(&format!("127.0.0.1:{jport}"))).await;
        assert_eq!(s, 201, "{v}");
    }
    let total = 4 + 3 + 1;
    agg.wait_for("/v1/feed?limit=100", Duration::from_secs(20), |v| {
        v["entries"].as_array().unwrap().len() == total
    })
    .await;
    let (hits, _) = agg
        .wait_for("/v1/search?q=nostromo", Duration::from_secs(10), |v| {
            v["entries"].as_array().unwrap().len() == 6
        })
        .await;
    let feeds: std::collections::HashSet<_> = hits["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["feed"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(feeds.len(), 3, "{hits}");
    // The page carries the checker (no other request needed for it).
    let page = agg.text("/").await;
    assert!(
        page.contains("const ApiaryVerify"),
        "the page lacks the verifier"
    );

    if !apiary_tests::browser_tests_enabled() {
        eprintln!("browser part skipped: set APIARY_BROWSER_TESTS=1 (as .ci/run does) with Debian chromium installed");
        publisher.kill().await.unwrap();
        return;
    }
    let base = format!("{}/", agg.base);

    // Honest: every hit of the merged feed and of the search is verified.
    let res = apiary_tests::run_browser(&["verified", &base, "nostromo"]);
    assert_eq!(res["ok"], json!(true), "{res}");
    all_verified(&res["feed"], total as u64);
    all_verified(&res["search"], 6);

    // Tampered on the way: exactly the three altered hits are refused, each for its reason.
    let res = apiary_tests::run_browser(&["verified", &base, "nostromo", "tamper"]);
    assert_eq!(res["ok"], json!(true), "{res}");
    all_verified(&res["feed"], total as u64);
    let search = &res["search"];
    let t = &res["tampered"];
    assert_eq!(search["hits"], json!(6), "{res}");
    assert_eq!(search["unverified"], json!(3), "{res}");
    assert_eq!(search["verified"], json!(3), "{res}");
    assert_eq!(search["unchecked"], json!(0), "{res}");
    for (which, reason) in [
        ("flipped", "do not hash to the signed root"),
        ("otherFeed", "the proof is for feed"),
        ("forged", "the value shown is not the value the feed signed"),
    ] {
        let key = t[which]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no {which} tamper: {res}"));
        let m = mark(search, key);
        assert_eq!(m["state"], "unverified", "{which}: {m}");
        assert!(
            m["reason"].as_str().unwrap().contains(reason),
            "{which}: {m}"
        );
        assert!(
            m["text"].as_str().unwrap().starts_with("✗ not verified: "),
            "{m}"
        );
    }
    publisher.kill().await.unwrap();
}
