//! Refunds: reserve on the payment (CAS), record, ask the channel, settle both.
//!
//! The reservation is what keeps concurrent refunds honest: `ReserveRefund` checks
//! `refunded + pending + amount ≤ captured` on the freshly read payment and the write is
//! a compare-and-swap, so of 64 racing partial refunds only those that fit are accepted.
//! Settling is keyed by refund id, so a retried or duplicated settle never counts twice.

use super::{
    ChannelClient, Ctx, ReadFor, RefundOutcome, Updated, insert, internal, load_payment,
    payment_events, read, refund_created_event, refund_events, update_payment, update_payment_with,
    update_refund,
};
use crate::api::{NewRefund, RefundResponse};
use crate::error::ApiError;
use crate::idempotency::outlived_any_request;
use crate::ids::{IdKind, is_valid_id, make_id};
use crate::keys;
use crate::machine::{
    PaymentCommand, RefundCommand, RefundState, TransitionError, apply_payment, apply_refund,
};
use crate::model::{Failure, Payment, PaymentStatus, Refund};
use crate::repo::Repository;
use crate::rng::Entropy;

/// `POST /v1/payments/{id}/refunds`.
pub async fn create_refund<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    req: NewRefund,
) -> Result<RefundResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    create_refund_seeded(ctx, channel, rng, merchant_id, payment_id, req, None).await
}

/// [`create_refund`] under an Idempotency-Key: the refund id derives from the key's
/// operation seed, so a retry that takes over a crashed attempt's abandoned lock resumes
/// that attempt — its reserved refund is the answer, sent to the channel again while
/// still `pending` ([`ask_channel`]); a record it wrote but never reserved goes on to
/// the reservation — and never refunds twice.
pub async fn create_refund_seeded<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    payment_id: &str,
    req: NewRefund,
    seed: Option<[u8; 16]>,
) -> Result<RefundResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    let refund_id = make_id(IdKind::Refund, &seed.unwrap_or_else(|| rng.bytes::<16>()));
    let earlier = match seed {
        Some(_) => read::<Refund, R>(ctx.repo, &keys::refund(&refund_id))
            .await?
            .map(|(r, _)| r)
            .filter(|r| r.merchant_id == merchant_id && r.payment_id == payment_id),
        None => None,
    };
    if let Some(r) = &earlier
        && p.state.refund_ids.contains(&r.id)
    {
        if r.state.status != crate::model::RefundStatus::Pending {
            return Ok(RefundResponse::new(r));
        }
        // The crashed attempt may have died before (or while) asking the channel.
        return Ok(RefundResponse::new(
            &ask_channel(ctx, channel, rng, &p, r).await,
        ));
    }
    if p.state.status != PaymentStatus::Succeeded {
        return Err(ApiError::PaymentNotRefundable {
            status: p.state.status.as_str(),
        });
    }
    if let Some(mref) = &req.merchant_refund_id {
        claim_refund_id(ctx, merchant_id, mref, &refund_id).await?;
    }
    // The record first, then the reservation: a failure in between leaves a record no
    // payment lists (no money effect), never a reservation without a record.
    let resumed = earlier.is_some();
    let refund = earlier.unwrap_or_else(|| Refund {
        id: refund_id.clone(),
        merchant_id: merchant_id.to_string(),
        payment_id: payment_id.to_string(),
        state: RefundState::new(),
        amount_minor: req.amount_minor.unwrap_or(p.state.refundable_minor()),
        currency: p.currency,
        reason: req.reason,
        merchant_refund_id: req.merchant_refund_id.clone(),
        channel_ref: None,
        failure: None,
        created_at_ms: ctx.now_ms,
        updated_at_ms: ctx.now_ms,
    });
    let mref = &req.merchant_refund_id;
    if refund.amount_minor <= 0 {
        let e = ApiError::RefundExceedsCaptured { available_minor: 0 };
        return Err(release(ctx, merchant_id, mref, None, e).await);
    }
    if !resumed {
        match insert(ctx.repo, &keys::refund(&refund_id), &refund).await {
            Ok(true) => {}
            Ok(false) => return Err(internal("refund id collision")),
            // Nothing is reserved: the merchant refund id must not stay held by it.
            Err(e) => return Err(release(ctx, merchant_id, mref, Some(&refund_id), e).await),
        }
    }
    // `refund.created` is recorded with the reservation: the refund exists exactly when
    // the reservation committed.
    let payment = match reserve(ctx, rng, &refund).await {
        Ok(p) => p,
        // A refusal reserved nothing; any other error may have come after the
        // reservation committed (an answer lost, the events not published): the payment
        // says which, and a reserved refund goes on, so its record is never undone.
        Err(e) => match reserved_on(ctx, &refund).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(release(ctx, merchant_id, mref, Some(&refund_id), e).await),
            // Unknown: the claims stay (a keyed retry resumes, a record no payment lists
            // moves no money).
            Err(_) => return Err(e),
        },
    };
    Ok(RefundResponse::new(
        &ask_channel(ctx, channel, rng, &payment, &refund).await,
    ))
}

/// Asks the channel to make a reserved refund and settles its answer; asking again for
/// the same refund (a resumed request, a re-check) refunds once: the channel knows it by
/// its id (the sandbox's `refund_id`, Alipay's `out_request_no`, WeChat Pay's
/// `out_refund_no`, UnionPay's `orderId`). After a storage error the refund stays
/// `pending` (a re-check or notification settles it): it is reserved and recorded, so
/// a retryable error would invite a second refund.
async fn ask_channel<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    payment: &Payment,
    refund: &Refund,
) -> Refund
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let outcome = channel.refund(payment, refund).await;
    settle(ctx, rng, &refund.id, &outcome, ReadFor::Change)
        .await
        .map_or_else(|_| refund.clone(), |s| s.refund)
}

/// A merchant refund id's claim (key `mch/{mid}/refref/{id}`): the refund it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RefundClaim {
    /// `re_…`.
    refund_id: String,
    /// When it was claimed.
    claimed_at_ms: i64,
}

/// A claim as stored: earlier versions stored the refund id alone.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StoredRefundClaim {
    Claim(RefundClaim),
    Bare(String),
}

/// Claims merchant refund id `mref` for `refund_id`. A claim naming a refund that was
/// never reserved on its payment (its request stopped in between) is taken over once it
/// is older than any request can run ([`outlived_any_request`]; a claim of an earlier
/// version counts as old), with compare-and-swap; otherwise the id is a duplicate.
async fn claim_refund_id<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    mref: &str,
    refund_id: &str,
) -> Result<(), ApiError> {
    let key = keys::merchant_refund(merchant_id, mref);
    let claim = RefundClaim {
        refund_id: refund_id.to_string(),
        claimed_at_ms: ctx.now_ms,
    };
    if insert(ctx.repo, &key, &claim).await? {
        return Ok(());
    }
    let duplicate = || ApiError::MerchantRefundIdDuplicate {
        id: mref.to_string(),
    };
    let Some((held, version)) = read::<StoredRefundClaim, R>(ctx.repo, &key).await? else {
        return Err(duplicate());
    };
    let (held_id, claimed_at_ms) = match held {
        StoredRefundClaim::Claim(c) => (c.refund_id, c.claimed_at_ms),
        StoredRefundClaim::Bare(id) => (id, i64::MIN),
    };
    let old = outlived_any_request(claimed_at_ms, ctx.now_ms);
    if held_id == refund_id && !old {
        return Ok(());
    }
    // Ours but old (a keyed retry resuming its crashed attempt): renewed, so that nobody
    // takes it over while this request reserves. Another's, old and never reserved:
    // taken over. Both with compare-and-swap: of two, one wins.
    if held_id != refund_id && (!old || is_reserved(ctx, merchant_id, &held_id).await?) {
        return Err(duplicate());
    }
    match ctx
        .repo
        .put_if_version(&key, version, super::to_bytes(&claim))
        .await
    {
        Ok(_) => Ok(()),
        Err(crate::repo::RepoError::Conflict { .. }) => Err(duplicate()),
        Err(e) => Err(e.into()),
    }
}

/// Whether refund `refund_id` of `merchant_id` exists and is reserved on its payment
/// (the record is written before the reservation: no record, no reservation).
async fn is_reserved<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    refund_id: &str,
) -> Result<bool, ApiError> {
    let Some((refund, _)) = read::<Refund, R>(ctx.repo, &keys::refund(refund_id)).await? else {
        return Ok(false);
    };
    if refund.merchant_id != merchant_id {
        return Ok(false);
    }
    Ok(reserved_on(ctx, &refund).await?.is_some())
}

/// Undoes the claims of a refund refused before its reservation (the merchant refund
/// id and the record no payment lists) and returns `error`.
async fn release<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    merchant_refund_id: &Option<String>,
    refund_id: Option<&str>,
    error: ApiError,
) -> ApiError {
    if let Some(mref) = merchant_refund_id {
        let _ = ctx
            .repo
            .delete(&keys::merchant_refund(merchant_id, mref))
            .await;
    }
    if let Some(id) = refund_id {
        let _ = ctx.repo.delete(&keys::refund(id)).await;
    }
    error
}

/// The refund's payment if it holds the refund's reservation.
async fn reserved_on<R: Repository>(
    ctx: &Ctx<'_, R>,
    refund: &Refund,
) -> Result<Option<Payment>, ApiError> {
    let stored = read::<Payment, R>(ctx.repo, &keys::payment(&refund.payment_id)).await?;
    Ok(stored
        .map(|(p, _)| p)
        .filter(|p| p.state.refund_ids.contains(&refund.id)))
}

/// Reserves the refund's amount on the payment (CAS loop), with `refund.created`.
async fn reserve<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    refund: &Refund,
) -> Result<Payment, ApiError> {
    let command = PaymentCommand::ReserveRefund {
        refund_id: refund.id.clone(),
        amount_minor: refund.amount_minor,
    };
    let created = vec![refund_created_event(refund, ctx.now_ms)];
    let u = update_payment_with(ctx, &refund.payment_id, ReadFor::Change, created, |cur| {
        match apply_payment(&cur.state, &command) {
            Ok(state) => Ok(Some(Payment {
                state,
                ..cur.clone()
            })),
            // Our own reservation committed on an earlier attempt.
            Err(TransitionError::AlreadyApplied) => Ok(None),
            Err(e) => Err(super::payments::transition_error(e, cur)),
        }
    })
    .await?;
    payment_events(ctx, rng, &u).await?;
    Ok(u.after)
}

/// What [`settle`] did.
pub(crate) struct Settled {
    /// The refund afterwards.
    pub refund: Refund,
    /// The outcome contradicted the settled refund and newly flagged its payment.
    pub flagged: bool,
}

/// Applies a channel refund outcome to the refund (read as `read_for` says: a repeated
/// report or a re-check usually changes nothing), then settles the payment's
/// reservation. Both steps are idempotent, so a repeat (notification, re-check, retry
/// after a crash between the two) is harmless.
pub(crate) async fn settle<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    refund_id: &str,
    outcome: &RefundOutcome,
    read_for: ReadFor,
) -> Result<Settled, ApiError> {
    let command = match outcome {
        RefundOutcome::Succeeded { .. } => RefundCommand::ChannelSucceeded,
        RefundOutcome::Failed { .. } => RefundCommand::ChannelFailed,
        RefundOutcome::Pending { .. } => RefundCommand::ChannelPending,
        RefundOutcome::Unknown { .. } => RefundCommand::ChannelUnknown,
    };
    let contradicted = std::cell::Cell::new(false);
    let u = update_refund(ctx, refund_id, read_for, |cur| {
        match apply_refund(&cur.state, command) {
            Ok(state) => Ok(Some(with_refund_outcome(cur, state, outcome))),
            Err(TransitionError::AlreadyApplied) => Ok(None),
            // A settled refund the channel now reports the other way (failed, then
            // refunded after all; or the reverse): ours stands, since its money was
            // counted or released, and the payment is flagged for a person.
            Err(_) => {
                contradicted.set(true);
                Ok(None)
            }
        }
    })
    .await?;
    refund_events(ctx, &u).await;
    settle_payment(ctx, rng, &u).await?;
    let flagged = contradicted.get()
        && flag_for_refund(
            ctx,
            rng,
            &u.after.payment_id,
            "refund_contradiction",
            None,
            None,
        )
        .await?;
    Ok(Settled {
        refund: u.after,
        flagged,
    })
}

/// Flags payment `payment_id` as conflicted over one of its refunds (`reason`, with what
/// the channel stated; `payment.conflicted`) once; a payment already flagged is left as
/// it is (`false`).
pub(crate) async fn flag_for_refund<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    payment_id: &str,
    reason: &str,
    channel_amount_minor: Option<i64>,
    channel_currency: Option<String>,
) -> Result<bool, ApiError> {
    let now_ms = ctx.now_ms;
    let pu = update_payment(ctx, payment_id, |cur| {
        let currency = channel_currency.clone();
        Ok(super::payments::flag_conflict(
            cur,
            reason,
            channel_amount_minor,
            currency,
            now_ms,
        ))
    })
    .await?;
    payment_events(ctx, rng, &pu).await?;
    Ok(pu.changed)
}

fn with_refund_outcome(cur: &Refund, state: RefundState, outcome: &RefundOutcome) -> Refund {
    let mut next = cur.clone();
    next.state = state;
    match outcome {
        RefundOutcome::Succeeded { channel_ref } | RefundOutcome::Pending { channel_ref } => {
            next.channel_ref = channel_ref.clone().or(next.channel_ref);
        }
        RefundOutcome::Failed { code, message } => {
            next.failure = Some(Failure {
                code: "channel_declined".into(),
                message: format!("{code}: {message}"),
            });
        }
        RefundOutcome::Unknown { .. } => {}
    }
    next
}

async fn settle_payment<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    u: &Updated<Refund>,
) -> Result<(), ApiError> {
    use crate::model::RefundStatus as S;
    let succeeded = match u.after.state.status {
        S::Pending => return Ok(()),
        S::Succeeded => true,
        S::Failed => false,
    };
    let command = PaymentCommand::SettleRefund {
        refund_id: u.after.id.clone(),
        succeeded,
    };
    // A refund that did not change now (a repeated report) was most likely settled on
    // its payment already.
    let read_for = if u.changed {
        ReadFor::Change
    } else {
        ReadFor::Check
    };
    let pu = update_payment_with(ctx, &u.after.payment_id, read_for, Vec::new(), |cur| {
        match apply_payment(&cur.state, &command) {
            Ok(state) => Ok(Some(Payment {
                state,
                ..cur.clone()
            })),
            Err(TransitionError::AlreadyApplied) => Ok(None),
            Err(e) => Err(internal(e)),
        }
    })
    .await?;
    payment_events(ctx, rng, &pu).await
}

/// Settles on the payment a refund the channel already settled while the payment still
/// holds its reservation (a crash between the refund's write and the payment's leaves
/// exactly that). Idempotent: an already settled reservation is left alone.
pub(crate) async fn settle_reservation<R: Repository>(
    ctx: &Ctx<'_, R>,
    refund: &Refund,
) -> Result<(), ApiError> {
    let u = Updated {
        before: refund.clone(),
        after: refund.clone(),
        changed: false,
        written: None,
    };
    // Event ids are derived from the records (`outbox::event_id`), not drawn, so the
    // entropy `settle_payment` still takes for its signature is never used here.
    let mut no_entropy = crate::rng::SplitMix64::new(0);
    settle_payment(ctx, &mut no_entropy, &u).await
}

/// Asks the channel about a pending refund and applies the answer. When the channel
/// cannot say (it does not know the refund, or answers nothing usable) and the refund is
/// older than any request runs ([`outlived_any_request`]), the
/// refund is sent to the channel again ([`ask_channel`]): the request that was to ask
/// may have died after reserving it, which would otherwise hold the reserved amount for
/// good.
pub async fn recheck_refund<R, C, E>(
    ctx: &Ctx<'_, R>,
    channel: &C,
    rng: &mut E,
    merchant_id: &str,
    refund_id: &str,
) -> Result<RefundResponse, ApiError>
where
    R: Repository,
    C: ChannelClient,
    E: Entropy,
{
    let refund = load_refund(ctx, merchant_id, refund_id).await?;
    if refund.state.status != crate::model::RefundStatus::Pending {
        // Terminal already: make sure the payment's reservation was settled too (a
        // crash or storage failure between the two writes leaves it pending).
        settle_reservation(ctx, &refund).await?;
        return Ok(RefundResponse::new(&refund));
    }
    let payment = load_payment(ctx, merchant_id, &refund.payment_id).await?;
    let outcome = channel.query_refund(&payment, &refund).await;
    // Sent again only if reserved: a record whose reservation never committed (its
    // request died in between) must not refund money the payment does not count.
    if matches!(outcome, RefundOutcome::Unknown { .. })
        && outlived_any_request(refund.updated_at_ms, ctx.now_ms)
        && payment.state.refund_ids.contains(&refund.id)
    {
        return Ok(RefundResponse::new(
            &ask_channel(ctx, channel, rng, &payment, &refund).await,
        ));
    }
    let settled = settle(ctx, rng, refund_id, &outcome, ReadFor::Check).await?;
    Ok(RefundResponse::new(&settled.refund))
}

/// Loads a refund owned by `merchant_id`.
pub(crate) async fn load_refund<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    refund_id: &str,
) -> Result<Refund, ApiError> {
    let missing = || ApiError::ResourceMissing {
        resource: "refund",
        id: refund_id.chars().take(crate::ids::ID_LEN_MAX).collect(),
    };
    if !is_valid_id(IdKind::Refund, refund_id) {
        return Err(missing());
    }
    match read::<Refund, R>(ctx.repo, &keys::refund(refund_id)).await? {
        Some((r, _)) if r.merchant_id == merchant_id => Ok(r),
        Some(_) | None => Err(missing()),
    }
}
