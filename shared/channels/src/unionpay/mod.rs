//! UnionPay online payments (ACP 5.1.0): the pure protocol half.
//!
//! * Requests and back-notifications are form POSTs; synchronous answers are raw
//!   `k=v&k=v` strings, never percent-decoded ([`transformers::answer_decode`]).
//!   Signing (`signMethod=01`): the byte-sorted `k=v&…` of every non-empty field
//!   except `signature` is hashed with SHA-256, the lower-case hex digest is signed with
//!   SHA256withRSA, and `certId` names our signing certificate
//!   ([`transformers::sign_fields`]). UnionPay's messages are verified over every field
//!   but `signature`, empty ones included ([`transformers::verification_string`]).
//! * `qr_merchant` → consume QR apply (txnSubType 07, answer `qrCode`); `qr_customer` →
//!   consume with `qrNo` (txnSubType 06); `app` → app consume (answer `tn` for the SDK);
//!   refund (txnType 04, needs the consume's `queryId`) and query (by `orderId` and the
//!   original `txnTime`, fixed when the object first goes out so it is reproducible: a
//!   refund's creation, a payment's [`spinpay_core::model::Payment::engaged_at_ms`]).
//! * CNY only: a domestic merchant's `currencyCode` is 156 with `txnAmt` in fen, so a
//!   payment in another currency is refused before it is stored
//!   ([`client::preflight`]) and never built ([`transformers::CURRENCY`]).
//! * Answers and back-notifications are verified with a pinned UnionPay key: any pinned
//!   key for a 5.1.0 message (it carries `signPubKeyCert`, no `certId`), the one its
//!   `certId` names otherwise (the `signPubKeyCert` chain check of the official SDK is
//!   replaced by that pinning, see SECURITY.md). Accepted notifications
//!   are answered HTTP 200 with [`NOTIFY_ACK`].
//! * `respCode` / `origRespCode`: `00` (and `A6`) success, `03`/`04`/`05` processing, a
//!   few that say nothing (`12` duplicate, `34` not found) unknown, other codes failure,
//!   anything that is not a two-character code unknown ([`transformers::classify_code`]).
//! * UnionPay `orderId` allows only letters and digits: our ids are sent without their
//!   underscore (`pay_abc…` → `payabc…`) and mapped back ([`transformers::order_id`]).

pub mod client;
pub mod transformers;

pub use client::UnionpayClient;

#[cfg(test)]
pub(crate) mod tests;

pub use crate::crypto::{
    BlindingRng, KeyError, NotificationRejected, RequestError, SigningKey, VerifyingKey, ct_eq,
    replay_key,
};

/// What the webhook answers (HTTP 200) once a back-notification is accepted.
pub const NOTIFY_ACK: &str = "ok";
/// The production gateway host.
pub const GATEWAY_URL_DEFAULT: &str = "https://gateway.95516.com";

/// Credentials and endpoints of one UnionPay merchant. `Debug` hides the private key.
#[derive(Debug, Clone)]
pub struct UnionpayConfig {
    /// Merchant id (`merId`, 15 digits).
    pub mer_id: String,
    /// Serial number of our signing certificate (`certId`, decimal).
    pub cert_id: String,
    /// Our signing private key.
    pub merchant_key: SigningKey,
    /// UnionPay's verification keys by `certId` (several during rotation).
    pub unionpay_keys: Vec<(String, VerifyingKey)>,
    /// The gateway (`https://gateway.95516.com` in production).
    pub gateway_url: String,
    /// Where UnionPay posts back-notifications (`backUrl`, our webhook).
    pub back_url: String,
}

impl UnionpayConfig {
    /// The UnionPay key with this `certId`.
    pub fn unionpay_key(&self, cert_id: &str) -> Option<&VerifyingKey> {
        self.unionpay_keys
            .iter()
            .find(|(c, _)| c == cert_id)
            .map(|(_, k)| k)
    }
}
