//! Delivering events to the merchant's notify URL: signed POSTs, a retry schedule, a
//! due-delivery sweep a scheduler calls, redelivery on request, and webhook-secret
//! rotation.
//!
//! Each delivery is a record `dlv/{event_id}` ([`Delivery`]) plus a slot in the
//! merchant's delivery queue (`mch/{m}/dlv/{seq}`). The sweep walks the registry of
//! merchants round-robin and, per merchant, a window of its queue from the head: a slot
//! whose delivery is due is attempted, a delivered or abandoned one lets the head pass.
//! An attempt is claimed with a compare-and-swap that already moves `next_attempt_at_ms`
//! to the following retry time, so a sweep that dies mid-POST is retried on schedule and
//! two sweeps never send the same attempt. Receivers deduplicate by event id (a POST that
//! reached the merchant but whose answer was lost is sent again).

use serde::{Deserialize, Serialize};

use super::merchants::open_webhook_secret;
use super::outbox::{self, Slot, SlotState};
use super::replay;
use super::retention::{self, EXPIRY_SWEEP_MAX};
use super::{CAS_RETRIES_MAX, Ctx, insert, internal, read, to_bytes};
use crate::crypto::{constant_time_eq, seal, sign_header};
use crate::error::ApiError;
use crate::ids::{IdKind, is_valid_id, make_id};
use crate::keys;
use crate::model::{Channel, Merchant, StoredEvent};
use crate::repo::{RepoError, Repository};
use crate::rng::Entropy;

/// Pause before each retry after a failed attempt: 15 s, 1 min, 5 min, 15 min, 1 h,
/// 6 h, 24 h; after the last one the delivery is abandoned (`failed`).
pub const RETRY_DELAYS_MS: [i64; 7] = [
    15_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
];
/// Attempts per delivery round: the first plus one per retry delay.
pub const DELIVERY_ATTEMPTS_MAX: u32 = RETRY_DELAYS_MS.len() as u32 + 1;
/// How long a claimed final attempt is protected before a sweep may conclude it (the
/// POST timeout is far shorter).
pub const DELIVERY_LEASE_MS: i64 = 60_000;
/// Attempts one sweep makes when the caller does not say.
pub const SWEEP_LIMIT_DEFAULT: u32 = 20;
/// Most attempts one sweep makes.
pub const SWEEP_LIMIT_MAX: u32 = 100;
/// Most merchants one sweep visits.
pub const SWEEP_MERCHANTS_MAX: i64 = 100;
/// How long after its start a sweep still begins delivery attempts. One attempt may take
/// its whole POST deadline (5 s in the notify component) after that, so a sweep answers
/// within about 8 s, under the schedulers' client timeouts (10 s in the CronJob); and a
/// merchant endpoint that answers slowly or never delays the other merchants by one
/// sweep at most: the next sweep goes on from the merchant after it.
pub const SWEEP_ATTEMPTS_WINDOW_MS: i64 = 3_000;
/// Longest grace period of a rotated-out webhook secret (7 days).
pub const SECRET_GRACE_S_MAX: i64 = 7 * 24 * 3600;
/// Grace period of a rotated-out secret when the request does not say (24 h).
pub const SECRET_GRACE_S_DEFAULT: i64 = 24 * 3600;
/// Longest error text kept on a delivery.
pub const DELIVERY_ERROR_LEN_MAX: usize = 200;

const _: () = assert!(DELIVERY_LEASE_MS < RETRY_DELAYS_MS[RETRY_DELAYS_MS.len() - 1]);
const _: () = assert!(SWEEP_LIMIT_DEFAULT <= SWEEP_LIMIT_MAX);

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The merchant answered 2xx.
    Delivered,
    /// Every attempt failed; given up (redeliver starts a new round).
    Failed,
}

/// One event's delivery to its merchant (`dlv/{event_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event.
    pub event_id: String,
    /// Owner.
    pub merchant_id: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts in the current round (a redelivery starts a new round).
    pub attempts: u32,
    /// Attempts over every round.
    pub attempts_total: u32,
    /// When the next attempt is due (`None` once delivered or failed).
    pub next_attempt_at_ms: Option<i64>,
    /// The last attempt's time.
    pub last_attempt_at_ms: Option<i64>,
    /// The HTTP status the merchant last answered.
    pub last_response_status: Option<u16>,
    /// Why the last attempt failed (transport error or non-2xx).
    pub last_error: Option<String>,
    /// When a 2xx came back.
    pub delivered_at_ms: Option<i64>,
    /// Creation time.
    pub created_at_ms: i64,
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResponse {
    /// `"event_delivery"`.
    pub object: String,
    /// The event.
    pub event_id: String,
    /// `pending`, `delivered` or `failed`.
    pub status: DeliveryStatus,
    /// Attempts in the current round.
    pub attempts: u32,
    /// Attempts a round makes before giving up.
    pub attempts_max: u32,
    /// When the next attempt is due.
    pub next_attempt_at_ms: Option<i64>,
    /// The last attempt's time.
    pub last_attempt_at_ms: Option<i64>,
    /// The HTTP status the merchant last answered.
    pub last_response_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at_ms: Option<i64>,
}

impl DeliveryResponse {
    /// The wire form of `d`.
    pub fn new(d: &Delivery) -> DeliveryResponse {
        DeliveryResponse {
            object: "event_delivery".into(),
            event_id: d.event_id.clone(),
            status: d.status,
            attempts: d.attempts,
            attempts_max: DELIVERY_ATTEMPTS_MAX,
            next_attempt_at_ms: d.next_attempt_at_ms,
            last_attempt_at_ms: d.last_attempt_at_ms,
            last_response_status: d.last_response_status,
            last_error: d.last_error.clone(),
            delivered_at_ms: d.delivered_at_ms,
        }
    }
}

/// The HTTP side of delivery (the notify component implements it with outbound HTTP).
#[allow(async_fn_in_trait)]
pub trait Notifier {
    /// POSTs `body` to `url` with `headers`; `Ok(status)` when an answer came back,
    /// `Err(detail)` on timeout or transport failure.
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<u16, String>;
    /// The wall clock in Unix seconds, for the signature timestamp (the schedule runs on
    /// `Ctx::now_ms`, which a test may move forward; signatures always carry real time).
    fn now_unix_s(&self) -> i64;
    /// The wall clock in Unix ms, for how long a sweep has been running
    /// ([`SWEEP_ATTEMPTS_WINDOW_MS`]).
    fn now_unix_ms(&self) -> i64 {
        self.now_unix_s().saturating_mul(1000)
    }
}

/// What a sweep call asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepRequest {
    /// Most attempts ([`SWEEP_LIMIT_DEFAULT`] when `None`).
    pub limit: Option<u32>,
    /// Only this merchant (admin tooling and tests).
    pub merchant_id: Option<String>,
    /// The wall clock (Unix ms) for deleting expired idempotency records and for deciding
    /// which secrets sign, which never follow a forwarded schedule clock (`None`:
    /// `Ctx::now_ms` is the wall clock).
    pub wall_clock_ms: Option<i64>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// `"notification_sweep"`.
    pub object: String,
    /// Merchants looked at (not the admin scope, whose records it expires all the same).
    pub merchants_visited: u32,
    /// Events a crashed writer left unpublished, published now.
    pub events_recovered: u32,
    /// POSTs made.
    pub attempted: u32,
    /// POSTs answered 2xx.
    pub delivered: u32,
    /// Failed attempts with a retry scheduled.
    pub retry_scheduled: u32,
    /// Deliveries abandoned after the last attempt.
    pub failed: u32,
    /// Idempotency records past their retention, deleted (see `service::retention`).
    pub idempotency_keys_expired: u32,
    /// Channel notification replay keys past their retention, deleted (see
    /// `service::replay`); only a sweep of every merchant (no `merchant_id`) does this.
    #[serde(default)]
    pub replay_keys_expired: u32,
    /// Merchants whose visit failed on their own records; the sweep went on without them
    /// (see `merchant_failed`).
    #[serde(default)]
    pub merchants_failed: Vec<MerchantFailure>,
    /// Due expiry slots handled (idempotency records and replay keys, deleted or already
    /// gone): what the expiry budget counts. Not part of the answer.
    #[serde(skip)]
    pub expiry_slots_visited: u32,
    /// True when the attempt limit (or the expiry budget) stopped the sweep, or merchants
    /// beyond this call's [`SWEEP_MERCHANTS_MAX`] wait in this pass over the registry:
    /// call again.
    pub has_more: bool,
}

/// A merchant a sweep or reconciliation passed over because its visit failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantFailure {
    /// The merchant.
    pub merchant_id: String,
    /// The error's code.
    pub code: String,
    /// The error's message.
    pub message: String,
    /// What went wrong in full (an internal error's detail), for the component's log:
    /// never in the answer.
    #[serde(skip)]
    pub detail: String,
}

/// How a pass over the registry takes a merchant's failed visit: a storage outage, or
/// contention that outlasted the retries, fails the call (both pass; the next call starts
/// at this merchant again); any other error is that merchant's own (a record that does
/// not decode, say) and is listed in `failures` while the pass goes on, so one merchant's
/// bad record never stops the deliveries and re-checks of the merchants after it.
pub(crate) fn merchant_failed(
    failures: &mut Vec<MerchantFailure>,
    merchant_id: &str,
    e: ApiError,
) -> Result<(), ApiError> {
    if matches!(
        e,
        ApiError::StorageUnavailable | ApiError::ConcurrentModification
    ) {
        return Err(e);
    }
    failures.push(MerchantFailure {
        merchant_id: merchant_id.to_string(),
        code: e.code().to_string(),
        message: e.to_string(),
        detail: format!("{e:?}"),
    });
    Ok(())
}

impl SweepReport {
    /// Due expiry slots this sweep may still handle: [`EXPIRY_SWEEP_MAX`] shared by
    /// idempotency records and replay keys.
    fn expiry_budget_left(&self) -> u32 {
        EXPIRY_SWEEP_MAX.saturating_sub(self.expiry_slots_visited)
    }
}

/// `POST /v1/admin/notifications/sweep`: publishes what crashed writers left behind,
/// makes the due delivery attempts (at most `limit` of them) and deletes idempotency
/// records past their retention and, when it sweeps every merchant, channel replay keys
/// past theirs (at most [`EXPIRY_SWEEP_MAX`] due expiry slots handled in all).
pub async fn sweep<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    req: &SweepRequest,
) -> Result<SweepReport, ApiError> {
    let limit = req.limit.unwrap_or(SWEEP_LIMIT_DEFAULT);
    if limit == 0 || limit > SWEEP_LIMIT_MAX {
        return Err(ApiError::ParameterInvalid {
            param: "limit".into(),
            reason: format!("must be 1..={SWEEP_LIMIT_MAX}"),
        });
    }
    let mut report = SweepReport {
        object: "notification_sweep".into(),
        ..SweepReport::default()
    };
    let visit = Visit {
        limit,
        rotate: false,
        wall_clock_ms: req.wall_clock_ms.unwrap_or(ctx.now_ms),
        started_ms: notifier.now_unix_ms(),
    };
    if let Some(mid) = &req.merchant_id {
        require_merchant_param(ctx, mid).await?;
        visit_merchant(ctx, notifier, mid, &visit, &mut report).await?;
        return Ok(report);
    }
    let round = next_merchants(ctx, keys::notify_cursor()).await?;
    if !round.merchants.is_empty() {
        visit_round(ctx, notifier, &round, &visit, &mut report).await?;
    }
    expire_replay_keys(ctx, &visit, &mut report).await?;
    Ok(report)
}

/// Checks the `merchant_id` of a scheduled admin call: an existing merchant, else 400
/// `parameter_invalid` naming the field.
pub(crate) async fn require_merchant_param<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<(), ApiError> {
    let missing = || ApiError::ParameterInvalid {
        param: "merchant_id".into(),
        reason: "no such merchant".into(),
    };
    if !is_valid_id(IdKind::Merchant, merchant_id) {
        return Err(missing());
    }
    read::<Merchant, R>(ctx.repo, &keys::merchant(merchant_id))
        .await?
        .ok_or_else(missing)?;
    Ok(())
}

/// Visits the merchants of `round` (until the attempt limit), then moves the cursor past
/// the last one visited.
async fn visit_round<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    round: &Round,
    visit: &Visit,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    let mut next_seq = round.resume_at;
    report.has_more |= !round.reaches_end;
    for (seq, mid) in &round.merchants {
        if visit.spent(notifier, report) {
            report.has_more = true;
            break;
        }
        if let Err(e) = visit_merchant(ctx, notifier, mid, visit, report).await {
            merchant_failed(&mut report.merchants_failed, mid, e)?;
        }
        next_seq = seq % round.total + 1;
    }
    round.move_cursor(ctx, next_seq).await
}

/// Deletes every channel's replay keys past their retention, within what is left of the
/// sweep's expiry budget (on the wall clock).
async fn expire_replay_keys<R: Repository>(
    ctx: &Ctx<'_, R>,
    plan: &Visit,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    let wall = Ctx {
        now_ms: plan.wall_clock_ms,
        ..*ctx
    };
    for channel in Channel::ALL {
        let budget = report.expiry_budget_left();
        if budget == 0 {
            report.has_more = true;
            return Ok(());
        }
        let expired = replay::expire_channel(&wall, channel, budget).await?;
        report.replay_keys_expired += expired.deleted;
        report.expiry_slots_visited += expired.visited;
        report.has_more |= expired.budget_reached;
    }
    Ok(())
}

/// The merchants one sweep may visit, in registry order from its cursor.
pub(crate) struct Round {
    /// `(registry slot, merchant id)`, each merchant once.
    pub merchants: Vec<(i64, String)>,
    /// Registry size.
    pub total: i64,
    /// Where the cursor points now.
    pub resume_at: i64,
    /// The round runs to the registry's last slot: no merchant of this pass over the
    /// registry waits beyond it.
    pub reaches_end: bool,
    /// The cursor's key.
    cursor: &'static str,
    /// The cursor record's storage version.
    cursor_version: u64,
}

impl Round {
    /// Points the cursor at registry slot `next_seq`, where the next call starts (a
    /// concurrent sweep moving it first is fine: visiting a merchant twice is harmless).
    pub async fn move_cursor<R: Repository>(
        &self,
        ctx: &Ctx<'_, R>,
        next_seq: i64,
    ) -> Result<(), ApiError> {
        let bytes = to_bytes(&next_seq);
        match ctx
            .repo
            .put_if_version(self.cursor, self.cursor_version, bytes)
            .await
        {
            Ok(_) | Err(RepoError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Up to [`SWEEP_MERCHANTS_MAX`] merchants of the registry (every merchant that ever
/// wrote a payment or refund), round-robin from the cursor at key `cursor` (each sweep
/// kind has its own).
pub(crate) async fn next_merchants<R: Repository>(
    ctx: &Ctx<'_, R>,
    cursor: &'static str,
) -> Result<Round, ApiError> {
    let total = ctx.repo.increment(keys::notify_registry_seq(), 0).await?;
    let (next, cursor_version) = read::<i64, R>(ctx.repo, cursor).await?.unwrap_or((1, 0));
    let start = if (1..=total).contains(&next) { next } else { 1 };
    let count = total.clamp(0, SWEEP_MERCHANTS_MAX);
    let seqs: Vec<i64> = (0..count).map(|i| (start - 1 + i) % total + 1).collect();
    let slots: Vec<String> = seqs.iter().map(|s| keys::notify_registry(*s)).collect();
    let mut merchants: Vec<(i64, String)> = Vec::new();
    for (seq, v) in seqs.iter().zip(ctx.repo.get_many(&slots).await?) {
        let Some(v) = v else { continue };
        let mid: String = serde_json::from_slice(&v.value).map_err(internal)?;
        if !merchants.iter().any(|(_, m)| *m == mid) {
            merchants.push((*seq, mid));
        }
    }
    Ok(Round {
        merchants,
        total: total.max(1),
        resume_at: start,
        reaches_end: start - 1 + count >= total,
        cursor,
        cursor_version,
    })
}

async fn visit_merchant<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    merchant_id: &str,
    plan: &Visit,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    if merchant_id != crate::idempotency::ADMIN_SCOPE {
        report.merchants_visited = report.merchants_visited.saturating_add(1);
    }
    let budget = report.expiry_budget_left();
    if budget == 0 {
        report.has_more = true;
    } else {
        let wall = Ctx {
            now_ms: plan.wall_clock_ms,
            ..*ctx
        };
        let expired = retention::expire_merchant(&wall, merchant_id, budget).await?;
        report.idempotency_keys_expired += expired.deleted;
        report.expiry_slots_visited += expired.visited;
        report.has_more |= expired.budget_reached;
    }
    let recovered = outbox::recover_merchant(ctx, merchant_id).await?;
    report.events_recovered = report.events_recovered.saturating_add(recovered);
    let queue = outbox::Queue::deliveries(merchant_id);
    let (head, version, slots) = outbox::queue_window(ctx.repo, &queue).await?;
    if slots.is_empty() {
        return Ok(());
    }
    let window_full = slots.len() as i64 == outbox::QUEUE_WINDOW_MAX;
    let mut visit = Visit {
        rotate: window_full,
        ..*plan
    };
    let attempted_before = report.attempted;
    let Some((merchant, _)) = read::<Merchant, R>(ctx.repo, &keys::merchant(merchant_id)).await?
    else {
        return Ok(());
    };
    if merchant.notify_url.is_none() {
        // The merchant cleared its notify URL: its queued deliveries wait, spending none
        // of their attempts, and go out once a URL is set again.
        return Ok(());
    }
    let ids: Vec<String> = slots
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| keys::delivery(&s.id)))
        .collect();
    let records = ctx.repo.get_many(&ids).await?;
    let mut records = records.into_iter();
    let mut judged = Vec::with_capacity(slots.len());
    for (seq, slot) in slots {
        let state = match &slot {
            None => SlotState::Wait,
            Some(s) => {
                let record = records.next().flatten();
                let d: Option<Delivery> = record
                    .map(|v| serde_json::from_slice(&v.value).map_err(internal))
                    .transpose()?;
                judge(ctx, notifier, &merchant, s, d, &visit, report).await?
            }
        };
        // Rotating is only useful while the head can still pass every slot before it.
        visit.rotate &= slot.is_some() && state == SlotState::Done;
        judged.push((seq, slot, state));
    }
    let passed = outbox::advance_head(ctx, &queue, head, version, &judged).await?;
    // More slots wait beyond a full window and this visit made progress: the next call
    // sees further (a backlog of waiting retries alone does not ask to be called again).
    report.has_more |= window_full && report.attempted > attempted_before && !passed.is_empty();
    for seq in passed {
        let _ = ctx.repo.delete(&queue.slot(seq)).await;
    }
    Ok(())
}

/// What one merchant visit may do.
#[derive(Debug, Clone, Copy)]
struct Visit {
    /// Most attempts of the whole sweep.
    limit: u32,
    /// The wall clock, for idempotency expiry and for which secrets sign.
    wall_clock_ms: i64,
    /// The queue window is full (more slots wait behind it) and every slot before this
    /// one is passed: a waiting delivery may be moved to the tail.
    rotate: bool,
    /// When the sweep started ([`Notifier::now_unix_ms`]).
    started_ms: i64,
}

impl Visit {
    /// Whether the sweep may begin no more attempts: the limit is reached, or its
    /// [`SWEEP_ATTEMPTS_WINDOW_MS`] has passed.
    fn spent<N: Notifier>(&self, notifier: &N, report: &SweepReport) -> bool {
        report.attempted >= self.limit
            || notifier.now_unix_ms().saturating_sub(self.started_ms) >= SWEEP_ATTEMPTS_WINDOW_MS
    }
}

/// Attempts a slot's delivery if it is due (and the budget allows); says whether the
/// queue head may pass the slot.
async fn judge<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    merchant: &Merchant,
    slot: &Slot,
    delivery: Option<Delivery>,
    visit: &Visit,
    report: &mut SweepReport,
) -> Result<SlotState, ApiError> {
    let Some(d) = delivery else {
        // Queued by a publisher that has not written the record yet (or died before:
        // its republish queues the event again); tombstones have no record either.
        let gone = slot.at_ms.saturating_add(outbox::PUBLISH_GRACE_MS) <= ctx.now_ms;
        return Ok(if gone || slot.id.is_empty() {
            SlotState::Done
        } else {
            SlotState::Wait
        });
    };
    match d.status {
        DeliveryStatus::Delivered | DeliveryStatus::Failed => return Ok(SlotState::Done),
        DeliveryStatus::Pending => {}
    }
    let due = d.next_attempt_at_ms.is_some_and(|t| t <= ctx.now_ms);
    if !due && visit.rotate {
        // A backlog longer than the window (the endpoint has been failing): move the
        // waiting delivery to the tail so newer events get their attempts too.
        enqueue(ctx, &merchant.id, &slot.id).await?;
        return Ok(SlotState::Done);
    }
    if !due {
        return Ok(SlotState::Wait);
    }
    if visit.spent(notifier, report) {
        report.has_more = true;
        return Ok(SlotState::Wait);
    }
    let outcome = attempt_at(ctx, notifier, merchant, &slot.id, visit.wall_clock_ms).await?;
    match outcome {
        Attempt::Skipped => {}
        Attempt::Delivered => {
            report.attempted += 1;
            report.delivered += 1;
        }
        Attempt::RetryScheduled => {
            report.attempted += 1;
            report.retry_scheduled += 1;
        }
        Attempt::GaveUp { sent } => {
            report.attempted += u32::from(sent);
            report.failed += 1;
        }
    }
    Ok(match outcome {
        Attempt::Delivered | Attempt::GaveUp { .. } => SlotState::Done,
        Attempt::RetryScheduled => SlotState::Wait,
        // Another slot of the same event (or another sweep) got there first: the
        // record says whether anything is left to do.
        Attempt::Skipped => match read::<Delivery, R>(ctx.repo, &keys::delivery(&slot.id))
            .await?
            .map(|(d, _)| d.status)
        {
            Some(DeliveryStatus::Delivered | DeliveryStatus::Failed) | None => SlotState::Done,
            Some(DeliveryStatus::Pending) => SlotState::Wait,
        },
    })
}

/// What one attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Not due, already claimed by another sweep, or already finished.
    Skipped,
    /// 2xx.
    Delivered,
    /// Failed; the next attempt is scheduled.
    RetryScheduled,
    /// Failed for the last time (`sent` = a POST was made by this call).
    GaveUp {
        /// A POST was made.
        sent: bool,
    },
}

/// Claims, sends and records one attempt of `event_id`'s delivery if it is due
/// (`ctx.now_ms` is the wall clock).
pub async fn attempt<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    merchant: &Merchant,
    event_id: &str,
) -> Result<Attempt, ApiError> {
    attempt_at(ctx, notifier, merchant, event_id, ctx.now_ms).await
}

/// [`attempt`] on a schedule clock (`ctx.now_ms`) that a sweep may have moved forward;
/// which secrets sign is decided on the wall clock `wall_clock_ms`, so a forwarded clock
/// never ends a rotated-out secret's grace period early.
async fn attempt_at<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    merchant: &Merchant,
    event_id: &str,
    wall_clock_ms: i64,
) -> Result<Attempt, ApiError> {
    let now_ms = ctx.now_ms;
    let claimed = update_delivery(ctx, event_id, |d| {
        let due = d.next_attempt_at_ms.is_some_and(|t| t <= now_ms);
        if d.status != DeliveryStatus::Pending || !due {
            return None;
        }
        let mut next = d.clone();
        if d.attempts >= DELIVERY_ATTEMPTS_MAX {
            // The last attempt was claimed and its sweep never came back.
            next.status = DeliveryStatus::Failed;
            next.next_attempt_at_ms = None;
            return Some(next);
        }
        next.attempts += 1;
        next.attempts_total = next.attempts_total.saturating_add(1);
        next.last_attempt_at_ms = Some(now_ms);
        let wait = RETRY_DELAYS_MS
            .get(next.attempts as usize - 1)
            .copied()
            .unwrap_or(DELIVERY_LEASE_MS);
        next.next_attempt_at_ms = Some(now_ms.saturating_add(wait));
        Some(next)
    })
    .await?;
    let Some(d) = claimed else {
        return Ok(Attempt::Skipped);
    };
    if d.status == DeliveryStatus::Failed {
        return Ok(Attempt::GaveUp { sent: false });
    }
    let answer = send(ctx, notifier, merchant, event_id, wall_clock_ms).await?;
    let claimed_attempts = d.attempts;
    let recorded = update_delivery(ctx, event_id, |cur| {
        record_answer(cur, claimed_attempts, &answer, now_ms)
    })
    .await?;
    Ok(match recorded.map(|r| r.status) {
        Some(DeliveryStatus::Delivered) => Attempt::Delivered,
        Some(DeliveryStatus::Failed) => Attempt::GaveUp { sent: true },
        Some(DeliveryStatus::Pending) | None => Attempt::RetryScheduled,
    })
}

/// The record after an answer to attempt `claimed_attempts` (a 2xx always counts; a
/// failure only for the attempt still current).
fn record_answer(
    cur: &Delivery,
    claimed_attempts: u32,
    answer: &Result<u16, String>,
    now_ms: i64,
) -> Option<Delivery> {
    let mut next = cur.clone();
    match answer {
        Ok(status) if (200..300).contains(status) => {
            if cur.status == DeliveryStatus::Delivered {
                return None;
            }
            next.status = DeliveryStatus::Delivered;
            next.delivered_at_ms = Some(now_ms);
            next.next_attempt_at_ms = None;
            next.last_response_status = Some(*status);
            next.last_error = None;
            return Some(next);
        }
        Ok(status) => {
            next.last_response_status = Some(*status);
            next.last_error = Some(format!("HTTP {status}"));
        }
        Err(detail) => {
            next.last_response_status = None;
            next.last_error = Some(detail.chars().take(DELIVERY_ERROR_LEN_MAX).collect());
        }
    }
    if cur.status != DeliveryStatus::Pending || cur.attempts != claimed_attempts {
        return None;
    }
    if cur.attempts >= DELIVERY_ATTEMPTS_MAX {
        next.status = DeliveryStatus::Failed;
        next.next_attempt_at_ms = None;
    }
    Some(next)
}

/// Builds the signed POST of `event_id` and sends it.
async fn send<R: Repository, N: Notifier>(
    ctx: &Ctx<'_, R>,
    notifier: &N,
    merchant: &Merchant,
    event_id: &str,
    wall_clock_ms: i64,
) -> Result<Result<u16, String>, ApiError> {
    let Some(url) = merchant.notify_url.as_deref() else {
        return Ok(Err("the merchant has no notify_url".into()));
    };
    if crate::api::names_the_app_itself(url) {
        // Refused when set; this catches one stored before that check existed.
        return Ok(Err("the notify_url names the app itself".into()));
    }
    let (event, _) = read::<StoredEvent, R>(ctx.repo, &keys::event(event_id))
        .await?
        .ok_or_else(|| internal(format!("event {event_id} missing for its delivery")))?;
    let body = to_bytes(&event.to_event());
    let secrets = signing_secrets(ctx, merchant, wall_clock_ms).await?;
    let header = signature_header(&secrets, notifier.now_unix_s(), &body);
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("spinpay-signature".to_string(), header),
        ("spinpay-event-id".to_string(), event.id.clone()),
        ("user-agent".to_string(), "spinpay-notify/1".to_string()),
    ];
    Ok(notifier.post(url, &headers, &body).await)
}

/// `t=<unix>,v1=<hmac under each secret>`: the current secret first.
pub fn signature_header(secrets: &[String], t_unix_s: i64, body: &[u8]) -> String {
    let mut header = format!("t={t_unix_s}");
    for secret in secrets {
        let one = sign_header(secret.as_bytes(), t_unix_s, body);
        let v1 = one.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        if !header.contains(v1) {
            header.push_str(",v1=");
            header.push_str(v1);
        }
    }
    header
}

/// A rotated-out webhook secret that still signs until `expires_at_ms`
/// (`mch/{m}/whsec/prev`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PreviousSecret {
    sealed: String,
    expires_at_ms: i64,
    /// The secret rotated out before `sealed`, still within its grace when a rotation
    /// began: it keeps signing until its own expiry should that rotation fail or crash
    /// before the merchant record changes, and is dropped once the rotation lands.
    /// (Its own `older` is always `None`: one older secret at most.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    older: Option<Box<PreviousSecret>>,
}

/// The secrets that sign now: the current one, then the rotated-out ones within their
/// grace.
async fn signing_secrets<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
    wall_clock_ms: i64,
) -> Result<Vec<String>, ApiError> {
    let current = super::merchants::webhook_secret(ctx, merchant)?;
    let mut secrets = vec![current.expose().clone()];
    let key = keys::webhook_secret_previous(&merchant.id);
    if let Some((prev, _)) = read::<PreviousSecret, R>(ctx.repo, &key).await? {
        for p in std::iter::once(&prev).chain(prev.older.as_deref()) {
            if p.expires_at_ms > wall_clock_ms {
                secrets.push(open_webhook_secret(ctx, &merchant.id, &p.sealed)?);
            }
        }
    }
    Ok(secrets)
}

/// Creates `event_id`'s delivery (due now) unless it exists, and puts it in the
/// merchant's queue. Called by publish; a republish after a crash may queue it twice,
/// which the claim makes harmless.
pub(crate) async fn schedule<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
    event_id: &str,
) -> Result<(), ApiError> {
    let key = keys::delivery(event_id);
    if ctx.repo.get(&key).await?.is_some() {
        return Ok(());
    }
    // The slot before the record: a record always has its slot, so a republish that
    // finds the record has nothing to queue. (A slot whose record never came is passed
    // by the sweep after the grace period.)
    enqueue(ctx, &merchant.id, event_id).await?;
    insert(ctx.repo, &key, &new_delivery(ctx, &merchant.id, event_id)).await?;
    Ok(())
}

fn new_delivery<R>(ctx: &Ctx<'_, R>, merchant_id: &str, event_id: &str) -> Delivery {
    Delivery {
        event_id: event_id.to_string(),
        merchant_id: merchant_id.to_string(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        attempts_total: 0,
        next_attempt_at_ms: Some(ctx.now_ms),
        last_attempt_at_ms: None,
        last_response_status: None,
        last_error: None,
        delivered_at_ms: None,
        created_at_ms: ctx.now_ms,
    }
}

async fn enqueue<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    event_id: &str,
) -> Result<(), ApiError> {
    outbox::enqueue_id(ctx, &outbox::Queue::deliveries(merchant_id), event_id).await
}

/// CAS update of a delivery; `f` returns `None` for "nothing to do". Returns the
/// written record, or `None` when nothing was written.
async fn update_delivery<R, F>(
    ctx: &Ctx<'_, R>,
    event_id: &str,
    mut f: F,
) -> Result<Option<Delivery>, ApiError>
where
    R: Repository,
    F: FnMut(&Delivery) -> Option<Delivery>,
{
    let key = keys::delivery(event_id);
    for _attempt in 0..CAS_RETRIES_MAX {
        let Some((cur, version)) = super::read_for_update::<Delivery, R>(ctx.repo, &key).await?
        else {
            return Ok(None);
        };
        let Some(next) = f(&cur) else {
            return Ok(None);
        };
        assert!(next.attempts <= DELIVERY_ATTEMPTS_MAX, "attempts bound");
        match ctx
            .repo
            .put_if_version(&key, version, to_bytes(&next))
            .await
        {
            Ok(_) => return Ok(Some(next)),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// The delivery of one of the merchant's events, if it has one.
pub async fn event_delivery<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    event_id: &str,
) -> Result<Option<DeliveryResponse>, ApiError> {
    if !is_valid_id(IdKind::Event, event_id) {
        return Ok(None);
    }
    Ok(read::<Delivery, R>(ctx.repo, &keys::delivery(event_id))
        .await?
        .filter(|(d, _)| d.merchant_id == merchant_id)
        .map(|(d, _)| DeliveryResponse::new(&d)))
}

/// `POST /v1/events/{id}/redeliver`: starts a new delivery round (due now), whatever
/// the previous one did. The caller may then [`attempt`] it at once.
pub async fn redeliver_event<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
    event_id: &str,
) -> Result<DeliveryResponse, ApiError> {
    super::queries::load_event(ctx, &merchant.id, event_id).await?;
    if merchant.notify_url.is_none() {
        return Err(ApiError::NotifyUrlMissing);
    }
    // The slot first (see `schedule`): a crash after it leaves a slot the sweep passes.
    enqueue(ctx, &merchant.id, event_id).await?;
    let key = keys::delivery(event_id);
    let fresh = new_delivery(ctx, &merchant.id, event_id);
    if !insert(ctx.repo, &key, &fresh).await? {
        let now_ms = ctx.now_ms;
        update_delivery(ctx, event_id, |cur| {
            let mut next = cur.clone();
            next.status = DeliveryStatus::Pending;
            next.attempts = 0;
            next.next_attempt_at_ms = Some(now_ms);
            next.delivered_at_ms = None;
            Some(next)
        })
        .await?;
    }
    let (d, _) = read::<Delivery, R>(ctx.repo, &key)
        .await?
        .ok_or_else(|| internal(format!("{key} vanished")))?;
    Ok(DeliveryResponse::new(&d))
}

/// The answer of a secret rotation: the new secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecretRotated {
    /// `"webhook_secret"`.
    pub object: String,
    /// The new signing secret (`whsec_…`).
    pub webhook_secret: String,
    /// Until when the previous secret also signs (`null` with a zero grace period).
    pub previous_secret_expires_at_ms: Option<i64>,
}

/// `POST /v1/account/webhook-secret/rotate`: a new signing secret; the old one keeps
/// signing (a second `v1=`) for `grace_s` seconds so receivers can switch without
/// dropping events. Only one previous secret is kept: a rotation that lands ends the
/// grace of the one before, and one that fails (or crashes) ends nothing. Under an
/// Idempotency-Key (`seed`) the new secret derives from the key's operation seed under
/// the encryption key, so a retry of a rotation that already landed answers the same
/// secret instead of rotating again (which would leave the receiver's secret signing
/// nothing).
pub async fn rotate_webhook_secret<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant_id: &str,
    caller_key_hash: Option<&str>,
    grace_s: Option<i64>,
    seed: Option<[u8; 16]>,
) -> Result<WebhookSecretRotated, ApiError> {
    let grace_s = grace_s.unwrap_or(SECRET_GRACE_S_DEFAULT);
    if !(0..=SECRET_GRACE_S_MAX).contains(&grace_s) {
        return Err(ApiError::ParameterInvalid {
            param: "grace_period_s".into(),
            reason: format!("must be 0..={SECRET_GRACE_S_MAX}"),
        });
    }
    let what = format!("webhook secret rotation\n{merchant_id}");
    let entropy = super::merchants::seeded_or_random(ctx, rng, seed, &what);
    let secret = make_id(IdKind::WebhookSecret, &entropy);
    let is_ours = |other: &str| constant_time_eq(other.as_bytes(), secret.as_bytes());
    let sealed = seal(
        ctx.keys,
        rng.bytes(),
        secret.as_bytes(),
        merchant_id.as_bytes(),
    );
    let expires_at_ms = ctx.now_ms.saturating_add(grace_s.saturating_mul(1000));
    let answer = |previous_expires_at_ms: Option<i64>| WebhookSecretRotated {
        object: "webhook_secret".into(),
        webhook_secret: secret.clone(),
        previous_secret_expires_at_ms: previous_expires_at_ms.filter(|_| grace_s > 0),
    };
    let prev_key = keys::webhook_secret_previous(merchant_id);
    for _attempt in 0..CAS_RETRIES_MAX {
        let (merchant, version) = read::<Merchant, R>(ctx.repo, &keys::merchant(merchant_id))
            .await?
            .ok_or_else(|| internal(format!("merchant {merchant_id} vanished")))?;
        let current = super::merchants::webhook_secret(ctx, &merchant)?;
        let prev = read::<PreviousSecret, R>(ctx.repo, &prev_key)
            .await?
            .map(|(p, _)| p);
        let prev_secret = prev
            .as_ref()
            .map(|p| open_webhook_secret(ctx, merchant_id, &p.sealed))
            .transpose()?;
        if is_ours(current.expose()) {
            // This rotation landed before and its answer was lost: answer it again, and
            // end the older secret's grace as a landed rotation does. A previous secret
            // equal to ours was left by a later rotation that never landed: the secret
            // ours replaced is its older one, which keeps its grace.
            let kept = match prev.clone() {
                Some(p) if prev_secret.as_deref().is_some_and(is_ours) => p.older.map(|o| *o),
                other => other,
            };
            let expires = kept.as_ref().map(|p| p.expires_at_ms);
            if let Some(p) = kept.filter(|p| Some(p) != prev.as_ref() || p.older.is_some()) {
                let _ = put(ctx.repo, &prev_key, &PreviousSecret { older: None, ..p }).await;
            }
            return Ok(answer(expires));
        }
        if seed.is_some() && prev_secret.as_deref().is_some_and(is_ours) {
            // It landed and a later rotation replaced it since: never rotate back.
            return Ok(answer(None));
        }
        // Checked against the record the swap below compares with.
        super::merchants::caller_still_current(&merchant, caller_key_hash)?;
        // The secret that keeps signing besides the one rotated out now: the previous
        // one within its grace, or, when an earlier rotation never landed (its previous
        // is the current secret), that rotation's own older one.
        let older = match prev {
            Some(p) if prev_secret.as_deref() == Some(current.expose().as_str()) => p.older,
            Some(p) => Some(Box::new(PreviousSecret { older: None, ..p })),
            None => None,
        }
        .filter(|o| o.expires_at_ms > ctx.now_ms);
        // The secret rotated out is saved before the merchant record changes: a crash
        // between leaves it equal to the current one, and the older one still signing.
        let rotated_out = PreviousSecret {
            sealed: merchant.webhook_secret_sealed.clone(),
            expires_at_ms,
            older,
        };
        put(ctx.repo, &prev_key, &rotated_out).await?;
        let next = Merchant {
            webhook_secret_sealed: sealed.clone(),
            ..merchant
        };
        match ctx
            .repo
            .put_if_version(&keys::merchant(merchant_id), version, to_bytes(&next))
            .await
        {
            Ok(_) => {
                if rotated_out.older.is_some() {
                    // Best effort: a failure leaves the older secret signing until its
                    // own expiry, as it would have without this rotation.
                    let done = PreviousSecret {
                        older: None,
                        ..rotated_out
                    };
                    let _ = put(ctx.repo, &prev_key, &done).await;
                }
                return Ok(answer(Some(expires_at_ms)));
            }
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Unconditional write of a small non-money record (read version, CAS, retry).
async fn put<T: Serialize, R: Repository>(repo: &R, key: &str, value: &T) -> Result<(), ApiError> {
    for _attempt in 0..CAS_RETRIES_MAX {
        let version = repo.get_for_update(key).await?.map_or(0, |v| v.version);
        match repo.put_if_version(key, version, to_bytes(value)).await {
            Ok(_) => return Ok(()),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(attempts: u32) -> Delivery {
        Delivery {
            event_id: "evt_x".into(),
            merchant_id: "mch_x".into(),
            status: DeliveryStatus::Pending,
            attempts,
            attempts_total: attempts,
            next_attempt_at_ms: Some(0),
            last_attempt_at_ms: None,
            last_response_status: None,
            last_error: None,
            delivered_at_ms: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_failure_on_the_last_attempt_gives_up_and_a_2xx_always_delivers() {
        // Proves record_answer: non-2xx keeps pending before the last attempt, fails at
        // the last, ignores a stale attempt's failure, and a 2xx delivers.
        let fail = Err("connection refused".to_string());
        let r = record_answer(&delivery(1), 1, &fail, 5).unwrap();
        assert_eq!(r.status, DeliveryStatus::Pending);
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));
        let last = record_answer(
            &delivery(DELIVERY_ATTEMPTS_MAX),
            DELIVERY_ATTEMPTS_MAX,
            &Ok(500),
            5,
        )
        .unwrap();
        assert_eq!(
            (last.status, last.last_response_status),
            (DeliveryStatus::Failed, Some(500))
        );
        assert_eq!(record_answer(&delivery(3), 2, &fail, 5), None);
        let ok = record_answer(&delivery(3), 2, &Ok(204), 9).unwrap();
        assert_eq!(
            (ok.status, ok.delivered_at_ms),
            (DeliveryStatus::Delivered, Some(9))
        );
    }

    #[test]
    fn the_signature_header_carries_one_v1_per_distinct_secret() {
        // Proves rotation signs twice, a repeated secret once, and each v1 verifies.
        let secrets = vec!["whsec_new".to_string(), "whsec_old".to_string()];
        let h = signature_header(&secrets, 1_700_000_000, b"{}");
        assert_eq!(h.matches("v1=").count(), 2);
        for s in &secrets {
            let ok = crate::crypto::verify_header(&h, b"{}", &[s.as_bytes()], 1_700_000_000, 300);
            assert_eq!(ok, Ok(()));
        }
        let same = vec!["whsec_a".to_string(), "whsec_a".to_string()];
        assert_eq!(signature_header(&same, 1, b"x").matches("v1=").count(), 1);
    }

    #[test]
    fn the_retry_schedule_is_fifteen_seconds_to_a_day() {
        // Proves the documented schedule and the attempt count.
        assert_eq!(RETRY_DELAYS_MS[0], 15_000);
        assert_eq!(RETRY_DELAYS_MS[6], 24 * 3600 * 1000);
        assert_eq!(DELIVERY_ATTEMPTS_MAX, 8);
    }
}
