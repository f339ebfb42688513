//! Idempotency records are deleted once their 24 h retention has passed: the sweep finds
//! them through each merchant's expiry queue (no scan), deletes only expired records,
//! never a claim made meanwhile, and follows the wall clock, not a forwarded schedule
//! clock. Seeded races print their seed on failure; `SPINPAY_SEED` replays one.

mod common;

use common::hooked::{Hooked, Hooks, Op};
use common::*;
use futures::executor::block_on;
use futures::future::join_all;
use spinpay_core::error::ApiError;
use spinpay_core::idempotency::{ADMIN_SCOPE, IDEMPOTENCY_LOCK_TTL_MS, IDEMPOTENCY_RETENTION_MS};
use spinpay_core::repo::memory::{Faults, MemoryRepository};
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const DAY: i64 = IDEMPOTENCY_RETENTION_MS;
const HOUR: i64 = 3_600_000;
const PATH: &str = "/v1/payments";

fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("SPINPAY_SEED") {
        Ok(s) => vec![s.parse().expect("SPINPAY_SEED is a u64")],
        Err(_) => (0..count).map(|i| 0xE4_0000 + i).collect(),
    }
}

/// Claims `key` for `body` at `now_ms` and completes it with a reply naming `tag`
/// (`Some`); `None` when the stored reply was replayed instead, which may never be one
/// tagged `old` (the expired records of these tests).
async fn keyed<R: Repository>(
    repo: &R,
    mid: &str,
    key: &str,
    body: &str,
    tag: &str,
    now_ms: i64,
) -> Result<Option<Reply>, ApiError> {
    let keys = keyring();
    let c = ctx(repo, &keys, now_ms);
    match idempotency_begin(&c, mid, Some(key), "POST", PATH, body.as_bytes()).await? {
        Started::Replay(r) => {
            assert!(!r.body.contains("\"old\""), "an expired reply was replayed");
            Ok(None)
        }
        Started::Run(ticket) => {
            let reply = Reply {
                status: 201,
                body: format!("{{\"tag\":\"{tag}\"}}"),
            };
            idempotency_finish(&c, ticket, &reply, KeyOutcome::Store).await?;
            Ok(Some(reply))
        }
    }
}

/// What `key` replays now (its stored reply), if anything.
async fn replay_of<R: Repository>(
    repo: &R,
    mid: &str,
    key: &str,
    body: &str,
    now_ms: i64,
) -> Option<Reply> {
    let keys = keyring();
    let c = ctx(repo, &keys, now_ms);
    match idempotency_begin(&c, mid, Some(key), "POST", PATH, body.as_bytes()).await {
        Ok(Started::Replay(r)) => Some(r),
        _ => None,
    }
}

fn idem_keys(repo: &MemoryRepository, mid: &str) -> usize {
    repo.keys_with_prefix(&format!("mch/{mid}/idem/")).len()
}

/// Expiry-queue slots still stored (tombstones included).
fn expiry_slots(repo: &MemoryRepository, mid: &str) -> usize {
    repo.keys_with_prefix(&format!("mch/{mid}/exp/0")).len()
}

#[test]
fn the_sweep_deletes_records_past_their_retention_and_keeps_younger_ones() {
    // Proves: ten keys claimed at t0 and five at t0+12h; a sweep just after t0+24h deletes
    // the ten (records and queue slots) and keeps the five, which still replay; a key
    // used again after expiry runs anew and is scheduled afresh; a later sweep deletes the
    // rest, leaving no record and no slot.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(3));
    let t0 = 1_000_000;
    block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut rng).await;
        for i in 0..10 {
            let made = keyed(&repo, &m.id, &format!("old-{i}"), "{}", "old", t0).await;
            assert!(made.unwrap().is_some());
        }
        for i in 0..5 {
            let at = t0 + 12 * HOUR;
            let made = keyed(&repo, &m.id, &format!("young-{i}"), "{}", "young", at).await;
            assert!(made.unwrap().is_some());
        }
        assert_eq!(
            (idem_keys(&repo, &m.id), expiry_slots(&repo, &m.id)),
            (15, 15)
        );

        // Exactly at the retention boundary nothing is deleted (replays still answer).
        let edge = sweep_at(&repo, t0 + DAY, t0 + DAY).await.unwrap();
        assert_eq!(edge.idempotency_keys_expired, 0);
        assert!(
            replay_of(&repo, &m.id, "old-0", "{}", t0 + DAY)
                .await
                .is_some()
        );

        let report = sweep_at(&repo, t0 + DAY + 1, t0 + DAY + 1).await.unwrap();
        assert_eq!(
            (report.idempotency_keys_expired, report.has_more),
            (10, false)
        );
        assert_eq!(
            (idem_keys(&repo, &m.id), expiry_slots(&repo, &m.id)),
            (5, 5)
        );
        let young = replay_of(&repo, &m.id, "young-3", "{}", t0 + DAY + 1).await;
        assert_eq!(young.unwrap().body, "{\"tag\":\"young\"}");

        // After expiry the key is free: another body runs as a new request.
        let again = keyed(&repo, &m.id, "old-0", "{\"x\":1}", "again", t0 + DAY + 2).await;
        assert!(again.unwrap().is_some());
        let report = sweep_at(&repo, t0 + 36 * HOUR + 1, t0 + 36 * HOUR + 1)
            .await
            .unwrap();
        assert_eq!(report.idempotency_keys_expired, 5);
        assert_eq!(idem_keys(&repo, &m.id), 1, "old-0's new claim stays");
        let again = replay_of(&repo, &m.id, "old-0", "{\"x\":1}", t0 + 36 * HOUR + 1).await;
        assert_eq!(again.unwrap().body, "{\"tag\":\"again\"}");
        let report = sweep_at(&repo, t0 + 2 * DAY + 3, t0 + 2 * DAY + 3)
            .await
            .unwrap();
        assert_eq!(report.idempotency_keys_expired, 1);
        assert_eq!(
            (idem_keys(&repo, &m.id), expiry_slots(&repo, &m.id)),
            (0, 0)
        );
    });
}

#[test]
fn the_admin_scope_expires_like_a_merchant_but_is_not_counted_as_one() {
    // Proves keyed admin calls (scope "admin") have their records deleted after the
    // retention like a merchant's, while `merchants_visited` counts only real merchants.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(5));
    let t0 = 1_000_000;
    block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut rng).await;
        for scope in [ADMIN_SCOPE, m.id.as_str()] {
            let made = keyed(&repo, scope, "k-1", "{}", "old", t0).await;
            assert!(made.unwrap().is_some(), "{scope}");
        }
        let before = sweep_at(&repo, t0 + HOUR, t0 + HOUR).await.unwrap();
        assert_eq!(
            (before.merchants_visited, before.idempotency_keys_expired),
            (1, 0)
        );
        let after = sweep_at(&repo, t0 + DAY + 1, t0 + DAY + 1).await.unwrap();
        assert_eq!(
            (after.merchants_visited, after.idempotency_keys_expired),
            (1, 2)
        );
        for scope in [ADMIN_SCOPE, m.id.as_str()] {
            assert_eq!(
                (idem_keys(&repo, scope), expiry_slots(&repo, scope)),
                (0, 0),
                "{scope}"
            );
        }
    });
}

#[test]
fn a_forwarded_schedule_clock_never_expires_records_early() {
    // Proves the sweep's `now_ms` (schedule clock) may run days ahead without deleting a
    // record whose retention has not passed on the wall clock.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(4));
    let t0 = 5_000_000;
    block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut rng).await;
        keyed(&repo, &m.id, "k", "{}", "first", t0).await.unwrap();
        let report = sweep_at(&repo, t0 + 30 * DAY, t0 + HOUR).await.unwrap();
        assert_eq!(report.idempotency_keys_expired, 0);
        let kept = replay_of(&repo, &m.id, "k", "{}", t0 + HOUR).await;
        assert_eq!(kept.unwrap().body, "{\"tag\":\"first\"}");
    });
}

#[test]
fn a_sweep_deletes_at_most_its_budget_and_asks_to_be_called_again() {
    // Proves a backlog larger than one call's budget is drained over several calls, each
    // saying `has_more` until the last, and no record is deleted twice or left behind.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(5));
    let t0 = 9_000_000;
    let total = EXPIRY_SWEEP_MAX as usize + 40;
    block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut rng).await;
        for i in 0..total {
            keyed(&repo, &m.id, &format!("k{i}"), "{}", "t", t0)
                .await
                .unwrap();
        }
        let mut deleted = 0;
        let mut calls = 0;
        loop {
            let r = sweep_at(&repo, t0 + DAY + 1, t0 + DAY + 1).await.unwrap();
            assert!(r.idempotency_keys_expired <= EXPIRY_SWEEP_MAX);
            deleted += r.idempotency_keys_expired as usize;
            calls += 1;
            if !r.has_more {
                break;
            }
            assert!(calls < 100, "the backlog never drained");
        }
        assert_eq!(deleted, total);
        assert!(calls >= 2);
        assert_eq!(
            (idem_keys(&repo, &m.id), expiry_slots(&repo, &m.id)),
            (0, 0)
        );
    });
}

/// A merchant whose key `k` (claimed at `t0`) a sweep at `t1` condemned and then failed
/// to delete (its store failed): `(repo, merchant id, t1)`.
fn condemned_by_a_failed_sweep() -> (MemoryRepository, String, i64) {
    let repo = MemoryRepository::new();
    let keys = keyring();
    let t0 = 2_000_000;
    let t1 = t0 + DAY + 1;
    let mid = block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut SplitMix64::new(6)).await;
        keyed(&repo, &m.id, "k", "{}", "old", t0).await.unwrap();
        let failing = Hooked {
            inner: &repo,
            hooks: Interference {
                fail_deletes: true,
                ..Interference::default()
            },
        };
        let e = sweep_at(&failing, t1, t1).await.unwrap_err();
        assert_eq!(e.code(), "storage_unavailable");
        let record = format!("mch/{}/idem/{}", m.id, sha("k"));
        let stored = repo.get(&record).await.unwrap().expect("still stored");
        assert!(String::from_utf8_lossy(&stored.value).contains("\"expiring\""));
        m.id
    });
    (repo, mid, t1)
}

#[test]
fn a_key_condemned_by_a_sweep_that_died_is_refused_for_a_lock_ttl_then_claimable() {
    // Proves the condemned state: while the sweep may still delete, a claim gets 409
    // idempotency_key_in_use; after the lock TTL a claim runs (a new request), and the
    // next sweep keeps that claim and finishes the old slot.
    let (repo, mid, t1) = condemned_by_a_failed_sweep();
    block_on(async {
        let in_use = keyed(&repo, &mid, "k", "{\"b\":2}", "new", t1 + 10).await;
        assert_eq!(in_use.unwrap_err(), ApiError::IdempotencyKeyInUse);
        let t2 = t1 + IDEMPOTENCY_LOCK_TTL_MS + 1;
        let fresh = keyed(&repo, &mid, "k", "{\"b\":2}", "new", t2).await;
        assert!(fresh.unwrap().is_some());
        let r = sweep_at(&repo, t2, t2).await.unwrap();
        assert_eq!(r.idempotency_keys_expired, 0);
        let kept = replay_of(&repo, &mid, "k", "{\"b\":2}", t2).await;
        assert_eq!(kept.unwrap().body, "{\"tag\":\"new\"}");
        assert_eq!(
            expiry_slots(&repo, &mid),
            1,
            "only the new claim's slot is left"
        );
    });
}

#[test]
fn a_key_condemned_by_a_sweep_that_died_is_deleted_by_a_later_sweep() {
    // Proves the next sweep within the lock TTL leaves the condemned record to its
    // condemner (the slot waits), and after it condemns the record afresh and deletes it.
    let (repo, mid, t1) = condemned_by_a_failed_sweep();
    block_on(async {
        let soon = sweep_at(&repo, t1 + 10, t1 + 10).await.unwrap();
        assert_eq!(soon.idempotency_keys_expired, 0);
        assert_eq!((idem_keys(&repo, &mid), expiry_slots(&repo, &mid)), (1, 1));
        let t2 = t1 + IDEMPOTENCY_LOCK_TTL_MS + 1;
        let later = sweep_at(&repo, t2, t2).await.unwrap();
        assert_eq!(later.idempotency_keys_expired, 1);
        assert_eq!((idem_keys(&repo, &mid), expiry_slots(&repo, &mid)), (0, 0));
    });
}

#[test]
fn a_claim_landing_between_the_condemnation_and_the_delete_is_refused_not_deleted() {
    // Proves the exact interleaving the condemned state exists for: a claim of the key
    // (another body) right after the sweep's compare-and-swap and before its delete gets
    // 409 idempotency_key_in_use, so the delete removes nothing anyone was promised.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(8));
    let t0 = 3_000_000;
    block_on(async {
        let (m, _) = merchant(&ctx(&repo, &keys, t0), &mut rng).await;
        keyed(&repo, &m.id, "k", "{}", "old", t0).await.unwrap();
        let t1 = t0 + DAY + 1;
        let between = Hooked {
            inner: &repo,
            hooks: Interference {
                claim_at: Some((m.id.clone(), t1)),
                ..Interference::default()
            },
        };
        let report = sweep_at(&between, t1, t1).await.unwrap();
        assert_eq!(report.idempotency_keys_expired, 1);
        let claim = between
            .hooks
            .claim
            .borrow_mut()
            .take()
            .expect("the claim ran");
        assert_eq!(claim, Err(ApiError::IdempotencyKeyInUse));
        // The retry after the delete runs as a new request, and stays.
        let retry = keyed(&repo, &m.id, "k", "{\"b\":2}", "new", t1 + 5).await;
        assert!(retry.unwrap().is_some());
        let kept = replay_of(&repo, &m.id, "k", "{\"b\":2}", t1 + 6).await;
        assert_eq!(kept.unwrap().body, "{\"tag\":\"new\"}");
    });
}

#[test]
fn claims_racing_sweeps_never_lose_a_completed_reply() {
    // Proves, over seeded interleavings (yields between every read and write, injected
    // conflicts): claims of expired keys, with the same or another body, race two sweeps.
    // Every claim that completed still replays its own reply afterwards, every key ends
    // with at most one record and, once what the race left has outlived any request, runs
    // or replays again (none is held for good), some claims complete, and a sweep after
    // the new claims' retention leaves nothing.
    let mut completed = 0;
    for seed in seeds(40) {
        match std::panic::catch_unwind(|| race(seed)) {
            Ok(n) => completed += n,
            Err(e) => {
                eprintln!("claims_racing_sweeps failed with SPINPAY_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    assert!(completed > 0, "no claim of any race completed");
}

/// One race of [`claims_racing_sweeps_never_lose_a_completed_reply`]: the number of
/// claims that completed.
fn race(seed: u64) -> u32 {
    let repo = MemoryRepository::with_faults(seed, Faults::default());
    let keys = keyring();
    let mut rng = SplitMix64::new(seed);
    let t0 = 1_000_000;
    let (m, _) = block_on(merchant(&ctx(&repo, &keys, t0), &mut rng));
    let names: Vec<String> = (0..6).map(|i| format!("key-{i}")).collect();
    for name in &names {
        block_on(keyed(&repo, &m.id, name, "{}", "old", t0)).unwrap();
    }
    repo.set_faults(Faults {
        conflict_per_mille: 0,
        unavailable_per_mille: 0,
        yield_per_mille: 600,
        unknown_outcome_per_mille: 0,
    });
    let t1 = t0 + DAY + 1;
    // Three claimers per key (two bodies), and two sweeps, all at once.
    let claims = names.iter().flat_map(|name| {
        (0..3).map(move |i| (name.clone(), if i == 2 { "{\"b\":1}" } else { "{}" }, i))
    });
    let claim_futures: Vec<_> = claims
        .map(|(name, body, i)| {
            let repo = &repo;
            let mid = m.id.clone();
            async move {
                let tag = format!("{name}-{i}");
                let r = keyed(repo, &mid, &name, body, &tag, t1).await;
                (name, body, r)
            }
        })
        .collect();
    let (claims, sweeps) = block_on(futures::future::join(
        join_all(claim_futures),
        join_all((0..2).map(|_| sweep_at(&repo, t1, t1))),
    ));
    repo.set_faults(Faults::default());
    for s in &sweeps {
        match s {
            Ok(_) | Err(ApiError::ConcurrentModification) => {}
            Err(e) => panic!("sweep failed: {e:?}"),
        }
    }
    let mut completed_per_key = std::collections::BTreeMap::<String, u32>::new();
    for (name, body, r) in &claims {
        match r {
            Ok(Some(reply)) => {
                *completed_per_key.entry(name.clone()).or_default() += 1;
                let now = block_on(replay_of(&repo, &m.id, name, body, t1 + 5));
                assert_eq!(
                    now.as_ref(),
                    Some(reply),
                    "{name}: a completed reply was lost"
                );
            }
            // Replayed: a claim of this race completed first (never the expired record).
            Ok(None) => {}
            Err(
                ApiError::IdempotencyKeyInUse
                | ApiError::IdempotencyKeyReused
                | ApiError::ConcurrentModification,
            ) => {}
            Err(e) => panic!("{name}: unexpected {e:?}"),
        }
    }
    assert!(
        completed_per_key.values().all(|n| *n == 1),
        "{completed_per_key:?}"
    );
    // No key is held for good: once whatever lock or condemnation the race left has
    // outlived any request, every key runs (its body being the one that completed, if
    // any, so a reused body never passes for a held key) or replays what completed.
    let retried_ms = t1 + IDEMPOTENCY_LOCK_TTL_MS + 1;
    for name in &names {
        let done = claims.iter().find_map(|(n, body, r)| match r {
            Ok(Some(reply)) if n == name => Some((*body, reply)),
            _ => None,
        });
        let body = done.map_or("{}", |(body, _)| body);
        let retry = block_on(keyed(&repo, &m.id, name, body, "retry", retried_ms));
        match (&retry, done) {
            (Ok(None), Some((_, reply))) => {
                let now = block_on(replay_of(&repo, &m.id, name, body, retried_ms));
                assert_eq!(now.as_ref(), Some(reply), "{name}: another reply replayed");
            }
            (Ok(Some(_)), None) => {}
            _ => panic!("{name} after the race: {retry:?}; completed in it: {done:?}"),
        }
    }
    // Whatever the race left (old records a sweep lost to a claim, condemned ones), later
    // sweeps clean up: after the new claims' retention nothing is left.
    let t2 = t1 + IDEMPOTENCY_LOCK_TTL_MS + DAY + 2;
    for _ in 0..3 {
        block_on(sweep_at(&repo, t2, t2)).unwrap();
    }
    assert_eq!(idem_keys(&repo, &m.id), 0);
    assert_eq!(expiry_slots(&repo, &m.id), 0);
    completed_per_key.values().sum()
}

fn sha(s: &str) -> String {
    spinpay_core::crypto::sha256_hex(s.as_bytes())
}

/// Interference: deleting an idempotency record fails (`fail_deletes`), and/or one claim
/// of key `k` (another body) is made, at the time in `claim_at`, right after the first
/// write that condemns a record (its outcome lands in `claim`).
#[derive(Default)]
struct Interference {
    fail_deletes: bool,
    claim_at: Option<(String, i64)>,
    claim: std::cell::RefCell<Option<Result<Option<Reply>, ApiError>>>,
}

impl Hooks for Interference {
    fn before(&self, op: Op, key: &str) -> Result<(), RepoError> {
        if self.fail_deletes && op == Op::Delete && key.contains("/idem/") {
            return Err(RepoError::Unavailable("injected: delete failed".into()));
        }
        Ok(())
    }

    async fn after_put(
        &self,
        store: &MemoryRepository,
        _key: &str,
        _expected: u64,
        value: &[u8],
        written: Result<u64, RepoError>,
    ) -> Result<u64, RepoError> {
        let condemns = String::from_utf8_lossy(value).contains("\"state\":\"expiring\"");
        if let (Ok(_), true, Some((mid, at_ms))) = (&written, condemns, &self.claim_at)
            && self.claim.borrow().is_none()
        {
            let outcome = keyed(store, mid, "k", "{\"b\":2}", "mid", *at_ms).await;
            *self.claim.borrow_mut() = Some(outcome);
        }
        written
    }
}

#[test]
fn a_backlog_of_refused_keyed_requests_costs_a_sweep_call_no_more_than_its_budget() {
    // Proves the expiry slots keyed requests leave when they are refused (the record is
    // freed, its slot stays) count against a sweep call's expiry budget: one call handles
    // at most EXPIRY_SWEEP_MAX of them and answers has_more, so one merchant's backlog
    // cannot hold a sweep (and every merchant after it) past its deadline; the next call
    // goes on with the rest, leaving no slot.
    let repo = MemoryRepository::new();
    let (keys, mut rng) = (keyring(), SplitMix64::new(11));
    let t0 = 1_000_000;
    let backlog = EXPIRY_SWEEP_MAX as usize + 100;
    block_on(async {
        let c = ctx(&repo, &keys, t0);
        let (m, _) = merchant(&c, &mut rng).await;
        let refused = Reply {
            status: 400,
            body: "{\"error\":{}}".into(),
        };
        for i in 0..backlog {
            let key = format!("bad-{i}");
            match idempotency_begin(&c, &m.id, Some(&key), "POST", PATH, b"{}").await {
                Ok(Started::Run(ticket)) => {
                    idempotency_finish(&c, ticket, &refused, KeyOutcome::Free)
                        .await
                        .unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            (idem_keys(&repo, &m.id), expiry_slots(&repo, &m.id)),
            (0, backlog)
        );
        let late = t0 + DAY + 1;
        let first = sweep_at(&repo, late, late).await.unwrap();
        assert_eq!(
            (first.idempotency_keys_expired, first.has_more),
            (0, true),
            "{first:?}"
        );
        assert_eq!(
            expiry_slots(&repo, &m.id),
            backlog - EXPIRY_SWEEP_MAX as usize
        );
        let second = sweep_at(&repo, late, late).await.unwrap();
        assert!(!second.has_more, "{second:?}");
        assert_eq!(expiry_slots(&repo, &m.id), 0);
    });
}
