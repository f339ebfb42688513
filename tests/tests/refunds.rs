//! Refunds through the real components: full, partial, multiple, over-refunds, and 64
//! concurrent partial refunds racing for one payment's captured amount.

use std::sync::Arc;

use serde_json::{Value, json};
use spinpay_tests::contention::Contention;
use spinpay_tests::spin_stores::{SpinRedisStats, spin_redis_like};
use spinpay_tests::{
    Merchant, POLL_ATTEMPTS_MAX, POLL_INTERVAL, TestApp, assert_error, assert_error_param,
    manual_payment_request, payment_request, qr_customer, run, runtime, unique,
};

/// A succeeded (captured) payment of `amount_minor`; returns its id.
async fn captured_payment(m: &Merchant<'_>, amount_minor: i64) -> String {
    let p = m
        .create_payment_ok(&payment_request(amount_minor, qr_customer()))
        .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["captured_minor"], amount_minor, "{p}");
    p["id"].as_str().unwrap().to_string()
}

/// Refunds `body` on payment `id`, asserting 200; returns the refund.
async fn refund_ok(m: &Merchant<'_>, id: &str, body: &Value) -> Value {
    let (status, r) = m.post(&format!("/v1/payments/{id}/refunds"), body).await;
    assert_eq!(status, 200, "refund {body}: {r}");
    assert_eq!(r["object"], "refund", "{r}");
    assert_eq!(r["payment_id"], id, "{r}");
    assert!(
        r["id"].as_str().is_some_and(|x| x.starts_with("re_")),
        "{r}"
    );
    r
}

#[test]
fn a_refund_without_an_amount_returns_everything_captured() {
    // Proves a full refund succeeds, is shown on the payment and readable by its own id.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let r = refund_ok(&m, &id, &json!({"reason": "customer changed their mind"})).await;
        assert_eq!(r["amount_minor"], 1000, "{r}");
        assert_eq!(r["currency"], "CNY", "{r}");
        assert_eq!(r["status"], "succeeded", "{r}");
        let p = m.payment(&id).await;
        assert_eq!(p["refunded_minor"], 1000, "{p}");
        assert_eq!(p["refunds"].as_array().map(Vec::len), Some(1), "{p}");
        assert_eq!(p["refunds"][0]["id"], r["id"], "{p}");
        let rid = r["id"].as_str().unwrap();
        let (status, fetched) = m.get(&format!("/v1/refunds/{rid}")).await;
        assert_eq!(status, 200, "{fetched}");
        assert_eq!(fetched["amount_minor"], 1000, "{fetched}");
        assert_eq!(fetched["status"], "succeeded", "{fetched}");
    });
}

#[test]
fn partial_refunds_add_up_and_stop_at_the_captured_amount() {
    // Proves several partial refunds are allowed until their sum reaches captured, not beyond.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        for amount in [300, 200, 500] {
            let r = refund_ok(&m, &id, &json!({"amount_minor": amount})).await;
            assert_eq!(r["amount_minor"], amount, "{r}");
            assert_eq!(r["status"], "succeeded", "{r}");
        }
        let extra = m
            .post(
                &format!("/v1/payments/{id}/refunds"),
                &json!({"amount_minor": 1}),
            )
            .await;
        assert_error_param(&extra, 400, "refund_exceeds_captured", "amount_minor");
        let p = m.payment(&id).await;
        assert_eq!(p["refunded_minor"], 1000, "{p}");
        assert_eq!(p["refunds"].as_array().map(Vec::len), Some(3), "{p}");
        let listed: Vec<i64> = p["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["amount_minor"].as_i64().unwrap())
            .collect();
        assert_eq!(
            listed,
            vec![300, 200, 500],
            "refunds are listed oldest first: {p}"
        );
    });
}

#[test]
fn a_refund_beyond_the_captured_amount_is_rejected_and_changes_nothing() {
    // Proves refund_exceeds_captured on the first over-refund, with the payment untouched.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let before = m.payment(&id).await;
        let r = m
            .post(
                &format!("/v1/payments/{id}/refunds"),
                &json!({"amount_minor": 1001}),
            )
            .await;
        assert_error_param(&r, 400, "refund_exceeds_captured", "amount_minor");
        assert_eq!(
            m.payment(&id).await,
            before,
            "a rejected refund changed the payment"
        );
    });
}

#[test]
fn an_uncaptured_payment_cannot_be_refunded() {
    // Proves refunds need a succeeded payment: requires_capture answers payment_not_refundable.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&manual_payment_request(1000, qr_customer()))
            .await;
        let id = p["id"].as_str().unwrap();
        let r = m
            .post(
                &format!("/v1/payments/{id}/refunds"),
                &json!({"amount_minor": 100}),
            )
            .await;
        assert_error(&r, 409, "payment_not_refundable");
    });
}

#[test]
fn a_merchant_refund_id_can_be_used_only_once() {
    // Proves merchant_refund_id is unique per merchant and the duplicate refunds nothing.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let mref = unique("RF");
        refund_ok(
            &m,
            &id,
            &json!({"amount_minor": 100, "merchant_refund_id": mref}),
        )
        .await;
        let dup = m
            .post(
                &format!("/v1/payments/{id}/refunds"),
                &json!({"amount_minor": 200, "merchant_refund_id": mref}),
            )
            .await;
        assert_error_param(
            &dup,
            409,
            "merchant_refund_id_duplicate",
            "merchant_refund_id",
        );
        assert_eq!(m.payment(&id).await["refunded_minor"], 100);
    });
}

/// Refunds `amount_minor` on `id`, retrying (same Idempotency-Key) while the server says
/// `concurrent_modification`, as its docs tell a client to. Returns the final reply and
/// the number of retries.
async fn refund_with_retry(m: &Merchant<'_>, id: &str, amount_minor: i64) -> ((u16, Value), u32) {
    const RETRIES_MAX: u32 = 5;
    let key = unique("concurrent-refund");
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"amount_minor": amount_minor});
    let mut retries = 0;
    loop {
        let reply = m.post_with_key(&path, Some(&key), &body).await;
        let contended = reply.0 == 409 && reply.1["error"]["code"] == "concurrent_modification";
        if !contended || retries == RETRIES_MAX {
            return (reply, retries);
        }
        retries += 1;
    }
}

/// Refund swaps on the payment held until this many wait at once (see
/// [`spinpay_tests::contention`]: only swaps from different instances, each serving up to
/// 16 requests, can wait at once; two prove the overlap).
const REFUND_SWAPS_HELD: usize = 2;

#[test]
fn sixty_four_concurrent_partial_refunds_never_exceed_the_captured_amount() {
    // Proves 64 racing 300-unit refunds on 10000 captured: exactly 33 accepted (9900), the rest
    // refund_exceeds_captured, and the payment's refunded_minor equals the accepted sum. The
    // race is real: the store holds the first swaps on the payment until two requests wait
    // at once, so one of them is refused; a refund left pending by a slow channel is
    // re-checked until it succeeds before the totals are compared.
    const CAPTURED_MINOR: i64 = 10_000;
    const REFUND_MINOR: i64 = 300;
    const TASKS: usize = 64;
    let contention = Contention::new();
    runtime().block_on(async {
        let app = TestApp::start_wrapped(contention.wrap()).await;
        let m = app.new_merchant().await;
        let id = captured_payment(&m, CAPTURED_MINOR).await;
        contention.hold_swaps(&format!("pay/{id}"), REFUND_SWAPS_HELD);
        let refunds = (0..TASKS).map(|_| refund_with_retry(&m, &id, REFUND_MINOR));
        let mut accepted_minor = 0;
        let mut accepted_ids = Vec::new();
        let mut pending_ids = Vec::new();
        let mut total_retries = 0;
        for ((status, body), retries) in futures::future::join_all(refunds).await {
            total_retries += retries;
            match status {
                200 => {
                    let rid = body["id"].as_str().unwrap().to_string();
                    match body["status"].as_str() {
                        Some("succeeded") => {}
                        // The sandbox call outlasted the channel deadline under the load:
                        // the amount is reserved, the channel's answer is still to come.
                        Some("pending") => pending_ids.push(rid.clone()),
                        _ => panic!("an accepted refund neither succeeded nor pending: {body}"),
                    }
                    assert_eq!(body["amount_minor"], REFUND_MINOR, "{body}");
                    accepted_minor += REFUND_MINOR;
                    accepted_ids.push(rid);
                }
                _ => assert_error(&(status, body), 400, "refund_exceeds_captured"),
            }
        }
        let report = contention.report();
        println!(
            "accepted {} refunds ({accepted_minor}, {} pending), {total_retries} contention \
             retries, {report:?}",
            accepted_ids.len(),
            pending_ids.len()
        );
        assert!(
            report.filled,
            "{REFUND_SWAPS_HELD} refund swaps never waited at once: the requests did not \
             overlap on the server ({report:?})"
        );
        assert!(
            report.refused >= REFUND_SWAPS_HELD as u64 - 1,
            "the held swaps were planned on one payment version, yet all committed: {report:?}"
        );
        for rid in &pending_ids {
            settle_pending_refund(&m, rid).await;
        }
        assert!(
            accepted_minor <= CAPTURED_MINOR,
            "refunded {accepted_minor} of {CAPTURED_MINOR}"
        );
        let fit = CAPTURED_MINOR / REFUND_MINOR * REFUND_MINOR;
        assert_eq!(
            accepted_minor, fit,
            "refunds were refused while room was left"
        );
        let p = m.payment(&id).await;
        assert_eq!(p["refunded_minor"], accepted_minor, "{p}");
        let mut shown: Vec<String> = p["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        shown.sort();
        accepted_ids.sort();
        assert_eq!(
            shown, accepted_ids,
            "the payment lists exactly the accepted refunds"
        );
        app.shutdown().await;
    });
}

/// Re-checks the pending refund `rid` (`POST /v1/refunds/{id}/recheck`) until the channel
/// has settled it; it must succeed.
async fn settle_pending_refund(m: &Merchant<'_>, rid: &str) {
    let mut last = Value::Null;
    for _ in 0..POLL_ATTEMPTS_MAX {
        let (status, r) = m
            .post(&format!("/v1/refunds/{rid}/recheck"), &json!({}))
            .await;
        assert_eq!(status, 200, "re-check of {rid}: {r}");
        if r["status"] != "pending" {
            assert_eq!(r["status"], "succeeded", "{r}");
            return;
        }
        last = r;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("refund {rid} still pending after {POLL_ATTEMPTS_MAX} re-checks: {last}");
}

#[test]
fn on_a_store_that_behaves_like_spins_redis_store_payments_refunds_and_lists_stay_exact() {
    // Proves the components work on SpinKube's store (Spin 4.1's Redis store): its
    // get-many fails (`KEYS k1 k2 …`) and every swap is reported failed, committed or not.
    // Risk, a customer-paid QR payment and its notification, a manual capture, 16 racing
    // refunds, and the payment and event lists all come out exact; no one-key batch is
    // ever sent (Spin's host panics on one).
    const CAPTURED_MINOR: i64 = 1_000;
    const REFUND_MINOR: i64 = 150;
    const TASKS: usize = 16;
    let stats = Arc::new(SpinRedisStats::default());
    runtime().block_on(async {
        let app = TestApp::start_wrapped(spin_redis_like(stats.clone())).await;
        let m = app.new_merchant().await;
        let at_once = captured_payment(&m, CAPTURED_MINOR).await;

        let qr = m
            .create_payment_ok(&payment_request(1250, json!({"type": "qr_merchant"})))
            .await;
        assert_eq!(qr["status"], "requires_customer_action", "{qr}");
        let qr_id = qr["id"].as_str().unwrap();
        let paid = app
            .customer_pay(qr["next_action"]["qr_payload"].as_str().unwrap())
            .await;
        assert_eq!(
            (paid.0, &paid.1["notified"]),
            (200, &json!(true)),
            "{}",
            paid.1
        );
        let qr = m.wait_for_status(qr_id, "succeeded").await;
        assert_eq!(qr["captured_minor"], 1250, "{qr}");

        let manual = m
            .create_payment_ok(&manual_payment_request(900, qr_customer()))
            .await;
        let manual_id = manual["id"].as_str().unwrap();
        let (status, captured) = m
            .post(
                &format!("/v1/payments/{manual_id}/capture"),
                &json!({"amount_minor": 600}),
            )
            .await;
        assert_eq!(status, 200, "{captured}");
        assert_eq!(captured["captured_minor"], 600, "{captured}");

        let refunds = (0..TASKS).map(|_| refund_with_retry(&m, &at_once, REFUND_MINOR));
        let mut accepted = 0;
        for ((status, body), _) in futures::future::join_all(refunds).await {
            match status {
                200 => accepted += REFUND_MINOR,
                _ => assert_error(&(status, body), 400, "refund_exceeds_captured"),
            }
        }
        assert_eq!(accepted, CAPTURED_MINOR / REFUND_MINOR * REFUND_MINOR);
        let p = m.payment(&at_once).await;
        assert_eq!(p["refunded_minor"], accepted, "{p}");
        assert_eq!(
            p["refunds"].as_array().unwrap().len() as i64,
            accepted / REFUND_MINOR,
            "{p}"
        );

        let listed = m.list_payments("limit=10").await;
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [manual_id, qr_id, at_once.as_str()], "{listed}");
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        let count = |kind: &str| {
            events["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == kind)
                .count() as i64
        };
        assert_eq!(count("payment.succeeded"), 3, "{events}");
        assert_eq!(
            count("refund.succeeded"),
            accepted / REFUND_MINOR,
            "{events}"
        );
        app.shutdown().await;
    });
    let (refused, single, misreported) = stats.snapshot();
    assert!(refused > 0, "the components never read a batch");
    assert_eq!(single, 0, "a one-key batch was sent");
    assert!(misreported > 0, "no swap committed");
}

#[test]
fn a_declined_refund_fails_and_leaves_the_amount_refundable() {
    // Proves a channel-declined refund (sandbox 666) is `failed`, refunds nothing, and the
    // whole captured amount can still be refunded afterwards.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let failed = refund_ok(&m, &id, &json!({"amount_minor": 666})).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(m.payment(&id).await["refunded_minor"], 0);
        let full = refund_ok(&m, &id, &json!({"amount_minor": 1000})).await;
        assert_eq!(full["status"], "succeeded", "{full}");
        assert_eq!(m.payment(&id).await["refunded_minor"], 1000);
    });
}

#[test]
fn a_pending_refund_reserves_its_amount_until_the_channel_settles_it() {
    // Proves a pending refund (sandbox 888) is not counted as refunded yet but its amount is
    // reserved, and a re-check settles it to succeeded.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let pending = refund_ok(&m, &id, &json!({"amount_minor": 888})).await;
        assert_eq!(pending["status"], "pending", "{pending}");
        assert_eq!(m.payment(&id).await["refunded_minor"], 0);
        let over = m
            .post(
                &format!("/v1/payments/{id}/refunds"),
                &json!({"amount_minor": 113}),
            )
            .await;
        assert_error(&over, 400, "refund_exceeds_captured");
        let rid = pending["id"].as_str().unwrap();
        let (status, settled) = m
            .post(&format!("/v1/refunds/{rid}/recheck"), &json!({}))
            .await;
        assert_eq!(status, 200, "{settled}");
        assert_eq!(settled["status"], "succeeded", "{settled}");
        assert_eq!(m.payment(&id).await["refunded_minor"], 888);
        let (_, fetched) = m.get(&format!("/v1/refunds/{rid}")).await;
        assert_eq!(fetched["status"], "succeeded", "{fetched}");
    });
}

#[test]
fn a_refund_replayed_with_its_idempotency_key_refunds_once() {
    // Proves a retried refund (same key, same body) replays the answer and counts once.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let key = unique("refund-retry");
        let path = format!("/v1/payments/{id}/refunds");
        let body = json!({"amount_minor": 300});
        let first = m.post_with_key(&path, Some(&key), &body).await;
        assert_eq!(first.0, 200, "{}", first.1);
        let second = m.post_with_key(&path, Some(&key), &body).await;
        assert_eq!(second, first, "the replay differs from the first answer");
        let p = m.payment(&id).await;
        assert_eq!(p["refunded_minor"], 300, "{p}");
        assert_eq!(p["refunds"].as_array().map(Vec::len), Some(1), "{p}");
    });
}

#[test]
fn refunds_appear_in_the_event_log() {
    // Proves refund.created and refund.succeeded events are logged for a refund.
    run(|app| async move {
        let m = app.new_merchant().await;
        let id = captured_payment(&m, 1000).await;
        let r = refund_ok(&m, &id, &json!({"amount_minor": 400})).await;
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        let types: Vec<&str> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["id"] == r["id"])
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            vec!["refund.succeeded", "refund.created"],
            "{events}"
        );
    });
}
