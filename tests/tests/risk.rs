//! The risk and AML engine through the host, the way a merchant meets it: rules GET/PUT,
//! decisions on real payments (deny, challenge → OTP, review → approve), AML reports in
//! JSON and CSV, previews that count nothing, merchant isolation, and the internal
//! endpoint closed to the public.

use serde_json::{Value, json};
use spinpay_tests::{
    Merchant, assert_error, assert_error_param, payment_request, qr_customer, run, unique,
    unique_phone,
};

/// Report days start at midnight UTC+8 (the default `aml.day_utc_offset_minutes`).
fn report_day_now() -> String {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let days = (now_ms + 480 * 60_000).div_euclid(86_400_000);
    // Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn rules(m: &Merchant<'_>) -> Value {
    let (status, v) = m.get("/v1/risk/rules").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "risk_rules", "{v}");
    v
}

/// The GET document as a PUT body (spinpay owns `object` and `version`).
fn editable(mut doc: Value) -> Value {
    let obj = doc.as_object_mut().unwrap();
    obj.remove("object");
    obj.remove("version");
    doc
}

async fn put_rules(m: &Merchant<'_>, body: &Value) -> Value {
    let (status, v) = m.app.put("/v1/risk/rules", &m.secret_key, body).await;
    assert_eq!(status, 200, "PUT /v1/risk/rules {body}: {v}");
    v
}

fn with_payer(mut req: Value, payer: Value) -> Value {
    req["payer"] = payer;
    req
}

/// Asserts payment `p` failed because risk denied it, `rule` first among the rules that
/// fired.
fn assert_denied_by(p: &Value, rule: &str) {
    assert_eq!(
        (&p["status"], &p["failure"]["code"], &p["risk"]["decision"]),
        (&json!("failed"), &json!("risk_denied"), &json!("deny")),
        "{p}"
    );
    assert_eq!(p["risk"]["rules"][0]["rule"], rule, "{p}");
}

/// The app method.
fn app_method() -> Value {
    json!({"type": "app"})
}

/// Creates a payment of `amount_minor` by `method` for `payer`, asserting 200.
async fn pay_as(m: &Merchant<'_>, amount_minor: i64, method: Value, payer: Value) -> Value {
    m.create_payment_ok(&with_payer(payment_request(amount_minor, method), payer))
        .await
}

/// A preview assessment (`POST /v1/risk/assessments`) of a CNY 10.00 app payment.
async fn preview_app_payment(m: &Merchant<'_>, payer: &Value) -> (u16, Value) {
    let body = json!({"amount_minor": 1000, "currency": "CNY",
        "method": app_method(), "payer": payer});
    m.post("/v1/risk/assessments", &body).await
}

/// The AML reports of `day` as JSON, asserting 200.
async fn aml_reports(m: &Merchant<'_>, day: &str) -> Value {
    let (status, list) = m.get(&format!("/v1/risk/aml-reports?day={day}")).await;
    assert_eq!(status, 200, "{list}");
    list
}

#[test]
fn a_blocked_device_is_denied_and_the_payment_records_the_rules_version() {
    // Proves a device block list hit denies, and the stored payment (read back through
    // query) shows the decision, the rule and the configuration version that decided.
    run(|app| async move {
        let m = app.new_merchant().await;
        assert_eq!(rules(&m).await["version"], 1);
        let v = put_rules(&m, &json!({"blocklist": {"device_ids": ["dev-stolen-1"]}})).await;
        assert_eq!(v["version"], 2, "{v}");
        let payer = json!({"id": unique("u"), "device_id": "dev-stolen-1"});
        let p = pay_as(&m, 1250, qr_customer(), payer).await;
        assert_eq!(p["status"], "failed", "{p}");
        assert_eq!(p["failure"]["code"], "risk_denied", "{p}");
        let stored = m.payment(p["id"].as_str().unwrap()).await;
        let risk = &stored["risk"];
        assert_eq!(
            (&risk["decision"], &risk["rules_version"]),
            (&json!("deny"), &json!(2)),
            "{stored}"
        );
        assert_eq!(risk["rules"][0]["rule"], "blocklist.device_id", "{stored}");
        // Another device of the same merchant still pays.
        let ok = pay_as(&m, 1250, qr_customer(), json!({"device_id": "dev-fine-1"})).await;
        assert_eq!(ok["status"], "succeeded");
    });
}

#[test]
fn the_sixth_rapid_payment_is_challenged_and_the_otp_confirm_completes_it() {
    // Proves velocity counting across real payments: five in a minute pass, the sixth
    // gets a challenge (enter_otp, SMS to the payer's phone) and the code completes it.
    run(|app| async move {
        let m = app.new_merchant().await;
        let phone = unique_phone();
        let payer = json!({"id": unique("u"), "phone": phone});
        for n in 1..=5 {
            let p = pay_as(&m, 1000 + n, qr_customer(), payer.clone()).await;
            assert_eq!(p["status"], "succeeded", "payment {n}: {p}");
            assert_eq!(p["risk"]["decision"], "allow", "payment {n}: {p}");
        }
        let sixth = pay_as(&m, 1006, qr_customer(), payer.clone()).await;
        assert_eq!(sixth["risk"]["decision"], "challenge", "{sixth}");
        assert_eq!(
            sixth["risk"]["rules"][0]["rule"], "velocity.payer.1m.count",
            "{sixth}"
        );
        assert_eq!(sixth["status"], "requires_customer_action", "{sixth}");
        assert_eq!(sixth["next_action"]["type"], "enter_otp", "{sixth}");
        let code = app.sms_code(&phone).await;
        let id = sixth["id"].as_str().unwrap();
        let path = format!("/v1/payments/{id}/confirm");
        let (status, confirmed) = m.post(&path, &json!({"otp": code})).await;
        assert_eq!(status, 200, "{confirmed}");
        assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    });
}

#[test]
fn a_structuring_pattern_raises_an_aml_record_listed_as_json_and_csv() {
    // Proves three payments just under CNY 50,000 in a day send the third to review
    // with aml.structuring, and the day's listing shows the report in JSON and CSV
    // (plus the large-value report the running total triggered).
    run(|app| async move {
        let m = app.new_merchant().await;
        let payer = json!({"id": unique("u")});
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(pay_as(&m, 4_600_000, app_method(), payer.clone()).await);
        }
        let third = &ids[2];
        assert_eq!(third["status"], "requires_review", "{third}");
        let fired: Vec<&str> = third["risk"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert!(fired.contains(&"aml.structuring"), "{third}");
        let day = report_day_now();
        let list = aml_reports(&m, &day).await;
        assert_eq!(
            (&list["object"], &list["day"]),
            (&json!("list"), &json!(day))
        );
        let reports = list["data"].as_array().unwrap();
        let structuring = reports
            .iter()
            .find(|r| r["kind"] == "structuring")
            .unwrap_or_else(|| panic!("no structuring report: {list}"));
        assert_eq!(structuring["event_id"], third["id"], "{list}");
        assert_eq!(structuring["count_24h"], 3, "{list}");
        assert!(reports.iter().any(|r| r["kind"] == "large_value"), "{list}");
        let (status, csv) = m
            .get(&format!("/v1/risk/aml-reports?day={day}&format=csv"))
            .await;
        assert_eq!(status, 200, "{csv}");
        let csv = csv.as_str().expect("CSV is not JSON");
        let mut lines = csv.lines();
        assert!(
            lines.next().unwrap().starts_with("day,kind,merchant_id"),
            "{csv}"
        );
        let row = lines
            .find(|l| l.contains(",structuring,"))
            .unwrap_or_else(|| panic!("no structuring row: {csv}"));
        assert!(row.contains("46000.00,"), "{row}");
        let auth = format!("Bearer {}", m.secret_key);
        let path = format!("/v1/risk/aml-reports?day={day}");
        let headers = [("authorization", auth.as_str()), ("accept", "text/csv")];
        let (status, by_accept) = app.request("GET", &path, &headers, Vec::new()).await;
        assert_eq!((status, by_accept.as_str()), (200, Some(csv)));
        let bad = m.get("/v1/risk/aml-reports?day=2026-02-30").await;
        assert_error_param(&bad, 400, "parameter_invalid", "day");
    });
}

#[test]
fn a_review_is_approved_and_the_payment_proceeds() {
    // Proves a merchant's own rule (a low app limit worth 80 points) holds a payment in
    // requires_review, and approving it sends it on to the channel.
    run(|app| async move {
        let m = app.new_merchant().await;
        let mut doc = editable(rules(&m).await);
        for limit in doc["per_transaction_max"].as_array_mut().unwrap() {
            if limit["method"] == "app" {
                limit["max_minor"] = json!(1000);
            }
        }
        doc["weights"]["per_transaction_max"] = json!(80);
        assert_eq!(put_rules(&m, &doc).await["version"], 2);
        let p = m
            .create_payment_ok(&payment_request(2000, app_method()))
            .await;
        assert_eq!(
            (&p["status"], &p["risk"]["decision"]),
            (&json!("requires_review"), &json!("review")),
            "{p}"
        );
        let id = p["id"].as_str().unwrap();
        let path = format!("/v1/payments/{id}/review");
        let (status, approved) = m.post(&path, &json!({"decision": "approve"})).await;
        assert_eq!(status, 200, "{approved}");
        assert_eq!(approved["status"], "requires_customer_action", "{approved}");
        assert_eq!(approved["next_action"]["type"], "app_order", "{approved}");
        assert_eq!(approved["risk"]["rules_version"], 2, "{approved}");
    });
}

#[test]
fn a_bad_rules_put_names_the_field_and_changes_nothing() {
    // Proves invalid configurations are 400s naming the exact field and leave the
    // stored version untouched.
    run(|app| async move {
        let m = app.new_merchant().await;
        let put = |body: Value| {
            let m = &m;
            async move { m.app.put("/v1/risk/rules", &m.secret_key, &body).await }
        };
        let r =
            put(json!({"thresholds": {"challenge_at": 50, "review_at": 10, "deny_at": 100}})).await;
        assert_error_param(&r, 400, "parameter_invalid", "thresholds.review_at");
        let r = put(json!({"velocity": [{"dimension": "payer", "window": "2m",
            "max_count": 1, "contribution": 1}]}))
        .await;
        assert_error_param(&r, 400, "parameter_invalid", "velocity[0].window");
        let r = put(json!({"blocklist": {"ips": ["10.0.0.0/33"]}})).await;
        assert_error_param(&r, 400, "parameter_invalid", "blocklist.ips[0]");
        let r = put(
            json!({"aml": {"large_value_daily_minor": 1, "day_utc_offset_minutes": 0,
            "colour": "red"}}),
        )
        .await;
        assert_error_param(&r, 400, "unknown_field", "aml.colour");
        let r = put(json!({"version": 7})).await;
        assert_error_param(&r, 400, "unknown_field", "version");
        let r = app
            .request(
                "PUT",
                "/v1/risk/rules",
                &[("authorization", &format!("Bearer {}", m.secret_key))],
                b"{not json".to_vec(),
            )
            .await;
        assert_error(&r, 400, "json_invalid");
        assert_eq!(rules(&m).await["version"], 1);
    });
}

#[test]
fn one_merchants_rules_never_reach_another() {
    // Proves rules are per merchant: A's block list and version do not touch B (B's
    // payment by the payer is allowed, A's is denied by blocklist.payer_id).
    run(|app| async move {
        let a = app.new_merchant().await;
        let b = app.new_merchant().await;
        put_rules(&a, &json!({"blocklist": {"payer_ids": ["u-shared"]}})).await;
        let rb = rules(&b).await;
        assert_eq!(rb["version"], 1, "{rb}");
        assert_eq!(rb["blocklist"]["payer_ids"], json!([]), "{rb}");
        let shared = json!({"id": "u-shared"});
        let pb = pay_as(&b, 1250, qr_customer(), shared.clone()).await;
        assert_eq!(pb["status"], "succeeded");
        assert_eq!(pb["risk"]["decision"], "allow", "{pb}");
        let pa = pay_as(&a, 1250, qr_customer(), shared).await;
        assert_denied_by(&pa, "blocklist.payer_id");
    });
}

#[test]
fn a_preview_assessment_counts_nothing() {
    // Proves POST /v1/risk/assessments decides without advancing counters: ten previews,
    // then five real payments are all still allowed.
    run(|app| async move {
        let m = app.new_merchant().await;
        let payer = json!({"id": unique("u")});
        for _ in 0..10 {
            let (status, a) = preview_app_payment(&m, &payer).await;
            assert_eq!(status, 200, "{a}");
            assert_eq!(
                (&a["object"], &a["decision"], &a["rules_version"]),
                (&json!("risk_assessment"), &json!("allow"), &json!(1)),
                "{a}"
            );
        }
        for n in 0..5 {
            let p = pay_as(&m, 1000, app_method(), payer.clone()).await;
            assert_eq!(p["risk"]["decision"], "allow", "payment {n}: {p}");
        }
        let (_, a) = preview_app_payment(&m, &payer).await;
        assert_eq!(
            a["decision"], "challenge",
            "the sixth would be challenged: {a}"
        );
    });
}

#[test]
fn the_internal_assessment_endpoint_is_refused_to_a_public_caller() {
    // Proves a merchant's own key, with or without a forged MAC header, cannot reach
    // authorize's internal endpoint: it answers like an unknown path.
    run(|app| async move {
        let m = app.new_merchant().await;
        let body = json!({"payment_id": "pay_0000000000000000000000", "amount_minor": 100,
            "currency": "CNY", "method": "app"});
        let r = m.post("/v1/risk/internal/assess", &body).await;
        assert_error(&r, 404, "route_not_found");
        let auth = format!("Bearer {}", m.secret_key);
        let forged = "0".repeat(64);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("spinpay-merchant-id", m.id.as_str()),
            ("spinpay-internal-mac", forged.as_str()),
        ];
        let r = app
            .request(
                "POST",
                "/v1/risk/internal/assess",
                &headers,
                body.to_string().into_bytes(),
            )
            .await;
        assert_error(&r, 404, "route_not_found");
    });
}

#[test]
fn rapid_pay_then_refund_cycles_raise_an_aml_record() {
    // Proves the refund component counts accepted refunds for the engine: three
    // payments refunded right away by one payer file a rapid_refund report.
    run(|app| async move {
        let m = app.new_merchant().await;
        let payer = json!({"id": unique("u")});
        for _ in 0..3 {
            let p = pay_as(&m, 1500, qr_customer(), payer.clone()).await;
            assert_eq!(p["status"], "succeeded", "{p}");
            let path = format!("/v1/payments/{}/refunds", p["id"].as_str().unwrap());
            let (status, r) = m.post(&path, &json!({"amount_minor": 1500})).await;
            assert_eq!(status, 200, "{r}");
        }
        let day = report_day_now();
        let list = aml_reports(&m, &day).await;
        let rapid = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "rapid_refund")
            .unwrap_or_else(|| panic!("no rapid_refund report: {list}"));
        assert_eq!(rapid["count_24h"], 3, "{list}");
    });
}

#[test]
fn a_block_list_of_thousands_fits_in_one_put_and_applies() {
    // Proves the rules endpoint takes bodies far above the 16 KiB of other requests
    // (5,000 devices, ~90 KB) and the last entry still blocks (denied by
    // blocklist.device_id).
    run(|app| async move {
        let m = app.new_merchant().await;
        let devices: Vec<String> = (0..5_000).map(|i| format!("device-fleet-{i:05}")).collect();
        let v = put_rules(&m, &json!({"blocklist": {"device_ids": devices}})).await;
        assert_eq!(
            v["blocklist"]["device_ids"].as_array().unwrap().len(),
            5_000
        );
        let last = json!({"device_id": "device-fleet-04999"});
        let p = pay_as(&m, 1250, qr_customer(), last).await;
        assert_denied_by(&p, "blocklist.device_id");
    });
}
