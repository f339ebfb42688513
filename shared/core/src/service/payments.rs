//! Create, capture, cancel, confirm (OTP), review and re-check payments.

use serde::{Deserialize, Serialize};

use super::outbox::{ObjectKind, Written, insert_with_events, pending, publish_written};
use super::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, Ctx, ReadFor, RiskClient, Updated,
    insert, internal, load_payment, payment_data, payment_events, read, to_bytes, update_payment,
    update_payment_with,
};
use crate::api::{NewPayment, PaymentResponse};
use crate::crypto::{constant_time_eq, open, seal};
use crate::error::ApiError;
use crate::idempotency::outlived_any_request;
use crate::ids::{IdKind, make_id};
use crate::keys;
use crate::machine::{PaymentCommand, PaymentState, TransitionError, apply_payment};
use crate::model::{
    CancellationReason, CaptureMode, EventType, Failure, Merchant, NextAction, Payment,
    PaymentMethod, PaymentStatus, RiskDecision,
};
use crate::repo::{RepoError, Repository};
use crate::riskengine::RiskInput;
use crate::rng::Entropy;

/// Wrong codes allowed before the payment fails: per payment, however many codes it is
/// sent (a new code keeps the attempts the old one left).
pub const OTP_ATTEMPTS_MAX: u32 = 5;
/// Most codes one payment is sent (its first, and new ones when an approval is retried):
/// beyond it an approval sends none, so nobody can flood the payer with SMS.
pub const OTP_CODES_MAX: u32 = 5;
/// How long a code is valid.
pub const OTP_TTL_MS: i64 = 5 * 60 * 1000;
/// The decline code a channel adapter reports for an order its channel closed without
/// payment (Alipay `TRADE_CLOSED`, WeChat Pay `CLOSED`, the sandbox's `closed`). Once the
/// payment has expired, such a report cancels it as `expired` ([`apply_report`]) instead
/// of failing it: the channel closed the order for the expiry spinpay sent it.
pub const CLOSED_UNPAID_CODE: &str = "trade_closed";
/// How much earlier than `expires_at_ms` a channel's clock may close an expired order.
const CHANNEL_CLOCK_SKEW_MS: i64 = 60_000;

/// An open OTP challenge (key `otp/{payment_id}`); the code is stored only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpChallenge {
    /// The payment.
    pub payment_id: String,
    /// HMAC-SHA256(current key, "{payment_id}:{code}") hex.
    pub otp_hash: String,
    /// Wrong codes still allowed.
    pub attempts_left: u32,
    /// Expiry.
    pub expires_at_ms: i64,
    /// Codes sent to the payer so far, this one included (a challenge stored before this
    /// field existed counts as one).
    #[serde(default = "one_code")]
    pub codes_sent: u32,
}

fn one_code() -> u32 {
    1
}

/// What happens after risk has spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Deny,
    Review,
    Otp,
    Channel,
}

/// `POST /v1/payments`: risk, then the method's flow, then the channel.
///
/// Order of effects: claim the merchant order id → ask risk → store the payment
/// (with its list slot and `payment.created`) → OTP or channel. A failure before the
/// payment is stored releases the order id; after, the payment exists and tells the truth
/// (an unknown channel outcome leaves it `processing`).
pub async fn create_payment<R, C, K, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    risk: &K,
    rng: &mut E,
    merchant: &Merchant,
    req: NewPayment,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    K: RiskClient,
    E: Entropy,
{
    create_payment_seeded(ctx, channel, risk, rng, merchant, req, None).await
}

/// [`create_payment`] under an Idempotency-Key: the payment id derives from the key's
/// operation seed, so a retry that takes over the abandoned lock of a crashed attempt
/// finds the payment that attempt stored instead of creating and charging a second one,
/// and goes on from where it stopped: a payment still `processing` is sent to the
/// channel again ([`resume_with_channel`]), one waiting for its one-time code gets a new
/// code, any other is the answer.
pub async fn create_payment_seeded<R, C, K, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    risk: &K,
    rng: &mut E,
    merchant: &Merchant,
    req: NewPayment,
    seed: Option<[u8; 16]>,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    K: RiskClient,
    E: Entropy,
{
    let payment_id = make_id(IdKind::Payment, &seed.unwrap_or_else(|| rng.bytes::<16>()));
    if seed.is_some()
        && let Some((earlier, _)) =
            read::<Payment, R>(ctx.repo, &keys::payment(&payment_id)).await?
        && earlier.merchant_id == merchant.id
    {
        // The crashed attempt may have died before naming the payment in the merchant's
        // list, or before (or while) asking the channel.
        return go_on_with(ctx, channel, rng, earlier).await;
    }
    if let Some(order_id) = &req.merchant_order_id {
        claim_order_id(ctx, &merchant.id, order_id, &payment_id).await?;
    }
    let stored = store_new_payment(ctx, risk, rng, merchant, &req, &payment_id).await;
    let (payment, plan, listed) = match stored {
        Ok(v) => v,
        Err(e) => {
            // The store may have written the payment and lost the answer: answering the
            // error would leave a payment the merchant was told failed, which the sweeps
            // then publish and send to the channel.
            match read::<Payment, R>(ctx.repo, &keys::payment(&payment_id)).await {
                Ok(Some((stored, _))) if stored.merchant_id == merchant.id => {
                    return go_on_with(ctx, channel, rng, stored).await;
                }
                Ok(None) => {
                    if let Some(order_id) = &req.merchant_order_id {
                        // Best effort: the order id was claimed for a payment that never
                        // existed.
                        let _ = ctx
                            .repo
                            .delete(&keys::merchant_order(&merchant.id, order_id))
                            .await;
                    }
                }
                // Unknown whether it exists: the order id stays claimed for it (a retry
                // is told `merchant_order_id_duplicate` with its id, which a read
                // resolves; a claim naming no payment is taken over later).
                _ => {}
            }
            return Err(e);
        }
    };
    let after = match plan {
        Plan::Deny | Plan::Review => Ok(payment.clone()),
        Plan::Otp => start_otp(ctx, channel, rng, &payment).await,
        Plan::Channel => authorize(ctx, channel, Some(merchant), &payment, &req.method).await,
    };
    if !listed {
        // Best effort again; the payment is the answer either way.
        let _ = list_payment(ctx, &merchant.id, payment.seq, &payment.id).await;
    }
    // The payment exists now: an error here must not reach the client as a retryable
    // failure (a retry would create and charge a second payment). The stored state is
    // the truth (`processing` resolves by query or notification), so answer with it.
    let payment = after.unwrap_or(payment);
    Ok(PaymentResponse::new(&payment, &[]))
}

/// Goes on with payment `p`, stored by a create that did not finish (it crashed, or the
/// store lost the answer to its write): names it in its merchant's list, then sends it to
/// the channel again if it was to be sent ([`resume_with_channel`]: charged once at
/// most), sends a new one-time code if it waits for one (whether the first went out is
/// unknown), and otherwise answers it as it is.
async fn go_on_with<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    p: Payment,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    list_payment(ctx, &p.merchant_id, p.seq, &p.id).await?;
    if p.channel_engaged {
        return resume_with_channel(ctx, channel, &p).await;
    }
    if awaits_code(&p) {
        let p = start_otp(ctx, channel, rng, &p).await?;
        return Ok(PaymentResponse::new(&p, &[]));
    }
    Ok(PaymentResponse::new(&p, &[]))
}

/// Names payment `id` in its merchant's list (`GET /v1/payments`) at its sequence number
/// `seq`: a slot only this payment's requests write, always with its id, so a plain
/// write (no swap), and writing it again is harmless.
pub(crate) async fn list_payment<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    seq: i64,
    id: &str,
) -> Result<(), ApiError> {
    let slot = keys::payment_index(merchant_id, seq);
    Ok(ctx.repo.put_fresh(&slot, to_bytes(&id)).await?)
}

/// A merchant order id's claim (key `mch/{mid}/order/{oid}`): the payment it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OrderClaim {
    /// `pay_…`.
    pub payment_id: String,
    /// When it was claimed.
    pub claimed_at_ms: i64,
}

/// Claims the order id for `payment_id`. A claim naming a payment that was never stored
/// (its request crashed in between) is taken over once it is older than any request
/// can run ([`outlived_any_request`]), with compare-and-swap;
/// otherwise the order id is a duplicate.
async fn claim_order_id<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    order_id: &str,
    payment_id: &str,
) -> Result<(), ApiError> {
    let key = keys::merchant_order(merchant_id, order_id);
    let claim = OrderClaim {
        payment_id: payment_id.to_string(),
        claimed_at_ms: ctx.now_ms,
    };
    if insert(ctx.repo, &key, &claim).await? {
        return Ok(());
    }
    let duplicate = |holder: String| ApiError::MerchantOrderIdDuplicate {
        id: order_id.to_string(),
        payment_id: holder,
    };
    let Some((held, version)) = read::<OrderClaim, R>(ctx.repo, &key).await? else {
        return Err(duplicate(String::new()));
    };
    if held.payment_id == payment_id {
        return Ok(());
    }
    let abandoned = outlived_any_request(held.claimed_at_ms, ctx.now_ms)
        && ctx
            .repo
            .get(&keys::payment(&held.payment_id))
            .await?
            .is_none();
    if !abandoned {
        return Err(duplicate(held.payment_id));
    }
    match ctx
        .repo
        .put_if_version(&key, version, super::to_bytes(&claim))
        .await
    {
        Ok(_) => Ok(()),
        Err(crate::repo::RepoError::Conflict { .. }) => Err(duplicate(held.payment_id)),
        Err(e) => Err(e.into()),
    }
}

/// Asks risk and stores the new payment with `payment.created`: the payment, its plan,
/// and whether it is named in the merchant's list yet.
async fn store_new_payment<R, K, E>(
    ctx: &Ctx<'_, R>,
    risk: &K,
    rng: &mut E,
    merchant: &Merchant,
    req: &NewPayment,
    payment_id: &str,
) -> Result<(Payment, Plan, bool), ApiError>
where
    R: Repository,
    K: RiskClient,
    E: Entropy,
{
    let input = RiskInput::for_payment(&merchant.id, payment_id, req);
    let assessment = risk
        .assess(&input)
        .await
        .map_err(|_| ApiError::RiskUnavailable)?;
    let seq = ctx
        .repo
        .increment(&keys::payment_seq(&merchant.id), 1)
        .await?;
    let mut payment = build_payment(ctx, rng, merchant, req, payment_id, seq);
    let has_phone = otp_phone(ctx, &payment)?.is_some();
    let plan = match assessment.decision {
        RiskDecision::Deny => Plan::Deny,
        RiskDecision::Review => Plan::Review,
        // A challenge without a phone to send the code to goes to a person instead.
        RiskDecision::Challenge if has_phone => Plan::Otp,
        RiskDecision::Challenge => Plan::Review,
        RiskDecision::Allow if req.method.kind() == crate::model::MethodKind::SmsOtp => Plan::Otp,
        RiskDecision::Allow => Plan::Channel,
    };
    payment.risk = Some(assessment);
    apply_plan(&mut payment, plan)?;
    // `payment.created` is stored with the payment itself (the outbox), then published.
    let created = pending(
        payment_id,
        0,
        EventType::PaymentCreated,
        ctx.now_ms,
        payment_data(&payment),
    );
    let (kind, mid) = (ObjectKind::Payment, merchant.id.as_str());
    let mut events = vec![created];
    if payment.state.status != PaymentStatus::Processing {
        // Risk already moved it (denied, held for review, waiting for its code): that
        // change is an event of its own, as every later one is.
        let initial = Payment {
            state: PaymentState::new(payment.state.amount_minor),
            ..payment.clone()
        };
        events.extend(super::payment_change_events(&initial, &payment, ctx.now_ms));
    }
    if !insert_with_events(ctx, kind, mid, payment_id, &payment, events.clone()).await? {
        return Err(internal("payment id collision"));
    }
    // The payment exists from here on: nothing may fail the request (a retry would make
    // a second one). A list slot not written now is tried once more at the end of the
    // request; should that fail too, the payment is missing from `GET /v1/payments`
    // (its id, events and notifications are unaffected) unless the sweep publishes its
    // `payment.created`, which lists it.
    let listed = list_payment(ctx, &merchant.id, seq, &payment.id)
        .await
        .is_ok();
    // What the insert stored: version 1 with `payment.created` pending and the marker
    // just written. When the channel is asked next, its answer's write carries
    // `payment.created` forward and both events are published together (one read and
    // one write fewer); otherwise it is published now. A failure is left to the sweep.
    if plan != Plan::Channel && listed {
        let written = Written {
            version: 1,
            outbox: events,
            marked_at_ms: Some(ctx.now_ms),
        };
        let _ = publish_written(ctx, &payment, &written, Some(merchant)).await;
    }
    Ok((payment, plan, listed))
}

fn apply_plan(payment: &mut Payment, plan: Plan) -> Result<(), ApiError> {
    let command = match plan {
        Plan::Deny => {
            payment.failure = Some(Failure {
                code: "risk_denied".into(),
                message: "The payment was refused by risk control.".into(),
            });
            PaymentCommand::RiskDenied
        }
        Plan::Review => PaymentCommand::RiskReview,
        Plan::Otp => {
            payment.next_action = Some(NextAction::EnterOtp);
            PaymentCommand::AwaitCustomer
        }
        Plan::Channel => {
            payment.channel_engaged = true;
            return Ok(());
        }
    };
    payment.state = apply_payment(&payment.state, &command).map_err(internal)?;
    Ok(())
}

fn build_payment<R, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant: &Merchant,
    req: &NewPayment,
    payment_id: &str,
    seq: i64,
) -> Payment {
    let aad = payment_id.as_bytes();
    let method_sealed = (req.method.carries_payer_credential())
        .then(|| seal(ctx.keys, rng.bytes(), &super::to_bytes(&req.method), aad));
    let mut payer = req.payer.clone();
    let phone = payer.as_mut().and_then(|p| p.phone.take());
    let payer_phone_sealed = phone.map(|ph| seal(ctx.keys, rng.bytes(), ph.as_bytes(), aad));
    Payment {
        id: payment_id.to_string(),
        merchant_id: merchant.id.clone(),
        seq,
        state: PaymentState::new(req.amount_minor),
        currency: req.currency,
        channel: req.channel,
        capture: req.capture,
        merchant_order_id: req.merchant_order_id.clone(),
        description: req.description.clone(),
        method: req.method.masked(),
        method_sealed,
        payer,
        payer_phone_sealed,
        metadata: req.metadata.clone(),
        next_action: None,
        risk: None,
        failure: None,
        conflict: None,
        channel_ref: None,
        channel_engaged: false,
        created_at_ms: ctx.now_ms,
        updated_at_ms: ctx.now_ms,
        expires_at_ms: Some(ctx.now_ms.saturating_add(req.expires_in_ms)),
        cancellation_reason: None,
        engaged_at_ms: None,
        cancel_requested: None,
    }
}

/// The full (unsealed) method of a stored payment.
pub(crate) fn unseal_method<R>(ctx: &Ctx<'_, R>, p: &Payment) -> Result<PaymentMethod, ApiError> {
    let Some(sealed) = &p.method_sealed else {
        return Ok(p.method.clone());
    };
    let bytes = open(ctx.keys, sealed, p.id.as_bytes()).map_err(internal)?;
    serde_json::from_slice(&bytes).map_err(internal)
}

/// The phone an OTP goes to: the sms_otp method's, else the payer's.
fn otp_phone<R>(ctx: &Ctx<'_, R>, p: &Payment) -> Result<Option<String>, ApiError> {
    if let PaymentMethod::SmsOtp { phone } = unseal_method(ctx, p)? {
        return Ok(Some(phone));
    }
    match &p.payer_phone_sealed {
        Some(s) => {
            let bytes = open(ctx.keys, s, p.id.as_bytes()).map_err(internal)?;
            Ok(Some(String::from_utf8(bytes).map_err(internal)?))
        }
        None => Ok(None),
    }
}

/// Sends the channel the payment and applies its answer (`merchant` when the caller
/// has it, which spares publishing a read).
async fn authorize<R, C>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    merchant: Option<&Merchant>,
    payment: &Payment,
    method: &PaymentMethod,
) -> Result<Payment, ApiError>
where
    R: Repository,
    C: ChannelClient,
{
    let outcome = channel.authorize(payment, method).await;
    let report = ChannelReport {
        outcome,
        amount_minor: None,
        currency: None,
    };
    // The channel's first answer: it moves a new payment on (or fails it).
    let u = apply_report(ctx, &payment.id, &report, ReadFor::Change).await;
    match &u {
        Ok(u) if u.changed => super::publish_update(ctx, u, merchant).await,
        // Events an earlier write left pending (a new payment's `payment.created`) still
        // go out now rather than at the next sweep.
        Ok(_) | Err(_) => {
            let _ = super::outbox::publish(ctx, ObjectKind::Payment, &payment.id).await;
        }
    }
    let u = u?;
    Ok(u.after)
}

/// The state-machine command a channel outcome means for `p`.
pub(crate) fn command_for(outcome: &ChannelOutcome, p: &Payment) -> PaymentCommand {
    match outcome {
        ChannelOutcome::Succeeded { .. } if p.capture == CaptureMode::Manual => {
            PaymentCommand::ChannelAuthorized
        }
        ChannelOutcome::Succeeded { .. } => PaymentCommand::ChannelSucceeded,
        ChannelOutcome::Authorized { .. } => PaymentCommand::ChannelAuthorized,
        ChannelOutcome::Pending {
            next_action: Some(_),
            ..
        } => PaymentCommand::AwaitCustomer,
        ChannelOutcome::Pending { .. } => PaymentCommand::ChannelPending,
        ChannelOutcome::Declined { .. } => PaymentCommand::ChannelFailed,
        ChannelOutcome::Unknown { .. } => PaymentCommand::ChannelUnknown,
    }
}

/// Applies a channel report to a payment (CAS): amount/currency mismatches and
/// contradictions of a terminal status flag a conflict instead of applying.
pub(crate) async fn apply_report<R: Repository>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    report: &ChannelReport,
    read_for: ReadFor,
) -> Result<Updated<Payment>, ApiError> {
    let now_ms = ctx.now_ms;
    update_payment_with(ctx, payment_id, read_for, Vec::new(), |p| {
        report_applied(p, report, now_ms)
    })
    .await
}

/// Applies `report`, which the channel gave right after it refused to revoke the payment
/// and which says it holds the money: the revoke did not happen, so the cancel's intent
/// ([`Payment::cancel_requested`]) is dropped in the same write, whether or not the report
/// changes anything else (it may have been applied already), and neither this report nor
/// a later one is flagged as paid while revoking, nor a later close taken for this
/// cancel's.
async fn apply_report_revoke_refused<R: Repository>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    report: &ChannelReport,
) -> Result<Updated<Payment>, ApiError> {
    let now_ms = ctx.now_ms;
    update_payment_with(ctx, payment_id, ReadFor::Change, Vec::new(), |p| {
        let kept = Payment {
            cancel_requested: None,
            ..p.clone()
        };
        let intent_dropped = p.cancel_requested.is_some().then(|| kept.clone());
        Ok(report_applied(&kept, report, now_ms)?.or(intent_dropped))
    })
    .await
}

/// What a channel `report` makes of payment `p` (`None`: nothing changes): amount or
/// currency mismatches and contradictions of a terminal status flag a conflict instead
/// of applying.
fn report_applied(
    p: &Payment,
    report: &ChannelReport,
    now_ms: i64,
) -> Result<Option<Payment>, ApiError> {
    if let Some(reason) = mismatch(p, report) {
        return Ok(flag_conflict(
            p,
            reason,
            report.amount_minor,
            report.currency.clone(),
            now_ms,
        ));
    }
    if let Some(reason) = closed_by_us(&report.outcome, p, now_ms)
        && let Ok(state) = apply_payment(&p.state, &PaymentCommand::Cancel)
    {
        return Ok(Some(Payment {
            state,
            next_action: None,
            cancellation_reason: Some(reason),
            ..p.clone()
        }));
    }
    let command = command_for(&report.outcome, p);
    match apply_payment(&p.state, &command) {
        // Paid while a cancel asked the channel to revoke it: the revoke may have
        // returned the money (its answer lost, or still to come). Flagged for a
        // person (`payment.conflicted`).
        Ok(state) if revocable(p) && p.cancel_requested.is_some() && claims_money(report) => {
            let next = with_outcome(p, state, &report.outcome);
            let (amount, currency) = (report.amount_minor, report.currency.clone());
            let flagged = flag_conflict(&next, "paid_while_revoking", amount, currency, now_ms);
            Ok(flagged.or(Some(next)))
        }
        Ok(state) => Ok(Some(with_outcome(p, state, &report.outcome))),
        Err(TransitionError::AlreadyApplied) => Ok(None),
        Err(TransitionError::Contradiction { .. }) => Ok(flag_conflict(
            p,
            "status_contradiction",
            report.amount_minor,
            report.currency.clone(),
            now_ms,
        )),
        Err(TransitionError::NotAllowed { .. }) => Ok(None),
        Err(other) => Err(internal(other)),
    }
}

/// Why `p` is canceled when `outcome` says the channel ended it unpaid: the reason a
/// cancel asked for ([`Payment::cancel_requested`]: the close or revoke, whatever code
/// the channel names it by, is that cancel's), or, for one waiting for its customer
/// that the channel closed, `expired` once it expired (at `now_ms`, give or take the
/// channel's clock). `None`: the end is a failure.
fn closed_by_us(outcome: &ChannelOutcome, p: &Payment, now_ms: i64) -> Option<CancellationReason> {
    let ended = matches!(outcome, ChannelOutcome::Declined { .. });
    let closed =
        matches!(outcome, ChannelOutcome::Declined { code, .. } if code == CLOSED_UNPAID_CODE);
    let waiting = p.state.status == PaymentStatus::RequiresCustomerAction;
    let expired = now_ms >= p.expires_at_ms().saturating_sub(CHANNEL_CLOCK_SKEW_MS);
    match p.cancel_requested {
        Some(reason) if ended => Some(reason),
        _ if closed && waiting && expired => Some(CancellationReason::Expired),
        _ => None,
    }
}

/// Whether `report` says the channel took (or holds) the payment's money.
fn claims_money(report: &ChannelReport) -> bool {
    matches!(
        report.outcome,
        ChannelOutcome::Succeeded { .. } | ChannelOutcome::Authorized { .. }
    )
}

fn mismatch(p: &Payment, report: &ChannelReport) -> Option<&'static str> {
    if !claims_money(report) {
        return None;
    }
    if report
        .amount_minor
        .is_some_and(|a| a != p.state.amount_minor)
    {
        return Some("amount_mismatch");
    }
    if report
        .currency
        .as_deref()
        .is_some_and(|c| c != p.currency.code())
    {
        return Some("currency_mismatch");
    }
    None
}

/// `p` flagged as conflicted for `reason`, with the amount and currency the channel
/// stated (if any), or `None` when it already is.
pub(crate) fn flag_conflict(
    p: &Payment,
    reason: &str,
    stated_amount_minor: Option<i64>,
    stated_currency: Option<String>,
    now_ms: i64,
) -> Option<Payment> {
    let state = apply_payment(&p.state, &PaymentCommand::FlagConflict).ok()?;
    let mut next = p.clone();
    next.state = state;
    next.conflict = Some(crate::model::Conflict {
        reason: reason.to_string(),
        channel_amount_minor: stated_amount_minor,
        channel_currency: stated_currency,
        detected_at_ms: now_ms,
    });
    Some(next)
}

/// Closes payment `payment_id`, which a late confirm or approval read as still open
/// past its expiry, as expired (nothing was sent to the channel yet), and answers that
/// endpoint's refusal (`refused`) with the status the payment ends in, or the one
/// another request moved it to meanwhile.
async fn close_expired_refusing<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    refused: fn(&'static str) -> ApiError,
) -> ApiError
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let expired = CancellationReason::Expired;
    match cancel_payment(ctx, channel, rng, merchant_id, payment_id, expired).await {
        Ok(closed) => status_error(closed.status, refused),
        Err(ApiError::PaymentNotCancelable { status }) => refused(status),
        Err(other) => other,
    }
}

fn with_outcome(p: &Payment, state: PaymentState, outcome: &ChannelOutcome) -> Payment {
    let mut next = p.clone();
    next.state = state;
    match outcome {
        ChannelOutcome::Succeeded { channel_ref } | ChannelOutcome::Authorized { channel_ref } => {
            next.channel_ref = channel_ref.clone().or(next.channel_ref);
            next.next_action = None;
        }
        ChannelOutcome::Pending {
            channel_ref,
            next_action,
        } => {
            next.channel_ref = channel_ref.clone().or(next.channel_ref);
            if next_action.is_some() {
                next.next_action = next_action.clone();
            }
        }
        ChannelOutcome::Declined { code, message } => {
            next.next_action = None;
            next.failure = Some(Failure {
                code: "channel_declined".into(),
                message: format!("{code}: {message}"),
            });
        }
        ChannelOutcome::Unknown { .. } => {}
    }
    next
}

fn status_error(status: PaymentStatus, f: fn(&'static str) -> ApiError) -> ApiError {
    f(status.as_str())
}

/// `POST /v1/payments/{id}/capture`: capture all (amount absent) or part of an
/// authorization. The channel is asked first; the payment changes only if it agrees.
///
/// `resumes`: the request took over a crashed attempt's Idempotency-Key lock
/// ([`super::IdempotencyTicket::resumes`]). That attempt may have captured and died
/// before storing its answer: a payment captured by exactly the amount asked for is
/// then the answer, not `payment_not_capturable`.
pub async fn capture_payment<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    amount_minor: Option<i64>,
    resumes: bool,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    let amount_minor = amount_minor.unwrap_or(p.state.authorized_minor);
    if p.state.status != PaymentStatus::RequiresCapture {
        let captured = p.state.status == PaymentStatus::Succeeded
            && p.capture == CaptureMode::Manual
            && p.state.captured_minor == amount_minor;
        if resumes && captured {
            return resume_with_channel(ctx, channel, &p).await;
        }
        return Err(status_error(p.state.status, |status| {
            ApiError::PaymentNotCapturable { status }
        }));
    }
    let command = PaymentCommand::Capture { amount_minor };
    apply_payment(&p.state, &command).map_err(|e| transition_error(e, &p))?;
    match channel.capture(&p, amount_minor).await {
        ActionOutcome::Done => {}
        ActionOutcome::Declined { code, message } => {
            return Err(ApiError::ChannelDeclined {
                message: format!("{code}: {message}"),
            });
        }
        ActionOutcome::Unknown { .. } => return Err(ApiError::ChannelUnavailable),
    }
    let u = update_payment(ctx, payment_id, |cur| {
        match apply_payment(&cur.state, &command) {
            Ok(state) => Ok(Some(Payment {
                state,
                ..cur.clone()
            })),
            Err(TransitionError::AlreadyApplied) => Ok(None),
            Err(e) => Err(transition_error(e, cur)),
        }
    })
    .await?;
    payment_events(ctx, rng, &u).await?;
    Ok(PaymentResponse::new(&u.after, &[]))
}

/// Maps a refused transition to the public error.
pub(crate) fn transition_error(e: TransitionError, p: &Payment) -> ApiError {
    let status = p.state.status.as_str();
    match e {
        TransitionError::CaptureExceedsAuthorized { authorized_minor } => {
            ApiError::CaptureExceedsAuthorized { authorized_minor }
        }
        TransitionError::RefundExceedsCaptured { available_minor } => {
            ApiError::RefundExceedsCaptured { available_minor }
        }
        TransitionError::RefundsPerPaymentExceeded => ApiError::RefundLimitReached {
            max: crate::machine::REFUNDS_PER_PAYMENT_MAX as u32,
        },
        TransitionError::AmountInvalid => ApiError::AmountInvalid {
            param: "amount_minor".into(),
            reason: "must be greater than 0".into(),
        },
        TransitionError::NotAllowed { command, .. } => match command {
            "capture" => ApiError::PaymentNotCapturable { status },
            "cancel" => ApiError::PaymentNotCancelable { status },
            "reserve_refund" => ApiError::PaymentNotRefundable { status },
            "otp_confirmed" => ApiError::PaymentNotConfirmable { status },
            "review_approved" | "review_declined" => ApiError::PaymentNotInReview { status },
            _other => internal(format!("{command} refused in {status}")),
        },
        TransitionError::AlreadyApplied
        | TransitionError::Contradiction { .. }
        | TransitionError::RefundContradiction { .. } => internal(e),
    }
}

/// `POST /v1/payments/{id}/cancel`: void an uncaptured payment (through the channel if
/// the channel knows it), for `reason`. Canceling a canceled payment returns it
/// unchanged (with the reason it was canceled for first).
pub async fn cancel_payment<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    reason: CancellationReason,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let mut p = load_payment(ctx, merchant_id, payment_id).await?;
    match apply_payment(&p.state, &PaymentCommand::Cancel) {
        Ok(_) if p.state.status == PaymentStatus::Processing && !revocable(&p) => {
            return Err(ApiError::PaymentNotCancelable {
                status: p.state.status.as_str(),
            });
        }
        Ok(_) => {}
        Err(TransitionError::AlreadyApplied) => return Ok(PaymentResponse::new(&p, &[])),
        Err(e) => return Err(transition_error(e, &p)),
    }
    if p.channel_engaged && p.cancel_requested.is_none() {
        p = record_cancel_intent(ctx, payment_id, reason).await?;
        if p.state.status == PaymentStatus::Canceled {
            return Ok(PaymentResponse::new(&p, &[]));
        }
    }
    if p.channel_engaged {
        match channel.cancel(&p).await {
            ActionOutcome::Done => {}
            ActionOutcome::Declined { code, message } => {
                // A repeat of a cancel that went through but whose answer or write was
                // lost (a retry after a crash) is refused by a channel that does not close
                // twice (Alipay): the channel's own status, closed (or declined: no money
                // moved), says it went through, and the cancel goes on.
                let report = channel.query(&p).await;
                if !matches!(report.outcome, ChannelOutcome::Declined { .. }) {
                    // Refused, and the channel holds the money (captured, paid): the
                    // payment settles as the channel says, and the cancel is refused.
                    if claims_money(&report) {
                        let u = apply_report_revoke_refused(ctx, payment_id, &report).await?;
                        payment_events(ctx, rng, &u).await?;
                    }
                    return Err(ApiError::ChannelDeclined {
                        message: format!("{code}: {message}"),
                    });
                }
            }
            ActionOutcome::Unknown { .. } => return Err(ApiError::ChannelUnavailable),
        }
    }
    let u = update_payment(ctx, payment_id, |cur| {
        if cur.channel_engaged && !p.channel_engaged {
            // Sent to the channel since it was read (an approval or a confirmed code in
            // between): canceling it here alone would leave it payable, or its funds
            // held, there. The retry reads it engaged and closes it at the channel.
            return Err(ApiError::ConcurrentModification);
        }
        match apply_payment(&cur.state, &PaymentCommand::Cancel) {
            Ok(state) => Ok(Some(Payment {
                state,
                next_action: None,
                cancellation_reason: Some(reason),
                ..cur.clone()
            })),
            Err(TransitionError::AlreadyApplied) => Ok(None),
            // Paid meanwhile (a report applied while the channel revoked it, which
            // returns a paid code's money): refused; that report flagged the payment
            // ([`apply_report`]).
            Err(e) => Err(transition_error(e, cur)),
        }
    })
    .await?;
    let _ = ctx.repo.delete(&keys::otp(payment_id)).await;
    payment_events(ctx, rng, &u).await?;
    Ok(PaymentResponse::new(&u.after, &[]))
}

/// Records that payment `payment_id` is to be closed at its channel for `reason`
/// ([`Payment::cancel_requested`]) and returns it, unless it can no longer be canceled
/// (the refusal) or already is (returned as it is).
async fn record_cancel_intent<R: Repository>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    reason: CancellationReason,
) -> Result<Payment, ApiError> {
    let u = update_payment(ctx, payment_id, |cur| {
        match apply_payment(&cur.state, &PaymentCommand::Cancel) {
            Ok(_) if cur.cancel_requested.is_none() => Ok(Some(Payment {
                cancel_requested: Some(reason),
                ..cur.clone()
            })),
            Ok(_) | Err(TransitionError::AlreadyApplied) => Ok(None),
            Err(e) => Err(transition_error(e, cur)),
        }
    })
    .await?;
    Ok(u.after)
}

/// Generates a code, stores its hash, sends it by SMS. A failed send fails the payment
/// (`otp_delivery_failed`): the payer could never complete it.
async fn start_otp<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    payment: &Payment,
) -> Result<Payment, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let phone = otp_phone(ctx, payment)?.ok_or_else(|| internal("otp without phone"))?;
    let key = keys::otp(&payment.id);
    let earlier = read::<OtpChallenge, R>(ctx.repo, &key).await?;
    // A new code replaces an earlier one with the attempts that one left: however often
    // an approval is retried, a payment allows OTP_ATTEMPTS_MAX wrong codes in all.
    let (attempts_left, codes_sent, version) = match earlier {
        Some((c, _)) if c.codes_sent >= OTP_CODES_MAX => return Ok(payment.clone()),
        Some((c, version)) => (c.attempts_left, c.codes_sent.saturating_add(1), version),
        None => (OTP_ATTEMPTS_MAX, 1, 0),
    };
    let code = format!("{:06}", u64::from_le_bytes(rng.bytes()) % 1_000_000);
    let challenge = OtpChallenge {
        payment_id: payment.id.clone(),
        otp_hash: ctx
            .keys
            .keyed_hash_hex(format!("{}:{code}", payment.id).as_bytes()),
        attempts_left,
        expires_at_ms: ctx.now_ms + OTP_TTL_MS,
        codes_sent,
    };
    ctx.repo
        .put_if_version(&key, version, to_bytes(&challenge))
        .await?;
    let text = format!("Your spinpay code is {code}");
    if channel.send_sms(&phone, &text).await.is_ok() {
        return Ok(payment.clone());
    }
    let failure = Failure {
        code: "otp_delivery_failed".into(),
        message: "The one-time code could not be sent.".into(),
    };
    let u = fail_otp(ctx, &payment.id, failure).await?;
    payment_events(ctx, rng, &u).await?;
    Ok(u.after)
}

async fn fail_otp<R: Repository>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    failure: Failure,
) -> Result<Updated<Payment>, ApiError> {
    let _ = ctx.repo.delete(&keys::otp(payment_id)).await;
    update_payment(ctx, payment_id, |cur| {
        match apply_payment(&cur.state, &PaymentCommand::OtpFailed) {
            Ok(state) => Ok(Some(Payment {
                state,
                next_action: None,
                failure: Some(failure.clone()),
                ..cur.clone()
            })),
            Err(_) => Ok(None),
        }
    })
    .await
}

/// What a compared code turned out to be.
enum CodeCompared {
    /// The code: the payment may proceed.
    Right,
    /// Wrong, with attempts left.
    Wrong { attempts_left: u32 },
    /// Wrong, and this request spent the last attempt on it: it fails the payment.
    LastWrong,
}

/// Checks a submitted code against the challenge. An attempt is spent (compare-and-swap
/// on the counter) before the code is compared, so however many codes arrive at once, at
/// most [`OTP_ATTEMPTS_MAX`] are ever compared: a code whose attempt could not be taken
/// is refused unseen (`otp_attempts_exceeded`, failing nothing: whichever request spent
/// the last attempt decides the payment, and a right code may have).
async fn check_otp<R: Repository>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    otp: &str,
) -> Result<CodeCompared, ApiError> {
    let key = keys::otp(payment_id);
    let expected = ctx
        .keys
        .keyed_hash_hex(format!("{payment_id}:{otp}").as_bytes());
    for _attempt in 0..super::CAS_RETRIES_MAX {
        let Some((mut c, version)) =
            super::read_for_update::<OtpChallenge, R>(ctx.repo, &key).await?
        else {
            return Err(ApiError::OtpExpired);
        };
        if ctx.now_ms > c.expires_at_ms {
            return Err(ApiError::OtpExpired);
        }
        if c.attempts_left == 0 {
            return Err(ApiError::OtpAttemptsExceeded);
        }
        c.attempts_left -= 1;
        match ctx.repo.put_if_version(&key, version, to_bytes(&c)).await {
            Ok(_) => {}
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        return Ok(
            match (
                constant_time_eq(c.otp_hash.as_bytes(), expected.as_bytes()),
                c.attempts_left,
            ) {
                (true, _) => CodeCompared::Right,
                (false, 0) => CodeCompared::LastWrong,
                (false, attempts_left) => CodeCompared::Wrong { attempts_left },
            },
        );
    }
    Err(ApiError::ConcurrentModification)
}

/// `POST /v1/payments/{id}/confirm`: the payer's OTP. Right → the payment proceeds to
/// the channel; wrong → `otp_invalid` with attempts left; the fifth wrong code fails the
/// payment; after 5 minutes → `otp_expired`.
///
/// `resumes`: the request took over a crashed attempt's Idempotency-Key lock. That
/// attempt may have accepted the code and died before or while asking the channel: the
/// payment then goes on from where it stopped ([`resume_with_channel`]) instead of
/// answering `payment_not_confirmable`.
pub async fn confirm_payment<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    otp: &str,
    resumes: bool,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    if resumes && p.channel_engaged {
        return resume_with_channel(ctx, channel, &p).await;
    }
    if !awaits_code(&p) {
        return Err(ApiError::PaymentNotConfirmable {
            status: p.state.status.as_str(),
        });
    }
    if ctx.now_ms >= p.expires_at_ms() {
        // Past its own expiry, a code no longer pays it: it is closed (nothing was sent
        // to the channel) and the late code refused.
        let refused = |status| ApiError::PaymentNotConfirmable { status };
        return Err(
            close_expired_refusing(ctx, channel, rng, merchant_id, payment_id, refused).await,
        );
    }
    match check_otp(ctx, payment_id, otp).await? {
        CodeCompared::Right => {}
        CodeCompared::Wrong { attempts_left } => {
            return Err(ApiError::OtpInvalid { attempts_left });
        }
        CodeCompared::LastWrong => {
            let failure = Failure {
                code: "otp_attempts_exceeded".into(),
                message: "Too many incorrect codes.".into(),
            };
            let u = fail_otp(ctx, payment_id, failure).await?;
            payment_events(ctx, rng, &u).await?;
            return Err(ApiError::OtpAttemptsExceeded);
        }
    }
    let u = update_payment(ctx, payment_id, |cur| {
        match apply_payment(&cur.state, &PaymentCommand::OtpConfirmed) {
            Ok(state) => Ok(Some(Payment {
                state,
                next_action: None,
                channel_engaged: true,
                engaged_at_ms: Some(ctx.now_ms),
                ..cur.clone()
            })),
            Err(e) => Err(transition_error(e, cur)),
        }
    })
    .await;
    let u = match u {
        Ok(u) => u,
        Err(e) => return sent_after_all(ctx, channel, merchant_id, payment_id, e).await,
    };
    let _ = ctx.repo.delete(&keys::otp(payment_id)).await;
    payment_events(ctx, rng, &u).await?;
    let method = unseal_method(ctx, &u.after)?;
    // Asked, the channel may have charged: a failure to store its answer must not reach
    // the client as retryable; the stored payment is the truth until a query settles it.
    let after = authorize(ctx, channel, None, &u.after, &method).await;
    Ok(PaymentResponse::new(&after.unwrap_or(u.after), &[]))
}

/// Approve or decline a payment held in `requires_review`. Approved payments continue
/// their flow (OTP for `sms_otp`, else the channel).
///
/// `resumes`: the request took over a crashed attempt's Idempotency-Key lock. That
/// attempt may have stored the decision and died before acting on it: an approval then
/// goes on from where it stopped (the channel asked again, see [`resume_with_channel`],
/// or a new code sent), and a decline answers with the declined payment, instead of
/// `payment_not_in_review`.
pub async fn review_payment<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    approve: bool,
    resumes: bool,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    let sms = matches!(p.method, PaymentMethod::SmsOtp { .. });
    // Held for review by risk: only such a payment can have been approved before.
    let reviewed = p
        .risk
        .as_ref()
        .is_some_and(|r| r.decision == RiskDecision::Review);
    // An approval of a reviewed `sms_otp` payment that already waits for its code is the
    // retry of one whose answer was an error (its write may have landed, its code gone
    // out or not): it goes on like a resumed one, with a new code. One never held for
    // review was never approved: refused (`payment_not_in_review`), no code sent.
    let resumes = resumes || (approve && sms && reviewed && awaits_code(&p));
    if resumes && p.state.status != PaymentStatus::RequiresReview {
        let declined = p
            .failure
            .as_ref()
            .is_some_and(|f| f.code == "review_declined");
        match (approve, sms) {
            (true, false) if p.channel_engaged => {
                return resume_with_channel(ctx, channel, &p).await;
            }
            (true, true) if reviewed && awaits_code(&p) => {
                // Whether its code went out is unknown (a stored challenge does not
                // say): a new code replaces it, so the payer surely gets one.
                let p = start_otp(ctx, channel, rng, &p).await?;
                return Ok(PaymentResponse::new(&p, &[]));
            }
            (false, _) if declined => return Ok(PaymentResponse::new(&p, &[])),
            _ => {}
        }
    }
    if approve && p.state.status == PaymentStatus::RequiresReview && ctx.now_ms >= p.expires_at_ms()
    {
        // Past its own expiry the customer can no longer pay it, and a channel would be
        // sent an order that expired before it was sent: it is closed (nothing went to
        // the channel yet) and the approval refused.
        let refused = |status| ApiError::PaymentNotInReview { status };
        return Err(
            close_expired_refusing(ctx, channel, rng, merchant_id, payment_id, refused).await,
        );
    }
    let command = if approve {
        PaymentCommand::ReviewApproved
    } else {
        PaymentCommand::ReviewDeclined
    };
    let u = update_payment(ctx, payment_id, |cur| {
        let mut state =
            apply_payment(&cur.state, &command).map_err(|e| transition_error(e, cur))?;
        let mut next = cur.clone();
        if approve && sms {
            state = apply_payment(&state, &PaymentCommand::AwaitCustomer).map_err(internal)?;
            next.next_action = Some(NextAction::EnterOtp);
        } else if approve {
            next.channel_engaged = true;
            next.engaged_at_ms = Some(ctx.now_ms);
        } else {
            next.failure = Some(Failure {
                code: "review_declined".into(),
                message: "The payment was declined in review.".into(),
            });
        }
        next.state = state;
        Ok(Some(next))
    })
    .await;
    let u = match u {
        Ok(u) => u,
        Err(e) => return sent_after_all(ctx, channel, merchant_id, payment_id, e).await,
    };
    payment_events(ctx, rng, &u).await?;
    let after = match (approve, sms) {
        (false, _) => u.after,
        (true, true) => start_otp(ctx, channel, rng, &u.after).await?,
        (true, false) => {
            let method = unseal_method(ctx, &u.after)?;
            // As in confirm: once asked, the stored payment is the answer on failure.
            let after = authorize(ctx, channel, None, &u.after, &method).await;
            after.unwrap_or(u.after)
        }
    };
    Ok(PaymentResponse::new(&after, &[]))
}

/// The answer to a confirm or approval whose write, to send payment `payment_id` to its
/// channel, failed with `error`: a store may have written it and lost the answer, and a
/// payment stored as sent is sent by reconciliation later, so answering the error would
/// tell the merchant it failed and charge the customer after all. Stored as sent, it is
/// sent now ([`resume_with_channel`]: charged once at most) and is the answer; otherwise
/// (not written, or unreadable too) the error.
async fn sent_after_all<R, C>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    merchant_id: &str,
    payment_id: &str,
    error: ApiError,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
{
    if error != ApiError::StorageUnavailable {
        return Err(error);
    }
    match load_payment(ctx, merchant_id, payment_id).await {
        Ok(p) if p.channel_engaged && p.state.status == PaymentStatus::Processing => {
            resume_with_channel(ctx, channel, &p).await
        }
        _ => Err(error),
    }
}

/// Whether `p` waits for the payer's one-time code.
pub(crate) fn awaits_code(p: &Payment) -> bool {
    p.state.status == PaymentStatus::RequiresCustomerAction
        && p.next_action == Some(NextAction::EnterOtp)
}

/// A resumed request's payment that the channel was to be asked about: one still
/// `processing` is sent to the channel again, from the stored (sealed) method; any
/// other is answered as stored, with the events its crashed attempt may have left
/// pending in the record published. The crashed attempt may or may not have reached the
/// channel, and asking twice charges once: the channel knows the payment by its id and
/// deduplicates (the sandbox by `payment_id`, Alipay and WeChat Pay by `out_trade_no`,
/// UnionPay by `orderId` with [`Payment::engaged_at_ms`] as `txnTime`).
async fn resume_with_channel<R, C>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    p: &Payment,
) -> Result<PaymentResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
{
    // Never once a cancel asked the channel to revoke it: sending it again could charge
    // the customer for a sale the merchant gave up on.
    if p.state.status != PaymentStatus::Processing || p.cancel_requested.is_some() {
        // Events the crashed attempt left pending in the record go out now.
        let _ = super::outbox::publish(ctx, ObjectKind::Payment, &p.id).await;
        return Ok(PaymentResponse::new(p, &[]));
    }
    let method = unseal_method(ctx, p)?;
    let after = authorize(ctx, channel, None, p, &method).await;
    Ok(PaymentResponse::new(after.as_ref().unwrap_or(p), &[]))
}

/// Whether `p`, `processing`, can be canceled: a charge the payer authorised through
/// spinpay (a customer-presented code or token, or a confirmed one-time code) sent to its
/// channel whose outcome is not known (the customer has not confirmed in the wallet yet,
/// the channel holds it pending, or the answer was lost). Its channel revokes it (Alipay
/// `alipay.trade.cancel`, WeChat Pay's codepay reverse, the sandbox's close): closed
/// unpaid, or paid and the money returned, so a cashier who gives up can take another
/// payment without the customer paying twice. Any other `processing` payment waits for
/// its channel's answer.
pub(crate) fn revocable(p: &Payment) -> bool {
    p.state.status == PaymentStatus::Processing
        && p.channel_engaged
        && p.method.carries_payer_credential()
}

/// Whether the channel knows `p` but has not settled it yet (`processing` or
/// `requires_customer_action` once the channel was or is being asked).
pub(crate) fn waits_on_channel(p: &Payment) -> bool {
    match p.state.status {
        PaymentStatus::Processing | PaymentStatus::RequiresCustomerAction => p.channel_engaged,
        PaymentStatus::RequiresReview
        | PaymentStatus::RequiresCapture
        | PaymentStatus::Succeeded
        | PaymentStatus::Canceled
        | PaymentStatus::Failed => false,
    }
}

/// Asks the channel about a payment the channel knows but that is not settled yet
/// (`processing` or `requires_customer_action`) and applies the answer. Other payments
/// are returned as they are.
///
/// A `processing` payment whose channel cannot say what became of it (no such payment,
/// or no usable answer) and that has not changed for longer than any request runs
/// ([`outlived_any_request`]) is sent to the channel again
/// ([`resume_with_channel`]): the request that was to ask the channel may have died
/// before it did, and asking again charges once at most. Without this, such a payment
/// would stay `processing` for good, since no notification ever comes for it.
pub async fn recheck_payment<R, C, E>(
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
    if !waits_on_channel(&p) {
        return super::get_payment(ctx, merchant_id, payment_id).await;
    }
    let report = channel.query(&p).await;
    let unknown = matches!(report.outcome, ChannelOutcome::Unknown { .. });
    // An order waiting for its customer that the channel has, but whose answer (the QR
    // code, redirect or app order the customer needs) was lost: the channel's query
    // says pending without it (WeChat Pay `NOTPAY`), and only sending the order again
    // (the same order id: charged once at most) gets it back.
    let answer_lost = matches!(
        report.outcome,
        ChannelOutcome::Pending {
            next_action: None,
            ..
        }
    ) && p.next_action.is_none()
        && ctx.now_ms < p.expires_at_ms()
        && matches!(
            p.method.kind(),
            crate::model::MethodKind::QrMerchant
                | crate::model::MethodKind::H5
                | crate::model::MethodKind::App
        );
    if (unknown || answer_lost)
        && p.state.status == PaymentStatus::Processing
        && outlived_any_request(p.updated_at_ms, ctx.now_ms)
    {
        resume_with_channel(ctx, channel, &p).await?;
    } else {
        let u = apply_report(ctx, payment_id, &report, ReadFor::Check).await?;
        payment_events(ctx, rng, &u).await?;
    }
    super::get_payment(ctx, merchant_id, payment_id).await
}
