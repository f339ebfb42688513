//! The merchant API's contract through the real components: onboarding and
//! authentication, idempotency, order ids, lookups and cursor lists, the event log,
//! merchant isolation, malformed input, masking of secrets, and risk control.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use spinpay_tests::contention::Contention;
use spinpay_tests::{
    ADMIN_TOKEN, Merchant, POLL_INTERVAL, TestApp, assert_error, assert_error_param,
    manual_payment_request, payment_request, qr_customer, run, runtime, unique, unique_phone,
    unique_token,
};

// ---------------------------------------------------------------- onboarding and keys

#[test]
fn onboarding_returns_the_merchant_with_its_secrets_once() {
    // Proves POST /v1/admin/merchants with the admin token returns mch_/sk_/whsec_ credentials.
    run(|app| async move {
        let body =
            json!({"name": "Corner Coffee", "notify_url": "https://merchant.example/notify"});
        let (status, v) = app
            .post(
                "/v1/admin/merchants",
                Some(ADMIN_TOKEN),
                Some(&unique("onboard")),
                &body,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "merchant", "{v}");
        assert_eq!(v["name"], "Corner Coffee", "{v}");
        assert!(
            v["id"].as_str().is_some_and(|s| s.starts_with("mch_")),
            "{v}"
        );
        assert!(
            v["secret_key"]
                .as_str()
                .is_some_and(|s| s.starts_with("sk_")),
            "{v}"
        );
        assert!(
            v["webhook_secret"]
                .as_str()
                .is_some_and(|s| s.starts_with("whsec_")),
            "{v}"
        );
        let key = v["secret_key"].as_str().unwrap();
        let (status, list) = app.get("/v1/payments", Some(key)).await;
        assert_eq!(status, 200, "the new key must work at once: {list}");
        assert_eq!(list["data"], json!([]), "{list}");
    });
}

#[test]
fn a_merchant_reads_and_changes_its_own_settings_and_bad_values_change_nothing() {
    // Proves GET/POST /v1/account: settings shown without keys, updated, and a bad URL or an
    // unknown field refused naming the field, with no change.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (status, before) = m.get("/v1/account").await;
        assert_eq!(status, 200, "{before}");
        assert_eq!(before["object"], "merchant", "{before}");
        assert!(
            before.get("secret_key").is_none(),
            "keys are never shown again: {before}"
        );
        let update =
            json!({"notify_url": "https://merchant.example/hook", "default_capture": "manual"});
        let (status, after) = m.post("/v1/account", &update).await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(
            after["notify_url"], "https://merchant.example/hook",
            "{after}"
        );
        assert_eq!(after["default_capture"], "manual", "{after}");
        let bad = m
            .post("/v1/account", &json!({"notify_url": "not a url"}))
            .await;
        assert_error_param(&bad, 400, "parameter_invalid", "notify_url");
        // Names the app serves itself would reach its own components, not the merchant.
        for inside in ["https://self/v1/account", "https://admin.spin.internal/x"] {
            let refused = m.post("/v1/account", &json!({"notify_url": inside})).await;
            assert_error_param(&refused, 400, "parameter_invalid", "notify_url");
        }
        let unknown = m.post("/v1/account", &json!({"secret_key": "x"})).await;
        assert_error_param(&unknown, 400, "unknown_field", "secret_key");
        let (_, now) = m.get("/v1/account").await;
        assert_eq!(now, after, "rejected updates changed nothing");
        // The new default applies to payments that do not say how to capture.
        let p = m
            .create_payment_ok(&payment_request(1500, qr_customer()))
            .await;
        assert_eq!(p["capture"], "manual", "{p}");
        assert_eq!(p["status"], "requires_capture", "{p}");
        let anonymous = app.get("/v1/account", None).await;
        assert_error(&anonymous, 401, "authentication_required");
    });
}

#[test]
fn a_merchant_rotates_its_secret_key_and_the_old_one_works_only_for_the_grace_period() {
    // Proves POST /v1/account/secret-key/rotate through the components: a bad grace period
    // is refused naming it and rotates nothing; the new key is shown once (a replay under
    // the same Idempotency-Key answers the same key) and works at once; the old key still
    // works during the grace period, but cannot change the account (rotations, settings)
    // except by replaying its own rotation; a second rotation stops the key two rotations
    // old.
    run(|app| async move {
        let m = app.new_merchant().await;
        let rotate = "/v1/account/secret-key/rotate";
        for bad in [json!(299), json!(604_801), json!("600")] {
            let r = m.post(rotate, &json!({"grace_period_s": bad})).await;
            assert_error_param(&r, 400, "parameter_invalid", "grace_period_s");
        }
        let key = unique("idem");
        let body = json!({"grace_period_s": 600});
        let (status, first) = m.post_with_key(rotate, Some(&key), &body).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["object"], "secret_key", "{first}");
        let replay = m.post_with_key(rotate, Some(&key), &body).await;
        assert_eq!(replay, (200, first.clone()), "the same key again");
        let new_key = first["secret_key"].as_str().unwrap().to_string();
        let as_key = async |k: &str| app.get("/v1/account", Some(k)).await;
        let (status, account) = as_key(&new_key).await;
        assert_eq!((status, &account["id"]), (200, &json!(m.id)), "{account}");
        assert_eq!(
            as_key(&m.secret_key).await.0,
            200,
            "old key, in its grace period"
        );
        // The rotated-out key (it may have leaked) cannot change the account: no new
        // rotation of either secret, no settings; it may still replay its own rotation.
        let old = Some(m.secret_key.as_str());
        let webhook = "/v1/account/webhook-secret/rotate";
        for (path, body) in [
            (rotate, json!({})),
            (webhook, json!({})),
            (
                "/v1/account",
                json!({"notify_url": "https://evil.example/hook"}),
            ),
        ] {
            let refused = app.post(path, old, Some(&unique("idem")), &body).await;
            assert_error(&refused, 401, "api_key_retiring");
            let unkeyed = app.post(path, old, None, &body).await;
            assert_error(&unkeyed, 401, "api_key_retiring");
        }
        // Nor loosen its risk rules, which would outlive the key.
        let (status, mut rules) = app.get("/v1/risk/rules", Some(&new_key)).await;
        assert_eq!(status, 200, "{rules}");
        let editable = rules.as_object_mut().unwrap();
        editable.remove("object");
        editable.remove("version");
        let loosened = app.put("/v1/risk/rules", &m.secret_key, &rules).await;
        assert_error(&loosened, 401, "api_key_retiring");
        // Nor have the current key's webhook-secret rotation replayed to it.
        let rotated_by_new = unique("idem");
        let made = app
            .post(webhook, Some(&new_key), Some(&rotated_by_new), &json!({}))
            .await;
        assert_eq!(made.0, 200, "{}", made.1);
        let replayed = app
            .post(webhook, old, Some(&rotated_by_new), &json!({}))
            .await;
        assert_error(&replayed, 401, "api_key_retiring");
        let (_, account) = as_key(&new_key).await;
        assert_ne!(
            account["notify_url"], "https://evil.example/hook",
            "{account}"
        );
        let replay_old = app.post(rotate, old, Some(&key), &body).await;
        assert_eq!(
            replay_old,
            (200, first.clone()),
            "its own rotation, replayed"
        );
        assert_eq!(as_key(&new_key).await.0, 200, "still the current key");

        let rotated_with_new = app
            .post(rotate, Some(&new_key), Some(&unique("idem")), &json!({}))
            .await;
        assert_eq!(rotated_with_new.0, 200, "{}", rotated_with_new.1);
        let newest = rotated_with_new.1["secret_key"].as_str().unwrap();
        assert_eq!(as_key(newest).await.0, 200);
        assert_eq!(as_key(&new_key).await.0, 200, "one rotation old");
        assert_error(&as_key(&m.secret_key).await, 401, "api_key_invalid");
    });
}

#[test]
fn onboarding_without_the_admin_token_is_refused_with_401() {
    // Proves missing, wrong and merchant-key credentials on the admin API all answer 401.
    run(|app| async move {
        let body = json!({"name": "Intruder"});
        let missing = app.post("/v1/admin/merchants", None, None, &body).await;
        assert_error(&missing, 401, "authentication_required");
        let wrong = app
            .post(
                "/v1/admin/merchants",
                Some("not-the-admin-token"),
                None,
                &body,
            )
            .await;
        assert_error(&wrong, 401, "admin_token_invalid");
        let m = app.new_merchant().await;
        let merchant_key = app
            .post("/v1/admin/merchants", Some(&m.secret_key), None, &body)
            .await;
        assert_error(&merchant_key, 401, "admin_token_invalid");
    });
}

#[test]
fn onboarding_with_an_invalid_body_names_the_field() {
    // Proves a missing name and a bad notify_url are 400s naming their field.
    run(|app| async move {
        let missing = app
            .post("/v1/admin/merchants", Some(ADMIN_TOKEN), None, &json!({}))
            .await;
        assert_error_param(&missing, 400, "parameter_missing", "name");
        let bad_url = json!({"name": "x", "notify_url": "ftp://nope"});
        let r = app
            .post("/v1/admin/merchants", Some(ADMIN_TOKEN), None, &bad_url)
            .await;
        assert_error_param(&r, 400, "parameter_invalid", "notify_url");
    });
}

#[test]
fn the_merchant_api_requires_a_valid_secret_key() {
    // Proves no key → authentication_required and an unknown key → api_key_invalid (401).
    run(|app| async move {
        let body = payment_request(1000, qr_customer());
        assert_error(
            &app.get("/v1/payments", None).await,
            401,
            "authentication_required",
        );
        assert_error(
            &app.post("/v1/payments", None, None, &body).await,
            401,
            "authentication_required",
        );
        let bogus = format!("sk_{}", "a".repeat(52));
        assert_error(
            &app.get("/v1/payments", Some(&bogus)).await,
            401,
            "api_key_invalid",
        );
        assert_error(
            &app.post("/v1/payments", Some(&bogus), None, &body).await,
            401,
            "api_key_invalid",
        );
        assert_error(
            &app.get("/v1/events", Some("garbage")).await,
            401,
            "api_key_invalid",
        );
    });
}

// ---------------------------------------------------------------- idempotency and order ids

#[test]
fn the_same_idempotency_key_and_body_replays_the_response_and_creates_one_payment() {
    // Proves a replayed POST answers byte-for-byte the same payment and the list holds one.
    run(|app| async move {
        let m = app.new_merchant().await;
        let key = unique("idem");
        let body = payment_request(1500, qr_customer());
        let first = m.post_with_key("/v1/payments", Some(&key), &body).await;
        assert_eq!(first.0, 200, "{}", first.1);
        let second = m.post_with_key("/v1/payments", Some(&key), &body).await;
        assert_eq!(second, first, "the replay differs from the first answer");
        assert_eq!(m.count_payments().await, 1);
    });
}

#[test]
fn the_same_idempotency_key_with_another_body_is_rejected_with_409() {
    // Proves key reuse with a different body → 409 idempotency_key_reused, nothing created.
    run(|app| async move {
        let m = app.new_merchant().await;
        let key = unique("idem");
        let first = m
            .post_with_key(
                "/v1/payments",
                Some(&key),
                &payment_request(1500, qr_customer()),
            )
            .await;
        assert_eq!(first.0, 200, "{}", first.1);
        let other = m
            .post_with_key(
                "/v1/payments",
                Some(&key),
                &payment_request(1600, qr_customer()),
            )
            .await;
        assert_error_param(&other, 409, "idempotency_key_reused", "Idempotency-Key");
        assert_eq!(m.count_payments().await, 1);
    });
}

#[test]
fn a_request_refused_as_malformed_leaves_its_idempotency_key_free_for_the_corrected_one() {
    // Proves a 400 for a malformed body is not stored as the key's result: the corrected
    // request under the same key runs (one payment, one refund), and a replay of it then
    // answers that result; a refused refund on the payment leaves its key free the same
    // way, while a refusal that came from running the request (more than was captured) is
    // the key's answer for good.
    run(|app| async move {
        let m = app.new_merchant().await;
        let key = unique("idem");
        let zero = with(
            payment_request(1500, qr_customer()),
            "/amount_minor",
            json!(0),
        );
        let refused = m.post_with_key("/v1/payments", Some(&key), &zero).await;
        assert_error_param(&refused, 400, "amount_invalid", "amount_minor");
        let body = payment_request(1500, qr_customer());
        let (status, paid) = m.post_with_key("/v1/payments", Some(&key), &body).await;
        assert_eq!(status, 200, "the corrected request runs: {paid}");
        let again = m.post_with_key("/v1/payments", Some(&key), &body).await;
        assert_eq!(again, (200, paid.clone()), "and is replayed");
        assert_eq!(m.count_payments().await, 1);

        let refunds = format!("/v1/payments/{}/refunds", paid["id"].as_str().unwrap());
        let key = unique("idem");
        let bad = json!({"amount_minor": 500, "reason": 7});
        let refused = m.post_with_key(&refunds, Some(&key), &bad).await;
        assert_eq!(refused.0, 400, "{}", refused.1);
        let (status, refund) = m
            .post_with_key(&refunds, Some(&key), &json!({"amount_minor": 500}))
            .await;
        assert_eq!(status, 200, "the corrected refund runs: {refund}");

        let key = unique("idem");
        let too_much = json!({"amount_minor": 1001});
        let over = m.post_with_key(&refunds, Some(&key), &too_much).await;
        assert_error_param(&over, 400, "refund_exceeds_captured", "amount_minor");
        let replayed = m.post_with_key(&refunds, Some(&key), &too_much).await;
        assert_eq!(replayed, over, "an outcome of running the request is kept");
        let other = json!({"amount_minor": 100});
        let reused = m.post_with_key(&refunds, Some(&key), &other).await;
        assert_error_param(&reused, 409, "idempotency_key_reused", "Idempotency-Key");
        let p = m.payment(paid["id"].as_str().unwrap()).await;
        assert_eq!(p["refunded_minor"], 500, "{p}");
    });
}

/// Requests racing under one Idempotency-Key.
const SAME_KEY_REQUESTS: usize = 8;
/// How long the other requests may take to be answered while the first is in flight.
const OTHERS_ANSWERED_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn concurrent_requests_with_one_idempotency_key_create_one_payment() {
    // Proves 8 racing creates under one key, overlapping for certain: the request that
    // claims the key is held at the sandbox channel (its records wait in the store; the
    // claimer gives the channel its 2.5 s deadline, far longer than the others take),
    // and meanwhile the other 7 are answered, each 409 idempotency_key_in_use; then it
    // answers the one payment, a replay answers the same, and exactly one payment exists.
    let contention = Contention::new();
    runtime().block_on(async {
        let app = TestApp::start_wrapped(contention.wrap()).await;
        let m = app.new_merchant().await;
        let key = unique("idem-race");
        let body = payment_request(1500, qr_customer());
        contention.close("sbx:");
        let mut racing: FuturesUnordered<_> = (0..SAME_KEY_REQUESTS)
            .map(|_| m.post_with_key("/v1/payments", Some(&key), &body))
            .collect();
        let mut refused = Vec::new();
        while refused.len() < SAME_KEY_REQUESTS - 1 {
            match tokio::time::timeout(OTHERS_ANSWERED_WITHIN, racing.next()).await {
                Ok(Some(reply)) => refused.push(reply),
                Ok(None) | Err(_) => break,
            }
        }
        // And the request that claimed the key is waiting on the channel.
        let waited = tokio::time::timeout(OTHERS_ANSWERED_WITHIN, async {
            while contention.report().valve_held == 0 {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        })
        .await;
        contention.open();
        let mut rest = Vec::new();
        while let Some(reply) = racing.next().await {
            rest.push(reply);
        }
        drop(racing);
        assert_eq!(
            refused.len(),
            SAME_KEY_REQUESTS - 1,
            "while one request was in flight only {} others were answered: {refused:?}, \
             then {rest:?}",
            refused.len()
        );
        for r in &refused {
            assert_error_param(r, 409, "idempotency_key_in_use", "Idempotency-Key");
        }
        assert!(
            waited.is_ok(),
            "the request that claimed the key never reached the channel: {:?}",
            contention.report()
        );
        let [(200, created)] = rest.as_slice() else {
            panic!("the claiming request did not answer 200: {rest:?}");
        };
        assert_eq!(created["object"], "payment", "{created}");
        let replay = m.post_with_key("/v1/payments", Some(&key), &body).await;
        assert_eq!(replay, (200, created.clone()), "the stored answer differs");
        assert_eq!(m.count_payments().await, 1);
        app.shutdown().await;
    });
}

#[test]
fn a_malformed_idempotency_key_is_rejected() {
    // Proves an Idempotency-Key over 255 characters → 400 idempotency_key_invalid.
    run(|app| async move {
        let m = app.new_merchant().await;
        let long = "k".repeat(256);
        let r = m
            .post_with_key(
                "/v1/payments",
                Some(&long),
                &payment_request(1500, qr_customer()),
            )
            .await;
        assert_error_param(&r, 400, "idempotency_key_invalid", "Idempotency-Key");
        assert_eq!(m.count_payments().await, 0);
    });
}

#[test]
fn a_duplicate_merchant_order_id_is_rejected() {
    // Proves merchant_order_id is unique per merchant: the second create is a 409.
    run(|app| async move {
        let m = app.new_merchant().await;
        let order = unique("ORD");
        let mut body = payment_request(1500, qr_customer());
        body["merchant_order_id"] = json!(order);
        let first = m.create_payment_ok(&body).await;
        let dup = m.create_payment(&body).await;
        assert_error_param(
            &dup,
            409,
            "merchant_order_id_duplicate",
            "merchant_order_id",
        );
        assert_eq!(m.count_payments().await, 1);
        assert_eq!(
            m.payment(first["id"].as_str().unwrap()).await["merchant_order_id"],
            order
        );
    });
}

#[test]
fn a_payment_can_be_looked_up_by_its_merchant_order_id() {
    // Proves ?merchant_order_id= returns exactly that payment, and an unknown id an empty list.
    run(|app| async move {
        let m = app.new_merchant().await;
        let order = unique("ORD");
        let mut body = payment_request(1500, qr_customer());
        body["merchant_order_id"] = json!(order);
        let created = m.create_payment_ok(&body).await;
        m.create_payment_ok(&payment_request(1700, qr_customer()))
            .await;
        let found = m.list_payments(&format!("merchant_order_id={order}")).await;
        let data = found["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{found}");
        assert_eq!(data[0]["id"], created["id"], "{found}");
        let none = m
            .list_payments(&format!("merchant_order_id={}", unique("ORD")))
            .await;
        assert_eq!(none["data"], json!([]), "{none}");
        assert_eq!(none["has_more"], false, "{none}");
    });
}

// ---------------------------------------------------------------- lists and events

#[test]
fn cursor_pages_walk_every_payment_newest_first_exactly_once() {
    // Proves limit/starting_after pages over 7 payments: 3+3+1, has_more right, no repeats.
    run(|app| async move {
        let m = app.new_merchant().await;
        let mut created = Vec::new();
        for i in 0..7 {
            let p = m
                .create_payment_ok(&payment_request(1000 + i, qr_customer()))
                .await;
            created.push(p["id"].as_str().unwrap().to_string());
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut sizes = Vec::new();
        loop {
            let query = match &after {
                Some(id) => format!("limit=3&starting_after={id}"),
                None => "limit=3".to_string(),
            };
            let page = m.list_payments(&query).await;
            let data = page["data"].as_array().unwrap();
            sizes.push((data.len(), page["has_more"].as_bool().unwrap()));
            seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_string()));
            if page["has_more"] == false {
                break;
            }
            assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
            after = seen.last().cloned();
        }
        assert_eq!(sizes, vec![(3, true), (3, true), (1, false)]);
        created.reverse();
        assert_eq!(
            seen, created,
            "pages must list newest first, each payment once"
        );
    });
}

#[test]
fn list_limits_outside_one_to_a_hundred_and_unknown_parameters_are_rejected() {
    // Proves limit=0, limit=101, limit=x, a repeated limit → parameter_invalid(limit);
    // ?sort= → unknown_field (and any parameter on the account and rules reads); a cursor
    // naming another merchant's payment or event → parameter_invalid(starting_after), as
    // the refund list answers.
    run(|app| async move {
        let m = app.new_merchant().await;
        for bad in ["limit=0", "limit=101", "limit=x", "limit=5&limit=6"] {
            let r = m.get(&format!("/v1/payments?{bad}")).await;
            assert_error_param(&r, 400, "parameter_invalid", "limit");
            let r = m.get(&format!("/v1/events?{bad}")).await;
            assert_error_param(&r, 400, "parameter_invalid", "limit");
        }
        let r = m.get("/v1/payments?sort=asc").await;
        assert_error_param(&r, 400, "unknown_field", "sort");
        // Reads of one object take no parameters at all, whichever component serves them.
        for path in ["/v1/account", "/v1/risk/rules"] {
            let r = m.get(&format!("{path}?expand=x")).await;
            assert_error_param(&r, 400, "unknown_field", "expand");
            assert_eq!(m.get(path).await.0, 200, "{path}");
        }

        let other = app.new_merchant().await;
        let theirs = other
            .create_payment_ok(&payment_request(1250, qr_customer()))
            .await;
        let id = theirs["id"].as_str().unwrap();
        let r = m.get(&format!("/v1/payments?starting_after={id}")).await;
        assert_error_param(&r, 400, "parameter_invalid", "starting_after");
        let (_, events) = other.get("/v1/events?limit=1").await;
        let event = events["data"][0]["id"].as_str().unwrap();
        let r = m.get(&format!("/v1/events?starting_after={event}")).await;
        assert_error_param(&r, 400, "parameter_invalid", "starting_after");
    });
}

#[test]
fn the_event_log_records_each_payment_change_newest_first() {
    // Proves payment.created and payment.succeeded events appear for a paid QR payment, paged.
    run(|app| async move {
        let m = app.new_merchant().await;
        let p = m
            .create_payment_ok(&payment_request(1250, json!({"type": "qr_merchant"})))
            .await;
        let id = p["id"].as_str().unwrap();
        let qr = p["next_action"]["qr_payload"].as_str().unwrap();
        assert_eq!(app.customer_pay(qr).await.0, 200);
        m.wait_for_status(id, "succeeded").await;
        let (status, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        assert_eq!(events["object"], "list", "{events}");
        let data = events["data"].as_array().unwrap();
        let types: Vec<&str> = data
            .iter()
            .filter(|e| e["data"]["id"] == id)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(types.contains(&"payment.created"), "{types:?}");
        assert!(types.contains(&"payment.succeeded"), "{types:?}");
        assert_eq!(
            types.first(),
            Some(&"payment.succeeded"),
            "newest first: {types:?}"
        );
        assert_eq!(
            types.last(),
            Some(&"payment.created"),
            "newest first: {types:?}"
        );
        for e in data {
            assert!(
                e["id"].as_str().is_some_and(|x| x.starts_with("evt_")),
                "{e}"
            );
            assert_eq!(e["object"], "event", "{e}");
        }
        let (status, first) = m.get("/v1/events?limit=1").await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["data"].as_array().map(Vec::len), Some(1), "{first}");
        assert_eq!(first["has_more"], true, "{first}");
        let after = first["data"][0]["id"].as_str().unwrap();
        let (status, next) = m
            .get(&format!("/v1/events?limit=100&starting_after={after}"))
            .await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(
            next["data"].as_array().map(Vec::len),
            Some(data.len() - 1),
            "{next}"
        );
    });
}

// ---------------------------------------------------------------- merchant isolation

#[test]
fn another_merchant_can_neither_see_nor_change_a_payment() {
    // Proves B gets 404 for A's payment and refund on every endpoint, B's lists stay empty,
    // and A's payments are unchanged afterwards.
    run(|app| async move {
        let a = app.new_merchant().await;
        let b = app.new_merchant().await;
        let order = unique("ORD");
        let mut body = payment_request(2000, qr_customer());
        body["merchant_order_id"] = json!(order);
        let paid = a.create_payment_ok(&body).await;
        let paid_id = paid["id"].as_str().unwrap().to_string();
        let (status, refund) = a
            .post(
                &format!("/v1/payments/{paid_id}/refunds"),
                &json!({"amount_minor": 100}),
            )
            .await;
        assert_eq!(status, 200, "{refund}");
        let refund_id = refund["id"].as_str().unwrap().to_string();
        let held = a
            .create_payment_ok(&manual_payment_request(3000, qr_customer()))
            .await;
        let held_id = held["id"].as_str().unwrap().to_string();
        let paid_before = a.payment(&paid_id).await;
        let held_before = a.payment(&held_id).await;

        for id in [&paid_id, &held_id] {
            assert_error(
                &b.get(&format!("/v1/payments/{id}")).await,
                404,
                "resource_missing",
            );
            let r = b
                .post(
                    &format!("/v1/payments/{id}/refunds"),
                    &json!({"amount_minor": 1}),
                )
                .await;
            assert_error(&r, 404, "resource_missing");
            let r = b
                .post(&format!("/v1/payments/{id}/capture"), &json!({}))
                .await;
            assert_error(&r, 404, "resource_missing");
            let r = b
                .post(&format!("/v1/payments/{id}/cancel"), &json!({}))
                .await;
            assert_error(&r, 404, "resource_missing");
            let r = b
                .post(
                    &format!("/v1/payments/{id}/confirm"),
                    &json!({"otp": "123456"}),
                )
                .await;
            assert_error(&r, 404, "resource_missing");
        }
        assert_error(
            &b.get(&format!("/v1/refunds/{refund_id}")).await,
            404,
            "resource_missing",
        );
        assert_eq!(b.list_payments("limit=100").await["data"], json!([]));
        let lookup = b.list_payments(&format!("merchant_order_id={order}")).await;
        assert_eq!(lookup["data"], json!([]), "{lookup}");
        let (status, events) = b.get("/v1/events?limit=100").await;
        assert_eq!(status, 200, "{events}");
        assert_eq!(events["data"], json!([]), "B sees A's events: {events}");

        assert_eq!(
            a.payment(&paid_id).await,
            paid_before,
            "B changed A's payment"
        );
        assert_eq!(
            a.payment(&held_id).await,
            held_before,
            "B changed A's payment"
        );
    });
}

// ---------------------------------------------------------------- malformed input

/// A valid create body (qr_merchant) to corrupt one field at a time.
fn good_body() -> Value {
    json!({
        "amount_minor": 1250,
        "currency": "CNY",
        "channel": "sandbox",
        "capture": "automatic",
        "merchant_order_id": "ORD-MALFORMED-1",
        "description": "2 coffees",
        "method": {"type": "qr_merchant"},
        "payer": {"id": "u-42", "device_id": "d-9", "ip": "203.0.113.7", "country": "CN"},
        "metadata": {"table": "7"}
    })
}

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the body")) = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().unwrap().remove(field);
    body
}

#[test]
fn each_malformed_create_gets_its_precise_4xx_code_and_creates_nothing() {
    // Proves every malformed-input class → exact status/code/param and no payment, no event,
    // and no claimed order id (the same order id is usable afterwards).
    run(|app| async move {
        let m = app.new_merchant().await;
        let metadata_21: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
        let json_cases: Vec<(Value, u16, &str, &str)> = vec![
            (
                with(good_body(), "/amount_minor", json!("1250")),
                400,
                "amount_invalid",
                "amount_minor",
            ),
            (
                with(good_body(), "/amount_minor", json!(12.5)),
                400,
                "amount_invalid",
                "amount_minor",
            ),
            (
                with(good_body(), "/amount_minor", json!(-5)),
                400,
                "amount_invalid",
                "amount_minor",
            ),
            (
                with(good_body(), "/amount_minor", json!(0)),
                400,
                "amount_invalid",
                "amount_minor",
            ),
            (
                with(good_body(), "/amount_minor", json!(1_000_000_000_001_i64)),
                400,
                "amount_invalid",
                "amount_minor",
            ),
            (
                with(good_body(), "/currency", json!(5)),
                400,
                "parameter_invalid",
                "currency",
            ),
            (
                with(good_body(), "/currency", json!("XYZ")),
                400,
                "currency_unsupported",
                "currency",
            ),
            (
                with(good_body(), "/method", json!("qr_merchant")),
                400,
                "parameter_invalid",
                "method",
            ),
            (
                with(good_body(), "/method/type", json!("cash")),
                400,
                "method_unsupported",
                "method.type",
            ),
            (
                with(good_body(), "/channel", json!("paypal")),
                400,
                "channel_unsupported",
                "channel",
            ),
            (
                with(good_body(), "/capture", json!("later")),
                400,
                "parameter_invalid",
                "capture",
            ),
            (
                with(good_body(), "/metadata", Value::Object(metadata_21)),
                400,
                "parameter_invalid",
                "metadata",
            ),
            (
                with(good_body(), "/metadata/table", json!(7)),
                400,
                "parameter_invalid",
                "metadata.table",
            ),
            (
                with(good_body(), "/payer/ip", json!("300.1.1.1")),
                400,
                "parameter_invalid",
                "payer.ip",
            ),
            (
                with(good_body(), "/merchant_order_id", json!("ORD 1")),
                400,
                "parameter_invalid",
                "merchant_order_id",
            ),
            (
                with(
                    good_body(),
                    "/method",
                    json!({"type": "qr_merchant", "token": "x"}),
                ),
                400,
                "unknown_field",
                "method.token",
            ),
            (
                with(good_body(), "/method", json!({"type": "nfc", "token": "t"})),
                400,
                "parameter_missing",
                "method.cryptogram",
            ),
            (
                with(
                    good_body(),
                    "/method",
                    json!({"type": "sms_otp", "phone": "12"}),
                ),
                400,
                "parameter_invalid",
                "method.phone",
            ),
            (
                with(good_body(), "/payer", json!({"nation": "CN"})),
                400,
                "unknown_field",
                "payer.nation",
            ),
            (
                without(good_body(), "currency"),
                400,
                "parameter_missing",
                "currency",
            ),
            (
                {
                    let mut b = good_body();
                    b["colour"] = json!("blue");
                    b
                },
                400,
                "unknown_field",
                "colour",
            ),
        ];
        for (body, status, code, param) in &json_cases {
            let r = m.create_payment(body).await;
            assert_error_param(&r, *status, code, param);
        }
        let raw_cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"{".to_vec(), 400, "json_invalid"),
            (b"[1]".to_vec(), 400, "json_invalid"),
            (b"not json at all".to_vec(), 400, "json_invalid"),
            (
                // Last-wins would charge 2 while a proxy reading the first copy sees 1250.
                good_body()
                    .to_string()
                    .replace(
                        "\"amount_minor\":1250",
                        "\"amount_minor\":1250,\"amount_minor\":2",
                    )
                    .into_bytes(),
                400,
                "json_invalid",
            ),
            (
                good_body()
                    .to_string()
                    .replace("1250", "99999999999999999999")
                    .into_bytes(),
                400,
                "amount_invalid",
            ),
            (
                with(good_body(), "/description", json!("x".repeat(17 * 1024)))
                    .to_string()
                    .into_bytes(),
                413,
                "body_too_large",
            ),
        ];
        for (body, status, code) in raw_cases {
            let r = m.post_raw("/v1/payments", body).await;
            assert_error(&r, status, code);
        }
        assert_eq!(
            m.count_payments().await,
            0,
            "a rejected request created a payment"
        );
        let (_, events) = m.get("/v1/events?limit=100").await;
        assert_eq!(
            events["data"],
            json!([]),
            "a rejected request left an event: {events}"
        );
        let ok = m.create_payment_ok(&good_body()).await;
        assert_eq!(ok["merchant_order_id"], "ORD-MALFORMED-1", "{ok}");
    });
}

#[test]
fn malformed_capture_refund_and_confirm_bodies_change_nothing() {
    // Proves bad bodies on the payment sub-resources are exact 4xx and leave the payment as is.
    run(|app| async move {
        let m = app.new_merchant().await;
        let paid = m
            .create_payment_ok(&payment_request(1000, qr_customer()))
            .await;
        let paid_id = paid["id"].as_str().unwrap();
        let held = m
            .create_payment_ok(&manual_payment_request(1000, qr_customer()))
            .await;
        let held_id = held["id"].as_str().unwrap();
        let paid_before = m.payment(paid_id).await;
        let held_before = m.payment(held_id).await;
        let refunds = format!("/v1/payments/{paid_id}/refunds");
        let capture = format!("/v1/payments/{held_id}/capture");
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                &refunds,
                json!({"amount_minor": 0}),
                "amount_invalid",
                "amount_minor",
            ),
            (
                &refunds,
                json!({"amount_minor": -1}),
                "amount_invalid",
                "amount_minor",
            ),
            (
                &refunds,
                json!({"amount_minor": "100"}),
                "amount_invalid",
                "amount_minor",
            ),
            (
                &refunds,
                json!({"amount_minor": 100, "why": "x"}),
                "unknown_field",
                "why",
            ),
            (
                &refunds,
                json!({"amount_minor": 100, "merchant_refund_id": "a b"}),
                "parameter_invalid",
                "merchant_refund_id",
            ),
            (
                &capture,
                json!({"amount_minor": 0}),
                "amount_invalid",
                "amount_minor",
            ),
            (
                &capture,
                json!({"amount_minor": "all"}),
                "amount_invalid",
                "amount_minor",
            ),
            (&capture, json!({"amount": 10}), "unknown_field", "amount"),
        ];
        for (path, body, code, param) in &cases {
            let r = m.post(path, body).await;
            assert_error_param(&r, 400, code, param);
        }
        let r = m.post_raw(&refunds, b"{\"amount_minor\":".to_vec()).await;
        assert_error(&r, 400, "json_invalid");
        assert_eq!(
            m.payment(paid_id).await,
            paid_before,
            "a rejected refund changed the payment"
        );
        assert_eq!(
            m.payment(held_id).await,
            held_before,
            "a rejected capture changed the payment"
        );
    });
}

#[test]
fn unsupported_http_methods_are_refused_with_405() {
    // Proves DELETE on the collection and GET on an action answer 405 method_not_allowed.
    run(|app| async move {
        let m = app.new_merchant().await;
        let auth = format!("Bearer {}", m.secret_key);
        let headers = [("authorization", auth.as_str())];
        let r = app
            .request("DELETE", "/v1/payments", &headers, Vec::new())
            .await;
        assert_error(&r, 405, "method_not_allowed");
        let id = format!("pay_{}", "a".repeat(26));
        let r = app
            .request(
                "GET",
                &format!("/v1/payments/{id}/capture"),
                &headers,
                Vec::new(),
            )
            .await;
        assert_error(&r, 405, "method_not_allowed");
    });
}

#[test]
fn ids_of_the_wrong_format_are_not_found() {
    // Proves malformed or unknown ids answer 404 resource_missing on reads and writes.
    run(|app| async move {
        let m = app.new_merchant().await;
        let unknown = format!("pay_{}", "a".repeat(26));
        for id in [
            "not-an-id",
            "pay_",
            "pay_UPPERCASE0000000000000000",
            "re_abc",
            unknown.as_str(),
        ] {
            assert_error(
                &m.get(&format!("/v1/payments/{id}")).await,
                404,
                "resource_missing",
            );
            let r = m
                .post(&format!("/v1/payments/{id}/capture"), &json!({}))
                .await;
            assert_error(&r, 404, "resource_missing");
            let r = m
                .post(
                    &format!("/v1/payments/{id}/refunds"),
                    &json!({"amount_minor": 1}),
                )
                .await;
            assert_error(&r, 404, "resource_missing");
        }
        assert_error(&m.get("/v1/refunds/pay_x").await, 404, "resource_missing");
        assert_eq!(m.count_payments().await, 0);
    });
}

// ---------------------------------------------------------------- secrets

#[test]
fn secrets_in_the_method_come_back_masked_everywhere() {
    // Proves NFC tokens, auth codes and phones are masked in create, GET, list and events.
    run(|app| async move {
        let m = app.new_merchant().await;
        let token = unique_token();
        let code = unique_token();
        let phone = unique_phone();
        let cryptogram = "CRYPTOGRAM-SECRET-77";
        let methods = [
            json!({"type": "nfc", "token": token, "cryptogram": cryptogram}),
            json!({"type": "qr_customer", "auth_code": code}),
            json!({"type": "sms_otp", "phone": phone}),
        ];
        let mut ids = Vec::new();
        for method in methods {
            let p = m.create_payment_ok(&payment_request(1000, method)).await;
            ids.push(p["id"].as_str().unwrap().to_string());
        }
        let nfc = m.payment(&ids[0]).await;
        let shown = nfc["method"]["token"].as_str().unwrap();
        assert!(
            shown.ends_with(&token[token.len() - 4..]) && shown.starts_with('*'),
            "{nfc}"
        );
        assert_ne!(nfc["method"]["cryptogram"], cryptogram, "{nfc}");
        let qr = m.payment(&ids[1]).await;
        assert!(
            qr["method"]["auth_code"].as_str().unwrap().starts_with('*'),
            "{qr}"
        );
        let sms = m.payment(&ids[2]).await;
        let masked_phone = sms["method"]["phone"].as_str().unwrap();
        assert!(
            masked_phone.contains('*') && masked_phone.ends_with(&phone[phone.len() - 4..]),
            "{sms}"
        );
        let (_, events) = m.get("/v1/events?limit=100").await;
        let everything = format!(
            "{nfc}{qr}{sms}{}{events}",
            m.list_payments("limit=100").await
        );
        for secret in [token.as_str(), code.as_str(), phone.as_str(), cryptogram] {
            assert!(
                !everything.contains(secret),
                "{secret} appears unmasked in a response"
            );
        }
    });
}

// ---------------------------------------------------------------- risk

/// Replaces the merchant's risk rules with the current ones changed by `edit`.
async fn edit_risk_rules(m: &Merchant<'_>, edit: impl FnOnce(&mut Value)) -> Value {
    let (status, mut rules) = m.get("/v1/risk/rules").await;
    assert_eq!(status, 200, "{rules}");
    rules.as_object_mut().unwrap().remove("version");
    rules.as_object_mut().unwrap().remove("object");
    edit(&mut rules);
    let (status, stored) = m.app.put("/v1/risk/rules", &m.secret_key, &rules).await;
    assert_eq!(status, 200, "PUT /v1/risk/rules {rules}: {stored}");
    assert!(
        stored["version"].as_u64().is_some_and(|v| v >= 2),
        "{stored}"
    );
    stored
}

#[test]
fn a_blocklisted_payer_is_denied_by_risk_control() {
    // Proves a payer id on the merchant's block list fails the payment with risk_denied and the
    // rule named, while another payer still pays.
    run(|app| async move {
        let m = app.new_merchant().await;
        edit_risk_rules(&m, |r| r["blocklist"]["payer_ids"] = json!(["u-blocked"])).await;
        let mut body = payment_request(1000, qr_customer());
        body["payer"] = json!({"id": "u-blocked"});
        let denied = m.create_payment_ok(&body).await;
        assert_eq!(denied["status"], "failed", "{denied}");
        assert_eq!(denied["failure"]["code"], "risk_denied", "{denied}");
        assert_eq!(denied["risk"]["decision"], "deny", "{denied}");
        let rules: Vec<&str> = denied["risk"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules, vec!["blocklist.payer_id"], "{denied}");
        assert_eq!(denied["captured_minor"], 0, "{denied}");
        body["payer"] = json!({"id": "u-fine"});
        body["method"] = qr_customer();
        assert_eq!(m.create_payment_ok(&body).await["status"], "succeeded");
    });
}

#[test]
fn an_amount_over_the_per_method_limit_is_denied() {
    // Proves the default qr_merchant limit (CNY 5,000.00) denies 500001 and the assessment
    // endpoint says the same without creating a payment.
    run(|app| async move {
        let m = app.new_merchant().await;
        let body = payment_request(500_001, json!({"type": "qr_merchant"}));
        let (status, assessment) = m.post("/v1/risk/assessments", &body).await;
        assert_eq!(status, 200, "{assessment}");
        assert_eq!(assessment["decision"], "deny", "{assessment}");
        assert_eq!(
            m.count_payments().await,
            0,
            "an assessment created a payment"
        );
        let denied = m.create_payment_ok(&body).await;
        assert_eq!(denied["status"], "failed", "{denied}");
        assert_eq!(denied["failure"]["code"], "risk_denied", "{denied}");
        assert_eq!(
            denied["risk"]["rules"][0]["rule"], "limit.per_transaction",
            "{denied}"
        );
        let allowed = m
            .create_payment_ok(&payment_request(500_000, json!({"type": "qr_merchant"})))
            .await;
        assert_eq!(allowed["status"], "requires_customer_action", "{allowed}");
    });
}

#[test]
fn a_merchant_specific_limit_applies_only_to_that_merchant() {
    // Proves a lowered nfc limit denies for its merchant and leaves another merchant alone.
    run(|app| async move {
        let strict = app.new_merchant().await;
        let other = app.new_merchant().await;
        edit_risk_rules(&strict, |r| {
            for limit in r["per_transaction_max"].as_array_mut().unwrap() {
                if limit["method"] == "nfc" {
                    limit["max_minor"] = json!(1000);
                }
            }
        })
        .await;
        let body = |amount| {
            payment_request(
                amount,
                json!({"type": "nfc", "token": unique_token(), "cryptogram": "c2FuZGJveA"}),
            )
        };
        let denied = strict.create_payment_ok(&body(1001)).await;
        assert_eq!(denied["failure"]["code"], "risk_denied", "{denied}");
        assert_eq!(
            strict.create_payment_ok(&body(1000)).await["status"],
            "succeeded"
        );
        assert_eq!(
            other.create_payment_ok(&body(1001)).await["status"],
            "succeeded"
        );
    });
}

#[test]
fn a_post_with_a_query_string_is_refused_and_changes_nothing() {
    // Proves every merchant or admin POST (and the rules PUT) takes its fields from the
    // body only: a parameter put in the query answers 400 unknown_field naming it, and
    // nothing is done (settings unchanged, no payment, no refund, no merchant, rules
    // unchanged), instead of a 200 that silently ignored it.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (_, account) = m.get("/v1/account").await;
        let (_, rules) = m.get("/v1/risk/rules").await;
        let p = m
            .create_payment_ok(&payment_request(1500, qr_customer()))
            .await;
        let id = p["id"].as_str().unwrap();
        let refused = [
            m.post("/v1/account?name=zzz", &json!({})).await,
            m.post("/v1/payments?amount_minor=1", &good_body()).await,
            m.post(
                &format!("/v1/payments/{id}/refunds?amount_minor=1"),
                &json!({"amount_minor": 100}),
            )
            .await,
            m.post(&format!("/v1/payments/{id}/cancel?x=1"), &json!({}))
                .await,
            m.post("/v1/risk/assessments?amount_minor=1", &good_body())
                .await,
            app.put("/v1/risk/rules?x=1", &m.secret_key, &rules).await,
            app.post(
                "/v1/admin/merchants?name=zzz",
                Some(ADMIN_TOKEN),
                None,
                &json!({"name": "Q"}),
            )
            .await,
        ];
        for (n, reply) in refused.iter().enumerate() {
            let param = [
                "name",
                "amount_minor",
                "amount_minor",
                "x",
                "amount_minor",
                "x",
                "name",
            ][n];
            assert_error_param(reply, 400, "unknown_field", param);
        }
        assert_eq!(m.get("/v1/account").await.1, account, "settings unchanged");
        assert_eq!(m.get("/v1/risk/rules").await.1, rules, "rules unchanged");
        assert_eq!(m.count_payments().await, 1, "no payment created");
        let after = m.payment(id).await;
        assert_eq!(
            (&after["status"], &after["refunded_minor"]),
            (&json!("succeeded"), &json!(0)),
            "{after}"
        );
    });
}

#[test]
fn a_notify_url_with_credentials_or_a_name_with_control_characters_is_refused() {
    // Proves onboarding and settings refuse a notify_url carrying user-info (never sent
    // with a delivery) and a name with a control or bidirectional control character,
    // naming the field, and change nothing; an admin call without credentials is asked
    // for the admin token, not a secret key.
    run(|app| async move {
        let m = app.new_merchant().await;
        let (_, before) = m.get("/v1/account").await;
        let with_user = json!({"notify_url": "https://user:pw@merchant.example/hook"});
        let refused = m.post("/v1/account", &with_user).await;
        assert_error_param(&refused, 400, "parameter_invalid", "notify_url");
        for name in ["Corner\nCoffee", "Corner\u{202E}eeffoC"] {
            let refused = m.post("/v1/account", &json!({ "name": name })).await;
            assert_error_param(&refused, 400, "parameter_invalid", "name");
            let body = json!({ "name": name });
            let onboarding = app
                .post("/v1/admin/merchants", Some(ADMIN_TOKEN), None, &body)
                .await;
            assert_error_param(&onboarding, 400, "parameter_invalid", "name");
        }
        assert_eq!(m.get("/v1/account").await.1, before, "nothing changed");
        let body = json!({"name": "Q"});
        let anonymous = app.post("/v1/admin/merchants", None, None, &body).await;
        assert_error(&anonymous, 401, "authentication_required");
        let message = anonymous.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("admin token"), "{message}");
    });
}

// ---------------------------------------------------------------- operator recovery

#[test]
fn an_operator_recovers_a_merchant_whose_leaked_key_was_rotated_by_someone_else() {
    // Proves the operator's way back when a merchant's current secret key leaked and the
    // holder rotated it first (the merchant's own key is then retiring and cannot take
    // the account back): the admin GET shows the merchant as the taker left it, without
    // secrets; the admin reset answers a new key and webhook secret; at once the taker's
    // key and the leaked one answer 401 api_key_invalid; the new key works and
    // GET /v1/account shows the notify_url the reset set; a replay of the reset under its
    // Idempotency-Key answers the same secret key; the admin routes want the admin token,
    // answer 404 resource_missing for an unknown id, 405 for a wrong method and 404
    // route_not_found for an unknown action.
    run(|app| async move {
        let shop = "https://shop.example/spinpay/hook";
        let onboard = json!({"name": "Merchant E", "notify_url": shop});
        let (status, created) = app
            .post(
                "/v1/admin/merchants",
                Some(ADMIN_TOKEN),
                Some(&unique("onboard")),
                &onboard,
            )
            .await;
        assert_eq!(status, 200, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let leaked = created["secret_key"].as_str().unwrap().to_string();

        // Whoever holds the leaked key rotates first and points the notifications away.
        let rotate = "/v1/account/secret-key/rotate";
        let body = json!({"grace_period_s": 600});
        let (status, taken) = app
            .post(rotate, Some(&leaked), Some(&unique("idem")), &body)
            .await;
        assert_eq!(status, 200, "{taken}");
        let taker = taken["secret_key"].as_str().unwrap().to_string();
        let away = json!({"notify_url": "https://attacker.example/x"});
        let (status, _) = app
            .post("/v1/account", Some(&taker), Some(&unique("idem")), &away)
            .await;
        assert_eq!(status, 200);
        let back = app
            .post(rotate, Some(&leaked), Some(&unique("idem")), &json!({}))
            .await;
        assert_error(&back, 401, "api_key_retiring");

        // The operator looks the merchant up.
        let one = format!("/v1/admin/merchants/{id}");
        let (status, shown) = app.get(&one, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown, app.get("/v1/account", Some(&taker)).await.1);
        assert_eq!(shown["notify_url"], "https://attacker.example/x", "{shown}");
        assert!(shown.get("secret_key").is_none(), "{shown}");
        assert_error(&app.get(&one, None).await, 401, "authentication_required");
        assert_error(
            &app.get(&one, Some(&taker)).await,
            401,
            "admin_token_invalid",
        );
        let unknown = format!("/v1/admin/merchants/mch_{}", "a".repeat(26));
        for missing in [unknown.as_str(), "/v1/admin/merchants/mch_x"] {
            let reply = app.get(missing, Some(ADMIN_TOKEN)).await;
            assert_error_param(&reply, 404, "resource_missing", "id");
        }

        // The reset: new credentials, no grace for any old key, the shop's URL back.
        let reset = format!("{one}/credentials/reset");
        let idem = unique("reset");
        let fixed = "https://shop.example/spinpay/hook2";
        let body = json!({"notify_url": fixed});
        let refused = app
            .post(&reset, Some(ADMIN_TOKEN), None, &json!({"name": "x"}))
            .await;
        assert_error_param(&refused, 400, "unknown_field", "name");
        let by_taker = app.post(&reset, Some(&taker), Some(&idem), &body).await;
        assert_error(&by_taker, 401, "admin_token_invalid");
        let (status, made) = app
            .post(&reset, Some(ADMIN_TOKEN), Some(&idem), &body)
            .await;
        assert_eq!(status, 200, "{made}");
        assert_eq!(made["object"], "merchant_credentials", "{made}");
        assert_eq!(
            (&made["merchant_id"], &made["notify_url"]),
            (&json!(id), &json!(fixed))
        );
        assert!(
            made["webhook_secret"]
                .as_str()
                .unwrap()
                .starts_with("whsec_")
        );
        assert_ne!(made["webhook_secret"], created["webhook_secret"]);
        let new_key = made["secret_key"].as_str().unwrap().to_string();
        for old in [&taker, &leaked] {
            let refused = app.get("/v1/account", Some(old)).await;
            assert_error(&refused, 401, "api_key_invalid");
        }
        let (status, account) = app.get("/v1/account", Some(&new_key)).await;
        assert_eq!(status, 200, "{account}");
        assert_eq!(
            (&account["id"], &account["notify_url"]),
            (&json!(id), &json!(fixed))
        );
        let (status, list) = app.get("/v1/payments", Some(&new_key)).await;
        assert_eq!(status, 200, "{list}");
        let replay = app
            .post(&reset, Some(ADMIN_TOKEN), Some(&idem), &body)
            .await;
        assert_eq!(replay, (200, made.clone()), "the same secrets, replayed");
        let rotated_by_new = app
            .post(rotate, Some(&new_key), Some(&unique("idem")), &json!({}))
            .await;
        assert_eq!(rotated_by_new.0, 200, "the new key owns the account");

        // Routing: the one method of each path, and nothing else under the merchant.
        let wrong = app
            .request(
                "GET",
                &reset,
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                Vec::new(),
            )
            .await;
        assert_error(&wrong, 405, "method_not_allowed");
        let wrong = app.post(&one, Some(ADMIN_TOKEN), None, &json!({})).await;
        assert_error(&wrong, 405, "method_not_allowed");
        for action in ["disable", "credentials", "secret-key/rotate"] {
            let path = format!("{one}/{action}");
            let miss = app.post(&path, Some(ADMIN_TOKEN), None, &json!({})).await;
            assert_error(&miss, 404, "route_not_found");
        }
    });
}
