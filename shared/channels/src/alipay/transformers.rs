//! Pure Alipay transformers: signed requests, verified answers, verified notifications,
//! and the status mapping ([`trade_status_outcome`], [`classify_code`]). No I/O, no
//! clock, no randomness of their own: `now_unix_s` and the RNG for RSA blinding come
//! from the caller.

use rsa::rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use spinpay_core::model::{CaptureMode, Channel, NextAction, Payment, PaymentMethod, Refund};
use spinpay_core::money::Currency;
use spinpay_core::service::{
    ActionOutcome, CLOSED_UNPAID_CODE, ChannelOutcome, ChannelReport, PaymentNotification,
    RefundNotification, RefundOutcome,
};
use spinpay_guest::outbound::OutboundResponse;

use super::amount::{format_major, parse_major};
use super::{AlipayConfig, NotificationRejected, RequestError};
use crate::crypto::{
    BeijingTime, canonical_pairs, form_body, form_decode, form_get, replay_key,
    verification_strings,
};
use crate::wiring::EXPIRY_MARGIN_MS;

/// Longest notification body accepted, bytes.
pub const NOTIFY_BYTES_MAX: usize = 16 * 1024;
/// Longest `subject` Alipay accepts, characters.
pub const SUBJECT_CHARS_MAX: usize = 256;
/// Longest `qr_code_timeout_express` that counts, minutes: Alipay closes a face-to-face
/// order 2 h after its QR code was made, whatever longer value is sent (precreate's
/// `qr_code_timeout_express`: "当面付场景最大有效期为2h", Alipay's Java SDK model
/// `AlipayTradePrecreateModel`, 2021-03-17). Shortest is `1m`.
pub const QR_CODE_TIMEOUT_MINUTES_MAX: i64 = 120;
/// The decline code of a cancel refused because Alipay has not created the trade yet
/// (nobody scanned the QR code or opened the order), so its order stays payable.
pub const STILL_PAYABLE_CODE: &str = "order_still_payable";
/// The API that revokes a customer-presented-code trade ([`cancel_request`]).
pub const CANCEL_API: &str = "alipay.trade.cancel";

/// A signed gateway call: POST [`AlipayRequest::form_body`] to the gateway as
/// `application/x-www-form-urlencoded; charset=utf-8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayRequest {
    /// The API, e.g. `alipay.trade.precreate`.
    pub method: &'static str,
    /// Every parameter, `sign` last.
    pub params: Vec<(String, String)>,
}

impl AlipayRequest {
    /// The form body.
    pub fn form_body(&self) -> String {
        form_body(&self.params)
    }

    /// The JSON key of the answer, e.g. `alipay_trade_precreate_response`.
    pub fn response_key(&self) -> String {
        format!("{}_response", self.method.replace('.', "_"))
    }
}

/// What authorizing a payment takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlipayAuthorize {
    /// Call the gateway, then [`parse_authorize`].
    Call(AlipayRequest),
    /// Nothing to call: the customer continues in the browser or wallet (h5, app).
    Ready(ChannelOutcome),
}

/// Signs `biz_content` (already JSON) for `method`: common parameters plus `extra`,
/// byte-sorted, signed over every non-empty parameter except `sign`.
pub fn sign_params(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    method: &'static str,
    biz_content: String,
    extra: &[(&str, &str)],
    now_unix_s: i64,
) -> AlipayRequest {
    let mut params: Vec<(String, String)> = vec![
        ("app_id".into(), config.app_id.clone()),
        ("method".into(), method.into()),
        ("format".into(), "JSON".into()),
        ("charset".into(), "utf-8".into()),
        ("sign_type".into(), "RSA2".into()),
        (
            "timestamp".into(),
            BeijingTime::from_unix_s(now_unix_s).dashed(),
        ),
        ("version".into(), "1.0".into()),
        ("biz_content".into(), biz_content),
    ];
    for (k, v) in extra {
        if !v.is_empty() {
            params.push(((*k).into(), (*v).into()));
        }
    }
    params.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let canonical = canonical_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &[]);
    let sign = config.app_key.sign_sha256_b64(rng, canonical.as_bytes());
    params.push(("sign".into(), sign));
    AlipayRequest { method, params }
}

#[derive(Serialize)]
struct TradeBiz<'a> {
    out_trade_no: &'a str,
    total_amount: String,
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trans_currency: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scene: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quit_url: Option<&'a str>,
    /// Absolute expiry (`yyyy-MM-dd HH:mm:ss`, Beijing time) of the order: Alipay refuses
    /// to take payment for it afterwards. Every order carries it (see [`authorize`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    /// precreate: how long the QR code can be paid, counted by Alipay from when it made
    /// it ([`qr_code_timeout_express`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_code_timeout_express: Option<String>,
}

/// Builds what authorizing `payment` with its unsealed `method` takes.
pub fn authorize(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    method: &PaymentMethod,
    now_unix_s: i64,
) -> Result<AlipayAuthorize, RequestError> {
    if payment.capture == CaptureMode::Manual {
        return Err(RequestError::ManualCaptureUnsupported);
    }
    if !config.currencies.contains(&payment.currency) {
        return Err(RequestError::CurrencyUnsupported(payment.currency.code()));
    }
    let amount = payment.state.amount_minor;
    let total_amount = match format_major(amount, payment.currency) {
        Some(t) if amount > 0 => t,
        Some(_) | None => return Err(RequestError::Amount(amount)),
    };
    let mut biz = TradeBiz {
        out_trade_no: &payment.id,
        total_amount,
        subject: subject(payment),
        trans_currency: (payment.currency != Currency::Cny).then(|| payment.currency.code()),
        product_code: None,
        scene: None,
        auth_code: None,
        quit_url: None,
        time_expire: None,
        qr_code_timeout_express: None,
    };
    let notify = config.notify_url.as_deref().unwrap_or("");
    let (api, extra_return) = match method {
        PaymentMethod::QrMerchant => {
            // The precreate model documents no time_expire: bound the QR code itself.
            // The end of the (truncated) current second bounds the real time from above.
            let now_ms = now_unix_s.saturating_add(1).saturating_mul(1000);
            let minutes = qr_code_timeout_express(payment.expires_at_ms(), now_ms);
            biz.qr_code_timeout_express = Some(minutes);
            ("alipay.trade.precreate", None)
        }
        PaymentMethod::QrCustomer { auth_code } => {
            biz.scene = Some("bar_code");
            biz.auth_code = Some(auth_code);
            ("alipay.trade.pay", None)
        }
        PaymentMethod::SoundWave { token } => {
            biz.scene = Some("wave_code");
            biz.auth_code = Some(token);
            ("alipay.trade.pay", None)
        }
        PaymentMethod::H5 { return_url } => {
            biz.product_code = Some("QUICK_WAP_WAY");
            biz.quit_url = Some(return_url);
            ("alipay.trade.wap.pay", Some(return_url.as_str()))
        }
        PaymentMethod::App => {
            biz.product_code = Some("QUICK_MSECURITY_PAY");
            ("alipay.trade.app.pay", None)
        }
        PaymentMethod::Nfc { .. } => return Err(RequestError::MethodUnsupported("nfc")),
        PaymentMethod::SmsOtp { .. } => return Err(RequestError::MethodUnsupported("sms_otp")),
    };
    // Every order carries the payment's expiry: those that wait for their customer
    // (precreate, wap, app), and a customer-presented code too, which waits when its
    // payer must confirm in the wallet (10003, WAIT_BUYER_PAY). Without it such a pay
    // trade stays payable for Alipay's face-to-face default (3 h: the `timeout_express`
    // note of the Java SDK's `AlipayTradePayModel`, which documents `time_expire` for
    // pay as well), long after the payment has expired and been given up here.
    biz.time_expire = Some(BeijingTime::from_unix_ms(payment.expires_at_ms()).dashed());
    let biz_json = serde_json::to_string(&biz).expect("biz content serializes");
    let extra = [
        ("notify_url", notify),
        ("return_url", extra_return.unwrap_or("")),
    ];
    let req = sign_params(config, rng, api, biz_json, &extra, now_unix_s);
    Ok(match method {
        PaymentMethod::H5 { .. } => AlipayAuthorize::Ready(ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::Redirect {
                url: format!("{}?{}", config.gateway_url, req.form_body()),
            }),
        }),
        PaymentMethod::App => AlipayAuthorize::Ready(ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::AppOrder {
                order_string: req.form_body(),
            }),
        }),
        PaymentMethod::QrMerchant
        | PaymentMethod::QrCustomer { .. }
        | PaymentMethod::SoundWave { .. }
        | PaymentMethod::Nfc { .. }
        | PaymentMethod::SmsOtp { .. } => AlipayAuthorize::Call(req),
    })
}

/// precreate's `qr_code_timeout_express` at `now_ms` for a payment that expires at
/// `expires_at_ms`: the whole minutes left, rounded down so that the QR code does not
/// outlive the payment (Alipay counts from when it makes the code, a call's latency
/// later: [`EXPIRY_MARGIN_MS`] covers that), at least `1m`, at most
/// [`QR_CODE_TIMEOUT_MINUTES_MAX`].
pub fn qr_code_timeout_express(expires_at_ms: i64, now_ms: i64) -> String {
    let minutes = expires_at_ms.saturating_sub(now_ms) / 60_000;
    format!("{}m", minutes.clamp(1, QR_CODE_TIMEOUT_MINUTES_MAX))
}

/// The order's `subject`: the payment's description, cut to [`SUBJECT_CHARS_MAX`], with
/// the characters Alipay refuses in it (`/`, `=`, `&`: "不可使用特殊字符，如 /，=，& 等")
/// turned into spaces, so a description never fails the payment.
pub fn subject(payment: &Payment) -> String {
    let base = payment
        .description
        .clone()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| format!("spinpay {}", payment.id));
    base.chars()
        .take(SUBJECT_CHARS_MAX)
        .map(|c| if matches!(c, '/' | '=' | '&') { ' ' } else { c })
        .collect()
}

#[derive(Serialize)]
struct TradeRef<'a> {
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_request_no: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_reason: Option<&'a str>,
}

fn trade_ref(payment_id: &str) -> TradeRef<'_> {
    TradeRef {
        out_trade_no: payment_id,
        out_request_no: None,
        refund_amount: None,
        refund_reason: None,
    }
}

fn simple(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    api: &'static str,
    biz: &TradeRef<'_>,
    now_unix_s: i64,
) -> AlipayRequest {
    let json = serde_json::to_string(biz).expect("biz content serializes");
    sign_params(config, rng, api, json, &[], now_unix_s)
}

/// `alipay.trade.query` by our payment id.
pub fn query_request(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
) -> AlipayRequest {
    simple(
        config,
        rng,
        "alipay.trade.query",
        &trade_ref(payment_id),
        now_unix_s,
    )
}

/// `alipay.trade.close` (an unpaid trade).
pub fn close_request(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
) -> AlipayRequest {
    simple(
        config,
        rng,
        "alipay.trade.close",
        &trade_ref(payment_id),
        now_unix_s,
    )
}

/// Whether `method` is sent as `alipay.trade.pay` (a code the customer presents: barcode
/// or sound wave), whose trade is revoked with `alipay.trade.cancel` ([`cancel_request`]);
/// the other orders are closed with `alipay.trade.close` ([`close_request`]).
pub fn is_trade_pay(method: &PaymentMethod) -> bool {
    match method {
        PaymentMethod::QrCustomer { .. } | PaymentMethod::SoundWave { .. } => true,
        PaymentMethod::QrMerchant
        | PaymentMethod::H5 { .. }
        | PaymentMethod::App
        | PaymentMethod::Nfc { .. }
        | PaymentMethod::SmsOtp { .. } => false,
    }
}

/// `alipay.trade.cancel` (revoke a customer-presented-code trade whose outcome is not
/// known: Alipay closes it if unpaid, or returns the money and closes it if paid).
pub fn cancel_request(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    now_unix_s: i64,
) -> AlipayRequest {
    simple(config, rng, CANCEL_API, &trade_ref(payment_id), now_unix_s)
}

/// `alipay.trade.refund` with our refund id as `out_request_no` (idempotent per refund).
pub fn refund_request(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment: &Payment,
    refund: &Refund,
    now_unix_s: i64,
) -> Result<AlipayRequest, RequestError> {
    let amount = match format_major(refund.amount_minor, refund.currency) {
        Some(t) if refund.amount_minor > 0 => t,
        Some(_) | None => return Err(RequestError::Amount(refund.amount_minor)),
    };
    let biz = TradeRef {
        out_trade_no: &payment.id,
        out_request_no: Some(&refund.id),
        refund_amount: Some(amount),
        refund_reason: refund.reason.as_deref(),
    };
    Ok(simple(config, rng, "alipay.trade.refund", &biz, now_unix_s))
}

/// `alipay.trade.fastpay.refund.query` for one refund.
pub fn refund_query_request(
    config: &AlipayConfig,
    rng: &mut impl CryptoRngCore,
    payment_id: &str,
    refund_id: &str,
    now_unix_s: i64,
) -> AlipayRequest {
    let biz = TradeRef {
        out_request_no: Some(refund_id),
        ..trade_ref(payment_id)
    };
    simple(
        config,
        rng,
        "alipay.trade.fastpay.refund.query",
        &biz,
        now_unix_s,
    )
}

/// The fields of an answer object this adapter reads (Alipay adds others freely).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AlipayAnswer {
    /// `10000` success, `10003` waiting for the buyer, `40004` business failure, ...
    pub code: String,
    /// Message.
    #[serde(default)]
    pub msg: Option<String>,
    /// Business error code, e.g. `ACQ.TRADE_NOT_EXIST`.
    #[serde(default)]
    pub sub_code: Option<String>,
    /// Business error message.
    #[serde(default)]
    pub sub_msg: Option<String>,
    /// Our payment id.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number.
    #[serde(default)]
    pub trade_no: Option<String>,
    /// precreate: the QR payload.
    #[serde(default)]
    pub qr_code: Option<String>,
    /// query: the trade status.
    #[serde(default)]
    pub trade_status: Option<String>,
    /// query: the order amount.
    #[serde(default)]
    pub total_amount: Option<String>,
    /// Cross-border: the order currency.
    #[serde(default)]
    pub trans_currency: Option<String>,
    /// refund: `Y` if money moved in this call.
    #[serde(default)]
    pub fund_change: Option<String>,
    /// refund query: `REFUND_SUCCESS` once refunded.
    #[serde(default)]
    pub refund_status: Option<String>,
    /// refund query: our refund id.
    #[serde(default)]
    pub out_request_no: Option<String>,
    /// cancel: `Y` when Alipay asks for the cancel to be sent again.
    #[serde(default)]
    pub retry_flag: Option<String>,
    /// cancel: what it did, `close` (unpaid trade closed) or `refund` (paid trade's money
    /// returned); absent when Alipay found no trade.
    #[serde(default)]
    pub action: Option<String>,
}

/// Verifies an answer's `sign` over the raw text of its `<response_key>` object and
/// parses that object. `Err(detail)` = unusable (HTTP error, unsigned, forged, garbage).
pub fn verify_answer(
    config: &AlipayConfig,
    response_key: &str,
    resp: &OutboundResponse,
) -> Result<AlipayAnswer, String> {
    if !(200..=299).contains(&resp.status) {
        return Err(format!("HTTP {} from Alipay", resp.status));
    }
    let body = std::str::from_utf8(&resp.body).map_err(|_| "answer is not UTF-8".to_string())?;
    let fields = top_level_raw(body)?;
    let raw = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let object = raw(response_key)
        .ok_or_else(|| format!("answer has no {response_key} (error_response or garbage)"))?;
    let sign_raw = raw("sign").ok_or_else(|| "unsigned answer".to_string())?;
    let sign: String =
        serde_json::from_str(sign_raw).map_err(|_| "sign is not a string".to_string())?;
    if !config
        .alipay_key
        .verify_sha256_b64(object.as_bytes(), &sign)
    {
        return Err("answer signature refused".into());
    }
    serde_json::from_str(object).map_err(|e| format!("unparsable {response_key}: {e}"))
}

/// How an answer's `code` (and `sub_code`) classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// `10000`: the call succeeded.
    Success,
    /// `10003`: the buyer is still confirming (pay).
    Waiting,
    /// A definitive refusal of this request (`40004` business failure with a known
    /// sub_code, or a rejected request: `20001`, `40001`, `40002`, `40003`, `40006`).
    Refused,
    /// Anything that does not tell what happened (`20000`, `ACQ.SYSTEM_ERROR`, unknown
    /// codes): resolve by query or notification.
    Indeterminate,
}

/// Sub-codes of `40004` that do not settle the question (system trouble, or a state
/// the query must confirm). `AQC.SYSTEM_ERROR` (sic) is listed as a system error, to be
/// retried with the same parameters, in cancel's error table.
const SUB_CODES_INDETERMINATE: [&str; 5] = [
    "ACQ.SYSTEM_ERROR",
    "ACQ.TRADE_HAS_SUCCESS",
    "ACQ.TRADE_NOT_EXIST",
    "AQC.SYSTEM_ERROR",
    "aop.ACQ.SYSTEM_ERROR",
];

/// The one place Alipay's `code` is interpreted.
pub fn classify_code(code: &str, sub_code: Option<&str>) -> CodeClass {
    match code {
        "10000" => CodeClass::Success,
        "10003" => CodeClass::Waiting,
        "40004" => match sub_code {
            Some(s) if SUB_CODES_INDETERMINATE.contains(&s) => CodeClass::Indeterminate,
            Some(_) => CodeClass::Refused,
            None => CodeClass::Indeterminate,
        },
        "20001" | "40001" | "40002" | "40003" | "40006" => CodeClass::Refused,
        _ => CodeClass::Indeterminate,
    }
}

/// Alipay's trade states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeStatus {
    /// Created, waiting for the buyer.
    WaitBuyerPay,
    /// Paid (refundable).
    TradeSuccess,
    /// Paid and no longer refundable.
    TradeFinished,
    /// Closed unpaid, or fully refunded.
    TradeClosed,
}

impl TradeStatus {
    /// Parses a documented state; `None` for anything else.
    pub fn parse(text: &str) -> Option<TradeStatus> {
        match text {
            "WAIT_BUYER_PAY" => Some(TradeStatus::WaitBuyerPay),
            "TRADE_SUCCESS" => Some(TradeStatus::TradeSuccess),
            "TRADE_FINISHED" => Some(TradeStatus::TradeFinished),
            "TRADE_CLOSED" => Some(TradeStatus::TradeClosed),
            _ => None,
        }
    }
}

/// The status mapping: a trade state (as text) → the core's outcome. An unknown state
/// is [`ChannelOutcome::Unknown`]: the payment stays `processing`.
pub fn trade_status_outcome(status: &str, channel_ref: Option<String>) -> ChannelOutcome {
    match TradeStatus::parse(status) {
        Some(TradeStatus::WaitBuyerPay) => ChannelOutcome::Pending {
            channel_ref,
            next_action: None,
        },
        Some(TradeStatus::TradeSuccess | TradeStatus::TradeFinished) => {
            ChannelOutcome::Succeeded { channel_ref }
        }
        Some(TradeStatus::TradeClosed) => ChannelOutcome::Declined {
            code: CLOSED_UNPAID_CODE.into(),
            message: "the trade was closed at Alipay".into(),
        },
        None => unknown(format!("unknown Alipay trade_status {status:?}")),
    }
}

fn unknown(detail: impl Into<String>) -> ChannelOutcome {
    ChannelOutcome::Unknown {
        detail: detail.into(),
    }
}

fn refused(a: &AlipayAnswer) -> ChannelOutcome {
    ChannelOutcome::Declined {
        code: a.sub_code.clone().unwrap_or_else(|| a.code.clone()),
        message: a
            .sub_msg
            .clone()
            .or_else(|| a.msg.clone())
            .unwrap_or_else(|| "refused by Alipay".into()),
    }
}

fn about_other(a: &AlipayAnswer, payment_id: &str) -> bool {
    a.out_trade_no.as_deref().is_some_and(|o| o != payment_id)
}

/// The answer to `precreate` or `pay`.
pub fn parse_authorize(
    config: &AlipayConfig,
    request: &AlipayRequest,
    resp: &OutboundResponse,
    payment_id: &str,
) -> ChannelOutcome {
    let a = match verify_answer(config, &request.response_key(), resp) {
        Ok(a) => a,
        Err(detail) => return unknown(detail),
    };
    if about_other(&a, payment_id) {
        return unknown(format!("answer is about {:?}", a.out_trade_no));
    }
    let channel_ref = a.trade_no.clone();
    match (
        classify_code(&a.code, a.sub_code.as_deref()),
        request.method,
    ) {
        (CodeClass::Success, "alipay.trade.precreate") => match a.qr_code.clone() {
            Some(qr) if !qr.is_empty() => ChannelOutcome::Pending {
                channel_ref,
                next_action: Some(NextAction::DisplayQr { qr_payload: qr }),
            },
            Some(_) | None => unknown("precreate answer without qr_code"),
        },
        (CodeClass::Success, _) => ChannelOutcome::Succeeded { channel_ref },
        (CodeClass::Waiting, _) => ChannelOutcome::Pending {
            channel_ref,
            next_action: None,
        },
        (CodeClass::Refused, _) => refused(&a),
        (CodeClass::Indeterminate, _) => unknown(format!(
            "Alipay code {} {:?}",
            a.code,
            a.sub_code.as_deref().unwrap_or("")
        )),
    }
}

/// The answer to `alipay.trade.query`, with the amount and currency Alipay states.
pub fn parse_query(
    config: &AlipayConfig,
    resp: &OutboundResponse,
    payment_id: &str,
) -> ChannelReport {
    let report = |outcome| ChannelReport {
        outcome,
        amount_minor: None,
        currency: None,
    };
    let a = match verify_answer(config, "alipay_trade_query_response", resp) {
        Ok(a) => a,
        Err(detail) => return report(unknown(detail)),
    };
    if about_other(&a, payment_id) {
        return report(unknown(format!("answer is about {:?}", a.out_trade_no)));
    }
    match classify_code(&a.code, a.sub_code.as_deref()) {
        CodeClass::Success => {}
        // "Trade does not exist" may mean "not scanned yet": never guess.
        CodeClass::Waiting | CodeClass::Refused | CodeClass::Indeterminate => {
            return report(unknown(format!(
                "query answered {} {:?}",
                a.code,
                a.sub_code.as_deref().unwrap_or("")
            )));
        }
    }
    let Some(status) = a.trade_status.as_deref() else {
        return report(unknown("query answer without trade_status"));
    };
    match stated_amount(a.total_amount.as_deref(), a.trans_currency.as_deref()) {
        Ok((amount_minor, currency)) => ChannelReport {
            outcome: trade_status_outcome(status, a.trade_no.clone()),
            amount_minor,
            currency,
        },
        Err(detail) => report(unknown(detail)),
    }
}

/// The amount and currency a message states (`trans_currency`, else CNY).
fn stated_amount(
    total: Option<&str>,
    trans_currency: Option<&str>,
) -> Result<(Option<i64>, Option<String>), String> {
    let code = trans_currency.filter(|c| !c.is_empty()).unwrap_or("CNY");
    let currency = Currency::parse(code).ok_or_else(|| format!("unsupported currency {code:?}"))?;
    let amount = match total {
        Some(t) => Some(parse_major(t, currency).ok_or_else(|| format!("bad amount {t:?}"))?),
        None => None,
    };
    Ok((amount, Some(currency.code().to_string())))
}

/// The answer to `alipay.trade.close` about `payment`, received at `now_ms`.
pub fn parse_close(
    config: &AlipayConfig,
    resp: &OutboundResponse,
    payment: &Payment,
    now_ms: i64,
) -> ActionOutcome {
    let a = match verify_answer(config, "alipay_trade_close_response", resp) {
        Ok(a) => a,
        Err(detail) => return ActionOutcome::Unknown { detail },
    };
    match (a.code.as_str(), a.sub_code.as_deref()) {
        ("10000", _) => ActionOutcome::Done,
        ("40004", Some("ACQ.TRADE_NOT_EXIST")) => close_of_no_trade(payment, now_ms),
        ("40004", Some(sub @ "ACQ.TRADE_STATUS_ERROR")) => ActionOutcome::Declined {
            code: sub.into(),
            message: a
                .sub_msg
                .unwrap_or_else(|| "the trade cannot be closed".into()),
        },
        (code, sub) => ActionOutcome::Unknown {
            detail: format!("close answered {code} {:?}", sub.unwrap_or("")),
        },
    }
}

/// What a close answered "no such trade" (`ACQ.TRADE_NOT_EXIST`) comes to at `now_ms`.
/// Alipay creates a precreate, wap or app trade only when the customer scans the QR code
/// or opens the order, which stays payable until it expires (`time_expire`,
/// `qr_code_timeout_express`): before `payment`'s expiry the cancel is refused; once it
/// has expired more than [`EXPIRY_MARGIN_MS`] ago (room for Alipay's clock and the QR
/// code's later start) nobody can pay it any more: done; in between, left undecided to
/// be tried again (reconciliation closes at expiry and retries an unanswered close).
pub fn close_of_no_trade(payment: &Payment, now_ms: i64) -> ActionOutcome {
    let expires_at_ms = payment.expires_at_ms();
    if now_ms < expires_at_ms {
        return ActionOutcome::Declined {
            code: STILL_PAYABLE_CODE.into(),
            message: format!(
                "Alipay has not created the trade yet (nobody has scanned the QR code or \
                 opened the order), so it cannot be closed; the order stays payable at \
                 Alipay until it expires at {expires_at_ms} (expires_at_ms)"
            ),
        };
    }
    if now_ms < expires_at_ms.saturating_add(EXPIRY_MARGIN_MS) {
        return ActionOutcome::Unknown {
            detail: "the order expired at Alipay moments ago: asked again later".into(),
        };
    }
    ActionOutcome::Done
}

/// The answer to `alipay.trade.cancel` about `payment`, received at `now_ms`.
///
/// Alipay's documentation of the answer: `retry_flag` says whether the cancel must be
/// sent again; `action` is `close` (the unpaid trade was closed) or `refund` (the paid
/// trade's money went back to the payer), and is left out when no trade was found. Its
/// F2F demo SDK retries while `retry_flag` is `Y`, whatever the code. So:
///
/// * `retry_flag` `Y` → unknown (asked again);
/// * `10000` with `action` `close` or `refund` → done (a repeat answers the same);
/// * no trade (`10000` without `action`, or `ACQ.TRADE_NOT_EXIST`) →
///   [`cancel_of_no_trade`];
/// * a system error (`ACQ.SYSTEM_ERROR`, `AQC.SYSTEM_ERROR`, `20000`), another code or
///   `action`, an answer about another trade, or an unusable answer → unknown;
/// * any other refusal (`ACQ.TRADE_CANCEL_TIME_OUT`: too old to be revoked,
///   `ACQ.REASON_TRADE_BEEN_FREEZEN`, `ACQ.SELLER_BALANCE_NOT_ENOUGH`,
///   `ACQ.REASON_TRADE_REFUND_FEE_ERR`: already partly refunded, ...) → declined with
///   its `sub_code` and `sub_msg`.
pub fn parse_cancel(
    config: &AlipayConfig,
    resp: &OutboundResponse,
    payment: &Payment,
    now_ms: i64,
) -> ActionOutcome {
    let a = match verify_answer(config, "alipay_trade_cancel_response", resp) {
        Ok(a) => a,
        Err(detail) => return ActionOutcome::Unknown { detail },
    };
    let answered = || format!("cancel answered {} {:?}", a.code, a.sub_code.as_deref());
    if about_other(&a, &payment.id) {
        return ActionOutcome::Unknown {
            detail: format!("cancel answer is about {:?}", a.out_trade_no),
        };
    }
    if a.retry_flag.as_deref() == Some("Y") {
        return ActionOutcome::Unknown {
            detail: format!("{} with retry_flag Y: to be sent again", answered()),
        };
    }
    if a.code == "40004" && a.sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST") {
        return cancel_of_no_trade(payment, now_ms);
    }
    match classify_code(&a.code, a.sub_code.as_deref()) {
        CodeClass::Success => match a.action.as_deref() {
            Some("close" | "refund") => ActionOutcome::Done,
            None | Some("") => cancel_of_no_trade(payment, now_ms),
            Some(other) => ActionOutcome::Unknown {
                detail: format!("cancel answered 10000 with unknown action {other:?}"),
            },
        },
        CodeClass::Refused => ActionOutcome::Declined {
            code: a.sub_code.clone().unwrap_or_else(|| a.code.clone()),
            message: a
                .sub_msg
                .clone()
                .or_else(|| a.msg.clone())
                .unwrap_or_else(|| "Alipay refused to revoke the trade".into()),
        },
        CodeClass::Waiting | CodeClass::Indeterminate => {
            ActionOutcome::Unknown { detail: answered() }
        }
    }
}

/// What a cancel that found no trade (`ACQ.TRADE_NOT_EXIST`, or `10000` without an
/// `action`) comes to at `now_ms`. `alipay.trade.pay` creates its trade when Alipay
/// takes the request in, so a pay still on its way (sent when `payment` was engaged,
/// [`Payment::engaged_at_ms`], and answered late or never) could create the trade, and
/// take the money, after this cancel found none. Once the payment was engaged more than
/// [`EXPIRY_MARGIN_MS`] ago (room for the clocks and any request's life, as for
/// [`close_of_no_trade`]) no such request is left: done. Before that: undecided, asked
/// again later.
pub fn cancel_of_no_trade(payment: &Payment, now_ms: i64) -> ActionOutcome {
    let engaged_at_ms = payment.engaged_at_ms();
    if now_ms < engaged_at_ms.saturating_add(EXPIRY_MARGIN_MS) {
        return ActionOutcome::Unknown {
            detail: format!(
                "Alipay has no trade yet, but the pay sent at {engaged_at_ms} (engaged_at_ms) \
                 could still create it: asked again later"
            ),
        };
    }
    ActionOutcome::Done
}

/// The answer to `alipay.trade.refund`. `fund_change` `N` (a repeated call) is
/// `Pending`: the refund query confirms.
pub fn parse_refund(config: &AlipayConfig, resp: &OutboundResponse) -> RefundOutcome {
    let a = match verify_answer(config, "alipay_trade_refund_response", resp) {
        Ok(a) => a,
        Err(detail) => return RefundOutcome::Unknown { detail },
    };
    match classify_code(&a.code, a.sub_code.as_deref()) {
        CodeClass::Success if a.fund_change.as_deref() == Some("Y") => RefundOutcome::Succeeded {
            channel_ref: a.trade_no,
        },
        CodeClass::Success | CodeClass::Waiting => RefundOutcome::Pending {
            channel_ref: a.trade_no,
        },
        CodeClass::Refused => RefundOutcome::Failed {
            code: a.sub_code.unwrap_or(a.code),
            message: a
                .sub_msg
                .or(a.msg)
                .unwrap_or_else(|| "refund refused".into()),
        },
        CodeClass::Indeterminate => RefundOutcome::Unknown {
            detail: format!("refund answered {} {:?}", a.code, a.sub_code),
        },
    }
}

/// The answer to `alipay.trade.fastpay.refund.query`.
pub fn parse_refund_query(
    config: &AlipayConfig,
    resp: &OutboundResponse,
    refund_id: &str,
) -> RefundOutcome {
    let a = match verify_answer(config, "alipay_trade_fastpay_refund_query_response", resp) {
        Ok(a) => a,
        Err(detail) => return RefundOutcome::Unknown { detail },
    };
    if a.out_request_no.as_deref().is_some_and(|r| r != refund_id) {
        return RefundOutcome::Unknown {
            detail: format!("answer is about refund {:?}", a.out_request_no),
        };
    }
    match (
        classify_code(&a.code, a.sub_code.as_deref()),
        a.refund_status.as_deref(),
    ) {
        (CodeClass::Success, Some("REFUND_SUCCESS")) => RefundOutcome::Succeeded {
            channel_ref: a.trade_no,
        },
        // No refund_status: Alipay has not (yet) refunded; keep it pending.
        (CodeClass::Success, other) => RefundOutcome::Unknown {
            detail: format!("refund query: refund_status {other:?}"),
        },
        (CodeClass::Waiting | CodeClass::Refused | CodeClass::Indeterminate, _) => {
            RefundOutcome::Unknown {
                detail: format!("refund query answered {} {:?}", a.code, a.sub_code),
            }
        }
    }
}

/// A verified Alipay notification in the core's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayNotification {
    /// What it says.
    pub kind: AlipayNotificationKind,
    /// Claim this in key-value (see [`crate::crypto::replay_key`]); built from `notify_id`.
    pub replay_key: String,
}

/// Payment or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlipayNotificationKind {
    /// A trade state change.
    Payment(PaymentNotification),
    /// A refund (Alipay notifies refunds with `out_biz_no` = our refund id).
    Refund(RefundNotification),
}

/// Verifies and parses an async notification (form body): RSA2 over every field but
/// `sign` and `sign_type`, empty ones included, or over the same without the empty
/// ones (`crypto::verification_strings`); an empty field then reads as absent.
/// Accepted → answer [`super::NOTIFY_ACK`].
pub fn parse_notification(
    config: &AlipayConfig,
    body: &[u8],
) -> Result<AlipayNotification, NotificationRejected> {
    let malformed = |m: &str| NotificationRejected::Malformed(m.to_string());
    if body.len() > NOTIFY_BYTES_MAX {
        return Err(malformed("body too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    let pairs = form_decode(text).map_err(|e| NotificationRejected::Malformed(e.to_string()))?;
    let get = |name: &str| form_get(&pairs, name).filter(|v| !v.is_empty());
    match get("sign_type") {
        Some("RSA2") => {}
        other => {
            return Err(NotificationRejected::Signature(format!(
                "sign_type {other:?} (only RSA2 is accepted)"
            )));
        }
    }
    let sign = get("sign").ok_or_else(|| NotificationRejected::Signature("no sign".into()))?;
    // Alipay signs a notification over every parameter but sign and sign_type, empty
    // ones included (`k=`: its Java SDK's getSignCheckContentV1, python-alipay-sdk's
    // verify); the string without them is accepted too. Either covers every non-empty
    // field, and an empty one reads as absent (`get`).
    let verified = verification_strings(&pairs, &["sign", "sign_type"])
        .iter()
        .any(|canonical| {
            config
                .alipay_key
                .verify_sha256_b64(canonical.as_bytes(), sign)
        });
    if !verified {
        return Err(NotificationRejected::Signature("RSA2 signature".into()));
    }
    if get("app_id") != Some(config.app_id.as_str()) {
        return Err(NotificationRejected::WrongMerchant(format!(
            "app_id {:?}",
            get("app_id")
        )));
    }
    let notify_id = get("notify_id").ok_or_else(|| malformed("notify_id missing"))?;
    let payment_id = get("out_trade_no").ok_or_else(|| malformed("out_trade_no missing"))?;
    let trade_no = get("trade_no").map(str::to_string);
    let kind = match (get("out_biz_no"), get("refund_fee")) {
        // `refund_fee` is the trade's running refund total, not this refund's amount.
        (Some(refund_id), Some(_)) => AlipayNotificationKind::Refund(RefundNotification {
            channel: Channel::Alipay,
            refund_id: refund_id.to_string(),
            payment_id: Some(payment_id.to_string()),
            amount_minor: None,
            currency: None,
            outcome: RefundOutcome::Succeeded {
                channel_ref: trade_no,
            },
        }),
        (_, _) => {
            let status = get("trade_status").ok_or_else(|| malformed("trade_status missing"))?;
            let (amount_minor, currency) =
                stated_amount(get("total_amount"), get("trans_currency"))
                    .map_err(NotificationRejected::Malformed)?;
            AlipayNotificationKind::Payment(PaymentNotification {
                channel: Channel::Alipay,
                payment_id: payment_id.to_string(),
                report: ChannelReport {
                    outcome: trade_status_outcome(status, trade_no),
                    amount_minor,
                    currency,
                },
            })
        }
    };
    Ok(AlipayNotification {
        kind,
        replay_key: replay_key("alipay", notify_id),
    })
}

/// The top-level members of a JSON object as (decoded key, raw value text), the raw
/// text exactly as it appears in `body` (Alipay signs those bytes).
pub fn top_level_raw(body: &str) -> Result<Vec<(String, &str)>, String> {
    let bytes = body.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return Err("answer is not a JSON object".into());
    }
    i = skip_ws(bytes, i + 1);
    let mut out = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        let key_end = scan_value(bytes, i)?;
        let key: String = serde_json::from_str(&body[i..key_end])
            .map_err(|_| "bad member name in answer".to_string())?;
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return Err("expected ':' in answer".into());
        }
        let start = skip_ws(bytes, i + 1);
        let end = scan_value(bytes, start)?;
        out.push((key, &body[start..end]));
        i = skip_ws(bytes, end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return Ok(out),
            _ => return Err("expected ',' or '}' in answer".into()),
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// End (exclusive) of the JSON value starting at `start`.
fn scan_value(bytes: &[u8], start: usize) -> Result<usize, String> {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                (false, _) => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                b',' | b'}' | b']' if depth == 0 => return trimmed_end(bytes, start, i),
                _ => {}
            }
        }
        i += 1;
    }
    Err("truncated JSON answer".into())
}

fn trimmed_end(bytes: &[u8], start: usize, mut end: usize) -> Result<usize, String> {
    while end > start && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end == start {
        return Err("empty JSON value".into());
    }
    Ok(end)
}
