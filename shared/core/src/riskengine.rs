//! # The risk and AML engine (issue 5)
//!
//! Explainable rules over per-merchant configuration: per-transaction maxima, PBOC daily
//! barcode tiers, velocity (payer, device, IP, token × 1 min, 1 h, 24 h), block and allow
//! lists (ids, IP / CIDR v4 and v6, salted hashes of phones and tokens), anomalies (new
//! device with a high amount, impossible travel, amount far above the payer's usual) and
//! AML (large value, structuring, pay-then-refund cycles). Each fired rule adds its
//! weight to a score; thresholds map the score to `allow` / `challenge` / `review` /
//! `deny`. A block-list hit always denies; an allow-list hit caps the decision at `allow`
//! unless a block list or a hard limit (per-transaction or daily tier) fired.
//!
//! **Pure core, thin I/O.** [`evaluate`] is a pure function of the configuration, the
//! payment, the counter records read for it and `now_ms`. The async helpers here only move
//! records between the [`Repository`] and the pure functions:
//! * [`assess`]: one `get_many` of at most [`counters::KEYS_PER_ASSESSMENT_MAX`] (4) keys,
//!   then `evaluate`. No writes, so `POST /v1/risk/assessments` is side-effect free.
//! * [`store`]: the same with the merchant's stored configuration and salt, as the
//!   components call it ([`store::assess`] in [`Mode::Preview`] or [`Mode::Record`]).
//! * [`record_payment`] after a payment is accepted, [`record_refund`] after a refund: one
//!   compare-and-swap per counted entity (≤ 4, each in a loop of at most
//!   [`CAS_ATTEMPTS_MAX`]) plus one per AML report. Idempotent per event id, which also
//!   settles a write whose outcome the store could not tell (see [`apply_update`]).
//!
//! The counter layout and why it uses compare-and-swap records is in [`counters`].

pub mod aml;
pub mod config;
pub mod counters;
pub mod eval;
pub mod geo;
pub mod input;
pub mod store;

pub use aml::{AmlDay, AmlKind, AmlReport, aml_day_key, render_csv, report_day};
pub use config::EngineConfig;
pub use counters::{CounterRecord, CounterUpdate, Dimension, Key, Window, key};
pub use eval::{
    Assessment, Counters, EngineInput, FiredRule, PaymentFacts, RefundFacts, Subject, evaluate,
    hash_identifier, payment_updates, refund_updates,
};
pub use input::{PREVIEW_EVENT_ID, RiskInput};
pub use store::{INTERNAL_MAC_HEADER, INTERNAL_MERCHANT_HEADER, Loaded, MerchantRisk, Mode};

use crate::repo::{RepoError, Repository};

/// Compare-and-swap attempts per record before giving up.
pub const CAS_ATTEMPTS_MAX: u32 = 16;

/// Why an engine operation failed (nothing is half-applied: each record either took the
/// event or did not, and a retry applies only what is missing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A stored record is unreadable or a sum overflowed.
    #[error(transparent)]
    Counter(#[from] counters::CounterError),
    /// A record stayed contended for [`CAS_ATTEMPTS_MAX`] attempts.
    #[error("risk record {key} stayed contended")]
    Contention {
        /// The key.
        key: String,
    },
    /// A day's AML record is full.
    #[error(transparent)]
    AmlDayFull(#[from] aml::AmlDayFull),
    /// A stored AML day is unreadable.
    #[error("AML record {key} is corrupt")]
    AmlCorrupt {
        /// The key.
        key: String,
    },
}

/// Reads the counter records of a payment with one `get_many`.
pub async fn load_counters<R: Repository>(
    repo: &R,
    input: &EngineInput,
) -> Result<Counters, EngineError> {
    let keyed = input.counter_keys();
    let keys: Vec<String> = keyed.iter().map(|(_, k)| k.clone()).collect();
    let values = repo.get_many(&keys).await?;
    let mut counters = Counters::default();
    for ((d, k), v) in keyed.iter().zip(values) {
        let rec = v.map(|v| CounterRecord::decode(k, &v.value)).transpose()?;
        counters.set(*d, rec);
    }
    Ok(counters)
}

/// Assesses without writing anything.
pub async fn assess<R: Repository>(
    repo: &R,
    config: &EngineConfig,
    input: &EngineInput,
    now_ms: i64,
) -> Result<Assessment, EngineError> {
    let counters = load_counters(repo, input).await?;
    Ok(evaluate(config, input, &counters, now_ms))
}

/// Counts an accepted payment and files the AML reports it calls for; returns the
/// reports newly filed. Safe to retry after any error: nothing is counted or filed twice.
pub async fn record_payment<R: Repository>(
    repo: &R,
    config: &EngineConfig,
    input: &EngineInput,
    now_ms: i64,
) -> Result<Vec<AmlReport>, EngineError> {
    let counted = record_payment_as(repo, config, input, now_ms, None, false).await?;
    Ok(counted.expect("counting that re-applies is never stale"))
}

/// Counts a payment an assessment decided on the records `loaded` (a check-and-count):
/// the payer's record, which carries the hard daily limits, the payer's velocity and the
/// AML totals, is written first and only if it is still the version the decision read.
/// `None` when it changed in between (another payment of the payer was counted): nothing
/// was counted, and the payment must be assessed again on the new totals. The other
/// records are counted whatever they hold by then.
pub async fn record_payment_checked<R: Repository>(
    repo: &R,
    config: &EngineConfig,
    input: &EngineInput,
    now_ms: i64,
    loaded: &Loaded,
) -> Result<Option<Vec<AmlReport>>, EngineError> {
    record_payment_as(repo, config, input, now_ms, Some(loaded), true).await
}

async fn record_payment_as<R: Repository>(
    repo: &R,
    config: &EngineConfig,
    input: &EngineInput,
    now_ms: i64,
    loaded: Option<&Loaded>,
    checked: bool,
) -> Result<Option<Vec<AmlReport>>, EngineError> {
    let mut reports = Vec::new();
    for u in payment_updates(config, input, now_ms) {
        let dim = dimension_of(&u.key);
        let seed = loaded.zip(dim).map(|(l, d)| l.seed(d));
        let strict = checked && dim == Some(Dimension::Payer);
        let Some(after) = apply_update_as(repo, &u, seed, strict).await? else {
            return Ok(None);
        };
        if dim == Some(Dimension::Payer) {
            reports = aml::payment_reports(config, input, &after, now_ms);
        }
    }
    file_all(repo, reports).await.map(Some)
}

/// Counts a refund (pay-then-refund cycles) and files the AML report it calls for;
/// returns the reports newly filed. Safe to retry.
pub async fn record_refund<R: Repository>(
    repo: &R,
    config: &EngineConfig,
    refund: &RefundFacts,
    now_ms: i64,
) -> Result<Vec<AmlReport>, EngineError> {
    let mut reports = Vec::new();
    for u in refund_updates(config, refund, now_ms) {
        let after = apply_update(repo, &u).await?;
        reports = aml::refund_reports(config, refund, &after, now_ms);
    }
    file_all(repo, reports).await
}

async fn file_all<R: Repository>(
    repo: &R,
    reports: Vec<AmlReport>,
) -> Result<Vec<AmlReport>, EngineError> {
    let mut filed = Vec::new();
    for r in reports {
        if file_report(repo, &r).await? {
            filed.push(r);
        }
    }
    Ok(filed)
}

fn dimension_of(key: &str) -> Option<Dimension> {
    let dim = key.rsplit('/').nth(1)?;
    Dimension::ALL.into_iter().find(|d| d.as_str() == dim)
}

/// Applies one update with compare-and-swap and returns the record as stored after it
/// (also when an earlier attempt had already applied this event).
pub async fn apply_update<R: Repository>(
    repo: &R,
    u: &CounterUpdate,
) -> Result<CounterRecord, EngineError> {
    let applied = apply_update_as(repo, u, None, false).await?;
    Ok(applied.expect("an update that re-applies is never stale"))
}

/// [`apply_update`], whose first attempt uses `seed` (storage version, record) instead of
/// reading; a conflict re-reads. `strict`: only onto `seed`, the record a decision was
/// made on: `None` when it changed before our write (a conflict), or when a write whose
/// outcome was unknown turns out not to have landed (nothing of ours is in the record).
///
/// A write whose outcome is unknown ([`RepoError::OutcomeUnknown`]) is settled by the
/// re-read: every write of a counter record appends exactly one event id, so if ours
/// (the write of version `v + 1`) landed, its id is still among the last
/// [`counters::APPLIED_IDS_MAX`] unless more than that many writes have landed on top. Within
/// that distance an absent id proves it did not land, and the update is applied again
/// (not strict); beyond it the answer stays unknown and the error is returned.
async fn apply_update_as<R: Repository>(
    repo: &R,
    u: &CounterUpdate,
    seed: Option<(u64, CounterRecord)>,
    strict: bool,
) -> Result<Option<CounterRecord>, EngineError> {
    let mut seed = seed;
    // The version our last write expected, when its outcome is unknown.
    let mut unknown_from: Option<u64> = None;
    for _ in 0..CAS_ATTEMPTS_MAX {
        let (version, before) = match seed.take() {
            Some(s) => s,
            None => match repo.get_for_update(&u.key).await? {
                Some(v) => (v.version, CounterRecord::decode(&u.key, &v.value)?),
                None => (0, CounterRecord::new()),
            },
        };
        let Some(after) = before.clone().apply(&u.key, &u.delta)? else {
            return Ok(Some(before));
        };
        if let Some(expected) = unknown_from.take() {
            if version.saturating_sub(expected) > counters::APPLIED_IDS_MAX as u64 {
                return Err(RepoError::OutcomeUnknown { key: u.key.clone() }.into());
            }
            if strict {
                return Ok(None);
            }
        }
        match repo.put_if_version(&u.key, version, after.encode()).await {
            Ok(_) => return Ok(Some(after)),
            Err(RepoError::Conflict { .. }) if strict => return Ok(None),
            Err(RepoError::Conflict { .. }) => continue,
            Err(RepoError::OutcomeUnknown { .. }) => unknown_from = Some(version),
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Contention { key: u.key.clone() })
}

/// Appends a report to its day; `false` when this kind was already filed for this payer
/// that day.
pub async fn file_report<R: Repository>(repo: &R, report: &AmlReport) -> Result<bool, EngineError> {
    let k = aml_day_key(&report.merchant_id, &report.day);
    for _ in 0..CAS_ATTEMPTS_MAX {
        // A plain read: most calls find the report filed already and write nothing.
        let stored = repo.get(&k).await?;
        let (version, day) = match &stored {
            Some(v) => {
                let day: AmlDay = serde_json::from_slice(&v.value)
                    .map_err(|_| EngineError::AmlCorrupt { key: k.clone() })?;
                (v.version, day)
            }
            None => (0, AmlDay::new(&report.merchant_id, &report.day)),
        };
        let Some(next) = day.append(report.clone())? else {
            return Ok(false);
        };
        let bytes = serde_json::to_vec(&next).expect("AML day serializes");
        match repo.put_if_version(&k, version, bytes).await {
            Ok(_) => return Ok(true),
            // Appending is idempotent (one report per kind, payer and day): after an
            // unknown outcome the re-read shows whether it is filed.
            Err(RepoError::Conflict { .. } | RepoError::OutcomeUnknown { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Contention { key: k })
}

/// The reports of one merchant-day (empty when none), for the JSON and CSV listings.
pub async fn day_reports<R: Repository>(
    repo: &R,
    merchant_id: &str,
    day: &str,
) -> Result<Vec<AmlReport>, EngineError> {
    let k = aml_day_key(merchant_id, day);
    match repo.get(&k).await? {
        Some(v) => serde_json::from_slice::<AmlDay>(&v.value)
            .map(|d| d.reports)
            .map_err(|_| EngineError::AmlCorrupt { key: k }),
        None => Ok(Vec::new()),
    }
}
