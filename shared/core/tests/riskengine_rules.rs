//! Unit tests of the risk engine: one per rule, the combined scoring, configuration
//! validation, counter rings, AML records and CSV.

use futures::executor::block_on;
use spinpay_core::model::{MethodKind, RiskDecision};
use spinpay_core::money::Currency;
use spinpay_core::repo::Repository;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::riskengine::config::{Lists, parse_cidr};
use spinpay_core::riskengine::counters::{Dimension, KEYS_PER_ASSESSMENT_MAX, Window};
use spinpay_core::riskengine::geo::GeoPoint;
use spinpay_core::riskengine::{
    AmlKind, Assessment, EngineConfig, EngineInput, PaymentFacts, RefundFacts, assess, day_reports,
    hash_identifier, record_payment, record_refund, render_csv, report_day,
};

const SALT: &[u8] = b"merchant-salt";
const MID: &str = "mch_test";
/// 2026-11-25 12:00:00 UTC.
const T0: i64 = 1_795_608_000_000;

fn facts(id: &str, amount_minor: i64) -> PaymentFacts {
    PaymentFacts {
        merchant_id: MID.into(),
        payment_id: id.into(),
        amount_minor,
        currency: Currency::Cny,
        method: MethodKind::Nfc,
        auth_factors: 2,
        payer_id: Some("u-42".into()),
        device_id: Some("d-9".into()),
        ip: Some("203.0.113.7".parse().unwrap()),
        phone: None,
        token: None,
        country: Some("CN".into()),
        location: None,
    }
}

fn input(f: PaymentFacts) -> EngineInput {
    EngineInput::new(f, SALT).expect("valid facts")
}

/// A config with every optional rule off, so a test turns on only what it proves.
fn quiet() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.velocity.clear();
    c.anomalies.new_device_amount_minor = None;
    c.anomalies.impossible_travel = None;
    c.anomalies.unusual_amount = None;
    c.aml.structuring = None;
    c.aml.rapid_refund = None;
    c
}

/// Assesses, and when allowed records, a payment at `now_ms`.
fn pay(repo: &MemoryRepository, c: &EngineConfig, f: PaymentFacts, now_ms: i64) -> Assessment {
    let i = input(f);
    let a = block_on(assess(repo, c, &i, now_ms)).unwrap();
    if a.decision != RiskDecision::Deny {
        block_on(record_payment(repo, c, &i, now_ms)).unwrap();
    }
    a
}

/// A change to a valid config that must make it invalid.
type Mutation = Box<dyn Fn(&mut EngineConfig)>;

fn rules(a: &Assessment) -> Vec<&'static str> {
    a.fired.iter().map(|f| f.rule).collect()
}

#[test]
fn the_default_config_is_valid_and_round_trips_as_json() {
    // Proves the shipped defaults validate and survive serialization unchanged.
    let c = EngineConfig::default();
    c.validate().unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: EngineConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    assert_eq!(c.daily_tiers.static_max_minor, 50_000);
    assert_eq!(c.aml.large_value_daily_minor, 5_000_000);
}

#[test]
fn an_unknown_config_field_is_rejected() {
    // Proves deny_unknown_fields reaches nested structs (a typo is an error, not ignored).
    let mut v = serde_json::to_value(EngineConfig::default()).unwrap();
    v["thresholds"]["deny"] = 5.into();
    let e = serde_json::from_value::<EngineConfig>(v).unwrap_err();
    assert!(e.to_string().contains("deny"), "{e}");
}

#[test]
fn invalid_configs_are_rejected_naming_the_field() {
    // Proves each validation failure names the exact field path.
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|c| c.thresholds.review_at = 10),
            "thresholds.review_at",
        ),
        (
            Box::new(|c| c.per_transaction_max[2].max_minor = 0),
            "per_transaction_max[2].max_minor",
        ),
        (
            Box::new(|c| c.per_transaction_max[1].method = MethodKind::QrMerchant),
            "per_transaction_max[1].method",
        ),
        (
            Box::new(|c| c.velocity[1].max_count = Some(0)),
            "velocity[1].max_count",
        ),
        (
            Box::new(|c| c.velocity[0].contribution = 5000),
            "velocity[0].contribution",
        ),
        (
            Box::new(|c| {
                c.blocklist.ips.insert("10.0.0.0/33".into());
            }),
            "blocklist.ips[0]",
        ),
        (
            Box::new(|c| {
                c.allowlist.phone_hashes.insert("+8613800000000".into());
            }),
            "allowlist.phone_hashes[0]",
        ),
        // Ids no payment could carry (payer.id and payer.device_id are 1-128 printable
        // ASCII) would never match: refused.
        (
            Box::new(|c| {
                c.blocklist.payer_ids.insert("a b".into());
            }),
            "blocklist.payer_ids[0]",
        ),
        (
            Box::new(|c| {
                c.allowlist.device_ids.insert("d".repeat(129));
            }),
            "allowlist.device_ids[0]",
        ),
        (
            Box::new(|c| c.aml.day_utc_offset_minutes = 9000),
            "aml.day_utc_offset_minutes",
        ),
        (
            Box::new(|c| c.anomalies.unusual_amount.as_mut().unwrap().multiple_bp = 10_000),
            "anomalies.unusual_amount.multiple_bp",
        ),
        (
            Box::new(|c| {
                c.daily_tiers.static_methods.insert(MethodKind::QrCustomer);
            }),
            "daily_tiers.dynamic_methods",
        ),
    ];
    for (mutate, param) in cases {
        let mut c = EngineConfig::default();
        mutate(&mut c);
        assert_eq!(c.validate().unwrap_err().param(), Some(param));
    }
}

#[test]
fn an_amount_over_the_per_transaction_maximum_is_denied() {
    // Proves the per-transaction maximum fires with its weight and denies.
    let repo = MemoryRepository::new();
    let a = pay(&repo, &quiet(), facts("p1", 5_000_001), T0);
    assert_eq!(a.decision, RiskDecision::Deny);
    // The amount also reaches the large-value level, which scores 0 by default.
    assert_eq!(rules(&a), vec!["limit.per_transaction", "aml.large_value"]);
    assert_eq!(a.fired[0].contribution, 100);
    assert_eq!(a.rules_version, 1);
}

#[test]
fn a_static_code_payer_is_stopped_at_cny_500_a_day() {
    // Proves the PBOC static tier sums a payer's static-code payments over 24 h.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.daily_tiers.static_methods.insert(MethodKind::QrMerchant);
    let stat = |id: &str, amt| PaymentFacts {
        method: MethodKind::QrMerchant,
        ..facts(id, amt)
    };
    assert_eq!(
        pay(&repo, &c, stat("p1", 30_000), T0).decision,
        RiskDecision::Allow
    );
    assert_eq!(
        pay(&repo, &c, stat("p2", 20_000), T0 + 1000).decision,
        RiskDecision::Allow
    );
    let a = pay(&repo, &c, stat("p3", 1), T0 + 2000);
    assert_eq!(rules(&a), vec!["limit.daily.static"]);
    assert_eq!(a.decision, RiskDecision::Deny);
    // 25 hours later the day has rolled over.
    let later = pay(&repo, &c, stat("p4", 1), T0 + 25 * 3_600_000);
    assert_eq!(later.decision, RiskDecision::Allow);
}

#[test]
fn dynamic_code_limits_depend_on_the_authentication_factors() {
    // Proves < 2 factors caps the day at CNY 1,000 and ≥ 2 factors at CNY 5,000.
    let repo = MemoryRepository::new();
    let c = quiet();
    let dynamic = |id: &str, amt, factors| PaymentFacts {
        method: MethodKind::QrCustomer,
        auth_factors: factors,
        ..facts(id, amt)
    };
    assert_eq!(
        pay(&repo, &c, dynamic("p1", 100_000, 1), T0).decision,
        RiskDecision::Allow
    );
    let a = pay(&repo, &c, dynamic("p2", 1, 1), T0 + 1);
    assert_eq!(rules(&a), vec!["limit.daily.dynamic_low_auth"]);
    let b = pay(&repo, &c, dynamic("p3", 500_000, 2), T0 + 2);
    assert_eq!(b.decision, RiskDecision::Allow, "{:?}", b.fired);
    let d = pay(&repo, &c, dynamic("p4", 1, 3), T0 + 3);
    assert_eq!(rules(&d), vec!["limit.daily.dynamic_high_auth"]);
}

#[test]
fn the_sixth_payment_in_a_minute_is_challenged() {
    // Proves the default payer 1-minute count limit (5) challenges the sixth payment.
    let repo = MemoryRepository::new();
    let c = EngineConfig::default();
    for n in 0..5 {
        let a = pay(&repo, &c, facts(&format!("p{n}"), 1000), T0 + n * 1000);
        assert_eq!(
            a.decision,
            RiskDecision::Allow,
            "payment {n}: {:?}",
            a.fired
        );
    }
    let a = pay(&repo, &c, facts("p5", 1000), T0 + 5000);
    assert_eq!(a.decision, RiskDecision::Challenge);
    assert_eq!(rules(&a), vec!["velocity.payer.1m.count"]);
    assert_eq!(a.score, 40);
}

#[test]
fn a_window_forgets_payments_once_their_buckets_are_stale() {
    // Proves ring slots from an old lap read as 0 (no deletes needed) and are reused.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.velocity = EngineConfig::default().velocity;
    for n in 0..6 {
        pay(&repo, &c, facts(&format!("p{n}"), 1000), T0 + n * 1000);
    }
    // One ring (60 s) later, in the same slot positions: the count starts again.
    let a = pay(&repo, &c, facts("late", 1000), T0 + 61_000);
    assert_eq!(a.decision, RiskDecision::Allow, "{:?}", a.fired);
    let i = input(facts("probe", 1000));
    let counters = block_on(spinpay_core::riskengine::load_counters(&repo, &i)).unwrap();
    let rec = counters
        .get(spinpay_core::riskengine::Dimension::Payer)
        .unwrap();
    assert_eq!(rec.totals(Window::M1, T0 + 61_000).count, 1);
    assert_eq!(rec.totals(Window::H1, T0 + 61_000).count, 7);
    assert_eq!(rec.m1.len(), 6, "the ring never grows");
}

#[test]
fn block_lists_deny_by_id_cidr_and_hashed_phone_or_token() {
    // Proves every block-list kind denies, including v4/v6 CIDRs and salted hashes.
    let repo = MemoryRepository::new();
    let cases: Vec<(Lists, PaymentFacts, &str)> = vec![
        (
            Lists {
                device_ids: ["d-9".to_string()].into(),
                ..Lists::default()
            },
            facts("a", 100),
            "blocklist.device_id",
        ),
        (
            Lists {
                payer_ids: ["u-42".to_string()].into(),
                ..Lists::default()
            },
            facts("b", 100),
            "blocklist.payer_id",
        ),
        (
            Lists {
                ips: ["203.0.113.0/24".to_string()].into(),
                ..Lists::default()
            },
            facts("c", 100),
            "blocklist.ip",
        ),
        (
            Lists {
                ips: ["2001:db8::/32".to_string()].into(),
                ..Lists::default()
            },
            PaymentFacts {
                ip: Some("2001:db8:1::5".parse().unwrap()),
                ..facts("d", 100)
            },
            "blocklist.ip",
        ),
        (
            Lists {
                phone_hashes: [hash_identifier(SALT, "phone", "+8613800000000")].into(),
                ..Lists::default()
            },
            PaymentFacts {
                phone: Some("+8613800000000".into()),
                ..facts("e", 100)
            },
            "blocklist.phone",
        ),
        (
            Lists {
                token_hashes: [hash_identifier(SALT, "token", "tok-1")].into(),
                ..Lists::default()
            },
            PaymentFacts {
                token: Some("tok-1".into()),
                ..facts("f", 100)
            },
            "blocklist.token",
        ),
    ];
    for (list, f, rule) in cases {
        let mut c = quiet();
        c.blocklist = list;
        c.weights.blocklist = 0;
        c.validate().unwrap();
        let a = pay(&repo, &c, f, T0);
        assert_eq!(a.decision, RiskDecision::Deny, "{rule}");
        assert_eq!(rules(&a), vec![rule]);
    }
    // Outside the CIDR, and another merchant salt: no hit.
    let mut c = quiet();
    c.blocklist.ips.insert("203.0.114.0/24".into());
    c.blocklist
        .token_hashes
        .insert(hash_identifier(b"other", "token", "tok-1"));
    let f = PaymentFacts {
        token: Some("tok-1".into()),
        ..facts("g", 100)
    };
    assert_eq!(pay(&repo, &c, f, T0).decision, RiskDecision::Allow);
}

#[test]
fn cidr_parsing_rejects_bad_prefixes() {
    // Proves the CIDR parser accepts v4/v6 blocks and bare addresses, and nothing else.
    assert!(parse_cidr("10.0.0.0/8").is_some());
    assert!(parse_cidr("::1").is_some());
    assert!(parse_cidr("2001:db8::/129").is_none());
    assert!(parse_cidr("10.0.0.0/").is_none());
    assert!(parse_cidr("10.0.0.0/+8").is_none());
    assert!(parse_cidr("example.com").is_none());
}

#[test]
fn an_allow_list_hit_overrides_scores_but_not_blocks_or_hard_limits() {
    // Proves allow caps soft rules at allow, while a block list or a limit still denies.
    let repo = MemoryRepository::new();
    let mut c = EngineConfig::default();
    c.allowlist.payer_ids.insert("u-42".into());
    for n in 0..6 {
        let a = pay(&repo, &c, facts(&format!("p{n}"), 1000), T0 + n);
        assert_eq!(a.decision, RiskDecision::Allow);
    }
    let a = pay(&repo, &c, facts("p6", 1000), T0 + 10);
    assert!(rules(&a).contains(&"velocity.payer.1m.count"));
    assert!(rules(&a).contains(&"allowlist.payer_id"));
    let big = pay(&repo, &c, facts("p7", 5_000_001), T0 + 20);
    assert_eq!(big.decision, RiskDecision::Deny);
    c.blocklist.device_ids.insert("d-9".into());
    assert_eq!(
        pay(&repo, &c, facts("p8", 100), T0 + 30).decision,
        RiskDecision::Deny
    );
}

#[test]
fn a_new_device_paying_a_high_amount_fires() {
    // Proves the new-device rule needs a payer with history, an unseen device and a high amount.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.anomalies.new_device_amount_minor = Some(200_000);
    let first = pay(&repo, &c, facts("p1", 300_000), T0);
    assert!(first.fired.is_empty(), "no history yet");
    let same = pay(&repo, &c, facts("p2", 300_000), T0 + 1);
    assert!(same.fired.is_empty(), "known device");
    let new_small = PaymentFacts {
        device_id: Some("d-new".into()),
        ..facts("p3", 1000)
    };
    assert!(pay(&repo, &c, new_small, T0 + 2).fired.is_empty());
    let new_big = PaymentFacts {
        device_id: Some("d-other".into()),
        ..facts("p4", 300_000)
    };
    let a = pay(&repo, &c, new_big, T0 + 3);
    assert_eq!(rules(&a), vec!["anomaly.new_device"]);
    assert_eq!(
        a.decision,
        RiskDecision::Allow,
        "30 points stay under challenge"
    );
}

#[test]
fn impossible_travel_fires_on_speed_or_a_fast_country_change() {
    // Proves Shanghai → Paris in an hour fires, Shanghai → Beijing in 4 h does not, and a
    // country change without coordinates fires inside the configured interval.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.anomalies.impossible_travel = EngineConfig::default().anomalies.impossible_travel;
    let at = |id: &str, lat_e4, lon_e4| PaymentFacts {
        location: Some(GeoPoint { lat_e4, lon_e4 }),
        ..facts(id, 100)
    };
    pay(&repo, &c, at("p1", 312_304, 1_214_737), T0);
    let bj = pay(&repo, &c, at("p2", 399_042, 1_164_074), T0 + 4 * 3_600_000);
    assert!(bj.fired.is_empty(), "{:?}", bj.fired);
    let paris = pay(&repo, &c, at("p3", 488_566, 23_522), T0 + 5 * 3_600_000);
    assert_eq!(rules(&paris), vec!["anomaly.impossible_travel"]);
    assert_eq!(paris.decision, RiskDecision::Review);

    let repo = MemoryRepository::new();
    pay(&repo, &c, facts("c1", 100), T0);
    let fr = PaymentFacts {
        country: Some("FR".into()),
        ..facts("c2", 100)
    };
    assert_eq!(
        rules(&pay(&repo, &c, fr.clone(), T0 + 600_000)),
        vec!["anomaly.impossible_travel"]
    );
    let back = PaymentFacts {
        payment_id: "c3".into(),
        country: Some("CN".into()),
        ..fr
    };
    assert!(pay(&repo, &c, back, T0 + 3 * 3_600_000).fired.is_empty());

    // A payment that does not say where it is, in between, neither hides a country change
    // nor makes the last place look recent: CN, nowhere a minute later, FR a minute after
    // that fires; CN, nowhere 9 hours later, FR 5 minutes after that does not.
    for (nowhere_at, fr_at, fires) in [(60_000, 120_000, true), (32_400_000, 32_700_000, false)] {
        let repo = MemoryRepository::new();
        pay(&repo, &c, facts("d1", 100), T0);
        let nowhere = PaymentFacts {
            country: None,
            ..facts("d2", 100)
        };
        assert!(pay(&repo, &c, nowhere, T0 + nowhere_at).fired.is_empty());
        let fr = PaymentFacts {
            country: Some("FR".into()),
            ..facts("d3", 100)
        };
        let expected = if fires {
            vec!["anomaly.impossible_travel"]
        } else {
            Vec::new()
        };
        assert_eq!(rules(&pay(&repo, &c, fr, T0 + fr_at)), expected, "{fr_at}");
    }
}

#[test]
fn an_ipv4_address_counts_once_however_it_is_written() {
    // Proves 203.0.113.7 and ::ffff:203.0.113.7 share one IP counter key.
    let mapped = PaymentFacts {
        ip: Some("::ffff:203.0.113.7".parse().unwrap()),
        ..facts("m1", 100)
    };
    let ip_key = |f: PaymentFacts| {
        EngineInput::new(f, b"salt")
            .unwrap()
            .counter_keys()
            .into_iter()
            .find(|(d, _)| *d == Dimension::Ip)
            .map(|(_, k)| k)
    };
    assert!(ip_key(facts("m0", 100)).is_some());
    assert_eq!(ip_key(mapped), ip_key(facts("m0", 100)));
}

#[test]
fn geo_distances_are_close_to_great_circle_figures() {
    // Proves the float-free distance is within 3 % of the known Shanghai–Beijing 1,067 km.
    let sh = GeoPoint {
        lat_e4: 312_304,
        lon_e4: 1_214_737,
    };
    let bj = GeoPoint {
        lat_e4: 399_042,
        lon_e4: 1_164_074,
    };
    let km = sh.distance_m(bj) / 1000;
    assert!((1035..=1100).contains(&km), "{km}");
    assert_eq!(sh.distance_m(sh), 0);
}

#[test]
fn an_amount_far_above_the_payers_usual_fires() {
    // Proves the running-mean rule fires above 10× the mean after enough history.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.anomalies.unusual_amount = EngineConfig::default().anomalies.unusual_amount;
    for n in 0..5 {
        pay(&repo, &c, facts(&format!("p{n}"), 1000), T0 + n * 100_000);
    }
    assert!(
        pay(&repo, &c, facts("ok", 10_000), T0 + 600_000)
            .fired
            .is_empty()
    );
    let a = pay(&repo, &c, facts("big", 30_000), T0 + 700_000);
    assert_eq!(rules(&a), vec!["anomaly.unusual_amount"]);
}

#[test]
fn reaching_cny_50000_in_a_day_files_one_large_value_report() {
    // Proves the large-value level produces exactly one report record, listed by day.
    let repo = MemoryRepository::new();
    let c = quiet();
    for n in 0..12 {
        pay(&repo, &c, facts(&format!("p{n}"), 490_000), T0 + n * 60_000);
    }
    let day = report_day(T0, 480);
    assert_eq!(day, "2026-11-25");
    let reports = block_on(day_reports(&repo, MID, &day)).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.kind, r.event_id.as_str()), (AmlKind::LargeValue, "p10"));
    assert_eq!((r.total_24h_minor, r.count_24h), (5_390_000, 11));
    assert_eq!(r.payer_hash, hash_identifier(SALT, "payer", "u-42"));
    let last = pay(&repo, &c, facts("p12", 100), T0 + 13 * 60_000);
    assert_eq!(rules(&last), vec!["aml.large_value"]);
    let csv = render_csv(&reports);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(lines[0].starts_with("day,kind,"));
    assert!(lines[1].starts_with("2026-11-25,large_value,mch_test,"));
    assert!(
        lines[1].contains(",4900.00,53900.00,CNY,11,1"),
        "{}",
        lines[1]
    );
}

#[test]
fn several_payments_just_under_the_threshold_are_structuring() {
    // Proves three payments within 10 % under CNY 50,000 in 24 h fire and file a report.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.aml.structuring = EngineConfig::default().aml.structuring;
    c.aml.large_value_daily_minor = 100_000_000;
    let a1 = pay(&repo, &c, facts("s1", 4_900_000), T0);
    let a2 = pay(&repo, &c, facts("s2", 1_000), T0 + 1);
    let a3 = pay(&repo, &c, facts("s3", 4_600_000), T0 + 3_600_000);
    assert!(a1.fired.is_empty() && a2.fired.is_empty() && a3.fired.is_empty());
    let a4 = pay(&repo, &c, facts("s4", 4_999_999), T0 + 7_200_000);
    assert_eq!(rules(&a4), vec!["aml.structuring"]);
    assert_eq!(a4.decision, RiskDecision::Review);
    let reports = block_on(day_reports(&repo, MID, "2026-11-25")).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].kind, reports[0].count_24h),
        (AmlKind::Structuring, 3)
    );
}

#[test]
fn rapid_pay_then_refund_cycles_are_reported_and_scored() {
    // Proves three refunds within 10 minutes of their payments file a report and make the
    // payer's next payment score the rapid-refund rule; slow refunds do not count.
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.aml.rapid_refund = EngineConfig::default().aml.rapid_refund;
    let payer_hash = hash_identifier(SALT, "payer", "u-42");
    let refund = |id: &str, paid_at_ms| RefundFacts {
        merchant_id: MID.into(),
        refund_id: id.into(),
        paid_at_ms,
        payer_hash: payer_hash.clone(),
    };
    for n in 0..3 {
        let t = T0 + n * 1_000_000;
        pay(&repo, &c, facts(&format!("p{n}"), 1000), t);
        let r = block_on(record_refund(
            &repo,
            &c,
            &refund(&format!("r{n}"), t),
            t + 60_000,
        ))
        .unwrap();
        assert_eq!(r.len(), usize::from(n == 2), "report on the third cycle");
    }
    // A retried refund is not counted twice.
    assert!(
        block_on(record_refund(&repo, &c, &refund("r2", T0), T0 + 2_060_000))
            .unwrap()
            .is_empty()
    );
    let slow = refund("slow", T0);
    block_on(record_refund(&repo, &c, &slow, T0 + 3_600_000)).unwrap();
    let a = pay(&repo, &c, facts("next", 1000), T0 + 4_000_000);
    assert_eq!(rules(&a), vec!["aml.rapid_refund"]);
    assert_eq!(a.decision, RiskDecision::Challenge);
    let reports = block_on(day_reports(&repo, MID, "2026-11-25")).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].kind, reports[0].count_24h),
        (AmlKind::RapidRefund, 3)
    );
}

#[test]
fn contributions_add_up_and_every_fired_rule_is_listed() {
    // Proves the score is the sum of the fired rules and the thresholds map it: velocity
    // (40) + new device (30) reach review (70).
    let repo = MemoryRepository::new();
    let mut c = quiet();
    c.velocity = EngineConfig::default().velocity;
    c.anomalies.new_device_amount_minor = Some(200_000);
    for n in 0..5 {
        pay(&repo, &c, facts(&format!("p{n}"), 1000), T0 + n);
    }
    let f = PaymentFacts {
        device_id: Some("d-new".into()),
        ..facts("p5", 250_000)
    };
    let a = pay(&repo, &c, f, T0 + 10);
    assert_eq!(
        rules(&a),
        vec!["velocity.payer.1m.count", "anomaly.new_device"]
    );
    assert_eq!(a.score, 70);
    assert_eq!(a.decision, RiskDecision::Review);
    let model = a.clone().into_model();
    assert_eq!(model.rules.len(), 2);
    assert_eq!(model.rules[1].rule, "anomaly.new_device");
    assert!(a.fired.iter().all(|f| !f.detail.is_empty()));
}

#[test]
fn one_assessment_reads_at_most_four_keys_in_one_batch_and_writes_nothing() {
    // Proves the bounded read budget and that assess is side-effect free.
    let repo = MemoryRepository::new();
    let c = EngineConfig::default();
    let f = PaymentFacts {
        token: Some("tok".into()),
        ..facts("p1", 100)
    };
    let before = repo.counts();
    block_on(assess(&repo, &c, &input(f), T0)).unwrap();
    let after = repo.counts();
    assert_eq!(after.gets - before.gets, KEYS_PER_ASSESSMENT_MAX as u64);
    assert_eq!(
        (after.puts, after.increments),
        (before.puts, before.increments)
    );
    assert!(repo.keys_with_prefix("risk/").is_empty());
}

#[test]
fn recording_the_same_payment_twice_counts_it_once() {
    // Proves counter updates are idempotent per payment id (retries never double-count).
    let repo = MemoryRepository::new();
    let c = EngineConfig::default();
    let i = input(facts("p1", 1000));
    block_on(record_payment(&repo, &c, &i, T0)).unwrap();
    block_on(record_payment(&repo, &c, &i, T0 + 5)).unwrap();
    let counters = block_on(spinpay_core::riskengine::load_counters(&repo, &i)).unwrap();
    for d in spinpay_core::riskengine::Dimension::ALL {
        if let Some(r) = counters.get(d) {
            assert_eq!(r.totals(Window::H24, T0 + 5).count, 1, "{d:?}");
        }
    }
    assert_eq!(repo.keys_with_prefix("risk/").len(), 3, "payer, device, ip");
}

#[test]
fn counter_records_stay_the_same_size_over_months() {
    // Proves bounded growth: a payer paying every hour for 90 days keeps one record whose
    // size stops growing once every ring slot is in use.
    let repo = MemoryRepository::new();
    let c = quiet();
    let key = input(facts("x", 1)).counter_keys()[0].1.clone();
    let mut sizes = Vec::new();
    for h in 0..(90 * 24) {
        let i = input(facts(&format!("p{h}"), 1000 + h % 7));
        block_on(record_payment(&repo, &c, &i, T0 + h * 3_600_000)).unwrap();
        if h % 240 == 239 {
            sizes.push(block_on(repo.get(&key)).unwrap().unwrap().value.len());
        }
    }
    let keys = repo.keys_with_prefix("risk/");
    assert_eq!(keys.len(), 3);
    let spread = sizes.iter().max().unwrap() - sizes.iter().min().unwrap();
    assert!(spread < 64, "{sizes:?}");
}

#[test]
fn bad_payment_facts_are_rejected_naming_the_field() {
    // Proves invalid inputs fail before anything is read or written.
    let bad = PaymentFacts {
        country: Some("china".into()),
        ..facts("p", 100)
    };
    assert_eq!(
        EngineInput::new(bad, SALT).unwrap_err().param(),
        Some("payer.country")
    );
    let bad = PaymentFacts {
        amount_minor: 0,
        ..facts("p", 100)
    };
    assert_eq!(
        EngineInput::new(bad, SALT).unwrap_err().param(),
        Some("amount_minor")
    );
    let bad = PaymentFacts {
        location: Some(GeoPoint {
            lat_e4: 900_001,
            lon_e4: 0,
        }),
        ..facts("p", 100)
    };
    assert_eq!(
        EngineInput::new(bad, SALT).unwrap_err().param(),
        Some("payer.location.lat_e4")
    );
}

#[test]
fn report_days_follow_the_configured_offset_and_csv_cells_are_safe() {
    // Proves day boundaries at UTC+8 and that CSV quotes commas and defuses formulas.
    assert_eq!(report_day(T0 + 4 * 3_600_000 - 1, 480), "2026-11-25");
    assert_eq!(report_day(T0 + 4 * 3_600_000, 480), "2026-11-26");
    assert_eq!(report_day(0, 0), "1970-01-01");
    assert_eq!(report_day(951_782_400_000, 0), "2000-02-29");
    let repo = MemoryRepository::new();
    let c = quiet();
    let f = PaymentFacts {
        payment_id: "=cmd,1".into(),
        ..facts("x", 5_000_000)
    };
    pay(&repo, &c, f, T0);
    let reports = block_on(day_reports(&repo, MID, "2026-11-25")).unwrap();
    let csv = render_csv(&reports);
    assert!(csv.contains(",\"'=cmd,1\","), "{csv}");
}

#[test]
fn a_failure_between_counting_and_filing_still_files_the_report_on_retry() {
    // Regression (found by the simulation): reports were derived from "this call applied
    // the counter", so a retry after a crash between counting and filing lost the report.
    let repo = MemoryRepository::new();
    let c = quiet();
    let i = input(facts("big", 5_000_000));
    for u in spinpay_core::riskengine::payment_updates(&c, &i, T0) {
        block_on(spinpay_core::riskengine::apply_update(&repo, &u)).unwrap();
    }
    assert!(
        block_on(day_reports(&repo, MID, "2026-11-25"))
            .unwrap()
            .is_empty()
    );
    let filed = block_on(record_payment(&repo, &c, &i, T0 + 1)).unwrap();
    assert_eq!(filed.len(), 1);
    assert_eq!(
        block_on(day_reports(&repo, MID, "2026-11-25"))
            .unwrap()
            .len(),
        1
    );
    let counters = block_on(spinpay_core::riskengine::load_counters(&repo, &i)).unwrap();
    let payer = counters
        .get(spinpay_core::riskengine::Dimension::Payer)
        .unwrap();
    assert_eq!(payer.totals(Window::H24, T0 + 1).count, 1, "counted once");
}
