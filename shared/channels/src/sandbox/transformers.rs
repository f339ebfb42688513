//! Pure transformers for the sandbox channel: signed request bodies, verification and
//! parsing of answers and notifications, and the status mapping. No I/O: the wiring in
//! [`super`] sends what these build and hands back what arrived.
//!
//! Every answer that is unsigned, forged, stale, not JSON, about another object or in a
//! status this code does not know maps to an *unknown* outcome (the payment stays
//! `processing`), never to success or failure.

use serde::Serialize;
use spinpay_core::crypto::{sign_header, verify_header};
use spinpay_core::model::{Channel, Payment, PaymentMethod, Refund};
use spinpay_core::service::{
    ActionOutcome, CLOSED_UNPAID_CODE, ChannelOutcome, ChannelReport, PaymentNotification,
    RefundNotification, RefundOutcome,
};
use spinpay_guest::outbound::OutboundResponse;

use super::wire::{
    CreatePayment, CreateRefund, ErrorAnswer, Notification, NotificationKind, Op, PaymentAction,
    PaymentAnswer, RefundAnswer, RefundQuery, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_S,
    SandboxRefundStatus, SandboxStatus, SendSms, SmsAnswer,
};

/// A request ready to send: the path under the sandbox base URL, the body and the
/// value of the `Sandbox-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Path (see [`super::wire`]).
    pub path: &'static str,
    /// JSON body.
    pub body: Vec<u8>,
    /// `t=…,v1=…`.
    pub signature: String,
}

fn signed<T: Serialize>(op: Op, body: &T, secret: &[u8], now_unix_s: i64) -> SignedRequest {
    let body = serde_json::to_vec(body).expect("wire types serialize");
    SignedRequest {
        path: op.path(),
        signature: sign_header(secret, now_unix_s, &body),
        body,
    }
}

/// `payment.create` for `payment` paid with the unsealed `method`.
pub fn create_request(
    payment: &Payment,
    method: &PaymentMethod,
    notify_url: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> SignedRequest {
    let body = CreatePayment {
        op: Op::PaymentCreate,
        payment_id: payment.id.clone(),
        amount_minor: payment.state.amount_minor,
        currency: payment.currency,
        capture: payment.capture,
        method: method.clone(),
        notify_url: notify_url.to_string(),
        description: payment.description.clone(),
        expires_at_ms: Some(payment.expires_at_ms()),
    };
    signed(Op::PaymentCreate, &body, secret, now_unix_s)
}

/// `payment.capture`, `payment.cancel` or `payment.query`.
pub fn action_request(
    op: Op,
    payment_id: &str,
    amount_minor: Option<i64>,
    secret: &[u8],
    now_unix_s: i64,
) -> SignedRequest {
    assert!(
        matches!(
            op,
            Op::PaymentCapture | Op::PaymentCancel | Op::PaymentQuery
        ),
        "action_request takes a payment action"
    );
    let body = PaymentAction {
        op,
        payment_id: payment_id.to_string(),
        amount_minor,
    };
    signed(op, &body, secret, now_unix_s)
}

/// `refund.create`.
pub fn refund_request(
    payment: &Payment,
    refund: &Refund,
    secret: &[u8],
    now_unix_s: i64,
) -> SignedRequest {
    let body = CreateRefund {
        op: Op::RefundCreate,
        payment_id: payment.id.clone(),
        refund_id: refund.id.clone(),
        amount_minor: refund.amount_minor,
        currency: refund.currency,
    };
    signed(Op::RefundCreate, &body, secret, now_unix_s)
}

/// `refund.query`.
pub fn refund_query_request(
    payment_id: &str,
    refund_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> SignedRequest {
    let body = RefundQuery {
        op: Op::RefundQuery,
        payment_id: payment_id.to_string(),
        refund_id: refund_id.to_string(),
    };
    signed(Op::RefundQuery, &body, secret, now_unix_s)
}

/// `sms.send`.
pub fn sms_request(
    message_id: &str,
    phone: &str,
    text: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> SignedRequest {
    let body = SendSms {
        op: Op::SmsSend,
        message_id: message_id.to_string(),
        phone: phone.to_string(),
        text: text.to_string(),
    };
    signed(Op::SmsSend, &body, secret, now_unix_s)
}

/// A verified answer: a 2xx body of type `T`, or a signed 4xx error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified<T> {
    /// 2xx with a well-formed, signed body.
    Ok(T),
    /// 4xx with a signed `{"error":{"code","message"}}`.
    Refused(super::wire::ErrorBody),
}

/// Checks the answer's signature and parses it; `Err(detail)` means the answer is
/// unusable (unsigned, forged, stale, garbage, 5xx): the outcome is unknown.
pub fn verify_answer<T: serde::de::DeserializeOwned>(
    resp: &OutboundResponse,
    secret: &[u8],
    now_unix_s: i64,
) -> Result<Verified<T>, String> {
    let header = resp
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| format!("unsigned answer (HTTP {})", resp.status))?;
    verify_header(
        header,
        &resp.body,
        &[secret],
        now_unix_s,
        SIGNATURE_TOLERANCE_S,
    )
    .map_err(|e| format!("answer signature refused: {e}"))?;
    match resp.status {
        200..=299 => serde_json::from_slice(&resp.body)
            .map(Verified::Ok)
            .map_err(|e| format!("unparsable answer: {e}")),
        400..=499 => serde_json::from_slice::<ErrorAnswer>(&resp.body)
            .map(|e| Verified::Refused(e.error))
            .map_err(|e| format!("unparsable error answer: {e}")),
        other => Err(format!("HTTP {other} from the sandbox")),
    }
}

/// The status mapping: the sandbox's payment status → the core's outcome.
pub fn payment_outcome(answer: &PaymentAnswer) -> ChannelOutcome {
    let channel_ref = Some(answer.channel_txn_id.clone());
    match answer.status {
        SandboxStatus::Pending => ChannelOutcome::Pending {
            channel_ref,
            next_action: answer.next_action.clone(),
        },
        SandboxStatus::Authorized => ChannelOutcome::Authorized { channel_ref },
        SandboxStatus::Succeeded => ChannelOutcome::Succeeded { channel_ref },
        SandboxStatus::Declined => ChannelOutcome::Declined {
            code: answer
                .decline_code
                .clone()
                .unwrap_or_else(|| "declined".to_string()),
            message: answer
                .decline_message
                .clone()
                .unwrap_or_else(|| "declined by the sandbox".to_string()),
        },
        SandboxStatus::Closed => ChannelOutcome::Declined {
            code: CLOSED_UNPAID_CODE.to_string(),
            message: "the payment was closed at the channel".to_string(),
        },
    }
}

fn unknown(detail: impl Into<String>) -> ChannelOutcome {
    ChannelOutcome::Unknown {
        detail: detail.into(),
    }
}

/// The answer to `payment.create` (and `payment.query`, for [`parse_query`]).
pub fn parse_authorize(
    resp: &OutboundResponse,
    payment_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> ChannelOutcome {
    match verify_answer::<PaymentAnswer>(resp, secret, now_unix_s) {
        Ok(Verified::Ok(answer)) if answer.payment_id == payment_id => payment_outcome(&answer),
        Ok(Verified::Ok(answer)) => unknown(format!(
            "answer is about payment {:?}, not {payment_id:?}",
            answer.payment_id
        )),
        // A signed refusal of the create itself (e.g. `payment_id_reused`) decides nothing
        // about money we can trust: leave it to a query.
        Ok(Verified::Refused(e)) => unknown(format!("sandbox refused: {} ({})", e.code, e.message)),
        Err(detail) => unknown(detail),
    }
}

/// The answer to `payment.query`, with the amount and currency the sandbox states.
pub fn parse_query(
    resp: &OutboundResponse,
    payment_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> ChannelReport {
    match verify_answer::<PaymentAnswer>(resp, secret, now_unix_s) {
        Ok(Verified::Ok(answer)) if answer.payment_id == payment_id => ChannelReport {
            outcome: payment_outcome(&answer),
            amount_minor: Some(answer.amount_minor),
            currency: Some(answer.currency.code().to_string()),
        },
        Ok(Verified::Ok(answer)) => unknown_report(format!(
            "answer is about payment {:?}, not {payment_id:?}",
            answer.payment_id
        )),
        // `payment_not_found` may mean the create is still in flight: never guess.
        Ok(Verified::Refused(e)) => {
            unknown_report(format!("sandbox refused: {} ({})", e.code, e.message))
        }
        Err(detail) => unknown_report(detail),
    }
}

fn unknown_report(detail: String) -> ChannelReport {
    ChannelReport {
        outcome: unknown(detail),
        amount_minor: None,
        currency: None,
    }
}

/// The answer to `payment.capture` or `payment.cancel`.
pub fn parse_action(
    resp: &OutboundResponse,
    op: Op,
    payment_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> ActionOutcome {
    let done_status = match op {
        Op::PaymentCapture => SandboxStatus::Succeeded,
        Op::PaymentCancel => SandboxStatus::Closed,
        Op::PaymentCreate | Op::PaymentQuery | Op::RefundCreate | Op::RefundQuery | Op::SmsSend => {
            return ActionOutcome::Unknown {
                detail: format!("{op:?} is not a capture or cancel"),
            };
        }
    };
    match verify_answer::<PaymentAnswer>(resp, secret, now_unix_s) {
        Ok(Verified::Ok(answer))
            if answer.payment_id == payment_id && answer.status == done_status =>
        {
            ActionOutcome::Done
        }
        Ok(Verified::Ok(answer)) => ActionOutcome::Unknown {
            detail: format!(
                "answer for {:?} in status {:?} after {op:?}",
                answer.payment_id, answer.status
            ),
        },
        Ok(Verified::Refused(e)) => ActionOutcome::Declined {
            code: e.code,
            message: e.message,
        },
        Err(detail) => ActionOutcome::Unknown { detail },
    }
}

/// The refund status mapping.
pub fn refund_outcome(answer: &RefundAnswer) -> RefundOutcome {
    let channel_ref = Some(answer.channel_refund_id.clone());
    match answer.status {
        SandboxRefundStatus::Pending => RefundOutcome::Pending { channel_ref },
        SandboxRefundStatus::Succeeded => RefundOutcome::Succeeded { channel_ref },
        SandboxRefundStatus::Failed => RefundOutcome::Failed {
            code: answer
                .failure_code
                .clone()
                .unwrap_or_else(|| "refund_failed".to_string()),
            message: "the sandbox refused the refund".to_string(),
        },
    }
}

/// The answer to `refund.create` or `refund.query`.
pub fn parse_refund(
    resp: &OutboundResponse,
    refund_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> RefundOutcome {
    match verify_answer::<RefundAnswer>(resp, secret, now_unix_s) {
        Ok(Verified::Ok(answer)) if answer.refund_id == refund_id => refund_outcome(&answer),
        Ok(Verified::Ok(answer)) => RefundOutcome::Unknown {
            detail: format!(
                "answer is about refund {:?}, not {refund_id:?}",
                answer.refund_id
            ),
        },
        Ok(Verified::Refused(e))
            if e.code == "refund_exceeds_captured" || e.code == "not_refundable" =>
        {
            RefundOutcome::Failed {
                code: e.code,
                message: e.message,
            }
        }
        Ok(Verified::Refused(e)) => RefundOutcome::Unknown {
            detail: format!("sandbox refused: {} ({})", e.code, e.message),
        },
        Err(detail) => RefundOutcome::Unknown { detail },
    }
}

/// The answer to `sms.send`.
pub fn parse_sms(
    resp: &OutboundResponse,
    message_id: &str,
    secret: &[u8],
    now_unix_s: i64,
) -> Result<(), String> {
    match verify_answer::<SmsAnswer>(resp, secret, now_unix_s)? {
        Verified::Ok(answer) if answer.message_id == message_id && answer.status == "sent" => {
            Ok(())
        }
        Verified::Ok(answer) => Err(format!("unexpected SMS answer {answer:?}")),
        Verified::Refused(e) => Err(format!("SMS refused: {} ({})", e.code, e.message)),
    }
}

/// A verified notification, in the core's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedNotification {
    /// About a payment.
    Payment(PaymentNotification),
    /// About a refund.
    Refund(RefundNotification),
}

/// Why a notification was rejected (answer 400/401; the sandbox may retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationRejected {
    /// No, forged or stale signature.
    #[error("signature refused: {0}")]
    Signature(String),
    /// Signed but not a notification.
    #[error("malformed notification: {0}")]
    Malformed(String),
}

/// A verified sandbox notification: what it says, and the key-value key that marks its
/// `notification_id` as applied (claimed after it was applied, so a replay of the same
/// signed bytes within the signature's tolerance changes nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedNotification {
    /// What it reports.
    pub parsed: ParsedNotification,
    /// [`crate::crypto::replay_key`] of its `notification_id`.
    pub replay_key: String,
}

/// Verifies and parses a notification POSTed by the sandbox, with its replay key.
pub fn verify_notification(
    signature: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now_unix_s: i64,
) -> Result<VerifiedNotification, NotificationRejected> {
    let header = signature.ok_or_else(|| NotificationRejected::Signature("missing".into()))?;
    verify_header(header, body, &[secret], now_unix_s, SIGNATURE_TOLERANCE_S)
        .map_err(|e| NotificationRejected::Signature(e.to_string()))?;
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| NotificationRejected::Malformed(e.to_string()))?;
    Ok(VerifiedNotification {
        replay_key: crate::crypto::replay_key("sandbox", &n.notification_id),
        parsed: parsed(n)?,
    })
}

/// What a verified notification reports.
fn parsed(n: Notification) -> Result<ParsedNotification, NotificationRejected> {
    match (n.kind, n.refund) {
        (NotificationKind::Payment, None) => Ok(ParsedNotification::Payment(PaymentNotification {
            channel: Channel::Sandbox,
            payment_id: n.payment.payment_id.clone(),
            report: ChannelReport {
                outcome: payment_outcome(&n.payment),
                amount_minor: Some(n.payment.amount_minor),
                currency: Some(n.payment.currency.code().to_string()),
            },
        })),
        (NotificationKind::Refund, Some(refund)) if refund.payment_id == n.payment.payment_id => {
            Ok(ParsedNotification::Refund(RefundNotification {
                channel: Channel::Sandbox,
                refund_id: refund.refund_id.clone(),
                payment_id: Some(refund.payment_id.clone()),
                amount_minor: Some(refund.amount_minor),
                currency: Some(n.payment.currency.code().to_string()),
                outcome: refund_outcome(&refund),
            }))
        }
        (NotificationKind::Payment, Some(_)) | (NotificationKind::Refund, _) => Err(
            NotificationRejected::Malformed("kind and refund do not agree".into()),
        ),
    }
}

/// The acknowledgement body for an accepted notification (status 200).
pub fn notification_ack() -> &'static str {
    super::wire::NOTIFICATION_ACK
}
