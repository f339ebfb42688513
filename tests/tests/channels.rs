//! The real channels end to end: Alipay, WeChat Pay v3 and UnionPay adapters in the real
//! `.wasm` components, talking over HTTP to local simulators that verify our signatures,
//! answer signed and post signed notifications to the webhook (tests/src/sim). Every
//! method each channel offers, then the faults: timeout, 5xx, garbage, bad signature,
//! notification before the authorize answer, duplicate and reordered notifications,
//! wrong amount — with the money state asserted after each.

use serde_json::{Value, json};
use spinpay_tests::sim::wechatpay::Signing;
use spinpay_tests::sim::{ChannelWorld, run_own_world, run_world};
use spinpay_tests::{
    ADMIN_TOKEN, Merchant, Reply, assert_error, assert_error_param, queue_slot_naming, sha256_hex,
    shift_record_time, unique, unique_phone, unique_token,
};

/// A payment request on `channel`.
fn request(channel: &str, amount_minor: i64, method: Value) -> Value {
    json!({
        "amount_minor": amount_minor,
        "currency": "CNY",
        "channel": channel,
        "method": method,
        "description": "2 coffees",
    })
}

/// A customer-presented code.
fn code(prefix: &str) -> Value {
    json!({"type": "qr_customer", "auth_code": format!("{prefix}{}", unique_token())})
}

/// A qr_merchant method.
fn qr() -> Value {
    json!({"type": "qr_merchant"})
}

async fn create(m: &Merchant<'_>, body: &Value) -> Value {
    m.create_payment_ok(body).await
}

/// Creates a qr_merchant payment of `amount_minor` on `channel`, asserting 200.
async fn create_qr(m: &Merchant<'_>, channel: &str, amount_minor: i64) -> Value {
    create(m, &request(channel, amount_minor, qr())).await
}

/// Creates a payment whose channel outcome is unknown: 200, processing, nothing captured.
async fn create_processing(m: &Merchant<'_>, body: &Value) -> Value {
    let (status, p) = m.create_payment(body).await;
    assert_eq!(status, 200, "{p}");
    assert_money(&p, "processing", 0, 0);
    p
}

/// A payment's `expires_at_ms` to the second below, as the channels' clocks tell it.
fn to_second(expires_at_ms: &Value) -> i64 {
    let ms = expires_at_ms.as_i64().expect("expires_at_ms");
    ms - ms.rem_euclid(1000)
}

/// `POST /v1/payments/{id}/cancel`.
async fn cancel(m: &Merchant<'_>, id: &str) -> Reply {
    m.post(&format!("/v1/payments/{id}/cancel"), &json!({}))
        .await
}

/// `POST /v1/refunds/{id}/recheck`.
async fn recheck_refund(m: &Merchant<'_>, id: &str) -> Reply {
    m.post(&format!("/v1/refunds/{id}/recheck"), &json!({}))
        .await
}

fn id(p: &Value) -> String {
    p["id"].as_str().expect("payment id").to_string()
}

/// Asserts status and money fields of a payment.
fn assert_money(p: &Value, status: &str, captured: i64, refunded: i64) {
    assert_eq!(p["status"], status, "{p}");
    assert_eq!(p["captured_minor"], captured, "{p}");
    assert_eq!(p["refunded_minor"], refunded, "{p}");
}

/// The event types about object `id` in the merchant's log, oldest first.
async fn events(m: &Merchant<'_>, id: &str) -> Vec<String> {
    let (status, page) = m.get("/v1/events?limit=100").await;
    assert_eq!(status, 200, "{page}");
    let mut types: Vec<(i64, String)> = page["data"]
        .as_array()
        .expect("event list")
        .iter()
        .filter(|e| e["data"]["id"] == id || e["data"]["payment_id"] == id)
        .map(|e| {
            let at = e["created_at_ms"].as_i64().unwrap_or(0);
            (at, e["type"].as_str().unwrap_or("").to_string())
        })
        .collect();
    types.sort();
    types.into_iter().map(|(_, t)| t).collect()
}

/// How many events of `event_type` the merchant has about `id`.
async fn count(m: &Merchant<'_>, id: &str, event_type: &str) -> usize {
    events(m, id)
        .await
        .iter()
        .filter(|t| *t == event_type)
        .count()
}

/// Refunds `amount_minor` of payment `id`; the refund answer.
async fn refund(m: &Merchant<'_>, id: &str, amount_minor: i64) -> Value {
    let (status, r) = m
        .post(
            &format!("/v1/payments/{id}/refunds"),
            &json!({"amount_minor": amount_minor}),
        )
        .await;
    assert_eq!(status, 200, "refund {amount_minor}: {r}");
    r
}

/// Polls the refund until it is `status`.
async fn wait_refund(m: &Merchant<'_>, refund_id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..spinpay_tests::POLL_ATTEMPTS_MAX {
        let (code, r) = m.get(&format!("/v1/refunds/{refund_id}")).await;
        assert_eq!(code, 200, "{r}");
        if r["status"] == status {
            return r;
        }
        last = r;
        tokio::time::sleep(spinpay_tests::POLL_INTERVAL).await;
    }
    panic!("refund {refund_id} never reached {status}: {last}");
}

/// Polls the payment until `refunded_minor` is `amount_minor`. The refund record is
/// settled a moment before the payment's reservation (two records, two writes), so a
/// read in between sees the refund succeeded and the payment not yet debited.
async fn wait_refunded(m: &Merchant<'_>, payment_id: &str, amount_minor: i64) -> Value {
    let mut last = Value::Null;
    for _ in 0..spinpay_tests::POLL_ATTEMPTS_MAX {
        last = m.payment(payment_id).await;
        if last["refunded_minor"] == amount_minor {
            return last;
        }
        tokio::time::sleep(spinpay_tests::POLL_INTERVAL).await;
    }
    panic!("payment {payment_id} never had {amount_minor} refunded: {last}");
}

async fn merchant(w: &ChannelWorld) -> Merchant<'_> {
    w.app.new_merchant().await
}

// ------------------------------------------------------------------------------- alipay

#[test]
fn alipay_precreate_shows_a_qr_and_the_signed_notification_settles_the_payment() {
    // Proves qr_merchant → alipay.trade.precreate (signature verified by the simulator)
    // gives a display_qr, and the customer paying sends a notification the webhook
    // verifies, acknowledges with `success` and applies once.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "alipay", 1250).await;
        assert_money(&p, "requires_customer_action", 0, 0);
        assert_eq!(p["next_action"]["type"], "display_qr", "{p}");
        let qr = p["next_action"]["qr_payload"].as_str().unwrap();
        assert!(qr.starts_with("https://qr.alipay.com/bax"), "{p}");
        let pid = id(&p);
        assert_eq!(w.alipay.trade(&pid).unwrap().total_amount, "12.50");
        assert_eq!(w.alipay.customer_pays(&pid).await, (200, "success".into()));
        let paid = m.payment(&pid).await;
        assert_money(&paid, "succeeded", 1250, 0);
        assert_eq!(paid["next_action"], Value::Null, "{paid}");
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
    });
}

#[test]
fn alipay_customer_codes_and_sound_waves_are_paid_synchronously() {
    // Proves qr_customer (scene bar_code) and sound_wave (wave_code) go through
    // alipay.trade.pay and a 10000 answer captures the payment at once.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("alipay", 880, code("28"))).await;
        assert_money(&p, "succeeded", 880, 0);
        let token = json!({"type": "sound_wave", "token": unique_token()});
        let s = create(&m, &request("alipay", 990, token)).await;
        assert_money(&s, "succeeded", 990, 0);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &id(&s)), 1);
    });
}

#[test]
fn alipay_wap_and_app_orders_are_signed_and_paid_by_the_customer() {
    // Proves h5 gives a redirect to the gateway and app an order string, both signed
    // with our key (checked by the simulator when the customer opens them), and each
    // settles through the notification.
    run_world(async |w| {
        let m = merchant(w).await;
        let h5 = json!({"type": "h5", "return_url": "https://shop.example/back"});
        let p = create(&m, &request("alipay", 1500, h5)).await;
        assert_money(&p, "requires_customer_action", 0, 0);
        assert_eq!(p["next_action"]["type"], "redirect", "{p}");
        let url = p["next_action"]["url"].as_str().unwrap();
        assert!(
            url.contains("/gateway.do?") && url.contains("alipay.trade.wap.pay"),
            "{url}"
        );
        assert_eq!(w.alipay.customer_pays_order(url).await.0, 200);
        assert_money(&m.payment(&id(&p)).await, "succeeded", 1500, 0);

        let a = create(&m, &request("alipay", 1600, json!({"type": "app"}))).await;
        assert_eq!(a["next_action"]["type"], "app_order", "{a}");
        let order = a["next_action"]["order_string"].as_str().unwrap();
        assert!(order.contains("alipay.trade.app.pay"), "{order}");
        assert_eq!(w.alipay.customer_pays_order(order).await.0, 200);
        assert_money(&m.payment(&id(&a)).await, "succeeded", 1600, 0);
    });
}

#[test]
fn alipay_refunds_partially_then_fully_and_never_beyond_the_capture() {
    // Proves alipay.trade.refund with our refund id as out_request_no: two partial
    // refunds succeed (fund_change Y), the total equals the capture, a third is refused.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("alipay", 2000, code("28"))).await;
        let pid = id(&p);
        let r1 = refund(&m, &pid, 500).await;
        assert_eq!(r1["status"], "succeeded", "{r1}");
        let r2 = refund(&m, &pid, 1500).await;
        assert_eq!(r2["status"], "succeeded", "{r2}");
        assert_money(&m.payment(&pid).await, "succeeded", 2000, 2000);
        let trade = w.alipay.trade(&pid).unwrap();
        assert_eq!(trade.refunds.len(), 2, "{trade:?}");
        let (status, e) = m
            .post(
                &format!("/v1/payments/{pid}/refunds"),
                &json!({"amount_minor": 1}),
            )
            .await;
        assert_error(&(status, e), 400, "refund_exceeds_captured");
        let rq = recheck_refund(&m, r1["id"].as_str().unwrap()).await;
        assert_eq!(rq.0, 200, "{}", rq.1);
        assert_eq!(rq.1["status"], "succeeded", "{}", rq.1);
    });
}

#[test]
fn alipay_cancel_closes_a_scanned_unpaid_trade() {
    // Proves cancel → alipay.trade.close once the customer has scanned the QR code (so
    // Alipay has created the trade): the trade is closed at Alipay and the payment
    // canceled at the merchant's request, before its expiry; a late paid notification
    // then contradicts and flags it, never captures. The precreate carried the
    // payment's expiry.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "alipay", 700).await;
        let pid = id(&p);
        let trade = w.alipay.trade(&pid).unwrap();
        assert_eq!(trade.expires_at_ms, Some(to_second(&p["expires_at_ms"])));
        w.alipay.customer_scans(&pid);
        let (status, c) = cancel(&m, &pid).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        assert_eq!(c["cancellation_reason"], "requested_by_merchant", "{c}");
        assert_eq!(w.alipay.trade(&pid).unwrap().status, "TRADE_CLOSED");
        let (code, text, _) = w.alipay.notify(&pid, "TRADE_SUCCESS", "7.00", "").await;
        assert_eq!((code, text.as_str()), (200, "success"));
        let after = m.payment(&pid).await;
        assert_money(&after, "canceled", 0, 0);
        assert!(after["conflict"].is_object(), "{after}");
    });
}

#[test]
fn alipay_cancel_revokes_a_code_payment_the_payer_has_not_confirmed_or_whose_answer_was_lost() {
    // Proves cancel → alipay.trade.cancel for a customer-presented code still
    // `processing`: one the payer is still confirming (10003) is closed at Alipay and can
    // no longer be paid; one Alipay charged whose answer was lost is revoked with its
    // money returned (`action` refund); both end `canceled` with one `payment.canceled`.
    run_world(async |w| {
        let m = merchant(w).await;
        let waiting = create(&m, &request("alipay", 720, code("WAIT"))).await;
        assert_money(&waiting, "processing", 0, 0);
        let pid = id(&waiting);
        let (status, c) = cancel(&m, &pid).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        let trade = w.alipay.trade(&pid).unwrap();
        assert_eq!(
            (trade.status.as_str(), trade.revoked.as_deref()),
            ("TRADE_CLOSED", Some("close"))
        );
        assert_eq!(w.alipay.call_count("alipay.trade.cancel", &pid), 1);
        assert_eq!(w.alipay.customer_pays(&pid).await.0, 0, "nothing paid");
        assert_eq!(count(&m, &pid, "payment.canceled").await, 1);

        // 601: Alipay charges, then answers too late. No read in between (its re-check
        // would settle the payment as paid).
        let lost = create_processing(&m, &request("alipay", 601, code("28"))).await;
        let lid = id(&lost);
        let (status, c) = cancel(&m, &lid).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        assert_eq!(
            w.alipay.trade(&lid).unwrap().revoked.as_deref(),
            Some("refund")
        );
        assert_money(&m.payment(&lid).await, "canceled", 0, 0);
    });
}

/// An hour, in ms: past a 10-minute payment's expiry and the channels' clock margin.
const PAST_SHORT_EXPIRY_MS: i64 = 3_600_000;

#[test]
fn alipay_cancel_of_an_unscanned_qr_is_refused_until_it_has_expired() {
    // Proves a QR code nobody scanned (no trade at Alipay yet: close answers
    // TRADE_NOT_EXIST, yet the code stays payable) is not canceled before its expiry:
    // 402 channel_declined, the payment unchanged, and the customer can still pay it.
    // The precreate bounded the code to the payment's 10 minutes (9m whole). Once the
    // payment is long expired (its record aged in the store by an hour), a cancel
    // succeeds, and so does the close of an expired one that a GET triggers.
    run_world(async |w| {
        let m = merchant(w).await;
        let mut body = request("alipay", 710, qr());
        body["expires_in_seconds"] = json!(600);
        let p = create(&m, &body).await;
        let pid = id(&p);
        let qr_timeout = w.alipay.trade(&pid).unwrap().qr_code_timeout_express;
        assert_eq!(qr_timeout.as_deref(), Some("9m"));
        let r = cancel(&m, &pid).await;
        assert_error(&r, 402, "channel_declined");
        let message = r.1["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("order_still_payable"), "{}", r.1);
        assert_money(&m.payment(&pid).await, "requires_customer_action", 0, 0);
        assert_eq!(count(&m, &pid, "payment.canceled").await, 0);
        assert_eq!(w.alipay.customer_pays(&pid).await, (200, "success".into()));
        let paid = m.payment(&pid).await;
        assert_money(&paid, "succeeded", 710, 0);
        assert_eq!(paid["conflict"], Value::Null, "{paid}");

        let store = w.app.store();
        let fields = ["created_at_ms", "updated_at_ms", "expires_at_ms"];
        let [by_cancel, by_read] = [id(&create(&m, &body).await), id(&create(&m, &body).await)];
        for pid in [&by_cancel, &by_read] {
            let key = format!("pay/{pid}");
            shift_record_time(&*store, &key, &fields, -PAST_SHORT_EXPIRY_MS).await;
        }
        let (status, c) = cancel(&m, &by_cancel).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        assert_eq!(c["cancellation_reason"], "requested_by_merchant", "{c}");
        let read = m.payment(&by_read).await;
        assert_money(&read, "canceled", 0, 0);
        assert_eq!(read["cancellation_reason"], "expired", "{read}");
        assert_eq!(w.alipay.call_count("alipay.trade.close", &by_read), 1);
    });
}

#[test]
fn alipay_new_payments_it_cannot_take_are_refused_before_anything_is_stored() {
    // Proves nfc and manual capture on Alipay are 400s naming the field, and no payment
    // is created.
    run_world(async |w| {
        let m = merchant(w).await;
        let nfc = json!({"type": "nfc", "token": "t", "cryptogram": "c"});
        let r = m.create_payment(&request("alipay", 100, nfc)).await;
        assert_error_param(&r, 400, "method_unsupported", "method.type");
        let mut manual = request("alipay", 100, qr());
        manual["capture"] = json!("manual");
        let r = m.create_payment(&manual).await;
        assert_error_param(&r, 400, "parameter_invalid", "capture");
        assert_eq!(m.count_payments().await, 0);
    });
}

#[test]
fn alipay_channel_timeout_leaves_processing_until_the_query_settles_it_once() {
    // Proves a pay answer slower than the adapter's deadline is an unknown outcome
    // (processing, nothing captured), and the re-check's alipay.trade.query then
    // captures exactly once.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_processing(&m, &request("alipay", 601, code("28"))).await;
        let pid = id(&p);
        let settled = m.payment(&pid).await;
        assert_money(&settled, "succeeded", 601, 0);
        let again = m.payment(&pid).await;
        assert_money(&again, "succeeded", 601, 0);
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &pid), 1);
    });
}

#[test]
fn alipay_server_errors_garbage_and_bad_signatures_are_unknown_outcomes() {
    // Proves a 5xx (nothing done at Alipay), a garbage body and a validly shaped but
    // wrongly signed answer each leave the payment processing with nothing captured;
    // the query then tells the truth (not found stays processing, paid settles).
    run_world(async |w| {
        let m = merchant(w).await;
        let (_, p) = m.create_payment(&request("alipay", 602, code("28"))).await;
        assert_money(&p, "processing", 0, 0);
        assert_money(&m.payment(&id(&p)).await, "processing", 0, 0);
        for amount in [603, 604] {
            let (_, p) = m
                .create_payment(&request("alipay", amount, code("28")))
                .await;
            assert_money(&p, "processing", 0, 0);
            assert_money(&m.payment(&id(&p)).await, "succeeded", amount, 0);
        }
    });
}

#[test]
fn an_alipay_payment_alipay_never_got_is_sent_again_by_a_recheck_once_quiet_for_60_s() {
    // Proves the re-check's second ask through the real components and the Alipay
    // adapter: a trade.pay answered 500 with nothing done leaves the payment processing,
    // and a GET's re-check (trade.query: not found) keeps it so while the request could
    // still be running; once the payment has been quiet for 60 s (its record aged in the
    // store) a GET re-checks, still hears nothing and sends trade.pay again: the payment
    // succeeds through one trade, `payment.succeeded` published once.
    run_world(async |w| {
        let m = merchant(w).await;
        let (_, p) = m.create_payment(&request("alipay", 602, code("28"))).await;
        let pid = id(&p);
        assert_money(&p, "processing", 0, 0);
        assert_money(&m.payment(&pid).await, "processing", 0, 0);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &pid), 1);

        let store = w.app.store();
        let fields = ["created_at_ms", "updated_at_ms"];
        shift_record_time(&*store, &format!("pay/{pid}"), &fields, -61_000).await;
        assert_money(&m.payment(&pid).await, "succeeded", 602, 0);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &pid), 2);
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
        assert_money(&m.payment(&pid).await, "succeeded", 602, 0);
        assert_eq!(
            w.alipay.call_count("alipay.trade.pay", &pid),
            2,
            "asked twice only"
        );
    });
}

#[test]
fn alipay_notification_before_the_precreate_answer_is_applied_once() {
    // Proves the customer's payment notified while precreate is still in flight
    // settles the payment, and the late precreate answer does not reopen it.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "alipay", 605).await;
        assert_money(&p, "succeeded", 605, 0);
        assert_money(&m.payment(&id(&p)).await, "succeeded", 605, 0);
        assert_eq!(count(&m, &id(&p), "payment.succeeded").await, 1);
    });
}

#[test]
fn alipay_duplicate_reordered_forged_and_unknown_notifications_are_harmless() {
    // Proves a redelivered notification is acknowledged without effect, an older
    // WAIT_BUYER_PAY after TRADE_SUCCESS changes nothing, a forged one is refused with
    // `fail`, and one about an unknown payment is acknowledged.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "alipay", 1250).await;
        let pid = id(&p);
        let (code, text, body) = w.alipay.notify(&pid, "TRADE_SUCCESS", "12.50", "").await;
        assert_eq!((code, text.as_str()), (200, "success"));
        assert_eq!(
            w.alipay.post_raw(body.clone()).await,
            (200, "success".into())
        );
        assert_eq!(w.alipay.post_raw(body).await, (200, "success".into()));
        let (code, _, _) = w.alipay.notify(&pid, "WAIT_BUYER_PAY", "12.50", "").await;
        assert_eq!(code, 200);
        let (code, text, _) = w
            .alipay
            .notify(&pid, "TRADE_SUCCESS", "12.50", "forge")
            .await;
        assert_eq!((code, text.as_str()), (401, "fail"));
        let after = m.payment(&pid).await;
        assert_money(&after, "succeeded", 1250, 0);
        assert_eq!(after["conflict"], Value::Null, "{after}");
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
        let unknown = "pay_zzzzzzzzzzzzzzzzzzzzzzzzzz";
        let (code, text, _) = w.alipay.notify(unknown, "TRADE_SUCCESS", "1.00", "").await;
        assert_eq!((code, text.as_str()), (200, "success"));
    });
}

/// A week and an hour, in ms: past the replay keys' retention.
const PAST_REPLAY_RETENTION_MS: i64 = (7 * 24 + 1) * 3_600_000;

#[test]
fn a_replay_key_is_deleted_by_the_sweep_after_a_week_and_a_late_duplicate_changes_nothing() {
    // Proves through the real components that replay keys do not pile up: the key an
    // applied Alipay notification claimed (aged by a week in the store, with its expiry
    // slot) is deleted by the next sweep of every merchant, the slot too; the same
    // notification arriving afterwards is applied again, harmlessly (still one
    // `payment.succeeded`), and claims its key anew. An app of its own: the sweep expires
    // the channel's replay keys in claim order and stops at the first one not due, so a
    // notification another test sent just before would hold this one back.
    run_own_world(async |w| {
        let m = merchant(w).await;
        let pid = id(&create_qr(&m, "alipay", 1250).await);
        let (code, text, body) = w.alipay.notify(&pid, "TRADE_SUCCESS", "12.50", "").await;
        assert_eq!((code, text.as_str()), (200, "success"));
        let form = String::from_utf8(body.clone()).unwrap();
        let notify_id = form
            .split('&')
            .find_map(|pair| pair.strip_prefix("notify_id="))
            .expect("the notification carries a notify_id");
        let hash = sha256_hex(notify_id);
        let key = format!("replay/alipay/{hash}");
        let store = w.app.store();
        assert!(
            store.get(&key).await.unwrap().is_some(),
            "the key is claimed"
        );
        let slot = queue_slot_naming(
            &*store,
            "replay/alipay/seq",
            |seq| format!("replay/alipay/exp/{seq:020}"),
            &key,
        )
        .await;
        shift_record_time(&*store, &key, &["claimed_at_ms"], -PAST_REPLAY_RETENTION_MS).await;
        shift_record_time(&*store, &slot, &["at_ms"], -PAST_REPLAY_RETENTION_MS).await;

        let (status, report) = w
            .app
            .post(
                "/v1/admin/notifications/sweep",
                Some(ADMIN_TOKEN),
                None,
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["replay_keys_expired"], 1, "{report}");
        assert!(
            store.get(&key).await.unwrap().is_none(),
            "the key is deleted"
        );
        assert!(
            store.get(&slot).await.unwrap().is_none(),
            "the slot is deleted"
        );

        assert_eq!(w.alipay.post_raw(body).await, (200, "success".into()));
        assert_money(&m.payment(&pid).await, "succeeded", 1250, 0);
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
        assert!(store.get(&key).await.unwrap().is_some(), "claimed anew");
    });
}

#[test]
fn alipay_wrong_amount_in_a_notification_flags_the_payment_and_captures_nothing() {
    // Proves a TRADE_SUCCESS for another amount is never accepted: the payment is
    // flagged with the channel's amount and a payment.conflicted event is raised.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "alipay", 1250).await;
        let pid = id(&p);
        let (code, text, _) = w.alipay.notify(&pid, "TRADE_SUCCESS", "0.01", "").await;
        assert_eq!((code, text.as_str()), (200, "success"));
        let after = m.payment(&pid).await;
        assert_money(&after, "requires_customer_action", 0, 0);
        assert_eq!(after["conflict"]["reason"], "amount_mismatch", "{after}");
        assert_eq!(after["conflict"]["channel_amount_minor"], 1, "{after}");
        assert_eq!(count(&m, &pid, "payment.conflicted").await, 1);
    });
}

// ---------------------------------------------------------------------------- wechatpay

#[test]
fn wechatpay_native_h5_and_app_wait_for_the_customer_and_callbacks_settle_them() {
    // Proves native → code_url QR, h5 → h5_url redirect with our return URL, app → an
    // order signed for the SDK; each simulator call verified our Authorization header
    // and each encrypted, signed callback settles its payment.
    run_world(async |w| {
        let m = merchant(w).await;
        let n = create_qr(&m, "wechatpay", 1250).await;
        assert_eq!(n["next_action"]["type"], "display_qr", "{n}");
        assert!(
            n["next_action"]["qr_payload"]
                .as_str()
                .unwrap()
                .starts_with("weixin://wxpay/")
        );
        let mut h5 = request(
            "wechatpay",
            1300,
            json!({"type": "h5", "return_url": "https://shop.example/back"}),
        );
        h5["payer"] = json!({"ip": "198.51.100.23"});
        let h = create(&m, &h5).await;
        assert_eq!(h["next_action"]["type"], "redirect", "{h}");
        let url = h["next_action"]["url"].as_str().unwrap();
        assert!(
            url.contains("checkmweb") && url.contains("redirect_url=https%3A%2F%2Fshop"),
            "{url}"
        );
        let a = create(&m, &request("wechatpay", 1400, json!({"type": "app"}))).await;
        let order: Value =
            serde_json::from_str(a["next_action"]["order_string"].as_str().unwrap()).unwrap();
        assert_eq!(order["package"], "Sign=WXPay", "{order}");
        assert_eq!(order["partnerid"], "1900000109", "{order}");
        for (p, amount) in [(&n, 1250), (&h, 1300), (&a, 1400)] {
            assert_money(p, "requires_customer_action", 0, 0);
            assert_eq!(w.wechatpay.customer_pays(&id(p)).await.0, 204);
            assert_money(&m.payment(&id(p)).await, "succeeded", amount, 0);
        }
    });
}

#[test]
fn wechatpay_codepay_is_paid_at_once_or_stays_processing_while_the_payer_confirms() {
    // Proves codepay SUCCESS captures synchronously, and USERPAYING is processing until
    // the query (GET re-check) sees SUCCESS.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("wechatpay", 500, code("13"))).await;
        assert_money(&p, "succeeded", 500, 0);
        let q = create(&m, &request("wechatpay", 510, code("WAIT"))).await;
        assert_money(&q, "processing", 0, 0);
        assert_money(&m.payment(&id(&q)).await, "processing", 0, 0);
        let _ = w.wechatpay.customer_pays(&id(&q)).await;
        assert_money(&m.payment(&id(&q)).await, "succeeded", 510, 0);
    });
}

#[test]
fn wechatpay_refunds_are_pending_until_the_refund_callback() {
    // Proves a refund answered PROCESSING stays pending (reserved against the capture)
    // and the REFUND.SUCCESS callback settles it.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("wechatpay", 3000, code("13"))).await;
        let pid = id(&p);
        let r = refund(&m, &pid, 1000).await;
        assert_eq!(r["status"], "pending", "{r}");
        let rid = r["id"].as_str().unwrap().to_string();
        wait_refund(&m, &rid, "succeeded").await;
        assert_money(
            &wait_refunded(&m, &pid, 1000).await,
            "succeeded",
            3000,
            1000,
        );
        assert_eq!(w.wechatpay.order(&pid).unwrap().refunds.len(), 1);
    });
}

#[test]
fn wechatpay_cancel_closes_an_unpaid_order() {
    // Proves cancel → close (204 signed) cancels the payment and closes the order, which
    // carried the payment's expiry.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "wechatpay", 800).await;
        let pid = id(&p);
        let order = w.wechatpay.order(&pid).unwrap();
        assert_eq!(order.expires_at_ms, Some(to_second(&p["expires_at_ms"])));
        let (status, c) = cancel(&m, &pid).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        assert_eq!(w.wechatpay.order(&pid).unwrap().trade_state, "CLOSED");
    });
}

#[test]
fn wechatpay_cancel_reverses_a_codepay_the_payer_is_still_confirming_once_answered() {
    // Proves cancel → codepay reverse for a codepay still `processing` (USERPAYING): a
    // reverse WeChat Pay fails (500 SYSTEM_ERROR) answers 503 `channel_unavailable` and
    // leaves the order as it was; the retry reverses it (REVOKED), the payment is
    // `canceled` with one `payment.canceled`, and a codepay paid at once is not
    // cancelable.
    run_world(async |w| {
        let m = merchant(w).await;
        let q = create(&m, &request("wechatpay", 520, code("WAITBUSY"))).await;
        assert_money(&q, "processing", 0, 0);
        let qid = id(&q);
        let busy = cancel(&m, &qid).await;
        assert_error(&busy, 503, "channel_unavailable");
        assert_eq!(w.wechatpay.order(&qid).unwrap().trade_state, "USERPAYING");
        let (status, c) = cancel(&m, &qid).await;
        assert_eq!(status, 200, "{c}");
        assert_money(&c, "canceled", 0, 0);
        let order = w.wechatpay.order(&qid).unwrap();
        assert_eq!(
            (order.trade_state.as_str(), order.reversed_from.as_deref()),
            ("REVOKED", Some("USERPAYING"))
        );
        assert_eq!(w.wechatpay.reverses(&qid), 2);
        assert_eq!(count(&m, &qid, "payment.canceled").await, 1);
        assert_money(&m.payment(&qid).await, "canceled", 0, 0);

        let paid = create(&m, &request("wechatpay", 530, code("13"))).await;
        assert_money(&paid, "succeeded", 530, 0);
        assert_error(&cancel(&m, &id(&paid)).await, 409, "payment_not_cancelable");
        assert_eq!(w.wechatpay.reverses(&id(&paid)), 0);
    });
}

#[test]
fn wechatpay_h5_without_the_payer_ip_and_unsupported_methods_are_refused_up_front() {
    // Proves the H5 payer IP requirement and sound_wave are 400s naming the field.
    run_world(async |w| {
        let m = merchant(w).await;
        let h5 = json!({"type": "h5", "return_url": "https://shop.example/back"});
        let r = m.create_payment(&request("wechatpay", 100, h5)).await;
        assert_error_param(&r, 400, "parameter_invalid", "payer.ip");
        let wave = json!({"type": "sound_wave", "token": "w"});
        let r = m.create_payment(&request("wechatpay", 100, wave)).await;
        assert_error_param(&r, 400, "method_unsupported", "method.type");
        assert_eq!(m.count_payments().await, 0);
    });
}

#[test]
fn wechatpay_faults_are_unknown_outcomes_resolved_by_the_query() {
    // Proves timeout, 5xx, garbage, a forged answer signature and an UNSIGNED 2xx
    // (treated as forged) all leave the payment processing with nothing captured, and
    // the signed query answer then decides (paid → succeeded once; absent → processing).
    run_world(async |w| {
        let m = merchant(w).await;
        for (amount, done_at_channel) in [
            (601, true),
            (602, false),
            (603, true),
            (604, true),
            (606, true),
        ] {
            let p = create_processing(&m, &request("wechatpay", amount, code("13"))).await;
            let after = m.payment(&id(&p)).await;
            if done_at_channel {
                assert_money(&after, "succeeded", amount, 0);
                assert_eq!(count(&m, &id(&p), "payment.succeeded").await, 1);
            } else {
                assert_money(&after, "processing", 0, 0);
            }
        }
    });
}

#[test]
fn wechatpay_callback_before_the_native_answer_duplicates_and_reorders_are_harmless() {
    // Proves a callback arriving before the native answer settles the payment once, a
    // byte-identical redelivery is acknowledged without effect, and a later NOTPAY /
    // CLOSED-free reorder (NOTPAY after SUCCESS) changes nothing.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "wechatpay", 605).await;
        let pid = id(&p);
        assert_money(&p, "succeeded", 605, 0);
        let (code, _, headers, body) = w
            .wechatpay
            .callback(&pid, "SUCCESS", 605, Signing::Genuine)
            .await;
        assert_eq!(code, 204);
        assert_eq!(w.wechatpay.post_raw(&headers, body).await.0, 204);
        let (code, _, _, _) = w
            .wechatpay
            .callback(&pid, "NOTPAY", 605, Signing::Genuine)
            .await;
        assert_eq!(code, 204);
        assert_money(&m.payment(&pid).await, "succeeded", 605, 0);
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
    });
}

#[test]
fn wechatpay_callbacks_signed_with_a_retiring_platform_key_are_accepted_during_rotation() {
    // Proves both configured platform keys verify (serials and PEM blocks in order): a
    // callback signed with the retiring key and naming its serial settles the payment.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "wechatpay", 1111).await;
        let pid = id(&p);
        let (code, text, _, _) = w
            .wechatpay
            .callback(&pid, "SUCCESS", 1111, Signing::Retiring)
            .await;
        assert_eq!(code, 204, "{text}");
        assert_money(&m.payment(&pid).await, "succeeded", 1111, 0);
    });
}

#[test]
fn wechatpay_forged_stale_and_wrong_amount_callbacks_never_capture() {
    // Proves a forged signature and a stale timestamp are refused 401 with
    // {"code":"FAIL"}, and a signed callback with another amount flags the payment.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "wechatpay", 1250).await;
        let pid = id(&p);
        for signing in [Signing::Forged, Signing::Stale] {
            let (code, text, _, _) = w.wechatpay.callback(&pid, "SUCCESS", 1250, signing).await;
            assert_eq!(code, 401, "{text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["code"], "FAIL", "{text}");
        }
        assert_money(&m.payment(&pid).await, "requires_customer_action", 0, 0);
        let (code, _, _, _) = w
            .wechatpay
            .callback(&pid, "SUCCESS", 1, Signing::Genuine)
            .await;
        assert_eq!(code, 204);
        let after = m.payment(&pid).await;
        assert_money(&after, "requires_customer_action", 0, 0);
        assert_eq!(after["conflict"]["reason"], "amount_mismatch", "{after}");
        assert_eq!(count(&m, &pid, "payment.conflicted").await, 1);
    });
}

// ----------------------------------------------------------------------------- unionpay

#[test]
fn unionpay_qr_apply_app_and_customer_codes_settle_by_back_notification() {
    // Proves QR apply (txnSubType 07) gives a QR, app consume a tn, and a customer code
    // (06) is accepted then settled by the back-notification UnionPay sends on its own
    // (seen in the payment list, which never queries the channel); each notification is
    // verified by certId and answered 200 `ok`.
    run_world(async |w| {
        let m = merchant(w).await;
        let q = create_qr(&m, "unionpay", 1250).await;
        assert_eq!(q["next_action"]["type"], "display_qr", "{q}");
        let a = create(&m, &request("unionpay", 1350, json!({"type": "app"}))).await;
        assert_eq!(a["next_action"]["type"], "app_order", "{a}");
        for (p, amount) in [(&q, 1250), (&a, 1350)] {
            assert_money(p, "requires_customer_action", 0, 0);
            assert_eq!(w.unionpay.customer_pays(&id(p)).await, (200, "ok".into()));
            assert_money(&m.payment(&id(p)).await, "succeeded", amount, 0);
        }
        let c = create(&m, &request("unionpay", 1450, code("62"))).await;
        assert_money(&c, "processing", 0, 0);
        let answer = w.unionpay.own_notification_answer(&id(&c)).await;
        assert_eq!(answer, (200, "ok".into()));
        // Read from the list, which never asks the channel (GET /v1/payments/{id} would
        // query UnionPay and settle the payment without the notification).
        let listed = m.list_payments("limit=1").await;
        assert_eq!(listed["data"][0]["id"], id(&c), "{listed}");
        assert_money(&listed["data"][0], "succeeded", 1450, 0);
    });
}

#[test]
fn unionpay_refund_uses_the_consume_query_id_and_settles_by_notification() {
    // Proves the refund (txnType 04) names the consume's queryId (the simulator refuses
    // any other), is pending on the 00 answer and succeeds with its back-notification.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_qr(&m, "unionpay", 2000).await;
        let pid = id(&p);
        w.unionpay.customer_pays(&pid).await;
        assert_money(&m.payment(&pid).await, "succeeded", 2000, 0);
        let r = refund(&m, &pid, 700).await;
        assert_eq!(r["status"], "pending", "{r}");
        wait_refund(&m, r["id"].as_str().unwrap(), "succeeded").await;
        assert_money(&wait_refunded(&m, &pid, 700).await, "succeeded", 2000, 700);
    });
}

#[test]
fn unionpay_faults_notifications_first_duplicates_and_wrong_amounts_are_safe() {
    // Proves timeout / 5xx / garbage / bad signature leave processing, the query then
    // settles what UnionPay did; a notification before the answer settles once; a
    // duplicate is acknowledged without effect; a wrong amount flags the payment.
    run_world(async |w| {
        let m = merchant(w).await;
        for amount in [601, 602, 603, 604] {
            let p = create_processing(&m, &request("unionpay", amount, qr())).await;
            let pid = id(&p);
            if amount != 602 {
                let (code, text) = w.unionpay.customer_pays(&pid).await;
                assert_eq!((code, text.as_str()), (200, "ok"));
                assert_money(&m.payment(&pid).await, "succeeded", amount, 0);
            } else {
                assert!(w.unionpay.order(&pid).is_none());
                assert_money(&m.payment(&pid).await, "processing", 0, 0);
            }
        }
        let first = create_qr(&m, "unionpay", 605).await;
        assert_money(&first, "succeeded", 605, 0);
        let p = create_qr(&m, "unionpay", 1250).await;
        let pid = id(&p);
        let (code, _, body) = w.unionpay.notify(&pid, "00", 1250, false).await;
        assert_eq!(code, 200);
        assert_eq!(w.unionpay.post_raw(body).await, (200, "ok".into()));
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);
        let (code, text, _) = w.unionpay.notify(&pid, "00", 1250, true).await;
        assert_eq!((code, text.as_str()), (401, "fail"));
        let other = create_qr(&m, "unionpay", 1250).await;
        let (code, _, _) = w.unionpay.notify(&id(&other), "00", 99, false).await;
        assert_eq!(code, 200);
        let flagged = m.payment(&id(&other)).await;
        assert_money(&flagged, "requires_customer_action", 0, 0);
        assert_eq!(
            flagged["conflict"]["reason"], "amount_mismatch",
            "{flagged}"
        );
    });
}

// ------------------------------------------------------------------------ not configured

#[test]
fn without_channel_variables_payments_are_refused_and_notifications_not_configured() {
    // Proves the default deployment (no channel variables) refuses a payment on each
    // real channel as channel_unsupported before storing anything, and a notification
    // to its webhook path the same way (naming the channel).
    spinpay_tests::run(async |app| {
        let m = app.new_merchant().await;
        for channel in ["alipay", "wechatpay", "unionpay"] {
            let r = m.create_payment(&request(channel, 100, qr())).await;
            assert_error_param(&r, 400, "channel_unsupported", "channel");
        }
        assert_eq!(m.count_payments().await, 0);
        for channel in ["alipay", "wechatpay", "unionpay"] {
            let path = format!("/v1/webhooks/{channel}");
            let headers = [("content-type", "application/x-www-form-urlencoded")];
            let r = app.request("POST", &path, &headers, b"a=b".to_vec()).await;
            assert_error_param(&r, 400, "channel_unsupported", "channel");
            let message = r.1["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains(channel), "{message}");
        }
    });
}

// ------------------------------------------------------------------- refunds under faults

#[test]
fn alipay_refund_timeout_stays_pending_until_the_refund_query_settles_it_once() {
    // Proves a refund whose answer times out is pending (reserved, not yet refunded),
    // the re-check's fastpay.refund.query settles it, and re-checking again never
    // counts it twice.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("alipay", 5000, code("28"))).await;
        let pid = id(&p);
        let r = refund(&m, &pid, 601).await;
        assert_eq!(r["status"], "pending", "{r}");
        let rid = r["id"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let (status, rr) = recheck_refund(&m, &rid).await;
            assert_eq!(status, 200, "{rr}");
            assert_eq!(rr["status"], "succeeded", "{rr}");
        }
        assert_money(&m.payment(&pid).await, "succeeded", 5000, 601);
        assert_eq!(count(&m, &rid, "refund.succeeded").await, 1);
    });
}

#[test]
fn an_alipay_refund_alipay_never_got_is_sent_again_by_a_recheck_once_60_s_old() {
    // Proves the refund re-check's second ask through the real components: a refund
    // answered 500 with nothing done stays pending (reserved), a re-check while its
    // request could still be running (refund query: no such refund) keeps it so, and
    // once the refund is 60 s old (its record aged in the store) a re-check sends it
    // again: succeeded, refunded once, `refund.succeeded` published once.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create(&m, &request("alipay", 5000, code("28"))).await;
        let pid = id(&p);
        let r = refund(&m, &pid, 602).await;
        assert_eq!(r["status"], "pending", "{r}");
        let rid = r["id"].as_str().unwrap().to_string();
        let (status, young) = recheck_refund(&m, &rid).await;
        assert_eq!(
            (status, young["status"].as_str()),
            (200, Some("pending")),
            "{young}"
        );
        assert_money(&m.payment(&pid).await, "succeeded", 5000, 0);

        let store = w.app.store();
        let fields = ["created_at_ms", "updated_at_ms"];
        shift_record_time(&*store, &format!("re/{rid}"), &fields, -61_000).await;
        let (status, done) = recheck_refund(&m, &rid).await;
        assert_eq!(
            (status, done["status"].as_str()),
            (200, Some("succeeded")),
            "{done}"
        );
        assert_money(&m.payment(&pid).await, "succeeded", 5000, 602);
        assert_eq!(w.alipay.call_count("alipay.trade.refund", &pid), 2);
        assert_eq!(count(&m, &rid, "refund.succeeded").await, 1);
    });
}

#[test]
fn simulators_refuse_requests_not_signed_with_the_apps_key() {
    // Proves the simulators really check our signatures (so every passing call above
    // was verified): an Alipay form with a bogus sign and a WeChat Pay call without
    // Authorization are refused.
    run_world(async |w| {
        let url = format!("{}/gateway.do", w.alipay.origin());
        let form = "app_id=2021000000000001&method=alipay.trade.query&sign_type=RSA2&sign=AAAA&biz_content=%7B%7D";
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let (status, body) = spinpay_tests::sim::post_to(&url, &headers, form.into()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("isv.invalid-signature"), "{body}");
        let url = format!("{}/v3/pay/transactions/native", w.wechatpay.origin());
        let headers = [("content-type", "application/json")];
        let (status, body) = spinpay_tests::sim::post_to(&url, &headers, b"{}".to_vec()).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("SIGN_ERROR"), "{body}");
    });
}

#[test]
fn unionpay_query_settles_a_timed_out_consume_and_cancel_is_refused() {
    // Proves a QR apply whose answer timed out is processing until queryTrans.do says
    // origRespCode 00 (no notification needed), and that the cancel of an order that has
    // not expired is refused as channel_declined (ACP has no close) with the payment
    // untouched; the order carried the payment's expiry as payTimeout.
    run_world(async |w| {
        let m = merchant(w).await;
        let p = create_processing(&m, &request("unionpay", 601, qr())).await;
        let pid = id(&p);
        assert_money(&m.payment(&pid).await, "processing", 0, 0);
        w.unionpay.pay_silently(&pid);
        assert_money(&m.payment(&pid).await, "succeeded", 601, 0);
        assert_eq!(count(&m, &pid, "payment.succeeded").await, 1);

        let open = create_qr(&m, "unionpay", 900).await;
        let oid = id(&open);
        let order = w.unionpay.order(&oid).unwrap();
        assert_eq!(order.expires_at_ms, Some(to_second(&open["expires_at_ms"])));
        let r = cancel(&m, &oid).await;
        assert_error(&r, 402, "channel_declined");
        assert_money(&m.payment(&oid).await, "requires_customer_action", 0, 0);
    });
}

// --------------------------------------------------------------- one-time codes by Twilio

/// `body` with `payer`.
fn paid_by(mut body: Value, payer: &Value) -> Value {
    body["payer"] = payer.clone();
    body
}

#[test]
fn a_risk_challenge_on_alipay_sends_its_code_by_twilio_and_the_code_completes_it() {
    // Proves that with sms_provider=twilio a risk challenge on a real channel sends its
    // code through Twilio's Messages API (Basic auth and form checked by the simulator,
    // valid for the code's 300 s), not the sandbox's inbox, and that the code completes
    // the payment at Alipay once.
    run_world(async |w| {
        let m = merchant(w).await;
        let rules = json!({"velocity": [{"dimension": "payer", "window": "1m",
            "max_count": 1, "contribution": 40}]});
        let (status, body) = w.app.put("/v1/risk/rules", &m.secret_key, &rules).await;
        assert_eq!(status, 200, "{body}");
        let phone = unique_phone();
        let payer = json!({"id": unique("u"), "phone": phone});
        let first = create(&m, &paid_by(request("alipay", 880, code("28")), &payer)).await;
        assert_money(&first, "succeeded", 880, 0);
        assert!(
            w.twilio.sent_to(&phone).is_empty(),
            "no code for an allowed payment"
        );

        let second = create(&m, &paid_by(request("alipay", 990, code("28")), &payer)).await;
        assert_eq!(second["risk"]["decision"], "challenge", "{second}");
        assert_eq!(second["next_action"]["type"], "enter_otp", "{second}");
        let sent = w.twilio.sent_to(&phone);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].validity_period.as_deref(), Some("300"));
        let inbox = format!("/sandbox/sms/{}", phone.replace('+', "%2B"));
        assert_eq!(
            w.app.get(&inbox, None).await.0,
            404,
            "the sandbox sent nothing"
        );
        let pid = id(&second);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &pid), 0);

        let otp = json!({"otp": w.twilio.last_code(&phone)});
        let (status, paid) = m.post(&format!("/v1/payments/{pid}/confirm"), &otp).await;
        assert_eq!(status, 200, "{paid}");
        assert_money(&paid, "succeeded", 990, 0);
        assert_eq!(w.alipay.call_count("alipay.trade.pay", &pid), 1);
    });
}

#[test]
fn an_sms_otp_code_twilio_refuses_fails_the_payment_and_moves_no_money() {
    // Proves an sms_otp payment's code goes by Twilio and completes the payment, and a
    // number Twilio refuses (21211) fails the payment as otp_delivery_failed with
    // nothing captured, the payer's number in no error.
    run_world(async |w| {
        let m = merchant(w).await;
        let phone = unique_phone();
        let body = request("sandbox", 1500, json!({"type": "sms_otp", "phone": phone}));
        let p = create(&m, &body).await;
        assert_eq!(p["next_action"]["type"], "enter_otp", "{p}");
        let otp = json!({"otp": w.twilio.last_code(&phone)});
        let path = format!("/v1/payments/{}/confirm", id(&p));
        let (status, paid) = m.post(&path, &otp).await;
        assert_eq!(status, 200, "{paid}");
        assert_money(&paid, "succeeded", 1500, 0);

        let invalid = spinpay_tests::sim::twilio::INVALID_NUMBER;
        let body = request(
            "sandbox",
            1500,
            json!({"type": "sms_otp", "phone": invalid}),
        );
        let failed = create(&m, &body).await;
        assert_money(&failed, "failed", 0, 0);
        assert_eq!(failed["failure"]["code"], "otp_delivery_failed", "{failed}");
        assert!(!failed.to_string().contains("5550001"), "{failed}");
        assert!(w.twilio.sent_to(invalid).is_empty());
        assert_eq!(*w.twilio.unauthorized.lock().unwrap(), 0);
    });
}

#[test]
fn an_sms_provider_that_cannot_send_refuses_sms_otp_payments_up_front() {
    // Proves sms_provider=twilio without an auth token, or with a sender left at the
    // deployment template's placeholder, or an unknown provider, refuses an sms_otp
    // payment as 503 not_configured naming the variable, storing nothing, while payments
    // that need no code still go through.
    spinpay_tests::run(async |_shared| {
        let twilio = spinpay_tests::sim::twilio::TwilioSim::start().await;
        let mut broken = twilio.app_variables();
        broken.remove("twilio_auth_token");
        let mut placeholder = twilio.app_variables();
        placeholder.insert("twilio_from".into(), "REPLACE_ME_twilio_from".into());
        let mut unknown = twilio.app_variables();
        unknown.insert("sms_provider".into(), "carrier-pigeon".into());
        for (vars, variable) in [
            (broken, "twilio_auth_token"),
            (placeholder, "twilio_from"),
            (unknown, "sms_provider"),
        ] {
            let app = spinpay_tests::TestApp::start(vars).await;
            let m = app.new_merchant().await;
            let body = request(
                "sandbox",
                1500,
                json!({"type": "sms_otp",
                "phone": unique_phone()}),
            );
            let r = m.create_payment(&body).await;
            assert_error(&r, 503, "not_configured");
            let message = r.1["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains(variable), "{message}");
            assert_eq!(m.count_payments().await, 0);
            let ok = create(&m, &request("sandbox", 1500, code(""))).await;
            assert_money(&ok, "succeeded", 1500, 0);
            app.shutdown().await;
        }
        assert!(twilio.sent.lock().unwrap().is_empty());
    });
}
