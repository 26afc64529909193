//! Hostile peers: each breaks the protocol in one way. The session must end with a clear
//! error, nothing unverified may reach the store, and other sessions must keep working.

use std::sync::Arc;
use std::time::Duration;

use apiary_core::crypto::KeyPair;
use apiary_core::error::Error;
use apiary_core::replicate::{Replica, ReplicaOptions, Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_tests::evil::{self, Evil};
use apiary_tests::{init_tracing, wait_until};

fn replicator(timeout: Duration, announce_all: bool) -> Replicator {
    Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all,
            replica: ReplicaOptions {
                request_timeout: timeout,
                max_attempts: 3,
                ..ReplicaOptions::default()
            },
        },
    )
}

/// A real core of 50 blocks written by our writer, served honestly on its own port.
async fn honest() -> (Replicator, Arc<Replica>, String) {
    let server = replicator(Duration::from_secs(2), true);
    let core = server.create_core(KeyPair::generate(), false).unwrap();
    let blocks: Vec<Vec<u8>> = (0..50).map(|i| format!("block {i}").into_bytes()).collect();
    core.append(&blocks).unwrap();
    let (addr, _task) = server.listen("127.0.0.1:0").await.unwrap();
    std::mem::forget(_task);
    (server, core, addr.to_string())
}

async fn attack(evil: Evil) {
    init_tracing();
    let (_server, victim_core, _) = honest().await;
    let evil_srv = evil::serve(victim_core.clone(), evil).await;
    // An unrelated, honest core on another connection of the same reader.
    let (_other_server, other_core, other_addr) = honest().await;

    let reader = replicator(Duration::from_secs(1), false);
    let core = reader.replica(*victim_core.key()).unwrap();
    let other = reader.replica(*other_core.key()).unwrap();
    let good = reader.connect(&other_addr).await.unwrap();
    good.open(&other).await.unwrap();
    let bad = reader.connect(&evil_srv.addr).await.unwrap();
    // (A garbage peer may already have been cut off: then the open finds the connection gone.)
    let _ = bad.open(&core).await;

    let _ = core.update(Duration::from_secs(3)).await;
    let got = core.get(7).await;
    assert!(got.is_err(), "{evil:?}: a block came through: {got:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), bad.closed()).await;
    match evil {
        Evil::Silent => {
            assert!(end.is_err(), "a silent peer is not a protocol error");
            assert!(
                evil_srv.ignored() > 0,
                "the reader's requests reached the silent peer and went unanswered"
            );
        }
        _ => {
            let reason = end
                .expect("hostile session ended")
                .expect_err("with an error");
            eprintln!(
                "{evil:?}: session ended after {} requests: {reason}",
                evil_srv.requests()
            );
            assert!(!reason.is_empty());
            if !matches!(evil, Evil::Garbage | Evil::WrongCapability) {
                assert!(
                    evil_srv.requests() > 0,
                    "{evil:?}: it broke an answer, so it was asked"
                );
            }
        }
    }
    assert_eq!(
        core.store().block_count().unwrap(),
        0,
        "{evil:?}: nothing unverified stored"
    );
    if evil != Evil::BadProof {
        // (BadProof tampers only with blocks: its signed head is genuine and may be kept.)
        assert_eq!(core.length(), 0, "{evil:?}: no unverified head");
    }
    assert!(
        core.store().node(14).unwrap().is_none(),
        "{evil:?}: no unverified nodes"
    );

    // The other session still serves.
    assert_eq!(other.update(Duration::from_secs(3)).await.unwrap(), 50);
    assert_eq!(other.get(49).await.unwrap(), b"block 49");
    assert!(!good.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_session_stays_open_and_stores_nothing() {
    attack(Evil::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames() {
    attack(Evil::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_capability() {
    attack(Evil::WrongCapability).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_with_bad_proof() {
    attack(Evil::BadProof).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature() {
    attack(Evil::BadSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_signature() {
    attack(Evil::ForeignSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_fork() {
    attack(Evil::UnsignedFork).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out_and_another_peer_serves() {
    init_tracing();
    let (_server, core_w, honest_addr) = honest().await;
    let silent_srv = evil::serve(core_w.clone(), Evil::Silent).await;
    let reader = replicator(Duration::from_millis(500), false);
    let core = reader.replica(*core_w.key()).unwrap();
    // The silent peer first: the first request (the upgrade to its length) goes to it.
    let silent = reader.connect(&silent_srv.addr).await.unwrap();
    silent.open(&core).await.unwrap();
    wait_until(
        "the silent peer got the first request",
        Duration::from_secs(5),
        || silent_srv.ignored() >= 1,
    )
    .await;
    let honest = reader.connect(&honest_addr).await.unwrap();
    honest.open(&core).await.unwrap();
    assert_eq!(core.update(Duration::from_secs(5)).await.unwrap(), 50);
    for seq in [3u64, 30, 49] {
        assert_eq!(
            core.get(seq).await.unwrap(),
            format!("block {seq}").into_bytes()
        );
    }
    // With only the silent peer left, a get fails with a timeout, not a hang.
    honest.close();
    tokio::time::timeout(Duration::from_secs(5), honest.closed())
        .await
        .expect("the honest connection closed")
        .expect("a clean close");
    wait_until(
        "the reader dropped the honest peer",
        Duration::from_secs(5),
        || core.peers().len() == 1,
    )
    .await;
    assert!(!silent.is_closed(), "the silent peer is still connected");
    let t = std::time::Instant::now();
    let asked = silent_srv.ignored();
    let e = core.get(10).await.unwrap_err();
    eprintln!("silent peer only: {e} after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, Error::Timeout { .. }), "a timeout: {e}");
    assert!(
        silent_srv.ignored() > asked,
        "the get asked the silent peer ({asked} ignored before, {} after)",
        silent_srv.ignored()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_download_gets_past_a_silent_and_a_lying_peer() {
    init_tracing();
    let (_server, core_w, honest_addr) = honest().await;
    let silent = evil::serve(core_w.clone(), Evil::Silent).await;
    let liar = evil::serve(core_w.clone(), Evil::BadProof).await;
    let reader = replicator(Duration::from_millis(500), false);
    let core = reader.replica(*core_w.key()).unwrap();
    let mut conns = Vec::new();
    // The hostile peers join after the first update, with clean records, so the range's
    // requests are spread over all three.
    for a in [&honest_addr, &silent.addr, &liar.addr] {
        let c = reader.connect(a).await.unwrap();
        c.open(&core).await.unwrap();
        conns.push(c);
        if conns.len() == 1 {
            assert_eq!(core.update(Duration::from_secs(5)).await.unwrap(), 50);
        }
    }
    for _ in 0..50 {
        if core.peers().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(core.peers().len(), 3, "all three peers joined");
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), core.download_range(0, 50, 16))
        .await
        .expect("the range finishes")
        .expect("every block comes from the honest peer");
    eprintln!(
        "range of 50 with a silent and a lying peer: {:?}",
        t.elapsed()
    );
    assert_eq!(core.store().block_count().unwrap(), 50);
    for seq in 0..50u64 {
        assert_eq!(
            core.store().block(seq).unwrap().unwrap(),
            format!("block {seq}").into_bytes()
        );
    }
    assert!(silent.ignored() > 0, "the range asked the silent peer too");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the silent peer's requests waited for their timeout"
    );
    let liar_end = tokio::time::timeout(Duration::from_secs(5), conns[2].closed()).await;
    assert!(
        liar_end.is_ok_and(|r| r.is_err()),
        "the lying peer's session ended with an error"
    );
    assert!(!conns[0].is_closed(), "the honest session goes on");
}

/// A sync's length is only a claim: a peer that claims far more than the author wrote, and
/// never answers, must not hold up the head the honest peers have, neither when a follower
/// first updates nor when the author appends while it follows live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_longer_core_does_not_hold_up_the_honest_ones() {
    init_tracing();
    let (_server, core_w, honest_addr) = honest().await;
    let liar = evil::serve(core_w.clone(), Evil::Overclaim).await;
    let reader = replicator(Duration::from_millis(500), false);
    let core = reader.replica(*core_w.key()).unwrap();
    let bad = reader.connect(&liar.addr).await.unwrap();
    bad.open(&core).await.unwrap();
    let good = reader.connect(&honest_addr).await.unwrap();
    good.open(&core).await.unwrap();
    wait_until("both peers synced", Duration::from_secs(5), || {
        let p = core.peers();
        p.len() == 2 && p.iter().all(|p| p.remote().length > 0)
    })
    .await;
    // The first update: the liar is asked first (it claims the most) and times out.
    let t = std::time::Instant::now();
    let _ = core.update(Duration::from_secs(5)).await;
    assert_eq!(core.length(), 50, "the honest head after {:?}", t.elapsed());
    assert!(liar.ignored() >= 1, "the liar was asked");
    // Live: another liar joins; the follower asks it at once (an upgrade at a time), and the
    // author appends meanwhile: the honest peer's sync comes while that upgrade is out, so
    // the failed upgrade must be tried again for the follower to get the new head (no other
    // sync comes, and update is not called).
    let liar2 = evil::serve(core_w.clone(), Evil::Overclaim).await;
    let bad2 = reader.connect(&liar2.addr).await.unwrap();
    bad2.open(&core).await.unwrap();
    wait_until("the new liar was asked", Duration::from_secs(5), || {
        liar2.ignored() >= 1
    })
    .await;
    core_w.append(&[b"block 50".to_vec()]).unwrap();
    wait_until("the live append arrived", Duration::from_secs(5), || {
        core.length() == 51
    })
    .await;
    assert_eq!(core.get(50).await.unwrap(), b"block 50");
}

/// Without live upgrades, `update` alone gets past the liar: its failed attempt is tried again
/// on the honest peer, and the liar's claim beyond that does not make the update an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_gets_past_a_peer_claiming_a_longer_core() {
    init_tracing();
    let (_server, core_w, honest_addr) = honest().await;
    let liar = evil::serve(core_w.clone(), Evil::Overclaim).await;
    let reader = Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all: false,
            replica: ReplicaOptions {
                request_timeout: Duration::from_millis(500),
                max_attempts: 3,
                auto_upgrade: false,
                ..ReplicaOptions::default()
            },
        },
    );
    let core = reader.replica(*core_w.key()).unwrap();
    for addr in [&liar.addr, &honest_addr] {
        let c = reader.connect(addr).await.unwrap();
        c.open(&core).await.unwrap();
        std::mem::forget(c);
    }
    wait_until("both peers synced", Duration::from_secs(5), || {
        let p = core.peers();
        p.len() == 2 && p.iter().all(|p| p.remote().length > 0)
    })
    .await;
    assert_eq!(core.update(Duration::from_secs(5)).await.unwrap(), 50);
    assert!(liar.ignored() >= 1, "the liar was asked first");
    assert_eq!(core.get(49).await.unwrap(), b"block 49");
}

/// Once a peer claiming more than it has has failed, live appends are not held up by it: it
/// is not asked again after every sync (each time holding the honest upgrades back for a
/// request timeout, 1.75 s per append here before the change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_appends_are_not_held_up_by_a_peer_claiming_more() {
    init_tracing();
    let (_server, core_w, honest_addr) = honest().await;
    let liar = evil::serve(core_w.clone(), Evil::Overclaim).await;
    let reader = replicator(Duration::from_secs(2), false);
    let core = reader.replica(*core_w.key()).unwrap();
    for addr in [&liar.addr, &honest_addr] {
        let c = reader.connect(addr).await.unwrap();
        c.open(&core).await.unwrap();
        std::mem::forget(c);
    }
    assert_eq!(core.update(Duration::from_secs(10)).await.unwrap(), 50);
    let asked = liar.ignored();
    assert!(asked >= 1, "the liar was asked");
    for i in 0..10u64 {
        core_w
            .append(&[format!("block {}", 50 + i).into_bytes()])
            .unwrap();
        wait_until("the append arrived", Duration::from_secs(10), || {
            core.length() == 51 + i
        })
        .await;
    }
    assert_eq!(
        liar.ignored(),
        asked,
        "the liar was asked again while following"
    );
}
