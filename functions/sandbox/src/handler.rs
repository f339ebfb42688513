//! The HTTP side of the sandbox: routing, signature checks, storage and delivery.
//! Decisions are in [`crate::sim`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::{Method, Request};
use spinpay_channels::sandbox::wire::{
    self, CreatePayment, CreateRefund, Op, PaymentAction, RefundQuery, SendSms, SmsAnswer,
};
use spinpay_core::crypto::{Secret, sign_header, verify_header};
use spinpay_core::repo::{RepoError, Repository};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;
use spinpay_guest::outbound::{self, OutboundRequest};

use crate::sim::{self, Delivery, SandboxPayment, SimError};

/// The key-value label the sandbox keeps its state in. The simulated provider shares the app's default store (its keys are all under `sbx:`),
/// so `spin up` needs no runtime-config file to run it.
const STORE_LABEL: &str = "default";
/// Largest request body.
const BODY_BYTES_MAX: u64 = 64 * 1024;
/// Compare-and-swap attempts per write.
const CAS_RETRIES_MAX: u32 = 64;
/// Deadline for delivering a notification.
const NOTIFY_TIMEOUT_MS: u64 = 5_000;

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let op = [
        Op::PaymentCreate,
        Op::PaymentCapture,
        Op::PaymentCancel,
        Op::PaymentQuery,
        Op::RefundCreate,
        Op::RefundQuery,
        Op::SmsSend,
    ]
    .into_iter()
    .find(|op| op.path() == path);
    let body = match inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => {
            return plain_error(&SimError {
                status: 413,
                code: "body_too_large",
                message: e.to_string(),
            });
        }
    };
    match (parts.method, op) {
        (Method::POST, Some(op)) => signed_operation(op, &parts.headers, &body).await,
        (Method::POST, None) if path == wire::PATH_CUSTOMER_PAY => customer_pay(&body).await,
        (Method::GET, None) if path.starts_with(wire::PATH_SMS_INBOX_PREFIX) => {
            sms_inbox(&path[wire::PATH_SMS_INBOX_PREFIX.len()..]).await
        }
        (_, Some(_)) => plain_error(&err(405, "method_not_allowed", "use POST")),
        (_, None) => plain_error(&err(404, "route_not_found", "no such sandbox endpoint")),
    }
}

fn err(status: u16, code: &'static str, message: impl Into<String>) -> SimError {
    SimError {
        status,
        code,
        message: message.into(),
    }
}

fn plain_error(e: &SimError) -> HttpResponse {
    inbound::json_response(e.status, &e.answer())
}

fn storage(e: RepoError) -> SimError {
    eprintln!("sandbox: storage error: {e}");
    err(
        503,
        "storage_unavailable",
        "the sandbox store is unavailable",
    )
}

fn signed_json(secret: &Secret<String>, status: u16, value: &impl Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("wire types serialize");
    let sig = sign_header(secret.expose().as_bytes(), env::now_unix_s(), &body);
    let resp = inbound::bytes_response(status, "application/json", body);
    inbound::with_header(resp, wire::SIGNATURE_HEADER, &sig)
}

fn parse<T: DeserializeOwned>(op: Op, body: &[u8]) -> Result<T, SimError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| err(400, "json_invalid", e.to_string()))?;
    let named: Option<Op> = value
        .get("op")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if named != Some(op) {
        let name = serde_json::to_string(&op).expect("ops serialize");
        return Err(err(
            400,
            "op_mismatch",
            format!("this endpoint takes op {name}"),
        ));
    }
    serde_json::from_value(value).map_err(|e| err(400, "parameter_invalid", e.to_string()))
}

async fn signed_operation(op: Op, headers: &http::HeaderMap, body: &[u8]) -> HttpResponse {
    let secret = match env::secret("sandbox_secret").await {
        Ok(s) => s,
        Err(e) => return plain_error(&err(503, "not_configured", e.to_string())),
    };
    let header = headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = secret.expose().as_bytes();
    if let Err(e) = verify_header(
        header,
        body,
        &[key],
        env::now_unix_s(),
        wire::SIGNATURE_TOLERANCE_S,
    ) {
        return signed_json(
            &secret,
            401,
            &err(401, "signature_invalid", e.to_string()).answer(),
        );
    }
    let repo = match KvRepository::open(STORE_LABEL).await {
        Ok(r) => r,
        Err(e) => return signed_json(&secret, 503, &storage(e).answer()),
    };
    let result = match op {
        Op::PaymentCreate => create(&repo, &secret, body).await,
        Op::PaymentCapture | Op::PaymentCancel | Op::PaymentQuery => action(&repo, op, body).await,
        Op::RefundCreate => refund(&repo, &secret, body).await,
        Op::RefundQuery => refund_query(&repo, body).await,
        Op::SmsSend => send_sms(&repo, body).await,
    };
    match result {
        Ok((value, Delivery::Normal)) => signed_json(&secret, 200, &value),
        // The pause already happened in the operation (before its notification).
        Ok((value, Delivery::Slow)) => signed_json(&secret, 200, &value),
        Ok((_, Delivery::Garbage)) => inbound::bytes_response(
            200,
            "text/html",
            b"<html><body>502 upstream hiccup".to_vec(),
        ),
        Err(e) => signed_json(&secret, e.status, &e.answer()),
    }
}

async fn pause_if_slow(delivery: Delivery) {
    match delivery {
        Delivery::Slow => {
            let ns = sim::SLOW_ANSWER_MS.saturating_mul(1_000_000);
            spin_sdk::wasip3::clocks::monotonic_clock::wait_for(ns).await;
        }
        Delivery::Normal | Delivery::Garbage => {}
    }
}

type Answer = Result<(serde_json::Value, Delivery), SimError>;

fn to_value(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("wire types serialize")
}

/// Reads a record, applies `f` and writes it back with compare-and-swap (bounded retries).
/// `f` returns whether it changed the record and a result.
async fn update<T: Serialize + DeserializeOwned, O>(
    repo: &KvRepository,
    key: &str,
    mut f: impl FnMut(Option<T>) -> Result<(Option<T>, O), SimError>,
) -> Result<O, SimError> {
    for _ in 0..CAS_RETRIES_MAX {
        let current = repo.get_for_update(key).await.map_err(storage)?;
        let version = current.as_ref().map_or(0, |v| v.version);
        let value = current.map(|v| decode::<T>(&v.value)).transpose()?;
        let (next, out) = f(value)?;
        let Some(next) = next else { return Ok(out) };
        let bytes = serde_json::to_vec(&next).expect("records serialize");
        match repo.put_if_version(key, version, bytes).await {
            Ok(_) => return Ok(out),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(storage(e)),
        }
    }
    Err(contention())
}

/// A stored record, decoded (an undecodable one is a storage failure).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SimError> {
    serde_json::from_slice(bytes).map_err(|e| storage(RepoError::Unavailable(e.to_string())))
}

/// A compare-and-swap that lost every one of its retries.
fn contention() -> SimError {
    err(409, "concurrent_modification", "too much contention; retry")
}

async fn create(repo: &KvRepository, secret: &Secret<String>, body: &[u8]) -> Answer {
    let req: CreatePayment = parse(Op::PaymentCreate, body)?;
    sim::validate_create(&req)?;
    let txn = format!("sbx_{}", hex::encode(env::random_bytes::<10>()));
    let now = env::now_ms();
    let key = sim::payment_key(&req.payment_id);
    let (record, fresh) = update(
        repo,
        &key,
        |existing: Option<SandboxPayment>| match existing {
            Some(rec) => {
                sim::replay_create(&rec, &req)?;
                Ok((None, (rec, false)))
            }
            None => {
                let c = sim::create(&req, &txn, now);
                Ok((Some(c.record.clone()), (c.record, true)))
            }
        },
    )
    .await?;
    // A replay claims again too: a create cut short between its two writes left a
    // pending record whose ref it never claimed (the claim of a ref it holds is a no-op).
    let record = claim_refs(repo, &key, record, now).await?;
    let delivery = sim::delivery_for(req.amount_minor);
    pause_if_slow(delivery).await;
    // An answer that will not arrive in time or is garbage is followed by a notification
    // of the final outcome, as a real provider would send. It describes the payment as it
    // is after the pause: a cancel or void that landed meanwhile must not be contradicted.
    if fresh
        && delivery != Delivery::Normal
        && let Some(current) = reread(repo, &req.payment_id).await
        && sim::notifies_after_create(&record, &current)
    {
        notify(secret, &current, None).await;
    }
    Ok((to_value(&sim::payment_answer(&record)), delivery))
}

/// Claims each payment ref of a pending record for it, or declines the record when
/// another payment the customer can still pay holds one ([`sim::claim_ref`]). Returns
/// the record as stored.
async fn claim_refs(
    repo: &KvRepository,
    key: &str,
    record: SandboxPayment,
    now_ms: i64,
) -> Result<SandboxPayment, SimError> {
    if record.status != wire::SandboxStatus::Pending {
        return Ok(record);
    }
    for hash in &record.payment_ref_hashes {
        if !claim_ref(repo, hash, &record.payment_id, now_ms).await? {
            return update(repo, key, |rec: Option<SandboxPayment>| {
                let mut rec =
                    rec.ok_or_else(|| err(404, "payment_not_found", "no such payment"))?;
                let changed = sim::decline_ref_in_use(&mut rec);
                Ok((changed.then(|| rec.clone()), rec))
            })
            .await;
        }
    }
    Ok(record)
}

/// Points `sbx:ref:<hash>` at `payment_id` unless another payable payment holds it;
/// returns whether `payment_id` holds it now. The write is a compare-and-swap on the
/// entry as read, so of two creates racing for one ref exactly one gets it: the other's
/// swap fails, and its retry finds the winner pending.
async fn claim_ref(
    repo: &KvRepository,
    hash: &str,
    payment_id: &str,
    now_ms: i64,
) -> Result<bool, SimError> {
    let key = sim::ref_key_for_hash(hash);
    for _ in 0..CAS_RETRIES_MAX {
        let entry = repo.get_for_update(&key).await.map_err(storage)?;
        let version = entry.as_ref().map_or(0, |v| v.version);
        let holder_id: Option<String> = entry.map(|v| decode(&v.value)).transpose()?;
        let holder = match holder_id.as_deref() {
            Some(id) if id != payment_id => read_payment(repo, id).await?,
            Some(_) | None => None,
        };
        match sim::claim_ref(payment_id, holder_id.as_deref(), holder.as_ref(), now_ms) {
            sim::RefClaim::Held => return Ok(true),
            sim::RefClaim::InUse => return Ok(false),
            sim::RefClaim::Take => {}
        }
        let bytes = serde_json::to_vec(payment_id).expect("strings serialize");
        match repo.put_if_version(&key, version, bytes).await {
            Ok(_) => return Ok(true),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(storage(e)),
        }
    }
    Err(contention())
}

async fn read_payment(
    repo: &KvRepository,
    payment_id: &str,
) -> Result<Option<SandboxPayment>, SimError> {
    let stored = repo
        .get(&sim::payment_key(payment_id))
        .await
        .map_err(storage)?;
    stored.map(|v| decode(&v.value)).transpose()
}

/// The payment as it is now, for a notification sent after a pause. `None` when it
/// cannot be read: then nothing is sent, since a missed notification is recovered by
/// spinpay's query while a stale one would contradict what happened meanwhile.
async fn reread(repo: &KvRepository, payment_id: &str) -> Option<SandboxPayment> {
    match read_payment(repo, payment_id).await {
        Ok(current) => current,
        Err(e) => {
            eprintln!("sandbox: no notification for {payment_id}: {}", e.message);
            None
        }
    }
}

async fn action(repo: &KvRepository, op: Op, body: &[u8]) -> Answer {
    let req: PaymentAction = parse(op, body)?;
    let key = sim::payment_key(&req.payment_id);
    let record = update(repo, &key, |rec: Option<SandboxPayment>| {
        let mut rec = rec.ok_or_else(|| err(404, "payment_not_found", "no such payment"))?;
        let before = rec.clone();
        match op {
            Op::PaymentCapture => sim::capture(&mut rec, req.amount_minor)?,
            Op::PaymentCancel => sim::cancel(&mut rec)?,
            Op::PaymentQuery
            | Op::PaymentCreate
            | Op::RefundCreate
            | Op::RefundQuery
            | Op::SmsSend => {}
        }
        let changed = rec != before;
        Ok((changed.then(|| rec.clone()), rec))
    })
    .await?;
    Ok((to_value(&sim::payment_answer(&record)), Delivery::Normal))
}

async fn refund(repo: &KvRepository, secret: &Secret<String>, body: &[u8]) -> Answer {
    let req: CreateRefund = parse(Op::RefundCreate, body)?;
    let channel_refund_id = format!("sbr_{}", hex::encode(env::random_bytes::<10>()));
    let now = env::now_ms();
    let key = sim::payment_key(&req.payment_id);
    let (record, index) = update(repo, &key, |rec: Option<SandboxPayment>| {
        let mut rec = rec.ok_or_else(|| err(404, "payment_not_found", "no such payment"))?;
        let before = rec.clone();
        let i = sim::refund(&mut rec, &req, &channel_refund_id, now)?;
        let changed = rec != before;
        Ok((changed.then(|| rec.clone()), (rec, i)))
    })
    .await?;
    let delivery = sim::delivery_for(req.amount_minor);
    let refund = &record.refunds[index];
    pause_if_slow(delivery).await;
    // As for a create: the late notification reports the refund as it is after the pause.
    if delivery != Delivery::Normal
        && let Some(current) = reread(repo, &req.payment_id).await
        && let Some(now_refund) = sim::refund_to_notify(&current, &req.refund_id)
    {
        notify(secret, &current, Some(now_refund)).await;
    }
    Ok((to_value(&sim::refund_answer(&record, refund)), delivery))
}

async fn refund_query(repo: &KvRepository, body: &[u8]) -> Answer {
    let req: RefundQuery = parse(Op::RefundQuery, body)?;
    let key = sim::payment_key(&req.payment_id);
    let (record, index) = update(repo, &key, |rec: Option<SandboxPayment>| {
        let mut rec = rec.ok_or_else(|| err(404, "payment_not_found", "no such payment"))?;
        let (i, changed) = sim::settle_refund(&mut rec, &req.refund_id)?;
        Ok((changed.then(|| rec.clone()), (rec, i)))
    })
    .await?;
    Ok((
        to_value(&sim::refund_answer(&record, &record.refunds[index])),
        Delivery::Normal,
    ))
}

async fn send_sms(repo: &KvRepository, body: &[u8]) -> Answer {
    let req: SendSms = parse(Op::SmsSend, body)?;
    if !sim::valid_phone(&req.phone) {
        return Err(err(400, "phone_invalid", "phone must be + and 8-15 digits"));
    }
    let len = req.text.chars().count();
    if len == 0 || len > wire::SMS_TEXT_LEN_MAX {
        return Err(err(400, "text_invalid", "text must be 1-480 characters"));
    }
    let stored = sim::StoredSms {
        phone: req.phone.clone(),
        text: req.text.clone(),
        sent_at_ms: env::now_ms(),
        message_id: req.message_id.clone(),
    };
    update(
        repo,
        &sim::sms_key(&req.phone),
        |old: Option<sim::StoredSms>| {
            let same = old.is_some_and(|o| o.message_id == stored.message_id);
            Ok(((!same).then(|| stored.clone()), ()))
        },
    )
    .await?;
    let answer = SmsAnswer {
        message_id: req.message_id,
        status: "sent".into(),
    };
    Ok((to_value(&answer), Delivery::Normal))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    payment_ref: String,
}

#[derive(Serialize)]
struct PayAnswer {
    payment_id: String,
    channel_txn_id: String,
    status: wire::SandboxStatus,
    notified: bool,
    notify_status: Option<u16>,
    notify_error: Option<String>,
}

async fn customer_pay(body: &[u8]) -> HttpResponse {
    match customer_pay_inner(body).await {
        Ok(answer) => inbound::json_response(200, &answer),
        Err(e) => plain_error(&e),
    }
}

async fn customer_pay_inner(body: &[u8]) -> Result<PayAnswer, SimError> {
    let req: PayRequest =
        serde_json::from_slice(body).map_err(|e| err(400, "json_invalid", e.to_string()))?;
    let secret = env::secret("sandbox_secret")
        .await
        .map_err(|e| err(503, "not_configured", e.to_string()))?;
    let repo = KvRepository::open(STORE_LABEL).await.map_err(storage)?;
    let not_found = || {
        err(
            404,
            "payment_ref_not_found",
            "no pending payment has this reference",
        )
    };
    let payment_id: String = match repo
        .get(&sim::ref_key(req.payment_ref.trim()))
        .await
        .map_err(storage)?
    {
        Some(v) => serde_json::from_slice(&v.value).map_err(|_| not_found())?,
        None => return Err(not_found()),
    };
    let now = env::now_ms();
    let record = update(
        &repo,
        &sim::payment_key(&payment_id),
        |rec: Option<SandboxPayment>| {
            let mut rec = rec.ok_or_else(not_found)?;
            sim::customer_pay(&mut rec, now)?;
            Ok((Some(rec.clone()), rec))
        },
    )
    .await?;
    let (notify_status, notify_error) = notify(&secret, &record, None).await;
    Ok(PayAnswer {
        payment_id: record.payment_id,
        channel_txn_id: record.channel_txn_id,
        status: record.status,
        notified: notify_status.is_some_and(|s| (200..300).contains(&s)),
        notify_status,
        notify_error,
    })
}

/// POSTs a signed notification to the payment's notify URL; returns the status or the error.
async fn notify(
    secret: &Secret<String>,
    record: &SandboxPayment,
    refund: Option<&sim::SandboxRefund>,
) -> (Option<u16>, Option<String>) {
    let id = format!("ntf_{}", hex::encode(env::random_bytes::<10>()));
    let n = sim::notification(record, refund, &id, env::now_ms());
    let body = serde_json::to_vec(&n).expect("wire types serialize");
    let sig = sign_header(secret.expose().as_bytes(), env::now_unix_s(), &body);
    let req = OutboundRequest::post_json(record.notify_url.clone(), body)
        .header(wire::SIGNATURE_HEADER, sig);
    match outbound::send(&req, NOTIFY_TIMEOUT_MS, 64 * 1024).await {
        Ok(resp) => (Some(resp.status), None),
        Err(e) => {
            eprintln!(
                "sandbox: notification {id} to {} failed: {e}",
                record.notify_url
            );
            (None, Some(e.to_string()))
        }
    }
}

async fn sms_inbox(raw_phone: &str) -> HttpResponse {
    let phone = raw_phone.replace("%2B", "+").replace("%2b", "+");
    if !sim::valid_phone(&phone) {
        return plain_error(&err(
            400,
            "phone_invalid",
            "phone must be + and 8-15 digits (%2B for +)",
        ));
    }
    let repo = match KvRepository::open(STORE_LABEL).await {
        Ok(r) => r,
        Err(e) => return plain_error(&storage(e)),
    };
    match repo.get(&sim::sms_key(&phone)).await {
        Ok(Some(v)) => match serde_json::from_slice::<sim::StoredSms>(&v.value) {
            Ok(sms) => inbound::json_response(
                200,
                &serde_json::json!({"phone": sms.phone, "text": sms.text, "sent_at_ms": sms.sent_at_ms}),
            ),
            Err(e) => plain_error(&storage(RepoError::Unavailable(e.to_string()))),
        },
        Ok(None) => plain_error(&err(404, "sms_not_found", "no SMS was sent to this phone")),
        Err(e) => plain_error(&storage(e)),
    }
}
