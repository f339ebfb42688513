//! Idempotency records: `(merchant, Idempotency-Key)` → the request's fingerprint and,
//! once finished, the response to replay. Pure decision logic; the service stores them.
//!
//! * same key, same fingerprint, completed → replay the stored status and body;
//! * same key, other fingerprint → 409 `idempotency_key_reused`;
//! * same key, first request still running → 409 `idempotency_key_in_use` (unless its
//!   lock is older than [`IDEMPOTENCY_LOCK_TTL_MS`]: the worker died, take over);
//! * older than [`IDEMPOTENCY_RETENTION_MS`] (24 h) → as if new;
//! * being deleted by the sweep ([`IdempotencyState::Expiring`]) → 409
//!   `idempotency_key_in_use` until the deletion lands (or, if the sweep died, for
//!   [`IDEMPOTENCY_LOCK_TTL_MS`]), then as if new.
//!
//! Expired records are deleted, not only ignored: `service::retention` explains how the
//! notification sweep finds them without scanning the store.

use serde::{Deserialize, Serialize};

use crate::crypto::{Keyring, sha256_hex};
use crate::error::ApiError;

/// How long a completed response is replayed.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// After this, an in-progress record is considered abandoned (a crashed worker).
/// Longer than any request's deadline, so a live request is never taken over.
pub const IDEMPOTENCY_LOCK_TTL_MS: i64 = 60 * 1000;
/// Idempotency scope of admin calls (merchant onboarding, the notification sweep): not a
/// merchant id (those start with `mch_`), so never one merchant's keys. The sweep expires
/// its records like a merchant's but does not count it among the merchants it visited.
pub const ADMIN_SCOPE: &str = "admin";
/// Longest Idempotency-Key, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

const _: () = assert!(IDEMPOTENCY_LOCK_TTL_MS < IDEMPOTENCY_RETENTION_MS);

/// Whether something last touched at `since_ms` is older, at `now_ms`, than any request
/// can run ([`IDEMPOTENCY_LOCK_TTL_MS`]): the request that was working on it has ended,
/// finished or dead, so what it left is what it will ever leave.
pub fn outlived_any_request(since_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(since_ms) > IDEMPOTENCY_LOCK_TTL_MS
}

/// Where a keyed request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IdempotencyState {
    /// The first request is running.
    InProgress,
    /// Finished: replay this.
    Completed {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Expired, and condemned by the sweep, which deletes it next (`created_at_ms` is
    /// then when it was condemned). Claims wait while the sweep may still delete, so the
    /// deletion can never remove a newer claim.
    Expiring,
}

/// The stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The request's fingerprint ([`fingerprint`]; the unkeyed [`raw_fingerprint`] in
    /// records written before it).
    pub fingerprint: String,
    /// Progress.
    pub state: IdempotencyState,
    /// When the key was first used (or last taken over): the lock's age. A released lock
    /// (a retryable failure) is dated in the past, so the next claim takes it over.
    pub created_at_ms: i64,
    /// When the key was first claimed; kept when an abandoned lock is taken over, so the
    /// retry derives the same [`operation_seed`] and resumes the crashed attempt's work
    /// instead of starting a second one. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_claimed_at_ms: Option<i64>,
}

impl IdempotencyRecord {
    /// When the key was first claimed.
    pub fn first_claimed_at_ms(&self) -> i64 {
        self.first_claimed_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// The seed of the ids a keyed operation creates (payment id, refund id): the same for
/// every attempt under one claim of the key — a retry after a crash (lock taken over)
/// gets the ids of the attempt it replaces — and different once the key expired and is
/// claimed afresh. `storage_key` already names the merchant and the key's hash.
pub fn operation_seed(storage_key: &str, first_claimed_at_ms: i64) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"spinpay idempotent operation\n");
    h.update(storage_key.as_bytes());
    h.update(b"\n");
    h.update(first_claimed_at_ms.to_be_bytes());
    let digest = h.finalize();
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&digest[..16]);
    seed
}

/// When a request claiming the key now first claimed it: an abandoned in-progress
/// record within retention is the same claim (a takeover); anything else starts anew.
pub fn first_claim_for(existing: Option<&IdempotencyRecord>, now_ms: i64) -> i64 {
    match existing {
        Some(r)
            if r.state == IdempotencyState::InProgress
                && !past_retention(r.created_at_ms, now_ms) =>
        {
            r.first_claimed_at_ms()
        }
        Some(_) | None => now_ms,
    }
}

/// What to do with a keyed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyDecision {
    /// Run it (no record, or an expired/abandoned one).
    New,
    /// Answer with the stored response.
    Replay {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Refuse: the key was used for another request.
    Reused,
    /// Refuse: the first request is still running.
    InProgress,
}

/// The request fingerprint: an HMAC under the encryption key (so a stored fingerprint
/// gives nothing away of a guessable body, such as one whose only secret is a phone
/// number) of method, path and the body as the API reads it. Bodies the API takes as the
/// same request give the same fingerprint: an empty body and `{}`, a `null` member and no
/// member, members in any order, any whitespace (the API reads a body into one JSON
/// value, so a repeated member counts as its last one here too). A body that is not JSON
/// counts as its bytes.
pub fn fingerprint(keys: &Keyring, method: &str, path: &str, body: &[u8]) -> String {
    let mut data = FINGERPRINT_DOMAIN.to_vec();
    data.extend(request_bytes(method, path, &canonical_body(body)));
    keys.keyed_hash_hex(&data)
}

/// Separates fingerprints from the other keyed hashes made under the same key.
const FINGERPRINT_DOMAIN: &[u8] = b"spinpay idempotency fingerprint\n";

/// The unkeyed SHA-256 of the exact bytes: what records stored before [`fingerprint`]
/// hold (they are kept 24 h), so a retry of such a request still replays.
pub fn raw_fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    sha256_hex(&request_bytes(method, path, body))
}

fn request_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(method.len() + path.len() + body.len() + 2);
    data.extend_from_slice(method.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(path.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(body);
    data
}

/// The body as the API reads it, written out with sorted members and no `null` members.
fn canonical_body(body: &[u8]) -> Vec<u8> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return b"{}".to_vec();
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    drop_nulls(&mut value);
    // serde_json's maps are sorted by key (its `preserve_order` feature is off).
    serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Checks the header: 1–255 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_LEN_MAX
        && key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::IdempotencyKeyInvalid {
            reason: "not 1-255 printable ASCII characters".into(),
        })
    }
}

/// True once a record written at `created_at_ms` is past its retention: it is no longer
/// replayed, and the sweep may delete it.
pub fn past_retention(created_at_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(created_at_ms) > IDEMPOTENCY_RETENTION_MS
}

/// Decides what to do given the stored record (if any).
pub fn decide(
    existing: Option<&IdempotencyRecord>,
    fingerprint: &str,
    now_ms: i64,
) -> IdempotencyDecision {
    let Some(record) = existing else {
        return IdempotencyDecision::New;
    };
    if past_retention(record.created_at_ms, now_ms) {
        return IdempotencyDecision::New;
    }
    let lock = if outlived_any_request(record.created_at_ms, now_ms) {
        IdempotencyDecision::New
    } else {
        IdempotencyDecision::InProgress
    };
    match (&record.state, record.fingerprint == fingerprint) {
        // Being deleted: whatever the body, the old request is gone and the key is
        // being freed. Running: the same request waits (or takes over a dead lock).
        (IdempotencyState::Expiring, _) | (IdempotencyState::InProgress, true) => lock,
        (_, false) => IdempotencyDecision::Reused,
        (IdempotencyState::Completed { status, body }, true) => IdempotencyDecision::Replay {
            status: *status,
            body: body.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fp: &str, state: IdempotencyState, at: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: fp.into(),
            state,
            created_at_ms: at,
            first_claimed_at_ms: None,
        }
    }

    #[test]
    fn a_takeover_keeps_the_operation_seed_and_a_fresh_claim_changes_it() {
        // Proves a retry taking over an abandoned lock derives the crashed attempt's seed
        // (same ids), while a claim after expiry or a completed record starts a new one.
        let key = "mch/m/idem/abc";
        let first = 1_000;
        let mut locked = rec("a", IdempotencyState::InProgress, first);
        let takeover_at = first + IDEMPOTENCY_LOCK_TTL_MS + 1;
        assert_eq!(first_claim_for(Some(&locked), takeover_at), first);
        // The takeover writes a new lock time but keeps the first claim.
        locked.created_at_ms = takeover_at;
        locked.first_claimed_at_ms = Some(first);
        let again = takeover_at + IDEMPOTENCY_LOCK_TTL_MS + 1;
        assert_eq!(first_claim_for(Some(&locked), again), first);
        assert_eq!(
            operation_seed(key, first_claim_for(Some(&locked), again)),
            operation_seed(key, first)
        );
        let expired = first + IDEMPOTENCY_RETENTION_MS + 10;
        let stale = rec("a", IdempotencyState::InProgress, first);
        assert_eq!(first_claim_for(Some(&stale), expired), expired);
        assert_eq!(first_claim_for(None, 5), 5);
        assert_ne!(operation_seed(key, first), operation_seed(key, expired));
        assert_ne!(
            operation_seed(key, first),
            operation_seed("mch/n/idem/abc", first)
        );
    }

    #[test]
    fn same_key_same_body_replays_and_other_body_is_reused() {
        // Proves the four decisions for fresh records.
        let done = IdempotencyState::Completed {
            status: 201,
            body: "{}".into(),
        };
        let r = rec("a", done, 0);
        assert!(matches!(
            decide(Some(&r), "a", 10),
            IdempotencyDecision::Replay { status: 201, .. }
        ));
        assert_eq!(decide(Some(&r), "b", 10), IdempotencyDecision::Reused);
        let p = rec("a", IdempotencyState::InProgress, 0);
        assert_eq!(decide(Some(&p), "a", 10), IdempotencyDecision::InProgress);
        assert_eq!(decide(None, "a", 10), IdempotencyDecision::New);
    }

    #[test]
    fn records_expire_after_a_day_and_abandoned_locks_after_a_minute() {
        // Proves retention and lock takeover windows.
        let p = rec("a", IdempotencyState::InProgress, 0);
        assert_eq!(
            decide(Some(&p), "a", IDEMPOTENCY_LOCK_TTL_MS + 1),
            IdempotencyDecision::New
        );
        let r = rec(
            "a",
            IdempotencyState::Completed {
                status: 200,
                body: String::new(),
            },
            0,
        );
        assert_eq!(
            decide(Some(&r), "b", IDEMPOTENCY_RETENTION_MS + 1),
            IdempotencyDecision::New
        );
    }

    #[test]
    fn a_condemned_record_holds_its_key_for_a_lock_ttl_then_frees_it_for_any_body() {
        // Proves a claim never overwrites a record the sweep may still delete, and that
        // a sweep which died after condemning does not block the key for ever.
        let condemned_at = 5_000;
        let r = rec("a", IdempotencyState::Expiring, condemned_at);
        for fp in ["a", "b"] {
            assert_eq!(
                decide(Some(&r), fp, condemned_at + IDEMPOTENCY_LOCK_TTL_MS),
                IdempotencyDecision::InProgress
            );
            assert_eq!(
                decide(Some(&r), fp, condemned_at + IDEMPOTENCY_LOCK_TTL_MS + 1),
                IdempotencyDecision::New
            );
        }
        // A claim over it starts a new operation (a new seed), never a takeover.
        let later = condemned_at + IDEMPOTENCY_LOCK_TTL_MS + 1;
        assert_eq!(first_claim_for(Some(&r), later), later);
    }

    #[test]
    fn fingerprints_cover_method_path_and_what_the_body_says() {
        // Proves changing the method, the path or a value changes the fingerprint, while
        // bodies the API reads as the same request (empty and {}, null and absent,
        // another member order or spacing) share one; a body that is not JSON counts as
        // its bytes. It is keyed: another encryption key gives another fingerprint.
        let keys = crate::crypto::Keyring::new(1, [7; 32]);
        let base = fingerprint(&keys, "POST", "/v1/payments", b"{}");
        assert_ne!(base, fingerprint(&keys, "POST", "/v1/payment", b"{}"));
        assert_ne!(base, fingerprint(&keys, "PUT", "/v1/payments", b"{}"));
        for same in [&b""[..], b" ", b"{ }", b"{\"amount_minor\":null}"] {
            assert_eq!(
                base,
                fingerprint(&keys, "POST", "/v1/payments", same),
                "{same:?}"
            );
        }
        let one = fingerprint(&keys, "POST", "/p", br#"{"a":1,"b":{"c":"x","d":null}}"#);
        assert_eq!(
            one,
            fingerprint(&keys, "POST", "/p", br#"{ "b": {"c": "x"}, "a": 1 }"#)
        );
        assert_ne!(
            one,
            fingerprint(&keys, "POST", "/p", br#"{"a":2,"b":{"c":"x"}}"#)
        );
        assert_ne!(
            one,
            fingerprint(&keys, "POST", "/p", br#"{"a":1,"b":{"c":"y"}}"#)
        );
        assert_ne!(
            one,
            fingerprint(&keys, "POST", "/p", br#"{"a":1.0,"b":{"c":"x"}}"#)
        );
        assert_ne!(
            fingerprint(&keys, "POST", "/p", b"{not json"),
            fingerprint(&keys, "POST", "/p", b"{not  json")
        );
        assert_ne!(
            raw_fingerprint("POST", "/p", b"{ }"),
            raw_fingerprint("POST", "/p", b"{}")
        );
        assert_ne!(base, raw_fingerprint("POST", "/v1/payments", b"{}"));
        let other = crate::crypto::Keyring::new(1, [8; 32]);
        assert_ne!(base, fingerprint(&other, "POST", "/v1/payments", b"{}"));
        assert!(validate_key("k-1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("é").is_err());
    }
}
