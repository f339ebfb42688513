//! Seeded property and simulation tests. Each prints its seed on failure; set
//! `SPINPAY_SEED` to replay one seed.

mod common;

use common::*;
use futures::executor::block_on;
use futures::future::join_all;
use spinpay_core::api::NewRefund;
use spinpay_core::error::ApiError;
use spinpay_core::machine::{
    PaymentCommand, PaymentState, RefundCommand, RefundState, TransitionError, apply_payment,
    apply_refund, check_payment_invariants,
};
use spinpay_core::model::{Channel, Payment, PaymentStatus, Refund, RefundStatus};
use spinpay_core::repo::Repository;
use spinpay_core::repo::memory::{Faults, MemoryRepository};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("SPINPAY_SEED") {
        Ok(s) => vec![s.parse().expect("SPINPAY_SEED is a u64")],
        Err(_) => (0..count).map(|i| 0x5EED_0000 + i).collect(),
    }
}

fn run_seeded(name: &str, count: u64, f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(count) {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            eprintln!("{name} failed with SPINPAY_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

fn random_command(rng: &mut SplitMix64, refund_ids: &mut Vec<String>) -> PaymentCommand {
    let amount = rng.below(1200) as i64 - 100;
    match rng.below(17) {
        0 => PaymentCommand::RiskDenied,
        1 => PaymentCommand::RiskReview,
        2 => PaymentCommand::ReviewApproved,
        3 => PaymentCommand::ReviewDeclined,
        4 => PaymentCommand::AwaitCustomer,
        5 => PaymentCommand::ChannelPending,
        6 => PaymentCommand::ChannelUnknown,
        7 => PaymentCommand::ChannelSucceeded,
        8 => PaymentCommand::ChannelAuthorized,
        9 => PaymentCommand::ChannelFailed,
        10 => PaymentCommand::OtpConfirmed,
        11 => PaymentCommand::OtpFailed,
        12 => PaymentCommand::Capture {
            amount_minor: amount,
        },
        13 => PaymentCommand::Cancel,
        14 => {
            let id = format!("re_{}", rng.below(30));
            refund_ids.push(id.clone());
            PaymentCommand::ReserveRefund {
                refund_id: id,
                amount_minor: amount,
            }
        }
        15 if !refund_ids.is_empty() => {
            let id = refund_ids[rng.below(refund_ids.len() as u64) as usize].clone();
            PaymentCommand::SettleRefund {
                refund_id: id,
                succeeded: rng.chance(700),
            }
        }
        _ => PaymentCommand::FlagConflict,
    }
}

#[test]
fn random_command_sequences_never_break_the_payment_invariants() {
    // Proves over 4,000 random sequences: invariants hold, terminal stays terminal,
    // version +1 per applied command, errors change nothing, settled refunds count once.
    run_seeded("payment machine", 4000, |seed| {
        let mut rng = SplitMix64::new(seed);
        let mut state = PaymentState::new(1 + rng.below(1000) as i64);
        let mut ids = Vec::new();
        let mut settled: std::collections::BTreeMap<String, (i64, bool)> = Default::default();
        for _step in 0..60 {
            let cmd = random_command(&mut rng, &mut ids);
            if let Ok(next) = apply_payment(&state, &cmd) {
                check_payment_invariants(&next).unwrap();
                assert_eq!(next.version, state.version + 1);
                assert!(
                    !state.status.is_terminal() || next.status == state.status,
                    "{cmd:?} left {:?}",
                    state.status
                );
                if let PaymentCommand::SettleRefund {
                    refund_id,
                    succeeded,
                } = &cmd
                {
                    let amount = state
                        .refunds_pending
                        .iter()
                        .find(|p| &p.refund_id == refund_id)
                        .unwrap()
                        .amount_minor;
                    assert!(
                        settled
                            .insert(refund_id.clone(), (amount, *succeeded))
                            .is_none(),
                        "settled twice"
                    );
                }
                state = next;
            }
            let refunded: i64 = settled.values().filter(|(_, ok)| *ok).map(|(a, _)| a).sum();
            assert_eq!(
                state.refunded_minor, refunded,
                "refunded equals the sum of settled refunds"
            );
        }
    });
}

#[test]
fn random_refund_commands_reach_one_terminal_status() {
    // Proves a refund leaves pending at most once and never flips between terminals.
    run_seeded("refund machine", 2000, |seed| {
        let mut rng = SplitMix64::new(seed);
        let mut s = RefundState::new();
        let cmds = [
            RefundCommand::ChannelSucceeded,
            RefundCommand::ChannelFailed,
            RefundCommand::ChannelPending,
            RefundCommand::ChannelUnknown,
        ];
        let mut transitions = 0;
        for _ in 0..20 {
            let cmd = cmds[rng.below(4) as usize];
            match apply_refund(&s, cmd) {
                Ok(n) => {
                    assert_eq!(s.status, RefundStatus::Pending);
                    assert_eq!(n.version, s.version + 1);
                    transitions += 1;
                    s = n;
                }
                Err(
                    TransitionError::AlreadyApplied | TransitionError::RefundContradiction { .. },
                ) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(transitions <= 1);
    });
}

fn refund_req(amount_minor: i64) -> NewRefund {
    NewRefund {
        amount_minor: Some(amount_minor),
        reason: None,
        merchant_refund_id: None,
    }
}

#[test]
fn sixty_four_concurrent_partial_refunds_never_exceed_the_captured_amount() {
    concurrent_refunds("concurrent refunds", 0);
}

#[test]
fn concurrent_refunds_whose_writes_have_unknown_outcomes_still_count_exactly() {
    // Proves the same race when a tenth of all record updates report an unknown
    // outcome (half of them landed): the retry re-applies idempotently, so still exactly 50
    // accepted and 14 refused, and refunded_minor counts each refund once.
    concurrent_refunds("concurrent refunds, unknown outcomes", 100);
}

/// 64 refunds of 100 racing on a 5,000 capture, with `unknown_per_mille` unknown write
/// outcomes besides conflicts and yields.
fn concurrent_refunds(name: &str, unknown_per_mille: u32) {
    // Proves 64 interleaved refunds of 100 on a 5,000 capture, with injected CAS conflicts and
    // yields between read and write: exactly 50 accepted, 14 refund_exceeds_captured, sum ≤ captured.
    run_seeded(name, 5, |seed| {
        // The seed also drives the injected faults and yields: each seed interleaves anew.
        let repo = MemoryRepository::with_faults(seed, Faults::default());
        let (keys, ch) = (keyring(), SimChannel::default());
        let mut rng = SplitMix64::new(seed);
        let (m, p) = block_on(async {
            let c = ctx(&repo, &keys, 1_000);
            let (m, _) = merchant(&c, &mut rng).await;
            let p = create_payment(
                &c,
                &ch,
                &LocalRisk::default(),
                &mut rng,
                &m,
                new_payment(&body(
                    5000,
                    r#"{"type":"qr_customer","auth_code":"1234567890"}"#,
                    "",
                )),
            )
            .await
            .unwrap();
            (m, p)
        });
        repo.set_faults(Faults {
            conflict_per_mille: 100,
            unavailable_per_mille: 0,
            yield_per_mille: 700,
            unknown_outcome_per_mille: unknown_per_mille,
        });
        let c = ctx(&repo, &keys, 2_000);
        let mut rngs: Vec<SplitMix64> = (0..64)
            .map(|i| SplitMix64::new(seed ^ ((i + 1) * 7919)))
            .collect();
        let futures = rngs
            .iter_mut()
            .map(|r| create_refund(&c, &ch, r, &m.id, &p.id, refund_req(100)));
        let results = block_on(join_all(futures));
        let accepted: i64 = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.amount_minor)
            .sum();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(ApiError::RefundExceedsCaptured { .. })))
            .count();
        let other: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|e| !matches!(e, ApiError::RefundExceedsCaptured { .. }))
            .collect();
        assert!(other.is_empty(), "{other:?}");
        assert_eq!((accepted, refused), (5000, 14));
        repo.set_faults(Faults::default());
        let got = block_on(get_payment(&c, &m.id, &p.id)).unwrap();
        assert_eq!(got.refunded_minor, 5000);
        assert_eq!(got.refunds.len(), 50);
        assert!(
            repo.counts().injected_conflicts > 0,
            "the test really injected conflicts"
        );
        assert_eq!(
            repo.counts().injected_unknown_outcomes > 0,
            unknown_per_mille > 0,
            "the test injected unknown outcomes iff asked"
        );
    });
}

/// Everything the simulation can do to one merchant's payments.
async fn random_op(
    c: &Ctx<'_, MemoryRepository>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    mid: &str,
    merchant: &spinpay_core::model::Merchant,
    pays: &mut Vec<String>,
) {
    let pick = |rng: &mut SplitMix64, pays: &Vec<String>| {
        pays[rng.below(pays.len() as u64) as usize].clone()
    };
    let op = if pays.is_empty() { 0 } else { rng.below(9) };
    let amounts = [1000, 666, 777, 888, 2500];
    let methods = [
        r#"{"type":"qr_merchant"}"#,
        r#"{"type":"qr_customer","auth_code":"1234567890"}"#,
    ];
    let _ = match op {
        0 => {
            let amount = amounts[rng.below(5) as usize];
            let capture = if rng.chance(300) {
                r#","capture":"manual""#
            } else {
                ""
            };
            let b = body(amount, methods[rng.below(2) as usize], capture);
            let r =
                create_payment(c, ch, &LocalRisk::default(), rng, merchant, new_payment(&b)).await;
            if let Ok(p) = &r {
                pays.push(p.id.clone());
            }
            r.map(|_| ())
        }
        1 => {
            let id = pick(rng, pays);
            let a = 1 + rng.below(2600) as i64;
            capture_payment(c, ch, rng, mid, &id, Some(a), false)
                .await
                .map(|_| ())
        }
        2 => {
            let id = pick(rng, pays);
            cancel_payment(c, ch, rng, mid, &id, BY_MERCHANT)
                .await
                .map(|_| ())
        }
        3 | 4 => {
            let id = pick(rng, pays);
            let a = [100, 666, 888, 300][rng.below(4) as usize];
            create_refund(c, ch, rng, mid, &id, refund_req(a))
                .await
                .map(|_| ())
        }
        5 => {
            let id = pick(rng, pays);
            ch.paid.borrow_mut().insert(id.clone());
            recheck_payment(c, ch, rng, mid, &id).await.map(|_| ())
        }
        6 => {
            let id = pick(rng, pays);
            let amount = if rng.chance(100) { Some(1) } else { None };
            let n = PaymentNotification {
                channel: Channel::Sandbox,
                payment_id: id,
                report: ChannelReport {
                    outcome: ChannelOutcome::Succeeded { channel_ref: None },
                    amount_minor: amount,
                    currency: None,
                },
            };
            apply_payment_notification(c, rng, &n).await.map(|_| ())
        }
        7 => {
            let id = pick(rng, pays);
            let p = get_payment(c, mid, &id).await;
            if let Ok(p) = p {
                for r in p
                    .refunds
                    .iter()
                    .filter(|r| r.status == RefundStatus::Pending)
                {
                    ch.refunds_done.borrow_mut().insert(r.id.clone());
                    let _ = recheck_refund(c, ch, rng, mid, &r.id).await;
                }
            }
            Ok(())
        }
        _ => {
            let id = pick(rng, pays);
            get_payment(c, mid, &id).await.map(|_| ())
        }
    };
}

async fn stored<T: serde::de::DeserializeOwned>(repo: &MemoryRepository, key: &str) -> T {
    serde_json::from_slice(&repo.get(key).await.unwrap().unwrap().value).unwrap()
}

/// Checks the money invariants of every stored payment against its refund records.
async fn check_all(
    repo: &MemoryRepository,
    pays: &[String],
    last: &mut std::collections::BTreeMap<String, (u64, PaymentStatus)>,
    exact: bool,
) {
    for id in pays {
        let p: Payment = stored(repo, &format!("pay/{id}")).await;
        check_payment_invariants(&p.state).unwrap();
        if let Some((v, s)) = last.get(id) {
            assert!(p.state.version >= *v, "version went back");
            assert!(
                !s.is_terminal() || p.state.status == *s,
                "terminal {s:?} left"
            );
        }
        last.insert(id.clone(), (p.state.version, p.state.status));
        let mut succeeded = 0;
        let mut pending = 0;
        for rid in &p.state.refund_ids {
            if let Some(v) = repo.get(&format!("re/{rid}")).await.unwrap() {
                let r: Refund = serde_json::from_slice(&v.value).unwrap();
                match r.state.status {
                    RefundStatus::Succeeded => succeeded += r.amount_minor,
                    RefundStatus::Pending => pending += r.amount_minor,
                    RefundStatus::Failed => {}
                }
            }
        }
        // Never counted twice: settled money never exceeds what succeeded refunds hold.
        assert!(
            p.state.refunded_minor <= succeeded,
            "{}: refunded {} > succeeded refunds {}",
            id,
            p.state.refunded_minor,
            succeeded
        );
        if exact {
            assert_eq!(p.state.refunded_minor, succeeded, "{id}");
            assert_eq!(p.state.pending_refunds_minor(), pending, "{id}");
        }
    }
}

fn simulate(seed: u64, faults: Faults, steps: u32) {
    let repo = MemoryRepository::with_faults(seed, Faults::default());
    let (keys, ch) = (keyring(), SimChannel::default());
    let mut rng = SplitMix64::new(seed);
    block_on(async {
        let c0 = ctx(&repo, &keys, 0);
        let (m, _) = merchant(&c0, &mut rng).await;
        repo.set_faults(faults);
        let mut pays = Vec::new();
        let mut last = Default::default();
        for step in 0..steps {
            let c = ctx(&repo, &keys, i64::from(step) * 1000);
            random_op(&c, &ch, &mut rng, &m.id, &m, &mut pays).await;
            repo.set_faults(Faults::default());
            check_all(&repo, &pays, &mut last, faults.unavailable_per_mille == 0).await;
            repo.set_faults(faults);
        }
        // Repair pass without faults: re-checking every refund settles what failures left.
        repo.set_faults(Faults::default());
        let c = ctx(&repo, &keys, i64::from(steps) * 1000);
        for id in &pays {
            let p: Payment = stored(&repo, &format!("pay/{id}")).await;
            for rid in &p.state.refund_ids {
                if repo.get(&format!("re/{rid}")).await.unwrap().is_some() {
                    ch.refunds_done.borrow_mut().insert(rid.clone());
                    recheck_refund(&c, &ch, &mut rng, &m.id, rid).await.unwrap();
                }
            }
        }
        check_all(&repo, &pays, &mut last, faults.unavailable_per_mille == 0).await;
    });
}

#[test]
fn random_service_operations_with_injected_conflicts_keep_money_exact() {
    // Proves over 200 seeded runs of 60 operations with CAS conflicts: invariants hold after
    // every step and refunded/pending equal the refund records exactly.
    run_seeded("service sim", 200, |seed| {
        simulate(
            seed,
            Faults {
                conflict_per_mille: 150,
                unavailable_per_mille: 0,
                yield_per_mille: 300,
                unknown_outcome_per_mille: 0,
            },
            60,
        )
    });
}

#[test]
fn random_service_operations_with_unknown_write_outcomes_keep_money_exact() {
    // Proves with updates whose outcome is unknown (landed or not): invariants hold after
    // every step and refunded/pending still equal the refund records exactly.
    run_seeded("service sim with unknown outcomes", 200, |seed| {
        simulate(
            seed,
            Faults {
                conflict_per_mille: 100,
                unavailable_per_mille: 0,
                yield_per_mille: 200,
                unknown_outcome_per_mille: 100,
            },
            60,
        )
    });
}

#[test]
fn random_service_operations_with_storage_failures_never_double_count() {
    // Proves with storage failures too: invariants hold and refunded never exceeds the
    // succeeded refunds (a failure may leave money pending, never counted twice).
    run_seeded("service sim with failures", 100, |seed| {
        simulate(
            seed,
            Faults {
                conflict_per_mille: 100,
                unavailable_per_mille: 30,
                yield_per_mille: 200,
                unknown_outcome_per_mille: 0,
            },
            60,
        )
    });
}
