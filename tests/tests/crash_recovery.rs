//! Crash recovery through the real host process: the app runs in a child process that is
//! killed with SIGKILL while payments and refunds are in flight, then restarted on the
//! same key-value files. Nothing acknowledged may be lost, nothing may be counted twice,
//! and retrying every request with its Idempotency-Key may not create anything new.
//!
//! The child is this test binary itself, re-run with `--ignored --exact
//! host_process_for_crash_tests` and the key-value directory in [`CHILD_DIR_ENV`]; it
//! writes its base URL to [`SERVING_FILE`] there once it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spinpay_host::app::{AppOptions, start};
use spinpay_tests::{
    ADMIN_TOKEN, ENCRYPTION_KEY, Merchant, SANDBOX_SECRET, TestApp, manifest_path, now_unix_s,
    payment_request, qr_customer, require_components, runtime, unique, write_runtime_config,
};

/// The directory of the child's key-value files; set only in the child.
const CHILD_DIR_ENV: &str = "SPINPAY_CRASH_CHILD_KV_DIR";
/// The file (in the key-value directory) the child writes its base URL to once it serves.
const SERVING_FILE: &str = "serving.url";
/// How long a child may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Payments made and captured before the crash (refunds then race on them).
const CAPTURED_PAYMENTS: usize = 6;
/// Refunds sent per captured payment during the load; their sum is twice the amount.
const REFUNDS_PER_PAYMENT: usize = 8;
/// New payments sent during the load.
const NEW_PAYMENTS: usize = 48;
/// Amount of each captured payment.
const CAPTURED_AMOUNT: i64 = 4_000;
/// The kill comes once this share (1/n) of the load has been answered, so some requests
/// are acknowledged, some in flight and some not yet sent.
const KILL_AFTER_ONE_IN: usize = 3;
/// The longest the load may run before the kill anyway.
const LOAD_BEFORE_KILL_MAX: Duration = Duration::from_secs(60);

#[test]
#[ignore = "the body of the child process crash tests start; not a test on its own"]
fn host_process_for_crash_tests() {
    // Serves the app on a loopback port until killed (only with CHILD_DIR_ENV set).
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        panic!("{CHILD_DIR_ENV} is not set: this runs only as the crash tests' child");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let manifest = manifest_path();
        let loaded = require_components(&manifest);
        let mut opts = AppOptions::new(&manifest);
        opts.runtime_config_file = Some(write_runtime_config(&loaded, Path::new(&dir)));
        for (name, value) in [
            ("admin_token", ADMIN_TOKEN),
            ("encryption_key", ENCRYPTION_KEY),
            ("sandbox_secret", SANDBOX_SECRET),
        ] {
            opts.variables.insert(name.to_string(), value.to_string());
        }
        let app = start(opts).await.expect("starting the app");
        let file = Path::new(&dir).join(SERVING_FILE);
        let partial = file.with_extension("partial");
        std::fs::write(&partial, app.base_url()).expect("writing the URL");
        std::fs::rename(&partial, &file).expect("publishing the URL");
        std::future::pending::<()>().await;
    });
}

/// A host child process serving the app from `kv_dir`.
struct HostProcess {
    child: Child,
    base_url: String,
}

impl HostProcess {
    fn spawn(kv_dir: &Path) -> HostProcess {
        let url_file = kv_dir.join(SERVING_FILE);
        let _ = std::fs::remove_file(&url_file);
        let exe = std::env::current_exe().expect("the test binary");
        let child = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "host_process_for_crash_tests",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, kv_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the host child");
        // The guard exists before the wait, so a child that never serves is killed when
        // the assertion below panics (it would otherwise outlive the test run, holding
        // the inherited stderr open).
        let mut host = HostProcess {
            child,
            base_url: String::new(),
        };
        let started = Instant::now();
        host.base_url = loop {
            if let Ok(url) = std::fs::read_to_string(&url_file) {
                break url.trim().to_string();
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the host child did not serve within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        host
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    fn kill(mut self) {
        self.child.kill().expect("killing the host child");
        self.child.wait().expect("reaping the host child");
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of the load, kept to be retried after the restart.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    idempotency_key: String,
    body: Value,
}

/// A load request and what the crashed host answered (None: no answer).
type Outcome = (Sent, Option<(u16, Value)>);

/// Error codes an Idempotency-Key does not keep as its result (retry them, or correct
/// the request: docs/errors.md, `ApiError::leaves_key_unused`); a replay runs the
/// request again instead of answering them again.
const NOT_KEPT: [&str; 18] = [
    "idempotency_key_in_use",
    "concurrent_modification",
    "storage_unavailable",
    "channel_unavailable",
    "risk_unavailable",
    "rate_limited",
    "internal_error",
    "not_configured",
    "api_key_retiring",
    "parameter_missing",
    "parameter_invalid",
    "amount_invalid",
    "currency_unsupported",
    "method_unsupported",
    "channel_unsupported",
    "body_too_large",
    "json_invalid",
    "unknown_field",
];

/// Whether the key keeps `answer` as the request's result, to replay it unchanged (the
/// same status and JSON): a 200, or an error that came from running the request (e.g.
/// `refund_exceeds_captured`).
/// A host-level 5xx (not even JSON) is never kept.
fn kept_by_the_key((status, body): &(u16, Value)) -> bool {
    match body["error"]["code"].as_str() {
        Some(code) => !NOT_KEPT.contains(&code),
        None => *status == 200,
    }
}

/// Whether an object acknowledged in status `acknowledged` may now be in `now`: the
/// same status, or any status after one that is not final (the channel had not
/// settled it yet). A final status never changes.
fn still_or_later(acknowledged: &str, now: &str) -> bool {
    match acknowledged {
        // Payments waiting on the customer, risk or the channel, and pending refunds.
        "requires_customer_action"
        | "requires_review"
        | "requires_capture"
        | "processing"
        | "pending" => true,
        // Final for the auto-captured payments and the refunds of this test.
        "succeeded" | "failed" | "canceled" => now == acknowledged,
        other => panic!("unknown status {other:?}"),
    }
}

/// The ids of the refunds payment `id` lists.
async fn refund_ids(m: &Merchant<'_>, id: &str) -> BTreeSet<String> {
    let p = m.payment(id).await;
    p["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|r| r["id"].as_str().expect("refund id").to_string())
        .collect()
}

/// `POST` with a key; a dropped connection or a timeout is `None` (the host died).
async fn try_post(app: &TestApp, secret_key: &str, sent: &Sent) -> Option<(u16, Value)> {
    let auth = format!("Bearer {secret_key}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
        ("idempotency-key", sent.idempotency_key.as_str()),
    ];
    let body = sent.body.to_string().into_bytes();
    app.try_request("POST", &sent.path, &headers, body)
        .await
        .ok()
}

#[test]
fn a_host_killed_mid_load_loses_nothing_acknowledged_and_counts_nothing_twice() {
    // Proves SIGKILL during concurrent payments and over-subscribed refunds leaves every
    // acknowledged payment and refund in place after a restart (same amount, same status
    // or a later one), replays of every request creating nothing new (an answer given
    // before the kill replayed exactly; new payments and refunds only for requests that
    // may run again, each answered by its replay), the scheduled sweeps settling whatever
    // was left waiting on the channel (no payment processing, no refund pending),
    // refunded ≤ captured on every payment with the refunds' sum equal to it, and list
    // and objects agreeing.
    runtime().block_on(async {
        let kv_dir = tempfile::tempdir().expect("temp dir");
        let host = HostProcess::spawn(kv_dir.path());
        let app = Arc::new(TestApp::connect(&host.base_url));
        let (_mid, secret_key, webhook_secret) = app.admin_create_merchant().await;
        let m = Merchant {
            app: &app,
            id: _mid.clone(),
            secret_key: secret_key.clone(),
            webhook_secret,
        };
        let mut captured = Vec::new();
        for _ in 0..CAPTURED_PAYMENTS {
            let p = m
                .create_payment_ok(&payment_request(CAPTURED_AMOUNT, qr_customer()))
                .await;
            assert_eq!(p["status"], "succeeded", "{p}");
            captured.push(p["id"].as_str().expect("id").to_string());
        }

        // The load: over-subscribed refunds on every captured payment and new payments,
        // all at once, each with its own Idempotency-Key.
        let mut load = Vec::new();
        for id in &captured {
            let amount = CAPTURED_AMOUNT * 2 / REFUNDS_PER_PAYMENT as i64;
            for _ in 0..REFUNDS_PER_PAYMENT {
                load.push(Sent {
                    path: format!("/v1/payments/{id}/refunds"),
                    idempotency_key: unique("crash-refund"),
                    body: json!({"amount_minor": amount}),
                });
            }
        }
        for i in 0..NEW_PAYMENTS {
            load.push(Sent {
                path: "/v1/payments".into(),
                idempotency_key: unique("crash-pay"),
                body: payment_request(1_000 + i as i64, qr_customer()),
            });
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for sent in load.clone() {
            let app = app.clone();
            let sk = secret_key.clone();
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                let reply = try_post(&app, &sk, &sent).await;
                answered.fetch_add(1, Ordering::SeqCst);
                (sent, reply)
            }));
        }
        let load_started = Instant::now();
        while answered.load(Ordering::SeqCst) < load.len() / KILL_AFTER_ONE_IN
            && load_started.elapsed() < LOAD_BEFORE_KILL_MAX
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        host.kill();
        let mut outcomes: Vec<Outcome> = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("load task"));
        }
        let answered = outcomes.iter().filter(|(_, r)| r.is_some()).count();
        eprintln!(
            "crash test: {answered} of {} load requests answered before the kill",
            outcomes.len()
        );
        assert!(
            answered > 0,
            "the kill came before any answer: nothing was tested"
        );
        assert!(
            answered < outcomes.len(),
            "every request was answered before the kill: nothing was in flight"
        );

        // Restart on the same files.
        let host = HostProcess::spawn(kv_dir.path());
        let app = TestApp::connect(&host.base_url);
        let m = Merchant {
            app: &app,
            id: m.id.clone(),
            secret_key: secret_key.clone(),
            webhook_secret: m.webhook_secret.clone(),
        };

        // 1. Every acknowledged request is still there, as acknowledged or further along.
        let mut acknowledged_payments = BTreeSet::new();
        let mut acknowledged = 0;
        for (sent, reply) in &outcomes {
            let Some((200, obj)) = reply else { continue };
            acknowledged += 1;
            let id = obj["id"].as_str().expect("id");
            let now = if sent.path == "/v1/payments" {
                acknowledged_payments.insert(id.to_string());
                m.payment(id).await
            } else {
                let (status, r) = m.get(&format!("/v1/refunds/{id}")).await;
                assert_eq!(status, 200, "acknowledged refund {id} lost: {r}");
                r
            };
            assert_eq!(now["amount_minor"], obj["amount_minor"], "{now}");
            let (was, is) = (obj["status"].as_str(), now["status"].as_str());
            assert!(
                still_or_later(was.expect("status"), is.expect("status")),
                "acknowledged {was:?}, now {is:?}: {now}"
            );
        }
        assert!(
            acknowledged > 0,
            "no request was acknowledged with 200 before the kill: step 1 checked nothing"
        );

        // 2. Replays: every request again with its key creates nothing new. An answer the
        //    key kept replays exactly; a request not answered, or answered with an error
        //    the key does not keep, may run now, and only those may add a refund.
        let before = m.count_payments().await;
        let mut refunds_before = BTreeMap::new();
        for id in &captured {
            refunds_before.insert(id.clone(), refund_ids(&m, id).await);
        }
        let mut may_run: BTreeMap<String, usize> = BTreeMap::new();
        let mut replayed_refunds = BTreeSet::new();
        let mut kept_errors = 0;
        for (sent, reply) in &outcomes {
            let again = try_post(&app, &secret_key, sent)
                .await
                .expect("the restarted host answers");
            match reply {
                Some(answer) if kept_by_the_key(answer) => {
                    kept_errors += usize::from(answer.0 != 200);
                    assert_eq!(
                        &again, answer,
                        "replay of {sent:?} differs from the answer before the kill"
                    );
                }
                // A request in flight at the kill holds its key until the lock expires
                // (409), or finished its write before the kill and now replays (200), or
                // had not claimed its key yet and runs now.
                Some(_) | None => {
                    assert!(
                        matches!(again.0, 200 | 400 | 409),
                        "replay of {sent:?}: {} {}",
                        again.0,
                        again.1
                    );
                    *may_run.entry(sent.path.clone()).or_default() += 1;
                }
            }
            if again.0 == 200 && sent.path != "/v1/payments" {
                replayed_refunds.insert(again.1["id"].as_str().expect("id").to_string());
            }
        }
        let mut refunds_added = 0;
        for id in &captured {
            let (was, now) = (&refunds_before[id], refund_ids(&m, id).await);
            assert!(
                was.is_subset(&now),
                "replays dropped refunds of {id}: {was:?} → {now:?}"
            );
            let added: Vec<&String> = now.difference(was).collect();
            refunds_added += added.len();
            let allowed = may_run
                .get(&format!("/v1/payments/{id}/refunds"))
                .copied()
                .unwrap_or(0);
            assert!(
                added.len() <= allowed,
                "replays added {} refunds to {id}, more than its {allowed} requests that \
                 may run again: {added:?}",
                added.len()
            );
            for rid in added {
                assert!(
                    replayed_refunds.contains(rid),
                    "refund {rid} of {id} appeared, but no replay answered it"
                );
            }
        }
        let may_run_total: usize = may_run.values().sum();
        eprintln!(
            "crash test: {acknowledged} acknowledged, {kept_errors} kept errors replayed \
             exactly, {may_run_total} requests may run again, {refunds_added} refunds added \
             by replays"
        );
        let after = m.count_payments().await;
        let fresh_payments = may_run.get("/v1/payments").copied().unwrap_or(0);
        assert!(
            after <= before + fresh_payments,
            "replays created {} payments, more than the {fresh_payments} creations that may \
             run again",
            after - before
        );
        assert!(
            after <= CAPTURED_PAYMENTS + NEW_PAYMENTS,
            "{after} payments for {} distinct requests",
            CAPTURED_PAYMENTS + NEW_PAYMENTS
        );

        // 3. The scheduled sweeps settle what the kill left waiting on the channel (a
        //    payment or refund stored, the channel perhaps never asked; a replay still
        //    refused by the dead attempt's key lock), with nobody reading it: the
        //    notification sweep hands it over once its marker is past the grace period,
        //    reconciliation re-checks it once due (both with `now_ms` moved forward).
        let handed_over_ms = now_unix_s() * 1000 + 2 * 60_000;
        for _ in 0..5 {
            let sweep = json!({"merchant_id": m.id, "now_ms": handed_over_ms});
            let path = "/v1/admin/notifications/sweep";
            let (status, v) = app.post(path, Some(ADMIN_TOKEN), None, &sweep).await;
            assert_eq!(status, 200, "sweep: {v}");
        }
        let due_ms = handed_over_ms + 10 * 60_000;
        let mut rechecked = 0;
        loop {
            let body = json!({"merchant_id": m.id, "now_ms": due_ms, "limit": 100});
            let path = "/v1/admin/reconcile";
            let (status, v) = app.post(path, Some(ADMIN_TOKEN), None, &body).await;
            assert_eq!(status, 200, "reconcile: {v}");
            assert_eq!(v["object"], "reconciliation", "{v}");
            assert_eq!(v["still_open"], 0, "left waiting after a re-check: {v}");
            rechecked += v["rechecked"].as_u64().expect("rechecked");
            if v["has_more"] != json!(true) {
                break;
            }
        }
        eprintln!("crash test: reconciliation re-checked {rechecked} objects");

        // 4. Money: on every captured payment, refunded = sum of its succeeded refunds,
        //    none left pending, and succeeded ≤ captured.
        for id in &captured {
            let p = m.payment(id).await;
            let refunds = p["refunds"].as_array().expect("refunds").clone();
            let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
            let mut ids = BTreeSet::new();
            for r in &refunds {
                let rid = r["id"].as_str().unwrap_or_default().to_string();
                assert!(ids.insert(rid), "refund listed twice: {p}");
                *by_status
                    .entry(r["status"].as_str().unwrap_or("?").to_string())
                    .or_default() += r["amount_minor"].as_i64().expect("amount");
            }
            let succeeded = by_status.get("succeeded").copied().unwrap_or(0);
            let pending = by_status.get("pending").copied().unwrap_or(0);
            assert_eq!(p["captured_minor"], CAPTURED_AMOUNT, "{p}");
            assert_eq!(
                p["refunded_minor"], succeeded,
                "refunded ≠ Σ succeeded: {p}"
            );
            assert_eq!(pending, 0, "a refund left pending: {by_status:?} on {p}");
            assert!(
                succeeded <= CAPTURED_AMOUNT,
                "refunds exceed captured: {by_status:?} on {p}"
            );
        }

        // 5. The list and the objects agree: no duplicate, no dangling entry, and no
        //    payment left `processing`.
        let mut listed = BTreeSet::new();
        let mut after_id: Option<String> = None;
        loop {
            let query = match &after_id {
                Some(id) => format!("limit=100&starting_after={id}"),
                None => "limit=100".to_string(),
            };
            let page = m.list_payments(&query).await;
            let data = page["data"].as_array().expect("data").clone();
            for p in &data {
                let id = p["id"].as_str().expect("id").to_string();
                let stored = m.payment(&id).await;
                assert_ne!(stored["status"], "processing", "left processing: {stored}");
                assert!(listed.insert(id), "payment listed twice: {p}");
            }
            if page["has_more"] != json!(true) || data.is_empty() {
                break;
            }
            after_id = data.last().and_then(|p| p["id"].as_str()).map(String::from);
        }
        for id in acknowledged_payments.iter().chain(&captured) {
            assert!(listed.contains(id), "payment {id} missing from the list");
        }
        host.kill();
    });
}
