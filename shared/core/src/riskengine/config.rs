//! The merchant's engine configuration: versioned, strict on input (`deny_unknown_fields`)
//! and validated with errors that name the offending field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::model::MethodKind;
use crate::money::{AMOUNT_MINOR_MAX, Currency};

use super::counters::{Dimension, Window};

/// Most entries in one list (block or allow, per kind).
pub const LIST_ENTRIES_MAX: usize = 10_000;
/// Most velocity limits in one configuration.
pub const VELOCITY_LIMITS_MAX: usize = 48;
/// Largest contribution of one rule and largest threshold.
pub const CONTRIBUTION_MAX: i64 = 1_000;
/// Largest decision threshold.
pub const THRESHOLD_MAX: i64 = 10_000;
/// Longest list entry (payer id, device id, IP or CIDR text).
pub const LIST_ENTRY_BYTES_MAX: usize = 256;

/// A per-transaction ceiling for one method (in the configuration's currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodMax {
    /// Method.
    pub method: MethodKind,
    /// Largest allowed amount.
    pub max_minor: i64,
}

/// Daily cumulative limits per payer following the PBOC barcode tiers (rolling 24 h).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyTiers {
    /// Methods counted as static codes (a printed merchant QR).
    pub static_methods: BTreeSet<MethodKind>,
    /// Methods counted as dynamic codes (tier chosen by the authentication factors).
    pub dynamic_methods: BTreeSet<MethodKind>,
    /// Static code limit (PBOC: CNY 500).
    pub static_max_minor: i64,
    /// Dynamic code with fewer than two factors (PBOC: CNY 1,000).
    pub dynamic_low_auth_max_minor: i64,
    /// Dynamic code with two or more factors (PBOC: CNY 5,000).
    pub dynamic_high_auth_max_minor: i64,
}

/// A count and/or amount ceiling over one window for one dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityLimit {
    /// What is counted: payer, device, ip or token.
    pub dimension: Dimension,
    /// Over which window: `1m`, `1h` or `24h`.
    pub window: Window,
    /// Most payments in the window, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Most amount in the window, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount_minor: Option<i64>,
    /// Points when exceeded.
    pub contribution: i64,
}

/// Block or allow list entries. Phones and tokens are stored only as salted hashes
/// (see [`super::hash_identifier`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    /// Payer ids.
    #[serde(default)]
    pub payer_ids: BTreeSet<String>,
    /// Device ids.
    #[serde(default)]
    pub device_ids: BTreeSet<String>,
    /// IP addresses or CIDR blocks, v4 or v6 (`203.0.113.0/24`, `2001:db8::/32`).
    #[serde(default)]
    pub ips: BTreeSet<String>,
    /// Salted sha256 hex of phone numbers.
    #[serde(default)]
    pub phone_hashes: BTreeSet<String>,
    /// Salted sha256 hex of payment tokens / auth codes.
    #[serde(default)]
    pub token_hashes: BTreeSet<String>,
}

/// Impossible-travel bound between a payer's consecutive payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TravelRule {
    /// Fastest plausible travel (an airliner: 900 km/h).
    pub max_speed_kmh: u32,
    /// Distances below this are location noise.
    pub min_distance_km: u32,
    /// Without coordinates: a country change faster than this fires.
    pub country_change_min_ms: i64,
}

/// Amount far above the payer's running mean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnusualAmountRule {
    /// Fires when amount > mean × `multiple_bp` / 10,000.
    pub multiple_bp: i64,
    /// Payments needed before the mean is trusted.
    pub min_history: u64,
}

/// Anomaly rules; `None` turns a rule off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomalies {
    /// A device the payer never used, paying at least this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_device_amount_minor: Option<i64>,
    /// Impossible travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impossible_travel: Option<TravelRule>,
    /// Unusual amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusual_amount: Option<UnusualAmountRule>,
}

/// Several payments just under a reporting threshold within 24 h.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuringRule {
    /// The threshold being avoided.
    pub threshold_minor: i64,
    /// "Just under": within this many basis points below the threshold.
    pub below_bp: i64,
    /// Payments in 24 h (this one included) that fire.
    pub min_count: u64,
}

/// Refunds soon after their payment, repeated within 24 h.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RapidRefundRule {
    /// A refund this soon after its payment is "rapid".
    pub within_ms: i64,
    /// Rapid refunds in 24 h that fire.
    pub min_count: u64,
}

/// Anti-money-laundering rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmlRules {
    /// Large-value reporting per payer over 24 h (PBOC: CNY 50,000).
    pub large_value_daily_minor: i64,
    /// Structuring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structuring: Option<StructuringRule>,
    /// Pay-then-refund cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rapid_refund: Option<RapidRefundRule>,
    /// Report days start at midnight of this UTC offset (China: 480).
    pub day_utc_offset_minutes: i32,
}

/// Points per rule family (velocity limits carry their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Per-transaction maximum exceeded.
    pub per_transaction_max: i64,
    /// Daily tier exceeded.
    pub daily_limit: i64,
    /// Block-list hit (also forces `deny`).
    pub blocklist: i64,
    /// New device with a high amount.
    pub new_device: i64,
    /// Impossible travel.
    pub impossible_travel: i64,
    /// Unusual amount.
    pub unusual_amount: i64,
    /// Large value reached (reported either way).
    pub large_value: i64,
    /// Structuring.
    pub structuring: i64,
    /// Pay-then-refund cycles.
    pub rapid_refund: i64,
}

/// Score thresholds, mildest first: `0 < challenge_at ≤ review_at ≤ deny_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// OTP step-up from this score.
    pub challenge_at: i64,
    /// Manual review from this score.
    pub review_at: i64,
    /// Refusal from this score.
    pub deny_at: i64,
}

/// A merchant's risk-engine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Bumped by the service on every change; recorded with each decision.
    #[serde(default)]
    pub version: u64,
    /// Currency of every amount below; payments in another currency skip amount rules.
    pub currency: Currency,
    /// Per-transaction maxima.
    #[serde(default)]
    pub per_transaction_max: Vec<MethodMax>,
    /// PBOC daily tiers.
    pub daily_tiers: DailyTiers,
    /// Velocity limits.
    #[serde(default)]
    pub velocity: Vec<VelocityLimit>,
    /// Block lists (a hit denies).
    #[serde(default)]
    pub blocklist: Lists,
    /// Allow lists (a hit caps the decision at `allow`, except block lists and hard limits).
    #[serde(default)]
    pub allowlist: Lists,
    /// Anomalies.
    pub anomalies: Anomalies,
    /// AML.
    pub aml: AmlRules,
    /// Weights.
    pub weights: Weights,
    /// Thresholds.
    pub thresholds: Thresholds,
}

impl Default for EngineConfig {
    /// CNY 50,000 per transaction (CNY 5,000 for a static `qr_merchant` code), PBOC tiers
    /// in CNY, five payments a minute per payer before a challenge, CNY 50,000
    /// large-value reporting, structuring under CNY 50,000 (three within 10 %), three
    /// pay-then-refund cycles inside 10 minutes.
    fn default() -> Self {
        let per_transaction_max = MethodKind::ALL
            .into_iter()
            .map(|method| MethodMax {
                method,
                // A static merchant QR carries the least authentication.
                max_minor: match method {
                    MethodKind::QrMerchant => 500_000,
                    MethodKind::QrCustomer
                    | MethodKind::Nfc
                    | MethodKind::SoundWave
                    | MethodKind::H5
                    | MethodKind::App
                    | MethodKind::SmsOtp => 5_000_000,
                },
            })
            .collect();
        EngineConfig {
            version: 1,
            currency: Currency::Cny,
            per_transaction_max,
            daily_tiers: DailyTiers {
                static_methods: BTreeSet::new(),
                dynamic_methods: [MethodKind::QrCustomer, MethodKind::SoundWave]
                    .into_iter()
                    .collect(),
                static_max_minor: 50_000,
                dynamic_low_auth_max_minor: 100_000,
                dynamic_high_auth_max_minor: 500_000,
            },
            velocity: vec![
                VelocityLimit {
                    dimension: Dimension::Payer,
                    window: Window::M1,
                    max_count: Some(5),
                    max_amount_minor: None,
                    contribution: 40,
                },
                VelocityLimit {
                    dimension: Dimension::Device,
                    window: Window::H1,
                    max_count: Some(30),
                    max_amount_minor: None,
                    contribution: 40,
                },
                VelocityLimit {
                    dimension: Dimension::Ip,
                    window: Window::H1,
                    max_count: Some(100),
                    max_amount_minor: None,
                    contribution: 40,
                },
            ],
            blocklist: Lists::default(),
            allowlist: Lists::default(),
            anomalies: Anomalies {
                new_device_amount_minor: Some(200_000),
                impossible_travel: Some(TravelRule {
                    max_speed_kmh: 900,
                    min_distance_km: 100,
                    country_change_min_ms: 3_600_000,
                }),
                unusual_amount: Some(UnusualAmountRule {
                    multiple_bp: 100_000,
                    min_history: 5,
                }),
            },
            aml: AmlRules {
                large_value_daily_minor: 5_000_000,
                structuring: Some(StructuringRule {
                    threshold_minor: 5_000_000,
                    below_bp: 1_000,
                    min_count: 3,
                }),
                rapid_refund: Some(RapidRefundRule {
                    within_ms: 600_000,
                    min_count: 3,
                }),
                day_utc_offset_minutes: 480,
            },
            weights: Weights {
                per_transaction_max: 100,
                daily_limit: 100,
                blocklist: 100,
                new_device: 30,
                impossible_travel: 70,
                unusual_amount: 30,
                large_value: 0,
                structuring: 70,
                rapid_refund: 40,
            },
            thresholds: Thresholds {
                challenge_at: 40,
                review_at: 70,
                deny_at: 100,
            },
        }
    }
}

pub(crate) fn invalid(param: impl Into<String>, reason: &str) -> ApiError {
    ApiError::ParameterInvalid {
        param: param.into(),
        reason: reason.into(),
    }
}

fn amount(param: impl Into<String>, v: i64) -> Result<(), ApiError> {
    if (1..=AMOUNT_MINOR_MAX).contains(&v) {
        Ok(())
    } else {
        Err(ApiError::AmountInvalid {
            param: param.into(),
            reason: "must be 1..=10^12".into(),
        })
    }
}

fn contribution(param: impl Into<String>, v: i64) -> Result<(), ApiError> {
    if (0..=CONTRIBUTION_MAX).contains(&v) {
        Ok(())
    } else {
        Err(invalid(param, "must be 0..=1000"))
    }
}

impl EngineConfig {
    /// Validates a configuration a merchant submitted; the error names the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut seen = BTreeMap::new();
        for (i, m) in self.per_transaction_max.iter().enumerate() {
            amount(format!("per_transaction_max[{i}].max_minor"), m.max_minor)?;
            if seen.insert(m.method, i).is_some() {
                return Err(invalid(
                    format!("per_transaction_max[{i}].method"),
                    "duplicate method",
                ));
            }
        }
        self.validate_tiers()?;
        self.validate_velocity()?;
        validate_lists("blocklist", &self.blocklist)?;
        validate_lists("allowlist", &self.allowlist)?;
        self.validate_anomalies()?;
        self.validate_aml()?;
        self.validate_weights()
    }

    fn validate_tiers(&self) -> Result<(), ApiError> {
        let t = &self.daily_tiers;
        amount("daily_tiers.static_max_minor", t.static_max_minor)?;
        amount(
            "daily_tiers.dynamic_low_auth_max_minor",
            t.dynamic_low_auth_max_minor,
        )?;
        amount(
            "daily_tiers.dynamic_high_auth_max_minor",
            t.dynamic_high_auth_max_minor,
        )?;
        if let Some(m) = t.static_methods.intersection(&t.dynamic_methods).next() {
            return Err(invalid(
                "daily_tiers.dynamic_methods",
                &format!("{} is also a static method", m.as_str()),
            ));
        }
        Ok(())
    }

    fn validate_velocity(&self) -> Result<(), ApiError> {
        if self.velocity.len() > VELOCITY_LIMITS_MAX {
            return Err(invalid("velocity", "at most 48 limits"));
        }
        for (i, v) in self.velocity.iter().enumerate() {
            if v.max_count.is_none() && v.max_amount_minor.is_none() {
                return Err(invalid(
                    format!("velocity[{i}]"),
                    "needs max_count or max_amount_minor",
                ));
            }
            if v.max_count == Some(0) {
                return Err(invalid(format!("velocity[{i}].max_count"), "must be >= 1"));
            }
            if let Some(a) = v.max_amount_minor {
                amount(format!("velocity[{i}].max_amount_minor"), a)?;
            }
            contribution(format!("velocity[{i}].contribution"), v.contribution)?;
        }
        Ok(())
    }

    fn validate_anomalies(&self) -> Result<(), ApiError> {
        let a = &self.anomalies;
        if let Some(v) = a.new_device_amount_minor {
            amount("anomalies.new_device_amount_minor", v)?;
        }
        if let Some(t) = &a.impossible_travel {
            if !(1..=100_000).contains(&t.max_speed_kmh) {
                return Err(invalid(
                    "anomalies.impossible_travel.max_speed_kmh",
                    "must be 1..=100000",
                ));
            }
            if t.min_distance_km > 20_000 {
                return Err(invalid(
                    "anomalies.impossible_travel.min_distance_km",
                    "must be 0..=20000",
                ));
            }
            if !(0..=7 * 86_400_000).contains(&t.country_change_min_ms) {
                return Err(invalid(
                    "anomalies.impossible_travel.country_change_min_ms",
                    "must be 0..=604800000",
                ));
            }
        }
        if let Some(u) = &a.unusual_amount {
            if !(10_001..=10_000_000).contains(&u.multiple_bp) {
                return Err(invalid(
                    "anomalies.unusual_amount.multiple_bp",
                    "must be 10001..=10000000 (more than 1x)",
                ));
            }
            if !(1..=1_000_000).contains(&u.min_history) {
                return Err(invalid(
                    "anomalies.unusual_amount.min_history",
                    "must be 1..=1000000",
                ));
            }
        }
        Ok(())
    }

    fn validate_aml(&self) -> Result<(), ApiError> {
        let a = &self.aml;
        amount("aml.large_value_daily_minor", a.large_value_daily_minor)?;
        if let Some(s) = &a.structuring {
            amount("aml.structuring.threshold_minor", s.threshold_minor)?;
            if !(1..=5_000).contains(&s.below_bp) {
                return Err(invalid("aml.structuring.below_bp", "must be 1..=5000"));
            }
            if !(2..=1_000).contains(&s.min_count) {
                return Err(invalid("aml.structuring.min_count", "must be 2..=1000"));
            }
        }
        if let Some(r) = &a.rapid_refund {
            if !(1..=86_400_000).contains(&r.within_ms) {
                return Err(invalid(
                    "aml.rapid_refund.within_ms",
                    "must be 1..=86400000",
                ));
            }
            if !(1..=1_000).contains(&r.min_count) {
                return Err(invalid("aml.rapid_refund.min_count", "must be 1..=1000"));
            }
        }
        if !(-720..=840).contains(&a.day_utc_offset_minutes) {
            return Err(invalid("aml.day_utc_offset_minutes", "must be -720..=840"));
        }
        Ok(())
    }

    fn validate_weights(&self) -> Result<(), ApiError> {
        let w = &self.weights;
        for (name, v) in [
            ("weights.per_transaction_max", w.per_transaction_max),
            ("weights.daily_limit", w.daily_limit),
            ("weights.blocklist", w.blocklist),
            ("weights.new_device", w.new_device),
            ("weights.impossible_travel", w.impossible_travel),
            ("weights.unusual_amount", w.unusual_amount),
            ("weights.large_value", w.large_value),
            ("weights.structuring", w.structuring),
            ("weights.rapid_refund", w.rapid_refund),
        ] {
            contribution(name, v)?;
        }
        let t = &self.thresholds;
        if !(1..=THRESHOLD_MAX).contains(&t.challenge_at) {
            return Err(invalid("thresholds.challenge_at", "must be 1..=10000"));
        }
        if !(t.challenge_at..=THRESHOLD_MAX).contains(&t.review_at) {
            return Err(invalid(
                "thresholds.review_at",
                "must be challenge_at..=10000",
            ));
        }
        if !(t.review_at..=THRESHOLD_MAX).contains(&t.deny_at) {
            return Err(invalid("thresholds.deny_at", "must be review_at..=10000"));
        }
        Ok(())
    }
}

fn validate_lists(prefix: &str, l: &Lists) -> Result<(), ApiError> {
    for (name, list) in [
        ("payer_ids", &l.payer_ids),
        ("device_ids", &l.device_ids),
        ("ips", &l.ips),
        ("phone_hashes", &l.phone_hashes),
        ("token_hashes", &l.token_hashes),
    ] {
        if list.len() > LIST_ENTRIES_MAX {
            return Err(invalid(format!("{prefix}.{name}"), "at most 10000 entries"));
        }
        for (i, e) in list.iter().enumerate() {
            let param = || format!("{prefix}.{name}[{i}]");
            if matches!(name, "payer_ids" | "device_ids") {
                // What a payment's payer.id / payer.device_id may be: anything else could
                // never match.
                crate::api::validate_payer_ref(e, &param())?;
                continue;
            }
            if e.is_empty() || e.len() > LIST_ENTRY_BYTES_MAX {
                return Err(invalid(param(), "must be 1..=256 bytes"));
            }
            let ok = match name {
                "ips" => parse_cidr(e).is_some(),
                _ => {
                    e.len() == 64
                        && e.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                }
            };
            if !ok {
                let reason = if name == "ips" {
                    "not an IP address or CIDR block"
                } else {
                    "not a lowercase sha256 hex digest"
                };
                return Err(invalid(param(), reason));
            }
        }
    }
    Ok(())
}

/// Parses `addr` or `addr/prefix` (v4 or v6) into the network and prefix length.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
            p.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => bits,
    };
    (prefix <= bits).then_some((ip, prefix))
}

/// Whether `ip` lies in the block `net/prefix` (families must match; v4-mapped v6
/// addresses are compared as v4).
pub fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let (net, prefix) = match net {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            Some(_) | None => (net, prefix),
        },
        IpAddr::V4(_) => (net, prefix),
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let shift = 32 - u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let shift = 128 - u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}
