//! The thin HTTP wiring of the UnionPay ACP 5.1.0 adapter: [`UnionpayClient`]
//! implements the core's [`ChannelClient`] by posting the signed forms
//! [`super::transformers`] builds to the gateway and handing the answers back to them.
//! Configuration comes from Spin variables ([`UnionpayClient::load`]).

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

use super::transformers::{self, UnionpayRequest};
use super::{RequestError, SigningKey, UnionpayConfig};
use crate::wiring::{
    Slot, blinding_rng, capture_unsupported, key_list, load_slot, not_sent, required, required_url,
    sends_no_sms, settle, unusable,
};

/// Variable: the merchant id (`merId`); empty switches UnionPay off.
pub const VAR_MER_ID: &str = "unionpay_mer_id";
/// Variable: the serial (`certId`) of our signing certificate.
pub const VAR_CERT_ID: &str = "unionpay_cert_id";
/// Variable (secret): our signing private key (PEM).
pub const VAR_PRIVATE_KEY: &str = "unionpay_private_key";
/// Variable: the `certId` of UnionPay's verification certificate; during a rotation
/// several, comma-separated, in the order of the keys.
pub const VAR_VERIFY_CERT_ID: &str = "unionpay_verify_cert_id";
/// Variable: UnionPay's verification public key (PEM or base64 DER); during a rotation
/// several (concatenated PEM blocks, or comma-separated base64).
pub const VAR_PUBLIC_KEY: &str = "unionpay_public_key";
/// Variable: the gateway (`https://gateway.95516.com`).
pub const VAR_GATEWAY_URL: &str = "unionpay_gateway_url";
/// Variable: where UnionPay posts back-notifications (our `/v1/webhooks/unionpay`).
pub const VAR_BACK_URL: &str = "unionpay_back_url";
/// Largest `txnAmt` (12 digits).
pub const TXN_AMT_MAX: i64 = 999_999_999_999;

/// The UnionPay adapter.
#[derive(Debug, Clone)]
pub struct UnionpayClient {
    config: UnionpayConfig,
    timeout_ms: u64,
}

impl UnionpayClient {
    /// An adapter for `config`.
    pub fn new(config: UnionpayConfig) -> UnionpayClient {
        UnionpayClient {
            config,
            timeout_ms: CHANNEL_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Its configuration (the webhook verifies back-notifications with it).
    pub fn config(&self) -> &UnionpayConfig {
        &self.config
    }

    /// Reads the UnionPay variables: off while `unionpay_mer_id` is empty; otherwise
    /// every other variable must be usable.
    pub async fn load() -> Slot<UnionpayClient> {
        load_slot(VAR_MER_ID, Self::load_on).await
    }

    async fn load_on(mer_id: String) -> Result<UnionpayClient, &'static str> {
        let cert_id = required(VAR_CERT_ID).await?;
        let key = required(VAR_PRIVATE_KEY).await?;
        let merchant_key =
            SigningKey::from_text(&key).map_err(|e| unusable(VAR_PRIVATE_KEY, &e))?;
        let verify_cert_ids = required(VAR_VERIFY_CERT_ID).await?;
        let public = required(VAR_PUBLIC_KEY).await?;
        let unionpay_keys = key_list(
            &verify_cert_ids,
            &public,
            VAR_VERIFY_CERT_ID,
            VAR_PUBLIC_KEY,
        )?;
        let gateway_url = required_url(VAR_GATEWAY_URL).await?;
        let back_url = required_url(VAR_BACK_URL).await?;
        Ok(UnionpayClient::new(UnionpayConfig {
            mer_id,
            cert_id,
            merchant_key,
            unionpay_keys,
            gateway_url,
            back_url,
        }))
    }

    /// `queryTrans.do` about `payment`'s consume.
    async fn query_order(&self, payment: &Payment) -> Result<OutboundResponse, OutboundError> {
        let req = transformers::query_request(
            &self.config,
            &mut blinding_rng(),
            payment,
            &payment.id,
            payment.engaged_at_ms(),
        );
        self.call(&req).await
    }

    async fn call(&self, req: &UnionpayRequest) -> Result<OutboundResponse, OutboundError> {
        let out = OutboundRequest {
            method: http::Method::POST,
            url: format!("{}{}", self.config.gateway_url, req.path),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=UTF-8".into(),
            )],
            body: req.form_body().into_bytes(),
        };
        outbound::send(&out, self.timeout_ms, RESPONSE_BYTES_MAX_DEFAULT).await
    }
}

/// What UnionPay can take, checked before a payment is created (the same rules, in the
/// same order, as [`transformers::authorize`]): automatic capture, CNY only
/// ([`transformers::CURRENCY`]), a method it has a product for, a 12-digit amount.
pub fn preflight(
    method: &PaymentMethod,
    capture: CaptureMode,
    amount_minor: i64,
    currency: Currency,
) -> Result<(), RequestError> {
    if capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    if currency != transformers::CURRENCY {
        return Err(RequestError::CurrencyUnsupported(currency.code()));
    }
    match method {
        PaymentMethod::QrMerchant | PaymentMethod::QrCustomer { .. } | PaymentMethod::App => {}
        PaymentMethod::H5 { .. } => return Err(RequestError::MethodUnsupported("h5")),
        PaymentMethod::Nfc { .. } => return Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SoundWave { .. } => {
            return Err(RequestError::MethodUnsupported("sound_wave"));
        }
        PaymentMethod::SmsOtp { .. } => return Err(RequestError::MethodUnsupported("sms_otp")),
    }
    if amount_minor <= 0 || amount_minor > TXN_AMT_MAX {
        return Err(RequestError::Amount(amount_minor));
    }
    Ok(())
}

impl ChannelClient for UnionpayClient {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let cfg = &self.config;
        if let Some(detail) = transformers::too_late_to_send(payment.engaged_at_ms(), env::now_ms())
        {
            return ChannelOutcome::Unknown { detail };
        }
        let (product, req) =
            match transformers::authorize(cfg, &mut blinding_rng(), payment, method) {
                Ok(built) => built,
                Err(e) => return not_sent(&e),
            };
        settle(self.call(&req).await, |resp| {
            transformers::parse_authorize(cfg, product, resp, &payment.id)
        })
    }

    async fn capture(&self, _payment: &Payment, _amount_minor: i64) -> ActionOutcome {
        capture_unsupported("UnionPay consumes are captured when paid")
    }

    /// ACP has no "close" for an unpaid order: it expires at UnionPay (`payTimeout`).
    /// Before that a canceled payment could still be paid, so the cancel is refused
    /// rather than assumed; once it has expired, a query tells whether anyone paid it
    /// ([`transformers::cancel_before_query`], [`transformers::parse_expired_query`]).
    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        if let Some(decided) = transformers::cancel_before_query(payment, env::now_ms()) {
            return decided;
        }
        settle(self.query_order(payment).await, |resp| {
            transformers::parse_expired_query(&self.config, resp, &payment.id)
        })
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        settle(self.query_order(payment).await, |resp| {
            transformers::parse_query(&self.config, resp, &payment.id)
        })
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let cfg = &self.config;
        if let Some(detail) = transformers::too_late_to_send(refund.created_at_ms, env::now_ms()) {
            return RefundOutcome::Unknown { detail };
        }
        let req = match transformers::refund_request(cfg, &mut blinding_rng(), payment, refund) {
            Ok(req) => req,
            Err(e) => return not_sent(&e),
        };
        settle(self.call(&req).await, |resp| {
            transformers::parse_refund(cfg, resp, &refund.id)
        })
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let cfg = &self.config;
        let mut rng = blinding_rng();
        let (id, at) = (&refund.id, refund.created_at_ms);
        let req = transformers::query_request(cfg, &mut rng, payment, id, at);
        settle(self.call(&req).await, |resp| {
            transformers::parse_refund_query(cfg, resp, &refund.id)
        })
    }

    async fn send_sms(&self, _phone: &str, _text: &str) -> Result<(), String> {
        sends_no_sms(Channel::Unionpay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::tests::for_every_preflight_case;
    use crate::crypto::test_rng;
    use crate::unionpay::tests::config;

    #[test]
    fn preflight_agrees_with_the_request_builder_on_every_method_and_input() {
        // Proves a payment refused up front is exactly one the transformer could not build,
        // with the same error: every method × capture mode × amount, in CNY and in
        // currencies UnionPay must refuse (JPY, USD), whose automatic-capture cases are
        // all refused as currency_unsupported.
        let amounts = [
            (1250, Currency::Cny),
            (TXN_AMT_MAX + 1, Currency::Cny),
            (1250, Currency::Jpy),
            (1250, Currency::Usd),
        ];
        let mut foreign_refused = 0;
        for_every_preflight_case("6225000000000001", "w", &amounts, |method, p, amount| {
            let built = transformers::authorize(&config(), &mut test_rng(), p, method);
            let (capture, currency) = (p.capture, p.currency);
            let pre = preflight(method, capture, amount, currency);
            let why = format!("{method:?} {capture:?} {amount} {currency:?}");
            if currency != Currency::Cny && capture == CaptureMode::Automatic {
                let expected = RequestError::CurrencyUnsupported(currency.code());
                assert_eq!(pre.as_ref().err(), Some(&expected), "{why}");
                foreign_refused += 1;
            }
            assert_eq!(pre.err(), built.err(), "{why}");
        });
        assert!(foreign_refused > 0);
    }
}
