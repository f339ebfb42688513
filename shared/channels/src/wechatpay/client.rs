//! The thin HTTP wiring of the WeChat Pay v3 adapter: [`WechatpayClient`] implements
//! the core's [`ChannelClient`] by sending what [`super::transformers`] builds (signed
//! `Authorization` header) and handing the answer back to them, which verify its
//! `Wechatpay-*` signature before reading it. Configuration comes from Spin variables
//! ([`WechatpayClient::load`]).

use spinpay_core::model::{CaptureMode, Channel, Payer, Payment, PaymentMethod, Refund};
use spinpay_core::money::Currency;
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};
use spinpay_guest::env;
use spinpay_guest::outbound::{
    self, CHANNEL_TIMEOUT_MS_DEFAULT, OutboundError, OutboundRequest, OutboundResponse,
    RESPONSE_BYTES_MAX_DEFAULT,
};

use super::transformers::{self, CancelApi, WechatRequest};
use super::{RequestError, SigningKey, WechatpayConfig, apiv3_key_from_text};
use crate::wiring::{
    Slot, blinding_rng, capture_unsupported, key_list, load_slot, nonce, not_sent, required,
    required_url, sends_no_sms, settle, unusable,
};

/// Variable: the merchant id (`mchid`); empty switches WeChat Pay off.
pub const VAR_MCHID: &str = "wechatpay_mchid";
/// Variable: the AppID bound to the merchant.
pub const VAR_APPID: &str = "wechatpay_appid";
/// Variable: serial number of our merchant API certificate.
pub const VAR_SERIAL_NO: &str = "wechatpay_serial_no";
/// Variable (secret): our merchant API private key (PEM).
pub const VAR_PRIVATE_KEY: &str = "wechatpay_private_key";
/// Variable: the platform key's serial (certificate serial or `PUB_KEY_ID_…`); during a
/// rotation several, comma-separated, in the order of the keys.
pub const VAR_PLATFORM_SERIAL: &str = "wechatpay_platform_serial";
/// Variable: the platform public key (PEM or base64 DER); during a rotation several
/// (concatenated PEM blocks, or comma-separated base64).
pub const VAR_PLATFORM_PUBLIC_KEY: &str = "wechatpay_platform_public_key";
/// Variable (secret): the APIv3 key (32 characters).
pub const VAR_APIV3_KEY: &str = "wechatpay_apiv3_key";
/// Variable: the API base URL (`https://api.mch.weixin.qq.com`).
pub const VAR_BASE_URL: &str = "wechatpay_base_url";
/// Variable: where WeChat Pay posts callbacks (our `/v1/webhooks/wechatpay`).
pub const VAR_NOTIFY_URL: &str = "wechatpay_notify_url";
/// The `User-Agent` WeChat Pay asks every caller to send.
pub const USER_AGENT: &str = "spinpay/0.1 (wechatpay-v3)";
/// Largest `total` WeChat Pay takes (a 32-bit integer field).
pub const TOTAL_MAX: i64 = i32::MAX as i64;

/// The WeChat Pay adapter.
#[derive(Debug, Clone)]
pub struct WechatpayClient {
    config: WechatpayConfig,
    timeout_ms: u64,
}

impl WechatpayClient {
    /// An adapter for `config`.
    pub fn new(config: WechatpayConfig) -> WechatpayClient {
        WechatpayClient {
            config,
            timeout_ms: CHANNEL_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Its configuration (the webhook verifies callbacks with it).
    pub fn config(&self) -> &WechatpayConfig {
        &self.config
    }

    /// Reads the WeChat Pay variables: off while `wechatpay_mchid` is empty; otherwise
    /// every other variable must be usable.
    pub async fn load() -> Slot<WechatpayClient> {
        load_slot(VAR_MCHID, Self::load_on).await
    }

    async fn load_on(mchid: String) -> Result<WechatpayClient, &'static str> {
        let appid = required(VAR_APPID).await?;
        let serial_no = required(VAR_SERIAL_NO).await?;
        let key = required(VAR_PRIVATE_KEY).await?;
        let merchant_key =
            SigningKey::from_text(&key).map_err(|e| unusable(VAR_PRIVATE_KEY, &e))?;
        let platform_serials = required(VAR_PLATFORM_SERIAL).await?;
        let platform = required(VAR_PLATFORM_PUBLIC_KEY).await?;
        let platform_keys = key_list(
            &platform_serials,
            &platform,
            VAR_PLATFORM_SERIAL,
            VAR_PLATFORM_PUBLIC_KEY,
        )?;
        let apiv3 = required(VAR_APIV3_KEY).await?;
        let apiv3_key = apiv3_key_from_text(&apiv3)
            .ok_or_else(|| unusable(VAR_APIV3_KEY, &"must be exactly 32 bytes"))?;
        let base_url = required_url(VAR_BASE_URL).await?;
        let notify_url = required_url(VAR_NOTIFY_URL).await?;
        Ok(WechatpayClient::new(WechatpayConfig {
            mchid,
            appid,
            serial_no,
            merchant_key,
            platform_keys,
            apiv3_key,
            base_url,
            notify_url,
        }))
    }

    async fn call(&self, req: &WechatRequest) -> Result<OutboundResponse, OutboundError> {
        let method = match req.method {
            "GET" => http::Method::GET,
            _ => http::Method::POST,
        };
        let mut headers = vec![
            ("authorization".to_string(), req.authorization.clone()),
            ("accept".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), USER_AGENT.to_string()),
        ];
        if method == http::Method::POST {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let out = OutboundRequest {
            method,
            url: format!("{}{}", self.config.base_url, req.path),
            headers,
            body: req.body.clone().into_bytes(),
        };
        outbound::send(&out, self.timeout_ms, RESPONSE_BYTES_MAX_DEFAULT).await
    }
}

/// What WeChat Pay can take, checked before a payment is created (the same rules
/// [`transformers::authorize`] applies).
pub fn preflight(
    method: &PaymentMethod,
    capture: CaptureMode,
    amount_minor: i64,
    currency: Currency,
    payer: Option<&Payer>,
) -> Result<(), RequestError> {
    if capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    if currency != Currency::Cny {
        return Err(RequestError::CurrencyUnsupported(currency.code()));
    }
    if amount_minor <= 0 || amount_minor > TOTAL_MAX {
        return Err(RequestError::Amount(amount_minor));
    }
    match method {
        PaymentMethod::QrMerchant | PaymentMethod::QrCustomer { .. } | PaymentMethod::App => Ok(()),
        PaymentMethod::H5 { .. } => match payer.and_then(|p| p.ip.as_deref()) {
            Some(_) => Ok(()),
            None => Err(RequestError::Field {
                field: "payer.ip",
                reason: "WeChat Pay H5 needs the customer's IP address",
            }),
        },
        PaymentMethod::SoundWave { .. } => Err(RequestError::MethodUnsupported("sound_wave")),
        PaymentMethod::Nfc { .. } => Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SmsOtp { .. } => Err(RequestError::MethodUnsupported("sms_otp")),
    }
}

impl ChannelClient for WechatpayClient {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let (cfg, now, nonce) = (&self.config, env::now_unix_s(), nonce());
        let mut rng = blinding_rng();
        let (product, req) =
            match transformers::authorize(cfg, &mut rng, payment, method, now, &nonce) {
                Ok(built) => built,
                Err(e) => return not_sent(&e),
            };
        settle(self.call(&req).await, |resp| {
            let (now, nonce) = (env::now_unix_s(), self::nonce());
            let id = &payment.id;
            transformers::parse_authorize(cfg, &mut rng, &product, resp, id, now, &nonce)
        })
    }

    async fn capture(&self, _payment: &Payment, _amount_minor: i64) -> ActionOutcome {
        capture_unsupported("WeChat Pay orders are captured when paid")
    }

    /// A codepay (customer-presented code) is revoked with reverse, which refunds it if
    /// the customer paid after all; any other order is closed.
    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        let (cfg, now, nonce) = (&self.config, env::now_unix_s(), nonce());
        let mut rng = blinding_rng();
        match transformers::cancel_api(&payment.method) {
            CancelApi::Reverse => {
                let req = transformers::reverse_request(cfg, &mut rng, &payment.id, now, &nonce);
                settle(self.call(&req).await, |resp| {
                    transformers::parse_reverse(cfg, resp, payment, env::now_ms())
                })
            }
            CancelApi::Close => {
                let req = transformers::close_request(cfg, &mut rng, &payment.id, now, &nonce);
                settle(self.call(&req).await, |resp| {
                    transformers::parse_close(cfg, resp, env::now_unix_s())
                })
            }
        }
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        let (cfg, now) = (&self.config, env::now_unix_s());
        let req = transformers::query_request(cfg, &mut blinding_rng(), &payment.id, now, &nonce());
        settle(self.call(&req).await, |resp| {
            transformers::parse_query(cfg, resp, &payment.id, env::now_unix_s())
        })
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let (cfg, now) = (&self.config, env::now_unix_s());
        let mut rng = blinding_rng();
        let req = match transformers::refund_request(cfg, &mut rng, payment, refund, now, &nonce())
        {
            Ok(req) => req,
            Err(e) => return not_sent(&e),
        };
        self.refund_call(&req, &refund.id).await
    }

    async fn query_refund(&self, _payment: &Payment, refund: &Refund) -> RefundOutcome {
        let (cfg, now) = (&self.config, env::now_unix_s());
        let mut rng = blinding_rng();
        let req = transformers::refund_query_request(cfg, &mut rng, &refund.id, now, &nonce());
        self.refund_call(&req, &refund.id).await
    }

    async fn send_sms(&self, _phone: &str, _text: &str) -> Result<(), String> {
        sends_no_sms(Channel::Wechatpay)
    }
}

impl WechatpayClient {
    async fn refund_call(&self, req: &WechatRequest, refund_id: &str) -> RefundOutcome {
        settle(self.call(req).await, |resp| {
            transformers::parse_refund(&self.config, resp, refund_id, env::now_unix_s())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::tests::payment;
    use crate::crypto::test_rng;
    use crate::wechatpay::tests::config;
    use crate::wiring::every_method;

    #[test]
    fn preflight_agrees_with_the_request_builder_on_every_method_and_input() {
        // Proves a payment refused up front is exactly one the transformer could not
        // build (methods, capture modes, amounts, currencies, the H5 payer IP).
        let methods = every_method("134567890123456789", "w");
        let with_ip = Payer {
            ip: Some("203.0.113.7".into()),
            ..Payer::default()
        };
        for method in &methods {
            for capture in [CaptureMode::Automatic, CaptureMode::Manual] {
                for (amount, currency) in [
                    (1250, Currency::Cny),
                    (TOTAL_MAX + 1, Currency::Cny),
                    (1250, Currency::Hkd),
                ] {
                    for payer in [None, Some(with_ip.clone())] {
                        let mut p = payment(amount, currency);
                        p.capture = capture;
                        p.payer = payer.clone();
                        let built =
                            transformers::authorize(&config(), &mut test_rng(), &p, method, 0, "n");
                        let pre = preflight(method, capture, amount, currency, payer.as_ref());
                        let case = format!("{method:?} {capture:?} {amount} {currency:?}");
                        assert_eq!(pre.err(), built.err(), "{case}");
                    }
                }
            }
        }
    }
}
