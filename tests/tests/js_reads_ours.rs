//! JS hyperbee (plain hypercore 11 + hyperbee 2, no compat flag) reads bees written and served
//! by our writer, and gets the same answers as our own reader.

use std::time::Duration;

use apiary_core::bee::BeeWriter;
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_tests::bee_compare::{compare_everything, fill_rust};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_reads_a_bee_we_wrote() {
    init_tracing();
    let rep = Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all: true,
            ..Default::default()
        },
    );
    let mut bees = Vec::new();
    for compat in [false, true] {
        let w = BeeWriter::new(rep.create_core(KeyPair::generate(), compat).unwrap()).unwrap();
        fill_rust(&w).await;
        bees.push(w);
    }
    let (addr, _task) = rep.listen("127.0.0.1:0").await.unwrap();

    let mut js = JsPeer::start().await;
    js.call(json!({"cmd": "connect", "port": addr.port()}))
        .await;
    for (i, w) in bees.iter().enumerate() {
        let name = format!("ours{i}");
        let key = w.bee().core().key().to_hex();
        let opened = js
            .call(json!({"cmd": "open", "name": name, "key": key}))
            .await;
        assert_eq!(
            opened["length"],
            json!(w.bee().core().length()),
            "JS sees our length"
        );
        compare_everything(&mut js, &name, w.bee()).await;

        // A live history stream on the JS side sees new puts.
        let from = w.bee().version();
        js.call(json!({"cmd": "live", "name": name, "gte": from}))
            .await;
        for n in 0..3 {
            w.put(format!("live{n}").as_bytes(), br#"{"title":"live"}"#)
                .await
                .unwrap();
        }
        let seen = js
            .wait_event(
                |e| e["name"] == json!(name) && e["entry"]["key"] == json!("live2"),
                Duration::from_secs(10),
            )
            .await;
        assert!(seen.is_some(), "live history on JS saw our put");
    }
    js.close().await;
}
