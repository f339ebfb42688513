//! What the HTTP wiring of every channel shares: reading its Spin variables into a
//! [`Slot`] (ready, switched off, or broken naming the variable), the randomness the
//! transformers take (RSA blinding seed, request nonces), the outcomes of a call that got
//! no answer ([`settle`]) or a request that was never sent ([`not_sent`]), and the
//! mapping of a request that could not be built into the merchant API's errors.
//!
//! A channel is *off* while its identifying variable (app id / mch id / mer id) is empty:
//! payments on it are refused up front as `channel_unsupported`. Once that variable is
//! set, every other variable it needs must be usable, or payments on it are refused as
//! 503 `not_configured` naming the variable (fail closed, never a default key).

use std::future::Future;

use spinpay_core::ApiError;
use spinpay_core::model::Channel;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, ChannelReport, RefundOutcome};
use spinpay_guest::env;
use spinpay_guest::outbound::{OutboundError, OutboundResponse};

use crate::crypto::{BlindingRng, RequestError, VerifyingKey};

/// How long past an order's expiry a channel is taken to have stopped taking payment for
/// it: room for the difference between our clock and the channel's, and for a QR code
/// whose lifetime the channel counts from a little later than we do. A close the channel
/// cannot make (UnionPay has none; Alipay has no trade nobody scanned) counts as done
/// only after it.
pub const EXPIRY_MARGIN_MS: i64 = 5 * 60_000;

/// A channel adapter as this deployment configures it.
#[derive(Debug, Clone)]
pub enum Slot<C> {
    /// Configured and usable.
    Ready(C),
    /// Its identifying variable is empty: the channel is switched off.
    Off,
    /// Switched on but this variable is missing or unusable.
    Broken(&'static str),
}

impl<C> Slot<C> {
    /// The adapter, or why there is none (for an *unknown* outcome's log detail).
    pub fn ready(&self, channel: Channel) -> Result<&C, String> {
        match self {
            Slot::Ready(c) => Ok(c),
            Slot::Off => Err(format!(
                "channel {} is not enabled in this deployment",
                channel.as_str()
            )),
            Slot::Broken(var) => Err(format!(
                "channel {}: variable {var} is missing or unusable",
                channel.as_str()
            )),
        }
    }

    /// The adapter, or the merchant-facing error for a new payment on it.
    pub fn require(&self, channel: Channel) -> Result<&C, ApiError> {
        match self {
            Slot::Ready(c) => Ok(c),
            Slot::Off => Err(ApiError::ChannelUnsupported {
                value: channel.as_str().to_string(),
            }),
            Slot::Broken(what) => Err(ApiError::NotConfigured { what }),
        }
    }
}

/// Reads a channel's variables: [`Slot::Off`] while its identifying variable `id_var`
/// is empty; otherwise what `load_on` makes of that value and the other variables
/// ([`Slot::Broken`] naming the first unusable one).
pub async fn load_slot<C, F, Fut>(id_var: &'static str, load_on: F) -> Slot<C>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<C, &'static str>>,
{
    let Some(id) = var(id_var).await else {
        return Slot::Off;
    };
    match load_on(id).await {
        Ok(c) => Slot::Ready(c),
        Err(var) => Slot::Broken(var),
    }
}

/// Logs why variable `name` is unusable (`e`, never its value) and returns `name` for
/// [`Slot::Broken`].
pub fn unusable(name: &'static str, e: &dyn std::fmt::Display) -> &'static str {
    eprintln!("channel configuration: variable {name}: {e}");
    name
}

/// A variable's trimmed value; empty, undefined or unreadable is `None`.
pub async fn var(name: &'static str) -> Option<String> {
    match env::variable(name).await {
        Ok(Some(v)) if !v.trim().is_empty() => Some(v.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            eprintln!("channel configuration: {e}");
            None
        }
    }
}

/// A required variable of a switched-on channel; missing, or left at the deployment
/// template's placeholder (`REPLACE_ME…`) → `Err(name)`.
pub async fn required(name: &'static str) -> Result<String, &'static str> {
    let v = var(name).await.ok_or_else(|| {
        eprintln!("channel configuration: variable {name} is empty");
        name
    })?;
    if v.starts_with(env::PLACEHOLDER_PREFIX) {
        eprintln!("channel configuration: variable {name} is still the template's placeholder");
        return Err(name);
    }
    Ok(v)
}

/// An absolute `http(s)://` URL variable (a notify URL rendered from an empty
/// `public_base_url` is only a path: unusable).
pub async fn required_url(name: &'static str) -> Result<String, &'static str> {
    let v = required(name).await?;
    if is_absolute_http_url(&v) {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        eprintln!("channel configuration: variable {name} is not an absolute http(s) URL");
        Err(name)
    }
}

/// True for `http://host…` or `https://host…`.
pub fn is_absolute_http_url(v: &str) -> bool {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Several peer keys for rotation: `ids` is a comma-separated list of key ids (serials,
/// `certId`s) and `keys_text` the keys in the same order — concatenated PEM blocks, or
/// comma-separated base64 DER. `Err` names which of the two variables is unusable.
pub fn key_list(
    ids: &str,
    keys_text: &str,
    ids_var: &'static str,
    keys_var: &'static str,
) -> Result<Vec<(String, VerifyingKey)>, &'static str> {
    let ids: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let texts: Vec<String> = if keys_text.contains("-----BEGIN") {
        pem_blocks(keys_text)
    } else {
        keys_text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if ids.is_empty() || ids.len() > KEYS_PER_CHANNEL_MAX {
        return Err(ids_var);
    }
    if texts.len() != ids.len() {
        eprintln!(
            "channel configuration: {ids_var} names {} keys but {keys_var} holds {}",
            ids.len(),
            texts.len()
        );
        return Err(keys_var);
    }
    ids.iter()
        .zip(texts)
        .map(|(id, text)| match VerifyingKey::from_text(&text) {
            Ok(k) => Ok(((*id).to_string(), k)),
            Err(e) => {
                eprintln!("channel configuration: variable {keys_var} ({id}): {e}");
                Err(keys_var)
            }
        })
        .collect()
}

/// Most verification keys one channel may have at once (old and new during rotation).
pub const KEYS_PER_CHANNEL_MAX: usize = 4;

/// Each `-----BEGIN …----- … -----END …-----` block of `text`, in order.
fn pem_blocks(text: &str) -> Vec<String> {
    const END: &str = "-----END";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN") {
        let block = &rest[begin..];
        let Some(end) = block.find(END) else {
            break;
        };
        let tail = &block[end + END.len()..];
        let close = tail.find("-----").map_or(tail.len(), |i| i + "-----".len());
        let len = end + END.len() + close;
        out.push(block[..len].to_string());
        rest = &block[len..];
    }
    out
}

/// A fresh RSA blinding RNG seeded from the host's CSPRNG.
pub fn blinding_rng() -> BlindingRng {
    BlindingRng::from_seed(env::random_bytes())
}

/// A 32-character alphanumeric nonce from the host's CSPRNG.
pub fn nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    env::random_bytes::<32>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// An outcome of a channel call: what it is when no answer came back.
pub trait Unanswered {
    /// *Unknown*: the request may have reached the channel, so nothing is assumed; the
    /// transport error is the detail.
    fn unanswered(e: &OutboundError) -> Self;
}

impl Unanswered for ChannelOutcome {
    fn unanswered(e: &OutboundError) -> Self {
        ChannelOutcome::Unknown {
            detail: e.to_string(),
        }
    }
}

impl Unanswered for ChannelReport {
    fn unanswered(e: &OutboundError) -> Self {
        ChannelReport {
            outcome: ChannelOutcome::unanswered(e),
            amount_minor: None,
            currency: None,
        }
    }
}

impl Unanswered for ActionOutcome {
    fn unanswered(e: &OutboundError) -> Self {
        ActionOutcome::Unknown {
            detail: e.to_string(),
        }
    }
}

impl Unanswered for RefundOutcome {
    fn unanswered(e: &OutboundError) -> Self {
        RefundOutcome::Unknown {
            detail: e.to_string(),
        }
    }
}

/// What `parse` makes of the channel's answer, or [`Unanswered::unanswered`] when the
/// call got none.
pub fn settle<T: Unanswered>(
    sent: Result<OutboundResponse, OutboundError>,
    parse: impl FnOnce(&OutboundResponse) -> T,
) -> T {
    match sent {
        Ok(resp) => parse(&resp),
        Err(e) => T::unanswered(&e),
    }
}

/// An outcome of a request that could not be built: it left nothing at the channel, so
/// the refusal is final (`request_invalid`).
pub trait NotSent {
    /// The final refusal, `e` as its message.
    fn not_sent(e: &RequestError) -> Self;
}

impl NotSent for ChannelOutcome {
    fn not_sent(e: &RequestError) -> Self {
        ChannelOutcome::Declined {
            code: "request_invalid".into(),
            message: e.to_string(),
        }
    }
}

impl NotSent for RefundOutcome {
    fn not_sent(e: &RequestError) -> Self {
        RefundOutcome::Failed {
            code: "request_invalid".into(),
            message: e.to_string(),
        }
    }
}

/// [`NotSent::not_sent`] as a function (for `Err(e) => return not_sent(&e)`).
pub fn not_sent<T: NotSent>(e: &RequestError) -> T {
    T::not_sent(e)
}

/// The refusal of a capture by a channel that captures when the customer pays.
pub fn capture_unsupported(message: &str) -> ActionOutcome {
    ActionOutcome::Declined {
        code: "capture_unsupported".into(),
        message: message.into(),
    }
}

/// The refusal of an SMS by a channel that sends none.
pub fn sends_no_sms(channel: Channel) -> Result<(), String> {
    Err(format!("{} sends no SMS", channel.as_str()))
}

/// A request that could not be built, as the merchant API's error (checked before a
/// payment is created, so nothing is stored).
pub fn request_error(channel: Channel, e: &RequestError) -> ApiError {
    let name = channel.as_str();
    match e {
        RequestError::MethodUnsupported(m) => ApiError::MethodUnsupported {
            value: format!("{m} (not offered by {name})"),
        },
        RequestError::ManualCaptureUnsupported => ApiError::ParameterInvalid {
            param: "capture".into(),
            reason: format!(
                "{name} supports only automatic capture (a payment that names no capture \
                 takes the account's default_capture; send \"capture\": \"automatic\")"
            ),
        },
        RequestError::CurrencyUnsupported(c) => ApiError::CurrencyUnsupported {
            value: format!("{c} (not accepted by {name})"),
        },
        RequestError::Amount(a) => ApiError::AmountInvalid {
            param: "amount_minor".into(),
            reason: format!("{a} cannot be sent to {name}"),
        },
        RequestError::Field { field, reason } => ApiError::ParameterInvalid {
            param: (*field).to_string(),
            reason: (*reason).to_string(),
        },
    }
}

/// One payment method of each kind, for the preflight-agrees-with-builder tests;
/// `auth_code` is the customer-presented code in the channel's format.
#[cfg(test)]
pub(crate) fn every_method(
    auth_code: &str,
    sound_token: &str,
) -> Vec<spinpay_core::model::PaymentMethod> {
    use spinpay_core::model::PaymentMethod;
    vec![
        PaymentMethod::QrMerchant,
        PaymentMethod::QrCustomer {
            auth_code: auth_code.into(),
        },
        PaymentMethod::SoundWave {
            token: sound_token.into(),
        },
        PaymentMethod::H5 {
            return_url: "https://shop.example/back".into(),
        },
        PaymentMethod::App,
        PaymentMethod::Nfc {
            token: "t".into(),
            cryptogram: "c".into(),
        },
        PaymentMethod::SmsOtp {
            phone: "+8613800000000".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_are_usable_notify_urls() {
        // Proves a notify URL rendered from an empty base (a bare path) is refused.
        assert!(is_absolute_http_url(
            "https://pay.example.com/v1/webhooks/alipay"
        ));
        assert!(is_absolute_http_url("http://127.0.0.1:3000/x"));
        assert!(!is_absolute_http_url("/v1/webhooks/alipay"));
        assert!(!is_absolute_http_url("https:///x"));
        assert!(!is_absolute_http_url("ftp://x"));
    }

    #[test]
    fn slots_name_why_a_channel_cannot_serve() {
        // Proves off → channel_unsupported, broken → not_configured naming the variable.
        let off: Slot<()> = Slot::Off;
        assert_eq!(
            off.require(Channel::Alipay).unwrap_err().code(),
            "channel_unsupported"
        );
        let broken: Slot<()> = Slot::Broken("alipay_private_key");
        assert_eq!(
            broken.require(Channel::Alipay).unwrap_err(),
            ApiError::NotConfigured {
                what: "alipay_private_key"
            }
        );
        assert!(
            broken
                .ready(Channel::Alipay)
                .unwrap_err()
                .contains("alipay_private_key")
        );
        assert!(Slot::Ready(()).require(Channel::Alipay).is_ok());
    }

    #[test]
    fn several_rotation_keys_load_in_order_and_mismatches_name_the_variable() {
        // Proves two ids with two concatenated PEM blocks (or two base64 keys) load as
        // (id, key) pairs in order, and a count mismatch or bad key names the variable.
        use crate::crypto::{test_key, test_public_pem};
        let (a, b) = (test_key(7).verifying_key(), test_key(8).verifying_key());
        let both = format!("{}\n{}", test_public_pem(7), test_public_pem(8));
        let keys = key_list("S1, S2", &both, "ids", "keys").unwrap();
        assert_eq!(
            keys,
            vec![("S1".to_string(), a.clone()), ("S2".to_string(), b)]
        );
        let one = key_list("S1", &test_public_pem(7), "ids", "keys").unwrap();
        assert_eq!(one, vec![("S1".to_string(), a)]);
        assert_eq!(
            key_list("S1,S2", &test_public_pem(7), "ids", "keys"),
            Err("keys")
        );
        assert_eq!(
            key_list(" , ", &test_public_pem(7), "ids", "keys"),
            Err("ids")
        );
        assert_eq!(key_list("S1", "not a key", "ids", "keys"), Err("keys"));
    }

    #[test]
    fn request_errors_map_to_api_errors_naming_the_field() {
        // Proves each build failure becomes a 4xx naming its parameter.
        let e = request_error(Channel::Wechatpay, &RequestError::MethodUnsupported("nfc"));
        assert_eq!(e.param(), Some("method.type"));
        let e = request_error(Channel::Alipay, &RequestError::ManualCaptureUnsupported);
        assert_eq!(e.param(), Some("capture"));
        // A merchant whose default_capture is manual sent no capture: the message says
        // where the manual capture came from and what to send.
        assert!(e.message().contains("default_capture"), "{}", e.message());
        let e = request_error(
            Channel::Wechatpay,
            &RequestError::Field {
                field: "payer.ip",
                reason: "needed",
            },
        );
        assert_eq!(e.param(), Some("payer.ip"));
        let e = request_error(Channel::Unionpay, &RequestError::Amount(0));
        assert_eq!(e.param(), Some("amount_minor"));
    }
}
