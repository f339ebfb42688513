//! Basic risk rules (the risk issue extends them): per-method per-transaction amount
//! limits and block lists, combined into a weighted score and a decision, with every
//! rule that fired and its contribution. Pure: the caller loads the merchant's
//! [`RiskConfig`] and passes it in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::model::{MethodKind, Payer, RiskAssessment, RiskDecision, RuleHit};
use crate::money::{AMOUNT_MINOR_MAX, Currency, Money};

/// Most entries in one block list.
pub const BLOCKLIST_ENTRIES_MAX: usize = 10_000;
/// Most amount limits in one config.
pub const AMOUNT_LIMITS_MAX: usize = 64;

/// What the engine sees of a prospective payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskInput {
    /// Merchant.
    pub merchant_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Method kind.
    pub method: MethodKind,
    /// The customer-presented token/auth code, if any (for token lists).
    pub customer_token: Option<String>,
    /// Payer.
    pub payer: Payer,
}

/// A per-transaction ceiling for one method and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountLimit {
    /// Method.
    pub method: MethodKind,
    /// Currency.
    pub currency: Currency,
    /// Largest allowed amount.
    pub max_minor: i64,
}

/// Score thresholds, mildest first: `challenge_at ≤ review_at ≤ deny_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Score from which an OTP step-up is required.
    pub challenge_at: i64,
    /// Score from which a person reviews.
    pub review_at: i64,
    /// Score from which the payment is refused.
    pub deny_at: i64,
}

/// Block lists (exact matches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocklists {
    /// Payer ids.
    #[serde(default)]
    pub payer_ids: BTreeSet<String>,
    /// Device ids.
    #[serde(default)]
    pub device_ids: BTreeSet<String>,
    /// IP addresses.
    #[serde(default)]
    pub ips: BTreeSet<String>,
}

/// A merchant's risk configuration, versioned so a decision records what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Bumped on every change (set by the service, not the client).
    #[serde(default)]
    pub version: u64,
    /// Per-transaction limits.
    pub amount_limits: Vec<AmountLimit>,
    /// Points for exceeding a limit.
    pub amount_limit_contribution: i64,
    /// Block lists (a hit always denies).
    #[serde(default)]
    pub blocklists: Blocklists,
    /// Points for a block-list hit.
    pub blocklist_contribution: i64,
    /// Decision thresholds.
    pub thresholds: Thresholds,
}

impl Default for RiskConfig {
    /// CNY 50,000 per transaction for every method, CNY 5,000 for `qr_merchant` (static
    /// codes carry least authentication); exceeding a limit denies.
    fn default() -> Self {
        let amount_limits = MethodKind::ALL
            .into_iter()
            .map(|method| AmountLimit {
                method,
                currency: Currency::Cny,
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
        RiskConfig {
            version: 1,
            amount_limits,
            amount_limit_contribution: 100,
            blocklists: Blocklists::default(),
            blocklist_contribution: 100,
            thresholds: Thresholds {
                challenge_at: 40,
                review_at: 70,
                deny_at: 100,
            },
        }
    }
}

fn invalid(param: &str, reason: &str) -> ApiError {
    ApiError::ParameterInvalid {
        param: param.into(),
        reason: reason.into(),
    }
}

impl RiskConfig {
    /// Validates a configuration a merchant submitted.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.amount_limits.len() > AMOUNT_LIMITS_MAX {
            return Err(invalid("amount_limits", "at most 64 limits"));
        }
        let mut seen = BTreeMap::new();
        for (i, l) in self.amount_limits.iter().enumerate() {
            if !(1..=AMOUNT_MINOR_MAX).contains(&l.max_minor) {
                return Err(ApiError::AmountInvalid {
                    param: format!("amount_limits[{i}].max_minor"),
                    reason: "must be 1..=10^12".into(),
                });
            }
            if seen.insert((l.method, l.currency), i).is_some() {
                return Err(invalid(
                    &format!("amount_limits[{i}]"),
                    "duplicate method and currency",
                ));
            }
        }
        let lists = &self.blocklists;
        for (name, list) in [
            ("blocklists.payer_ids", &lists.payer_ids),
            ("blocklists.device_ids", &lists.device_ids),
            ("blocklists.ips", &lists.ips),
        ] {
            if list.len() > BLOCKLIST_ENTRIES_MAX {
                return Err(invalid(name, "at most 10000 entries"));
            }
        }
        for (name, v) in [
            ("amount_limit_contribution", self.amount_limit_contribution),
            ("blocklist_contribution", self.blocklist_contribution),
        ] {
            if !(0..=1000).contains(&v) {
                return Err(invalid(name, "must be 0..=1000"));
            }
        }
        let t = &self.thresholds;
        let ordered =
            0 < t.challenge_at && t.challenge_at <= t.review_at && t.review_at <= t.deny_at;
        if !ordered || t.deny_at > 10_000 {
            return Err(invalid(
                "thresholds",
                "need 0 < challenge_at <= review_at <= deny_at <= 10000",
            ));
        }
        Ok(())
    }
}

/// Assesses a prospective payment.
pub fn assess(config: &RiskConfig, input: &RiskInput) -> RiskAssessment {
    let mut rules = Vec::new();
    let mut blocked = false;
    if let Some(limit) = config
        .amount_limits
        .iter()
        .find(|l| l.method == input.method && l.currency == input.currency)
        && input.amount_minor > limit.max_minor
    {
        rules.push(RuleHit {
            rule: format!("amount_limit.{}", input.method.as_str()),
            contribution: config.amount_limit_contribution,
            detail: format!(
                "{} exceeds the per-transaction limit {}",
                Money::new(input.amount_minor, input.currency).display(),
                Money::new(limit.max_minor, input.currency).display()
            ),
        });
    }
    let p = &input.payer;
    let lists = &config.blocklists;
    for (rule, value, list) in [
        ("blocklist.payer_id", &p.id, &lists.payer_ids),
        ("blocklist.device_id", &p.device_id, &lists.device_ids),
        ("blocklist.ip", &p.ip, &lists.ips),
    ] {
        if let Some(v) = value.as_ref().filter(|v| list.contains(*v)) {
            blocked = true;
            rules.push(RuleHit {
                rule: rule.to_string(),
                contribution: config.blocklist_contribution,
                detail: format!("{} is blocked", crate::model::mask_tail(v, 4)),
            });
        }
    }
    let score = rules.iter().map(|r| r.contribution).sum();
    RiskAssessment {
        decision: decide(&config.thresholds, score, blocked),
        score,
        rules,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(amount_minor: i64) -> RiskInput {
        RiskInput {
            merchant_id: "mch_x".into(),
            amount_minor,
            currency: Currency::Cny,
            method: MethodKind::QrMerchant,
            customer_token: None,
            payer: Payer {
                device_id: Some("dev-1".into()),
                ..Payer::default()
            },
        }
    }

    #[test]
    fn payments_within_limits_are_allowed_with_no_rules() {
        // Proves the default config allows an ordinary payment and records its version.
        let a = assess(&RiskConfig::default(), &input(1250));
        assert_eq!(
            (a.decision, a.score, a.rules.len()),
            (RiskDecision::Allow, 0, 0)
        );
        assert_eq!(a.rules_version, 1);
    }

    #[test]
    fn an_amount_over_the_method_limit_is_denied_with_the_rule_named() {
        // Proves the per-method limit fires with its contribution.
        let a = assess(&RiskConfig::default(), &input(500_001));
        assert_eq!(a.decision, RiskDecision::Deny);
        assert_eq!(a.rules[0].rule, "amount_limit.qr_merchant");
        assert_eq!(a.rules[0].contribution, 100);
    }

    #[test]
    fn a_blocked_device_is_denied_even_with_zero_weight() {
        // Proves a block-list hit denies whatever the score.
        let mut c = RiskConfig::default();
        c.blocklists.device_ids.insert("dev-1".into());
        c.blocklist_contribution = 0;
        let a = assess(&c, &input(100));
        assert_eq!(a.decision, RiskDecision::Deny);
        assert_eq!(a.rules[0].rule, "blocklist.device_id");
    }

    #[test]
    fn scores_map_to_decisions_by_threshold() {
        // Proves the threshold ladder allow < challenge < review < deny.
        let t = RiskConfig::default().thresholds;
        let got: Vec<_> = [0, 40, 70, 100]
            .iter()
            .map(|s| decide(&t, *s, false))
            .collect();
        assert_eq!(
            got,
            vec![
                RiskDecision::Allow,
                RiskDecision::Challenge,
                RiskDecision::Review,
                RiskDecision::Deny
            ]
        );
    }

    #[test]
    fn invalid_configs_are_rejected_naming_the_field() {
        // Proves unordered thresholds and bad limits fail validation with a param.
        let mut c = RiskConfig::default();
        c.thresholds.review_at = 10;
        assert_eq!(c.validate().unwrap_err().param(), Some("thresholds"));
        let mut c = RiskConfig::default();
        c.amount_limits[0].max_minor = 0;
        assert_eq!(
            c.validate().unwrap_err().param(),
            Some("amount_limits[0].max_minor")
        );
        assert!(RiskConfig::default().validate().is_ok());
    }
}
