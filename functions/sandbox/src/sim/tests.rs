use super::*;
use spinpay_channels::sandbox::wire::Op;

fn create_req(amount_minor: i64, method: PaymentMethod, capture: CaptureMode) -> CreatePayment {
    CreatePayment {
        op: Op::PaymentCreate,
        payment_id: "pay_1".into(),
        amount_minor,
        currency: Currency::Cny,
        capture,
        method,
        notify_url: "http://webhook.spin.internal/v1/webhooks/sandbox".into(),
        description: None,
        expires_at_ms: None,
    }
}

fn qr_code(code: &str) -> PaymentMethod {
    PaymentMethod::QrCustomer {
        auth_code: code.into(),
    }
}

fn refund_req(refund_id: &str, amount_minor: i64) -> CreateRefund {
    CreateRefund {
        op: Op::RefundCreate,
        payment_id: "pay_1".into(),
        refund_id: refund_id.into(),
        amount_minor,
        currency: Currency::Cny,
    }
}

#[test]
fn a_merchant_qr_payment_waits_for_the_customer_and_can_be_paid_by_its_payload() {
    // Proves qr_merchant is pending with a QR payload that is indexed as a payment ref,
    // and that the customer paying it captures in automatic mode.
    let c = create(
        &create_req(1250, PaymentMethod::QrMerchant, CaptureMode::Automatic),
        "sbx_1",
        10,
    );
    assert_eq!(c.record.status, SandboxStatus::Pending);
    assert_eq!(c.payment_refs, vec!["sandbox://qr/sbx_1".to_string()]);
    assert_eq!(
        ref_key(&c.payment_refs[0]),
        format!("sbx:ref:{}", c.record.payment_ref_hashes[0])
    );
    let mut r = c.record;
    customer_pay(&mut r, 20).unwrap();
    assert_eq!(r.status, SandboxStatus::Succeeded);
    assert_eq!(r.captured_minor, 1250);
    assert_eq!(customer_pay(&mut r, 30).unwrap_err().code, "not_payable");
}

#[test]
fn an_expired_payment_can_no_longer_be_paid() {
    // Proves the customer can pay until the order's expiry and not from that instant
    // on: the order stays pending (spinpay closes it), and a payment without an expiry
    // stays payable.
    let req = CreatePayment {
        expires_at_ms: Some(1_000),
        ..create_req(1250, PaymentMethod::QrMerchant, CaptureMode::Automatic)
    };
    let expiring = create(&req, "sbx_1", 10).record;
    let mut paid = expiring.clone();
    customer_pay(&mut paid, 999).unwrap();
    assert_eq!(paid.status, SandboxStatus::Succeeded);
    let mut late = expiring;
    let refused = customer_pay(&mut late, 1_000).unwrap_err();
    assert_eq!((refused.status, refused.code), (409, "payment_expired"));
    assert_eq!(late.status, SandboxStatus::Pending);
    assert_eq!(late.captured_minor, 0);
    let mut open = create(
        &create_req(1250, PaymentMethod::QrMerchant, CaptureMode::Automatic),
        "sbx_2",
        10,
    )
    .record;
    customer_pay(&mut open, i64::MAX).unwrap();
}

#[test]
fn every_redirect_and_app_method_gets_its_next_action() {
    // Proves h5 gets a redirect URL and app an order string, both pending.
    let h5 = create(
        &create_req(
            100,
            PaymentMethod::H5 {
                return_url: "https://m.example/r".into(),
            },
            CaptureMode::Automatic,
        ),
        "sbx_2",
        0,
    );
    assert!(
        matches!(h5.record.next_action, Some(NextAction::Redirect { ref url }) if url.ends_with("sbx_2"))
    );
    let app = create(
        &create_req(100, PaymentMethod::App, CaptureMode::Automatic),
        "sbx_3",
        0,
    );
    assert!(matches!(
        app.record.next_action,
        Some(NextAction::AppOrder { .. })
    ));
}

#[test]
fn magic_amounts_and_codes_select_outcomes() {
    // Proves 666 declines, 888 and codes ending 1111 wait, codes ending 0000 decline,
    // an empty NFC cryptogram declines and ordinary codes pay synchronously.
    let declined = create(
        &create_req(MAGIC_DECLINE_MINOR, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    );
    assert_eq!(
        declined.record.decline_code.as_deref(),
        Some("insufficient_funds")
    );
    let pending = create(
        &create_req(MAGIC_PENDING_MINOR, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    );
    assert_eq!(pending.record.status, SandboxStatus::Pending);
    assert_eq!(pending.payment_refs, vec!["2876".to_string()]);
    let waits = create(
        &create_req(100, qr_code("28761111"), CaptureMode::Automatic),
        "t",
        0,
    );
    assert_eq!(waits.record.status, SandboxStatus::Pending);
    let card = create(
        &create_req(100, qr_code("28760000"), CaptureMode::Automatic),
        "t",
        0,
    );
    assert_eq!(card.record.decline_code.as_deref(), Some("card_declined"));
    let nfc = PaymentMethod::Nfc {
        token: "tok_1".into(),
        cryptogram: " ".into(),
    };
    let bad_nfc = create(&create_req(100, nfc, CaptureMode::Automatic), "t", 0);
    assert_eq!(
        bad_nfc.record.decline_code.as_deref(),
        Some("invalid_cryptogram")
    );
    let paid = create(
        &create_req(
            100,
            PaymentMethod::SoundWave {
                token: "sw_1".into(),
            },
            CaptureMode::Manual,
        ),
        "t",
        0,
    );
    assert_eq!(paid.record.status, SandboxStatus::Authorized);
    assert_eq!(paid.record.captured_minor, 0);
    assert_eq!(delivery_for(MAGIC_SLOW_MINOR), Delivery::Slow);
    assert_eq!(delivery_for(MAGIC_GARBAGE_MINOR), Delivery::Garbage);
    assert_eq!(delivery_for(1250), Delivery::Normal);
}

#[test]
fn a_retried_create_must_be_the_same_request() {
    // Proves the same create replays and a different one with the same id is refused.
    let req = create_req(100, qr_code("2876"), CaptureMode::Automatic);
    let c = create(&req, "t", 0);
    assert!(replay_create(&c.record, &req).is_ok());
    let other = create_req(101, qr_code("2876"), CaptureMode::Automatic);
    assert_eq!(
        replay_create(&c.record, &other).unwrap_err().code,
        "payment_id_reused"
    );
}

#[test]
fn creates_with_bad_fields_are_refused() {
    // Proves id, amount and notify URL validation.
    let mut req = create_req(0, PaymentMethod::App, CaptureMode::Automatic);
    assert_eq!(validate_create(&req).unwrap_err().code, "amount_invalid");
    req.amount_minor = 1;
    req.payment_id = "pay 1".into();
    assert_eq!(
        validate_create(&req).unwrap_err().code,
        "payment_id_invalid"
    );
    req.payment_id = "pay_1".into();
    req.notify_url = "ftp://x".into();
    assert_eq!(
        validate_create(&req).unwrap_err().code,
        "notify_url_invalid"
    );
}

#[test]
fn manual_capture_captures_once_and_repeats_are_no_ops() {
    // Proves partial capture, an idempotent repeat, a refused different repeat and the
    // authorized-amount bound.
    let mut r = create(
        &create_req(1000, qr_code("2876"), CaptureMode::Manual),
        "t",
        0,
    )
    .record;
    assert_eq!(
        capture(&mut r.clone(), Some(1001)).unwrap_err().code,
        "capture_exceeds_authorized"
    );
    capture(&mut r, Some(600)).unwrap();
    assert_eq!(
        (r.status, r.captured_minor),
        (SandboxStatus::Succeeded, 600)
    );
    capture(&mut r, Some(600)).unwrap();
    assert_eq!(
        capture(&mut r, Some(700)).unwrap_err().code,
        "not_capturable"
    );
}

#[test]
fn cancel_closes_unpaid_payments_but_not_captured_ones() {
    // Proves cancel on pending/authorized, its idempotent repeat and the refusal after capture.
    let mut pending = create(
        &create_req(100, PaymentMethod::QrMerchant, CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    cancel(&mut pending).unwrap();
    cancel(&mut pending).unwrap();
    assert_eq!(pending.status, SandboxStatus::Closed);
    let mut paid = create(
        &create_req(100, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    assert_eq!(cancel(&mut paid).unwrap_err().code, "already_captured");
}

#[test]
fn refunds_never_exceed_the_captured_amount_and_are_idempotent() {
    // Proves the refund sum bound, idempotency per refund id, failed refunds not counting
    // and pending refunds settling on query.
    let mut r = create(
        &create_req(2000, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    refund(&mut r, &refund_req("re_1", 300), "sbr_1", 1).unwrap();
    assert_eq!(
        refund(&mut r, &refund_req("re_1", 300), "sbr_x", 2).unwrap(),
        0
    );
    assert_eq!(r.refunded_minor, 300);
    assert_eq!(
        refund(&mut r, &refund_req("re_1", 200), "sbr_x", 2)
            .unwrap_err()
            .code,
        "refund_id_reused"
    );
    assert_eq!(
        refund(&mut r, &refund_req("re_2", 1701), "sbr_2", 2)
            .unwrap_err()
            .code,
        "refund_exceeds_captured"
    );
    let failed = refund(&mut r, &refund_req("re_3", MAGIC_DECLINE_MINOR), "sbr_3", 3).unwrap();
    assert_eq!(r.refunds[failed].status, SandboxRefundStatus::Failed);
    assert_eq!(r.refunded_minor, 300);
    let pending = refund(&mut r, &refund_req("re_4", MAGIC_PENDING_MINOR), "sbr_4", 4).unwrap();
    assert_eq!(r.refunds[pending].status, SandboxRefundStatus::Pending);
    assert_eq!(r.refunded_minor, 300 + MAGIC_PENDING_MINOR);
    assert_eq!(settle_refund(&mut r, "re_4").unwrap(), (pending, true));
    assert_eq!(settle_refund(&mut r, "re_4").unwrap(), (pending, false));
    assert_eq!(settle_refund(&mut r, "re_9").unwrap_err().status, 404);
}

#[test]
fn unpaid_payments_cannot_be_refunded() {
    // Proves a refund of a pending payment is refused with not_refundable.
    let mut r = create(
        &create_req(1000, PaymentMethod::QrMerchant, CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    assert_eq!(
        refund(&mut r, &refund_req("re_1", 1), "s", 0)
            .unwrap_err()
            .code,
        "not_refundable"
    );
}

#[test]
fn phones_must_be_e164() {
    // Proves the SMS phone format check.
    assert!(valid_phone("+8613812345678"));
    assert!(!valid_phone("8613812345678"));
    assert!(!valid_phone("+86 138"));
    assert!(!valid_phone("+1234567"));
}
