//! Benchmark (not a test) of one risk assessment with 50 active rules.
//!
//! Run: `cargo bench -p spinpay-core --bench riskengine` (release profile, native).
//!
//! Prints, per assessment, the mean and percentiles of:
//! * `evaluate`: the pure rule evaluation over already-decoded counter records;
//! * `guest cpu`: everything the risk-check guest computes per recorded assessment except
//!   storage I/O and HTTP: decode the configuration and four counter records from their
//!   stored JSON, hash the identifiers with the merchant salt, evaluate, build and apply
//!   the four counter updates and encode the records for the compare-and-swap;
//! * `preview`: what a preview computes (cached configuration, no updates);
//! * the storage operations of one recorded assessment, counted on a repository wrapper
//!   (round trips and keys).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use spinpay_core::crypto::Keyring;
use spinpay_core::model::{MethodKind, Payer, PaymentMethod, RiskDecision};
use spinpay_core::money::Currency;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository, Versioned};
use spinpay_core::riskengine::config::VelocityLimit;
use spinpay_core::riskengine::store::{self, Mode};
use spinpay_core::riskengine::{
    CounterRecord, Counters, Dimension, EngineConfig, EngineInput, RiskInput, Window, evaluate,
    payment_updates,
};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::Ctx;

const MID: &str = "mch_bench";
const SALT: &[u8] = b"bench-salt-0123456789abcdef01234";
/// 2026-11-25 12:00:00 UTC.
const T0: i64 = 1_795_608_000_000;
const WARMUP: u32 = 2_000;
const ITERATIONS: u32 = 20_000;

/// 36 velocity limits + per-transaction max + daily tier + 5 block lists + 1 allow list +
/// 3 anomalies + 3 AML rules = 50 active rules, with `entries` entries in each list.
fn config_50_rules(entries: u32) -> (EngineConfig, u32) {
    let mut c = EngineConfig {
        velocity: Vec::new(),
        ..EngineConfig::default()
    };
    for dimension in Dimension::ALL {
        for window in Window::ALL {
            for (n, (count, amount)) in [
                (Some(1_000), None),
                (None, Some(90_000_000)),
                (Some(2_000), Some(99_000_000)),
            ]
            .into_iter()
            .enumerate()
            {
                c.velocity.push(VelocityLimit {
                    dimension,
                    window,
                    max_count: count,
                    max_amount_minor: amount,
                    contribution: 10 + n as i64,
                });
            }
        }
    }
    c.daily_tiers.dynamic_methods = [MethodKind::QrCustomer].into_iter().collect();
    c.daily_tiers.dynamic_low_auth_max_minor = 1_000_000;
    let many = |prefix: &str| -> BTreeSet<String> {
        (0..entries).map(|i| format!("{prefix}-{i:04}")).collect()
    };
    c.blocklist.payer_ids = many("blocked-payer");
    c.blocklist.device_ids = many("blocked-device");
    c.blocklist.ips = (0..entries)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    c.blocklist.phone_hashes = (0..entries)
        .map(|i| spinpay_core::riskengine::hash_identifier(SALT, "phone", &format!("+86{i}")))
        .collect();
    c.blocklist.token_hashes = (0..entries)
        .map(|i| spinpay_core::riskengine::hash_identifier(SALT, "token", &format!("t{i}")))
        .collect();
    c.allowlist.payer_ids = many("vip");
    c.validate().expect("bench config is valid");
    let active = c.velocity.len() as u32 + 2 + 5 + 1 + 3 + 3;
    (c, active)
}

fn risk_input(n: u32) -> RiskInput {
    let payer = Payer {
        id: Some("u-42".into()),
        device_id: Some("d-9".into()),
        ip: Some("203.0.113.7".into()),
        country: Some("CN".into()),
        phone: Some("+8613900000000".into()),
    };
    let method = PaymentMethod::QrCustomer {
        auth_code: "283000000000000001".into(),
    };
    let mut random = [0_u8; 16];
    random[..4].copy_from_slice(&n.to_le_bytes());
    let pay = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Payment, &random);
    RiskInput::from_method(MID, Some(pay), 4_200, Currency::Cny, &method, payer)
}

/// Records with a day of history in every ring (as a busy payer's would be).
fn history(config: &EngineConfig) -> Vec<(Dimension, String, Vec<u8>)> {
    let input = risk_input(0).engine_input(SALT).unwrap();
    let mut recs: Vec<(Dimension, String, CounterRecord)> = input
        .counter_keys()
        .into_iter()
        .map(|(d, k)| (d, k, CounterRecord::new()))
        .collect();
    for i in 0..40_u32 {
        let at = T0 - 86_000_000 + i64::from(i) * 2_150_000;
        let past = risk_input(10_000 + i).engine_input(SALT).unwrap();
        for u in payment_updates(config, &past, at) {
            let r = recs.iter_mut().find(|(_, k, _)| *k == u.key).unwrap();
            r.2 = r.2.clone().apply(&u.key, &u.delta).unwrap().unwrap();
        }
    }
    recs.into_iter()
        .map(|(d, k, r)| (d, k, r.encode()))
        .collect()
}

/// Decodes stored counter records the way the guest does after its `get_many`.
fn decode_records(records: &[(Dimension, String, Vec<u8>)]) -> Counters {
    let mut counters = Counters::default();
    for (d, k, b) in records {
        counters.set(*d, Some(CounterRecord::decode(k, black_box(b)).unwrap()));
    }
    counters
}

/// One assessment as the guest runs it once it has the configuration: hash the input,
/// decode the records, evaluate, apply the updates and encode the new records.
fn guest_request(config: &EngineConfig, records: &[(Dimension, String, Vec<u8>)], i: u32) {
    let ei = EngineInput::new(risk_input(1_000_000 + i).facts().unwrap(), SALT).unwrap();
    let counters = decode_records(records);
    let a = evaluate(config, &ei, &counters, T0);
    for u in payment_updates(config, &ei, T0) {
        let d = records.iter().find(|(_, k, _)| *k == u.key).unwrap().0;
        let before = counters.get(d).cloned().unwrap_or_default();
        let after = before.apply(&u.key, &u.delta).unwrap().unwrap();
        black_box(after.encode());
    }
    black_box(a);
}

fn stats(name: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    let mean = total.as_secs_f64() * 1e6 / n as f64;
    let pct = |p: usize| samples[(n * p / 100).min(n - 1)].as_secs_f64() * 1e6;
    println!(
        "{name:<10} mean {mean:7.2} µs   p50 {:7.2} µs   p99 {:7.2} µs   ({n} runs)",
        pct(50),
        pct(99)
    );
    mean
}

fn bench(mut f: impl FnMut(u32)) -> Vec<Duration> {
    for i in 0..WARMUP {
        f(i);
    }
    (0..ITERATIONS)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect()
}

fn main() {
    for entries in [10, 1_000] {
        scenario(entries);
    }
    count_storage_ops(&config_50_rules(10).0);
}

fn scenario(entries: u32) {
    let (config, active) = config_50_rules(entries);
    let config_json = serde_json::to_vec(&config).unwrap();
    let records = history(&config);
    println!(
        "\nrisk engine: {active} active rules, {entries} entries per list, configuration {} bytes, counter records {} bytes",
        config_json.len(),
        records.iter().map(|(_, _, b)| b.len()).sum::<usize>()
    );
    let input = risk_input(1).engine_input(SALT).unwrap();
    let counters = decode_records(&records);
    let a = evaluate(&config, &input, &counters, T0);
    assert_eq!(a.decision, RiskDecision::Allow, "{a:?}");
    let eval = stats(
        "evaluate",
        bench(|_| {
            black_box(evaluate(
                black_box(&config),
                black_box(&input),
                black_box(&counters),
                T0,
            ));
        }),
    );
    let guest = stats(
        "guest cpu",
        bench(|i| {
            let c: EngineConfig = serde_json::from_slice(black_box(&config_json)).unwrap();
            guest_request(&c, &records, i);
        }),
    );
    let without_config = stats(
        "cached cfg",
        bench(|i| {
            guest_request(&config, &records, i);
        }),
    );
    stats(
        "preview",
        bench(|i| {
            let ei = EngineInput::new(risk_input(1_000_000 + i).facts().unwrap(), SALT).unwrap();
            let counters = decode_records(&records);
            black_box(evaluate(&config, &ei, &counters, T0));
        }),
    );
    println!(
        "(guest cpu = config decode {:.2} µs + hashing, records, evaluate {eval:.2} µs, updates; with the decoded configuration cached (risk-check keeps it per instance) {without_config:.2} µs)",
        guest - without_config
    );
}

/// Counts the storage round trips of recorded assessments (first one creates the salt).
fn count_storage_ops(config: &EngineConfig) {
    let repo = Counting::default();
    let keys = Keyring::new(1, [9; 32]);
    let mut rng = SplitMix64::new(7);
    let ctx = Ctx {
        repo: &repo,
        keys: &keys,
        now_ms: T0,
    };
    block_on(async {
        store::put_config(&ctx, MID, config.clone()).await.unwrap();
        for i in 0..2_u32 {
            repo.reset();
            let mut ri = risk_input(i);
            ri.payer.country = Some("CN".into());
            let a = store::assess(&ctx, &mut rng, &ri, Mode::Record, None)
                .await
                .unwrap();
            let (r, k, p) = (repo.round_trips.get(), repo.keys.get(), repo.puts.get());
            let what = if i == 0 {
                "first (creates the salt)"
            } else {
                "steady state"
            };
            println!(
                "storage per recorded assessment, {what}: {r} read round trips ({k} keys), {p} compare-and-swap writes; decision {:?}",
                a.decision
            );
        }
        repo.reset();
        let mut preview = risk_input(99);
        preview.payment_id = None;
        store::assess(&ctx, &mut rng, &preview, Mode::Preview, None)
            .await
            .unwrap();
        println!(
            "storage per preview assessment: {} read round trips ({} keys), {} writes",
            repo.round_trips.get(),
            repo.keys.get(),
            repo.puts.get()
        );
    });
}

/// A repository that counts what the engine asks of it.
#[derive(Default)]
struct Counting {
    inner: MemoryRepository,
    round_trips: Cell<u64>,
    keys: Cell<u64>,
    puts: Cell<u64>,
}

impl Counting {
    fn reset(&self) {
        self.round_trips.set(0);
        self.keys.set(0);
        self.puts.set(0);
    }
}

impl Repository for Counting {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.round_trips.set(self.round_trips.get() + 1);
        self.keys.set(self.keys.get() + 1);
        self.inner.get(key).await
    }
    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        self.puts.set(self.puts.get() + 1);
        self.inner.put_if_version(key, expected, value).await
    }
    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        self.puts.set(self.puts.get() + 1);
        self.inner.put_fresh(key, value).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        self.inner.increment(key, delta).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        self.round_trips.set(self.round_trips.get() + 1);
        self.keys.set(self.keys.get() + keys.len() as u64);
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        self.inner.delete(key).await
    }
}
