//! Resuming after a crash: a keyed retry that takes over an abandoned idempotency lock
//! finds what the crashed attempt stored instead of creating a second payment, and a
//! merchant order id claimed by a request that died before storing its payment is
//! freed once the claim is older than any request can run.

mod common;

use common::hooked::crash_repo;
use common::*;
use futures::executor::block_on;
use spinpay_core::api::PaymentResponse;
use spinpay_core::crypto::Keyring;
use spinpay_core::error::ApiError;
use spinpay_core::idempotency::IDEMPOTENCY_LOCK_TTL_MS;
use spinpay_core::model::{Merchant, PaymentStatus, RefundStatus};
use spinpay_core::repo::Repository;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;

fn fingerprint_body(amount_minor: i64) -> Vec<u8> {
    body(amount_minor, QRC, "").into_bytes()
}

/// A fresh repository, keyring, simulated channel and seeded rng.
fn world(seed: u64) -> (MemoryRepository, Keyring, SimChannel, SplitMix64) {
    (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(seed),
    )
}

/// Begins a keyed POST of `body` to `path` that must run (a fresh key or a taken-over
/// lock) and returns its operation seed; panics naming the key and time otherwise.
async fn begin_run(
    c: &Ctx<'_, MemoryRepository>,
    merchant_id: &str,
    key: &str,
    path: &str,
    body: &[u8],
) -> [u8; 16] {
    match idempotency_begin(c, merchant_id, Some(key), "POST", path, body)
        .await
        .unwrap()
    {
        Started::Run(Some(t)) => t.operation_seed(),
        other => panic!("{key} at {} ms does not run: {other:?}", c.now_ms),
    }
}

/// The keyed create of a 12.50 CNY qr_customer payment with the key's seed.
async fn create_seeded<R: Repository>(
    c: &Ctx<'_, R>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    m: &Merchant,
    seed: [u8; 16],
) -> Result<PaymentResponse, ApiError> {
    let new = new_payment(&body(1250, QRC, ""));
    create_payment_seeded(c, ch, &LocalRisk::default(), rng, m, new, Some(seed)).await
}

/// Runs `attempt(steps)` for steps = 0, 1, 2, … (the storage operations allowed before
/// the crash) until it reports that the operation finished before its crash point;
/// returns that step count.
fn at_every_crash_point(mut attempt: impl FnMut(u64) -> bool) -> u64 {
    let mut steps = 0;
    while !attempt(steps) {
        steps += 1;
    }
    steps
}

#[test]
fn a_retry_taking_over_a_crashed_attempts_lock_answers_with_its_payment() {
    // Proves the crashed attempt's payment is the retry's answer: same id, one payment,
    // one charge; and the lock is only taken over after its TTL.
    let (repo, keys, ch, mut rng) = world(7);
    block_on(async {
        let t0 = 10_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let path = "/v1/payments";
        let req_body = fingerprint_body(1250);
        // The first attempt claims the key, stores and charges its payment, then "dies"
        // before completing the idempotency record.
        let seed = begin_run(&c, &m.id, "order-77", path, &req_body).await;
        let paid = create_seeded(&c, &ch, &mut rng, &m, seed).await.unwrap();
        assert_eq!(paid.status, PaymentStatus::Succeeded);
        let charges = ch.authorizations();

        // A retry while the lock is fresh is refused.
        let early = ctx(&repo, &keys, t0 + 1_000);
        assert_eq!(
            idempotency_begin(&early, &m.id, Some("order-77"), "POST", path, &req_body).await,
            Err(ApiError::IdempotencyKeyInUse)
        );

        // After the TTL the retry takes over with the same seed and gets that payment.
        let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
        let retry_seed = begin_run(&late, &m.id, "order-77", path, &req_body).await;
        assert_eq!(retry_seed, seed);
        let again = create_seeded(&late, &ch, &mut rng, &m, retry_seed)
            .await
            .unwrap();
        assert_eq!(again.id, paid.id);
        assert_eq!(again.status, PaymentStatus::Succeeded);
        assert_eq!(ch.authorizations(), charges, "the retry charged again");
        let all = spinpay_core::api::ListParams::parse("limit=100").unwrap();
        let listed = list_payments(&late, &m.id, &all).await.unwrap();
        assert_eq!(listed.data.len(), 1, "one payment for one key");
    });
}

#[test]
fn a_keyed_retry_after_a_crash_at_any_step_lists_the_payment_once_and_charges_once() {
    // Proves that whichever storage operation a keyed create dies at (after 0, 1, 2, …
    // of them), the retry that takes over its lock ends with exactly one payment, named
    // once in the merchant's list, answered as the list shows it, and charged at most once.
    let keys = keyring();
    let path = "/v1/payments";
    let req_body = fingerprint_body(1250);
    let all = spinpay_core::api::ListParams::parse("limit=100").unwrap();
    let t0 = 10_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(11);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let seed = begin_run(&c, &m.id, "order-9", path, &req_body).await;
            let crash = crash_repo(&repo, steps);
            let first = create_seeded(&ctx(&crash, &keys, t0), &ch, &mut rng, &m, seed).await;
            let finished = first.is_ok() && crash.hooks.used.get() <= steps;

            let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
            let retry_seed = begin_run(&late, &m.id, "order-9", path, &req_body).await;
            let again = create_seeded(&late, &ch, &mut rng, &m, retry_seed)
                .await
                .unwrap();
            let at = format!("crash after {steps} storage operations");
            let listed = list_payments(&late, &m.id, &all).await.unwrap();
            let ids: Vec<&str> = listed.data.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(ids, [again.id.as_str()], "{at}: listed once");
            assert_eq!(listed.data[0].status, again.status, "{at}");
            assert!(ch.authorizations() <= 1, "{at}: charged twice");
            finished
        })
    });
    assert!(steps > 5, "the create has many crash points ({steps})");
}

#[test]
fn a_keyed_refund_retry_after_a_crash_at_any_step_refunds_once() {
    // Proves that whichever storage operation a keyed refund dies at (after 0, 1, 2, …
    // of them), the retry that takes over its lock ends with one refund of the key's
    // id: the channel asked once at most, the payment listing it once, its refunded
    // total equal to what the answer says was refunded.
    let keys = keyring();
    let t0 = 90_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(12);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
            let path = format!("/v1/payments/{}/refunds", p.id);
            let seed = begin_run(&c, &m.id, "refund-9", &path, b"{}").await;
            let crash = crash_repo(&repo, steps);
            let cc = ctx(&crash, &keys, t0);
            let first =
                create_refund_seeded(&cc, &ch, &mut rng, &m.id, &p.id, refund_of(300), Some(seed))
                    .await;
            let finished = first.is_ok() && crash.hooks.used.get() <= steps;

            let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
            let retry_seed = begin_run(&late, &m.id, "refund-9", &path, b"{}").await;
            let again = create_refund_seeded(
                &late,
                &ch,
                &mut rng,
                &m.id,
                &p.id,
                refund_of(300),
                Some(retry_seed),
            )
            .await
            .unwrap();
            let at = format!("crash after {steps} storage operations");
            let asked = ch.refunded_ids.borrow().clone();
            // One call at most: a crash after the call leaves the refund reserved, and
            // the retry answers with it (a pending one is settled by recheck).
            assert!(asked.len() <= 1, "{at}: refunded twice: {asked:?}");
            assert!(asked.iter().all(|id| *id == again.id), "{at}: {asked:?}");
            let after = get_payment(&late, &m.id, &p.id).await.unwrap();
            let listed: Vec<&str> = after.refunds.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(listed, [again.id.as_str()], "{at}");
            let refunded = if again.status == RefundStatus::Succeeded {
                300
            } else {
                0
            };
            assert_eq!(after.refunded_minor, refunded, "{at}: {again:?}");
            finished
        })
    });
    assert!(steps > 5, "the refund has many crash points ({steps})");
}

#[test]
fn an_order_id_claimed_by_a_request_that_died_is_freed_after_the_lock_ttl() {
    // Proves a claim naming a payment that never got stored blocks the order id only
    // while its request could still be running, then a new payment takes it over; a claim
    // naming a stored payment stays a duplicate forever.
    let (repo, keys, ch, mut rng) = world(8);
    block_on(async {
        let t0 = 50_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        // The dead request's claim: written, its payment never stored.
        let claim = serde_json::json!({"payment_id": "pay_deaddeaddeaddeaddeaddeaddead", "claimed_at_ms": t0});
        repo.put_if_version(
            &spinpay_core::keys::merchant_order(&m.id, "ord-1"),
            0,
            serde_json::to_vec(&claim).unwrap(),
        )
        .await
        .unwrap();
        let with_order = || body(900, QRC, r#","merchant_order_id":"ord-1""#);
        let early = ctx(&repo, &keys, t0 + 5_000);
        let e = pay_body(&early, &ch, &mut rng, &m, &with_order())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "merchant_order_id_duplicate");

        let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
        let p = pay_body(&late, &ch, &mut rng, &m, &with_order())
            .await
            .unwrap();
        assert_eq!(p.status, PaymentStatus::Succeeded);
        let found = find_payment_by_order_id(&late, &m.id, "ord-1")
            .await
            .unwrap();
        assert_eq!(found.id, p.id);

        // A live holder is never taken over, however old the claim.
        let much_later = ctx(&repo, &keys, t0 + 10 * IDEMPOTENCY_LOCK_TTL_MS);
        let e = pay_body(&much_later, &ch, &mut rng, &m, &with_order())
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::MerchantOrderIdDuplicate {
                id: "ord-1".into(),
                payment_id: p.id.clone()
            }
        );
    });
}

#[test]
fn a_refund_retry_after_a_crash_resumes_and_never_refunds_twice() {
    // Proves a keyed refund retry that takes over a crashed attempt's lock answers with
    // the refund that attempt reserved (no second channel refund), and one whose record
    // was written but never reserved goes on to reserve and refund it exactly once.
    let (repo, keys, ch, mut rng) = world(9);
    block_on(async {
        let t0 = 90_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        let path = format!("/v1/payments/{}/refunds", p.id);
        let req = || refund_of(300);
        let claim = async |at: i64, key: &str| {
            let c = ctx(&repo, &keys, at);
            begin_run(&c, &m.id, key, &path, b"{}").await
        };
        // (a) The whole refund happened, the idempotency record was never completed.
        let seed = claim(t0, "refund-a").await;
        let done = create_refund_seeded(&c, &ch, &mut rng, &m.id, &p.id, req(), Some(seed))
            .await
            .unwrap();
        let calls = ch.refunded_ids.borrow().len();
        let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
        let seed_again = claim(t0 + IDEMPOTENCY_LOCK_TTL_MS + 1, "refund-a").await;
        assert_eq!(seed_again, seed);
        let again = create_refund_seeded(&late, &ch, &mut rng, &m.id, &p.id, req(), Some(seed))
            .await
            .unwrap();
        assert_eq!(again.id, done.id);
        assert_eq!(ch.refunded_ids.borrow().len(), calls, "refunded twice");

        // (b) The crashed attempt wrote its record (as `create_refund_seeded` does first)
        //     but died before the reservation: the retry reserves and refunds it once.
        let seed_b = claim(t0, "refund-b").await;
        let orphan_id = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Refund, &seed_b);
        let record = repo
            .get(&spinpay_core::keys::refund(&done.id))
            .await
            .unwrap()
            .unwrap();
        let mut stored: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        stored["id"] = serde_json::json!(orphan_id);
        stored["state"] = serde_json::to_value(spinpay_core::machine::RefundState::new()).unwrap();
        repo.put_if_version(
            &spinpay_core::keys::refund(&orphan_id),
            0,
            serde_json::to_vec(&stored).unwrap(),
        )
        .await
        .unwrap();
        let resumed = create_refund_seeded(&late, &ch, &mut rng, &m.id, &p.id, req(), Some(seed_b))
            .await
            .unwrap();
        assert_eq!(resumed.id, orphan_id);
        assert_eq!(ch.refunded_ids.borrow().len(), calls + 1);
        let after = get_payment(&late, &m.id, &p.id).await.unwrap();
        assert_eq!(after.refunded_minor, 600, "{after:?}");
        assert_eq!(after.refunds.len(), 2);
    });
}
