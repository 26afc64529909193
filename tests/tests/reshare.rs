//! `reshare`: an aggregator serves the blocks it holds of the feeds it follows to other
//! peers (on by default), so a second aggregator can follow a bee through it while the
//! author is offline; with `reshare = false` it still serves lengths and tree nodes but
//! answers every block request "not available".

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{ensure_js, js_bee, JsPeer};

/// Aggregator A (with `a_config`) follows a JS bee of 50 posts; then the JS peer stops and
/// aggregator B follows the bee through A alone. Returns B's feed status once B knows the
/// bee's length and has either indexed it or failed to fetch a block.
async fn follow_through_a(a_config: &str) -> serde_json::Value {
    ensure_js();
    let (_d, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let key = js_bee(&mut js, "bee", 50, 40).await;
    let port = js.serve().await;
    let a = AggProc::start(dir.join("a"), a_config).await;
    let (s, v) = a.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201, "{v}");
    a.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(20), |v| {
        v["indexedVersion"] == 51
    })
    .await;
    js.close().await;

    let b = AggProc::start(dir.join("b"), "").await;
    let (s, v) = b.follow(&key, Some(&a.listen)).await;
    assert_eq!(s, 201, "{v}");
    let (status, _) = b
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
            v["remoteLength"] == 51 && (v["indexedVersion"] == 51 || v["errors"].as_u64() > Some(0))
        })
        .await;
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_aggregator_follows_a_bee_through_the_first() {
    let status = follow_through_a("").await;
    assert_eq!(status["indexedVersion"], 51, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_reshare_blocks_are_not_served_but_the_length_is() {
    let status = follow_through_a("reshare = false").await;
    assert_eq!(status["remoteLength"], 51, "{status}");
    assert_eq!(status["indexedVersion"], 0, "{status}");
    assert_eq!(status["blocksDownloaded"], 0, "{status}");
}
