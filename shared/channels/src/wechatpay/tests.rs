use spinpay_core::crypto::Secret;
use spinpay_core::model::{NextAction, Payer, PaymentMethod};
use spinpay_core::money::Currency;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, RefundOutcome};
use spinpay_guest::outbound::OutboundResponse;

use super::transformers::*;
use super::{NotificationRejected, RequestError, SigningKey, WechatpayConfig};
use crate::alipay::tests::{payment, refund};
use crate::crypto::{aes256gcm_seal, b64, test_key, test_rng};

const NOW: i64 = 1_709_224_205;
const NONCE: &str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
const SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000001";
const APIV3: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn platform() -> SigningKey {
    test_key(3)
}

pub(crate) fn config() -> WechatpayConfig {
    WechatpayConfig {
        mchid: "1900000109".into(),
        appid: "wxd678efh567hg6787".into(),
        serial_no: "5157F09EFDC096DE15EBE81A47057A72".into(),
        merchant_key: test_key(1),
        platform_keys: vec![(SERIAL.into(), platform().verifying_key())],
        apiv3_key: Secret::new(*APIV3),
        base_url: "https://api.mch.weixin.qq.com".into(),
        notify_url: "https://pay.example.com/v1/webhooks/wechatpay".into(),
    }
}

/// Headers WeChat Pay would put on a message with this body at `ts`.
fn signed_headers(body: &[u8], ts: i64, nonce: &str) -> Vec<(String, String)> {
    let mut msg = format!("{ts}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    let sig = platform().sign_sha256_b64(&mut test_rng(), &msg);
    vec![
        ("Wechatpay-Timestamp".into(), ts.to_string()),
        ("Wechatpay-Nonce".into(), nonce.into()),
        ("Wechatpay-Signature".into(), sig),
        ("Wechatpay-Serial".into(), SERIAL.into()),
        (
            "Wechatpay-Signature-Type".into(),
            "WECHATPAY2-SHA256-RSA2048".into(),
        ),
    ]
}

fn signed(status: u16, body: &str) -> OutboundResponse {
    signed_at(status, body, NOW)
}

/// An answer WeChat Pay signed at `ts`.
fn signed_at(status: u16, body: &str, ts: i64) -> OutboundResponse {
    OutboundResponse {
        status,
        headers: signed_headers(body.as_bytes(), ts, "n-resp"),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn request_signature_covers_the_canonical_string_and_header_is_exact() {
    // Proves the signed message bytes and the Authorization header layout.
    let cfg = config();
    let req = query_request(&cfg, &mut test_rng(), "pay_x", NOW, NONCE);
    assert_eq!(
        req.path,
        "/v3/pay/transactions/out-trade-no/pay_x?mchid=1900000109"
    );
    let canonical = canonical_request("GET", &req.path, NOW, NONCE, "");
    assert_eq!(
        canonical,
        "GET\n/v3/pay/transactions/out-trade-no/pay_x?mchid=1900000109\n1709224205\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\n\n"
    );
    let prefix = format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",nonce_str=\"{NONCE}\",signature=\""
    );
    assert!(
        req.authorization.starts_with(&prefix),
        "{}",
        req.authorization
    );
    assert!(
        req.authorization.ends_with(
            "\",timestamp=\"1709224205\",serial_no=\"5157F09EFDC096DE15EBE81A47057A72\""
        )
    );
    let sig = req.authorization[prefix.len()..].split('"').next().unwrap();
    assert!(
        cfg.merchant_key
            .verifying_key()
            .verify_sha256_b64(canonical.as_bytes(), sig)
    );
}

#[test]
fn each_method_selects_its_product_and_bad_inputs_are_refused() {
    // Proves native/codepay/h5/app bodies and the refusals (no IP for h5, sound_wave, >i32).
    // The orders that wait for their customer (native, h5, app) carry the payment's
    // expiry as time_expire (RFC 3339, Beijing offset); a codepay, decided at once, not.
    let cfg = config();
    let rng = &mut test_rng();
    let p = payment(1250, Currency::Cny);
    let (prod, req) = authorize(&cfg, rng, &p, &PaymentMethod::QrMerchant, NOW, NONCE).unwrap();
    assert_eq!(prod, Product::Native);
    assert_eq!(req.path, "/v3/pay/transactions/native");
    let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        v["amount"],
        serde_json::json!({"total": 1250, "currency": "CNY"})
    );
    assert_eq!(v["out_trade_no"], p.id);
    assert_eq!(v["notify_url"], cfg.notify_url);
    let expiry = "2024-03-01T00:45:05+08:00";
    assert_eq!(v["time_expire"], expiry);
    let code = PaymentMethod::QrCustomer {
        auth_code: "134567890123456789".into(),
    };
    let (prod, req) = authorize(&cfg, rng, &p, &code, NOW, NONCE).unwrap();
    assert_eq!(prod, Product::Codepay);
    let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(v["payer"]["auth_code"], "134567890123456789");
    assert_eq!(v.get("time_expire"), None);
    // scene_info is required for codepay: the store (our merchant) and, when the till
    // sent one, its IP as device_ip, never payer_client_ip.
    assert_eq!(
        v["scene_info"],
        serde_json::json!({"store_info": {"out_id": p.merchant_id}})
    );
    let mut at_till = p.clone();
    at_till.payer = Some(Payer {
        ip: Some("198.51.100.20".into()),
        ..Payer::default()
    });
    let (_, req) = authorize(&cfg, rng, &at_till, &code, NOW, NONCE).unwrap();
    let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        v["scene_info"],
        serde_json::json!({"device_ip": "198.51.100.20", "store_info": {"out_id": p.merchant_id}})
    );
    let h5 = PaymentMethod::H5 {
        return_url: "https://shop.example/back".into(),
    };
    assert!(matches!(
        authorize(&cfg, rng, &p, &h5, NOW, NONCE),
        Err(RequestError::Field {
            field: "payer.ip",
            ..
        })
    ));
    let mut with_ip = p.clone();
    with_ip.payer = Some(Payer {
        ip: Some("203.0.113.7".into()),
        ..Payer::default()
    });
    let (_, req) = authorize(&cfg, rng, &with_ip, &h5, NOW, NONCE).unwrap();
    let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(v["scene_info"]["payer_client_ip"], "203.0.113.7");
    assert_eq!(v["scene_info"]["h5_info"]["type"], "Wap");
    assert_eq!(v["time_expire"], expiry);
    let wave = PaymentMethod::SoundWave { token: "t".into() };
    assert_eq!(
        authorize(&cfg, rng, &p, &wave, NOW, NONCE),
        Err(RequestError::MethodUnsupported("sound_wave"))
    );
    let huge = payment(i64::from(i32::MAX) + 1, Currency::Cny);
    assert_eq!(
        authorize(&cfg, rng, &huge, &PaymentMethod::QrMerchant, NOW, NONCE),
        Err(RequestError::Amount(i64::from(i32::MAX) + 1))
    );
    // The domestic API this adapter calls is paid in CNY only.
    let jpy = payment(1250, Currency::Jpy);
    assert_eq!(
        authorize(&cfg, rng, &jpy, &PaymentMethod::App, NOW, NONCE),
        Err(RequestError::CurrencyUnsupported("JPY"))
    );
}

#[test]
fn signed_answers_give_next_actions_and_unsigned_ones_are_unknown() {
    // Proves QR/redirect/app-order outcomes from signed answers, and that unsigned,
    // stale, unknown-serial, tampered and 5xx answers are all Unknown.
    let cfg = config();
    let rng = &mut test_rng();
    let id = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let native = signed(
        200,
        "{\"code_url\":\"weixin://wxpay/bizpayurl?pr=p4lpSuKzz\"}",
    );
    assert_eq!(
        parse_authorize(&cfg, rng, &Product::Native, &native, id, NOW, NONCE),
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::DisplayQr {
                qr_payload: "weixin://wxpay/bizpayurl?pr=p4lpSuKzz".into()
            })
        }
    );
    let unsigned = OutboundResponse {
        headers: vec![],
        ..native.clone()
    };
    let mut tampered = native.clone();
    tampered.body = b"{\"code_url\":\"weixin://evil\"}".to_vec();
    let mut stale = native.clone();
    stale.headers = signed_headers(&native.body, NOW - 301, "n");
    let mut other_serial = native.clone();
    other_serial.headers[3].1 = "PUB_KEY_ID_OTHER".into();
    let server_error = OutboundResponse {
        status: 502,
        ..native.clone()
    };
    for (name, r) in [
        ("unsigned", unsigned),
        ("tampered", tampered),
        ("stale", stale),
        ("serial", other_serial),
        ("5xx", server_error),
    ] {
        assert!(
            matches!(
                parse_authorize(&cfg, rng, &Product::Native, &r, id, NOW, NONCE),
                ChannelOutcome::Unknown { .. }
            ),
            "{name}"
        );
    }
    let h5 = signed(
        200,
        "{\"h5_url\":\"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1\"}",
    );
    let product = Product::H5 {
        return_url: "https://shop.example/back?o=1".into(),
    };
    match parse_authorize(&cfg, rng, &product, &h5, id, NOW, NONCE) {
        ChannelOutcome::Pending {
            next_action: Some(NextAction::Redirect { url }),
            ..
        } => assert!(
            url.ends_with("prepay_id=wx1&redirect_url=https%3A%2F%2Fshop.example%2Fback%3Fo%3D1"),
            "{url}"
        ),
        other => panic!("{other:?}"),
    }
    let app = signed(
        200,
        "{\"prepay_id\":\"wx201410272009395522657a690389285100\"}",
    );
    match parse_authorize(&cfg, rng, &Product::App, &app, id, NOW, NONCE) {
        ChannelOutcome::Pending {
            next_action: Some(NextAction::AppOrder { order_string }),
            ..
        } => {
            let o: AppOrder = serde_json::from_str(&order_string).unwrap();
            assert_eq!(o.package, "Sign=WXPay");
            let msg = format!(
                "{}\n{}\n{}\n{}\n",
                o.appid, o.timestamp, o.noncestr, o.prepayid
            );
            assert!(
                cfg.merchant_key
                    .verifying_key()
                    .verify_sha256_b64(msg.as_bytes(), &o.sign)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn codepay_answers_and_error_codes_map_conservatively() {
    // Proves codepay success, USERPAYING pending, definitive refusals declined and
    // system errors or unknown codes left Unknown.
    let cfg = config();
    let rng = &mut test_rng();
    let id = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let ok = signed(
        200,
        &format!(
            "{{\"out_trade_no\":\"{id}\",\"transaction_id\":\"42\",\"trade_state\":\"SUCCESS\"}}"
        ),
    );
    assert_eq!(
        parse_authorize(&cfg, rng, &Product::Codepay, &ok, id, NOW, NONCE),
        ChannelOutcome::Succeeded {
            channel_ref: Some("42".into())
        }
    );
    let cases = [
        ("USERPAYING", "pending"),
        ("NOTENOUGH", "declined"),
        ("AUTH_CODE_INVALID", "declined"),
        ("SYSTEM_ERROR", "unknown"),
        ("SOMETHING_NEW", "unknown"),
    ];
    for (code, expect) in cases {
        let r = signed(403, &format!("{{\"code\":\"{code}\",\"message\":\"m\"}}"));
        let got = parse_authorize(&cfg, rng, &Product::Codepay, &r, id, NOW, NONCE);
        let kind = match got {
            ChannelOutcome::Pending { .. } => "pending",
            ChannelOutcome::Declined { .. } => "declined",
            ChannelOutcome::Unknown { .. } => "unknown",
            ChannelOutcome::Succeeded { .. } | ChannelOutcome::Authorized { .. } => "success",
        };
        assert_eq!(kind, expect, "{code}");
    }
}

#[test]
fn every_documented_trade_state_maps_and_unknown_ones_stay_processing() {
    // Proves the seven trade_state values map as documented and anything else is Unknown.
    let kind = |s: &str| match trade_state_outcome(s, None) {
        ChannelOutcome::Succeeded { .. } => "succeeded",
        ChannelOutcome::Pending { .. } => "pending",
        ChannelOutcome::Declined { .. } => "declined",
        ChannelOutcome::Unknown { .. } => "unknown",
        ChannelOutcome::Authorized { .. } => "authorized",
    };
    let table = [
        ("SUCCESS", "succeeded"),
        ("REFUND", "succeeded"),
        ("NOTPAY", "pending"),
        ("USERPAYING", "pending"),
        ("CLOSED", "declined"),
        ("REVOKED", "declined"),
        ("PAYERROR", "declined"),
        ("ACCEPT", "unknown"),
        ("success", "unknown"),
    ];
    for (state, expect) in table {
        assert_eq!(kind(state), expect, "{state}");
    }
    assert!(matches!(
        refund_status_outcome("SUCCESS", None),
        RefundOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        refund_status_outcome("PROCESSING", None),
        RefundOutcome::Pending { .. }
    ));
    assert!(matches!(
        refund_status_outcome("ABNORMAL", None),
        RefundOutcome::Pending { .. }
    ));
    assert!(matches!(
        refund_status_outcome("CLOSED", None),
        RefundOutcome::Failed { .. }
    ));
    assert!(matches!(
        refund_status_outcome("NEW", None),
        RefundOutcome::Unknown { .. }
    ));
}

#[test]
fn query_close_and_refund_answers_map() {
    // Proves query reports amount/currency, close 204 is done, refund statuses map.
    let cfg = config();
    let id = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let q = signed(
        200,
        &format!(
            "{{\"out_trade_no\":\"{id}\",\"trade_state\":\"NOTPAY\",\"amount\":{{\"total\":1250,\"currency\":\"CNY\"}}}}"
        ),
    );
    let rep = parse_query(&cfg, &q, id, NOW);
    assert!(matches!(rep.outcome, ChannelOutcome::Pending { .. }));
    assert_eq!(
        (rep.amount_minor, rep.currency.as_deref()),
        (Some(1250), Some("CNY"))
    );
    let missing = signed(404, "{\"code\":\"ORDER_NOT_EXIST\",\"message\":\"no\"}");
    assert!(matches!(
        parse_query(&cfg, &missing, id, NOW).outcome,
        ChannelOutcome::Unknown { .. }
    ));
    assert_eq!(
        parse_close(&cfg, &signed(204, ""), NOW),
        ActionOutcome::Done
    );
    let unsigned_204 = OutboundResponse {
        status: 204,
        headers: vec![],
        body: vec![],
    };
    assert!(matches!(
        parse_close(&cfg, &unsigned_204, NOW),
        ActionOutcome::Unknown { .. }
    ));
    assert!(matches!(
        parse_close(
            &cfg,
            &signed(400, "{\"code\":\"ORDERPAID\",\"message\":\"paid\"}"),
            NOW
        ),
        ActionOutcome::Declined { .. }
    ));
    let r = signed(
        200,
        "{\"out_refund_no\":\"re_1\",\"refund_id\":\"50\",\"status\":\"PROCESSING\"}",
    );
    assert_eq!(
        parse_refund(&cfg, &r, "re_1", NOW),
        RefundOutcome::Pending {
            channel_ref: Some("50".into())
        }
    );
    assert!(matches!(
        parse_refund(&cfg, &r, "re_2", NOW),
        RefundOutcome::Unknown { .. }
    ));
}

/// A callback as WeChat Pay sends it: resource encrypted with the APIv3 key, signed headers.
pub(crate) fn callback(
    event_type: &str,
    plain: &str,
    key: &[u8; 32],
    ts: i64,
) -> (Vec<(String, String)>, Vec<u8>) {
    let ct = aes256gcm_seal(key, b"fdasflkja484", b"transaction", plain.as_bytes());
    let body = serde_json::json!({
        "id": "EV-2018022511223320873",
        "create_time": "2024-03-01T00:30:05+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": b64(&ct),
            "associated_data": "transaction",
            "nonce": "fdasflkja484"
        }
    })
    .to_string()
    .into_bytes();
    (signed_headers(&body, ts, "cb-nonce-1"), body)
}

const TXN: &str = "{\"mchid\":\"1900000109\",\"appid\":\"wxd678efh567hg6787\",\"out_trade_no\":\"pay_aaaaaaaaaaaaaaaaaaaaaaaaaa\",\"transaction_id\":\"4200000\",\"trade_state\":\"SUCCESS\",\"amount\":{\"total\":1250,\"payer_total\":1250,\"currency\":\"CNY\",\"payer_currency\":\"CNY\"}}";

#[test]
fn a_signed_encrypted_callback_is_accepted_and_mapped() {
    // Proves header verification, AES-256-GCM decryption and the mapping of a payment callback.
    let cfg = config();
    let (h, body) = callback("TRANSACTION.SUCCESS", TXN, APIV3, NOW);
    let n = parse_callback(&cfg, &h, &body, NOW + 10).unwrap();
    match n.kind {
        WechatNotificationKind::Payment(p) => {
            assert_eq!(p.payment_id, "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa");
            assert_eq!(
                p.report.outcome,
                ChannelOutcome::Succeeded {
                    channel_ref: Some("4200000".into())
                }
            );
            assert_eq!(
                (p.report.amount_minor, p.report.currency.as_deref()),
                (Some(1250), Some("CNY"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(n.replay_key.starts_with("replay/wechatpay/"));
}

#[test]
fn forged_stale_foreign_or_undecryptable_callbacks_are_rejected() {
    // Proves each rejection class and the FAIL answer shape.
    let cfg = config();
    let (h, body) = callback("TRANSACTION.SUCCESS", TXN, APIV3, NOW);
    let mut forged = body.clone();
    forged[10] ^= 1;
    assert!(matches!(
        parse_callback(&cfg, &h, &forged, NOW),
        Err(NotificationRejected::Signature(_))
    ));
    assert_eq!(
        parse_callback(&cfg, &h, &body, NOW + 301),
        Err(NotificationRejected::Stale)
    );
    let (h2, b2) = callback(
        "TRANSACTION.SUCCESS",
        TXN,
        b"ffffffffffffffffffffffffffffffff",
        NOW,
    );
    assert!(matches!(
        parse_callback(&cfg, &h2, &b2, NOW),
        Err(NotificationRejected::Malformed(_))
    ));
    let other = TXN.replace("1900000109", "1900000999");
    let (h3, b3) = callback("TRANSACTION.SUCCESS", &other, APIV3, NOW);
    assert!(matches!(
        parse_callback(&cfg, &h3, &b3, NOW),
        Err(NotificationRejected::WrongMerchant(_))
    ));
    let (status, fail) = callback_failure(&NotificationRejected::Stale);
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&fail).unwrap();
    assert_eq!(v["code"], "FAIL");
    assert!(v["message"].as_str().unwrap().contains("window"));
}

#[test]
fn a_refund_callback_names_our_refund() {
    // Proves a REFUND.SUCCESS callback becomes a refund notification with its status.
    let cfg = config();
    let plain = "{\"mchid\":\"1900000109\",\"out_trade_no\":\"pay_a\",\"transaction_id\":\"42\",\"out_refund_no\":\"re_bbbbbbbbbbbbbbbbbbbbbbbbbb\",\"refund_id\":\"50\",\"refund_status\":\"SUCCESS\",\"amount\":{\"total\":1250,\"refund\":200,\"payer_total\":1250,\"payer_refund\":200}}";
    let (h, body) = callback("REFUND.SUCCESS", plain, APIV3, NOW);
    match parse_callback(&cfg, &h, &body, NOW).unwrap().kind {
        WechatNotificationKind::Refund(r) => {
            assert_eq!(r.refund_id, "re_bbbbbbbbbbbbbbbbbbbbbbbbbb");
            assert_eq!(
                (r.payment_id.as_deref(), r.amount_minor),
                (Some("pay_a"), Some(200))
            );
            assert_eq!(
                r.outcome,
                RefundOutcome::Succeeded {
                    channel_ref: Some("50".into())
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refund_reason_longer_than_wechat_pay_takes_is_cut_not_refused() {
    // Proves the refund body carries our refund id and amounts, and a 200-character
    // reason goes as its first 80 characters (counted as characters, not bytes).
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    let long: String = "退款原因".repeat(50);
    let refund = refund(&p, 200, Some(&long));
    let req = refund_request(&cfg, &mut test_rng(), &p, &refund, NOW, NONCE).unwrap();
    let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(v["out_refund_no"], refund.id);
    assert_eq!(v["amount"]["refund"], 200);
    let sent = v["reason"].as_str().unwrap();
    assert_eq!(sent.chars().count(), REFUND_REASON_CHARS_MAX);
    assert!(long.starts_with(sent));
}

/// A codepay payment (masked code, as stored) sent to WeChat Pay at [`NOW`].
fn codepay_payment() -> spinpay_core::model::Payment {
    let mut p = payment(1250, Currency::Cny);
    p.method = PaymentMethod::QrCustomer {
        auth_code: "1345**********6789".into(),
    };
    p
}

#[test]
fn a_codepay_is_canceled_by_reverse_and_every_other_order_by_close() {
    // Proves the choice of cancel API over every method: only a customer-presented code
    // (a codepay) is reversed.
    for method in crate::wiring::every_method("134567890123456789", "w") {
        let want = if matches!(method, PaymentMethod::QrCustomer { .. }) {
            CancelApi::Reverse
        } else {
            CancelApi::Close
        };
        assert_eq!(cancel_api(&method), want, "{method:?}");
    }
}

#[test]
fn reverse_request_is_a_signed_post_naming_the_order_with_appid_and_mchid() {
    // Proves method, path (order id form-encoded), the JSON body WeChat Pay documents
    // (appid and mchid) and an Authorization header whose signature verifies with our
    // merchant key over the canonical string of exactly that request.
    let cfg = config();
    let req = reverse_request(&cfg, &mut test_rng(), "pay_a b", NOW, NONCE);
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.path,
        "/v3/pay/transactions/out-trade-no/pay_a+b/reverse"
    );
    assert_eq!(
        req.body,
        "{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1900000109\"}"
    );
    let prefix = format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",nonce_str=\"{NONCE}\",signature=\""
    );
    assert!(
        req.authorization.starts_with(&prefix),
        "{}",
        req.authorization
    );
    assert!(
        req.authorization.ends_with(
            "\",timestamp=\"1709224205\",serial_no=\"5157F09EFDC096DE15EBE81A47057A72\""
        )
    );
    let sig = req.authorization[prefix.len()..].split('"').next().unwrap();
    let canonical = canonical_request("POST", &req.path, NOW, NONCE, &req.body);
    assert!(
        cfg.merchant_key
            .verifying_key()
            .verify_sha256_b64(canonical.as_bytes(), sig)
    );
}

/// `parse_reverse` of `resp` about [`codepay_payment`] at `now_ms`.
fn reverse_at(resp: &OutboundResponse, now_ms: i64) -> ActionOutcome {
    parse_reverse(&config(), resp, &codepay_payment(), now_ms)
}

/// An error answer with `code`, signed when it is received (`now_ms`).
fn refused_at(status: u16, code: &str, now_ms: i64) -> OutboundResponse {
    let body = format!("{{\"code\":\"{code}\",\"message\":\"m\"}}");
    signed_at(status, &body, now_ms.div_euclid(1000))
}

#[test]
fn signed_reverse_successes_are_done_and_unverifiable_or_foreign_ones_unknown() {
    // Proves the documented 200 with the order's body and a bodiless 204 are done when
    // signed, while unsigned, tampered, stale, 5xx, garbage and answers about another
    // order or merchant are Unknown.
    let now_ms = NOW * 1000;
    let id = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let ok = signed(
        200,
        &format!(
            "{{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1900000109\",\"out_trade_no\":\"{id}\"}}"
        ),
    );
    assert_eq!(reverse_at(&ok, now_ms), ActionOutcome::Done);
    assert_eq!(reverse_at(&signed(204, ""), now_ms), ActionOutcome::Done);
    let unsigned = OutboundResponse {
        headers: vec![],
        ..ok.clone()
    };
    let unsigned_204 = OutboundResponse {
        status: 204,
        headers: vec![],
        body: vec![],
    };
    let mut tampered = ok.clone();
    tampered.body = b"{\"out_trade_no\":\"pay_aaaaaaaaaaaaaaaaaaaaaaaaaa\"} ".to_vec();
    let mut stale = ok.clone();
    stale.headers = signed_headers(&ok.body, NOW - 301, "n");
    let server_error = refused_at(500, "SYSTEM_ERROR", now_ms);
    let unsigned_error = OutboundResponse {
        headers: vec![],
        ..refused_at(404, "ORDER_NOT_EXIST", now_ms + 3_600_000)
    };
    let other_order = signed(200, "{\"mchid\":\"1900000109\",\"out_trade_no\":\"pay_b\"}");
    let other_merchant = signed(
        200,
        &format!("{{\"mchid\":\"1900000999\",\"out_trade_no\":\"{id}\"}}"),
    );
    let html = signed(200, "<html>upstream error</html>");
    let garbage_error = signed(400, "<html>bad gateway</html>");
    for (name, r, at_ms) in [
        ("unsigned", unsigned, now_ms),
        ("unsigned 204", unsigned_204, now_ms),
        ("tampered", tampered, now_ms),
        ("stale", stale, now_ms),
        ("5xx", server_error, now_ms),
        ("unsigned error", unsigned_error, now_ms + 3_600_000),
        ("other order", other_order, now_ms),
        ("other merchant", other_merchant, now_ms),
        ("garbage", html, now_ms),
        ("garbage error", garbage_error, now_ms),
    ] {
        let got = reverse_at(&r, at_ms);
        assert!(
            matches!(got, ActionOutcome::Unknown { .. }),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn reverse_refusals_map_to_done_declined_or_unknown() {
    // Proves each error class: already revoked or closed is done, definitive refusals
    // (too old to reverse, paid, bad request, merchant binding) are declined with
    // WeChat Pay's code and message, and "try again" codes (system error, payer
    // confirming, rate limit, signature) or new codes stay unknown — long after the
    // create, so "no such order" is not what decides.
    let later_ms = NOW * 1000 + 3_600_000;
    let table = [
        ("ORDER_REVERSED", 400, "done"),
        ("ORDERREVERSED", 400, "done"),
        ("ORDER_CLOSED", 400, "done"),
        ("REVERSE_EXPIRE", 400, "declined"),
        ("ORDER_PAID", 400, "declined"),
        ("ORDERPAID", 400, "declined"),
        ("INVALID_REQUEST", 400, "declined"),
        ("PARAM_ERROR", 400, "declined"),
        ("APPID_MCHID_NOT_MATCH", 400, "declined"),
        ("NO_AUTH", 403, "declined"),
        ("USERPAYING", 403, "unknown"),
        ("SYSTEMERROR", 403, "unknown"),
        ("FREQUENCY_LIMITED", 429, "unknown"),
        ("SIGN_ERROR", 401, "unknown"),
        ("SOMETHING_NEW", 400, "unknown"),
    ];
    for (code, status, expect) in table {
        let got = reverse_at(&refused_at(status, code, later_ms), later_ms);
        let kind = match &got {
            ActionOutcome::Done => "done",
            ActionOutcome::Declined { code: c, message } => {
                assert_eq!((c.as_str(), message.as_str()), (code, "m"));
                "declined"
            }
            ActionOutcome::Unknown { .. } => "unknown",
        };
        assert_eq!(kind, expect, "{code}");
    }
}

#[test]
fn reverse_finding_no_order_is_done_only_once_no_create_can_still_land() {
    // Proves ORDER_NOT_EXIST (and the other spellings of "no such order") is Unknown
    // while the codepay request may still be creating the order — up to
    // CREATE_IN_FLIGHT_MS after the payment was sent, counted from engaged_at_ms when
    // it was sent later than its creation — and Done from then on.
    let engaged_ms = NOW * 1000;
    for code in [
        "ORDER_NOT_EXIST",
        "ORDERNOTEXIST",
        "NOT_FOUND",
        "RESOURCE_NOT_EXISTS",
    ] {
        let at = |now_ms| reverse_at(&refused_at(404, code, now_ms), now_ms);
        for now_ms in [engaged_ms, engaged_ms + CREATE_IN_FLIGHT_MS - 1] {
            let got = at(now_ms);
            assert!(
                matches!(got, ActionOutcome::Unknown { .. }),
                "{code} at {now_ms}: {got:?}"
            );
        }
        assert_eq!(
            at(engaged_ms + CREATE_IN_FLIGHT_MS),
            ActionOutcome::Done,
            "{code}"
        );
    }
    // Sent an hour after creation (a review approved it): the hour does not count.
    let mut late = codepay_payment();
    late.engaged_at_ms = Some(engaged_ms + 3_600_000);
    let at = |now_ms| {
        let r = refused_at(404, "ORDER_NOT_EXIST", now_ms);
        parse_reverse(&config(), &r, &late, now_ms)
    };
    assert!(matches!(
        at(engaged_ms + 3_600_000 + 1),
        ActionOutcome::Unknown { .. }
    ));
    assert_eq!(
        at(engaged_ms + 3_600_000 + CREATE_IN_FLIGHT_MS),
        ActionOutcome::Done
    );
}
