//! The thin HTTP wiring of the Alipay adapter: [`AlipayClient`] implements the core's
//! [`ChannelClient`] by sending what [`super::transformers`] builds to the gateway and
//! handing back what they make of the answer. Configuration comes from Spin variables
//! ([`AlipayClient::load`]).

use spinpay_core::model::{CaptureMode, Channel, Payment, PaymentMethod, Refund};
use spinpay_core::money::Currency;
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};
use spinpay_guest::env;
use spinpay_guest::outbound::{
    self, CHANNEL_TIMEOUT_MS_DEFAULT, OutboundError, OutboundRequest, OutboundResponse,
    RESPONSE_BYTES_MAX_DEFAULT,
};

use super::amount::format_major;
use super::transformers::{self, AlipayAuthorize, AlipayRequest};
use super::{AlipayConfig, RequestError, SigningKey, VerifyingKey};
use crate::wiring::{
    Slot, blinding_rng, capture_unsupported, load_slot, not_sent, required, required_url,
    sends_no_sms, settle, unusable,
};

/// Variable: the app id; empty switches Alipay off.
pub const VAR_APP_ID: &str = "alipay_app_id";
/// Variable (secret): our app private key (PEM, or Alipay's bare base64 form).
pub const VAR_PRIVATE_KEY: &str = "alipay_private_key";
/// Variable: Alipay's public key for the app (PEM or bare base64).
pub const VAR_PUBLIC_KEY: &str = "alipay_public_key";
/// Variable: the gateway URL (`https://openapi.alipay.com/gateway.do`).
pub const VAR_GATEWAY_URL: &str = "alipay_gateway_url";
/// Variable: where Alipay posts notifications (our `/v1/webhooks/alipay`).
pub const VAR_NOTIFY_URL: &str = "alipay_notify_url";
/// Variable: the currencies the contract takes, comma-separated ISO 4217 codes (`CNY`).
pub const VAR_CURRENCIES: &str = "alipay_currencies";

/// The Alipay adapter.
#[derive(Debug, Clone)]
pub struct AlipayClient {
    config: AlipayConfig,
    timeout_ms: u64,
}

impl AlipayClient {
    /// An adapter for `config`.
    pub fn new(config: AlipayConfig) -> AlipayClient {
        AlipayClient {
            config,
            timeout_ms: CHANNEL_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Its configuration (the webhook verifies notifications with it).
    pub fn config(&self) -> &AlipayConfig {
        &self.config
    }

    /// Reads the Alipay variables: off while `alipay_app_id` is empty; otherwise every
    /// other variable must be usable.
    pub async fn load() -> Slot<AlipayClient> {
        load_slot(VAR_APP_ID, Self::load_on).await
    }

    async fn load_on(app_id: String) -> Result<AlipayClient, &'static str> {
        let app_key = required(VAR_PRIVATE_KEY).await?;
        let app_key = SigningKey::from_text(&app_key).map_err(|e| unusable(VAR_PRIVATE_KEY, &e))?;
        let alipay_key = required(VAR_PUBLIC_KEY).await?;
        let alipay_key =
            VerifyingKey::from_text(&alipay_key).map_err(|e| unusable(VAR_PUBLIC_KEY, &e))?;
        let gateway_url = required_url(VAR_GATEWAY_URL).await?;
        let notify_url = required_url(VAR_NOTIFY_URL).await?;
        let currencies = parse_currencies(&required(VAR_CURRENCIES).await?)
            .map_err(|e| unusable(VAR_CURRENCIES, &e))?;
        Ok(AlipayClient::new(AlipayConfig {
            app_id,
            app_key,
            alipay_key,
            gateway_url,
            notify_url: Some(notify_url),
            currencies,
        }))
    }

    /// The currencies the contract takes.
    pub fn currencies(&self) -> &[Currency] {
        &self.config.currencies
    }

    async fn call(&self, req: &AlipayRequest) -> Result<OutboundResponse, OutboundError> {
        let out = OutboundRequest {
            method: http::Method::POST,
            url: self.config.gateway_url.clone(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: req.form_body().into_bytes(),
        };
        outbound::send(&out, self.timeout_ms, RESPONSE_BYTES_MAX_DEFAULT).await
    }
}

/// `CNY,HKD` → the currencies; an unknown code, a repeat or none at all is refused.
pub fn parse_currencies(text: &str) -> Result<Vec<Currency>, String> {
    let mut out = Vec::new();
    for code in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let c = Currency::parse(code).ok_or_else(|| format!("unknown currency {code:?}"))?;
        if out.contains(&c) {
            return Err(format!("{code} twice"));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err("no currency".into());
    }
    Ok(out)
}

/// What Alipay can take, checked before a payment is created (the same rules
/// [`transformers::authorize`] applies); `accepted`: the contract's currencies.
pub fn preflight(
    method: &PaymentMethod,
    capture: CaptureMode,
    amount_minor: i64,
    currency: Currency,
    accepted: &[Currency],
) -> Result<(), RequestError> {
    if capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    if !accepted.contains(&currency) {
        return Err(RequestError::CurrencyUnsupported(currency.code()));
    }
    match format_major(amount_minor, currency) {
        Some(_) if amount_minor > 0 => {}
        Some(_) | None => return Err(RequestError::Amount(amount_minor)),
    }
    match method {
        PaymentMethod::Nfc { .. } => Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SmsOtp { .. } => Err(RequestError::MethodUnsupported("sms_otp")),
        PaymentMethod::QrMerchant
        | PaymentMethod::QrCustomer { .. }
        | PaymentMethod::SoundWave { .. }
        | PaymentMethod::H5 { .. }
        | PaymentMethod::App => Ok(()),
    }
}

impl ChannelClient for AlipayClient {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let (cfg, now) = (&self.config, env::now_unix_s());
        let built = transformers::authorize(cfg, &mut blinding_rng(), payment, method, now);
        let req = match built {
            Ok(AlipayAuthorize::Call(req)) => req,
            Ok(AlipayAuthorize::Ready(outcome)) => return outcome,
            Err(e) => return not_sent(&e),
        };
        settle(self.call(&req).await, |resp| {
            transformers::parse_authorize(cfg, &req, resp, &payment.id)
        })
    }

    async fn capture(&self, _payment: &Payment, _amount_minor: i64) -> ActionOutcome {
        capture_unsupported("Alipay trades are captured when paid")
    }

    /// A customer-presented code (`alipay.trade.pay`): `alipay.trade.cancel`, which
    /// closes the trade unpaid or returns the money of a paid one
    /// ([`transformers::parse_cancel`]). Any other order: `alipay.trade.close`. A trade
    /// nobody has scanned or opened does not exist at Alipay yet, but its order stays
    /// payable until it expires: such a close is refused until then
    /// ([`transformers::close_of_no_trade`]).
    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        let cfg = &self.config;
        let (rng, now_s) = (&mut blinding_rng(), env::now_unix_s());
        if transformers::is_trade_pay(&payment.method) {
            let req = transformers::cancel_request(cfg, rng, &payment.id, now_s);
            return settle(self.call(&req).await, |resp| {
                transformers::parse_cancel(cfg, resp, payment, env::now_ms())
            });
        }
        let req = transformers::close_request(cfg, rng, &payment.id, now_s);
        settle(self.call(&req).await, |resp| {
            transformers::parse_close(cfg, resp, payment, env::now_ms())
        })
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        let cfg = &self.config;
        let req =
            transformers::query_request(cfg, &mut blinding_rng(), &payment.id, env::now_unix_s());
        settle(self.call(&req).await, |resp| {
            transformers::parse_query(cfg, resp, &payment.id)
        })
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let cfg = &self.config;
        let now = env::now_unix_s();
        let req = match transformers::refund_request(cfg, &mut blinding_rng(), payment, refund, now)
        {
            Ok(req) => req,
            Err(e) => return not_sent(&e),
        };
        settle(self.call(&req).await, |resp| {
            transformers::parse_refund(cfg, resp)
        })
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let cfg = &self.config;
        let now = env::now_unix_s();
        let mut rng = blinding_rng();
        let req = transformers::refund_query_request(cfg, &mut rng, &payment.id, &refund.id, now);
        settle(self.call(&req).await, |resp| {
            transformers::parse_refund_query(cfg, resp, &refund.id)
        })
    }

    async fn send_sms(&self, _phone: &str, _text: &str) -> Result<(), String> {
        sends_no_sms(Channel::Alipay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::tests::{config, for_every_preflight_case};
    use crate::crypto::test_rng;

    #[test]
    fn preflight_agrees_with_the_request_builder_on_every_method_and_capture_mode() {
        // Proves a payment refused up front is exactly one the transformer could not
        // build, so no payment is created that Alipay could not be asked about.
        let amounts = [
            (1250, Currency::Cny),
            (1250, Currency::Jpy),
            (1250, Currency::Usd),
        ];
        let cfg = config();
        for_every_preflight_case("28763443825664394", "w1", &amounts, |method, p, amount| {
            let built = transformers::authorize(&cfg, &mut test_rng(), p, method, 0);
            let capture = p.capture;
            let pre = preflight(method, capture, amount, p.currency, &cfg.currencies);
            assert_eq!(pre.err(), built.err(), "{method:?} {capture:?} {amount}");
        });
    }

    #[test]
    fn the_contracts_currencies_are_read_strictly() {
        // Proves the variable's codes are ISO 4217 ones this build knows, each once.
        assert_eq!(parse_currencies("CNY"), Ok(vec![Currency::Cny]));
        assert_eq!(
            parse_currencies(" CNY , HKD "),
            Ok(vec![Currency::Cny, Currency::Hkd])
        );
        for bad in ["", " , ", "CNY,XXX", "CNY,CNY", "cny"] {
            assert!(parse_currencies(bad).is_err(), "{bad:?}");
        }
    }
}
