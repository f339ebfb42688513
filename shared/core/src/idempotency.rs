//! Idempotency records: `(merchant, Idempotency-Key)` → the request's fingerprint and,
//! once finished, the response to replay. Pure decision logic; the service stores them.
//!
//! * same key, same fingerprint, completed → replay the stored status and body;
//! * same key, other fingerprint → 409 `idempotency_key_reused`;
//! * same key, first request still running → 409 `idempotency_key_in_use` (unless its
//!   lock is older than [`IDEMPOTENCY_LOCK_TTL_MS`]: the worker died, take over);
//! * older than [`IDEMPOTENCY_RETENTION_MS`] (24 h) → as if new.

use serde::{Deserialize, Serialize};

use crate::crypto::sha256_hex;
use crate::error::ApiError;

/// How long a completed response is replayed.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// After this, an in-progress record is considered abandoned (a crashed worker).
/// Longer than any request's deadline, so a live request is never taken over.
pub const IDEMPOTENCY_LOCK_TTL_MS: i64 = 60 * 1000;
/// Longest Idempotency-Key, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

const _: () = assert!(IDEMPOTENCY_LOCK_TTL_MS < IDEMPOTENCY_RETENTION_MS);

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
}

/// The stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// sha256 hex of method, path and body.
    pub fingerprint: String,
    /// Progress.
    pub state: IdempotencyState,
    /// When the key was first used (or last taken over).
    pub created_at_ms: i64,
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

/// The request fingerprint: sha256 of method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut data = Vec::with_capacity(method.len() + path.len() + body.len() + 2);
    data.extend_from_slice(method.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(path.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(body);
    sha256_hex(&data)
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

/// Decides what to do given the stored record (if any).
pub fn decide(
    existing: Option<&IdempotencyRecord>,
    fingerprint: &str,
    now_ms: i64,
) -> IdempotencyDecision {
    let Some(record) = existing else {
        return IdempotencyDecision::New;
    };
    let age_ms = now_ms.saturating_sub(record.created_at_ms);
    if age_ms > IDEMPOTENCY_RETENTION_MS {
        return IdempotencyDecision::New;
    }
    if record.fingerprint != fingerprint {
        return IdempotencyDecision::Reused;
    }
    match &record.state {
        IdempotencyState::Completed { status, body } => IdempotencyDecision::Replay {
            status: *status,
            body: body.clone(),
        },
        IdempotencyState::InProgress if age_ms > IDEMPOTENCY_LOCK_TTL_MS => {
            IdempotencyDecision::New
        }
        IdempotencyState::InProgress => IdempotencyDecision::InProgress,
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
        }
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
    fn fingerprints_cover_method_path_and_body() {
        // Proves changing any part changes the fingerprint.
        let base = fingerprint("POST", "/v1/payments", b"{}");
        assert_ne!(base, fingerprint("POST", "/v1/payments", b"{ }"));
        assert_ne!(base, fingerprint("POST", "/v1/payment", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/v1/payments", b"{}"));
        assert!(validate_key("k-1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("é").is_err());
    }
}
