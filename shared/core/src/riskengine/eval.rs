//! The inputs, the pure `evaluate`, and the counter updates a payment or refund causes.

use std::net::IpAddr;

use serde::Serialize;

use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::model::{MethodKind, RiskAssessment, RiskDecision, RuleHit};
use crate::money::{AMOUNT_MINOR_MAX, Currency, Money};

use super::config::{EngineConfig, Thresholds, cidr_contains, invalid, parse_cidr};
use super::counters::{
    CounterDelta, CounterRecord, CounterUpdate, Dimension, EVENT_ID_BYTES_MAX, Key, ProfileUpdate,
    Tier, Window, key,
};
use super::geo::GeoPoint;

/// Longest payer id, device id, phone or token.
pub const IDENTIFIER_BYTES_MAX: usize = 256;

/// What the engine sees of a prospective payment (built by the component from the
/// wire request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    /// Merchant.
    pub merchant_id: String,
    /// The payment id (the event id counters dedupe on).
    pub payment_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Method.
    pub method: MethodKind,
    /// Authentication factors the wallet reported (PBOC tier of a dynamic code).
    pub auth_factors: u8,
    /// The merchant's payer id.
    pub payer_id: Option<String>,
    /// Device fingerprint.
    pub device_id: Option<String>,
    /// IP address.
    pub ip: Option<IpAddr>,
    /// Phone (sms_otp).
    pub phone: Option<String>,
    /// Payment token / auth code (qr_customer, nfc, sound_wave).
    pub token: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    pub country: Option<String>,
    /// Coarse location.
    pub location: Option<GeoPoint>,
}

impl PaymentFacts {
    /// Checks the facts; the error names the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(1..=AMOUNT_MINOR_MAX).contains(&self.amount_minor) {
            return Err(ApiError::AmountInvalid {
                param: "amount_minor".into(),
                reason: "must be 1..=10^12".into(),
            });
        }
        if self.payment_id.is_empty() || self.payment_id.len() > EVENT_ID_BYTES_MAX {
            return Err(invalid("payment_id", "must be 1..=128 bytes"));
        }
        for (param, v) in [
            ("payer.id", &self.payer_id),
            ("payer.device_id", &self.device_id),
            ("method.phone", &self.phone),
            ("method.token", &self.token),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > IDENTIFIER_BYTES_MAX)
            {
                return Err(invalid(param, "must be 1..=256 bytes"));
            }
        }
        if let Some(c) = &self.country
            && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(invalid(
                "payer.country",
                "must be ISO 3166-1 alpha-2 (e.g. CN)",
            ));
        }
        if let Some(l) = &self.location {
            l.validate("payer.location")?;
        }
        Ok(())
    }
}

/// Salted hashes of the payment's identifiers (what keys and hashed lists use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Payer id hash.
    pub payer: Option<String>,
    /// Device id hash.
    pub device: Option<String>,
    /// IP hash (of the canonical text form).
    pub ip: Option<String>,
    /// Token hash.
    pub token: Option<String>,
    /// Phone hash.
    pub phone: Option<String>,
}

impl Subject {
    /// The hash counted under `d` (the token dimension falls back to the phone).
    pub fn hash(&self, d: Dimension) -> Option<&str> {
        match d {
            Dimension::Payer => self.payer.as_deref(),
            Dimension::Device => self.device.as_deref(),
            Dimension::Ip => self.ip.as_deref(),
            Dimension::Token => self.token.as_deref().or(self.phone.as_deref()),
        }
    }
}

/// `sha256(len(salt) ‖ salt ‖ kind ‖ 0 ‖ value)` as lowercase hex: the one way the engine
/// hashes an identifier (list entries for phones and tokens are made with it too; `kind`
/// is `payer`, `device`, `ip`, `token` or `phone`).
pub fn hash_identifier(salt: &[u8], kind: &str, value: &str) -> String {
    let mut buf = Vec::with_capacity(8 + salt.len() + kind.len() + 1 + value.len());
    buf.extend_from_slice(&(salt.len() as u64).to_le_bytes());
    buf.extend_from_slice(salt);
    buf.extend_from_slice(kind.as_bytes());
    buf.push(0);
    buf.extend_from_slice(value.as_bytes());
    sha256_hex(&buf)
}

/// Validated facts with their hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInput {
    /// The facts.
    pub facts: PaymentFacts,
    /// Their salted hashes.
    pub subject: Subject,
}

impl EngineInput {
    /// Validates the facts and hashes them with the merchant's salt.
    pub fn new(facts: PaymentFacts, salt: &[u8]) -> Result<EngineInput, ApiError> {
        facts.validate()?;
        let h = |kind: &str, v: &Option<String>| v.as_ref().map(|v| hash_identifier(salt, kind, v));
        let subject = Subject {
            payer: h("payer", &facts.payer_id),
            device: h("device", &facts.device_id),
            // One counter per address however it is written: a v4-mapped IPv6 address
            // counts as its IPv4 address (as the lists compare it).
            ip: h("ip", &facts.ip.map(|ip| ip.to_canonical().to_string())),
            token: h("token", &facts.token),
            phone: h("phone", &facts.phone),
        };
        Ok(EngineInput { facts, subject })
    }

    /// The counter keys this payment reads and writes, with their dimension (at most
    /// [`super::counters::KEYS_PER_ASSESSMENT_MAX`], read with one `get_many`).
    pub fn counter_keys(&self) -> Vec<(Dimension, String)> {
        Dimension::ALL
            .into_iter()
            .filter_map(|dimension| {
                self.subject.hash(dimension).map(|hash| {
                    let k = key(Key::Counter {
                        merchant_id: &self.facts.merchant_id,
                        dimension,
                        hash,
                    });
                    (dimension, k)
                })
            })
            .collect()
    }
}

/// The records one assessment reads, by dimension (absent = never counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    records: [Option<CounterRecord>; 4],
}

impl Counters {
    /// The record of one dimension.
    pub fn get(&self, d: Dimension) -> Option<&CounterRecord> {
        self.records[d.index()].as_ref()
    }

    /// Sets the record of one dimension.
    pub fn set(&mut self, d: Dimension, r: Option<CounterRecord>) {
        self.records[d.index()] = r;
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiredRule {
    /// Stable rule id, e.g. `velocity.payer.1m.count`.
    pub rule: &'static str,
    /// Points added to the score.
    pub contribution: i64,
    /// Why, for humans (identifiers masked).
    pub detail: String,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// The decision.
    pub decision: RiskDecision,
    /// Sum of contributions.
    pub score: i64,
    /// Every rule that fired, in evaluation order.
    pub fired: Vec<FiredRule>,
    /// The configuration version that decided.
    pub rules_version: u64,
}

impl Assessment {
    /// The domain record stored with the payment.
    pub fn into_model(self) -> RiskAssessment {
        RiskAssessment {
            decision: self.decision,
            score: self.score,
            rules: self
                .fired
                .into_iter()
                .map(|f| RuleHit {
                    rule: f.rule.to_string(),
                    contribution: f.contribution,
                    detail: f.detail,
                })
                .collect(),
            rules_version: self.rules_version,
        }
    }
}

/// One evaluation: what every rule reads, and what the rules that fired decided.
struct Eval<'a> {
    config: &'a EngineConfig,
    input: &'a EngineInput,
    counters: &'a Counters,
    /// The amount that counts toward amount rules ([`counted_amount`]).
    amt: i64,
    now_ms: i64,
    fired: Vec<FiredRule>,
    /// A block-list rule fired (denies whatever the score).
    blocked: bool,
    /// A hard limit fired (the allow list cannot lift it).
    hard: bool,
    /// An allow-list rule fired.
    allowlisted: bool,
}

impl Eval<'_> {
    /// The payer's 24 h sum of one bucket field (0 when never counted).
    fn payer_sum_24h(&self, field: impl Fn(&super::counters::Bucket) -> i64) -> i64 {
        self.counters
            .get(Dimension::Payer)
            .map_or(0, |r| r.sum_24h(self.now_ms, field))
    }

    fn money(&self, v: i64) -> String {
        Money::new(v, self.config.currency).display()
    }

    fn fire(&mut self, rule: &'static str, contribution: i64, detail: String) {
        self.fired.push(FiredRule {
            rule,
            contribution,
            detail,
        });
    }
}

/// Assesses a prospective payment against the counters read for it. Pure; allocates
/// only for the rules that fire.
pub fn evaluate(
    config: &EngineConfig,
    input: &EngineInput,
    counters: &Counters,
    now_ms: i64,
) -> Assessment {
    let mut ev = Eval {
        config,
        input,
        counters,
        amt: counted_amount(config, &input.facts),
        now_ms,
        fired: Vec::new(),
        blocked: false,
        hard: false,
        allowlisted: false,
    };
    ev.lists();
    ev.limits();
    ev.velocity();
    ev.anomalies();
    ev.aml();
    let score = ev
        .fired
        .iter()
        .fold(0i64, |s, f| s.saturating_add(f.contribution));
    let mut decision = decide(&config.thresholds, score, ev.blocked);
    if ev.allowlisted && !ev.blocked && !ev.hard {
        decision = RiskDecision::Allow;
    }
    Assessment {
        decision,
        score,
        fired: ev.fired,
        rules_version: config.version,
    }
}

/// Maps a score to a decision; a block-list hit denies whatever the score.
pub fn decide(t: &Thresholds, score: i64, blocked: bool) -> RiskDecision {
    if blocked || score >= t.deny_at {
        RiskDecision::Deny
    } else if score >= t.review_at {
        RiskDecision::Review
    } else if score >= t.challenge_at {
        RiskDecision::Challenge
    } else {
        RiskDecision::Allow
    }
}

/// The amount that counts toward amount rules (0 in a foreign currency).
fn counted_amount(config: &EngineConfig, f: &PaymentFacts) -> i64 {
    if f.currency == config.currency {
        f.amount_minor
    } else {
        0
    }
}

fn ip_listed(list: &std::collections::BTreeSet<String>, ip: IpAddr) -> bool {
    list.iter()
        .filter_map(|e| parse_cidr(e))
        .any(|(net, prefix)| cidr_contains(net, prefix, ip))
}

/// The PBOC tier of a payment, if its method is tiered.
pub fn tier_of(config: &EngineConfig, f: &PaymentFacts) -> Option<Tier> {
    let t = &config.daily_tiers;
    if t.static_methods.contains(&f.method) {
        Some(Tier::Static)
    } else if t.dynamic_methods.contains(&f.method) {
        Some(if f.auth_factors >= 2 {
            Tier::DynamicHighAuth
        } else {
            Tier::DynamicLowAuth
        })
    } else {
        None
    }
}

/// `velocity.{dimension}.{window}.{count|amount}`.
const VELOCITY_RULES: [[[&str; 2]; 3]; 4] = [
    [
        ["velocity.payer.1m.count", "velocity.payer.1m.amount"],
        ["velocity.payer.1h.count", "velocity.payer.1h.amount"],
        ["velocity.payer.24h.count", "velocity.payer.24h.amount"],
    ],
    [
        ["velocity.device.1m.count", "velocity.device.1m.amount"],
        ["velocity.device.1h.count", "velocity.device.1h.amount"],
        ["velocity.device.24h.count", "velocity.device.24h.amount"],
    ],
    [
        ["velocity.ip.1m.count", "velocity.ip.1m.amount"],
        ["velocity.ip.1h.count", "velocity.ip.1h.amount"],
        ["velocity.ip.24h.count", "velocity.ip.24h.amount"],
    ],
    [
        ["velocity.token.1m.count", "velocity.token.1m.amount"],
        ["velocity.token.1h.count", "velocity.token.1h.amount"],
        ["velocity.token.24h.count", "velocity.token.24h.amount"],
    ],
];

fn window_index(w: Window) -> usize {
    match w {
        Window::M1 => 0,
        Window::H1 => 1,
        Window::H24 => 2,
    }
}

/// Whether an amount is "just under" the structuring threshold.
pub fn is_near_threshold(config: &EngineConfig, amt: i64) -> bool {
    config.aml.structuring.as_ref().is_some_and(|s| {
        let floor = i128::from(s.threshold_minor) * i128::from(10_000 - s.below_bp) / 10_000;
        amt > 0 && i128::from(amt) >= floor && amt < s.threshold_minor
    })
}

impl<'a> Eval<'a> {
    fn lists(&mut self) {
        let (config, input) = (self.config, self.input);
        let f = &input.facts;
        let s = &input.subject;
        for (block, l) in [(true, &config.blocklist), (false, &config.allowlist)] {
            let hits: [(&'static str, &'static str, bool); 5] = [
                (
                    "blocklist.payer_id",
                    "allowlist.payer_id",
                    f.payer_id.as_ref().is_some_and(|v| l.payer_ids.contains(v)),
                ),
                (
                    "blocklist.device_id",
                    "allowlist.device_id",
                    f.device_id
                        .as_ref()
                        .is_some_and(|v| l.device_ids.contains(v)),
                ),
                (
                    "blocklist.ip",
                    "allowlist.ip",
                    f.ip.is_some_and(|ip| ip_listed(&l.ips, ip)),
                ),
                (
                    "blocklist.phone",
                    "allowlist.phone",
                    s.phone.as_ref().is_some_and(|v| l.phone_hashes.contains(v)),
                ),
                (
                    "blocklist.token",
                    "allowlist.token",
                    s.token.as_ref().is_some_and(|v| l.token_hashes.contains(v)),
                ),
            ];
            for (block_rule, allow_rule, hit) in hits {
                if !hit {
                    continue;
                }
                if block {
                    self.blocked = true;
                    self.fire(
                        block_rule,
                        config.weights.blocklist,
                        "on the block list".into(),
                    );
                } else {
                    self.allowlisted = true;
                    self.fire(allow_rule, 0, "on the allow list".into());
                }
            }
        }
    }

    fn limits(&mut self) {
        let (config, input, amt) = (self.config, self.input, self.amt);
        let f = &input.facts;
        if let Some(m) = config
            .per_transaction_max
            .iter()
            .find(|m| m.method == f.method)
            && amt > m.max_minor
        {
            self.hard = true;
            let detail = format!(
                "{} over the {} per-transaction maximum {}",
                self.money(amt),
                f.method.as_str(),
                self.money(m.max_minor)
            );
            self.fire(
                "limit.per_transaction",
                config.weights.per_transaction_max,
                detail,
            );
        }
        let (Some(tier), Some(_)) = (tier_of(config, f), input.subject.payer.as_ref()) else {
            return;
        };
        if amt == 0 {
            return;
        }
        let t = &config.daily_tiers;
        let (rule, max, used) = match tier {
            Tier::Static => (
                "limit.daily.static",
                t.static_max_minor,
                self.payer_sum_24h(|b| b.static_minor),
            ),
            Tier::DynamicLowAuth => (
                "limit.daily.dynamic_low_auth",
                t.dynamic_low_auth_max_minor,
                self.payer_sum_24h(|b| b.dynamic_low_minor),
            ),
            Tier::DynamicHighAuth => (
                "limit.daily.dynamic_high_auth",
                t.dynamic_high_auth_max_minor,
                self.payer_sum_24h(|b| b.dynamic_high_minor),
            ),
        };
        let projected = used.saturating_add(amt);
        if projected > max {
            self.hard = true;
            let detail = format!(
                "{} in 24 h would exceed the {} daily limit {}",
                self.money(projected),
                tier.as_str(),
                self.money(max)
            );
            self.fire(rule, config.weights.daily_limit, detail);
        }
    }

    /// The evaluation's inputs, copied out of `self` so rule code can keep using them
    /// while it calls [`Eval::fire`].
    fn inputs(&self) -> (&'a EngineConfig, &'a EngineInput, &'a Counters, i64, i64) {
        (
            self.config,
            self.input,
            self.counters,
            self.amt,
            self.now_ms,
        )
    }

    fn velocity(&mut self) {
        let (config, input, counters, amt, now_ms) = self.inputs();
        for v in &config.velocity {
            if input.subject.hash(v.dimension).is_none() {
                continue;
            }
            let t = counters
                .get(v.dimension)
                .map(|r| r.totals(v.window, now_ms))
                .unwrap_or_default();
            let names = VELOCITY_RULES[v.dimension.index()][window_index(v.window)];
            let count = t.count.saturating_add(1);
            if let Some(max) = v.max_count
                && count > max
            {
                let detail = format!(
                    "{count} payments by this {} in {} (limit {max})",
                    v.dimension.as_str(),
                    v.window.as_str()
                );
                self.fire(names[0], v.contribution, detail);
            }
            let amount = t.amount_minor.saturating_add(amt);
            if let Some(max) = v.max_amount_minor
                && amt > 0
                && amount > max
            {
                let detail = format!(
                    "{} by this {} in {} (limit {})",
                    self.money(amount),
                    v.dimension.as_str(),
                    v.window.as_str(),
                    self.money(max)
                );
                self.fire(names[1], v.contribution, detail);
            }
        }
    }

    fn anomalies(&mut self) {
        let (config, input, counters, amt, now_ms) = self.inputs();
        let Some(payer) = counters.get(Dimension::Payer) else {
            return;
        };
        let p = &payer.profile;
        let a = &config.anomalies;
        let w = &config.weights;
        if let (Some(min), Some(dev)) = (a.new_device_amount_minor, input.subject.device.as_ref())
            && p.last_at_ms.is_some()
            && amt >= min
            && !p.devices.iter().any(|d| d == dev)
        {
            let detail = format!("a device new to this payer paying {}", self.money(amt));
            self.fire("anomaly.new_device", w.new_device, detail);
        }
        if let (Some(t), Some(last_at)) = (&a.impossible_travel, p.last_at_ms) {
            let elapsed_ms = now_ms.saturating_sub(last_at).max(0);
            let f = &input.facts;
            if let (Some(here), Some(there)) = (f.location, p.last_location) {
                let dist_m = here.distance_m(there);
                let fast = i128::from(dist_m) * 3_600_000
                    > i128::from(t.max_speed_kmh) * 1000 * i128::from(elapsed_ms);
                if dist_m >= u64::from(t.min_distance_km) * 1000 && fast {
                    let detail = format!(
                        "{} km from the previous payment {} s earlier",
                        dist_m / 1000,
                        elapsed_ms / 1000
                    );
                    self.fire("anomaly.impossible_travel", w.impossible_travel, detail);
                }
            } else if let (Some(c), Some(prev)) = (&f.country, &p.last_country)
                && c != prev
                && elapsed_ms < t.country_change_min_ms
            {
                let detail = format!("country {prev} → {c} within {} s", elapsed_ms / 1000);
                self.fire("anomaly.impossible_travel", w.impossible_travel, detail);
            }
        }
        if let Some(u) = &a.unusual_amount
            && p.payments >= u.min_history
            && amt > 0
            && i128::from(amt) * i128::from(p.payments) * 10_000
                > i128::from(p.sum_minor) * i128::from(u.multiple_bp)
        {
            let mean = p.sum_minor / p.payments.max(1) as i64;
            let detail = format!(
                "{} against a usual {} ({} bp limit)",
                self.money(amt),
                self.money(mean),
                u.multiple_bp
            );
            self.fire("anomaly.unusual_amount", w.unusual_amount, detail);
        }
    }

    fn aml(&mut self) {
        let (config, input, amt) = (self.config, self.input, self.amt);
        if input.subject.payer.is_none() {
            return;
        }
        let w = &config.weights;
        let total = self.payer_sum_24h(|b| b.amount_minor).saturating_add(amt);
        if amt > 0 && total >= config.aml.large_value_daily_minor {
            let detail = format!(
                "{} by this payer in 24 h (large-value level {})",
                self.money(total),
                self.money(config.aml.large_value_daily_minor)
            );
            self.fire("aml.large_value", w.large_value, detail);
        }
        if let Some(s) = &config.aml.structuring
            && is_near_threshold(config, amt)
        {
            let near = (self.payer_sum_24h(|b| b.near_count as i64) as u64).saturating_add(1);
            if near >= s.min_count {
                let detail = format!(
                    "{near} payments just under {} in 24 h",
                    self.money(s.threshold_minor)
                );
                self.fire("aml.structuring", w.structuring, detail);
            }
        }
        if let Some(r) = &config.aml.rapid_refund {
            let rapid = self.payer_sum_24h(|b| b.rapid_refund_count as i64) as u64;
            if rapid >= r.min_count {
                let detail = format!("{rapid} pay-then-refund cycles in 24 h");
                self.fire("aml.rapid_refund", w.rapid_refund, detail);
            }
        }
    }
}

/// The record updates to apply after an accepted payment (one per counted dimension).
pub fn payment_updates(
    config: &EngineConfig,
    input: &EngineInput,
    now_ms: i64,
) -> Vec<CounterUpdate> {
    let f = &input.facts;
    let amt = counted_amount(config, f);
    input
        .counter_keys()
        .into_iter()
        .map(|(d, key)| {
            let payer = d == Dimension::Payer;
            let delta = CounterDelta {
                event_id: f.payment_id.clone(),
                at_ms: now_ms,
                count: 1,
                amount_minor: amt,
                tier: if payer && amt > 0 {
                    tier_of(config, f)
                } else {
                    None
                },
                near: payer && is_near_threshold(config, amt),
                refund: false,
                rapid_refund: false,
                profile: payer.then(|| ProfileUpdate {
                    counts_in_mean: amt > 0,
                    amount_minor: amt,
                    country: f.country.clone(),
                    location: f.location,
                    device_hash: input.subject.device.clone(),
                }),
            };
            CounterUpdate { key, delta }
        })
        .collect()
}

/// A refund, as the pay-then-refund rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    /// Merchant.
    pub merchant_id: String,
    /// The refund id (the event id).
    pub refund_id: String,
    /// When the refunded payment was made.
    pub paid_at_ms: i64,
    /// The payer's hash (from the payment's payer id, via [`hash_identifier`]).
    pub payer_hash: String,
}

/// The record update to apply after a refund (payer only; refunds do not give back
/// velocity or limits, deliberately: a refund must not reopen a limit).
pub fn refund_updates(config: &EngineConfig, r: &RefundFacts, now_ms: i64) -> Vec<CounterUpdate> {
    let rapid = config
        .aml
        .rapid_refund
        .as_ref()
        .is_some_and(|rr| now_ms.saturating_sub(r.paid_at_ms) <= rr.within_ms);
    let key = key(Key::Counter {
        merchant_id: &r.merchant_id,
        dimension: Dimension::Payer,
        hash: &r.payer_hash,
    });
    vec![CounterUpdate {
        key,
        delta: CounterDelta {
            event_id: format!("refund:{}", r.refund_id),
            at_ms: now_ms,
            count: 0,
            amount_minor: 0,
            tier: None,
            near: false,
            refund: true,
            rapid_refund: rapid,
            profile: None,
        },
    }]
}
