//! The Idempotency-Key protocol around a POST handler:
//!
//! ```text
//! match idempotency_begin(ctx, merchant_id, key_header, "POST", path, body).await? {
//!     Started::Replay(reply) => reply,                         // same key, same body
//!     Started::Run(ticket) => {
//!         let (reply, outcome) = reply_for(service_call().await, 201);
//!         idempotency_finish(ctx, ticket, &reply, outcome).await?;
//!         reply
//!     }
//! }
//! ```
//! The in-progress record is claimed with compare-and-swap, so two concurrent requests
//! with one key cannot both run: the second gets `idempotency_key_in_use`. Results that
//! a retry should re-run (5xx, contention, unavailable dependencies) are not stored: the
//! lock is released but the claim kept ([`KeyOutcome::Release`]), so the retry resumes
//! whatever the failed attempt did, exactly as after a crash.
//! Every claim schedules its record's deletion once the retention has passed
//! (`super::retention`).

use serde::Serialize;

use super::{Ctx, read, retention, to_bytes};
use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::idempotency::{
    IDEMPOTENCY_LOCK_TTL_MS, IdempotencyDecision, IdempotencyRecord, IdempotencyState, decide,
    fingerprint, first_claim_for, operation_seed, raw_fingerprint, validate_key,
};
use crate::keys;
use crate::repo::{RepoError, Repository};

/// An HTTP answer as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// Proof that this request holds its key's in-progress record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyTicket {
    key: String,
    version: u64,
    record: IdempotencyRecord,
    seed: [u8; 16],
    resumes: bool,
}

impl IdempotencyTicket {
    /// The seed of the ids this operation creates: the same for a retry that takes over
    /// a crashed attempt's abandoned lock, so it finds (and resumes) that attempt's
    /// objects instead of creating second ones. See [`operation_seed`].
    pub fn operation_seed(&self) -> [u8; 16] {
        self.seed
    }

    /// Whether this request took over the lock of an earlier attempt that never
    /// finished (it crashed, or was cut off, after the lock TTL) or failed retryably
    /// ([`KeyOutcome::Release`]): that attempt may have done part or all of the work, so
    /// the operation resumes it rather than starting from scratch.
    pub fn resumes(&self) -> bool {
        self.resumes
    }

    /// The seed and the takeover flag together.
    pub fn keyed_run(&self) -> KeyedRun {
        KeyedRun {
            seed: self.operation_seed(),
            resumes: self.resumes(),
        }
    }
}

/// What a keyed operation is told about its key: [`IdempotencyTicket::operation_seed`]
/// and [`IdempotencyTicket::resumes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRun {
    /// The seed of the ids the operation creates.
    pub seed: [u8; 16],
    /// Whether it takes over a crashed attempt.
    pub resumes: bool,
}

/// The outcome of [`idempotency_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Run the handler (`None`: the request had no Idempotency-Key).
    Run(Option<IdempotencyTicket>),
    /// Answer with this stored reply.
    Replay(Reply),
}

/// Starts a keyed request (see the module docs).
pub async fn idempotency_begin<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    idempotency_key: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Started, ApiError> {
    let Some(raw_key) = idempotency_key else {
        return Ok(Started::Run(None));
    };
    validate_key(raw_key)?;
    let key_hash = sha256_hex(raw_key.as_bytes());
    let key = keys::idempotency(merchant_id, &key_hash);
    let existing = read::<IdempotencyRecord, R>(ctx.repo, &key).await?;
    let fp = match &existing {
        // Stored before fingerprints read bodies: the same bytes are the same request.
        Some((r, _)) if r.fingerprint == raw_fingerprint(method, path, body) => {
            r.fingerprint.clone()
        }
        _ => fingerprint(ctx.keys, method, path, body),
    };
    let storage_version = existing.as_ref().map_or(0, |(_, v)| *v);
    match decide(existing.as_ref().map(|(r, _)| r), &fp, ctx.now_ms) {
        IdempotencyDecision::Replay { status, body } => {
            return Ok(Started::Replay(Reply { status, body }));
        }
        IdempotencyDecision::Reused => return Err(ApiError::IdempotencyKeyReused),
        IdempotencyDecision::InProgress => return Err(ApiError::IdempotencyKeyInUse),
        IdempotencyDecision::New => {}
    }
    let first_claimed = first_claim_for(existing.as_ref().map(|(r, _)| r), ctx.now_ms);
    // The claim of an earlier attempt, taken over (it crashed, or failed retryably).
    let resumes = existing.is_some_and(|(r, _)| r.first_claimed_at_ms() == first_claimed);
    retention::schedule(ctx, merchant_id, &key_hash).await?;
    let record = IdempotencyRecord {
        fingerprint: fp,
        state: IdempotencyState::InProgress,
        created_at_ms: ctx.now_ms,
        first_claimed_at_ms: Some(first_claimed),
    };
    match ctx
        .repo
        .put_if_version(&key, storage_version, to_bytes(&record))
        .await
    {
        Ok(version) => Ok(Started::Run(Some(IdempotencyTicket {
            seed: operation_seed(&key, first_claimed),
            key,
            version,
            record,
            resumes,
        }))),
        // Someone claimed the key between our read and write.
        Err(RepoError::Conflict { .. }) => Err(ApiError::IdempotencyKeyInUse),
        Err(e) => Err(e.into()),
    }
}

/// What a finished request leaves of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The reply is stored and replayed.
    Store,
    /// The key is freed: the request never ran (refused as malformed, or the app lacks
    /// its configuration), so a corrected request may use it. A request that resumes an
    /// earlier attempt keeps the claim instead, as [`KeyOutcome::Release`] does: that
    /// attempt may have done its work, and a freed key would give the next retry a new
    /// operation seed (a second payment).
    Free,
    /// The request failed in a way a retry should re-run (5xx, contention) after it may
    /// have done part of its work (stored a payment, asked the channel). The lock is
    /// released at once but the claim kept: the same request retried takes it over with
    /// the same operation seed and resumes that work, as after a crash, instead of
    /// creating a second payment; another request with the key is refused as reused.
    Release,
}

/// Finishes a keyed request as `outcome` says.
pub async fn idempotency_finish<R: Repository>(
    ctx: &Ctx<'_, R>,
    ticket: Option<IdempotencyTicket>,
    reply: &Reply,
    outcome: KeyOutcome,
) -> Result<(), ApiError> {
    let Some(t) = ticket else {
        return Ok(());
    };
    let record = match outcome {
        KeyOutcome::Free if !t.resumes => {
            ctx.repo.delete(&t.key).await?;
            return Ok(());
        }
        KeyOutcome::Free | KeyOutcome::Release => IdempotencyRecord {
            // A lock older than any request, by another lifetime (room for the clock of
            // the instance the retry reaches): the next claim takes it over.
            created_at_ms: ctx.now_ms.saturating_sub(2 * IDEMPOTENCY_LOCK_TTL_MS),
            first_claimed_at_ms: Some(t.record.first_claimed_at_ms()),
            ..t.record
        },
        KeyOutcome::Store => IdempotencyRecord {
            state: IdempotencyState::Completed {
                status: reply.status,
                body: reply.body.clone(),
            },
            ..t.record
        },
    };
    match ctx
        .repo
        .put_if_version(&t.key, t.version, to_bytes(&record))
        .await
    {
        // Taken over after the lock TTL: the other request's result stands.
        Ok(_) | Err(RepoError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Turns a service result into a reply: `ok_status` with the JSON body, or the error's
/// status and JSON; and what becomes of the key: an error a retry should re-run
/// ([`ApiError::is_retryable`]) releases it, one that leaves the key unused
/// ([`ApiError::leaves_key_unused`]) frees it, anything else is stored.
pub fn reply_for<T: Serialize>(
    result: &Result<T, ApiError>,
    ok_status: u16,
) -> (Reply, KeyOutcome) {
    match result {
        Ok(value) => (
            Reply {
                status: ok_status,
                body: serde_json::to_string(value).expect("responses serialize"),
            },
            KeyOutcome::Store,
        ),
        Err(e) => {
            let outcome = if e.is_retryable() {
                KeyOutcome::Release
            } else if e.leaves_key_unused() {
                KeyOutcome::Free
            } else {
                KeyOutcome::Store
            };
            let reply = Reply {
                status: e.status(),
                body: e.to_json().to_string(),
            };
            (reply, outcome)
        }
    }
}
