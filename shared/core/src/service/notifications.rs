//! Provider notifications, applied idempotently. The webhook component verifies the
//! channel's signature and parses the body (per-channel transformers) into these types.
//! Duplicates and out-of-order messages are harmless (the state machine answers
//! `AlreadyApplied`); an amount or currency that differs from the payment, or a status
//! that contradicts a terminal one, flags the payment and raises `payment.conflicted`.

use super::{ChannelReport, Ctx, RefundOutcome, payment_events, read};
use crate::error::ApiError;
use crate::ids::{IdKind, is_valid_id};
use crate::keys;
use crate::model::{Channel, Payment, Refund};
use crate::repo::Repository;
use crate::rng::Entropy;

/// A notification about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotification {
    /// The channel that sent it (must be the payment's channel).
    pub channel: Channel,
    /// Our payment id (channels carry it as their merchant order number).
    pub payment_id: String,
    /// What the channel says.
    pub report: ChannelReport,
}

/// A notification about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotification {
    /// The channel.
    pub channel: Channel,
    /// Our refund id.
    pub refund_id: String,
    /// The payment the channel says the refund is of (our payment id), when it says.
    pub payment_id: Option<String>,
    /// The refund's amount (minor units) as the channel states it, when it states this
    /// refund's own amount (Alipay states only a running total: `None`).
    pub amount_minor: Option<i64>,
    /// The currency the channel states with that amount, when it does.
    pub currency: Option<String>,
    /// What the channel says.
    pub outcome: RefundOutcome,
}

/// What applying a notification did. Every variant should be acknowledged to the
/// channel (so it stops retrying); only storage errors should not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationResult {
    /// The object changed.
    Applied,
    /// Nothing new (duplicate, stale or out of order).
    Duplicate,
    /// The notification contradicted the object; it is flagged.
    Conflicted,
    /// No such object for this channel (stored by the webhook for investigation).
    UnknownObject,
}

/// Applies a payment notification.
pub async fn apply_payment_notification<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    n: &PaymentNotification,
) -> Result<NotificationResult, ApiError> {
    if !is_valid_id(IdKind::Payment, &n.payment_id) {
        return Ok(NotificationResult::UnknownObject);
    }
    let Some((p, _)) = read::<Payment, R>(ctx.repo, &keys::payment(&n.payment_id)).await? else {
        return Ok(NotificationResult::UnknownObject);
    };
    if p.channel != n.channel {
        return Ok(NotificationResult::UnknownObject);
    }
    let u =
        super::payments::apply_report(ctx, &n.payment_id, &n.report, super::ReadFor::Check).await?;
    payment_events(ctx, rng, &u).await?;
    Ok(if !u.changed {
        NotificationResult::Duplicate
    } else if u.after.state.conflicted && !u.before.state.conflicted {
        NotificationResult::Conflicted
    } else {
        NotificationResult::Applied
    })
}

/// Whether what the notification states (payment, amount, currency) disagrees with the
/// refund it names. What it does not state is not held against it.
fn refund_mismatch(n: &RefundNotification, r: &crate::model::Refund) -> bool {
    n.payment_id.as_deref().is_some_and(|p| p != r.payment_id)
        || n.amount_minor.is_some_and(|a| a != r.amount_minor)
        || n.currency
            .as_deref()
            .is_some_and(|c| c != r.currency.code())
}

/// Applies a refund notification: one that names another payment, or states another
/// amount or currency than the refund's, is not applied and flags the payment
/// (`refund_mismatch`).
pub async fn apply_refund_notification<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    n: &RefundNotification,
) -> Result<NotificationResult, ApiError> {
    if !is_valid_id(IdKind::Refund, &n.refund_id) {
        return Ok(NotificationResult::UnknownObject);
    }
    let Some((before, _)) = read::<Refund, R>(ctx.repo, &keys::refund(&n.refund_id)).await? else {
        return Ok(NotificationResult::UnknownObject);
    };
    let Some((p, _)) = read::<Payment, R>(ctx.repo, &keys::payment(&before.payment_id)).await?
    else {
        return Ok(NotificationResult::UnknownObject);
    };
    if p.channel != n.channel {
        return Ok(NotificationResult::UnknownObject);
    }
    if refund_mismatch(n, &before) {
        // About another payment or another amount: never applied to this refund; its
        // payment is flagged for a person, as a payment notification's mismatch is.
        let flagged = super::refunds::flag_for_refund(
            ctx,
            rng,
            &before.payment_id,
            "refund_mismatch",
            n.amount_minor,
            n.currency.clone(),
        )
        .await?;
        return Ok(if flagged {
            NotificationResult::Conflicted
        } else {
            NotificationResult::Duplicate
        });
    }
    let settled =
        super::refunds::settle(ctx, rng, &n.refund_id, &n.outcome, super::ReadFor::Check).await?;
    Ok(if settled.refund.state != before.state {
        NotificationResult::Applied
    } else if settled.flagged {
        NotificationResult::Conflicted
    } else {
        NotificationResult::Duplicate
    })
}
