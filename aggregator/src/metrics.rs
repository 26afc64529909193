//! `/metrics`: a Prometheus registry (the official `prometheus-client`) and its families.
//!
//! Most values live elsewhere (replica and gate counters, the DHT bridge, the index, each
//! feed's status): every scrape copies them into the families, then encodes them. Per feed
//! the same numbers as `GET /v1/feeds/{key}`, labelled `feed` (z-base-32 key); an unfollowed
//! feed's series are dropped at the next scrape.
//!
//! Served in the Prometheus text format 0.0.4, not OpenMetrics: in OpenMetrics the counter
//! `apiary_dht_connections_total` and the gauge `apiary_dht_connections` would be one family
//! name, and both names are kept as they were.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::Aggregator;

/// The `Content-Type` of what [`Exporter::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkippedLabels {
    feed: String,
    reason: &'static str,
}

/// Gauges and counters of one kind of labels.
type Gauges<L> = Family<L, Gauge>;
type Counters<L> = Family<L, Counter>;

/// The families, and the registry that encodes them.
#[derive(Default)]
struct Families {
    feeds_followed: Gauge,
    entries_indexed: Gauge,
    entries_ingested: Counter,
    blocks_dropped: Counter,
    ingest_errors: Counter,
    blocks_downloaded: Counter,
    bytes_downloaded: Counter,
    connections: Gauge,
    open_files_limit: Gauges<KindLabel>,
    listener_connections: Gauges<ListenerLabel>,
    connections_refused: Counters<RefusedLabels>,
    degraded: Gauges<SourceLabel>,
    dht_up: Gauge,
    dht_topics: Gauge,
    dht_lookups: Counter,
    dht_connections_total: Counter,
    dht_connections: Gauge,
    dht_bridge_restarts: Counter,
    dht_bridge_rss_bytes: Gauge,
    feed_length: Gauges<FeedLabel>,
    feed_remote_length: Gauges<FeedLabel>,
    feed_indexed_version: Gauges<FeedLabel>,
    feed_lag: Gauges<FeedLabel>,
    feed_peers: Gauges<FeedLabel>,
    feed_blocks: Counters<FeedLabel>,
    feed_bytes: Counters<FeedLabel>,
    feed_errors: Counters<FeedLabel>,
    feed_skipped: Counters<SkippedLabels>,
    cluster_stream_lag: Gauge,
    cluster_stream_sequence: Gauge,
    cluster_lease_moves: Counter,
    cluster_shards_held: Gauge,
    cluster_links_published: Counter,
    cluster_links_applied: Counter,
}

/// The registry of `/metrics`.
pub struct Exporter {
    registry: Registry,
    f: Families,
    /// One scrape at a time: a scrape clears and refills the per-feed families.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

/// Counters register without `_total`: the encoder adds it.
fn register(r: &mut Registry, f: &Families) {
    r.register(
        "apiary_cluster_stream_lag",
        "Cluster mode: links in the entry log this indexer has not committed yet",
        f.cluster_stream_lag.clone(),
    );
    r.register(
        "apiary_cluster_stream_sequence",
        "Cluster mode: the entry log sequence committed with this indexer's index",
        f.cluster_stream_sequence.clone(),
    );
    r.register(
        "apiary_cluster_lease_moves",
        "Cluster mode: shard leases this node took or gave up",
        f.cluster_lease_moves.clone(),
    );
    r.register(
        "apiary_cluster_shards_held",
        "Cluster mode: shard leases this node holds",
        f.cluster_shards_held.clone(),
    );
    r.register(
        "apiary_cluster_links_published",
        "Cluster mode: entry log links this follower published",
        f.cluster_links_published.clone(),
    );
    r.register(
        "apiary_cluster_links_applied",
        "Cluster mode: entry log links this indexer applied",
        f.cluster_links_applied.clone(),
    );
    r.register(
        "apiary_feeds_followed",
        "Feeds followed",
        f.feeds_followed.clone(),
    );
    r.register(
        "apiary_entries_indexed",
        "Entries in the index",
        f.entries_indexed.clone(),
    );
    r.register(
        "apiary_entries_ingested",
        "Log entries ingested",
        f.entries_ingested.clone(),
    );
    r.register(
        "apiary_blocks_dropped",
        "Block payloads dropped once indexed (retention = index-only)",
        f.blocks_dropped.clone(),
    );
    r.register(
        "apiary_ingest_errors",
        "Ingest errors",
        f.ingest_errors.clone(),
    );
    r.register(
        "apiary_blocks_downloaded",
        "Blocks downloaded and verified",
        f.blocks_downloaded.clone(),
    );
    r.register(
        "apiary_bytes_downloaded",
        "Block bytes downloaded",
        f.bytes_downloaded.clone(),
    );
    r.register(
        "apiary_connections",
        "Replication connections",
        f.connections.clone(),
    );
    r.register(
        "apiary_open_files_limit",
        "The open file limit (RLIMIT_NOFILE)",
        f.open_files_limit.clone(),
    );
    r.register(
        "apiary_listener_connections",
        "Connections open per listener",
        f.listener_connections.clone(),
    );
    r.register(
        "apiary_connections_refused",
        "Connections closed at once because a cap was reached",
        f.connections_refused.clone(),
    );
    r.register(
        "apiary_degraded",
        "Whether ingest is paused for this reason (1) or not (0); reads are served either way",
        f.degraded.clone(),
    );
    r.register(
        "apiary_dht_up",
        "Whether the DHT bridge runs (1) or not (0)",
        f.dht_up.clone(),
    );
    r.register(
        "apiary_dht_topics",
        "Discovery keys joined on the DHT",
        f.dht_topics.clone(),
    );
    r.register(
        "apiary_dht_lookups",
        "DHT lookups made by the current bridge",
        f.dht_lookups.clone(),
    );
    r.register(
        "apiary_dht_connections",
        "Connections hyperswarm handed over since start",
        f.dht_connections_total.clone(),
    );
    r.register(
        "apiary_dht_connections",
        "DHT connections open now",
        f.dht_connections.clone(),
    );
    r.register(
        "apiary_dht_bridge_restarts",
        "Times the DHT bridge was restarted",
        f.dht_bridge_restarts.clone(),
    );
    r.register(
        "apiary_dht_bridge_rss_bytes",
        "Resident memory of the DHT bridge",
        f.dht_bridge_rss_bytes.clone(),
    );
    r.register(
        "apiary_feed_length",
        "Blocks of the feed known here",
        f.feed_length.clone(),
    );
    r.register(
        "apiary_feed_remote_length",
        "The feed's length as its peers announce it",
        f.feed_remote_length.clone(),
    );
    r.register(
        "apiary_feed_indexed_version",
        "The feed's version covered by the committed index",
        f.feed_indexed_version.clone(),
    );
    r.register(
        "apiary_feed_lag",
        "Blocks of the feed not yet indexed",
        f.feed_lag.clone(),
    );
    r.register(
        "apiary_feed_peers",
        "Peers connected for the feed",
        f.feed_peers.clone(),
    );
    r.register(
        "apiary_feed_blocks_downloaded",
        "Blocks of the feed downloaded since start",
        f.feed_blocks.clone(),
    );
    r.register(
        "apiary_feed_bytes_downloaded",
        "Block bytes of the feed downloaded since start",
        f.feed_bytes.clone(),
    );
    r.register(
        "apiary_feed_errors",
        "Ingest errors of the feed",
        f.feed_errors.clone(),
    );
    r.register(
        "apiary_feed_skipped_values",
        "Values of the feed not indexed (reason: too_large, not_json)",
        f.feed_skipped.clone(),
    );
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sets a counter to a value counted elsewhere.
fn mirror(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}

impl Exporter {
    /// Registers every family, and the histograms observed where they happen.
    pub fn new(commit_seconds: Histogram) -> Exporter {
        let f = Families::default();
        let mut registry = Registry::default();
        register(&mut registry, &f);
        registry.register(
            "apiary_index_commit_seconds",
            "Index commits: from a commit's start until its entries are searchable (commit and reader reload)",
            commit_seconds,
        );
        Exporter {
            registry,
            f,
            scrape: Mutex::new(()),
        }
    }

    /// Copies the current values in and encodes them.
    pub async fn render(&self, a: &Aggregator) -> String {
        let dht = a.discovery.stats().await;
        let feeds: Vec<Value> = a
            .followed()
            .unwrap_or_default()
            .iter()
            .filter_map(|k| a.status(k).ok().flatten())
            .collect();
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let f = &self.f;
        f.feeds_followed.set(gauge(feeds.len() as u64));
        f.entries_indexed.set(gauge(a.index.entry_count()));
        mirror(
            &f.entries_ingested,
            a.metrics.entries_ingested.load(Ordering::Relaxed),
        );
        mirror(
            &f.blocks_dropped,
            a.metrics.blocks_dropped.load(Ordering::Relaxed),
        );
        mirror(
            &f.ingest_errors,
            a.metrics.ingest_errors.load(Ordering::Relaxed),
        );
        if let Some(c) = &a.cluster {
            let m = &c.metrics;
            let committed = a
                .index
                .checkpoint(crate::cluster::STREAM_CHECKPOINT)
                .version;
            f.cluster_stream_sequence.set(gauge(committed));
            if c.is_indexer() {
                let last = m.stream_last.load(Ordering::Relaxed);
                f.cluster_stream_lag
                    .set(gauge(last.saturating_sub(committed)));
            }
            mirror(
                &f.cluster_lease_moves,
                m.lease_moves.load(Ordering::Relaxed),
            );
            f.cluster_shards_held
                .set(gauge(m.shards_held.load(Ordering::Relaxed)));
            mirror(
                &f.cluster_links_published,
                m.links_published.load(Ordering::Relaxed),
            );
            mirror(
                &f.cluster_links_applied,
                m.links_applied.load(Ordering::Relaxed),
            );
        }
        let (mut blocks, mut bytes) = (0u64, 0u64);
        for r in a.replicator().replicas() {
            blocks += r.stats.blocks.load(Ordering::Relaxed);
            bytes += r.stats.bytes.load(Ordering::Relaxed);
        }
        mirror(&f.blocks_downloaded, blocks);
        mirror(&f.bytes_downloaded, bytes);
        f.connections
            .set(gauge(a.replicator().connections().len() as u64));
        let (fd, gates) = a.net();
        if let Some(fd) = fd {
            let limit = |kind| f.open_files_limit.get_or_create(&KindLabel { kind });
            limit("soft").set(gauge(fd.soft));
            limit("hard").set(gauge(fd.hard));
        }
        for g in &gates {
            let st = g.stats();
            let listener = g.name().to_owned();
            f.listener_connections
                .get_or_create(&ListenerLabel {
                    listener: listener.clone(),
                })
                .set(gauge(st.open as u64));
            for (reason, n) in [("per_ip", st.refused_per_ip), ("total", st.refused_total)] {
                let l = RefusedLabels {
                    listener: listener.clone(),
                    reason,
                };
                mirror(&f.connections_refused.get_or_create(&l), n);
            }
        }
        for source in crate::health::SOURCES {
            f.degraded
                .get_or_create(&SourceLabel { source })
                .set(i64::from(a.health.is_set(source)));
        }
        if let Some(d) = dht {
            let b = d.bridge.unwrap_or_default();
            let n = |k: &str| b[k].as_u64().unwrap_or(0);
            f.dht_up
                .set(i64::from(d.state == apiary_swarm::State::Running));
            f.dht_topics.set(gauge(d.topics as u64));
            mirror(&f.dht_lookups, n("lookups"));
            mirror(&f.dht_connections_total, d.sessions);
            f.dht_connections.set(gauge(n("open")));
            mirror(&f.dht_bridge_restarts, d.restarts);
            f.dht_bridge_rss_bytes.set(gauge(n("rss")));
        }
        self.feeds(&feeds);
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("encoding /metrics failed: {e}");
        }
        out
    }

    /// The per-feed families, from each feed's status (`GET /v1/feeds/{key}`).
    fn feeds(&self, feeds: &[Value]) {
        let f = &self.f;
        f.feed_length.clear();
        f.feed_remote_length.clear();
        f.feed_indexed_version.clear();
        f.feed_lag.clear();
        f.feed_peers.clear();
        f.feed_blocks.clear();
        f.feed_bytes.clear();
        f.feed_errors.clear();
        f.feed_skipped.clear();
        for st in feeds {
            let Some(feed) = st["key"].as_str() else {
                continue;
            };
            let n = |v: &Value| v.as_u64().unwrap_or(0);
            let l = FeedLabel {
                feed: feed.to_owned(),
            };
            f.feed_length.get_or_create(&l).set(gauge(n(&st["length"])));
            f.feed_remote_length
                .get_or_create(&l)
                .set(gauge(n(&st["remoteLength"])));
            f.feed_indexed_version
                .get_or_create(&l)
                .set(gauge(n(&st["indexedVersion"])));
            f.feed_lag.get_or_create(&l).set(gauge(n(&st["lag"])));
            let peers = st["connectedPeers"].as_array().map_or(0, Vec::len);
            f.feed_peers.get_or_create(&l).set(gauge(peers as u64));
            mirror(&f.feed_blocks.get_or_create(&l), n(&st["blocksDownloaded"]));
            mirror(&f.feed_bytes.get_or_create(&l), n(&st["bytesDownloaded"]));
            mirror(&f.feed_errors.get_or_create(&l), n(&st["errors"]));
            for (reason, field) in [("too_large", "tooLarge"), ("not_json", "notJson")] {
                let s = SkippedLabels {
                    feed: feed.to_owned(),
                    reason,
                };
                mirror(&f.feed_skipped.get_or_create(&s), n(&st["skipped"][field]));
            }
        }
    }
}
