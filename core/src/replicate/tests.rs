//! Rust writer ↔ Rust reader over real TCP on loopback.

use std::time::Duration;

use super::*;
use crate::error::Error;

fn rep(announce_all: bool) -> Replicator {
    Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all,
            replica: ReplicaOptions {
                request_timeout: Duration::from_secs(2),
                ..ReplicaOptions::default()
            },
        },
    )
}

#[tokio::test]
async fn read_write_live_and_truncate() {
    let server = rep(true);
    let writer = server.create_core(KeyPair::generate(), false).unwrap();
    let blocks: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("block {i}").into_bytes())
        .collect();
    writer.append(&blocks[..60]).unwrap();
    let (addr, _task) = server.listen("127.0.0.1:0").await.unwrap();

    let client = rep(false);
    let reader = client.replica(*writer.key()).unwrap();
    let conn = client.connect(&addr.to_string()).await.unwrap();
    conn.open(&reader).await.unwrap();
    assert_eq!(reader.update(Duration::from_secs(5)).await.unwrap(), 60);
    assert_eq!(reader.get(42).await.unwrap(), blocks[42]);
    assert_eq!(
        reader.store().block_count().unwrap(),
        1,
        "sparse: only the block asked for"
    );
    reader.download_range(0, 60, 16).await.unwrap();
    for (i, b) in blocks[..60].iter().enumerate() {
        assert_eq!(&reader.get(i as u64).await.unwrap(), b);
    }

    // Live: an append reaches the reader without polling.
    let mut head = reader.subscribe();
    writer.append(&blocks[60..]).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while head.borrow_and_update().length < 100 {
            head.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(reader.get(99).await.unwrap(), blocks[99]);

    // Truncation: the reader drops what was cut and says from where.
    writer.truncate(70).unwrap();
    writer.append(&[b"new 70".to_vec()]).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = *head.borrow_and_update();
            if ev.fork == 1 && ev.length == 71 {
                break;
            }
            if ev.fork == 1 {
                assert_eq!(ev.truncated_at, Some(70));
            }
            head.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(reader.get(70).await.unwrap(), b"new 70");
    assert_eq!(reader.get(69).await.unwrap(), blocks[69]);
    assert!(reader.store().block(80).unwrap().is_none());
}

#[tokio::test]
async fn compat_core_replicates() {
    let server = rep(true);
    let kp = KeyPair::generate();
    let writer = server.create_core(kp.clone(), true).unwrap();
    assert_eq!(writer.key().0, kp.public_key());
    writer.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
    let (addr, _task) = server.listen("127.0.0.1:0").await.unwrap();
    let client = rep(false);
    let reader = client.replica(*writer.key()).unwrap();
    let conn = client.connect(&addr.to_string()).await.unwrap();
    conn.open(&reader).await.unwrap();
    assert_eq!(reader.update(Duration::from_secs(5)).await.unwrap(), 2);
    assert_eq!(reader.get(1).await.unwrap(), b"b");
}

#[tokio::test]
async fn no_data_says_which_block_it_answers() {
    let server = rep(true);
    let writer = server.create_core(KeyPair::generate(), false).unwrap();
    writer.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
    let (addr, _task) = server.listen("127.0.0.1:0").await.unwrap();
    let client = rep(false);
    let reader = client.replica(*writer.key()).unwrap();
    let conn = client.connect(&addr.to_string()).await.unwrap();
    conn.open(&reader).await.unwrap();
    assert_eq!(reader.update(Duration::from_secs(5)).await.unwrap(), 2);
    let peer = reader.peers().pop().unwrap();
    // (request, the block its noData is about): a block past the length, an upgrade past
    // it, the hash of a node past it (node 9 spans blocks 4..8).
    let asks = [
        (
            crate::wire::messages::Request {
                block: Some((5, 0)),
                ..Default::default()
            },
            5,
        ),
        (
            crate::wire::messages::Request {
                upgrade: Some((2, 3)),
                ..Default::default()
            },
            2,
        ),
        (
            crate::wire::messages::Request {
                hash: Some((9, 0)),
                ..Default::default()
            },
            4,
        ),
    ];
    for (req, want) in asks {
        match peer.request(req.clone(), Duration::from_secs(5)).await {
            Err(Error::NotAvailable { seq }) => assert_eq!(seq, want, "{req:?}"),
            other => panic!("{req:?}: expected noData, got {other:?}"),
        }
    }
    assert!(!conn.is_closed(), "noData is an answer, not a failure");
}

/// What a `kill -9` leaves of a store: its files as they are on disk now, opened elsewhere.
fn crash_copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            crash_copy(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test]
async fn an_append_is_on_disk_before_peers_are_shown_it() {
    // A head a reader saw and the author then lost in a crash would be signed again over
    // other blocks by the next append: readers holding the first see two conflicting
    // signatures for one length (JS hypercore closes the core) and cannot follow it again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let rep = Replicator::new(Store::open(&path).unwrap(), ReplicatorOptions::default());
    let core = rep.create_core(KeyPair::generate(), false).unwrap();
    let head = core.subscribe();
    for n in 1..=5u64 {
        core.append(&[format!("block {n}").into_bytes()]).unwrap();
        assert_eq!(head.borrow().length, n, "published to peers");
        let copy = dir.path().join(format!("crash-{n}"));
        crash_copy(&path, &copy);
        let after = Store::open(&copy).unwrap();
        let record = after.core(core.key()).unwrap().record().unwrap();
        assert_eq!(
            record.head.length, n,
            "a crash now keeps the length peers saw"
        );
    }
}

/// Many tasks asking for one core at once get one replica object: a second one would take
/// the channel while the first waits for peers that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replica_calls_share_one_object() {
    for _ in 0..20 {
        let r = rep(false);
        let key = KeyPair::generate().public_key();
        let key = Key::from_bytes(key);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.replica(key).unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        let first = r.find(&key.discovery_key()).unwrap();
        for g in &got {
            assert!(Arc::ptr_eq(g, &first), "two replica objects for one core");
        }
    }
}

/// Appends `n` blocks to a writer served on loopback, and a reader (nothing fetched yet) that
/// knows its head.
async fn synced_reader(
    writer_opts: ReplicaOptions,
    n: u64,
) -> (Replicator, Arc<Replica>, Replicator, Arc<Replica>) {
    let server = Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all: true,
            replica: writer_opts,
        },
    );
    let writer = server.create_core(KeyPair::generate(), false).unwrap();
    let blocks: Vec<Vec<u8>> = (0..n).map(|i| format!("block {i}").into_bytes()).collect();
    writer.append(&blocks).unwrap();
    let (addr, task) = server.listen("127.0.0.1:0").await.unwrap();
    std::mem::forget(task); // serves until the test's runtime ends
    let client = rep(false);
    let reader = client.replica(*writer.key()).unwrap();
    let conn = client.connect(&addr.to_string()).await.unwrap();
    conn.open(&reader).await.unwrap();
    std::mem::forget(conn);
    assert_eq!(reader.update(Duration::from_secs(5)).await.unwrap(), n);
    (server, writer, client, reader)
}

async fn wait_length(reader: &Replica, length: u64) {
    let mut head = reader.subscribe();
    tokio::time::timeout(Duration::from_secs(5), async {
        while head.borrow_and_update().length < length {
            head.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_live_append_comes_with_its_upgrade() {
    let (_s, writer, _c, reader) = synced_reader(ReplicaOptions::default(), 10).await;
    assert_eq!(reader.store().block_count().unwrap(), 0);
    writer.append(&[b"new".to_vec()]).unwrap();
    wait_length(&reader, 11).await;
    // Stored by the upgrade itself, before anyone asked for it.
    assert_eq!(
        reader.store().block(10).unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(reader.store().block_count().unwrap(), 1);
}

#[tokio::test]
async fn a_peer_without_the_new_block_still_upgrades_us() {
    let no_blocks = ReplicaOptions {
        serve_blocks: false,
        ..ReplicaOptions::default()
    };
    let (_s, writer, _c, reader) = synced_reader(no_blocks, 10).await;
    writer.append(&[b"new".to_vec()]).unwrap();
    // The upgrade with its block is refused (noData); the upgrade alone is not.
    wait_length(&reader, 11).await;
    assert!(reader.store().block(10).unwrap().is_none());
}
