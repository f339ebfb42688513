//! End-to-end flows through the service layer over the in-memory repository and the
//! simulated channel: every method's flow, capture, cancel, OTP, refunds, idempotency,
//! lists, notifications and merchant isolation.

mod common;

use common::*;
use futures::executor::block_on;
use spinpay_core::api::{ListParams, NewRefund, PaymentResponse};
use spinpay_core::error::ApiError;
use spinpay_core::model::{
    CancellationReason, EventType, Merchant, NextAction, Payment, PaymentMethod, PaymentStatus,
    Refund, RefundStatus, RiskDecision,
};
use spinpay_core::repo::Repository;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QR: &str = r#"{"type":"qr_merchant"}"#;
const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;

fn refund_req(amount_minor: Option<i64>) -> NewRefund {
    NewRefund {
        amount_minor,
        reason: None,
        merchant_refund_id: None,
    }
}

/// The local risk engine with a per-transaction weight of 50: a CNY 6,000 QR payment is
/// challenged (held for review without a payer phone), a qr_customer one is not.
fn strict_risk() -> LocalRisk {
    let mut config = spinpay_core::riskengine::EngineConfig::default();
    config.weights.per_transaction_max = 50;
    LocalRisk { config }
}

/// A CNY 6,000 qr_merchant payment (with `extra` body fields) that [`strict_risk`] holds
/// for review.
async fn held_for_review<R: Repository>(
    c: &Ctx<'_, R>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    m: &Merchant,
    extra: &str,
) -> PaymentResponse {
    let body = body(600_000, QR, extra);
    let held = create_payment(c, ch, &strict_risk(), rng, m, new_payment(&body))
        .await
        .unwrap();
    assert_eq!(
        held.risk.as_ref().unwrap().decision,
        RiskDecision::Challenge
    );
    assert_eq!(held.status, PaymentStatus::RequiresReview);
    held
}

/// A repository that answers the first read of `key` with `stale` (what a request read
/// before another one changed the record) and passes everything else through.
struct StaleOnce<'a> {
    inner: &'a MemoryRepository,
    key: String,
    stale: std::cell::RefCell<Option<spinpay_core::repo::Versioned>>,
}

impl Repository for StaleOnce<'_> {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<spinpay_core::repo::Versioned>, spinpay_core::repo::RepoError> {
        if key == self.key
            && let Some(stale) = self.stale.borrow_mut().take()
        {
            return Ok(Some(stale));
        }
        self.inner.get(key).await
    }
    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, spinpay_core::repo::RepoError> {
        self.inner.put_if_version(key, expected, value).await
    }
    async fn put_fresh(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), spinpay_core::repo::RepoError> {
        self.inner.put_fresh(key, value).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, spinpay_core::repo::RepoError> {
        self.inner.increment(key, delta).await
    }
    async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<spinpay_core::repo::Versioned>>, spinpay_core::repo::RepoError> {
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), spinpay_core::repo::RepoError> {
        self.inner.delete(key).await
    }
}

#[test]
fn a_cancel_that_read_the_payment_before_an_approval_sent_it_to_the_channel_closes_it_there() {
    // Proves a cancel never cancels here alone a payment that reached the channel after
    // the cancel read it (an approval in between shows the QR code at the channel): the
    // cancel answers concurrent_modification and changes nothing, and its retry closes
    // the order at the channel and cancels the payment.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(24),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let held = held_for_review(&c, &ch, &mut rng, &m, "").await;
        let key = format!("pay/{}", held.id);
        let before_approval = repo.get(&key).await.unwrap();
        let approved = review_payment(&c, &ch, &mut rng, &m.id, &held.id, true, false)
            .await
            .unwrap();
        assert_eq!(approved.status, PaymentStatus::RequiresCustomerAction);
        let stale = StaleOnce {
            inner: &repo,
            key,
            stale: std::cell::RefCell::new(before_approval),
        };
        let late = ctx(&stale, &keys, 1_000);
        let reason = CancellationReason::RequestedByMerchant;
        let e = cancel_payment(&late, &ch, &mut rng, &m.id, &held.id, reason)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "concurrent_modification");
        assert_eq!(*ch.cancel_calls.borrow(), 0);
        let still = get_payment(&c, &m.id, &held.id).await.unwrap();
        assert_eq!(still.status, PaymentStatus::RequiresCustomerAction);
        let canceled = cancel_payment(&c, &ch, &mut rng, &m.id, &held.id, reason)
            .await
            .unwrap();
        assert_eq!(canceled.status, PaymentStatus::Canceled);
        assert_eq!(*ch.cancel_calls.borrow(), 1, "closed at the channel");
    });
}

#[test]
fn a_qr_order_whose_create_answer_was_lost_gets_its_code_from_a_later_recheck() {
    // Proves a qr_merchant payment whose order the channel created but whose answer was
    // lost (processing, no QR code; the channel's query says pending without one, as
    // WeChat Pay's NOTPAY does) is sent again by a re-check once quiet for 60 s, under the
    // same id, and then shows its QR code; a re-check before that leaves it as it is.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(25),
    );
    *ch.authorizes_unanswered.borrow_mut() = 1;
    block_on(async {
        let t0 = 1_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1250, QR, "")),
        )
        .await
        .unwrap();
        assert_eq!(
            (p.status, &p.next_action),
            (PaymentStatus::Processing, &None)
        );
        let soon = ctx(&repo, &keys, t0 + 1_000);
        let early = recheck_payment(&soon, &ch, &mut rng, &m.id, &p.id)
            .await
            .unwrap();
        assert_eq!(early.status, PaymentStatus::Processing);
        assert_eq!(ch.authorizations(), 1);
        let later = ctx(&repo, &keys, t0 + 61_000);
        let shown = recheck_payment(&later, &ch, &mut rng, &m.id, &p.id)
            .await
            .unwrap();
        assert_eq!(shown.status, PaymentStatus::RequiresCustomerAction);
        assert!(
            matches!(shown.next_action, Some(NextAction::DisplayQr { .. })),
            "{:?}",
            shown.next_action
        );
        assert_eq!(
            *ch.authorized_ids.borrow(),
            vec![p.id.clone(), p.id.clone()],
            "sent again under the same id"
        );
    });
}

#[test]
fn a_late_approval_of_a_payment_decided_meanwhile_answers_payment_not_in_review() {
    // Proves an approval past the payment's expiry that read it in review, while another
    // request had meanwhile declined it (failed), answers its own documented refusal
    // (payment_not_in_review, with the current status), not the cancel's
    // payment_not_cancelable.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(26),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let held = held_for_review(&c, &ch, &mut rng, &m, "").await;
        let key = format!("pay/{}", held.id);
        let in_review = repo.get(&key).await.unwrap();
        review_payment(&c, &ch, &mut rng, &m.id, &held.id, false, false)
            .await
            .unwrap();
        let stale = StaleOnce {
            inner: &repo,
            key,
            stale: std::cell::RefCell::new(in_review),
        };
        let expired = ctx(&stale, &keys, 1_000 + 2 * 86_400_000);
        let e = review_payment(&expired, &ch, &mut rng, &m.id, &held.id, true, false)
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::PaymentNotInReview { status: "failed" });
    });
}

#[test]
fn a_qr_payment_waits_for_the_customer_and_a_notification_completes_it_once() {
    // Proves qr_merchant → display_qr, paid notification → succeeded, duplicate harmless.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(1),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1250, QR, "")),
        )
        .await
        .unwrap();
        assert_eq!(p.status, PaymentStatus::RequiresCustomerAction);
        assert!(matches!(p.next_action, Some(NextAction::DisplayQr { .. })));
        let n = paid_notification(&p.id, 1250);
        assert_eq!(
            apply_payment_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Applied)
        );
        assert_eq!(
            apply_payment_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Duplicate)
        );
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (got.status, got.captured_minor, got.next_action),
            (PaymentStatus::Succeeded, 1250, None)
        );
        let events = list_events(
            &c,
            &m.id,
            &ListParams {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let types: Vec<_> = events.data.iter().rev().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            vec![
                EventType::PaymentCreated,
                EventType::PaymentRequiresCustomerAction,
                EventType::PaymentSucceeded
            ]
        );
    });
}

#[test]
fn every_method_reaches_its_documented_first_status() {
    // Proves the per-method flow: synchronous methods succeed, redirecting ones wait, sms_otp asks for a code.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(2),
    );
    let cases = [
        (QR, PaymentStatus::RequiresCustomerAction),
        (QRC, PaymentStatus::Succeeded),
        (
            r#"{"type":"nfc","token":"tok_abcdef123456","cryptogram":"AAECAw"}"#,
            PaymentStatus::Succeeded,
        ),
        (
            r#"{"type":"sound_wave","token":"sw_123456789"}"#,
            PaymentStatus::Succeeded,
        ),
        (
            r#"{"type":"h5","return_url":"https://shop.example/back"}"#,
            PaymentStatus::RequiresCustomerAction,
        ),
        (r#"{"type":"app"}"#, PaymentStatus::RequiresCustomerAction),
        (
            r#"{"type":"sms_otp","phone":"+8613812345678"}"#,
            PaymentStatus::RequiresCustomerAction,
        ),
    ];
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        for (method, status) in cases {
            let p = create_payment(
                &c,
                &ch,
                &LocalRisk::default(),
                &mut rng,
                &m,
                new_payment(&body(1000, method, "")),
            )
            .await
            .unwrap();
            assert_eq!(p.status, status, "{method}");
            let shown = serde_json::to_string(&p).unwrap();
            for secret in [
                "28763443825664",
                "tok_abcdef123456",
                "AAECAw",
                "+8613812345678",
                "sw_123456789",
            ] {
                assert!(!shown.contains(secret), "{secret} leaked in {shown}");
            }
        }
        let stored = repo.keys_with_prefix("pay/");
        for key in stored {
            let raw = spinpay_core::repo::Repository::get(&repo, &key)
                .await
                .unwrap()
                .unwrap();
            let text = String::from_utf8(raw.value).unwrap();
            assert!(
                !text.contains("+8613812345678") && !text.contains("tok_abcdef123456"),
                "stored in clear: {text}"
            );
        }
    });
}

#[test]
fn magic_amounts_decline_or_leave_the_payment_processing_until_a_recheck() {
    // Proves 666 → failed (channel_declined); 777 timeout → processing, later resolved by query.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(3),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let d = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(666, QRC, "")),
        )
        .await
        .unwrap();
        assert_eq!(d.status, PaymentStatus::Failed);
        assert_eq!(d.failure.unwrap().code, "channel_declined");
        let t = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(777, QRC, "")),
        )
        .await
        .unwrap();
        assert_eq!(t.status, PaymentStatus::Processing);
        let still = recheck_payment(&c, &ch, &mut rng, &m.id, &t.id)
            .await
            .unwrap();
        assert_eq!(still.status, PaymentStatus::Processing);
        ch.paid.borrow_mut().insert(t.id.clone());
        let done = recheck_payment(&c, &ch, &mut rng, &m.id, &t.id)
            .await
            .unwrap();
        assert_eq!(
            (done.status, done.captured_minor),
            (PaymentStatus::Succeeded, 777)
        );
    });
}

#[test]
fn manual_capture_can_be_partial_and_only_once() {
    // Proves requires_capture → partial capture ≤ authorized → succeeded; a second capture is refused.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(4),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1000, QRC, r#","capture":"manual""#)),
        )
        .await
        .unwrap();
        assert_eq!(
            (p.status, p.authorized_minor),
            (PaymentStatus::RequiresCapture, 1000)
        );
        let e = capture_payment(&c, &ch, &mut rng, &m.id, &p.id, Some(1001), false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "capture_exceeds_authorized");
        let cap = capture_payment(&c, &ch, &mut rng, &m.id, &p.id, Some(600), false)
            .await
            .unwrap();
        assert_eq!(
            (cap.status, cap.captured_minor),
            (PaymentStatus::Succeeded, 600)
        );
        let e = capture_payment(&c, &ch, &mut rng, &m.id, &p.id, None, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "payment_not_capturable");
        let e = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(Some(601)))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::RefundExceedsCaptured {
                available_minor: 600
            }
        );
    });
}

#[test]
fn cancel_voids_unpaid_payments_and_refuses_paid_ones() {
    // Proves cancel of a waiting QR payment (with the merchant as its reason), idempotent
    // re-cancel, and refusal after success.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(5),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1000, QR, "")),
        )
        .await
        .unwrap();
        assert_eq!(p.cancellation_reason, None);
        let x = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT)
            .await
            .unwrap();
        assert_eq!(x.status, PaymentStatus::Canceled);
        assert_eq!(x.cancellation_reason, Some(BY_MERCHANT));
        // A repeat changes nothing, the reason included, whatever reason it gives.
        let again = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, CancellationReason::Expired);
        let again = again.await.unwrap();
        assert_eq!(
            (again.version, again.cancellation_reason),
            (x.version, Some(BY_MERCHANT))
        );
        let s = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1000, QRC, "")),
        )
        .await
        .unwrap();
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &s.id, BY_MERCHANT)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "payment_not_cancelable");
    });
}

#[test]
fn a_customer_code_still_processing_is_revoked_by_a_cancel_and_other_processing_payments_are_not() {
    // Proves a cashier who gives up on a customer-presented code the customer has not
    // confirmed (`processing`: the channel says pending) can cancel it: the channel is
    // asked to revoke it (closed there: the customer can no longer pay it) and it ends
    // `canceled` with one `payment.canceled`; a `processing` payment of another kind (a
    // merchant QR whose create answer was lost) is refused `payment_not_cancelable` and
    // the channel is not asked.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(46),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        // 888: the channel answers pending (the customer must confirm in the wallet).
        let code = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        assert_eq!(code.status, PaymentStatus::Processing);
        let canceled = cancel_payment(&c, &ch, &mut rng, &m.id, &code.id, BY_MERCHANT)
            .await
            .unwrap();
        assert_eq!(
            (canceled.status, canceled.cancellation_reason),
            (PaymentStatus::Canceled, Some(BY_MERCHANT))
        );
        assert!(
            ch.closed.borrow().contains(&code.id),
            "revoked at the channel"
        );
        assert_eq!(*ch.cancel_calls.borrow(), 1);
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        let events = list_events(&c, &m.id, &all).await.unwrap().data;
        let canceled_events = events
            .iter()
            .filter(|e| e.event_type == EventType::PaymentCanceled)
            .count();
        assert_eq!(canceled_events, 1);

        // 777: the create's answer is lost; a merchant QR then waits for its answer.
        let lost = pay(&c, &ch, &mut rng, &m, 777, QR).await.unwrap();
        assert_eq!(lost.status, PaymentStatus::Processing);
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &lost.id, BY_MERCHANT)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::PaymentNotCancelable {
                status: "processing"
            }
        );
        assert_eq!(*ch.cancel_calls.borrow(), 1, "the channel was not asked");
    });
}

#[test]
fn a_customer_code_whose_revoke_went_unanswered_is_never_sent_to_the_channel_again() {
    // Proves a `processing` customer code the channel never got (its create lost on the
    // way) whose cancel was not answered is not sent to the channel by a later re-check
    // nor by the create's retry under its Idempotency-Key (either would charge the
    // customer for a sale the merchant gave up on), and the retried cancel revokes it.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(48),
    );
    block_on(async {
        let t0 = 1_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        *ch.authorizes_unanswered.borrow_mut() = 1;
        let seed = Some([9u8; 16]);
        let new = || new_payment(&body(1000, QRC, ""));
        let risk = LocalRisk::default();
        let p = create_payment_seeded(&c, &ch, &risk, &mut rng, &m, new(), seed)
            .await
            .unwrap();
        assert_eq!(p.status, PaymentStatus::Processing);
        // The create never reached the channel: its query knows no such payment.
        ch.authorized_ids.borrow_mut().clear();
        *ch.cancels_unanswered.borrow_mut() = 1;
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT).await;
        assert_eq!(e.unwrap_err(), ApiError::ChannelUnavailable);
        let later = ctx(&repo, &keys, t0 + 120_000);
        let seen = recheck_payment(&later, &ch, &mut rng, &m.id, &p.id)
            .await
            .unwrap();
        assert_eq!(seen.status, PaymentStatus::Processing);
        assert_eq!(ch.authorizations(), 0, "not sent again");
        let retried = create_payment_seeded(&later, &ch, &risk, &mut rng, &m, new(), seed)
            .await
            .unwrap();
        assert_eq!(
            (retried.id.as_str(), retried.status),
            (p.id.as_str(), PaymentStatus::Processing)
        );
        assert_eq!(ch.authorizations(), 0, "not sent by the retry either");
        let canceled = cancel_payment(&later, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT)
            .await
            .unwrap();
        assert_eq!(canceled.status, PaymentStatus::Canceled);
        assert_eq!(ch.authorizations(), 0);
    });
}

#[test]
fn a_revoke_whose_answer_was_lost_ends_canceled_whatever_the_channel_calls_it() {
    // Proves a customer code revoked at the channel whose answer was lost ends `canceled`
    // for the merchant's reason at the next re-check, although the channel's query names
    // the end otherwise than a close (WeChat Pay: `REVOKED`), not `failed`.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(49),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        *ch.closes_unanswered.borrow_mut() = 1;
        *ch.closed_code.borrow_mut() = Some("trade_revoked".into());
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT).await;
        assert_eq!(e.unwrap_err(), ApiError::ChannelUnavailable);
        let seen = recheck_payment(&c, &ch, &mut rng, &m.id, &p.id)
            .await
            .unwrap();
        assert_eq!(
            (seen.status, seen.cancellation_reason),
            (PaymentStatus::Canceled, Some(BY_MERCHANT))
        );
    });
}

/// A channel whose revoke lands after a report of the code's success was applied (the
/// customer confirmed in the wallet as the cashier gave up): the revoke returns the
/// money.
struct PaidDuringRevoke<'a> {
    inner: &'a SimChannel,
    ctx: &'a Ctx<'a, MemoryRepository>,
}

impl ChannelClient for PaidDuringRevoke<'_> {
    async fn authorize(&self, p: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        self.inner.authorize(p, method).await
    }
    async fn capture(&self, p: &Payment, amount_minor: i64) -> ActionOutcome {
        self.inner.capture(p, amount_minor).await
    }
    async fn cancel(&self, p: &Payment) -> ActionOutcome {
        self.inner.paid.borrow_mut().insert(p.id.clone());
        let mut rng = SplitMix64::new(1);
        let seen = recheck_payment(self.ctx, self.inner, &mut rng, &p.merchant_id, &p.id);
        assert_eq!(seen.await.unwrap().status, PaymentStatus::Succeeded);
        ActionOutcome::Done
    }
    async fn query(&self, p: &Payment) -> ChannelReport {
        self.inner.query(p).await
    }
    async fn refund(&self, p: &Payment, r: &Refund) -> RefundOutcome {
        self.inner.refund(p, r).await
    }
    async fn query_refund(&self, p: &Payment, r: &Refund) -> RefundOutcome {
        self.inner.query_refund(p, r).await
    }
    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        self.inner.send_sms(phone, text).await
    }
}

#[test]
fn a_code_paid_while_it_was_being_revoked_is_flagged_for_a_person() {
    // Proves a customer code whose success is applied while its revoke is under way is
    // never left `succeeded` unflagged although the revoke may have returned its money:
    // a success applied before the revoke lands refuses the cancel (409 with
    // `succeeded`), and one applied after a revoke whose answer was lost is accepted;
    // both flag the payment (`paid_while_revoking`), with one `payment.conflicted` each.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(53),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        let racing = PaidDuringRevoke {
            inner: &ch,
            ctx: &c,
        };
        let e = cancel_payment(&c, &racing, &mut rng, &m.id, &p.id, BY_MERCHANT).await;
        assert_eq!(
            e.unwrap_err(),
            ApiError::PaymentNotCancelable {
                status: "succeeded"
            }
        );
        let flagged = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(flagged.status, PaymentStatus::Succeeded);
        let reason = flagged.conflict.as_ref().map(|c| c.reason.as_str());
        assert_eq!(reason, Some("paid_while_revoking"), "{flagged:?}");

        let q = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        *ch.cancels_unanswered.borrow_mut() = 1;
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &q.id, BY_MERCHANT).await;
        assert_eq!(e.unwrap_err(), ApiError::ChannelUnavailable);
        ch.paid.borrow_mut().insert(q.id.clone());
        let seen = recheck_payment(&c, &ch, &mut rng, &m.id, &q.id)
            .await
            .unwrap();
        assert_eq!(seen.status, PaymentStatus::Succeeded);
        let reason = seen.conflict.as_ref().map(|c| c.reason.as_str());
        assert_eq!(reason, Some("paid_while_revoking"), "{seen:?}");
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        let events = list_events(&c, &m.id, &all).await.unwrap().data;
        let conflicted = events
            .iter()
            .filter(|e| e.event_type == EventType::PaymentConflicted)
            .count();
        assert_eq!(conflicted, 2);
    });
}

#[test]
fn a_void_the_channel_refuses_leaves_no_cancel_intent_behind() {
    // Proves a void of an authorized payment that the channel refuses (it holds the
    // money) while its query repeats what the payment already says writes the cancel's
    // intent away all the same: the payment stays `requires_capture` with no
    // `cancel_requested`, so a later close by the channel is never taken for this
    // refused cancel.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(61),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let manual = body(1000, QRC, r#","capture":"manual""#);
        let p = pay_body(&c, &ch, &mut rng, &m, &manual).await.unwrap();
        assert_eq!(p.status, PaymentStatus::RequiresCapture);
        ch.paid.borrow_mut().insert(p.id.clone());
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT).await;
        assert!(matches!(e, Err(ApiError::ChannelDeclined { .. })), "{e:?}");
        let raw = repo.get(&format!("pay/{}", p.id)).await.unwrap().unwrap();
        let record: Payment = serde_json::from_slice(&raw.value).unwrap();
        assert_eq!(
            (record.state.status, record.cancel_requested),
            (PaymentStatus::RequiresCapture, None)
        );
    });
}

#[test]
fn a_revoke_the_channel_refuses_because_it_holds_the_money_settles_the_payment_unflagged() {
    // Proves a cancel whose revoke the channel refuses (`already_paid`) while its query
    // says the customer paid answers 402 `channel_declined` and settles the payment as
    // the channel says, `succeeded` with one `payment.succeeded` and no conflict: the
    // revoke did not happen, so neither that answer nor the channel's later notification
    // of the same payment is flagged as paid while revoking (it is a duplicate).
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(57),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Processing);
        ch.paid.borrow_mut().insert(p.id.clone());
        let e = cancel_payment(&c, &ch, &mut rng, &m.id, &p.id, BY_MERCHANT).await;
        assert!(
            matches!(&e, Err(ApiError::ChannelDeclined { message }) if message.starts_with("already_paid")),
            "{e:?}"
        );
        let settled = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (settled.status, settled.captured_minor, &settled.conflict),
            (PaymentStatus::Succeeded, 888, &None)
        );
        let n = paid_notification(&p.id, 888);
        assert_eq!(
            apply_payment_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Duplicate)
        );
        let after = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(after, settled, "the notification changed nothing");
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        let events = list_events(&c, &m.id, &all).await.unwrap().data;
        let count = |t: EventType| events.iter().filter(|e| e.event_type == t).count();
        assert_eq!(
            (
                count(EventType::PaymentSucceeded),
                count(EventType::PaymentConflicted)
            ),
            (1, 0)
        );
    });
}

#[test]
fn a_new_code_from_a_retried_approval_keeps_the_attempts_left_and_codes_are_capped() {
    // Proves retrying the approval of an sms_otp payment (which sends a new code) gives no
    // new attempts: 4 wrong codes, a new code, and the next wrong one fails the payment;
    // and that however often an approval is retried, at most OTP_CODES_MAX codes are sent.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(66),
    );
    let method = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    let mut config = spinpay_core::riskengine::EngineConfig::default();
    config.weights.per_transaction_max = config.thresholds.review_at;
    let risky = LocalRisk { config };
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let new = new_payment(&body(6_000_000, method, ""));
            let p = create_payment(&c, &ch, &risky, &mut rng, &m, new)
                .await
                .unwrap();
            assert_eq!(p.status, PaymentStatus::RequiresReview);
            ids.push(p.id);
        }
        let (guessed, spammed) = (ids[0].clone(), ids[1].clone());

        review_payment(&c, &ch, &mut rng, &m.id, &guessed, true, false)
            .await
            .unwrap();
        let wrong = |code: String| if code == "000000" { "111111" } else { "000000" };
        for left in (1..OTP_ATTEMPTS_MAX).rev() {
            let bad = wrong(ch.last_otp());
            let e = confirm_payment(&c, &ch, &mut rng, &m.id, &guessed, bad, false).await;
            assert_eq!(
                e.unwrap_err(),
                ApiError::OtpInvalid {
                    attempts_left: left
                }
            );
        }
        let sent = ch.sms.borrow().len();
        let again = review_payment(&c, &ch, &mut rng, &m.id, &guessed, true, false).await;
        assert_eq!(again.unwrap().status, PaymentStatus::RequiresCustomerAction);
        assert_eq!(ch.sms.borrow().len(), sent + 1, "a new code went out");
        let bad = wrong(ch.last_otp());
        let e = confirm_payment(&c, &ch, &mut rng, &m.id, &guessed, bad, false).await;
        assert_eq!(e.unwrap_err(), ApiError::OtpAttemptsExceeded);
        assert_eq!(
            get_payment(&c, &m.id, &guessed).await.unwrap().status,
            PaymentStatus::Failed
        );

        ch.sms.borrow_mut().clear();
        for _ in 0..OTP_CODES_MAX + 3 {
            let r = review_payment(&c, &ch, &mut rng, &m.id, &spammed, true, false).await;
            assert_eq!(r.unwrap().status, PaymentStatus::RequiresCustomerAction);
        }
        assert_eq!(ch.sms.borrow().len(), OTP_CODES_MAX as usize);
        let code = ch.last_otp();
        let ok = confirm_payment(&c, &ch, &mut rng, &m.id, &spammed, &code, false).await;
        assert_eq!(ok.unwrap().status, PaymentStatus::Succeeded);
    });
}

#[test]
fn approving_an_sms_otp_payment_never_held_for_review_is_refused_and_sends_no_code() {
    // Proves an approval is no way to resend a code: on an sms_otp payment risk let
    // through (waiting for its code, never in review) it is payment_not_in_review, no
    // SMS goes out, and the code sent first still pays.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(67),
    );
    let method = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let new = new_payment(&body(1_000, method, ""));
        let p = create_payment(&c, &ch, &LocalRisk::default(), &mut rng, &m, new)
            .await
            .unwrap();
        assert_eq!(p.status, PaymentStatus::RequiresCustomerAction);
        let (sent, code) = (ch.sms.borrow().len(), ch.last_otp());
        for resumes in [false, true] {
            let e = review_payment(&c, &ch, &mut rng, &m.id, &p.id, true, resumes).await;
            assert_eq!(
                e.unwrap_err(),
                ApiError::PaymentNotInReview {
                    status: "requires_customer_action"
                }
            );
        }
        assert_eq!(ch.sms.borrow().len(), sent, "no new code");
        let ok = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, &code, false).await;
        assert_eq!(ok.unwrap().status, PaymentStatus::Succeeded);
    });
}

#[test]
fn sms_otp_confirms_with_the_right_code_and_fails_after_five_wrong_ones() {
    // Proves the OTP flow: code by SMS, wrong code counts down, right code pays, 5 wrong fail.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(6),
    );
    let method = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1000, method, "")),
        )
        .await
        .unwrap();
        assert_eq!(p.next_action, Some(NextAction::EnterOtp));
        let code = ch.last_otp();
        assert!(ch.sms.borrow()[0].1.starts_with("Your spinpay code is "));
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let e = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, wrong, false)
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::OtpInvalid { attempts_left: 4 });
        let ok = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, &code, false)
            .await
            .unwrap();
        assert_eq!(ok.status, PaymentStatus::Succeeded);

        let q = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1000, method, "")),
        )
        .await
        .unwrap();
        let code = ch.last_otp();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for left in (1..5).rev() {
            let e = confirm_payment(&c, &ch, &mut rng, &m.id, &q.id, wrong, false)
                .await
                .unwrap_err();
            assert_eq!(
                e,
                ApiError::OtpInvalid {
                    attempts_left: left
                }
            );
        }
        let e = confirm_payment(&c, &ch, &mut rng, &m.id, &q.id, wrong, false)
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::OtpAttemptsExceeded);
        let after = get_payment(&c, &m.id, &q.id).await.unwrap();
        assert_eq!(after.status, PaymentStatus::Failed);
        let e = confirm_payment(&c, &ch, &mut rng, &m.id, &q.id, &code, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "payment_not_confirmable");
    });
}

#[test]
fn an_otp_expires_after_five_minutes() {
    // Proves a right code submitted after the TTL is otp_expired.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(7),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(
                1000,
                r#"{"type":"sms_otp","phone":"+8613812345678"}"#,
                "",
            )),
        )
        .await
        .unwrap();
        let late = ctx(&repo, &keys, 1_000 + OTP_TTL_MS + 1);
        let e = confirm_payment(&late, &ch, &mut rng, &m.id, &p.id, &ch.last_otp(), false)
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::OtpExpired);
    });
}

#[test]
fn risk_denies_over_limit_and_a_challenge_without_phone_goes_to_review() {
    // Proves deny → failed(risk_denied); challenge w/o phone → requires_review; approve → succeeded.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(8),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(600_000, QR, "")),
        )
        .await
        .unwrap();
        assert_eq!(
            (p.status, p.failure.unwrap().code.as_str()),
            (PaymentStatus::Failed, "risk_denied")
        );
        let risky = strict_risk();
        let r = create_payment(
            &c,
            &ch,
            &risky,
            &mut rng,
            &m,
            new_payment(&body(600_000, QRC, "")),
        )
        .await;
        let r = r.unwrap();
        assert_eq!(
            r.status,
            PaymentStatus::Succeeded,
            "qr_customer limit is higher"
        );
        let q = held_for_review(&c, &ch, &mut rng, &m, "").await;
        let a = review_payment(&c, &ch, &mut rng, &m.id, &q.id, true, false)
            .await
            .unwrap();
        assert_eq!(a.status, PaymentStatus::RequiresCustomerAction);
        let e = review_payment(&c, &ch, &mut rng, &m.id, &q.id, true, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "payment_not_in_review");
    });
}

#[test]
fn a_payment_that_waited_for_review_or_its_code_goes_to_the_channel_dated_when_it_went() {
    // Proves `engaged_at_ms`: a payment asked of the channel at creation is dated by its
    // creation; one approved in review, or whose code was entered, by that moment, which
    // is what a channel dating its requests (UnionPay's txnTime, current when sent) needs.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(31),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let at_once = pay(&c, &ch, &mut rng, &m, 500, QRC).await.unwrap();
        assert_eq!(at_once.status, PaymentStatus::Succeeded);

        let held = held_for_review(&c, &ch, &mut rng, &m, "").await;
        let approved_at = 1_000 + 20 * 60_000;
        let later = ctx(&repo, &keys, approved_at);
        let approved = review_payment(&later, &ch, &mut rng, &m.id, &held.id, true, false)
            .await
            .unwrap();
        assert_eq!(approved.status, PaymentStatus::RequiresCustomerAction);

        let sms = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
        let waiting = pay(&c, &ch, &mut rng, &m, 700, sms).await.unwrap();
        let confirmed_at = 1_000 + 90_000;
        let code = ch.last_otp();
        let confirm_ctx = ctx(&repo, &keys, confirmed_at);
        let ok = confirm_payment(
            &confirm_ctx,
            &ch,
            &mut rng,
            &m.id,
            &waiting.id,
            &code,
            false,
        )
        .await
        .unwrap();
        assert_eq!(ok.status, PaymentStatus::Succeeded);

        assert_eq!(
            *ch.authorized_ids.borrow(),
            [at_once.id.clone(), held.id.clone(), waiting.id.clone()]
        );
        assert_eq!(
            *ch.authorized_dates.borrow(),
            [1_000, approved_at, confirmed_at]
        );
        let record = repo
            .get(&spinpay_core::keys::payment(&held.id))
            .await
            .unwrap()
            .unwrap();
        let stored: spinpay_core::model::Payment = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(
            (stored.created_at_ms, stored.engaged_at_ms()),
            (1_000, approved_at)
        );
    });
}

#[test]
fn a_payment_approved_in_review_after_its_expiry_is_canceled_as_expired_and_never_sent() {
    // Proves an approval that comes after the payment's expiry closes it (the customer
    // can no longer pay, and a channel would get an order dated after its own expiry)
    // instead of sending it, as a late one-time code does.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(32),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let expiring = r#","expires_in_seconds":600"#;
        let held = held_for_review(&c, &ch, &mut rng, &m, expiring).await;
        let late = ctx(&repo, &keys, 1_000 + 600_000);
        let e = review_payment(&late, &ch, &mut rng, &m.id, &held.id, true, false)
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::PaymentNotInReview { status: "canceled" });
        let p = get_payment(&late, &m.id, &held.id).await.unwrap();
        assert_eq!(
            (p.status, p.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert!(
            ch.authorized_ids.borrow().is_empty(),
            "the channel was asked"
        );
    });
}

#[test]
fn a_challenge_with_a_payer_phone_is_confirmed_by_otp() {
    // Proves challenge + payer.phone → enter_otp, and the right code proceeds to the channel.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(9),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let risky = strict_risk();
        let extra = r#","payer":{"phone":"+8613900000000"}"#;
        let p = create_payment(
            &c,
            &ch,
            &risky,
            &mut rng,
            &m,
            new_payment(&body(6_000_000, QRC, extra)),
        )
        .await
        .unwrap();
        assert_eq!(p.next_action, Some(NextAction::EnterOtp));
        assert_eq!(ch.sms.borrow()[0].0, "+8613900000000");
        let ok = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, &ch.last_otp(), false)
            .await
            .unwrap();
        assert_eq!(ok.status, PaymentStatus::Succeeded);
    });
}

#[test]
fn refunds_partial_multiple_and_failed_keep_refunded_within_captured() {
    // Proves several partial refunds, refusal beyond captured, release on failure, pending settled later.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(10),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(5000, QRC, "")),
        )
        .await
        .unwrap();
        let r1 = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(Some(1000)))
            .await
            .unwrap();
        assert_eq!(r1.status, RefundStatus::Succeeded);
        let r2 = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(Some(666)))
            .await
            .unwrap();
        assert_eq!(r2.status, RefundStatus::Failed);
        let r3 = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(Some(888)))
            .await
            .unwrap();
        assert_eq!(r3.status, RefundStatus::Pending);
        let e = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(Some(3113)))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::RefundExceedsCaptured {
                available_minor: 3112
            }
        );
        ch.refunds_done.borrow_mut().insert(r3.id.clone());
        let r3 = recheck_refund(&c, &ch, &mut rng, &m.id, &r3.id)
            .await
            .unwrap();
        assert_eq!(r3.status, RefundStatus::Succeeded);
        let rest = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(None))
            .await
            .unwrap();
        assert_eq!(rest.amount_minor, 3112);
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(got.refunded_minor, 5000);
        assert_eq!(got.refunds.len(), 4);
        let e = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_req(None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "refund_exceeds_captured");
    });
}

#[test]
fn a_key_stored_with_the_exact_bytes_fingerprint_still_replays_those_bytes() {
    // Proves records written before fingerprints read bodies (they hold the fingerprint
    // of the exact bytes, and live 24 h) still replay a retry sending the same bytes, and
    // still refuse another request.
    let (repo, keys) = (MemoryRepository::new(), keyring());
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let body = br#"{ "amount_minor": 500 }"#;
        let Started::Run(ticket) =
            idempotency_begin(&c, "mch_a", Some("old"), "POST", "/v1/x", body)
                .await
                .unwrap()
        else {
            panic!()
        };
        let reply = Reply {
            status: 200,
            body: "{}".into(),
        };
        idempotency_finish(&c, ticket, &reply, KeyOutcome::Store)
            .await
            .unwrap();
        let key =
            spinpay_core::keys::idempotency("mch_a", &spinpay_core::crypto::sha256_hex(b"old"));
        let stored = repo.get(&key).await.unwrap().unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        record["fingerprint"] =
            spinpay_core::idempotency::raw_fingerprint("POST", "/v1/x", body).into();
        repo.put_if_version(&key, stored.version, serde_json::to_vec(&record).unwrap())
            .await
            .unwrap();
        let again = idempotency_begin(&c, "mch_a", Some("old"), "POST", "/v1/x", body)
            .await
            .unwrap();
        assert_eq!(again, Started::Replay(reply));
        let other = idempotency_begin(&c, "mch_a", Some("old"), "POST", "/v1/x", b"{}")
            .await
            .unwrap_err();
        assert_eq!(other.code(), "idempotency_key_reused");
    });
}

#[test]
fn idempotency_replays_same_body_and_rejects_other_bodies_and_concurrent_use() {
    // Proves begin/finish: replay, reused (409), in-use (409), retryable errors release the key.
    let (repo, keys) = (MemoryRepository::new(), keyring());
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let Started::Run(ticket) =
            idempotency_begin(&c, "mch_a", Some("k1"), "POST", "/v1/payments", b"{}")
                .await
                .unwrap()
        else {
            panic!()
        };
        let e = idempotency_begin(&c, "mch_a", Some("k1"), "POST", "/v1/payments", b"{}")
            .await
            .unwrap_err();
        assert_eq!(e, ApiError::IdempotencyKeyInUse);
        let reply = Reply {
            status: 201,
            body: "{\"id\":1}".into(),
        };
        idempotency_finish(&c, ticket, &reply, KeyOutcome::Store)
            .await
            .unwrap();
        let again = idempotency_begin(&c, "mch_a", Some("k1"), "POST", "/v1/payments", b"{}")
            .await
            .unwrap();
        assert_eq!(again, Started::Replay(reply.clone()));
        // The same request in other bytes (an empty body, spacing, a null member).
        for same in [&b""[..], b" { } ", b"{\"metadata\":null}"] {
            let again = idempotency_begin(&c, "mch_a", Some("k1"), "POST", "/v1/payments", same)
                .await
                .unwrap();
            assert_eq!(again, Started::Replay(reply.clone()), "{same:?}");
        }
        let e = idempotency_begin(
            &c,
            "mch_a",
            Some("k1"),
            "POST",
            "/v1/payments",
            b"{\"a\":1}",
        )
        .await
        .unwrap_err();
        assert_eq!((e.code(), e.status()), ("idempotency_key_reused", 409));
        assert!(matches!(
            idempotency_begin(&c, "mch_b", Some("k1"), "POST", "/v1/payments", b"{}").await,
            Ok(Started::Run(Some(_)))
        ));
        let Started::Run(t2) = idempotency_begin(&c, "mch_a", Some("k2"), "POST", "/x", b"{}")
            .await
            .unwrap()
        else {
            panic!()
        };
        let (r, outcome) = reply_for::<()>(&Err(ApiError::ChannelUnavailable), 201);
        assert_eq!(outcome, KeyOutcome::Release);
        let first_seed = t2.as_ref().unwrap().operation_seed();
        idempotency_finish(&c, t2, &r, outcome).await.unwrap();
        // Released at once: the same request runs again and resumes with the seed;
        // another request with the key is refused.
        let e = idempotency_begin(&c, "mch_a", Some("k2"), "POST", "/x", b"{\"a\":1}")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "idempotency_key_reused");
        let Ok(Started::Run(Some(t3))) =
            idempotency_begin(&c, "mch_a", Some("k2"), "POST", "/x", b"{}").await
        else {
            panic!("the retry runs")
        };
        assert_eq!(t3.operation_seed(), first_seed);
        assert!(t3.resumes());
        // An error that would free the key of a first attempt (a configuration blip)
        // keeps the claim of a resumed one: the first attempt may have done its work, so
        // the same request retried resumes with the same seed, another is refused.
        let (r, outcome) = reply_for::<()>(&Err(ApiError::NotConfigured { what: "x" }), 201);
        assert_eq!(outcome, KeyOutcome::Free);
        idempotency_finish(&c, Some(t3), &r, outcome).await.unwrap();
        let e = idempotency_begin(&c, "mch_a", Some("k2"), "POST", "/x", b"{\"a\":1}")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "idempotency_key_reused");
        let Ok(Started::Run(Some(t4))) =
            idempotency_begin(&c, "mch_a", Some("k2"), "POST", "/x", b"{}").await
        else {
            panic!("the retry runs")
        };
        assert_eq!(t4.operation_seed(), first_seed);
        assert!(t4.resumes());
        // A first attempt refused as malformed frees the key for the corrected request.
        let Ok(Started::Run(Some(t5))) =
            idempotency_begin(&c, "mch_a", Some("k5"), "POST", "/x", b"{}").await
        else {
            panic!("a new key runs")
        };
        assert!(!t5.resumes());
        let (r, outcome) = reply_for::<()>(&Err(ApiError::JsonInvalid { detail: "x".into() }), 201);
        assert_eq!(outcome, KeyOutcome::Free);
        idempotency_finish(&c, Some(t5), &r, outcome).await.unwrap();
        let Ok(Started::Run(Some(t6))) =
            idempotency_begin(&c, "mch_a", Some("k5"), "POST", "/x", b"{\"a\":1}").await
        else {
            panic!("the corrected request runs")
        };
        assert!(!t6.resumes());
    });
}

#[test]
fn a_changed_encryption_key_is_refused_as_not_configured_until_the_old_one_is_back() {
    // Proves the first key check on a store seals its marker under the key, the same key
    // passes again (also on a second "instance"), another key (or version) is refused
    // with 503 not_configured naming encryption_key, and the first key passes again; and
    // that on a store with data but no check record, another key than the data's is
    // refused before anything is sealed under it.
    let repo = MemoryRepository::new();
    let (first, other) = (keyring(), spinpay_core::crypto::Keyring::new(1, [7; 32]));
    let newer = spinpay_core::crypto::Keyring::new(2, [42; 32]);
    block_on(async {
        check_encryption_key(&ctx(&repo, &first, 1_000), [1; 12])
            .await
            .unwrap();
        check_encryption_key(&ctx(&repo, &first, 2_000), [2; 12])
            .await
            .unwrap();
        for wrong in [&other, &newer] {
            let e = check_encryption_key(&ctx(&repo, wrong, 3_000), [3; 12])
                .await
                .unwrap_err();
            assert_eq!((e.status(), e.code()), (503, "not_configured"));
            assert!(e.to_string().contains("encryption_key"), "{e}");
        }
        check_encryption_key(&ctx(&repo, &first, 4_000), [4; 12])
            .await
            .unwrap();

        // A store written before the check existed: another key than its data's is
        // refused before any check record is sealed under it.
        let (old, ch, mut rng) = (
            MemoryRepository::new(),
            SimChannel::default(),
            SplitMix64::new(3),
        );
        let c = ctx(&old, &first, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        let e = check_encryption_key(&ctx(&old, &other, 2_000), [5; 12])
            .await
            .unwrap_err();
        assert_eq!(e.code(), "not_configured");
        let record = spinpay_core::keys::key_check();
        assert!(old.get(record).await.unwrap().is_none(), "nothing sealed");
        check_encryption_key(&ctx(&old, &first, 3_000), [6; 12])
            .await
            .unwrap();
        assert!(old.get(record).await.unwrap().is_some());
    });
}

#[test]
fn merchant_order_ids_are_unique_per_merchant_and_searchable() {
    // Proves a duplicate order id is 409 naming the holder, another merchant may reuse it, lookup works.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(11),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (a, _) = merchant(&c, &mut rng).await;
        let (b, _) = merchant(&c, &mut rng).await;
        let extra = r#","merchant_order_id":"ORD-1""#;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &a,
            new_payment(&body(100, QRC, extra)),
        )
        .await
        .unwrap();
        let e = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &a,
            new_payment(&body(100, QRC, extra)),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e,
            ApiError::MerchantOrderIdDuplicate {
                id: "ORD-1".into(),
                payment_id: p.id.clone()
            }
        );
        assert!(
            create_payment(
                &c,
                &ch,
                &LocalRisk::default(),
                &mut rng,
                &b,
                new_payment(&body(100, QRC, extra))
            )
            .await
            .is_ok()
        );
        assert_eq!(
            find_payment_by_order_id(&c, &a.id, "ORD-1")
                .await
                .unwrap()
                .id,
            p.id
        );
        let params = ListParams::parse("merchant_order_id=ORD-1").unwrap();
        assert_eq!(
            list_payments(&c, &a.id, &params).await.unwrap().data[0].id,
            p.id
        );
    });
}

#[test]
fn merchants_never_see_or_change_each_others_objects() {
    // Proves every read and write with another merchant's id is resource_missing.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(12),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (a, _) = merchant(&c, &mut rng).await;
        let (b, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &a,
            new_payment(&body(100, QRC, "")),
        )
        .await
        .unwrap();
        let r = create_refund(&c, &ch, &mut rng, &a.id, &p.id, refund_req(Some(10)))
            .await
            .unwrap();
        let codes = [
            get_payment(&c, &b.id, &p.id).await.unwrap_err().code(),
            get_refund(&c, &b.id, &r.id).await.unwrap_err().code(),
            create_refund(&c, &ch, &mut rng, &b.id, &p.id, refund_req(Some(10)))
                .await
                .unwrap_err()
                .code(),
            cancel_payment(&c, &ch, &mut rng, &b.id, &p.id, BY_MERCHANT)
                .await
                .unwrap_err()
                .code(),
            capture_payment(&c, &ch, &mut rng, &b.id, &p.id, None, false)
                .await
                .unwrap_err()
                .code(),
            get_payment(&c, &a.id, "pay_../../mch")
                .await
                .unwrap_err()
                .code(),
        ];
        assert!(codes.iter().all(|c| *c == "resource_missing"), "{codes:?}");
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        assert!(
            list_payments(&c, &b.id, &all)
                .await
                .unwrap()
                .data
                .is_empty()
        );
        assert!(list_events(&c, &b.id, &all).await.unwrap().data.is_empty());
    });
}

/// Creates `n` qr_customer payments for `m` (of `first_minor`, `first_minor + 1`, …) and
/// returns their ids newest first, as the payment list shows them.
async fn payments_newest_first(
    c: &Ctx<'_, MemoryRepository>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    m: &Merchant,
    n: i64,
    first_minor: i64,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = new_payment(&body(first_minor + i, QRC, ""));
        let p = create_payment(c, ch, &LocalRisk::default(), rng, m, req)
            .await
            .unwrap();
        ids.push(p.id);
    }
    ids.reverse();
    ids
}

/// Every id of `merchant_id`'s payment list, following the cursor `limit` at a time;
/// `check` sees each page.
async fn list_all(
    c: &Ctx<'_, MemoryRepository>,
    merchant_id: &str,
    limit: u32,
    mut check: impl FnMut(&spinpay_core::api::ListResponse<PaymentResponse>),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut params = ListParams {
        limit,
        ..Default::default()
    };
    loop {
        let page = list_payments(c, merchant_id, &params).await.unwrap();
        check(&page);
        seen.extend(page.data.iter().map(|p| p.id.clone()));
        if !page.has_more {
            return seen;
        }
        params.starting_after = seen.last().cloned();
    }
}

#[test]
fn a_page_of_refund_heavy_payments_ends_within_its_byte_budget_and_the_cursor_carries_on() {
    // Proves a payments page stops before LIST_PAGE_BYTES_MAX of JSON (12 payments of 100
    // refunds with 255-character Chinese reasons come to about 1.3 MiB) with has_more,
    // and following the cursor lists every payment once, newest first.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(21),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let reason: String = "退".repeat(255);
        let created = payments_newest_first(&c, &ch, &mut rng, &m, 12, 100_000).await;
        for id in &created {
            for r in 0..100 {
                let req = NewRefund {
                    amount_minor: Some(1),
                    reason: Some(reason.clone()),
                    merchant_refund_id: Some(format!("{r:0>3}-{id}")),
                };
                create_refund(&c, &ch, &mut rng, &m.id, id, req)
                    .await
                    .unwrap();
            }
        }
        let mut pages = 0;
        let seen = list_all(&c, &m.id, 100, |page| {
            pages += 1;
            let bytes = serde_json::to_vec(page).unwrap().len();
            assert!(
                bytes <= LIST_PAGE_BYTES_MAX + 100,
                "page {pages}: {bytes} bytes"
            );
            assert!(page.data.iter().all(|p| p.refunds.len() == 100));
        })
        .await;
        assert!(pages >= 2, "the first page was cut short");
        assert_eq!(seen, created);
    });
}

#[test]
fn a_page_walks_past_a_long_run_of_empty_index_slots_to_older_payments() {
    // Proves a list never ends empty while older payments remain: with three payments
    // below 300 sequence numbers drawn by requests that wrote nothing (failed or crashed
    // creations), a page of 1 still finds the newest payment, and paging finds all three.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(23),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let created = payments_newest_first(&c, &ch, &mut rng, &m, 3, 100).await;
        let seq = spinpay_core::keys::payment_seq(&m.id);
        repo.increment(&seq, 300).await.unwrap();
        let seen = list_all(&c, &m.id, 1, |page| {
            assert_eq!(page.data.len(), 1, "no empty page before the last");
        })
        .await;
        assert_eq!(seen, created);
    });
}

#[test]
fn cursor_lists_page_newest_first_without_gaps_or_repeats() {
    // Proves limit/starting_after/has_more over 25 payments visit each exactly once, newest first.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(13),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let created = payments_newest_first(&c, &ch, &mut rng, &m, 25, 100).await;
        let seen = list_all(&c, &m.id, 10, |_| {}).await;
        assert_eq!(seen, created);
        let before = repo.counts().gets;
        list_payments(
            &c,
            &m.id,
            &ListParams {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(
            repo.counts().gets - before <= 30,
            "a page reads O(limit) keys, not the store"
        );
    });
}

#[test]
fn a_notification_with_the_wrong_amount_flags_the_payment_instead_of_paying_it() {
    // Proves amount mismatch → conflicted flag + payment.conflicted event; status unchanged.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(14),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&body(1250, QR, "")),
        )
        .await
        .unwrap();
        let n = paid_notification(&p.id, 1);
        assert_eq!(
            apply_payment_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Conflicted)
        );
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(got.status, PaymentStatus::RequiresCustomerAction);
        assert_eq!(got.conflict.unwrap().reason, "amount_mismatch");
        let ev = list_events(
            &c,
            &m.id,
            &ListParams {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ev.data[0].event_type, EventType::PaymentConflicted);
        let mut other = n.clone();
        other.channel = spinpay_core::model::Channel::Alipay;
        assert_eq!(
            apply_payment_notification(&c, &mut rng, &other).await,
            Ok(NotificationResult::UnknownObject)
        );
    });
}

#[test]
fn a_rotated_secret_key_replaces_the_old_one_after_its_grace_period() {
    // Proves rotate_secret_key: the new key works at once, the old one until its grace
    // period ends and not after; a retry of the same rotation (same Idempotency-Key seed)
    // answers the same key without rotating twice; rotating again stops the key two
    // rotations old at once; a grace period outside 300..=604800 is refused naming the
    // field and changes nothing; another merchant's key is untouched.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(21));
    block_on(async {
        let t0 = 1_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, first) = merchant(&c, &mut rng).await;
        let (other, other_key) = merchant(&c, &mut rng).await;
        let auth_at = async |now_ms: i64, key: &str| {
            let c = ctx(&repo, &keys, now_ms);
            authenticate(&c, Some(&format!("Bearer {key}")))
                .await
                .map(|m| m.id)
        };
        for bad in [0, 299, 604_801] {
            let e = rotate_secret_key(&c, &mut rng, &m.id, None, Some(bad), None)
                .await
                .unwrap_err();
            assert_eq!(e.param(), Some("grace_period_s"), "{bad}");
        }
        assert_eq!(
            auth_at(t0, &first).await,
            Ok(m.id.clone()),
            "nothing changed"
        );

        let seed = [7_u8; 16];
        let second = rotate_secret_key(&c, &mut rng, &m.id, None, Some(600), Some(seed))
            .await
            .unwrap();
        assert_eq!(second.previous_key_expires_at_ms, t0 + 600_000);
        let again = rotate_secret_key(&c, &mut rng, &m.id, None, Some(600), Some(seed))
            .await
            .unwrap();
        assert_eq!(again, second, "a retry answers the same key");
        let second = second.secret_key;
        // That rotation landed (its retry may be answered even with the key it retired);
        // another seed's did not.
        let now = authenticate(&c, Some(&format!("Bearer {second}")))
            .await
            .unwrap();
        assert!(rotation_landed(&c, &now, seed));
        assert!(!rotation_landed(&c, &now, [8_u8; 16]));
        assert!(by_current_key(&now, Some(&format!("Bearer {second}"))));
        assert!(!by_current_key(&now, Some(&format!("Bearer {first}"))));
        assert_ne!(second, first);
        assert_eq!(auth_at(t0, &second).await, Ok(m.id.clone()));
        assert_eq!(auth_at(t0 + 599_999, &first).await, Ok(m.id.clone()));
        assert_eq!(
            auth_at(t0 + 600_000, &first).await,
            Err(ApiError::ApiKeyInvalid),
            "the grace period is over"
        );

        let third = rotate_secret_key(&c, &mut rng, &m.id, None, None, None)
            .await
            .unwrap();
        assert_eq!(
            third.previous_key_expires_at_ms,
            t0 + 300_000,
            "5 minutes by default"
        );
        assert_eq!(auth_at(t0, &third.secret_key).await, Ok(m.id.clone()));
        assert_eq!(auth_at(t0, &second).await, Ok(m.id.clone()));
        assert_eq!(
            auth_at(t0, &first).await,
            Err(ApiError::ApiKeyInvalid),
            "two rotations old"
        );
        // The seeded rotation retried now (its key already replaced by the third) does
        // not rotate back: both keys keep working, the newest stays current.
        let late = rotate_secret_key(&c, &mut rng, &m.id, None, Some(600), Some(seed))
            .await
            .unwrap();
        assert_eq!(late.secret_key, second);
        assert_eq!(auth_at(t0, &third.secret_key).await, Ok(m.id.clone()));
        assert_eq!(auth_at(t0, &second).await, Ok(m.id.clone()));
        assert_eq!(
            auth_at(t0 + 10_000_000, &third.secret_key).await,
            Ok(m.id.clone()),
            "the newest key is still the current one"
        );
        assert_eq!(auth_at(t0, &other_key).await, Ok(other.id));
    });
}

#[test]
fn bearer_keys_and_the_admin_token_fail_closed() {
    // Proves authentication errors: missing header, wrong key, unconfigured admin token.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(15));
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, sk) = merchant(&c, &mut rng).await;
        assert_eq!(
            authenticate(&c, Some(&format!("Bearer {sk}")))
                .await
                .unwrap()
                .id,
            m.id
        );
        assert_eq!(
            authenticate(&c, None).await.unwrap_err(),
            ApiError::AuthenticationRequired
        );
        let forged = format!("Bearer sk_{}", "a".repeat(52));
        assert_eq!(
            authenticate(&c, Some(&forged)).await.unwrap_err(),
            ApiError::ApiKeyInvalid
        );
        assert_eq!(
            authenticate(&c, Some("Bearer nope")).await.unwrap_err(),
            ApiError::ApiKeyInvalid
        );
        let secret = webhook_secret(&c, &m).unwrap();
        assert!(secret.expose().starts_with("whsec_"));
        let t0k = "t0k-9f2c4e7a1b3d5f60a8c2";
        assert!(check_admin_token(Some(&format!("Bearer {t0k}")), Some(t0k)).is_ok());
        assert_eq!(
            check_admin_token(Some("Bearer x"), Some(t0k)),
            Err(ApiError::AdminTokenInvalid)
        );
        // A guessable token, or the template's placeholder, disables the admin API.
        for weak in ["t0k", "REPLACE_ME_admin_token"] {
            let given = format!("Bearer {weak}");
            let e = check_admin_token(Some(&given), Some(weak)).unwrap_err();
            assert_eq!(e.code(), "not_configured", "{weak}");
        }
        assert_eq!(
            check_admin_token(Some("Bearer t0k"), None)
                .unwrap_err()
                .code(),
            "not_configured"
        );
        assert_eq!(
            check_admin_token(Some("Bearer "), Some(""))
                .unwrap_err()
                .code(),
            "not_configured"
        );
    });
}

#[test]
fn merchant_settings_change_the_default_capture_mode() {
    // Proves update_merchant validates and stores settings, and an empty notify_url clears it.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(16));
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, sk) = merchant(&c, &mut rng).await;
        let req: spinpay_core::api::UpdateMerchantRequest = spinpay_core::api::parse_body(
            br#"{"default_capture":"manual","notify_url":"https://shop.example/hooks"}"#,
            spinpay_core::api::BODY_BYTES_MAX,
        )
        .unwrap();
        let got = update_merchant(&c, &m.id, None, req.validate().unwrap())
            .await
            .unwrap();
        assert_eq!(
            got.default_capture,
            spinpay_core::model::CaptureMode::Manual
        );
        let again = authenticate(&c, Some(&format!("Bearer {sk}")))
            .await
            .unwrap();
        assert_eq!(
            again.notify_url.as_deref(),
            Some("https://shop.example/hooks")
        );
        let clear = spinpay_core::api::UpdateMerchantRequest {
            name: None,
            notify_url: Some(String::new()),
            default_capture: None,
        };
        let got = update_merchant(&c, &m.id, None, clear.validate().unwrap())
            .await
            .unwrap();
        assert_eq!(got.notify_url, None);
        let bad = spinpay_core::api::UpdateMerchantRequest {
            name: None,
            notify_url: None,
            default_capture: Some("later".into()),
        };
        assert_eq!(bad.validate().unwrap_err().param(), Some("default_capture"));
    });
}

struct DownRisk;

impl RiskClient for DownRisk {
    async fn assess(
        &self,
        _input: &spinpay_core::riskengine::RiskInput,
    ) -> Result<spinpay_core::model::RiskAssessment, String> {
        Err("connection refused".into())
    }
}

#[test]
fn an_unreachable_risk_engine_fails_closed_and_frees_the_order_id() {
    // Proves risk_unavailable (503, retryable), no payment stored, the order id reusable.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(17),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let b = body(100, QRC, r#","merchant_order_id":"ORD-9""#);
        let e = create_payment(&c, &ch, &DownRisk, &mut rng, &m, new_payment(&b))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.status(), e.is_retryable()),
            ("risk_unavailable", 503, true)
        );
        assert!(repo.keys_with_prefix("pay/").is_empty());
        let ok = create_payment(
            &c,
            &ch,
            &LocalRisk::default(),
            &mut rng,
            &m,
            new_payment(&b),
        )
        .await
        .unwrap();
        assert_eq!(ok.status, PaymentStatus::Succeeded);
    });
}

/// A merchant, its 2,000 CNY customer-presented payment (succeeded), and a refund of 888
/// of it that the channel leaves pending (the magic amount).
async fn paid_with_pending_refund(
    c: &Ctx<'_, MemoryRepository>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
) -> (
    spinpay_core::model::Merchant,
    spinpay_core::api::PaymentResponse,
    spinpay_core::api::RefundResponse,
) {
    let (m, _) = merchant(c, rng).await;
    let p = create_payment(
        c,
        ch,
        &LocalRisk::default(),
        rng,
        &m,
        new_payment(&body(2000, QRC, "")),
    )
    .await
    .unwrap();
    let r = create_refund(c, ch, rng, &m.id, &p.id, refund_req(Some(888)))
        .await
        .unwrap();
    (m, p, r)
}

#[test]
fn a_refund_notification_settles_a_pending_refund_once() {
    // Proves a pending refund is settled by a notification; a duplicate changes nothing.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(18),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, p, r) = paid_with_pending_refund(&c, &ch, &mut rng).await;
        assert_eq!(r.status, RefundStatus::Pending);
        let n = RefundNotification {
            channel: spinpay_core::model::Channel::Sandbox,
            refund_id: r.id.clone(),
            payment_id: Some(p.id.clone()),
            amount_minor: Some(888),
            currency: Some("CNY".into()),
            outcome: RefundOutcome::Succeeded { channel_ref: None },
        };
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Applied)
        );
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &n).await,
            Ok(NotificationResult::Duplicate)
        );
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (got.refunded_minor, got.refunds[0].status),
            (888, RefundStatus::Succeeded)
        );
    });
}

#[test]
fn a_refund_notification_contradicting_a_settled_refund_flags_the_payment_once() {
    // Proves a notification that a failed refund succeeded after all (or the reverse)
    // keeps the refund as settled (its reservation stays released: refunded 0), flags the
    // payment conflicted (refund_contradiction) with one payment.conflicted, and answers
    // Conflicted; the same contradiction again changes nothing.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(19),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, p, r) = paid_with_pending_refund(&c, &ch, &mut rng).await;
        let note = |outcome| RefundNotification {
            channel: spinpay_core::model::Channel::Sandbox,
            refund_id: r.id.clone(),
            payment_id: None,
            amount_minor: None,
            currency: None,
            outcome,
        };
        let failed = note(RefundOutcome::Failed {
            code: "refused".into(),
            message: "refused".into(),
        });
        let succeeded = note(RefundOutcome::Succeeded { channel_ref: None });
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &failed).await,
            Ok(NotificationResult::Applied)
        );
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &succeeded).await,
            Ok(NotificationResult::Conflicted)
        );
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (got.refunded_minor, got.refunds[0].status),
            (0, RefundStatus::Failed)
        );
        assert_eq!(got.conflict.unwrap().reason, "refund_contradiction");
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &succeeded).await,
            Ok(NotificationResult::Duplicate)
        );
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        let events = list_events(&c, &m.id, &all).await.unwrap().data;
        let conflicted = events
            .iter()
            .filter(|e| e.event_type == EventType::PaymentConflicted)
            .count();
        assert_eq!(conflicted, 1, "one payment.conflicted");
    });
}

#[test]
fn a_refund_notification_about_another_payment_or_amount_is_not_applied_and_flags_the_payment() {
    // Proves a signed refund success that names our refund but states another payment,
    // another amount or another currency leaves the refund pending and its reservation
    // unsettled (refunded 0), flags the payment (refund_mismatch, with the stated amount)
    // with one payment.conflicted, and answers Conflicted, then Duplicate; a notification
    // stating nothing of the kind (Alipay states no per-refund amount) still settles it.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(22),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, p, r) = paid_with_pending_refund(&c, &ch, &mut rng).await;
        let (_, other, _) = paid_with_pending_refund(&c, &ch, &mut rng).await;
        let other_payment = other.id.clone();
        let note = |payment_id: Option<String>, amount_minor, currency: &str| RefundNotification {
            channel: spinpay_core::model::Channel::Sandbox,
            refund_id: r.id.clone(),
            payment_id,
            amount_minor,
            currency: Some(currency.to_string()),
            outcome: RefundOutcome::Succeeded { channel_ref: None },
        };
        let mismatches = [
            note(Some(other_payment), Some(888), "CNY"),
            note(Some(p.id.clone()), Some(999), "CNY"),
            note(None, None, "USD"),
        ];
        let first = apply_refund_notification(&c, &mut rng, &mismatches[1]).await;
        assert_eq!(first, Ok(NotificationResult::Conflicted));
        for n in &mismatches {
            assert_eq!(
                apply_refund_notification(&c, &mut rng, n).await,
                Ok(NotificationResult::Duplicate),
                "{n:?}"
            );
        }
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (got.refunded_minor, got.refunds[0].status),
            (0, RefundStatus::Pending)
        );
        let conflict = got.conflict.unwrap();
        assert_eq!(
            (conflict.reason.as_str(), conflict.channel_amount_minor),
            ("refund_mismatch", Some(999))
        );
        let all = ListParams {
            limit: 100,
            ..Default::default()
        };
        let events = list_events(&c, &m.id, &all).await.unwrap().data;
        let conflicted = events
            .iter()
            .filter(|e| e.event_type == EventType::PaymentConflicted)
            .count();
        assert_eq!(conflicted, 1, "one payment.conflicted");
        let plain = RefundNotification {
            payment_id: Some(p.id.clone()),
            amount_minor: None,
            currency: None,
            ..note(None, None, "CNY")
        };
        assert_eq!(
            apply_refund_notification(&c, &mut rng, &plain).await,
            Ok(NotificationResult::Applied)
        );
        let got = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(
            (got.refunded_minor, got.refunds[0].status),
            (888, RefundStatus::Succeeded)
        );
    });
}

/// The sandbox telling us `payment_id` was paid `amount_minor` CNY.
fn paid_notification(payment_id: &str, amount_minor: i64) -> PaymentNotification {
    PaymentNotification {
        channel: spinpay_core::model::Channel::Sandbox,
        payment_id: payment_id.to_string(),
        report: ChannelReport {
            outcome: ChannelOutcome::Succeeded { channel_ref: None },
            amount_minor: Some(amount_minor),
            currency: Some("CNY".into()),
        },
    }
}

#[test]
fn concurrent_confirms_compare_at_most_five_codes_however_many_arrive_at_once() {
    // Proves the five attempts bound the codes compared, not the writes that won: 64
    // wrong codes and then the right one, all sent at once (interleaved at every storage
    // operation), get at most five codes compared; the rest are refused unseen, the right
    // code among them, and the payment fails with otp_attempts_exceeded.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(31),
    );
    let method = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay_body(&c, &ch, &mut rng, &m, &body(1000, method, ""))
            .await
            .unwrap();
        let right = ch.last_otp();
        let mut codes: Vec<String> = (0..1_000_000u32)
            .map(|n| format!("{n:06}"))
            .filter(|code| *code != right)
            .take(64)
            .collect();
        codes.push(right);
        repo.set_faults(spinpay_core::repo::memory::Faults {
            yield_per_mille: 1000,
            ..Default::default()
        });
        let confirms = codes.iter().enumerate().map(|(i, code)| {
            let (c, ch, m_id, p_id) = (&c, &ch, &m.id, &p.id);
            async move {
                let mut rng = SplitMix64::new(100 + i as u64);
                confirm_payment(c, ch, &mut rng, m_id, p_id, code, false).await
            }
        });
        let answers = futures::future::join_all(confirms).await;
        repo.set_faults(Default::default());
        let told = |ok: bool| {
            answers
                .iter()
                .filter(|a| match a {
                    Ok(_) => ok,
                    Err(ApiError::OtpInvalid { .. }) => !ok,
                    Err(_) => false,
                })
                .count()
        };
        // Each compared code is answered by what it was: right, or wrong with attempts
        // left; the code that spent the last attempt is answered attempts_exceeded.
        assert!(told(true) + told(false) <= 4, "{answers:?}");
        assert!(
            answers.last().unwrap().is_err(),
            "the right code came too late"
        );
        let after = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(after.status, PaymentStatus::Failed, "{after:?}");
        let failure = after.failure.as_ref().map(|f| f.code.as_str());
        assert_eq!(failure, Some("otp_attempts_exceeded"));
        assert_eq!(ch.authorizations(), 0);
    });
}

#[test]
fn a_payment_risk_moves_at_creation_has_that_status_event_too() {
    // Proves the one-event-per-change rule holds at creation: a payment held for review
    // emits payment.requires_review, a denied one payment.failed, one waiting for its
    // code payment.requires_customer_action, each after payment.created; a payment sent
    // straight to the channel emits only payment.created before the channel's answer.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(53),
    );
    let sms = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let mut review = spinpay_core::riskengine::EngineConfig::default();
        review.weights.per_transaction_max = review.thresholds.review_at;
        let mut deny = spinpay_core::riskengine::EngineConfig::default();
        deny.weights.per_transaction_max = deny.thresholds.deny_at;
        let cases = [
            (review, 6_000_000, QRC, EventType::PaymentRequiresReview),
            (deny, 6_000_000, QRC, EventType::PaymentFailed),
            (
                Default::default(),
                1000,
                sms,
                EventType::PaymentRequiresCustomerAction,
            ),
            (Default::default(), 1000, QRC, EventType::PaymentSucceeded),
        ];
        for (config, amount, method, second) in cases {
            let (m, _) = merchant(&c, &mut rng).await;
            let risk = LocalRisk { config };
            let new = new_payment(&body(amount, method, ""));
            let p = create_payment(&c, &ch, &risk, &mut rng, &m, new)
                .await
                .unwrap();
            let all = ListParams {
                limit: 100,
                ..Default::default()
            };
            let events = list_events(&c, &m.id, &all).await.unwrap().data;
            let types: Vec<_> = events.iter().rev().map(|e| e.event_type).collect();
            assert_eq!(types, [EventType::PaymentCreated, second], "{p:?}");
            assert_eq!(events[0].data["status"], p.status.as_str());
        }
    });
}

#[test]
fn a_confirm_that_finds_no_attempt_left_fails_nothing() {
    // Proves only the request that spends the last attempt on a wrong code fails the
    // payment: once the last attempt was spent by the right code (its request still on
    // its way to the channel, or cut off), a duplicate or late confirm finds no attempt
    // left and is refused without failing the payment.
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(71),
    );
    let method = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay_body(&c, &ch, &mut rng, &m, &body(1000, method, ""))
            .await
            .unwrap();
        let right = ch.last_otp();
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        for left in (1..=4).rev() {
            let e = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, wrong, false).await;
            assert_eq!(
                e.unwrap_err(),
                ApiError::OtpInvalid {
                    attempts_left: left
                }
            );
        }
        // The right code spends the last attempt (as check_otp does first).
        let key = spinpay_core::keys::otp(&p.id);
        let stored = repo.get(&key).await.unwrap().unwrap();
        let mut challenge: OtpChallenge = serde_json::from_slice(&stored.value).unwrap();
        challenge.attempts_left = 0;
        let spent = serde_json::to_vec(&challenge).unwrap();
        repo.put_if_version(&key, stored.version, spent)
            .await
            .unwrap();
        for code in [right.as_str(), wrong] {
            let e = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, code, false).await;
            assert_eq!(e.unwrap_err(), ApiError::OtpAttemptsExceeded);
            let after = get_payment(&c, &m.id, &p.id).await.unwrap();
            assert_eq!(
                after.status,
                PaymentStatus::RequiresCustomerAction,
                "{after:?}"
            );
        }
    });
}
