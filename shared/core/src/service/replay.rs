//! Replay keys of channel notifications, and their deletion once they are old.
//!
//! The webhook claims a notification's replay key (`replay/{channel}/{sha256 hex}`) after
//! applying it, and acknowledges a message whose key is claimed without applying it again.
//! A key is only a second line of defence (applying a notification is idempotent) and a
//! channel stops redelivering long before [`REPLAY_KEY_RETENTION_MS`], so after that the
//! key is deleted, the way `service::retention` deletes idempotency records:
//!
//! - **Schedule.** A claim first appends a slot `{replay key, claim time}` to the
//!   channel's expiry queue (`replay/{channel}/exp/…`), so a crash can leave a slot without
//!   a key (harmless) but never a key that no slot names.
//! - **Expire.** The notification sweep walks each channel's queue from its head and
//!   deletes the key of every slot past the retention, unless the key was claimed again
//!   after the slot's claim (deleted and re-claimed: the newer claim has its own slot).
//!   No condemn step is needed, unlike idempotency records: a claim racing the delete at
//!   worst loses its key early, which lets one late duplicate be applied again —
//!   harmlessly, since applying is idempotent.
//!
//! Expiry runs on the wall clock, like the idempotency sweep.

use serde::{Deserialize, Serialize};

use super::outbox::{self, Queue, Slot, SlotState};
use super::retention::{Expired, walk_expiry_queue};
use super::{Ctx, insert, read};
use crate::error::ApiError;
use crate::model::Channel;
use crate::repo::Repository;

/// How long a claimed replay key is kept: a week, far beyond the channels' redelivery
/// schedules (Alipay's last retry comes about 25 h after the first notification).
pub const REPLAY_KEY_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A claimed replay key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ReplayClaim {
    claimed_at_ms: i64,
}

/// True if a message with `replay_key` was applied (and its key not yet expired).
pub async fn replay_key_claimed<R: Repository>(
    ctx: &Ctx<'_, R>,
    replay_key: &str,
) -> Result<bool, ApiError> {
    Ok(ctx.repo.get(replay_key).await?.is_some())
}

/// Claims `replay_key` of a `channel` message after the message was applied, scheduling
/// its deletion first (create-if-absent: a concurrent duplicate that claimed it first is
/// fine, both applications were idempotent).
pub async fn claim_replay_key<R: Repository>(
    ctx: &Ctx<'_, R>,
    channel: Channel,
    replay_key: &str,
) -> Result<(), ApiError> {
    outbox::enqueue_id(ctx, &Queue::replay_expiries(channel.as_str()), replay_key).await?;
    let claim = ReplayClaim {
        claimed_at_ms: ctx.now_ms,
    };
    // Held by another claim already (`false`): fine.
    insert(ctx.repo, replay_key, &claim).await?;
    Ok(())
}

/// Deletes `channel`'s replay keys whose retention has passed, at most `budget` of them.
/// `ctx.now_ms` must be the wall clock.
pub(crate) async fn expire_channel<R: Repository>(
    ctx: &Ctx<'_, R>,
    channel: Channel,
    budget: u32,
) -> Result<Expired, ApiError> {
    walk_expiry_queue(
        ctx,
        &Queue::replay_expiries(channel.as_str()),
        budget,
        |at_ms| past_retention(at_ms, ctx.now_ms),
        async |slot: &Slot| expire_key(ctx, slot).await,
    )
    .await
}

/// True once a key claimed at `claimed_at_ms` is past its retention at `now_ms`.
fn past_retention(claimed_at_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(claimed_at_ms) > REPLAY_KEY_RETENTION_MS
}

/// Deletes the key a due slot names unless it was claimed again after the slot.
async fn expire_key<R: Repository>(
    ctx: &Ctx<'_, R>,
    slot: &Slot,
) -> Result<(SlotState, bool), ApiError> {
    let Some((claim, _)) = read::<ReplayClaim, R>(ctx.repo, &slot.id).await? else {
        return Ok((SlotState::Done, false));
    };
    if !past_retention(claim.claimed_at_ms, ctx.now_ms) {
        // Claimed again since: the later slot covers it.
        return Ok((SlotState::Done, false));
    }
    ctx.repo.delete(&slot.id).await?;
    Ok((SlotState::Done, true))
}
