use spinpay_core::model::{NextAction, PaymentMethod};
use spinpay_core::money::Currency;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, RefundOutcome};
use spinpay_guest::outbound::OutboundResponse;

use super::transformers::*;
use super::{NotificationRejected, RequestError, SigningKey, UnionpayConfig};
use crate::alipay::tests::{payment, refund};
use crate::crypto::{form_body, form_get, sha256_hex, test_key, test_rng};
use crate::wiring::EXPIRY_MARGIN_MS;

const PAY_ID: &str = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
const ORDER: &str = "payaaaaaaaaaaaaaaaaaaaaaaaaaa";
const UP_CERT: &str = "69042905377";

fn unionpay_side() -> SigningKey {
    test_key(4)
}

pub(crate) fn config() -> UnionpayConfig {
    UnionpayConfig {
        mer_id: "777290058110048".into(),
        cert_id: "68759663125".into(),
        merchant_key: test_key(1),
        unionpay_keys: vec![(UP_CERT.into(), unionpay_side().verifying_key())],
        gateway_url: "https://gateway.95516.com".into(),
        back_url: "https://pay.example.com/v1/webhooks/unionpay".into(),
    }
}

/// The certificate text an ACP 5.1.0 message carries in `signPubKeyCert` (signed data
/// only: spinpay pins UnionPay's key and never reads it). Like a real one, its base64
/// has `+`, `/` and `=`, and its lines end in CR LF.
const SIGN_PUB_KEY_CERT: &str =
    "-----BEGIN CERTIFICATE-----\r\nMIIEQzCCAy+gAwIBAgIF/EBJJZVgw==\r\n-----END CERTIFICATE-----";

/// A back-notification as UnionPay signs it in ACP 5.1.0 (a form POST): its signing
/// certificate in `signPubKeyCert`, no `certId`.
fn signed(fields: &[(&str, &str)]) -> Vec<u8> {
    signed_by(
        &unionpay_side(),
        fields,
        ("signPubKeyCert", SIGN_PUB_KEY_CERT),
    )
}

/// A back-notification body of `fields` with `key_field` (`certId` or
/// `signPubKeyCert`), signed by `key`.
fn signed_by(key: &SigningKey, fields: &[(&str, &str)], key_field: (&str, &str)) -> Vec<u8> {
    form_body(&signed_pairs(key, fields, key_field)).into_bytes()
}

/// `fields` with `key_field` and `signMethod`, signed by `key` as UnionPay signs: over
/// every field but `signature`, empty ones included (the SDKs' `coverMap2String`).
fn signed_pairs(
    key: &SigningKey,
    fields: &[(&str, &str)],
    key_field: (&str, &str),
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !key_field.0.is_empty() {
        pairs.push((key_field.0.into(), key_field.1.into()));
    }
    pairs.push(("signMethod".into(), "01".into()));
    let digest = sha256_hex(verification_string(&pairs).as_bytes());
    let sig = key.sign_sha256_b64(&mut test_rng(), digest.as_bytes());
    pairs.push(("signature".into(), sig));
    pairs
}

/// A synchronous answer's body as UnionPay sends it: raw `k=v&…`, nothing encoded.
fn raw(pairs: &[(String, String)]) -> Vec<u8> {
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&").into_bytes()
}

fn http_200(body: Vec<u8>) -> OutboundResponse {
    OutboundResponse {
        status: 200,
        headers: vec![],
        body,
    }
}

/// UnionPay's signed answer with `fields`.
fn answer(fields: &[(&str, &str)]) -> OutboundResponse {
    let cert = ("signPubKeyCert", SIGN_PUB_KEY_CERT);
    http_200(raw(&signed_pairs(&unionpay_side(), fields, cert)))
}

/// UnionPay's answer to `queryTrans.do` about our payment's order, with `extra` fields.
fn query_answer(resp: &str, orig: &str, extra: &[(&str, &str)]) -> OutboundResponse {
    let mut fields = vec![
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("respCode", resp),
        ("origRespCode", orig),
    ];
    fields.extend_from_slice(extra);
    answer(&fields)
}

#[test]
fn consume_signature_is_rsa_over_the_hex_digest_of_the_sorted_string() {
    // Proves the exact signing string (with the order's expiry as payTimeout) and that
    // the signature covers its SHA-256 hex.
    let cfg = config();
    let p = payment(1250, Currency::Cny);
    let (product, req) = authorize(&cfg, &mut test_rng(), &p, &PaymentMethod::QrMerchant).unwrap();
    assert_eq!(product, Product::QrApply);
    assert_eq!(req.path, PATH_BACK);
    let expected = format!(
        "accessType=0&backUrl=https://pay.example.com/v1/webhooks/unionpay&bizType=000000\
         &certId=68759663125&channelType=08&currencyCode=156&encoding=UTF-8\
         &merId=777290058110048&orderId={ORDER}&payTimeout=20240301004505\
         &signMethod=01&txnAmt=1250\
         &txnSubType=07&txnTime=20240301003005&txnType=01&version=5.1.0"
    );
    assert_eq!(signing_string(&req.fields), expected);
    let sig = form_get(&req.fields, "signature").unwrap();
    let digest = sha256_hex(expected.as_bytes());
    assert!(
        cfg.merchant_key
            .verifying_key()
            .verify_sha256_b64(digest.as_bytes(), sig)
    );
    assert!(
        !cfg.merchant_key
            .verifying_key()
            .verify_sha256_b64(expected.as_bytes(), sig)
    );
}

#[test]
fn methods_map_to_products_and_unsupported_ones_are_refused() {
    // Proves qr_customer sends qrNo, app uses the app gateway, others are refused, and
    // amounts beyond 12 digits, payments in another currency than CNY (whose minor
    // units are not fen) or refunds without a queryId are refused.
    let cfg = config();
    let rng = &mut test_rng();
    let p = payment(1250, Currency::Cny);
    let code = PaymentMethod::QrCustomer {
        auth_code: "6220000000000001".into(),
    };
    let (prod, req) = authorize(&cfg, rng, &p, &code).unwrap();
    assert_eq!(prod, Product::QrConsume);
    assert_eq!(form_get(&req.fields, "qrNo"), Some("6220000000000001"));
    assert_eq!(form_get(&req.fields, "txnSubType"), Some("06"));
    let (prod, req) = authorize(&cfg, rng, &p, &PaymentMethod::App).unwrap();
    assert_eq!((prod, req.path), (Product::App, PATH_APP));
    let h5 = PaymentMethod::H5 {
        return_url: "https://x".into(),
    };
    assert_eq!(
        authorize(&cfg, rng, &p, &h5),
        Err(RequestError::MethodUnsupported("h5"))
    );
    let huge = payment(1_000_000_000_000, Currency::Cny);
    assert_eq!(
        authorize(&cfg, rng, &huge, &PaymentMethod::QrMerchant),
        Err(RequestError::Amount(1_000_000_000_000))
    );
    assert_eq!(form_get(&req.fields, "currencyCode"), Some("156"));
    for currency in [Currency::Jpy, Currency::Kwd, Currency::Usd] {
        let foreign = payment(1250, currency);
        assert_eq!(
            authorize(&cfg, rng, &foreign, &PaymentMethod::QrMerchant),
            Err(RequestError::CurrencyUnsupported(currency.code()))
        );
    }
    let refund = refund(&p, 200, None);
    assert!(matches!(
        refund_request(&cfg, rng, &p, &refund),
        Err(RequestError::Field {
            field: "channel_ref",
            ..
        })
    ));
    let mut paid = p.clone();
    paid.channel_ref = Some("201403101234567890".into());
    let r = refund_request(&cfg, rng, &paid, &refund).unwrap();
    assert_eq!(form_get(&r.fields, "origQryId"), Some("201403101234567890"));
    assert_eq!(
        form_get(&r.fields, "orderId"),
        Some("rebbbbbbbbbbbbbbbbbbbbbbbbbb")
    );
    assert_eq!(form_get(&r.fields, "txnType"), Some("04"));
}

#[test]
fn order_ids_and_currency_codes_round_trip() {
    // Proves the underscore-free orderId maps back, and numeric currency codes are exact.
    assert_eq!(order_id(PAY_ID), ORDER);
    assert_eq!(our_id(ORDER).as_deref(), Some(PAY_ID));
    assert_eq!(our_id("rebbbb").as_deref(), Some("re_bbbb"));
    assert_eq!(our_id("xyz123"), None);
    assert_eq!(our_id("pay-1"), None);
    for c in Currency::ALL {
        assert_eq!(currency_from_numeric(currency_numeric(c)), Some(c));
    }
}

#[test]
fn response_codes_classify_as_documented() {
    // Proves 00/A6 success, 03/04/05 processing, 12/34 and garbage unknown, other failure.
    for (code, class) in [
        ("00", CodeClass::Success),
        ("A6", CodeClass::Success),
        ("03", CodeClass::Processing),
        ("04", CodeClass::Processing),
        ("05", CodeClass::Processing),
        ("01", CodeClass::Failure),
        ("61", CodeClass::Failure),
        ("12", CodeClass::Unknown),
        ("34", CodeClass::Unknown),
        ("", CodeClass::Unknown),
        ("000", CodeClass::Unknown),
        ("0!", CodeClass::Unknown),
    ] {
        assert_eq!(classify_code(code), class, "{code:?}");
    }
}

#[test]
fn signed_answers_map_and_forged_or_foreign_ones_are_unknown() {
    // Proves QR apply → display_qr, failure codes → declined, and forged, unknown-cert,
    // other-merchant or other-order answers → Unknown.
    let cfg = config();
    let base = [
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("respCode", "00"),
        ("respMsg", "ok"),
        ("qrCode", "https://qr.95516.com/00010000/1"),
    ];
    let ok = answer(&base);
    assert_eq!(
        parse_authorize(&cfg, Product::QrApply, &ok, PAY_ID),
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::DisplayQr {
                qr_payload: "https://qr.95516.com/00010000/1".into()
            })
        }
    );
    let mut forged = ok.clone();
    forged.body = String::from_utf8(forged.body)
        .unwrap()
        .replace("respCode=00", "respCode=01")
        .into_bytes();
    assert!(matches!(
        parse_authorize(&cfg, Product::QrApply, &forged, PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));
    let mut other_merchant = base;
    other_merchant[0] = ("merId", "777290058110099");
    assert!(matches!(
        parse_authorize(&cfg, Product::QrApply, &answer(&other_merchant), PAY_ID),
        ChannelOutcome::Unknown { .. }
    ));
    assert!(matches!(
        parse_authorize(
            &cfg,
            Product::QrApply,
            &ok,
            "pay_bbbbbbbbbbbbbbbbbbbbbbbbbb"
        ),
        ChannelOutcome::Unknown { .. }
    ));
    let declined = answer(&[
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("respCode", "61"),
        ("respMsg", "limit"),
    ]);
    assert_eq!(
        parse_authorize(&cfg, Product::QrConsume, &declined, PAY_ID),
        ChannelOutcome::Declined {
            code: "unionpay_61".into(),
            message: "limit".into()
        }
    );
    let accepted = answer(&[
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("respCode", "00"),
        ("queryId", "Q1"),
    ]);
    assert_eq!(
        parse_authorize(&cfg, Product::QrConsume, &accepted, PAY_ID),
        ChannelOutcome::Pending {
            channel_ref: Some("Q1".into()),
            next_action: None
        }
    );
}

#[test]
fn query_uses_orig_resp_code_and_states_the_amount() {
    // Proves origRespCode decides the query outcome and respCode 34 stays unknown.
    let cfg = config();
    let stated = [
        ("queryId", "Q1"),
        ("txnAmt", "1250"),
        ("currencyCode", "156"),
    ];
    let q = |resp: &str, orig: &str| query_answer(resp, orig, &stated);
    let rep = parse_query(&cfg, &q("00", "00"), PAY_ID);
    assert_eq!(
        rep.outcome,
        ChannelOutcome::Succeeded {
            channel_ref: Some("Q1".into())
        }
    );
    assert_eq!(
        (rep.amount_minor, rep.currency.as_deref()),
        (Some(1250), Some("CNY"))
    );
    assert!(matches!(
        parse_query(&cfg, &q("00", "05"), PAY_ID).outcome,
        ChannelOutcome::Pending { .. }
    ));
    assert!(matches!(
        parse_query(&cfg, &q("00", "01"), PAY_ID).outcome,
        ChannelOutcome::Declined { .. }
    ));
    assert!(matches!(
        parse_query(&cfg, &q("34", ""), PAY_ID).outcome,
        ChannelOutcome::Unknown { .. }
    ));
    let refund_order = "rebbbbbbbbbbbbbbbbbbbbbbbbbb";
    let rq = answer(&[
        ("merId", "777290058110048"),
        ("orderId", refund_order),
        ("respCode", "00"),
        ("origRespCode", "00"),
        ("queryId", "R1"),
    ]);
    assert!(matches!(
        parse_refund_query(&cfg, &rq, "re_bbbbbbbbbbbbbbbbbbbbbbbbbb"),
        RefundOutcome::Succeeded { .. }
    ));
    let r = answer(&[
        ("merId", "777290058110048"),
        ("orderId", refund_order),
        ("respCode", "00"),
        ("queryId", "R1"),
    ]);
    assert!(matches!(
        parse_refund(&cfg, &r, "re_bbbbbbbbbbbbbbbbbbbbbbbbbb"),
        RefundOutcome::Pending { .. }
    ));
}

#[test]
fn a_cancel_is_refused_before_the_order_expires_and_decided_by_a_query_after() {
    // Proves UnionPay's cancel (it has no close): refused before the order's payTimeout
    // and for a payment stored without an expiry, undecided (tried again) within the
    // clock margin after it, and only then handed to a query.
    let p = payment(1250, Currency::Cny);
    let expiry = p.expires_at_ms.unwrap();
    let refused = |o: Option<ActionOutcome>| matches!(o, Some(ActionOutcome::Declined { code, .. }) if code == "cancel_unsupported");
    assert!(refused(cancel_before_query(&p, expiry - 1)));
    let mut without = p.clone();
    without.expires_at_ms = None;
    assert!(refused(cancel_before_query(&without, i64::MAX)));
    assert!(matches!(
        cancel_before_query(&p, expiry),
        Some(ActionOutcome::Unknown { .. })
    ));
    assert!(matches!(
        cancel_before_query(&p, expiry + EXPIRY_MARGIN_MS - 1),
        Some(ActionOutcome::Unknown { .. })
    ));
    assert_eq!(cancel_before_query(&p, expiry + EXPIRY_MARGIN_MS), None);
}

#[test]
fn the_query_of_an_expired_order_decides_its_cancel() {
    // Proves no such transaction (34) or a failed one lets an expired order be canceled,
    // a paid one refuses the cancel, and a processing, failed-query, forged or foreign
    // answer leaves it undecided.
    let cfg = config();
    let q = |resp: &str, orig: &str| query_answer(resp, orig, &[]);
    assert_eq!(
        parse_expired_query(&cfg, &q("34", ""), PAY_ID),
        ActionOutcome::Done
    );
    assert_eq!(
        parse_expired_query(&cfg, &q("00", "01"), PAY_ID),
        ActionOutcome::Done
    );
    assert!(matches!(
        parse_expired_query(&cfg, &q("00", "00"), PAY_ID),
        ActionOutcome::Declined { code, .. } if code == "already_paid"
    ));
    for (resp, orig) in [("00", "05"), ("00", ""), ("12", ""), ("01", ""), ("03", "")] {
        assert!(
            matches!(
                parse_expired_query(&cfg, &q(resp, orig), PAY_ID),
                ActionOutcome::Unknown { .. }
            ),
            "{resp} {orig}"
        );
    }
    let foreign = answer(&[
        ("merId", "777290058110048"),
        ("orderId", "payzzzzzzzzzzzzzzzzzzzzzzzzzz"),
        ("respCode", "34"),
    ]);
    assert!(matches!(
        parse_expired_query(&cfg, &foreign, PAY_ID),
        ActionOutcome::Unknown { .. }
    ));
    let mut forged = q("34", "");
    forged.body.extend_from_slice(b"&x=1");
    assert!(matches!(
        parse_expired_query(&cfg, &forged, PAY_ID),
        ActionOutcome::Unknown { .. }
    ));
}

#[test]
fn back_notifications_are_verified_and_mapped() {
    // Proves a signed consume notification maps to a payment success with amount, a
    // refund notification to a refund, and forged/foreign ones are rejected.
    let cfg = config();
    let fields = [
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("txnType", "01"),
        ("respCode", "00"),
        ("respMsg", "success"),
        ("queryId", "Q1"),
        ("txnAmt", "1250"),
        ("currencyCode", "156"),
        ("txnTime", "20240301003005"),
    ];
    let n = parse_notification(&cfg, &signed(&fields)).unwrap();
    match n.kind {
        UnionpayNotificationKind::Payment(p) => {
            assert_eq!(p.payment_id, PAY_ID);
            assert_eq!(
                p.report.outcome,
                ChannelOutcome::Succeeded {
                    channel_ref: Some("Q1".into())
                }
            );
            assert_eq!(p.report.amount_minor, Some(1250));
        }
        other => panic!("{other:?}"),
    }
    let tampered = String::from_utf8(signed(&fields))
        .unwrap()
        .replace("txnAmt=1250", "txnAmt=1");
    assert!(matches!(
        parse_notification(&cfg, tampered.as_bytes()),
        Err(NotificationRejected::Signature(_))
    ));
    let mut foreign = fields;
    foreign[0] = ("merId", "777290058110099");
    assert!(matches!(
        parse_notification(&cfg, &signed(&foreign)),
        Err(NotificationRejected::WrongMerchant(_))
    ));
    let refund = [
        ("merId", "777290058110048"),
        ("orderId", "rebbbbbbbbbbbbbbbbbbbbbbbbbb"),
        ("txnType", "04"),
        ("respCode", "00"),
        ("queryId", "R1"),
        ("txnAmt", "200"),
        ("currencyCode", "156"),
    ];
    match parse_notification(&cfg, &signed(&refund)).unwrap().kind {
        UnionpayNotificationKind::Refund(r) => {
            assert_eq!(r.refund_id, "re_bbbbbbbbbbbbbbbbbbbbbbbbbb");
            assert!(matches!(r.outcome, RefundOutcome::Succeeded { .. }));
            assert_eq!(r.payment_id, None, "named by origQryId, not our id");
            assert_eq!(
                (r.amount_minor, r.currency.as_deref()),
                (Some(200), Some("CNY"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_verifies_under_a_pinned_key_whether_it_carries_its_certificate_or_a_cert_id() {
    // Proves the two ways UnionPay names its key: a 5.1.0 message with `signPubKeyCert`
    // (no certId) verifies under any pinned key, and only a pinned one (a certificate of
    // another key it carries is no credential); a 5.0.0-style message verifies only under
    // the pinned key its certId names; one with neither is refused.
    let rotated = test_key(5);
    let mut cfg = config();
    cfg.unionpay_keys
        .push(("70000000001".into(), rotated.verifying_key()));
    let fields = [
        ("merId", "777290058110048"),
        ("orderId", ORDER),
        ("txnType", "01"),
        ("respCode", "00"),
        ("queryId", "Q1"),
        ("txnAmt", "1250"),
    ];
    let cert = ("signPubKeyCert", SIGN_PUB_KEY_CERT);
    let accepted = |body: &[u8]| parse_notification(&cfg, body).is_ok();
    let refused = |body: &[u8]| {
        matches!(
            parse_notification(&cfg, body),
            Err(NotificationRejected::Signature(_))
        )
    };
    assert!(accepted(&signed_by(&unionpay_side(), &fields, cert)));
    assert!(
        accepted(&signed_by(&rotated, &fields, cert)),
        "the second pinned key"
    );
    assert!(
        refused(&signed_by(&test_key(6), &fields, cert)),
        "an unpinned key"
    );

    assert!(accepted(&signed_by(
        &unionpay_side(),
        &fields,
        ("certId", UP_CERT)
    )));
    assert!(
        refused(&signed_by(&rotated, &fields, ("certId", UP_CERT))),
        "a pinned key other than the one certId names"
    );
    assert!(refused(&signed_by(
        &unionpay_side(),
        &fields,
        ("certId", "1")
    )));
    assert!(
        refused(&signed_by(&unionpay_side(), &fields, ("", ""))),
        "neither"
    );
    assert!(
        refused(&signed_by(
            &unionpay_side(),
            &fields,
            ("signPubKeyCert", "")
        )),
        "an empty certificate field names no key"
    );
}

/// The merchant and order fields every answer about our payment carries.
const OURS: [(&str, &str); 2] = [("merId", "777290058110048"), ("orderId", ORDER)];

/// The base64 signature at the end of a raw answer body.
fn raw_signature(resp: &OutboundResponse) -> String {
    let text = String::from_utf8(resp.body.clone()).unwrap();
    let (_, sig) = text.rsplit_once("&signature=").unwrap();
    sig.to_string()
}

#[test]
fn a_raw_answer_with_plus_and_slash_in_its_signature_and_certificate_verifies() {
    // Proves a synchronous answer is read as UnionPay sends it (raw, not a form): its
    // signature and certificate keep their `+`, `/` and `=`, CR LF and UTF-8 text stay
    // as they are, and it verifies (form decoding turned `+` into a space: unknown).
    let cfg = config();
    // PKCS#1 v1.5 signatures are deterministic: vary traceNo until one has `+` and `/`.
    let resp = (0..64)
        .map(|n| {
            let trace = format!("{n:06}");
            answer(&[
                OURS[0],
                OURS[1],
                ("respCode", "00"),
                ("respMsg", "成功[0000000]"),
                ("traceNo", trace.as_str()),
                ("qrCode", "https://qr.95516.com/00010000/62aa=="),
            ])
        })
        .find(|r| raw_signature(r).contains('+') && raw_signature(r).contains('/'))
        .expect("a signature with `+` and `/` within 64 tries");
    let text = String::from_utf8(resp.body.clone()).unwrap();
    assert!(text.contains("respMsg=成功[0000000]&"), "{text}");
    assert!(text.contains("signPubKeyCert=-----BEGIN CERTIFICATE-----\r\nMIIEQzCCAy+"));
    assert_eq!(
        parse_authorize(&cfg, Product::QrApply, &resp, PAY_ID),
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: Some(NextAction::DisplayQr {
                qr_payload: "https://qr.95516.com/00010000/62aa==".into()
            })
        }
    );
}

#[test]
fn a_braced_value_with_ampersands_and_equals_stays_one_field() {
    // Proves the SDKs' parseQString rules: `&` and `=` inside `{…}` or `[…]` stay in the
    // value, a field splits at its first `=`, nothing is percent-decoded, an empty value
    // is a field; and an answer carrying such a value verifies.
    let fields = answer_decode("reserved={a=b&c=d}&x=[1&2]&url=a=b%20c+d&e=&f={}").unwrap();
    let expected = [
        ("reserved", "{a=b&c=d}"),
        ("x", "[1&2]"),
        ("url", "a=b%20c+d"),
        ("e", ""),
        ("f", "{}"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields, expected);
    assert_eq!(answer_decode(""), Ok(vec![]));
    let cfg = config();
    let stated = [
        ("reserved", "{a=b&c=d}"),
        ("queryId", "Q1"),
        ("txnAmt", "1250"),
        ("currencyCode", "156"),
    ];
    let rep = parse_query(&cfg, &query_answer("00", "00", &stated), PAY_ID);
    assert_eq!(
        rep.outcome,
        ChannelOutcome::Succeeded {
            channel_ref: Some("Q1".into())
        }
    );
    assert_eq!(rep.amount_minor, Some(1250));
}

#[test]
fn an_answer_with_a_duplicate_field_or_a_malformed_or_oversize_body_is_refused() {
    // Proves a field twice is refused before any signature check (which one was signed?),
    // and so are a field without `=` or a name, an unclosed `{`, too many fields and an
    // oversize body; each answer is then unknown, never read.
    let ok = query_answer("00", "00", &[("queryId", "Q1")]);
    let mut twice = ok.clone();
    twice.body.extend_from_slice(b"&origRespCode=01");
    match parse_query(&config(), &twice, PAY_ID).outcome {
        ChannelOutcome::Unknown { detail } => {
            assert!(
                detail.contains("\"origRespCode\" appears twice"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        answer_decode("a=1&b=2&a=1"),
        Err(AnswerFormatError::Duplicate("a".into()))
    );
    for (text, error) in [
        ("a=1&b", AnswerFormatError::FieldWithoutEquals),
        ("a=1&&b=2", AnswerFormatError::FieldWithoutEquals),
        ("a=1&", AnswerFormatError::FieldWithoutEquals),
        ("a=1&=2", AnswerFormatError::EmptyName),
        ("a={1&b=2", AnswerFormatError::Unclosed("a".into())),
        ("a=[1}&b=2", AnswerFormatError::Unclosed("a".into())),
    ] {
        assert_eq!(answer_decode(text), Err(error), "{text}");
    }
    let many: Vec<String> = (0..=crate::crypto::FORM_FIELDS_MAX)
        .map(|i| format!("k{i}=v"))
        .collect();
    assert_eq!(
        answer_decode(&many.join("&")),
        Err(AnswerFormatError::TooMany)
    );
    let huge = format!("a={}", "x".repeat(MESSAGE_BYTES_MAX));
    assert_eq!(answer_decode(&huge), Err(AnswerFormatError::TooLarge));
    assert!(matches!(
        parse_query(&config(), &http_200(huge.into_bytes()), PAY_ID).outcome,
        ChannelOutcome::Unknown { .. }
    ));
}

#[test]
fn an_empty_field_is_signed_data_in_answers_and_notifications() {
    // Proves UnionPay's signature covering an empty field as `k=` (the SDKs'
    // coverMap2String) verifies, for an answer and a notification; so does one over the
    // string without the empty fields (what UnionPay's Java demo verifies notifications
    // by), but not once a field was changed; and an empty queryId is no channel_ref.
    let cfg = config();
    let fields = [
        OURS[0],
        OURS[1],
        ("respCode", "00"),
        ("queryId", ""),
        ("reqReserved", ""),
    ];
    assert_eq!(
        parse_authorize(&cfg, Product::QrConsume, &answer(&fields), PAY_ID),
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: None
        }
    );
    let notification = [
        OURS[0],
        OURS[1],
        ("txnType", "01"),
        ("respCode", "00"),
        ("queryId", "Q1"),
        ("txnAmt", "1250"),
        ("reqReserved", ""),
    ];
    assert!(parse_notification(&cfg, &signed(&notification)).is_ok());

    // The same answer signed over the non-empty fields only.
    let mut pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.push(("signPubKeyCert".into(), SIGN_PUB_KEY_CERT.into()));
    pairs.push(("signMethod".into(), "01".into()));
    let digest = sha256_hex(signing_string(&pairs).as_bytes());
    let sig = unionpay_side().sign_sha256_b64(&mut test_rng(), digest.as_bytes());
    pairs.push(("signature".into(), sig));
    assert!(matches!(
        parse_authorize(&cfg, Product::QrConsume, &http_200(raw(&pairs)), PAY_ID),
        ChannelOutcome::Pending { .. }
    ));
    let tampered: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| match k.as_str() {
            "respCode" => (k.clone(), "05".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert!(matches!(
        parse_authorize(&cfg, Product::QrConsume, &http_200(raw(&tampered)), PAY_ID),
        ChannelOutcome::Unknown { detail } if detail == "signature refused"
    ));
}

#[test]
fn a_tampered_raw_answer_is_refused() {
    // Proves any change to a signed raw answer leaves it unknown: a changed value, an
    // added, removed or emptied field, and the answer as form decoding would read it
    // (`+` → space).
    let cfg = config();
    let fields = [
        OURS[0],
        OURS[1],
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("qrCode", "https://qr.95516.com/00010000/1"),
    ];
    let ok = answer(&fields);
    assert!(matches!(
        parse_authorize(&cfg, Product::QrApply, &ok, PAY_ID),
        ChannelOutcome::Pending { .. }
    ));
    let text = String::from_utf8(ok.body.clone()).unwrap();
    let tampered = [
        text.replace("00010000/1", "00010000/2"),
        text.replace("respCode=00", "respCode=01"),
        format!("txnAmt=1&{text}"),
        text.replace("respMsg=成功[0000000]&", ""),
        text.replace("respMsg=成功[0000000]", "respMsg="),
        text.replace('+', " "),
    ];
    for body in tampered {
        assert_ne!(body, text);
        assert!(
            matches!(
                parse_authorize(
                    &cfg,
                    Product::QrApply,
                    &http_200(body.clone().into_bytes()),
                    PAY_ID
                ),
                ChannelOutcome::Unknown { .. }
            ),
            "{body}"
        );
    }
}

#[test]
fn a_request_whose_txn_time_is_no_longer_current_is_not_sent() {
    // Proves the txnTime rule: a consume or refund is sent while its creation time (its
    // txnTime) is within the 5-minute margin of now, and not after, when UnionPay would
    // refuse it and the refusal would read as a decision.
    let created = 1_700_000_000_000;
    assert_eq!(too_late_to_send(created, created), None);
    assert_eq!(too_late_to_send(created, created + EXPIRY_MARGIN_MS), None);
    let late = too_late_to_send(created, created + EXPIRY_MARGIN_MS + 1).unwrap();
    assert!(late.contains("300 s old"), "{late}");
}

#[test]
fn a_payment_sent_after_review_is_dated_by_its_approval_in_the_consume_and_its_query() {
    // Proves a payment approved in review (or whose code was entered) long after its
    // creation goes out with txnTime = that moment, and is queried by the same txnTime,
    // instead of never being sent because its creation time is no longer current.
    let cfg = config();
    let rng = &mut test_rng();
    let mut p = payment(1250, Currency::Cny);
    p.method = PaymentMethod::QrMerchant;
    let approved = p.created_at_ms + 10 * 60_000;
    assert!(approved < p.expires_at_ms(), "approved before its expiry");
    assert!(too_late_to_send(p.engaged_at_ms(), approved).is_some());
    p.engaged_at_ms = Some(approved);
    assert_eq!(too_late_to_send(p.engaged_at_ms(), approved + 60_000), None);
    let (_, consume) = authorize(&cfg, rng, &p, &p.method.clone()).unwrap();
    let q = query_request(&cfg, rng, &p, &p.id, p.engaged_at_ms());
    let (sent, queried) = (
        form_get(&consume.fields, "txnTime"),
        form_get(&q.fields, "txnTime"),
    );
    assert_eq!(sent, queried);
    let created = query_request(&cfg, rng, &p, &p.id, p.created_at_ms);
    assert_ne!(sent, form_get(&created.fields, "txnTime"));
}

#[test]
fn refunds_and_queries_carry_the_biz_type_of_the_payments_product() {
    // Proves an App (手机控件支付) consume's refund and queries go with bizType 000201 as
    // its consume did, and a QR payment's with 000000.
    let cfg = config();
    let rng = &mut test_rng();
    for (method, biz) in [
        (PaymentMethod::App, "000201"),
        (PaymentMethod::QrMerchant, "000000"),
    ] {
        let mut p = payment(1250, Currency::Cny);
        p.method = method;
        p.channel_ref = Some("201403101234567890".into());
        let refund = refund(&p, 200, None);
        let r = refund_request(&cfg, rng, &p, &refund).unwrap();
        assert_eq!(form_get(&r.fields, "bizType"), Some(biz));
        let q = query_request(&cfg, rng, &p, &p.id, p.created_at_ms);
        assert_eq!(form_get(&q.fields, "bizType"), Some(biz));
        let q = query_request(&cfg, rng, &p, &refund.id, refund.created_at_ms);
        assert_eq!(form_get(&q.fields, "bizType"), Some(biz));
    }
}
