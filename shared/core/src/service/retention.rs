//! Deleting expired idempotency records, so the 24 h retention bounds what is stored.
//!
//! A record answers replays for [`crate::idempotency::IDEMPOTENCY_RETENTION_MS`] after its claim; then it is
//! dead weight (about a response body per keyed request). The store cannot list keys by
//! age, so:
//!
//! - **Schedule.** Every claim first appends a slot `{key hash, claim time}` to the
//!   merchant's expiry queue (`mch/{m}/exp/…`) and makes sure the sweep visits the
//!   merchant. The slot is written *before* the claim, so a crash can leave a slot
//!   without a record (harmless) but never a record that no slot names.
//! - **Expire.** The notification sweep walks each merchant's queue from its head. A slot
//!   younger than the retention stops the walk (slots are in claim order). Otherwise:
//!   - the record is absent, or was claimed again since (a later claim time: that claim
//!     has its own slot) → the slot is done;
//!   - else the sweep **condemns** the record with a compare-and-swap (state
//!     [`IdempotencyState::Expiring`], time now) and then deletes it. Meanwhile a claim
//!     of the key sees `Expiring` and gets 409 `idempotency_key_in_use`, so the delete
//!     can never remove a newer claim — provided the sweep's request ends within
//!     [`IDEMPOTENCY_LOCK_TTL_MS`] (request deadlines are far shorter; abandoned locks
//!     rest on the same bound). A record whose sweep died after condemning it is
//!     condemned afresh by the next sweep, or claimed once the lock TTL passed.
//!
//! Expiry runs on the wall clock, never on a sweep's forwarded schedule clock: deleting
//! a record early would let a retry inside the 24 h run a second time.

use super::outbox::{self, Queue, Slot, SlotState};
use super::{Ctx, read, to_bytes};
use crate::error::ApiError;
use crate::idempotency::{
    IDEMPOTENCY_LOCK_TTL_MS, IdempotencyRecord, IdempotencyState, past_retention,
};
use crate::keys;
use crate::repo::{RepoError, Repository};

/// Most due expiry slots one sweep call handles, whether the record a slot names is
/// deleted or already gone (it answers `has_more` when it stopped there): slots left by
/// refused keyed requests name no record, and a backlog of them must not hold a sweep
/// past its deadline.
pub const EXPIRY_SWEEP_MAX: u32 = 500;

/// Schedules the deletion of the record a claim of `key_hash` is about to write at
/// `ctx.now_ms` (call before the claim's compare-and-swap).
pub(crate) async fn schedule<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    key_hash: &str,
) -> Result<(), ApiError> {
    outbox::ensure_registered(ctx, merchant_id).await?;
    outbox::enqueue_id(ctx, &Queue::expiries(merchant_id), key_hash).await
}

/// What one merchant's expiry walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Expired {
    /// Records deleted.
    pub deleted: u32,
    /// Due slots handled (each costs the budget, whether it deleted a record or not).
    pub visited: u32,
    /// The budget stopped the walk before a slot that was due.
    pub budget_reached: bool,
}

/// Deletes `merchant_id`'s idempotency records whose retention has passed, handling at
/// most `budget` due slots. `ctx.now_ms` must be the wall clock.
pub(crate) async fn expire_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    budget: u32,
) -> Result<Expired, ApiError> {
    walk_expiry_queue(
        ctx,
        &Queue::expiries(merchant_id),
        budget,
        |at_ms| past_retention(at_ms, ctx.now_ms),
        async |slot: &Slot| expire_record(ctx, merchant_id, &slot.id).await,
    )
    .await
}

/// Walks an expiry queue from its head, window after window: a slot not `due` yet (by
/// its time) stops the walk, since slots are in claim order; each due slot is handed to
/// `expire`, which deletes what it names if that is still the expired thing and says
/// whether the slot is finished and whether it deleted something. At most `budget` due
/// slots are handed over (deleting or not: a slot whose record is gone costs a read and
/// a delete too); the head passes the finished slots, which are then deleted.
pub(crate) async fn walk_expiry_queue<R: Repository>(
    ctx: &Ctx<'_, R>,
    queue: &Queue,
    budget: u32,
    due: impl Fn(i64) -> bool,
    mut expire: impl AsyncFnMut(&Slot) -> Result<(SlotState, bool), ApiError>,
) -> Result<Expired, ApiError> {
    let mut done = Expired::default();
    // Window after window while the head passes every slot of a full one.
    loop {
        let (head, version, slots) = outbox::queue_window(ctx.repo, queue).await?;
        let window = slots.len();
        let mut judged = Vec::with_capacity(window);
        // Once the head cannot pass a written slot, the slots behind it wait too.
        let mut blocked = false;
        for (seq, slot) in slots {
            let state = match &slot {
                None => SlotState::Wait,
                Some(_) if blocked => SlotState::Wait,
                // A tombstone (its writer looked dead to a sweep).
                Some(s) if s.id.is_empty() => SlotState::Done,
                Some(s) if !due(s.at_ms) => SlotState::Wait,
                Some(_) if done.visited >= budget => {
                    done.budget_reached = true;
                    SlotState::Wait
                }
                Some(s) => {
                    done.visited += 1;
                    let (state, deleted) = expire(s).await?;
                    done.deleted += u32::from(deleted);
                    state
                }
            };
            blocked |= slot.is_some() && state == SlotState::Wait;
            judged.push((seq, slot, state));
        }
        let passed = outbox::advance_head(ctx, queue, head, version, &judged).await?;
        let whole_window_passed = passed.len() == window;
        for seq in passed {
            // Best effort: a slot left behind the head is never read again.
            let _ = ctx.repo.delete(&queue.slot(seq)).await;
        }
        if window < outbox::QUEUE_WINDOW_MAX as usize || !whole_window_passed {
            return Ok(done);
        }
    }
}

/// Condemns and deletes one slot's record if it is still the expired one; says whether
/// the slot is finished and whether a record was deleted.
async fn expire_record<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    key_hash: &str,
) -> Result<(SlotState, bool), ApiError> {
    let key = keys::idempotency(merchant_id, key_hash);
    let Some((record, version)) = read::<IdempotencyRecord, R>(ctx.repo, &key).await? else {
        return Ok((SlotState::Done, false));
    };
    let age_ms = ctx.now_ms.saturating_sub(record.created_at_ms);
    match record.state {
        // Condemned by a sweep that may still be deleting it: leave it to that sweep.
        IdempotencyState::Expiring if age_ms <= IDEMPOTENCY_LOCK_TTL_MS => {
            return Ok((SlotState::Wait, false));
        }
        // Condemned by a sweep that died: condemn it again.
        IdempotencyState::Expiring => {}
        // Claimed again after this slot's claim: the later slot covers it.
        _ if !past_retention(record.created_at_ms, ctx.now_ms) => {
            return Ok((SlotState::Done, false));
        }
        _ => {}
    }
    let condemned = IdempotencyRecord {
        state: IdempotencyState::Expiring,
        created_at_ms: ctx.now_ms,
        ..record
    };
    match ctx
        .repo
        .put_if_version(&key, version, to_bytes(&condemned))
        .await
    {
        Ok(_) => {}
        // Claimed (or condemned) meanwhile, or unknown whether ours landed: look again
        // at the next sweep.
        Err(RepoError::Conflict { .. } | RepoError::OutcomeUnknown { .. }) => {
            return Ok((SlotState::Wait, false));
        }
        Err(e) => return Err(e.into()),
    }
    ctx.repo.delete(&key).await?;
    Ok((SlotState::Done, true))
}
