//! Merchant notifications through the real components on spinpay-host: events delivered
//! to a local receiver (127.0.0.1) by the due-delivery sweep, retried on schedule until
//! it answers 2xx, signed so a merchant's own verifier accepts them, redelivery, secret
//! rotation, and refusals.
//!
//! The harness sets `notify_outbound_hosts = "http://127.0.0.1:*"`, so the notify
//! component reaches only loopback receivers. The sweep is called per merchant with an
//! admin-only `now_ms` to move the retry schedule forward without sleeping.

use hmac::Mac as _;
use serde_json::{Value, json};
use spinpay_tests::receiver::{AnswerBody, Receiver};
use spinpay_tests::{
    ADMIN_TOKEN, Merchant, POLL_INTERVAL, Reply, TestApp, assert_error, assert_error_param,
    manifest_path, now_unix_s, payment_request, qr_customer, queue_slot_naming, run, runtime,
    sha256_hex, shift_record_time,
};
use std::collections::BTreeMap;

/// How far a merchant's verifier lets the signature timestamp drift.
const TOLERANCE_S: i64 = 300;
/// The first retry delay, in ms (docs/notifications.md).
const FIRST_RETRY_MS: i64 = 15_000;
/// The second retry delay, in ms.
const SECOND_RETRY_MS: i64 = 60_000;

fn now_ms() -> i64 {
    now_unix_s() * 1000
}

/// A schedule time a few seconds ahead of the wall clock, to the millisecond. The app
/// runs a sweep at the later of `now_ms` and its own clock, so a schedule built on this
/// is the one the sweeps use however long a request takes; one built on the wall clock
/// (truncated to the second, or just before a slow request) would let the app's clock
/// overtake it and shift every retry time after it.
fn schedule_origin_ms() -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(wall.as_millis()).expect("ms fit i64") + 5_000
}

/// A merchant whose notify URL is `receiver`.
async fn merchant_notified_at<'a>(app: &'a TestApp, receiver: &Receiver) -> Merchant<'a> {
    let m = app.new_merchant().await;
    let (status, v) = m
        .post("/v1/account", &json!({"notify_url": receiver.url()}))
        .await;
    assert_eq!(status, 200, "{v}");
    m
}

/// `POST /v1/admin/notifications/sweep` for one merchant at schedule time `now_ms`.
async fn sweep(app: &TestApp, merchant_id: &str, now_ms: i64) -> Value {
    let body = json!({"merchant_id": merchant_id, "now_ms": now_ms});
    let (status, v) = app
        .post(
            "/v1/admin/notifications/sweep",
            Some(ADMIN_TOKEN),
            None,
            &body,
        )
        .await;
    assert_eq!(status, 200, "sweep: {v}");
    assert_eq!(v["object"], "notification_sweep", "{v}");
    v
}

/// Creates a CNY 12.50 qr_customer payment for `m`, asserting 200.
async fn pay(m: &Merchant<'_>) -> Value {
    m.create_payment_ok(&payment_request(1250, qr_customer()))
        .await
}

/// `POST /v1/events/{id}/redeliver` with `body`.
async fn redeliver(m: &Merchant<'_>, id: &str, body: &Value) -> Reply {
    m.post(&format!("/v1/events/{id}/redeliver"), body).await
}

/// Asserts a sweep report's attempted and delivered counts.
fn assert_swept(report: &Value, attempted: u64, delivered: u64) {
    assert_eq!(
        (report["attempted"].as_u64(), report["delivered"].as_u64()),
        (Some(attempted), Some(delivered))
    );
}

/// The merchant's event ids, oldest first.
async fn event_ids(m: &Merchant<'_>) -> Vec<String> {
    let (status, list) = m.get("/v1/events?limit=100").await;
    assert_eq!(status, 200, "{list}");
    let mut ids: Vec<String> = list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    ids
}

/// A merchant's verifier, written from docs/notifications.md: parse `t` and every `v1`,
/// check the timestamp is recent, recompute HMAC-SHA256(secret, "t.body") and compare
/// in constant time with each `v1`.
fn verify(header: &str, body: &[u8], secret: &str) -> Result<(), &'static str> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| "v1 is not hex")?),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if now_unix_s().abs_diff(t) > TOLERANCE_S.unsigned_abs() {
        return Err("stale");
    }
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    for sig in sigs {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&signed);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no matching signature")
}

#[test]
fn events_reach_a_failing_receiver_exactly_once_after_retries_with_valid_signatures() {
    // Proves a receiver failing its first 3 POSTs gets both events of a payment after
    // sweeps at +0, +15 s and +75 s (none before their time), each verified and, deduped
    // by id, exactly the merchant's event log; the delivery state is on GET event.
    run(|app| async move {
        let receiver = Receiver::start(3).await;
        let m = merchant_notified_at(app, &receiver).await;
        let p = pay(&m).await;
        assert_eq!(p["status"], "succeeded", "{p}");
        let ids = event_ids(&m).await;
        assert_eq!(
            ids.len(),
            2,
            "payment.created and payment.succeeded: {ids:?}"
        );

        let t0 = schedule_origin_ms();
        let first = sweep(app, &m.id, t0).await;
        assert_swept(&first, 2, 0);
        let early = sweep(app, &m.id, t0 + FIRST_RETRY_MS - 2_000).await;
        assert_eq!(early["attempted"], 0, "no retry before 15 s: {early}");
        let second = sweep(app, &m.id, t0 + FIRST_RETRY_MS + 1_000).await;
        assert_swept(&second, 2, 1);
        let t2 = t0 + FIRST_RETRY_MS + SECOND_RETRY_MS + 2_000;
        let third = sweep(app, &m.id, t2).await;
        assert_swept(&third, 1, 1);
        let idle = sweep(app, &m.id, t2 + 86_400_000).await;
        assert_eq!(idle["attempted"], 0, "nothing left: {idle}");

        let received = receiver.received();
        assert_eq!(received.len(), 5, "3 failures + 2 deliveries");
        assert_eq!(receiver.delivered_event_ids().len(), 2);
        let mut delivered = receiver.delivered_event_ids();
        delivered.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(delivered, expected, "exactly the event log, once each");
        for r in &received {
            let sig = r.header("spinpay-signature").expect("signed");
            assert_eq!(verify(sig, &r.body, &m.webhook_secret), Ok(()), "{sig}");
            assert_eq!(
                verify(sig, &r.body, "whsec_wrong"),
                Err("no matching signature")
            );
            // Framed by length, not chunked: receivers that read Content-Length bytes (or
            // refuse chunked requests) get the whole signed body.
            let length = r.body.len().to_string();
            assert_eq!(r.header("content-length"), Some(length.as_str()));
            assert_eq!(r.header("transfer-encoding"), None);
            let event = r.json();
            assert_eq!(event["object"], "event");
            assert_eq!(r.header("spinpay-event-id"), event["id"].as_str());
            assert_eq!(event["data"]["id"], p["id"], "{event}");
        }
        let (status, e) = m.get(&format!("/v1/events/{}", ids[0])).await;
        assert_eq!(status, 200, "{e}");
        let d = &e["delivery"];
        assert_eq!(d["status"], "delivered", "{e}");
        assert!(d["attempts"].as_u64().is_some_and(|a| a >= 2), "{e}");
        assert!(d["delivered_at_ms"].is_i64(), "{e}");
        assert_eq!(d["next_attempt_at_ms"], Value::Null);
    });
}

#[test]
fn a_2xx_answer_is_a_delivery_whatever_body_follows_it() {
    // Proves only the status of a merchant's answer counts: a 200 with a 100 KiB body and
    // a 200 whose body never ends (it would outlast the 5 s deadline) are each delivered
    // at the first attempt, every event once, and none is scheduled again.
    run(|app| async move {
        for answer in [AnswerBody::Large(100 * 1024), AnswerBody::Endless] {
            let receiver = Receiver::answering(0, answer).await;
            let m = merchant_notified_at(app, &receiver).await;
            pay(&m).await;
            let ids = event_ids(&m).await;
            assert_eq!(ids.len(), 2, "{answer:?}: {ids:?}");
            let report = sweep(app, &m.id, schedule_origin_ms()).await;
            assert_swept(&report, 2, 2);
            assert_eq!(report["retry_scheduled"], 0, "{answer:?}: {report}");
            assert_eq!(receiver.received().len(), 2, "{answer:?}");
            let mut delivered = receiver.delivered_event_ids();
            delivered.sort();
            let mut expected = ids.clone();
            expected.sort();
            assert_eq!(delivered, expected, "{answer:?}");
            for id in &ids {
                let (status, e) = m.get(&format!("/v1/events/{id}")).await;
                assert_eq!(status, 200, "{e}");
                assert_eq!(e["delivery"]["status"], "delivered", "{answer:?}: {e}");
                assert_eq!(e["delivery"]["attempts"], 1, "{answer:?}: {e}");
            }
        }
    });
}

#[test]
fn rotation_signs_with_both_secrets_during_the_grace_period_and_redeliver_sends_again() {
    // Proves rotate returns a new secret; a redelivery then carries two v1 values (the
    // old and the new secret each verify it alone); redeliver answers the delivery.
    run(|app| async move {
        let receiver = Receiver::start(0).await;
        let m = merchant_notified_at(app, &receiver).await;
        pay(&m).await;
        sweep(app, &m.id, now_ms()).await;
        let before = receiver.received().len();
        assert_eq!(before, 2);
        let (status, rotated) = m
            .post(
                "/v1/account/webhook-secret/rotate",
                &json!({"grace_period_s": 3600}),
            )
            .await;
        assert_eq!(status, 200, "{rotated}");
        let new_secret = rotated["webhook_secret"].as_str().unwrap().to_string();
        assert!(new_secret.starts_with("whsec_") && new_secret != m.webhook_secret);
        assert!(
            rotated["previous_secret_expires_at_ms"].is_i64(),
            "{rotated}"
        );

        let id = &event_ids(&m).await[0];
        let (status, d) = redeliver(&m, id, &json!({})).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(
            (d["object"].as_str(), d["status"].as_str()),
            (Some("event_delivery"), Some("delivered"))
        );
        let received = receiver.received();
        assert_eq!(received.len(), before + 1, "redelivered at once");
        let r = received.last().unwrap();
        assert_eq!(
            r.json()["id"].as_str(),
            Some(id.as_str()),
            "the same event id (dedup)"
        );
        let sig = r.header("spinpay-signature").unwrap();
        assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
        assert_eq!(verify(sig, &r.body, &m.webhook_secret), Ok(()));
        assert_eq!(verify(sig, &r.body, &new_secret), Ok(()));
        assert_eq!(
            receiver.delivered_event_ids().len(),
            2,
            "dedup by id: still 2 events"
        );
    });
}

/// The scheduled admin calls: the notification sweep and reconciliation (served by the
/// query component), which take the same body.
const SCHEDULED: [&str; 2] = ["/v1/admin/notifications/sweep", "/v1/admin/reconcile"];

#[test]
fn the_scheduled_calls_refuse_callers_without_the_admin_token() {
    // Proves no token (401 authentication_required), a wrong token and a merchant's secret
    // key (401 admin_token_invalid) are all refused by the sweep and by reconciliation,
    // and that both take POST only.
    run(|app| async move {
        let m = app.new_merchant().await;
        for path in SCHEDULED {
            let none = app.post(path, None, None, &json!({})).await;
            assert_error(&none, 401, "authentication_required");
            let wrong = app
                .post(path, Some("not-the-token"), None, &json!({}))
                .await;
            assert_error(&wrong, 401, "admin_token_invalid");
            let merchant = app.post(path, Some(&m.secret_key), None, &json!({})).await;
            assert_error(&merchant, 401, "admin_token_invalid");
            let get = app.get(path, Some(ADMIN_TOKEN)).await;
            assert_error(&get, 405, "method_not_allowed");
        }
        let (status, v) = app
            .post(SCHEDULED[1], Some(ADMIN_TOKEN), None, &json!({}))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "reconciliation", "{v}");
    });
}

#[test]
fn bad_inputs_are_refused_naming_the_field_and_change_nothing() {
    // Proves sweep and reconciliation limit/now_ms/merchant_id/unknown fields, rotation
    // grace, redelivery without notify_url or of an unknown event are 4xx naming the
    // field, and the refused rotation left the old secret signing alone (both events of a
    // payment then delivered, each with one signature, by that secret).
    run(|app| async move {
        for path in SCHEDULED {
            for (body, code, param) in [
                (json!({"limit": 0}), "parameter_invalid", "limit"),
                (json!({"limit": 101}), "parameter_invalid", "limit"),
                (json!({"now_ms": 5}), "parameter_invalid", "now_ms"),
                (
                    json!({"merchant_id": "mch_nope"}),
                    "parameter_invalid",
                    "merchant_id",
                ),
                (json!({"every": 1}), "unknown_field", "every"),
            ] {
                let refused = app.post(path, Some(ADMIN_TOKEN), None, &body).await;
                assert_error_param(&refused, 400, code, param);
            }
        }

        let receiver = Receiver::start(0).await;
        let m = merchant_notified_at(app, &receiver).await;
        let rotate = "/v1/account/webhook-secret/rotate";
        let bad = m.post(rotate, &json!({"grace_period_s": -1})).await;
        assert_error_param(&bad, 400, "parameter_invalid", "grace_period_s");
        let bad = m.post(rotate, &json!({"grace_period_s": "1h"})).await;
        assert_error_param(&bad, 400, "parameter_invalid", "grace_period_s");
        pay(&m).await;
        assert_swept(&sweep(app, &m.id, now_ms()).await, 2, 2);
        assert_eq!(receiver.received().len(), 2, "both events delivered once");
        for r in receiver.received() {
            let sig = r.header("spinpay-signature").unwrap();
            assert_eq!(sig.matches("v1=").count(), 1, "no rotation happened: {sig}");
            assert_eq!(verify(sig, &r.body, &m.webhook_secret), Ok(()));
        }
        let unknown = format!("/v1/events/evt_{}/redeliver", "a".repeat(26));
        let missing = m.post(&unknown, &json!({})).await;
        assert_error(&missing, 404, "resource_missing");
        let id = &event_ids(&m).await[0];
        let extra = redeliver(&m, id, &json!({"x": 1})).await;
        assert_error_param(&extra, 400, "unknown_field", "x");

        let quiet = app.new_merchant().await;
        pay(&quiet).await;
        let id = &event_ids(&quiet).await[0];
        let none = redeliver(&quiet, id, &json!({})).await;
        assert_error_param(&none, 400, "notify_url_missing", "notify_url");
        let (status, e) = quiet.get(&format!("/v1/events/{id}")).await;
        assert_eq!(
            (status, &e["delivery"]),
            (200, &Value::Null),
            "no delivery created: {e}"
        );
        let other = redeliver(&m, id, &json!({})).await;
        assert_error(&other, 404, "resource_missing");
    });
}

#[test]
fn an_unreachable_notify_url_is_retried_on_schedule_then_given_up_visibly() {
    // Proves a notify URL the app may not reach (https is not allowed in tests, so
    // nothing leaves the machine) fails each attempt with its error on GET event, is
    // retried at +15 s … +24 h, and ends `failed` after 8 attempts; nothing is retried
    // after that.
    run(|app| async move {
        let m = app.new_merchant().await;
        let url = json!({"notify_url": "https://merchant.invalid/hook"});
        assert_eq!(m.post("/v1/account", &url).await.0, 200);
        pay(&m).await;
        let ids = event_ids(&m).await;
        let mut at = schedule_origin_ms();
        let delays = [
            0, 15_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
        ];
        for (n, delay) in delays.iter().enumerate() {
            at += delay + 1_000;
            let r = sweep(app, &m.id, at).await;
            assert_eq!(
                r["attempted"].as_u64(),
                Some(ids.len() as u64),
                "attempt {}: {r}",
                n + 1
            );
            let (_, e) = m.get(&format!("/v1/events/{}", ids[0])).await;
            let d = &e["delivery"];
            assert_eq!(d["attempts"].as_u64(), Some(n as u64 + 1), "{e}");
            let error = d["last_error"].as_str().unwrap_or_default();
            assert!(error.contains("HttpRequestDenied"), "{e}");
            if n + 1 < delays.len() {
                assert_eq!(d["status"], "pending", "{e}");
                let next = d["next_attempt_at_ms"].as_i64().unwrap();
                assert_eq!(next, at + delays[n + 1], "the next retry time: {e}");
            } else {
                assert_eq!(
                    (&d["status"], &d["next_attempt_at_ms"]),
                    (&json!("failed"), &Value::Null)
                );
                assert_eq!(r["failed"].as_u64(), Some(ids.len() as u64), "{r}");
            }
        }
        let after = sweep(app, &m.id, at + 7 * 86_400_000).await;
        assert_eq!(after["attempted"], 0, "given up: {after}");
    });
}

#[test]
fn a_notify_url_in_a_blocked_network_is_refused_at_connect_time_and_retried_visibly() {
    // Proves the production posture (`block_networks = ["private"]`): a notify URL the
    // allow-list accepts but whose address is loopback, by IP or by name, is never
    // connected to; each attempt fails with DestinationIpProhibited on GET event and is
    // scheduled again, while the same receiver without the block gets the events.
    runtime().block_on(async {
        let receiver = Receiver::start(0).await;
        let blocked = "[outbound_networking]\nblock_networks = [\"private\"]\n";
        // Any http host: only the block stands between a notify URL and loopback.
        let hosts = "http://*:*".to_string();
        let variables = BTreeMap::from([("notify_outbound_hosts".to_string(), hosts)]);
        let app = TestApp::start_configured(&manifest_path(), variables, blocked).await;
        let by_name = receiver.url().replace("127.0.0.1", "localhost");
        for url in [receiver.url(), by_name] {
            let m = app.new_merchant().await;
            let (status, v) = m.post("/v1/account", &json!({"notify_url": url})).await;
            assert_eq!(status, 200, "{v}");
            pay(&m).await;
            let ids = event_ids(&m).await;
            let at = now_ms();
            let r = sweep(&app, &m.id, at).await;
            assert_swept(&r, ids.len() as u64, 0);
            for id in &ids {
                let (_, e) = m.get(&format!("/v1/events/{id}")).await;
                let d = &e["delivery"];
                assert_eq!(d["status"], "pending", "{e}");
                assert_eq!(d["attempts"], 1, "{e}");
                let last = d["last_attempt_at_ms"].as_i64().unwrap();
                assert!(last >= at, "{e}");
                assert_eq!(
                    d["next_attempt_at_ms"].as_i64(),
                    Some(last + FIRST_RETRY_MS),
                    "{e}"
                );
                let error = d["last_error"].as_str().unwrap_or_default();
                assert!(error.contains("DestinationIpProhibited"), "{url}: {e}");
            }
        }
        assert!(
            receiver.received().is_empty(),
            "a blocked delivery connected"
        );
        app.shutdown().await;

        // Control: the same receiver, allowed the same way, is reached without the block.
        let app = TestApp::start(BTreeMap::new()).await;
        let m = merchant_notified_at(&app, &receiver).await;
        pay(&m).await;
        let ids = event_ids(&m).await;
        let r = sweep(&app, &m.id, now_ms()).await;
        assert_swept(&r, ids.len() as u64, ids.len() as u64);
        assert_eq!(receiver.delivered_event_ids(), ids);
        app.shutdown().await;
    });
}

// ---------------------------------------------------------------- idempotency expiry

/// A day and an hour, in ms: past the 24 h idempotency retention.
const PAST_RETENTION_MS: i64 = 25 * 3_600_000;

#[test]
fn the_sweep_deletes_idempotency_records_once_their_retention_has_passed() {
    // Proves through the real components that the 24 h retention bounds storage: a keyed
    // payment's record (aged by 25 h in the store, with its expiry-queue slot) is deleted
    // by the next sweep, the slot too; a younger key still replays; the expired key then
    // starts a new payment; a forwarded schedule clock expires nothing early.
    spinpay_tests::runtime().block_on(async {
        let app = TestApp::start(Default::default()).await;
        let m = app.new_merchant().await;
        let store = app.store();
        let body = payment_request(1500, qr_customer());
        let (old_key, young_key) = ("expiry-old", "expiry-young");
        let first = m.post_with_key("/v1/payments", Some(old_key), &body).await;
        assert_eq!(first.0, 200, "{}", first.1);
        let young = m
            .post_with_key("/v1/payments", Some(young_key), &body)
            .await;
        assert_eq!(young.0, 200, "{}", young.1);

        // A sweep whose schedule clock runs 30 days ahead deletes nothing.
        let ahead = sweep(&app, &m.id, now_ms() + 30 * 86_400_000).await;
        assert_eq!(ahead["idempotency_keys_expired"], 0, "{ahead}");

        let hash = sha256_hex(old_key);
        let record = format!("mch/{}/idem/{hash}", m.id);
        let slot = queue_slot_naming(
            &*store,
            &format!("mch/{}/seq/exp", m.id),
            |seq| format!("mch/{}/exp/{seq:020}", m.id),
            &hash,
        )
        .await;
        let fields = ["created_at_ms", "first_claimed_at_ms"];
        shift_record_time(&*store, &record, &fields, -PAST_RETENTION_MS).await;
        shift_record_time(&*store, &slot, &["at_ms"], -PAST_RETENTION_MS).await;

        let report = sweep(&app, &m.id, now_ms()).await;
        assert_eq!(report["idempotency_keys_expired"], 1, "{report}");
        assert!(
            store.get(&record).await.unwrap().is_none(),
            "the record is deleted"
        );
        assert!(
            store.get(&slot).await.unwrap().is_none(),
            "the slot is deleted"
        );
        let again = m
            .post_with_key("/v1/payments", Some(young_key), &body)
            .await;
        assert_eq!(again, young, "the younger key replays its answer");
        let renewed = m.post_with_key("/v1/payments", Some(old_key), &body).await;
        assert_eq!(renewed.0, 200, "{}", renewed.1);
        assert_ne!(renewed.1["id"], first.1["id"], "an expired key starts anew");
        let report = sweep(&app, &m.id, now_ms()).await;
        assert_eq!(report["idempotency_keys_expired"], 0, "{report}");
        drop(store);
        app.shutdown().await;
    });
}

#[test]
fn reconciliation_closes_a_qr_code_nobody_paid_at_the_sandbox_a_day_later() {
    // Proves, through the real components, that a merchant-presented QR code nobody pays
    // is handed to reconciliation by the sweep and, once a day old, closed at the sandbox
    // (the customer can no longer pay it) and canceled, with `payment.canceled` in the
    // merchant's events; one paid beside it (the sandbox's notification settled it) is
    // not even re-checked again.
    run(|app| async move {
        let m = app.new_merchant().await;
        let qr = json!({"type": "qr_merchant"});
        let unpaid = m
            .create_payment_ok(&payment_request(1250, qr.clone()))
            .await;
        let paid = m.create_payment_ok(&payment_request(1300, qr)).await;
        for p in [&unpaid, &paid] {
            assert_eq!(p["status"], "requires_customer_action", "{p}");
        }
        let code = |p: &Value| p["next_action"]["qr_payload"].as_str().unwrap().to_string();
        let handed_over_ms = now_ms() + 2 * 60_000;
        let body = json!({"merchant_id": m.id, "now_ms": handed_over_ms});
        let path = "/v1/admin/notifications/sweep";
        let (status, v) = app.post(path, Some(ADMIN_TOKEN), None, &body).await;
        assert_eq!(status, 200, "sweep: {v}");
        let reconcile = |now_ms: i64| {
            let body = json!({"merchant_id": m.id, "now_ms": now_ms});
            async move {
                let path = "/v1/admin/reconcile";
                let (status, v) = app.post(path, Some(ADMIN_TOKEN), None, &body).await;
                assert_eq!(status, 200, "reconcile: {v}");
                v
            }
        };
        let first = reconcile(handed_over_ms + 5 * 60_000).await;
        assert_eq!(
            (&first["rechecked"], &first["still_open"]),
            (&json!(2), &json!(2))
        );
        let paid_now = app.customer_pay(&code(&paid)).await;
        assert_eq!(paid_now.0, 200, "customer pay: {}", paid_now.1);

        let day_later = now_ms() + 25 * 3_600_000;
        let last = reconcile(day_later).await;
        assert_eq!(
            (
                &last["rechecked"],
                &last["settled"],
                &last["closed"],
                &last["given_up"]
            ),
            (&json!(1), &json!(0), &json!(1), &json!(0)),
            "{last}"
        );
        assert_eq!(
            m.payment(unpaid["id"].as_str().unwrap()).await["status"],
            "canceled"
        );
        assert_eq!(
            m.payment(paid["id"].as_str().unwrap()).await["status"],
            "succeeded"
        );
        let late = app.customer_pay(&code(&unpaid)).await;
        assert_ne!(late.0, 200, "a closed code cannot be paid: {}", late.1);
        let (status, list) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{list}");
        let canceled: Vec<&Value> = list["data"]
            .as_array()
            .expect("a list")
            .iter()
            .filter(|e| e["type"] == "payment.canceled")
            .collect();
        assert_eq!(canceled.len(), 1, "{list}");
        assert_eq!(canceled[0]["data"]["id"], unpaid["id"]);
        let again = reconcile(day_later + 3 * 3_600_000).await;
        assert_eq!(again["rechecked"], 0, "nothing queued any more: {again}");
    });
}

#[test]
fn a_qr_code_with_its_own_expiry_is_closed_at_the_first_recheck_past_it() {
    // Proves, through the real components, that `expires_in_seconds` is checked naming
    // the field (a refused value creates nothing), shows as `expires_at_ms`, and that a
    // QR code nobody paid is closed at the sandbox and canceled at the first re-check
    // past that expiry, not a day later, while one with the default expiry (a day) stays
    // queued and payable.
    run(|app| async move {
        let m = app.new_merchant().await;
        let qr = json!({"type": "qr_merchant"});
        let mut short = payment_request(1250, qr.clone());
        for bad in [json!(59), json!(86_401), json!("600"), json!(60.5)] {
            short["expires_in_seconds"] = bad.clone();
            let refused = m.create_payment(&short).await;
            assert_error_param(&refused, 400, "parameter_invalid", "expires_in_seconds");
        }
        assert_eq!(
            m.count_payments().await,
            0,
            "a refused request created nothing"
        );
        short["expires_in_seconds"] = json!(60);
        let short = m.create_payment_ok(&short).await;
        let default = m.create_payment_ok(&payment_request(1300, qr)).await;
        let created = |p: &Value| p["created_at_ms"].as_i64().unwrap();
        assert_eq!(short["expires_at_ms"], created(&short) + 60_000, "{short}");
        assert_eq!(default["expires_at_ms"], created(&default) + 86_400_000);
        let id = |p: &Value| p["id"].as_str().unwrap().to_string();
        assert_eq!(
            m.payment(&id(&short)).await["expires_at_ms"],
            short["expires_at_ms"]
        );

        let handed_over_ms = now_ms() + 2 * 60_000;
        let body = json!({"merchant_id": m.id, "now_ms": handed_over_ms});
        let path = "/v1/admin/notifications/sweep";
        let (status, v) = app.post(path, Some(ADMIN_TOKEN), None, &body).await;
        assert_eq!(status, 200, "sweep: {v}");
        let body = json!({"merchant_id": m.id, "now_ms": handed_over_ms + 5 * 60_000});
        let (status, report) = app
            .post("/v1/admin/reconcile", Some(ADMIN_TOKEN), None, &body)
            .await;
        assert_eq!(status, 200, "reconcile: {report}");
        assert_eq!(
            (
                &report["rechecked"],
                &report["closed"],
                &report["still_open"]
            ),
            (&json!(2), &json!(1), &json!(1)),
            "{report}"
        );
        let closed = m.payment(&id(&short)).await;
        assert_eq!(
            (&closed["status"], &closed["cancellation_reason"]),
            (&json!("canceled"), &json!("expired")),
            "{closed}"
        );
        assert_eq!(
            m.payment(&id(&default)).await["status"],
            "requires_customer_action"
        );
        let code = |p: &Value| p["next_action"]["qr_payload"].as_str().unwrap().to_string();
        let late = app.customer_pay(&code(&short)).await;
        assert_eq!(late.0, 409, "a closed code cannot be paid: {}", late.1);
        let paid = app.customer_pay(&code(&default)).await;
        assert_eq!(paid.0, 200, "the default expiry is a day: {}", paid.1);
    });
}

#[test]
fn a_qr_code_read_past_its_expiry_is_closed_at_once() {
    // Proves, through the real components, that reading a QR code nobody paid
    // (GET /v1/payments/{id}) changes nothing before its expiry and, once its
    // `expires_at_ms` is past, closes it at the sandbox and answers it canceled as
    // expired, with one payment.canceled, without waiting for a reconciliation call. The
    // shortest expiry is a minute: instead of waiting one out, the stored payment is made
    // 61 s older (its expiry then lies a second in the past on the components' clock).
    run(|app| async move {
        let m = app.new_merchant().await;
        let mut req = payment_request(1250, json!({"type": "qr_merchant"}));
        req["expires_in_seconds"] = json!(60);
        let p = m.create_payment_ok(&req).await;
        let id = p["id"].as_str().unwrap();
        let before = m.payment(id).await;
        assert_eq!(before["status"], "requires_customer_action", "{before}");
        assert_eq!(
            m.payment(id).await,
            before,
            "read again before expiry: unchanged"
        );
        let fields = ["created_at_ms", "updated_at_ms", "expires_at_ms"];
        shift_record_time(&*app.store(), &format!("pay/{id}"), &fields, -61_000).await;

        let read = m.payment(id).await;
        assert_eq!(
            (&read["status"], &read["cancellation_reason"]),
            (&json!("canceled"), &json!("expired")),
            "{read}"
        );
        assert_eq!(m.payment(id).await, read, "read again: unchanged");
        let code = p["next_action"]["qr_payload"].as_str().unwrap();
        let late = app.customer_pay(code).await;
        assert_eq!(late.0, 409, "a closed code cannot be paid: {}", late.1);
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        let canceled = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "payment.canceled" && e["data"]["id"] == id)
            .count();
        assert_eq!(canceled, 1, "one payment.canceled: {events}");
    });
}

/// `scripts/scheduler.sh` (what `scripts/run.sh` starts beside a local app) calling `app`
/// with `token` every second; what it prints goes to files, read while it runs. Killed
/// when dropped.
struct Scheduler {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Scheduler {
    fn start(app: &TestApp, token: &str) -> Scheduler {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/scheduler.sh");
        let child = std::process::Command::new("bash")
            .arg(script)
            .env("SPINPAY_URL", app.base_url())
            .env("SPIN_VARIABLE_ADMIN_TOKEN", token)
            .env("SPINPAY_SWEEP_SECONDS", "1")
            .env("SPINPAY_RECONCILE_SECONDS", "1")
            .stdout(file("out"))
            .stderr(file("err"))
            .spawn()
            .expect("running bash scripts/scheduler.sh (needs bash and curl)");
        Scheduler { child, dir }
    }

    /// What it printed so far on stdout (calls that did something) and stderr (failures).
    fn printed(&self) -> (String, String) {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        (read("out"), read("err"))
    }

    /// Polls (every [`POLL_INTERVAL`], up to 30 s: the scheduler calls once a second)
    /// until `done` holds, panicking with what it printed.
    async fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                panic!("the scheduler never {what}: printed {:?}", self.printed());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_local_scheduler_delivers_notifications_nobody_swept_by_hand() {
    // Proves `scripts/scheduler.sh` alone (no test calls the sweep) delivers a payment's
    // events to the merchant's notify URL, signed, each once, also for a payment made
    // while it runs, and reports what it delivered with no failure. An app of its own:
    // the scheduler sweeps every merchant, which would race the shared app's tests.
    runtime().block_on(async {
        let app = TestApp::start(BTreeMap::new()).await;
        let receiver = Receiver::start(0).await;
        let m = merchant_notified_at(&app, &receiver).await;
        let before = pay(&m).await;
        let scheduler = Scheduler::start(&app, ADMIN_TOKEN);
        scheduler
            .wait_until("delivered the first payment's two events", || {
                receiver.delivered_event_ids().len() == 2
            })
            .await;
        let after = pay(&m).await;
        scheduler
            .wait_until("delivered the second payment's events", || {
                receiver.delivered_event_ids().len() == 4
            })
            .await;
        let mut delivered = receiver.delivered_event_ids();
        delivered.sort();
        let mut expected = event_ids(&m).await;
        expected.sort();
        assert_eq!(delivered, expected, "exactly the event log");
        assert_eq!(receiver.received().len(), 4, "each event once");
        for r in receiver.received() {
            let sig = r.header("spinpay-signature").expect("signed");
            assert_eq!(verify(sig, &r.body, &m.webhook_secret), Ok(()), "{sig}");
            let paid = &r.json()["data"]["id"];
            assert!(*paid == before["id"] || *paid == after["id"], "{paid}");
        }
        let (out, err) = scheduler.printed();
        assert_eq!(err, "", "no call failed");
        assert!(
            out.contains("scheduler: sweep {") && out.contains("\"delivered\":"),
            "{out}"
        );
        drop(scheduler);
        app.shutdown().await;
    });
}

#[test]
fn the_local_scheduler_reports_refused_calls_and_keeps_calling() {
    // Proves a scheduler with a wrong admin token says so for both calls, with the app's
    // error code, and keeps calling (a second refused sweep) rather than exiting.
    run(|app| async move {
        let scheduler = Scheduler::start(app, "not-the-token");
        scheduler
            .wait_until(
                "reported two refused sweeps and a refused reconcile",
                || {
                    let (_, err) = scheduler.printed();
                    err.matches("scheduler: sweep failed").count() >= 2
                        && err.contains("scheduler: reconcile failed")
                },
            )
            .await;
        let (out, err) = scheduler.printed();
        assert_eq!(out, "", "nothing was done");
        for line in err.lines() {
            assert!(line.contains("admin_token_invalid"), "{line}");
        }
    });
}

#[test]
fn clearing_the_notify_url_pauses_queued_deliveries_without_spending_their_attempts() {
    // Proves a merchant that clears its notify URL while deliveries are queued loses
    // none of them: sweeps over the next day make no attempt (`attempted` 0, each
    // delivery still pending with 0 attempts) instead of failing them attempt by attempt
    // towards `failed`, and once a URL is set again the next sweep delivers them.
    run(|app| async move {
        let receiver = Receiver::start(0).await;
        let m = merchant_notified_at(app, &receiver).await;
        pay(&m).await;
        let (status, v) = m.post("/v1/account", &json!({"notify_url": ""})).await;
        assert_eq!(status, 200, "{v}");
        for later_ms in [0, 3_600_000, 86_400_000] {
            let report = sweep(app, &m.id, now_ms() + later_ms).await;
            assert_eq!(report["attempted"], 0, "{report}");
        }
        assert!(receiver.received().is_empty());
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        let ids: Vec<String> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 2, "{events}");
        for id in &ids {
            let (status, e) = m.get(&format!("/v1/events/{id}")).await;
            assert_eq!(status, 200, "{e}");
            let d = &e["delivery"];
            assert_eq!(
                (&d["status"], &d["attempts"]),
                (&json!("pending"), &json!(0)),
                "{e}"
            );
        }
        let (status, v) = m
            .post("/v1/account", &json!({"notify_url": receiver.url()}))
            .await;
        assert_eq!(status, 200, "{v}");
        let report = sweep(app, &m.id, now_ms() + 86_400_000 + 1).await;
        assert_eq!(report["delivered"], 2, "{report}");
        assert_eq!(receiver.received().len(), 2);
    });
}
