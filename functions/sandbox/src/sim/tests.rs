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

fn sms(phone: &str) -> PaymentMethod {
    PaymentMethod::SmsOtp {
        phone: phone.into(),
    }
}

#[test]
fn an_sms_otp_phone_ending_0000_or_1111_is_not_a_magic_code() {
    // Proves the payer's phone is not read as a wallet code: phones ending 0000 and 1111
    // (common placeholder numbers) pay at once like any other, with no ref to index.
    for phone in ["+8613800000000", "+8613911111111", "+8613812345678"] {
        let c = create(
            &create_req(1234, sms(phone), CaptureMode::Automatic),
            "t",
            0,
        );
        assert_eq!(c.record.status, SandboxStatus::Succeeded, "{phone}");
        assert_eq!(c.record.decline_code, None, "{phone}");
        assert!(c.payment_refs.is_empty(), "{phone}");
    }
    let manual = create(
        &create_req(1234, sms("+8613800000000"), CaptureMode::Manual),
        "t",
        0,
    );
    assert_eq!(manual.record.status, SandboxStatus::Authorized);
}

#[test]
fn magic_amounts_still_apply_to_sms_otp_and_888_waits_for_the_phone() {
    // Proves 666 declines an sms_otp payment, 888 leaves it pending with the phone as its
    // payment ref (payable by the customer with it), and the gateway's cancel closes such
    // a pending payment so the phone no longer pays it; 777 and 999 select the delivery.
    let declined = create(
        &create_req(
            MAGIC_DECLINE_MINOR,
            sms("+8613811111111"),
            CaptureMode::Automatic,
        ),
        "t",
        0,
    );
    assert_eq!(
        declined.record.decline_code.as_deref(),
        Some("insufficient_funds")
    );
    let phone = "+8613955550124";
    let pending = create(
        &create_req(MAGIC_PENDING_MINOR, sms(phone), CaptureMode::Automatic),
        "t",
        0,
    );
    assert_eq!(pending.record.status, SandboxStatus::Pending);
    assert_eq!(pending.record.next_action, None);
    assert_eq!(pending.payment_refs, vec![phone.to_string()]);
    assert_eq!(
        ref_key(phone),
        ref_key_for_hash(&pending.record.payment_ref_hashes[0])
    );
    let mut paid = pending.record.clone();
    customer_pay(&mut paid, 1).unwrap();
    assert_eq!(paid.status, SandboxStatus::Succeeded);
    let mut closed = pending.record;
    cancel(&mut closed).unwrap();
    assert_eq!(closed.status, SandboxStatus::Closed);
    assert_eq!(
        customer_pay(&mut closed, 1).unwrap_err().code,
        "not_payable"
    );
    assert_eq!(delivery_for(MAGIC_SLOW_MINOR), Delivery::Slow);
    assert_eq!(delivery_for(MAGIC_GARBAGE_MINOR), Delivery::Garbage);
}

fn pending_code_payment(payment_id: &str, expires_at_ms: Option<i64>) -> SandboxPayment {
    let req = CreatePayment {
        payment_id: payment_id.into(),
        expires_at_ms,
        ..create_req(100, qr_code("2899999999991111"), CaptureMode::Automatic)
    };
    create(&req, "t", 0).record
}

#[test]
fn a_payment_ref_held_by_a_payable_payment_is_not_taken_by_another() {
    // Proves the claim rule: a free ref is taken, a ref the claimant holds is kept (a
    // replayed create), a ref naming another payment the customer can still pay is in
    // use, and one naming a payment that can no longer be paid (paid, declined, closed,
    // expired, or missing) is taken over.
    let holder = pending_code_payment("pay_a", Some(1_000));
    assert_eq!(claim_ref("pay_b", None, None, 0), RefClaim::Take);
    assert_eq!(claim_ref("pay_a", Some("pay_a"), None, 0), RefClaim::Held);
    assert_eq!(
        claim_ref("pay_b", Some("pay_a"), Some(&holder), 999),
        RefClaim::InUse
    );
    assert_eq!(
        claim_ref("pay_b", Some("pay_a"), Some(&holder), 1_000),
        RefClaim::Take
    );
    let mut paid = holder.clone();
    customer_pay(&mut paid, 1).unwrap();
    let mut closed = holder.clone();
    cancel(&mut closed).unwrap();
    let mut declined = holder.clone();
    assert!(decline_ref_in_use(&mut declined));
    for gone in [&paid, &closed, &declined] {
        assert_eq!(
            claim_ref("pay_b", Some("pay_a"), Some(gone), 1),
            RefClaim::Take
        );
    }
    assert_eq!(claim_ref("pay_b", Some("pay_a"), None, 1), RefClaim::Take);
}

#[test]
fn of_two_creates_racing_for_one_ref_only_one_gets_it() {
    // Proves the claim protocol the handler runs on `sbx:ref:<hash>`: both creates read
    // the free entry at version 0 and decide to take it; the compare-and-swap lets only
    // the first write through, and the loser's retry finds the winner payable and is
    // declined, leaving the winner payable by the code.
    let a = pending_code_payment("pay_a", None);
    let mut b = pending_code_payment("pay_b", None);
    let mut entry: (u64, Option<String>) = (0, None);
    let swap = |entry: &mut (u64, Option<String>), expected: u64, id: &str| {
        let ok = entry.0 == expected;
        if ok {
            *entry = (expected + 1, Some(id.to_string()));
        }
        ok
    };
    let (seen_a, seen_b) = (entry.clone(), entry.clone());
    assert_eq!(
        claim_ref("pay_a", seen_a.1.as_deref(), None, 0),
        RefClaim::Take
    );
    assert_eq!(
        claim_ref("pay_b", seen_b.1.as_deref(), None, 0),
        RefClaim::Take
    );
    assert!(swap(&mut entry, seen_a.0, "pay_a"));
    assert!(!swap(&mut entry, seen_b.0, "pay_b"));
    assert_eq!(
        claim_ref("pay_b", entry.1.as_deref(), Some(&a), 0),
        RefClaim::InUse
    );
    assert!(decline_ref_in_use(&mut b));
    assert_eq!(entry, (1, Some("pay_a".to_string())));
    assert!(is_payable(&a, 0));
    assert!(!is_payable(&b, 0));
}

#[test]
fn a_create_refused_for_a_ref_in_use_is_declined_and_replays_the_same_answer() {
    // Proves the refused create is a `declined` payment with the stable code
    // payment_ref_in_use and no ref, that a replay of the same request is accepted and so
    // answered with that stored record, and that a payment no longer pending is not
    // declined after the fact.
    let req = CreatePayment {
        payment_id: "pay_b".into(),
        ..create_req(100, qr_code("2899999999991111"), CaptureMode::Automatic)
    };
    let mut b = create(&req, "t", 0).record;
    assert!(decline_ref_in_use(&mut b));
    assert_eq!(b.status, SandboxStatus::Declined);
    assert_eq!(b.decline_code.as_deref(), Some(REF_IN_USE_CODE));
    assert!(b.decline_message.as_deref().unwrap().contains("single-use"));
    assert!(b.payment_ref_hashes.is_empty());
    let stored = b.clone();
    assert!(!decline_ref_in_use(&mut b));
    assert_eq!(b, stored);
    assert!(replay_create(&stored, &req).is_ok());
    let mut closed = pending_code_payment("pay_c", None);
    cancel(&mut closed).unwrap();
    assert!(!decline_ref_in_use(&mut closed));
    assert_eq!(closed.status, SandboxStatus::Closed);
}

#[test]
fn a_late_create_notification_describes_the_payment_as_it_is_after_the_pause() {
    // Proves a 777/999 create's notification is sent about the current record: nothing
    // once spinpay voided or closed the payment during the pause (the stale "authorized"
    // would contradict it), the captured state when it was captured meanwhile, the
    // decline for a declined create, and nothing for a create that left it pending.
    let req = create_req(
        MAGIC_SLOW_MINOR,
        PaymentMethod::SoundWave {
            token: "sw-77700001".into(),
        },
        CaptureMode::Manual,
    );
    let created = create(&req, "t", 0).record;
    assert_eq!(created.status, SandboxStatus::Authorized);
    assert!(notifies_after_create(&created, &created));
    let mut voided = created.clone();
    cancel(&mut voided).unwrap();
    assert!(!notifies_after_create(&created, &voided));
    let mut captured = created.clone();
    capture(&mut captured, None).unwrap();
    assert!(notifies_after_create(&created, &captured));
    let declined = create(
        &create_req(MAGIC_DECLINE_MINOR, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    assert!(notifies_after_create(&declined, &declined));
    let waiting = pending_code_payment("pay_w", None);
    let mut paid_meanwhile = waiting.clone();
    customer_pay(&mut paid_meanwhile, 1).unwrap();
    assert!(!notifies_after_create(&waiting, &waiting));
    assert!(!notifies_after_create(&waiting, &paid_meanwhile));
}

#[test]
fn a_late_refund_notification_reports_the_refund_as_it_is_now() {
    // Proves the refund a 777/999 refund notification carries is read from the current
    // record: a succeeded or failed refund is reported, a pending one is not (refund.query
    // settles it), nor an unknown refund id.
    let mut r = create(
        &create_req(5000, qr_code("2876"), CaptureMode::Automatic),
        "t",
        0,
    )
    .record;
    refund(&mut r, &refund_req("re_slow", MAGIC_SLOW_MINOR), "sbr_1", 1).unwrap();
    refund(
        &mut r,
        &refund_req("re_fail", MAGIC_DECLINE_MINOR),
        "sbr_2",
        1,
    )
    .unwrap();
    refund(
        &mut r,
        &refund_req("re_wait", MAGIC_PENDING_MINOR),
        "sbr_3",
        1,
    )
    .unwrap();
    let slow = refund_to_notify(&r, "re_slow").unwrap();
    assert_eq!(slow.status, SandboxRefundStatus::Succeeded);
    assert_eq!(
        refund_to_notify(&r, "re_fail").unwrap().status,
        SandboxRefundStatus::Failed
    );
    assert_eq!(refund_to_notify(&r, "re_wait"), None);
    settle_refund(&mut r, "re_wait").unwrap();
    assert_eq!(
        refund_to_notify(&r, "re_wait").unwrap().status,
        SandboxRefundStatus::Succeeded
    );
    assert_eq!(refund_to_notify(&r, "re_none"), None);
}
