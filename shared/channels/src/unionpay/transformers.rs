//! Pure UnionPay ACP 5.1.0 transformers: signed requests, verified answers and
//! back-notifications, the code mapping ([`classify_code`]). The RNG (RSA blinding)
//! comes from the caller; times come from the objects themselves.
//!
//! Two wire formats come back from UnionPay. A back-notification is a form POST
//! (percent-encoded, decoded with `form_decode`). A synchronous answer is a raw
//! `k=v&k=v` string ([`answer_decode`]): base64 values keep their `+`, `/` and `=`,
//! text is raw UTF-8, and `{…}` / `[…]` values may hold `&` and `=`. Decoding an answer
//! as a form turns every `+` into a space, and no real answer verifies.

use rsa::rand_core::CryptoRngCore;
use spinpay_core::model::{CaptureMode, Channel, NextAction, Payment, PaymentMethod, Refund};
use spinpay_core::money::Currency;
use spinpay_core::service::{
    ActionOutcome, ChannelOutcome, ChannelReport, PaymentNotification, RefundNotification,
    RefundOutcome,
};
use spinpay_guest::outbound::OutboundResponse;

use super::{NotificationRejected, RequestError, UnionpayConfig, VerifyingKey};
use crate::crypto::{
    BeijingTime, FORM_FIELDS_MAX, canonical_pairs, canonical_pairs_with_empty, form_body,
    form_decode, form_get, replay_key, sha256_hex, verification_strings,
};
use crate::wiring::EXPIRY_MARGIN_MS;

/// Longest answer or notification body accepted, bytes.
pub const MESSAGE_BYTES_MAX: usize = 32 * 1024;
/// The only currency sent: UnionPay's ACP demos fix a domestic merchant's
/// `currencyCode` at 156 ("境内商户固定156") with `txnAmt` in fen, so any other
/// currency's minor units would be read as fen of CNY, or refused after the payment
/// was stored. Payments in others are refused up front ([`super::client::preflight`]).
pub const CURRENCY: Currency = Currency::Cny;
/// Back-end transactions (consume, refund).
pub const PATH_BACK: &str = "/gateway/api/backTransReq.do";
/// App transactions (answer `tn`).
pub const PATH_APP: &str = "/gateway/api/appTransReq.do";
/// Queries.
pub const PATH_QUERY: &str = "/gateway/api/queryTrans.do";

/// A signed request: POST [`UnionpayRequest::form_body`] to `gateway_url + path` as
/// `application/x-www-form-urlencoded; charset=UTF-8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionpayRequest {
    /// Path under the gateway.
    pub path: &'static str,
    /// Every field, `signature` last.
    pub fields: Vec<(String, String)>,
}

impl UnionpayRequest {
    /// The form body.
    pub fn form_body(&self) -> String {
        form_body(&self.fields)
    }
}

/// Which product an authorize call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Merchant-presented QR (answer `qrCode`).
    QrApply,
    /// Customer-presented code (`qrNo`); result by notification or query.
    QrConsume,
    /// App (answer `tn`).
    App,
}

/// Our object id as a UnionPay `orderId` (letters and digits only).
pub fn order_id(our_id: &str) -> String {
    our_id.replace('_', "")
}

/// The inverse of [`order_id`] for payment (`pay…`) and refund (`re…`) ids.
pub fn our_id(order_id: &str) -> Option<String> {
    if !order_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if let Some(rest) = order_id.strip_prefix("pay") {
        return Some(format!("pay_{rest}"));
    }
    order_id.strip_prefix("re").map(|rest| format!("re_{rest}"))
}

/// ISO 4217 numeric code (`currencyCode`).
pub fn currency_numeric(c: Currency) -> &'static str {
    match c {
        Currency::Cny => "156",
        Currency::Hkd => "344",
        Currency::Usd => "840",
        Currency::Eur => "978",
        Currency::Jpy => "392",
        Currency::Kwd => "414",
        Currency::Gbp => "826",
        Currency::Sgd => "702",
    }
}

/// The currency of an ISO 4217 numeric code.
pub fn currency_from_numeric(code: &str) -> Option<Currency> {
    Currency::ALL
        .into_iter()
        .find(|c| currency_numeric(*c) == code)
}

/// The string we hash then sign for a request: sorted non-empty fields but `signature`
/// (the SDK drops blank fields before signing, `filterBlank`; we never send them).
pub fn signing_string(fields: &[(String, String)]) -> String {
    canonical_pairs(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["signature"],
    )
}

/// The string UnionPay's signature covers: every field but `signature`, empty values
/// included (`k=`), byte-sorted. This is what the ACP SDKs verify (Java
/// `coverMap2String`, PHP `createLinkString`): a field UnionPay sends empty is signed
/// as `k=`, so dropping it would refuse a genuine message.
pub fn verification_string(fields: &[(String, String)]) -> String {
    canonical_pairs_with_empty(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["signature"],
    )
}

/// Why a synchronous answer could not be decoded ([`answer_decode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerFormatError {
    /// Longer than [`MESSAGE_BYTES_MAX`].
    #[error("longer than {MESSAGE_BYTES_MAX} bytes")]
    TooLarge,
    /// A field with no `=` (including an empty one: `&&` or a trailing `&`).
    #[error("a field without `=`")]
    FieldWithoutEquals,
    /// A field whose name is empty (`=v`).
    #[error("a field without a name")]
    EmptyName,
    /// A value that opens `{` or `[` and never closes it.
    #[error("field {0:?} opens a `{{` or `[` it never closes")]
    Unclosed(String),
    /// The same field twice (ambiguous: which one was signed?).
    #[error("field {0:?} appears twice")]
    Duplicate(String),
    /// More fields than [`FORM_FIELDS_MAX`].
    #[error("more than {FORM_FIELDS_MAX} fields")]
    TooMany,
}

/// Decodes a synchronous answer (`backTransReq.do`, `appTransReq.do`, `queryTrans.do`)
/// the way the ACP SDKs do (`parseQString`, without URL decoding): fields split on `&`
/// outside a value's `{…}` or `[…]`, each at its first `=`, nothing percent-decoded.
/// Refuses duplicates, a field without `=` or a name, an unclosed `{` / `[`, and more
/// than [`FORM_FIELDS_MAX`] fields or [`MESSAGE_BYTES_MAX`] bytes. An empty text has no
/// fields.
pub fn answer_decode(text: &str) -> Result<Vec<(String, String)>, AnswerFormatError> {
    if text.len() > MESSAGE_BYTES_MAX {
        return Err(AnswerFormatError::TooLarge);
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    if text.is_empty() {
        return Ok(fields);
    }
    let mut rest = text;
    loop {
        let (name, after) = rest
            .split_once('=')
            .ok_or(AnswerFormatError::FieldWithoutEquals)?;
        if name.contains('&') {
            return Err(AnswerFormatError::FieldWithoutEquals);
        }
        if name.is_empty() {
            return Err(AnswerFormatError::EmptyName);
        }
        let end = value_end(after).ok_or_else(|| AnswerFormatError::Unclosed(name.into()))?;
        if fields.len() >= FORM_FIELDS_MAX {
            return Err(AnswerFormatError::TooMany);
        }
        if fields.iter().any(|(k, _)| k == name) {
            return Err(AnswerFormatError::Duplicate(name.into()));
        }
        fields.push((name.to_string(), after[..end].to_string()));
        // `end` is the separating `&` (one byte) or the end of the text.
        match after.get(end + 1..) {
            Some(next) => rest = next,
            None => return Ok(fields),
        }
    }
}

/// The byte offset of the `&` that ends `value` (its length if none): an `&` inside a
/// `{…}` or `[…]` belongs to the value. Like the SDKs, brackets do not nest: the first
/// matching closer ends the group. `None` if a group never closes.
fn value_end(value: &str) -> Option<usize> {
    let mut closer: Option<u8> = None;
    for (i, b) in value.bytes().enumerate() {
        match (closer, b) {
            (Some(c), b) if b == c => closer = None,
            (Some(_), _) => {}
            (None, b'{') => closer = Some(b'}'),
            (None, b'[') => closer = Some(b']'),
            (None, b'&') => return Some(i),
            (None, _) => {}
        }
    }
    match closer {
        Some(_) => None,
        None => Some(value.len()),
    }
}

/// The value of `name`, `None` when absent or empty: an empty field says nothing (now
/// that it verifies, it must not become an empty QR code, `tn` or `queryId`).
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form_get(fields, name).filter(|v| !v.is_empty())
}

/// Adds `certId` and `signature` (SHA256withRSA over the hex SHA-256 of the signing
/// string) to `fields`.
pub fn sign_fields(
    config: &UnionpayConfig,
    rng: &mut impl CryptoRngCore,
    path: &'static str,
    mut fields: Vec<(String, String)>,
) -> UnionpayRequest {
    fields.retain(|(_, v)| !v.is_empty());
    fields.push(("certId".into(), config.cert_id.clone()));
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let digest_hex = sha256_hex(signing_string(&fields).as_bytes());
    let signature = config
        .merchant_key
        .sign_sha256_b64(rng, digest_hex.as_bytes());
    fields.push(("signature".into(), signature));
    UnionpayRequest { path, fields }
}

fn common(
    config: &UnionpayConfig,
    txn: (&str, &str, &str),
    channel_type: &str,
) -> Vec<(String, String)> {
    let (txn_type, txn_sub_type, biz_type) = txn;
    [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("txnType", txn_type),
        ("txnSubType", txn_sub_type),
        ("bizType", biz_type),
        ("channelType", channel_type),
        ("accessType", "0"),
        ("merId", config.mer_id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Why a consume or refund dated `dated_ms` is not sent at `now_ms`, if it is not:
/// UnionPay requires a request's `txnTime` to be the current time ("必须取当前时间，
/// 否则会报txnTime无效", its SDK's demo), yet ours is fixed when the object first goes
/// out (a refund's creation, a payment's [`Payment::engaged_at_ms`]: its creation, or
/// its approval in review or its confirmed code), because queries name the order by it.
/// Sent again later (a re-send after an unanswered call), UnionPay refuses it, and that
/// refusal would be taken for the channel's decision (a refund failed while the first
/// attempt may still complete). Not sent, the outcome stays unknown: a query or a
/// notification decides.
pub fn too_late_to_send(dated_ms: i64, now_ms: i64) -> Option<String> {
    let age_ms = now_ms.saturating_sub(dated_ms);
    (age_ms > EXPIRY_MARGIN_MS).then(|| {
        format!(
            "not sent: its txnTime is {} s old and UnionPay takes only the current time",
            age_ms / 1000
        )
    })
}

fn txn_time(at_ms: i64) -> String {
    BeijingTime::from_unix_s(at_ms.div_euclid(1000)).compact()
}

fn wire_amount(amount_minor: i64) -> Result<String, RequestError> {
    // txnAmt is at most 12 digits.
    if amount_minor <= 0 || amount_minor > 999_999_999_999 {
        return Err(RequestError::Amount(amount_minor));
    }
    Ok(amount_minor.to_string())
}

/// Builds the signed consume for `payment` with its unsealed `method`; a payment in
/// another currency than [`CURRENCY`] is refused, never sent.
pub fn authorize(
    config: &UnionpayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    method: &PaymentMethod,
) -> Result<(Product, UnionpayRequest), RequestError> {
    if payment.capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    if payment.currency != CURRENCY {
        return Err(RequestError::CurrencyUnsupported(payment.currency.code()));
    }
    let (product, path, sub, biz) = match method {
        PaymentMethod::QrMerchant => (Product::QrApply, PATH_BACK, "07", "000000"),
        PaymentMethod::QrCustomer { .. } => (Product::QrConsume, PATH_BACK, "06", "000000"),
        PaymentMethod::App => (Product::App, PATH_APP, "01", "000201"),
        PaymentMethod::H5 { .. } => return Err(RequestError::MethodUnsupported("h5")),
        PaymentMethod::Nfc { .. } => return Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SoundWave { .. } => {
            return Err(RequestError::MethodUnsupported("sound_wave"));
        }
        PaymentMethod::SmsOtp { .. } => return Err(RequestError::MethodUnsupported("sms_otp")),
    };
    let mut fields = common(config, ("01", sub, biz), "08");
    let amount = wire_amount(payment.state.amount_minor)?;
    for (k, v) in [
        ("orderId", order_id(&payment.id)),
        ("txnTime", txn_time(payment.engaged_at_ms())),
        ("txnAmt", amount),
        (
            "currencyCode",
            currency_numeric(payment.currency).to_string(),
        ),
        ("backUrl", config.back_url.clone()),
    ] {
        fields.push((k.into(), v));
    }
    if let PaymentMethod::QrCustomer { auth_code } = method {
        fields.push(("qrNo".into(), auth_code.clone()));
    }
    if method.waits_for_customer() {
        // UnionPay refuses payment for the order after this.
        fields.push(("payTimeout".into(), txn_time(payment.expires_at_ms())));
    }
    Ok((product, sign_fields(config, rng, path, fields)))
}

/// Refund of a consume (`origQryId` = the payment's `channel_ref`, the consume's
/// `queryId`).
pub fn refund_request(
    config: &UnionpayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    refund: &Refund,
) -> Result<UnionpayRequest, RequestError> {
    let orig = payment
        .channel_ref
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or(RequestError::Field {
            field: "channel_ref",
            reason: "a UnionPay refund needs the consume's queryId",
        })?;
    let mut fields = common(config, ("04", "00", biz_type(payment)), "07");
    for (k, v) in [
        ("orderId", order_id(&refund.id)),
        ("origQryId", orig),
        ("txnTime", txn_time(refund.created_at_ms)),
        ("txnAmt", wire_amount(refund.amount_minor)?),
        (
            "currencyCode",
            currency_numeric(refund.currency).to_string(),
        ),
        ("backUrl", config.back_url.clone()),
    ] {
        fields.push((k.into(), v));
    }
    Ok(sign_fields(config, rng, PATH_BACK, fields))
}

/// The `bizType` of the product `payment` was made with, which its refunds and queries
/// carry too (as UnionPay's own demos do): `000201` for the App (手机控件支付) consume,
/// `000000` for the QR products.
pub fn biz_type(payment: &Payment) -> &'static str {
    match payment.method {
        PaymentMethod::App => "000201",
        _ => "000000",
    }
}

/// Query of a payment or refund (of `payment`) by our id and the `txnTime` it was sent
/// with (`dated_ms`).
pub fn query_request(
    config: &UnionpayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    our_object_id: &str,
    dated_ms: i64,
) -> UnionpayRequest {
    let mut fields = common(config, ("00", "00", biz_type(payment)), "07");
    fields.push(("orderId".into(), order_id(our_object_id)));
    fields.push(("txnTime".into(), txn_time(dated_ms)));
    sign_fields(config, rng, PATH_QUERY, fields)
}

/// How a `respCode` / `origRespCode` classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// `00`, `A6`.
    Success,
    /// `03`, `04`, `05`: in progress or status unknown at UnionPay.
    Processing,
    /// A definitive failure.
    Failure,
    /// Says nothing about money (`12` duplicate order, `34` no such transaction, or not
    /// a two-character code).
    Unknown,
}

/// The one place UnionPay response codes are interpreted.
pub fn classify_code(code: &str) -> CodeClass {
    match code {
        "00" | "A6" => CodeClass::Success,
        "03" | "04" | "05" => CodeClass::Processing,
        "12" | "34" => CodeClass::Unknown,
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric()) => CodeClass::Failure,
        _ => CodeClass::Unknown,
    }
}

/// Verifies a message's `signature` (over [`verification_string`]) with a pinned
/// UnionPay key. An ACP 5.1.0 answer or notification carries its signing certificate
/// (`signPubKeyCert`) and no `certId`: it must verify under one of the pinned keys (at
/// most four, during a rotation); the certificate it carries is only signed data, never
/// a source of trust. A 5.0.0-style message names its key by `certId`: only that pinned
/// key may verify it.
pub fn verify_fields(config: &UnionpayConfig, fields: &[(String, String)]) -> Result<(), String> {
    let signature = form_get(fields, "signature").ok_or("signature missing")?;
    if form_get(fields, "signMethod") != Some("01") {
        return Err("signMethod is not 01".into());
    }
    // UnionPay's SDKs verify over every field, empty ones included; its Java demo drops
    // empty fields of a notification first. A message with an empty field is accepted
    // under either string: both are over the fields it carries, and an empty field
    // says nothing (`field`).
    let digests: Vec<String> = verification_strings(fields, &["signature"])
        .iter()
        .map(|s| sha256_hex(s.as_bytes()))
        .collect();
    let verifies = |key: &VerifyingKey| {
        digests
            .iter()
            .any(|d| key.verify_sha256_b64(d.as_bytes(), signature))
    };
    let verified = match form_get(fields, "certId") {
        Some(cert_id) => {
            let key = config
                .unionpay_key(cert_id)
                .ok_or_else(|| format!("unknown certId {cert_id:?}"))?;
            verifies(key)
        }
        None if form_get(fields, "signPubKeyCert").is_some_and(|c| !c.is_empty()) => {
            config.unionpay_keys.iter().any(|(_, key)| verifies(key))
        }
        None => return Err("neither certId nor signPubKeyCert".into()),
    };
    if !verified {
        return Err("signature refused".into());
    }
    Ok(())
}

/// Decodes ([`answer_decode`]: raw, not a form) and verifies an answer, checking it is
/// ours (`merId`) and about `order`.
pub fn verify_answer(
    config: &UnionpayConfig,
    resp: &OutboundResponse,
    order: &str,
) -> Result<Vec<(String, String)>, String> {
    if !(200..=299).contains(&resp.status) {
        return Err(format!("HTTP {} from UnionPay", resp.status));
    }
    if resp.body.len() > MESSAGE_BYTES_MAX {
        return Err("answer too large".into());
    }
    let text = std::str::from_utf8(&resp.body).map_err(|_| "answer is not UTF-8".to_string())?;
    let fields = answer_decode(text.trim()).map_err(|e| format!("unparsable answer: {e}"))?;
    verify_fields(config, &fields)?;
    if form_get(&fields, "merId") != Some(config.mer_id.as_str()) {
        return Err("answer for another merId".into());
    }
    if form_get(&fields, "orderId").is_some_and(|o| o != order) {
        return Err(format!(
            "answer about orderId {:?}",
            form_get(&fields, "orderId")
        ));
    }
    Ok(fields)
}

fn unknown(detail: impl Into<String>) -> ChannelOutcome {
    ChannelOutcome::Unknown {
        detail: detail.into(),
    }
}

fn declined(fields: &[(String, String)], code: &str) -> ChannelOutcome {
    ChannelOutcome::Declined {
        code: format!("unionpay_{code}"),
        message: field(fields, "respMsg")
            .unwrap_or("refused by UnionPay")
            .to_string(),
    }
}

/// The answer to a consume. A back-end `00` means *accepted*: the result comes by
/// notification or query, so it is `Pending` (with the QR code or `tn` when given).
pub fn parse_authorize(
    config: &UnionpayConfig,
    product: Product,
    resp: &OutboundResponse,
    payment_id: &str,
) -> ChannelOutcome {
    let fields = match verify_answer(config, resp, &order_id(payment_id)) {
        Ok(f) => f,
        Err(detail) => return unknown(detail),
    };
    let code = form_get(&fields, "respCode").unwrap_or("");
    let channel_ref = field(&fields, "queryId").map(str::to_string);
    match classify_code(code) {
        CodeClass::Success => {
            let next_action = match product {
                Product::QrApply => match field(&fields, "qrCode") {
                    Some(qr) => Some(NextAction::DisplayQr {
                        qr_payload: qr.to_string(),
                    }),
                    None => return unknown("QR apply answer without qrCode"),
                },
                Product::App => match field(&fields, "tn") {
                    Some(tn) => Some(NextAction::AppOrder {
                        order_string: tn.to_string(),
                    }),
                    None => return unknown("app answer without tn"),
                },
                Product::QrConsume => None,
            };
            ChannelOutcome::Pending {
                channel_ref,
                next_action,
            }
        }
        CodeClass::Processing => ChannelOutcome::Pending {
            channel_ref,
            next_action: None,
        },
        CodeClass::Failure => declined(&fields, code),
        CodeClass::Unknown => unknown(format!("respCode {code:?}")),
    }
}

/// The answer to a payment query: `respCode` `00` then `origRespCode` decides.
pub fn parse_query(
    config: &UnionpayConfig,
    resp: &OutboundResponse,
    payment_id: &str,
) -> ChannelReport {
    let report = |outcome| ChannelReport {
        outcome,
        amount_minor: None,
        currency: None,
    };
    let fields = match verify_answer(config, resp, &order_id(payment_id)) {
        Ok(f) => f,
        Err(detail) => return report(unknown(detail)),
    };
    let code = form_get(&fields, "respCode").unwrap_or("");
    if classify_code(code) != CodeClass::Success {
        // The query itself failed (e.g. 34: not found yet): never guess.
        return report(unknown(format!("query respCode {code:?}")));
    }
    let orig = form_get(&fields, "origRespCode").unwrap_or("");
    let channel_ref = field(&fields, "queryId").map(str::to_string);
    let outcome = match classify_code(orig) {
        CodeClass::Success => ChannelOutcome::Succeeded { channel_ref },
        CodeClass::Processing => ChannelOutcome::Pending {
            channel_ref,
            next_action: None,
        },
        CodeClass::Failure => declined(&fields, orig),
        CodeClass::Unknown => unknown(format!("origRespCode {orig:?}")),
    };
    match stated_amount(&fields) {
        Ok((amount_minor, currency)) => ChannelReport {
            outcome,
            amount_minor,
            currency,
        },
        Err(detail) => report(unknown(detail)),
    }
}

/// What a cancel of `payment` at `now_ms` comes to without asking UnionPay, which has no
/// close: `None` when its order has expired (its `payTimeout` passed more than
/// [`EXPIRY_MARGIN_MS`] ago), so a query decides ([`parse_expired_query`]); before that
/// the cancel is refused, or (within the margin) left undecided to be tried again. A
/// payment stored without an expiry never sent one: it is always refused.
pub fn cancel_before_query(payment: &Payment, now_ms: i64) -> Option<ActionOutcome> {
    let refused = |message: String| ActionOutcome::Declined {
        code: "cancel_unsupported".into(),
        message,
    };
    let Some(expires_at_ms) = payment.expires_at_ms else {
        return Some(refused(
            "UnionPay orders cannot be closed, and this one was sent without an expiry".into(),
        ));
    };
    if now_ms < expires_at_ms {
        return Some(refused(format!(
            "UnionPay orders cannot be closed; this one expires unpaid at UnionPay at \
             {expires_at_ms} (expires_at_ms)"
        )));
    }
    if now_ms < expires_at_ms.saturating_add(EXPIRY_MARGIN_MS) {
        return Some(ActionOutcome::Unknown {
            detail: "the order expired at UnionPay moments ago: asked again later".into(),
        });
    }
    None
}

/// The query answer about an order past its `payTimeout` (and the margin), for its
/// cancel: no such transaction (`34`: nobody ever paid) or a failed one → done, as
/// nobody can pay it any more; paid → refused; anything else (still processing, a
/// failed query, a forged or foreign answer) → undecided.
pub fn parse_expired_query(
    config: &UnionpayConfig,
    resp: &OutboundResponse,
    payment_id: &str,
) -> ActionOutcome {
    let unknown = |detail: String| ActionOutcome::Unknown { detail };
    let fields = match verify_answer(config, resp, &order_id(payment_id)) {
        Ok(f) => f,
        Err(detail) => return unknown(detail),
    };
    let code = form_get(&fields, "respCode").unwrap_or("");
    if code == "34" {
        return ActionOutcome::Done;
    }
    if classify_code(code) != CodeClass::Success {
        return unknown(format!("query respCode {code:?}"));
    }
    let orig = form_get(&fields, "origRespCode").unwrap_or("");
    match classify_code(orig) {
        CodeClass::Failure => ActionOutcome::Done,
        CodeClass::Success => ActionOutcome::Declined {
            code: "already_paid".into(),
            message: "UnionPay reports the order paid".into(),
        },
        CodeClass::Processing | CodeClass::Unknown => {
            unknown(format!("expired order: origRespCode {orig:?}"))
        }
    }
}

fn stated_amount(fields: &[(String, String)]) -> Result<(Option<i64>, Option<String>), String> {
    let amount = match form_get(fields, "txnAmt") {
        Some(t) if !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()) => {
            Some(t.parse::<i64>().map_err(|_| format!("bad txnAmt {t:?}"))?)
        }
        Some(t) => return Err(format!("bad txnAmt {t:?}")),
        None => None,
    };
    let currency = match form_get(fields, "currencyCode") {
        Some(c) => Some(
            currency_from_numeric(c)
                .ok_or_else(|| format!("unsupported currencyCode {c:?}"))?
                .code()
                .to_string(),
        ),
        None => None,
    };
    Ok((amount, currency))
}

fn refund_by_code(fields: &[(String, String)], code: &str) -> RefundOutcome {
    let channel_ref = field(fields, "queryId").map(str::to_string);
    match classify_code(code) {
        CodeClass::Success => RefundOutcome::Succeeded { channel_ref },
        CodeClass::Processing => RefundOutcome::Pending { channel_ref },
        CodeClass::Failure => RefundOutcome::Failed {
            code: format!("unionpay_{code}"),
            message: field(fields, "respMsg")
                .unwrap_or("refund refused by UnionPay")
                .to_string(),
        },
        CodeClass::Unknown => RefundOutcome::Unknown {
            detail: format!("refund code {code:?}"),
        },
    }
}

/// The answer to a refund request (`00` = accepted → `Pending`).
pub fn parse_refund(
    config: &UnionpayConfig,
    resp: &OutboundResponse,
    refund_id: &str,
) -> RefundOutcome {
    let fields = match verify_answer(config, resp, &order_id(refund_id)) {
        Ok(f) => f,
        Err(detail) => return RefundOutcome::Unknown { detail },
    };
    let code = form_get(&fields, "respCode").unwrap_or("");
    match refund_by_code(&fields, code) {
        RefundOutcome::Succeeded { channel_ref } => RefundOutcome::Pending { channel_ref },
        other => other,
    }
}

/// The answer to a refund query (`origRespCode` decides).
pub fn parse_refund_query(
    config: &UnionpayConfig,
    resp: &OutboundResponse,
    refund_id: &str,
) -> RefundOutcome {
    let fields = match verify_answer(config, resp, &order_id(refund_id)) {
        Ok(f) => f,
        Err(detail) => return RefundOutcome::Unknown { detail },
    };
    let code = form_get(&fields, "respCode").unwrap_or("");
    if classify_code(code) != CodeClass::Success {
        return RefundOutcome::Unknown {
            detail: format!("refund query respCode {code:?}"),
        };
    }
    refund_by_code(&fields, form_get(&fields, "origRespCode").unwrap_or(""))
}

/// A verified back-notification in the core's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionpayNotification {
    /// What it says.
    pub kind: UnionpayNotificationKind,
    /// Claim this in key-value (`txnType:queryId:respCode`).
    pub replay_key: String,
}

/// Payment or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnionpayNotificationKind {
    /// A consume (txnType 01).
    Payment(PaymentNotification),
    /// A refund (txnType 04).
    Refund(RefundNotification),
}

/// Verifies and parses a back-notification: unlike an answer, a real form POST
/// (percent-encoded). Accepted → 200 [`super::NOTIFY_ACK`].
pub fn parse_notification(
    config: &UnionpayConfig,
    body: &[u8],
) -> Result<UnionpayNotification, NotificationRejected> {
    let malformed = |m: String| NotificationRejected::Malformed(m);
    if body.len() > MESSAGE_BYTES_MAX {
        return Err(malformed("body too large".into()));
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8".into()))?;
    let fields = form_decode(text).map_err(|e| malformed(e.to_string()))?;
    verify_fields(config, &fields).map_err(NotificationRejected::Signature)?;
    let get = |k: &str| field(&fields, k);
    if get("merId") != Some(config.mer_id.as_str()) {
        return Err(NotificationRejected::WrongMerchant(format!(
            "merId {:?}",
            get("merId")
        )));
    }
    let order = get("orderId").ok_or_else(|| malformed("orderId missing".into()))?;
    let id = our_id(order).ok_or_else(|| malformed(format!("orderId {order:?} is not ours")))?;
    let code = get("respCode").ok_or_else(|| malformed("respCode missing".into()))?;
    let query_id = get("queryId").ok_or_else(|| malformed("queryId missing".into()))?;
    let txn_type = get("txnType").unwrap_or("");
    let kind = match txn_type {
        "01" => {
            let (amount_minor, currency) = stated_amount(&fields).map_err(malformed)?;
            let channel_ref = Some(query_id.to_string());
            let outcome = match classify_code(code) {
                CodeClass::Success => ChannelOutcome::Succeeded { channel_ref },
                CodeClass::Processing => ChannelOutcome::Pending {
                    channel_ref,
                    next_action: None,
                },
                CodeClass::Failure => declined(&fields, code),
                CodeClass::Unknown => unknown(format!("respCode {code:?}")),
            };
            UnionpayNotificationKind::Payment(PaymentNotification {
                channel: Channel::Unionpay,
                payment_id: id,
                report: ChannelReport {
                    outcome,
                    amount_minor,
                    currency,
                },
            })
        }
        "04" => {
            // The payment is named by UnionPay's own `origQryId`, not by our id.
            let (amount_minor, currency) = stated_amount(&fields).map_err(malformed)?;
            UnionpayNotificationKind::Refund(RefundNotification {
                channel: Channel::Unionpay,
                refund_id: id,
                payment_id: None,
                amount_minor,
                currency,
                outcome: refund_by_code(&fields, code),
            })
        }
        other => return Err(malformed(format!("txnType {other:?}"))),
    };
    Ok(UnionpayNotification {
        kind,
        replay_key: replay_key("unionpay", &format!("{txn_type}:{query_id}:{code}")),
    })
}
