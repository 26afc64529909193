//! apiary-net: listening sockets that one hostile client cannot exhaust, shared by the
//! aggregator's HTTP API and replication port and the publisher's page and replication port.
//!
//! - [`gate`]: caps on open connections per client IP and in total; refusals counted and
//!   logged once per IP per minute;
//! - [`listen`]: a listen backlog sized for bursts, an accept loop that waits out EMFILE;
//! - [`fdlimit`]: the soft `RLIMIT_NOFILE` raised to the hard limit at start, caps fitted
//!   into it with descriptors kept back for the index and the store;
//! - [`http`]: an axum router served with a header-read timeout (also closing idle and
//!   half-open connections) and a stalled-write timeout;
//! - [`replication`]: the replication port (Noise handshake, then apiary-core replication).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use apiary_net::{gate::{Gate, Limits}, http, listen};
//! let gate = Gate::new("http", Limits { total: 1024, per_ip: 64 });
//! let listener = listen::GatedListener::new(listen::bind("127.0.0.1:8080".parse().unwrap())?, gate);
//! let task = http::serve(listener, axum::Router::new(), http::HttpTimeouts::default());
//! # task.await.ok(); Ok(()) }
//! ```

pub mod fdlimit;
pub mod gate;
pub mod http;
pub mod listen;
pub mod replication;
