//! Client side of the aggregator benchmark (`run-aggregator.sh`): drives a running
//! `apiary-aggregator` over its HTTP API and measures it. Every subcommand prints one JSON line.
//!
//!   agg-client ingest  --http URL --keys FILE --peer ADDR --entries N [--pid PID] ...
//!       POST /v1/feeds {key, peers: [ADDR]} for every key of FILE (`--concurrency` at a time),
//!       then polls until everything is indexed: with at most `--per-feed-max` keys, until
//!       GET /v1/feeds/{key} shows indexedVersion == length (and length == `--length` if
//!       given) for every key; with more, until /metrics shows apiary_entries_indexed >= N.
//!       With `--pid`, samples the aggregator's /proc figures (CPU, VmRSS, VmHWM, fds) at every
//!       poll. Reports follow and index times, entries/s, the aggregator's CPU over the ingest
//!       and its memory and fds (peak while polling and at the end).
//!   agg-client live    --http URL --key KEY --count 1000 --first 1000 [--search-every 10]
//!       Subscribes to GET /v1/stream?feed=KEY (SSE), prints {"ready": true} once subscribed,
//!       then records, for each entry event, our CLOCK_MONOTONIC minus the writer's `pubNs`
//!       (CLOCK_MONOTONIC just before its put, in the value). With `--search-every K`, every
//!       K-th live post (known in advance: post(first + i) of PRNG seed 99, as the writers
//!       make them) is also looked for in /v1/search (its 3 rarest words, feed filter) every
//!       `--poll-ms`, starting when the entry before it arrived on the stream; the time it is
//!       first found, minus its pubNs, is its publish-to-searchable latency.
//!   agg-client queries --http URL --n 1000 [--keys FILE] [--urls-out PREFIX]
//!       The reference index.js query set (PRNG seed 7, 1-2 words; our search is AND by
//!       default) against /v1/search, then a fixed set of /v1/feed pages (first pages, tag,
//!       type, feed and time-window filters, and cursor chains), one request at a time over one
//!       keep-alive connection: latency percentiles per kind. Writes the URLs it requested
//!       to PREFIX-search.txt and PREFIX-feed.txt for `load`.
//!   agg-client load    --urls FILE --connections N --seconds S
//!       N concurrent connections, each sending the next URL of FILE (round robin over the
//!       list) as soon as its previous response is read, for S seconds: requests/s, latency
//!       percentiles, status counts.
//!   agg-client first   --http URL --keys FILE [--poll-ms 5] [--peer ADDR] [--started-unix-ms T]
//!       For each key of FILE, one after the other: POST /v1/feeds {key} (the key alone: the
//!       aggregator finds the bee on the DHT), then GET /v1/feed?feed=KEY&limit=1 every
//!       `--poll-ms` until it holds an entry: the time from just before the POST to that
//!       response, per key, and how the feed's peers were found (`via`). With
//!       `--started-unix-ms` (when the aggregator process was started), also the time from then.
//!   agg-client print-queries --n 1000     # the query set, one a line (checked against JS)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_bench::data::{post, reference_queries, vocab, Post, Prng, T0_MS, TAGS};
use apiary_bench::sys::{cpu_seconds, monotonic_ns, pct, round, ProcStats};
use clap::{Parser, Subcommand};
use reqwest::{Client, Url};
use serde_json::{json, Value};

use apiary_bench::BoxError;
type Res<T> = Result<T, BoxError>;

/// Drives and measures a running apiary-aggregator.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Tokio worker threads (default: 1, so the aggregator keeps the other core).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Follow keys and wait until they are indexed.
    Ingest(IngestArgs),
    /// Publish-to-stream and publish-to-searchable latency of a live bee.
    Live(LiveArgs),
    /// Sequential latency of the reference query set and of feed pages.
    Queries(QueriesArgs),
    /// Concurrent load: requests/s.
    Load(LoadArgs),
    /// Follow keys one at a time: time from POST to the first entry served by /v1/feed.
    First(FirstArgs),
    /// Prints the reference query set, one query a line.
    PrintQueries {
        /// Queries.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// PRNG seed.
        #[arg(long, default_value_t = 7)]
        seed: u32,
    },
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Base URL of the aggregator's HTTP API.
    #[arg(long)]
    http: String,
    /// Core keys to follow, one a line.
    #[arg(long)]
    keys: PathBuf,
    /// Peer address (host:port) serving them; without it the POST has the key alone and the
    /// aggregator looks the bee up on the DHT.
    #[arg(long)]
    peer: Option<String>,
    /// Entries expected in the index when done (apiary_entries_indexed).
    #[arg(long)]
    entries: u64,
    /// Expected length of every bee (checked with the per-feed status).
    #[arg(long)]
    length: Option<u64>,
    /// The aggregator's pid, for its /proc figures.
    #[arg(long)]
    pid: Option<u32>,
    /// POSTs in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Poll the per-feed status when there are at most this many keys (else /metrics).
    #[arg(long, default_value_t = 16)]
    per_feed_max: usize,
    /// Poll interval.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
struct LiveArgs {
    /// Base URL of the aggregator's HTTP API.
    #[arg(long)]
    http: String,
    /// The live bee's key.
    #[arg(long)]
    key: String,
    /// Live entries to receive.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Posts in the bee before the live part (the first live post is post(first)).
    #[arg(long, default_value_t = 1000)]
    first: u64,
    /// Look every K-th live post up in /v1/search (0: none).
    #[arg(long, default_value_t = 0)]
    search_every: usize,
    /// Search poll interval.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Stop after this many seconds without an entry.
    #[arg(long, default_value_t = 15)]
    idle_timeout: u64,
    /// More subscribers to the same stream (raw connections, `fanout`), each expecting
    /// every entry: delivered counts and latency over all of them under `fanout`.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
}

#[derive(Debug, clap::Args)]
struct QueriesArgs {
    /// Base URL of the aggregator's HTTP API.
    #[arg(long)]
    http: String,
    /// Queries of the reference set.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// PRNG seed of the query set.
    #[arg(long, default_value_t = 7)]
    seed: u32,
    /// Page size.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Feed keys (for the feed filter), one a line.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Posts per bee (for the time windows).
    #[arg(long, default_value_t = 100_000)]
    posts: u64,
    /// Skip the feed pages.
    #[arg(long)]
    no_feed: bool,
    /// Write the URLs to PREFIX-search.txt and PREFIX-feed.txt.
    #[arg(long)]
    urls_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FirstArgs {
    /// Base URL of the aggregator's HTTP API.
    #[arg(long)]
    http: String,
    /// Core keys to follow, one a line, in this order.
    #[arg(long)]
    keys: PathBuf,
    /// A peer address to give with each key (default: none, the DHT finds it).
    #[arg(long)]
    peer: Option<String>,
    /// Poll interval of /v1/feed.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Pause between two keys.
    #[arg(long, default_value_t = 200)]
    pause_ms: u64,
    /// Give up on a key after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// When the aggregator process was started (Unix time in ms), for a cold-start figure.
    #[arg(long)]
    started_unix_ms: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// URLs, one a line.
    #[arg(long)]
    urls: PathBuf,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Duration.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Label of the run.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() {
    let cli = Cli::parse();
    apiary_bench::run_main("agg-client", Some(cli.threads), || async {
        match cli.cmd {
            Cmd::Ingest(a) => ingest(a).await,
            Cmd::Live(a) => live(a).await,
            Cmd::Queries(a) => queries(a).await,
            Cmd::Load(a) => load(a).await,
            Cmd::First(a) => first(a).await,
            Cmd::PrintQueries { n, seed } => {
                for q in reference_queries(n, seed) {
                    println!("{q}");
                }
                Ok(Value::Null)
            }
        }
    });
}

/// Percentiles of latencies in ms (the reference's `pct`).
fn summary(mut ms: Vec<f64>) -> Value {
    if ms.is_empty() {
        return json!({"count": 0});
    }
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let p = |x: f64| pct(&ms, x).map(|v| round(v, 3));
    json!({
        "count": ms.len(),
        "p50ms": p(50.0),
        "p90ms": p(90.0),
        "p99ms": p(99.0),
        "minMs": ms.first().map(|v| round(*v, 3)),
        "maxMs": ms.last().map(|v| round(*v, 3)),
        "meanMs": round(mean, 3),
    })
}

fn client(pool: usize) -> Res<Client> {
    Ok(Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()?)
}

fn read_keys(path: &Path) -> Res<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn proc_json(s: &ProcStats) -> Value {
    json!({
        "cpuUser": round(s.cpu_user, 2),
        "cpuSystem": round(s.cpu_system, 2),
        "vmRssMB": s.vm_rss_mb,
        "vmHwmMB": s.vm_hwm_mb,
        "rssAnonMB": s.rss_anon_mb,
        "rssFileMB": s.rss_file_mb,
        "fds": s.fds,
        "threads": s.threads,
    })
}

async fn metric(c: &Client, base: &str, name: &str) -> Res<u64> {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {name} in /metrics").into())
}

/// The body of `POST /v1/feeds`: the key, and the peer when there is one.
fn follow_body(key: &str, peer: Option<&str>) -> Value {
    match peer {
        Some(p) => json!({"key": key, "peers": [p]}),
        None => json!({"key": key}),
    }
}

/// (length, indexedVersion, errors) of one feed.
async fn feed_status(c: &Client, base: &str, key: &str) -> Res<(u64, u64, u64)> {
    let v: Value = c
        .get(format!("{base}/v1/feeds/{key}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok((n("length"), n("indexedVersion"), n("errors")))
}

async fn ingest(a: IngestArgs) -> Res<Value> {
    let keys = Arc::new(read_keys(&a.keys)?);
    let base = a.http.trim_end_matches('/').to_owned();
    let c = client(a.concurrency.max(2))?;
    let pid = a.pid;
    let stats = move || pid.and_then(|p| ProcStats::read(p).ok());
    let s0 = stats();
    let t0 = Instant::now();

    // Follow: `concurrency` POSTs in flight.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (c, keys, next, base, peer) = (
            c.clone(),
            keys.clone(),
            next.clone(),
            base.clone(),
            a.peer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
            let mut post_ms = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                let t = Instant::now();
                let r = c
                    .post(format!("{base}/v1/feeds"))
                    .json(&follow_body(key, peer.as_deref()))
                    .send()
                    .await;
                let code = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                post_ms.push(t.elapsed().as_secs_f64() * 1e3);
                *codes.entry(code).or_default() += 1;
            }
            (codes, post_ms)
        }));
    }
    // The POSTs go on in the background; polling starts at once.
    let mut follow = tokio::spawn(async move {
        let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
        let mut post_ms = Vec::new();
        for t in tasks {
            if let Ok((cs, ms)) = t.await {
                for (k, v) in cs {
                    *codes.entry(k).or_default() += v;
                }
                post_ms.extend(ms);
            }
        }
        (codes, post_ms, t0.elapsed().as_secs_f64())
    });
    let mut followed: Option<(BTreeMap<u16, u64>, Vec<f64>, f64)> = None;
    let mut s_follow = None;

    // Wait.
    let per_feed = keys.len() <= a.per_feed_max;
    let deadline = t0 + Duration::from_secs(a.timeout);
    let mut max_fds = 0usize;
    let mut max_rss = 0f64;
    let mut max_anon = 0f64;
    let mut timeline = Vec::new();
    let mut last_mark = -1i64;
    let mut first_entry: Option<f64> = None;
    let mut indexed;
    let mut poll_errors = 0u64;
    let done = loop {
        if let Some(s) = stats() {
            max_fds = max_fds.max(s.fds);
            max_rss = max_rss.max(s.vm_rss_mb);
            max_anon = max_anon.max(s.rss_anon_mb);
        }
        indexed = metric(&c, &base, "apiary_entries_indexed")
            .await
            .unwrap_or_else(|_| {
                poll_errors += 1;
                0
            });
        let el = t0.elapsed().as_secs_f64();
        if indexed > 0 && first_entry.is_none() {
            first_entry = Some(el);
        }
        if el.floor() as i64 > last_mark {
            last_mark = el.floor() as i64;
            timeline.push(json!([round(el, 2), indexed]));
        }
        if followed.is_none() && follow.is_finished() {
            followed = Some((&mut follow).await?);
            s_follow = stats();
        }
        let ok = followed.is_some()
            && if per_feed {
                let mut all = true;
                for k in keys.iter() {
                    match feed_status(&c, &base, k).await {
                        Ok((len, v, _)) => {
                            all &= len > 0 && v == len && a.length.is_none_or(|l| l == len);
                        }
                        Err(_) => {
                            poll_errors += 1;
                            all = false;
                        }
                    }
                    if !all {
                        break;
                    }
                }
                all && indexed >= a.entries
            } else {
                indexed >= a.entries
            };
        if ok {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(a.poll_ms)).await;
    };
    let seconds = t0.elapsed().as_secs_f64();
    let s1 = stats();
    let (codes, post_ms, follow_seconds) = match followed {
        Some(f) => f,
        None => follow.await?,
    };
    timeline.push(json!([round(seconds, 2), indexed]));

    // Verify every feed (after the timing).
    let tv = Instant::now();
    let listed: Value = c
        .get(format!("{base}/v1/feeds"))
        .send()
        .await?
        .json()
        .await?;
    let feeds = listed["feeds"].as_array().cloned().unwrap_or_default();
    let complete = feeds
        .iter()
        .filter(|f| {
            let len = f["length"].as_u64().unwrap_or(0);
            len > 0
                && f["indexedVersion"].as_u64() == Some(len)
                && a.length.is_none_or(|l| l == len)
        })
        .count();
    let feed_errors: u64 = feeds.iter().filter_map(|f| f["errors"].as_u64()).sum();
    let list_ms = tv.elapsed().as_secs_f64() * 1e3;
    let blocks = metric(&c, &base, "apiary_blocks_downloaded_total")
        .await
        .unwrap_or(0);
    let ingest_errors = metric(&c, &base, "apiary_ingest_errors_total")
        .await
        .unwrap_or(0);
    let cpu = match (&s0, &s1) {
        (Some(a), Some(b)) => Some(json!({
            "seconds": round(b.cpu() - a.cpu(), 2),
            "user": round(b.cpu_user - a.cpu_user, 2),
            "system": round(b.cpu_system - a.cpu_system, 2),
            "percent": round((b.cpu() - a.cpu()) / seconds * 100.0, 0),
            "followSeconds": s_follow.map(|f| round(f.cpu() - a.cpu(), 2)),
        })),
        _ => None,
    };
    Ok(json!({
        "done": done,
        "keys": keys.len(),
        "entries": indexed,
        "expectedEntries": a.entries,
        "followSeconds": round(follow_seconds, 3),
        "followPerSec": round(keys.len() as f64 / follow_seconds, 0),
        "postStatus": codes,
        "postLatency": summary(post_ms),
        "firstEntrySeconds": first_entry.map(|x| round(x, 3)),
        "seconds": round(seconds, 3),
        "indexSecondsAfterFollow": round(seconds - follow_seconds, 3),
        "entriesPerSec": round(indexed as f64 / seconds, 0),
        "blocksDownloaded": blocks,
        "ingestErrors": ingest_errors,
        "feedsListed": feeds.len(),
        "feedsComplete": complete,
        "feedErrors": feed_errors,
        "listFeedsMs": round(list_ms, 1),
        "pollErrors": poll_errors,
        "aggCpu": cpu,
        "aggStart": s0.as_ref().map(proc_json),
        "aggEnd": s1.as_ref().map(proc_json),
        "aggMaxFdsWhilePolling": max_fds,
        "aggMaxRssMBWhilePolling": max_rss,
        "aggMaxRssAnonMBWhilePolling": max_anon,
        "timeline": timeline,
    }))
}

/// The words of a post's text, rarest first (a higher vocabulary rank is rarer).
fn rare_words(p: &Post, n: usize) -> Vec<String> {
    let rank: HashMap<&str, usize> = vocab()
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let mut words: Vec<&str> = p.text.split(' ').collect();
    words.sort_by_key(|w| std::cmp::Reverse(rank.get(w).copied().unwrap_or(0)));
    words.dedup();
    words.into_iter().take(n).map(str::to_owned).collect()
}

fn pub_ns(value: &Value) -> Option<u64> {
    match &value["pubNs"] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

async fn live(a: LiveArgs) -> Res<Value> {
    let base = a.http.trim_end_matches('/').to_owned();
    let c = client(4)?;
    let url = Url::parse_with_params(&format!("{base}/v1/stream"), &[("feed", &a.key)])?;
    let mut resp = c
        .get(url)
        .timeout(Duration::from_secs(3600))
        .send()
        .await?
        .error_for_status()?;
    let (fanout_open, fanout) = if a.subscribers > 0 {
        let addr = resp.remote_addr().ok_or("no remote address")?;
        let path = format!("/v1/stream?feed={}", a.key);
        let idle = Duration::from_secs(a.idle_timeout);
        apiary_bench::fanout::subscribe(addr, &path, a.subscribers, a.count, idle).await
    } else {
        (0, Vec::new())
    };
    // Subscribed: the handler subscribes before it answers.
    println!("{}", json!({"ready": true, "subscribers": fanout_open}));

    let (seen_tx, seen_rx) = tokio::sync::watch::channel(0usize);
    let sampler = (a.search_every > 0).then(|| {
        let mut rand = Prng::new(99);
        let posts: Vec<Post> = (0..a.count as u64)
            .map(|i| post(a.first + i, &mut rand))
            .collect();
        tokio::spawn(search_sampler(
            c.clone(),
            base.clone(),
            a.key.clone(),
            posts,
            a.search_every,
            a.poll_ms,
            seen_rx,
        ))
    });

    let (u0, s0) = cpu_seconds()?;
    let mut lat = Vec::with_capacity(a.count);
    let mut buf: Vec<u8> = Vec::new();
    let (mut lagged, mut other, mut bad) = (0u64, 0u64, 0u64);
    let t_first = Instant::now();
    let mut first_at: Option<Instant> = None;
    let mut idle = false;
    while lat.len() < a.count {
        let chunk =
            match tokio::time::timeout(Duration::from_secs(a.idle_timeout), resp.chunk()).await {
                Err(_) => {
                    idle = true;
                    break;
                }
                Ok(r) => match r? {
                    Some(c) => c,
                    None => break,
                },
            };
        let now = monotonic_ns();
        buf.extend_from_slice(&chunk);
        // Events end with a blank line.
        while let Some(end) = find_blank_line(&buf) {
            let ev: Vec<u8> = buf.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&ev[..end.0]);
            let mut name = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match name {
                "entry" => match serde_json::from_str::<Value>(&data)
                    .ok()
                    .and_then(|e| pub_ns(&e["value"]))
                {
                    Some(p) => {
                        first_at.get_or_insert_with(Instant::now);
                        lat.push(now.saturating_sub(p) as f64 / 1e6);
                        let _ = seen_tx.send(lat.len());
                    }
                    None => bad += 1,
                },
                "lagged" => lagged += 1,
                _ => other += 1,
            }
        }
    }
    let fanout = if a.subscribers > 0 {
        let mut all: Vec<f64> = Vec::new();
        let (mut lagged_subs, mut short) = (0u64, 0u64);
        for h in fanout {
            let seen = h.await?;
            lagged_subs += u64::from(seen.lagged > 0);
            short += u64::from(seen.cut_short);
            all.extend(seen.micros.iter().map(|us| f64::from(*us) / 1e3));
        }
        let mut f = json!({
            "subscribers": a.subscribers,
            "connected": fanout_open,
            "expected": a.subscribers * a.count,
            "received": all.len(),
            "laggedSubscribers": lagged_subs,
            "cutShort": short,
        });
        if let Value::Object(m) = summary(all) {
            for (k, v) in m {
                f[k] = v;
            }
        }
        f
    } else {
        Value::Null
    };
    let (u1, s1) = cpu_seconds()?;
    let received = lat.len();
    let search = match sampler {
        Some(t) => {
            // Let the sampler finish the samples it can still find.
            let _ = seen_tx.send(usize::MAX);
            Some(tokio::time::timeout(Duration::from_secs(20), t).await??)
        }
        None => None,
    };
    let mut out = json!({
        "received": received,
        "expected": a.count,
        "idleTimeout": idle,
        "lagged": lagged,
        "otherEvents": other,
        "badEvents": bad,
        "streamSeconds": first_at.map(|f| round(f.elapsed().as_secs_f64(), 3)),
        "waitSeconds": round(t_first.elapsed().as_secs_f64(), 3),
        "clientCpuSeconds": round((u1 + s1) - (u0 + s0), 3),
        "searchEvery": a.search_every,
    });
    if let Value::Object(m) = summary(lat) {
        for (k, v) in m {
            out[k] = v;
        }
    }
    out["search"] = search.unwrap_or(Value::Null);
    out["fanout"] = fanout;
    Ok(out)
}

/// (end of the event text, end of the blank line) of the first complete SSE event.
fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    let crlf = b
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
        (x, y) => x.or(y),
    }
}

async fn search_sampler(
    c: Client,
    base: String,
    key: String,
    posts: Vec<Post>,
    every: usize,
    poll_ms: u64,
    mut seen: tokio::sync::watch::Receiver<usize>,
) -> Value {
    let mut lat = Vec::new();
    let mut polls = Vec::new();
    let mut query_ms = Vec::new();
    let (mut missed, mut errors) = (0u64, 0u64);
    for i in (every - 1..posts.len()).step_by(every) {
        // Start when the entry before it is on the stream: it is published within an interval.
        if seen.wait_for(|n| *n >= i).await.is_err() {
            break;
        }
        let p = &posts[i];
        let q = rare_words(p, 3).join(" ");
        let Ok(url) = Url::parse_with_params(
            &format!("{base}/v1/search"),
            &[("q", q.as_str()), ("feed", key.as_str()), ("limit", "100")],
        ) else {
            errors += 1;
            continue;
        };
        let started = Instant::now();
        let mut n = 0u64;
        let found = loop {
            n += 1;
            let tq = Instant::now();
            let r = async { c.get(url.clone()).send().await?.json::<Value>().await }.await;
            let now = monotonic_ns();
            query_ms.push(tq.elapsed().as_secs_f64() * 1e3);
            match r {
                Ok(v) => {
                    let hit = v["entries"].as_array().and_then(|es| {
                        es.iter()
                            .find(|e| e["key"].as_str() == Some(p.key.as_str()))
                            .and_then(|e| pub_ns(&e["value"]))
                    });
                    if let Some(pn) = hit {
                        break Some(now.saturating_sub(pn) as f64 / 1e6);
                    }
                }
                Err(_) => errors += 1,
            }
            if started.elapsed() > Duration::from_secs(5) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        };
        match found {
            Some(ms) => {
                lat.push(ms);
                polls.push(n as f64);
            }
            None => missed += 1,
        }
    }
    let mut out = summary(lat);
    out["missed"] = json!(missed);
    out["errors"] = json!(errors);
    out["pollMs"] = json!(poll_ms);
    out["pollsPerSample"] = summary(polls);
    out["searchQuery"] = summary(query_ms);
    out
}

/// A cursor chain of the feed set: (kind, query parameters, pages).
type Chain = (&'static str, Vec<(&'static str, String)>, usize);

struct Timed {
    ms: f64,
    status: u16,
    body: Value,
}

async fn get_json(c: &Client, url: &Url) -> Timed {
    let t = Instant::now();
    let r = async {
        let r = c.get(url.clone()).send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    match r {
        Ok((status, bytes)) => Timed {
            ms,
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        },
        Err(_) => Timed {
            ms,
            status: 0,
            body: Value::Null,
        },
    }
}

#[derive(Default)]
struct Kind {
    ms: Vec<f64>,
    returned: u64,
    errors: u64,
    with_cursor: u64,
}

impl Kind {
    fn add(&mut self, t: &Timed) {
        self.ms.push(t.ms);
        if t.status != 200 {
            self.errors += 1;
        }
        self.returned += t.body["entries"].as_array().map_or(0, |e| e.len() as u64);
        if t.body["cursor"].is_string() {
            self.with_cursor += 1;
        }
    }

    fn json(self) -> Value {
        let n = self.ms.len().max(1) as f64;
        let mut v = summary(self.ms);
        v["errors"] = json!(self.errors);
        v["avgReturned"] = json!(round(self.returned as f64 / n, 1));
        v["withCursor"] = json!(self.with_cursor);
        v
    }
}

fn url(base: &str, path: &str, params: &[(&str, String)]) -> Res<Url> {
    Ok(Url::parse_with_params(&format!("{base}{path}"), params)?)
}

async fn queries(a: QueriesArgs) -> Res<Value> {
    let base = a.http.trim_end_matches('/').to_owned();
    let c = client(2)?;
    let keys = match &a.keys {
        Some(p) => read_keys(p)?,
        None => Vec::new(),
    };
    let limit = a.limit.to_string();
    let mut search_urls = Vec::new();
    let mut feed_urls = Vec::new();
    // Warm up the connection (and nothing else: no query of the set).
    let _ = c.get(format!("{base}/healthz")).send().await;

    // The reference query set.
    let t_all = Instant::now();
    let mut search = Kind::default();
    let mut page2 = Kind::default();
    let mut cursors = Vec::new();
    for q in reference_queries(a.n, a.seed) {
        let u = url(&base, "/v1/search", &[("q", q), ("limit", limit.clone())])?;
        let t = get_json(&c, &u).await;
        search.add(&t);
        if let Some(cur) = t.body["cursor"].as_str() {
            let mut u2 = u.clone();
            u2.query_pairs_mut().append_pair("cursor", cur);
            cursors.push(u2);
        }
        search_urls.push(u);
    }
    let search_seconds = t_all.elapsed().as_secs_f64();
    // Second pages of the first 200 queries that have one.
    for u in cursors.into_iter().take(200) {
        let t = get_json(&c, &u).await;
        page2.add(&t);
        search_urls.push(u);
    }

    // Typed on a phone (issue 13): the first 200 queries with one typo (two letters of the
    // longest word of 5 or more swapped), and as prefixes (the first 3 letters of the first
    // word, `prefix=true`).
    let mut typo = Kind::default();
    let mut prefix = Kind::default();
    for q in reference_queries(a.n, a.seed).into_iter().take(200) {
        if let Some(t) = with_typo(&q) {
            let u = url(&base, "/v1/search", &[("q", t), ("limit", limit.clone())])?;
            typo.add(&get_json(&c, &u).await);
        }
        let first: String = q
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .take(3)
            .collect();
        let params = [
            ("q", first),
            ("prefix", "true".into()),
            ("limit", limit.clone()),
        ];
        prefix.add(&get_json(&c, &url(&base, "/v1/search", &params)?).await);
    }

    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    if !a.no_feed {
        let add = |kinds: &mut BTreeMap<&'static str, Kind>, k: &'static str, t: &Timed| {
            kinds.entry(k).or_default().add(t);
        };
        let first = url(&base, "/v1/feed", &[("limit", limit.clone())])?;
        for _ in 0..100 {
            let t = get_json(&c, &first).await;
            add(&mut kinds, "first page", &t);
            feed_urls.push(first.clone());
        }
        for i in 0..96 {
            let u = url(
                &base,
                "/v1/feed",
                &[("tag", TAGS[i % 16].to_owned()), ("limit", limit.clone())],
            )?;
            let t = get_json(&c, &u).await;
            add(&mut kinds, "tag", &t);
            feed_urls.push(u);
        }
        for _ in 0..50 {
            let u = url(
                &base,
                "/v1/feed",
                &[("type", "post".into()), ("limit", limit.clone())],
            )?;
            let t = get_json(&c, &u).await;
            add(&mut kinds, "type", &t);
            feed_urls.push(u);
        }
        for i in 0..100.min(keys.len() * 10) {
            let u = url(
                &base,
                "/v1/feed",
                &[
                    ("feed", keys[i % keys.len()].clone()),
                    ("limit", limit.clone()),
                ],
            )?;
            let t = get_json(&c, &u).await;
            add(&mut kinds, "feed", &t);
            feed_urls.push(u);
        }
        // One-hour windows spread over the dataset's time span (1.7 s per post).
        let span_ms = a.posts * 1700;
        for i in 0..100u64 {
            let since = T0_MS + span_ms * i / 100;
            let until = since + 3_600_000;
            let u = url(
                &base,
                "/v1/feed",
                &[
                    ("since", since.to_string()),
                    ("until", until.to_string()),
                    ("limit", limit.clone()),
                ],
            )?;
            let t = get_json(&c, &u).await;
            add(&mut kinds, "time window", &t);
            feed_urls.push(u);
        }
        // Cursor chains: each page from the previous page's cursor.
        let mut chains: Vec<Chain> = vec![("cursor", vec![], 200)];
        for t in ["news", "rust", "meme", "books"] {
            chains.push(("tag + cursor", vec![("tag", t.to_owned())], 50));
        }
        for k in keys.iter().take(2) {
            chains.push(("feed + cursor", vec![("feed", k.clone())], 50));
        }
        for (kind, mut params, pages) in chains {
            params.push(("limit", limit.clone()));
            let mut cursor = first_cursor(&c, url(&base, "/v1/feed", &params)?).await;
            for _ in 0..pages {
                let Some(cur) = cursor else { break };
                let mut p = params.clone();
                p.push(("cursor", cur));
                let u = url(&base, "/v1/feed", &p)?;
                let t = get_json(&c, &u).await;
                add(&mut kinds, kind, &t);
                cursor = t.body["cursor"].as_str().map(str::to_owned);
                feed_urls.push(u);
            }
        }
    }
    let mut all_feed = Kind::default();
    for k in kinds.values() {
        all_feed.ms.extend(&k.ms);
        all_feed.errors += k.errors;
        all_feed.returned += k.returned;
        all_feed.with_cursor += k.with_cursor;
    }
    if let Some(prefix) = &a.urls_out {
        let write = |suffix: &str, urls: &[Url]| -> Res<()> {
            let text: String = urls.iter().map(|u| format!("{u}\n")).collect();
            std::fs::write(format!("{}-{suffix}.txt", prefix.display()), text)?;
            Ok(())
        };
        write("search", &search_urls)?;
        write("feed", &feed_urls)?;
    }
    let by_kind: BTreeMap<&str, Value> = kinds.into_iter().map(|(k, v)| (k, v.json())).collect();
    Ok(json!({
        "queries": a.n,
        "seed": a.seed,
        "limit": a.limit,
        "search": search.json(),
        "searchSeconds": round(search_seconds, 3),
        "searchPage2": page2.json(),
        "searchTypo": typo.json(),
        "searchPrefix": prefix.json(),
        "feed": all_feed.json(),
        "feedByKind": by_kind,
    }))
}

/// `q` with two adjacent letters in the middle of its longest word swapped, if that word
/// has 5 or more letters (one edit, as the search tolerates).
fn with_typo(q: &str) -> Option<String> {
    let words: Vec<&str> = q.split_whitespace().collect();
    let (i, w) = words
        .iter()
        .enumerate()
        .max_by_key(|(_, w)| w.chars().count())?;
    let mut chars: Vec<char> = w.chars().collect();
    if chars.len() < 5 {
        return None;
    }
    let m = chars.len() / 2;
    chars.swap(m - 1, m);
    let mut out: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    out[i] = chars.into_iter().collect();
    Some(out.join(" "))
}

/// The cursor of the first page (not timed).
async fn first_cursor(c: &Client, u: Url) -> Option<String> {
    get_json(c, &u).await.body["cursor"]
        .as_str()
        .map(str::to_owned)
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

async fn first(a: FirstArgs) -> Res<Value> {
    let keys = read_keys(&a.keys)?;
    let base = a.http.trim_end_matches('/').to_owned();
    let c = client(2)?;
    let mut rows = Vec::new();
    let mut found_ms = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
        }
        let at_unix = unix_ms();
        let t = Instant::now();
        let status = c
            .post(format!("{base}/v1/feeds"))
            .json(&follow_body(key, a.peer.as_deref()))
            .send()
            .await?
            .status()
            .as_u16();
        let post_ms = t.elapsed().as_secs_f64() * 1e3;
        let url = Url::parse_with_params(
            &format!("{base}/v1/feed"),
            &[("feed", key.as_str()), ("limit", "1")],
        )?;
        let deadline = t + Duration::from_secs(a.timeout);
        let mut polls = 0u64;
        let ms = loop {
            polls += 1;
            let r = c.get(url.clone()).send().await;
            if let Ok(r) = r {
                if let Ok(v) = r.json::<Value>().await {
                    if v["entries"].as_array().is_some_and(|e| !e.is_empty()) {
                        break Some(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(a.poll_ms)).await;
        };
        let status_v: Value = match c.get(format!("{base}/v1/feeds/{key}")).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let via: Vec<Value> = status_v["peers"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p["via"].clone()).collect())
            .unwrap_or_default();
        if let Some(ms) = ms {
            found_ms.push(ms);
        }
        rows.push(json!({
            "key": key,
            "postStatus": status,
            "postMs": round(post_ms, 2),
            "ms": ms.map(|x| round(x, 2)),
            "sinceStartMs": a.started_unix_ms.map(|s| round(at_unix - s as f64 + ms.unwrap_or(f64::NAN), 1)),
            "polls": polls,
            "via": via,
            "length": status_v["length"],
        }));
    }
    let rest = found_ms.get(1..).map(<[f64]>::to_vec).unwrap_or_default();
    Ok(json!({
        "keys": keys.len(),
        "found": found_ms.len(),
        "pollMs": a.poll_ms,
        "all": summary(found_ms.clone()),
        "firstKeyMs": found_ms.first().map(|x| round(*x, 2)),
        "restKeys": summary(rest),
        "rows": rows,
    }))
}

async fn load(a: LoadArgs) -> Res<Value> {
    let urls: Arc<Vec<Url>> = Arc::new(
        read_keys(&a.urls)?
            .iter()
            .map(|u| Url::parse(u))
            .collect::<Result<_, _>>()?,
    );
    if urls.is_empty() {
        return Err("no URLs".into());
    }
    let c = client(a.connections)?;
    let next = Arc::new(AtomicUsize::new(0));
    let (u0, s0) = cpu_seconds()?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.connections.max(1) {
        let (c, urls, next) = (c.clone(), urls.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ms = Vec::new();
            let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
            let mut bytes = 0u64;
            while Instant::now() < end {
                let u = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let t = Instant::now();
                let code = match c.get(u.clone()).send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        match r.bytes().await {
                            Ok(b) => {
                                bytes += b.len() as u64;
                                s
                            }
                            Err(_) => 0,
                        }
                    }
                    Err(_) => 0,
                };
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                *codes.entry(code).or_default() += 1;
            }
            (ms, codes, bytes)
        }));
    }
    let mut ms = Vec::new();
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    for t in tasks {
        let (m, cs, b) = t.await?;
        ms.extend(m);
        bytes += b;
        for (k, v) in cs {
            *codes.entry(k).or_default() += v;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds()?;
    let requests = ms.len();
    let ok = codes.get(&200).copied().unwrap_or(0);
    let mut out = json!({
        "label": a.label,
        "connections": a.connections,
        "urls": urls.len(),
        "seconds": round(seconds, 3),
        "requests": requests,
        "reqPerSec": round(requests as f64 / seconds, 0),
        "okPerSec": round(ok as f64 / seconds, 0),
        "status": codes,
        "MBps": round(bytes as f64 / 1e6 / seconds, 2),
        "clientCpuSeconds": round((u1 + s1) - (u0 + s0), 2),
    });
    if let Value::Object(m) = summary(ms) {
        for (k, v) in m {
            out[k] = v;
        }
    }
    Ok(out)
}
