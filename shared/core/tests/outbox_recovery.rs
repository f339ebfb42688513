//! The transactional outbox and merchant-notification delivery over the in-memory
//! repository: a crash at every storage operation of a state change still ends, after a
//! sweep, with exactly one event per state change and one delivery per event; the retry
//! schedule, giving up, redelivery and secret rotation.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;

use common::hooked::{at_every_blip, blip_repo, crash_repo};
use common::*;
use futures::executor::block_on;
use spinpay_core::crypto::{Keyring, verify_header};
use spinpay_core::model::{CaptureMode, Merchant, Payment, Refund, StoredEvent};
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QR: &str = r#"{"type":"qr_merchant"}"#;
const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;
const NOTIFY_URL: &str = "https://merchant.test/hooks/spinpay";
/// A time after every marker's grace period in these tests.
const LATER_MS: i64 = 10_000_000;

/// One POST: URL, headers, body.
type Post = (String, BTreeMap<String, String>, Vec<u8>);

/// A merchant endpoint: answers `statuses` in turn (then 200) and records every POST.
#[derive(Default)]
struct Endpoint {
    statuses: RefCell<Vec<u16>>,
    posts: RefCell<Vec<Post>>,
}

impl Endpoint {
    fn failing(n: usize) -> Endpoint {
        Endpoint {
            statuses: RefCell::new(vec![503; n]),
            ..Endpoint::default()
        }
    }

    fn event_ids(&self) -> Vec<String> {
        self.posts
            .borrow()
            .iter()
            .map(|(_, h, _)| h["spinpay-event-id"].clone())
            .collect()
    }
}

impl Notifier for Endpoint {
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<u16, String> {
        let headers = headers.iter().cloned().collect();
        self.posts
            .borrow_mut()
            .push((url.into(), headers, body.to_vec()));
        let mut statuses = self.statuses.borrow_mut();
        Ok(if statuses.is_empty() {
            200
        } else {
            statuses.remove(0)
        })
    }
    fn now_unix_s(&self) -> i64 {
        1_700_000_000
    }
}

async fn notified_merchant<R: Repository>(
    c: &Ctx<'_, R>,
    rng: &mut SplitMix64,
) -> (Merchant, String) {
    notified_merchant_at(c, rng, NOTIFY_URL).await
}

async fn notified_merchant_at<R: Repository>(
    c: &Ctx<'_, R>,
    rng: &mut SplitMix64,
    notify_url: &str,
) -> (Merchant, String) {
    let req = spinpay_core::api::NewMerchant {
        name: "Tea".into(),
        notify_url: Some(notify_url.into()),
        default_capture: CaptureMode::Automatic,
    };
    let created = create_merchant(c, rng, req).await.unwrap();
    let m = authenticate(c, Some(&format!("Bearer {}", created.secret_key)))
        .await
        .unwrap();
    (m, created.webhook_secret)
}

/// A notified merchant with one 1250 payment by `method`: (merchant, webhook secret,
/// payment id).
async fn merchant_with_payment<R: Repository>(
    c: &Ctx<'_, R>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    method: &str,
) -> (Merchant, String, String) {
    let (m, secret) = notified_merchant(c, rng).await;
    let p = pay(c, ch, rng, &m, 1250, method).await.unwrap();
    (m, secret, p.id)
}

/// A fresh repository, keyring and channel, an rng from `seed`, and one notified
/// merchant created at 1_000 ms with its webhook secret.
type World = (
    MemoryRepository,
    Keyring,
    SimChannel,
    SplitMix64,
    (Merchant, String),
);

fn notified_world(seed: u64) -> World {
    // The seed also drives any faults a test injects: each seed interleaves anew.
    let faults = spinpay_core::repo::memory::Faults::default();
    let (repo, keys) = (MemoryRepository::with_faults(seed, faults), keyring());
    let mut rng = SplitMix64::new(seed);
    let notified = block_on(notified_merchant(&ctx(&repo, &keys, 1_000), &mut rng));
    (repo, keys, SimChannel::default(), rng, notified)
}

fn stored<T: serde::de::DeserializeOwned>(repo: &MemoryRepository, key: &str) -> Option<T> {
    block_on(repo.get(key))
        .unwrap()
        .map(|v| serde_json::from_slice(&v.value).unwrap())
}

/// The merchant's event log as stored: every index slot's event.
fn log(repo: &MemoryRepository, merchant_id: &str) -> Vec<StoredEvent> {
    repo.keys_with_prefix(&format!("mch/{merchant_id}/evt/"))
        .iter()
        .map(|k| {
            let id: String = stored(repo, k).unwrap();
            stored(repo, &format!("evt/{id}")).unwrap()
        })
        .collect()
}

fn count(events: &[StoredEvent], object_id: &str, event_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e.data["id"] == object_id)
        .filter(|e| serde_json::to_value(e.event_type).unwrap() == event_type)
        .count()
}

/// Exactly one event per state change of every stored payment and refund, nothing
/// left in any outbox, each event in the log once, each with one delivered delivery.
fn assert_exactly_once(repo: &MemoryRepository, merchant_id: &str, endpoint: &Endpoint, at: &str) {
    let events = log(repo, merchant_id);
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "{at}: an event is twice in the log");
    for key in repo.keys_with_prefix("pay/") {
        let raw: serde_json::Value = stored(repo, &key).unwrap();
        assert!(
            raw.get("outbox").is_none(),
            "{at}: {key} still has pending events"
        );
        let p: Payment = serde_json::from_value(raw).unwrap();
        if p.merchant_id != merchant_id {
            continue;
        }
        let slot = spinpay_core::keys::payment_index(merchant_id, p.seq);
        assert_eq!(
            stored::<String>(repo, &slot).as_deref(),
            Some(p.id.as_str()),
            "{at}: {} is not in the merchant's list",
            p.id
        );
        assert_eq!(
            count(&events, &p.id, "payment.created"),
            1,
            "{at}: created of {}",
            p.id
        );
        let created = events
            .iter()
            .find(|e| e.data["id"] == p.id.as_str() && e.data["object"] == "payment")
            .unwrap();
        let status = format!("payment.{}", p.state.status.as_str());
        let expected = usize::from(created.data["status"] != p.state.status.as_str());
        assert_eq!(
            count(&events, &p.id, &status),
            expected,
            "{at}: {status} of {}",
            p.id
        );
        for rid in &p.state.refund_ids {
            let r: Refund = stored(repo, &format!("re/{rid}")).unwrap();
            assert_eq!(
                count(&events, rid, "refund.created"),
                1,
                "{at}: refund.created"
            );
            let status = format!(
                "refund.{}",
                serde_json::to_value(r.state.status)
                    .unwrap()
                    .as_str()
                    .unwrap()
            );
            if status != "refund.pending" {
                assert_eq!(count(&events, rid, &status), 1, "{at}: {status}");
            }
        }
    }
    for key in repo.keys_with_prefix("re/") {
        let raw: serde_json::Value = stored(repo, &key).unwrap();
        assert!(
            raw.get("outbox").is_none(),
            "{at}: {key} still has pending events"
        );
    }
    let mut posted = endpoint.event_ids();
    posted.sort_unstable();
    posted.dedup();
    assert_eq!(
        posted, ids,
        "{at}: the endpoint got every event (dedup by id)"
    );
    for id in &ids {
        let d: Delivery = stored(repo, &format!("dlv/{id}")).expect("a delivery per event");
        assert_eq!(d.status, DeliveryStatus::Delivered, "{at}: {id}");
    }
}

/// Runs `$op` with a crash after 0, 1, 2, … storage operations (on a fresh repository
/// prepared by `$setup` each time) until it completes without one; after each, a sweep
/// later than the grace period must leave exactly-once. Evaluates to the step count.
macro_rules! crash_everywhere {
    ($name:expr, |$c:ident, $rng:ident| $setup:block, |$cc:ident, $rng2:ident, $state:ident| $op:block) => {{
        let keys = keyring();
        let mut k = 0_u64;
        loop {
            let repo = MemoryRepository::new();
            let mut $rng = SplitMix64::new(7);
            let $state = {
                let $c = ctx(&repo, &keys, 1_000);
                block_on(async { $setup })
            };
            let crash = crash_repo(&repo, k);
            let finished = {
                let $cc = ctx(&crash, &keys, 2_000);
                let $rng2 = &mut $rng;
                block_on(async { $op }).is_ok() && crash.hooks.used.get() <= k
            };
            let endpoint = Endpoint::default();
            let later = ctx(&repo, &keys, LATER_MS);
            let report = block_on(sweep(&later, &endpoint, &SweepRequest::default())).unwrap();
            assert!(!report.has_more, "{}: one sweep suffices", $name);
            let mid = &$state.0.id;
            assert_exactly_once(
                &repo,
                mid,
                &endpoint,
                &format!("{} crash after {k} ops", $name),
            );
            if finished {
                break k;
            }
            k += 1;
        }
    }};
}

#[test]
fn a_crash_at_any_step_of_creating_a_payment_loses_and_duplicates_no_event() {
    // Proves exactly-once for create_payment (payment.created + payment.succeeded) with
    // a crash after 0, 1, 2, … storage operations, each followed by a recovery sweep.
    let ch = SimChannel::default();
    let steps = crash_everywhere!(
        "create_payment",
        |c, rng| { notified_merchant(&c, &mut rng).await },
        |cc, rng, state| { pay(&cc, &ch, rng, &state.0, 1250, QRC).await }
    );
    assert!(steps > 10, "the flow has many crash points ({steps})");
}

#[test]
fn a_crash_at_any_step_of_a_paid_notification_loses_and_duplicates_no_event() {
    // Proves exactly-once for the notification that moves a QR payment to succeeded.
    let ch = SimChannel::default();
    crash_everywhere!(
        "notification",
        |c, rng| { merchant_with_payment(&c, &ch, &mut rng, QR).await },
        |cc, rng, state| {
            let n = PaymentNotification {
                channel: spinpay_core::model::Channel::Sandbox,
                payment_id: state.2.clone(),
                report: ChannelReport {
                    outcome: ChannelOutcome::Succeeded { channel_ref: None },
                    amount_minor: Some(1250),
                    currency: Some("CNY".into()),
                },
            };
            apply_payment_notification(&cc, rng, &n).await
        }
    );
}

#[test]
fn a_crash_at_any_step_of_a_refund_loses_and_duplicates_no_event() {
    // Proves exactly-once for create_refund (refund.created + refund.succeeded).
    let ch = SimChannel::default();
    crash_everywhere!(
        "create_refund",
        |c, rng| { merchant_with_payment(&c, &ch, &mut rng, QRC).await },
        |cc, rng, state| {
            create_refund(&cc, &ch, rng, &state.0.id, &state.2, refund_of(500)).await
        }
    );
}

#[test]
fn a_crash_at_any_step_of_a_sweep_is_finished_by_the_next_sweep() {
    // Proves the sweep itself is crash-safe: a payment whose writer died before
    // publishing, a sweep crashing after k operations, then a clean sweep → exactly once.
    let (keys, ch) = (keyring(), SimChannel::default());
    for k in 0..200_u64 {
        let repo = MemoryRepository::new();
        let mut rng = SplitMix64::new(3);
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = block_on(notified_merchant(&c, &mut rng));
        // The writer stops right after its state write (12 ops: marker, payment, index…).
        let crash = crash_repo(&repo, 12);
        let cc = ctx(&crash, &keys, 2_000);
        let _ = block_on(pay(&cc, &ch, &mut rng, &m, 1250, QRC));
        let pay_key = &repo.keys_with_prefix("pay/")[0];
        let raw: serde_json::Value = stored(&repo, pay_key).unwrap();
        assert!(raw["outbox"].as_array().is_some_and(|o| !o.is_empty()));
        let endpoint = Endpoint::default();
        let crash = crash_repo(&repo, k);
        let cc = ctx(&crash, &keys, LATER_MS);
        let first = block_on(sweep(&cc, &endpoint, &SweepRequest::default()));
        // An attempt the crashed sweep claimed is retried on schedule.
        let later = ctx(&repo, &keys, LATER_MS + RETRY_DELAYS_MS[0]);
        block_on(sweep(&later, &endpoint, &SweepRequest::default())).unwrap();
        assert_exactly_once(
            &repo,
            &m.id,
            &endpoint,
            &format!("sweep crash after {k} ops"),
        );
        if first.is_ok() && crash.hooks.used.get() <= k {
            return;
        }
    }
    panic!("the sweep never completed within 200 operations");
}

/// Sweeps `merchant_id` at `now_ms` and returns the report.
fn sweep_at(repo: &MemoryRepository, endpoint: &Endpoint, mid: &str, now_ms: i64) -> SweepReport {
    let keys = keyring();
    let c = ctx(repo, &keys, now_ms);
    let req = SweepRequest {
        limit: None,
        merchant_id: Some(mid.to_string()),
        wall_clock_ms: None,
    };
    block_on(sweep(&c, endpoint, &req)).unwrap()
}

fn delivery_of(repo: &MemoryRepository, event_id: &str) -> Delivery {
    stored(repo, &format!("dlv/{event_id}")).unwrap()
}

#[test]
fn failed_deliveries_follow_the_retry_schedule_then_give_up() {
    // Proves attempts at 0, +15 s, +1 min, +5 min, +15 min, +1 h, +6 h, +24 h (none
    // early), then `failed` with the last status kept; a redelivery starts a new round.
    let (repo, keys, ch, mut rng, (m, _)) = notified_world(5);
    let c = ctx(&repo, &keys, 1_000);
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QR)).unwrap();
    let created = log(&repo, &m.id)[0].id.clone();
    let events = log(&repo, &m.id).len() as u32;
    assert_eq!(
        events, 2,
        "payment.created and payment.requires_customer_action"
    );
    let endpoint = Endpoint::failing(100);
    let mut now = 1_000;
    for (attempt, wait) in std::iter::once(0).chain(RETRY_DELAYS_MS).enumerate() {
        now += wait;
        let early = sweep_at(&repo, &endpoint, &m.id, now - 1);
        assert_eq!(
            early.attempted,
            0,
            "attempt {} not before its time",
            attempt + 1
        );
        let r = sweep_at(&repo, &endpoint, &m.id, now);
        assert_eq!(r.attempted, events, "attempt {} of each event", attempt + 1);
        let d = delivery_of(&repo, &created);
        assert_eq!(d.attempts, attempt as u32 + 1);
        assert_eq!(d.last_response_status, Some(503));
    }
    let d = delivery_of(&repo, &created);
    assert_eq!(
        (d.status, d.next_attempt_at_ms),
        (DeliveryStatus::Failed, None)
    );
    assert_eq!(d.attempts, DELIVERY_ATTEMPTS_MAX);
    assert_eq!(
        sweep_at(&repo, &endpoint, &m.id, now + 86_400_000 * 7).attempted,
        0
    );
    let c = ctx(&repo, &keys, now + 1);
    let again = block_on(redeliver_event(&c, &m, &created)).unwrap();
    assert_eq!((again.status, again.attempts), (DeliveryStatus::Pending, 0));
    *endpoint.statuses.borrow_mut() = Vec::new();
    let r = sweep_at(&repo, &endpoint, &m.id, now + 1);
    assert_eq!((r.attempted, r.delivered), (1, 1));
    let d = delivery_of(&repo, &created);
    assert_eq!((d.status, d.attempts_total), (DeliveryStatus::Delivered, 9));
}

/// Endpoints where the POSTs to [`SLOW_URL`] take 5 s and every other POST 10 ms, on
/// a clock only the POSTs move.
#[derive(Default)]
struct SlowAndFast {
    clock_ms: std::cell::Cell<i64>,
    posts: RefCell<Vec<String>>,
}

const SLOW_URL: &str = "https://slow.test/hooks";

impl Notifier for SlowAndFast {
    async fn post(&self, url: &str, _: &[(String, String)], _: &[u8]) -> Result<u16, String> {
        self.posts.borrow_mut().push(url.to_string());
        let took = if url == SLOW_URL { 5_000 } else { 10 };
        self.clock_ms.set(self.clock_ms.get() + took);
        if url == SLOW_URL {
            Err("no answer within 5000 ms".into())
        } else {
            Ok(200)
        }
    }
    fn now_unix_s(&self) -> i64 {
        self.clock_ms.get() / 1000
    }
    fn now_unix_ms(&self) -> i64 {
        self.clock_ms.get()
    }
}

#[test]
fn a_slow_endpoint_ends_a_sweep_early_and_the_next_sweep_serves_the_other_merchants() {
    // Proves a sweep begins no attempt once SWEEP_ATTEMPTS_WINDOW_MS have passed (answering
    // has_more), and moves on from the merchant it stopped at: with three merchants whose
    // endpoint takes 5 s per POST and one whose endpoint answers at once, every sweep makes
    // at most one slow attempt, and the fast merchant's events are delivered within as
    // many sweeps as there are merchants, whichever comes first in the round.
    let (repo, keys) = (MemoryRepository::new(), keyring());
    let (ch, mut rng) = (SimChannel::default(), SplitMix64::new(31));
    let c = ctx(&repo, &keys, 1_000);
    let mut slow = Vec::new();
    for _ in 0..3 {
        let (m, _) = block_on(notified_merchant_at(&c, &mut rng, SLOW_URL));
        for amount in [1250, 1300] {
            block_on(pay(&c, &ch, &mut rng, &m, amount, QR)).unwrap();
        }
        slow.push(m);
    }
    let (fast, _) = block_on(notified_merchant(&c, &mut rng));
    block_on(pay(&c, &ch, &mut rng, &fast, 1250, QR)).unwrap();
    let endpoint = SlowAndFast::default();
    let req = SweepRequest::default();
    let mut sweeps = 0;
    while endpoint
        .posts
        .borrow()
        .iter()
        .filter(|u| *u == NOTIFY_URL)
        .count()
        < 1
    {
        sweeps += 1;
        assert!(sweeps <= 4, "the fast merchant waited {sweeps} sweeps");
        let started = endpoint.clock_ms.get();
        let posts_before = endpoint.posts.borrow().len();
        let r = block_on(sweep(&c, &endpoint, &req)).unwrap();
        let slow_posts = endpoint.posts.borrow()[posts_before..]
            .iter()
            .filter(|u| *u == SLOW_URL)
            .count();
        assert!(
            slow_posts <= 1,
            "sweep {sweeps}: {slow_posts} slow attempts, {r:?}"
        );
        assert!(endpoint.clock_ms.get() - started < SWEEP_ATTEMPTS_WINDOW_MS + 5_000);
        if slow_posts == 1 {
            assert!(r.has_more, "{r:?}");
        }
    }
    let fast_id = fast.id.clone();
    let delivered = log(&repo, &fast_id)
        .iter()
        .map(|e| delivery_of(&repo, &e.id).status)
        .collect::<Vec<_>>();
    assert!(
        delivered.contains(&DeliveryStatus::Delivered),
        "{delivered:?}"
    );
}

#[test]
fn deliveries_are_signed_with_every_live_secret_and_verify_as_a_merchant_would() {
    // Proves the body is the event JSON, the signature verifies with the webhook secret,
    // rotation adds a second v1 (old and new both verify) until the grace period ends.
    let (repo, keys, ch, mut rng, (m, old_secret)) = notified_world(9);
    let c = ctx(&repo, &keys, 1_000);
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QR)).unwrap();
    let endpoint = Endpoint::default();
    sweep_at(&repo, &endpoint, &m.id, 1_000);
    let (url, headers, body) = endpoint.posts.borrow()[0].clone();
    assert_eq!(url, NOTIFY_URL);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (event["object"].as_str(), event["type"].as_str()),
        (Some("event"), Some("payment.created"))
    );
    let sig = &headers["spinpay-signature"];
    assert_eq!(sig.matches("v1=").count(), 1);
    assert_eq!(
        verify_header(sig, &body, &[old_secret.as_bytes()], 1_700_000_000, 300),
        Ok(())
    );

    let c = ctx(&repo, &keys, 2_000);
    let rotated = block_on(rotate_webhook_secret(
        &c,
        &mut rng,
        &m.id,
        None,
        Some(3600),
        None,
    ))
    .unwrap();
    assert_eq!(
        rotated.previous_secret_expires_at_ms,
        Some(2_000 + 3_600_000)
    );
    let m2 = stored::<Merchant>(&repo, &format!("mch/{}", m.id)).unwrap();
    let first = log(&repo, &m.id)[0].id.clone();
    block_on(redeliver_event(&c, &m2, &first)).unwrap();
    sweep_at(&repo, &endpoint, &m.id, 2_000);
    let (_, headers, body) = endpoint.posts.borrow().last().unwrap().clone();
    let sig = &headers["spinpay-signature"];
    assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
    for secret in [&old_secret, &rotated.webhook_secret] {
        assert_eq!(
            verify_header(sig, &body, &[secret.as_bytes()], 1_700_000_000, 300),
            Ok(())
        );
    }
    // A sweep whose schedule clock is moved past the grace period, at a wall clock still
    // inside it, signs with both: a forwarded clock never drops the old secret early.
    block_on(redeliver_event(&c, &m2, &first)).unwrap();
    let forwarded = ctx(&repo, &keys, 2_000 + 3_600_001);
    let req = SweepRequest {
        limit: None,
        merchant_id: Some(m.id.clone()),
        wall_clock_ms: Some(2_000),
    };
    let r = block_on(sweep(&forwarded, &endpoint, &req)).unwrap();
    assert_eq!(r.delivered, 1, "{r:?}");
    let (_, headers, _) = endpoint.posts.borrow().last().unwrap().clone();
    let sig = &headers["spinpay-signature"];
    assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
    // After the grace period only the new secret signs.
    let c = ctx(&repo, &keys, 2_000 + 3_600_001);
    block_on(redeliver_event(&c, &m2, &first)).unwrap();
    sweep_at(&repo, &endpoint, &m.id, 2_000 + 3_600_001);
    let (_, headers, body) = endpoint.posts.borrow().last().unwrap().clone();
    let sig = &headers["spinpay-signature"];
    assert_eq!(sig.matches("v1=").count(), 1);
    let old = verify_header(sig, &body, &[old_secret.as_bytes()], 1_700_000_000, 300);
    assert!(old.is_err());
    let new = verify_header(
        sig,
        &body,
        &[rotated.webhook_secret.as_bytes()],
        1_700_000_000,
        300,
    );
    assert_eq!(new, Ok(()));
}

/// The secrets among `secrets` whose `v1=` a fresh delivery of the merchant's first event
/// carries, swept at `now_ms`.
fn signing(repo: &MemoryRepository, mid: &str, now_ms: i64, secrets: &[&str]) -> Vec<bool> {
    let keys = keyring();
    let c = ctx(repo, &keys, now_ms);
    let m = stored::<Merchant>(repo, &format!("mch/{mid}")).unwrap();
    let first = log(repo, mid)[0].id.clone();
    block_on(redeliver_event(&c, &m, &first)).unwrap();
    let endpoint = Endpoint::default();
    sweep_at(repo, &endpoint, mid, now_ms);
    let (_, headers, body) = endpoint.posts.borrow().last().unwrap().clone();
    let sig = &headers["spinpay-signature"];
    secrets
        .iter()
        .map(|s| verify_header(sig, &body, &[s.as_bytes()], 1_700_000_000, 300).is_ok())
        .collect()
}

#[test]
fn a_webhook_secret_rotation_that_fails_or_is_retried_never_cuts_a_grace_short() {
    // Proves a rotation under an Idempotency-Key that fails at any storage operation (its
    // writes landed or not) leaves every secret that signed before it signing, and that
    // its retry answers one secret whether or not the failed attempt landed, rotating
    // once: afterwards the new secret and the one it replaced sign, the older one not.
    let seed = [7_u8; 16];
    let expected = {
        let (repo, keys, _, mut rng, (m, _)) = notified_world(21);
        let first = ctx(&repo, &keys, 2_000);
        block_on(rotate_webhook_secret(
            &first,
            &mut rng,
            &m.id,
            None,
            Some(3600),
            None,
        ))
        .unwrap();
        let c = ctx(&repo, &keys, 3_000);
        let r = block_on(rotate_webhook_secret(
            &c,
            &mut rng,
            &m.id,
            None,
            Some(3600),
            Some(seed),
        ));
        r.unwrap().webhook_secret
    };
    for committed in [false, true] {
        let blips = at_every_blip(|at| {
            let (repo, keys, ch, mut rng, (m, s0)) = notified_world(21);
            block_on(pay(&ctx(&repo, &keys, 1_000), &ch, &mut rng, &m, 1250, QR)).unwrap();
            let c = ctx(&repo, &keys, 2_000);
            let s1 = block_on(rotate_webhook_secret(
                &c,
                &mut rng,
                &m.id,
                None,
                Some(3600),
                None,
            ))
            .unwrap()
            .webhook_secret;
            let blip = blip_repo(&repo, at, committed);
            let c = ctx(&blip, &keys, 3_000);
            let failed = block_on(rotate_webhook_secret(
                &c,
                &mut rng,
                &m.id,
                None,
                Some(3600),
                Some(seed),
            ));
            match &failed {
                Ok(r) => assert_eq!(r.webhook_secret, expected),
                Err(e) => {
                    assert_eq!(e.code(), "storage_unavailable", "{e:?}");
                    let signs = signing(&repo, &m.id, 3_000, &[&s0, &s1]);
                    assert_eq!(signs, [true, true], "blip at {at} ({committed})");
                }
            }
            let c = ctx(&repo, &keys, 4_000);
            let again = block_on(rotate_webhook_secret(
                &c,
                &mut rng,
                &m.id,
                None,
                Some(3600),
                Some(seed),
            ));
            let again = again.unwrap();
            assert_eq!(again.webhook_secret, expected, "blip at {at} ({committed})");
            assert!(again.previous_secret_expires_at_ms.is_some());
            let signs = signing(&repo, &m.id, 4_000, &[&expected, &s1, &s0]);
            assert_eq!(signs, [true, true, false], "blip at {at} ({committed})");
            blip.hooks.hit.get()
        });
        assert!(blips > 3, "{blips} blips ({committed})");
    }
}

#[test]
fn a_landed_rotation_retried_after_a_later_one_failed_keeps_the_secret_it_replaced_signing() {
    // Proves a keyed rotation that landed (its answer lost), then another rotation that
    // fails at any storage operation, then the first one's retry: the retry answers the
    // first rotation's secret, and the secret it replaced still signs within its grace.
    let seed = [9_u8; 16];
    let blips = at_every_blip(|at| {
        let (repo, keys, ch, mut rng, (m, s0)) = notified_world(27);
        block_on(pay(&ctx(&repo, &keys, 1_000), &ch, &mut rng, &m, 1250, QR)).unwrap();
        let c = ctx(&repo, &keys, 2_000);
        let landed = block_on(rotate_webhook_secret(
            &c,
            &mut rng,
            &m.id,
            None,
            Some(3600),
            Some(seed),
        ));
        let s1 = landed.unwrap().webhook_secret;
        let blip = blip_repo(&repo, at, false);
        let c = ctx(&blip, &keys, 3_000);
        let failed = block_on(rotate_webhook_secret(
            &c,
            &mut rng,
            &m.id,
            None,
            Some(3600),
            None,
        ));
        if failed.is_err() {
            let c = ctx(&repo, &keys, 4_000);
            let again = block_on(rotate_webhook_secret(
                &c,
                &mut rng,
                &m.id,
                None,
                Some(3600),
                Some(seed),
            ));
            let again = again.unwrap();
            assert_eq!(again.webhook_secret, s1, "blip at {at}");
            assert_eq!(again.previous_secret_expires_at_ms, Some(2_000 + 3_600_000));
            let signs = signing(&repo, &m.id, 4_000, &[&s1, &s0]);
            assert_eq!(signs, [true, true], "blip at {at}");
        }
        blip.hooks.hit.get()
    });
    assert!(blips > 3, "{blips} blips");
}

#[test]
fn bad_sweep_rotation_and_redelivery_inputs_are_refused_without_a_change() {
    // Proves limit and grace bounds, an unknown merchant, a foreign event, and a
    // redelivery without notify_url are refused naming the field.
    let (repo, keys, ch, mut rng, (m, _)) = notified_world(11);
    let c = ctx(&repo, &keys, 1_000);
    let (other, _) = block_on(merchant(&c, &mut rng));
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QR)).unwrap();
    let endpoint = Endpoint::default();
    let bad = SweepRequest {
        limit: Some(0),
        merchant_id: None,
        wall_clock_ms: None,
    };
    let e = block_on(sweep(&c, &endpoint, &bad)).unwrap_err();
    assert_eq!(e.param(), Some("limit"));
    let bad = SweepRequest {
        limit: None,
        merchant_id: Some("mch_nope".into()),
        wall_clock_ms: None,
    };
    assert_eq!(
        block_on(sweep(&c, &endpoint, &bad)).unwrap_err().param(),
        Some("merchant_id")
    );
    let e = block_on(rotate_webhook_secret(
        &c,
        &mut rng,
        &m.id,
        None,
        Some(-1),
        None,
    ))
    .unwrap_err();
    assert_eq!(e.param(), Some("grace_period_s"));
    let before = stored::<Merchant>(&repo, &format!("mch/{}", m.id)).unwrap();
    assert_eq!(
        before.webhook_secret_sealed, m.webhook_secret_sealed,
        "no rotation happened"
    );
    let event = log(&repo, &m.id)[0].id.clone();
    let e = block_on(redeliver_event(&c, &other, &event)).unwrap_err();
    assert_eq!(e.code(), "resource_missing");
    let other_event = {
        block_on(pay(&c, &ch, &mut rng, &other, 1250, QR)).unwrap();
        log(&repo, &other.id)[0].id.clone()
    };
    let e = block_on(redeliver_event(&c, &other, &other_event)).unwrap_err();
    assert_eq!(
        (e.code(), e.param()),
        ("notify_url_missing", Some("notify_url"))
    );
    assert!(
        repo.keys_with_prefix(&format!("dlv/{other_event}"))
            .is_empty()
    );
    assert!(endpoint.posts.borrow().is_empty(), "nothing was sent");
}

#[test]
fn concurrent_refunds_with_injected_conflicts_publish_each_event_exactly_once() {
    // Proves 32 interleaved refunds (yields between read and write, 10% spurious CAS
    // conflicts) plus a concurrent sweep leave one refund.created / refund.succeeded per
    // accepted refund and one delivery per event.
    use spinpay_core::repo::memory::Faults;
    for seed in 1..=3_u64 {
        let (repo, keys, ch, mut rng, (m, _)) = notified_world(seed);
        let c = ctx(&repo, &keys, 1_000);
        let p = block_on(pay(&c, &ch, &mut rng, &m, 5000, QRC)).unwrap();
        repo.set_faults(Faults {
            conflict_per_mille: 100,
            unavailable_per_mille: 0,
            yield_per_mille: 700,
            unknown_outcome_per_mille: 0,
        });
        let c = ctx(&repo, &keys, 2_000);
        let mut rngs: Vec<SplitMix64> = (0..32).map(|i| SplitMix64::new(seed * 1000 + i)).collect();
        let endpoint = Endpoint::default();
        let refunds = rngs
            .iter_mut()
            .map(|r| create_refund(&c, &ch, r, &m.id, &p.id, refund_of(100)));
        let later = ctx(&repo, &keys, LATER_MS);
        let (results, _) = block_on(futures::future::join(
            futures::future::join_all(refunds),
            sweep(&later, &endpoint, &SweepRequest::default()),
        ));
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(accepted, 32, "seed {seed}: {results:?}");
        repo.set_faults(Faults::default());
        let after = ctx(&repo, &keys, LATER_MS * 2);
        let mut sweeps = 0;
        while block_on(sweep(&after, &endpoint, &SweepRequest::default()))
            .unwrap()
            .has_more
        {
            sweeps += 1;
            assert!(sweeps < 10, "bounded sweeps drain the backlog");
        }
        let events = log(&repo, &m.id);
        assert_eq!(
            events.len(),
            2 + 2 * 32,
            "seed {seed}: payment 2 + refunds 2 each"
        );
        assert_exactly_once(&repo, &m.id, &endpoint, &format!("seed {seed}"));
    }
}

#[test]
fn a_queue_slot_left_empty_is_tombstoned_so_a_slow_writer_cannot_fill_it_behind_the_head() {
    // Proves the sweep passes a drawn-but-unwritten delivery slot only after taking it
    // (a tombstone), so the late write fails (its writer draws again), and every event
    // is still delivered.
    let (repo, keys, ch, mut rng, (m, _)) = notified_world(13);
    let c = ctx(&repo, &keys, 1_000);
    // A "slow writer" draws slot 1 of the delivery queue and stalls.
    let seq_key = format!("mch/{}/seq/dlv", m.id);
    let stalled = block_on(repo.increment(&seq_key, 1)).unwrap();
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QRC)).unwrap();
    let endpoint = Endpoint::default();
    let r = block_on(sweep(
        &ctx(&repo, &keys, LATER_MS),
        &endpoint,
        &SweepRequest::default(),
    ));
    assert_eq!(r.unwrap().delivered, 2);
    let slot = format!("mch/{}/dlv/{stalled:020}", m.id);
    let tomb: serde_json::Value = stored(&repo, &slot).expect("the empty slot was taken");
    assert_eq!(tomb["id"], "", "a tombstone");
    let late = block_on(repo.put_if_version(&slot, 0, b"{}".to_vec()));
    assert!(
        matches!(late, Err(RepoError::Conflict { .. })),
        "the late write fails"
    );
    assert_exactly_once(&repo, &m.id, &endpoint, "tombstone");
}

#[test]
fn a_bounded_global_sweep_reaches_every_merchant_over_successive_calls() {
    // Proves limit bounds each call (has_more set), and successive calls resume where the
    // last stopped until all 4 merchants' 8 events are delivered once each.
    let (repo, keys, ch) = (MemoryRepository::new(), keyring(), SimChannel::default());
    let mut rng = SplitMix64::new(17);
    let c = ctx(&repo, &keys, 1_000);
    let mut merchants = Vec::new();
    for _ in 0..4 {
        let (m, _) = block_on(notified_merchant(&c, &mut rng));
        block_on(pay(&c, &ch, &mut rng, &m, 1250, QRC)).unwrap();
        merchants.push(m);
    }
    let endpoint = Endpoint::default();
    let req = SweepRequest {
        limit: Some(3),
        merchant_id: None,
        wall_clock_ms: None,
    };
    let mut calls = 0;
    loop {
        calls += 1;
        let r = block_on(sweep(&ctx(&repo, &keys, 2_000), &endpoint, &req)).unwrap();
        assert!(r.attempted <= 3, "{r:?}");
        if !r.has_more {
            break;
        }
        assert!(calls < 10, "the sweep keeps making progress");
    }
    assert!(calls >= 3, "8 attempts need at least 3 calls of 3");
    for m in &merchants {
        assert_exactly_once(&repo, &m.id, &endpoint_for(&endpoint, &repo, &m.id), &m.id);
    }
    assert_eq!(endpoint.posts.borrow().len(), 8);
}

#[test]
fn a_pass_over_more_merchants_than_one_call_visits_asks_to_be_called_again() {
    // Proves a global sweep and a reconciliation over 101 registered merchants answer
    // has_more after the first 100 (the scheduler then calls again at once instead of
    // waiting its interval), and not once the pass has reached the registry's end.
    let (repo, keys, ch) = (MemoryRepository::new(), keyring(), SimChannel::default());
    let mut rng = SplitMix64::new(23);
    let c = ctx(&repo, &keys, 1_000);
    for _ in 0..=SWEEP_MERCHANTS_MAX {
        let (m, _) = block_on(merchant(&c, &mut rng));
        block_on(pay(&c, &ch, &mut rng, &m, 1250, QR)).unwrap();
    }
    let endpoint = Endpoint::default();
    let req = SweepRequest {
        limit: None,
        merchant_id: None,
        wall_clock_ms: None,
    };
    let c = ctx(&repo, &keys, 2_000);
    let first = block_on(sweep(&c, &endpoint, &req)).unwrap();
    assert_eq!((first.merchants_visited, first.has_more), (100, true));
    let second = block_on(sweep(&c, &endpoint, &req)).unwrap();
    assert!(!second.has_more, "{second:?}");
    let req = ReconcileRequest {
        limit: None,
        merchant_id: None,
        wall_clock: None,
    };
    let first = block_on(reconcile(&c, &ch, &mut rng, &req)).unwrap();
    assert_eq!((first.merchants_visited, first.has_more), (100, true));
    let second = block_on(reconcile(&c, &ch, &mut rng, &req)).unwrap();
    assert!(!second.has_more, "{second:?}");
}

#[test]
fn a_merchant_whose_records_do_not_decode_never_stops_the_merchants_after_it() {
    // Proves a global sweep and a reconciliation pass over a merchant whose visit fails
    // on its own records, list it, and serve the merchants after it (the sweep delivers
    // their events); a storage outage still fails the whole call.
    let (repo, keys, ch) = (MemoryRepository::new(), keyring(), SimChannel::default());
    let mut rng = SplitMix64::new(29);
    let c = ctx(&repo, &keys, 1_000);
    let (broken, _) = block_on(notified_merchant(&c, &mut rng));
    block_on(pay(&c, &ch, &mut rng, &broken, 1250, QRC)).unwrap();
    let (fine, _) = block_on(notified_merchant(&c, &mut rng));
    block_on(pay(&c, &ch, &mut rng, &fine, 1250, QRC)).unwrap();
    let garbage = |key: &str| {
        let version = block_on(repo.get(key)).unwrap().map_or(0, |v| v.version);
        block_on(repo.put_if_version(key, version, b"not json".to_vec())).unwrap();
    };
    garbage(&format!("dlv/{}", log(&repo, &broken.id)[0].id));
    garbage(&spinpay_core::keys::queue_head(
        &spinpay_core::keys::reconcile_slots(&broken.id, 0),
    ));
    let endpoint = Endpoint::default();
    let req = SweepRequest {
        limit: None,
        merchant_id: None,
        wall_clock_ms: None,
    };
    let c = ctx(&repo, &keys, 2_000);
    let r = block_on(sweep(&c, &endpoint, &req)).unwrap();
    let failed: Vec<(&str, &str)> = r
        .merchants_failed
        .iter()
        .map(|f| (f.merchant_id.as_str(), f.code.as_str()))
        .collect();
    assert_eq!(failed, [(broken.id.as_str(), "internal_error")], "{r:?}");
    // The detail is for the component's log, never in the answer.
    assert!(r.merchants_failed[0].detail.contains("Internal"), "{r:?}");
    let answer = serde_json::to_string(&r).unwrap();
    assert!(!answer.contains("detail"), "{answer}");
    assert_exactly_once(
        &repo,
        &fine.id,
        &endpoint_for(&endpoint, &repo, &fine.id),
        "fine",
    );
    let req = ReconcileRequest {
        limit: None,
        merchant_id: None,
        wall_clock: None,
    };
    let r = block_on(reconcile(&c, &ch, &mut rng, &req)).unwrap();
    assert_eq!(r.merchants_failed.len(), 1, "{r:?}");
    assert_eq!(r.merchants_failed[0].merchant_id, broken.id);
    assert_eq!(r.merchants_visited, 2, "{r:?}");
    repo.set_faults(spinpay_core::repo::memory::Faults {
        unavailable_per_mille: 1000,
        ..Default::default()
    });
    let e = block_on(reconcile(&c, &ch, &mut rng, &req)).unwrap_err();
    assert_eq!(e.code(), "storage_unavailable");
}

/// The posts of `endpoint` that belong to `merchant_id`'s events.
fn endpoint_for(endpoint: &Endpoint, repo: &MemoryRepository, merchant_id: &str) -> Endpoint {
    let ids: Vec<String> = log(repo, merchant_id).into_iter().map(|e| e.id).collect();
    let posts = endpoint
        .posts
        .borrow()
        .iter()
        .filter(|(_, h, _)| ids.contains(&h["spinpay-event-id"]))
        .cloned()
        .collect();
    Endpoint {
        statuses: RefCell::new(Vec::new()),
        posts: RefCell::new(posts),
    }
}

#[test]
fn the_outbox_costs_a_bounded_number_of_storage_operations_per_payment() {
    // Proves an I/O budget: creating and settling a qr_customer payment (2 events, 2
    // deliveries) stays within a fixed number of reads and writes, and within a fixed
    // number of compare-and-swaps (each is a read and a swap in the store, and on Spin's
    // Redis store a connection of its own): the index slots are plain writes.
    let (repo, keys, ch, mut rng, (m, _)) = notified_world(19);
    let c = ctx(&repo, &keys, 1_000);
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QRC)).unwrap();
    let before = repo.counts();
    block_on(pay(&c, &ch, &mut rng, &m, 1250, QRC)).unwrap();
    let after = repo.counts();
    let (gets, puts, fresh, incs) = (
        after.gets - before.gets,
        after.puts - before.puts,
        after.fresh_puts - before.fresh_puts,
        after.increments - before.increments,
    );
    let counted = format!("{gets} gets, {puts} swaps, {fresh} plain writes, {incs} increments");
    eprintln!("one payment: {counted}");
    assert!(gets + puts + fresh + incs <= 24, "{counted}");
    assert!(puts <= 10, "{counted}");
    assert_eq!(
        fresh, 3,
        "the payment's and its 2 events' index slots: {counted}"
    );
}

#[test]
fn a_backlog_longer_than_the_queue_window_still_gets_every_first_attempt() {
    // Proves a failing endpoint with 120 waiting deliveries (window 100) does not starve
    // the newest: waiting ones move to the tail and the rest get their first attempt.
    let (repo, keys, ch, mut rng, (m, _)) = notified_world(23);
    let c = ctx(&repo, &keys, 1_000);
    for _ in 0..60 {
        block_on(pay(&c, &ch, &mut rng, &m, 1250, QRC)).unwrap();
    }
    let endpoint = Endpoint::failing(10_000);
    let req = SweepRequest {
        limit: Some(SWEEP_LIMIT_MAX),
        merchant_id: Some(m.id.clone()),
        wall_clock_ms: None,
    };
    for now in [1_000, 2_000, 3_000, 4_000] {
        block_on(sweep(&ctx(&repo, &keys, now), &endpoint, &req)).unwrap();
    }
    let never: Vec<String> = repo
        .keys_with_prefix("dlv/")
        .iter()
        .filter(|k| stored::<Delivery>(&repo, k).unwrap().attempts == 0)
        .cloned()
        .collect();
    assert_eq!(
        never,
        Vec::<String>::new(),
        "every delivery had its first attempt"
    );
    let attempts = endpoint.posts.borrow().len();
    assert_eq!(attempts, 120, "one attempt each, none early");
}
