//! Domain types: channels, payment methods, statuses, payments, refunds, merchants,
//! events and risk assessments. These are the stored and validated forms; the wire
//! forms live in [`crate::api`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::{PaymentState, RefundState};
use crate::money::Currency;

/// A payment channel (provider). `sandbox` is the simulated provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The simulated provider, reached over HTTP like a real one.
    Sandbox,
    /// Alipay.
    Alipay,
    /// WeChat Pay (API v3).
    Wechatpay,
    /// UnionPay (ACP).
    Unionpay,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [
        Channel::Sandbox,
        Channel::Alipay,
        Channel::Wechatpay,
        Channel::Unionpay,
    ];

    /// The wire name, e.g. `"wechatpay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sandbox => "sandbox",
            Channel::Alipay => "alipay",
            Channel::Wechatpay => "wechatpay",
            Channel::Unionpay => "unionpay",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Whether the channel captures immediately or only authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Capture with the authorization (the default).
    #[default]
    Automatic,
    /// Authorize only; the merchant captures (all or part) later.
    Manual,
}

/// Why a payment was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// The merchant canceled it (`POST /v1/payments/{id}/cancel`).
    RequestedByMerchant,
    /// Nobody paid it before its expiry: reconciliation closed it at its channel.
    Expired,
}

impl CancellationReason {
    /// Every reason, in declaration order.
    pub const ALL: [CancellationReason; 2] = [
        CancellationReason::RequestedByMerchant,
        CancellationReason::Expired,
    ];
}

/// The seven payment-method kinds (the `type` of a method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// Merchant shows a QR code; the customer's wallet pays; the channel notifies.
    QrMerchant,
    /// The customer shows a one-time barcode the merchant scans.
    QrCustomer,
    /// Device token plus cryptogram (contactless).
    Nfc,
    /// One-time token received acoustically.
    SoundWave,
    /// Mobile web: the customer is redirected.
    H5,
    /// In-app: an order string for the wallet SDK.
    App,
    /// A one-time code sent by SMS to the payer, submitted to `confirm`.
    SmsOtp,
}

impl MethodKind {
    /// Every kind.
    pub const ALL: [MethodKind; 7] = [
        MethodKind::QrMerchant,
        MethodKind::QrCustomer,
        MethodKind::Nfc,
        MethodKind::SoundWave,
        MethodKind::H5,
        MethodKind::App,
        MethodKind::SmsOtp,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::QrMerchant => "qr_merchant",
            MethodKind::QrCustomer => "qr_customer",
            MethodKind::Nfc => "nfc",
            MethodKind::SoundWave => "sound_wave",
            MethodKind::H5 => "h5",
            MethodKind::App => "app",
            MethodKind::SmsOtp => "sms_otp",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<MethodKind> {
        MethodKind::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A validated payment method with its (secret) fields. Stored encrypted; shown masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentMethod {
    /// Merchant-presented QR.
    QrMerchant,
    /// Customer-presented barcode.
    QrCustomer {
        /// The one-time code scanned from the customer's wallet.
        auth_code: String,
    },
    /// Contactless.
    Nfc {
        /// Device (network) token.
        token: String,
        /// The one-time cryptogram.
        cryptogram: String,
    },
    /// Sound-wave token.
    SoundWave {
        /// The one-time token.
        token: String,
    },
    /// Mobile web redirect.
    H5 {
        /// Where the customer returns after paying (https URL).
        return_url: String,
    },
    /// In-app payment.
    App,
    /// SMS one-time code.
    SmsOtp {
        /// The payer's phone, E.164 (`+` and 8–15 digits).
        phone: String,
    },
}

impl PaymentMethod {
    /// The method's kind.
    pub fn kind(&self) -> MethodKind {
        match self {
            PaymentMethod::QrMerchant => MethodKind::QrMerchant,
            PaymentMethod::QrCustomer { .. } => MethodKind::QrCustomer,
            PaymentMethod::Nfc { .. } => MethodKind::Nfc,
            PaymentMethod::SoundWave { .. } => MethodKind::SoundWave,
            PaymentMethod::H5 { .. } => MethodKind::H5,
            PaymentMethod::App => MethodKind::App,
            PaymentMethod::SmsOtp { .. } => MethodKind::SmsOtp,
        }
    }

    /// The same method with every secret masked, for responses, events and logs.
    pub fn masked(&self) -> PaymentMethod {
        match self {
            PaymentMethod::QrMerchant => PaymentMethod::QrMerchant,
            PaymentMethod::QrCustomer { auth_code } => PaymentMethod::QrCustomer {
                auth_code: mask_tail(auth_code, 4),
            },
            PaymentMethod::Nfc { token, .. } => PaymentMethod::Nfc {
                token: mask_tail(token, 4),
                cryptogram: "***".to_string(),
            },
            PaymentMethod::SoundWave { token } => PaymentMethod::SoundWave {
                token: mask_tail(token, 4),
            },
            PaymentMethod::H5 { return_url } => PaymentMethod::H5 {
                return_url: return_url.clone(),
            },
            PaymentMethod::App => PaymentMethod::App,
            PaymentMethod::SmsOtp { phone } => PaymentMethod::SmsOtp {
                phone: mask_phone(phone),
            },
        }
    }

    /// Whether the channel's order waits for the customer to act elsewhere (scan a QR
    /// code, finish a redirect, confirm in a wallet app): such an order carries the
    /// payment's expiry to the channel. A customer-presented value is decided at once,
    /// and an SMS code is checked by spinpay before the channel is asked.
    pub fn waits_for_customer(&self) -> bool {
        match self {
            PaymentMethod::QrMerchant | PaymentMethod::H5 { .. } | PaymentMethod::App => true,
            PaymentMethod::QrCustomer { .. }
            | PaymentMethod::Nfc { .. }
            | PaymentMethod::SoundWave { .. }
            | PaymentMethod::SmsOtp { .. } => false,
        }
    }

    /// The customer-presented one-time value (auth code or token), if the method has one.
    pub fn customer_token(&self) -> Option<&str> {
        match self {
            PaymentMethod::QrCustomer { auth_code } => Some(auth_code),
            PaymentMethod::Nfc { token, .. } | PaymentMethod::SoundWave { token } => Some(token),
            PaymentMethod::QrMerchant
            | PaymentMethod::H5 { .. }
            | PaymentMethod::App
            | PaymentMethod::SmsOtp { .. } => None,
        }
    }

    /// Whether the method carries the payer's own credential (a code, a token or a
    /// phone): sealed at rest, and a charge sent with it is the payer's instruction,
    /// which the channel can revoke while its outcome is open.
    pub fn carries_payer_credential(&self) -> bool {
        self.customer_token().is_some() || matches!(self, PaymentMethod::SmsOtp { .. })
    }
}

/// Masks all but the last `keep` characters with `*` (short values are fully masked).
pub fn mask_tail(value: &str, keep: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= keep * 2 {
        return "*".repeat(chars.len().max(3));
    }
    let hidden = chars.len() - keep;
    let tail: String = chars[hidden..].iter().collect();
    format!("{}{tail}", "*".repeat(hidden))
}

/// Masks a phone number keeping the `+` and first two digits and the last four.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 9 {
        return "*".repeat(chars.len().max(3));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// Who pays, as far as the merchant knows. Every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payer {
    /// The merchant's id for the payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A device fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The payer's IP address (v4 or v6 text form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The payer's phone (E.164) for an OTP step-up challenge. Stored encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// What the customer must do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Show this QR payload.
    DisplayQr {
        /// The QR content.
        qr_payload: String,
    },
    /// Redirect the customer.
    Redirect {
        /// The URL.
        url: String,
    },
    /// Pass this order string to the wallet SDK.
    AppOrder {
        /// The order string.
        order_string: String,
    },
    /// Ask the payer for the code sent by SMS and call `confirm`.
    EnterOtp,
}

/// Why a payment or refund failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable code, e.g. `channel_declined`, `risk_denied`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// Payment status (wire names are the serde names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the customer (scan a QR, redirect, enter an OTP).
    RequiresCustomerAction,
    /// Sent to the channel; the outcome is not known yet.
    Processing,
    /// Held by risk for a manual decision.
    RequiresReview,
    /// Authorized; the merchant must capture (manual capture).
    RequiresCapture,
    /// Captured (refunds may follow; the status stays `succeeded`).
    Succeeded,
    /// Voided before capture. Terminal.
    Canceled,
    /// Declined, denied or expired. Terminal.
    Failed,
}

impl PaymentStatus {
    /// Every status.
    pub const ALL: [PaymentStatus; 7] = [
        PaymentStatus::RequiresCustomerAction,
        PaymentStatus::Processing,
        PaymentStatus::RequiresReview,
        PaymentStatus::RequiresCapture,
        PaymentStatus::Succeeded,
        PaymentStatus::Canceled,
        PaymentStatus::Failed,
    ];

    /// True for statuses no command can leave.
    pub fn is_terminal(self) -> bool {
        match self {
            PaymentStatus::Canceled | PaymentStatus::Failed => true,
            PaymentStatus::RequiresCustomerAction
            | PaymentStatus::Processing
            | PaymentStatus::RequiresReview
            | PaymentStatus::RequiresCapture
            | PaymentStatus::Succeeded => false,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresCustomerAction => "requires_customer_action",
            PaymentStatus::Processing => "processing",
            PaymentStatus::RequiresReview => "requires_review",
            PaymentStatus::RequiresCapture => "requires_capture",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Failed => "failed",
        }
    }
}

/// Refund status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Amount reserved on the payment; the channel has not confirmed yet.
    Pending,
    /// The channel refunded. Terminal.
    Succeeded,
    /// The channel refused; the reservation was released. Terminal.
    Failed,
}

impl RefundStatus {
    /// Every status.
    pub const ALL: [RefundStatus; 3] = [
        RefundStatus::Pending,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

/// The risk engine's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskDecision {
    /// Proceed.
    Allow,
    /// Hold for a manual decision (`requires_review`).
    Review,
    /// Step up with an OTP (the confirm flow).
    Challenge,
    /// Refuse.
    Deny,
}

impl RiskDecision {
    /// Every decision, mildest first.
    pub const ALL: [RiskDecision; 4] = [
        RiskDecision::Allow,
        RiskDecision::Review,
        RiskDecision::Challenge,
        RiskDecision::Deny,
    ];
}

/// One rule that fired, with its contribution to the score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    /// Stable rule id, e.g. `amount_limit.qr_merchant`.
    pub rule: String,
    /// Points added to the score (a blocking rule forces `deny` whatever the score).
    pub contribution: i64,
    /// Why it fired, for humans.
    pub detail: String,
}

/// The outcome of a risk assessment, stored with the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAssessment {
    /// The decision.
    pub decision: RiskDecision,
    /// Sum of contributions (0 = nothing fired).
    pub score: i64,
    /// The rules that fired.
    pub rules: Vec<RuleHit>,
    /// The configuration version that decided.
    pub rules_version: u64,
}

impl RiskAssessment {
    /// An assessment where nothing fired.
    pub fn allow(rules_version: u64) -> RiskAssessment {
        RiskAssessment {
            decision: RiskDecision::Allow,
            score: 0,
            rules: Vec::new(),
            rules_version,
        }
    }
}

/// A channel notification that disagreed with the payment (issue 4: never silently
/// accepted). The payment is flagged and a `payment.conflicted` event raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// What disagreed, e.g. `amount_mismatch`, `currency_mismatch`, `status_contradiction`,
    /// `refund_contradiction` (a settled refund the channel reports the other way),
    /// `refund_mismatch` (a refund notification about another payment, amount or
    /// currency).
    pub reason: String,
    /// The amount the channel reported, if any.
    pub channel_amount_minor: Option<i64>,
    /// The currency the channel reported, if any.
    pub channel_currency: Option<String>,
    /// When it was detected.
    pub detected_at_ms: i64,
}

/// A payment as stored (one record per payment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `pay_…`.
    pub id: String,
    /// Owner.
    pub merchant_id: String,
    /// Per-merchant sequence number (list index position).
    pub seq: i64,
    /// Money state and status (changed only through [`crate::machine::apply_payment`]).
    pub state: PaymentState,
    /// Currency.
    pub currency: Currency,
    /// Channel.
    pub channel: Channel,
    /// Capture mode.
    pub capture: CaptureMode,
    /// Merchant's order id, unique per merchant.
    pub merchant_order_id: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The method, masked (safe to show).
    pub method: PaymentMethod,
    /// The full method, AES-256-GCM envelope ([`crate::crypto`]), if it has secrets.
    pub method_sealed: Option<String>,
    /// Payer (phone removed; see `payer_phone_sealed`).
    pub payer: Option<Payer>,
    /// The payer phone for challenges, sealed.
    pub payer_phone_sealed: Option<String>,
    /// Merchant metadata (≤ [`crate::api::METADATA_PAIRS_MAX`] pairs).
    pub metadata: BTreeMap<String, String>,
    /// What the customer must do next.
    pub next_action: Option<NextAction>,
    /// The risk assessment that decided this payment.
    pub risk: Option<RiskAssessment>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Set when a notification contradicted this payment.
    pub conflict: Option<Conflict>,
    /// The channel's reference for the payment, once known.
    pub channel_ref: Option<String>,
    /// True once the channel may know this payment (authorize was or is being sent), so
    /// cancel must go through the channel and `processing` is resolved by a query.
    pub channel_engaged: bool,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// When the customer can no longer pay: sent to the channel with the order. `None`
    /// in a record written before payments carried it: [`Payment::expires_at_ms`].
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Why it was canceled; `None` unless it is `canceled`.
    #[serde(default)]
    pub cancellation_reason: Option<CancellationReason>,
    /// When the channel was first to be asked, if later than creation (a payment approved
    /// in review, or whose one-time code was entered): see [`Payment::engaged_at_ms`].
    #[serde(default)]
    pub engaged_at_ms: Option<i64>,
    /// Set (with the reason asked for) before a cancel asks the channel to close the
    /// payment, so that the channel's "closed" this causes, whether it reaches us as the
    /// cancel's answer, a re-check's or a notification, ends the payment `canceled`, not
    /// `failed`. Internal: not part of the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<CancellationReason>,
}

impl Payment {
    /// When the customer can no longer pay; for a record without its own, the
    /// reconciliation horizon after creation (when such a payment used to be closed).
    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms.unwrap_or_else(|| {
            self.created_at_ms
                .saturating_add(crate::service::RECONCILE_HORIZON_MS)
        })
    }

    /// When the channel was first to be asked for this payment: its creation, unless it
    /// waited for a review or a one-time code first. A channel that dates its requests
    /// (UnionPay's `txnTime`, which must be current when sent and names the order in
    /// queries) dates them by this, the same on every re-send.
    pub fn engaged_at_ms(&self) -> i64 {
        self.engaged_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    /// Owner.
    pub merchant_id: String,
    /// The refunded payment.
    pub payment_id: String,
    /// Status and version.
    pub state: RefundState,
    /// Amount.
    pub amount_minor: i64,
    /// Currency (the payment's).
    pub currency: Currency,
    /// Merchant's reason.
    pub reason: Option<String>,
    /// Merchant's refund id, unique per merchant.
    pub merchant_refund_id: Option<String>,
    /// Channel reference once known.
    pub channel_ref: Option<String>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

/// A merchant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// `mch_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where events are delivered (https URL), if set.
    pub notify_url: Option<String>,
    /// Capture mode used when a payment does not say.
    pub default_capture: CaptureMode,
    /// sha256 hex of the secret key (the key itself is never stored).
    pub api_key_hash: String,
    /// The key the last rotation replaced, accepted until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_api_key: Option<PreviousApiKey>,
    /// The webhook signing secret, sealed ([`crate::crypto::seal`]).
    pub webhook_secret_sealed: String,
    /// Creation time.
    pub created_at_ms: i64,
}

/// A merchant's secret key replaced by a rotation, still accepted for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousApiKey {
    /// sha256 hex of the old key.
    pub hash: String,
    /// From then on the old key is refused.
    pub expires_at_ms: i64,
}

/// Event types (wire names such as `payment.succeeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A payment was created.
    #[serde(rename = "payment.created")]
    PaymentCreated,
    /// A payment waits for the customer.
    #[serde(rename = "payment.requires_customer_action")]
    PaymentRequiresCustomerAction,
    /// A payment is processing.
    #[serde(rename = "payment.processing")]
    PaymentProcessing,
    /// A payment waits for a risk review.
    #[serde(rename = "payment.requires_review")]
    PaymentRequiresReview,
    /// A payment is authorized and awaits capture.
    #[serde(rename = "payment.requires_capture")]
    PaymentRequiresCapture,
    /// A payment succeeded (captured).
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    /// A payment was canceled.
    #[serde(rename = "payment.canceled")]
    PaymentCanceled,
    /// A payment failed.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// A notification contradicted a payment.
    #[serde(rename = "payment.conflicted")]
    PaymentConflicted,
    /// A refund was created (pending).
    #[serde(rename = "refund.created")]
    RefundCreated,
    /// A refund succeeded.
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    /// A refund failed.
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 12] = [
        EventType::PaymentCreated,
        EventType::PaymentRequiresCustomerAction,
        EventType::PaymentProcessing,
        EventType::PaymentRequiresReview,
        EventType::PaymentRequiresCapture,
        EventType::PaymentSucceeded,
        EventType::PaymentCanceled,
        EventType::PaymentFailed,
        EventType::PaymentConflicted,
        EventType::RefundCreated,
        EventType::RefundSucceeded,
        EventType::RefundFailed,
    ];

    /// The event announcing that a payment entered `status`.
    pub fn for_payment_status(status: PaymentStatus) -> EventType {
        match status {
            PaymentStatus::RequiresCustomerAction => EventType::PaymentRequiresCustomerAction,
            PaymentStatus::Processing => EventType::PaymentProcessing,
            PaymentStatus::RequiresReview => EventType::PaymentRequiresReview,
            PaymentStatus::RequiresCapture => EventType::PaymentRequiresCapture,
            PaymentStatus::Succeeded => EventType::PaymentSucceeded,
            PaymentStatus::Canceled => EventType::PaymentCanceled,
            PaymentStatus::Failed => EventType::PaymentFailed,
        }
    }

    /// The event announcing that a refund entered `status`.
    pub fn for_refund_status(status: RefundStatus) -> EventType {
        match status {
            RefundStatus::Pending => EventType::RefundCreated,
            RefundStatus::Succeeded => EventType::RefundSucceeded,
            RefundStatus::Failed => EventType::RefundFailed,
        }
    }
}

/// An entry of a merchant's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// Always `"event"`.
    pub object: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Owner (not shown on the wire).
    #[serde(skip_serializing)]
    pub merchant_id: String,
    /// Position in the merchant's log (not shown on the wire).
    #[serde(skip_serializing)]
    pub seq: i64,
    /// When.
    pub created_at_ms: i64,
    /// The object after the change (the payment or refund JSON as the API shows it).
    pub data: serde_json::Value,
}

/// The stored form of an event (keeps owner and sequence, which the wire omits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// `evt_…`.
    pub id: String,
    /// Type.
    pub event_type: EventType,
    /// Owner.
    pub merchant_id: String,
    /// Position in the merchant's log.
    pub seq: i64,
    /// When.
    pub created_at_ms: i64,
    /// Payload.
    pub data: serde_json::Value,
}

impl StoredEvent {
    /// The wire form.
    pub fn to_event(&self) -> Event {
        Event {
            id: self.id.clone(),
            object: "event".to_string(),
            event_type: self.event_type,
            merchant_id: self.merchant_id.clone(),
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            data: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_every_method() {
        // Proves tokens, cryptograms and phones never appear whole in the masked form.
        let m = PaymentMethod::Nfc {
            token: "tok_1234567890abcd".into(),
            cryptogram: "AAECAwQF".into(),
        };
        let shown = serde_json::to_string(&m.masked()).unwrap();
        assert!(!shown.contains("1234567890"), "{shown}");
        assert!(!shown.contains("AAECAwQF"), "{shown}");
        assert!(shown.contains("abcd"));
        let p = PaymentMethod::SmsOtp {
            phone: "+8613812345678".into(),
        };
        assert_eq!(
            p.masked(),
            PaymentMethod::SmsOtp {
                phone: "+86*******5678".into()
            }
        );
        let q = PaymentMethod::QrCustomer {
            auth_code: "28763443825664".into(),
        };
        assert_eq!(
            q.masked(),
            PaymentMethod::QrCustomer {
                auth_code: "**********5664".into()
            }
        );
    }

    #[test]
    fn method_wire_names_match_kinds() {
        // Proves the serde tag of each method equals its kind's wire name.
        let methods = [
            PaymentMethod::QrMerchant,
            PaymentMethod::App,
            PaymentMethod::H5 {
                return_url: "https://x".into(),
            },
        ];
        for m in methods {
            let v = serde_json::to_value(&m).unwrap();
            assert_eq!(v["type"], m.kind().as_str());
        }
    }

    #[test]
    fn only_canceled_and_failed_are_terminal() {
        // Proves the terminal set is exactly {canceled, failed}.
        let terminal: Vec<_> = PaymentStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            vec![PaymentStatus::Canceled, PaymentStatus::Failed]
        );
    }
}
