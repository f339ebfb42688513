//! WeChat Pay API v3: the pure protocol half.
//!
//! * Requests carry `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",
//!   signature="…",timestamp="…",serial_no="…"`, the signature being SHA256withRSA by
//!   the merchant key over `METHOD\nURL\ntimestamp\nnonce\nbody\n`
//!   ([`transformers::canonical_request`]).
//! * Every answer must be signed by a platform key (headers `Wechatpay-Timestamp`,
//!   `-Nonce`, `-Signature`, `-Serial`, over `timestamp\nnonce\nbody\n`) inside the
//!   replay window; an unsigned 2xx is treated as forged: unknown outcome.
//! * `qr_merchant` → native (`code_url`), `qr_customer` → codepay, `h5` → h5 (`h5_url`),
//!   `app` → app (`prepay_id` turned into the SDK's signed order), plus query, refund
//!   and refund query. Amounts are integer minor units (`total`, fen for CNY).
//! * Cancel closes an order that waits for its customer and reverses a codepay
//!   ([`transformers::cancel_api`]): reverse also returns the money of a codepay the
//!   customer paid after all, and "no such order" counts as done only once the codepay
//!   request can no longer create it ([`transformers::parse_reverse`]).
//! * Callbacks: verified like answers, then the `resource` is decrypted with
//!   AEAD_AES_256_GCM under the APIv3 key. Answer 204 on success, or 4xx with
//!   `{"code":"FAIL","message":…}` ([`transformers::callback_failure`]).

pub mod client;
pub mod transformers;

pub use client::WechatpayClient;

#[cfg(test)]
mod tests;

pub use crate::crypto::{
    BlindingRng, KeyError, NotificationRejected, REPLAY_KEY_TTL_S, RequestError, SigningKey,
    TIMESTAMP_WINDOW_S, VerifyingKey, aes256gcm_open, aes256gcm_seal, b64, ct_eq, replay_key,
    within_window,
};
use spinpay_core::crypto::Secret;

/// The production API host.
pub const BASE_URL_DEFAULT: &str = "https://api.mch.weixin.qq.com";
/// The only signature scheme of API v3.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Credentials and endpoints of one WeChat Pay merchant. `Debug` hides the secrets.
#[derive(Debug, Clone)]
pub struct WechatpayConfig {
    /// Merchant id (`mchid`).
    pub mchid: String,
    /// The AppID bound to the merchant (`appid`).
    pub appid: String,
    /// Serial number of our merchant API certificate (`serial_no` in Authorization).
    pub serial_no: String,
    /// Our merchant API private key.
    pub merchant_key: SigningKey,
    /// WeChat Pay platform keys by serial: platform certificate serials or a
    /// `PUB_KEY_ID_…` of the WeChat Pay public key. Several during rotation.
    pub platform_keys: Vec<(String, VerifyingKey)>,
    /// The APIv3 key (32 ASCII bytes) that encrypts callback resources.
    pub apiv3_key: Secret<[u8; 32]>,
    /// `https://api.mch.weixin.qq.com` in production.
    pub base_url: String,
    /// Where WeChat Pay posts callbacks (our webhook).
    pub notify_url: String,
}

impl WechatpayConfig {
    /// The platform key with this serial.
    pub fn platform_key(&self, serial: &str) -> Option<&VerifyingKey> {
        self.platform_keys
            .iter()
            .find(|(s, _)| s == serial)
            .map(|(_, k)| k)
    }
}

/// An APIv3 key from its text form (exactly 32 bytes).
pub fn apiv3_key_from_text(text: &str) -> Option<Secret<[u8; 32]>> {
    let bytes: [u8; 32] = text.as_bytes().try_into().ok()?;
    Some(Secret::new(bytes))
}
