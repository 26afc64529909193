//! Our reader against our writer/server: restarts, several servers for one core, dial-in
//! publishers, and hostile clients.

use std::time::Duration;

use apiary_core::crypto::{self, KeyPair};
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::wire::messages::{ChannelHandshake, Message, Request};
use apiary_core::wire::mux::{self, Batch, MuxMessage};
use apiary_core::wire::secret_stream;
use apiary_tests::init_tracing;

fn blocks(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("block {i}").into_bytes()).collect()
}

fn reader() -> Replicator {
    Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default())
}

fn publisher(store: Store) -> Replicator {
    Replicator::new(
        store,
        ReplicatorOptions {
            announce_all: true,
            ..Default::default()
        },
    )
}

async fn open_store(path: &std::path::Path) -> Store {
    // sled holds a lock until every handle of the previous instance is gone.
    for _ in 0..100 {
        if let Ok(s) = Store::open(path) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Store::open(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_restarts_mid_session() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let kp = KeyPair::generate();
    let (key, port) = {
        let w = publisher(Store::open(dir.path()).unwrap());
        let core = w.create_core(kp.clone(), false).unwrap();
        core.append(&blocks(0..40)).unwrap();
        let (addr, task) = w.listen("127.0.0.1:0").await.unwrap();
        let r = reader();
        let rc = r.replica(*core.key()).unwrap();
        let conn = r.connect(&addr.to_string()).await.unwrap();
        conn.open(&rc).await.unwrap();
        assert_eq!(rc.update(Duration::from_secs(5)).await.unwrap(), 40);
        assert_eq!(rc.get(10).await.unwrap(), b"block 10");
        // The writer goes away mid-session.
        task.abort();
        for c in w.connections() {
            c.close();
        }
        assert!(tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .is_ok());
        w.store().flush().await.unwrap();
        (*core.key(), (r, rc, addr.port()))
    };
    let (r, rc, old_port) = port;
    // It comes back from its store, on the same port, and writes on.
    let w = publisher(open_store(dir.path()).await);
    let core = w.create_core(kp, false).unwrap();
    assert_eq!(*core.key(), key);
    assert_eq!(core.length(), 40, "restart-safe");
    core.append(&blocks(40..60)).unwrap();
    let (addr, _task) = w.listen(&format!("127.0.0.1:{old_port}")).await.unwrap();
    let conn = r.connect(&addr.to_string()).await.unwrap();
    conn.open(&rc).await.unwrap();
    assert_eq!(rc.update(Duration::from_secs(5)).await.unwrap(), 60);
    assert_eq!(rc.get(55).await.unwrap(), b"block 55");
    assert_eq!(rc.get(10).await.unwrap(), b"block 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_with_two_servers_for_one_core() {
    init_tracing();
    let w = publisher(Store::temporary().unwrap());
    let core = w.create_core(KeyPair::generate(), false).unwrap();
    core.append(&blocks(0..100)).unwrap();
    let (waddr, wtask) = w.listen("127.0.0.1:0").await.unwrap();

    // A mirror: downloads everything, then serves it too.
    let m = publisher(Store::temporary().unwrap());
    let mc = m.replica(*core.key()).unwrap();
    let c = m.connect(&waddr.to_string()).await.unwrap();
    c.open(&mc).await.unwrap();
    mc.update(Duration::from_secs(5)).await.unwrap();
    mc.download_range(0, 100, 32).await.unwrap();
    let (maddr, _mtask) = m.listen("127.0.0.1:0").await.unwrap();

    let r = reader();
    let rc = r.replica(*core.key()).unwrap();
    let mut conns = Vec::new();
    for a in [waddr, maddr] {
        let conn = r.connect(&a.to_string()).await.unwrap();
        conn.open(&rc).await.unwrap();
        conns.push(conn);
    }
    assert_eq!(rc.update(Duration::from_secs(5)).await.unwrap(), 100);
    for _ in 0..50 {
        if rc.peers().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rc.peers().len(), 2);
    rc.download_range(0, 50, 16).await.unwrap();
    // The writer disappears: its listener is gone, and so is the reader's connection to it.
    wtask.abort();
    assert!(
        wtask.await.is_err_and(|e| e.is_cancelled()),
        "the writer's listener task ended"
    );
    for c in w.connections() {
        c.close();
    }
    assert!(
        tokio::net::TcpStream::connect(waddr).await.is_err(),
        "the writer refuses connections"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), conns[0].closed())
        .await
        .expect("the reader's connection to the writer ended");
    eprintln!("the connection to the writer ended: {end:?}");
    assert!(!conns[1].is_closed(), "the mirror's connection is up");
    let t = std::time::Instant::now();
    while rc.peers().len() != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the reader still counts {} peers",
            rc.peers().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        rc.store().block_count().unwrap(),
        50,
        "the rest is not here yet"
    );
    // The mirror serves the rest.
    rc.download_range(50, 100, 16).await.unwrap();
    assert_eq!(rc.get(99).await.unwrap(), b"block 99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_dials_out_and_is_read_over_that_connection() {
    init_tracing();
    // The aggregator side listens and knows the key; the publisher (behind NAT) dials in.
    let agg = reader();
    let (addr, _task) = agg.listen("127.0.0.1:0").await.unwrap();
    let p = publisher(Store::temporary().unwrap());
    let core = p.create_core(KeyPair::generate(), false).unwrap();
    core.append(&blocks(0..10)).unwrap();
    let rc = agg.replica(*core.key()).unwrap();
    p.connect(&addr.to_string()).await.unwrap();
    assert_eq!(rc.update(Duration::from_secs(5)).await.unwrap(), 10);
    assert_eq!(rc.get(3).await.unwrap(), b"block 3");
    core.append(&blocks(10..11)).unwrap();
    let mut head = rc.subscribe();
    tokio::time::timeout(Duration::from_secs(5), async {
        while head.borrow_and_update().length < 11 {
            head.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_client_gets_answers_or_is_cut_off_and_others_are_served() {
    init_tracing();
    let w = publisher(Store::temporary().unwrap());
    let core = w.create_core(KeyPair::generate(), false).unwrap();
    core.append(&blocks(0..20)).unwrap();
    let (addr, _task) = w.listen("127.0.0.1:0").await.unwrap();

    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut s = secret_stream(sock, true, KeyPair::generate(), "server".into())
        .await
        .unwrap();
    let cap = crypto::capability(true, core.key().as_bytes(), &s.info.handshake_hash);
    let hs = ChannelHandshake {
        seeks: false,
        capability: cap,
    }
    .encode();
    s.outgoing
        .send(mux::encode_open(
            1,
            "hypercore/alpha",
            Some(core.discovery_key().as_bytes()),
            &hs,
        ))
        .await
        .unwrap();
    // Beyond the length, an absurd upgrade, a huge node count, then 5000 requests at once.
    let mut b = Batch::new();
    let mut reqs = vec![
        Request {
            id: 1,
            block: Some((1000, 0)),
            ..Default::default()
        },
        Request {
            id: 2,
            upgrade: Some((0, u64::MAX)),
            ..Default::default()
        },
        Request {
            id: 3,
            block: Some((1, u64::MAX)),
            ..Default::default()
        },
        Request {
            id: 4,
            hash: Some((u64::MAX, 3)),
            ..Default::default()
        },
    ];
    for id in 5..5005 {
        reqs.push(Request {
            id,
            block: Some((id % 20, 0)),
            upgrade: Some((0, 20)),
            ..Default::default()
        });
    }
    for r in &reqs {
        b.push(1, 1, &Message::Request(r.clone()).encode());
    }
    s.outgoing.send(b.finish().unwrap()).await.unwrap();
    let mut answered = std::collections::HashSet::new();
    let mut no_data = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answered.len() < reqs.len() {
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, s.incoming.recv()).await else {
            break;
        };
        for m in mux::decode_frame(&frame).unwrap() {
            if let MuxMessage::Message { ty, payload, .. } = m {
                match Message::decode(ty, &payload).unwrap() {
                    Some(Message::Data(d)) => {
                        answered.insert(d.request);
                    }
                    Some(Message::NoData { request, .. }) => {
                        answered.insert(request);
                        no_data += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(answered.len(), reqs.len(), "every request answered");
    assert!(no_data >= 4, "the bad ones got noData ({no_data})");

    // Garbage ends that session, and the server goes on serving others.
    s.outgoing.send(vec![0, 1, 0xff, 0xff]).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = s.incoming.recv().await {}
    })
    .await;
    assert!(end.is_ok(), "server closed the garbage session");
    let r = reader();
    let rc = r.replica(*core.key()).unwrap();
    let conn = r.connect(&addr.to_string()).await.unwrap();
    conn.open(&rc).await.unwrap();
    assert_eq!(rc.update(Duration::from_secs(5)).await.unwrap(), 20);
    assert_eq!(rc.get(19).await.unwrap(), b"block 19");
}
