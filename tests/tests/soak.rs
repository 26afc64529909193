//! Crash soaks with an oracle (issue 10, item 3): `kill -9` at random moments, dozens of times,
//! and afterwards nothing acknowledged is lost and nothing is doubled.
//!
//! - `aggregator_soak_*`: a JS writer keeps writing (new keys, overwrites, deletes, batches,
//!   now and then a large batch that makes a backfill) while the real aggregator follows it and
//!   is killed at seeded moments: during its start, as soon as it listens, once this process
//!   downloaded blocks, once a commit moved the indexed version, after a random delay. After the
//!   writer stops and the aggregator catches up, its entries equal the JS bee's `range` (the
//!   oracle): same keys, values and seqs, no duplicates, deleted keys absent.
//! - `publisher_import_soak_*`: `apiary-publisher import` of a JSONL file killed again and
//!   again; after each kill the bee grew by whole batches, holds exactly what the imported
//!   lines leave, and reads the same through `list` and through JS hyperbee over the network
//!   (a follower that read it after every kill, and now and then a new reader).
//! - `publisher_serve_soak_*`: CLI writes forwarded to a running `serve`, which is killed and
//!   restarted; every write the CLI reported as done is there after the restart, for the CLI,
//!   a new JS reader and a JS follower that stayed connected, and the length never goes back.
//! - Two regression tests: `serve` killed mid-import as soon as a JS follower, or the
//!   aggregator, saw part of it must not come back shorter, and both read on.
//!
//! Kills land on observed events (status fields, printed lines, acknowledged writes) or after
//! seeded random delays; no assertion waits on a fixed sleep. Each test prints its seed and
//! its kill schedule. Replay or scale with:
//!
//! ```text
//! APIARY_SOAK_SEED=N           the seed (default: from the clock; printed)
//! APIARY_SOAK_KILLS=N          aggregator kills (default 25)
//! APIARY_SOAK_ENTRIES=N        entries in the bee before the aggregator follows (20000)
//! APIARY_SOAK_IMPORT_KILLS=N   kills of `import` (10)
//! APIARY_SOAK_IMPORT_LINES=N   lines of the imported file (5500)
//! APIARY_SOAK_SERVE_KILLS=N    kills of `serve` (16)
//! ```
//! Each test ends with a `SOAK-RESULT {json}` line on stdout (ops/soak/run.sh collects them).
//! The tests run one at a time (they share two cores with everything else).

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::publisher::{Publisher, Serving};
use apiary_tests::{bin_path, JsPeer};
use serde_json::{json, Value};

/// One soak at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// Seeds, knobs, reports.

/// SplitMix64: small, seedable, good enough to pick ops and moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`lo` when the range is empty).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo)
        }
    }
    fn index(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.range(0, 100) < pct
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.index(i + 1);
            v.swap(i, j);
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The seed of this run: `APIARY_SOAK_SEED`, or one from the clock (printed for a replay).
fn soak_seed(test: &str) -> u64 {
    let seed = match std::env::var("APIARY_SOAK_SEED") {
        Ok(_) => env_u64("APIARY_SOAK_SEED", 0),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            t % 1_000_000_000_000
        }
    };
    eprintln!("{test}: seed {seed} (replay with APIARY_SOAK_SEED={seed})");
    seed
}

/// The machine-readable last line of a soak.
fn report(v: Value) {
    println!("SOAK-RESULT {v}");
}

/// Polls `pred` every 20 ms until it gives `Some`, or panics with `what` after `timeout`.
async fn until<T>(what: &str, timeout: Duration, mut pred: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = pred() {
            return v;
        }
        assert!(t.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bee's contents as `key → (seq, value)`, from `{key, seq, value}` objects; panics on a
/// key seen twice.
fn entries_map(what: &str, entries: &[Value]) -> BTreeMap<String, (u64, Value)> {
    let mut out = BTreeMap::new();
    let mut doubled = Vec::new();
    for e in entries {
        let k = e["key"].as_str().unwrap_or_else(|| panic!("{what}: {e}"));
        let seq = e["seq"].as_u64().unwrap_or_else(|| panic!("{what}: {e}"));
        if out
            .insert(k.to_owned(), (seq, e["value"].clone()))
            .is_some()
        {
            doubled.push(k.to_owned());
        }
    }
    assert!(
        doubled.is_empty(),
        "{what}: {} keys appear more than once, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    out
}

/// Asserts `got == want` entry by entry, listing the first differences of each kind.
fn assert_same(
    what: &str,
    got: &BTreeMap<String, (u64, Value)>,
    want: &BTreeMap<String, (u64, Value)>,
) {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(k, w)| {
            let g = got.get(k)?;
            (g != w).then(|| format!("{k}: got seq {} {} want seq {} {}", g.0, g.1, w.0, w.1))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{what}: {} entries, want {}; {} missing (e.g. {:?}), {} that should not be there \
         (e.g. {:?}), {} with another seq or value (e.g. {:?})",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(10)],
        extra.len(),
        &extra[..extra.len().min(10)],
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Reads a bee over the network with a fresh JS peer (real hyperbee): `(length, entries)`.
async fn js_read(port: u16, hex: &str) -> (u64, BTreeMap<String, (u64, Value)>) {
    let mut js = JsPeer::start().await;
    js.call(json!({"cmd": "connect", "port": port})).await;
    let opened = js
        .call(json!({"cmd": "open", "name": "b", "key": hex}))
        .await;
    let all = js
        .call(json!({"cmd": "range", "name": "b", "opts": {}}))
        .await;
    js.close().await;
    let len = opened["length"].as_u64().unwrap();
    (
        len,
        entries_map("JS range", all["entries"].as_array().unwrap()),
    )
}

/// A JS hyperbee that stays open across restarts of `serve` and connects to each new one. A
/// publisher that took back a length it had shown would sign a second tree for it, and JS
/// would see two conflicting signatures and close the core.
struct Follower {
    js: JsPeer,
    hex: String,
    opened: bool,
}

impl Follower {
    async fn start(hex: &str) -> Follower {
        Follower {
            js: JsPeer::start().await,
            hex: hex.to_owned(),
            opened: false,
        }
    }

    /// Opens the bee (first time), following new entries as they come (`live`).
    async fn open(&mut self) {
        if !self.opened {
            self.js
                .call(json!({"cmd": "open", "name": "b", "key": self.hex}))
                .await;
            self.js.call(json!({"cmd": "live", "name": "b"})).await;
            self.opened = true;
        }
    }

    /// Connects to the `serve` on `port`.
    async fn connect(&mut self, port: u16) {
        self.js.call(json!({"cmd": "connect", "port": port})).await;
        self.open().await;
    }

    /// The length it knows after asking its peers.
    async fn update(&mut self) -> u64 {
        let r = self
            .js
            .try_call(json!({"cmd": "update", "name": "b"}))
            .await
            .unwrap_or_else(|e| panic!("the JS follower cannot update the bee: {e}"));
        r["length"].as_u64().unwrap()
    }

    /// Connects to the `serve` on `port`, waits until it has the bee at `len`, and reads it.
    async fn read_at(&mut self, port: u16, len: u64) -> BTreeMap<String, (u64, Value)> {
        self.catch_up(port, len).await;
        let all = self
            .js
            .try_call(json!({"cmd": "range", "name": "b", "opts": {}}))
            .await
            .unwrap_or_else(|e| panic!("the JS follower cannot read the bee: {e}"));
        entries_map("JS follower range", all["entries"].as_array().unwrap())
    }

    /// Connects to the `serve` on `port` and waits until it has the bee at `len`.
    async fn catch_up(&mut self, port: u16, len: u64) {
        self.connect(port).await;
        let t = Instant::now();
        loop {
            let got = self.update().await;
            assert!(
                got <= len,
                "the JS follower knows length {got}, the bee has {len}"
            );
            if got == len {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the JS follower stays at {got}, the bee is at {len}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The entry under `key`.
    async fn get(&mut self, key: &str) -> Value {
        self.js
            .try_call(json!({"cmd": "get", "name": "b", "key": key}))
            .await
            .unwrap_or_else(|e| panic!("the JS follower cannot read {key}: {e}"))["entry"]
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// The aggregator soak.

/// When to kill the aggregator.
#[derive(Debug, Clone, Copy)]
enum AggKill {
    /// During its start: this long after the spawn (it may not listen yet).
    Startup(u64),
    /// As soon as its HTTP port answers.
    AtListen,
    /// Once this process downloaded blocks (mid-backfill when there is one).
    Download,
    /// Once a commit moved the indexed version, and this many ms later (mid next batch).
    Commit(u64),
    /// This many ms after it listens.
    Delay(u64),
}

/// `n` kills, each kind at least `n / 5` times, in a seeded order.
fn agg_schedule(rng: &mut Rng, n: u64) -> Vec<AggKill> {
    let mut v: Vec<AggKill> = (0..n)
        .map(|i| match i % 5 {
            0 => AggKill::Startup(rng.range(0, 400)),
            1 => AggKill::AtListen,
            2 => AggKill::Download,
            3 => AggKill::Commit(rng.range(0, 60)),
            _ => AggKill::Delay(rng.range(20, 2500)),
        })
        .collect();
    rng.shuffle(&mut v);
    v
}

/// The writer's idea of the bee: what a correct `range` returns (values only: seqs are the
/// JS peer's business).
#[derive(Default)]
struct Model {
    map: BTreeMap<String, Value>,
    keys: Vec<String>,
    pos: HashMap<String, usize>,
    dead: Vec<String>,
}

impl Model {
    fn put(&mut self, k: &str, v: Value) {
        if !self.map.contains_key(k) {
            self.pos.insert(k.to_owned(), self.keys.len());
            self.keys.push(k.to_owned());
        }
        self.map.insert(k.to_owned(), v);
    }
    fn del(&mut self, k: &str) {
        if self.map.remove(k).is_some() {
            let i = self.pos.remove(k).unwrap();
            self.keys.swap_remove(i);
            if let Some(moved) = self.keys.get(i) {
                self.pos.insert(moved.clone(), i);
            }
            self.dead.push(k.to_owned());
        }
    }
    fn live(&self, rng: &mut Rng) -> Option<String> {
        (!self.keys.is_empty()).then(|| self.keys[rng.index(self.keys.len())].clone())
    }
    fn deleted(&self, rng: &mut Rng) -> Option<String> {
        let k = self.dead.get(rng.index(self.dead.len().max(1)))?;
        (!self.map.contains_key(k)).then(|| k.clone())
    }
}

#[derive(Default, Debug)]
struct WriterStats {
    calls: u64,
    puts: u64,
    dels: u64,
    batches: u64,
    big_batches: u64,
}

/// The JS writer: random ops until `stop`, mirrored in the model.
struct Writer {
    js: JsPeer,
    model: Model,
    rng: Rng,
    next_key: u64,
    next_value: u64,
    stats: WriterStats,
}

impl Writer {
    fn new_key(&mut self) -> String {
        self.next_key += 1;
        if self.rng.pct(3) {
            format!("ключ-{:07}", self.next_key)
        } else {
            format!("n{:08}", self.next_key)
        }
    }

    fn value(&mut self) -> Value {
        self.next_value += 1;
        let n = self.next_value;
        let words = ["hive", "bee", "comb", "nectar", "queen", "drone", "pollen"];
        let text = format!("{} {n}", words[self.rng.index(words.len())]);
        if self.rng.pct(3) {
            // Over 1 KiB: stored apart from its block page.
            let pad = "p".repeat(self.rng.range(1100, 4000) as usize);
            json!({"text": text, "n": n, "pad": pad})
        } else {
            json!({"text": text, "n": n})
        }
    }

    /// A put of a new key, an overwrite, a delete or a resurrected key, as a batch op
    /// (applied to the model as it is made, as the bee applies it).
    fn op(&mut self, del_pct: u64) -> Option<Value> {
        let r = self.rng.range(0, 100);
        let (key, put) = if r < 45 {
            (self.new_key(), true)
        } else if r < 75 {
            (self.model.live(&mut self.rng)?, true)
        } else if r < 75 + del_pct {
            (self.model.live(&mut self.rng)?, false)
        } else {
            (self.model.deleted(&mut self.rng)?, true)
        };
        if put {
            let v = self.value();
            self.model.put(&key, v.clone());
            self.stats.puts += 1;
            Some(json!({"type": "put", "key": key, "value": v}))
        } else {
            self.model.del(&key);
            self.stats.dels += 1;
            Some(json!({"type": "del", "key": key}))
        }
    }

    async fn step(&mut self) {
        let r = self.rng.range(0, 1000);
        if r < 4 {
            // A large batch: new keys and overwrites, a backfill for the aggregator.
            let n = self.rng.range(300, 2500);
            let ops: Vec<Value> = (0..n).filter_map(|_| self.op(0)).collect();
            self.js
                .call(json!({"cmd": "batch", "name": "soak", "ops": ops}))
                .await;
            self.stats.big_batches += 1;
        } else if r < 180 {
            let n = self.rng.range(2, 40);
            let ops: Vec<Value> = (0..n).filter_map(|_| self.op(20)).collect();
            self.js
                .call(json!({"cmd": "batch", "name": "soak", "ops": ops}))
                .await;
            self.stats.batches += 1;
        } else if let Some(op) = self.op(20) {
            let cmd = if op["type"] == "put" {
                json!({"cmd": "put", "name": "soak", "key": op["key"], "value": op["value"]})
            } else {
                json!({"cmd": "del", "name": "soak", "key": op["key"]})
            };
            self.js.call(cmd).await;
        }
        self.stats.calls += 1;
    }

    async fn run(mut self, stop: Arc<AtomicBool>, length: Arc<AtomicU64>) -> Writer {
        while !stop.load(Ordering::Relaxed) {
            self.step().await;
            if self.stats.calls / 50 * 50 == self.stats.calls {
                let info = self.js.call(json!({"cmd": "info", "name": "soak"})).await;
                length.store(info["length"].as_u64().unwrap(), Ordering::Relaxed);
            }
            // Paced, so that the aggregator can catch up between large batches.
            let pause = self.rng.range(1, 12);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self
    }
}

/// Starts the aggregator without waiting for it to listen.
fn spawn_agg(agg: &mut AggProc) {
    let child = tokio::process::Command::new(bin_path("apiary-aggregator", "apiary-aggregator"))
        .arg("--config")
        .arg(&agg.config)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    agg.child = Some(child);
}

/// The feed's status; `None` when the process does not answer (yet).
async fn feed_status(agg: &AggProc, key: &str) -> Option<Value> {
    let r = agg
        .http
        .get(format!("{}/v1/feeds/{key}", agg.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

fn field(v: &Value, f: &str) -> u64 {
    v[f].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_soak_kill_9_during_backfill_and_live_writes_matches_the_bee() {
    let _one = SERIAL.lock().await;
    let started = Instant::now();
    let seed = soak_seed("aggregator soak");
    let kills = env_u64("APIARY_SOAK_KILLS", 25);
    let prefill = env_u64("APIARY_SOAK_ENTRIES", 20_000);
    let mut krng = Rng::new(seed, 1);
    let schedule = agg_schedule(&mut krng, kills);
    eprintln!("aggregator soak: {kills} kills, {prefill} entries first; schedule {schedule:?}");

    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "soak", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let mut model = Model::default();
    if prefill > 0 {
        js.call(json!({"cmd": "fill", "name": "soak", "count": prefill, "prefix": "p", "valueBytes": 60}))
            .await;
        let text = "x".repeat(60);
        for i in 0..prefill {
            model.put(&format!("p{i:08}"), json!({"i": i, "text": text}));
        }
    }
    let port = js.serve().await;
    let mut agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 20").await;
    let (s, v) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201, "{v}");

    let stop = Arc::new(AtomicBool::new(false));
    let js_length = Arc::new(AtomicU64::new(prefill + 1));
    let writer = Writer {
        js,
        model,
        rng: Rng::new(seed, 2),
        next_key: 0,
        next_value: 0,
        stats: WriterStats::default(),
    };
    let writer = tokio::spawn(writer.run(stop.clone(), js_length.clone()));

    // The kills. The first process is the one that took the follow.
    let mut lagging = 0;
    let mut mid_backfill = 0;
    for (i, kill) in schedule.iter().enumerate() {
        let fresh = agg.child.is_none();
        if fresh {
            match kill {
                AggKill::Startup(_) => spawn_agg(&mut agg),
                _ => agg.restart().await,
            }
        }
        let at = match *kill {
            AggKill::Startup(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                None
            }
            AggKill::AtListen => None,
            AggKill::Download => Some(
                agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(90), |v| {
                    field(v, "blocksDownloaded") > 0
                })
                .await
                .0,
            ),
            AggKill::Commit(ms) => {
                let v0 = field(&feed_status(&agg, &key).await.unwrap(), "indexedVersion");
                agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(90), |v| {
                    field(v, "indexedVersion") > v0
                })
                .await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                feed_status(&agg, &key).await
            }
            AggKill::Delay(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                feed_status(&agg, &key).await
            }
        };
        let alive = agg
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none());
        assert!(alive, "the aggregator exited by itself before kill {i}");
        agg.kill9().await;
        match &at {
            Some(st) => {
                let (indexed, remote) = (field(st, "indexedVersion"), field(st, "remoteLength"));
                lagging += u64::from(indexed < remote);
                mid_backfill += u64::from(remote.saturating_sub(indexed) >= 1000);
                eprintln!(
                    "kill {i} ({kill:?}): indexed {indexed} of {remote}, {} blocks downloaded by this process, bee at {}",
                    field(st, "blocksDownloaded"),
                    js_length.load(Ordering::Relaxed)
                );
            }
            None => eprintln!(
                "kill {i} ({kill:?}){}, bee at {}",
                if fresh { "" } else { " of the first process" },
                js_length.load(Ordering::Relaxed)
            ),
        }
    }

    // The writer stops; the oracle is what JS hyperbee holds then.
    stop.store(true, Ordering::Relaxed);
    let mut w = writer.await.unwrap();
    eprintln!("writer: {:?}", w.stats);
    let info = w.js.call(json!({"cmd": "info", "name": "soak"})).await;
    let length = info["length"].as_u64().unwrap();
    let oracle =
        w.js.call(json!({"cmd": "range", "name": "soak", "opts": {}}))
            .await;
    let oracle = entries_map("JS range", oracle["entries"].as_array().unwrap());
    let modelled: BTreeMap<String, Value> = oracle
        .iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    assert!(
        modelled == w.model.map,
        "the JS bee differs from the writer's model: the writer is broken, not the aggregator"
    );

    agg.restart().await;
    let (st, took) = agg
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(300), |v| {
            field(v, "indexedVersion") == length
        })
        .await;
    eprintln!("caught up with version {length} {took:?} after the last restart: {st}");
    let got = agg.all_entries(&key).await;
    let got_map = entries_map("aggregator feed", &got);
    assert_same("aggregator vs the JS bee", &got_map, &oracle);
    assert_eq!(got.len(), oracle.len());

    // Single entries: deleted keys are gone, live ones carry their last value.
    let mut prng = Rng::new(seed, 3);
    for _ in 0..20 {
        if let Some(k) = w.model.deleted(&mut prng) {
            let (s, v) = agg.get(&format!("/v1/entries/{key}/{k}")).await;
            assert_eq!(s, 404, "deleted key {k} is still served: {v}");
        }
        if let Some(k) = w.model.live(&mut prng) {
            let (s, v) = agg.get(&format!("/v1/entries/{key}/{k}")).await;
            assert_eq!(s, 200, "{k}: {v}");
            assert_eq!(v["value"], oracle[&k].1, "{k}");
        }
    }

    // Once more from the final checkpoint: nothing moves.
    agg.kill9().await;
    agg.restart().await;
    let st = feed_status(&agg, &key).await.unwrap();
    assert_eq!(field(&st, "indexedVersion"), length, "{st}");
    let again = entries_map(
        "aggregator feed after a restart",
        &agg.all_entries(&key).await,
    );
    assert_same("after a restart at the final checkpoint", &again, &oracle);

    // (Too few kills to be sure of either below 10.)
    if kills >= 10 {
        assert!(
            lagging >= 1,
            "none of the event kills landed while the index lagged the bee"
        );
    }
    if prefill >= 5000 && kills >= 10 {
        assert!(
            mid_backfill >= 1,
            "no kill landed 1000 versions or more behind the bee (mid-backfill)"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "aggregator soak: {kills} kills ({lagging} while lagging, {mid_backfill} ≥ 1000 versions behind), \
         {} entries at version {length}, {secs:.1} s",
        oracle.len()
    );
    report(json!({
        "test": "aggregator", "seed": seed, "kills": kills, "lagging": lagging,
        "midBackfill": mid_backfill, "version": length, "entries": oracle.len(),
        "writes": w.stats.puts + w.stats.dels, "seconds": secs, "outcome": "pass",
    }));
    w.js.close().await;
}

/// Found by the aggregator soak: JS hyperbee writes a batch of deletes with a tree node that
/// points at a later block of the batch (here block 55 at (56, 1)). The aggregator refused
/// the block as malformed and its feed stopped there for good (indexed version stuck, the
/// entries after it never indexed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_indexes_a_js_batch_whose_nodes_point_at_later_blocks() {
    let _one = SERIAL.lock().await;
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let puts: Vec<Value> = (0..54)
        .map(|i| json!({"type": "put", "key": format!("k{i:05}"), "value": {"i": i}}))
        .collect();
    js.call(json!({"cmd": "batch", "name": "b", "ops": puts}))
        .await;
    let dels = json!([{"type": "del", "key": "k00000"}, {"type": "del", "key": "k00044"}]);
    let done = js
        .call(json!({"cmd": "batch", "name": "b", "ops": dels}))
        .await;
    assert_eq!(done["length"], 57, "blocks 55 and 56 are the deletes");
    let port = js.serve().await;
    let agg = AggProc::start(dir.join("agg"), "").await;
    let (s, v) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201, "{v}");
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
        field(v, "indexedVersion") == 57
    })
    .await;
    let want = js
        .call(json!({"cmd": "range", "name": "b", "opts": {}}))
        .await;
    let want = entries_map("JS range", want["entries"].as_array().unwrap());
    assert_eq!(want.len(), 52);
    let got = entries_map("aggregator feed", &agg.all_entries(&key).await);
    assert_same("aggregator vs the JS bee", &got, &want);
    js.close().await;
}

// ---------------------------------------------------------------------------------------
// The publisher's import.

/// `bees` → the length of bee `name`.
fn bee_length(p: &Publisher, name: &str) -> u64 {
    p.run(&["bees"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == json!(name))
        .unwrap_or_else(|| panic!("no bee {name}"))["length"]
        .as_u64()
        .unwrap()
}

fn bee_hex(p: &Publisher, name: &str) -> String {
    p.run(&["bees"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == json!(name))
        .unwrap()["hex"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `list NAME` (locally or through serve) as a map.
fn listed(p: &Publisher, name: &str) -> BTreeMap<String, (u64, Value)> {
    let rows: Vec<Value> = p
        .run(&["list", name])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    entries_map("list", &rows)
}

/// Starts `serve` (no DHT, no page, any port); waits until its control socket answers and
/// returns its replication port. `None` if it exited instead (the data directory was busy).
async fn start_serve(p: &Publisher) -> Option<(Serving, u16)> {
    let mut s = p.serve(&["--no-dht"], None);
    let port = until("serve to start", Duration::from_secs(30), || {
        let lines = s.lines.lock().unwrap();
        let ready = lines.iter().any(|l| l.starts_with("commands run here"));
        let port = lines
            .iter()
            .find_map(|l| l.strip_prefix("serving ")?.rsplit_once(':')?.1.parse().ok());
        drop(lines);
        match (ready, port) {
            (true, Some(port)) => Some(Some(port)),
            _ if s.child.try_wait().unwrap().is_some() => Some(None),
            _ => None,
        }
    })
    .await?;
    Some((s, port))
}

async fn kill_serve(s: &mut Serving) {
    let _ = s.child.start_kill();
    let _ = s.child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_import_soak_kill_9_leaves_a_readable_prefix_on_batch_boundaries() {
    let _one = SERIAL.lock().await;
    let started = Instant::now();
    let seed = soak_seed("import soak");
    let kills = env_u64("APIARY_SOAK_IMPORT_KILLS", 10);
    let lines = env_u64("APIARY_SOAK_IMPORT_LINES", 5_500) as usize;
    let mut rng = Rng::new(seed, 4);

    let p = Publisher::new();
    p.init("imp");
    p.init("cal");
    let hex = bee_hex(&p, "imp");
    // The file: mostly new keys, some lines putting an earlier key again (the later wins).
    let mut file_lines: Vec<(String, Value)> = Vec::with_capacity(lines);
    for i in 0..lines {
        let key = if i > 10 && rng.pct(5) {
            file_lines[rng.index(i)].0.clone()
        } else {
            format!("item{i:07}")
        };
        let value = if rng.pct(2) {
            json!({"title": format!("movie {i}"), "i": i, "plot": "z".repeat(rng.range(1100, 3000) as usize)})
        } else {
            json!({"title": format!("movie {i}"), "i": i})
        };
        file_lines.push((key, value));
    }
    let text: String = file_lines
        .iter()
        .map(|(k, v)| format!("{}\n", json!({"key": k, "value": v})))
        .collect();
    let file = p.dir.path().join("in.jsonl");
    std::fs::write(&file, text).unwrap();
    let file = file.to_string_lossy().into_owned();
    // What an import that wrote the first `m` lines leaves, on top of `state`.
    let apply = |state: &mut BTreeMap<String, Value>, m: usize| {
        for (k, v) in &file_lines[..m] {
            state.insert(k.clone(), v.clone());
        }
    };
    let mut expected = BTreeMap::new();
    let batches = lines / 1000;

    // How long a whole import takes here, to spread the kills over it.
    let d = p.dir.path().to_string_lossy().into_owned();
    let t = Instant::now();
    let out = p.run(&["import", "cal", &file]);
    let whole = t.elapsed();
    assert!(out.contains(&format!("\"imported\":{lines}")), "{out}");
    eprintln!("import soak: {kills} kills, {lines} lines; a whole import takes {whole:?}");

    let mut len = bee_length(&p, "imp");
    assert_eq!(len, 1);
    let mut follower = Follower::start(&hex).await;
    let mut landed = 0;
    let mut completed = 0;
    let mut schedule = Vec::new();
    let mut attempts = 0;
    while landed < kills {
        attempts += 1;
        assert!(
            attempts <= kills * 4,
            "the kills keep missing the import ({completed} completed)"
        );
        let delay = if rng.pct(15) {
            rng.range(0, 100)
        } else {
            rng.range(0, whole.as_millis() as u64 * 11 / 10)
        };
        let mut child = tokio::process::Command::new(&p.bin)
            .args(["--data-dir", &d, "import", "imp", &file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let exited = tokio::time::timeout(Duration::from_millis(delay), child.wait()).await;
        let killed = match exited {
            Ok(status) => {
                assert!(status.unwrap().success(), "import failed by itself");
                completed += 1;
                false
            }
            Err(_) => {
                child.start_kill().unwrap();
                let _ = child.wait().await;
                landed += 1;
                true
            }
        };
        schedule.push(delay);
        let before = len;
        len = bee_length(&p, "imp");
        assert!(len >= before, "the bee went back from {before} to {len}");
        let grew = (len - before) as usize;
        // Whole batches of 1000, or the whole file (its last batch is shorter).
        assert!(
            (grew / 1000 * 1000 == grew && grew / 1000 <= batches) || grew == lines,
            "after {}: the bee grew by {grew}, not a batch boundary",
            if killed { "a kill" } else { "an import" }
        );
        if !killed {
            assert_eq!(grew, lines, "a finished import wrote every line");
        }
        // Each import starts from the first line: it left `grew` lines on top of the last.
        apply(&mut expected, grew);
        let here = listed(&p, "imp");
        let values: BTreeMap<String, Value> = here
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        assert!(
            values == expected,
            "after import {attempts}: `list` holds {} entries, not what {grew} more lines leave ({})",
            values.len(),
            expected.len()
        );
        assert!(here.values().all(|(seq, _)| *seq < len));
        // ... and through JS hyperbee over the network: the follower that read it after the
        // kills before, and now and then a reader that never saw it.
        let (mut srv, port) = start_serve(&p).await.expect("serve starts");
        let js = follower.read_at(port, len).await;
        assert_same("JS follower vs list", &js, &here);
        if attempts % 4 == 1 {
            let (js_len, js) = js_read(port, &hex).await;
            assert_eq!(js_len, len, "JS sees the length `bees` shows");
            assert_same("new JS reader vs list", &js, &here);
        }
        kill_serve(&mut srv).await;
        eprintln!(
            "import {attempts}: {} after {delay} ms, bee at {len} (+{grew})",
            if killed { "killed" } else { "finished" }
        );
    }

    // A whole import at the end: exactly the file's entries.
    let before = len;
    let out = p.run(&["import", "imp", &file]);
    assert!(out.contains(&format!("\"imported\":{lines}")), "{out}");
    len = bee_length(&p, "imp");
    assert_eq!(len, before + lines as u64);
    let here = listed(&p, "imp");
    let values: BTreeMap<String, Value> = here
        .iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    let mut whole_file = BTreeMap::new();
    apply(&mut whole_file, lines);
    assert!(
        values == whole_file,
        "the final import gives exactly the file's entries"
    );
    let (mut srv, port) = start_serve(&p).await.expect("serve starts");
    let js = follower.read_at(port, len).await;
    assert_same("JS follower vs list at the end", &js, &here);
    let (js_len, js) = js_read(port, &hex).await;
    kill_serve(&mut srv).await;
    assert_eq!(js_len, len);
    assert_same("new JS reader vs list at the end", &js, &here);
    follower.js.close().await;

    let secs = started.elapsed().as_secs_f64();
    eprintln!("import soak: {landed} kills, {completed} imports finished before their kill, delays {schedule:?}, {secs:.1} s");
    report(json!({
        "test": "import", "seed": seed, "kills": landed, "completedImports": completed,
        "lines": lines, "length": len, "seconds": secs, "outcome": "pass",
    }));
}

// ---------------------------------------------------------------------------------------
// The publisher's serve.

/// What is known of one key: its last acknowledged state (`None`: absent) and the writes
/// sent after it whose outcome is unknown (`serve` died before it answered).
#[derive(Debug, Clone, Default)]
struct KeyState {
    acked: Option<Value>,
    unsure: Vec<Option<Value>>,
}

impl KeyState {
    fn allows(&self, got: Option<&Value>) -> bool {
        self.acked.as_ref() == got || self.unsure.iter().any(|u| u.as_ref() == got)
    }
}

#[derive(Default)]
struct Acks {
    keys: BTreeMap<String, KeyState>,
    /// Length of the bee the acknowledged writes need (the highest acknowledged seq + 1).
    length: u64,
    acked: u64,
    unsure: u64,
    /// A writer's failure (an answer no kill explains).
    failed: Option<String>,
}

/// When to kill `serve`.
#[derive(Debug, Clone, Copy)]
enum ServeKill {
    /// During its start (then it starts again).
    Startup(u64),
    /// As soon as it answers on its control socket.
    AtReady,
    /// Once this many more writes were acknowledged.
    AfterAcks(u64),
    /// This many ms after it is ready.
    Delay(u64),
}

fn serve_schedule(rng: &mut Rng, n: u64) -> Vec<ServeKill> {
    let mut v: Vec<ServeKill> = (0..n)
        .map(|i| match i % 4 {
            0 => ServeKill::Startup(rng.range(0, 300)),
            1 => ServeKill::AtReady,
            2 => ServeKill::AfterAcks(rng.range(1, 40)),
            _ => ServeKill::Delay(rng.range(20, 2000)),
        })
        .collect();
    rng.shuffle(&mut v);
    v
}

/// What the CLI writers and the kill loop share.
struct Writers {
    bin: std::path::PathBuf,
    dir: String,
    acks: Mutex<Acks>,
    /// Writes may start.
    go: AtomicBool,
    /// Writes under way.
    busy: AtomicU64,
    stop: AtomicBool,
    /// Writes acknowledged.
    count: AtomicU64,
}

/// One CLI writer: puts, overwrites and deletes of its own keys, one at a time, while
/// `go` is set.
async fn cli_writer(w: Arc<Writers>, id: usize, mut rng: Rng) {
    let Writers {
        bin,
        dir,
        acks,
        go,
        busy,
        stop,
        count,
    } = &*w;
    let mut n = 0u64;
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !go.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        busy.fetch_add(1, Ordering::SeqCst);
        // Checked again after announcing the write: the kill loop clears `go`, kills, and
        // waits for `busy` to drop to zero, so no write starts after the kill.
        if !go.load(Ordering::SeqCst) {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        n += 1;
        // Only keys whose state is certain are overwritten or deleted.
        let certain: Vec<&String> = {
            let a = acks.lock().unwrap();
            mine.iter()
                .filter(|k| {
                    a.keys
                        .get(*k)
                        .is_some_and(|s| s.unsure.is_empty() && s.acked.is_some())
                })
                .collect()
        };
        let r = rng.range(0, 100);
        let (key, value) = if r < 55 || certain.is_empty() {
            let k = format!("w{id}-{n:06}");
            mine.push(k.clone());
            (
                k,
                Some(json!({"w": id, "n": n, "text": format!("write {n} of writer {id}")})),
            )
        } else if r < 80 {
            let k = certain[rng.index(certain.len())].clone();
            (
                k,
                Some(json!({"w": id, "n": n, "text": format!("overwrite {n}")})),
            )
        } else {
            (certain[rng.index(certain.len())].clone(), None)
        };
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["--data-dir", dir]);
        match &value {
            Some(v) => cmd.args(["put", "live", &key, &v.to_string()]),
            None => cmd.args(["del", "live", &key]),
        };
        let out = cmd.kill_on_drop(true).output().await.unwrap();
        {
            let mut a = acks.lock().unwrap();
            let st = a.keys.entry(key.clone()).or_default();
            if out.status.success() {
                st.acked = value;
                st.unsure.clear();
                let seq = serde_json::from_slice::<Value>(&out.stdout).unwrap()["seq"]
                    .as_u64()
                    .unwrap();
                a.length = a.length.max(seq + 1);
                a.acked += 1;
                count.fetch_add(1, Ordering::SeqCst);
            } else {
                // Exit 1: serve went away before it answered (or the directory was busy):
                // the write may or may not have happened. Anything else is a failure (exit
                // 2 for the del of an acknowledged key: it was lost).
                if out.status.code() == Some(1) {
                    st.unsure.push(value);
                    a.unsure += 1;
                } else {
                    let err = String::from_utf8_lossy(&out.stderr).into_owned();
                    a.failed = Some(format!("{key}: {:?}: {err}", out.status.code()));
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_serve_soak_kill_9_keeps_every_acknowledged_write() {
    let _one = SERIAL.lock().await;
    let started = Instant::now();
    let seed = soak_seed("serve soak");
    let kills = env_u64("APIARY_SOAK_SERVE_KILLS", 16);
    let mut rng = Rng::new(seed, 5);
    let schedule = serve_schedule(&mut rng, kills);
    eprintln!("serve soak: {kills} kills; schedule {schedule:?}");

    let p = Publisher::new();
    p.init("live");
    let hex = bee_hex(&p, "live");
    let w = Arc::new(Writers {
        bin: p.bin.clone(),
        dir: p.dir.path().to_string_lossy().into_owned(),
        acks: Mutex::new(Acks {
            length: 1,
            ..Default::default()
        }),
        go: AtomicBool::new(false),
        busy: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        count: AtomicU64::new(0),
    });
    let writers: Vec<_> = (0..2)
        .map(|id| tokio::spawn(cli_writer(w.clone(), id, Rng::new(seed, 10 + id as u64))))
        .collect();

    let failed = || w.acks.lock().unwrap().failed.clone();
    let mut follower = Follower::start(&hex).await;
    let mut seen_len = 1;
    let mut startup_kills = 0;
    let mut in_flight = 0;
    let mut retries = 0;
    // Each round kills one `serve` process.
    for (i, kill) in schedule.iter().enumerate() {
        if let ServeKill::Startup(ms) = *kill {
            let mut s = p.serve(&["--no-dht"], None);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let alive = s.child.try_wait().unwrap().is_none();
            kill_serve(&mut s).await;
            startup_kills += 1;
            eprintln!("kill {i} ({kill:?}) during the start (was running: {alive})");
            continue;
        }
        let (mut srv, port) = loop {
            match start_serve(&p).await {
                Some(sp) => break sp,
                None => {
                    // Only a CLI holding the directory stops it, and none runs now.
                    retries += 1;
                    assert!(retries < 20, "serve does not start again");
                }
            }
        };
        seen_len = check_after_restart(&p, &hex, &mut follower, port, &w.acks, seen_len, i).await;
        let before = w.count.load(Ordering::SeqCst);
        w.go.store(true, Ordering::SeqCst);
        match *kill {
            ServeKill::AfterAcks(n) => {
                until("acknowledged writes", Duration::from_secs(60), || {
                    (w.count.load(Ordering::SeqCst) >= before + n || w.stop.load(Ordering::Relaxed))
                        .then_some(())
                })
                .await
            }
            ServeKill::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => {}
        }
        assert_eq!(failed(), None);
        assert!(
            srv.child.try_wait().unwrap().is_none(),
            "serve exited by itself"
        );
        // No new write starts; those in flight meet the kill.
        w.go.store(false, Ordering::SeqCst);
        in_flight += u64::from(w.busy.load(Ordering::SeqCst) > 0);
        kill_serve(&mut srv).await;
        until("writes in flight", Duration::from_secs(60), || {
            (w.busy.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await;
        assert_eq!(failed(), None);
        let a = w.acks.lock().unwrap();
        eprintln!(
            "kill {i} ({kill:?}): {} writes acknowledged so far, {} unsure, the bee needs {}",
            a.acked, a.unsure, a.length
        );
    }
    let (mut srv, port) = start_serve(&p).await.expect("serve starts");
    seen_len = check_after_restart(
        &p,
        &hex,
        &mut follower,
        port,
        &w.acks,
        seen_len,
        kills as usize,
    )
    .await;
    w.stop.store(true, Ordering::Relaxed);
    for h in writers {
        h.await.unwrap();
    }
    kill_serve(&mut srv).await;
    follower.js.close().await;
    assert_eq!(failed(), None);

    let a = w.acks.lock().unwrap();
    let secs = started.elapsed().as_secs_f64();
    // From 4 kills on the schedule has one after acknowledged writes.
    assert!(a.acked > 0 || kills < 4, "no write was acknowledged");
    eprintln!(
        "serve soak: {kills} kills ({startup_kills} during a start, {in_flight} with writes in flight), {} writes acknowledged, {} unsure, length {seen_len}, {secs:.1} s",
        a.acked, a.unsure
    );
    report(json!({
        "test": "serve", "seed": seed, "kills": kills, "startupKills": startup_kills,
        "inFlight": in_flight, "acked": a.acked, "unsure": a.unsure,
        "length": seen_len, "seconds": secs, "outcome": "pass",
    }));
}

/// Regression: `serve` showed readers the head of an append before it was on disk, so a
/// `kill -9` could take back a length a reader had seen; the next write then signed other
/// blocks at that length, and a JS reader that had seen the first saw "two conflicting
/// signatures" and closed the bee for good. Here `serve` is killed in the middle of an
/// import it runs for the CLI, as soon as a JS follower has seen part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_serve_kill_9_never_takes_back_a_length_a_reader_saw() {
    let _one = SERIAL.lock().await;
    let p = Publisher::new();
    p.init("live");
    let hex = bee_hex(&p, "live");
    let file = p.dir.path().join("in.jsonl");
    let lines = 60_000;
    let text: String = (0..lines)
        .map(|i| {
            format!(
                "{}\n",
                json!({"key": format!("item{i:06}"), "value": {"i": i}})
            )
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let d = p.dir.path().to_string_lossy().into_owned();
    let mut follower = Follower::start(&hex).await;
    let (mut mid_import, mut rounds) = (0, 0);
    while mid_import < 3 {
        rounds += 1;
        assert!(rounds <= 10, "the kills keep missing the imports");
        let (mut srv, port) = start_serve(&p).await.expect("serve starts");
        let before = bee_length(&p, "live");
        follower.catch_up(port, before).await;
        let import = tokio::process::Command::new(&p.bin)
            .args(["--data-dir", &d, "import", "live", "--batch", "100"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // As soon as the follower has seen a batch of this import.
        let seen = loop {
            let l = follower.update().await;
            if l > before {
                break l;
            }
        };
        kill_serve(&mut srv).await;
        let done = import.wait_with_output().await.unwrap().status.success();
        mid_import += u64::from(!done);
        let (mut srv, port) = start_serve(&p).await.expect("serve starts");
        let len = bee_length(&p, "live");
        eprintln!(
            "round {rounds}: the follower saw {seen} of {}, the bee came back at {len}{}",
            before + lines,
            if done {
                " (the import had finished)"
            } else {
                ""
            }
        );
        assert!(
            len >= seen,
            "round {rounds}: a reader saw length {seen}, the bee came back at {len}"
        );
        // The next write signs the next length; the follower reads it.
        let key = format!("after-{rounds}");
        p.run(&["put", "live", &key, "1"]);
        follower.catch_up(port, len + 1).await;
        assert_eq!(follower.get(&key).await["value"], json!(1));
        kill_serve(&mut srv).await;
    }
    follower.js.close().await;
}

/// `serve` of data directory `dir` on `listen`, no page; the address it printed.
async fn serve_on(
    bin: &std::path::Path,
    dir: &str,
    listen: &str,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(["--data-dir", dir, "serve", "--no-dht", "--no-page"])
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = apiary_tests::StdoutLines::collect(child.stdout.take().unwrap())
        .wait_for(
            "the serve's address",
            Duration::from_secs(20),
            apiary_tests::printed::publisher_replication,
        )
        .await;
    (child, addr)
}

/// The same through the aggregator: it followed a bee whose `serve` was killed mid-import.
/// Before the fix, the bee came back shorter than the aggregator had seen; the aggregator
/// then waited for blocks the publisher no longer had ("block N is not available") and never
/// indexed the bee again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_follows_a_publisher_across_a_kill_9_of_serve_mid_import() {
    let _one = SERIAL.lock().await;
    let p = Publisher::new();
    p.init("live");
    let hex = bee_hex(&p, "live");
    let file = p.dir.path().join("in.jsonl");
    let text: String = (0..30_000)
        .map(|i| {
            format!(
                "{}\n",
                json!({"key": format!("item{i:06}"), "value": {"i": i}})
            )
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let d = p.dir.path().to_string_lossy().into_owned();
    let (_keep, dir) = temp_dir();
    let agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 20").await;
    // The first serve picks a port; the restarts take the same address, as the aggregator
    // knows it.
    let (mut srv, addr) = serve_on(&p.bin, &d, "127.0.0.1:0").await;
    let (s, v) = agg.follow(&hex, Some(&addr)).await;
    assert_eq!(s, 201, "{v}");
    let status = format!("/v1/feeds/{hex}");
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 5, "the kills keep missing the imports");
        let before = bee_length(&p, "live");
        agg.wait_for(&status, Duration::from_secs(60), |v| {
            field(v, "length") == before
        })
        .await;
        let import = tokio::process::Command::new(&p.bin)
            .args(["--data-dir", &d, "import", "live", "--batch", "100"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // As soon as the aggregator holds a length of this import.
        let (st, _) = agg
            .wait_for(&status, Duration::from_secs(60), |v| {
                field(v, "length") > before
            })
            .await;
        let _ = srv.start_kill();
        let _ = srv.wait().await;
        let done = import.wait_with_output().await.unwrap().status.success();
        let again;
        (srv, again) = serve_on(&p.bin, &d, &addr).await;
        assert_eq!(again, addr);
        let seen = field(&st, "length");
        let len = bee_length(&p, "live");
        eprintln!("round {rounds}: the aggregator held {seen}, the bee came back at {len}");
        assert!(
            len >= seen,
            "the aggregator held {seen}, the bee came back at {len}"
        );
        if !done {
            break;
        }
    }
    p.run(&["put", "live", "after", "{\"text\": \"after the kill\"}"]);
    let len = bee_length(&p, "live");
    agg.wait_for(&status, Duration::from_secs(120), |v| {
        field(v, "indexedVersion") == len
    })
    .await;
    let got = entries_map("aggregator feed", &agg.all_entries(&hex).await);
    assert_same("aggregator vs list", &got, &listed(&p, "live"));
    let _ = srv.start_kill();
}

/// After a restart of `serve`: the bee holds every acknowledged write (an unsure one may or
/// may not be there), for the CLI and for a fresh JS reader, and its length did not go
/// back. A JS follower that stayed connected while the writes went on reads the same. What
/// is seen becomes what later restarts must keep. Returns the length.
async fn check_after_restart(
    p: &Publisher,
    hex: &str,
    follower: &mut Follower,
    port: u16,
    acks: &Mutex<Acks>,
    seen_len: u64,
    round: usize,
) -> u64 {
    let len = bee_length(p, "live");
    let here = listed(p, "live");
    {
        let mut a = acks.lock().unwrap();
        assert!(
        len >= a.length && len >= seen_len,
        "restart {round}: the bee is at {len}; acknowledged writes need {}, a reader saw {seen_len}",
        a.length
    );
        let mut lost = Vec::new();
        for (k, st) in a.keys.iter_mut() {
            let got = here.get(k).map(|(_, v)| v);
            if !st.allows(got) {
                lost.push(format!("{k}: {got:?}, acknowledged {:?}", st.acked));
            }
            st.acked = got.cloned();
            st.unsure.clear();
        }
        assert!(
            lost.is_empty(),
            "restart {round}: {} keys lost their acknowledged state, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    let (js_len, js) = js_read(port, hex).await;
    assert_eq!(
        js_len, len,
        "restart {round}: JS sees the length `bees` shows"
    );
    assert_same(
        &format!("restart {round}: new JS reader vs list"),
        &js,
        &here,
    );
    let js = follower.read_at(port, len).await;
    assert_same(&format!("restart {round}: JS follower vs list"), &js, &here);
    len
}

#[test]
fn schedules_cover_every_kind() {
    let mut rng = Rng::new(7, 1);
    let s = agg_schedule(&mut rng, 25);
    for kind in 0..5 {
        let n = s
            .iter()
            .filter(|k| {
                matches!(
                    (kind, k),
                    (0, AggKill::Startup(_))
                        | (1, AggKill::AtListen)
                        | (2, AggKill::Download)
                        | (3, AggKill::Commit(_))
                        | (4, AggKill::Delay(_))
                )
            })
            .count();
        assert_eq!(n, 5, "{s:?}");
    }
}
