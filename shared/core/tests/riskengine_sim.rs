//! Seeded simulation of the risk engine: random payment streams over shared payers,
//! devices, IPs and tokens, driven through `assess` / `record_payment` on an in-memory
//! repository that injects conflicts and failures (retried by the driver), compared after
//! every step with a naive reference model that keeps every event in a Vec and recounts
//! the windows. Prints its seed; `SPINPAY_SEED=<n>` replays one.

use std::net::IpAddr;

use futures::executor::block_on;
use spinpay_core::model::{MethodKind, RiskDecision};
use spinpay_core::money::Currency;
use spinpay_core::repo::memory::{Faults, MemoryRepository};
use spinpay_core::riskengine::config::VelocityLimit;
use spinpay_core::riskengine::counters::{Bucket, Window};
use spinpay_core::riskengine::eval::decide;
use spinpay_core::riskengine::{
    AmlKind, Dimension, EngineConfig, EngineError, EngineInput, PaymentFacts, assess, day_reports,
    hash_identifier, load_counters, record_payment, report_day,
};
use spinpay_core::rng::SplitMix64;

const SALT: &[u8] = b"sim-salt";
const T0: i64 = 1_795_608_000_000;
const STEPS: u64 = 250;
/// Low enough that payers cross it often (weight 0: it reports, it does not score).
const LARGE_VALUE_MINOR: i64 = 400_000;
const PAYERS: [&str; 6] = ["u1", "u2", "u3", "u4", "u5", "u6"];
const DEVICES: [&str; 5] = ["d1", "d2", "d3", "d4", "bad-device"];
const IPS: [&str; 5] = [
    "203.0.113.7",
    "203.0.113.8",
    "198.51.100.1",
    "2001:db8::5",
    "10.9.9.9",
];
const TOKENS: [&str; 3] = ["t1", "t2", "t3"];

fn seeds() -> Vec<u64> {
    match std::env::var("SPINPAY_SEED") {
        Ok(s) => vec![s.parse().expect("SPINPAY_SEED is a u64")],
        Err(_) => {
            let base = 0x5eed_0005_u64;
            (0..24).map(|i| base.wrapping_add(i)).collect()
        }
    }
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.anomalies.new_device_amount_minor = None;
    c.anomalies.impossible_travel = None;
    c.anomalies.unusual_amount = None;
    c.aml.structuring = None;
    c.aml.rapid_refund = None;
    c.aml.large_value_daily_minor = LARGE_VALUE_MINOR;
    c.daily_tiers.static_methods.insert(MethodKind::QrMerchant);
    // One per-transaction maximum for every method keeps the reference model simple.
    for m in &mut c.per_transaction_max {
        m.max_minor = 5_000_000;
    }
    c.blocklist.device_ids.insert("bad-device".into());
    c.blocklist.ips.insert("10.0.0.0/8".into());
    let v = |dimension, window, max_count, max_amount_minor, contribution| VelocityLimit {
        dimension,
        window,
        max_count,
        max_amount_minor,
        contribution,
    };
    c.velocity = vec![
        v(Dimension::Payer, Window::M1, Some(3), None, 40),
        v(Dimension::Payer, Window::H1, None, Some(300_000), 30),
        v(Dimension::Device, Window::H1, Some(12), None, 30),
        v(Dimension::Ip, Window::M1, Some(4), Some(150_000), 40),
        v(Dimension::Token, Window::H24, Some(20), None, 70),
    ];
    c.validate().unwrap();
    c
}

/// One accepted payment, as the reference remembers it.
struct Event {
    at_ms: i64,
    ids: [Option<&'static str>; 4],
    amount_minor: i64,
    method: MethodKind,
    factors: u8,
}

/// The naive model: every accepted event in a Vec, windows recounted from scratch.
#[derive(Default)]
struct Reference {
    events: Vec<Event>,
    /// (day, payer) pairs with a large-value report, in filing order.
    reports: Vec<(String, &'static str)>,
}

impl Reference {
    /// Remembers an accepted payment and whether the payer's 24 h total now reaches the
    /// large-value level (one report per payer and report day).
    fn accept(&mut self, e: Event, now_ms: i64) {
        let payer = e.ids[0];
        self.events.push(e);
        if let Some(p) = payer {
            let total = self.window(Dimension::Payer, p, Window::H24, now_ms).1;
            let day = report_day(now_ms, 480);
            let seen = self.reports.iter().any(|(d, q)| *d == day && *q == p);
            if total >= LARGE_VALUE_MINOR && !seen {
                self.reports.push((day, p));
            }
        }
    }

    fn in_window(w: Window, at_ms: i64, now_ms: i64) -> bool {
        let b = now_ms.div_euclid(w.bucket_ms());
        let i = at_ms.div_euclid(w.bucket_ms());
        i <= b && i > b - w.ring()
    }

    fn window(&self, d: Dimension, id: &str, w: Window, now_ms: i64) -> (u64, i64) {
        self.events
            .iter()
            .filter(|e| e.ids[d.index()] == Some(id) && Self::in_window(w, e.at_ms, now_ms))
            .fold((0, 0), |(n, a), e| (n + 1, a + e.amount_minor))
    }

    fn tier_sum(&self, payer: &str, static_code: bool, high: bool, now_ms: i64) -> i64 {
        self.events
            .iter()
            .filter(|e| e.ids[0] == Some(payer) && Self::in_window(Window::H24, e.at_ms, now_ms))
            .filter(|e| match e.method {
                MethodKind::QrMerchant => static_code,
                MethodKind::QrCustomer => !static_code && (e.factors >= 2) == high,
                MethodKind::Nfc
                | MethodKind::SoundWave
                | MethodKind::H5
                | MethodKind::App
                | MethodKind::SmsOtp => false,
            })
            .map(|e| e.amount_minor)
            .sum()
    }

    /// The decision and score, recomputed from the events.
    fn decide(&self, c: &EngineConfig, e: &Event, now_ms: i64) -> (RiskDecision, i64) {
        let mut score = 0;
        let hits = [e.ids[1] == Some("bad-device"), e.ids[2] == Some("10.9.9.9")];
        let blocked = hits.contains(&true);
        score += c.weights.blocklist * hits.iter().filter(|h| **h).count() as i64;
        if e.amount_minor > 5_000_000 {
            score += c.weights.per_transaction_max;
        }
        if let Some(p) = e.ids[0] {
            let (stat, high) = (e.method == MethodKind::QrMerchant, e.factors >= 2);
            let over = match e.method {
                MethodKind::QrMerchant => {
                    self.tier_sum(p, true, false, now_ms) + e.amount_minor > 50_000
                }
                MethodKind::QrCustomer => {
                    let max = if high { 500_000 } else { 100_000 };
                    self.tier_sum(p, stat, high, now_ms) + e.amount_minor > max
                }
                MethodKind::Nfc
                | MethodKind::SoundWave
                | MethodKind::H5
                | MethodKind::App
                | MethodKind::SmsOtp => false,
            };
            if over {
                score += c.weights.daily_limit;
            }
        }
        for v in &c.velocity {
            let Some(id) = e.ids[v.dimension.index()] else {
                continue;
            };
            let (n, a) = self.window(v.dimension, id, v.window, now_ms);
            if v.max_count.is_some_and(|m| n + 1 > m) {
                score += v.contribution;
            }
            if v.max_amount_minor.is_some_and(|m| a + e.amount_minor > m) {
                score += v.contribution;
            }
        }
        (decide(&c.thresholds, score, blocked), score)
    }
}

fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T], none_per_mille: u32) -> Option<T> {
    if rng.chance(none_per_mille) {
        None
    } else {
        Some(xs[rng.below(xs.len() as u64) as usize])
    }
}

/// Retries an operation the repository failed on purpose (each attempt is all-or-nothing
/// per record, so a retry must not double-count).
fn retry<T>(mut f: impl FnMut() -> Result<T, EngineError>) -> T {
    for _ in 0..64 {
        match f() {
            Ok(v) => return v,
            Err(EngineError::Repo(_)) => continue,
            Err(e) => panic!("engine error: {e}"),
        }
    }
    panic!("64 injected failures in a row")
}

fn run(seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let faults = Faults {
        conflict_per_mille: 60,
        unavailable_per_mille: 30,
        yield_per_mille: 0,
        unknown_outcome_per_mille: 0,
    };
    let repo = MemoryRepository::with_faults(seed, faults);
    let c = config();
    let mut reference = Reference::default();
    let mut now = T0;
    let mut decisions = [0u32; 4];
    for step in 0..STEPS {
        now += match rng.below(10) {
            0 => rng.below(4 * 3_600_000) as i64,
            1..=2 => rng.below(600_000) as i64,
            _ => rng.below(15_000) as i64,
        };
        let method = [
            MethodKind::QrMerchant,
            MethodKind::QrCustomer,
            MethodKind::Nfc,
        ][rng.below(3) as usize];
        let event = Event {
            at_ms: now,
            ids: [
                pick(&mut rng, &PAYERS, 100),
                pick(&mut rng, &DEVICES, 100),
                pick(&mut rng, &IPS, 100),
                pick(&mut rng, &TOKENS, 300),
            ],
            amount_minor: match rng.below(20) {
                0 => 5_000_000 + rng.below(100) as i64,
                1..=4 => 20_000 + rng.below(200_000) as i64,
                _ => 1 + rng.below(20_000) as i64,
            },
            method,
            factors: rng.below(3) as u8,
        };
        let facts = PaymentFacts {
            merchant_id: "mch_sim".into(),
            payment_id: format!("pay_{step}"),
            amount_minor: event.amount_minor,
            currency: Currency::Cny,
            method,
            auth_factors: event.factors,
            payer_id: event.ids[0].map(String::from),
            device_id: event.ids[1].map(String::from),
            ip: event.ids[2].map(|s| s.parse::<IpAddr>().unwrap()),
            phone: None,
            token: event.ids[3].map(String::from),
            country: None,
            location: None,
        };
        let input = EngineInput::new(facts, SALT).unwrap();
        let got = retry(|| block_on(assess(&repo, &c, &input, now)));
        let want = reference.decide(&c, &event, now);
        assert_eq!(
            (got.decision, got.score),
            want,
            "step {step}: {:?}",
            got.fired
        );
        decisions[RiskDecision::ALL
            .iter()
            .position(|d| *d == got.decision)
            .unwrap()] += 1;
        if got.decision != RiskDecision::Deny {
            retry(|| block_on(record_payment(&repo, &c, &input, now)));
            reference.accept(event, now);
        }
        check_counters(&repo, &reference, &input, now, step);
    }
    assert!(
        decisions.iter().filter(|n| **n > 0).count() >= 3,
        "{decisions:?}"
    );
    let mut days: Vec<&String> = reference.reports.iter().map(|(d, _)| d).collect();
    days.dedup();
    let mut filed = Vec::new();
    for day in days {
        for r in retry(|| block_on(day_reports(&repo, "mch_sim", day))) {
            assert_eq!(r.kind, AmlKind::LargeValue);
            let payer = PAYERS
                .iter()
                .find(|p| hash_identifier(SALT, "payer", p) == r.payer_hash);
            filed.push((r.day.clone(), *payer.expect("a known payer")));
        }
    }
    assert!(
        !filed.is_empty(),
        "the stream should cross the large-value level"
    );
    assert_eq!(filed, reference.reports);
}

/// Every window of every entity of this payment matches the reference's recount.
fn check_counters(
    repo: &MemoryRepository,
    r: &Reference,
    input: &EngineInput,
    now: i64,
    step: u64,
) {
    let counters = retry(|| block_on(load_counters(repo, input)));
    let f = &input.facts;
    let ip = f.ip.map(|i| i.to_string());
    let ids = [
        f.payer_id.as_deref(),
        f.device_id.as_deref(),
        ip.as_deref(),
        f.token.as_deref(),
    ];
    for d in Dimension::ALL {
        let Some(id) = ids[d.index()] else { continue };
        let id = IPS
            .iter()
            .find(|x| x.parse::<IpAddr>().ok().map(|a| a.to_string()).as_deref() == Some(id))
            .copied()
            .unwrap_or(id);
        for w in Window::ALL {
            let t = counters
                .get(d)
                .map(|rec| rec.totals(w, now))
                .unwrap_or_default();
            assert_eq!(
                (t.count, t.amount_minor),
                r.window(d, id, w, now),
                "step {step} {d:?} {w:?}"
            );
        }
    }
    if let (Some(p), Some(rec)) = (ids[0], counters.get(Dimension::Payer)) {
        let sum = |f: fn(&Bucket) -> i64| rec.sum_24h(now, f);
        assert_eq!(
            sum(|b| b.static_minor),
            r.tier_sum(p, true, false, now),
            "step {step}"
        );
        assert_eq!(
            sum(|b| b.dynamic_low_minor),
            r.tier_sum(p, false, false, now),
            "step {step}"
        );
        assert_eq!(
            sum(|b| b.dynamic_high_minor),
            r.tier_sum(p, false, true, now),
            "step {step}"
        );
    }
}

#[test]
fn random_payment_streams_match_a_naive_recount_model() {
    // Proves counters (every dimension and window, PBOC tier sums) and decisions equal a
    // model that keeps every event and recounts, under injected conflicts and failures.
    for seed in seeds() {
        eprintln!("riskengine simulation seed {seed} (SPINPAY_SEED={seed} replays it)");
        if let Err(e) = std::panic::catch_unwind(|| run(seed)) {
            eprintln!("riskengine simulation failed with SPINPAY_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
