use super::transformers::*;
use super::wire::*;
use spinpay_core::crypto::sign_header;
use spinpay_core::machine::PaymentState;
use spinpay_core::model::{CaptureMode, Channel, NextAction, Payment, PaymentMethod};
use spinpay_core::money::Currency;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, RefundOutcome};
use spinpay_guest::outbound::OutboundResponse;

const KEY: &[u8] = b"sandbox-test-secret";
const NOW: i64 = 1_800_000_000;

fn answer(status: SandboxStatus) -> PaymentAnswer {
    PaymentAnswer {
        payment_id: "pay_1".into(),
        channel_txn_id: "sbx_1".into(),
        status,
        amount_minor: 1250,
        currency: Currency::Cny,
        captured_minor: 0,
        refunded_minor: 0,
        next_action: None,
        decline_code: None,
        decline_message: None,
    }
}

fn signed_response(status: u16, body: Vec<u8>, key: &[u8], t: i64) -> OutboundResponse {
    OutboundResponse {
        status,
        headers: vec![(SIGNATURE_HEADER.into(), sign_header(key, t, &body))],
        body,
    }
}

fn ok(a: &PaymentAnswer) -> OutboundResponse {
    signed_response(200, serde_json::to_vec(a).unwrap(), KEY, NOW)
}

fn payment() -> Payment {
    Payment {
        id: "pay_1".into(),
        merchant_id: "mch_1".into(),
        seq: 1,
        state: PaymentState::new(1250),
        currency: Currency::Cny,
        channel: Channel::Sandbox,
        capture: CaptureMode::Manual,
        merchant_order_id: None,
        description: Some("2 coffees".into()),
        method: PaymentMethod::QrMerchant,
        method_sealed: None,
        payer: None,
        payer_phone_sealed: None,
        metadata: Default::default(),
        next_action: None,
        risk: None,
        failure: None,
        conflict: None,
        channel_ref: None,
        channel_engaged: true,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: Some(900_000),
        cancellation_reason: None,
        engaged_at_ms: None,
        cancel_requested: None,
    }
}

#[test]
fn a_create_request_is_signed_over_t_dot_body_and_names_its_operation() {
    // Proves the create body carries op, ids, amount, method secrets and notify URL, and
    // that its signature verifies with the shared secret only.
    let method = PaymentMethod::QrCustomer {
        auth_code: "28763443825664394".into(),
    };
    let req = create_request(
        &payment(),
        &method,
        "http://webhook.spin.internal/v1/webhooks/sandbox",
        KEY,
        NOW,
    );
    assert_eq!(req.path, PATH_PAYMENTS);
    let body: CreatePayment = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body.op, Op::PaymentCreate);
    assert_eq!(body.amount_minor, 1250);
    assert_eq!(body.capture, CaptureMode::Manual);
    assert_eq!(body.method, method);
    assert!(req.signature.starts_with(&format!("t={NOW},v1=")));
    let verify = |key: &[u8]| {
        spinpay_core::crypto::verify_header(&req.signature, &req.body, &[key], NOW, 300)
    };
    assert!(verify(KEY).is_ok());
    assert!(verify(b"another").is_err());
}

#[test]
fn every_sandbox_status_maps_to_one_core_outcome() {
    // Proves the status table: pending keeps the next action, closed and declined are
    // declines, authorized and succeeded are themselves.
    let mut pending = answer(SandboxStatus::Pending);
    pending.next_action = Some(NextAction::DisplayQr {
        qr_payload: "sandbox://qr/sbx_1".into(),
    });
    assert!(matches!(
        payment_outcome(&pending),
        ChannelOutcome::Pending {
            next_action: Some(NextAction::DisplayQr { .. }),
            ..
        }
    ));
    assert!(matches!(
        payment_outcome(&answer(SandboxStatus::Authorized)),
        ChannelOutcome::Authorized { .. }
    ));
    assert!(matches!(
        payment_outcome(&answer(SandboxStatus::Succeeded)),
        ChannelOutcome::Succeeded { .. }
    ));
    let mut declined = answer(SandboxStatus::Declined);
    declined.decline_code = Some("insufficient_funds".into());
    assert!(matches!(
        payment_outcome(&declined),
        ChannelOutcome::Declined { code, .. } if code == "insufficient_funds"
    ));
    assert!(matches!(
        payment_outcome(&answer(SandboxStatus::Closed)),
        ChannelOutcome::Declined { .. }
    ));
}

#[test]
fn a_genuine_signed_answer_is_accepted() {
    // Proves a correctly signed 200 answer about our payment yields its outcome.
    let out = parse_authorize(&ok(&answer(SandboxStatus::Succeeded)), "pay_1", KEY, NOW);
    assert_eq!(
        out,
        ChannelOutcome::Succeeded {
            channel_ref: Some("sbx_1".into())
        }
    );
}

#[test]
fn unsigned_forged_or_stale_answers_are_unknown_outcomes() {
    // Proves that without a valid, fresh signature even a "succeeded" body is unknown.
    let body = serde_json::to_vec(&answer(SandboxStatus::Succeeded)).unwrap();
    let unsigned = OutboundResponse {
        status: 200,
        headers: vec![],
        body: body.clone(),
    };
    let forged = signed_response(200, body.clone(), b"attacker", NOW);
    let stale = signed_response(200, body.clone(), KEY, NOW - 3600);
    let mut tampered = signed_response(200, body.clone(), KEY, NOW);
    tampered.body = serde_json::to_vec(&answer(SandboxStatus::Declined)).unwrap();
    for resp in [unsigned, forged, stale, tampered] {
        assert!(matches!(
            parse_authorize(&resp, "pay_1", KEY, NOW),
            ChannelOutcome::Unknown { .. }
        ));
    }
}

#[test]
fn garbage_and_unknown_statuses_are_unknown_never_success() {
    // Proves non-JSON, an unknown status string and a 5xx all map to Unknown.
    let garbage = signed_response(200, b"<html>oops</html>".to_vec(), KEY, NOW);
    let odd = signed_response(
        200,
        serde_json::to_vec(&answer(SandboxStatus::Succeeded))
            .map(|b| {
                String::from_utf8(b)
                    .unwrap()
                    .replace("\"succeeded\"", "\"settling\"")
                    .into_bytes()
            })
            .unwrap(),
        KEY,
        NOW,
    );
    let server_error = signed_response(503, b"{}".to_vec(), KEY, NOW);
    for resp in [garbage, odd, server_error] {
        assert!(matches!(
            parse_authorize(&resp, "pay_1", KEY, NOW),
            ChannelOutcome::Unknown { .. }
        ));
        assert!(matches!(
            parse_query(&resp, "pay_1", KEY, NOW).outcome,
            ChannelOutcome::Unknown { .. }
        ));
    }
}

#[test]
fn an_answer_about_another_payment_is_unknown() {
    // Proves a replayed genuine answer for a different payment is not accepted.
    let out = parse_authorize(&ok(&answer(SandboxStatus::Succeeded)), "pay_2", KEY, NOW);
    assert!(matches!(out, ChannelOutcome::Unknown { .. }));
}

#[test]
fn query_reports_carry_the_stated_amount_and_currency() {
    // Proves a query answer reports amount and currency for mismatch checks.
    let report = parse_query(&ok(&answer(SandboxStatus::Authorized)), "pay_1", KEY, NOW);
    assert_eq!(report.amount_minor, Some(1250));
    assert_eq!(report.currency.as_deref(), Some("CNY"));
}

#[test]
fn capture_and_cancel_are_done_only_in_the_expected_status() {
    // Proves capture needs `succeeded`, cancel needs `closed`, signed refusals are
    // declines and anything else is unknown.
    let cap = parse_action(
        &ok(&answer(SandboxStatus::Succeeded)),
        Op::PaymentCapture,
        "pay_1",
        KEY,
        NOW,
    );
    assert_eq!(cap, ActionOutcome::Done);
    let cancel = parse_action(
        &ok(&answer(SandboxStatus::Closed)),
        Op::PaymentCancel,
        "pay_1",
        KEY,
        NOW,
    );
    assert_eq!(cancel, ActionOutcome::Done);
    let wrong = parse_action(
        &ok(&answer(SandboxStatus::Authorized)),
        Op::PaymentCancel,
        "pay_1",
        KEY,
        NOW,
    );
    assert!(matches!(wrong, ActionOutcome::Unknown { .. }));
    let refusal = ErrorAnswer {
        error: ErrorBody {
            code: "already_captured".into(),
            message: "m".into(),
        },
    };
    let resp = signed_response(409, serde_json::to_vec(&refusal).unwrap(), KEY, NOW);
    assert!(matches!(
        parse_action(&resp, Op::PaymentCancel, "pay_1", KEY, NOW),
        ActionOutcome::Declined { code, .. } if code == "already_captured"
    ));
}

#[test]
fn refund_answers_map_each_status_and_refusals() {
    // Proves refund statuses, a signed over-refund refusal (failed) and garbage (unknown).
    let mut r = RefundAnswer {
        refund_id: "re_1".into(),
        payment_id: "pay_1".into(),
        channel_refund_id: "sbr_1".into(),
        status: SandboxRefundStatus::Pending,
        amount_minor: 300,
        failure_code: None,
    };
    let resp = |r: &RefundAnswer| signed_response(200, serde_json::to_vec(r).unwrap(), KEY, NOW);
    assert!(matches!(
        parse_refund(&resp(&r), "re_1", KEY, NOW),
        RefundOutcome::Pending { .. }
    ));
    r.status = SandboxRefundStatus::Succeeded;
    assert!(matches!(
        parse_refund(&resp(&r), "re_1", KEY, NOW),
        RefundOutcome::Succeeded { .. }
    ));
    r.status = SandboxRefundStatus::Failed;
    assert!(matches!(
        parse_refund(&resp(&r), "re_1", KEY, NOW),
        RefundOutcome::Failed { .. }
    ));
    assert!(matches!(
        parse_refund(&resp(&r), "re_2", KEY, NOW),
        RefundOutcome::Unknown { .. }
    ));
    let over = ErrorAnswer {
        error: ErrorBody {
            code: "refund_exceeds_captured".into(),
            message: "m".into(),
        },
    };
    let over = signed_response(400, serde_json::to_vec(&over).unwrap(), KEY, NOW);
    assert!(matches!(
        parse_refund(&over, "re_1", KEY, NOW),
        RefundOutcome::Failed { .. }
    ));
    let garbage = signed_response(200, b"nope".to_vec(), KEY, NOW);
    assert!(matches!(
        parse_refund(&garbage, "re_1", KEY, NOW),
        RefundOutcome::Unknown { .. }
    ));
}

#[test]
fn notifications_are_verified_then_parsed_into_core_notifications() {
    // Proves a signed payment notification becomes a PaymentNotification with the replay
    // key of its notification_id, and a forged or missing signature is rejected.
    let n = Notification {
        notification_id: "ntf_1".into(),
        kind: NotificationKind::Payment,
        payment: answer(SandboxStatus::Succeeded),
        refund: None,
        sent_at_ms: NOW * 1000,
    };
    let body = serde_json::to_vec(&n).unwrap();
    let sig = sign_header(KEY, NOW, &body);
    let verified = verify_notification(Some(&sig), &body, KEY, NOW).unwrap();
    assert_eq!(
        verified.replay_key,
        crate::crypto::replay_key("sandbox", "ntf_1")
    );
    match verified.parsed {
        ParsedNotification::Payment(p) => {
            assert_eq!(p.payment_id, "pay_1");
            assert_eq!(p.channel, Channel::Sandbox);
            assert_eq!(p.report.amount_minor, Some(1250));
            assert!(matches!(p.report.outcome, ChannelOutcome::Succeeded { .. }));
        }
        other => panic!("expected a payment notification, got {other:?}"),
    }
    assert!(matches!(
        verify_notification(None, &body, KEY, NOW),
        Err(NotificationRejected::Signature(_))
    ));
    let forged = sign_header(b"attacker", NOW, &body);
    assert!(verify_notification(Some(&forged), &body, KEY, NOW).is_err());
    let garbage_sig = sign_header(KEY, NOW, b"[]");
    assert!(matches!(
        verify_notification(Some(&garbage_sig), b"[]", KEY, NOW),
        Err(NotificationRejected::Malformed(_))
    ));
}

#[test]
fn refund_notifications_must_agree_with_their_kind() {
    // Proves a refund notification yields a RefundNotification and a mislabeled one is refused.
    let refund = RefundAnswer {
        refund_id: "re_1".into(),
        payment_id: "pay_1".into(),
        channel_refund_id: "sbr_1".into(),
        status: SandboxRefundStatus::Succeeded,
        amount_minor: 300,
        failure_code: None,
    };
    let mut n = Notification {
        notification_id: "ntf_2".into(),
        kind: NotificationKind::Refund,
        payment: answer(SandboxStatus::Succeeded),
        refund: Some(refund),
        sent_at_ms: 0,
    };
    let body = serde_json::to_vec(&n).unwrap();
    let parsed = verify_notification(Some(&sign_header(KEY, NOW, &body)), &body, KEY, NOW)
        .unwrap()
        .parsed;
    let ParsedNotification::Refund(r) = parsed else {
        panic!("{parsed:?}")
    };
    assert_eq!(r.refund_id, "re_1");
    assert_eq!(
        (r.payment_id.as_deref(), r.amount_minor),
        (Some("pay_1"), Some(300))
    );
    assert_eq!(r.currency.as_deref(), Some(n.payment.currency.code()));
    n.kind = NotificationKind::Payment;
    let body = serde_json::to_vec(&n).unwrap();
    assert!(verify_notification(Some(&sign_header(KEY, NOW, &body)), &body, KEY, NOW).is_err());
}

#[test]
fn every_operation_is_sent_to_its_own_path() {
    // Proves op → path is one-to-one, so a signed body cannot be replayed elsewhere.
    let ops = [
        Op::PaymentCreate,
        Op::PaymentCapture,
        Op::PaymentCancel,
        Op::PaymentQuery,
        Op::RefundCreate,
        Op::RefundQuery,
        Op::SmsSend,
    ];
    let mut paths: Vec<_> = ops.iter().map(|o| o.path()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), ops.len());
    let req = action_request(Op::PaymentCapture, "pay_1", Some(500), KEY, NOW);
    assert_eq!(req.path, PATH_CAPTURE);
    let body: PaymentAction = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body.amount_minor, Some(500));
}
