//! One [`ChannelClient`] for a component that serves payments on any channel: it hands
//! each call to the adapter of the payment's `channel`.
//!
//! The sandbox is there unless its URL names no host (`sandbox_host = ""`, see
//! [`SandboxClient::is_off`]); its secret is required. Alipay, WeChat Pay and UnionPay
//! are read from their Spin variables the first time a call needs them ([`Slot`]): a
//! channel switched off or broken refuses *new* payments up front
//! ([`Channels::check_new_payment`]), and for an existing payment gives an *unknown*
//! outcome (nothing is decided: the payment stays `processing`, the refund `pending`),
//! never a success or a failure.

use std::cell::OnceCell;

use spinpay_core::ApiError;
use spinpay_core::api::NewPayment;
use spinpay_core::model::{Channel, Payment, PaymentMethod, Refund};
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};
use spinpay_guest::env::EnvError;

use crate::alipay::{self, AlipayClient};
use crate::sandbox::{self, SandboxClient};
use crate::twilio::TwilioSms;
use crate::unionpay::{self, UnionpayClient};
use crate::wechatpay::{self, WechatpayClient};
use crate::wiring::{Slot, request_error, unusable, var};

/// Variable: who sends one-time codes by SMS — `sandbox` (the default: the simulated
/// provider's inbox, for development) or `twilio` ([`crate::twilio`]).
pub const VAR_SMS_PROVIDER: &str = "sms_provider";

/// The SMS provider `sms_provider` chose.
#[derive(Debug, Clone)]
enum SmsRoute {
    /// The sandbox's SMS endpoint.
    Sandbox,
    /// Twilio's Messages API.
    Twilio(TwilioSms),
}

/// Every channel adapter this build has, chosen by the payment's channel.
#[derive(Debug, Clone)]
pub struct Channels {
    sandbox: SandboxClient,
    alipay: OnceCell<Slot<AlipayClient>>,
    wechatpay: OnceCell<Slot<WechatpayClient>>,
    unionpay: OnceCell<Slot<UnionpayClient>>,
    /// The SMS provider, or the variable that makes it unusable.
    sms: OnceCell<Result<SmsRoute, &'static str>>,
}

impl Channels {
    /// The dispatcher over the sandbox; the other channels are read from variables when
    /// first needed.
    pub fn new(sandbox: SandboxClient) -> Channels {
        Channels {
            sandbox,
            alipay: OnceCell::new(),
            wechatpay: OnceCell::new(),
            unionpay: OnceCell::new(),
            sms: OnceCell::new(),
        }
    }

    /// The dispatcher with every adapter given (tests, or a host that configures them
    /// otherwise).
    pub fn with_slots(
        sandbox: SandboxClient,
        alipay: Slot<AlipayClient>,
        wechatpay: Slot<WechatpayClient>,
        unionpay: Slot<UnionpayClient>,
    ) -> Channels {
        Channels {
            sandbox,
            alipay: OnceCell::from(alipay),
            wechatpay: OnceCell::from(wechatpay),
            unionpay: OnceCell::from(unionpay),
            sms: OnceCell::from(Ok(SmsRoute::Sandbox)),
        }
    }

    /// The sandbox configured from the component's variables (`sandbox_url`,
    /// `sandbox_secret`, `sandbox_notify_url`); a missing secret is 503
    /// `not_configured` (fail closed).
    pub async fn from_variables() -> Result<Channels, ApiError> {
        let sandbox = SandboxClient::from_variables()
            .await
            .map_err(not_configured)?;
        Ok(Channels::new(sandbox))
    }

    /// Refuses a channel this build has no adapter for (none today: every
    /// [`Channel`] has one). Whether it is configured is [`Channels::check_new_payment`].
    pub fn ensure_available(channel: Channel) -> Result<(), ApiError> {
        match channel {
            Channel::Sandbox | Channel::Alipay | Channel::Wechatpay | Channel::Unionpay => Ok(()),
        }
    }

    /// Refuses, before anything is stored, a payment its channel cannot take: the
    /// channel is switched off (400 `channel_unsupported`), misconfigured (503
    /// `not_configured` naming the variable), or does not offer the method, the capture
    /// mode or the amount (400 naming the field).
    pub async fn check_new_payment(&self, new: &NewPayment) -> Result<(), ApiError> {
        let (m, capture, amount) = (&new.method, new.capture, new.amount_minor);
        if new.channel == Channel::Sandbox && self.sandbox.is_off() {
            return Err(ApiError::ChannelUnsupported {
                value: Channel::Sandbox.as_str().to_string(),
            });
        }
        if let (PaymentMethod::SmsOtp { .. }, Err(what)) = (m, self.sms().await) {
            return Err(ApiError::NotConfigured { what });
        }
        let checked = match new.channel {
            Channel::Sandbox => return Ok(()),
            Channel::Alipay => {
                let accepted = self.alipay().await.require(Channel::Alipay)?.currencies();
                alipay::client::preflight(m, capture, amount, new.currency, accepted)
            }
            Channel::Wechatpay => {
                self.wechatpay().await.require(Channel::Wechatpay)?;
                wechatpay::client::preflight(m, capture, amount, new.currency, new.payer.as_ref())
            }
            Channel::Unionpay => {
                self.unionpay().await.require(Channel::Unionpay)?;
                unionpay::client::preflight(m, capture, amount, new.currency)
            }
        };
        checked.map_err(|e| request_error(new.channel, &e))
    }

    /// The Alipay adapter, read from variables on first use.
    pub async fn alipay(&self) -> &Slot<AlipayClient> {
        if self.alipay.get().is_none() {
            let slot = AlipayClient::load().await;
            let _ = self.alipay.set(slot);
        }
        self.alipay.get().expect("set above")
    }

    /// The WeChat Pay adapter, read from variables on first use.
    pub async fn wechatpay(&self) -> &Slot<WechatpayClient> {
        if self.wechatpay.get().is_none() {
            let slot = WechatpayClient::load().await;
            let _ = self.wechatpay.set(slot);
        }
        self.wechatpay.get().expect("set above")
    }

    /// The SMS provider, read from variables on first use.
    async fn sms(&self) -> &Result<SmsRoute, &'static str> {
        if self.sms.get().is_none() {
            let route = match var(VAR_SMS_PROVIDER).await.as_deref() {
                None | Some("sandbox") => Ok(SmsRoute::Sandbox),
                Some("twilio") => TwilioSms::load().await.map(SmsRoute::Twilio),
                Some(_) => Err(unusable(
                    VAR_SMS_PROVIDER,
                    &"expected `sandbox` or `twilio`",
                )),
            };
            let _ = self.sms.set(route);
        }
        self.sms.get().expect("set above")
    }

    /// The UnionPay adapter, read from variables on first use.
    pub async fn unionpay(&self) -> &Slot<UnionpayClient> {
        if self.unionpay.get().is_none() {
            let slot = UnionpayClient::load().await;
            let _ = self.unionpay.set(slot);
        }
        self.unionpay.get().expect("set above")
    }
}

/// A variable the adapters need is unusable: logged once, answered as `not_configured`
/// naming the variable.
fn not_configured(e: EnvError) -> ApiError {
    eprintln!("channel configuration: {e}");
    let what = match &e {
        EnvError::Variable { name, .. } if name == sandbox::VAR_URL => sandbox::VAR_URL,
        EnvError::Variable { name, .. } if name == sandbox::VAR_NOTIFY_URL => {
            sandbox::VAR_NOTIFY_URL
        }
        EnvError::Variable { .. } | EnvError::SecretMissing(_) => sandbox::VAR_SECRET,
    };
    ApiError::NotConfigured { what }
}

/// Runs `$call` with `$a` bound to the payment channel's adapter, or evaluates
/// `$missing` with `$why` (a log detail) when the channel has none usable.
macro_rules! on_adapter {
    ($self:ident, $channel:expr, |$a:ident| $call:expr, |$why:ident| $missing:expr) => {
        match $channel {
            Channel::Sandbox => {
                let $a = &$self.sandbox;
                $call
            }
            Channel::Alipay => match $self.alipay().await.ready(Channel::Alipay) {
                Ok($a) => $call,
                Err($why) => $missing,
            },
            Channel::Wechatpay => match $self.wechatpay().await.ready(Channel::Wechatpay) {
                Ok($a) => $call,
                Err($why) => $missing,
            },
            Channel::Unionpay => match $self.unionpay().await.ready(Channel::Unionpay) {
                Ok($a) => $call,
                Err($why) => $missing,
            },
        }
    };
}

impl ChannelClient for Channels {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        on_adapter!(
            self,
            payment.channel,
            |a| a.authorize(payment, method).await,
            |detail| ChannelOutcome::Unknown { detail }
        )
    }

    async fn capture(&self, payment: &Payment, amount_minor: i64) -> ActionOutcome {
        on_adapter!(
            self,
            payment.channel,
            |a| a.capture(payment, amount_minor).await,
            |detail| ActionOutcome::Unknown { detail }
        )
    }

    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        on_adapter!(
            self,
            payment.channel,
            |a| a.cancel(payment).await,
            |detail| ActionOutcome::Unknown { detail }
        )
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        on_adapter!(
            self,
            payment.channel,
            |a| a.query(payment).await,
            |detail| ChannelReport {
                outcome: ChannelOutcome::Unknown { detail },
                amount_minor: None,
                currency: None,
            }
        )
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        on_adapter!(
            self,
            payment.channel,
            |a| a.refund(payment, refund).await,
            |detail| RefundOutcome::Unknown { detail }
        )
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        on_adapter!(
            self,
            payment.channel,
            |a| a.query_refund(payment, refund).await,
            |detail| RefundOutcome::Unknown { detail }
        )
    }

    /// One-time codes go out through the provider `sms_provider` names, whatever the
    /// payment's channel; why one did not is logged (never the phone or the text).
    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        let sent = match self.sms().await {
            Ok(SmsRoute::Sandbox) => self.sandbox.send_sms(phone, text).await,
            Ok(SmsRoute::Twilio(twilio)) => twilio.send(phone, text).await,
            Err(var) => Err(format!("variable {var} is missing or unusable")),
        };
        if let Err(e) = &sent {
            eprintln!("one-time code not sent: {e}");
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use spinpay_core::crypto::Secret;
    use spinpay_core::model::CaptureMode;
    use spinpay_core::money::Currency;

    fn sandbox() -> SandboxClient {
        let secret = Secret::new("k".to_string());
        SandboxClient::new("http://sandbox.test", secret, sandbox::NOTIFY_URL_DEFAULT)
    }

    fn new_payment(channel: Channel, method: PaymentMethod, capture: CaptureMode) -> NewPayment {
        NewPayment {
            amount_minor: 1250,
            currency: Currency::Cny,
            channel,
            capture,
            merchant_order_id: None,
            description: None,
            method,
            payer: None,
            metadata: Default::default(),
            expires_in_ms: 900_000,
        }
    }

    fn configured() -> Channels {
        Channels::with_slots(
            sandbox(),
            Slot::Ready(AlipayClient::new(crate::alipay::tests::config())),
            Slot::Off,
            Slot::Broken(unionpay::client::VAR_PRIVATE_KEY),
        )
    }

    #[test]
    fn a_sandbox_without_a_host_is_off_and_refuses_new_payments_as_unsupported() {
        // Proves `sandbox_host = ""` (a deployment without the sandbox component) turns the
        // sandbox channel off instead of leaving its payments `processing`.
        for (url, off) in [
            ("http://", true),
            ("http:///", true),
            ("", true),
            ("http://sandbox.spin.internal", false),
            ("http://127.0.0.1:3000/", false),
        ] {
            let client =
                SandboxClient::new(url, Secret::new("k".into()), sandbox::NOTIFY_URL_DEFAULT);
            assert_eq!(client.is_off(), off, "{url:?}");
        }
        let off = SandboxClient::new(
            "http://",
            Secret::new("k".into()),
            sandbox::NOTIFY_URL_DEFAULT,
        );
        let c = Channels::with_slots(off, Slot::Off, Slot::Off, Slot::Off);
        let p = new_payment(
            Channel::Sandbox,
            PaymentMethod::QrMerchant,
            CaptureMode::Automatic,
        );
        assert_eq!(
            block_on(c.check_new_payment(&p)).unwrap_err(),
            ApiError::ChannelUnsupported {
                value: "sandbox".into()
            }
        );
    }

    #[test]
    fn every_channel_has_an_adapter_in_this_build() {
        // Proves no channel is refused for lack of code; configuration decides.
        for ch in [
            Channel::Sandbox,
            Channel::Alipay,
            Channel::Wechatpay,
            Channel::Unionpay,
        ] {
            assert!(Channels::ensure_available(ch).is_ok(), "{ch:?}");
        }
    }

    #[test]
    fn new_payments_are_refused_up_front_on_off_broken_or_unfit_channels() {
        // Proves off → channel_unsupported, broken → not_configured naming the variable,
        // and a method or capture mode the channel lacks → 400 naming the field.
        let c = configured();
        let auto = CaptureMode::Automatic;
        let ok = new_payment(Channel::Alipay, PaymentMethod::QrMerchant, auto);
        assert!(block_on(c.check_new_payment(&ok)).is_ok());
        let sandbox_ok = new_payment(Channel::Sandbox, PaymentMethod::App, CaptureMode::Manual);
        assert!(block_on(c.check_new_payment(&sandbox_ok)).is_ok());
        let off = new_payment(Channel::Wechatpay, PaymentMethod::QrMerchant, auto);
        let e = block_on(c.check_new_payment(&off)).unwrap_err();
        assert_eq!(e.code(), "channel_unsupported");
        let broken = new_payment(Channel::Unionpay, PaymentMethod::QrMerchant, auto);
        assert_eq!(
            block_on(c.check_new_payment(&broken)).unwrap_err(),
            ApiError::NotConfigured {
                what: "unionpay_private_key"
            }
        );
        let nfc = PaymentMethod::Nfc {
            token: "t".into(),
            cryptogram: "c".into(),
        };
        let e = block_on(c.check_new_payment(&new_payment(Channel::Alipay, nfc, auto)));
        assert_eq!(e.unwrap_err().code(), "method_unsupported");
        let manual = new_payment(Channel::Alipay, PaymentMethod::App, CaptureMode::Manual);
        let e = block_on(c.check_new_payment(&manual)).unwrap_err();
        assert_eq!(
            (e.code(), e.param()),
            ("parameter_invalid", Some("capture"))
        );
    }

    #[test]
    fn a_unionpay_payment_in_another_currency_than_cny_is_refused_up_front() {
        // Proves a configured UnionPay refuses a new HKD payment before anything is stored
        // (400 currency_unsupported on the currency field) instead of sending its minor
        // units as fen, while the same payment in CNY is taken.
        let c = Channels::with_slots(
            sandbox(),
            Slot::Off,
            Slot::Off,
            Slot::Ready(UnionpayClient::new(crate::unionpay::tests::config())),
        );
        let auto = CaptureMode::Automatic;
        let cny = new_payment(Channel::Unionpay, PaymentMethod::QrMerchant, auto);
        assert!(block_on(c.check_new_payment(&cny)).is_ok());
        let mut hkd = cny.clone();
        hkd.currency = Currency::Hkd;
        let e = block_on(c.check_new_payment(&hkd)).unwrap_err();
        assert_eq!(
            (e.code(), e.param()),
            ("currency_unsupported", Some("currency"))
        );
        assert_eq!(
            e,
            ApiError::CurrencyUnsupported {
                value: "HKD (not accepted by unionpay)".into()
            }
        );
    }

    #[test]
    fn calls_for_an_unusable_channel_are_unknown_outcomes() {
        // Proves an existing payment on a switched-off channel is never decided by the
        // dispatcher: the outcome is unknown and names why.
        let c = configured();
        let mut p = crate::alipay::tests::payment(1250, Currency::Cny);
        p.channel = Channel::Wechatpay;
        let outcome = block_on(c.authorize(&p, &PaymentMethod::QrMerchant));
        match outcome {
            ChannelOutcome::Unknown { detail } => assert!(detail.contains("not enabled")),
            other => panic!("{other:?}"),
        }
        p.channel = Channel::Unionpay;
        let report = block_on(c.query(&p));
        match report.outcome {
            ChannelOutcome::Unknown { detail } => assert!(detail.contains("unionpay_private_key")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_channel_variable_is_not_configured_naming_it() {
        // Proves a missing secret and a broken URL variable each name their variable.
        let missing = not_configured(EnvError::SecretMissing("sandbox_secret".into()));
        assert_eq!(
            missing,
            ApiError::NotConfigured {
                what: "sandbox_secret"
            }
        );
        let url = not_configured(EnvError::Variable {
            name: "sandbox_url".into(),
            detail: "x".into(),
        });
        assert_eq!(
            url,
            ApiError::NotConfigured {
                what: "sandbox_url"
            }
        );
    }
}
