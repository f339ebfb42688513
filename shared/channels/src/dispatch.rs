//! One [`ChannelClient`] for a component that serves payments on any channel: it hands
//! each call to the adapter of the payment's `channel`. A channel this build has no
//! adapter wired for gives an *unknown* outcome (nothing is decided: the payment stays
//! `processing`, the refund `pending`), never a success or a failure.
//!
//! Only the sandbox is wired today; alipay, wechatpay and unionpay join here when their
//! adapters get their configuration variables.

use spinpay_core::ApiError;
use spinpay_core::model::{Channel, Payment, PaymentMethod, Refund};
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};
use spinpay_guest::env::EnvError;

use crate::sandbox::{self, SandboxClient};

/// Every channel adapter this build has, chosen by the payment's channel.
#[derive(Debug, Clone)]
pub struct Channels {
    sandbox: SandboxClient,
}

impl Channels {
    /// The dispatcher over these adapters.
    pub fn new(sandbox: SandboxClient) -> Channels {
        Channels { sandbox }
    }

    /// Every adapter configured from the component's variables (`sandbox_url`,
    /// `sandbox_secret`, `sandbox_notify_url`); a missing secret is 503
    /// `not_configured` (fail closed).
    pub async fn from_variables() -> Result<Channels, ApiError> {
        let sandbox = SandboxClient::from_variables()
            .await
            .map_err(not_configured)?;
        Ok(Channels::new(sandbox))
    }

    /// Refuses, up front, a payment on a channel without an adapter in this build
    /// (400 `channel_unsupported`), so no payment is created that nothing could serve.
    pub fn ensure_available(channel: Channel) -> Result<(), ApiError> {
        match channel {
            Channel::Sandbox => Ok(()),
            Channel::Alipay | Channel::Wechatpay | Channel::Unionpay => {
                Err(ApiError::ChannelUnsupported {
                    value: channel.as_str().to_string(),
                })
            }
        }
    }

    fn adapter(&self, channel: Channel) -> Option<&SandboxClient> {
        match channel {
            Channel::Sandbox => Some(&self.sandbox),
            Channel::Alipay | Channel::Wechatpay | Channel::Unionpay => None,
        }
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

fn no_adapter(channel: Channel) -> String {
    format!("no adapter for channel {}", channel.as_str())
}

impl ChannelClient for Channels {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.authorize(payment, method).await,
            None => ChannelOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn capture(&self, payment: &Payment, amount_minor: i64) -> ActionOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.capture(payment, amount_minor).await,
            None => ActionOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.cancel(payment).await,
            None => ActionOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        match self.adapter(payment.channel) {
            Some(a) => a.query(payment).await,
            None => ChannelReport {
                outcome: ChannelOutcome::Unknown {
                    detail: no_adapter(payment.channel),
                },
                amount_minor: None,
                currency: None,
            },
        }
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.refund(payment, refund).await,
            None => RefundOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.query_refund(payment, refund).await,
            None => RefundOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    /// One-time codes go out through the sandbox's SMS endpoint, whatever the channel.
    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        self.sandbox.send_sms(phone, text).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::crypto::Secret;

    fn channels() -> Channels {
        let secret = Secret::new("k".to_string());
        Channels::new(SandboxClient::new(
            "http://sandbox.test",
            secret,
            sandbox::NOTIFY_URL_DEFAULT,
        ))
    }

    #[test]
    fn only_the_sandbox_has_an_adapter_and_others_are_refused_up_front() {
        // Proves sandbox payments dispatch to its adapter while the real channels have
        // none and a new payment on them is refused as channel_unsupported.
        let c = channels();
        assert!(c.adapter(Channel::Sandbox).is_some());
        assert!(Channels::ensure_available(Channel::Sandbox).is_ok());
        for ch in [Channel::Alipay, Channel::Wechatpay, Channel::Unionpay] {
            assert!(c.adapter(ch).is_none(), "{ch:?}");
            let e = Channels::ensure_available(ch).unwrap_err();
            assert_eq!(e.code(), "channel_unsupported");
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
