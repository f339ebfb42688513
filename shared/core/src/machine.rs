//! The payment and refund state machines as explicit transition tables.
//!
//! `apply_payment(state, command)` and `apply_refund(state, command)` are the only ways a
//! status or a money field changes. Every `match` lists every status, so a new status
//! forces a decision. A command that would change nothing (a duplicate or stale channel
//! message) returns [`TransitionError::AlreadyApplied`]: callers treat it as success
//! without writing, which makes redelivered notifications and retried requests harmless.
//! Every successful transition increments `version` by exactly one.
//!
//! Money invariants (checked by [`assert_payment_invariants`] before every write and after
//! every read): `refunded + Σ pending refunds ≤ captured ≤ authorized ≤ amount`.

use serde::{Deserialize, Serialize};

use crate::model::{PaymentStatus, RefundStatus};

/// Most refunds one payment may have (pending ones included).
pub const REFUNDS_PER_PAYMENT_MAX: usize = 100;

/// A refund whose amount is reserved on the payment but not yet settled by the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRefund {
    /// `re_…`.
    pub refund_id: String,
    /// Reserved amount.
    pub amount_minor: i64,
}

/// The status and money fields of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// Status.
    pub status: PaymentStatus,
    /// The requested amount.
    pub amount_minor: i64,
    /// Authorized by the channel (0 until authorized; 0 again once voided).
    pub authorized_minor: i64,
    /// Captured.
    pub captured_minor: i64,
    /// Refunded (settled refunds only).
    pub refunded_minor: i64,
    /// Reservations of refunds the channel has not settled yet.
    pub refunds_pending: Vec<PendingRefund>,
    /// Every refund ever reserved on this payment, oldest first.
    pub refund_ids: Vec<String>,
    /// Set when the channel contradicted us (see [`crate::model::Conflict`]).
    pub conflicted: bool,
    /// Starts at 1, +1 per transition.
    pub version: u64,
}

impl PaymentState {
    /// A new payment: `processing` until risk and the channel have spoken.
    pub fn new(amount_minor: i64) -> PaymentState {
        PaymentState {
            status: PaymentStatus::Processing,
            amount_minor,
            authorized_minor: 0,
            captured_minor: 0,
            refunded_minor: 0,
            refunds_pending: Vec::new(),
            refund_ids: Vec::new(),
            conflicted: false,
            version: 1,
        }
    }

    /// Sum of pending refund reservations.
    pub fn pending_refunds_minor(&self) -> i64 {
        self.refunds_pending.iter().map(|p| p.amount_minor).sum()
    }

    /// What may still be refunded: captured − refunded − pending.
    pub fn refundable_minor(&self) -> i64 {
        self.captured_minor - self.refunded_minor - self.pending_refunds_minor()
    }
}

/// Commands that drive a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Risk said `deny`.
    RiskDenied,
    /// Risk said `review`.
    RiskReview,
    /// A reviewer approved.
    ReviewApproved,
    /// A reviewer declined.
    ReviewDeclined,
    /// The customer must act (QR shown, redirect, app order, OTP sent).
    AwaitCustomer,
    /// The channel accepted but has not decided.
    ChannelPending,
    /// No usable answer (timeout, garbage): never guessed, changes nothing.
    ChannelUnknown,
    /// The channel took the money (automatic capture).
    ChannelSucceeded,
    /// The channel authorized only (manual capture).
    ChannelAuthorized,
    /// The channel declined, or the authorization expired.
    ChannelFailed,
    /// The payer entered the right OTP.
    OtpConfirmed,
    /// The payer exhausted the OTP attempts.
    OtpFailed,
    /// The merchant captures `amount_minor` (≤ authorized) of an authorization.
    Capture {
        /// Amount to capture.
        amount_minor: i64,
    },
    /// The merchant voids an uncaptured payment.
    Cancel,
    /// Reserve a refund amount (must fit in captured − refunded − pending).
    ReserveRefund {
        /// The refund.
        refund_id: String,
        /// Amount.
        amount_minor: i64,
    },
    /// The channel settled a reserved refund.
    SettleRefund {
        /// The refund.
        refund_id: String,
        /// True: money returned; false: reservation released.
        succeeded: bool,
    },
    /// A notification contradicted the payment.
    FlagConflict,
}

impl PaymentCommand {
    /// Short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            PaymentCommand::RiskDenied => "risk_denied",
            PaymentCommand::RiskReview => "risk_review",
            PaymentCommand::ReviewApproved => "review_approved",
            PaymentCommand::ReviewDeclined => "review_declined",
            PaymentCommand::AwaitCustomer => "await_customer",
            PaymentCommand::ChannelPending => "channel_pending",
            PaymentCommand::ChannelUnknown => "channel_unknown",
            PaymentCommand::ChannelSucceeded => "channel_succeeded",
            PaymentCommand::ChannelAuthorized => "channel_authorized",
            PaymentCommand::ChannelFailed => "channel_failed",
            PaymentCommand::OtpConfirmed => "otp_confirmed",
            PaymentCommand::OtpFailed => "otp_failed",
            PaymentCommand::Capture { .. } => "capture",
            PaymentCommand::Cancel => "cancel",
            PaymentCommand::ReserveRefund { .. } => "reserve_refund",
            PaymentCommand::SettleRefund { .. } => "settle_refund",
            PaymentCommand::FlagConflict => "flag_conflict",
        }
    }
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The command's effect is already in the state (duplicate or stale message).
    #[error("already applied")]
    AlreadyApplied,
    /// The command makes no sense in this status.
    #[error("{command} not allowed in status {from:?}")]
    NotAllowed {
        /// Current status.
        from: PaymentStatus,
        /// The command's name.
        command: &'static str,
    },
    /// The channel reports the opposite of a terminal outcome we recorded.
    #[error("channel contradicts recorded status {from:?}")]
    Contradiction {
        /// Current status.
        from: PaymentStatus,
    },
    /// A refund command contradicts a terminal refund.
    #[error("channel contradicts recorded refund status {from:?}")]
    RefundContradiction {
        /// Current refund status.
        from: RefundStatus,
    },
    /// Amount ≤ 0.
    #[error("amount must be positive")]
    AmountInvalid,
    /// Capture larger than the authorization.
    #[error("capture exceeds authorized amount {authorized_minor}")]
    CaptureExceedsAuthorized {
        /// The authorization.
        authorized_minor: i64,
    },
    /// Refund larger than what is left.
    #[error("refund exceeds refundable amount {available_minor}")]
    RefundExceedsCaptured {
        /// What is left to refund.
        available_minor: i64,
    },
    /// Too many refunds on one payment.
    #[error("a payment may have at most {REFUNDS_PER_PAYMENT_MAX} refunds")]
    RefundsPerPaymentExceeded,
}

/// Applies a command to a payment state.
pub fn apply_payment(
    state: &PaymentState,
    command: &PaymentCommand,
) -> Result<PaymentState, TransitionError> {
    use PaymentStatus as S;
    let from = state.status;
    let not_allowed = TransitionError::NotAllowed {
        from,
        command: command.name(),
    };
    let mut next = state.clone();
    match command {
        PaymentCommand::RiskDenied => {
            move_from(&mut next, S::Processing, S::Failed).ok_or(not_allowed)?
        }
        PaymentCommand::ReviewDeclined => {
            move_from(&mut next, S::RequiresReview, S::Failed).ok_or(not_allowed)?
        }
        PaymentCommand::OtpFailed => {
            move_from(&mut next, S::RequiresCustomerAction, S::Failed).ok_or(not_allowed)?
        }
        PaymentCommand::RiskReview => {
            move_from(&mut next, S::Processing, S::RequiresReview).ok_or(not_allowed)?
        }
        PaymentCommand::ReviewApproved => {
            move_from(&mut next, S::RequiresReview, S::Processing).ok_or(not_allowed)?
        }
        PaymentCommand::OtpConfirmed => {
            move_from(&mut next, S::RequiresCustomerAction, S::Processing).ok_or(not_allowed)?
        }
        PaymentCommand::AwaitCustomer => match from {
            S::Processing => next.status = S::RequiresCustomerAction,
            S::RequiresCustomerAction => return Err(TransitionError::AlreadyApplied),
            S::RequiresReview | S::RequiresCapture | S::Succeeded | S::Canceled | S::Failed => {
                return Err(not_allowed);
            }
        },
        PaymentCommand::ChannelUnknown => return Err(TransitionError::AlreadyApplied),
        // "Not decided yet" changes nothing. For a payment waiting for its customer it is
        // what a channel's query says of an order nobody has paid (WeChat Pay `NOTPAY`,
        // Alipay `WAIT_BUYER_PAY`, UnionPay `03`–`05`): it still waits for that customer,
        // so the merchant can still cancel it and it is still closed when it expires.
        PaymentCommand::ChannelPending => match from {
            S::RequiresCustomerAction
            | S::Processing
            | S::RequiresCapture
            | S::Succeeded
            | S::Canceled
            | S::Failed => return Err(TransitionError::AlreadyApplied),
            S::RequiresReview => return Err(not_allowed),
        },
        PaymentCommand::ChannelSucceeded | PaymentCommand::ChannelAuthorized => {
            channel_paid(&mut next, command, not_allowed)?
        }
        PaymentCommand::ChannelFailed => channel_failed(&mut next, not_allowed)?,
        PaymentCommand::Capture { amount_minor } => capture(&mut next, *amount_minor, not_allowed)?,
        PaymentCommand::Cancel => cancel(&mut next, not_allowed)?,
        PaymentCommand::ReserveRefund {
            refund_id,
            amount_minor,
        } => reserve_refund(&mut next, refund_id, *amount_minor, not_allowed)?,
        PaymentCommand::SettleRefund {
            refund_id,
            succeeded,
        } => settle_refund(&mut next, refund_id, *succeeded, not_allowed)?,
        PaymentCommand::FlagConflict => {
            if state.conflicted {
                return Err(TransitionError::AlreadyApplied);
            }
            next.conflicted = true;
        }
    }
    next.version = state.version + 1;
    assert_payment_invariants(&next);
    Ok(next)
}

fn move_from(next: &mut PaymentState, from: PaymentStatus, to: PaymentStatus) -> Option<()> {
    if next.status != from {
        return None;
    }
    next.status = to;
    Some(())
}

fn channel_failed(
    next: &mut PaymentState,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    use PaymentStatus as S;
    match next.status {
        S::Processing | S::RequiresCustomerAction | S::RequiresCapture => {
            next.status = S::Failed;
            next.authorized_minor = 0;
            Ok(())
        }
        S::Failed | S::Canceled => Err(TransitionError::AlreadyApplied),
        S::Succeeded => Err(TransitionError::Contradiction { from: next.status }),
        S::RequiresReview => Err(not_allowed),
    }
}

/// Cancel: from any open status. From `processing` only once the channel revoked the
/// payment (a customer-presented code whose outcome was not known: closed unpaid, or
/// paid and the money returned); the service decides which payments it asks that for.
fn cancel(next: &mut PaymentState, not_allowed: TransitionError) -> Result<(), TransitionError> {
    use PaymentStatus as S;
    match next.status {
        S::RequiresCustomerAction | S::RequiresReview | S::RequiresCapture | S::Processing => {
            next.status = S::Canceled;
            next.authorized_minor = 0;
            Ok(())
        }
        S::Canceled => Err(TransitionError::AlreadyApplied),
        S::Succeeded | S::Failed => Err(not_allowed),
    }
}

fn channel_paid(
    next: &mut PaymentState,
    command: &PaymentCommand,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    use PaymentStatus as S;
    let capture = matches!(command, PaymentCommand::ChannelSucceeded);
    match next.status {
        S::Processing | S::RequiresCustomerAction => {
            next.authorized_minor = next.amount_minor;
            if capture {
                next.captured_minor = next.amount_minor;
                next.status = S::Succeeded;
            } else {
                next.status = S::RequiresCapture;
            }
            Ok(())
        }
        S::RequiresCapture | S::Succeeded => Err(TransitionError::AlreadyApplied),
        S::Canceled | S::Failed => Err(TransitionError::Contradiction { from: next.status }),
        S::RequiresReview => Err(not_allowed),
    }
}

fn capture(
    next: &mut PaymentState,
    amount_minor: i64,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    use PaymentStatus as S;
    match next.status {
        S::RequiresCapture => {}
        S::RequiresCustomerAction
        | S::Processing
        | S::RequiresReview
        | S::Succeeded
        | S::Canceled
        | S::Failed => return Err(not_allowed),
    }
    if amount_minor <= 0 {
        return Err(TransitionError::AmountInvalid);
    }
    if amount_minor > next.authorized_minor {
        return Err(TransitionError::CaptureExceedsAuthorized {
            authorized_minor: next.authorized_minor,
        });
    }
    next.captured_minor = amount_minor;
    next.status = S::Succeeded;
    Ok(())
}

/// Refunds move money only on a captured (`succeeded`) payment.
fn refundable_status(
    status: PaymentStatus,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    use PaymentStatus as S;
    match status {
        S::Succeeded => Ok(()),
        S::RequiresCustomerAction
        | S::Processing
        | S::RequiresReview
        | S::RequiresCapture
        | S::Canceled
        | S::Failed => Err(not_allowed),
    }
}

fn reserve_refund(
    next: &mut PaymentState,
    refund_id: &str,
    amount_minor: i64,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    refundable_status(next.status, not_allowed)?;
    if next.refund_ids.iter().any(|id| id == refund_id) {
        return Err(TransitionError::AlreadyApplied);
    }
    if amount_minor <= 0 {
        return Err(TransitionError::AmountInvalid);
    }
    if next.refund_ids.len() >= REFUNDS_PER_PAYMENT_MAX {
        return Err(TransitionError::RefundsPerPaymentExceeded);
    }
    let available_minor = next.refundable_minor();
    if amount_minor > available_minor {
        return Err(TransitionError::RefundExceedsCaptured { available_minor });
    }
    next.refund_ids.push(refund_id.to_string());
    next.refunds_pending.push(PendingRefund {
        refund_id: refund_id.to_string(),
        amount_minor,
    });
    Ok(())
}

fn settle_refund(
    next: &mut PaymentState,
    refund_id: &str,
    succeeded: bool,
    not_allowed: TransitionError,
) -> Result<(), TransitionError> {
    refundable_status(next.status, not_allowed)?;
    let Some(index) = next
        .refunds_pending
        .iter()
        .position(|p| p.refund_id == refund_id)
    else {
        // Settled before (or never reserved): settling twice must not count twice.
        return Err(TransitionError::AlreadyApplied);
    };
    let pending = next.refunds_pending.remove(index);
    if succeeded {
        next.refunded_minor += pending.amount_minor;
    }
    Ok(())
}

/// Checks the money invariants; `Err` names the first one broken.
pub fn check_payment_invariants(s: &PaymentState) -> Result<(), String> {
    use PaymentStatus as S;
    let pending = s.refunds_pending.iter().try_fold(0_i64, |acc, p| {
        (p.amount_minor > 0).then_some(())?;
        acc.checked_add(p.amount_minor)
    });
    let Some(pending) = pending else {
        return Err("pending refunds must be positive and not overflow".into());
    };
    let settled = s.refunded_minor.checked_add(pending);
    let checks = [
        (s.version >= 1, "version >= 1"),
        (s.amount_minor > 0, "amount > 0"),
        (s.refunded_minor >= 0, "refunded >= 0"),
        (
            settled.is_some_and(|v| v <= s.captured_minor),
            "refunded + pending <= captured",
        ),
        (
            s.captured_minor <= s.authorized_minor,
            "captured <= authorized",
        ),
        (s.authorized_minor <= s.amount_minor, "authorized <= amount"),
        (
            s.refunds_pending.len() <= s.refund_ids.len(),
            "pending within refund ids",
        ),
        (
            s.refunds_pending
                .iter()
                .all(|p| s.refund_ids.contains(&p.refund_id)),
            "every pending refund is listed",
        ),
        (
            s.refund_ids.len() <= REFUNDS_PER_PAYMENT_MAX,
            "refund count <= max",
        ),
    ];
    if let Some((_, name)) = checks.iter().find(|(ok, _)| !ok) {
        return Err((*name).to_string());
    }
    let status_ok = match s.status {
        S::Succeeded => s.captured_minor > 0,
        S::RequiresCapture => s.authorized_minor > 0 && s.captured_minor == 0,
        S::RequiresCustomerAction | S::Processing | S::RequiresReview | S::Canceled | S::Failed => {
            s.captured_minor == 0 && s.refund_ids.is_empty()
        }
    };
    if !status_ok {
        return Err(format!("money fields do not fit status {:?}", s.status));
    }
    Ok(())
}

/// Asserts the invariants (stays on in release): call before a write and after a read.
pub fn assert_payment_invariants(s: &PaymentState) {
    if let Err(broken) = check_payment_invariants(s) {
        panic!("payment invariant broken: {broken}: {s:?}");
    }
}

/// The status of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    /// Status.
    pub status: RefundStatus,
    /// Starts at 1, +1 per transition.
    pub version: u64,
}

impl RefundState {
    /// A new refund: pending.
    pub fn new() -> RefundState {
        RefundState {
            status: RefundStatus::Pending,
            version: 1,
        }
    }
}

impl Default for RefundState {
    fn default() -> Self {
        RefundState::new()
    }
}

/// Commands that drive a refund (all come from the channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundCommand {
    /// Money returned.
    ChannelSucceeded,
    /// Refused.
    ChannelFailed,
    /// Accepted, not decided.
    ChannelPending,
    /// No usable answer.
    ChannelUnknown,
}

/// Applies a command to a refund state.
pub fn apply_refund(
    state: &RefundState,
    command: RefundCommand,
) -> Result<RefundState, TransitionError> {
    use RefundStatus as S;
    let to = match (state.status, command) {
        (S::Pending, RefundCommand::ChannelSucceeded) => S::Succeeded,
        (S::Pending, RefundCommand::ChannelFailed) => S::Failed,
        (S::Pending | S::Succeeded | S::Failed, RefundCommand::ChannelPending)
        | (S::Pending | S::Succeeded | S::Failed, RefundCommand::ChannelUnknown)
        | (S::Succeeded, RefundCommand::ChannelSucceeded)
        | (S::Failed, RefundCommand::ChannelFailed) => {
            return Err(TransitionError::AlreadyApplied);
        }
        (S::Succeeded, RefundCommand::ChannelFailed)
        | (S::Failed, RefundCommand::ChannelSucceeded) => {
            return Err(TransitionError::RefundContradiction { from: state.status });
        }
    };
    Ok(RefundState {
        status: to,
        version: state.version + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn succeeded(amount: i64) -> PaymentState {
        apply_payment(
            &PaymentState::new(amount),
            &PaymentCommand::ChannelSucceeded,
        )
        .unwrap()
    }

    #[test]
    fn automatic_payment_succeeds_with_full_capture() {
        // Proves processing + channel success captures the whole amount and bumps the version.
        let s = succeeded(1250);
        assert_eq!(s.status, PaymentStatus::Succeeded);
        assert_eq!((s.authorized_minor, s.captured_minor), (1250, 1250));
        assert_eq!(s.version, 2);
    }

    #[test]
    fn partial_capture_cannot_exceed_the_authorization() {
        // Proves capture ≤ authorized and that a capture needs requires_capture.
        let auth =
            apply_payment(&PaymentState::new(1000), &PaymentCommand::ChannelAuthorized).unwrap();
        let err = apply_payment(&auth, &PaymentCommand::Capture { amount_minor: 1001 });
        assert_eq!(
            err,
            Err(TransitionError::CaptureExceedsAuthorized {
                authorized_minor: 1000
            })
        );
        let cap = apply_payment(&auth, &PaymentCommand::Capture { amount_minor: 600 }).unwrap();
        assert_eq!(cap.captured_minor, 600);
        assert!(apply_payment(&cap, &PaymentCommand::Capture { amount_minor: 1 }).is_err());
    }

    #[test]
    fn refund_beyond_captured_amount_is_rejected() {
        // Proves reservations count against the captured amount before they settle.
        let s = succeeded(1000);
        let r1 = PaymentCommand::ReserveRefund {
            refund_id: "re_a".into(),
            amount_minor: 700,
        };
        let s = apply_payment(&s, &r1).unwrap();
        let r2 = PaymentCommand::ReserveRefund {
            refund_id: "re_b".into(),
            amount_minor: 301,
        };
        assert_eq!(
            apply_payment(&s, &r2),
            Err(TransitionError::RefundExceedsCaptured {
                available_minor: 300
            })
        );
    }

    #[test]
    fn settling_a_refund_twice_counts_once() {
        // Proves a duplicated settle is AlreadyApplied and refunded does not double.
        let s = succeeded(1000);
        let s = apply_payment(
            &s,
            &PaymentCommand::ReserveRefund {
                refund_id: "re_a".into(),
                amount_minor: 300,
            },
        )
        .unwrap();
        let settle = PaymentCommand::SettleRefund {
            refund_id: "re_a".into(),
            succeeded: true,
        };
        let s = apply_payment(&s, &settle).unwrap();
        assert_eq!(s.refunded_minor, 300);
        assert_eq!(
            apply_payment(&s, &settle),
            Err(TransitionError::AlreadyApplied)
        );
    }

    #[test]
    fn a_failed_refund_releases_its_reservation() {
        // Proves a failed settle returns the amount to the refundable pool.
        let s = succeeded(1000);
        let s = apply_payment(
            &s,
            &PaymentCommand::ReserveRefund {
                refund_id: "re_a".into(),
                amount_minor: 1000,
            },
        )
        .unwrap();
        assert_eq!(s.refundable_minor(), 0);
        let s = apply_payment(
            &s,
            &PaymentCommand::SettleRefund {
                refund_id: "re_a".into(),
                succeeded: false,
            },
        )
        .unwrap();
        assert_eq!((s.refunded_minor, s.refundable_minor()), (0, 1000));
    }

    #[test]
    fn success_after_cancel_is_a_contradiction_not_a_transition() {
        // Proves a late "paid" for a canceled payment is flagged, never applied.
        let s = apply_payment(&PaymentState::new(500), &PaymentCommand::AwaitCustomer).unwrap();
        let s = apply_payment(&s, &PaymentCommand::Cancel).unwrap();
        assert_eq!(
            apply_payment(&s, &PaymentCommand::ChannelSucceeded),
            Err(TransitionError::Contradiction {
                from: PaymentStatus::Canceled
            })
        );
        let flagged = apply_payment(&s, &PaymentCommand::FlagConflict).unwrap();
        assert!(flagged.conflicted);
        assert_eq!(flagged.status, PaymentStatus::Canceled);
    }

    #[test]
    fn a_pending_answer_never_changes_a_payment_the_channel_knows() {
        // Proves "not decided yet" leaves a payment waiting for its customer waiting for
        // it (a query of an unpaid QR order answers so) and changes no other status the
        // channel may be asked about.
        for status in PaymentStatus::ALL {
            let mut s = PaymentState::new(10);
            s.status = status;
            let expected = if status == PaymentStatus::RequiresReview {
                Err(TransitionError::NotAllowed {
                    from: status,
                    command: "channel_pending",
                })
            } else {
                Err(TransitionError::AlreadyApplied)
            };
            assert_eq!(
                apply_payment(&s, &PaymentCommand::ChannelPending),
                expected,
                "{status:?}"
            );
        }
    }

    #[test]
    fn unknown_channel_outcome_never_changes_a_payment() {
        // Proves a timeout or garbage answer is AlreadyApplied in every status.
        for status in PaymentStatus::ALL {
            let mut s = PaymentState::new(10);
            s.status = status;
            assert_eq!(
                apply_payment(&s, &PaymentCommand::ChannelUnknown),
                Err(TransitionError::AlreadyApplied)
            );
        }
    }

    #[test]
    fn refund_state_machine_is_terminal_and_flags_contradictions() {
        // Proves pending → succeeded/failed once, duplicates are no-ops, flips are contradictions.
        let s = apply_refund(&RefundState::new(), RefundCommand::ChannelSucceeded).unwrap();
        assert_eq!(s.status, RefundStatus::Succeeded);
        assert_eq!(
            apply_refund(&s, RefundCommand::ChannelSucceeded),
            Err(TransitionError::AlreadyApplied)
        );
        assert!(matches!(
            apply_refund(&s, RefundCommand::ChannelFailed),
            Err(TransitionError::RefundContradiction { .. })
        ));
    }
}
