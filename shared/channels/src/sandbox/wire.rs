//! The sandbox provider's wire format (docs/sandbox.md), shared by the adapter (which
//! speaks it) and the `sandbox` component (which serves it), so the two cannot drift.
//!
//! Every request from spinpay and every answer and notification from the sandbox is a
//! JSON body signed with `Sandbox-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
//! "t.body")>`. Each request body names its operation (`op`) so a signed body cannot be
//! replayed against another endpoint, and each answer repeats our ids so an answer
//! cannot be replayed for another payment.

use serde::{Deserialize, Serialize};
use spinpay_core::model::{CaptureMode, NextAction, PaymentMethod};
use spinpay_core::money::Currency;

/// The signature header (requests, answers and notifications).
pub const SIGNATURE_HEADER: &str = "sandbox-signature";
/// Seconds a signature timestamp may differ from the receiver's clock.
pub const SIGNATURE_TOLERANCE_S: i64 = 300;

/// `POST`: create/authorize a payment ([`CreatePayment`] → [`PaymentAnswer`]).
pub const PATH_PAYMENTS: &str = "/sandbox/v1/payments";
/// `POST`: capture ([`PaymentAction`] with `amount_minor` → [`PaymentAnswer`]).
pub const PATH_CAPTURE: &str = "/sandbox/v1/payments/capture";
/// `POST`: cancel / close ([`PaymentAction`] → [`PaymentAnswer`]).
pub const PATH_CANCEL: &str = "/sandbox/v1/payments/cancel";
/// `POST`: query ([`PaymentAction`] → [`PaymentAnswer`]).
pub const PATH_QUERY: &str = "/sandbox/v1/payments/query";
/// `POST`: refund ([`CreateRefund`] → [`RefundAnswer`]).
pub const PATH_REFUNDS: &str = "/sandbox/v1/refunds";
/// `POST`: query a refund ([`RefundQuery`] → [`RefundAnswer`]).
pub const PATH_REFUND_QUERY: &str = "/sandbox/v1/refunds/query";
/// `POST`: send an SMS ([`SendSms`] → [`SmsAnswer`]).
pub const PATH_SMS: &str = "/sandbox/v1/sms";
/// `POST` (unsigned, the customer's side): pay a pending payment by its reference.
pub const PATH_CUSTOMER_PAY: &str = "/sandbox/customer/pay";
/// `GET /sandbox/sms/{phone}` (unsigned): the last SMS sent to a phone.
pub const PATH_SMS_INBOX_PREFIX: &str = "/sandbox/sms/";

/// The operation a signed request performs; must match its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// [`PATH_PAYMENTS`].
    #[serde(rename = "payment.create")]
    PaymentCreate,
    /// [`PATH_CAPTURE`].
    #[serde(rename = "payment.capture")]
    PaymentCapture,
    /// [`PATH_CANCEL`].
    #[serde(rename = "payment.cancel")]
    PaymentCancel,
    /// [`PATH_QUERY`].
    #[serde(rename = "payment.query")]
    PaymentQuery,
    /// [`PATH_REFUNDS`].
    #[serde(rename = "refund.create")]
    RefundCreate,
    /// [`PATH_REFUND_QUERY`].
    #[serde(rename = "refund.query")]
    RefundQuery,
    /// [`PATH_SMS`].
    #[serde(rename = "sms.send")]
    SmsSend,
}

impl Op {
    /// The path this operation is sent to.
    pub fn path(self) -> &'static str {
        match self {
            Op::PaymentCreate => PATH_PAYMENTS,
            Op::PaymentCapture => PATH_CAPTURE,
            Op::PaymentCancel => PATH_CANCEL,
            Op::PaymentQuery => PATH_QUERY,
            Op::RefundCreate => PATH_REFUNDS,
            Op::RefundQuery => PATH_REFUND_QUERY,
            Op::SmsSend => PATH_SMS,
        }
    }
}

/// Create (and, for customer-presented methods, authorize) a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Always [`Op::PaymentCreate`].
    pub op: Op,
    /// spinpay's payment id: the sandbox's idempotency key.
    pub payment_id: String,
    /// Amount in minor units (magic amounts in docs/sandbox.md).
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Automatic (pay = capture) or manual (pay = authorize only).
    pub capture: CaptureMode,
    /// The method with its secrets (tokens, auth code, phone).
    pub method: PaymentMethod,
    /// Where the sandbox POSTs signed notifications for this payment.
    pub notify_url: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// When the customer can no longer pay (Unix ms); `None`: never.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// Capture, cancel or query a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentAction {
    /// [`Op::PaymentCapture`], [`Op::PaymentCancel`] or [`Op::PaymentQuery`].
    pub op: Op,
    /// spinpay's payment id.
    pub payment_id: String,
    /// Capture amount (capture only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
}

/// Refund part or all of a captured payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Always [`Op::RefundCreate`].
    pub op: Op,
    /// spinpay's payment id.
    pub payment_id: String,
    /// spinpay's refund id: the idempotency key.
    pub refund_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// Must be the payment's currency.
    pub currency: Currency,
}

/// Ask where a refund stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundQuery {
    /// Always [`Op::RefundQuery`].
    pub op: Op,
    /// spinpay's payment id.
    pub payment_id: String,
    /// spinpay's refund id.
    pub refund_id: String,
}

/// Send a text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    /// Always [`Op::SmsSend`].
    pub op: Op,
    /// Caller's message id (idempotency key).
    pub message_id: String,
    /// E.164 phone.
    pub phone: String,
    /// The text (≤ [`SMS_TEXT_LEN_MAX`] characters).
    pub text: String,
}

/// Longest SMS text accepted.
pub const SMS_TEXT_LEN_MAX: usize = 480;

/// A payment's status at the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// Waiting for the customer to pay.
    Pending,
    /// Paid, not captured (manual capture).
    Authorized,
    /// Paid and captured.
    Succeeded,
    /// Refused. Final.
    Declined,
    /// Closed unpaid or voided. Final.
    Closed,
}

/// The sandbox's answer about a payment (also the body of a payment notification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentAnswer {
    /// spinpay's payment id, echoed.
    pub payment_id: String,
    /// The sandbox's own transaction id.
    pub channel_txn_id: String,
    /// Status.
    pub status: SandboxStatus,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Captured so far.
    pub captured_minor: i64,
    /// Refunded so far (succeeded and pending refunds).
    pub refunded_minor: i64,
    /// What the customer must do (pending payments of merchant-presented methods).
    pub next_action: Option<NextAction>,
    /// Why it was declined.
    pub decline_code: Option<String>,
    /// Human-readable reason.
    pub decline_message: Option<String>,
}

/// A refund's status at the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxRefundStatus {
    /// Accepted, money not yet returned.
    Pending,
    /// Money returned.
    Succeeded,
    /// Refused.
    Failed,
}

/// The sandbox's answer about a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundAnswer {
    /// spinpay's refund id, echoed.
    pub refund_id: String,
    /// spinpay's payment id, echoed.
    pub payment_id: String,
    /// The sandbox's refund reference.
    pub channel_refund_id: String,
    /// Status.
    pub status: SandboxRefundStatus,
    /// Amount.
    pub amount_minor: i64,
    /// Why it failed.
    pub failure_code: Option<String>,
}

/// The answer to [`SendSms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsAnswer {
    /// Echoed message id.
    pub message_id: String,
    /// Always `sent`.
    pub status: String,
}

/// A signed error answer: `{"error":{"code","message"}}` with a 4xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorAnswer {
    /// The error.
    pub error: ErrorBody,
}

/// The body of an [`ErrorAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable code, e.g. `payment_not_found`, `not_capturable`, `signature_invalid`.
    pub code: String,
    /// Message.
    pub message: String,
}

/// A notification the sandbox POSTs to the payment's `notify_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Unique per notification (the same event re-sent keeps its id).
    pub notification_id: String,
    /// `payment` or `refund`.
    pub kind: NotificationKind,
    /// The payment as it stands (always present).
    pub payment: PaymentAnswer,
    /// The refund, for refund notifications.
    #[serde(default)]
    pub refund: Option<RefundAnswer>,
    /// When the sandbox sent it.
    pub sent_at_ms: i64,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A payment changed.
    Payment,
    /// A refund changed.
    Refund,
}

/// The acknowledgement the sandbox expects (any 2xx counts; this is the canonical body).
pub const NOTIFICATION_ACK: &str = r#"{"received":true}"#;
