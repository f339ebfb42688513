//! The simulated provider's decisions, pure: what a create, a customer payment, a
//! capture, a cancel, a refund or a query does to a sandbox payment record. The HTTP
//! handler (`handler.rs`, wasm only) reads the record, calls one of these inside a
//! compare-and-swap loop, stores the result and answers.
//!
//! Magic amounts (minor units) select outcomes: 666 declined (insufficient funds), 777
//! answers after [`SLOW_ANSWER_MS`] (longer than any adapter deadline), 888 stays
//! pending until the customer pays, 999 answers garbage. Magic codes: a customer
//! auth code / token ending `0000` is declined, ending `1111` waits for the customer.
//! An `sms_otp` phone is not a code (its OTP was already checked by spinpay): no suffix
//! selects anything, and it is the payment ref only when 888 leaves the payment pending.
//!
//! A payment ref names one payment at a time (`sbx:ref:<hash>`, [`claim_ref`]): a create
//! whose ref already names another payment the customer can still pay is declined
//! `payment_ref_in_use`, as a wallet refuses a single-use code presented twice.

use serde::{Deserialize, Serialize};
use spinpay_channels::sandbox::wire::{
    CreatePayment, CreateRefund, ErrorAnswer, ErrorBody, Notification, NotificationKind,
    PaymentAnswer, RefundAnswer, SandboxRefundStatus, SandboxStatus,
};
use spinpay_core::crypto::sha256_hex;
use spinpay_core::model::{CaptureMode, MethodKind, NextAction, PaymentMethod};
use spinpay_core::money::{AMOUNT_MINOR_MAX, Currency};

/// Declined with `insufficient_funds`.
pub const MAGIC_DECLINE_MINOR: i64 = 666;
/// Answered only after [`SLOW_ANSWER_MS`].
pub const MAGIC_SLOW_MINOR: i64 = 777;
/// Stays pending until paid by the customer.
pub const MAGIC_PENDING_MINOR: i64 = 888;
/// Answered with a non-JSON, unsigned body.
pub const MAGIC_GARBAGE_MINOR: i64 = 999;
/// How long a 777 answer takes (bounded; longer than the adapter's 2.5 s deadline).
pub const SLOW_ANSWER_MS: u64 = 5_000;
/// Most refunds one sandbox payment keeps.
pub const REFUNDS_PER_PAYMENT_MAX: u32 = 100;
/// Longest id accepted from spinpay.
pub const ID_LEN_MAX: usize = 64;
/// Longest notify URL.
pub const NOTIFY_URL_LEN_MAX: usize = 2048;
/// Longest description.
pub const DESCRIPTION_LEN_MAX: usize = 1000;
/// Host of the (fake) H5 checkout pages; `.invalid` is reserved and never resolves.
pub const H5_CHECKOUT_BASE: &str = "https://checkout.sandbox.invalid/h5/";

/// How the sandbox delivers its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Right away.
    Normal,
    /// After [`SLOW_ANSWER_MS`].
    Slow,
    /// A garbage (non-JSON, unsigned) body.
    Garbage,
}

/// The delivery a magic amount selects.
pub fn delivery_for(amount_minor: i64) -> Delivery {
    match amount_minor {
        MAGIC_SLOW_MINOR => Delivery::Slow,
        MAGIC_GARBAGE_MINOR => Delivery::Garbage,
        _other => Delivery::Normal,
    }
}

/// A refused request: HTTP status and the sandbox's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// HTTP status.
    pub status: u16,
    /// Stable code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl SimError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> SimError {
        SimError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The wire body.
    pub fn answer(&self) -> ErrorAnswer {
        ErrorAnswer {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

/// A refund as the sandbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRefund {
    /// spinpay's refund id.
    pub refund_id: String,
    /// The sandbox's reference.
    pub channel_refund_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Status.
    pub status: SandboxRefundStatus,
    /// Why it failed.
    pub failure_code: Option<String>,
    /// When it was asked for.
    pub created_at_ms: i64,
}

/// A payment as the sandbox keeps it (key `sbx:pay:<payment_id>`). Secrets (tokens,
/// codes, phones) are never stored: only a hash of the request, for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPayment {
    /// spinpay's payment id.
    pub payment_id: String,
    /// The sandbox's transaction id.
    pub channel_txn_id: String,
    /// sha256 of the create request's money fields and method (a retried create must match).
    pub request_hash: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Capture mode.
    pub capture: CaptureMode,
    /// Method kind.
    pub method: MethodKind,
    /// Where notifications go.
    pub notify_url: String,
    /// Status.
    pub status: SandboxStatus,
    /// Captured.
    pub captured_minor: i64,
    /// Refunded (succeeded + pending refunds).
    pub refunded_minor: i64,
    /// Customer's next step while pending.
    pub next_action: Option<NextAction>,
    /// sha256 of each reference the customer may pay with (`sbx:ref:<hash>` indexes).
    pub payment_ref_hashes: Vec<String>,
    /// Why it was declined.
    pub decline_code: Option<String>,
    /// Message for the decline.
    pub decline_message: Option<String>,
    /// Refunds, oldest first.
    pub refunds: Vec<SandboxRefund>,
    /// Created.
    pub created_at_ms: i64,
    /// Paid by the customer.
    pub paid_at_ms: Option<i64>,
    /// When the customer can no longer pay (Unix ms); `None`: never.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// The key of a payment record.
pub fn payment_key(payment_id: &str) -> String {
    format!("sbx:pay:{payment_id}")
}

/// The key of a payment-reference index entry.
pub fn ref_key(payment_ref: &str) -> String {
    ref_key_for_hash(&sha256_hex(payment_ref.as_bytes()))
}

/// The key of a payment-reference index entry, from the hash a record keeps
/// ([`SandboxPayment::payment_ref_hashes`]).
pub fn ref_key_for_hash(payment_ref_hash: &str) -> String {
    format!("sbx:ref:{payment_ref_hash}")
}

/// The key of a phone's last SMS.
pub fn sms_key(phone: &str) -> String {
    format!("sbx:sms:{phone}")
}

fn is_plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ID_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn bad(code: &'static str, message: impl Into<String>) -> SimError {
    SimError::new(400, code, message)
}

/// Validates a create request.
pub fn validate_create(req: &CreatePayment) -> Result<(), SimError> {
    if !is_plain_id(&req.payment_id) {
        return Err(bad(
            "payment_id_invalid",
            "payment_id must be 1-64 of [A-Za-z0-9_-]",
        ));
    }
    if !(1..=AMOUNT_MINOR_MAX).contains(&req.amount_minor) {
        return Err(bad(
            "amount_invalid",
            "amount_minor must be from 1 to 10^12",
        ));
    }
    let url_ok = (req.notify_url.starts_with("http://") || req.notify_url.starts_with("https://"))
        && req.notify_url.len() <= NOTIFY_URL_LEN_MAX;
    if !url_ok {
        return Err(bad(
            "notify_url_invalid",
            "notify_url must be an http(s) URL",
        ));
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_LEN_MAX)
    {
        return Err(bad(
            "description_invalid",
            "description is longer than 1000 characters",
        ));
    }
    Ok(())
}

/// The idempotency fingerprint of a create request (without ids and URLs).
pub fn request_hash(req: &CreatePayment) -> String {
    let material = serde_json::json!({
        "amount_minor": req.amount_minor,
        "currency": req.currency,
        "capture": req.capture,
        "method": req.method,
    });
    sha256_hex(material.to_string().as_bytes())
}

/// What a create decides: the record and the references the customer may pay with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The new record.
    pub record: SandboxPayment,
    /// Plain references to index (QR payload, URL, order string, code or token, or the
    /// phone of an `sms_otp` payment left pending by 888).
    pub payment_refs: Vec<String>,
}

enum Decision {
    Paid,
    Pending(Option<NextAction>, String),
    Declined(&'static str, &'static str),
}

fn decide(req: &CreatePayment, txn: &str) -> Decision {
    if req.amount_minor == MAGIC_DECLINE_MINOR {
        return Decision::Declined("insufficient_funds", "the payer's balance is insufficient");
    }
    let pending_magic = req.amount_minor == MAGIC_PENDING_MINOR;
    match &req.method {
        PaymentMethod::QrMerchant => {
            let qr_payload = format!("sandbox://qr/{txn}");
            Decision::Pending(
                Some(NextAction::DisplayQr {
                    qr_payload: qr_payload.clone(),
                }),
                qr_payload,
            )
        }
        PaymentMethod::H5 { .. } => {
            let url = format!("{H5_CHECKOUT_BASE}{txn}");
            Decision::Pending(Some(NextAction::Redirect { url: url.clone() }), url)
        }
        PaymentMethod::App => {
            let order_string = format!(
                "sandbox_app_order?txn={txn}&amount_minor={}&currency={}",
                req.amount_minor,
                req.currency.code()
            );
            Decision::Pending(
                Some(NextAction::AppOrder {
                    order_string: order_string.clone(),
                }),
                order_string,
            )
        }
        // The payer already proved the phone with the OTP spinpay sent, so the phone is
        // not a wallet code: no suffix magic. Only 888 leaves it waiting, and then the
        // phone is what the customer pays with (`POST /sandbox/customer/pay`).
        PaymentMethod::SmsOtp { phone } => {
            if pending_magic {
                Decision::Pending(None, phone.clone())
            } else {
                Decision::Paid
            }
        }
        PaymentMethod::QrCustomer { auth_code: token }
        | PaymentMethod::SoundWave { token }
        | PaymentMethod::Nfc { token, .. } => {
            if let PaymentMethod::Nfc { cryptogram, .. } = &req.method
                && cryptogram.trim().is_empty()
            {
                return Decision::Declined("invalid_cryptogram", "the NFC cryptogram is empty");
            }
            if token.ends_with("0000") {
                Decision::Declined("card_declined", "the wallet declined the payment code")
            } else if pending_magic || token.ends_with("1111") {
                Decision::Pending(None, token.clone())
            } else {
                Decision::Paid
            }
        }
    }
}

/// Decides a new payment.
pub fn create(req: &CreatePayment, channel_txn_id: &str, now_ms: i64) -> Created {
    let mut record = SandboxPayment {
        payment_id: req.payment_id.clone(),
        channel_txn_id: channel_txn_id.to_string(),
        request_hash: request_hash(req),
        amount_minor: req.amount_minor,
        currency: req.currency,
        capture: req.capture,
        method: req.method.kind(),
        notify_url: req.notify_url.clone(),
        status: SandboxStatus::Pending,
        captured_minor: 0,
        refunded_minor: 0,
        next_action: None,
        payment_ref_hashes: Vec::new(),
        decline_code: None,
        decline_message: None,
        refunds: Vec::new(),
        created_at_ms: now_ms,
        paid_at_ms: None,
        expires_at_ms: req.expires_at_ms,
    };
    let mut payment_refs = Vec::new();
    match decide(req, channel_txn_id) {
        Decision::Paid => mark_paid(&mut record, now_ms),
        Decision::Pending(next_action, payment_ref) => {
            record.next_action = next_action;
            record
                .payment_ref_hashes
                .push(sha256_hex(payment_ref.as_bytes()));
            payment_refs.push(payment_ref);
        }
        Decision::Declined(code, message) => {
            record.status = SandboxStatus::Declined;
            record.decline_code = Some(code.to_string());
            record.decline_message = Some(message.to_string());
        }
    }
    Created {
        record,
        payment_refs,
    }
}

/// A retried create: the same request gets the stored record; another request with
/// the same payment id is refused.
pub fn replay_create(existing: &SandboxPayment, req: &CreatePayment) -> Result<(), SimError> {
    if existing.request_hash == request_hash(req) {
        Ok(())
    } else {
        Err(SimError::new(
            409,
            "payment_id_reused",
            "payment_id was used with another request",
        ))
    }
}

fn mark_paid(record: &mut SandboxPayment, now_ms: i64) {
    record.paid_at_ms = Some(now_ms);
    record.next_action = None;
    match record.capture {
        CaptureMode::Automatic => {
            record.status = SandboxStatus::Succeeded;
            record.captured_minor = record.amount_minor;
        }
        CaptureMode::Manual => record.status = SandboxStatus::Authorized,
    }
}

fn status_name(s: SandboxStatus) -> &'static str {
    match s {
        SandboxStatus::Pending => "pending",
        SandboxStatus::Authorized => "authorized",
        SandboxStatus::Succeeded => "succeeded",
        SandboxStatus::Declined => "declined",
        SandboxStatus::Closed => "closed",
    }
}

/// The customer pays a pending payment that has not expired.
pub fn customer_pay(record: &mut SandboxPayment, now_ms: i64) -> Result<(), SimError> {
    match record.status {
        SandboxStatus::Pending if record.expires_at_ms.is_some_and(|t| now_ms >= t) => {
            Err(SimError::new(
                409,
                "payment_expired",
                "the payment expired unpaid: the customer can no longer pay it",
            ))
        }
        SandboxStatus::Pending => {
            mark_paid(record, now_ms);
            Ok(())
        }
        SandboxStatus::Authorized
        | SandboxStatus::Succeeded
        | SandboxStatus::Declined
        | SandboxStatus::Closed => Err(SimError::new(
            409,
            "not_payable",
            format!("the payment is {}, not pending", status_name(record.status)),
        )),
    }
}

/// Whether the customer can still pay the payment: pending and not expired.
pub fn is_payable(record: &SandboxPayment, now_ms: i64) -> bool {
    match record.status {
        SandboxStatus::Pending => record.expires_at_ms.is_none_or(|t| now_ms < t),
        SandboxStatus::Authorized
        | SandboxStatus::Succeeded
        | SandboxStatus::Declined
        | SandboxStatus::Closed => false,
    }
}

/// The decline code of a create whose payment ref names another payable payment.
pub const REF_IN_USE_CODE: &str = "payment_ref_in_use";

/// What a create may do with a payment-ref index entry (`sbx:ref:<hash>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefClaim {
    /// The entry already names the claimant (a replayed create): nothing to write.
    Held,
    /// Write the claimant's id (compare-and-swap on the entry's version).
    Take,
    /// Another payment the customer can still pay holds it: decline the claimant.
    InUse,
}

/// Whether `claimant_id` may take a payment ref whose index entry names `holder_id`
/// (`None`: free or unreadable), given the holder's record (`None`: not found). A ref
/// whose holder can no longer be paid (paid, declined, closed, expired) is taken over:
/// those states never become payable again, so the takeover cannot strand the holder.
pub fn claim_ref(
    claimant_id: &str,
    holder_id: Option<&str>,
    holder: Option<&SandboxPayment>,
    now_ms: i64,
) -> RefClaim {
    match holder_id {
        Some(id) if id == claimant_id => RefClaim::Held,
        Some(_) if holder.is_some_and(|h| is_payable(h, now_ms)) => RefClaim::InUse,
        Some(_) | None => RefClaim::Take,
    }
}

/// Declines a pending payment whose payment ref another payable payment holds; returns
/// whether the record changed (a payment that left `pending` meanwhile is kept as is).
pub fn decline_ref_in_use(record: &mut SandboxPayment) -> bool {
    match record.status {
        SandboxStatus::Pending => {
            record.status = SandboxStatus::Declined;
            record.next_action = None;
            record.payment_ref_hashes.clear();
            record.decline_code = Some(REF_IN_USE_CODE.to_string());
            record.decline_message = Some(
                "this auth code, token or phone already names another payment waiting for \
                 the customer (a wallet code is single-use)"
                    .to_string(),
            );
            true
        }
        SandboxStatus::Authorized
        | SandboxStatus::Succeeded
        | SandboxStatus::Declined
        | SandboxStatus::Closed => false,
    }
}

/// Whether the notification that follows a slow (777) or garbage (999) create answer is
/// sent, given the record as the create stored it and as it is after the pause; it is
/// then about `current`, never the stale `created`. A payment the create left pending
/// gets its notification when the customer pays. One closed meanwhile was closed by
/// spinpay's own cancel, which already has the sandbox's answer: like a real provider
/// (no notification for a close the merchant asked for), the sandbox sends nothing
/// rather than report a payment the merchant voided as authorized or paid.
pub fn notifies_after_create(created: &SandboxPayment, current: &SandboxPayment) -> bool {
    let decided = match created.status {
        SandboxStatus::Pending => false,
        SandboxStatus::Authorized
        | SandboxStatus::Succeeded
        | SandboxStatus::Declined
        | SandboxStatus::Closed => true,
    };
    let worth_reporting = match current.status {
        SandboxStatus::Authorized | SandboxStatus::Succeeded | SandboxStatus::Declined => true,
        SandboxStatus::Pending | SandboxStatus::Closed => false,
    };
    decided && worth_reporting
}

/// The refund the notification after a slow or garbage refund answer reports: the refund
/// as it is now in `current`, if that is an outcome (a pending refund is settled by
/// spinpay's `refund.query`, so nothing is sent for it).
pub fn refund_to_notify<'a>(
    current: &'a SandboxPayment,
    refund_id: &str,
) -> Option<&'a SandboxRefund> {
    let refund = current.refunds.iter().find(|r| r.refund_id == refund_id)?;
    match refund.status {
        SandboxRefundStatus::Succeeded | SandboxRefundStatus::Failed => Some(refund),
        SandboxRefundStatus::Pending => None,
    }
}

/// Captures `amount_minor` of an authorization (a repeat of the same capture is a no-op).
pub fn capture(record: &mut SandboxPayment, amount_minor: Option<i64>) -> Result<(), SimError> {
    let amount = amount_minor.unwrap_or(record.amount_minor);
    match record.status {
        SandboxStatus::Authorized => {
            if !(1..=record.amount_minor).contains(&amount) {
                return Err(bad(
                    "capture_exceeds_authorized",
                    "amount_minor must be from 1 to the authorized amount",
                ));
            }
            record.status = SandboxStatus::Succeeded;
            record.captured_minor = amount;
            Ok(())
        }
        SandboxStatus::Succeeded if record.captured_minor == amount => Ok(()),
        SandboxStatus::Succeeded
        | SandboxStatus::Pending
        | SandboxStatus::Declined
        | SandboxStatus::Closed => Err(SimError::new(
            409,
            "not_capturable",
            format!(
                "the payment is {}, not authorized",
                status_name(record.status)
            ),
        )),
    }
}

/// Closes an unpaid payment or voids an authorization (a repeat is a no-op).
pub fn cancel(record: &mut SandboxPayment) -> Result<(), SimError> {
    match record.status {
        SandboxStatus::Pending | SandboxStatus::Authorized => {
            record.status = SandboxStatus::Closed;
            record.next_action = None;
            Ok(())
        }
        SandboxStatus::Closed => Ok(()),
        SandboxStatus::Succeeded => Err(SimError::new(
            409,
            "already_captured",
            "the payment is captured; refund it instead",
        )),
        SandboxStatus::Declined => Err(SimError::new(
            409,
            "not_cancelable",
            "the payment was declined",
        )),
    }
}

/// Refunds (idempotent per refund id). Returns the index of the refund in the record.
pub fn refund(
    record: &mut SandboxPayment,
    req: &CreateRefund,
    channel_refund_id: &str,
    now_ms: i64,
) -> Result<usize, SimError> {
    if let Some(i) = record
        .refunds
        .iter()
        .position(|r| r.refund_id == req.refund_id)
    {
        return if record.refunds[i].amount_minor == req.amount_minor {
            Ok(i)
        } else {
            Err(SimError::new(
                409,
                "refund_id_reused",
                "refund_id was used with another amount",
            ))
        };
    }
    if !is_plain_id(&req.refund_id) {
        return Err(bad(
            "refund_id_invalid",
            "refund_id must be 1-64 of [A-Za-z0-9_-]",
        ));
    }
    match record.status {
        SandboxStatus::Succeeded => {}
        SandboxStatus::Pending
        | SandboxStatus::Authorized
        | SandboxStatus::Declined
        | SandboxStatus::Closed => {
            return Err(SimError::new(
                409,
                "not_refundable",
                format!(
                    "the payment is {}, not succeeded",
                    status_name(record.status)
                ),
            ));
        }
    }
    if req.currency != record.currency {
        return Err(bad(
            "currency_mismatch",
            "currency differs from the payment's",
        ));
    }
    if req.amount_minor < 1 {
        return Err(bad("amount_invalid", "amount_minor must be at least 1"));
    }
    let total = record.refunded_minor.checked_add(req.amount_minor);
    if total.is_none_or(|t| t > record.captured_minor) {
        return Err(bad(
            "refund_exceeds_captured",
            "refunds would exceed the captured amount",
        ));
    }
    if u32::try_from(record.refunds.len()).unwrap_or(u32::MAX) >= REFUNDS_PER_PAYMENT_MAX {
        return Err(SimError::new(
            409,
            "refund_limit_reached",
            "too many refunds on this payment",
        ));
    }
    let (status, failure_code) = match req.amount_minor {
        MAGIC_DECLINE_MINOR => (
            SandboxRefundStatus::Failed,
            Some("insufficient_merchant_balance".to_string()),
        ),
        MAGIC_PENDING_MINOR => (SandboxRefundStatus::Pending, None),
        _other => (SandboxRefundStatus::Succeeded, None),
    };
    if status != SandboxRefundStatus::Failed {
        record.refunded_minor = total.expect("checked above");
    }
    record.refunds.push(SandboxRefund {
        refund_id: req.refund_id.clone(),
        channel_refund_id: channel_refund_id.to_string(),
        amount_minor: req.amount_minor,
        status,
        failure_code,
        created_at_ms: now_ms,
    });
    assert!(record.refunded_minor <= record.captured_minor);
    Ok(record.refunds.len() - 1)
}

/// A refund query: a pending refund settles (succeeds) when it is asked about.
/// Returns the refund's index and whether the record changed.
pub fn settle_refund(
    record: &mut SandboxPayment,
    refund_id: &str,
) -> Result<(usize, bool), SimError> {
    let i = record
        .refunds
        .iter()
        .position(|r| r.refund_id == refund_id)
        .ok_or_else(|| SimError::new(404, "refund_not_found", "no such refund for this payment"))?;
    let changed = match record.refunds[i].status {
        SandboxRefundStatus::Pending => {
            record.refunds[i].status = SandboxRefundStatus::Succeeded;
            true
        }
        SandboxRefundStatus::Succeeded | SandboxRefundStatus::Failed => false,
    };
    Ok((i, changed))
}

/// The wire answer for a payment.
pub fn payment_answer(r: &SandboxPayment) -> PaymentAnswer {
    PaymentAnswer {
        payment_id: r.payment_id.clone(),
        channel_txn_id: r.channel_txn_id.clone(),
        status: r.status,
        amount_minor: r.amount_minor,
        currency: r.currency,
        captured_minor: r.captured_minor,
        refunded_minor: r.refunded_minor,
        next_action: r.next_action.clone(),
        decline_code: r.decline_code.clone(),
        decline_message: r.decline_message.clone(),
    }
}

/// The wire answer for a refund.
pub fn refund_answer(r: &SandboxPayment, refund: &SandboxRefund) -> RefundAnswer {
    RefundAnswer {
        refund_id: refund.refund_id.clone(),
        payment_id: r.payment_id.clone(),
        channel_refund_id: refund.channel_refund_id.clone(),
        status: refund.status,
        amount_minor: refund.amount_minor,
        failure_code: refund.failure_code.clone(),
    }
}

/// A notification about the payment (and a refund of it).
pub fn notification(
    r: &SandboxPayment,
    refund: Option<&SandboxRefund>,
    notification_id: &str,
    now_ms: i64,
) -> Notification {
    Notification {
        notification_id: notification_id.to_string(),
        kind: match refund {
            Some(_) => NotificationKind::Refund,
            None => NotificationKind::Payment,
        },
        payment: payment_answer(r),
        refund: refund.map(|x| refund_answer(r, x)),
        sent_at_ms: now_ms,
    }
}

/// A phone number the SMS endpoint accepts: `+` and 8–15 digits.
pub fn valid_phone(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The last SMS sent to a phone (key [`sms_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSms {
    /// Phone.
    pub phone: String,
    /// Text.
    pub text: String,
    /// When.
    pub sent_at_ms: i64,
    /// The sender's message id (a retried send is not a new message).
    pub message_id: String,
}

#[cfg(test)]
mod tests;
