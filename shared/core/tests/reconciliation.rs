//! Reconciliation: payments and refunds still waiting on their channel are settled by
//! the scheduled sweeps alone, with nobody reading them (`service::reconcile`).

mod common;

use common::hooked::{at_every_crash_point, dies_after, world};
use common::*;
use futures::executor::block_on;
use spinpay_core::api::ListParams;
use spinpay_core::error::ApiError;
use spinpay_core::model::{CancellationReason, EventType, PaymentStatus, RefundStatus};
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;
const QR: &str = r#"{"type":"qr_merchant"}"#;

/// When the notification sweep first takes up markers written at `t0`.
fn sweep_time(t0: i64) -> i64 {
    t0 + PUBLISH_GRACE_MS + 1
}

/// When what that sweep handed over is first due for reconciliation.
fn reconcile_time(t0: i64) -> i64 {
    sweep_time(t0) + RECONCILE_INTERVAL_MS
}

/// One reconciliation of every merchant at `now_ms`.
async fn reconcile_at(
    repo: &MemoryRepository,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    now_ms: i64,
    limit: Option<u32>,
) -> Result<ReconcileReport, ApiError> {
    let keys = keyring();
    let c = ctx(repo, &keys, now_ms);
    let req = ReconcileRequest {
        limit,
        merchant_id: None,
        wall_clock: None,
    };
    reconcile(&c, ch, rng, &req).await
}

/// How many `payment.canceled` events merchant `merchant_id` has.
async fn canceled_events(c: &Ctx<'_, MemoryRepository>, merchant_id: &str) -> usize {
    let all = ListParams {
        limit: 100,
        ..Default::default()
    };
    let events = list_events(c, merchant_id, &all).await.unwrap().data;
    events
        .iter()
        .filter(|e| e.event_type == EventType::PaymentCanceled)
        .count()
}

/// Asserts merchant `merchant_id` has no reconciliation slot left in any tier.
fn assert_nothing_queued(repo: &MemoryRepository, merchant_id: &str) {
    assert!(
        repo.keys_with_prefix(&format!("mch/{merchant_id}/rcn"))
            .iter()
            .all(|k| k.ends_with("/head")),
        "no slot left queued"
    );
}

#[test]
fn a_payment_an_unkeyed_create_left_processing_is_settled_by_the_sweeps_alone() {
    // Proves that whichever storage operation an unkeyed create dies at, a payment it
    // stored `processing` ends succeeded, charged once, with nobody reading it: the
    // notification sweep hands it to reconciliation, which asks the channel (or sends it
    // again if the channel never got it). Without reconciliation nothing would: no
    // notification comes for a payment the channel never saw.
    let keys = keyring();
    let t0 = 1_000_000;
    let mut stuck = 0;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(31);
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
            sweep_at(&repo, sweep_time(t0), sweep_time(t0))
                .await
                .unwrap();
            let report = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None)
                .await
                .unwrap();
            let stored = repo.keys_with_prefix("pay/");
            let Some(key) = stored.first() else {
                assert!(ch.charged().is_empty(), "{at}: charged without a payment");
                assert_eq!(report.rechecked, 0, "{at}: {report:?}");
                return finished;
            };
            let id = key.trim_start_matches("pay/").to_string();
            if report.rechecked > 0 {
                stuck += 1;
                assert_eq!((report.rechecked, report.settled), (1, 1), "{at}");
            }
            let after = get_payment(&c, &m.id, &id).await.unwrap();
            assert_eq!(after.status, PaymentStatus::Succeeded, "{at}: {after:?}");
            assert_eq!(ch.charged(), [id].into(), "{at}");
            // Settled: nothing is queued any more.
            let later = reconcile_time(t0) + RECONCILE_INTERVAL_MS;
            let again = reconcile_at(&repo, &ch, &mut rng, later, None)
                .await
                .unwrap();
            assert_eq!(again.rechecked, 0, "{at}: {again:?}");
            finished
        })
    });
    assert!(steps > 5, "the create has many crash points ({steps})");
    assert!(stuck > 0, "some crash points leave it to reconciliation");
}

#[test]
fn a_refund_an_unkeyed_request_left_pending_is_settled_by_the_sweeps_alone() {
    // Proves that whichever storage operation an unkeyed refund dies at, a refund it
    // reserved ends succeeded, refunded once, with nobody reading it; otherwise its
    // reservation would hold 300 of the payment for good.
    let keys = keyring();
    let t0 = 2_000_000;
    let mut stuck = 0;
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(32);
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
            sweep_at(&repo, sweep_time(t0), sweep_time(t0))
                .await
                .unwrap();
            let report = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None)
                .await
                .unwrap();
            let paid = get_payment(&c, &m.id, &p.id).await.unwrap();
            let Some(r) = paid.refunds.first() else {
                assert!(
                    ch.refunded_ids.borrow().is_empty(),
                    "{at}: refunded, none reserved"
                );
                assert_eq!(paid.refunded_minor, 0, "{at}");
                return finished;
            };
            if report.rechecked > 0 {
                stuck += 1;
                assert_eq!(report.settled, report.rechecked, "{at}: {report:?}");
            }
            assert_eq!(r.status, RefundStatus::Succeeded, "{at}: {r:?}");
            assert_eq!(paid.refunded_minor, 300, "{at}");
            let asked = ch.refunded_ids.borrow().clone();
            assert!(asked.iter().all(|id| *id == r.id), "{at}: {asked:?}");
            finished
        })
    });
    assert!(steps > 3, "the refund has several crash points ({steps})");
    assert!(stuck > 0, "some crash points leave it to reconciliation");
}

/// Records the reads for update each key gets.
#[derive(Default)]
struct ReadsForUpdate(std::cell::RefCell<Vec<String>>);

impl common::hooked::Hooks for &ReadsForUpdate {
    fn before(&self, op: common::hooked::Op, key: &str) -> Result<(), RepoError> {
        if op == common::hooked::Op::GetForUpdate {
            self.0.borrow_mut().push(key.to_string());
        }
        Ok(())
    }
}

impl ReadsForUpdate {
    fn of(&self, key: &str) -> usize {
        self.0.borrow().iter().filter(|k| *k == key).count()
    }
}

#[test]
fn rechecks_that_change_nothing_read_without_a_compare_and_swap_handle() {
    // Proves a re-check that finds a payment or refund where it was (the channel still
    // says pending) reads it with a plain read, never through a compare-and-swap handle
    // (on Spin's Redis store each handle is a connection of its own), while the
    // channel's first answer to a new payment or refund, which moves it, reads the
    // record for update.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(71);
        let seen = ReadsForUpdate::default();
        let hooked = common::hooked::Hooked {
            inner: &repo,
            hooks: &seen,
        };
        let c = ctx(&hooked, &keys, 4_000_000);
        let (m, _) = merchant(&c, &mut rng).await;
        // 888: the channel leaves the payment processing, then the refund pending.
        let p = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Processing);
        let pay_key = format!("pay/{}", p.id);
        let first = seen.of(&pay_key);
        assert!(first >= 1, "the first answer reads for update");
        let later = ctx(&hooked, &keys, 4_000_000 + 1_000);
        let again = recheck_payment(&later, &ch, &mut rng, &m.id, &p.id)
            .await
            .unwrap();
        assert_eq!(again.status, PaymentStatus::Processing);
        assert_eq!(seen.of(&pay_key), first, "a re-check that changes nothing");

        let paid = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        let r = create_refund(&c, &ch, &mut rng, &m.id, &paid.id, refund_of(888))
            .await
            .unwrap();
        assert_eq!(r.status, RefundStatus::Pending);
        let refund_key = format!("re/{}", r.id);
        let before = seen.of(&refund_key);
        assert!(before >= 1, "the refund's first answer reads for update");
        let again = recheck_refund(&later, &ch, &mut rng, &m.id, &r.id)
            .await
            .unwrap();
        assert_eq!(again.status, RefundStatus::Pending);
        assert_eq!(
            seen.of(&refund_key),
            before,
            "a re-check that changes nothing"
        );
    });
}

#[test]
fn a_refund_made_days_after_its_payment_is_rechecked_on_its_own_age() {
    // Proves a refund the channel leaves pending is re-checked by the refund's age, not
    // its payment's: made two days after the payment, it is asked about at the first
    // tier's interval, is still queued two hours later, and settles when the channel
    // finishes it, instead of being given up at its first re-check (its payment being
    // past the horizon) with its amount held on the payment for good.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(42);
        let t0 = 9_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let t1 = t0 + 2 * RECONCILE_HORIZON_MS;
        let c1 = ctx(&repo, &keys, t1);
        // 888: the channel leaves the refund pending.
        let r = create_refund(&c1, &ch, &mut rng, &m.id, &p.id, refund_of(888))
            .await
            .unwrap();
        assert_eq!(r.status, RefundStatus::Pending);
        sweep_at(&repo, sweep_time(t1), sweep_time(t1))
            .await
            .unwrap();
        let first = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t1), None)
            .await
            .unwrap();
        assert_eq!((first.rechecked, first.still_open), (1, 1), "{first:?}");
        let hours = 3_600_000;
        let later = reconcile_at(&repo, &ch, &mut rng, t1 + 2 * hours, None)
            .await
            .unwrap();
        assert_eq!((later.still_open, later.given_up), (1, 0), "{later:?}");
        ch.refunds_done.borrow_mut().insert(r.id.clone());
        let done = reconcile_at(&repo, &ch, &mut rng, t1 + 4 * hours, None)
            .await
            .unwrap();
        assert_eq!(done.settled, 1, "{done:?}");
        let paid = get_payment(&c1, &m.id, &p.id).await.unwrap();
        assert_eq!(paid.refunded_minor, 888);
        assert_eq!(paid.refunds[0].status, RefundStatus::Succeeded);
        assert_nothing_queued(&repo, &m.id);
    });
}

#[test]
fn a_refund_settled_by_a_request_that_died_before_its_payment_was_updated_is_released_by_the_sweep()
{
    // Proves that whichever storage operation a re-check settling a pending refund dies
    // at, once the refund is stored settled the notification sweep (which takes up that
    // write's marker) also settles its reservation on the payment, with nobody reading
    // the payment; before, the stored payment kept the amount reserved, neither refunded
    // nor refundable, in lists and reports.
    let keys = keyring();
    let t0 = 2_500_000;
    let mut settled_then_died = 0;
    at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(50);
        block_on(async {
            let c = ctx(&repo, &keys, t0);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 2000, QRC).await.unwrap();
            // 888: the channel leaves the refund pending, then finishes it.
            let r = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(888))
                .await
                .unwrap();
            ch.refunds_done.borrow_mut().insert(r.id.clone());
            let finished = dies_after(steps, &repo, &ch, async |crash, dying| {
                let cc = ctx(crash, &keys, t0);
                recheck_refund(&cc, dying, &mut rng, &m.id, &r.id).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let raw = async |key: String| {
                let v = repo.get(&key).await.unwrap().unwrap();
                serde_json::from_slice::<serde_json::Value>(&v.value).unwrap()
            };
            let refund = raw(spinpay_core::keys::refund(&r.id)).await;
            if refund["state"]["status"] != "succeeded" {
                return finished;
            }
            let held = raw(spinpay_core::keys::payment(&p.id)).await;
            if held["state"]["refunds_pending"] != serde_json::json!([]) {
                settled_then_died += 1;
            }
            sweep_at(&repo, sweep_time(t0), sweep_time(t0))
                .await
                .unwrap();
            let stored = raw(spinpay_core::keys::payment(&p.id)).await;
            assert_eq!(
                stored["state"]["refunds_pending"],
                serde_json::json!([]),
                "{at}: {stored}"
            );
            assert_eq!(stored["state"]["refunded_minor"], 888, "{at}");
            finished
        })
    });
    assert!(
        settled_then_died > 0,
        "some crash points fall between the two writes"
    );
}

#[test]
fn a_payment_waiting_on_the_customer_is_rechecked_until_paid_and_closed_after_the_horizon() {
    // Proves that a QR payment the customer has not paid stays queued (re-checked once
    // per interval, never more often), settles once the channel says it is paid (a lost
    // notification), and that one nobody ever pays stops being re-checked a day after
    // its creation instead of querying the channel for ever: it is closed at the channel
    // (nobody can pay it any more) and canceled, and the merchant is told.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(33);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let paid_later = pay(&c, &ch, &mut rng, &m, 1200, QR).await.unwrap();
        let never_paid = pay(&c, &ch, &mut rng, &m, 1300, QR).await.unwrap();
        assert_eq!(paid_later.status, PaymentStatus::RequiresCustomerAction);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();

        // Not due yet: nothing asked.
        let early = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0) - 1, None).await;
        assert_eq!(early.unwrap().rechecked, 0);
        let first = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None).await;
        let first = first.unwrap();
        assert_eq!((first.rechecked, first.still_open), (2, 2), "{first:?}");
        // Queued again behind: not due again within the interval.
        let soon = reconcile_time(t0) + RECONCILE_INTERVAL_MS - 1;
        let soon = reconcile_at(&repo, &ch, &mut rng, soon, None)
            .await
            .unwrap();
        assert_eq!(soon.rechecked, 0, "{soon:?}");

        // The customer pays; the channel's notification is lost.
        ch.paid.borrow_mut().insert(paid_later.id.clone());
        let next = reconcile_time(t0) + RECONCILE_INTERVAL_MS;
        let second = reconcile_at(&repo, &ch, &mut rng, next, None)
            .await
            .unwrap();
        assert_eq!(
            (second.rechecked, second.settled, second.still_open),
            (2, 1, 1)
        );
        let now = get_payment(&c, &m.id, &paid_later.id).await.unwrap();
        assert_eq!(now.status, PaymentStatus::Succeeded);

        // A day after its creation the unpaid one is closed and canceled.
        let late = t0 + RECONCILE_HORIZON_MS;
        let last = reconcile_at(&repo, &ch, &mut rng, late, None)
            .await
            .unwrap();
        assert_eq!(
            (last.rechecked, last.closed, last.given_up, last.still_open),
            (1, 1, 0, 0),
            "{last:?}"
        );
        let after = reconcile_at(&repo, &ch, &mut rng, late + RECONCILE_HORIZON_MS, None);
        assert_eq!(after.await.unwrap().rechecked, 0);
        let unpaid = get_payment(&c, &m.id, &never_paid.id).await.unwrap();
        assert_eq!(unpaid.status, PaymentStatus::Canceled);
        assert!(
            ch.closed.borrow().contains(&never_paid.id),
            "closed at the channel"
        );
        assert!(!ch.closed.borrow().contains(&paid_later.id));
        assert_eq!(canceled_events(&c, &m.id).await, 1, "one payment.canceled");
    });
}

#[test]
fn a_customer_code_nobody_confirms_is_revoked_at_its_expiry_by_a_recheck_or_a_read() {
    // Proves a customer-presented code the customer never confirms (`processing`, the
    // channel saying pending) is re-checked until its expiry, then revoked at its channel
    // and canceled as expired, by reconciliation or at once by a read past the expiry, so
    // the customer cannot pay a sale the merchant gave up on; before its expiry nothing
    // is closed.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(47);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        // 888: the channel answers pending (the customer must confirm in the wallet).
        let ten_minutes = body(888, QRC, r#","expires_in_seconds":600"#);
        let swept = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let read = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        assert_eq!(swept.status, PaymentStatus::Processing);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let first = reconcile_time(t0);
        assert!(first < swept.expires_at_ms);
        let report = reconcile_at(&repo, &ch, &mut rng, first, None)
            .await
            .unwrap();
        assert_eq!((report.rechecked, report.still_open), (2, 2), "{report:?}");
        assert!(ch.closed.borrow().is_empty());

        let at = swept.expires_at_ms;
        let late = ctx(&repo, &keys, at);
        let shown = close_if_expired(&late, &ch, &mut rng, &m.id, &read.id)
            .await
            .unwrap();
        assert_eq!(
            (shown.status, shown.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        let report = reconcile_at(
            &repo,
            &ch,
            &mut rng,
            first + 2 * RECONCILE_INTERVAL_MS,
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.closed, 1, "{report:?}");
        let closed = get_payment(&c, &m.id, &swept.id).await.unwrap();
        assert_eq!(
            (closed.status, closed.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert_eq!(
            *ch.closed.borrow(),
            [swept.id.clone(), read.id.clone()].into()
        );
        assert_eq!(canceled_events(&c, &m.id).await, 2);
    });
}

#[test]
fn a_payment_is_closed_at_the_first_recheck_past_its_own_expiry() {
    // Proves a QR payment created with expires_in_seconds carries that expiry and is
    // closed and canceled at the first re-check from that instant on, not a day later,
    // while one with the default expiry (a day) stays queued; and that a payment paid
    // before its expiry is settled, never closed.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(35);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let ten_minutes = body(1200, QR, r#","expires_in_seconds":600"#);
        let short = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let paid = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let default = pay(&c, &ch, &mut rng, &m, 1300, QR).await.unwrap();
        assert_eq!(short.expires_at_ms, t0 + 600_000);
        assert_eq!(default.expires_at_ms, t0 + RECONCILE_HORIZON_MS);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();

        // First re-check, before the expiry: all three stay queued.
        let first = reconcile_time(t0);
        assert!(first < short.expires_at_ms);
        let report = reconcile_at(&repo, &ch, &mut rng, first, None)
            .await
            .unwrap();
        assert_eq!((report.rechecked, report.still_open), (3, 3), "{report:?}");
        assert!(ch.closed.borrow().is_empty());

        // One is paid before it expires (its notification lost); at the next re-check,
        // past the expiry, the other short one is closed and the default one waits on.
        ch.paid.borrow_mut().insert(paid.id.clone());
        let second = first + RECONCILE_INTERVAL_MS;
        assert!(second >= short.expires_at_ms);
        let report = reconcile_at(&repo, &ch, &mut rng, second, None)
            .await
            .unwrap();
        assert_eq!(
            (
                report.rechecked,
                report.settled,
                report.closed,
                report.still_open
            ),
            (3, 1, 1, 1),
            "{report:?}"
        );
        let closed = get_payment(&c, &m.id, &short.id).await.unwrap();
        assert_eq!(closed.status, PaymentStatus::Canceled);
        assert_eq!(
            closed.cancellation_reason,
            Some(CancellationReason::Expired)
        );
        assert_eq!(*ch.closed.borrow(), [short.id.clone()].into());
        let succeeded = get_payment(&c, &m.id, &paid.id).await.unwrap();
        assert_eq!(succeeded.status, PaymentStatus::Succeeded);
        let waiting = get_payment(&c, &m.id, &default.id).await.unwrap();
        assert_eq!(waiting.status, PaymentStatus::RequiresCustomerAction);
        assert_eq!(canceled_events(&c, &m.id).await, 1, "one payment.canceled");
    });
}

#[test]
fn an_order_whose_create_answer_was_lost_is_closed_by_a_read_past_its_expiry() {
    // Proves a QR payment left `processing` by a lost create answer (777), which a
    // re-check finds waiting for its customer (the sandbox's query repeats the QR code),
    // is closed at its channel and canceled as expired by the first read past its expiry
    // (not shown payable with a code the channel refuses), while a read before the expiry
    // only brings the code back.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(53);
        *ch.queries_repeat_next_action.borrow_mut() = true;
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let ten_minutes = body(777, QR, r#","expires_in_seconds":600"#);
        let [early, late] = [
            pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap(),
            pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap(),
        ];
        assert_eq!(early.status, PaymentStatus::Processing);

        let before = ctx(&repo, &keys, early.expires_at_ms - 1);
        let shown = close_if_expired(&before, &ch, &mut rng, &m.id, &early.id)
            .await
            .unwrap();
        assert_eq!(shown.status, PaymentStatus::RequiresCustomerAction);
        assert!(
            ch.closed.borrow().is_empty(),
            "nothing closed before expiry"
        );

        let at = ctx(&repo, &keys, late.expires_at_ms);
        let closed = close_if_expired(&at, &ch, &mut rng, &m.id, &late.id)
            .await
            .unwrap();
        assert_eq!(
            (closed.status, closed.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert_eq!(*ch.closed.borrow(), [late.id.clone()].into());
        assert_eq!(canceled_events(&c, &m.id).await, 1, "one payment.canceled");
    });
}

#[test]
fn a_confirmed_one_time_code_payment_left_pending_is_canceled_or_closed_at_its_expiry() {
    // Proves an sms_otp payment whose charge the channel left pending after the payer's
    // right code (888: `processing`) is not stuck for good: the merchant's cancel closes
    // it at its channel, and a read past its expiry closes another one as expired; before
    // the fix both were refused (`payment_not_cancelable`, left `processing`).
    block_on(async {
        let (repo, keys, ch, mut rng) = world(59);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let otp = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
        let ten_minutes = body(888, otp, r#","expires_in_seconds":600"#);
        let mut confirmed = Vec::new();
        for _ in 0..2 {
            let p = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
            let code = ch.last_otp();
            let p = confirm_payment(&c, &ch, &mut rng, &m.id, &p.id, &code, false)
                .await
                .unwrap();
            assert_eq!(p.status, PaymentStatus::Processing);
            confirmed.push(p);
        }
        let (by_cancel, by_read) = (&confirmed[0], &confirmed[1]);

        let canceled = cancel_payment(&c, &ch, &mut rng, &m.id, &by_cancel.id, BY_MERCHANT)
            .await
            .unwrap();
        assert_eq!(
            (canceled.status, canceled.cancellation_reason),
            (PaymentStatus::Canceled, Some(BY_MERCHANT))
        );
        let at = ctx(&repo, &keys, by_read.expires_at_ms);
        let closed = close_if_expired(&at, &ch, &mut rng, &m.id, &by_read.id)
            .await
            .unwrap();
        assert_eq!(
            (closed.status, closed.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert_eq!(
            *ch.closed.borrow(),
            [by_cancel.id.clone(), by_read.id.clone()].into()
        );
    });
}

#[test]
fn an_order_the_channel_closed_for_its_expiry_cancels_the_payment_as_expired() {
    // Proves a channel that closed an unpaid order itself (Alipay does at the time_expire
    // spinpay sent) cancels the payment as expired when the re-check finds it closed past
    // its expiry (by the channel's clock, up to a minute ahead of ours), with
    // payment.canceled and no close call of ours; while an order the
    // channel closed before the payment expired still fails it, as any decline does.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(36);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let ten_minutes = body(1200, QR, r#","expires_in_seconds":600"#);
        let expired = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let early = pay(&c, &ch, &mut rng, &m, 1300, QR).await.unwrap();
        ch.closed
            .borrow_mut()
            .extend([expired.id.clone(), early.id.clone()]);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();

        // A minute early by our clock: the channel's may be that far ahead.
        let now = expired.expires_at_ms - 60_000;
        let report = reconcile_at(&repo, &ch, &mut rng, now, None).await.unwrap();
        assert_eq!(
            (report.rechecked, report.settled, report.closed),
            (2, 2, 0),
            "{report:?}"
        );
        let c = ctx(&repo, &keys, now);
        let canceled = get_payment(&c, &m.id, &expired.id).await.unwrap();
        assert_eq!(
            (canceled.status, canceled.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert_eq!(canceled.failure, None);
        let failed = get_payment(&c, &m.id, &early.id).await.unwrap();
        assert_eq!(
            (failed.status, failed.cancellation_reason),
            (PaymentStatus::Failed, None)
        );
        assert_eq!(*ch.cancel_calls.borrow(), 0, "nothing left to close");
        assert_eq!(canceled_events(&c, &m.id).await, 1, "one payment.canceled");
    });
}

#[test]
fn a_payment_read_past_its_expiry_is_closed_at_once_not_at_the_next_recheck() {
    // Proves close_if_expired (what GET /v1/payments/{id} does for a payment waiting for
    // its customer): before the expiry it calls no channel and changes nothing; from the
    // expiry on it re-checks first (a payment paid at the last moment succeeds, never
    // closed), then closes an unpaid one and cancels it as expired with one
    // payment.canceled; a close the channel does not answer leaves the payment waiting
    // and a later read closes it; a canceled one is not closed twice; a payment with the
    // default expiry, or another merchant's, is untouched.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(39);
        let t0 = 3_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let (other, _) = merchant(&c, &mut rng).await;
        let ten_minutes = body(1200, QR, r#","expires_in_seconds":600"#);
        let unpaid = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let paid = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let slow = pay_body(&c, &ch, &mut rng, &m, &ten_minutes).await.unwrap();
        let default = pay(&c, &ch, &mut rng, &m, 1300, QR).await.unwrap();
        let read = async |now_ms: i64, mid: &str, id: &str, rng: &mut SplitMix64| {
            let c = ctx(&repo, &keys, now_ms);
            close_if_expired(&c, &ch, rng, mid, id).await
        };

        let before = unpaid.expires_at_ms - 1;
        for p in [&unpaid, &paid, &slow, &default] {
            let seen = read(before, &m.id, &p.id, &mut rng).await.unwrap();
            assert_eq!(seen.status, PaymentStatus::RequiresCustomerAction);
        }
        assert_eq!(
            *ch.query_calls.borrow(),
            0,
            "no channel call before the expiry"
        );

        let at = unpaid.expires_at_ms;
        let closed = read(at, &m.id, &unpaid.id, &mut rng).await.unwrap();
        assert_eq!(
            (closed.status, closed.cancellation_reason),
            (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        );
        assert_eq!(*ch.closed.borrow(), [unpaid.id.clone()].into());

        ch.paid.borrow_mut().insert(paid.id.clone());
        let settled = read(at, &m.id, &paid.id, &mut rng).await.unwrap();
        assert_eq!(settled.status, PaymentStatus::Succeeded);

        *ch.cancels_unanswered.borrow_mut() = 1;
        let waiting = read(at, &m.id, &slow.id, &mut rng).await.unwrap();
        assert_eq!(waiting.status, PaymentStatus::RequiresCustomerAction);
        let later = read(at + 1_000, &m.id, &slow.id, &mut rng).await.unwrap();
        assert_eq!(later.status, PaymentStatus::Canceled);
        assert_eq!(*ch.cancel_calls.borrow(), 3, "unpaid once, slow twice");

        let again = read(at + 2_000, &m.id, &unpaid.id, &mut rng).await.unwrap();
        assert_eq!(again, closed, "a canceled payment is served as it is");
        let day = read(at, &m.id, &default.id, &mut rng).await.unwrap();
        assert_eq!(day.status, PaymentStatus::RequiresCustomerAction);
        let foreign = read(at, &other.id, &slow.id, &mut rng).await;
        assert!(
            matches!(foreign, Err(ApiError::ResourceMissing { .. })),
            "{foreign:?}"
        );
        assert_eq!(*ch.cancel_calls.borrow(), 3, "nothing else closed");
        assert_eq!(
            canceled_events(&c, &m.id).await,
            2,
            "one payment.canceled each"
        );
    });
}

#[test]
fn a_limit_bounds_the_rechecks_of_one_call_and_the_next_call_goes_on() {
    // Proves `limit` bounds the channel queries of one call, `has_more` says so, and the
    // next call re-checks the rest; settled payments are never queued.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(34);
        let t0 = 4_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        for _ in 0..3 {
            pay(&c, &ch, &mut rng, &m, 1000, QR).await.unwrap();
        }
        let done = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        assert_eq!(done.status, PaymentStatus::Succeeded);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let at = reconcile_time(t0);
        let first = reconcile_at(&repo, &ch, &mut rng, at, Some(2))
            .await
            .unwrap();
        assert_eq!((first.rechecked, first.has_more), (2, true), "{first:?}");
        let second = reconcile_at(&repo, &ch, &mut rng, at, Some(2))
            .await
            .unwrap();
        assert_eq!(
            (second.rechecked, second.has_more),
            (1, false),
            "{second:?}"
        );
        // A call whose limit is exactly what is due does not ask to be called again.
        let again = at + RECONCILE_INTERVAL_MS;
        let exact = reconcile_at(&repo, &ch, &mut rng, again, Some(3))
            .await
            .unwrap();
        assert_eq!((exact.rechecked, exact.has_more), (3, false), "{exact:?}");
    });
}

#[test]
fn a_call_begins_no_recheck_past_its_time_window_and_the_next_call_goes_on() {
    // Proves a call stops beginning re-checks once RECONCILE_WINDOW_MS has passed on the
    // wall clock (a channel taking 4 s a query), well before its limit, says has_more,
    // and the next calls re-check the rest: every due payment is re-checked once.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(35);
        let t0 = 4_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        for _ in 0..6 {
            pay(&c, &ch, &mut rng, &m, 1000, QR).await.unwrap();
        }
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        *ch.call_ms.borrow_mut() = 4_000;
        let c = ctx(&repo, &keys, reconcile_time(t0));
        let req = ReconcileRequest {
            limit: Some(RECONCILE_LIMIT_MAX),
            merchant_id: None,
            wall_clock: Some(sim_wall_clock),
        };
        let mut rechecked = Vec::new();
        loop {
            let r = reconcile(&c, &ch, &mut rng, &req).await.unwrap();
            rechecked.push(r.rechecked);
            if !r.has_more {
                break;
            }
            assert!(rechecked.len() < 10, "{rechecked:?}");
        }
        // Queries begin 0, 4 and 8 s into a call; the fourth would begin at 12 s.
        assert_eq!(rechecked[0], 3, "{rechecked:?}");
        assert_eq!(rechecked.iter().sum::<u32>(), 6, "{rechecked:?}");
    });
}

#[test]
fn a_payments_pending_refunds_are_not_rechecked_past_the_window_either() {
    // Proves the window also bounds the refund re-checks inside one payment's re-check
    // (each a channel call): a call's channel calls all begin inside it, the payment is
    // queued again as it is, and its next re-check asks about every pending refund.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(36);
        let t0 = 5_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 5000, QRC).await.unwrap();
        for _ in 0..4 {
            let r = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(888));
            assert_eq!(r.await.unwrap().status, RefundStatus::Pending);
        }
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        *ch.call_ms.borrow_mut() = 4_000;
        let c = ctx(&repo, &keys, reconcile_time(t0));
        let req = ReconcileRequest {
            limit: Some(RECONCILE_LIMIT_MAX),
            merchant_id: Some(m.id.clone()),
            wall_clock: Some(sim_wall_clock),
        };
        let calls = || *ch.query_calls.borrow() + *ch.refund_queries.borrow();
        let first = reconcile(&c, &ch, &mut rng, &req).await.unwrap();
        // Calls begin 0, 4 and 8 s into it; a fourth would begin at 12 s.
        assert_eq!((calls(), first.has_more), (3, true), "{first:?}");
        let again = reconcile(&c, &ch, &mut rng, &req).await.unwrap();
        assert_eq!(
            (again.rechecked, again.has_more),
            (0, false),
            "queued again: {again:?}"
        );
        // Once the channel answers at once again, the next re-check asks about all four.
        *ch.call_ms.borrow_mut() = 0;
        let before = *ch.refund_queries.borrow();
        let next = ctx(&repo, &keys, reconcile_time(t0) + RECONCILE_INTERVAL_MS);
        let r = reconcile(&next, &ch, &mut rng, &req).await.unwrap();
        assert!(!r.has_more, "{r:?}");
        assert_eq!(*ch.refund_queries.borrow() - before, 4, "{r:?}");
    });
}

#[test]
fn bad_requests_are_refused_naming_the_field_and_change_nothing() {
    // Proves a limit outside 1..=100 and an unknown merchant are 400s naming the field,
    // and that the refused calls leave the queue as it was (the next call re-checks).
    block_on(async {
        let (repo, keys, ch, mut rng) = world(35);
        let t0 = 5_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        pay(&c, &ch, &mut rng, &m, 1000, QR).await.unwrap();
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let at = reconcile_time(t0);
        let before = repo.keys_with_prefix("");
        for limit in [0, RECONCILE_LIMIT_MAX + 1] {
            let e = reconcile_at(&repo, &ch, &mut rng, at, Some(limit)).await;
            let e = e.unwrap_err();
            assert!(matches!(&e, ApiError::ParameterInvalid { param, .. } if param == "limit"));
        }
        let c = ctx(&repo, &keys, at);
        for mid in ["mch_nope", "not an id"] {
            let req = ReconcileRequest {
                limit: None,
                merchant_id: Some(mid.into()),
                wall_clock: None,
            };
            let e = reconcile(&c, &ch, &mut rng, &req).await.unwrap_err();
            assert!(
                matches!(&e, ApiError::ParameterInvalid { param, .. } if param == "merchant_id"),
                "{e:?}"
            );
        }
        assert_eq!(repo.keys_with_prefix(""), before, "nothing written");
        let req = ReconcileRequest {
            limit: None,
            merchant_id: Some(m.id.clone()),
            wall_clock: None,
        };
        let ok = reconcile(&c, &ch, &mut rng, &req).await.unwrap();
        assert_eq!((ok.merchants_visited, ok.rechecked), (1, 1), "{ok:?}");
    });
}

#[test]
fn an_unpaid_payment_is_rechecked_less_and_less_often_then_closed_after_a_day() {
    // Proves the backoff: with a scheduler calling every minute, a QR code nobody scans
    // is asked about every 5 minutes in its first hour, every 30 minutes up to 6 hours
    // and every 2 hours up to a day (each gap is the interval of the tier its age was in
    // when it was last asked), then closed: about 30 channel queries in all, not 288.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(36);
        let t0 = 6_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let unpaid = pay(&c, &ch, &mut rng, &m, 1400, QR).await.unwrap();
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let mut asked = Vec::new();
        let mut closed = Vec::new();
        let end = t0 + RECONCILE_HORIZON_MS + 3 * 3_600_000;
        let mut now = sweep_time(t0);
        while now < end {
            let report = reconcile_at(&repo, &ch, &mut rng, now, None).await.unwrap();
            assert!(report.rechecked <= 1, "{report:?}");
            if report.rechecked == 1 {
                asked.push(now);
            }
            assert_eq!(report.given_up, 0, "{report:?}");
            if report.closed == 1 {
                closed.push(now);
            }
            now += 60_000;
        }
        assert_eq!(asked[0], reconcile_time(t0), "first asked one interval in");
        for pair in asked.windows(2) {
            let age = pair[0] - t0;
            let (_, interval) = RECONCILE_TIERS
                .iter()
                .find(|(age_below, _)| age < *age_below)
                .unwrap();
            assert_eq!(pair[1] - pair[0], *interval, "asked at age {age} ms");
        }
        let last = *asked.last().unwrap();
        assert_eq!(closed, [last], "closed once, at the last query");
        assert!(last - t0 >= RECONCILE_HORIZON_MS, "not before a day");
        assert!(last - t0 < RECONCILE_HORIZON_MS + RECONCILE_TIERS[2].1);
        let every_5_min = (RECONCILE_HORIZON_MS / RECONCILE_INTERVAL_MS) as usize;
        assert!((25..=32).contains(&asked.len()), "{} queries", asked.len());
        assert!(asked.len() * 9 < every_5_min, "a ninth of {every_5_min}");
        let after = get_payment(&c, &m.id, &unpaid.id).await.unwrap();
        assert_eq!(after.status, PaymentStatus::Canceled);
        assert_nothing_queued(&repo, &m.id);
    });
}

#[test]
fn what_the_channel_has_not_decided_after_a_day_is_left_to_a_person_never_closed() {
    // Proves a payment the channel still calls pending after a day (`processing`: a
    // scanned merchant QR the customer may have paid) and a refund still pending are
    // given up as they are, nothing canceled or closed; only a customer-presented code
    // nobody confirmed is revoked at its channel, which returns any money it took.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(37);
        let t0 = 7_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let undecided = pay(&c, &ch, &mut rng, &m, 888, QR).await.unwrap();
        assert_eq!(undecided.status, PaymentStatus::Processing);
        let code = pay(&c, &ch, &mut rng, &m, 888, QRC).await.unwrap();
        assert_eq!(code.status, PaymentStatus::Processing);
        let paid = pay(&c, &ch, &mut rng, &m, 2000, QRC).await.unwrap();
        let refund = create_refund(&c, &ch, &mut rng, &m.id, &paid.id, refund_of(888));
        assert_eq!(refund.await.unwrap().status, RefundStatus::Pending);
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let first = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None)
            .await
            .unwrap();
        assert_eq!((first.rechecked, first.still_open), (3, 3), "{first:?}");
        let late = t0 + RECONCILE_HORIZON_MS;
        let last = reconcile_at(&repo, &ch, &mut rng, late, None)
            .await
            .unwrap();
        assert_eq!(
            (last.rechecked, last.given_up, last.closed),
            (3, 2, 1),
            "{last:?}"
        );
        assert_eq!(
            *ch.closed.borrow(),
            [code.id.clone()].into(),
            "only the code"
        );
        let p = get_payment(&c, &m.id, &undecided.id).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Processing);
        let p = get_payment(&c, &m.id, &code.id).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Canceled);
        let p = get_payment(&c, &m.id, &paid.id).await.unwrap();
        assert_eq!(p.refunds[0].status, RefundStatus::Pending);
    });
}

#[test]
fn a_close_the_channel_did_not_answer_is_tried_again_for_a_day_then_left_to_a_person() {
    // Proves a payment nobody paid whose close at the horizon times out is not given up
    // at once: it stays queued (re-checked, then closed again, at the last tier's
    // interval), is canceled once a close is answered, with one `payment.canceled`; and
    // one the channel never answers is tried a bounded number of times, then given up
    // once, still waiting for its customer, and never queued again.
    block_on(async {
        let (repo, keys, ch, mut rng) = world(38);
        let t0 = 8_000_000;
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1500, QR).await.unwrap();
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        *ch.cancels_unanswered.borrow_mut() = 2;
        let (_, every) = RECONCILE_TIERS[RECONCILE_TIERS.len() - 1];
        let late = t0 + RECONCILE_HORIZON_MS;
        for attempt in 0..2 {
            let r = reconcile_at(&repo, &ch, &mut rng, late + attempt * every, None)
                .await
                .unwrap();
            assert_eq!(
                (r.rechecked, r.still_open, r.closed, r.given_up),
                (1, 1, 0, 0),
                "close {attempt} timed out: {r:?}"
            );
            let early = reconcile_at(&repo, &ch, &mut rng, late + (attempt + 1) * every - 1, None);
            assert_eq!(
                early.await.unwrap().rechecked,
                0,
                "not sooner than the interval"
            );
        }
        let r = reconcile_at(&repo, &ch, &mut rng, late + 2 * every, None)
            .await
            .unwrap();
        assert_eq!((r.rechecked, r.closed, r.still_open), (1, 1, 0), "{r:?}");
        assert_eq!(*ch.cancel_calls.borrow(), 3);
        let canceled = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!(canceled.status, PaymentStatus::Canceled);
        assert_eq!(canceled_events(&c, &m.id).await, 1, "one payment.canceled");

        // A channel that never answers a close.
        let q = pay(&c, &ch, &mut rng, &m, 1600, QR).await.unwrap();
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        *ch.cancels_unanswered.borrow_mut() = u32::MAX;
        *ch.cancel_calls.borrow_mut() = 0;
        let mut given_up = 0;
        let mut now = late;
        while now < late + RECONCILE_CLOSE_GRACE_MS + 3 * every {
            let r = reconcile_at(&repo, &ch, &mut rng, now, None).await.unwrap();
            assert_eq!(r.closed, 0, "{r:?}");
            given_up += r.given_up;
            now += every;
        }
        assert_eq!(given_up, 1, "given up once");
        let tries = *ch.cancel_calls.borrow();
        let most = u32::try_from(RECONCILE_CLOSE_GRACE_MS / every).unwrap() + 1;
        assert!((2..=most).contains(&tries), "{tries} closes tried");
        let left = get_payment(&c, &m.id, &q.id).await.unwrap();
        assert_eq!(left.status, PaymentStatus::RequiresCustomerAction);
        assert_nothing_queued(&repo, &m.id);
    });
}

#[test]
fn a_reservation_whose_refund_record_is_gone_does_not_stop_reconciliation() {
    // Proves a payment holding a reservation for a refund whose record no longer exists
    // (as an older version could leave) is passed over, and the same run goes on to
    // settle another merchant's pending refund, instead of failing every run for good.
    let keys = keyring();
    let t0 = 7_000_000;
    let (repo, _, ch, mut rng) = world(41);
    block_on(async {
        let c = ctx(&repo, &keys, t0);
        let mut pending = Vec::new();
        for _ in 0..2 {
            let (m, _) = merchant(&c, &mut rng).await;
            let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
            // 888: the channel leaves the refund pending.
            let r = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(888))
                .await
                .unwrap();
            assert_eq!(r.status, RefundStatus::Pending);
            pending.push((m, p, r));
        }
        // The first merchant's refund record is lost; its reservation stays.
        repo.delete(&spinpay_core::keys::refund(&pending[0].2.id))
            .await
            .unwrap();
        ch.refunds_done.borrow_mut().insert(pending[1].2.id.clone());
        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let report = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None).await;
        assert!(report.is_ok(), "{report:?}");
        let (m, p, r) = &pending[1];
        let after = get_payment(&c, &m.id, &p.id).await.unwrap();
        let settled = after.refunds.iter().find(|x| x.id == r.id).unwrap();
        assert_eq!(settled.status, RefundStatus::Succeeded, "{after:?}");
    });
}

#[test]
fn a_payment_waiting_for_its_code_is_closed_at_its_expiry_and_a_late_code_refused() {
    // Proves an sms_otp payment honours its own expiry: a code entered after it is
    // refused (payment_not_confirmable, the payment canceled as expired, nothing sent to
    // the channel); one nobody reads is closed by reconciliation, one read past its
    // expiry at once; before the expiry nothing closes it.
    let keys = keyring();
    let t0 = 9_000_000;
    let (repo, _, ch, mut rng) = world(59);
    let sms = r#"{"type":"sms_otp","phone":"+8613812345678"}"#;
    let minute = body(1000, sms, r#","expires_in_seconds":60"#);
    block_on(async {
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let p = pay_body(&c, &ch, &mut rng, &m, &minute).await.unwrap();
            assert_eq!(
                p.next_action,
                Some(spinpay_core::model::NextAction::EnterOtp)
            );
            ids.push((p.id, ch.last_otp()));
        }
        let expired = |p: &spinpay_core::api::PaymentResponse| {
            (p.status, p.cancellation_reason)
                == (PaymentStatus::Canceled, Some(CancellationReason::Expired))
        };
        // Before the expiry a read changes nothing.
        let early = ctx(&repo, &keys, t0 + 59_000);
        let read = close_if_expired(&early, &ch, &mut rng, &m.id, &ids[0].0)
            .await
            .unwrap();
        assert_eq!(read.status, PaymentStatus::RequiresCustomerAction);

        let late = ctx(&repo, &keys, t0 + 60_000);
        let (id, code) = &ids[0];
        let e = confirm_payment(&late, &ch, &mut rng, &m.id, id, code, false).await;
        assert_eq!(
            e.unwrap_err(),
            ApiError::PaymentNotConfirmable { status: "canceled" }
        );
        assert!(expired(&get_payment(&late, &m.id, id).await.unwrap()));

        let read = close_if_expired(&late, &ch, &mut rng, &m.id, &ids[1].0)
            .await
            .unwrap();
        assert!(expired(&read), "{read:?}");

        sweep_at(&repo, sweep_time(t0), sweep_time(t0))
            .await
            .unwrap();
        let report = reconcile_at(&repo, &ch, &mut rng, reconcile_time(t0), None)
            .await
            .unwrap();
        assert!(report.closed >= 1, "{report:?}");
        assert!(expired(
            &get_payment(&late, &m.id, &ids[2].0).await.unwrap()
        ));
        assert_eq!(ch.authorizations(), 0, "nothing went to the channel");
        assert_eq!(*ch.cancel_calls.borrow(), 0, "nor was closed there");
    });
}
