//! Alipay (OpenAPI gateway, RSA2): the pure protocol half.
//!
//! * Requests are form parameters signed with SHA256withRSA over the byte-sorted
//!   `k=v&…` of every non-empty parameter except `sign` ([`transformers::sign_params`]).
//!   `qr_merchant` → `alipay.trade.precreate` (a QR code); `qr_customer` / `sound_wave` →
//!   `alipay.trade.pay` (scene `bar_code` / `wave_code`); `h5` → `alipay.trade.wap.pay`
//!   (a signed redirect URL, no call); `app` → `alipay.trade.app.pay` (a signed order
//!   string, no call); plus query, refund, refund query, close and cancel.
//! * Every order carries the payment's expiry (`time_expire`; precreate also
//!   `qr_code_timeout_express`): those that wait for their customer, and a pay whose
//!   payer must confirm in the wallet (`10003`, `WAIT_BUYER_PAY`). Alipay creates a
//!   precreate, wap or app trade only when the customer scans or opens it, yet the order
//!   stays payable until it expires, so a close answered "no such trade" is refused
//!   until then ([`transformers::close_of_no_trade`]).
//! * A pay trade (customer-presented code) is revoked with `alipay.trade.cancel`, which
//!   closes it unpaid or returns the money of a paid one; "no trade" counts only once
//!   no pay request can still create it ([`transformers::parse_cancel`],
//!   [`transformers::cancel_of_no_trade`]). The others are closed with
//!   `alipay.trade.close`.
//! * Answers are JSON `{"alipay_trade_x_response": {...}, "sign": "..."}`; the signature
//!   covers the raw text of the response object, which is cut out of the body exactly
//!   as received. Unsigned, forged or unparsable answers are unknown outcomes.
//! * Notifications are form posts signed over every field except `sign` and
//!   `sign_type`, empty ones included (`k=`; the string without them is accepted too);
//!   accepted ones are acknowledged with the literal [`NOTIFY_ACK`].
//! * Amounts are decimal major-unit strings (`"12.50"`), converted exactly with the
//!   currency's ISO 4217 exponent ([`amount`]).

pub mod amount;
pub mod client;
pub mod transformers;

pub use client::AlipayClient;
use spinpay_core::money::Currency;

#[cfg(test)]
pub(crate) mod tests;

pub use crate::crypto::{
    BlindingRng, KeyError, NotificationRejected, RequestError, SigningKey, VerifyingKey, ct_eq,
    replay_key,
};

/// What the webhook answers (HTTP 200, `text/plain`) once a notification is accepted.
/// Anything else makes Alipay retry.
pub const NOTIFY_ACK: &str = "success";
/// The production gateway.
pub const GATEWAY_URL_DEFAULT: &str = "https://openapi.alipay.com/gateway.do";

/// Credentials and endpoints of one Alipay app. `Debug` hides the private key.
#[derive(Debug, Clone)]
pub struct AlipayConfig {
    /// The app id (`app_id`).
    pub app_id: String,
    /// Our app private key (signs requests).
    pub app_key: SigningKey,
    /// Alipay's public key for this app (verifies answers and notifications).
    pub alipay_key: VerifyingKey,
    /// The gateway (`https://openapi.alipay.com/gateway.do` in production).
    pub gateway_url: String,
    /// Where Alipay posts notifications (our webhook), if set.
    pub notify_url: Option<String>,
    /// The currencies the contract takes (CNY for a domestic merchant; a cross-border
    /// contract adds its pricing currencies, sent as `trans_currency`). A payment in
    /// another is refused before it is made: Alipay would read its amount as CNY.
    pub currencies: Vec<Currency>,
}
