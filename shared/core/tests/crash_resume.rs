//! Resuming after a crash: a keyed retry that takes over an abandoned idempotency lock
//! finds what the crashed attempt stored instead of creating a second payment or refund,
//! and carries on from there (a payment left `processing` goes to the channel again; a
//! capture, an accepted code or a review decision already stored is the answer, not a
//! 409), whichever storage operation the attempt died at; and a merchant order id
//! claimed by a request that died before storing its payment is freed once the claim is
//! older than any request can run.

mod common;

use common::hooked::{at_every_blip, at_every_crash_point, blip_repo, dies_after, world};
use common::*;
use futures::executor::block_on;
use spinpay_core::api::{NewRefund, PaymentResponse};
use spinpay_core::error::ApiError;
use spinpay_core::idempotency::IDEMPOTENCY_LOCK_TTL_MS;
use spinpay_core::model::{Merchant, NextAction, PaymentStatus, RefundStatus};
use spinpay_core::repo::Repository;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;
const QR: &str = r#"{"type":"qr_merchant"}"#;
const SMS: &str = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;

fn fingerprint_body(amount_minor: i64) -> Vec<u8> {
    body(amount_minor, QRC, "").into_bytes()
}

/// Begins a keyed POST of `body` to `path` that must run (a fresh key or a taken-over
/// lock) and returns what the operation is told of its key; panics naming the key and
/// time otherwise.
async fn begin_keyed(
    c: &Ctx<'_, MemoryRepository>,
    merchant_id: &str,
    key: &str,
    path: &str,
    body: &[u8],
) -> KeyedRun {
    match idempotency_begin(c, merchant_id, Some(key), "POST", path, body)
        .await
        .unwrap()
    {
        Started::Run(Some(t)) => t.keyed_run(),
        other => panic!("{key} at {} ms does not run: {other:?}", c.now_ms),
    }
}

/// [`begin_keyed`]'s operation seed.
async fn begin_run(
    c: &Ctx<'_, MemoryRepository>,
    merchant_id: &str,
    key: &str,
    path: &str,
    body: &[u8],
) -> [u8; 16] {
    begin_keyed(c, merchant_id, key, path, body).await.seed
}

/// The keyed create of a 12.50 CNY qr_customer payment with the key's seed.
async fn create_seeded<R: Repository, C: ChannelClient>(
    c: &Ctx<'_, R>,
    ch: &C,
    rng: &mut SplitMix64,
    m: &Merchant,
    seed: [u8; 16],
) -> Result<PaymentResponse, ApiError> {
    create_keyed(c, ch, rng, m, &body(1250, QRC, ""), seed).await
}

/// The keyed create of the payment `body` asks for, with the key's seed.
async fn create_keyed<R: Repository, C: ChannelClient>(
    c: &Ctx<'_, R>,
    ch: &C,
    rng: &mut SplitMix64,
    m: &Merchant,
    body: &str,
    seed: [u8; 16],
) -> Result<PaymentResponse, ApiError> {
    let new = new_payment(body);
    create_payment_seeded(c, ch, &LocalRisk::default(), rng, m, new, Some(seed)).await
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
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                create_seeded(&ctx(crash, &keys, t0), dying, &mut rng, &m, seed).await
            })
            .await;

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
            // A payment the crash left `processing` is sent to the channel again, which
            // charges one payment id once.
            assert_eq!(again.status, PaymentStatus::Succeeded, "{at}: {again:?}");
            assert_eq!(ch.charged(), [again.id.clone()].into(), "{at}");
            finished
        })
    });
    assert!(steps > 5, "the create has many crash points ({steps})");
}

#[test]
fn a_keyed_sms_create_retry_after_a_crash_at_any_step_gets_the_payer_a_code_that_works() {
    // Proves that whichever storage operation a keyed sms_otp create dies at (its code
    // perhaps stored but never sent), the retry that takes over its lock leaves the
    // payment waiting for a code that was sent and confirms it: one payment, succeeded.
    let keys = keyring();
    let path = "/v1/payments";
    let sms = body(1000, SMS, "");
    let all = spinpay_core::api::ListParams::parse("limit=100").unwrap();
    let t0 = 20_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(18);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let seed = begin_run(&c, &m.id, "sms-1", path, sms.as_bytes()).await;
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                create_keyed(&ctx(crash, &keys, t0), dying, &mut rng, &m, &sms, seed).await
            })
            .await;

            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let retry_seed = begin_run(&late, &m.id, "sms-1", path, sms.as_bytes()).await;
            let at = format!("crash after {steps} storage operations");
            let again = create_keyed(&late, &ch, &mut rng, &m, &sms, retry_seed)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(again.next_action, Some(NextAction::EnterOtp), "{at}");
            let ok = confirm_payment(
                &late,
                &ch,
                &mut rng,
                &m.id,
                &again.id,
                &ch.last_otp(),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("{at}: the code sent confirms: {e:?}"));
            assert_eq!(ok.status, PaymentStatus::Succeeded, "{at}");
            let listed = list_payments(&late, &m.id, &all).await.unwrap();
            assert_eq!(listed.data.len(), 1, "{at}: one payment");
            finished
        })
    });
    assert!(steps > 5, "the create has many crash points ({steps})");
}

#[test]
fn a_keyed_refund_retry_after_a_crash_at_any_step_refunds_once() {
    // Proves that whichever storage operation a keyed refund dies at (after 0, 1, 2, …
    // of them), the retry that takes over its lock ends with one refund of the key's
    // id, succeeded: the channel asked about no other refund, the payment listing it
    // once, its refunded total 300.
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
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                create_refund_seeded(
                    &cc,
                    dying,
                    &mut rng,
                    &m.id,
                    &p.id,
                    refund_of(300),
                    Some(seed),
                )
                .await
            })
            .await;

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
            // Only the key's refund: a crash before or after the channel call leaves it
            // reserved and `pending`, and the retry asks the channel (again: it refunds
            // one refund id once) instead of leaving it pending for good.
            assert!(asked.iter().all(|id| *id == again.id), "{at}: {asked:?}");
            assert_eq!(again.status, RefundStatus::Succeeded, "{at}: {again:?}");
            let after = get_payment(&late, &m.id, &p.id).await.unwrap();
            let listed: Vec<&str> = after.refunds.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(listed, [again.id.as_str()], "{at}");
            assert_eq!(after.refunded_minor, 300, "{at}: {again:?}");
            finished
        })
    });
    assert!(steps > 5, "the refund has many crash points ({steps})");
}

/// The retry of a keyed request after `IDEMPOTENCY_LOCK_TTL_MS`: at `t0` + TTL + 1.
fn after_the_lock_ttl(t0: i64) -> i64 {
    t0 + IDEMPOTENCY_LOCK_TTL_MS + 1
}

#[test]
fn a_keyed_capture_retry_after_a_crash_at_any_step_answers_with_the_capture() {
    // Proves that whichever storage operation a keyed partial capture dies at, the retry
    // that takes over its lock answers with the payment captured by the amount asked
    // (not `payment_not_capturable`), captured once; a new key is still refused.
    let keys = keyring();
    let t0 = 50_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(13);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let manual = body(1000, QRC, r#","capture":"manual""#);
            let p = pay_body(&c, &ch, &mut rng, &m, &manual).await.unwrap();
            let path = format!("/v1/payments/{}/capture", p.id);
            let req = br#"{"amount_minor":600}"#;
            let first_run = begin_keyed(&c, &m.id, "cap-1", &path, req).await;
            assert!(!first_run.resumes, "a fresh key resumes nothing");
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                capture_payment(&cc, dying, &mut rng, &m.id, &p.id, Some(600), false).await
            })
            .await;

            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let retry = begin_keyed(&late, &m.id, "cap-1", &path, req).await;
            assert!(retry.resumes, "a takeover resumes");
            let at = format!("crash after {steps} storage operations");
            let again = capture_payment(&late, &ch, &mut rng, &m.id, &p.id, Some(600), true)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(
                (again.status, again.captured_minor),
                (PaymentStatus::Succeeded, 600)
            );
            let stored = get_payment(&late, &m.id, &p.id).await.unwrap();
            assert_eq!(stored.captured_minor, 600, "{at}");

            let other = begin_keyed(&late, &m.id, "cap-2", &path, req).await;
            let e = capture_payment(&late, &ch, &mut rng, &m.id, &p.id, Some(600), other.resumes)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "payment_not_capturable", "{at}");
            finished
        })
    });
    assert!(steps > 2, "the capture has several crash points ({steps})");
}

#[test]
fn a_keyed_confirm_retry_after_a_crash_at_any_step_completes_the_payment_once() {
    // Proves that whichever storage operation a keyed OTP confirmation dies at (the code
    // accepted, the channel not yet asked, or asked and not yet stored), the retry that
    // takes over its lock ends with the payment succeeded and one payment id charged.
    let keys = keyring();
    let t0 = 70_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(14);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, SMS).await.unwrap();
            assert_eq!(p.next_action, Some(NextAction::EnterOtp));
            let code = ch.last_otp();
            let path = format!("/v1/payments/{}/confirm", p.id);
            let req = format!(r#"{{"otp":"{code}"}}"#);
            begin_keyed(&c, &m.id, "otp-1", &path, req.as_bytes()).await;
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                confirm_payment(&cc, dying, &mut rng, &m.id, &p.id, &code, false).await
            })
            .await;

            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let retry = begin_keyed(&late, &m.id, "otp-1", &path, req.as_bytes()).await;
            let at = format!("crash after {steps} storage operations");
            let again = confirm_payment(&late, &ch, &mut rng, &m.id, &p.id, &code, retry.resumes)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(again.status, PaymentStatus::Succeeded, "{at}");
            let stored = get_payment(&late, &m.id, &p.id).await.unwrap();
            assert_eq!(stored.status, PaymentStatus::Succeeded, "{at}");
            assert_eq!(ch.charged(), [p.id.clone()].into(), "{at}");
            finished
        })
    });
    assert!(
        steps > 2,
        "the confirmation has several crash points ({steps})"
    );
}

#[test]
fn a_keyed_review_retry_after_a_crash_at_any_step_carries_out_the_decision() {
    // Proves that whichever storage operation a keyed review dies at, the retry that
    // takes over its lock carries the decision out instead of `payment_not_in_review`:
    // an approved qr_merchant payment reaches the channel (its QR shown, one payment id
    // asked), an approved sms_otp payment has its code sent (and it confirms), a
    // declined one answers failed with `review_declined`.
    let keys = keyring();
    let t0 = 80_000;
    for (approve, method) in [(true, QR), (true, SMS), (false, QR)] {
        let steps = at_every_crash_point(|steps| {
            let (repo, _, ch, mut rng) = world(15);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let mut cfg = spinpay_core::riskengine::EngineConfig::default();
                cfg.weights.per_transaction_max = cfg.thresholds.review_at;
                let risky = LocalRisk { config: cfg };
                let new = new_payment(&body(6_000_000, method, ""));
                let p = create_payment(&c, &ch, &risky, &mut rng, &m, new)
                    .await
                    .unwrap();
                assert_eq!(p.status, PaymentStatus::RequiresReview);
                let path = format!("/v1/payments/{}/review", p.id);
                let req = format!(r#"{{"approve":{approve}}}"#);
                begin_keyed(&c, &m.id, "rev-1", &path, req.as_bytes()).await;
                let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                    let cc = ctx(crash, &keys, t0);
                    review_payment(&cc, dying, &mut rng, &m.id, &p.id, approve, false).await
                })
                .await;

                let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
                let retry = begin_keyed(&late, &m.id, "rev-1", &path, req.as_bytes()).await;
                let at = format!("approve {approve} {method}, crash after {steps} operations");
                let again =
                    review_payment(&late, &ch, &mut rng, &m.id, &p.id, approve, retry.resumes)
                        .await
                        .unwrap_or_else(|e| panic!("{at}: {e:?}"));
                let stored = get_payment(&late, &m.id, &p.id).await.unwrap();
                assert_eq!(stored.status, again.status, "{at}");
                if approve && method == SMS {
                    assert_eq!(again.next_action, Some(NextAction::EnterOtp), "{at}");
                    let code = ch.last_otp();
                    let ok = confirm_payment(&late, &ch, &mut rng, &m.id, &p.id, &code, false)
                        .await
                        .unwrap_or_else(|e| panic!("{at}: the code sent confirms: {e:?}"));
                    assert_eq!(ok.status, PaymentStatus::Succeeded, "{at}");
                } else if approve {
                    assert_eq!(again.status, PaymentStatus::RequiresCustomerAction, "{at}");
                    assert!(
                        matches!(again.next_action, Some(NextAction::DisplayQr { .. })),
                        "{at}: {again:?}"
                    );
                    assert_eq!(ch.charged(), [p.id.clone()].into(), "{at}");
                } else {
                    assert_eq!(again.status, PaymentStatus::Failed, "{at}");
                    assert_eq!(again.failure.unwrap().code, "review_declined", "{at}");
                    assert_eq!(ch.authorizations(), 0, "{at}");
                }
                finished
            })
        });
        assert!(steps > 1, "the review has crash points ({steps})");
    }
}

#[test]
fn a_payment_an_unkeyed_create_left_processing_is_sent_to_the_channel_again_by_a_recheck() {
    // Proves that whichever storage operation an unkeyed create dies at, a payment it
    // stored `processing` ends succeeded after a re-check, one payment id charged: if the
    // channel was asked, its query settles it; if not (it answers "not found"), a
    // re-check while the request could still be running leaves it alone and one after
    // the lock TTL sends it to the channel again. Otherwise nothing would ever settle it.
    let keys = keyring();
    let t0 = 60_000;
    let mut stuck = 0;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(16);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let new = new_payment(&body(1250, QRC, ""));
                let cc = ctx(crash, &keys, t0);
                create_payment(&cc, dying, &LocalRisk::default(), &mut rng, &m, new).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let stored = repo.keys_with_prefix("pay/");
            let Some(key) = stored.first() else {
                assert!(ch.charged().is_empty(), "{at}: charged without a payment");
                return finished;
            };
            let id = key.trim_start_matches("pay/").to_string();
            let before = get_payment(&c, &m.id, &id).await.unwrap();
            if before.status == PaymentStatus::Processing && ch.charged().is_empty() {
                stuck += 1;
                let early = ctx(&repo, &keys, t0 + 1_000);
                let young = recheck_payment(&early, &ch, &mut rng, &m.id, &id)
                    .await
                    .unwrap();
                assert_eq!(young.status, PaymentStatus::Processing, "{at}: too early");
            }
            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let after = recheck_payment(&late, &ch, &mut rng, &m.id, &id)
                .await
                .unwrap();
            assert_eq!(after.status, PaymentStatus::Succeeded, "{at}: {after:?}");
            assert_eq!(ch.charged(), [id].into(), "{at}");
            finished
        })
    });
    assert!(steps > 5, "the create has many crash points ({steps})");
    assert!(
        stuck > 0,
        "some crash points leave it processing, the channel never asked"
    );
}

#[test]
fn a_refund_an_unkeyed_request_left_pending_is_sent_to_the_channel_again_by_a_recheck() {
    // Proves that whichever storage operation an unkeyed refund dies at, a refund it
    // reserved ends succeeded after a re-check, refunded once: if the channel was asked,
    // its query settles it; if not (it answers "not found"), a re-check while the
    // request could still be running leaves it pending and one after the lock TTL sends
    // it to the channel again. Otherwise its reservation would hold 300 for good.
    let keys = keyring();
    let t0 = 95_000;
    let mut unasked = 0;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(17);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                create_refund(&cc, dying, &mut rng, &m.id, &p.id, refund_of(300)).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let before = get_payment(&c, &m.id, &p.id).await.unwrap();
            let Some(r) = before.refunds.first() else {
                assert!(
                    ch.refunded_ids.borrow().is_empty(),
                    "{at}: refunded, none reserved"
                );
                assert_eq!(before.refunded_minor, 0, "{at}");
                return finished;
            };
            if r.status == RefundStatus::Pending && ch.refunded_ids.borrow().is_empty() {
                unasked += 1;
                let early = ctx(&repo, &keys, t0 + 1_000);
                let young = recheck_refund(&early, &ch, &mut rng, &m.id, &r.id)
                    .await
                    .unwrap();
                assert_eq!(young.status, RefundStatus::Pending, "{at}: too early");
            }
            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let after = recheck_refund(&late, &ch, &mut rng, &m.id, &r.id)
                .await
                .unwrap();
            assert_eq!(after.status, RefundStatus::Succeeded, "{at}: {after:?}");
            let asked = ch.refunded_ids.borrow().clone();
            assert!(asked.iter().all(|id| *id == r.id), "{at}: {asked:?}");
            let paid = get_payment(&late, &m.id, &p.id).await.unwrap();
            assert_eq!(paid.refunded_minor, 300, "{at}");
            finished
        })
    });
    assert!(steps > 3, "the refund has several crash points ({steps})");
    assert!(
        unasked > 0,
        "some crash points leave it reserved, the channel never asked"
    );
}

#[test]
fn a_cancel_retried_after_a_crash_at_any_step_cancels_although_the_channel_will_not_close_twice() {
    // Proves that whichever storage operation a cancel of a waiting QR payment dies at
    // (the channel perhaps already closed it), the retry answers canceled: the channel
    // refuses a second close, and its query, closed, says the first one went through.
    let keys = keyring();
    let t0 = 40_000;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(19);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QR).await.unwrap();
            assert_eq!(p.status, PaymentStatus::RequiresCustomerAction);
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                cancel_payment(&cc, dying, &mut rng, &m.id, &p.id, BY_MERCHANT).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let again = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(again.status, PaymentStatus::Canceled, "{at}");
            let stored = get_payment(&c, &m.id, &p.id).await.unwrap();
            assert_eq!(stored.status, PaymentStatus::Canceled, "{at}");
            finished
        })
    });
    assert!(steps > 1, "the cancel has crash points ({steps})");
}

#[test]
fn a_cancel_that_died_after_the_channel_closed_ends_canceled_when_a_recheck_comes_first() {
    // Proves that whichever storage operation a cancel of a waiting QR payment dies at,
    // a re-check that reaches the payment before the cancel's retry (while it has not
    // expired) reads the channel's "closed" as that cancel's, not as a failure: the
    // payment ends `canceled` for the merchant's reason with one `payment.canceled`, and
    // the retry answers it canceled instead of `payment_not_cancelable`.
    let keys = keyring();
    let t0 = 40_000;
    let mut closed_then_died = 0;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(23);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QR).await.unwrap();
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                cancel_payment(&cc, dying, &mut rng, &m.id, &p.id, BY_MERCHANT).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let closed = ch.closed.borrow().contains(&p.id);
            let later = ctx(&repo, &keys, t0 + 1_000);
            let seen = recheck_payment(&later, &ch, &mut rng, &m.id, &p.id)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            if closed && !finished {
                closed_then_died += 1;
                assert_eq!(
                    (seen.status, seen.cancellation_reason),
                    (PaymentStatus::Canceled, Some(BY_MERCHANT)),
                    "{at}"
                );
            }
            let again = cancel_payment(&later, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(
                (again.status, again.cancellation_reason),
                (PaymentStatus::Canceled, Some(BY_MERCHANT)),
                "{at}"
            );
            // Events a crash left unpublished go out with the notification sweep.
            let swept = t0 + PUBLISH_GRACE_MS + 1;
            sweep_at(&repo, swept, swept).await.unwrap();
            let all = spinpay_core::api::ListParams {
                limit: 100,
                ..Default::default()
            };
            let events = list_events(&later, &m.id, &all).await.unwrap().data;
            let canceled = events
                .iter()
                .filter(|e| e.event_type == spinpay_core::model::EventType::PaymentCanceled)
                .count();
            assert_eq!(canceled, 1, "{at}: one payment.canceled");
            finished
        })
    });
    assert!(
        closed_then_died > 0,
        "some crash points come after the close ({steps} steps)"
    );
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

#[test]
fn a_keyed_create_failed_by_a_storage_blip_at_any_step_is_resumed_by_the_immediate_retry() {
    // Proves that whichever storage operation of a keyed create answers "unavailable"
    // (without effect, or after its write landed), the answer either stands (stored and
    // replayed) or releases the key so the same request retried at once resumes that
    // attempt with its seed: one payment, the attempt's own, listed once, charged at most
    // once; and another request with the key is refused as reused.
    let keys = keyring();
    let path = "/v1/payments";
    let req_body = fingerprint_body(1250);
    let all = spinpay_core::api::ListParams::parse("limit=100").unwrap();
    let t0 = 30_000;
    for committed in [false, true] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(23);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let begun = idempotency_begin(&c, &m.id, Some("blip-1"), "POST", path, &req_body);
                let Started::Run(Some(ticket)) = begun.await.unwrap() else {
                    panic!("a fresh key runs")
                };
                let seed = ticket.operation_seed();
                let blip = blip_repo(&repo, at, committed);
                let first = create_seeded(&ctx(&blip, &keys, t0), &ch, &mut rng, &m, seed).await;
                let (reply, outcome) = reply_for(&first, 200);
                idempotency_finish(&c, Some(ticket), &reply, outcome)
                    .await
                    .unwrap();
                let here = format!("blip at operation {at} (landed: {committed}): {first:?}");

                let later = ctx(&repo, &keys, t0 + 1_000);
                let again =
                    idempotency_begin(&later, &m.id, Some("blip-1"), "POST", path, &req_body);
                match again.await.unwrap() {
                    Started::Replay(r) => assert_eq!(r.status, 200, "{here}"),
                    Started::Run(Some(t)) => {
                        assert!(first.is_err(), "{here}: a success is stored");
                        assert_eq!(t.operation_seed(), seed, "{here}: the retry resumes");
                        assert!(t.resumes(), "{here}");
                        let resumed = create_seeded(&later, &ch, &mut rng, &m, seed).await;
                        let (reply, outcome) = reply_for(&resumed, 200);
                        assert_eq!(outcome, KeyOutcome::Store, "{here}: {resumed:?}");
                        idempotency_finish(&later, Some(t), &reply, outcome)
                            .await
                            .unwrap();
                    }
                    other => panic!("{here}: the retry got {other:?}"),
                }
                let own = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Payment, &seed);
                let listed = list_payments(&later, &m.id, &all).await.unwrap();
                let ids: Vec<&str> = listed.data.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(
                    ids,
                    [own.as_str()],
                    "{here}: one payment, the attempt's own"
                );
                let status = listed.data[0].status;
                let settled = [PaymentStatus::Succeeded, PaymentStatus::Processing];
                assert!(settled.contains(&status), "{here}: {status:?}");
                assert!(ch.charged().iter().all(|id| *id == own), "{here}");
                let other = fingerprint_body(999);
                let reused = idempotency_begin(&later, &m.id, Some("blip-1"), "POST", path, &other);
                assert_eq!(
                    reused.await.map_err(|e| e.code()),
                    Err("idempotency_key_reused"),
                    "{here}"
                );
                blip.hooks.hit.get()
            })
        });
        assert!(at > 5, "the create has many storage operations ({at})");
    }
}

#[test]
fn an_unkeyed_create_failed_by_a_storage_blip_leaves_no_payment_behind() {
    // Proves that whichever storage operation of an unkeyed create answers "unavailable"
    // (without effect, or after its write landed), either the payment is the answer
    // (listed, charged at most once) or the error answered leaves no payment at all:
    // nothing a later recheck could charge behind the merchant's back after it was told
    // the request failed, and the merchant order id is not held by a payment that exists.
    let keys = keyring();
    let all = spinpay_core::api::ListParams::parse("limit=100").unwrap();
    let t0 = 40_000;
    for committed in [false, true] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(29);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let blip = blip_repo(&repo, at, committed);
                let new = new_payment(&body(1250, QRC, r#","merchant_order_id":"ord-1""#));
                let risk = LocalRisk::default();
                let got =
                    create_payment(&ctx(&blip, &keys, t0), &ch, &risk, &mut rng, &m, new).await;
                let here = format!("blip at operation {at} (committed: {committed}): {got:?}");
                let stored = repo.keys_with_prefix("pay/");
                match &got {
                    Ok(p) => {
                        assert_eq!(stored, [format!("pay/{}", p.id)], "{here}");
                        let listed = list_payments(&c, &m.id, &all).await.unwrap();
                        let ids: Vec<&str> = listed.data.iter().map(|l| l.id.as_str()).collect();
                        assert_eq!(ids, [p.id.as_str()], "{here}: listed");
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "{here}");
                        assert!(stored.is_empty(), "{here}: {stored:?}");
                        assert!(ch.charged().is_empty(), "{here}");
                    }
                }
                // The order id names the payment answered, or none: a retry once any
                // claim's request is certainly dead takes it (the payment answered
                // keeps it).
                let late = ctx(&repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
                let again = new_payment(&body(1250, QRC, r#","merchant_order_id":"ord-1""#));
                let retried = create_payment(&late, &ch, &risk, &mut rng, &m, again).await;
                match (&got, &retried) {
                    (Ok(p), Err(ApiError::MerchantOrderIdDuplicate { payment_id, .. })) => {
                        assert_eq!(payment_id, &p.id, "{here}");
                    }
                    (Err(_), Ok(_)) => {}
                    other => panic!("{here}: retry {other:?}"),
                }
                // Whatever the blip left is handed to reconciliation, which charges
                // nothing but the payments answered.
                let swept = t0 + PUBLISH_GRACE_MS + 1;
                sweep_at(&repo, swept, swept).await.unwrap();
                let due = ctx(&repo, &keys, swept + RECONCILE_INTERVAL_MS);
                let run = ReconcileRequest {
                    limit: None,
                    merchant_id: None,
                    wall_clock: None,
                };
                reconcile(&due, &ch, &mut rng, &run).await.unwrap();
                let answered: Vec<String> = got
                    .iter()
                    .chain(retried.iter())
                    .map(|p| p.id.clone())
                    .collect();
                assert!(
                    ch.charged().iter().all(|id| answered.contains(id)),
                    "{here}: charged {:?}",
                    ch.charged()
                );
                blip.hooks.hit.get()
            })
        });
        assert!(at > 5, "the create has many storage operations ({at})");
    }
}

#[test]
fn a_refund_failed_by_a_storage_blip_at_any_step_never_leaves_a_reservation_without_its_refund() {
    // Proves that whichever storage operation of an unkeyed refund answers "unavailable"
    // (without effect, or after its write landed), every amount reserved on the payment
    // belongs to a refund that exists, so a re-check settles it and reconciliation can
    // run over it; and a refund answered as made is the one reserved, refunded at most
    // once at the channel.
    let keys = keyring();
    let t0 = 50_000;
    for committed in [false, true] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(37);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
                let blip = blip_repo(&repo, at, committed);
                let bc = ctx(&blip, &keys, t0);
                let got = create_refund(&bc, &ch, &mut rng, &m.id, &p.id, refund_of(300)).await;
                let here = format!("blip at operation {at} (landed: {committed}): {got:?}");
                let after = get_payment(&c, &m.id, &p.id).await.unwrap();
                let reserved: Vec<String> = repo
                    .get(&spinpay_core::keys::payment(&p.id))
                    .await
                    .unwrap()
                    .map(|v| serde_json::from_slice::<serde_json::Value>(&v.value).unwrap())
                    .and_then(|v| v["state"]["refund_ids"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|id| id.as_str().unwrap().to_string())
                    .collect();
                for id in &reserved {
                    let record = repo.get(&spinpay_core::keys::refund(id)).await.unwrap();
                    assert!(
                        record.is_some(),
                        "{here}: reservation {id} without its refund"
                    );
                }
                if let Ok(r) = &got {
                    assert_eq!(reserved, std::slice::from_ref(&r.id), "{here}");
                }
                assert!(ch.refunded_ids.borrow().len() <= 1, "{here}");
                assert_eq!(after.refunds.len(), reserved.len(), "{here}: {after:?}");
                // The sweep hands whatever the blip left to reconciliation, which runs
                // over it.
                let swept = t0 + PUBLISH_GRACE_MS + 1;
                sweep_at(&repo, swept, swept).await.unwrap();
                let due = ctx(&repo, &keys, swept + RECONCILE_INTERVAL_MS);
                let all = ReconcileRequest {
                    limit: None,
                    merchant_id: None,
                    wall_clock: None,
                };
                let run = reconcile(&due, &ch, &mut rng, &all).await;
                assert!(run.is_ok(), "{here}: {run:?}");
                blip.hooks.hit.get()
            })
        });
        assert!(at > 3, "the refund has several storage operations ({at})");
    }
}

#[test]
fn a_merchant_refund_id_is_not_burned_by_a_refund_a_blip_or_crash_stopped_before_its_reservation() {
    // Proves that whichever storage operation of an unkeyed refund with a
    // `merchant_refund_id` fails (a blip, without effect or after its write landed, or a
    // crash), a refund answered as failed does not hold the merchant's refund id for
    // good: the retry, at once or once the dead request could no longer be running,
    // refunds (once), and a refund that was made keeps its id (a retry is a duplicate).
    // After a blip without effect the retry refunds at once.
    let keys = keyring();
    let t0 = 50_000;
    let with_id = || NewRefund {
        merchant_refund_id: Some("RF-1".into()),
        ..refund_of(300)
    };
    let check = async |repo: &MemoryRepository,
                       ch: &SimChannel,
                       rng: &mut SplitMix64,
                       m: &Merchant,
                       p: &PaymentResponse,
                       first_ok: bool,
                       at_once: bool,
                       here: &str| {
        let c = ctx(repo, &keys, t0);
        let reserved = get_payment(&c, &m.id, &p.id).await.unwrap().refunds;
        let retry = match create_refund(&c, ch, rng, &m.id, &p.id, with_id()).await {
            Err(ApiError::MerchantRefundIdDuplicate { .. }) if reserved.is_empty() && !at_once => {
                // The claim may have landed without its refund: freed once its request
                // is certainly dead.
                let late = ctx(repo, &keys, t0 + IDEMPOTENCY_LOCK_TTL_MS + 1);
                create_refund(&late, ch, rng, &m.id, &p.id, with_id()).await
            }
            other => other,
        };
        if first_ok || !reserved.is_empty() {
            assert!(
                matches!(retry, Err(ApiError::MerchantRefundIdDuplicate { .. })),
                "{here}: retry {retry:?}"
            );
        } else {
            assert!(retry.is_ok(), "{here}: retry {retry:?}");
        }
        let refunds = get_payment(&c, &m.id, &p.id).await.unwrap().refunds;
        assert_eq!(refunds.len(), 1, "{here}: {refunds:?}");
        assert!(ch.refunded_ids.borrow().len() <= 1, "{here}");
    };
    for committed in [false, true] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(43);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
                let blip = blip_repo(&repo, at, committed);
                let bc = ctx(&blip, &keys, t0);
                let got = create_refund(&bc, &ch, &mut rng, &m.id, &p.id, with_id()).await;
                let here = format!("blip at operation {at} (landed: {committed}): {got:?}");
                check(&repo, &ch, &mut rng, &m, &p, got.is_ok(), !committed, &here).await;
                blip.hooks.hit.get()
            })
        });
        assert!(at > 15, "the refund has many storage operations ({at})");
    }
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(44);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                create_refund(&cc, dying, &mut rng, &m.id, &p.id, with_id()).await
            })
            .await;
            let here = format!("crash after {steps} storage operations");
            check(&repo, &ch, &mut rng, &m, &p, finished, false, &here).await;
            finished
        })
    });
    assert!(steps > 15, "the refund has many crash points ({steps})");
}

#[test]
fn a_keyed_refund_resumed_after_a_crash_renews_its_merchant_refund_id_before_reserving() {
    // Proves a keyed refund resumed after its attempt died between claiming its
    // `merchant_refund_id` and reserving renews the claim first: a request with the same
    // id arriving while the resumed one is about to reserve is a duplicate, instead of
    // taking the old claim over and refunding a second time.
    let keys = keyring();
    let t0 = 90_000;
    let t1 = t0 + IDEMPOTENCY_LOCK_TTL_MS + 1;
    let seed = [5u8; 16];
    let refund_id = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Refund, &seed);
    let with_id = || NewRefund {
        merchant_refund_id: Some("RF-9".into()),
        ..refund_of(300)
    };
    let mut raced = 0;
    let mut first_finished = false;
    for first in 0.. {
        if first_finished {
            break;
        }
        at_every_crash_point(|second| {
            let (repo, _, ch, mut rng) = world(54);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
                let attempt = async |at: i64, steps: u64, rng: &mut SplitMix64| {
                    dies_after(steps, &repo, &ch, async |crash, dying| {
                        let cc = ctx(crash, &keys, at);
                        let seed = Some(seed);
                        create_refund_seeded(&cc, dying, rng, &m.id, &p.id, with_id(), seed).await
                    })
                    .await
                };
                let reserved = async || {
                    let paid = get_payment(&c, &m.id, &p.id).await.unwrap();
                    paid.refunds.iter().any(|r| r.id == refund_id)
                };
                let recorded = async || {
                    let key = spinpay_core::keys::refund(&refund_id);
                    repo.get(&key).await.unwrap().is_some()
                };
                if attempt(t0, first, &mut rng).await {
                    first_finished = true;
                    return true;
                }
                if !recorded().await || reserved().await {
                    return true;
                }
                let finished = attempt(t1, second, &mut rng).await;
                let claim = repo
                    .get(&spinpay_core::keys::merchant_refund(&m.id, "RF-9"))
                    .await
                    .unwrap()
                    .map(|v| serde_json::from_slice::<serde_json::Value>(&v.value).unwrap());
                let renewed = claim.is_some_and(|c| c["claimed_at_ms"] == t1);
                if !finished && renewed && !reserved().await {
                    raced += 1;
                    let c1 = ctx(&repo, &keys, t1);
                    let other = create_refund(&c1, &ch, &mut rng, &m.id, &p.id, with_id()).await;
                    assert!(
                        matches!(other, Err(ApiError::MerchantRefundIdDuplicate { .. })),
                        "first {first}, second {second}: {other:?}"
                    );
                }
                finished
            })
        });
    }
    assert!(
        raced > 0,
        "some crash points fall between the renewal and the reservation"
    );
}

#[test]
fn a_merchant_refund_id_claim_of_an_earlier_version_is_still_honoured() {
    // Proves a claim stored as the bare refund id (as earlier versions did) still makes a
    // duplicate when its refund was made, and is taken over when it never was.
    let (repo, keys, ch, mut rng) = world(45);
    block_on(async {
        let t0 = 60_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        let made = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(100))
            .await
            .unwrap();
        let bare = |id: &str| serde_json::to_vec(id).unwrap();
        for (mref, holder) in [
            ("RF-made", made.id.as_str()),
            ("RF-never", "re_nevermadenevermadenevermade"),
        ] {
            let key = spinpay_core::keys::merchant_refund(&m.id, mref);
            repo.put_if_version(&key, 0, bare(holder)).await.unwrap();
        }
        let with_id = |mref: &str| NewRefund {
            merchant_refund_id: Some(mref.into()),
            ..refund_of(200)
        };
        let dup = create_refund(&c, &ch, &mut rng, &m.id, &p.id, with_id("RF-made")).await;
        assert!(
            matches!(dup, Err(ApiError::MerchantRefundIdDuplicate { .. })),
            "{dup:?}"
        );
        let taken = create_refund(&c, &ch, &mut rng, &m.id, &p.id, with_id("RF-never")).await;
        assert_eq!(taken.unwrap().status, RefundStatus::Succeeded);
    });
}

/// Reports the outcome of the next compare-and-swap of `key` unknown after it landed
/// (the store lost track of it), once, from when it is armed.
struct LosesTrackOf {
    key: String,
    armed: std::cell::Cell<bool>,
}

impl common::hooked::Hooks for LosesTrackOf {
    async fn after_put(
        &self,
        _store: &MemoryRepository,
        key: &str,
        _expected: u64,
        _value: &[u8],
        written: Result<u64, spinpay_core::repo::RepoError>,
    ) -> Result<u64, spinpay_core::repo::RepoError> {
        let written = written?;
        if key != self.key || !self.armed.replace(false) {
            return Ok(written);
        }
        Err(spinpay_core::repo::RepoError::OutcomeUnknown { key: key.into() })
    }
}

#[test]
fn a_capture_confirm_or_review_whose_write_landed_unseen_answers_with_its_effect() {
    // Proves that when the store loses track of the very write that captures, accepts a
    // code or approves a review (it landed; the answer was lost), the request finds its
    // own write on the re-read and answers with it: captured 200, and the confirmed or
    // approved payment sent to the channel at once, never a 409 that says nothing
    // happened.
    let (repo, keys, ch, mut rng) = world(43);
    block_on(async {
        let c = ctx(&repo, &keys, 60_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let hooked = |id: &str| common::hooked::Hooked {
            inner: &repo,
            hooks: LosesTrackOf {
                key: format!("pay/{id}"),
                armed: std::cell::Cell::new(true),
            },
        };

        let manual = body(1000, QRC, r#","capture":"manual""#);
        let p = pay_body(&c, &ch, &mut rng, &m, &manual).await.unwrap();
        let lossy = hooked(&p.id);
        let lc = ctx(&lossy, &keys, 60_000);
        let captured = capture_payment(&lc, &ch, &mut rng, &m.id, &p.id, Some(600), false).await;
        let captured = captured.unwrap_or_else(|e| panic!("capture: {e:?}"));
        assert_eq!(
            (captured.status, captured.captured_minor),
            (PaymentStatus::Succeeded, 600)
        );

        let p = pay_body(&c, &ch, &mut rng, &m, &body(1000, SMS, ""))
            .await
            .unwrap();
        let lossy = hooked(&p.id);
        let lc = ctx(&lossy, &keys, 60_000);
        let code = ch.last_otp();
        let confirmed = confirm_payment(&lc, &ch, &mut rng, &m.id, &p.id, &code, false).await;
        let confirmed = confirmed.unwrap_or_else(|e| panic!("confirm: {e:?}"));
        assert_eq!(confirmed.status, PaymentStatus::Succeeded, "{confirmed:?}");
        assert!(ch.charged().contains(&p.id));

        let mut cfg = spinpay_core::riskengine::EngineConfig::default();
        cfg.weights.per_transaction_max = cfg.thresholds.review_at;
        let risky = LocalRisk { config: cfg };
        let new = new_payment(&body(6_000_000, QRC, ""));
        let p = create_payment(&c, &ch, &risky, &mut rng, &m, new)
            .await
            .unwrap();
        assert_eq!(p.status, PaymentStatus::RequiresReview);
        let lossy = hooked(&p.id);
        let lc = ctx(&lossy, &keys, 60_000);
        let approved = review_payment(&lc, &ch, &mut rng, &m.id, &p.id, true, false).await;
        let approved = approved.unwrap_or_else(|e| panic!("review: {e:?}"));
        assert_eq!(approved.status, PaymentStatus::Succeeded, "{approved:?}");
        assert!(ch.charged().contains(&p.id));
    });
}

#[test]
fn a_confirm_or_review_failed_by_a_storage_blip_is_an_error_only_if_the_channel_was_never_asked() {
    // Proves that whichever storage operation of a confirm or of a review approval fails
    // (without effect, or after its write landed), an error answer means the payment was
    // not sent to the channel and never will be (reconciliation included): once the
    // payment is stored as sent (and may be charged), the answer is the payment.
    let keys = keyring();
    let t0 = 70_000;
    for (review, committed) in [(false, false), (true, false), (false, true), (true, true)] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(47);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let p = if review {
                    let mut cfg = spinpay_core::riskengine::EngineConfig::default();
                    cfg.weights.per_transaction_max = cfg.thresholds.review_at;
                    let risky = LocalRisk { config: cfg };
                    let new = new_payment(&body(6_000_000, QRC, ""));
                    create_payment(&c, &ch, &risky, &mut rng, &m, new).await
                } else {
                    pay_body(&c, &ch, &mut rng, &m, &body(1000, SMS, "")).await
                };
                let p = p.unwrap();
                let code = if review { String::new() } else { ch.last_otp() };
                let blip = blip_repo(&repo, at, committed);
                let bc = ctx(&blip, &keys, t0);
                let got = if review {
                    review_payment(&bc, &ch, &mut rng, &m.id, &p.id, true, false).await
                } else {
                    confirm_payment(&bc, &ch, &mut rng, &m.id, &p.id, &code, false).await
                };
                let here = format!(
                    "review {review}, blip at operation {at} (landed: {committed}): {got:?}"
                );
                if got.is_err() {
                    assert!(!ch.charged().contains(&p.id), "{here}: asked, yet an error");
                    let swept = t0 + PUBLISH_GRACE_MS + 1;
                    sweep_at(&repo, swept, swept).await.unwrap();
                    let due = ctx(&repo, &keys, swept + RECONCILE_INTERVAL_MS);
                    let run = ReconcileRequest {
                        limit: None,
                        merchant_id: None,
                        wall_clock: None,
                    };
                    reconcile(&due, &ch, &mut rng, &run).await.unwrap();
                    assert!(
                        !ch.charged().contains(&p.id),
                        "{here}: an error, yet charged later"
                    );
                }
                blip.hooks.hit.get()
            })
        });
        assert!(at > 2, "several storage operations ({at})");
    }
}

#[test]
fn an_approval_of_an_sms_payment_failed_by_a_storage_blip_never_leaves_it_waiting_for_no_code() {
    // Proves that whichever storage operation of a review approval of an `sms_otp` payment
    // answers "unavailable" (without effect, or after its write landed), the approval
    // retried as the error advises (without an Idempotency-Key) sends the payer a code:
    // never a payment left waiting for a code nobody sent, nor a retry refused as no
    // longer in review.
    let keys = keyring();
    let t0 = 72_000;
    for committed in [false, true] {
        let at = at_every_blip(|at| {
            let (repo, _, ch, mut rng) = world(55);
            block_on(async {
                let c = ctx(&repo, &keys, t0);
                let (m, _) = merchant(&c, &mut rng).await;
                let mut cfg = spinpay_core::riskengine::EngineConfig::default();
                cfg.weights.per_transaction_max = cfg.thresholds.review_at;
                let risky = LocalRisk { config: cfg };
                let new = new_payment(&body(6_000_000, SMS, ""));
                let p = create_payment(&c, &ch, &risky, &mut rng, &m, new)
                    .await
                    .unwrap();
                assert_eq!(p.status, PaymentStatus::RequiresReview);
                let blip = blip_repo(&repo, at, committed);
                let bc = ctx(&blip, &keys, t0);
                let got = review_payment(&bc, &ch, &mut rng, &m.id, &p.id, true, false).await;
                let here = format!("blip at operation {at} (landed: {committed}): {got:?}");
                if got.is_err() {
                    ch.sms.borrow_mut().clear();
                    let again = review_payment(&c, &ch, &mut rng, &m.id, &p.id, true, false);
                    let again = again.await;
                    assert!(again.is_ok(), "{here}: retry {again:?}");
                }
                let stored = get_payment(&c, &m.id, &p.id).await.unwrap();
                assert_eq!(
                    stored.status,
                    PaymentStatus::RequiresCustomerAction,
                    "{here}"
                );
                assert!(!ch.sms.borrow().is_empty(), "{here}: no code sent");
                blip.hooks.hit.get()
            })
        });
        assert!(at > 2, "several storage operations ({at})");
    }
}

#[test]
fn a_refund_record_never_reserved_is_not_sent_to_the_channel_by_a_recheck() {
    // Proves a pending refund record whose reservation never committed (its request died
    // in between) is not refunded at the channel by a re-check however old it is: the
    // payment does not count it, so that money would be refunded twice over.
    let (repo, keys, ch, mut rng) = world(61);
    block_on(async {
        let t0 = 95_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        let done = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(300))
            .await
            .unwrap();
        let record = repo
            .get(&spinpay_core::keys::refund(&done.id))
            .await
            .unwrap()
            .unwrap();
        let orphan_id = spinpay_core::ids::make_id(spinpay_core::ids::IdKind::Refund, &[7; 16]);
        let mut stored: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        stored["id"] = serde_json::json!(orphan_id);
        stored["state"] = serde_json::to_value(spinpay_core::machine::RefundState::new()).unwrap();
        let key = spinpay_core::keys::refund(&orphan_id);
        repo.put_if_version(&key, 0, serde_json::to_vec(&stored).unwrap())
            .await
            .unwrap();
        let calls = ch.refunded_ids.borrow().len();
        let late = ctx(&repo, &keys, t0 + 10 * IDEMPOTENCY_LOCK_TTL_MS);
        let r = recheck_refund(&late, &ch, &mut rng, &m.id, &orphan_id)
            .await
            .unwrap();
        assert_eq!(r.status, RefundStatus::Pending);
        assert_eq!(
            ch.refunded_ids.borrow().len(),
            calls,
            "an unreserved refund was sent"
        );
        let after = get_payment(&late, &m.id, &p.id).await.unwrap();
        assert_eq!(after.refunded_minor, 300, "{after:?}");
    });
}

#[test]
fn a_keyed_onboarding_retry_after_a_crash_at_any_step_gets_the_one_merchant_and_keys_that_work() {
    // Proves that whichever storage operation a keyed merchant creation dies at, the
    // retry that takes over its lock answers with the same merchant, and its secret key
    // and webhook secret are the ones stored: the key authenticates that merchant and no
    // second merchant exists; a fresh key onboards another, with other credentials.
    let keys = keyring();
    let t0 = 100_000;
    let new = || spinpay_core::api::NewMerchant {
        name: "Coffee".into(),
        notify_url: None,
        default_capture: spinpay_core::model::CaptureMode::Automatic,
    };
    let path = "/v1/admin/merchants";
    let admin = spinpay_core::idempotency::ADMIN_SCOPE;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(67);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let seed = begin_run(&c, admin, "onboard-1", path, b"{}").await;
            let finished = dies_after(steps, &repo, &ch, async |crash, _| {
                let cc = ctx(crash, &keys, t0);
                create_merchant_seeded(&cc, &mut rng, new(), Some(seed)).await
            })
            .await;
            let late = ctx(&repo, &keys, after_the_lock_ttl(t0));
            let retry = begin_keyed(&late, admin, "onboard-1", path, b"{}").await;
            assert_eq!(retry.seed, seed);
            let at = format!("crash after {steps} storage operations");
            let made = create_merchant_seeded(&late, &mut rng, new(), Some(retry.seed))
                .await
                .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            let header = format!("Bearer {}", made.secret_key);
            let m = authenticate(&late, Some(&header)).await.unwrap();
            assert_eq!(m.id, made.id, "{at}");
            let secret = webhook_secret(&late, &m).unwrap();
            assert_eq!(secret.expose(), &made.webhook_secret, "{at}");
            let merchants = repo.keys_with_prefix("mch/mch_");
            let records = merchants.iter().filter(|k| k.matches('/').count() == 1);
            assert_eq!(records.count(), 1, "{at}: one merchant");
            let other = begin_run(&late, admin, "onboard-2", path, b"{}").await;
            let second = create_merchant_seeded(&late, &mut rng, new(), Some(other))
                .await
                .unwrap();
            assert!(second.id != made.id && second.secret_key != made.secret_key);
            finished
        })
    });
    assert!(
        steps >= 2,
        "onboarding has several storage operations ({steps})"
    );
}
