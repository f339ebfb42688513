//! The engine's storage use cases (what the risk-check component calls): versioned
//! configuration, the sealed per-merchant salt, preview vs recorded assessments, and
//! refund recording.

mod common;

use common::hooked::{Hooked, Hooks};
use futures::executor::block_on;
use spinpay_core::crypto::Keyring;
use spinpay_core::model::{Payer, PaymentMethod, RiskDecision};
use spinpay_core::money::Currency;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::riskengine::store::{assess, get_config, load_merchant, put_config, salt_key};
use spinpay_core::riskengine::{
    CounterRecord, CounterUpdate, EngineConfig, Mode, RiskInput, apply_update,
};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::Ctx;

const MID: &str = "mch_store";
/// 2026-11-25 12:00:00 UTC.
const T0: i64 = 1_795_608_000_000;

fn keys() -> Keyring {
    Keyring::new(1, [5; 32])
}

fn input(n: u32) -> RiskInput {
    let payer = Payer {
        id: Some("u-1".into()),
        device_id: Some("d-1".into()),
        ..Payer::default()
    };
    let mut random = [0_u8; 16];
    random[..4].copy_from_slice(&n.to_le_bytes());
    let pay = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Payment, &random);
    RiskInput::from_method(
        MID,
        Some(pay),
        1_000,
        Currency::Cny,
        &PaymentMethod::App,
        payer,
    )
}

/// A context over `repo` at `T0`.
fn at_t0<'a>(repo: &'a MemoryRepository, keys: &'a Keyring) -> Ctx<'a, MemoryRepository> {
    Ctx {
        repo,
        keys,
        now_ms: T0,
    }
}

fn count_keys(repo: &MemoryRepository, prefix: &str) -> usize {
    repo.keys_with_prefix(prefix).len()
}

#[test]
fn a_preview_writes_no_counters_and_a_recorded_payment_counts_once_under_retries() {
    // Proves Mode::Preview leaves the counters untouched, Mode::Record counts, and
    // recording the same payment id again (a retried call) does not move the velocity.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keys(), SplitMix64::new(1));
    let ctx = at_t0(&repo, &keys);
    block_on(async {
        let mut preview = input(1);
        preview.payment_id = None;
        for _ in 0..10 {
            let a = assess(&ctx, &mut rng, &preview, Mode::Preview, None)
                .await
                .unwrap();
            assert_eq!(a.decision, RiskDecision::Allow);
        }
        assert_eq!(count_keys(&repo, &format!("risk/{MID}/c/")), 0);
        for n in 0..5 {
            assess(&ctx, &mut rng, &input(n), Mode::Record, None)
                .await
                .unwrap();
            // The same payment again: a retry must not count twice.
            assess(&ctx, &mut rng, &input(n), Mode::Record, None)
                .await
                .unwrap();
        }
        let sixth = assess(&ctx, &mut rng, &input(5), Mode::Record, None)
            .await
            .unwrap();
        assert_eq!(sixth.decision, RiskDecision::Challenge, "{sixth:?}");
        assert_eq!(sixth.rules[0].rule, "velocity.payer.1m.count");
        assert!(sixth.rules[0].detail.starts_with("6 payments"));
    });
}

#[test]
fn a_denied_payment_is_not_counted() {
    // Proves a refused payment does not use up the payer's counters.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keys(), SplitMix64::new(2));
    let ctx = at_t0(&repo, &keys);
    block_on(async {
        let mut c = EngineConfig::default();
        c.blocklist.device_ids.insert("d-1".into());
        put_config(&ctx, MID, c).await.unwrap();
        let a = assess(&ctx, &mut rng, &input(1), Mode::Record, None)
            .await
            .unwrap();
        assert_eq!(a.decision, RiskDecision::Deny);
        assert_eq!(count_keys(&repo, &format!("risk/{MID}/c/")), 0);
    });
}

#[test]
fn configuration_versions_grow_and_invalid_input_changes_nothing() {
    // Proves the default is version 1, each PUT adds one, and a rejected PUT names the
    // field and leaves the stored version alone.
    let (repo, keys) = (MemoryRepository::new(), keys());
    let ctx = at_t0(&repo, &keys);
    block_on(async {
        assert_eq!(get_config(&ctx, MID).await.unwrap().version, 1);
        let v2 = put_config(&ctx, MID, EngineConfig::default())
            .await
            .unwrap();
        let v3 = put_config(&ctx, MID, EngineConfig::default())
            .await
            .unwrap();
        assert_eq!((v2.version, v3.version), (2, 3));
        let mut bad = EngineConfig::default();
        bad.thresholds.review_at = 1;
        let e = put_config(&ctx, MID, bad).await.unwrap_err();
        assert_eq!(e.param(), Some("thresholds.review_at"));
        assert_eq!(get_config(&ctx, MID).await.unwrap().version, 3);
        assert_eq!(get_config(&ctx, "mch_other").await.unwrap().version, 1);
    });
}

#[test]
fn the_salt_is_created_once_sealed_and_stable() {
    // Proves the first load creates a sealed salt, later loads (any entropy) read the
    // same one, and the stored bytes do not contain it in clear.
    let (repo, keys) = (MemoryRepository::new(), keys());
    let ctx = at_t0(&repo, &keys);
    block_on(async {
        let a = load_merchant(&ctx, &mut SplitMix64::new(3), MID, None)
            .await
            .unwrap();
        let b = load_merchant(&ctx, &mut SplitMix64::new(4), MID, None)
            .await
            .unwrap();
        assert_eq!(a.salt.expose(), b.salt.expose());
        let stored = repo.get(&salt_key(MID)).await.unwrap().unwrap().value;
        let hex_salt = hex::encode(a.salt.expose());
        assert!(!String::from_utf8_lossy(&stored).contains(&hex_salt));
        assert!(
            !stored
                .windows(a.salt.expose().len())
                .any(|w| w == a.salt.expose().as_slice())
        );
    });
}

#[test]
fn a_cached_configuration_gives_way_to_the_next_put() {
    // Proves the per-instance cache never serves a stale configuration: a PUT bumps the
    // stored version, so the very next assessment decides with the new rules.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keys(), SplitMix64::new(5));
    let cache = spinpay_core::riskengine::store::ConfigCache::new();
    let ctx = at_t0(&repo, &keys);
    block_on(async {
        let first = assess(&ctx, &mut rng, &input(1), Mode::Preview, Some(&cache))
            .await
            .unwrap();
        assert_eq!(
            (first.decision, first.rules_version),
            (RiskDecision::Allow, 1)
        );
        let mut c = EngineConfig::default();
        c.blocklist.payer_ids.insert("u-1".into());
        put_config(&ctx, MID, c).await.unwrap();
        let second = assess(&ctx, &mut rng, &input(1), Mode::Preview, Some(&cache))
            .await
            .unwrap();
        assert_eq!(
            (second.decision, second.rules_version),
            (RiskDecision::Deny, 2)
        );
    });
}

/// Runs 40 interleaved recorded assessments, call `i` for payment `payment_of(i)`, against
/// a store with `faults`; a failed call is retried with the same payment up to `attempts`
/// times in all. Returns the payer's 1 h count and the store's operation counts.
fn record_concurrently(
    faults: spinpay_core::repo::memory::Faults,
    payment_of: impl Fn(u32) -> u32,
    attempts: u32,
) -> (u64, spinpay_core::repo::memory::OpCounts) {
    use spinpay_core::repo::memory::Faults;
    use spinpay_core::riskengine::store::load_counters_versioned;
    use spinpay_core::riskengine::{Dimension, Window};
    let repo = MemoryRepository::with_faults(11, Faults::default());
    let keys = keys();
    let ctx = at_t0(&repo, &keys);
    let mut quiet = EngineConfig::default();
    quiet.velocity.clear();
    block_on(async {
        put_config(&ctx, MID, quiet).await.unwrap();
        // Create the salt before the faults start.
        load_merchant(&ctx, &mut SplitMix64::new(1), MID, None)
            .await
            .unwrap();
        repo.set_faults(faults);
        let calls = (0..40_u32).map(|i| {
            let (ctx, payment) = (&ctx, payment_of(i));
            async move {
                let mut rng = SplitMix64::new(u64::from(i));
                let mut last = None;
                for _ in 0..attempts {
                    match assess(ctx, &mut rng, &input(payment), Mode::Record, None).await {
                        Ok(_) => return,
                        Err(e) => last = Some(e),
                    }
                }
                panic!("assessment {i} never succeeded: {last:?}");
            }
        });
        futures::future::join_all(calls).await;
        repo.set_faults(Faults::default());
        let m = load_merchant(&ctx, &mut SplitMix64::new(2), MID, None)
            .await
            .unwrap();
        let ei = input(0).engine_input(m.salt.expose()).unwrap();
        let loaded = load_counters_versioned(&repo, &ei).await.unwrap();
        let payer = loaded.counters.get(Dimension::Payer).unwrap();
        (payer.totals(Window::H1, T0).count, repo.counts())
    })
}

#[test]
fn concurrent_recordings_under_injected_faults_count_each_payment_exactly_once() {
    // Proves counting is exact when 40 assessments of 20 payments (each sent twice) run
    // interleaved against a store that yields, reports spurious conflicts and fails:
    // every failed call is retried with the same payment id until it succeeds, and the
    // payer's 1 h count ends at exactly 20.
    let faults = spinpay_core::repo::memory::Faults {
        conflict_per_mille: 200,
        unavailable_per_mille: 50,
        yield_per_mille: 500,
        unknown_outcome_per_mille: 0,
    };
    let (count, ops) = record_concurrently(faults, |i| i % 20, 200);
    assert_eq!(count, 20);
    assert!(ops.injected_conflicts > 0 && ops.injected_failures > 0);
}

#[test]
fn buckets_are_stored_as_short_integer_arrays_and_bad_ones_are_refused() {
    // Proves the compact bucket form round-trips, drops trailing zeros, and a stored
    // record with a malformed bucket decodes as corrupt instead of as zeros.
    use spinpay_core::riskengine::counters::Bucket;
    let b = Bucket {
        start_ms: 1_795_608_000_000,
        count: 2,
        amount_minor: 2_500,
        ..Bucket::default()
    };
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(json, "[1795608000000,2,2500]");
    assert_eq!(serde_json::from_str::<Bucket>(&json).unwrap(), b);
    assert_eq!(serde_json::to_string(&Bucket::default()).unwrap(), "[0]");
    for bad in ["[]", "[0,-1]", "[0,0,0,0,0,0,0,0,0,0]", "{\"start_ms\":0}"] {
        assert!(serde_json::from_str::<Bucket>(bad).is_err(), "{bad}");
    }
    let mut rec = serde_json::to_value(CounterRecord::new()).unwrap();
    rec["m1"][0] = serde_json::json!([0, -3]);
    let bytes = serde_json::to_vec(&rec).unwrap();
    assert!(CounterRecord::decode("k", &bytes).is_err());
}

#[test]
fn concurrent_recordings_whose_writes_have_unknown_outcomes_all_succeed_and_count_once() {
    // Proves a counter write whose outcome is unknown (a tenth of all updates; half of
    // them landed) is settled by the re-read instead of failing the assessment: 40
    // interleaved assessments of 40 payments each succeed on their first call, and the
    // payer's 1 h count is exactly 40.
    let faults = spinpay_core::repo::memory::Faults {
        conflict_per_mille: 100,
        unavailable_per_mille: 0,
        yield_per_mille: 500,
        unknown_outcome_per_mille: 100,
    };
    let (count, ops) = record_concurrently(faults, |i| i, 1);
    assert_eq!(count, 40);
    assert!(ops.injected_unknown_outcomes > 0);
}

#[test]
fn an_unknown_write_outcome_is_settled_while_its_event_id_is_remembered_and_refused_after() {
    // Proves the window of the settling re-read: the write landed and then `others` more
    // writes did before the re-read. With 31 others the record still remembers our event
    // id: the update succeeds, counted once. With 32 others the id has been forgotten:
    // the update reports the unknown outcome instead of counting a second time.
    use spinpay_core::riskengine::Window;
    use spinpay_core::riskengine::counters::{APPLIED_IDS_MAX, CounterDelta};
    let update = |id: String| CounterUpdate {
        key: "risk/mch_x/c/payer/abc".into(),
        delta: CounterDelta {
            event_id: id,
            at_ms: T0,
            count: 1,
            amount_minor: 100,
            tier: None,
            near: false,
            refund: false,
            rapid_refund: false,
            profile: None,
        },
    };
    let prior = APPLIED_IDS_MAX + 8;
    for others in [APPLIED_IDS_MAX - 1, APPLIED_IDS_MAX] {
        let repo = MemoryRepository::new();
        block_on(async {
            for i in 0..prior {
                apply_update(&repo, &update(format!("prior-{i}")))
                    .await
                    .unwrap();
            }
            let racing = Hooked {
                inner: &repo,
                hooks: LandsThenLosesTrack {
                    others,
                    fired: std::cell::Cell::new(false),
                    update: &update,
                },
            };
            let result = apply_update(&racing, &update("ours".into())).await;
            let stored = repo.get("risk/mch_x/c/payer/abc").await.unwrap().unwrap();
            let record = CounterRecord::decode("k", &stored.value).unwrap();
            // Ours landed exactly once either way.
            let expected = (prior + 1 + others) as u64;
            assert_eq!(
                record.totals(Window::H1, T0).count,
                expected,
                "others = {others}"
            );
            if others < APPLIED_IDS_MAX {
                assert!(result.is_ok(), "{result:?}");
            } else {
                assert!(result.is_err(), "an unsettled outcome must not count again");
            }
        });
    }
}

/// The first update of an existing record lands, then `others` more updates land on top,
/// and only then is its outcome reported unknown.
struct LandsThenLosesTrack<'a, F: Fn(String) -> CounterUpdate> {
    others: usize,
    fired: std::cell::Cell<bool>,
    update: &'a F,
}

impl<F: Fn(String) -> CounterUpdate> Hooks for LandsThenLosesTrack<'_, F> {
    async fn after_put(
        &self,
        store: &MemoryRepository,
        key: &str,
        expected: u64,
        _value: &[u8],
        written: Result<u64, RepoError>,
    ) -> Result<u64, RepoError> {
        let written = written?;
        if expected == 0 || self.fired.replace(true) {
            return Ok(written);
        }
        for i in 0..self.others {
            apply_update(store, &(self.update)(format!("other-{i}")))
                .await
                .unwrap();
        }
        Err(RepoError::OutcomeUnknown { key: key.into() })
    }
}

#[test]
fn concurrent_payments_of_one_payer_are_each_judged_with_the_ones_counted_before_them() {
    // Proves the daily hard limit and the payer velocity hold under concurrency: ten
    // CNY 900 customer-code payments of one payer, assessed at once (interleaved at every
    // storage operation, with spurious conflicts), get exactly one allow against the
    // CNY 1,000 daily limit, the other nine deny; and only the allowed one is counted.
    use spinpay_core::repo::memory::Faults;
    use spinpay_core::riskengine::store::load_counters_versioned;
    use spinpay_core::riskengine::{Dimension, Window};
    let repo = MemoryRepository::with_faults(17, Faults::default());
    let keys = keys();
    let ctx = at_t0(&repo, &keys);
    // A CNY 900 customer-code payment `n` of payer u-1.
    let code = |n: u32| {
        let app = input(n);
        let method = PaymentMethod::QrCustomer {
            auth_code: format!("28{n:016}"),
        };
        RiskInput::from_method(
            MID,
            app.payment_id,
            90_000,
            Currency::Cny,
            &method,
            app.payer,
        )
    };
    block_on(async {
        load_merchant(&ctx, &mut SplitMix64::new(1), MID, None)
            .await
            .unwrap();
        repo.set_faults(Faults {
            yield_per_mille: 1000,
            conflict_per_mille: 100,
            ..Faults::default()
        });
        let calls = (0..10_u32).map(|n| {
            let (ctx, input) = (&ctx, code(n));
            async move {
                let mut rng = SplitMix64::new(u64::from(n));
                assess(ctx, &mut rng, &input, Mode::Record, None)
                    .await
                    .unwrap()
                    .decision
            }
        });
        let decisions = futures::future::join_all(calls).await;
        repo.set_faults(Faults::default());
        let allowed = decisions
            .iter()
            .filter(|d| **d == RiskDecision::Allow)
            .count();
        let denied = decisions
            .iter()
            .filter(|d| **d == RiskDecision::Deny)
            .count();
        assert_eq!((allowed, denied), (1, 9), "{decisions:?}");
        let m = load_merchant(&ctx, &mut SplitMix64::new(2), MID, None)
            .await
            .unwrap();
        let ei = code(0).engine_input(m.salt.expose()).unwrap();
        let loaded = load_counters_versioned(&repo, &ei).await.unwrap();
        let payer = loaded.counters.get(Dimension::Payer).unwrap();
        let day = payer.totals(Window::H24, T0);
        assert_eq!((day.count, day.amount_minor), (1, 90_000));
    });
}
