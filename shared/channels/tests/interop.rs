//! Interoperability with code nobody here wrote: the PyPI packages `wechatpayv3` and
//! `python-alipay-sdk` produce callbacks / notifications / answers our transformers must
//! accept, and verify the requests our transformers sign.
//!
//! Needs `python3` with `pip install wechatpayv3 python-alipay-sdk`. Without them the
//! tests print a skip notice, unless `SPINPAY_REQUIRE_INTEROP=1`, which makes them fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::rand_core::SeedableRng;
use serde_json::{Value, json};
use spinpay_channels::alipay::transformers as ali;
use spinpay_channels::alipay::{AlipayConfig, SigningKey};
use spinpay_channels::wechatpay::transformers as wx;
use spinpay_channels::wechatpay::{WechatpayConfig, apiv3_key_from_text};
use spinpay_core::machine::PaymentState;
use spinpay_core::model::{CaptureMode, Channel, Payment, PaymentMethod};
use spinpay_core::money::Currency;
use spinpay_core::service::ChannelOutcome;
use spinpay_guest::outbound::OutboundResponse;

const NOW: i64 = 1_709_224_205;
const PAY_ID: &str = "pay_aaaaaaaaaaaaaaaaaaaaaaaaaa";
const APIV3: &str = "0123456789abcdef0123456789abcdef";
const SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000001";

/// A throwaway key pair from a seeded RNG: (our wrapper, PKCS#8 PEM, SPKI PEM).
fn keypair(seed: u64) -> (SigningKey, String, String) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let key = RsaPrivateKey::new(&mut rng, 2048).expect("keygen");
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let ours = SigningKey::from_text(&private_pem).expect("our loader reads PKCS#8 PEM");
    (ours, private_pem, public_pem)
}

fn rng() -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(99)
}

/// Runs `tests/interop/<script>` with `input` on stdin; `None` = skipped.
fn python(script: &str, input: &Value) -> Option<Value> {
    let required = std::env::var("SPINPAY_REQUIRE_INTEROP").as_deref() == Ok("1");
    let probe = Command::new("python3")
        .args(["-c", "import wechatpayv3, alipay"])
        .output();
    let available = matches!(&probe, Ok(o) if o.status.success());
    if !available {
        let why = match probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            !required,
            "SPINPAY_REQUIRE_INTEROP=1 but python3 + wechatpayv3 + python-alipay-sdk are unavailable: {why}"
        );
        eprintln!(
            "SKIP interop ({script}): python3 with wechatpayv3 and python-alipay-sdk not available \
             (pip install wechatpayv3 python-alipay-sdk): {why}"
        );
        return None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("script prints JSON"))
}

fn payment() -> Payment {
    Payment {
        id: PAY_ID.into(),
        merchant_id: "mch_x".into(),
        seq: 1,
        state: PaymentState::new(1250),
        currency: Currency::Cny,
        channel: Channel::Alipay,
        capture: CaptureMode::Automatic,
        merchant_order_id: None,
        description: Some("2 咖啡 & tea".into()),
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

struct Alipay {
    config: AlipayConfig,
    app_private: String,
    app_public: String,
    alipay_private: String,
    alipay_public: String,
}

fn alipay() -> Alipay {
    let (app_key, app_private, app_public) = keypair(11);
    let (alipay_key, alipay_private, alipay_public) = keypair(12);
    Alipay {
        config: AlipayConfig {
            app_id: "2021000000000001".into(),
            app_key,
            alipay_key: alipay_key.verifying_key(),
            gateway_url: "https://openapi.alipay.com/gateway.do".into(),
            notify_url: Some("https://pay.example.com/v1/webhooks/alipay".into()),
            currencies: vec![spinpay_core::money::Currency::Cny],
        },
        app_private,
        app_public,
        alipay_private,
        alipay_public,
    }
}

#[test]
fn alipay_requests_we_sign_verify_with_python_alipay_sdk() {
    // Proves python-alipay-sdk's `_verify` accepts our RSA2 signatures and its own
    // `sign_data` over the same parameters yields the identical signature.
    let a = alipay();
    let p = payment();
    let bar = PaymentMethod::QrCustomer {
        auth_code: "28763443825664".into(),
    };
    let mut requests = vec![ali::query_request(&a.config, &mut rng(), PAY_ID, NOW)];
    for method in [PaymentMethod::QrMerchant, bar] {
        match ali::authorize(&a.config, &mut rng(), &p, &method, NOW).unwrap() {
            ali::AlipayAuthorize::Call(r) => requests.push(r),
            ali::AlipayAuthorize::Ready(o) => panic!("{o:?}"),
        }
    }
    for req in requests {
        let params: Vec<Value> = req.params.iter().map(|(k, v)| json!([k, v])).collect();
        let input = json!({"op": "verify_request", "params": params,
            "private_pem": a.app_private, "public_pem": a.app_public});
        let Some(out) = python("alipay_interop.py", &input) else {
            return;
        };
        assert_eq!(out["verified"], true, "{} {out}", req.method);
        assert_eq!(out["same_signature"], true, "{} {out}", req.method);
    }
}

#[test]
fn alipay_notify_signed_by_python_alipay_sdk_is_accepted() {
    // Proves a notify signed by python-alipay-sdk (as Alipay signs: all fields but
    // sign/sign_type, an empty one as `passback_params=`) passes our verification and
    // maps to a payment success.
    let a = alipay();
    let fields = json!({
        "notify_time": "2024-03-01 00:30:05", "notify_type": "trade_status_sync",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786", "app_id": "2021000000000001",
        "charset": "utf-8", "version": "1.0", "trade_no": "2024030122001",
        "out_trade_no": PAY_ID, "trade_status": "TRADE_SUCCESS", "total_amount": "12.50",
        "subject": "2 咖啡 & tea", "buyer_logon_id": "159****5620", "passback_params": ""
    });
    let input = json!({"op": "sign_notify", "fields": fields,
        "private_pem": a.alipay_private, "public_pem": a.alipay_public});
    let Some(out) = python("alipay_interop.py", &input) else {
        return;
    };
    let body = out["body"].as_str().expect("body");
    assert!(body.contains("&passback_params=&"), "{body}");
    let n = ali::parse_notification(&a.config, body.as_bytes()).expect("accepted");
    match n.kind {
        ali::AlipayNotificationKind::Payment(p) => {
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
    let tampered = body.replace("12.50", "12.49");
    assert!(ali::parse_notification(&a.config, tampered.as_bytes()).is_err());
}

#[test]
fn alipay_answer_signed_by_python_alipay_sdk_is_accepted() {
    // Proves a sync answer signed by python-alipay-sdk (which its own verifier accepts)
    // passes our raw-substring verification.
    let a = alipay();
    let object = format!(
        "{{\"code\":\"10000\",\"msg\":\"Success\",\"out_trade_no\":\"{PAY_ID}\",\"trade_no\":\"T1\",\"trade_status\":\"TRADE_SUCCESS\",\"total_amount\":\"12.50\"}}"
    );
    let input = json!({"op": "sign_response", "object": object,
        "response_key": "alipay_trade_query_response",
        "private_pem": a.alipay_private, "public_pem": a.alipay_public});
    let Some(out) = python("alipay_interop.py", &input) else {
        return;
    };
    assert_eq!(out["sdk_accepts"], true);
    let resp = OutboundResponse {
        status: 200,
        headers: vec![],
        body: out["body"].as_str().expect("body").as_bytes().to_vec(),
    };
    let report = ali::parse_query(&a.config, &resp, PAY_ID);
    assert_eq!(
        report.outcome,
        ChannelOutcome::Succeeded {
            channel_ref: Some("T1".into())
        }
    );
    assert_eq!(report.amount_minor, Some(1250));
}

struct Wechat {
    config: WechatpayConfig,
    merchant_private: String,
    merchant_public: String,
    platform_private: String,
    platform_public: String,
}

fn wechat() -> Wechat {
    let (merchant_key, merchant_private, merchant_public) = keypair(21);
    let (platform_key, platform_private, platform_public) = keypair(22);
    Wechat {
        config: WechatpayConfig {
            mchid: "1900000109".into(),
            appid: "wxd678efh567hg6787".into(),
            serial_no: "5157F09EFDC096DE15EBE81A47057A72".into(),
            merchant_key,
            platform_keys: vec![(SERIAL.into(), platform_key.verifying_key())],
            apiv3_key: apiv3_key_from_text(APIV3).expect("32 bytes"),
            base_url: "https://api.mch.weixin.qq.com".into(),
            notify_url: "https://pay.example.com/v1/webhooks/wechatpay".into(),
        },
        merchant_private,
        merchant_public,
        platform_private,
        platform_public,
    }
}

#[test]
fn wechatpay_callback_produced_with_wechatpayv3_is_accepted() {
    // Proves a callback signed with wechatpayv3's rsa_sign and encrypted AEAD_AES_256_GCM
    // (which wechatpayv3's own Core.callback accepts) passes our verify + decrypt.
    let w = wechat();
    let plaintext = json!({
        "mchid": "1900000109", "appid": "wxd678efh567hg6787", "out_trade_no": PAY_ID,
        "transaction_id": "4200000", "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": "2024-03-01T00:30:05+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 1250, "payer_total": 1250, "currency": "CNY", "payer_currency": "CNY"}
    })
    .to_string();
    let input = json!({"op": "callback", "event_type": "TRANSACTION.SUCCESS",
        "plaintext": plaintext, "apiv3_key": APIV3, "associated_data": "transaction",
        "resource_nonce": "fdasflkja484", "timestamp": NOW, "header_nonce": "fdasfwaefawefwa",
        "serial": SERIAL, "mchid": "1900000109",
        "platform_private_pem": w.platform_private, "platform_public_pem": w.platform_public,
        "merchant_private_pem": w.merchant_private});
    let Some(out) = python("wechatpay_interop.py", &input) else {
        return;
    };
    assert_eq!(out["sdk_accepts"], true, "{out}");
    let headers: Vec<(String, String)> = out["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("str").to_string()))
        .collect();
    let body = out["body"].as_str().expect("body").as_bytes();
    let n = wx::parse_callback(&w.config, &headers, body, NOW + 5).expect("accepted");
    match n.kind {
        wx::WechatNotificationKind::Payment(p) => {
            assert_eq!(p.payment_id, PAY_ID);
            assert_eq!(p.report.amount_minor, Some(1250));
            assert_eq!(
                p.report.outcome,
                ChannelOutcome::Succeeded {
                    channel_ref: Some("4200000".into())
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(wx::parse_callback(&w.config, &headers, body, NOW + 301).is_err());
}

#[test]
fn wechatpay_requests_we_sign_verify_with_wechatpayv3() {
    // Proves wechatpayv3 builds the byte-identical Authorization header for the same
    // time and nonce, its rsa_verify accepts our signature, and its Core.sign produces
    // our app-order signature.
    let w = wechat();
    let p = payment();
    let (_, native) = wx::authorize(
        &w.config,
        &mut rng(),
        &p,
        &PaymentMethod::QrMerchant,
        NOW,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    )
    .unwrap();
    let query = wx::query_request(&w.config, &mut rng(), PAY_ID, NOW, "N2");
    let order = wx::app_order(&w.config, &mut rng(), "wx2014102720093955", NOW, "N3");
    for req in [native, query] {
        let input = json!({"op": "verify_request", "authorization": req.authorization,
            "method": req.method, "path": req.path, "body": req.body,
            "merchant_private_pem": w.merchant_private, "merchant_public_pem": w.merchant_public,
            "app_order": order});
        let Some(out) = python("wechatpay_interop.py", &input) else {
            return;
        };
        assert_eq!(out["scheme"], "WECHATPAY2-SHA256-RSA2048");
        assert_eq!(out["same_header"], true, "{} {out}", req.path);
        assert_eq!(out["verified"], true, "{} {out}", req.path);
        assert_eq!(out["same_app_sign"], true, "{out}");
    }
}
