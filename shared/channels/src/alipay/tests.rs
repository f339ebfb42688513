use std::collections::BTreeMap;

use spinpay_core::machine::PaymentState;
use spinpay_core::model::{CaptureMode, Channel, NextAction, Payment, PaymentMethod};
use spinpay_core::money::Currency;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, RefundOutcome};
use spinpay_guest::outbound::OutboundResponse;

use super::transformers::*;
use super::{AlipayConfig, NotificationRejected, RequestError, SigningKey};
use crate::crypto::{
    canonical_pairs, canonical_pairs_with_empty, form_body, form_decode, form_get, test_key,
    test_rng,
};
use crate::wiring::EXPIRY_MARGIN_MS;

const NOW: i64 = 1_709_224_205; // 2024-03-01 00:30:05 Beijing
const PAY_ID: &str = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";

fn alipay_side() -> SigningKey {
    test_key(2)
}

pub(crate) fn config() -> AlipayConfig {
    AlipayConfig {
        app_id: "2021000000000001".into(),
        app_key: test_key(1),
        alipay_key: alipay_side().verifying_key(),
        gateway_url: "https://openapi.alipay.com/gateway.do".into(),
        notify_url: Some("https://pay.example.com/v1/webhooks/alipay".into()),
        currencies: vec![Currency::Cny, Currency::Jpy, Currency::Kwd, Currency::Hkd],
    }
}

/// A pending refund `re_bbb…` of `amount_minor` CNY of `payment`, with `reason`.
pub(crate) fn refund(
    payment: &Payment,
    amount_minor: i64,
    reason: Option<&str>,
) -> spinpay_core::model::Refund {
    spinpay_core::model::Refund {
        id: "re_bbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
        merchant_id: "mch_x".into(),
        payment_id: payment.id.clone(),
        state: spinpay_core::machine::RefundState::new(),
        amount_minor,
        currency: Currency::Cny,
        reason: reason.map(str::to_string),
        merchant_refund_id: None,
        channel_ref: None,
        failure: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

pub(crate) fn payment(amount_minor: i64, currency: Currency) -> Payment {
    Payment {
        id: PAY_ID.into(),
        merchant_id: "mch_x".into(),
        seq: 1,
        state: PaymentState::new(amount_minor),
        currency,
        channel: Channel::Alipay,
        capture: CaptureMode::Automatic,
        merchant_order_id: Some("ORD-1".into()),
        description: Some("2 coffees".into()),
        method: PaymentMethod::QrMerchant,
        method_sealed: None,
        payer: None,
        payer_phone_sealed: None,
        metadata: BTreeMap::new(),
        next_action: None,
        risk: None,
        failure: None,
        conflict: None,
        channel_ref: None,
        channel_engaged: true,
        created_at_ms: NOW * 1000,
        updated_at_ms: NOW * 1000,
        expires_at_ms: Some((NOW + 900) * 1000),
        cancellation_reason: None,
        engaged_at_ms: None,
        cancel_requested: None,
    }
}

/// Runs `check` on every payment method (from `every_method(auth_code, sound_token)`)
/// × capture mode × `(amount, currency)` case, each with a fresh [`payment`] carrying
/// that amount, currency and capture mode. Shared by the channels' preflight tests.
pub(crate) fn for_every_preflight_case(
    auth_code: &str,
    sound_token: &str,
    amounts: &[(i64, Currency)],
    mut check: impl FnMut(&PaymentMethod, &Payment, i64),
) {
    for method in crate::wiring::every_method(auth_code, sound_token) {
        for capture in [CaptureMode::Automatic, CaptureMode::Manual] {
            for &(amount, currency) in amounts {
                let mut p = payment(amount, currency);
                p.capture = capture;
                check(&method, &p, amount);
            }
        }
    }
}

/// What Alipay would send: the object as raw text and a signature over exactly it.
fn answer(key: &str, object: &str) -> OutboundResponse {
    let sign = alipay_side().sign_sha256_b64(&mut test_rng(), object.as_bytes());
    OutboundResponse {
        status: 200,
        headers: vec![],
        body: format!("{{\"{key}\":{object},\"sign\":\"{sign}\"}}").into_bytes(),
    }
}

fn call(a: AlipayAuthorize) -> AlipayRequest {
    match a {
        AlipayAuthorize::Call(r) => r,
        AlipayAuthorize::Ready(o) => panic!("expected a call, got {o:?}"),
    }
}

#[test]
fn request_canonical_string_has_exact_bytes_and_verifies() {
    // Proves the signed string is the byte-sorted k=v& of all params but sign, and the
    // signature is SHA256withRSA over exactly those bytes.
    let cfg = config();
    let req = query_request(&cfg, &mut test_rng(), "pay_x", NOW);
    let expected = "app_id=2021000000000001&biz_content={\"out_trade_no\":\"pay_x\"}\
        &charset=utf-8&format=JSON&method=alipay.trade.query&sign_type=RSA2\
        &timestamp=2024-03-01 00:30:05&version=1.0";
    let canonical = canonical_pairs(
        req.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["sign"],
    );
    assert_eq!(canonical, expected);
    let (k, sign) = req.params.last().unwrap();
    assert_eq!(k, "sign");
    let ours = cfg.app_key.verifying_key();
    assert!(ours.verify_sha256_b64(expected.as_bytes(), sign));
    assert!(!ours.verify_sha256_b64(b"app_id=2021000000000002", sign));
    assert_eq!(req.response_key(), "alipay_trade_query_response");
}

#[test]
fn each_method_selects_its_alipay_product() {
    // Proves qr_merchant→precreate, barcode/sound→pay with scenes, h5→signed redirect,
    // app→signed order string, and nfc/sms_otp/manual capture are refused. Every order
    // carries the payment's expiry as time_expire in Beijing time: those that wait for
    // their customer (precreate, wap, app), and the barcode and sound-wave pays too,
    // since a payer asked to confirm in the wallet (10003) leaves them waiting, and
    // Alipay must stop taking money for them once the payment has expired here.
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    let rng = &mut test_rng();
    let pre = call(authorize(&cfg, rng, &p, &PaymentMethod::QrMerchant, NOW).unwrap());
    assert_eq!(pre.method, "alipay.trade.precreate");
    let biz = |r: &AlipayRequest| {
        let raw = &r.params.iter().find(|(k, _)| k == "biz_content").unwrap().1;
        serde_json::from_str::<serde_json::Value>(raw).unwrap()
    };
    assert_eq!(biz(&pre)["total_amount"], "12.50");
    assert_eq!(biz(&pre)["out_trade_no"], PAY_ID);
    let expiry = "2024-03-01 00:45:05";
    assert_eq!(biz(&pre)["time_expire"], expiry);
    let bar = PaymentMethod::QrCustomer {
        auth_code: "28763443825664".into(),
    };
    let pay = call(authorize(&cfg, rng, &p, &bar, NOW).unwrap());
    assert_eq!(pay.method, "alipay.trade.pay");
    assert_eq!(biz(&pay)["scene"], "bar_code");
    assert_eq!(biz(&pay)["auth_code"], "28763443825664");
    assert_eq!(biz(&pay)["time_expire"], expiry);
    let wave = PaymentMethod::SoundWave { token: "w1".into() };
    let wave = biz(&call(authorize(&cfg, rng, &p, &wave, NOW).unwrap()));
    assert_eq!(wave["scene"], "wave_code");
    assert_eq!(wave["time_expire"], expiry);
    let h5 = PaymentMethod::H5 {
        return_url: "https://shop.example/back".into(),
    };
    match authorize(&cfg, rng, &p, &h5, NOW).unwrap() {
        AlipayAuthorize::Ready(ChannelOutcome::Pending {
            next_action: Some(NextAction::Redirect { url }),
            ..
        }) => {
            let (gw, query) = url.split_once('?').unwrap();
            assert_eq!(gw, cfg.gateway_url);
            let pairs = form_decode(query).unwrap();
            assert!(pairs.contains(&("method".into(), "alipay.trade.wap.pay".into())));
            assert!(pairs.contains(&("return_url".into(), "https://shop.example/back".into())));
            let biz = form_get(&pairs, "biz_content").unwrap();
            let biz: serde_json::Value = serde_json::from_str(biz).unwrap();
            assert_eq!(biz["time_expire"], expiry);
        }
        other => panic!("{other:?}"),
    }
    match authorize(&cfg, rng, &p, &PaymentMethod::App, NOW).unwrap() {
        AlipayAuthorize::Ready(ChannelOutcome::Pending {
            next_action: Some(NextAction::AppOrder { order_string }),
            ..
        }) => {
            assert!(order_string.contains("method=alipay.trade.app.pay"));
            let pairs = form_decode(&order_string).unwrap();
            let biz = form_get(&pairs, "biz_content").unwrap();
            let biz: serde_json::Value = serde_json::from_str(biz).unwrap();
            assert_eq!(biz["time_expire"], expiry);
        }
        other => panic!("{other:?}"),
    }
    let nfc = PaymentMethod::Nfc {
        token: "t".into(),
        cryptogram: "c".into(),
    };
    assert_eq!(
        authorize(&cfg, rng, &p, &nfc, NOW),
        Err(RequestError::MethodUnsupported("nfc"))
    );
    let mut manual = p.clone();
    manual.capture = CaptureMode::Manual;
    assert_eq!(
        authorize(&cfg, rng, &manual, &PaymentMethod::QrMerchant, NOW),
        Err(RequestError::ManualCaptureUnsupported)
    );
}

#[test]
fn foreign_currencies_are_sent_in_their_own_exponent_with_trans_currency() {
    // Proves JPY (0 decimals) and KWD (3 decimals) amounts are exact and named.
    let cfg = config();
    for (amount, cur, text) in [(1250, Currency::Jpy, "1250"), (5, Currency::Kwd, "0.005")] {
        let r = call(
            authorize(
                &cfg,
                &mut test_rng(),
                &payment(amount, cur),
                &PaymentMethod::QrMerchant,
                NOW,
            )
            .unwrap(),
        );
        let raw = &r.params.iter().find(|(k, _)| k == "biz_content").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(v["total_amount"], text);
        assert_eq!(v["trans_currency"], cur.code());
    }
}

#[test]
fn every_documented_trade_state_maps_and_unknown_ones_stay_processing() {
    // Proves the four trade states map as documented and any other text is Unknown.
    let r = Some("2024".to_string());
    assert!(matches!(
        trade_status_outcome("WAIT_BUYER_PAY", r.clone()),
        ChannelOutcome::Pending { .. }
    ));
    assert!(matches!(
        trade_status_outcome("TRADE_SUCCESS", r.clone()),
        ChannelOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        trade_status_outcome("TRADE_FINISHED", r.clone()),
        ChannelOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        trade_status_outcome("TRADE_CLOSED", r.clone()),
        ChannelOutcome::Declined { .. }
    ));
    for other in ["TRADE_PENDING", "", "trade_success"] {
        assert!(matches!(
            trade_status_outcome(other, r.clone()),
            ChannelOutcome::Unknown { .. }
        ));
    }
}

#[test]
fn signed_answers_map_and_unsigned_forged_or_foreign_ones_are_unknown() {
    // Proves answer verification over the raw object text and the code mapping of pay.
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    let pre = call(authorize(&cfg, &mut test_rng(), &p, &PaymentMethod::QrMerchant, NOW).unwrap());
    // Escaped slashes and unicode are signed as sent, not as decoded.
    let obj = format!(
        "{{\"code\":\"10000\",\"msg\":\"Success\",\"out_trade_no\":\"{PAY_ID}\",\
         \"qr_code\":\"https:\\/\\/qr.alipay.com\\/bax1\",\"note\":\"\\u4e2d\"}}"
    );
    let resp = answer("alipay_trade_precreate_response", &obj);
    assert_eq!(
        parse_authorize(&cfg, &pre, &resp, PAY_ID),
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::DisplayQr {
                qr_payload: "https://qr.alipay.com/bax1".into()
            })
        }
    );
    let mut forged = resp.clone();
    let text = String::from_utf8(forged.body)
        .unwrap()
        .replace("bax1", "bax2");
    forged.body = text.into_bytes();
    assert!(matches!(
        parse_authorize(&cfg, &pre, &forged, PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));
    let unsigned = OutboundResponse {
        status: 200,
        headers: vec![],
        body: format!("{{\"alipay_trade_precreate_response\":{obj}}}").into_bytes(),
    };
    assert!(matches!(
        parse_authorize(&cfg, &pre, &unsigned, PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));
    assert!(matches!(
        parse_authorize(&cfg, &pre, &resp, "pay_other"),
        ChannelOutcome::Unknown { .. }
    ));
    let garbage = OutboundResponse {
        status: 200,
        headers: vec![],
        body: b"<html>".to_vec(),
    };
    assert!(matches!(
        parse_authorize(&cfg, &pre, &garbage, PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));
    let http500 = OutboundResponse {
        status: 500,
        ..resp.clone()
    };
    assert!(matches!(
        parse_authorize(&cfg, &pre, &http500, PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));

    let bar = PaymentMethod::QrCustomer {
        auth_code: "28".into(),
    };
    let pay = call(authorize(&cfg, &mut test_rng(), &p, &bar, NOW).unwrap());
    let k = "alipay_trade_pay_response";
    let ok = answer(k, "{\"code\":\"10000\",\"trade_no\":\"T1\"}");
    assert_eq!(
        parse_authorize(&cfg, &pay, &ok, PAY_ID),
        ChannelOutcome::Succeeded {
            channel_ref: Some("T1".into())
        }
    );
    let waiting = answer(k, "{\"code\":\"10003\",\"trade_no\":\"T1\"}");
    assert!(matches!(
        parse_authorize(&cfg, &pay, &waiting, PAY_ID),
        ChannelOutcome::Pending { .. }
    ));
    let poor = answer(
        k,
        "{\"code\":\"40004\",\"sub_code\":\"ACQ.BUYER_BALANCE_NOT_ENOUGH\",\"sub_msg\":\"poor\"}",
    );
    assert_eq!(
        parse_authorize(&cfg, &pay, &poor, PAY_ID),
        ChannelOutcome::Declined {
            code: "ACQ.BUYER_BALANCE_NOT_ENOUGH".into(),
            message: "poor".into()
        }
    );
    for indeterminate in [
        "{\"code\":\"40004\",\"sub_code\":\"ACQ.SYSTEM_ERROR\"}",
        "{\"code\":\"20000\"}",
        "{\"code\":\"99999\"}",
    ] {
        let r = answer(k, indeterminate);
        assert!(
            matches!(
                parse_authorize(&cfg, &pay, &r, PAY_ID),
                ChannelOutcome::Unknown { .. }
            ),
            "{indeterminate}"
        );
    }
}

#[test]
fn query_reports_state_amount_and_currency() {
    // Proves a signed query answer yields the mapped state with the stated amount.
    let cfg = config();
    let k = "alipay_trade_query_response";
    let r = answer(
        k,
        &format!(
            "{{\"code\":\"10000\",\"out_trade_no\":\"{PAY_ID}\",\"trade_no\":\"T1\",\"trade_status\":\"TRADE_SUCCESS\",\"total_amount\":\"12.50\"}}"
        ),
    );
    let rep = parse_query(&cfg, &r, PAY_ID);
    assert_eq!(
        rep.outcome,
        ChannelOutcome::Succeeded {
            channel_ref: Some("T1".into())
        }
    );
    assert_eq!(rep.amount_minor, Some(1250));
    assert_eq!(rep.currency.as_deref(), Some("CNY"));
    let missing = answer(
        k,
        "{\"code\":\"40004\",\"sub_code\":\"ACQ.TRADE_NOT_EXIST\"}",
    );
    assert!(matches!(
        parse_query(&cfg, &missing, PAY_ID).outcome,
        ChannelOutcome::Unknown { .. }
    ));
}

/// A signed close answer `object`, parsed for [`payment`] at `now_ms`.
fn close_at(object: &str, now_ms: i64) -> ActionOutcome {
    let resp = answer("alipay_trade_close_response", object);
    parse_close(&config(), &resp, &payment(1250, Currency::Cny), now_ms)
}

const NO_TRADE: &str = "{\"code\":\"40004\",\"sub_code\":\"ACQ.TRADE_NOT_EXIST\"}";

#[test]
fn close_of_a_trade_alipay_has_not_created_is_refused_before_the_expiry() {
    // Proves a cancel of an unscanned QR (or unopened wap/app order), which Alipay answers
    // TRADE_NOT_EXIST, is declined as still payable up to the last ms before expiry.
    let expiry = payment(1250, Currency::Cny).expires_at_ms();
    for now_ms in [NOW * 1000, expiry - 1] {
        match close_at(NO_TRADE, now_ms) {
            ActionOutcome::Declined { code, message } => {
                assert_eq!(code, STILL_PAYABLE_CODE);
                assert!(message.contains(&format!("until it expires at {expiry}")));
            }
            other => panic!("at {now_ms}: {other:?}"),
        }
    }
}

#[test]
fn close_of_a_trade_alipay_has_not_created_is_done_once_expired_past_the_margin() {
    // Proves TRADE_NOT_EXIST closes the payment only from expiry + the clock margin on;
    // between expiry and that it is undecided (retried), and a record without its own
    // expiry counts from the reconciliation horizon after its creation.
    let expiry = payment(1250, Currency::Cny).expires_at_ms();
    for now_ms in [expiry, expiry + EXPIRY_MARGIN_MS - 1] {
        assert!(matches!(
            close_at(NO_TRADE, now_ms),
            ActionOutcome::Unknown { .. }
        ));
    }
    assert_eq!(
        close_at(NO_TRADE, expiry + EXPIRY_MARGIN_MS),
        ActionOutcome::Done
    );
    let mut old = payment(1250, Currency::Cny);
    old.expires_at_ms = None;
    let horizon = old.created_at_ms + spinpay_core::service::RECONCILE_HORIZON_MS;
    assert!(matches!(
        close_of_no_trade(&old, expiry + EXPIRY_MARGIN_MS),
        ActionOutcome::Declined { .. }
    ));
    assert_eq!(
        close_of_no_trade(&old, horizon + EXPIRY_MARGIN_MS),
        ActionOutcome::Done
    );
}

#[test]
fn close_answered_10000_is_done_before_the_expiry() {
    // Proves a trade that exists (scanned, waiting) and is closed is done at once, with
    // no wait for the expiry.
    assert_eq!(
        close_at("{\"code\":\"10000\"}", NOW * 1000),
        ActionOutcome::Done
    );
}

#[test]
fn cancel_request_is_a_signed_trade_cancel_naming_the_payment() {
    // Proves alipay.trade.cancel is built like close: biz_content is exactly
    // {"out_trade_no": <payment id>}, the signature is SHA256withRSA over the byte-sorted
    // k=v& of every parameter but sign, and the answer is read under its own key.
    let cfg = config();
    let req = cancel_request(&cfg, &mut test_rng(), PAY_ID, NOW);
    assert_eq!(req.method, "alipay.trade.cancel");
    assert_eq!(req.response_key(), "alipay_trade_cancel_response");
    let get = |name: &str| form_get(&req.params, name).map(str::to_string);
    assert_eq!(get("method").as_deref(), Some("alipay.trade.cancel"));
    let biz = format!("{{\"out_trade_no\":\"{PAY_ID}\"}}");
    assert_eq!(get("biz_content"), Some(biz.clone()));
    assert_eq!(get("notify_url"), None);
    let expected = format!(
        "app_id=2021000000000001&biz_content={biz}&charset=utf-8&format=JSON\
         &method=alipay.trade.cancel&sign_type=RSA2&timestamp=2024-03-01 00:30:05\
         &version=1.0"
    );
    let canonical = canonical_pairs(
        req.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["sign"],
    );
    assert_eq!(canonical, expected);
    let (k, sign) = req.params.last().unwrap();
    assert_eq!(k, "sign");
    let ours = cfg.app_key.verifying_key();
    assert!(ours.verify_sha256_b64(expected.as_bytes(), sign));
    let close = close_request(&cfg, &mut test_rng(), PAY_ID, NOW);
    assert!(!ours.verify_sha256_b64(expected.as_bytes(), &close.params.last().unwrap().1));
}

#[test]
fn cancel_is_chosen_for_exactly_the_methods_sent_as_trade_pay() {
    // Proves is_trade_pay (which picks trade.cancel over trade.close) agrees with the
    // API authorize sends for every method: barcode and sound wave only.
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    for method in crate::wiring::every_method("28763443825664", "w1") {
        let sent_as_pay = match authorize(&cfg, &mut test_rng(), &p, &method, NOW) {
            Ok(AlipayAuthorize::Call(req)) => req.method == "alipay.trade.pay",
            Ok(AlipayAuthorize::Ready(_)) | Err(_) => false,
        };
        assert_eq!(is_trade_pay(&method), sent_as_pay, "{method:?}");
    }
}

/// A barcode [`payment`] engaged at creation (`NOW`).
fn code_payment() -> Payment {
    let mut p = payment(1250, Currency::Cny);
    p.method = PaymentMethod::QrCustomer {
        auth_code: "2876************".into(),
    };
    p
}

/// A signed cancel answer `object`, parsed for `p` at `now_ms`.
fn cancel_at(object: &str, p: &Payment, now_ms: i64) -> ActionOutcome {
    let resp = answer("alipay_trade_cancel_response", object);
    parse_cancel(&config(), &resp, p, now_ms)
}

/// A cancel answer `10000` with `retry_flag` and `action` (left out when empty).
fn cancel_ok(retry_flag: &str, action: &str) -> String {
    let action = match action {
        "" => String::new(),
        a => format!(",\"action\":\"{a}\""),
    };
    format!(
        "{{\"code\":\"10000\",\"msg\":\"Success\",\"out_trade_no\":\"{PAY_ID}\",\
         \"trade_no\":\"2024T1\",\"retry_flag\":\"{retry_flag}\"{action}}}"
    )
}

#[test]
fn cancel_answered_close_or_refund_is_done_at_once() {
    // Proves 10000 with action close (unpaid trade closed) or refund (paid trade's money
    // returned) revokes the payment right after it was engaged, with no wait.
    let p = code_payment();
    for action in ["close", "refund"] {
        assert_eq!(
            cancel_at(&cancel_ok("N", action), &p, NOW * 1000),
            ActionOutcome::Done,
            "{action}"
        );
    }
}

#[test]
fn cancel_with_retry_flag_y_is_undecided_whatever_the_code() {
    // Proves retry_flag Y (Alipay asking for the cancel again) is unknown, on a 10000
    // (even with an action) as on a business failure.
    let p = code_payment();
    let later = NOW * 1000 + EXPIRY_MARGIN_MS * 10;
    for object in [
        cancel_ok("Y", "close"),
        cancel_ok("Y", ""),
        "{\"code\":\"40004\",\"sub_code\":\"ACQ.SELLER_BALANCE_NOT_ENOUGH\",\
         \"retry_flag\":\"Y\"}"
            .to_string(),
    ] {
        assert!(
            matches!(cancel_at(&object, &p, later), ActionOutcome::Unknown { .. }),
            "{object}"
        );
    }
}

#[test]
fn cancel_system_errors_and_unknown_answers_are_undecided() {
    // Proves system errors (ACQ and the AQC spelling), 20000, a 40004 without sub_code,
    // 10003, an unknown action, an answer about another trade, and unsigned, forged,
    // garbage or HTTP 500 answers are all unknown: retried, never taken as revoked.
    let p = code_payment();
    let later = NOW * 1000 + EXPIRY_MARGIN_MS * 10;
    for object in [
        "{\"code\":\"40004\",\"sub_code\":\"ACQ.SYSTEM_ERROR\",\"retry_flag\":\"N\"}",
        "{\"code\":\"40004\",\"sub_code\":\"AQC.SYSTEM_ERROR\"}",
        "{\"code\":\"20000\",\"msg\":\"Service Currently Unavailable\"}",
        "{\"code\":\"40004\"}",
        "{\"code\":\"10003\"}",
        "{\"code\":\"10000\",\"retry_flag\":\"N\",\"action\":\"freeze\"}",
        "{\"code\":\"10000\",\"out_trade_no\":\"pay_other\",\"action\":\"close\"}",
    ] {
        assert!(
            matches!(cancel_at(object, &p, later), ActionOutcome::Unknown { .. }),
            "{object}"
        );
    }
    let cfg = config();
    let signed = answer("alipay_trade_cancel_response", &cancel_ok("N", "close"));
    let text = String::from_utf8(signed.body.clone()).unwrap();
    let unusable = [
        OutboundResponse {
            body: text.replace("close", "refund").into_bytes(),
            ..signed.clone()
        },
        OutboundResponse {
            body: format!(
                "{{\"alipay_trade_cancel_response\":{}}}",
                cancel_ok("N", "close")
            )
            .into_bytes(),
            ..signed.clone()
        },
        OutboundResponse {
            body: b"<html>gateway busy</html>".to_vec(),
            ..signed.clone()
        },
        OutboundResponse {
            status: 500,
            ..signed.clone()
        },
        answer("alipay_trade_close_response", &cancel_ok("N", "close")),
    ];
    for resp in unusable {
        assert!(
            matches!(
                parse_cancel(&cfg, &resp, &p, later),
                ActionOutcome::Unknown { .. }
            ),
            "{}",
            String::from_utf8_lossy(&resp.body)
        );
    }
}

#[test]
fn cancel_finding_no_trade_is_done_only_once_no_pay_can_still_create_it() {
    // Proves ACQ.TRADE_NOT_EXIST, and 10000 without an action (the documented "no trade
    // found"), are unknown until the payment was engaged the clock margin ago (a pay
    // still in flight could create the trade after the cancel), then done; a payment
    // engaged after its creation (approved in review) counts from its engagement.
    let no_trade = [NO_TRADE.to_string(), cancel_ok("N", "")];
    let p = code_payment();
    let engaged = p.engaged_at_ms();
    assert_eq!(engaged, NOW * 1000);
    for object in &no_trade {
        for now_ms in [engaged, engaged + EXPIRY_MARGIN_MS - 1] {
            assert!(
                matches!(cancel_at(object, &p, now_ms), ActionOutcome::Unknown { .. }),
                "{object} at {now_ms}"
            );
        }
        assert_eq!(
            cancel_at(object, &p, engaged + EXPIRY_MARGIN_MS),
            ActionOutcome::Done,
            "{object}"
        );
        let mut approved = p.clone();
        approved.engaged_at_ms = Some(engaged + 600_000);
        assert!(matches!(
            cancel_at(object, &approved, engaged + EXPIRY_MARGIN_MS),
            ActionOutcome::Unknown { .. }
        ));
        assert_eq!(
            cancel_at(object, &approved, engaged + 600_000 + EXPIRY_MARGIN_MS),
            ActionOutcome::Done
        );
    }
}

#[test]
fn cancel_refused_for_a_business_reason_is_declined_with_alipays_code() {
    // Proves a definitive refusal (frozen trade, merchant balance too low to return the
    // money, too old to revoke, already partly refunded) is declined with Alipay's
    // sub_code and sub_msg, right after engagement as long after.
    let p = code_payment();
    for now_ms in [NOW * 1000, NOW * 1000 + EXPIRY_MARGIN_MS * 10] {
        for sub in [
            "ACQ.REASON_TRADE_BEEN_FREEZEN",
            "ACQ.SELLER_BALANCE_NOT_ENOUGH",
            "ACQ.TRADE_CANCEL_TIME_OUT",
            "ACQ.REASON_TRADE_REFUND_FEE_ERR",
            "ACQ.TRADE_STATUS_ERROR",
        ] {
            let object = format!(
                "{{\"code\":\"40004\",\"msg\":\"Business Failed\",\"sub_code\":\"{sub}\",\
                 \"sub_msg\":\"refused: {sub}\",\"retry_flag\":\"N\"}}"
            );
            assert_eq!(
                cancel_at(&object, &p, now_ms),
                ActionOutcome::Declined {
                    code: sub.into(),
                    message: format!("refused: {sub}"),
                }
            );
        }
    }
    let no_sub_msg = "{\"code\":\"40004\",\"msg\":\"Business Failed\",\
                      \"sub_code\":\"ACQ.CANCEL_NOT_ALLOWED\"}";
    assert_eq!(
        cancel_at(no_sub_msg, &p, NOW * 1000),
        ActionOutcome::Declined {
            code: "ACQ.CANCEL_NOT_ALLOWED".into(),
            message: "Business Failed".into(),
        }
    );
}

#[test]
fn precreate_bounds_its_qr_code_to_the_payments_expiry() {
    // Proves precreate sends qr_code_timeout_express: the whole minutes to the expiry
    // rounded down, at least 1m, at most 120m; the other methods send none.
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    let biz = |m: &PaymentMethod| match authorize(&cfg, &mut test_rng(), &p, m, NOW).unwrap() {
        AlipayAuthorize::Call(r) => {
            let raw = &r.params.iter().find(|(k, _)| k == "biz_content").unwrap().1;
            serde_json::from_str::<serde_json::Value>(raw).unwrap()
        }
        AlipayAuthorize::Ready(o) => panic!("{o:?}"),
    };
    // 15 minutes after NOW (whole seconds): at most 14m59s after the real time.
    let qr = biz(&PaymentMethod::QrMerchant);
    assert_eq!(qr["qr_code_timeout_express"], "14m");
    let bar = PaymentMethod::QrCustomer {
        auth_code: "28".into(),
    };
    assert_eq!(biz(&bar).get("qr_code_timeout_express"), None);
    let now_ms = NOW * 1000;
    for (left_ms, text) in [
        (15 * 60_000 - 1, "14m"),
        (60_000, "1m"),
        (59_999, "1m"),
        (-5_000, "1m"),
        (120 * 60_000, "120m"),
        (24 * 3_600_000, "120m"),
    ] {
        assert_eq!(
            qr_code_timeout_express(now_ms + left_ms, now_ms),
            text,
            "{left_ms}"
        );
    }
}

#[test]
fn close_and_refund_answers_map_to_core_outcomes() {
    // Proves close/refund/refund-query code mapping, including the conservative cases.
    let cfg = config();
    let now_ms = NOW * 1000;
    assert!(matches!(
        close_at(
            "{\"code\":\"40004\",\"sub_code\":\"ACQ.TRADE_STATUS_ERROR\"}",
            now_ms
        ),
        ActionOutcome::Declined { .. }
    ));
    assert!(matches!(
        close_at("{\"code\":\"20000\"}", now_ms),
        ActionOutcome::Unknown { .. }
    ));
    let r = "alipay_trade_refund_response";
    assert!(matches!(
        parse_refund(
            &cfg,
            &answer(r, "{\"code\":\"10000\",\"fund_change\":\"Y\"}")
        ),
        RefundOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        parse_refund(
            &cfg,
            &answer(r, "{\"code\":\"10000\",\"fund_change\":\"N\"}")
        ),
        RefundOutcome::Pending { .. }
    ));
    assert!(matches!(
        parse_refund(
            &cfg,
            &answer(
                r,
                "{\"code\":\"40004\",\"sub_code\":\"ACQ.TRADE_NOT_ALLOW_REFUND\"}"
            )
        ),
        RefundOutcome::Failed { .. }
    ));
    assert!(matches!(
        parse_refund(
            &cfg,
            &answer(r, "{\"code\":\"40004\",\"sub_code\":\"ACQ.SYSTEM_ERROR\"}")
        ),
        RefundOutcome::Unknown { .. }
    ));
    let q = "alipay_trade_fastpay_refund_query_response";
    assert!(matches!(
        parse_refund_query(
            &cfg,
            &answer(
                q,
                "{\"code\":\"10000\",\"out_request_no\":\"re_1\",\"refund_status\":\"REFUND_SUCCESS\"}"
            ),
            "re_1"
        ),
        RefundOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        parse_refund_query(
            &cfg,
            &answer(q, "{\"code\":\"10000\",\"out_request_no\":\"re_1\"}"),
            "re_1"
        ),
        RefundOutcome::Unknown { .. }
    ));
    assert!(matches!(
        parse_refund_query(
            &cfg,
            &answer(
                q,
                "{\"code\":\"10000\",\"out_request_no\":\"re_2\",\"refund_status\":\"REFUND_SUCCESS\"}"
            ),
            "re_1"
        ),
        RefundOutcome::Unknown { .. }
    ));
}

/// A notification as Alipay signs it: every field but sign and sign_type, empty ones
/// included (`k=`).
fn notify(fields: &[(&str, &str)]) -> Vec<u8> {
    notify_signed_over(
        fields,
        &canonical_pairs_with_empty(fields.iter().copied(), &[]),
    )
}

/// A notification carrying `fields` (then sign_type and sign), signed over `canonical`.
fn notify_signed_over(fields: &[(&str, &str)], canonical: &str) -> Vec<u8> {
    let sign = alipay_side().sign_sha256_b64(&mut test_rng(), canonical.as_bytes());
    let mut pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.push(("sign_type".into(), "RSA2".into()));
    pairs.push(("sign".into(), sign));
    form_body(&pairs).into_bytes()
}

const NOTIFY_FIELDS: [(&str, &str); 8] = [
    ("notify_time", "2024-03-01 00:30:05"),
    ("notify_type", "trade_status_sync"),
    ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
    ("app_id", "2021000000000001"),
    ("out_trade_no", PAY_ID),
    ("trade_no", "2024030122001"),
    ("trade_status", "TRADE_SUCCESS"),
    ("total_amount", "12.50"),
];

#[test]
fn a_signed_notification_is_accepted_and_mapped() {
    // Proves verification over the sorted fields minus sign/sign_type and the mapping.
    let cfg = config();
    let n = parse_notification(&cfg, &notify(&NOTIFY_FIELDS)).unwrap();
    match n.kind {
        AlipayNotificationKind::Payment(p) => {
            assert_eq!(p.payment_id, PAY_ID);
            assert_eq!(p.report.amount_minor, Some(1250));
            assert_eq!(
                p.report.outcome,
                ChannelOutcome::Succeeded {
                    channel_ref: Some("2024030122001".into())
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(n.replay_key.starts_with("replay/alipay/"));
}

#[test]
fn a_notification_with_empty_fields_verifies_over_k_equals_and_without_them() {
    // Proves a notification carrying empty fields is accepted signed as Alipay's SDKs
    // sign it (`passback_params=` in the string) and signed over the string without them
    // (the older form); that the signature covers an empty field (dropping it from the
    // body, or giving it a value, is refused); and that empty fields read as absent
    // (empty out_biz_no and refund_fee leave it a payment notification).
    let cfg = config();
    let mut fields = NOTIFY_FIELDS.to_vec();
    fields.extend([
        ("passback_params", ""),
        ("out_biz_no", ""),
        ("refund_fee", ""),
    ]);
    let with_empty = canonical_pairs_with_empty(fields.iter().copied(), &[]);
    assert!(with_empty.contains("&passback_params=&refund_fee=&"));
    let without_empty = canonical_pairs(fields.iter().copied(), &[]);
    for canonical in [&with_empty, &without_empty] {
        let body = notify_signed_over(&fields, canonical);
        let n = parse_notification(&cfg, &body).expect(canonical);
        match n.kind {
            AlipayNotificationKind::Payment(p) => {
                assert_eq!(p.payment_id, PAY_ID);
                assert_eq!(p.report.amount_minor, Some(1250));
                assert_eq!(
                    p.report.outcome,
                    ChannelOutcome::Succeeded {
                        channel_ref: Some("2024030122001".into())
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let body = String::from_utf8(notify_signed_over(&fields, &with_empty)).unwrap();
    for forged in [
        body.replace("passback_params=&", ""),
        body.replace("passback_params=", "passback_params=x"),
    ] {
        assert!(matches!(
            parse_notification(&cfg, forged.as_bytes()),
            Err(NotificationRejected::Signature(_))
        ));
    }
}

#[test]
fn tampered_or_foreign_notifications_are_rejected() {
    // Proves a changed amount, RSA1 sign_type, missing sign and another app_id all fail.
    let cfg = config();
    let body = String::from_utf8(notify(&NOTIFY_FIELDS)).unwrap();
    let tampered = body.replace("12.50", "0.01");
    assert!(matches!(
        parse_notification(&cfg, tampered.as_bytes()),
        Err(NotificationRejected::Signature(_))
    ));
    let rsa1 = body.replace("sign_type=RSA2", "sign_type=RSA");
    assert!(matches!(
        parse_notification(&cfg, rsa1.as_bytes()),
        Err(NotificationRejected::Signature(_))
    ));
    let unsigned: String = body
        .split('&')
        .filter(|p| !p.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    assert!(matches!(
        parse_notification(&cfg, unsigned.as_bytes()),
        Err(NotificationRejected::Signature(_))
    ));
    let mut other_app = NOTIFY_FIELDS;
    other_app[3] = ("app_id", "2021000000000999");
    assert!(matches!(
        parse_notification(&cfg, &notify(&other_app)),
        Err(NotificationRejected::WrongMerchant(_))
    ));
    assert!(matches!(
        parse_notification(&cfg, b"%zz=1"),
        Err(NotificationRejected::Malformed(_))
    ));
}

#[test]
fn a_refund_notification_names_our_refund() {
    // Proves out_biz_no + refund_fee make a refund notification for that refund id, of
    // the payment out_trade_no names, with no per-refund amount (refund_fee is a total).
    let cfg = config();
    let mut fields = NOTIFY_FIELDS.to_vec();
    fields.push(("out_biz_no", "re_bbbbbbbbbbbbbbbbbbbbbbbbbb"));
    fields.push(("refund_fee", "2.00"));
    match parse_notification(&cfg, &notify(&fields)).unwrap().kind {
        AlipayNotificationKind::Refund(r) => {
            assert_eq!(r.refund_id, "re_bbbbbbbbbbbbbbbbbbbbbbbbbb");
            assert!(matches!(r.outcome, RefundOutcome::Succeeded { .. }));
            let out_trade_no = NOTIFY_FIELDS.iter().find(|(k, _)| *k == "out_trade_no");
            assert_eq!(r.payment_id.as_deref(), out_trade_no.map(|(_, v)| *v));
            assert_eq!((r.amount_minor, r.currency), (None, None));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_member_scanner_keeps_exact_text() {
    // Proves the top-level scanner returns each member's bytes verbatim, strings included.
    let body = "{ \"a\" : {\"x\":\"}\\\"{\"} , \"sign\":\"s\\/1\", \"n\": 12 }";
    let m = top_level_raw(body).unwrap();
    assert_eq!(m[0], ("a".to_string(), "{\"x\":\"}\\\"{\"}"));
    assert_eq!(m[1], ("sign".to_string(), "\"s\\/1\""));
    assert_eq!(m[2], ("n".to_string(), "12"));
    assert!(top_level_raw("{\"a\":").is_err());
    assert!(top_level_raw("[1]").is_err());
}

#[test]
fn a_subject_never_carries_the_characters_alipay_refuses() {
    // Proves `/`, `=` and `&` in a description become spaces in the subject, and the
    // rest (CJK included) is kept, cut to 256 characters.
    let mut p = payment(1250, Currency::Cny);
    p.description = Some("2 coffees/latte=hot & 蛋糕".into());
    assert_eq!(subject(&p), "2 coffees latte hot   蛋糕");
    p.description = Some("蛋".repeat(300));
    assert_eq!(subject(&p).chars().count(), SUBJECT_CHARS_MAX);
}
