//! The engine's use cases over storage, for the risk-check and refund components (and
//! [`crate::service::LocalRisk`]'s in-process twin): the merchant's versioned
//! configuration, its sealed identifier salt, assessment with or without recording, refund
//! recording and the AML day listing.
//!
//! Storage operations of one recorded assessment (what the benchmark reports):
//! 1. one `get_many` of the configuration and the salt (2 keys);
//! 2. one `get_many` of the counter records (≤ 4 keys);
//! 3. one compare-and-swap per counted entity (≤ 4), seeded with the version read in 2,
//!    so an uncontended write needs no further read; a conflict re-reads that record only;
//! 4. only when an AML report is due: one read and one compare-and-swap of the day.
//!
//! Once per merchant ever, step 1 also creates the salt (one compare-and-swap).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::crypto::{Secret, constant_time_eq, open, seal};
use crate::error::ApiError;
use crate::ids::{IdKind, is_valid_id};
use crate::keys;
use crate::model::{Payment, Refund, RefundStatus, RiskAssessment, RiskDecision};
use crate::repo::{RepoError, Repository, Versioned};
use crate::rng::Entropy;
use crate::service::{CAS_RETRIES_MAX, Ctx};

use super::aml::AmlReport;
use super::config::{EngineConfig, invalid};
use super::counters::{CounterRecord, Dimension, Key, key};
use super::eval::{Counters, EngineInput, RefundFacts, evaluate, hash_identifier};
use super::input::RiskInput;
use super::{EngineError, day_reports, record_payment_checked, record_refund};

/// Bytes of a merchant's identifier salt.
pub const SALT_BYTES: usize = 32;
/// The header carrying [`internal_mac`] on calls between spinpay's own components.
pub const INTERNAL_MAC_HEADER: &str = "spinpay-internal-mac";
/// The header naming, on an internal call, the merchant the calling component already
/// authenticated (bound into [`internal_mac`], so it cannot be swapped).
pub const INTERNAL_MERCHANT_HEADER: &str = "spinpay-merchant-id";

/// What an assessment does with the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only: "what would this payment get now" (`POST /v1/risk/assessments`).
    Preview,
    /// A payment being created: counted unless denied (authorize's call).
    Record,
}

/// Decoded configurations kept between requests of one component instance. An entry is
/// keyed by merchant **and the stored record's version** (which grows on every write of
/// the key and never repeats), so a hit is exactly what a fresh decode would give; only
/// the decode is saved (the record is still read). Decoding is the costly part of a
/// configuration with large lists (≈ 2 ms for 5 × 1,000 entries). Bounded: the oldest
/// entry goes first.
#[derive(Debug, Default)]
pub struct ConfigCache {
    entries: Mutex<VecDeque<(String, u64, Arc<EngineConfig>)>>,
}

/// Merchants a [`ConfigCache`] remembers.
pub const CONFIG_CACHE_ENTRIES_MAX: usize = 64;

impl ConfigCache {
    /// An empty cache (usable in a `static`).
    pub const fn new() -> ConfigCache {
        ConfigCache {
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn get(&self, merchant_id: &str, version: u64) -> Option<Arc<EngineConfig>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|(m, v, _)| m == merchant_id && *v == version)
            .map(|(_, _, c)| Arc::clone(c))
    }

    fn put(&self, merchant_id: &str, version: u64, config: Arc<EngineConfig>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(m, _, _)| m != merchant_id);
        if entries.len() >= CONFIG_CACHE_ENTRIES_MAX {
            entries.pop_front();
        }
        entries.push_back((merchant_id.to_string(), version, config));
    }
}

/// A merchant's engine state: configuration and salt.
#[derive(Debug)]
pub struct MerchantRisk {
    /// The configuration (the default, version 1, until the first PUT).
    pub config: Arc<EngineConfig>,
    /// The identifier salt.
    pub salt: Secret<Vec<u8>>,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Repo(r) => r.into(),
            EngineError::Contention { .. } => ApiError::ConcurrentModification,
            EngineError::Counter(_)
            | EngineError::AmlDayFull(_)
            | EngineError::AmlCorrupt { .. } => ApiError::Internal {
                detail: e.to_string(),
            },
        }
    }
}

fn internal(detail: String) -> ApiError {
    ApiError::Internal { detail }
}

/// The key of a merchant's salt.
pub fn salt_key(merchant_id: &str) -> String {
    key(Key::Salt { merchant_id })
}

fn decode_config(key: &str, v: Option<&Versioned>) -> Result<(EngineConfig, u64), ApiError> {
    match v {
        None => Ok((EngineConfig::default(), 0)),
        Some(v) => {
            let c: EngineConfig = serde_json::from_slice(&v.value)
                .map_err(|e| internal(format!("{key} is not an engine configuration: {e}")))?;
            assert!(c.version >= 1, "stored risk configuration has a version");
            Ok((c, v.version))
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SealedSalt {
    sealed: String,
}

fn open_salt<R>(ctx: &Ctx<'_, R>, k: &str, v: &Versioned) -> Result<Secret<Vec<u8>>, ApiError> {
    let s: SealedSalt =
        serde_json::from_slice(&v.value).map_err(|e| internal(format!("{k}: {e}")))?;
    let salt =
        open(ctx.keys, &s.sealed, k.as_bytes()).map_err(|e| internal(format!("{k}: {e}")))?;
    assert_eq!(salt.len(), SALT_BYTES, "salt length");
    Ok(Secret::new(salt))
}

/// Creates the salt once; a racing creator's salt wins and is read back.
async fn create_salt<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    k: &str,
) -> Result<Secret<Vec<u8>>, ApiError> {
    let fresh: [u8; SALT_BYTES] = rng.bytes();
    let sealed = seal(ctx.keys, rng.bytes(), &fresh, k.as_bytes());
    let bytes = serde_json::to_vec(&SealedSalt { sealed }).expect("serializes");
    for _ in 0..CAS_RETRIES_MAX {
        match ctx.repo.put_if_version(k, 0, bytes.clone()).await {
            Ok(_) => return Ok(Secret::new(fresh.to_vec())),
            Err(RepoError::Conflict { .. }) => {
                if let Some(v) = ctx.repo.get(k).await? {
                    return open_salt(ctx, k, &v);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Configuration and salt with one `get_many` (the salt is created on first use); the
/// configuration's decode is skipped when `cache` holds this stored version.
pub async fn load_merchant<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant_id: &str,
    cache: Option<&ConfigCache>,
) -> Result<MerchantRisk, ApiError> {
    let (ck, sk) = (keys::risk_config(merchant_id), salt_key(merchant_id));
    let got = ctx.repo.get_many(&[ck.clone(), sk.clone()]).await?;
    let stored_version = got[0].as_ref().map_or(0, |v| v.version);
    let hit = cache.and_then(|c| c.get(merchant_id, stored_version));
    let config = match hit {
        Some(c) => c,
        None => {
            let c = Arc::new(decode_config(&ck, got[0].as_ref())?.0);
            if let Some(cache) = cache {
                cache.put(merchant_id, stored_version, Arc::clone(&c));
            }
            c
        }
    };
    let salt = match &got[1] {
        Some(v) => open_salt(ctx, &sk, v)?,
        None => create_salt(ctx, rng, &sk).await?,
    };
    Ok(MerchantRisk { config, salt })
}

/// The merchant's configuration (the default until one is stored).
pub async fn get_config<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<EngineConfig, ApiError> {
    let k = keys::risk_config(merchant_id);
    let v = ctx.repo.get(&k).await?;
    Ok(decode_config(&k, v.as_ref())?.0)
}

/// Validates and stores a whole new configuration; its version is the stored one + 1
/// (compare-and-swap, so two racing PUTs get distinct versions). Nothing is written
/// when validation fails.
pub async fn put_config<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    mut config: EngineConfig,
) -> Result<EngineConfig, ApiError> {
    config.validate()?;
    let k = keys::risk_config(merchant_id);
    for _ in 0..CAS_RETRIES_MAX {
        let v = ctx.repo.get_for_update(&k).await?;
        let (current, storage_version) = decode_config(&k, v.as_ref())?;
        config.version = current
            .version
            .checked_add(1)
            .ok_or_else(|| internal("risk configuration version overflow".into()))?;
        let bytes = serde_json::to_vec(&config).expect("serializes");
        match ctx.repo.put_if_version(&k, storage_version, bytes).await {
            Ok(_) => return Ok(config),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Counter records read for one assessment, with their storage versions.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The records.
    pub counters: Counters,
    versions: [u64; 4],
}

impl Loaded {
    /// The version and record of `d` as read (0 and an empty record when absent).
    pub fn seed(&self, d: Dimension) -> (u64, CounterRecord) {
        let rec = self.counters.get(d).cloned().unwrap_or_default();
        (self.versions[d.index()], rec)
    }
}

/// Reads an input's counter records with one `get_many`.
pub async fn load_counters_versioned<R: Repository>(
    repo: &R,
    input: &EngineInput,
) -> Result<Loaded, EngineError> {
    let keyed = input.counter_keys();
    let ks: Vec<String> = keyed.iter().map(|(_, k)| k.clone()).collect();
    let values = repo.get_many(&ks).await?;
    let mut loaded = Loaded::default();
    for ((d, k), v) in keyed.iter().zip(values) {
        if let Some(v) = v {
            loaded
                .counters
                .set(*d, Some(CounterRecord::decode(k, &v.value)?));
            loaded.versions[d.index()] = v.version;
        }
    }
    Ok(loaded)
}

/// Assesses a payment with the merchant's rules and, in [`Mode::Record`], counts it
/// (unless denied: a refused payment must not use up a payer's daily limit). Recording
/// is idempotent per payment id, so a retried call never counts twice.
pub async fn assess<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    input: &RiskInput,
    mode: Mode,
    cache: Option<&ConfigCache>,
) -> Result<RiskAssessment, ApiError> {
    let m = load_merchant(ctx, rng, &input.merchant_id, cache).await?;
    let ei = input.engine_input(m.salt.expose())?;
    if mode == Mode::Record && input.payment_id.is_none() {
        return Err(ApiError::ParameterMissing {
            param: "payment_id".into(),
        });
    }
    // Decide and count as one step: the count lands only on the payer totals the
    // decision read, so payments of one payer racing each other are each judged with
    // the ones counted before them (a hard limit holds under concurrency).
    for _round in 0..ASSESS_ROUNDS_MAX {
        let loaded = load_counters_versioned(ctx.repo, &ei).await?;
        let a = evaluate(&m.config, &ei, &loaded.counters, ctx.now_ms);
        // A preview writes nothing; a denied payment is not counted.
        if mode == Mode::Preview || a.decision == RiskDecision::Deny {
            return Ok(a.into_model());
        }
        let counted = record_payment_checked(ctx.repo, &m.config, &ei, ctx.now_ms, &loaded);
        if counted.await?.is_some() {
            return Ok(a.into_model());
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// How often a recorded assessment decides again because another payment of the same
/// payer was counted between its read and its write.
pub const ASSESS_ROUNDS_MAX: u32 = 64;

/// Counts an accepted refund of `payment_id` for the pay-then-refund rule (and files the
/// AML report it calls for). A failed refund, or a payment without a payer id, counts
/// nothing. Idempotent per refund id.
pub async fn record_refund_of<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    refund_id: &str,
) -> Result<Vec<AmlReport>, ApiError> {
    let missing = |resource, id: &str| ApiError::ResourceMissing {
        resource,
        id: id.chars().take(crate::ids::ID_LEN_MAX).collect(),
    };
    if !is_valid_id(IdKind::Payment, payment_id) {
        return Err(missing("payment", payment_id));
    }
    if !is_valid_id(IdKind::Refund, refund_id) {
        return Err(missing("refund", refund_id));
    }
    let got = ctx
        .repo
        .get_many(&[keys::payment(payment_id), keys::refund(refund_id)])
        .await?;
    let payment: Payment =
        decode_owned(got[0].as_ref(), merchant_id).ok_or_else(|| missing("payment", payment_id))?;
    let refund: Refund = decode_owned(got[1].as_ref(), merchant_id)
        .filter(|r: &Refund| r.payment_id == payment.id)
        .ok_or_else(|| missing("refund", refund_id))?;
    let counted = match refund.state.status {
        RefundStatus::Pending | RefundStatus::Succeeded => true,
        RefundStatus::Failed => false,
    };
    let Some(payer_id) = payment.payer.as_ref().and_then(|p| p.id.as_deref()) else {
        return Ok(Vec::new());
    };
    if !counted {
        return Ok(Vec::new());
    }
    let m = load_merchant(ctx, rng, merchant_id, None).await?;
    let facts = RefundFacts {
        merchant_id: merchant_id.to_string(),
        refund_id: refund.id.clone(),
        paid_at_ms: payment.created_at_ms,
        payer_hash: hash_identifier(m.salt.expose(), "payer", payer_id),
    };
    Ok(record_refund(ctx.repo, &m.config, &facts, ctx.now_ms).await?)
}

/// Something owned by a merchant (payments and refunds carry `merchant_id`).
trait Owned {
    fn owner(&self) -> &str;
}
impl Owned for Payment {
    fn owner(&self) -> &str {
        &self.merchant_id
    }
}
impl Owned for Refund {
    fn owner(&self) -> &str {
        &self.merchant_id
    }
}

fn decode_owned<T: serde::de::DeserializeOwned + Owned>(
    v: Option<&Versioned>,
    merchant_id: &str,
) -> Option<T> {
    let t: T = serde_json::from_slice(&v?.value).ok()?;
    (t.owner() == merchant_id).then_some(t)
}

/// Parses a report day `yyyy-mm-dd` (a real calendar date); the error names `day`.
pub fn parse_day(text: &str) -> Result<String, ApiError> {
    let bad = || invalid("day", "must be a date yyyy-mm-dd, e.g. 2026-11-25");
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
        return Err(bad());
    }
    if !digits(8..10) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if y == 0 || d == 0 || d > days {
        return Err(bad());
    }
    Ok(text.to_string())
}

/// A merchant-day's AML reports (one read: the day record is the per-merchant per-day
/// index).
pub async fn aml_reports<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    day: &str,
) -> Result<Vec<AmlReport>, ApiError> {
    let day = parse_day(day)?;
    Ok(day_reports(ctx.repo, merchant_id, &day).await?)
}

/// The MAC spinpay's components put on internal calls (`INTERNAL_MAC_HEADER`):
/// HMAC-SHA256 under the shared encryption key over the path, the merchant the caller
/// authenticated (`INTERNAL_MERCHANT_HEADER`) and the body, so a public caller (who never
/// holds the key) cannot reach an internal endpoint, and a MAC made for one path,
/// merchant or body is worth nothing for another. The callee trusts the merchant id it
/// covers instead of authenticating the merchant's key a second time.
pub fn internal_mac(
    keys: &crate::crypto::Keyring,
    path: &str,
    merchant_id: &str,
    body: &[u8],
) -> String {
    let mut data = Vec::with_capacity(40 + path.len() + merchant_id.len() + body.len());
    data.extend_from_slice(b"spinpay/internal/v2\n");
    data.extend_from_slice(path.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(merchant_id.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(body);
    keys.keyed_hash_hex(&data)
}

/// Checks an internal call's MAC in constant time.
pub fn verify_internal_mac(
    keys: &crate::crypto::Keyring,
    path: &str,
    merchant_id: &str,
    body: &[u8],
    given: Option<&str>,
) -> bool {
    given.is_some_and(|g| {
        constant_time_eq(
            g.as_bytes(),
            internal_mac(keys, path, merchant_id, body).as_bytes(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;

    #[test]
    fn report_days_must_be_real_dates() {
        // Proves the day parameter accepts calendar dates only and names `day`.
        assert!(parse_day("2026-11-25").is_ok());
        assert!(parse_day("2024-02-29").is_ok());
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "20261125",
            "2026-11-2x",
            "",
        ] {
            assert_eq!(parse_day(bad).unwrap_err().param(), Some("day"), "{bad}");
        }
    }

    #[test]
    fn an_internal_mac_binds_the_key_path_merchant_and_body() {
        // Proves only the same key, path, merchant and body verify.
        let k = Keyring::new(1, [7; 32]);
        let path = "/v1/risk/internal/assess";
        let mac = internal_mac(&k, path, "mch_a", b"{}");
        assert!(verify_internal_mac(&k, path, "mch_a", b"{}", Some(&mac)));
        assert!(!verify_internal_mac(&k, path, "mch_a", b"{ }", Some(&mac)));
        assert!(!verify_internal_mac(&k, path, "mch_b", b"{}", Some(&mac)));
        assert!(!verify_internal_mac(
            &k,
            "/v1/risk/assessments",
            "mch_a",
            b"{}",
            Some(&mac)
        ));
        assert!(!verify_internal_mac(&k, path, "mch_a", b"{}", None));
        let other = Keyring::new(1, [8; 32]);
        assert!(!verify_internal_mac(
            &other,
            path,
            "mch_a",
            b"{}",
            Some(&mac)
        ));
    }
}
