//! The wire: request bodies (strict: unknown fields rejected), their validation into
//! domain values, response bodies with DESIGN.md's names, and the limits.
//!
//! Parsing is two-step so every error names its field: the body is parsed as JSON
//! (`json_invalid`), checked against the request's field schema (`unknown_field`,
//! `parameter_missing`, `parameter_invalid`, `amount_invalid` with `param` such as
//! `method.token`), then deserialized into the `deny_unknown_fields` struct and validated
//! into domain values by `validate` functions.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::model::{
    CancellationReason, CaptureMode, Channel, Conflict, Failure, MethodKind, NextAction, Payer,
    Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus, RiskAssessment, RiskDecision,
    RuleHit,
};
use crate::money::{AMOUNT_MINOR_MAX, Currency};

/// Largest request body for any merchant API endpoint, in bytes.
pub const BODY_BYTES_MAX: u64 = 16 * 1024;
/// Largest provider notification body, in bytes.
pub const NOTIFICATION_BODY_BYTES_MAX: u64 = 64 * 1024;
/// Most metadata pairs.
pub const METADATA_PAIRS_MAX: usize = 20;
/// Longest metadata key, in characters.
pub const METADATA_KEY_LEN_MAX: usize = 40;
/// Longest metadata value, in characters.
pub const METADATA_VALUE_LEN_MAX: usize = 500;
/// Longest description / refund reason, in characters.
pub const DESCRIPTION_LEN_MAX: usize = 255;
/// Longest merchant order / refund id, in bytes.
pub const MERCHANT_REF_LEN_MAX: usize = 64;
/// Longest token, auth code or cryptogram, in bytes.
pub const TOKEN_LEN_MAX: usize = 128;
/// Longest URL, in bytes.
pub const URL_LEN_MAX: usize = 2048;
/// Longest payer id / device id, in bytes.
pub const PAYER_REF_LEN_MAX: usize = 128;
/// Longest merchant name, in characters.
pub const MERCHANT_NAME_LEN_MAX: usize = 100;
/// Largest page.
pub const PAGE_SIZE_MAX: u32 = 100;
/// Page size when `limit` is absent.
pub const PAGE_SIZE_DEFAULT: u32 = 10;
/// Digits in an OTP.
pub const OTP_DIGITS: usize = 6;

const _: () = assert!(PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX);
const _: () = assert!(NOTIFICATION_BODY_BYTES_MAX >= BODY_BYTES_MAX);

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An `i64`.
    Integer,
    /// A string.
    String,
    /// A nested object with its own schema.
    Object(&'static [Field]),
    /// An object of string values.
    StringMap,
}

/// One field of a request schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// JSON name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Must be present and non-null.
    pub required: bool,
}

const fn f(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
    }
}

/// A request body type with its field schema.
pub trait WireRequest: DeserializeOwned {
    /// The fields.
    const SCHEMA: &'static [Field];
}

/// Parses a body: size limit, JSON, schema (names the field), then the typed struct.
pub fn parse_body<T: WireRequest>(body: &[u8], limit_bytes: u64) -> Result<T, ApiError> {
    if body.len() as u64 > limit_bytes {
        return Err(ApiError::BodyTooLarge { limit_bytes });
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        parse_json_value(body)?
    };
    check_schema(&value, T::SCHEMA, "")?;
    serde_json::from_value(value).map_err(|e| ApiError::ParameterInvalid {
        param: "body".into(),
        reason: e.to_string(),
    })
}

/// Parses a JSON document as [`Value`] does, except that an object naming one key twice
/// is `json_invalid` (see [`Unique`]).
pub fn parse_json_value(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Unique>(body)
        .map(|u| u.0)
        .map_err(|e| ApiError::JsonInvalid {
            detail: e.to_string(),
        })
}

/// A JSON value parsed like [`Value`], except that an object naming one key twice is
/// refused: `serde_json` keeps the last copy, so `{"amount_minor":100,"amount_minor":
/// 200}` would charge 200 while a proxy or log that reads the first copy shows 100.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Like `Value`: a float JSON cannot hold (never produced by the parser) is null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn check_schema(value: &Value, schema: &[Field], prefix: &str) -> Result<(), ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::JsonInvalid {
            detail: format!("{} must be a JSON object", name_or(prefix, "the body")),
        });
    };
    if let Some(unknown) = map.keys().find(|k| !schema.iter().any(|f| f.name == *k)) {
        return Err(ApiError::UnknownField {
            param: join(prefix, unknown),
        });
    }
    for field in schema {
        let param = join(prefix, field.name);
        match map.get(field.name) {
            None | Some(Value::Null) if field.required => {
                return Err(ApiError::ParameterMissing { param });
            }
            None | Some(Value::Null) => {}
            Some(v) => check_kind(v, field, param)?,
        }
    }
    Ok(())
}

fn check_kind(v: &Value, field: &Field, param: String) -> Result<(), ApiError> {
    let wrong = |expected: &str| {
        if field.name.ends_with("_minor") {
            ApiError::AmountInvalid {
                param: param.clone(),
                reason: "must be an integer number of minor units".into(),
            }
        } else {
            ApiError::ParameterInvalid {
                param: param.clone(),
                reason: format!("must be {expected}"),
            }
        }
    };
    match field.kind {
        Kind::Integer if v.as_i64().is_none() => Err(wrong("an integer")),
        Kind::String if !v.is_string() => Err(wrong("a string")),
        Kind::Object(inner) => check_schema(v, inner, &param).map_err(|e| match e {
            ApiError::JsonInvalid { .. } => wrong("an object"),
            other => other,
        }),
        Kind::StringMap => match v.as_object() {
            Some(m) => match m.iter().find(|(_, v)| !v.is_string()) {
                Some((k, _)) => Err(ApiError::ParameterInvalid {
                    param: join(&param, k),
                    reason: "must be a string".into(),
                }),
                None => Ok(()),
            },
            None => Err(wrong("an object of strings")),
        },
        Kind::Integer | Kind::String => Ok(()),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn name_or<'a>(prefix: &'a str, fallback: &'a str) -> &'a str {
    if prefix.is_empty() { fallback } else { prefix }
}

/// The `method` object of a request (fields depend on `type`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodRequest {
    /// Method type.
    #[serde(rename = "type")]
    pub method_type: String,
    /// qr_customer.
    pub auth_code: Option<String>,
    /// nfc, sound_wave.
    pub token: Option<String>,
    /// nfc.
    pub cryptogram: Option<String>,
    /// h5.
    pub return_url: Option<String>,
    /// sms_otp.
    pub phone: Option<String>,
}

const METHOD_SCHEMA: &[Field] = &[
    f("type", Kind::String, true),
    f("auth_code", Kind::String, false),
    f("token", Kind::String, false),
    f("cryptogram", Kind::String, false),
    f("return_url", Kind::String, false),
    f("phone", Kind::String, false),
];

/// The `payer` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayerRequest {
    /// Merchant's payer id.
    pub id: Option<String>,
    /// Device fingerprint.
    pub device_id: Option<String>,
    /// IP address.
    pub ip: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// E.164 phone for OTP step-up.
    pub phone: Option<String>,
}

const PAYER_SCHEMA: &[Field] = &[
    f("id", Kind::String, false),
    f("device_id", Kind::String, false),
    f("ip", Kind::String, false),
    f("country", Kind::String, false),
    f("phone", Kind::String, false),
];

/// `POST /v1/payments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// Amount in minor units, 1..=10^12.
    pub amount_minor: i64,
    /// ISO code.
    pub currency: String,
    /// Channel name.
    pub channel: String,
    /// `automatic` | `manual`; absent → the merchant's default.
    pub capture: Option<String>,
    /// Unique per merchant.
    pub merchant_order_id: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The method.
    pub method: MethodRequest,
    /// The payer.
    pub payer: Option<PayerRequest>,
    /// ≤ 20 string pairs.
    pub metadata: Option<BTreeMap<String, String>>,
    /// How long the customer has to pay, in seconds
    /// ([`PAYMENT_EXPIRY_SECONDS_MIN`]..=[`PAYMENT_EXPIRY_SECONDS_MAX`]); absent → the
    /// maximum.
    pub expires_in_seconds: Option<i64>,
}

/// Shortest `expires_in_seconds` (WeChat Pay refuses an order that expires within a
/// minute).
pub const PAYMENT_EXPIRY_SECONDS_MIN: i64 = 60;
/// Longest (and default) `expires_in_seconds`: the reconciliation horizon, so every
/// unpaid order is closed by reconciliation at the latest when it expires.
pub const PAYMENT_EXPIRY_SECONDS_MAX: i64 = crate::service::RECONCILE_HORIZON_MS / 1000;

impl WireRequest for CreatePaymentRequest {
    const SCHEMA: &'static [Field] = &[
        f("amount_minor", Kind::Integer, true),
        f("currency", Kind::String, true),
        f("channel", Kind::String, true),
        f("capture", Kind::String, false),
        f("merchant_order_id", Kind::String, false),
        f("description", Kind::String, false),
        f("method", Kind::Object(METHOD_SCHEMA), true),
        f("payer", Kind::Object(PAYER_SCHEMA), false),
        f("metadata", Kind::StringMap, false),
        f("expires_in_seconds", Kind::Integer, false),
    ];
}

/// A validated payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Channel.
    pub channel: Channel,
    /// Capture mode (resolved against the merchant default).
    pub capture: CaptureMode,
    /// Order id.
    pub merchant_order_id: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Method with secrets.
    pub method: PaymentMethod,
    /// Payer.
    pub payer: Option<Payer>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// How long the customer has to pay, in milliseconds.
    pub expires_in_ms: i64,
}

impl CreatePaymentRequest {
    /// Validates into a [`NewPayment`]; `default_capture` is the merchant's setting.
    pub fn validate(self, default_capture: CaptureMode) -> Result<NewPayment, ApiError> {
        let capture = match self.capture.as_deref() {
            None => default_capture,
            Some(text) => parse_capture(text, "capture")?,
        };
        Ok(NewPayment {
            amount_minor: validate_amount(self.amount_minor, "amount_minor")?,
            currency: parse_currency(&self.currency)?,
            channel: Channel::parse(&self.channel).ok_or(ApiError::ChannelUnsupported {
                value: self.channel.clone(),
            })?,
            capture,
            merchant_order_id: opt_ref(self.merchant_order_id, "merchant_order_id")?,
            description: opt_text(self.description, "description", DESCRIPTION_LEN_MAX)?,
            method: validate_method(self.method)?,
            payer: self.payer.map(validate_payer).transpose()?,
            metadata: validate_metadata(self.metadata.unwrap_or_default())?,
            expires_in_ms: validate_expiry(self.expires_in_seconds)? * 1000,
        })
    }
}

/// Parses `automatic` / `manual`.
pub fn parse_capture(text: &str, param: &str) -> Result<CaptureMode, ApiError> {
    match text {
        "automatic" => Ok(CaptureMode::Automatic),
        "manual" => Ok(CaptureMode::Manual),
        other => Err(invalid(
            param,
            &format!("must be automatic or manual, not {other:?}"),
        )),
    }
}

/// Parses a currency code.
pub fn parse_currency(code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).ok_or(ApiError::CurrencyUnsupported {
        value: code.to_string(),
    })
}

/// Checks an amount is in 1..=[`AMOUNT_MINOR_MAX`].
pub fn validate_amount(amount_minor: i64, param: &str) -> Result<i64, ApiError> {
    if amount_minor <= 0 {
        return Err(ApiError::AmountInvalid {
            param: param.into(),
            reason: "must be greater than 0".into(),
        });
    }
    if amount_minor > AMOUNT_MINOR_MAX {
        return Err(ApiError::AmountInvalid {
            param: param.into(),
            reason: format!("must be at most {AMOUNT_MINOR_MAX}"),
        });
    }
    Ok(amount_minor)
}

/// `expires_in_seconds`, defaulted to the maximum.
fn validate_expiry(seconds: Option<i64>) -> Result<i64, ApiError> {
    match seconds {
        None => Ok(PAYMENT_EXPIRY_SECONDS_MAX),
        Some(s) if (PAYMENT_EXPIRY_SECONDS_MIN..=PAYMENT_EXPIRY_SECONDS_MAX).contains(&s) => Ok(s),
        Some(_) => Err(invalid(
            "expires_in_seconds",
            &format!(
                "must be an integer from {PAYMENT_EXPIRY_SECONDS_MIN} to \
                 {PAYMENT_EXPIRY_SECONDS_MAX} (seconds)"
            ),
        )),
    }
}

fn invalid(param: &str, reason: &str) -> ApiError {
    ApiError::ParameterInvalid {
        param: param.into(),
        reason: reason.into(),
    }
}

/// A merchant reference (order id, refund id): 1–64 of `A-Za-z0-9_.:-`.
pub fn validate_ref(value: &str, param: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
    if value.is_empty() || value.len() > MERCHANT_REF_LEN_MAX || !value.chars().all(ok_char) {
        return Err(invalid(
            param,
            "must be 1-64 characters of A-Z a-z 0-9 _ . : -",
        ));
    }
    Ok(())
}

fn opt_ref(value: Option<String>, param: &str) -> Result<Option<String>, ApiError> {
    value
        .map(|v| validate_ref(&v, param).map(|()| v))
        .transpose()
}

fn opt_text(value: Option<String>, param: &str, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > max => {
            Err(invalid(param, &format!("must be at most {max} characters")))
        }
        other => other.map(|v| shown_text(&v, param).map(|()| v)).transpose(),
    }
}

/// Text shown back to people (a payment's `description`, a refund's `reason`, a
/// merchant's `name`, all echoed to dashboards): no control characters
/// (`char::is_control`: NUL, newline, tab, …) and no bidirectional controls
/// ([`is_bidi_control`]). The one check for all of them.
fn shown_text(value: &str, param: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(invalid(param, "must not contain control characters"));
    }
    if value.chars().any(is_bidi_control) {
        return Err(invalid(
            param,
            "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069)",
        ));
    }
    Ok(())
}

/// The bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069):
/// invisible, they reorder how the text around them is displayed, so a name echoed to a
/// dashboard could read as something it is not ("Trojan Source", CVE-2021-42574).
/// Not `char::is_control` (they are format characters, not controls).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A merchant's `name`: [`shown_text`] over the whole value (so a trailing newline is
/// refused too, not trimmed away), then 1–[`MERCHANT_NAME_LEN_MAX`] characters once
/// surrounding whitespace is trimmed; the trimmed name is what is stored.
fn merchant_name(name: &str) -> Result<String, ApiError> {
    shown_text(name, "name")?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MERCHANT_NAME_LEN_MAX {
        return Err(invalid("name", "must be 1-100 characters"));
    }
    Ok(name.to_string())
}

fn token(value: Option<String>, param: &str) -> Result<String, ApiError> {
    let v = value.ok_or_else(|| ApiError::ParameterMissing {
        param: param.into(),
    })?;
    validate_token(&v, param)?;
    Ok(v)
}

/// Checks a payment token / auth code: 1-128 printable ASCII characters, no spaces.
pub fn validate_token(token: &str, param: &str) -> Result<(), ApiError> {
    let ok = !token.is_empty()
        && token.len() <= TOKEN_LEN_MAX
        && token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(invalid(param, "must be 1-128 printable ASCII characters"));
    }
    Ok(())
}

/// Checks an E.164 phone: `+` then 8–15 digits.
pub fn validate_phone(phone: &str, param: &str) -> Result<(), ApiError> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(invalid(param, "must be E.164: + and 8-15 digits"));
    }
    Ok(())
}

/// Checks an http(s) URL of bounded length without spaces.
pub fn validate_url(url: &str, param: &str) -> Result<(), ApiError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    // A real URI parse: a bracket that opens no IPv6 literal, a bad port or a stray
    // character is refused, not stored and later sent to.
    let parsed = http::Uri::try_from(url).ok();
    let host_ok = parsed
        .as_ref()
        .and_then(|u| u.host())
        .is_some_and(|h| !h.is_empty());
    let port_ok = parsed
        .as_ref()
        .and_then(|u| u.authority())
        .is_none_or(|a| authority_port_ok(a.as_str()));
    let ok = scheme_ok
        && url.len() <= URL_LEN_MAX
        && !rest.is_empty()
        && !rest.starts_with('/')
        && url.bytes().all(|b| b.is_ascii_graphic())
        && host_ok
        && port_ok;
    if !ok {
        return Err(invalid(
            param,
            "must be an http(s) URL of at most 2048 bytes",
        ));
    }
    Ok(())
}

/// A merchant's notify URL: [`validate_url`], with no user-info ([`has_user_info`]),
/// naming no host the app serves itself ([`names_the_app_itself`]).
pub fn validate_notify_url(url: &str, param: &str) -> Result<(), ApiError> {
    validate_url(url, param)?;
    if has_user_info(url) {
        return Err(invalid(
            param,
            "must not contain user-info (user:password@): it is never sent with a \
             delivery; verify the Spinpay-Signature header instead",
        ));
    }
    if names_the_app_itself(url) {
        return Err(invalid(
            param,
            "must not name the app itself (self, self.alt, *.spin.internal)",
        ));
    }
    Ok(())
}

/// Whether `url`'s authority has user-info (`user:password@host`, `user@host`, even an
/// empty `@host`). The outbound HTTP drops it from every delivery (it would otherwise go
/// out in the `Host` header), so a merchant relying on it for HTTP Basic auth would get
/// 401 on every attempt while the credential sat in the store and in `GET /v1/account`.
fn has_user_info(url: &str) -> bool {
    http::Uri::try_from(url)
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
        .unwrap_or(false)
}

/// Whether `url`'s host is one Spin serves inside the app rather than over the network:
/// `self`, `self.alt` or a component's `<id>.spin.internal` (any case, with or without a
/// trailing dot). A notification sent there would reach the app's own components,
/// past the runtime config's `block_networks`, which only judges network addresses.
pub fn names_the_app_itself(url: &str) -> bool {
    let Some(host) = http::Uri::try_from(url)
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    let host = host.trim_end_matches('.');
    host == "self"
        || host == "self.alt"
        || host == "spin.internal"
        || host.ends_with(".spin.internal")
}

/// A port in `authority`, if any, is a number from 1 to 65535 (`http` leaves an
/// out-of-range port unparsed rather than refusing it).
fn authority_port_ok(authority: &str) -> bool {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    match tail.rsplit_once(':') {
        None => true,
        Some((_, port)) => port.parse::<u16>().is_ok_and(|p| p > 0),
    }
}

/// Validates a method object for its `type`; fields of other types are unknown fields.
pub fn validate_method(m: MethodRequest) -> Result<PaymentMethod, ApiError> {
    let kind = MethodKind::parse(&m.method_type).ok_or(ApiError::MethodUnsupported {
        value: m.method_type.clone(),
    })?;
    let allowed: &[&str] = match kind {
        MethodKind::QrMerchant | MethodKind::App => &[],
        MethodKind::QrCustomer => &["auth_code"],
        MethodKind::Nfc => &["token", "cryptogram"],
        MethodKind::SoundWave => &["token"],
        MethodKind::H5 => &["return_url"],
        MethodKind::SmsOtp => &["phone"],
    };
    let present = [
        ("auth_code", m.auth_code.is_some()),
        ("token", m.token.is_some()),
        ("cryptogram", m.cryptogram.is_some()),
        ("return_url", m.return_url.is_some()),
        ("phone", m.phone.is_some()),
    ];
    if let Some((name, _)) = present.iter().find(|(n, p)| *p && !allowed.contains(n)) {
        return Err(ApiError::UnknownField {
            param: format!("method.{name}"),
        });
    }
    Ok(match kind {
        MethodKind::QrMerchant => PaymentMethod::QrMerchant,
        MethodKind::App => PaymentMethod::App,
        MethodKind::QrCustomer => PaymentMethod::QrCustomer {
            auth_code: token(m.auth_code, "method.auth_code")?,
        },
        MethodKind::Nfc => PaymentMethod::Nfc {
            token: token(m.token, "method.token")?,
            cryptogram: token(m.cryptogram, "method.cryptogram")?,
        },
        MethodKind::SoundWave => PaymentMethod::SoundWave {
            token: token(m.token, "method.token")?,
        },
        MethodKind::H5 => {
            let url = m.return_url.ok_or_else(|| ApiError::ParameterMissing {
                param: "method.return_url".into(),
            })?;
            validate_url(&url, "method.return_url")?;
            PaymentMethod::H5 { return_url: url }
        }
        MethodKind::SmsOtp => {
            let phone = m.phone.ok_or_else(|| ApiError::ParameterMissing {
                param: "method.phone".into(),
            })?;
            validate_phone(&phone, "method.phone")?;
            PaymentMethod::SmsOtp { phone }
        }
    })
}

/// Checks a payer id or device id: 1-128 printable ASCII characters, no spaces.
pub fn validate_payer_ref(value: &str, param: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > PAYER_REF_LEN_MAX {
        return Err(invalid(param, "must be 1-128 bytes"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(param, "must be printable ASCII"));
    }
    Ok(())
}

/// Validates a payer.
pub fn validate_payer(p: PayerRequest) -> Result<Payer, ApiError> {
    let short = |v: &Option<String>, param: &str| match v {
        Some(s) => validate_payer_ref(s, param),
        None => Ok(()),
    };
    short(&p.id, "payer.id")?;
    short(&p.device_id, "payer.device_id")?;
    if let Some(ip) = &p.ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| invalid("payer.ip", "must be an IPv4 or IPv6 address"))?;
    }
    if let Some(c) = &p.country
        && (c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid(
            "payer.country",
            "must be ISO 3166-1 alpha-2, e.g. CN",
        ));
    }
    if let Some(phone) = &p.phone {
        validate_phone(phone, "payer.phone")?;
    }
    Ok(Payer {
        id: p.id,
        device_id: p.device_id,
        ip: p.ip,
        country: p.country,
        phone: p.phone,
    })
}

/// Validates metadata: ≤ 20 pairs, keys 1–40 chars, values ≤ 500 chars.
pub fn validate_metadata(
    m: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    if m.len() > METADATA_PAIRS_MAX {
        return Err(invalid("metadata", "must have at most 20 pairs"));
    }
    for (k, v) in &m {
        if k.is_empty() || k.chars().count() > METADATA_KEY_LEN_MAX {
            return Err(invalid(
                &format!("metadata.{k}"),
                "keys must be 1-40 characters",
            ));
        }
        if v.chars().count() > METADATA_VALUE_LEN_MAX {
            return Err(invalid(
                &format!("metadata.{k}"),
                "values must be at most 500 characters",
            ));
        }
    }
    Ok(m)
}

/// `POST /v1/payments/{id}/capture`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Absent → the whole authorization.
    pub amount_minor: Option<i64>,
}

impl WireRequest for CaptureRequest {
    const SCHEMA: &'static [Field] = &[f("amount_minor", Kind::Integer, false)];
}

/// `POST /v1/payments/{id}/cancel` (empty object).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {}

impl WireRequest for CancelRequest {
    const SCHEMA: &'static [Field] = &[];
}

/// `POST /v1/payments/{id}/confirm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// Six digits.
    pub otp: String,
}

impl WireRequest for ConfirmRequest {
    const SCHEMA: &'static [Field] = &[f("otp", Kind::String, true)];
}

impl ConfirmRequest {
    /// Checks the OTP is six ASCII digits.
    pub fn validate(&self) -> Result<&str, ApiError> {
        let ok = self.otp.len() == OTP_DIGITS && self.otp.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(invalid("otp", "must be 6 digits"));
        }
        Ok(&self.otp)
    }
}

/// `POST /v1/payments/{id}/review` (issue 5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// `approve` | `decline`.
    pub decision: String,
}

impl WireRequest for ReviewRequest {
    const SCHEMA: &'static [Field] = &[f("decision", Kind::String, true)];
}

impl ReviewRequest {
    /// True for approve, false for decline.
    pub fn validate(&self) -> Result<bool, ApiError> {
        match self.decision.as_str() {
            "approve" => Ok(true),
            "decline" => Ok(false),
            _other => Err(invalid("decision", "must be approve or decline")),
        }
    }
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Absent → everything still refundable.
    pub amount_minor: Option<i64>,
    /// Merchant's reason.
    pub reason: Option<String>,
    /// Merchant's refund id (unique per merchant).
    pub merchant_refund_id: Option<String>,
}

impl WireRequest for RefundRequest {
    const SCHEMA: &'static [Field] = &[
        f("amount_minor", Kind::Integer, false),
        f("reason", Kind::String, false),
        f("merchant_refund_id", Kind::String, false),
    ];
}

/// A validated refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// Amount (None = the rest).
    pub amount_minor: Option<i64>,
    /// Reason.
    pub reason: Option<String>,
    /// Merchant refund id.
    pub merchant_refund_id: Option<String>,
}

impl RefundRequest {
    /// Validates.
    pub fn validate(self) -> Result<NewRefund, ApiError> {
        Ok(NewRefund {
            amount_minor: self
                .amount_minor
                .map(|a| validate_amount(a, "amount_minor"))
                .transpose()?,
            reason: opt_text(self.reason, "reason", DESCRIPTION_LEN_MAX)?,
            merchant_refund_id: opt_ref(self.merchant_refund_id, "merchant_refund_id")?,
        })
    }
}

/// `POST /v1/admin/merchants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchantRequest {
    /// Display name.
    pub name: String,
    /// Event delivery URL.
    pub notify_url: Option<String>,
    /// `automatic` (default) | `manual`.
    pub default_capture: Option<String>,
}

impl WireRequest for CreateMerchantRequest {
    const SCHEMA: &'static [Field] = &[
        f("name", Kind::String, true),
        f("notify_url", Kind::String, false),
        f("default_capture", Kind::String, false),
    ];
}

/// A validated merchant request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMerchant {
    /// Name.
    pub name: String,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// Default capture.
    pub default_capture: CaptureMode,
}

impl CreateMerchantRequest {
    /// Validates.
    pub fn validate(self) -> Result<NewMerchant, ApiError> {
        let name = merchant_name(&self.name)?;
        if let Some(url) = &self.notify_url {
            validate_notify_url(url, "notify_url")?;
        }
        let default_capture = match self.default_capture.as_deref() {
            None => CaptureMode::Automatic,
            Some(t) => parse_capture(t, "default_capture")?,
        };
        Ok(NewMerchant {
            name,
            notify_url: self.notify_url,
            default_capture,
        })
    }
}

/// Merchant settings update (`POST /v1/merchant`): every field optional; an empty
/// `notify_url` clears it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMerchantRequest {
    /// New name.
    pub name: Option<String>,
    /// New notify URL (`""` clears).
    pub notify_url: Option<String>,
    /// New default capture mode.
    pub default_capture: Option<String>,
}

impl WireRequest for UpdateMerchantRequest {
    const SCHEMA: &'static [Field] = &[
        f("name", Kind::String, false),
        f("notify_url", Kind::String, false),
        f("default_capture", Kind::String, false),
    ];
}

/// A validated settings update (`None` = unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerchantUpdate {
    /// New name.
    pub name: Option<String>,
    /// New notify URL (`Some(None)` clears).
    pub notify_url: Option<Option<String>>,
    /// New default capture.
    pub default_capture: Option<CaptureMode>,
}

impl UpdateMerchantRequest {
    /// Validates.
    pub fn validate(self) -> Result<MerchantUpdate, ApiError> {
        let name = self.name.as_deref().map(merchant_name).transpose()?;
        let notify_url = match self.notify_url {
            None => None,
            Some(u) if u.is_empty() => Some(None),
            Some(u) => {
                validate_notify_url(&u, "notify_url")?;
                Some(Some(u))
            }
        };
        let default_capture = self
            .default_capture
            .map(|t| parse_capture(&t, "default_capture"))
            .transpose()?;
        Ok(MerchantUpdate {
            name,
            notify_url,
            default_capture,
        })
    }
}

/// A merchant's settings as the API shows them (never the keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantResponse {
    /// `mch_…`.
    pub id: String,
    /// `"merchant"`.
    pub object: String,
    /// Name.
    pub name: String,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// Default capture mode.
    pub default_capture: CaptureMode,
    /// Created.
    pub created_at_ms: i64,
}

impl MerchantResponse {
    /// Builds from the stored merchant.
    pub fn new(m: &crate::model::Merchant) -> MerchantResponse {
        MerchantResponse {
            id: m.id.clone(),
            object: "merchant".into(),
            name: m.name.clone(),
            notify_url: m.notify_url.clone(),
            default_capture: m.default_capture,
            created_at_ms: m.created_at_ms,
        }
    }
}

/// `POST /v1/admin/merchants/{id}/credentials/reset`: the operator replaces a merchant's
/// secret key and webhook signing secret; `notify_url` may be set (or cleared with `""`)
/// in the same write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetCredentialsRequest {
    /// New notify URL (`""` clears; absent keeps it).
    pub notify_url: Option<String>,
}

impl WireRequest for ResetCredentialsRequest {
    const SCHEMA: &'static [Field] = &[f("notify_url", Kind::String, false)];
}

/// A validated credentials reset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialsReset {
    /// New notify URL (`None` = unchanged, `Some(None)` clears).
    pub notify_url: Option<Option<String>>,
}

impl ResetCredentialsRequest {
    /// Validates `notify_url` exactly as a settings update does.
    pub fn validate(self) -> Result<CredentialsReset, ApiError> {
        let update = UpdateMerchantRequest {
            name: None,
            notify_url: self.notify_url,
            default_capture: None,
        }
        .validate()?;
        Ok(CredentialsReset {
            notify_url: update.notify_url,
        })
    }
}

/// `POST /v1/risk/assessments`: a prospective payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAssessmentRequest {
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Channel (optional).
    pub channel: Option<String>,
    /// Method.
    pub method: MethodRequest,
    /// Payer.
    pub payer: Option<PayerRequest>,
}

impl WireRequest for RiskAssessmentRequest {
    const SCHEMA: &'static [Field] = &[
        f("amount_minor", Kind::Integer, true),
        f("currency", Kind::String, true),
        f("channel", Kind::String, false),
        f("method", Kind::Object(METHOD_SCHEMA), true),
        f("payer", Kind::Object(PAYER_SCHEMA), false),
    ];
}

impl RiskAssessmentRequest {
    /// Validates into the risk engine's input (a preview: no payment id).
    pub fn validate(self, merchant_id: &str) -> Result<crate::riskengine::RiskInput, ApiError> {
        let method = validate_method(self.method)?;
        if let Some(c) = &self.channel {
            Channel::parse(c).ok_or(ApiError::ChannelUnsupported { value: c.clone() })?;
        }
        let amount_minor = validate_amount(self.amount_minor, "amount_minor")?;
        let currency = parse_currency(&self.currency)?;
        let payer = self
            .payer
            .map(validate_payer)
            .transpose()?
            .unwrap_or_default();
        Ok(crate::riskengine::RiskInput::from_method(
            merchant_id,
            None,
            amount_minor,
            currency,
            &method,
            payer,
        ))
    }
}

/// The body of risk-check's internal endpoint (`POST /v1/risk/internal/assess`), sent by
/// authorize over service chaining: the engine's [`crate::riskengine::RiskInput`] without the
/// merchant, which risk-check takes from the forwarded bearer key instead, so a caller can
/// only ever be assessed against (and read) its own rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskInputWire {
    /// The payment being created (`pay_…`): the counters' event id.
    pub payment_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Method kind.
    pub method: MethodKind,
    /// Customer-presented token or auth code, if any.
    #[serde(default)]
    pub customer_token: Option<String>,
    /// The `sms_otp` method's phone, if any.
    #[serde(default)]
    pub phone: Option<String>,
    /// Payer.
    #[serde(default)]
    pub payer: Payer,
}

impl From<&crate::riskengine::RiskInput> for RiskInputWire {
    fn from(i: &crate::riskengine::RiskInput) -> Self {
        RiskInputWire {
            payment_id: i.payment_id.clone().unwrap_or_default(),
            amount_minor: i.amount_minor,
            currency: i.currency,
            method: i.method,
            customer_token: i.customer_token.clone(),
            phone: i.phone.clone(),
            payer: i.payer.clone(),
        }
    }
}

impl RiskInputWire {
    /// The engine's input for `merchant_id`; the amount is checked like everywhere else.
    pub fn into_input(self, merchant_id: &str) -> Result<crate::riskengine::RiskInput, ApiError> {
        if !crate::ids::is_valid_id(crate::ids::IdKind::Payment, &self.payment_id) {
            return Err(invalid("payment_id", "must be a payment id (pay_…)"));
        }
        Ok(crate::riskengine::RiskInput {
            merchant_id: merchant_id.to_string(),
            payment_id: Some(self.payment_id),
            amount_minor: validate_amount(self.amount_minor, "amount_minor")?,
            currency: self.currency,
            method: self.method,
            customer_token: self.customer_token,
            phone: self.phone,
            payer: self.payer,
        })
    }
}

/// How far behind the wall clock an admin sweep's `now_ms` may be (clock skew between
/// the scheduler and the app); earlier would re-run the past.
pub const NOW_MS_SKEW_MAX: i64 = 60_000;

/// The body of the scheduled admin calls (`POST /v1/admin/notifications/sweep`,
/// `POST /v1/admin/reconcile`): every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSweepBody {
    /// Most units of work (1..=the call's maximum).
    pub limit: Option<i64>,
    /// Only this merchant.
    pub merchant_id: Option<String>,
    /// The schedule clock (Unix ms); not earlier than now.
    pub now_ms: Option<i64>,
}

impl WireRequest for AdminSweepBody {
    const SCHEMA: &'static [Field] = &[
        Field {
            name: "limit",
            kind: Kind::Integer,
            required: false,
        },
        Field {
            name: "merchant_id",
            kind: Kind::String,
            required: false,
        },
        Field {
            name: "now_ms",
            kind: Kind::Integer,
            required: false,
        },
    ];
}

/// An [`AdminSweepBody`] checked against the wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSweep {
    /// Most units of work, when given.
    pub limit: Option<u32>,
    /// Only this merchant (a well-formed id; whether it exists is the core's to say).
    pub merchant_id: Option<String>,
    /// The schedule clock: `now_ms`, or the wall clock.
    pub now_ms: i64,
}

impl AdminSweepBody {
    /// Checks each field (`limit` within `1..=limit_max`) given the wall clock `wall_ms`.
    pub fn validate(self, wall_ms: i64, limit_max: u32) -> Result<AdminSweep, ApiError> {
        let invalid = |param: &str, reason: String| ApiError::ParameterInvalid {
            param: param.into(),
            reason,
        };
        let limit = match self.limit.map(u32::try_from) {
            None => None,
            Some(Ok(n)) if (1..=limit_max).contains(&n) => Some(n),
            Some(_) => return Err(invalid("limit", format!("must be 1..={limit_max}"))),
        };
        if let Some(mid) = &self.merchant_id
            && !crate::ids::is_valid_id(crate::ids::IdKind::Merchant, mid)
        {
            return Err(invalid(
                "merchant_id",
                "must be a merchant id (mch_…)".into(),
            ));
        }
        let now_ms = match self.now_ms {
            None => wall_ms,
            Some(t) if t >= wall_ms.saturating_sub(NOW_MS_SKEW_MAX) => t.max(wall_ms),
            Some(_) => {
                return Err(invalid(
                    "now_ms",
                    "must not be earlier than the current time".into(),
                ));
            }
        };
        Ok(AdminSweep {
            limit,
            merchant_id: self.merchant_id,
            now_ms,
        })
    }
}

/// Query parameters of the list endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListParams {
    /// 1..=100.
    pub limit: u32,
    /// Object id to continue after.
    pub starting_after: Option<String>,
    /// Lookup by merchant order id (payments only), as sent: see
    /// [`ListParams::order_lookup`].
    pub merchant_order_id: Option<String>,
}

impl ListParams {
    /// Parses a query string (`limit=10&starting_after=pay_…`, names and values
    /// percent-decoded); unknown names are errors. `merchant_order_id` is checked by the
    /// one list that takes it ([`ListParams::order_lookup`]): the others refuse it as
    /// unknown whatever its value.
    pub fn parse(query: &str) -> Result<ListParams, ApiError> {
        let mut p = ListParams {
            limit: PAGE_SIZE_DEFAULT,
            ..ListParams::default()
        };
        let mut seen: Vec<String> = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (raw_name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name)
                .ok_or_else(|| invalid(raw_name, "bad percent-encoding"))?;
            let value =
                percent_decode(raw).ok_or_else(|| invalid(&name, "bad percent-encoding"))?;
            if seen.contains(&name) {
                return Err(invalid(&name, "given more than once"));
            }
            match name.as_str() {
                "limit" => {
                    p.limit = Some(value.as_str())
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u32>().ok())
                        .filter(|l| (1..=PAGE_SIZE_MAX).contains(l))
                        .ok_or_else(|| invalid("limit", "must be an integer 1-100"))?;
                }
                "starting_after" => p.starting_after = Some(value),
                "merchant_order_id" => p.merchant_order_id = Some(value),
                _ => return Err(ApiError::UnknownField { param: name }),
            }
            seen.push(name);
        }
        Ok(p)
    }

    /// The merchant order id to look up (`GET /v1/payments?merchant_order_id=`), checked;
    /// a lookup answers one payment or none, so a cursor with it is refused.
    pub fn order_lookup(&self) -> Result<Option<&str>, ApiError> {
        let Some(order_id) = self.merchant_order_id.as_deref() else {
            return Ok(None);
        };
        validate_ref(order_id, "merchant_order_id")?;
        if self.starting_after.is_some() {
            return Err(invalid(
                "starting_after",
                "cannot be combined with merchant_order_id",
            ));
        }
        Ok(Some(order_id))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The risk part of a payment response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskView {
    /// Decision.
    pub decision: RiskDecision,
    /// Score.
    pub score: i64,
    /// Rules fired.
    pub rules: Vec<RuleHit>,
    /// Config version that decided.
    pub rules_version: u64,
}

impl From<&RiskAssessment> for RiskView {
    fn from(r: &RiskAssessment) -> Self {
        RiskView {
            decision: r.decision,
            score: r.score,
            rules: r.rules.clone(),
            rules_version: r.rules_version,
        }
    }
}

/// A payment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResponse {
    /// `pay_…`.
    pub id: String,
    /// `"payment"`.
    pub object: String,
    /// Status.
    pub status: PaymentStatus,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Authorized.
    pub authorized_minor: i64,
    /// Captured.
    pub captured_minor: i64,
    /// Refunded (settled).
    pub refunded_minor: i64,
    /// Channel.
    pub channel: Channel,
    /// Capture mode.
    pub capture: CaptureMode,
    /// Order id.
    pub merchant_order_id: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Method, masked.
    pub method: PaymentMethod,
    /// Next action.
    pub next_action: Option<NextAction>,
    /// Risk.
    pub risk: Option<RiskView>,
    /// Failure.
    pub failure: Option<Failure>,
    /// Conflict flag (null unless a notification contradicted the payment).
    pub conflict: Option<Conflict>,
    /// Refunds, oldest first.
    pub refunds: Vec<RefundResponse>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Created.
    pub created_at_ms: i64,
    /// Updated.
    pub updated_at_ms: i64,
    /// When the customer can no longer pay (the channel refuses; reconciliation cancels
    /// a payment still unpaid then).
    pub expires_at_ms: i64,
    /// Why it was canceled (null unless `canceled`).
    pub cancellation_reason: Option<CancellationReason>,
    /// Version (+1 per change).
    pub version: u64,
}

impl PaymentResponse {
    /// Builds the response from the stored payment and its refunds.
    pub fn new(p: &Payment, refunds: &[Refund]) -> PaymentResponse {
        PaymentResponse {
            id: p.id.clone(),
            object: "payment".into(),
            status: p.state.status,
            amount_minor: p.state.amount_minor,
            currency: p.currency,
            authorized_minor: p.state.authorized_minor,
            captured_minor: p.state.captured_minor,
            refunded_minor: p.state.refunded_minor,
            channel: p.channel,
            capture: p.capture,
            merchant_order_id: p.merchant_order_id.clone(),
            description: p.description.clone(),
            method: p.method.masked(),
            next_action: p.next_action.clone(),
            risk: p.risk.as_ref().map(RiskView::from),
            failure: p.failure.clone(),
            conflict: p.conflict.clone(),
            refunds: refunds.iter().map(RefundResponse::new).collect(),
            metadata: p.metadata.clone(),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
            expires_at_ms: p.expires_at_ms(),
            cancellation_reason: p.cancellation_reason,
            version: p.state.version,
        }
    }
}

/// A refund as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResponse {
    /// `re_…`.
    pub id: String,
    /// `"refund"`.
    pub object: String,
    /// The payment.
    pub payment_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Status.
    pub status: RefundStatus,
    /// Reason.
    pub reason: Option<String>,
    /// Merchant refund id.
    pub merchant_refund_id: Option<String>,
    /// Failure.
    pub failure: Option<Failure>,
    /// Created.
    pub created_at_ms: i64,
    /// Updated.
    pub updated_at_ms: i64,
}

impl RefundResponse {
    /// Builds from the stored refund.
    pub fn new(r: &Refund) -> RefundResponse {
        RefundResponse {
            id: r.id.clone(),
            object: "refund".into(),
            payment_id: r.payment_id.clone(),
            amount_minor: r.amount_minor,
            currency: r.currency,
            status: r.state.status,
            reason: r.reason.clone(),
            merchant_refund_id: r.merchant_refund_id.clone(),
            failure: r.failure.clone(),
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// `{"object":"list","data":[…],"has_more":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse<T> {
    /// `"list"`.
    pub object: String,
    /// Items, newest first.
    pub data: Vec<T>,
    /// More items after the last one.
    pub has_more: bool,
}

impl<T> ListResponse<T> {
    /// Builds a list.
    pub fn new(data: Vec<T>, has_more: bool) -> ListResponse<T> {
        ListResponse {
            object: "list".into(),
            data,
            has_more,
        }
    }
}

/// The answer to merchant creation: the secret key is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCreatedResponse {
    /// `mch_…`.
    pub id: String,
    /// `"merchant"`.
    pub object: String,
    /// Name.
    pub name: String,
    /// `sk_…` (only here, only once).
    pub secret_key: String,
    /// `whsec_…`.
    pub webhook_secret: String,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// Default capture mode.
    pub default_capture: CaptureMode,
    /// Created.
    pub created_at_ms: i64,
}

/// The answer to a credentials reset: the new secret key and webhook signing secret, shown
/// this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCredentialsResponse {
    /// `"merchant_credentials"`.
    pub object: String,
    /// `mch_…`.
    pub merchant_id: String,
    /// The new `sk_…` (only here, only once); every earlier key is refused.
    pub secret_key: String,
    /// The new `whsec_…`; no earlier secret signs any more.
    pub webhook_secret: String,
    /// The notify URL after the reset.
    pub notify_url: Option<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_key_named_twice_in_one_object_is_refused_and_everything_else_parses_as_json() {
        // Proves a duplicate key, at the top or nested in an object inside an array, is
        // json_invalid naming the key (never last-wins), and that bodies without one parse
        // to the same value serde_json gives (numbers, floats, escapes, nesting, null).
        use super::{Unique, Value};
        let parse = |b: &str| serde_json::from_str::<Unique>(b).map(|u| u.0);
        for dup in [
            r#"{"amount_minor":100,"amount_minor":200}"#,
            r#"{"method":{"type":"nfc","type":"app"}}"#,
            r#"{"metadata":[{"a":"b","a":"c"}]}"#,
            r#"{"a\u0062":1,"ab":2}"#,
        ] {
            let e = parse(dup).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{dup}: {e}");
        }
        for ok in [
            r#"{"a":1,"b":-2,"c":18446744073709551615,"d":1.5e3,"e":"x\n\u00e9","f":null}"#,
            r#"[{"a":[true,false,[]]},{"a":{}},"s",0]"#,
            r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
            "7",
        ] {
            let want: Value = serde_json::from_str(ok).unwrap();
            assert_eq!(parse(ok).unwrap(), want, "{ok}");
        }
        let e = super::parse_body::<super::AdminSweepBody>(br#"{"limit":1,"limit":2}"#, 1024);
        assert_eq!(e.unwrap_err().code(), "json_invalid");
    }

    #[test]
    fn admin_sweep_bodies_are_checked_field_by_field() {
        // Proves defaults, each bound naming its field, and unknown fields refused.
        use super::{AdminSweepBody, parse_body};
        let parse = |b: &str| parse_body::<AdminSweepBody>(b.as_bytes(), 1024);
        let sweep = parse("").unwrap().validate(5_000, 100).unwrap();
        assert_eq!(
            (sweep.limit, sweep.merchant_id, sweep.now_ms),
            (None, None, 5_000)
        );
        let later = parse(r#"{"now_ms": 9000, "limit": 7}"#).unwrap();
        let later = later.validate(5_000, 100).unwrap();
        assert_eq!((later.limit, later.now_ms), (Some(7), 9_000));
        let param = |b: &str| {
            let e = match parse(b) {
                Ok(body) => body.validate(100_000, 100).unwrap_err(),
                Err(e) => e,
            };
            e.param().map(str::to_string)
        };
        assert_eq!(param(r#"{"limit": 0}"#).as_deref(), Some("limit"));
        assert_eq!(param(r#"{"limit": 101}"#).as_deref(), Some("limit"));
        assert_eq!(param(r#"{"limit": -1}"#).as_deref(), Some("limit"));
        assert_eq!(param(r#"{"limit": "5"}"#).as_deref(), Some("limit"));
        assert_eq!(
            param(r#"{"merchant_id": "x"}"#).as_deref(),
            Some("merchant_id")
        );
        assert_eq!(param(r#"{"now_ms": 1}"#).as_deref(), Some("now_ms"));
        assert_eq!(param(r#"{"nope": 1}"#).as_deref(), Some("nope"));
    }

    #[test]
    fn urls_must_parse_with_a_host_and_a_real_port() {
        // Proves well-formed http(s) URLs (names, IPv4, IPv6 literals, ports, paths)
        // pass and broken authorities are refused naming the field.
        for ok in [
            "https://merchant.example/notify",
            "http://127.0.0.1:8080/hook?x=1",
            "https://[::1]:8443/a",
        ] {
            assert_eq!(validate_url(ok, "notify_url"), Ok(()), "{ok}");
        }
        for bad in [
            "http://[",
            "https://[::1/x",
            "https://host:0/",
            "https://host:99999/",
            "https://:80/",
            "https://exa mple.com/",
            "ftp://example.com/",
            "https://",
        ] {
            let e = validate_url(bad, "notify_url").expect_err(bad);
            assert_eq!(e.param(), Some("notify_url"), "{bad}");
        }
    }

    #[test]
    fn a_notify_url_may_not_name_the_app_itself() {
        // Proves the names Spin serves in-process (self, self.alt, <id>.spin.internal: past
        // block_networks) are refused as notify URLs in any case or with a trailing dot,
        // naming the field, while look-alike network names pass.
        for bad in [
            "https://self/v1/account",
            "http://SELF:6379/",
            "https://self.alt/x",
            "https://admin.spin.internal/v1/admin/merchants",
            "https://Query.Spin.Internal./v1/payments",
            "http://spin.internal/",
        ] {
            let e = validate_notify_url(bad, "notify_url").expect_err(bad);
            assert_eq!(e.param(), Some("notify_url"), "{bad}");
            assert_eq!(e.code(), "parameter_invalid", "{bad}");
        }
        for ok in [
            "https://merchant.example/notify",
            "https://self.merchant.example/n",
            "https://spin.internal.example/n",
            "http://127.0.0.1:8080/hook",
        ] {
            assert_eq!(validate_notify_url(ok, "notify_url"), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_notify_url_with_user_info_is_refused_on_create_and_update() {
        // Proves user-info (user:password@, user@, even an empty @) is refused as
        // parameter_invalid naming notify_url and saying why, through both the create
        // and the settings update, while an @ in the path or query is no user-info.
        let parse_create = |url: &str| {
            let body = serde_json::json!({"name": "A", "notify_url": url}).to_string();
            parse_body::<CreateMerchantRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        let parse_update = |url: &str| {
            let body = serde_json::json!({"notify_url": url}).to_string();
            parse_body::<UpdateMerchantRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        for bad in [
            "https://user:pw@merchant.example/notify",
            "https://user@merchant.example/",
            "http://user:s3cret@127.0.0.1:3823/b3",
            "https://@merchant.example/n",
            "https://u:p@[::1]:8443/a",
        ] {
            for e in [
                validate_notify_url(bad, "notify_url").expect_err(bad),
                parse_create(bad).expect_err(bad),
                parse_update(bad).expect_err(bad),
            ] {
                assert_eq!(
                    (e.code(), e.param()),
                    ("parameter_invalid", Some("notify_url")),
                    "{bad}"
                );
                let message = e.message();
                assert!(message.contains("user-info"), "{bad}: {message}");
                assert!(message.contains("Spinpay-Signature"), "{bad}: {message}");
            }
        }
        for ok in [
            "https://merchant.example/notify?by=a@b",
            "https://merchant.example/a@b/notify",
        ] {
            assert_eq!(validate_notify_url(ok, "notify_url"), Ok(()), "{ok}");
            assert!(parse_create(ok).is_ok(), "{ok}");
            assert!(parse_update(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_merchant_name_with_control_or_bidi_characters_is_refused_on_create_and_update() {
        // Proves a name holding NUL, a newline (inside or at the end), a tab, DEL, C1 or
        // a bidi embedding, override or isolate (U+202A-U+202E, U+2066-U+2069) is refused
        // as parameter_invalid naming name, on create and on update, while other
        // non-ASCII names pass, trimmed.
        let parse_create = |name: &str| {
            let body = serde_json::json!({ "name": name }).to_string();
            parse_body::<CreateMerchantRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        let parse_update = |name: &str| {
            let body = serde_json::json!({ "name": name }).to_string();
            parse_body::<UpdateMerchantRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        for bad in [
            "A\u{0}\u{202E}evil\nline",
            "Corner\u{0}Coffee",
            "Corner Coffee\n",
            "Corner\tCoffee",
            "Corner\u{7F}Coffee",
            "Corner\u{85}Coffee",
            "\u{202A}Corner",
            "Corner\u{202D}",
            "Corner\u{2066}Coffee\u{2069}",
            "Corner\u{2068}",
        ] {
            for e in [
                parse_create(bad).expect_err(bad),
                parse_update(bad).expect_err(bad),
            ] {
                assert_eq!(
                    (e.code(), e.param()),
                    ("parameter_invalid", Some("name")),
                    "{bad:?}"
                );
            }
        }
        for (ok, stored) in [
            ("  Corner Coffee ", "Corner Coffee"),
            ("Café Zürich", "Café Zürich"),
            (
                "\u{05E7}\u{05E4}\u{05D4} \u{200F}42",
                "\u{05E7}\u{05E4}\u{05D4} \u{200F}42",
            ),
            ("咖啡店", "咖啡店"),
        ] {
            assert_eq!(parse_create(ok).unwrap().name, stored, "{ok:?}");
            assert_eq!(parse_update(ok).unwrap().name.as_deref(), Some(stored));
        }
        for empty in ["", "   "] {
            assert_eq!(parse_create(empty).unwrap_err().param(), Some("name"));
            assert_eq!(parse_update(empty).unwrap_err().param(), Some("name"));
        }
    }

    #[test]
    fn descriptions_and_reasons_refuse_bidi_controls_as_well_as_control_characters() {
        // Proves the one text check behind description and reason refuses a bidi
        // override or isolate as it refuses a control character, naming the field, and
        // keeps accepting ordinary text up to the length limit.
        let payment = |description: &str| {
            let mut body: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            body["description"] = description.into();
            create(&body.to_string())
        };
        let refund = |reason: &str| {
            let body = serde_json::json!({ "reason": reason }).to_string();
            parse_body::<RefundRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        for bad in ["a\u{0}b", "line\nbreak", "pay \u{202E}001$", "x\u{2067}y"] {
            let e = payment(bad).expect_err(bad);
            assert_eq!(e.param(), Some("description"), "{bad:?}");
            assert_eq!(e.code(), "parameter_invalid");
            let e = refund(bad).expect_err(bad);
            assert_eq!(e.param(), Some("reason"), "{bad:?}");
        }
        let bidi = payment("a\u{202B}b").unwrap_err().message();
        assert!(bidi.contains("bidirectional"), "{bidi}");
        for ok in [
            "Latte x2 \u{2014} table 7",
            &"é".repeat(DESCRIPTION_LEN_MAX),
        ] {
            assert!(payment(ok).is_ok(), "{ok:?}");
            assert!(refund(ok).is_ok(), "{ok:?}");
        }
        let long = "a".repeat(DESCRIPTION_LEN_MAX + 1);
        assert_eq!(payment(&long).unwrap_err().param(), Some("description"));
    }

    use super::*;

    fn create(body: &str) -> Result<NewPayment, ApiError> {
        parse_body::<CreatePaymentRequest>(body.as_bytes(), BODY_BYTES_MAX)?
            .validate(CaptureMode::Automatic)
    }

    const GOOD: &str = r#"{"amount_minor":1250,"currency":"CNY","channel":"sandbox",
        "merchant_order_id":"ORD-1001","method":{"type":"qr_merchant"},
        "payer":{"id":"u-42","ip":"203.0.113.7","country":"CN"},"metadata":{"table":"7"}}"#;

    #[test]
    fn the_design_example_request_is_accepted() {
        // Proves DESIGN.md's create-payment example validates into the expected domain value.
        let p = create(GOOD).unwrap();
        assert_eq!(p.amount_minor, 1250);
        assert_eq!(p.currency, Currency::Cny);
        assert_eq!(p.method, PaymentMethod::QrMerchant);
        assert_eq!(p.capture, CaptureMode::Automatic);
    }

    #[test]
    fn each_malformed_input_class_gets_its_precise_code_and_param() {
        // Proves bad JSON, unknown fields, wrong types, bad amounts, currency and method codes.
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("{", "json_invalid", None),
            ("[1]", "json_invalid", None),
            (
                &GOOD.replace("\"table\"", "\"t\":\"1\",\"table\""),
                "",
                None,
            ),
            (
                &GOOD.replace("1250", "-5"),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("1250", "0"),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("1250", "12.5"),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("1250", "99999999999999999999"),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("1250", "\"1250\""),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("1250", "1000000000001"),
                "amount_invalid",
                Some("amount_minor"),
            ),
            (
                &GOOD.replace("CNY", "XYZ"),
                "currency_unsupported",
                Some("currency"),
            ),
            (
                &GOOD.replace("qr_merchant", "cash"),
                "method_unsupported",
                Some("method.type"),
            ),
            (
                &GOOD.replace("sandbox", "paypal"),
                "channel_unsupported",
                Some("channel"),
            ),
            (
                &GOOD.replace("\"channel\"", "\"chanel\""),
                "unknown_field",
                Some("chanel"),
            ),
            (
                &GOOD.replace("\"country\"", "\"nation\""),
                "unknown_field",
                Some("payer.nation"),
            ),
            (
                &GOOD.replace("\"currency\":\"CNY\",", ""),
                "parameter_missing",
                Some("currency"),
            ),
            (
                &GOOD.replace("203.0.113.7", "300.1.1.1"),
                "parameter_invalid",
                Some("payer.ip"),
            ),
            (
                &GOOD.replace("\"7\"", "7"),
                "parameter_invalid",
                Some("metadata.table"),
            ),
            (
                &GOOD.replace("ORD-1001", "ORD 1001"),
                "parameter_invalid",
                Some("merchant_order_id"),
            ),
        ];
        for (body, code, param) in cases {
            match create(body) {
                Ok(_) if code.is_empty() => {}
                Ok(p) => panic!("{body} accepted: {p:?}"),
                Err(e) => {
                    assert_eq!(e.code(), *code, "{body}: {e}");
                    if param.is_some() {
                        assert_eq!(e.param(), *param, "{body}");
                    }
                    assert!(e.status() >= 400 && e.status() < 500);
                }
            }
        }
    }

    #[test]
    fn the_expiry_defaults_to_a_day_and_is_bounded_naming_its_field() {
        // Proves an absent expires_in_seconds gives the maximum (the reconciliation
        // horizon), both bounds are accepted, and anything outside them or not an
        // integer is refused as parameter_invalid naming the field.
        assert_eq!(create(GOOD).unwrap().expires_in_ms, 86_400_000);
        let with = |v: &str| {
            let field = format!("\"expires_in_seconds\":{v},\"metadata\"");
            create(&GOOD.replace("\"metadata\"", &field))
        };
        assert_eq!(with("60").unwrap().expires_in_ms, 60_000);
        assert_eq!(with("86400").unwrap().expires_in_ms, 86_400_000);
        assert_eq!(with("900").unwrap().expires_in_ms, 900_000);
        // As for every optional field, null is the same as absent.
        assert_eq!(with("null").unwrap().expires_in_ms, 86_400_000);
        for bad in [
            "59",
            "0",
            "-60",
            "86401",
            "9223372036854775807",
            "90.5",
            "\"900\"",
        ] {
            let e = with(bad).expect_err(bad);
            assert_eq!(
                (e.code(), e.param()),
                ("parameter_invalid", Some("expires_in_seconds")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn fields_of_another_method_type_are_unknown_fields() {
        // Proves a token on qr_merchant is rejected naming method.token, and required ones too.
        let body = GOOD.replace(
            r#"{"type":"qr_merchant"}"#,
            r#"{"type":"qr_merchant","token":"x"}"#,
        );
        assert_eq!(create(&body).unwrap_err().param(), Some("method.token"));
        let body = GOOD.replace(r#"{"type":"qr_merchant"}"#, r#"{"type":"nfc","token":"t"}"#);
        assert_eq!(
            create(&body).unwrap_err().param(),
            Some("method.cryptogram")
        );
        let body = GOOD.replace(
            r#"{"type":"qr_merchant"}"#,
            r#"{"type":"sms_otp","phone":"12"}"#,
        );
        assert_eq!(create(&body).unwrap_err().param(), Some("method.phone"));
    }

    #[test]
    fn oversize_bodies_are_rejected_before_parsing() {
        // Proves the byte limit is checked first, with body_too_large and status 413.
        let big = vec![b' '; BODY_BYTES_MAX as usize + 1];
        let e = parse_body::<CancelRequest>(&big, BODY_BYTES_MAX).unwrap_err();
        assert_eq!((e.code(), e.status()), ("body_too_large", 413));
    }

    #[test]
    fn more_than_twenty_metadata_pairs_are_rejected() {
        // Proves the metadata pair limit.
        let pairs: Vec<String> = (0..21).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let body = GOOD.replace(r#""table":"7""#, &pairs.join(","));
        assert_eq!(create(&body).unwrap_err().param(), Some("metadata"));
    }

    #[test]
    fn list_params_enforce_the_page_size_limit() {
        // Proves limit must be 1..=100, unknown query names are refused, cursors decode.
        assert_eq!(ListParams::parse("").unwrap().limit, PAGE_SIZE_DEFAULT);
        assert!(ListParams::parse("limit=101").is_err());
        assert!(ListParams::parse("limit=0").is_err());
        assert!(ListParams::parse("sort=asc").is_err());
        let p = ListParams::parse("limit=100&starting_after=pay_x%41").unwrap();
        assert_eq!(
            (p.limit, p.starting_after.as_deref()),
            (100, Some("pay_xA"))
        );
        // Names are decoded like values; a limit is digits only.
        assert_eq!(ListParams::parse("lim%69t=5").unwrap().limit, 5);
        for bad in ["limit=%2B5", "limit=+5", "limit=5.0", "limit=", "limit=-1"] {
            let e = ListParams::parse(bad).unwrap_err();
            assert_eq!(e.param(), Some("limit"), "{bad}");
        }
        let e = ListParams::parse("limit=5&lim%69t=6").unwrap_err();
        assert_eq!((e.code(), e.param()), ("parameter_invalid", Some("limit")));
        // The order id is checked by the lookup, which takes no cursor.
        let any = ListParams::parse("merchant_order_id=%20bad%01").unwrap();
        assert_eq!(
            any.order_lookup().unwrap_err().param(),
            Some("merchant_order_id")
        );
        let both = ListParams::parse("merchant_order_id=ORD-1&starting_after=pay_x").unwrap();
        assert_eq!(
            both.order_lookup().unwrap_err().param(),
            Some("starting_after")
        );
        let one = ListParams::parse("merchant_order_id=ORD-1&limit=5").unwrap();
        assert_eq!(one.order_lookup(), Ok(Some("ORD-1")));
        assert_eq!(
            ListParams::parse("limit=5").unwrap().order_lookup(),
            Ok(None)
        );
    }

    #[test]
    fn risk_input_round_trips_through_the_internal_wire_shape_without_the_merchant() {
        // Proves the internal risk body carries every RiskInput field but the merchant,
        // which the receiver supplies from the bearer key.
        let input = crate::riskengine::RiskInput {
            merchant_id: "mch_x".into(),
            payment_id: Some(crate::ids::make_id(crate::ids::IdKind::Payment, &[7; 16])),
            amount_minor: 1250,
            currency: Currency::Cny,
            method: MethodKind::QrCustomer,
            customer_token: Some("283000000000000001".into()),
            phone: None,
            payer: Payer {
                device_id: Some("d-9".into()),
                ..Payer::default()
            },
        };
        let json = serde_json::to_value(RiskInputWire::from(&input)).unwrap();
        assert!(json.get("merchant_id").is_none());
        assert_eq!(
            (json["method"].as_str(), json["currency"].as_str()),
            (Some("qr_customer"), Some("CNY"))
        );
        let back: RiskInputWire = serde_json::from_value(json).unwrap();
        assert_eq!(back.into_input("mch_x").unwrap(), input);
    }

    #[test]
    fn an_internal_risk_body_with_a_bad_amount_or_a_merchant_is_refused() {
        // Proves amounts are validated like the public API and unknown fields are refused.
        let pay = crate::ids::make_id(crate::ids::IdKind::Payment, &[7; 16]);
        let body =
            format!(r#"{{"payment_id":"{pay}","amount_minor":0,"currency":"CNY","method":"nfc"}}"#);
        let w: RiskInputWire = serde_json::from_str(&body).unwrap();
        assert_eq!(w.into_input("mch_x").unwrap_err().code(), "amount_invalid");
        let body = r#"{"payment_id":"x","amount_minor":1,"currency":"CNY","method":"nfc"}"#;
        let w: RiskInputWire = serde_json::from_str(body).unwrap();
        assert_eq!(
            w.into_input("mch_x").unwrap_err().param(),
            Some("payment_id")
        );
        let extra = r#"{"amount_minor":1,"currency":"CNY","method":"nfc","merchant_id":"m"}"#;
        assert!(serde_json::from_str::<RiskInputWire>(extra).is_err());
    }

    #[test]
    fn empty_bodies_parse_as_empty_objects() {
        // Proves `cancel` with no body is accepted while required fields still fail.
        assert!(parse_body::<CancelRequest>(b"", BODY_BYTES_MAX).is_ok());
        let e = parse_body::<ConfirmRequest>(b"", BODY_BYTES_MAX).unwrap_err();
        assert_eq!(e.param(), Some("otp"));
    }
}
