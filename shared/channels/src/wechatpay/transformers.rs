//! Pure WeChat Pay v3 transformers: signed requests, verified answers and callbacks,
//! the status mappings ([`trade_state_outcome`], [`refund_status_outcome`],
//! [`classify_error`]). Time, nonces and the RNG for RSA blinding come from the caller.

use rsa::rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use spinpay_core::model::{CaptureMode, Channel, NextAction, Payment, PaymentMethod, Refund};
use spinpay_core::money::Currency;
use spinpay_core::service::{
    ActionOutcome, CLOSED_UNPAID_CODE, ChannelOutcome, ChannelReport, PaymentNotification,
    RefundNotification, RefundOutcome,
};
use spinpay_guest::outbound::OutboundResponse;

use super::{NotificationRejected, RequestError, SCHEME, TIMESTAMP_WINDOW_S, WechatpayConfig};
use crate::crypto::{
    BeijingTime, aes256gcm_open, decode_b64_lenient, form_encode, replay_key, within_window,
};
use crate::wiring::EXPIRY_MARGIN_MS;

/// Longest callback body accepted, bytes.
pub const CALLBACK_BYTES_MAX: usize = 64 * 1024;
/// Longest `description` WeChat Pay accepts, characters.
pub const DESCRIPTION_CHARS_MAX: usize = 127;
/// Longest refund `reason` WeChat Pay takes (`string(80)`); a longer one is cut, not
/// refused (the refund itself must not fail over its note).
pub const REFUND_REASON_CHARS_MAX: usize = 80;
/// Header names (lower-case; lookups ignore case).
pub const HEADER_TIMESTAMP: &str = "wechatpay-timestamp";
/// Nonce header.
pub const HEADER_NONCE: &str = "wechatpay-nonce";
/// Signature header.
pub const HEADER_SIGNATURE: &str = "wechatpay-signature";
/// Platform key serial header.
pub const HEADER_SERIAL: &str = "wechatpay-serial";
/// Signature scheme header (optional; when present it must be [`SCHEME`]).
pub const HEADER_SIGNATURE_TYPE: &str = "wechatpay-signature-type";

/// A signed API call. Send `body` with `Authorization: authorization`,
/// `Accept: application/json`, `Content-Type: application/json` and a `User-Agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query under the base URL, e.g. `/v3/pay/transactions/native`.
    pub path: String,
    /// JSON body (empty for GET).
    pub body: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

/// Which product an authorize call used (the answer is read accordingly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Product {
    /// Native: answer `code_url`.
    Native,
    /// Codepay (customer-presented code): answer is the transaction.
    Codepay,
    /// H5: answer `h5_url`; the customer returns to `return_url`.
    H5 {
        /// Where the customer returns.
        return_url: String,
    },
    /// App: answer `prepay_id`, turned into the signed order for the SDK.
    App,
}

/// `METHOD\nURL\ntimestamp\nnonce\nbody\n`, the string a request signature covers.
pub fn canonical_request(method: &str, url: &str, ts: i64, nonce: &str, body: &str) -> String {
    format!("{method}\n{url}\n{ts}\n{nonce}\n{body}\n")
}

/// Signs a request (`nonce` from the caller's randomness: 32 alphanumerics is usual).
pub fn sign_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    method: &'static str,
    path: String,
    body: String,
    now_unix_s: i64,
    nonce: &str,
) -> WechatRequest {
    let message = canonical_request(method, &path, now_unix_s, nonce, &body);
    let signature = config.merchant_key.sign_sha256_b64(rng, message.as_bytes());
    let authorization = format!(
        "{SCHEME} mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{now_unix_s}\",serial_no=\"{}\"",
        config.mchid, config.serial_no
    );
    WechatRequest {
        method,
        path,
        body,
        authorization,
    }
}

#[derive(Serialize)]
struct Amount {
    total: i64,
    currency: &'static str,
}

#[derive(Serialize)]
struct OrderBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: String,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    amount: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    payer: Option<CodePayer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scene_info: Option<SceneInfo<'a>>,
    /// Expiry (RFC 3339, Beijing offset) of an order that waits for its customer:
    /// WeChat Pay refuses to take payment for it afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
}

#[derive(Serialize)]
struct CodePayer<'a> {
    auth_code: &'a str,
}

/// `scene_info`: H5 orders carry the customer's IP; codepay (a customer-presented code
/// scanned at the till, where `scene_info` is required) the store and the terminal's IP
/// instead.
#[derive(Serialize, Default)]
struct SceneInfo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_client_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h5_info: Option<H5Info>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_info: Option<StoreInfo<'a>>,
}

/// The store a codepay happened at: `out_id`, the store's number on the merchant side.
/// A spinpay merchant is one store of the WeChat Pay merchant, so its id (30 characters,
/// within the field's 32) is that number.
#[derive(Serialize)]
struct StoreInfo<'a> {
    out_id: &'a str,
}

#[derive(Serialize)]
struct H5Info {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The amount as WeChat Pay's `total`: positive and within its 32-bit integer field.
fn wire_total(amount_minor: i64) -> Result<i64, RequestError> {
    if amount_minor <= 0 || amount_minor > i64::from(i32::MAX) {
        return Err(RequestError::Amount(amount_minor));
    }
    Ok(amount_minor)
}

/// Builds the signed authorize call for `payment` with its unsealed `method`.
pub fn authorize(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    method: &PaymentMethod,
    now_unix_s: i64,
    nonce: &str,
) -> Result<(Product, WechatRequest), RequestError> {
    if payment.capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    // A domestic (direct) merchant is paid in CNY only.
    if payment.currency != Currency::Cny {
        return Err(RequestError::CurrencyUnsupported(payment.currency.code()));
    }
    let mut body = OrderBody {
        appid: &config.appid,
        mchid: &config.mchid,
        description: description(payment),
        out_trade_no: &payment.id,
        notify_url: Some(&config.notify_url),
        amount: Amount {
            total: wire_total(payment.state.amount_minor)?,
            currency: payment.currency.code(),
        },
        payer: None,
        scene_info: None,
        time_expire: method
            .waits_for_customer()
            .then(|| BeijingTime::from_unix_ms(payment.expires_at_ms()).rfc3339()),
    };
    let payer_ip = payment.payer.as_ref().and_then(|p| p.ip.as_deref());
    let (product, path) = match method {
        PaymentMethod::QrMerchant => (Product::Native, "/v3/pay/transactions/native"),
        PaymentMethod::QrCustomer { auth_code } => {
            body.notify_url = None;
            body.payer = Some(CodePayer { auth_code });
            // The payer "IP" a till sends is its own: the device's.
            body.scene_info = Some(SceneInfo {
                device_ip: payer_ip,
                store_info: Some(StoreInfo {
                    out_id: &payment.merchant_id,
                }),
                ..SceneInfo::default()
            });
            (Product::Codepay, "/v3/pay/transactions/codepay")
        }
        PaymentMethod::H5 { return_url } => {
            let ip = payer_ip.ok_or(RequestError::Field {
                field: "payer.ip",
                reason: "WeChat Pay H5 needs the customer's IP address",
            })?;
            body.scene_info = Some(SceneInfo {
                payer_client_ip: Some(ip),
                h5_info: Some(H5Info { kind: "Wap" }),
                ..SceneInfo::default()
            });
            let product = Product::H5 {
                return_url: return_url.clone(),
            };
            (product, "/v3/pay/transactions/h5")
        }
        PaymentMethod::App => (Product::App, "/v3/pay/transactions/app"),
        PaymentMethod::SoundWave { .. } => {
            return Err(RequestError::MethodUnsupported("sound_wave"));
        }
        PaymentMethod::Nfc { .. } => return Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SmsOtp { .. } => return Err(RequestError::MethodUnsupported("sms_otp")),
    };
    let json = serde_json::to_string(&body).expect("order serializes");
    let req = sign_request(config, rng, "POST", path.into(), json, now_unix_s, nonce);
    Ok((product, req))
}

fn description(payment: &Payment) -> String {
    let base = payment
        .description
        .clone()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| format!("spinpay {}", payment.id));
    base.chars().take(DESCRIPTION_CHARS_MAX).collect()
}

/// `GET /v3/pay/transactions/out-trade-no/{id}?mchid=…`.
pub fn query_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> WechatRequest {
    let path = format!(
        "/v3/pay/transactions/out-trade-no/{}?mchid={}",
        form_encode(payment_id),
        form_encode(&config.mchid)
    );
    sign_request(config, rng, "GET", path, String::new(), now_unix_s, nonce)
}

/// `POST /v3/pay/transactions/out-trade-no/{id}/close`.
pub fn close_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> WechatRequest {
    let path = format!(
        "/v3/pay/transactions/out-trade-no/{}/close",
        form_encode(payment_id)
    );
    let body = serde_json::json!({ "mchid": config.mchid }).to_string();
    sign_request(config, rng, "POST", path, body, now_unix_s, nonce)
}

/// Which API cancels a payment at WeChat Pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelApi {
    /// Close (`…/close`): an order that waits for its customer (native, h5, app).
    Close,
    /// Reverse (`…/reverse`): a codepay, which close does not apply to. Closes it if
    /// unpaid, refunds it if paid.
    Reverse,
}

/// The API that cancels a payment made with `method` ([`Product::Codepay`] for a
/// customer-presented code).
pub fn cancel_api(method: &PaymentMethod) -> CancelApi {
    match method {
        PaymentMethod::QrCustomer { .. } => CancelApi::Reverse,
        PaymentMethod::QrMerchant
        | PaymentMethod::H5 { .. }
        | PaymentMethod::App
        | PaymentMethod::SoundWave { .. }
        | PaymentMethod::Nfc { .. }
        | PaymentMethod::SmsOtp { .. } => CancelApi::Close,
    }
}

/// How long after a payment was sent to WeChat Pay ([`Payment::engaged_at_ms`]) its
/// codepay request may still be creating the order: our call gives up after a few
/// seconds, but the request may sit in a network queue or at WeChat Pay for longer, and
/// the clocks differ. A reverse answered "no such order" before then may race that
/// create; after it, the order will never exist. The margin the adapters already allow
/// for the channels' clocks ([`EXPIRY_MARGIN_MS`]).
pub const CREATE_IN_FLIGHT_MS: i64 = EXPIRY_MARGIN_MS;

/// The body of a reverse: the direct-merchant codepay reverse takes both the AppID and
/// the merchant id in the JSON body, the order in the path (WeChat Pay's "撤销" page of
/// the code-payment v3 API for ordinary merchants,
/// <https://pay.weixin.qq.com/docs/merchant/apis/code-payment-v3/direct/reverse.html>).
#[derive(Serialize)]
struct ReverseBody<'a> {
    appid: &'a str,
    mchid: &'a str,
}

/// `POST /v3/pay/transactions/out-trade-no/{id}/reverse`: revokes a codepay. WeChat Pay
/// closes it if the customer has not paid and returns the money if they have.
pub fn reverse_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> WechatRequest {
    let path = format!(
        "/v3/pay/transactions/out-trade-no/{}/reverse",
        form_encode(payment_id)
    );
    let body = ReverseBody {
        appid: &config.appid,
        mchid: &config.mchid,
    };
    let json = serde_json::to_string(&body).expect("reverse serializes");
    sign_request(config, rng, "POST", path, json, now_unix_s, nonce)
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    notify_url: &'a str,
    amount: RefundAmount,
}

#[derive(Serialize)]
struct RefundAmount {
    refund: i64,
    total: i64,
    currency: &'static str,
}

/// `POST /v3/refund/domestic/refunds` (our refund id as `out_refund_no`: idempotent).
pub fn refund_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    refund: &Refund,
    now_unix_s: i64,
    nonce: &str,
) -> Result<WechatRequest, RequestError> {
    let body = RefundBody {
        out_trade_no: &payment.id,
        out_refund_no: &refund.id,
        reason: refund
            .reason
            .as_deref()
            .map(|r| r.chars().take(REFUND_REASON_CHARS_MAX).collect()),
        notify_url: &config.notify_url,
        amount: RefundAmount {
            refund: wire_total(refund.amount_minor)?,
            total: wire_total(payment.state.amount_minor)?,
            currency: refund.currency.code(),
        },
    };
    let json = serde_json::to_string(&body).expect("refund serializes");
    let path = "/v3/refund/domestic/refunds".to_string();
    Ok(sign_request(
        config, rng, "POST", path, json, now_unix_s, nonce,
    ))
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
pub fn refund_query_request(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    refund_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> WechatRequest {
    let path = format!("/v3/refund/domestic/refunds/{}", form_encode(refund_id));
    sign_request(config, rng, "GET", path, String::new(), now_unix_s, nonce)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is missing or the scheme is not [`SCHEME`].
    Missing(&'static str),
    /// The timestamp is outside [`TIMESTAMP_WINDOW_S`].
    Stale,
    /// No platform key has this serial.
    UnknownSerial(String),
    /// The signature does not verify.
    Invalid,
}

/// Verifies `Wechatpay-*` headers over `timestamp\nnonce\nbody\n` with the platform key
/// they name. On success returns the `(timestamp, nonce)` pair for a replay key.
pub fn verify_signature<'h>(
    config: &WechatpayConfig,
    headers: &'h [(String, String)],
    body: &[u8],
    now_unix_s: i64,
) -> Result<(i64, &'h str), SignatureError> {
    if header(headers, HEADER_SIGNATURE_TYPE).is_some_and(|t| t != SCHEME) {
        return Err(SignatureError::Missing("Wechatpay-Signature-Type"));
    }
    let ts_text =
        header(headers, HEADER_TIMESTAMP).ok_or(SignatureError::Missing("Wechatpay-Timestamp"))?;
    let nonce = header(headers, HEADER_NONCE).ok_or(SignatureError::Missing("Wechatpay-Nonce"))?;
    let signature =
        header(headers, HEADER_SIGNATURE).ok_or(SignatureError::Missing("Wechatpay-Signature"))?;
    let serial =
        header(headers, HEADER_SERIAL).ok_or(SignatureError::Missing("Wechatpay-Serial"))?;
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| SignatureError::Missing("Wechatpay-Timestamp"))?;
    if !within_window(ts, now_unix_s, TIMESTAMP_WINDOW_S) {
        return Err(SignatureError::Stale);
    }
    let key = config
        .platform_key(serial)
        .ok_or_else(|| SignatureError::UnknownSerial(serial.to_string()))?;
    let mut message = Vec::with_capacity(body.len() + 64);
    message.extend_from_slice(format!("{ts_text}\n{nonce}\n").as_bytes());
    message.extend_from_slice(body);
    message.push(b'\n');
    if !key.verify_sha256_b64(&message, signature) {
        return Err(SignatureError::Invalid);
    }
    Ok((ts, nonce))
}

/// An error answer body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    /// e.g. `USERPAYING`, `SYSTEM_ERROR`, `ORDER_NOT_EXIST`.
    pub code: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// A verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// 2xx; the body (may be empty for 204).
    Ok(Vec<u8>),
    /// 4xx with an error body.
    Refused(ErrorBody),
}

/// Verifies an answer's signature; `Err(detail)` = unusable (unsigned — an unsigned
/// 2xx is forged —, bad signature, stale, 5xx, garbage error body).
pub fn verify_answer(
    config: &WechatpayConfig,
    resp: &OutboundResponse,
    now_unix_s: i64,
) -> Result<Verified, String> {
    if resp.status >= 500 || resp.status < 200 {
        return Err(format!("HTTP {} from WeChat Pay", resp.status));
    }
    verify_signature(config, &resp.headers, &resp.body, now_unix_s)
        .map_err(|e| format!("answer signature refused ({e:?}, HTTP {})", resp.status))?;
    match resp.status {
        200..=299 => Ok(Verified::Ok(resp.body.clone())),
        _ => serde_json::from_slice(&resp.body)
            .map(Verified::Refused)
            .map_err(|e| format!("unparsable error answer (HTTP {}): {e}", resp.status)),
    }
}

/// How an error `code` classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The payer is confirming (`USERPAYING`): pending.
    Waiting,
    /// A definitive refusal of this request.
    Refused,
    /// Says nothing reliable about money (system errors, already paid, unknown codes).
    Indeterminate,
}

const CODES_REFUSED: [&str; 16] = [
    "PARAM_ERROR",
    "INVALID_REQUEST",
    "NOTENOUGH",
    "NOT_ENOUGH",
    "NOAUTH",
    "NO_AUTH",
    "APPID_MCHID_NOT_MATCH",
    "MCH_NOT_EXISTS",
    "ORDER_CLOSED",
    "SIGN_ERROR",
    "RULE_LIMIT",
    "TRADE_ERROR",
    "ACCOUNT_ERROR",
    "AUTH_CODE_INVALID",
    "AUTHCODEEXPIRE",
    "PAYERROR",
];

/// The one place WeChat Pay error codes are interpreted.
pub fn classify_error(code: &str) -> ErrorClass {
    if code == "USERPAYING" {
        ErrorClass::Waiting
    } else if CODES_REFUSED.contains(&code) {
        ErrorClass::Refused
    } else {
        ErrorClass::Indeterminate
    }
}

/// WeChat Pay's `trade_state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeState {
    /// Paid.
    Success,
    /// Paid, a refund was started.
    Refund,
    /// Not paid yet.
    NotPay,
    /// Closed unpaid.
    Closed,
    /// Revoked (codepay).
    Revoked,
    /// The payer is confirming (codepay).
    UserPaying,
    /// Payment failed.
    PayError,
}

impl TradeState {
    /// Parses a documented state; `None` for anything else.
    pub fn parse(text: &str) -> Option<TradeState> {
        match text {
            "SUCCESS" => Some(TradeState::Success),
            "REFUND" => Some(TradeState::Refund),
            "NOTPAY" => Some(TradeState::NotPay),
            "CLOSED" => Some(TradeState::Closed),
            "REVOKED" => Some(TradeState::Revoked),
            "USERPAYING" => Some(TradeState::UserPaying),
            "PAYERROR" => Some(TradeState::PayError),
            _ => None,
        }
    }
}

/// The status mapping: `trade_state` → the core's outcome; unknown → `Unknown`.
pub fn trade_state_outcome(state: &str, channel_ref: Option<String>) -> ChannelOutcome {
    let declined = |code: &str, message: &str| ChannelOutcome::Declined {
        code: code.into(),
        message: message.into(),
    };
    match TradeState::parse(state) {
        Some(TradeState::Success | TradeState::Refund) => ChannelOutcome::Succeeded { channel_ref },
        Some(TradeState::NotPay | TradeState::UserPaying) => ChannelOutcome::Pending {
            channel_ref,
            next_action: None,
        },
        Some(TradeState::Closed) => declined(CLOSED_UNPAID_CODE, "the order was closed unpaid"),
        Some(TradeState::Revoked) => declined("trade_revoked", "the order was revoked"),
        Some(TradeState::PayError) => declined("pay_error", "the payment failed at WeChat Pay"),
        None => ChannelOutcome::Unknown {
            detail: format!("unknown WeChat Pay trade_state {state:?}"),
        },
    }
}

/// The refund status mapping: `SUCCESS`, `PROCESSING`, `CLOSED`, `ABNORMAL`.
/// `ABNORMAL` (the payout to the customer failed and needs handling at WeChat Pay) is
/// kept pending: the money has not come back to the merchant either way.
pub fn refund_status_outcome(status: &str, channel_ref: Option<String>) -> RefundOutcome {
    match status {
        "SUCCESS" => RefundOutcome::Succeeded { channel_ref },
        "PROCESSING" | "ABNORMAL" => RefundOutcome::Pending { channel_ref },
        "CLOSED" => RefundOutcome::Failed {
            code: "refund_closed".into(),
            message: "WeChat Pay closed the refund".into(),
        },
        other => RefundOutcome::Unknown {
            detail: format!("unknown WeChat Pay refund status {other:?}"),
        },
    }
}

/// The transaction fields this adapter reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Transaction {
    /// Merchant id.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Our payment id.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// WeChat Pay's id.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// The state.
    #[serde(default)]
    pub trade_state: Option<String>,
    /// Amounts.
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

/// `amount` of a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TransactionAmount {
    /// Order total, minor units.
    #[serde(default)]
    pub total: Option<i64>,
    /// Currency.
    #[serde(default)]
    pub currency: Option<String>,
}

fn unknown(detail: impl Into<String>) -> ChannelOutcome {
    ChannelOutcome::Unknown {
        detail: detail.into(),
    }
}

fn error_outcome(e: &ErrorBody) -> ChannelOutcome {
    match classify_error(&e.code) {
        ErrorClass::Waiting => ChannelOutcome::Pending {
            channel_ref: None,
            next_action: None,
        },
        ErrorClass::Refused => ChannelOutcome::Declined {
            code: e.code.clone(),
            message: e.message.clone(),
        },
        ErrorClass::Indeterminate => unknown(format!("WeChat Pay error {}: {}", e.code, e.message)),
    }
}

#[derive(Deserialize)]
struct PrepayAnswer {
    #[serde(default)]
    code_url: Option<String>,
    #[serde(default)]
    h5_url: Option<String>,
    #[serde(default)]
    prepay_id: Option<String>,
}

/// What the app SDK needs (`order_string` is this as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppOrder {
    /// AppID.
    pub appid: String,
    /// Merchant id.
    pub partnerid: String,
    /// The prepay id.
    pub prepayid: String,
    /// Always `Sign=WXPay`.
    pub package: String,
    /// Random string.
    pub noncestr: String,
    /// Unix seconds, as text.
    pub timestamp: String,
    /// SHA256withRSA over `appid\ntimestamp\nnoncestr\nprepayid\n`, base64.
    pub sign: String,
}

/// Signs the app order for `prepay_id` (WeChat's APP rule).
pub fn app_order(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    prepay_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> AppOrder {
    let message = format!("{}\n{now_unix_s}\n{nonce}\n{prepay_id}\n", config.appid);
    AppOrder {
        appid: config.appid.clone(),
        partnerid: config.mchid.clone(),
        prepayid: prepay_id.to_string(),
        package: "Sign=WXPay".into(),
        noncestr: nonce.to_string(),
        timestamp: now_unix_s.to_string(),
        sign: config.merchant_key.sign_sha256_b64(rng, message.as_bytes()),
    }
}

/// The answer to an authorize call. `now_unix_s`, `nonce` and `rng` sign the app order
/// (app product only).
pub fn parse_authorize(
    config: &WechatpayConfig,
    rng: &mut impl CryptoRngCore,
    product: &Product,
    resp: &OutboundResponse,
    payment_id: &str,
    now_unix_s: i64,
    nonce: &str,
) -> ChannelOutcome {
    let body = match verify_answer(config, resp, now_unix_s) {
        Ok(Verified::Ok(body)) => body,
        Ok(Verified::Refused(e)) => return error_outcome(&e),
        Err(detail) => return unknown(detail),
    };
    if let Product::Codepay = product {
        return match serde_json::from_slice::<Transaction>(&body) {
            Ok(t) if t.out_trade_no.as_deref() == Some(payment_id) => {
                match t.trade_state.as_deref() {
                    Some(state) => trade_state_outcome(state, t.transaction_id),
                    None => unknown("codepay answer without trade_state"),
                }
            }
            Ok(t) => unknown(format!("answer is about {:?}", t.out_trade_no)),
            Err(e) => unknown(format!("unparsable codepay answer: {e}")),
        };
    }
    let prepay: PrepayAnswer = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return unknown(format!("unparsable answer: {e}")),
    };
    let next_action = match (product, prepay) {
        (
            Product::Native,
            PrepayAnswer {
                code_url: Some(url),
                ..
            },
        ) => NextAction::DisplayQr { qr_payload: url },
        (
            Product::H5 { return_url },
            PrepayAnswer {
                h5_url: Some(url), ..
            },
        ) => NextAction::Redirect {
            url: format!("{url}&redirect_url={}", form_encode(return_url)),
        },
        (
            Product::App,
            PrepayAnswer {
                prepay_id: Some(id),
                ..
            },
        ) => {
            let order = app_order(config, rng, &id, now_unix_s, nonce);
            NextAction::AppOrder {
                order_string: serde_json::to_string(&order).expect("order serializes"),
            }
        }
        (Product::Native | Product::H5 { .. } | Product::App | Product::Codepay, _) => {
            return unknown("answer lacks the product's field (code_url / h5_url / prepay_id)");
        }
    };
    ChannelOutcome::Pending {
        channel_ref: None,
        next_action: Some(next_action),
    }
}

/// The answer to a query, with the amount and currency WeChat Pay states.
pub fn parse_query(
    config: &WechatpayConfig,
    resp: &OutboundResponse,
    payment_id: &str,
    now_unix_s: i64,
) -> ChannelReport {
    let report = |outcome| ChannelReport {
        outcome,
        amount_minor: None,
        currency: None,
    };
    let body = match verify_answer(config, resp, now_unix_s) {
        Ok(Verified::Ok(body)) => body,
        // ORDER_NOT_EXIST may mean "create still in flight": never guess.
        Ok(Verified::Refused(e)) => {
            return report(unknown(format!("query refused: {} {}", e.code, e.message)));
        }
        Err(detail) => return report(unknown(detail)),
    };
    match serde_json::from_slice::<Transaction>(&body) {
        Ok(t) if t.out_trade_no.as_deref() == Some(payment_id) => {
            let amount = t.amount.clone().unwrap_or_default();
            match t.trade_state.as_deref() {
                Some(state) => ChannelReport {
                    outcome: trade_state_outcome(state, t.transaction_id),
                    amount_minor: amount.total,
                    currency: amount.currency.or_else(|| Some("CNY".into())),
                },
                None => report(unknown("query answer without trade_state")),
            }
        }
        Ok(t) => report(unknown(format!("answer is about {:?}", t.out_trade_no))),
        Err(e) => report(unknown(format!("unparsable query answer: {e}"))),
    }
}

/// The answer to close (`204` when closed).
pub fn parse_close(
    config: &WechatpayConfig,
    resp: &OutboundResponse,
    now_unix_s: i64,
) -> ActionOutcome {
    match verify_answer(config, resp, now_unix_s) {
        Ok(Verified::Ok(_)) => ActionOutcome::Done,
        Ok(Verified::Refused(e)) if e.code == "ORDERPAID" || e.code == "ORDER_PAID" => {
            ActionOutcome::Declined {
                code: e.code,
                message: e.message,
            }
        }
        Ok(Verified::Refused(e)) => ActionOutcome::Unknown {
            detail: format!("close refused: {} {}", e.code, e.message),
        },
        Err(detail) => ActionOutcome::Unknown { detail },
    }
}

/// The success body of a reverse (the domestic page documents 200 with the order's
/// `appid`, `mchid` and `out_trade_no`; its cross-border siblings answer 204, no body).
#[derive(Deserialize)]
struct ReverseAnswer {
    #[serde(default)]
    mchid: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
}

/// The answer to a reverse of `payment`, received at `now_ms`.
///
/// What WeChat Pay documents, in our words:
/// * success: HTTP 200 with a body naming the order (`appid`, `mchid`, `out_trade_no`)
///   on the domestic direct-merchant page
///   (<https://pay.weixin.qq.com/docs/merchant/apis/code-payment-v3/direct/reverse.html>);
///   the cross-border v3 reverse answers 204 without a body
///   (<https://pay.weixin.qq.com/wiki/doc/api_external/ch/apis/chapter3_1_7.shtml>).
///   Either is done once its `Wechatpay-*` signature verifies (an unsigned 2xx is
///   forged, as for every answer); a body about another order or merchant is not;
/// * reverse closes an unpaid order and refunds a paid one, within 7 days of the order
///   only (older: the refund API; v2 calls that refusal `REVERSE_EXPIRE`), and is to
///   be called again when it gave no answer or an error
///   (<https://pay.weixin.qq.com/doc/v2/merchant/4011937125>,
///   <https://pay.weixin.qq.com/doc/v2/merchant/4011937361>): a repeat must be
///   harmless, so an order already revoked, or closed unpaid (`ORDER_CLOSED`, "no need
///   to ask again" on the cross-border reverse,
///   <https://pay.weixin.qq.com/wiki/doc/api_external/ch/apis/chapter5_1_10.shtml>),
///   is done;
/// * `SYSTEM_ERROR` (500) means try again, like a payer still confirming.
///
/// "No such order" is done only once no codepay request can still create it
/// ([`CREATE_IN_FLIGHT_MS`] after [`Payment::engaged_at_ms`]); before, that create may
/// be in flight and the order about to take money.
pub fn parse_reverse(
    config: &WechatpayConfig,
    resp: &OutboundResponse,
    payment: &Payment,
    now_ms: i64,
) -> ActionOutcome {
    match verify_answer(config, resp, now_ms.div_euclid(1000)) {
        Ok(Verified::Ok(body)) => reverse_success(config, &body, &payment.id),
        Ok(Verified::Refused(e)) => reverse_refusal(e, payment, now_ms),
        Err(detail) => ActionOutcome::Unknown { detail },
    }
}

/// A verified 2xx to a reverse: done, unless its body is about another order.
fn reverse_success(config: &WechatpayConfig, body: &[u8], payment_id: &str) -> ActionOutcome {
    if body.iter().all(u8::is_ascii_whitespace) {
        return ActionOutcome::Done;
    }
    match serde_json::from_slice::<ReverseAnswer>(body) {
        Ok(a) if a.out_trade_no.as_deref().is_some_and(|id| id != payment_id) => {
            ActionOutcome::Unknown {
                detail: format!("reverse answer is about {:?}", a.out_trade_no),
            }
        }
        Ok(a) if a.mchid.as_deref().is_some_and(|m| m != config.mchid) => ActionOutcome::Unknown {
            detail: format!("reverse answer is about merchant {:?}", a.mchid),
        },
        Ok(_) => ActionOutcome::Done,
        Err(e) => ActionOutcome::Unknown {
            detail: format!("unparsable reverse answer: {e}"),
        },
    }
}

/// Error codes of a reverse that refuse it for good: too old to reverse (refund
/// instead), paid and not reversible, or a request WeChat Pay will never take
/// (parameters, merchant/AppID binding, missing permission).
const REVERSE_REFUSED: [&str; 9] = [
    "REVERSE_EXPIRE",
    "ORDER_PAID",
    "ORDERPAID",
    "INVALID_REQUEST",
    "PARAM_ERROR",
    "APPID_MCHID_NOT_MATCH",
    "MCH_NOT_EXISTS",
    "NO_AUTH",
    "NOAUTH",
];

/// Error codes saying the order is already revoked or closed unpaid: nothing can be
/// paid any more and nothing paid is kept.
const REVERSE_ALREADY_DONE: [&str; 4] = [
    "ORDER_REVERSED",
    "ORDERREVERSED",
    "ORDER_CLOSED",
    "ORDERCLOSED",
];

/// Error codes saying WeChat Pay has no such order.
const REVERSE_NO_ORDER: [&str; 4] = [
    "ORDER_NOT_EXIST",
    "ORDERNOTEXIST",
    "NOT_FOUND",
    "RESOURCE_NOT_EXISTS",
];

/// A signed 4xx to a reverse. `SYSTEM_ERROR`, `USERPAYING`, `SIGN_ERROR` (a clock or a
/// key being rotated), rate limits and codes not listed here say nothing for sure:
/// unknown, asked again later.
fn reverse_refusal(e: ErrorBody, payment: &Payment, now_ms: i64) -> ActionOutcome {
    let code = e.code.as_str();
    if REVERSE_ALREADY_DONE.contains(&code) {
        return ActionOutcome::Done;
    }
    if REVERSE_NO_ORDER.contains(&code) {
        let settled_at_ms = payment.engaged_at_ms().saturating_add(CREATE_IN_FLIGHT_MS);
        if now_ms >= settled_at_ms {
            return ActionOutcome::Done;
        }
        return ActionOutcome::Unknown {
            detail: format!(
                "reverse found no order ({code}) while its create may still be in flight: \
                 asked again after {settled_at_ms} (ms)"
            ),
        };
    }
    if REVERSE_REFUSED.contains(&code) {
        return ActionOutcome::Declined {
            code: e.code,
            message: e.message,
        };
    }
    ActionOutcome::Unknown {
        detail: format!("reverse refused: {} {}", e.code, e.message),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RefundAnswer {
    #[serde(default)]
    out_refund_no: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    amount: Option<StatedRefundAmount>,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    refund_status: Option<String>,
    #[serde(default)]
    mchid: Option<String>,
}

/// A refund's `amount` object (fen); `refund` is this refund's own amount.
#[derive(Debug, Clone, Default, Deserialize)]
struct StatedRefundAmount {
    #[serde(default)]
    refund: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

/// The answer to a refund or refund query.
pub fn parse_refund(
    config: &WechatpayConfig,
    resp: &OutboundResponse,
    refund_id: &str,
    now_unix_s: i64,
) -> RefundOutcome {
    let body = match verify_answer(config, resp, now_unix_s) {
        Ok(Verified::Ok(body)) => body,
        Ok(Verified::Refused(e)) => {
            return match classify_error(&e.code) {
                ErrorClass::Refused => RefundOutcome::Failed {
                    code: e.code,
                    message: e.message,
                },
                ErrorClass::Waiting | ErrorClass::Indeterminate => RefundOutcome::Unknown {
                    detail: format!("refund refused: {} {}", e.code, e.message),
                },
            };
        }
        Err(detail) => return RefundOutcome::Unknown { detail },
    };
    match serde_json::from_slice::<RefundAnswer>(&body) {
        Ok(r) if r.out_refund_no.as_deref() == Some(refund_id) => match r.status {
            Some(status) => refund_status_outcome(&status, r.refund_id),
            None => RefundOutcome::Unknown {
                detail: "refund answer without status".into(),
            },
        },
        Ok(r) => RefundOutcome::Unknown {
            detail: format!("answer is about refund {:?}", r.out_refund_no),
        },
        Err(e) => RefundOutcome::Unknown {
            detail: format!("unparsable refund answer: {e}"),
        },
    }
}

#[derive(Deserialize)]
struct CallbackEnvelope {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    resource_type: String,
    resource: CallbackResource,
}

#[derive(Deserialize)]
struct CallbackResource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

/// A verified, decrypted callback in the core's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatNotification {
    /// What it says.
    pub kind: WechatNotificationKind,
    /// Claim this in key-value for [`super::REPLAY_KEY_TTL_S`]: built from the signed
    /// timestamp and nonce, so a captured callback replayed inside the window is caught.
    pub replay_key: String,
}

/// Payment or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WechatNotificationKind {
    /// `TRANSACTION.*`.
    Payment(PaymentNotification),
    /// `REFUND.*`.
    Refund(RefundNotification),
}

/// Verifies the headers, decrypts the resource and maps it.
pub fn parse_callback(
    config: &WechatpayConfig,
    headers: &[(String, String)],
    body: &[u8],
    now_unix_s: i64,
) -> Result<WechatNotification, NotificationRejected> {
    let malformed = |m: String| NotificationRejected::Malformed(m);
    if body.len() > CALLBACK_BYTES_MAX {
        return Err(malformed("body too large".into()));
    }
    let (ts, nonce) = verify_signature(config, headers, body, now_unix_s).map_err(|e| match e {
        SignatureError::Stale => NotificationRejected::Stale,
        other => NotificationRejected::Signature(format!("{other:?}")),
    })?;
    let env: CallbackEnvelope =
        serde_json::from_slice(body).map_err(|e| malformed(format!("envelope: {e}")))?;
    if env.resource_type != "encrypt-resource" || env.resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(malformed(format!(
            "resource_type {:?} / algorithm {:?}",
            env.resource_type, env.resource.algorithm
        )));
    }
    let nonce_bytes: [u8; 12] = env
        .resource
        .nonce
        .as_bytes()
        .try_into()
        .map_err(|_| malformed("resource.nonce must be 12 bytes".into()))?;
    let ciphertext = decode_b64_lenient(&env.resource.ciphertext)
        .ok_or_else(|| malformed("resource.ciphertext is not base64".into()))?;
    let plain = aes256gcm_open(
        config.apiv3_key.expose(),
        &nonce_bytes,
        env.resource.associated_data.as_bytes(),
        &ciphertext,
    )
    .ok_or_else(|| malformed("resource does not decrypt with the APIv3 key".into()))?;
    let kind = if env.event_type.starts_with("TRANSACTION.") {
        WechatNotificationKind::Payment(payment_callback(config, &plain)?)
    } else if env.event_type.starts_with("REFUND.") {
        WechatNotificationKind::Refund(refund_callback(config, &plain)?)
    } else {
        return Err(malformed(format!("event_type {:?}", env.event_type)));
    };
    Ok(WechatNotification {
        kind,
        replay_key: replay_key("wechatpay", &format!("{ts}:{nonce}")),
    })
}

/// A decrypted callback resource must name this configuration's merchant.
fn check_callback_mchid(
    config: &WechatpayConfig,
    mchid: Option<&str>,
) -> Result<(), NotificationRejected> {
    if mchid != Some(config.mchid.as_str()) {
        return Err(NotificationRejected::WrongMerchant(format!(
            "mchid {mchid:?}"
        )));
    }
    Ok(())
}

/// A field a callback resource must carry; its absence is a malformed notification.
fn required<T>(value: Option<T>, field: &str) -> Result<T, NotificationRejected> {
    value.ok_or_else(|| NotificationRejected::Malformed(format!("{field} missing")))
}

fn payment_callback(
    config: &WechatpayConfig,
    plain: &[u8],
) -> Result<PaymentNotification, NotificationRejected> {
    let t: Transaction = serde_json::from_slice(plain)
        .map_err(|e| NotificationRejected::Malformed(format!("transaction: {e}")))?;
    check_callback_mchid(config, t.mchid.as_deref())?;
    let payment_id = required(t.out_trade_no, "out_trade_no")?;
    let state = required(t.trade_state, "trade_state")?;
    let amount = t.amount.unwrap_or_default();
    Ok(PaymentNotification {
        channel: Channel::Wechatpay,
        payment_id,
        report: ChannelReport {
            outcome: trade_state_outcome(&state, t.transaction_id),
            amount_minor: amount.total,
            currency: amount.currency.or_else(|| Some("CNY".into())),
        },
    })
}

fn refund_callback(
    config: &WechatpayConfig,
    plain: &[u8],
) -> Result<RefundNotification, NotificationRejected> {
    let r: RefundAnswer = serde_json::from_slice(plain)
        .map_err(|e| NotificationRejected::Malformed(format!("refund: {e}")))?;
    check_callback_mchid(config, r.mchid.as_deref())?;
    let refund_id = required(r.out_refund_no, "out_refund_no")?;
    let status = required(r.refund_status, "refund_status")?;
    let amount = r.amount.unwrap_or_default();
    Ok(RefundNotification {
        channel: Channel::Wechatpay,
        refund_id,
        payment_id: r.out_trade_no,
        amount_minor: amount.refund,
        currency: amount.currency,
        outcome: refund_status_outcome(&status, r.refund_id),
    })
}

/// The success answer to a callback: HTTP 204, empty body.
pub const CALLBACK_ACK_STATUS: u16 = 204;

/// The failure answer to a refused callback: (status, `{"code":"FAIL","message":…}`).
/// Signature problems are 401, the rest 400; WeChat Pay retries either.
pub fn callback_failure(rejected: &NotificationRejected) -> (u16, String) {
    let status = match rejected {
        NotificationRejected::Signature(_) | NotificationRejected::Stale => 401,
        NotificationRejected::WrongMerchant(_) | NotificationRejected::Malformed(_) => 400,
    };
    let body = serde_json::json!({ "code": "FAIL", "message": rejected.to_string() });
    (status, body.to_string())
}
