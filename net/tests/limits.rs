//! Real sockets on loopback against a served router: caps per IP and in total, the header
//! timeout (slowloris and idle keep-alive), and a client that stops reading.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use apiary_net::gate::{Gate, Limits};
use apiary_net::http::{self, HttpTimeouts};
use apiary_net::listen::{bind, GatedListener};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(limits: Limits, timeouts: HttpTimeouts) -> (SocketAddr, std::sync::Arc<Gate>) {
    let gate = Gate::new("test", limits);
    let l = GatedListener::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), gate.clone());
    let addr = l.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/big",
        get(|| async { axum::body::Body::from(vec![b'x'; 64 << 20]) }),
    );
    http::serve(l, router, timeouts);
    (addr, gate)
}

async fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{src}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Whether the server closes `c` within `within` (EOF or reset on read).
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (e.g. 408); keep reading to the end
            Err(_) => return false,
        }
    }
}

async fn get_ok(c: &mut TcpStream) -> bool {
    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let (addr, gate) = start(
        Limits {
            total: 8,
            per_ip: 3,
        },
        HttpTimeouts::default(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.2", addr).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap(); // never finished
        held.push(c);
    }
    // Over its cap: closed at once.
    let mut extra = connect_from("127.0.0.2", addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    // Another address is served meanwhile.
    let mut probe = connect_from("127.0.0.1", addr).await;
    assert!(get_ok(&mut probe).await);
    let s = gate.stats();
    assert_eq!(s.refused_per_ip, 1, "{s:?}");
    assert_eq!(s.open, 4, "{s:?}");
    // Fill the listener: everyone is refused, whoever they are.
    for i in 3..10 {
        held.push(connect_from(&format!("127.0.0.{i}"), addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = connect_from("127.0.0.99", addr).await;
    assert!(closed_within(&mut late, Duration::from_secs(2)).await);
    assert!(gate.stats().refused_total >= 1);
    // Places come back when connections end.
    held.clear();
    drop(probe);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.2", addr).await;
    assert!(get_ok(&mut again).await);
}

#[tokio::test]
async fn slow_heads_and_idle_keep_alives_are_closed() {
    let t = HttpTimeouts {
        header: Duration::from_millis(500),
        write: Duration::from_secs(30),
    };
    let (addr, gate) = start(
        Limits {
            total: 100,
            per_ip: 100,
        },
        t,
    )
    .await;
    // A head that never ends.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "slowloris closed"
    );
    // A keep-alive connection after its request, then silence.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(get_ok(&mut idle).await);
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "idle closed"
    );
    // Nothing connected is left, and a new client is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gate.stats().open, 0);
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(get_ok(&mut c).await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let t = HttpTimeouts {
        header: Duration::from_secs(10),
        write: Duration::from_millis(500),
    };
    let (addr, gate) = start(
        Limits {
            total: 100,
            per_ip: 100,
        },
        t,
    )
    .await;
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let mut c = s.connect(addr).await.unwrap();
    c.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes stall, and it gives up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gate.stats().open > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled connection was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
}
