//! Every payment method's flow on the sandbox channel, manual capture and cancel, and the
//! sandbox's magic amounts — through the real components, the way a merchant and a
//! customer drive them.

use serde_json::{Value, json};
use spinpay_tests::contention::{Calls, Contention};
use spinpay_tests::{
    Merchant, Reply, TestApp, assert_error, assert_error_param, manual_payment_request,
    payment_request, qr_customer, run, runtime, sha256_hex, shift_record_time, unique,
    unique_phone, unique_token,
};

/// Asserts the fields every fresh payment shares.
fn assert_new_payment(p: &Value, amount_minor: i64, method_type: &str) {
    assert!(
        p["id"].as_str().is_some_and(|id| id.starts_with("pay_")),
        "{p}"
    );
    assert_eq!(p["amount_minor"], amount_minor, "{p}");
    assert_eq!(p["currency"], "CNY", "{p}");
    assert_eq!(p["channel"], "sandbox", "{p}");
    assert_eq!(p["method"]["type"], method_type, "{p}");
    assert_eq!(p["risk"]["decision"], "allow", "{p}");
}

/// Asserts a payment captured `amount_minor` in full and is settled.
fn assert_succeeded(p: &Value, amount_minor: i64) {
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["captured_minor"], amount_minor, "{p}");
    assert_eq!(p["refunded_minor"], 0, "{p}");
    assert_eq!(p["next_action"], Value::Null, "{p}");
    assert_eq!(p["failure"], Value::Null, "{p}");
}

/// Creates a payment that waits for the customer and returns it with the reference the
/// customer pays with (`next_action.<ref_field>`).
async fn pending_payment(
    m: &Merchant<'_>,
    method: Value,
    action: &str,
    ref_field: &str,
) -> (Value, String) {
    let p = m
        .create_payment_ok(&payment_request(1250, method.clone()))
        .await;
    assert_new_payment(&p, 1250, method["type"].as_str().unwrap());
    assert_eq!(p["status"], "requires_customer_action", "{p}");
    assert_eq!(p["next_action"]["type"], action, "{p}");
    let payment_ref = p["next_action"][ref_field]
        .as_str()
        .unwrap_or_else(|| panic!("next_action without {ref_field}: {p}"))
        .to_string();
    (p, payment_ref)
}

/// A qr_merchant payment waiting for the customer, with the QR payload to pay.
async fn pending_qr(m: &Merchant<'_>) -> (Value, String) {
    pending_payment(
        m,
        json!({"type": "qr_merchant"}),
        "display_qr",
        "qr_payload",
    )
    .await
}

/// POSTs `body` to the payment's `action` (`capture`, `cancel`, `refunds`, ...).
async fn act(m: &Merchant<'_>, id: &str, action: &str, body: Value) -> Reply {
    m.post(&format!("/v1/payments/{id}/{action}"), &body).await
}

/// A valid sandbox signature of `body` made now.
fn signed_now(body: &[u8]) -> String {
    spinpay_tests::sandbox_signature(
        spinpay_tests::SANDBOX_SECRET,
        spinpay_tests::now_unix_s(),
        body,
    )
}

/// The customer pays `payment_ref` in the sandbox; the webhook must settle the payment.
async fn pay_and_expect_success(m: &Merchant<'_>, id: &str, payment_ref: &str, amount_minor: i64) {
    let paid = m.app.customer_pay(payment_ref).await;
    assert_eq!(paid.0, 200, "customer pay: {}", paid.1);
    assert_eq!(
        paid.1["notified"], true,
        "the sandbox could not notify the webhook: {}",
        paid.1
    );
    let p = m.wait_for_status(id, "succeeded").await;
    assert_succeeded(&p, amount_minor);
}

#[test]
fn a_qr_merchant_payment_succeeds_after_the_customer_pays_the_displayed_code() {
    // Proves display_qr → sandbox customer pay → signed webhook → succeeded, seen by polling.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, qr) = pending_qr(&m).await;
        assert_eq!(p["captured_minor"], 0, "{p}");
        pay_and_expect_success(&m, p["id"].as_str().unwrap(), &qr, 1250).await;
        let again = app.customer_pay(&qr).await;
        assert_eq!(
            again.0, 409,
            "paying twice must be refused by the sandbox: {}",
            again.1
        );
    });
}

#[test]
fn qr_customer_and_sound_wave_payments_succeed_synchronously() {
    // Proves customer-presented codes are charged in the create call itself.
    run(|app| async move {
        let m = app.new_merchant().await;
        let methods = [
            qr_customer(),
            json!({"type": "sound_wave", "token": unique_token()}),
        ];
        for method in methods {
            let p = m
                .create_payment_ok(&payment_request(2000, method.clone()))
                .await;
            assert_new_payment(&p, 2000, method["type"].as_str().unwrap());
            assert_succeeded(&p, 2000);
            let id = p["id"].as_str().unwrap();
            assert_succeeded(&m.payment(id).await, 2000);
        }
    });
}

#[test]
fn each_write_of_a_payment_and_its_channel_record_reads_the_record_once() {
    // Proves a payment's read-modify-writes swap on the read that planned them: the
    // payment record (created, updated with the channel's answer, its events published)
    // and the sandbox's own record are each read once per compare-and-swap, not once by
    // the code and again by the swap (one store round trip less each). The payment's one
    // other read is the keyed request's look for a payment a crashed attempt left.
    let contention = Contention::new();
    runtime().block_on(async {
        let app = TestApp::start_wrapped(contention.wrap()).await;
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&payment_request(2000, qr_customer()))
            .await;
        assert_succeeded(&p, 2000);
        let id = p["id"].as_str().unwrap();
        let payment = contention.calls_on(&format!("pay/{id}"));
        assert_eq!(
            payment,
            Calls {
                reads: 1 + 3,
                swaps: 3
            },
            "pay/{id}"
        );
        let channel = contention.calls_on(&format!("sbx:pay:{id}"));
        assert_eq!(channel, Calls { reads: 1, swaps: 1 }, "sbx:pay:{id}");
        app.shutdown().await;
    });
}

#[test]
fn an_nfc_payment_succeeds_synchronously() {
    // Proves an NFC token + cryptogram is charged synchronously.
    run(|app| async move {
        let m = app.new_merchant().await;
        let method =
            json!({"type": "nfc", "token": unique_token(), "cryptogram": "AAECAwQFBgcICQ"});
        let p = m.create_payment_ok(&payment_request(3100, method)).await;
        assert_new_payment(&p, 3100, "nfc");
        assert_succeeded(&p, 3100);
    });
}

#[test]
fn an_h5_payment_redirects_and_succeeds_once_the_customer_pays() {
    // Proves h5 → redirect url → the customer pays that url → succeeded.
    run(|app| async move {
        let m = app.new_merchant().await;
        let method = json!({"type": "h5", "return_url": "https://shop.example/return"});
        let (p, url) = pending_payment(&m, method, "redirect", "url").await;
        assert!(url.starts_with("http"), "{url}");
        pay_and_expect_success(&m, p["id"].as_str().unwrap(), &url, 1250).await;
    });
}

#[test]
fn an_app_payment_returns_an_order_string_and_succeeds_once_paid() {
    // Proves app → app_order order_string → the wallet pays it → succeeded.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, order) =
            pending_payment(&m, json!({"type": "app"}), "app_order", "order_string").await;
        pay_and_expect_success(&m, p["id"].as_str().unwrap(), &order, 1250).await;
    });
}

/// Creates a 1800 sms_otp payment whose code the sandbox sends to `phone`.
async fn sms_payment(m: &Merchant<'_>, phone: &str) -> Value {
    m.create_payment_ok(&payment_request(
        1800,
        json!({"type": "sms_otp", "phone": phone}),
    ))
    .await
}

#[test]
fn an_sms_otp_payment_succeeds_with_the_code_sent_to_the_payer() {
    // Proves sms_otp → enter_otp → code read from the sandbox SMS inbox → confirm → succeeded.
    run(|app| async move {
        let m = app.new_merchant().await;
        let phone = unique_phone();
        let p = sms_payment(&m, &phone).await;
        assert_new_payment(&p, 1800, "sms_otp");
        assert_eq!(p["status"], "requires_customer_action", "{p}");
        assert_eq!(p["next_action"], json!({"type": "enter_otp"}), "{p}");
        let id = p["id"].as_str().unwrap();
        let code = app.sms_code(&phone).await;
        let path = format!("/v1/payments/{id}/confirm");
        let (status, confirmed) = m.post(&path, &json!({"otp": code})).await;
        assert_eq!(status, 200, "{confirmed}");
        assert_succeeded(&confirmed, 1800);
        assert_succeeded(&m.payment(id).await, 1800);
        let again = m.post(&path, &json!({"otp": code})).await;
        assert_error(&again, 409, "payment_not_confirmable");
    });
}

#[test]
fn five_wrong_codes_fail_an_sms_otp_payment_with_otp_attempts_exceeded() {
    // Proves 4 wrong codes → otp_invalid, the 5th → otp_attempts_exceeded and a failed payment.
    run(|app| async move {
        let m = app.new_merchant().await;
        let phone = unique_phone();
        let p = sms_payment(&m, &phone).await;
        let id = p["id"].as_str().unwrap();
        let code: u32 = app.sms_code(&phone).await.parse().unwrap();
        let wrong = format!("{:06}", (code + 1) % 1_000_000);
        let path = format!("/v1/payments/{id}/confirm");
        for _ in 0..4 {
            let r = m.post(&path, &json!({"otp": wrong})).await;
            assert_error_param(&r, 400, "otp_invalid", "otp");
        }
        let fifth = m.post(&path, &json!({"otp": wrong})).await;
        assert_error_param(&fifth, 400, "otp_attempts_exceeded", "otp");
        let failed = m.payment(id).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(
            failed["failure"]["code"], "otp_attempts_exceeded",
            "{failed}"
        );
        assert_eq!(failed["captured_minor"], 0, "{failed}");
        let right = m.post(&path, &json!({"otp": format!("{code:06}")})).await;
        assert_error(&right, 409, "payment_not_confirmable");
    });
}

/// A qr_customer payment with manual capture, authorized and waiting for capture.
async fn authorized_payment(m: &Merchant<'_>, amount_minor: i64) -> String {
    let p = m
        .create_payment_ok(&manual_payment_request(amount_minor, qr_customer()))
        .await;
    assert_eq!(p["status"], "requires_capture", "{p}");
    assert_eq!(p["capture"], "manual", "{p}");
    assert_eq!(p["authorized_minor"], amount_minor, "{p}");
    assert_eq!(p["captured_minor"], 0, "{p}");
    p["id"].as_str().unwrap().to_string()
}

#[test]
fn a_manual_payment_is_captured_in_full_when_no_amount_is_given() {
    // Proves capture {} on requires_capture captures the whole authorization.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let (status, p) = act(&m, &id, "capture", json!({})).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(
            (p["status"].clone(), p["captured_minor"].clone()),
            (json!("succeeded"), json!(5000)),
            "{p}"
        );
        assert_eq!(m.payment(&id).await["captured_minor"], 5000);
    });
}

#[test]
fn a_capture_acts_on_the_payment_its_path_names_whatever_spin_headers_the_client_sends() {
    // Proves a client's own `spin-path-match-id` (passed on ahead of Spin's, as Spin 4.1
    // does) cannot redirect an action: the payment in the path is captured, the one the
    // header names is left as it was.
    run(|app| async move {
        let m = app.new_merchant().await;
        let named = authorized_payment(&m, 5000).await;
        let decoy = authorized_payment(&m, 4000).await;
        let auth = format!("Bearer {}", m.secret_key);
        let idem = spinpay_tests::unique("idem");
        let (status, p) = app
            .request(
                "POST",
                &format!("/v1/payments/{named}/capture"),
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                    ("idempotency-key", &idem),
                    ("spin-path-match-id", &decoy),
                    ("spin-path-info", &format!("/{decoy}/capture")),
                ],
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(
            (&p["id"], &p["captured_minor"]),
            (&json!(named), &json!(5000)),
            "{p}"
        );
        let untouched = m.payment(&decoy).await;
        assert_eq!(untouched["status"], "requires_capture", "{untouched}");
    });
}

#[test]
fn without_the_sandbox_its_payments_are_refused_up_front_and_nothing_is_stored() {
    // Proves the documented way to run without the sandbox component (`sandbox_host`
    // empty): a sandbox payment, QR or sms_otp, is 400 channel_unsupported and is not
    // stored (the list stays empty), instead of being left `processing` or failed; and a
    // sandbox notification signed with the right secret is refused the same way.
    let variables = [("sandbox_host".to_string(), String::new())].into();
    spinpay_tests::runtime().block_on(async {
        let app = spinpay_tests::TestApp::start(variables).await;
        let m = app.new_merchant().await;
        let qr = m
            .create_payment(&payment_request(1250, json!({"type": "qr_merchant"})))
            .await;
        assert_error(&qr, 400, "channel_unsupported");
        let sms = json!({"type": "sms_otp", "phone": unique_phone()});
        let otp = m.create_payment(&payment_request(1250, sms)).await;
        assert_error(&otp, 400, "channel_unsupported");
        assert_eq!(m.count_payments().await, 0);
        let body = notification("pay_aaaaaaaaaaaaaaaaaaaaaaaaaa", "succeeded", 1250);
        let signed = app
            .post_sandbox_notification(&body, Some(&signed_now(&body)))
            .await;
        assert_error(&signed, 400, "channel_unsupported");
        app.shutdown().await;
    });
}

#[test]
fn a_partial_capture_captures_only_the_amount_asked() {
    // Proves capture {amount_minor: 3000} of 5000 leaves captured_minor 3000.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let (status, p) = act(&m, &id, "capture", json!({"amount_minor": 3000})).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["captured_minor"], 3000, "{p}");
        let refund = act(&m, &id, "refunds", json!({"amount_minor": 3001})).await;
        assert_error_param(&refund, 400, "refund_exceeds_captured", "amount_minor");
    });
}

/// Older than the idempotency lock's TTL (60 s), so a retry takes the lock over.
const PAST_LOCK_TTL_MS: i64 = 61_000;

#[test]
fn a_keyed_capture_retried_after_its_first_attempt_died_answers_with_the_capture() {
    // Proves a keyed retry that takes over a dead attempt's lock resumes it through the
    // real components: the capture's idempotency record is put back in progress and aged
    // past the lock TTL (what an attempt that captured and died before storing its
    // answer leaves), and the retry with the same key answers 200 with the capture, not
    // 409 payment_not_capturable. A new key on the captured payment still gets the 409.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let path = format!("/v1/payments/{id}/capture");
        let body = json!({"amount_minor": 3000});
        let key = unique("capture");
        let first = m.post_with_key(&path, Some(&key), &body).await;
        assert_eq!(first.0, 200, "{}", first.1);

        let store = app.store();
        let record = format!("mch/{}/idem/{}", m.id, sha256_hex(&key));
        let raw = store.get(&record).await.unwrap().expect("the key's record");
        let mut envelope: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            envelope["json"]["state"]["state"], "completed",
            "{envelope}"
        );
        envelope["json"]["state"] = json!({"state": "in_progress"});
        store
            .set(&record, serde_json::to_vec(&envelope).unwrap())
            .await
            .unwrap();
        let fields = ["created_at_ms", "first_claimed_at_ms"];
        shift_record_time(&*store, &record, &fields, -PAST_LOCK_TTL_MS).await;

        let (status, p) = m.post_with_key(&path, Some(&key), &body).await;
        assert_eq!(status, 200, "the resumed capture answers: {p}");
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["captured_minor"], 3000, "{p}");
        assert_eq!(m.payment(&id).await["captured_minor"], 3000);

        let other = m
            .post_with_key(&path, Some(&unique("capture")), &body)
            .await;
        assert_error(&other, 409, "payment_not_capturable");
    });
}

#[test]
fn capturing_more_than_authorized_is_rejected_and_changes_nothing() {
    // Proves an over-capture answers capture_exceeds_authorized and the payment is untouched.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let before = m.payment(&id).await;
        let r = act(&m, &id, "capture", json!({"amount_minor": 5001})).await;
        assert_error_param(&r, 400, "capture_exceeds_authorized", "amount_minor");
        let after = m.payment(&id).await;
        assert_eq!(after, before, "a rejected capture changed the payment");
    });
}

#[test]
fn an_uncaptured_authorization_can_be_canceled_and_then_not_captured() {
    // Proves cancel voids a requires_capture payment; a later capture is payment_not_capturable.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let (status, p) = act(&m, &id, "cancel", json!({})).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["status"], "canceled", "{p}");
        assert_eq!(p["authorized_minor"], 0, "{p}");
        let again = act(&m, &id, "cancel", json!({})).await;
        assert_eq!(
            again.0, 200,
            "canceling a canceled payment returns it: {}",
            again.1
        );
        assert_eq!(again.1["status"], "canceled");
        let capture = act(&m, &id, "capture", json!({})).await;
        assert_error(&capture, 409, "payment_not_capturable");
    });
}

#[test]
fn a_customer_code_the_customer_has_not_confirmed_is_revoked_by_a_cancel() {
    // Proves a customer-presented code the sandbox leaves pending (888: the customer must
    // confirm in the wallet) is `processing`, a cancel revokes it at the sandbox (200
    // `canceled`, one `payment.canceled`), and the customer can no longer pay it.
    run(|app| async move {
        let m = app.new_merchant().await;
        let method = qr_customer();
        let code = method["auth_code"].as_str().unwrap().to_string();
        let p = m
            .create_payment_ok(&payment_request(888, method.clone()))
            .await;
        let id = p["id"].as_str().unwrap();
        assert_eq!(p["status"], "processing", "{p}");
        let (status, canceled) = act(&m, id, "cancel", json!({})).await;
        assert_eq!(status, 200, "{canceled}");
        assert_eq!(canceled["status"], "canceled", "{canceled}");
        assert_eq!(canceled["cancellation_reason"], "requested_by_merchant");
        let paid = app.customer_pay(&code).await;
        assert_eq!(
            paid.0, 409,
            "the customer cannot pay it any more: {}",
            paid.1
        );
        let events = m.get("/v1/events?limit=100").await.1;
        let canceled_events = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "payment.canceled" && e["data"]["id"] == id)
            .count();
        assert_eq!(canceled_events, 1, "{events}");
    });
}

#[test]
fn an_unpaid_payment_read_or_rechecked_past_its_expiry_is_closed_and_canceled() {
    // Proves what the docs promise from `expires_at_ms` on: a customer-presented code the
    // customer never confirmed (888: still `processing`) is closed at the sandbox and
    // canceled as expired by a GET, and by a recheck; a QR code nobody scanned
    // (`requires_customer_action`) is closed by a recheck as a GET would. Each answers
    // `canceled` / `expired` at once, and the customer can no longer pay.
    run(|app| async move {
        let m = app.new_merchant().await;
        let store = app.store();
        let aged = async |p: &Value| {
            let id = p["id"].as_str().unwrap().to_string();
            let fields = ["created_at_ms", "updated_at_ms", "expires_at_ms"];
            shift_record_time(&*store, &format!("pay/{id}"), &fields, -3_600_000).await;
            id
        };
        let with_expiry = |amount_minor: i64, method: Value| {
            let mut body = payment_request(amount_minor, method);
            body["expires_in_seconds"] = json!(600);
            body
        };
        let sound_wave = json!({"type": "sound_wave", "token": unique_token()});
        for (method, how) in [(qr_customer(), "read"), (sound_wave, "recheck")] {
            let code = method
                .get("auth_code")
                .or(method.get("token"))
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
            let p = m.create_payment_ok(&with_expiry(888, method)).await;
            assert_eq!(p["status"], "processing", "{p}");
            let id = aged(&p).await;
            let shown = match how {
                "read" => m.payment(&id).await,
                _ => {
                    let (status, body) = act(&m, &id, "recheck", json!({})).await;
                    assert_eq!(status, 200, "{body}");
                    body
                }
            };
            assert_eq!(shown["status"], "canceled", "{how}: {shown}");
            assert_eq!(shown["cancellation_reason"], "expired", "{how}: {shown}");
            let paid = app.customer_pay(&code).await;
            assert_eq!(paid.0, 409, "{how}: the customer paid it: {}", paid.1);
        }
        let qr = m
            .create_payment_ok(&with_expiry(1250, json!({"type": "qr_merchant"})))
            .await;
        assert_eq!(qr["status"], "requires_customer_action", "{qr}");
        let payment_ref = qr["next_action"]["qr_payload"]
            .as_str()
            .unwrap()
            .to_string();
        let id = aged(&qr).await;
        let (status, shown) = act(&m, &id, "recheck", json!({})).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["status"], "canceled", "{shown}");
        assert_eq!(shown["cancellation_reason"], "expired", "{shown}");
        assert_eq!(app.customer_pay(&payment_ref).await.0, 409);
    });
}

#[test]
fn cancel_after_capture_is_rejected() {
    // Proves a captured payment cannot be voided (refund it instead) and stays succeeded.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 5000).await;
        let (status, _) = act(&m, &id, "capture", json!({})).await;
        assert_eq!(status, 200);
        let r = act(&m, &id, "cancel", json!({})).await;
        assert_error(&r, 409, "payment_not_cancelable");
        assert_succeeded(&m.payment(&id).await, 5000);
    });
}

#[test]
fn capturing_an_automatic_payment_is_rejected() {
    // Proves capture on an already captured (automatic) payment is payment_not_capturable.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&payment_request(1000, qr_customer()))
            .await;
        let id = p["id"].as_str().unwrap();
        let r = act(&m, id, "capture", json!({})).await;
        assert_error(&r, 409, "payment_not_capturable");
    });
}

#[test]
fn a_qr_payment_canceled_before_the_customer_pays_cannot_be_paid() {
    // Proves cancel closes the QR at the channel: the customer's later pay is refused.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, qr) = pending_qr(&m).await;
        let id = p["id"].as_str().unwrap();
        let (status, c) = act(&m, id, "cancel", json!({})).await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["status"], "canceled", "{c}");
        assert_eq!(c["next_action"], Value::Null, "{c}");
        let paid = app.customer_pay(&qr).await;
        assert_eq!(paid.0, 409, "a closed QR was paid: {}", paid.1);
        assert_eq!(m.payment(id).await["status"], "canceled");
    });
}

#[test]
fn amount_666_is_declined_and_the_payment_fails_with_a_failure_code() {
    // Proves the sandbox decline is a failed payment (HTTP 200) with failure.code channel_declined.
    run(|app| async move {
        let m = app.new_merchant().await;
        for method in [qr_customer(), json!({"type": "qr_merchant"})] {
            let p = m.create_payment_ok(&payment_request(666, method)).await;
            assert_eq!(p["status"], "failed", "{p}");
            assert_eq!(p["failure"]["code"], "channel_declined", "{p}");
            let message = p["failure"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("insufficient_funds"), "{p}");
            assert_eq!(p["captured_minor"], 0, "{p}");
            let id = p["id"].as_str().unwrap();
            let refund = act(&m, id, "refunds", json!({})).await;
            assert_error(&refund, 409, "payment_not_refundable");
        }
    });
}

#[test]
fn amount_777_leaves_the_payment_processing_until_a_recheck_resolves_it() {
    // Proves a channel timeout is not guessed: processing, then GET's re-check finds success.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&payment_request(777, qr_customer()))
            .await;
        assert_eq!(p["status"], "processing", "{p}");
        assert_eq!(p["captured_minor"], 0, "{p}");
        let id = p["id"].as_str().unwrap();
        let settled = m.wait_for_status(id, "succeeded").await;
        assert_eq!(settled["captured_minor"], 777, "{settled}");
    });
}

#[test]
fn amount_888_stays_pending_until_the_customer_pays() {
    // Proves 888 keeps a customer-presented payment processing until the customer pays it.
    run(|app| async move {
        let m = app.new_merchant().await;
        let method = qr_customer();
        let code = method["auth_code"].as_str().unwrap().to_string();
        let p = m.create_payment_ok(&payment_request(888, method)).await;
        assert_eq!(p["status"], "processing", "{p}");
        let id = p["id"].as_str().unwrap();
        let still = m.payment(id).await;
        assert_eq!(
            still["status"], "processing",
            "a re-check must not guess: {still}"
        );
        pay_and_expect_success(&m, id, &code, 888).await;
    });
}

#[test]
fn amount_999_garbage_leaves_the_payment_processing_until_resolved() {
    // Proves a garbage channel answer leaves processing; a re-check then shows the QR to pay.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&payment_request(999, json!({"type": "qr_merchant"})))
            .await;
        assert_eq!(p["status"], "processing", "{p}");
        assert_eq!(p["captured_minor"], 0, "{p}");
        let id = p["id"].as_str().unwrap();
        let waiting = m.wait_for_status(id, "requires_customer_action").await;
        assert_eq!(waiting["next_action"]["type"], "display_qr", "{waiting}");
        let qr = waiting["next_action"]["qr_payload"]
            .as_str()
            .unwrap()
            .to_string();
        pay_and_expect_success(&m, id, &qr, 999).await;
    });
}

#[test]
fn a_manual_qr_payment_waits_for_capture_after_the_customer_pays() {
    // Proves the channel's "authorized" notification moves a manual QR payment to
    // requires_capture, and the merchant's capture then settles it.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&manual_payment_request(
                4200,
                json!({"type": "qr_merchant"}),
            ))
            .await;
        assert_eq!(p["status"], "requires_customer_action", "{p}");
        let id = p["id"].as_str().unwrap();
        let qr = p["next_action"]["qr_payload"].as_str().unwrap();
        assert_eq!(app.customer_pay(qr).await.0, 200);
        let held = m.wait_for_status(id, "requires_capture").await;
        assert_eq!(held["authorized_minor"], 4200, "{held}");
        assert_eq!(held["captured_minor"], 0, "{held}");
        let (status, captured) = act(&m, id, "capture", json!({"amount_minor": 4000})).await;
        assert_eq!(status, 200, "{captured}");
        assert_eq!(captured["status"], "succeeded", "{captured}");
        assert_eq!(captured["captured_minor"], 4000, "{captured}");
    });
}

/// A sandbox payment notification body saying the payment `id` is `status` for
/// `amount_minor` CNY (the wire shape of docs/sandbox.md).
fn notification(id: &str, status: &str, amount_minor: i64) -> Vec<u8> {
    let captured = if status == "succeeded" {
        amount_minor
    } else {
        0
    };
    json!({
        "notification_id": spinpay_tests::unique("ntf_test"),
        "kind": "payment",
        "payment": {
            "payment_id": id,
            "channel_txn_id": "sbx_test",
            "status": status,
            "amount_minor": amount_minor,
            "currency": "CNY",
            "captured_minor": captured,
            "refunded_minor": 0,
            "next_action": null,
            "decline_code": null,
            "decline_message": null
        },
        "refund": null,
        "sent_at_ms": spinpay_tests::now_unix_s() * 1000
    })
    .to_string()
    .into_bytes()
}

#[test]
fn a_forged_or_stale_notification_is_refused_and_changes_nothing() {
    // Proves the webhook refuses unsigned, wrongly signed and replayed-stale notifications
    // with 401 signature_invalid and the payment stays unpaid until the real customer pays.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, qr) = pending_qr(&m).await;
        let id = p["id"].as_str().unwrap();
        let before = m.payment(id).await;
        let body = notification(id, "succeeded", 1250);
        let now = spinpay_tests::now_unix_s();
        let forged = [
            None,
            Some(spinpay_tests::sandbox_signature(
                "not-the-secret",
                now,
                &body,
            )),
            Some(spinpay_tests::sandbox_signature(
                spinpay_tests::SANDBOX_SECRET,
                now - 3600,
                &body,
            )),
            Some(format!("t={now},v1={}", "0".repeat(64))),
        ];
        for signature in &forged {
            let (status, answer) = app
                .post_sandbox_notification(&body, signature.as_deref())
                .await;
            assert_eq!(status, 401, "{signature:?}: {answer}");
            assert_eq!(answer["error"]["code"], "signature_invalid", "{answer}");
        }
        assert_eq!(
            m.payment(id).await,
            before,
            "a refused notification changed the payment"
        );
        pay_and_expect_success(&m, id, &qr, 1250).await;
    });
}

#[test]
fn a_redelivered_notification_is_acknowledged_and_applied_once() {
    // Proves a correctly signed duplicate of the success notification is acknowledged (200)
    // and changes nothing: same version, same captured amount, still exactly one
    // payment.succeeded event.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, qr) = pending_qr(&m).await;
        let id = p["id"].as_str().unwrap();
        pay_and_expect_success(&m, id, &qr, 1250).await;
        let settled = m.payment(id).await;
        let body = notification(id, "succeeded", 1250);
        let sig = signed_now(&body);
        for _ in 0..2 {
            let (status, ack) = app.post_sandbox_notification(&body, Some(&sig)).await;
            assert_eq!(status, 200, "{ack}");
        }
        assert_eq!(
            m.payment(id).await,
            settled,
            "a duplicate notification changed the payment"
        );
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        let succeeded = events["data"]
            .as_array()
            .expect("event list")
            .iter()
            .filter(|e| e["type"] == "payment.succeeded" && e["data"]["id"] == id)
            .count();
        assert_eq!(succeeded, 1, "{events}");
    });
}

#[test]
fn a_signed_notification_with_another_amount_flags_the_payment_instead_of_paying_it() {
    // Proves an amount mismatch is never accepted as payment: the payment keeps its status,
    // gets a conflict with reason amount_mismatch, and captures nothing.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (p, _qr) = pending_qr(&m).await;
        let id = p["id"].as_str().unwrap();
        let body = notification(id, "succeeded", 1);
        let sig = signed_now(&body);
        let (status, ack) = app.post_sandbox_notification(&body, Some(&sig)).await;
        assert_eq!(
            status, 200,
            "the channel must be answered so it stops retrying: {ack}"
        );
        let after = m.payment(id).await;
        assert_eq!(after["status"], "requires_customer_action", "{after}");
        assert_eq!(after["captured_minor"], 0, "{after}");
        assert_eq!(after["conflict"]["reason"], "amount_mismatch", "{after}");
        assert_eq!(after["conflict"]["channel_amount_minor"], 1, "{after}");
    });
}

/// How many events of `event_type` merchant `m` has about object `id`.
async fn count_events(m: &Merchant<'_>, id: &str, event_type: &str) -> usize {
    let (status, events) = m.get("/v1/events?limit=100").await;
    assert_eq!(status, 200, "{events}");
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == event_type && e["data"]["id"] == id)
        .count()
}

#[test]
fn a_sandbox_notification_replayed_after_a_void_changes_nothing() {
    // Proves a sandbox notification is applied once by its notification_id: the same
    // signed bytes posted again within the signature's tolerance, after the merchant
    // voided the payment, are acknowledged and change nothing (before, the replayed
    // "authorized" flagged the voided payment status_contradiction).
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = authorized_payment(&m, 4100).await;
        let body = notification(&id, "authorized", 4100);
        let sig = signed_now(&body);
        let (status, ack) = app.post_sandbox_notification(&body, Some(&sig)).await;
        assert_eq!(status, 200, "{ack}");
        let (status, voided) = act(&m, &id, "cancel", json!({})).await;
        assert_eq!(
            (status, &voided["status"]),
            (200, &json!("canceled")),
            "{voided}"
        );
        let (status, ack) = app.post_sandbox_notification(&body, Some(&sig)).await;
        assert_eq!(status, 200, "a replay is acknowledged: {ack}");
        let after = m.payment(&id).await;
        assert_eq!(
            (&after["status"], &after["conflict"]),
            (&json!("canceled"), &Value::Null),
            "{after}"
        );
        assert_eq!(count_events(&m, &id, "payment.conflicted").await, 0);
    });
}

#[test]
fn a_slow_sandbox_payment_canceled_during_its_pause_is_never_flagged() {
    // Proves magic 777 (the sandbox answers after the gateway gave up, then notifies)
    // plus a cancel raises no false payment.conflicted: a manual payment voided during
    // the pause stays canceled, unflagged, since the sandbox's late notification
    // describes the payment as it is then (closed: nothing is sent); an automatic one,
    // whose revoke the sandbox refuses because it is captured, is settled `succeeded`
    // by the cancel's query (402 channel_declined), and the late notification is a
    // duplicate.
    run(|app| async move {
        let m = app.new_merchant().await;
        let method = || json!({"type": "sound_wave", "token": unique_token()});
        // Each is canceled as soon as its create answers (about 2.5 s into the sandbox's
        // 5 s pause).
        let manual = m
            .create_payment_ok(&manual_payment_request(777, method()))
            .await;
        let manual = manual["id"].as_str().unwrap().to_string();
        let (status, voided) = act(&m, &manual, "cancel", json!({})).await;
        assert_eq!(
            (status, &voided["status"]),
            (200, &json!("canceled")),
            "{voided}"
        );
        let voided_version = voided["version"].clone();
        let auto = m.create_payment_ok(&payment_request(777, method())).await;
        let auto = auto["id"].as_str().unwrap().to_string();
        let refused = act(&m, &auto, "cancel", json!({})).await;
        assert_error(&refused, 402, "channel_declined");
        let settled = m.payment(&auto).await;
        assert_eq!(
            (&settled["status"], &settled["conflict"]),
            (&json!("succeeded"), &Value::Null),
            "{settled}"
        );
        // Past the sandbox's 5 s pause and its late notifications.
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        for (id, status) in [(&manual, "canceled"), (&auto, "succeeded")] {
            let p = m.payment(id).await;
            assert_eq!(
                (&p["status"], &p["conflict"]),
                (&json!(status), &Value::Null),
                "{p}"
            );
            assert_eq!(count_events(&m, id, "payment.conflicted").await, 0, "{id}");
        }
        assert_eq!(count_events(&m, &auto, "payment.succeeded").await, 1);
        assert_eq!(
            m.payment(&manual).await["version"],
            voided_version,
            "no notification touched the voided payment"
        );
    });
}

#[test]
fn of_two_payments_created_at_once_with_one_customer_code_exactly_one_gets_it() {
    // Proves the sandbox's claim of a customer code is atomic: two payments created
    // concurrently with the same waiting code (888) end one `processing` (it holds the
    // code) and the other `failed` with channel_declined payment_ref_in_use, never both
    // waiting on one code.
    run(|app| async move {
        let m = app.new_merchant().await;
        for _ in 0..3 {
            let method = json!({"type": "qr_customer", "auth_code": unique_token()});
            let request = payment_request(888, method);
            let (a, b) = tokio::join!(m.create_payment_ok(&request), m.create_payment_ok(&request));
            let mut statuses = [a["status"].clone(), b["status"].clone()];
            statuses.sort_by_key(|s| s.to_string());
            assert_eq!(statuses, [json!("failed"), json!("processing")], "{a}\n{b}");
            let failed = if a["status"] == "failed" { &a } else { &b };
            let message = failed["failure"]["message"].as_str().unwrap();
            assert!(message.starts_with("payment_ref_in_use"), "{failed}");
        }
    });
}

#[test]
fn a_confirmed_sms_otp_payment_the_sandbox_holds_pending_can_be_canceled() {
    // Proves an sms_otp payment whose charge the sandbox leaves pending after the right
    // code (888: `processing`) is canceled by the merchant and closed at the sandbox (the
    // phone, its payment reference, can no longer pay it); before, the cancel answered
    // 409 payment_not_cancelable and the payment stayed processing for good.
    run(|app| async move {
        let m = app.new_merchant().await;
        let phone = unique_phone();
        let method = json!({"type": "sms_otp", "phone": phone});
        let p = m.create_payment_ok(&payment_request(888, method)).await;
        let id = p["id"].as_str().unwrap().to_string();
        let code = app.sms_code(&phone).await;
        let (status, confirmed) = act(&m, &id, "confirm", json!({"otp": code})).await;
        assert_eq!(
            (status, &confirmed["status"]),
            (200, &json!("processing")),
            "{confirmed}"
        );
        let (status, canceled) = act(&m, &id, "cancel", json!({})).await;
        assert_eq!(
            (status, &canceled["status"]),
            (200, &json!("canceled")),
            "{canceled}"
        );
        let late = app.customer_pay(&phone).await;
        assert_eq!(late.0, 409, "closed at the sandbox: {}", late.1);
        assert_eq!(m.payment(&id).await["status"], "canceled");
    });
}

#[test]
fn a_customer_code_waiting_for_one_payment_cannot_be_taken_by_another() {
    // Proves a customer code is single-use at the sandbox: while a payment with it waits
    // for the customer (888), a second payment with the same code is failed
    // (channel_declined, payment_ref_in_use) instead of taking the code over, and paying
    // the code pays the first payment.
    run(|app| async move {
        let m = app.new_merchant().await;
        let code = unique_token();
        let method = json!({"type": "qr_customer", "auth_code": code});
        let first = m
            .create_payment_ok(&payment_request(888, method.clone()))
            .await;
        assert_eq!(first["status"], "processing", "{first}");
        let second = m.create_payment_ok(&payment_request(888, method)).await;
        assert_eq!(second["status"], "failed", "{second}");
        assert_eq!(second["failure"]["code"], "channel_declined", "{second}");
        let message = second["failure"]["message"].as_str().unwrap();
        assert!(message.starts_with("payment_ref_in_use"), "{second}");
        let first_id = first["id"].as_str().unwrap();
        pay_and_expect_success(&m, first_id, &code, 888).await;
    });
}
