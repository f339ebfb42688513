//! What authorize (or a merchant's preview) tells the engine about a payment, and how it
//! becomes the engine's validated, hashed [`EngineInput`].

use std::net::IpAddr;

use crate::api::NewPayment;
use crate::error::ApiError;
use crate::model::{MethodKind, Payer, PaymentMethod};
use crate::money::Currency;

use super::config::invalid;
use super::eval::{EngineInput, PaymentFacts};

/// The event id of an assessment that is not a payment (`POST /v1/risk/assessments`):
/// such an assessment is never recorded, so the id only satisfies validation.
pub const PREVIEW_EVENT_ID: &str = "preview";

/// A prospective payment as risk control sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskInput {
    /// Merchant.
    pub merchant_id: String,
    /// The payment id (the counters' event id); `None` for a preview, never recorded.
    pub payment_id: Option<String>,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Method kind.
    pub method: MethodKind,
    /// The customer-presented token / auth code, if any (token lists and velocity).
    pub customer_token: Option<String>,
    /// The `sms_otp` method's phone, if any (phone lists; else `payer.phone` is used).
    pub phone: Option<String>,
    /// Payer.
    pub payer: Payer,
}

impl RiskInput {
    /// The input for a payment about to be created.
    pub fn for_payment(merchant_id: &str, payment_id: &str, req: &NewPayment) -> RiskInput {
        RiskInput::from_method(
            merchant_id,
            Some(payment_id.to_string()),
            req.amount_minor,
            req.currency,
            &req.method,
            req.payer.clone().unwrap_or_default(),
        )
    }

    /// The input for a method and payer (`payment_id` `None` = a preview).
    pub fn from_method(
        merchant_id: &str,
        payment_id: Option<String>,
        amount_minor: i64,
        currency: Currency,
        method: &PaymentMethod,
        payer: Payer,
    ) -> RiskInput {
        let phone = match method {
            PaymentMethod::SmsOtp { phone } => Some(phone.clone()),
            PaymentMethod::QrMerchant
            | PaymentMethod::QrCustomer { .. }
            | PaymentMethod::Nfc { .. }
            | PaymentMethod::SoundWave { .. }
            | PaymentMethod::H5 { .. }
            | PaymentMethod::App => None,
        };
        RiskInput {
            merchant_id: merchant_id.to_string(),
            payment_id,
            amount_minor,
            currency,
            method: method.kind(),
            customer_token: method.customer_token().map(str::to_string),
            phone,
            payer,
        }
    }

    /// The engine's facts (the IP is parsed here; a bad one names `payer.ip`).
    pub fn facts(&self) -> Result<PaymentFacts, ApiError> {
        let ip = self
            .payer
            .ip
            .as_deref()
            .map(|t| {
                t.parse::<IpAddr>()
                    .map_err(|_| invalid("payer.ip", "must be an IPv4 or IPv6 address"))
            })
            .transpose()?;
        Ok(PaymentFacts {
            merchant_id: self.merchant_id.clone(),
            payment_id: self
                .payment_id
                .clone()
                .unwrap_or_else(|| PREVIEW_EVENT_ID.to_string()),
            amount_minor: self.amount_minor,
            currency: self.currency,
            method: self.method,
            auth_factors: auth_factors(self.method),
            payer_id: self.payer.id.clone(),
            device_id: self.payer.device_id.clone(),
            ip,
            phone: self.phone.clone().or_else(|| self.payer.phone.clone()),
            token: self.customer_token.clone(),
            country: self.payer.country.clone(),
            location: None,
        })
    }

    /// Validated facts hashed with the merchant's salt.
    pub fn engine_input(&self, salt: &[u8]) -> Result<EngineInput, ApiError> {
        EngineInput::new(self.facts()?, salt)
    }
}

/// Authentication factors a method proves by itself, for the PBOC tier of a dynamic code:
/// an NFC payment carries a device-bound token and a cryptogram (two); every other
/// method proves one (the wallet's own login, or the OTP of `sms_otp`).
pub fn auth_factors(method: MethodKind) -> u8 {
    match method {
        MethodKind::Nfc => 2,
        MethodKind::QrMerchant
        | MethodKind::QrCustomer
        | MethodKind::SoundWave
        | MethodKind::H5
        | MethodKind::App
        | MethodKind::SmsOtp => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sms_otp_phone_and_a_token_reach_the_facts() {
        // Proves the method's phone wins over the payer's, tokens pass, and a preview
        // gets the placeholder event id.
        let payer = Payer {
            phone: Some("+8613800000000".into()),
            ip: Some("203.0.113.7".into()),
            ..Payer::default()
        };
        let m = PaymentMethod::SmsOtp {
            phone: "+8613900000000".into(),
        };
        let i = RiskInput::from_method("mch_1", None, 100, Currency::Cny, &m, payer);
        let f = i.facts().unwrap();
        assert_eq!(f.phone.as_deref(), Some("+8613900000000"));
        assert_eq!(f.payment_id, PREVIEW_EVENT_ID);
        assert_eq!(f.ip, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn a_bad_ip_is_refused_naming_payer_ip() {
        // Proves an unparsable IP is a 400 on payer.ip, not a silent skip.
        let payer = Payer {
            ip: Some("999.1.1.1".into()),
            ..Payer::default()
        };
        let i = RiskInput::from_method(
            "mch_1",
            None,
            100,
            Currency::Cny,
            &PaymentMethod::App,
            payer,
        );
        assert_eq!(i.facts().unwrap_err().param(), Some("payer.ip"));
    }
}
