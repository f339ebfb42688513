//! Reconciliation: payments and refunds still waiting on their channel are re-checked
//! even when nobody reads them.
//!
//! A `GET` of a `processing` payment and `POST …/recheck` ask the channel, but only when
//! somebody calls them. A payment whose notification was lost, or whose request died
//! before it asked the channel, would otherwise stay `processing` (and a refund
//! `pending`, holding its reservation) until a merchant happened to look.
//!
//! How such objects are found without scanning the store:
//!
//! 1. **Hand-over from the outbox.** Every payment or refund change that adds events
//!    writes an outbox marker, which the notification sweep takes up once it is older
//!    than [`super::PUBLISH_GRACE_MS`]. At that point the sweep looks at the object
//!    ([`track`]): one still waiting on its channel gets a slot in the merchant's
//!    reconciliation queue (`mch/{m}/rcn/{seq}`). Nothing is added to the request path.
//! 2. **Re-check.** [`reconcile`] (`POST /v1/admin/reconcile`, called by a scheduler)
//!    walks the merchants round-robin and each one's queues from their heads: a due slot
//!    has its object re-checked with the channel exactly as a merchant's `recheck` would
//!    (which sends a payment or refund the channel never got again, charging or refunding
//!    once at most). An object still open afterwards gets a new slot at a tail, so one
//!    waiting long never blocks the others behind it. A payment still waiting for its
//!    customer (a QR code nobody scanned, or a customer-presented code nobody confirmed
//!    in the wallet, still `processing`) once it expires (`expires_at_ms`, sent to the
//!    channel with the order; at most [`RECONCILE_HORIZON_MS`] after creation) is closed
//!    at its channel and canceled, as Alipay and WeChat Pay advise for orders past their
//!    timeout, so nobody can pay an order its merchant has given up on and the merchant
//!    hears of it (`payment.canceled`); a close the channel does not answer is tried
//!    again at its tier's interval for up to [`RECONCILE_CLOSE_GRACE_MS`] after expiry.
//!    A merchant reading such a payment past its expiry need not wait for this:
//!    [`close_if_expired`] (`GET /v1/payments/{id}`) closes it at once.
//!    Anything else still open [`RECONCILE_HORIZON_MS`] after its creation is no longer
//!    queued: it is left to a person (`given_up` in the report; its merchant can still
//!    re-check it).
//! 3. **Backing off.** Most objects that stay open are QR codes nobody scans. Channels
//!    rate-limit order queries, so the longer an object has been open the less often it
//!    is asked about: a merchant has one queue per tier of [`RECONCILE_TIERS`] (every
//!    5 minutes in its first hour, every 30 minutes up to 6 hours, every 2 hours up to a
//!    day: about 30 queries instead of 288), and an object is queued in the tier its
//!    age falls in. Within one queue every slot waits the same interval, so slots fall
//!    due in the order they were queued and a call stops at the first one not due.
//!
//! A slot may name an object twice (two markers, or a crash between queuing again and
//! passing the old slot): a second re-check of a settled object changes nothing.

use serde::{Deserialize, Serialize};

use super::delivery::{MerchantFailure, merchant_failed, next_merchants, require_merchant_param};
use super::outbox::{ObjectKind, Queue, Slot, SlotState, advance_head, enqueue, queue_window};
use super::payments::waits_on_channel;
use super::refunds::load_refund;
use super::{ChannelClient, Ctx, load_payment};
use crate::api::PaymentResponse;
use crate::error::ApiError;
use crate::keys;
use crate::model::{CancellationReason, PaymentStatus, RefundStatus};
use crate::repo::Repository;
use crate::rng::Entropy;

/// How long after its creation an object is re-checked at all (channels close unpaid
/// orders well within a day).
pub const RECONCILE_HORIZON_MS: i64 = 24 * 3_600_000;
/// The re-check schedule: an object queued while younger than `.0` (since its creation)
/// is re-checked `.1` later. One queue per tier.
pub const RECONCILE_TIERS: [(i64, i64); 3] = [
    (3_600_000, 5 * 60_000),
    (6 * 3_600_000, 30 * 60_000),
    (RECONCILE_HORIZON_MS, 2 * 3_600_000),
];
/// How long past [`RECONCILE_HORIZON_MS`] a close the channel did not answer (a timeout,
/// an outage) is tried again, at the last tier's interval: about a dozen more tries.
pub const RECONCILE_CLOSE_GRACE_MS: i64 = 24 * 3_600_000;
/// How long a new object waits before its first re-check (the first tier's interval).
pub const RECONCILE_INTERVAL_MS: i64 = RECONCILE_TIERS[0].1;
/// Re-checks one call makes unless asked otherwise.
pub const RECONCILE_LIMIT_DEFAULT: u32 = 20;
/// Most re-checks one call may make.
pub const RECONCILE_LIMIT_MAX: u32 = 100;
/// How long after its start a reconciliation call still begins re-checks (on the wall
/// clock). One re-check may take a few channel calls after that, so a call answers within
/// about 20 s even when a channel hangs: under the schedulers' client timeout (30 s), and
/// well under the outbox's grace periods, which assume that a write's time
/// (`ctx.now_ms`, the call's start) is close to the wall clock.
pub const RECONCILE_WINDOW_MS: i64 = 10_000;
const _: () = assert!(RECONCILE_LIMIT_DEFAULT <= RECONCILE_LIMIT_MAX);
const _: () = {
    let mut t = 0;
    while t < RECONCILE_TIERS.len() {
        let (age_below, interval) = RECONCILE_TIERS[t];
        assert!(interval > 0 && interval < age_below);
        if t > 0 {
            // Ages ascend and intervals only grow: a backoff, never a speed-up.
            assert!(age_below > RECONCILE_TIERS[t - 1].0);
            assert!(interval >= RECONCILE_TIERS[t - 1].1);
        }
        t += 1;
    }
    assert!(RECONCILE_TIERS[RECONCILE_TIERS.len() - 1].0 == RECONCILE_HORIZON_MS);
};

/// The tier of [`RECONCILE_TIERS`] an object created at `created_at_ms` is queued in now
/// (the last one past the horizon: such an object is re-checked once more, then closed or
/// given up).
fn tier(now_ms: i64, created_at_ms: i64) -> usize {
    let age = now_ms.saturating_sub(created_at_ms);
    RECONCILE_TIERS
        .iter()
        .position(|(age_below, _)| age < *age_below)
        .unwrap_or(RECONCILE_TIERS.len() - 1)
}

/// Whether a payment in `status` is one its channel closes (revokes) at its expiry:
/// waiting for its customer, or a customer-presented code (`customer_code`, see
/// [`super::payments::revocable`]) still `processing`.
fn unpaid_at_channel(status: PaymentStatus, customer_code: bool) -> bool {
    status == PaymentStatus::RequiresCustomerAction
        || (status == PaymentStatus::Processing && customer_code)
}

/// Whether a re-checked payment (one its channel knows) still waits on the channel: only
/// its status can end the wait.
fn still_waiting(status: PaymentStatus) -> bool {
    matches!(
        status,
        PaymentStatus::Processing | PaymentStatus::RequiresCustomerAction
    )
}

/// What a reconciliation call asks for.
#[derive(Debug, Clone, Default)]
pub struct ReconcileRequest {
    /// Most objects re-checked ([`RECONCILE_LIMIT_DEFAULT`] when `None`).
    pub limit: Option<u32>,
    /// Only this merchant.
    pub merchant_id: Option<String>,
    /// The wall clock (Unix ms): no re-check begins [`RECONCILE_WINDOW_MS`] after the
    /// call's first reading of it (`has_more` then asks for another call). `None` (tests
    /// that need no clock) bounds a call by `limit` alone.
    pub wall_clock: Option<fn() -> i64>,
}

/// What a reconciliation call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// `"reconciliation"`.
    pub object: String,
    /// Merchants whose queue was looked at.
    pub merchants_visited: u32,
    /// Payments and refunds re-checked with their channel.
    pub rechecked: u32,
    /// Of those, settled now (nothing left waiting on the channel).
    pub settled: u32,
    /// Of those, still waiting: queued again (also an expired payment whose close the
    /// channel did not answer, tried again for up to [`RECONCILE_CLOSE_GRACE_MS`]).
    pub still_open: u32,
    /// Of those, payments nobody paid before they expired (`expires_at_ms`, at most
    /// [`RECONCILE_HORIZON_MS`] after creation): closed at their channel and canceled
    /// (`payment.canceled` tells the merchant).
    pub closed: u32,
    /// Of those, still waiting and not closed (past [`RECONCILE_HORIZON_MS`]: a payment
    /// the channel has not decided, a refund; or a close the channel refused, or did not
    /// answer for [`RECONCILE_CLOSE_GRACE_MS`] after expiry): no longer queued, left to a
    /// person.
    pub given_up: u32,
    /// Merchants whose visit failed on their own records; the call went on without them
    /// (see `delivery::merchant_failed`).
    #[serde(default)]
    pub merchants_failed: Vec<MerchantFailure>,
    /// True when the limit stopped the call, or merchants beyond this call's
    /// [`super::delivery::SWEEP_MERCHANTS_MAX`] wait in this pass over the registry: call
    /// again.
    pub has_more: bool,
}

/// What of a queued payment or refund still waits on its channel.
struct Open {
    /// When the queued object was created.
    created_at_ms: i64,
    /// When a payment nobody paid is closed: its expiry (for a refund, never).
    closes_at_ms: i64,
    /// The payment itself: the channel knows it and has not settled it.
    payment: bool,
    /// A customer-presented code or token: one still `processing` at its expiry is
    /// revoked at its channel like an order nobody paid ([`super::payments::revocable`]).
    customer_code: bool,
    /// Refunds the channel has not settled: the queued refund, or a payment's pending ones.
    refund_ids: Vec<String>,
}

/// The object `kind`/`id` of `merchant_id` if it still waits on its channel; `None` when
/// it is settled or does not exist (a marker written by a request that died before
/// storing its object).
async fn open<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    kind: ObjectKind,
    id: &str,
) -> Result<Option<Open>, ApiError> {
    let found = match kind {
        ObjectKind::Payment => match load_payment(ctx, merchant_id, id).await {
            Ok(p) => {
                let refund_ids: Vec<String> = p
                    .state
                    .refunds_pending
                    .iter()
                    .map(|r| r.refund_id.clone())
                    .collect();
                // Pending refunds are queued with their payment but aged by the newest
                // of them: a refund made days after its payment is re-checked for a
                // day from its own creation, not given up as its payment is old.
                let mut created_at_ms = p.created_at_ms;
                for refund_id in &refund_ids {
                    match load_refund(ctx, merchant_id, refund_id).await {
                        Ok(r) => created_at_ms = created_at_ms.max(r.created_at_ms),
                        Err(ApiError::ResourceMissing { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Open {
                    created_at_ms,
                    closes_at_ms: p.expires_at_ms(),
                    // Waiting for its one-time code, it is closed at its expiry too.
                    payment: waits_on_channel(&p) || super::payments::awaits_code(&p),
                    customer_code: super::payments::revocable(&p),
                    refund_ids,
                })
            }
            Err(e) => Err(e),
        },
        ObjectKind::Refund => match load_refund(ctx, merchant_id, id).await {
            Ok(r) if r.state.status != RefundStatus::Pending => {
                // Settled: the write that settled it brought its marker here. A crash
                // between it and its payment's write left the reservation held (counted
                // neither refunded nor refundable until somebody reads the payment).
                super::refunds::settle_reservation(ctx, &r).await?;
                return Ok(None);
            }
            Ok(r) => Ok(Open {
                created_at_ms: r.created_at_ms,
                closes_at_ms: i64::MAX,
                payment: false,
                customer_code: false,
                refund_ids: vec![r.id],
            }),
            Err(e) => Err(e),
        },
    };
    match found {
        Ok(open) if open.payment || !open.refund_ids.is_empty() => Ok(Some(open)),
        Ok(_) | Err(ApiError::ResourceMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Queues `kind`/`id` for reconciliation if it still waits on its channel (the
/// notification sweep calls this for each outbox marker it takes up).
pub(crate) async fn track<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    kind: ObjectKind,
    id: &str,
) -> Result<(), ApiError> {
    if let Some(found) = open(ctx, merchant_id, kind, id).await? {
        queue_again(ctx, merchant_id, kind, id, found.created_at_ms).await?;
    }
    Ok(())
}

/// Queues `kind`/`id` (created at `created_at_ms`) at the tail of its age's tier.
async fn queue_again<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    kind: ObjectKind,
    id: &str,
    created_at_ms: i64,
) -> Result<(), ApiError> {
    let slot = Slot {
        kind: Some(kind),
        id: id.to_string(),
        at_ms: ctx.now_ms,
    };
    let queue = Queue::reconciles(merchant_id, tier(ctx.now_ms, created_at_ms));
    enqueue(ctx, &queue, &slot).await
}

/// `POST /v1/admin/reconcile`: re-checks with their channels up to `limit` queued
/// payments and refunds that are due, merchant by merchant (round-robin across calls).
pub async fn reconcile<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    req: &ReconcileRequest,
) -> Result<ReconcileReport, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let limit = req.limit.unwrap_or(RECONCILE_LIMIT_DEFAULT);
    if limit == 0 || limit > RECONCILE_LIMIT_MAX {
        return Err(ApiError::ParameterInvalid {
            param: "limit".into(),
            reason: format!("must be 1..={RECONCILE_LIMIT_MAX}"),
        });
    }
    let mut report = ReconcileReport {
        object: "reconciliation".into(),
        ..ReconcileReport::default()
    };
    let mut run = Run {
        channel,
        rng,
        limit,
        window: req.wall_clock.map(|clock| (clock, clock())),
        report: &mut report,
    };
    if let Some(mid) = &req.merchant_id {
        require_merchant_param(ctx, mid).await?;
        run.merchant(ctx, mid).await?;
        return Ok(report);
    }
    let round = next_merchants(ctx, keys::reconcile_cursor()).await?;
    let mut next_seq = round.resume_at;
    run.report.has_more |= !round.reaches_end;
    for (seq, mid) in &round.merchants {
        if run.spent() {
            run.report.has_more = true;
            break;
        }
        if mid != crate::idempotency::ADMIN_SCOPE
            && let Err(e) = run.merchant(ctx, mid).await
        {
            merchant_failed(&mut run.report.merchants_failed, mid, e)?;
        }
        next_seq = seq % round.total + 1;
    }
    round.move_cursor(ctx, next_seq).await?;
    Ok(report)
}

/// One call's channel, entropy, limit and report.
struct Run<'a, C, E> {
    channel: &'a C,
    rng: &'a mut E,
    limit: u32,
    /// The wall clock and its reading at the call's start.
    window: Option<(fn() -> i64, i64)>,
    report: &'a mut ReconcileReport,
}

impl<C: ChannelClient, E: Entropy> Run<'_, C, E> {
    /// Whether the call may begin no more re-checks: the limit is reached, or its
    /// [`RECONCILE_WINDOW_MS`] has passed.
    fn spent(&self) -> bool {
        self.report.rechecked >= self.limit || self.out_of_time()
    }

    /// Whether [`RECONCILE_WINDOW_MS`] has passed since the call started.
    fn out_of_time(&self) -> bool {
        self.window.is_some_and(|(clock, started_ms)| {
            clock().saturating_sub(started_ms) >= RECONCILE_WINDOW_MS
        })
    }

    /// Re-checks the due slots at the heads of `merchant_id`'s queues, youngest tier
    /// first.
    async fn merchant<R: Repository>(
        &mut self,
        ctx: &Ctx<'_, R>,
        merchant_id: &str,
    ) -> Result<(), ApiError> {
        self.report.merchants_visited = self.report.merchants_visited.saturating_add(1);
        // Past the limit a queue is still looked at: `has_more` only when one has a due
        // slot left.
        for (tier, (_, interval)) in RECONCILE_TIERS.iter().enumerate() {
            self.queue(ctx, merchant_id, tier, *interval).await?;
        }
        Ok(())
    }

    /// Re-checks the due slots (queued at least `interval` ago) at the head of
    /// `merchant_id`'s queue of tier `tier`.
    async fn queue<R: Repository>(
        &mut self,
        ctx: &Ctx<'_, R>,
        merchant_id: &str,
        tier: usize,
        interval: i64,
    ) -> Result<(), ApiError> {
        let queue = Queue::reconciles(merchant_id, tier);
        let (head, version, slots) = queue_window(ctx.repo, &queue).await?;
        let mut judged = Vec::with_capacity(slots.len());
        for (seq, slot) in slots {
            let state = match &slot {
                None => SlotState::Wait,
                // A tombstone (see `advance_head`).
                Some(Slot { kind: None, .. }) => SlotState::Done,
                Some(s) if s.at_ms.saturating_add(interval) > ctx.now_ms => {
                    // Slots are queued in time order: the rest are not due either.
                    judged.push((seq, slot, SlotState::Wait));
                    break;
                }
                Some(_) if self.spent() => {
                    self.report.has_more = true;
                    judged.push((seq, slot, SlotState::Wait));
                    break;
                }
                Some(
                    s @ Slot {
                        kind: Some(kind), ..
                    },
                ) => {
                    self.slot(ctx, merchant_id, *kind, &s.id).await?;
                    SlotState::Done
                }
            };
            judged.push((seq, slot, state));
        }
        for seq in advance_head(ctx, &queue, head, version, &judged).await? {
            // Best effort: a slot left behind is only re-read, and re-checking a settled
            // object changes nothing.
            let _ = ctx.repo.delete(&queue.slot(seq)).await;
        }
        Ok(())
    }

    /// Re-checks one queued object (and a payment's pending refunds), then queues it
    /// again if it still waits.
    async fn slot<R: Repository>(
        &mut self,
        ctx: &Ctx<'_, R>,
        merchant_id: &str,
        kind: ObjectKind,
        id: &str,
    ) -> Result<(), ApiError> {
        let Some(found) = open(ctx, merchant_id, kind, id).await? else {
            return Ok(());
        };
        self.report.rechecked = self.report.rechecked.saturating_add(1);
        // Still waiting is read off the re-checks' answers (the payment was engaged with
        // its channel, so only its status can end the wait), not read from storage again.
        let mut waiting = false;
        let mut unpaid = false;
        if found.payment {
            let p = super::recheck_payment(ctx, self.channel, self.rng, merchant_id, id).await?;
            unpaid = unpaid_at_channel(p.status, found.customer_code);
            waiting |= still_waiting(p.status);
        }
        // A payment's pending refunds are each a channel call: past the call's window the
        // rest wait for the next call (the object is queued again as it is).
        let mut cut_short = false;
        for refund_id in &found.refund_ids {
            if self.out_of_time() {
                (cut_short, self.report.has_more) = (true, true);
                break;
            }
            let r = super::recheck_refund(ctx, self.channel, self.rng, merchant_id, refund_id);
            match r.await {
                Ok(r) => waiting |= r.status == RefundStatus::Pending,
                // A reservation whose refund record is gone cannot be re-checked; it must
                // not stop the run (and every merchant after this one) for good.
                Err(ApiError::ResourceMissing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let age = ctx.now_ms.saturating_sub(found.created_at_ms);
        let closing = unpaid && found.refund_ids.is_empty();
        let past_expiry = ctx.now_ms.saturating_sub(found.closes_at_ms);
        let outcome = if cut_short {
            Settled::NotYet
        } else if !waiting {
            Settled::Yes
        } else if closing && past_expiry >= 0 {
            match close_expired(ctx, self.channel, self.rng, merchant_id, id).await? {
                Closed::Unanswered if past_expiry < RECONCILE_CLOSE_GRACE_MS => Settled::NotYet,
                Closed::Unanswered | Closed::Refused => Settled::GivenUp,
                Closed::Yes => Settled::Closed,
                Closed::Settled => Settled::Yes,
            }
        } else if age < RECONCILE_HORIZON_MS {
            Settled::NotYet
        } else {
            Settled::GivenUp
        };
        let count = match outcome {
            Settled::Yes => &mut self.report.settled,
            Settled::Closed => &mut self.report.closed,
            Settled::GivenUp => &mut self.report.given_up,
            Settled::NotYet => {
                queue_again(ctx, merchant_id, kind, id, found.created_at_ms).await?;
                &mut self.report.still_open
            }
        };
        *count = count.saturating_add(1);
        Ok(())
    }
}

/// A payment read (`GET /v1/payments/{id}`) past its expiry while it still waits for its
/// customer (or a customer-presented code still `processing`, [`super::payments::revocable`]):
/// re-checked with its channel (the customer may have paid at the last
/// moment, or the channel closed the order itself) and, still unpaid, closed there and
/// canceled (`cancellation_reason: expired`) at once instead of at the next
/// reconciliation, up to a re-check interval later. A close the channel refuses or does
/// not answer leaves the payment as it is, for reconciliation to try again. One still
/// waiting for its one-time code was never sent to a channel: it is canceled as expired
/// without a channel call. Any other `processing` payment is re-checked
/// ([`super::recheck_payment`], as a read of it before its expiry) and, when the re-check
/// finds it waiting for its customer (an order whose create answer was lost), closed as
/// above; any other payment is returned as it is, with no channel call.
pub async fn close_if_expired<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    if super::payments::awaits_code(&p) && ctx.now_ms >= p.expires_at_ms() {
        // Never sent to the channel: closed here alone.
        close_expired(ctx, channel, rng, merchant_id, payment_id).await?;
        return super::get_payment(ctx, merchant_id, payment_id).await;
    }
    let customer_code = super::payments::revocable(&p);
    let expired = ctx.now_ms >= p.expires_at_ms();
    let unpaid = unpaid_at_channel(p.state.status, customer_code);
    if (unpaid && waits_on_channel(&p) && expired) || p.state.status == PaymentStatus::Processing {
        let fresh = super::recheck_payment(ctx, channel, rng, merchant_id, payment_id).await?;
        // Past its expiry and still unpaid after the re-check (also a `processing` order
        // whose create answer was lost, found waiting for its customer): closed now.
        if !(expired && unpaid_at_channel(fresh.status, customer_code)) {
            return Ok(fresh);
        }
        close_expired(ctx, channel, rng, merchant_id, payment_id).await?;
    }
    super::get_payment(ctx, merchant_id, payment_id).await
}

/// `POST /v1/payments/{id}/recheck`: [`super::recheck_payment`]; from the payment's
/// `expires_at_ms` on, [`close_if_expired`] instead, so an unpaid one is closed and
/// canceled as a read of it (and reconciliation) would, rather than left payable.
pub async fn recheck_or_close_expired<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    if ctx.now_ms >= p.expires_at_ms() {
        close_if_expired(ctx, channel, rng, merchant_id, payment_id).await
    } else {
        super::recheck_payment(ctx, channel, rng, merchant_id, payment_id).await
    }
}

/// Closes payment `id`, which nobody paid before it expired, at its channel and cancels
/// it. A close the channel refuses because the customer paid meanwhile, or a cancel
/// refused because a notification settled it meanwhile, is re-checked: then it counts as
/// settled.
async fn close_expired<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    id: &str,
) -> Result<Closed, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let expired = CancellationReason::Expired;
    match super::cancel_payment(ctx, channel, rng, merchant_id, id, expired).await {
        Ok(_) => Ok(Closed::Yes),
        Err(ApiError::ChannelDeclined { .. } | ApiError::PaymentNotCancelable { .. }) => {
            let p = super::recheck_payment(ctx, channel, rng, merchant_id, id);
            if still_waiting(p.await?.status) {
                Ok(Closed::Refused)
            } else {
                Ok(Closed::Settled)
            }
        }
        Err(ApiError::ChannelUnavailable) => Ok(Closed::Unanswered),
        Err(e) => Err(e),
    }
}

/// Where one re-checked object stands: the report field it counts in.
enum Settled {
    /// Nothing left waiting on the channel (`settled`).
    Yes,
    /// Closed at the channel and canceled (`closed`).
    Closed,
    /// Queued again (`still_open`).
    NotYet,
    /// Left to a person (`given_up`).
    GivenUp,
}

/// What closing a payment nobody paid came to.
enum Closed {
    /// Closed at the channel and canceled.
    Yes,
    /// Refused, but the payment no longer waits (paid or settled meanwhile).
    Settled,
    /// Refused, and it still waits: the channel will not close it.
    Refused,
    /// The channel did not answer (it may or may not have closed it).
    Unanswered,
}
